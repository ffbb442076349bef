//! `--device` and `--dtype` as users write them.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Where the models run, as written on the command line: `cpu`, `cuda` (device 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl DeviceSpec {
    /// Opens the device.
    ///
    /// # Errors
    /// [`Error::Device`] for a CUDA device on a build without the `cuda` feature or a machine without that GPU.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        if spec == "cpu" {
            return Ok(Self::Cpu);
        }
        match spec.strip_prefix("cuda") {
            Some("") => Ok(Self::Cuda(0)),
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|n| n.parse::<usize>().ok())
                .map(Self::Cuda)
                .ok_or_else(|| bad_device(spec)),
            None => Err(bad_device(spec)),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// The dtype of weights and activations while the models run (logits and stored activations are f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl RunDtype {
    /// The candle dtype.
    #[must_use]
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

impl std::str::FromStr for RunDtype {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        match spec {
            "f32" | "float32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" => Ok(Self::F16),
            other => Err(Error::Usage(format!("unknown dtype \"{other}\"; use f32, bf16 or f16"))),
        }
    }
}

/// Opens `cpu`, `cuda` or `cuda:N`.
///
/// # Errors
/// [`Error::Device`] for a CUDA device on a build without the `cuda` feature or a machine without that GPU;
/// [`Error::Usage`] for anything else.
pub fn parse_device(spec: &str) -> Result<Device> {
    spec.parse::<DeviceSpec>()?.open()
}

fn bad_device(spec: &str) -> Error {
    Error::Usage(format!("unknown device \"{spec}\"; use cpu, cuda or cuda:N"))
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        Error::Device(format!(
            "cannot open CUDA device {ordinal} ({e}); check nvidia-smi, the driver, and CUDA_VISIBLE_DEVICES"
        ))
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> Result<Device> {
    Err(Error::Device(
        "this mdiff was built without CUDA support; rebuild it with `cargo build --release -p diff-cli --features \
         cuda` (needs nvcc; see docs/guide.md) or use --device cpu"
            .into(),
    ))
}

/// A short name of the device for reports (`cpu`, `cuda:0`).
#[must_use]
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Parses `f32`, `bf16` or `f16`.
///
/// # Errors
/// [`Error::Usage`] for anything else.
pub fn parse_dtype(spec: &str) -> Result<DType> {
    Ok(spec.parse::<RunDtype>()?.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_dtypes() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(matches!(parse_device("tpu"), Err(Error::Usage(_))));
        assert!(matches!(parse_device("cuda:x"), Err(Error::Usage(_))));
        #[cfg(not(feature = "cuda"))]
        {
            let e = parse_device("cuda:1").unwrap_err();
            assert!(e.to_string().contains("--features cuda"), "{e}");
            assert!(e.is_input_error());
        }
        assert_eq!(parse_dtype("bf16").unwrap(), DType::BF16);
        assert!(parse_dtype("f64").is_err());
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap().to_string(), "cuda:3");
        assert_eq!("float16".parse::<RunDtype>().unwrap(), RunDtype::F16);
    }
}

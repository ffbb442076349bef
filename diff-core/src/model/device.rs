//! `--device` and `--dtype` as users write them.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Opens `cpu`, `cuda` or `cuda:N`.
///
/// # Errors
/// [`Error::Device`] for a CUDA device on a build without the `cuda` feature or a machine without that GPU;
/// [`Error::Usage`] for anything else.
pub fn parse_device(spec: &str) -> Result<Device> {
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| bad_device(spec))?,
        None => return Err(bad_device(spec)),
    };
    open_cuda(ordinal)
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
    match spec {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(Error::Usage(format!("unknown dtype \"{other}\"; use f32, bf16 or f16"))),
    }
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
    }
}

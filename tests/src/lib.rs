//! Helpers for the end-to-end tests: run the real `mdiff` binary in a temp dir and check what a user would see.

#![allow(
    clippy::expect_used,
    reason = "test support: a failed setup is a failed test, with its reason"
)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (where `fixtures/` lives).
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A path under `fixtures/`.
#[must_use]
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("fixtures").join(rel)
}

/// The `mdiff` binary beside this test executable (`target/<profile>/mdiff`), brought up to date once per test
/// process: `cargo test -p mdiff-tests` alone does not rebuild it, and a stale binary would test old code.
///
/// # Panics
/// When the binary cannot be built.
#[must_use]
pub fn mdiff_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>/mdiff
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "-p", "diff-cli", "--bin", "mdiff"])
            .current_dir(repo_root());
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        let path = profile_dir.join(format!("mdiff{}", std::env::consts::EXE_SUFFIX));
        assert!(status.success() && path.is_file(), "building {} failed", path.display());
        path
    })
}

/// What one `mdiff` run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts a clean failure: the exit code, exactly one line on stderr starting with `mdiff: error:` that
    /// contains every one of `needles`, and never a panic.
    ///
    /// # Panics
    /// When any of that does not hold.
    pub fn assert_fails_cleanly(&self, code: i32, needles: &[&str]) {
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "want one stderr line, got: {:?}", self.stderr);
        assert!(lines[0].starts_with("mdiff: error: "), "{}", lines[0]);
        for needle in needles {
            assert!(lines[0].contains(needle), "{needle:?} not in {:?}", lines[0]);
        }
    }

    /// The `warning: ...` lines of stderr, without the prefix.
    #[must_use]
    pub fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("warning: "))
            .collect()
    }

    /// Asserts success and no panic.
    ///
    /// # Panics
    /// When the run failed.
    pub fn assert_ok(&self) -> &Self {
        assert!(!self.stderr.contains("panicked"), "panic: {}", self.stderr);
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self
    }
}

/// A temp dir to run `mdiff` in and build broken inputs in.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A fresh empty dir.
    ///
    /// # Panics
    /// When no temp dir can be made.
    #[must_use]
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The dir's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path()/rel`.
    #[must_use]
    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Copies a fixture directory (or file) into the sandbox under `name` and returns its path.
    ///
    /// # Panics
    /// On I/O failure.
    #[must_use]
    pub fn copy_fixture(&self, fixture_rel: &str, name: &str) -> PathBuf {
        let src = fixture(fixture_rel);
        let dst = self.join(name);
        if src.is_dir() {
            std::fs::create_dir_all(&dst).expect("mkdir");
            for entry in std::fs::read_dir(&src).expect("read fixture dir") {
                let entry = entry.expect("dir entry");
                std::fs::copy(entry.path(), dst.join(entry.file_name())).expect("copy");
            }
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
        dst
    }

    /// Runs `mdiff` with `args` in this dir.
    ///
    /// # Panics
    /// When the binary cannot be started.
    #[must_use]
    pub fn mdiff<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        self.run(mdiff_bin(), args, &[])
    }

    /// Runs `bin` (`mdiff` or a copy of it) with `args` in this dir, each of `env` set (`Some`) or removed
    /// (`None`) in the environment it inherits.
    ///
    /// # Panics
    /// When the binary cannot be started.
    #[must_use]
    pub fn run<S: AsRef<OsStr>>(&self, bin: &Path, args: &[S], env: &[(&str, Option<&OsStr>)]) -> Run {
        run_in(self.path(), bin, args, env)
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `bin` with `args` in `dir`, each of `env` set (`Some`) or removed (`None`) in the environment it inherits.
///
/// # Panics
/// When the binary cannot be started.
#[must_use]
pub fn run_in<S: AsRef<OsStr>>(dir: &Path, bin: &Path, args: &[S], env: &[(&str, Option<&OsStr>)]) -> Run {
    let mut command = Command::new(bin);
    command.args(args).current_dir(dir);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Tensors of an F32 safetensors file: (name, shape, values).
pub type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Reads every tensor of an all-F32 safetensors file, sorted by name.
///
/// # Panics
/// On I/O failure, an invalid file, or a tensor that is not F32.
#[must_use]
pub fn read_f32_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).expect("reading safetensors");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut tensors: Tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} in {}", path.display());
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Rewrites the F32 safetensors file at `path` through `edit` (drop, rename, reshape or poison tensors).
///
/// # Panics
/// As [`read_f32_tensors`] and [`write_f32_safetensors`].
pub fn edit_f32_tensors(path: &Path, edit: impl FnOnce(&mut Tensors)) {
    let mut tensors = read_f32_tensors(path);
    edit(&mut tensors);
    let refs: Vec<(&str, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(name, shape, values)| (name.as_str(), shape.clone(), values.clone()))
        .collect();
    write_f32_safetensors(path, &refs);
}

/// Puts a NaN at `[row, col]` of the F32 matrix `name` in the safetensors file `shard`, keeping every other byte
/// of every tensor (whatever their dtypes).
///
/// # Panics
/// On I/O failure or an invalid file.
pub fn poison_f32(shard: &Path, name: &str, row: usize, col: usize) {
    let bytes = std::fs::read(shard).expect("reading the shard");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let mut data = t.data().to_vec();
            if n == name {
                let at = (row * t.shape()[1] + col) * 4;
                data[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            (n, t.dtype(), t.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, shape, data)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, shape.clone(), data).expect("the tensor as read"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, shard).expect("writing the shard");
}

/// The values of tensor `name`.
///
/// # Panics
/// When there is no such tensor.
pub fn tensor_values_mut<'a>(tensors: &'a mut Tensors, name: &str) -> &'a mut Vec<f32> {
    tensors
        .iter_mut()
        .find(|t| t.0 == name)
        .map(|t| &mut t.2)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

/// Rewrites the JSON file at `path` through `edit` (pretty-printed, as `save_pretrained` writes it).
///
/// # Panics
/// On I/O failure or a file that is not JSON.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let text = std::fs::read_to_string(path).expect("reading JSON");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    edit(&mut json);
    std::fs::write(path, serde_json::to_string_pretty(&json).expect("serializing JSON")).expect("writing JSON");
}

/// Writes a safetensors file holding `tensors` (name, shape, f32 values).
///
/// # Panics
/// On I/O failure or inconsistent shapes.
pub fn write_f32_safetensors(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            (
                (*name).to_string(),
                shape.clone(),
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .expect("consistent shape");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("writing safetensors");
}

/// A command line for `mdiff`.
pub type Args = Vec<OsString>;

/// Builds a broken input in the sandbox and returns the command line that feeds it to `mdiff`.
pub type Setup = fn(&Sandbox) -> Args;

/// Builds the case in a fresh sandbox and runs it; the sandbox is returned for paths and outputs.
#[must_use]
pub fn run_case(setup: Setup) -> (Sandbox, Run) {
    let sb = Sandbox::new();
    let run = sb.mdiff(&setup(&sb));
    (sb, run)
}

/// Runs `setup` and asserts exit 2 with one clean error line holding every needle; the needles are built from
/// the sandbox so that they can name paths in it. Returns the sandbox for further checks.
///
/// # Panics
/// When the run does not fail that way.
pub fn fails_with(setup: Setup, needles: impl FnOnce(&Sandbox) -> Vec<String>) -> Sandbox {
    let (sb, run) = run_case(setup);
    let needles = needles(&sb);
    run.assert_fails_cleanly(2, &needles.iter().map(String::as_str).collect::<Vec<_>>());
    sb
}

/// Runs every case and asserts, listing all failures at once, that none panicked, each exited with its code, and
/// `tidy(code, run, sandbox)` holds (what a clean outcome looks like is up to the suite).
///
/// # Panics
/// When any case fails.
pub fn assert_cases(cases: &[(&str, Setup, i32)], tidy: impl Fn(i32, &Run, &Sandbox) -> bool) {
    let mut failures = Vec::new();
    for &(name, setup, code) in cases {
        let (sb, run) = run_case(setup);
        if run.stderr.contains("panicked") || run.code != code || !tidy(code, &run, &sb) {
            failures.push(format!(
                "{name}: exit {} (want {code}), stderr: {}",
                run.code,
                run.stderr.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The fixture pair `base` / `tuned` (paths under `fixtures/`) loaded on the CPU in f32, with
/// `fixtures/prompts/golden.txt` encoded for it: for tests that call the library directly.
///
/// # Panics
/// When the fixtures cannot be loaded.
#[must_use]
pub fn load_golden_pair(
    base: &str,
    tuned: &str,
) -> (
    mdiff_core::analysis::ModelPair,
    Vec<mdiff_core::analysis::EncodedPrompt>,
) {
    use mdiff_core::analysis::{PairOptions, PairPlan, prepare_prompts};
    let base = mdiff_core::checkpoint::Checkpoint::open(&fixture(base)).expect("base fixture");
    let tuned = mdiff_core::checkpoint::Checkpoint::open_tuned(&fixture(tuned), &base).expect("tuned fixture");
    let opts = PairOptions {
        device: candle_core::Device::Cpu,
        dtype: candle_core::DType::F32,
        config: None,
        tokenizer: None,
    };
    let plan = PairPlan::prepare(&base, &tuned, &opts)
        .expect("pair plan")
        .into_result()
        .expect("config and tokenizer beside the fixtures");
    let set = mdiff_core::text::read_prompt_file(&fixture("prompts/golden.txt")).expect("golden prompts");
    let (prompts, _) =
        prepare_prompts(&set, plan.tokenizer(), plan.context_len(), plan.vocab_size()).expect("encoded prompts");
    (plan.load(&base, &tuned, &opts).expect("models"), prompts)
}

/// (ids, logits `[t, vocab]`) of every prompt in a golden logits file `fixtures/golden/logits/{stem}.safetensors`
/// (written by `fixtures/generate.py` / `families.py` from transformers, one prompt at a time).
///
/// # Panics
/// When the file is missing or malformed.
#[must_use]
pub fn golden_logits(stem: &str) -> Vec<(Vec<u32>, Vec<Vec<f32>>)> {
    let path = fixture(&format!("golden/logits/{stem}.safetensors"));
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).expect("golden logits");
    (0..)
        .map_while(|i| {
            let ids: Vec<i64> = tensors.get(&format!("p{i}.ids"))?.to_vec1().expect("ids");
            Some((
                ids.into_iter().map(|id| u32::try_from(id).expect("token id")).collect(),
                tensors[&format!("p{i}.logits")].to_vec2().expect("logits"),
            ))
        })
        .collect()
}

/// Largest |a − b| over two `[positions, vocab]` tables of one shape.
///
/// # Panics
/// When the shapes differ.
#[must_use]
pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "positions");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "vocabulary");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

impl Sandbox {
    /// Runs `mdiff compare BASE TUNED ARGS… -o NAME` in this dir, requires success, and returns the report.
    ///
    /// # Panics
    /// When the run fails or the report is not JSON.
    #[must_use]
    pub fn compare_report<S: AsRef<OsStr>>(
        &self,
        base: &Path,
        tuned: &Path,
        args: &[S],
        name: &str,
    ) -> serde_json::Value {
        let out = self.join(name);
        let mut all: Vec<&OsStr> = vec!["compare".as_ref(), base.as_os_str(), tuned.as_os_str()];
        all.extend(args.iter().map(AsRef::as_ref));
        all.extend(["-o".as_ref(), out.as_os_str()]);
        self.mdiff(&all).assert_ok();
        serde_json::from_str(&std::fs::read_to_string(&out).expect("report")).expect("report JSON")
    }
}

/// Token ids as a `[1, t]` model input.
///
/// # Panics
/// Never for a slice (the shape is its length).
#[must_use]
pub fn ids_tensor(ids: &[u32]) -> candle_core::Tensor {
    candle_core::Tensor::from_vec(ids.to_vec(), (1, ids.len()), &candle_core::Device::Cpu).expect("ids tensor")
}

/// Largest |a − b| over two tensors of one shape.
///
/// # Panics
/// When the shapes or dtypes differ.
#[must_use]
pub fn max_abs(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar())
        .expect("tensors of one shape")
}

/// Every TransformerLens hook point of a model with `layers` blocks (no `hook_pos_embed`): the embedding, each
/// block's residual and sublayer outputs, the final norm.
#[must_use]
pub fn every_hook(layers: usize) -> Vec<mdiff_core::model::HookPoint> {
    use mdiff_core::model::HookPoint;
    let mut points = vec![HookPoint::Embed, HookPoint::FinalNormalized];
    for l in 0..layers {
        points.extend([
            HookPoint::ResidPre(l),
            HookPoint::AttnOut(l),
            HookPoint::ResidMid(l),
            HookPoint::MlpOut(l),
            HookPoint::ResidPost(l),
        ]);
    }
    points
}

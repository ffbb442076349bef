//! Bad inputs, end to end: every broken checkpoint, adapter, path or command line must end with exit code 2 and
//! one `mdiff: error:` line that says what is wrong and where, never a panic. Problems that do not stop a diff
//! (shape mismatches, NaN/Inf) must exit 0 and show up in the report instead.
//!
//! Each case breaks a copy of a fixture inside a [`Sandbox`]; the fixtures themselves are never modified.

#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use mdiff_tests::{
    Args, Sandbox, Setup, assert_cases, edit_f32_tensors, edit_json, fails_with, fixture, read_f32_tensors, run_case,
    tensor_values_mut, write_f32_safetensors,
};
use serde_json::{Map, Value};

// ---- inputs ------------------------------------------------------------------------------------------------

const BASE: &str = "tiny-llama/base";
const FULL_FT: &str = "tiny-llama/full-ft";
const LORA: &str = "tiny-llama/lora";
const SHARDED: &str = "tiny-llama/sharded";
/// The weights file of a copied model directory.
const WEIGHTS: &str = "model.safetensors";
const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
const ADAPTER_CONFIG: &str = "adapter_config.json";
/// A LoRA-adapted module of the tiny llama and its lora_B key in the adapter.
const Q_PROJ: &str = "model.layers.0.self_attn.q_proj";
const Q_PROJ_LORA_B: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

/// `mdiff compare BASE TUNED --methods weights -o OUTPUT`.
fn compare_to(base: &Path, tuned: &Path, output: &Path) -> Args {
    let mut args: Args = vec!["compare".into(), base.into(), tuned.into()];
    args.extend(["--methods".into(), "weights".into(), "-o".into(), output.into()]);
    args
}

/// `mdiff compare BASE TUNED --methods weights`, writing the report into the sandbox.
fn compare(sb: &Sandbox, base: &Path, tuned: &Path) -> Args {
    compare_to(base, tuned, &sb.join("report.json"))
}

/// `mdiff inspect CHECKPOINT`.
fn inspect(checkpoint: &Path) -> Args {
    vec!["inspect".into(), checkpoint.into()]
}

/// How a path appears in messages.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

// ---- crafting broken files ---------------------------------------------------------------------------------

/// A safetensors file taken apart: the JSON header's bytes and the tensor data (the length field is derived).
struct RawSafetensors {
    header: Vec<u8>,
    data: Vec<u8>,
}

impl RawSafetensors {
    fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        Self {
            header: bytes[8..8 + len].to_vec(),
            data: bytes[8 + len..].to_vec(),
        }
    }

    /// Writes the file back with a length field that matches the header.
    fn write(&self, path: &Path) {
        let len = self.header.len() as u64;
        std::fs::write(path, [&len.to_le_bytes()[..], &self.header, &self.data].concat()).unwrap();
    }

    fn json(&self) -> Map<String, Value> {
        serde_json::from_slice(&self.header).unwrap()
    }

    /// Replaces the header with `json`, padded with spaces to a multiple of 8 bytes as safetensors writers do.
    fn set_json(&mut self, json: &Map<String, Value>) {
        self.header = serde_json::to_vec(json).unwrap();
        self.header.resize(self.header.len().next_multiple_of(8), b' ');
    }
}

/// Rewrites the JSON header of the safetensors file at `path` through `edit`, keeping the length field
/// consistent and the data as it was.
fn edit_header(path: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let mut raw = RawSafetensors::read(path);
    let mut json = raw.json();
    edit(&mut json);
    raw.set_json(&json);
    raw.write(path);
}

/// `data_offsets` of one tensor in a safetensors JSON header.
fn offsets(json: &Map<String, Value>, tensor: &str) -> (u64, u64) {
    let pair = &json[tensor]["data_offsets"];
    (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap())
}

/// The tensor whose data comes last in the file.
fn last_tensor(json: &Map<String, Value>) -> String {
    let names = json.keys().filter(|k| *k != "__metadata__");
    names.max_by_key(|name| offsets(json, name).1).unwrap().clone()
}

/// Copies the base into the sandbox as `base/` and returns its weights file.
fn base_weights(sb: &Sandbox) -> PathBuf {
    sb.copy_fixture(BASE, "base").join(WEIGHTS)
}

/// `compare base/ full-ft` with the sandbox's `base/`.
fn compare_broken_base(sb: &Sandbox) -> Args {
    compare(sb, &sb.join("base"), &fixture(FULL_FT))
}

/// Copies the LoRA adapter into the sandbox as `lora/`, lets `edit` break it, and compares it onto the base.
fn broken_adapter(sb: &Sandbox, edit: impl FnOnce(&Path)) -> Args {
    let adapter = sb.copy_fixture(LORA, "lora");
    edit(&adapter);
    compare(sb, &fixture(BASE), &adapter)
}

/// Copies the LoRA adapter, lets `edit` change its `adapter_config.json`, and compares it onto the base.
fn broken_adapter_config(sb: &Sandbox, edit: impl FnOnce(&mut Value)) -> Args {
    broken_adapter(sb, |dir| edit_json(&dir.join(ADAPTER_CONFIG), edit))
}

// ---- setups: one per bad input -----------------------------------------------------------------------------

fn truncated_compare(sb: &Sandbox) -> Args {
    let weights = base_weights(sb);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    compare_broken_base(sb)
}

fn truncated_inspect(sb: &Sandbox) -> Args {
    truncated_compare(sb);
    inspect(&sb.join("base"))
}

/// A file too short to hold even the header length.
fn four_byte_file(sb: &Sandbox) -> Args {
    std::fs::write(base_weights(sb), [1, 2, 3, 4]).unwrap();
    compare_broken_base(sb)
}

fn empty_file(sb: &Sandbox) -> Args {
    std::fs::write(base_weights(sb), []).unwrap();
    compare_broken_base(sb)
}

fn header_length_past_end(sb: &Sandbox) -> Args {
    let weights = base_weights(sb);
    let mut bytes = std::fs::read(&weights).unwrap();
    let past_end = bytes.len() as u64 + 1;
    bytes[..8].copy_from_slice(&past_end.to_le_bytes());
    std::fs::write(&weights, bytes).unwrap();
    compare_broken_base(sb)
}

fn header_not_json(sb: &Sandbox) -> Args {
    let weights = base_weights(sb);
    let mut raw = RawSafetensors::read(&weights);
    raw.header = b"this is not JSON at all! "
        .iter()
        .copied()
        .cycle()
        .take(raw.header.len())
        .collect();
    raw.write(&weights);
    compare_broken_base(sb)
}

fn header_not_utf8(sb: &Sandbox) -> Args {
    let weights = base_weights(sb);
    let mut raw = RawSafetensors::read(&weights);
    raw.header.fill(0xff);
    raw.write(&weights);
    compare_broken_base(sb)
}

/// The last tensor's end offset points past the data (and so disagrees with its shape).
fn offset_past_data(sb: &Sandbox) -> Args {
    edit_header(&base_weights(sb), |json| {
        let last = last_tensor(json);
        let (begin, end) = offsets(json, &last);
        json[&last]["data_offsets"] = serde_json::json!([begin, end + 1024]);
    });
    compare_broken_base(sb)
}

/// The last tensor grows (shape and offsets agree) past the end of the data: the layout a truncated copy has.
fn tensor_past_data(sb: &Sandbox) -> Args {
    edit_header(&base_weights(sb), |json| {
        let last = last_tensor(json);
        let (begin, end) = offsets(json, &last);
        let shape = json[&last]["shape"].as_array().unwrap().clone();
        let rows = shape[0].as_u64().unwrap();
        let mut grown = shape;
        grown[0] = (2 * rows).into();
        json[&last]["shape"] = grown.into();
        json[&last]["data_offsets"] = serde_json::json!([begin, end + (end - begin)]);
    });
    compare_broken_base(sb)
}

/// Two tensors of the same size claim the same bytes.
fn overlapping_offsets(sb: &Sandbox) -> Args {
    edit_header(&base_weights(sb), |json| {
        let shared = json["model.layers.0.self_attn.k_proj.weight"]["data_offsets"].clone();
        json["model.layers.0.self_attn.v_proj.weight"]["data_offsets"] = shared;
    });
    compare_broken_base(sb)
}

fn empty_dir(sb: &Sandbox) -> Args {
    std::fs::create_dir(sb.join("empty")).unwrap();
    compare(sb, &sb.join("empty"), &fixture(FULL_FT))
}

fn pickle_only_dir(sb: &Sandbox) -> Args {
    std::fs::create_dir(sb.join("torch")).unwrap();
    std::fs::write(sb.join("torch/pytorch_model.bin"), b"PK\x03\x04 not really a zip").unwrap();
    compare(sb, &sb.join("torch"), &fixture(FULL_FT))
}

const MISSING_SHARD: &str = "model-00003-of-00004.safetensors";

fn missing_shard(sb: &Sandbox) -> Args {
    let sharded = sb.copy_fixture(SHARDED, "sharded");
    std::fs::remove_file(sharded.join(MISSING_SHARD)).unwrap();
    compare(sb, &fixture(BASE), &sharded)
}

fn nothing_in_common(sb: &Sandbox) -> Args {
    let (a, b) = (sb.join("a.safetensors"), sb.join("b.safetensors"));
    write_f32_safetensors(&a, &[("encoder.weight", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])]);
    write_f32_safetensors(&b, &[("decoder.weight", vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])]);
    compare(sb, &a, &b)
}

/// Drops the last row of this tensor in the tuned copy.
const RESHAPED: &str = "model.layers.0.mlp.up_proj.weight";

fn shape_mismatch(sb: &Sandbox) -> Args {
    let tuned = sb.copy_fixture(FULL_FT, "tuned");
    edit_f32_tensors(&tuned.join(WEIGHTS), |tensors| {
        let (_, shape, values) = tensors.iter_mut().find(|t| t.0 == RESHAPED).unwrap();
        shape[0] -= 1;
        values.truncate(shape.iter().product());
    });
    compare(sb, &fixture(BASE), &tuned)
}

/// Poisoned with NaN and ±Inf on both sides, at different positions.
const POISONED: &str = "model.layers.2.self_attn.q_proj.weight";
const BASE_POISON: [f32; 2] = [f32::NAN, f32::INFINITY];
const TUNED_POISON: [f32; 5] = [f32::NAN, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];

fn non_finite(sb: &Sandbox) -> Args {
    let plant = |dir: PathBuf, poison: &[f32], at: usize| {
        edit_f32_tensors(&dir.join(WEIGHTS), |tensors| {
            tensor_values_mut(tensors, POISONED)[at..at + poison.len()].copy_from_slice(poison);
        });
        dir
    };
    let base = plant(sb.copy_fixture(BASE, "base"), &BASE_POISON, 0);
    let tuned = plant(sb.copy_fixture(FULL_FT, "tuned"), &TUNED_POISON, 100);
    compare(sb, &base, &tuned)
}

fn lora_missing_b(sb: &Sandbox) -> Args {
    broken_adapter(sb, |dir| {
        edit_f32_tensors(&dir.join(ADAPTER_WEIGHTS), |t| {
            t.retain(|(name, ..)| name != Q_PROJ_LORA_B)
        })
    })
}

fn lora_rank_mismatch(sb: &Sandbox) -> Args {
    broken_adapter_config(sb, |config| config["r"] = 8.into())
}

/// Moves the adapter's layer-3 modules to a layer the base does not have.
fn lora_module_absent(sb: &Sandbox) -> Args {
    broken_adapter(sb, |dir| {
        edit_f32_tensors(&dir.join(ADAPTER_WEIGHTS), |tensors| {
            for (name, ..) in tensors.iter_mut() {
                *name = name.replace(".layers.3.", ".layers.99.");
            }
        });
    })
}

fn lora_target_absent(sb: &Sandbox) -> Args {
    broken_adapter_config(sb, |config| {
        config["target_modules"] = serde_json::json!(["nonexistent_proj"]);
    })
}

/// A `lora_B.bias` (PEFT's `lora_bias = true`): merging it is not supported, so it must not be dropped silently.
fn lora_with_bias(sb: &Sandbox) -> Args {
    broken_adapter(sb, |dir| {
        edit_f32_tensors(&dir.join(ADAPTER_WEIGHTS), |tensors| {
            let bias = Q_PROJ_LORA_B.replace(".weight", ".bias");
            tensors.push((bias, vec![64], vec![0.5; 64]));
        });
        edit_json(&dir.join(ADAPTER_CONFIG), |config| config["lora_bias"] = true.into());
    })
}

/// Two unrelated weight files and no index to say which one to read.
fn ambiguous_dir(sb: &Sandbox) -> Args {
    std::fs::create_dir(sb.join("two")).unwrap();
    for name in ["a.safetensors", "b.safetensors"] {
        std::fs::copy(fixture(BASE).join(WEIGHTS), sb.join("two").join(name)).unwrap();
    }
    compare(sb, &sb.join("two"), &fixture(FULL_FT))
}

const INDEX: &str = "model.safetensors.index.json";

fn index_not_json(sb: &Sandbox) -> Args {
    let sharded = sb.copy_fixture(SHARDED, "sharded");
    std::fs::write(sharded.join(INDEX), "{\"weight_map\": ").unwrap();
    compare(sb, &fixture(BASE), &sharded)
}

/// The index places a tensor in a shard that does not hold it.
fn index_misplaces_tensor(sb: &Sandbox) -> Args {
    let sharded = sb.copy_fixture(SHARDED, "sharded");
    edit_json(&sharded.join(INDEX), |index| {
        index["weight_map"]["model.embed_tokens.weight"] = MISSING_SHARD.into();
    });
    compare(sb, &fixture(BASE), &sharded)
}

fn adapter_config_not_json(sb: &Sandbox) -> Args {
    broken_adapter(sb, |dir| {
        std::fs::write(dir.join(ADAPTER_CONFIG), "{\"r\": 4,").unwrap()
    })
}

fn adapter_without_weights(sb: &Sandbox) -> Args {
    broken_adapter(sb, |dir| std::fs::remove_file(dir.join(ADAPTER_WEIGHTS)).unwrap())
}

fn adapter_rank_zero(sb: &Sandbox) -> Args {
    broken_adapter_config(sb, |config| config["r"] = 0.into())
}

fn adapter_target_bad_regex(sb: &Sandbox) -> Args {
    broken_adapter_config(sb, |config| config["target_modules"] = "(((".into())
}

fn adapter_truncated_weights(sb: &Sandbox) -> Args {
    broken_adapter(sb, |dir| {
        let weights = dir.join(ADAPTER_WEIGHTS);
        let bytes = std::fs::read(&weights).unwrap();
        std::fs::write(&weights, &bytes[..bytes.len() - 1]).unwrap();
    })
}

fn nonexistent_base(sb: &Sandbox) -> Args {
    compare(sb, &sb.join("no-such-model"), &fixture(FULL_FT))
}

fn nonexistent_tuned(sb: &Sandbox) -> Args {
    compare(sb, &fixture(BASE), &sb.join("no-such-model"))
}

fn nonexistent_inspect(sb: &Sandbox) -> Args {
    inspect(&sb.join("no-such-model"))
}

/// Base weights with mode 000. Root reads them anyway; [`unreadable_is_enforced`] tells.
#[cfg(unix)]
fn unreadable_file(sb: &Sandbox) -> Args {
    use std::os::unix::fs::PermissionsExt;
    let weights = base_weights(sb);
    std::fs::set_permissions(&weights, std::fs::Permissions::from_mode(0o000)).unwrap();
    compare_broken_base(sb)
}

/// Whether the mode-000 file is really unreadable to this user.
#[cfg(unix)]
fn unreadable_is_enforced(sb: &Sandbox) -> bool {
    std::fs::read(sb.join("base").join(WEIGHTS)).is_err()
}

fn unknown_method(_: &Sandbox) -> Args {
    ["compare", "a", "b", "--methods", "weights,telepathy"]
        .map(OsString::from)
        .to_vec()
}

fn missing_tuned_arg(_: &Sandbox) -> Args {
    ["compare", "a"].map(OsString::from).to_vec()
}

fn no_arguments(_: &Sandbox) -> Args {
    Vec::new()
}

fn zero_threads(sb: &Sandbox) -> Args {
    let mut args = compare(sb, &fixture(BASE), &fixture(FULL_FT));
    args.extend(["--threads".into(), "0".into()]);
    args
}

/// A spectrum request far past what the randomized SVD supports (once an arithmetic overflow).
fn huge_singular_values(sb: &Sandbox) -> Args {
    let mut args = compare(sb, &fixture(BASE), &fixture(FULL_FT));
    args.extend(["--singular-values".into(), "18446744073709551615".into()]);
    args
}

fn adapter_as_base(sb: &Sandbox) -> Args {
    compare(sb, &fixture(LORA), &fixture(BASE))
}

fn output_dir_missing(sb: &Sandbox) -> Args {
    compare_to(&fixture(BASE), &fixture(FULL_FT), &sb.join("no-such-dir/report.json"))
}

/// `-o` names an existing directory: refused before any work.
fn output_is_a_dir(sb: &Sandbox) -> Args {
    std::fs::create_dir(sb.join("out")).unwrap();
    compare_to(&fixture(BASE), &fixture(FULL_FT), &sb.join("out"))
}

/// Every bad input, with the exit code it must end with: 2, or 0 for problems reported inside the report.
const CASES: &[(&str, Setup, i32)] = &[
    ("truncated (compare)", truncated_compare, 2),
    ("truncated (inspect)", truncated_inspect, 2),
    ("four-byte file", four_byte_file, 2),
    ("empty file", empty_file, 2),
    ("header length past end", header_length_past_end, 2),
    ("header not JSON", header_not_json, 2),
    ("header not UTF-8", header_not_utf8, 2),
    ("offset past data", offset_past_data, 2),
    ("tensor past data", tensor_past_data, 2),
    ("overlapping offsets", overlapping_offsets, 2),
    ("empty dir", empty_dir, 2),
    ("pickle-only dir", pickle_only_dir, 2),
    ("missing shard", missing_shard, 2),
    ("nothing in common", nothing_in_common, 2),
    ("shape mismatch", shape_mismatch, 0),
    ("NaN/Inf", non_finite, 0),
    ("adapter without lora_B", lora_missing_b, 2),
    ("adapter rank mismatch", lora_rank_mismatch, 2),
    ("adapter module absent from base", lora_module_absent, 2),
    ("adapter target absent from base", lora_target_absent, 2),
    ("nonexistent base", nonexistent_base, 2),
    ("nonexistent tuned", nonexistent_tuned, 2),
    ("nonexistent inspect", nonexistent_inspect, 2),
    ("unknown method", unknown_method, 2),
    ("missing tuned argument", missing_tuned_arg, 2),
    ("no arguments", no_arguments, 2),
    ("zero threads", zero_threads, 2),
    ("LoRA bias", lora_with_bias, 2),
    ("huge --singular-values", huge_singular_values, 2),
    ("adapter as base", adapter_as_base, 2),
    ("output dir missing", output_dir_missing, 2),
    ("output is a dir", output_is_a_dir, 2),
    ("two weight files, no index", ambiguous_dir, 2),
    ("index not JSON", index_not_json, 2),
    ("index misplaces a tensor", index_misplaces_tensor, 2),
    ("adapter config not JSON", adapter_config_not_json, 2),
    ("adapter without weights", adapter_without_weights, 2),
    ("adapter r = 0", adapter_rank_zero, 2),
    ("adapter target_modules bad regex", adapter_target_bad_regex, 2),
    ("adapter weights truncated", adapter_truncated_weights, 2),
];

// ---- running -----------------------------------------------------------------------------------------------

/// Needles for a broken safetensors file: the generic message, the file, and `reason`.
fn invalid_base_file(reason: &'static str) -> impl FnOnce(&Sandbox) -> Vec<String> {
    move |sb| {
        vec![
            "not a valid safetensors file".into(),
            shown(&sb.join("base").join(WEIGHTS)),
            reason.into(),
        ]
    }
}

/// Needles for a broken copy of the adapter in `lora/`: the generic message, the directory, and `details`.
fn invalid_adapter(details: &[&str]) -> impl FnOnce(&Sandbox) -> Vec<String> {
    let details: Vec<String> = details.iter().map(|d| (*d).to_string()).collect();
    move |sb| [vec![shown(&sb.join("lora")), "invalid PEFT adapter".into()], details].concat()
}

/// Parses the report a successful run wrote.
fn report(sb: &Sandbox) -> Value {
    serde_json::from_str(&std::fs::read_to_string(sb.join("report.json")).unwrap()).unwrap()
}

/// Temp files of the atomic writer (`.NAME.mdiff-tmp-PID-N`, formerly `.mdiff-*.tmp`) left anywhere under `dir`.
fn stray_temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if path.is_dir() {
            found.extend(stray_temp_files(&path));
        } else if mdiff_core::report::atomic::is_temp_file_name(&name) {
            found.push(path);
        }
    }
    found
}

fn is_finite_number(v: &Value) -> bool {
    v.as_f64().is_some_and(f64::is_finite)
}

// ---- tests -------------------------------------------------------------------------------------------------

#[test]
fn truncated_safetensors_file() {
    fails_with(truncated_compare, invalid_base_file("truncated"));
    fails_with(truncated_inspect, invalid_base_file("truncated"));
    fails_with(four_byte_file, invalid_base_file("too short for a header"));
    fails_with(empty_file, invalid_base_file("too short for a header"));
}

#[test]
fn header_length_larger_than_file() {
    fails_with(
        header_length_past_end,
        invalid_base_file("header length runs past the end"),
    );
}

#[test]
fn header_is_not_json() {
    fails_with(
        header_not_json,
        invalid_base_file("header is not valid safetensors JSON"),
    );
    fails_with(header_not_utf8, invalid_base_file("header is not UTF-8"));
}

#[test]
fn tensor_offsets_out_of_range_or_overlapping() {
    fails_with(
        offset_past_data,
        invalid_base_file("byte range does not match its dtype and shape"),
    );
    fails_with(tensor_past_data, invalid_base_file("does not match the file size"));
    let (_, run) = run_case(overlapping_offsets);
    run.assert_fails_cleanly(2, &["not a valid safetensors file", "overlap"]);
    assert!(
        ["k_proj", "v_proj"].iter().any(|p| run
            .stderr
            .contains(&format!("tensor model.layers.0.self_attn.{p}.weight"))),
        "the message should name one of the overlapping tensors: {}",
        run.stderr
    );
}

#[test]
fn directory_without_safetensors() {
    fails_with(empty_dir, |sb| {
        vec![shown(&sb.join("empty")), "no model.safetensors".into()]
    });
    fails_with(pickle_only_dir, |sb| {
        vec![shown(&sb.join("torch/pytorch_model.bin")), "pickle".into()]
    });
}

#[test]
fn shard_index_names_a_missing_shard() {
    fails_with(missing_shard, |sb| {
        vec![
            shown(&sb.join("sharded/model.safetensors.index.json")),
            format!("shard {MISSING_SHARD} is missing"),
        ]
    });
}

#[test]
fn base_and_tuned_share_no_tensor_names() {
    fails_with(nothing_in_common, |_| {
        ["no tensor names in common", "encoder.weight", "decoder.weight"]
            .map(String::from)
            .to_vec()
    });
}

#[test]
fn shape_mismatch_is_reported_not_fatal() {
    let (sb, run) = run_case(shape_mismatch);
    run.assert_ok();
    assert!(run.stdout.contains("shape mismatch"), "stdout: {}", run.stdout);
    let weights = &report(&sb)["weights"];
    assert_eq!(
        weights["shape_mismatches"],
        serde_json::json!([{ "name": RESHAPED, "base": [128, 64], "tuned": [127, 64] }])
    );
    let diffed: Vec<&str> = weights["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let num_base = read_f32_tensors(&fixture(BASE).join(WEIGHTS)).len();
    assert_eq!(diffed.len(), num_base - 1, "every other tensor is diffed");
    assert!(!diffed.contains(&RESHAPED));
    assert!(weights["totals"]["num_changed"].as_u64().unwrap() > 0);
}

#[test]
fn non_finite_weights_are_counted_not_fatal() {
    let (sb, run) = run_case(non_finite);
    run.assert_ok();
    assert!(
        run.stdout.contains("warning:") && run.stdout.contains(POISONED),
        "stdout: {}",
        run.stdout
    );
    let report = report(&sb);
    let tensor = report["weights"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == POISONED)
        .unwrap_or_else(|| panic!("no entry for {POISONED}"));
    let count = |poison: &[f32], nan: bool| poison.iter().filter(|v| v.is_nan() == nan).count();
    assert_eq!(
        tensor["non_finite"],
        serde_json::json!({
            "base_nan": count(&BASE_POISON, true),
            "base_inf": count(&BASE_POISON, false),
            "tuned_nan": count(&TUNED_POISON, true),
            "tuned_inf": count(&TUNED_POISON, false),
        })
    );
    for stat in [
        "base_norm",
        "tuned_norm",
        "delta_norm",
        "relative",
        "cosine",
        "max_abs_delta",
        "mean_abs_delta",
    ] {
        assert!(is_finite_number(&tensor[stat]), "{stat} = {}", tensor[stat]);
    }
    assert!(
        tensor["delta_norm"].as_f64().unwrap() > 0.0,
        "full-ft changed {POISONED}"
    );
    let singular_values = tensor["spectrum"]["singular_values"]
        .as_array()
        .expect("a changed matrix has a spectrum");
    assert!(
        !singular_values.is_empty() && singular_values.iter().all(is_finite_number),
        "{singular_values:?}"
    );
    for total in ["base_norm", "delta_norm", "relative"] {
        assert!(is_finite_number(&report["weights"]["totals"][total]), "totals.{total}");
    }
}

#[test]
fn adapter_missing_lora_b() {
    fails_with(
        lora_missing_b,
        invalid_adapter(&[&format!("{Q_PROJ} has no lora_B tensor")]),
    );
}

#[test]
fn adapter_rank_disagrees_with_tensors() {
    fails_with(lora_rank_mismatch, invalid_adapter(&["r = 8", "[4, 64]"]));
}

#[test]
fn adapter_targets_modules_the_base_lacks() {
    fails_with(lora_module_absent, |_| {
        vec![
            "adapter targets model.layers.99.self_attn.q_proj".into(),
            "no tensor model.layers.99.self_attn.q_proj.weight".into(),
        ]
    });
    fails_with(
        lora_target_absent,
        invalid_adapter(&["nonexistent_proj", "match no module"]),
    );
}

#[test]
fn unreadable_path() {
    let missing = |sb: &Sandbox| {
        vec![
            "cannot read".into(),
            shown(&sb.join("no-such-model")),
            "check the path".into(),
        ]
    };
    fails_with(nonexistent_base, missing);
    fails_with(nonexistent_tuned, missing);
    fails_with(nonexistent_inspect, missing);

    #[cfg(unix)]
    {
        let (sb, run) = run_case(unreadable_file);
        if unreadable_is_enforced(&sb) {
            run.assert_fails_cleanly(
                2,
                &["cannot read", &shown(&sb.join("base").join(WEIGHTS)), "permission"],
            );
        } else {
            eprintln!("skipping the mode-000 case: this user can read any file (root?)");
            run.assert_ok();
        }
    }
}

#[test]
fn usage_errors_exit_2_without_panicking() {
    for setup in [
        unknown_method,
        missing_tuned_arg,
        no_arguments,
        zero_threads,
        huge_singular_values,
    ] {
        let (_, run) = run_case(setup);
        assert!(!run.stderr.contains("panicked"), "panic: {}", run.stderr);
        assert_eq!(run.code, 2, "stderr: {}", run.stderr);
        assert!(run.stdout.is_empty(), "usage errors go to stderr: {}", run.stdout);
    }
    let (_, run) = run_case(unknown_method);
    assert!(
        run.stderr.contains("telepathy"),
        "the message should name the bad value: {}",
        run.stderr
    );
    for (setup, flag) in [
        (zero_threads as Setup, "--threads"),
        (huge_singular_values, "--singular-values"),
    ] {
        let (_, run) = run_case(setup);
        assert!(
            run.stderr.contains(flag),
            "the message should name {flag}: {}",
            run.stderr
        );
    }
}

#[test]
fn adapter_with_lora_bias_is_refused_not_dropped() {
    fails_with(lora_with_bias, |_| {
        vec![Q_PROJ.into(), "LoRA bias".into(), "merge_and_unload".into()]
    });
}

/// PEFT accepts a target list with entries that match nothing as long as one matches; so does mdiff (review of #2).
#[test]
fn target_list_with_an_extra_unmatched_entry_still_merges() {
    let sb = Sandbox::new();
    let args = broken_adapter_config(&sb, |config| {
        config["target_modules"] = serde_json::json!(["q_proj", "v_proj", "qkv_proj"])
    });
    sb.mdiff(&args).assert_ok();
}

#[test]
fn adapter_passed_as_base() {
    fails_with(adapter_as_base, |_| {
        vec![shown(&fixture(LORA)), "PEFT adapter".into(), "as the tuned side".into()]
    });
}

#[test]
fn output_into_missing_dir_leaves_no_temp_file() {
    // Refused before any work (issue #15), naming the flag and what is wrong.
    fails_with(output_dir_missing, |sb| {
        vec![
            "-o".into(),
            shown(&sb.join("no-such-dir/report.json")),
            "does not exist; create it first".into(),
        ]
    });
    let (sb, run) = run_case(output_is_a_dir);
    run.assert_fails_cleanly(2, &["is a directory", &shown(&sb.join("out"))]);
    assert_eq!(stray_temp_files(sb.path()), Vec::<PathBuf>::new());
    let (sb, run) = run_case(output_dir_missing);
    assert_eq!(run.code, 2);
    assert_eq!(stray_temp_files(sb.path()), Vec::<PathBuf>::new());
}

#[test]
fn successful_run_leaves_just_the_report() {
    let sb = Sandbox::new();
    let out = sb.join("out");
    std::fs::create_dir(&out).unwrap();
    sb.mdiff(&compare_to(&fixture(BASE), &fixture(FULL_FT), &out.join("report.json")))
        .assert_ok();
    let mut left: Vec<OsString> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, vec![OsString::from("report.json")]);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(report["weights"]["tensors"].as_array().is_some_and(|t| !t.is_empty()));
    assert_eq!(stray_temp_files(sb.path()), Vec::<PathBuf>::new());
}

/// Every case in one loop: whatever the input, `mdiff` ends with its exit code and never panics.
#[test]
fn no_bad_input_panics() {
    assert_cases(CASES, |code, run, _| {
        // Usage errors included (issue #15): every failure is one `mdiff: error:` line.
        let one_line = run.stderr.lines().count() == 1 && run.stderr.starts_with("mdiff: error: ");
        code != 2 || one_line
    });
}

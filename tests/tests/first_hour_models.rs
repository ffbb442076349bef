//! Model inputs validated before allocation and named for what they are (issue #15, the model side), end to end.
//!
//! - A `config.json` that contradicts its weights (layer count, sizes) or whose numbers make NaN (`rope_theta`,
//!   norm epsilons) is refused before anything is allocated, naming the value and what the weights hold.
//! - A duplicate tensor name in a safetensors header, a GGUF file, an adapter's weights file without its folder or
//!   config, a symbolic link loop, a folder named `model.safetensors`: each is named for what it is.
//! - Hugging Face Hub ids resolve from a local Hub cache laid out on disk (no test needs the network).
//!
//! Every case works on copies in a [`Sandbox`]; the fixtures are never modified.

#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use mdiff_tests::{Args, Run, Sandbox, edit_json, fails_with, fixture, mdiff_bin};
use serde_json::Value;

const BASE: &str = "tiny-llama/base";
const FULL_FT: &str = "tiny-llama/full-ft";
const LORA: &str = "tiny-llama/lora";
const GPT2_BASE: &str = "tiny-gpt2/base";
const GPT2_FULL_FT: &str = "tiny-gpt2/full-ft";
const REPORT: &str = "report.json";

/// `mdiff compare BASE TUNED --methods M -o report.json` in the sandbox.
fn compare_with(sb: &Sandbox, base: &Path, tuned: &Path, methods: &str) -> Args {
    let mut args: Args = vec!["compare".into(), base.into(), tuned.into()];
    args.extend(["--methods".into(), methods.into(), "-o".into(), sb.join(REPORT).into()]);
    args
}

/// Every method that loads the models and sizes its work by the config: the run that once aborted.
fn compare_models(sb: &Sandbox, base: &Path, tuned: &Path) -> Args {
    compare_with(sb, base, tuned, "weights,kl,swap,patch,lens")
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// A copy of the tiny Llama base as `base/` with `edit` applied to its `config.json`, compared with the full
/// fine-tune.
fn base_config_edited(sb: &Sandbox, edit: impl FnOnce(&mut Value)) -> Args {
    let base = sb.copy_fixture(BASE, "base");
    edit_json(&base.join("config.json"), edit);
    compare_models(sb, &base, &fixture(FULL_FT))
}

fn no_report(sb: &Sandbox) {
    assert!(!sb.join(REPORT).exists(), "a failed run wrote a report");
}

// ---- config against weights --------------------------------------------------------------------------------

#[test]
fn a_huge_layer_count_is_refused_before_any_allocation() {
    let sb = fails_with(
        |sb| base_config_edited(sb, |c| c["num_hidden_layers"] = 1_000_000_000_000_u64.into()),
        |sb| {
            vec![
                shown(&sb.join("base/config.json")),
                "num_hidden_layers is 1000000000000 but the weights hold 4 layers".into(),
                "--config".into(),
            ]
        },
    );
    no_report(&sb);
}

#[test]
fn fewer_or_more_layers_than_the_weights_are_refused_naming_both_counts() {
    fails_with(
        |sb| base_config_edited(sb, |c| c["num_hidden_layers"] = 3.into()),
        |_| vec!["num_hidden_layers is 3 but the weights hold 4 layers (model.layers.0 to model.layers.3)".into()],
    );
    fails_with(
        |sb| base_config_edited(sb, |c| c["num_hidden_layers"] = 5.into()),
        |_| vec!["num_hidden_layers is 5 but the weights hold 4 layers".into()],
    );
    // The tuned side too, where extra layers once went unseen (KL 0, "the models agree").
    fails_with(
        |sb| {
            let tuned = sb.copy_fixture(FULL_FT, "tuned");
            edit_json(&tuned.join("config.json"), |c| c["num_hidden_layers"] = 3.into());
            compare_with(sb, &fixture(BASE), &tuned, "kl")
        },
        |sb| vec![shown(&sb.join("tuned/config.json")), "num_hidden_layers is 3".into()],
    );
    // GPT-2 names its blocks h.N and its layer count n_layer.
    fails_with(
        |sb| {
            let base = sb.copy_fixture(GPT2_BASE, "base");
            edit_json(&base.join("config.json"), |c| c["n_layer"] = 1.into());
            compare_with(sb, &base, &fixture(GPT2_FULL_FT), "kl")
        },
        |_| vec!["n_layer is 1 but the weights hold 2 layers (h.0 to h.1)".into()],
    );
}

#[test]
fn sizes_that_contradict_the_tensor_shapes_are_refused_naming_the_tensor() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str); 4] = [
        (
            |c| c["hidden_size"] = 32.into(),
            "model.embed_tokens.weight is [512, 64]",
        ),
        (
            |c| c["num_attention_heads"] = 2.into(),
            "model.layers.0.self_attn.q_proj.weight is [64, 64]",
        ),
        (
            |c| c["num_key_value_heads"] = 4.into(),
            "model.layers.0.self_attn.k_proj.weight is [32, 64]",
        ),
        (
            |c| c["intermediate_size"] = 256.into(),
            "intermediate_size × hidden_size give [256, 64]",
        ),
    ];
    for (edit, needle) in cases {
        let sb = Sandbox::new();
        let run = sb.mdiff(&base_config_edited(&sb, edit));
        run.assert_fails_cleanly(2, &[needle, "does not match the weights in"]);
    }
    // One config for both sides (--config), so that the vocabularies agree and the shapes are what is wrong.
    fails_with(
        |sb| {
            let config = sb.join("config.json");
            std::fs::copy(fixture(BASE).join("config.json"), &config).unwrap();
            edit_json(&config, |c| c["vocab_size"] = 1024.into());
            let mut args = compare_models(sb, &fixture(BASE), &fixture(FULL_FT));
            args.extend(["--config".into(), config.into()]);
            args
        },
        |_| vec!["vocab_size × hidden_size give [1024, 64]".into()],
    );
}

#[test]
fn zero_sizes_and_numbers_that_make_nan_are_refused_naming_the_key() {
    type Edit = fn(&mut Value);
    let cases: [(Edit, &str); 5] = [
        (|c| c["intermediate_size"] = 0.into(), "\"intermediate_size\" is 0"),
        (
            |c| c["rope_parameters"]["rope_theta"] = 0.0.into(),
            "\"rope_theta\" must be a finite number above 0",
        ),
        (
            |c| c["rms_norm_eps"] = (-1e-6).into(),
            "\"rms_norm_eps\" must be a finite number above 0, found -0.000001",
        ),
        (
            |c| c["rms_norm_eps"] = 0.0.into(),
            "\"rms_norm_eps\" must be a finite number above 0",
        ),
        (
            |c| {
                c["rope_parameters"] = serde_json::json!({"rope_type": "linear", "factor": -2.0});
            },
            "\"factor\" must be a finite number above 0",
        ),
    ];
    for (edit, needle) in cases {
        let sb = Sandbox::new();
        let run = sb.mdiff(&base_config_edited(&sb, edit));
        run.assert_fails_cleanly(2, &[needle]);
        assert!(
            run.stderr.contains(&shown(&sb.join("base/config.json"))),
            "{}",
            run.stderr
        );
    }
    fails_with(
        |sb| {
            let base = sb.copy_fixture(GPT2_BASE, "base");
            edit_json(&base.join("config.json"), |c| c["layer_norm_epsilon"] = (-1e-5).into());
            compare_with(sb, &base, &fixture(GPT2_FULL_FT), "kl")
        },
        |_| vec!["\"layer_norm_epsilon\" must be a finite number above 0".into()],
    );
}

// ---- safetensors headers -----------------------------------------------------------------------------------

#[test]
fn a_tensor_named_twice_in_the_header_is_refused() {
    fails_with(
        |sb| {
            let base = sb.copy_fixture(BASE, "base");
            let weights = base.join("model.safetensors");
            let bytes = std::fs::read(&weights).unwrap();
            let len = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
            let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
            // The same entry twice, as a writer with a bug would put it: a map-building parser keeps one.
            let entry = serde_json::to_string(&header["model.norm.weight"]).unwrap();
            let text = std::str::from_utf8(&bytes[8..8 + len]).unwrap().trim_end();
            let mut doubled = format!("{{\"model.norm.weight\":{entry},{}", &text[1..]).into_bytes();
            doubled.resize(doubled.len().next_multiple_of(8), b' ');
            let out = [&(doubled.len() as u64).to_le_bytes()[..], &doubled, &bytes[8 + len..]].concat();
            std::fs::write(&weights, out).unwrap();
            compare_with(sb, &base, &fixture(FULL_FT), "weights")
        },
        |sb| {
            vec![
                shown(&sb.join("base/model.safetensors")),
                "tensor model.norm.weight is named twice in the header".into(),
            ]
        },
    );
}

/// A GGUF v3 header as llama.cpp writes it: magic, version, no tensors, one string key.
fn gguf_bytes() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3_u32.to_le_bytes());
    bytes.extend(0_u64.to_le_bytes()); // tensor count
    bytes.extend(1_u64.to_le_bytes()); // key/value count
    let key = b"general.architecture";
    bytes.extend((key.len() as u64).to_le_bytes());
    bytes.extend(key);
    bytes.extend(8_u32.to_le_bytes()); // type: string
    bytes.extend(5_u64.to_le_bytes());
    bytes.extend(b"llama");
    bytes
}

#[test]
fn a_gguf_file_is_named_as_such_not_as_a_truncated_download() {
    // Passed directly, in a model folder, and under a safetensors name: it is found by its magic.
    type Setup = fn(&Sandbox) -> PathBuf;
    let cases: [(Setup, &str); 3] = [
        (
            |sb| {
                std::fs::write(sb.join("model.gguf"), gguf_bytes()).unwrap();
                sb.join("model.gguf")
            },
            "model.gguf",
        ),
        (
            |sb| {
                let dir = sb.join("gguf-model");
                std::fs::create_dir(&dir).unwrap();
                std::fs::write(dir.join("tiny-llama-Q4_K_M.gguf"), gguf_bytes()).unwrap();
                dir
            },
            "gguf-model/tiny-llama-Q4_K_M.gguf",
        ),
        (
            |sb| {
                let dir = sb.copy_fixture(BASE, "base");
                std::fs::write(dir.join("model.safetensors"), gguf_bytes()).unwrap();
                dir
            },
            "base/model.safetensors",
        ),
    ];
    for (setup, file) in cases {
        let sb = Sandbox::new();
        let base = setup(&sb);
        let run = sb.mdiff(&compare_with(&sb, &base, &fixture(FULL_FT), "weights"));
        run.assert_fails_cleanly(
            2,
            &[
                &shown(&sb.join(file)),
                "a GGUF file",
                "does not read yet (issue #21)",
                "safetensors",
            ],
        );
        assert!(!run.stderr.contains("truncated"), "{}", run.stderr);
    }
}

// ---- adapters ----------------------------------------------------------------------------------------------

#[test]
fn an_adapter_weights_file_is_refused_with_its_folder_named() {
    fails_with(
        |sb| {
            let lora = sb.copy_fixture(LORA, "lora");
            compare_with(sb, &fixture(BASE), &lora.join("adapter_model.safetensors"), "weights")
        },
        |sb| {
            vec![
                shown(&sb.join("lora/adapter_model.safetensors")),
                "weights file of a PEFT adapter".into(),
                format!("pass its folder {} ", shown(&sb.join("lora"))),
            ]
        },
    );
}

#[test]
fn an_adapter_folder_without_its_config_is_refused_saying_so() {
    let sb = fails_with(
        |sb| {
            let lora = sb.copy_fixture(LORA, "lora");
            std::fs::remove_file(lora.join("adapter_config.json")).unwrap();
            compare_with(sb, &fixture(BASE), &lora, "weights")
        },
        |sb| {
            vec![
                shown(&sb.join("lora")),
                "holds LoRA tensors".into(),
                "lora_A".into(),
                "no adapter_config.json".into(),
            ]
        },
    );
    assert!(
        !std::fs::read_dir(sb.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() == REPORT)
    );
}

// ---- paths that are not what they seem ---------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn symbolic_link_loops_and_links_to_nothing_are_named() {
    use std::os::unix::fs::symlink;
    fails_with(
        |sb| {
            symlink("loop-b", sb.join("loop-a")).unwrap();
            symlink("loop-a", sb.join("loop-b")).unwrap();
            compare_with(sb, &sb.join("loop-a"), &fixture(FULL_FT), "weights")
        },
        |_| vec!["a symbolic link loop".into(), "loop-b".into()],
    );
    // Inside a model folder, where it used to read as "no model.safetensors found".
    fails_with(
        |sb| {
            let base = sb.copy_fixture(BASE, "base");
            std::fs::remove_file(base.join("model.safetensors")).unwrap();
            symlink("model.safetensors", base.join("model.safetensors")).unwrap();
            compare_with(sb, &base, &fixture(FULL_FT), "weights")
        },
        |sb| vec![shown(&sb.join("base/model.safetensors")), "a symbolic link loop".into()],
    );
    fails_with(
        |sb| {
            let base = sb.copy_fixture(BASE, "base");
            std::fs::remove_file(base.join("model.safetensors")).unwrap();
            symlink("/nonexistent/weights.safetensors", base.join("model.safetensors")).unwrap();
            compare_with(sb, &base, &fixture(FULL_FT), "weights")
        },
        |_| vec!["a symbolic link to /nonexistent/weights.safetensors, which does not exist".into()],
    );
}

#[test]
fn a_folder_named_like_a_weights_file_is_named_as_a_folder() {
    fails_with(
        |sb| {
            let base = sb.copy_fixture(BASE, "base");
            std::fs::remove_file(base.join("model.safetensors")).unwrap();
            std::fs::create_dir(base.join("model.safetensors")).unwrap();
            compare_with(sb, &base, &fixture(FULL_FT), "weights")
        },
        |sb| vec![shown(&sb.join("base/model.safetensors")), "a folder, not a file".into()],
    );
    fails_with(
        |sb| {
            std::fs::create_dir(sb.join("weights.safetensors")).unwrap();
            compare_with(sb, &sb.join("weights.safetensors"), &fixture(FULL_FT), "weights")
        },
        |_| vec!["weights.safetensors: a folder, not a safetensors file".into()],
    );
}

// ---- Hugging Face Hub ids ----------------------------------------------------------------------------------

/// A commit hash for a snapshot.
const COMMIT: &str = "5a1e0c53a2b5e3d9f8c7b6a5d4e3f2a1b0c9d8e7";

/// Lays out `fixture_rel` in `cache` as the Hub repository `org/name` at [`COMMIT`], with `refs/main` (and the
/// other `refs`) naming it, as `huggingface_hub` does.
fn cache_repo(sb: &Sandbox, cache: &Path, repo: &str, fixture_rel: &str, refs: &[&str]) -> PathBuf {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = folder.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    let copied = sb.copy_fixture(fixture_rel, "staging");
    std::fs::rename(copied, &snapshot).unwrap();
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    for r in refs {
        std::fs::write(folder.join("refs").join(r), COMMIT).unwrap();
    }
    snapshot
}

/// Runs `mdiff args` with the Hub environment: `vars` set, the other Hub variables removed, offline.
fn run_hub<S: AsRef<OsStr>>(sb: &Sandbox, args: &[S], vars: &[(&str, &Path)]) -> Run {
    let mut env: Vec<(&str, Option<&OsStr>)> = vec![("HF_HUB_CACHE", None), ("HF_HOME", None)];
    env.extend(vars.iter().map(|(k, v)| (*k, Some(v.as_os_str()))));
    env.push(("HF_HUB_OFFLINE", Some(OsStr::new("1"))));
    sb.run(mdiff_bin(), args, &env)
}

/// `mdiff compare BASE TUNED --methods M -o report.json` with Hub ids (or any text) for the two models.
fn compare_ids(sb: &Sandbox, base: &str, tuned: &str, methods: &str) -> Args {
    compare_with(sb, Path::new(base), Path::new(tuned), methods)
}

fn report_input(sb: &Sandbox, side: &str) -> String {
    let report: Value = serde_json::from_str(&std::fs::read_to_string(sb.join(REPORT)).unwrap()).unwrap();
    report["inputs"][side]["path"].as_str().unwrap().to_string()
}

#[test]
fn hub_ids_resolve_from_the_local_cache_for_base_and_tuned() {
    let sb = Sandbox::new();
    let cache = sb.join("hub");
    let base = cache_repo(&sb, &cache, "tiny-org/tiny-llama", BASE, &["main"]);
    let tuned = cache_repo(&sb, &cache, "tiny-org/tiny-llama-ft", FULL_FT, &["main", "v1"]);
    // HF_HUB_CACHE, with the models run: config and tokenizer come from the snapshot too.
    let args = compare_ids(&sb, "tiny-org/tiny-llama", "tiny-org/tiny-llama-ft", "weights,kl");
    run_hub(&sb, &args, &[("HF_HUB_CACHE", &cache)]).assert_ok();
    assert_eq!(report_input(&sb, "base"), shown(&base));
    assert_eq!(report_input(&sb, "tuned"), shown(&tuned));
    // A branch or tag through refs/, and a commit hash naming the snapshot directly.
    let pinned = format!("tiny-org/tiny-llama@{COMMIT}");
    let args = compare_ids(&sb, &pinned, "tiny-org/tiny-llama-ft@v1", "weights");
    run_hub(&sb, &args, &[("HF_HUB_CACHE", &cache)]).assert_ok();
    assert_eq!(report_input(&sb, "base"), shown(&base));
    assert_eq!(report_input(&sb, "tuned"), shown(&tuned));
    // $HF_HOME/hub when HF_HUB_CACHE is not set.
    let home = sb.join("hf-home");
    std::fs::create_dir(&home).unwrap();
    std::fs::rename(&cache, home.join("hub")).unwrap();
    let args = compare_ids(&sb, "tiny-org/tiny-llama", "tiny-org/tiny-llama-ft", "weights");
    run_hub(&sb, &args, &[("HF_HOME", &home)]).assert_ok();
    assert!(report_input(&sb, "base").starts_with(&shown(&home.join("hub"))));
}

#[test]
fn a_hub_adapter_resolves_as_tuned_and_inspects() {
    let sb = Sandbox::new();
    let cache = sb.join("hub");
    cache_repo(&sb, &cache, "tiny-org/tiny-llama", BASE, &["main"]);
    let adapter = cache_repo(&sb, &cache, "tiny-org/tiny-llama-lora", LORA, &["main"]);
    let vars = [("HF_HUB_CACHE", cache.as_path())];
    let args = compare_ids(&sb, "tiny-org/tiny-llama", "tiny-org/tiny-llama-lora", "weights");
    run_hub(&sb, &args, &vars).assert_ok();
    assert_eq!(report_input(&sb, "tuned"), shown(&adapter));
    let run = run_hub(&sb, &["inspect", "tiny-org/tiny-llama-lora", "--json"], &vars);
    run.assert_ok();
    let listing: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(listing["adapter_config"].is_object(), "{}", run.stdout);
}

#[test]
fn an_offline_hub_miss_names_the_id_the_cache_and_the_download_command() {
    let sb = Sandbox::new();
    let cache = sb.join("hub");
    cache_repo(&sb, &cache, "tiny-org/tiny-llama", BASE, &["main"]);
    let args = compare_ids(&sb, "tiny-org/tiny-llama", "HuggingFaceTB/SmolLM2-135M@v2", "weights");
    let run = run_hub(&sb, &args, &[("HF_HUB_CACHE", &cache)]);
    run.assert_fails_cleanly(
        2,
        &[
            "HuggingFaceTB/SmolLM2-135M@v2 is not a file or folder here",
            &shown(&cache),
            "HF_HUB_OFFLINE is set",
            "huggingface-cli download HuggingFaceTB/SmolLM2-135M --revision v2",
        ],
    );
    assert!(!run.stderr.contains("permissions"), "{}", run.stderr);
    // A ref to a snapshot that is not there is a miss too, said as such.
    let missing = "0000000000000000000000000000000000000000";
    std::fs::write(cache.join("models--tiny-org--tiny-llama/refs/main"), missing).unwrap();
    run_hub(&sb, &["inspect", "tiny-org/tiny-llama"], &[("HF_HUB_CACHE", &cache)])
        .assert_fails_cleanly(2, &["no snapshot", missing]);
}

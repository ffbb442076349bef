//! Bad inputs for the behaviour section (`--methods kl`), end to end.
//!
//! - A missing `config.json` or `tokenizer.json` skips the section (exit 0) with a reason that names the flag
//!   that supplies the file; with the flag, the section is there.
//! - Models that cannot be run side by side, unusable configs, tokenizers and prompt files, and devices or dtypes
//!   this build lacks end with exit code 2 and one `mdiff: error:` line that says what is wrong, and leave no report.
//!   Mistakes in prompt files and flags are found before the weight diff starts.
//! - Problems that do not stop the comparison (prompts longer than the context, NaN logits) exit 0 with a
//!   `warning:` line on stderr and show up in the report.
//!
//! Each case edits copies of `fixtures/tiny-llama/{base,full-ft}` inside a [`Sandbox`]; the fixtures themselves are
//! never modified. Facts about the fixtures (context length, vocabulary, token counts) are read from those copies,
//! not written into the tests, so that regenerated fixtures (a BOS post-processor, a chat template) keep them valid.

#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use mdiff_tests::{Args, Run, Sandbox, Setup, assert_cases, edit_f32_tensors, edit_json, run_case, tensor_values_mut};
use serde_json::Value;

// ---- inputs ------------------------------------------------------------------------------------------------

const BASE: &str = "tiny-llama/base";
const FULL_FT: &str = "tiny-llama/full-ft";
const WEIGHTS: &str = "model.safetensors";
const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// Where transformers ≥ 4.43 saves a chat template; it wins over `tokenizer_config.json`.
const CHAT_TEMPLATE_JINJA: &str = "chat_template.jinja";
/// Every case writes its report here; a failed run must leave nothing.
const REPORT: &str = "report.json";
/// Two short plain-text prompts, well inside the context.
const SHORT_PROMPTS: &str = "Hello there, how are you?\nThe quick brown fox jumps over the lazy dog.\n";
/// Tensors of the tiny Llama that the cases break.
const FINAL_NORM: &str = "model.norm.weight";
const EMBED: &str = "model.embed_tokens.weight";
const UP_PROJ: &str = "model.layers.1.mlp.up_proj.weight";

/// Copies of the base and the full fine-tune in the sandbox.
struct Models {
    base: PathBuf,
    tuned: PathBuf,
}

impl Models {
    /// Copies `base/` and `tuned/` into the sandbox.
    fn copy(sb: &Sandbox) -> Self {
        Self {
            base: sb.copy_fixture(BASE, "base"),
            tuned: sb.copy_fixture(FULL_FT, "tuned"),
        }
    }

    fn both(&self) -> [&Path; 2] {
        [&self.base, &self.tuned]
    }

    /// `mdiff compare base tuned --methods weights,kl --prompts PROMPTS -o report.json`.
    fn compare(&self, sb: &Sandbox, prompts: &Path) -> Args {
        let mut args: Args = vec!["compare".into(), (&self.base).into(), (&self.tuned).into()];
        args.extend([
            "--methods".into(),
            "weights,kl".into(),
            "--prompts".into(),
            prompts.into(),
        ]);
        args.extend(["-o".into(), sb.join(REPORT).into()]);
        args
    }

    /// [`Models::compare`] on [`SHORT_PROMPTS`].
    fn compare_short(&self, sb: &Sandbox) -> Args {
        self.compare(sb, &write_prompts(sb, "prompts.txt", SHORT_PROMPTS))
    }
}

/// Writes a prompt file into the sandbox.
fn write_prompts(sb: &Sandbox, name: &str, text: &str) -> PathBuf {
    let path = sb.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `args` followed by `flag value`.
fn with(mut args: Args, flag: &str, value: impl Into<OsString>) -> Args {
    args.extend([flag.into(), value.into()]);
    args
}

/// How a path appears in messages.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
}

/// The copied base's `config.json`.
fn base_config(sb: &Sandbox) -> Value {
    serde_json::from_str(&std::fs::read_to_string(sb.join("base").join(CONFIG)).unwrap()).unwrap()
}

/// The copied base's context length.
fn context_len(sb: &Sandbox) -> usize {
    usize::try_from(base_config(sb)["max_position_embeddings"].as_u64().unwrap()).unwrap()
}

// ---- setups: files the section needs, missing -------------------------------------------------------------

fn no_config(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    for dir in models.both() {
        remove(&dir.join(CONFIG));
    }
    models.compare_short(sb)
}

/// [`no_config`] with `--config` naming a copy of the base's config elsewhere.
fn config_from_flag(sb: &Sandbox) -> Args {
    let elsewhere = sb.copy_fixture(BASE, "elsewhere").join(CONFIG);
    with(no_config(sb), "--config", elsewhere)
}

/// A fine-tune saved without its config.json: the base's serves both, with a warning.
fn config_beside_base_only(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    remove(&models.tuned.join(CONFIG));
    models.compare_short(sb)
}

fn no_tokenizer(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    for dir in models.both() {
        remove(&dir.join(TOKENIZER));
    }
    models.compare_short(sb)
}

/// [`no_tokenizer`] with `--tokenizer` naming a copy of the base's tokenizer elsewhere.
fn tokenizer_from_flag(sb: &Sandbox) -> Args {
    let elsewhere = sb.copy_fixture(BASE, "elsewhere").join(TOKENIZER);
    with(no_tokenizer(sb), "--tokenizer", elsewhere)
}

fn config_flag_names_nothing(sb: &Sandbox) -> Args {
    with(
        Models::copy(sb).compare_short(sb),
        "--config",
        sb.join("no-such-dir").join(CONFIG),
    )
}

fn tokenizer_flag_names_nothing(sb: &Sandbox) -> Args {
    with(
        Models::copy(sb).compare_short(sb),
        "--tokenizer",
        sb.join("no-such-dir").join(TOKENIZER),
    )
}

// ---- setups: configs ---------------------------------------------------------------------------------------

/// Which copies a config edit applies to.
#[derive(Clone, Copy, PartialEq)]
enum Sides {
    TunedOnly,
    Both,
}

/// Copies both models, lets `edit` change the config.json of `sides`, and compares.
fn edited_configs(sb: &Sandbox, sides: Sides, edit: impl Fn(&mut Value)) -> Args {
    let models = Models::copy(sb);
    if sides == Sides::Both {
        edit_json(&models.base.join(CONFIG), &edit);
    }
    edit_json(&models.tuned.join(CONFIG), &edit);
    models.compare_short(sb)
}

fn tuned_vocab_differs(sb: &Sandbox) -> Args {
    edited_configs(sb, Sides::TunedOnly, |c| {
        c["vocab_size"] = (c["vocab_size"].as_u64().unwrap() + 1).into()
    })
}

fn tuned_claims_mistral(sb: &Sandbox) -> Args {
    edited_configs(sb, Sides::TunedOnly, |c| {
        c["architectures"] = serde_json::json!(["MistralForCausalLM"]);
        c["model_type"] = "mistral".into();
    })
}

/// Both models BERT, and only `kl` asked for: nothing asked for can run. (With the weight diff among the methods,
/// the run goes on without the model-running ones: tests/tests/unsupported_architecture.rs.)
fn both_bert(sb: &Sandbox) -> Args {
    let mut args = edited_configs(sb, Sides::Both, |c| {
        c["architectures"] = serde_json::json!(["BertModel"]);
        c["model_type"] = "bert".into();
    });
    let methods = args.iter().position(|a| a == "weights,kl").unwrap();
    args[methods] = "kl".into();
    args
}

fn config_not_json(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    std::fs::write(models.base.join(CONFIG), "{\"architectures\": [\"LlamaForCausalLM\"],").unwrap();
    models.compare_short(sb)
}

fn config_without_hidden_size(sb: &Sandbox) -> Args {
    edited_configs(sb, Sides::Both, |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    })
}

// ---- setups: prompt files ----------------------------------------------------------------------------------

/// Copies both models and compares them on a prompt file `name` holding `text`.
fn prompt_file(sb: &Sandbox, name: &str, text: &str) -> Args {
    Models::copy(sb).compare(sb, &write_prompts(sb, name, text))
}

fn empty_prompt_file(sb: &Sandbox) -> Args {
    prompt_file(sb, "prompts.txt", "")
}

fn blank_lines_only(sb: &Sandbox) -> Args {
    prompt_file(sb, "prompts.txt", "\n   \n\t\n\r\n\n")
}

fn empty_jsonl(sb: &Sandbox) -> Args {
    prompt_file(sb, "prompts.jsonl", "\n\n")
}

/// Line 2 is cut off in the middle of an object.
fn jsonl_invalid_line_2(sb: &Sandbox) -> Args {
    prompt_file(
        sb,
        "prompts.jsonl",
        "{\"text\": \"fine\"}\n{\"text\": \"cut off\"\n{\"text\": \"fine\"}\n",
    )
}

fn jsonl_neither_text_nor_messages(sb: &Sandbox) -> Args {
    prompt_file(sb, "prompts.jsonl", "{\"prompt\": \"the wrong key\"}\n")
}

/// Chat prompts for a tokenizer with no chat template anywhere (neither in tokenizer_config.json nor as a .jinja).
fn chat_without_template(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    for dir in models.both() {
        edit_json(&dir.join(TOKENIZER_CONFIG), |c| {
            c.as_object_mut().unwrap().remove("chat_template");
        });
        let jinja = dir.join(CHAT_TEMPLATE_JINJA);
        if jinja.exists() {
            remove(&jinja);
        }
    }
    let chat = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi!\"}]}\n";
    models.compare(sb, &write_prompts(sb, "prompts.jsonl", chat))
}

/// One prompt of many times the context, then a short one.
fn prompt_past_context(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    models.compare(
        sb,
        &write_prompts(sb, "prompts.txt", &format!("{}\nShort.\n", long.trim_end())),
    )
}

// ---- setups: devices and dtypes ----------------------------------------------------------------------------

fn short_with(sb: &Sandbox, flag: &str, value: &str) -> Args {
    with(Models::copy(sb).compare_short(sb), flag, value)
}

fn device_cuda(sb: &Sandbox) -> Args {
    short_with(sb, "--device", "cuda")
}

fn device_cuda_1(sb: &Sandbox) -> Args {
    short_with(sb, "--device", "cuda:1")
}

fn device_tpu(sb: &Sandbox) -> Args {
    short_with(sb, "--device", "tpu")
}

fn device_cuda_x(sb: &Sandbox) -> Args {
    short_with(sb, "--device", "cuda:x")
}

/// `--prompts` with only the weight diff asked for: the prompts would be silently ignored.
fn prompts_without_kl(sb: &Sandbox) -> Args {
    let prompts = write_prompts(sb, "prompts.txt", "In the beginning\n");
    let mut args = Models::copy(sb).compare(sb, &prompts);
    let methods = args.iter().position(|a| a == "weights,kl").unwrap();
    args[methods] = "weights".into();
    args
}

fn dtype_f64(sb: &Sandbox) -> Args {
    short_with(sb, "--dtype", "f64")
}

// ---- setups: tokenizers ------------------------------------------------------------------------------------

/// Adds two special tokens to the tokenizer.json at `path`, with ids right past the largest it has.
fn add_tokens(path: &Path) {
    edit_json(path, |t| {
        let vocab_max = t["model"]["vocab"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .max();
        let added_max = t["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["id"].as_u64())
            .max();
        let next = vocab_max.max(added_max).unwrap() + 1;
        for id in [next, next + 1] {
            t["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({
                "id": id, "content": format!("<|extra_{id}|>"), "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            }));
        }
    });
}

/// `--tokenizer` names a tokenizer with two more ids than the model has embedding rows.
fn tokenizer_flag_past_vocab(sb: &Sandbox) -> Args {
    let bigger = sb.copy_fixture(BASE, "bigger").join(TOKENIZER);
    add_tokens(&bigger);
    with(Models::copy(sb).compare_short(sb), "--tokenizer", bigger)
}

/// The tuned model ships its own tokenizer with added tokens (and no config to say it resized the embedding).
fn tuned_tokenizer_has_added_tokens(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    add_tokens(&models.tuned.join(TOKENIZER));
    models.compare_short(sb)
}

// ---- setups: weights that do not fit the config ------------------------------------------------------------

fn tuned_weights(sb: &Sandbox, edit: impl FnOnce(&mut mdiff_tests::Tensors)) -> Args {
    let models = Models::copy(sb);
    edit_f32_tensors(&models.tuned.join(WEIGHTS), edit);
    models.compare_short(sb)
}

fn tuned_lacks_up_proj(sb: &Sandbox) -> Args {
    tuned_weights(sb, |t| t.retain(|(name, ..)| name != UP_PROJ))
}

fn tuned_up_proj_one_row_short(sb: &Sandbox) -> Args {
    tuned_weights(sb, |t| {
        let (_, shape, values) = t.iter_mut().find(|t| t.0 == UP_PROJ).unwrap();
        shape[0] -= 1;
        values.truncate(shape.iter().product());
    })
}

/// The tuned model's final RMSNorm is all NaN: every tuned logit is NaN.
fn tuned_final_norm_nan(sb: &Sandbox) -> Args {
    tuned_weights(sb, |t| tensor_values_mut(t, FINAL_NORM).fill(f32::NAN))
}

/// Unties the unembedding of the copy at `dir`: `lm_head.weight` becomes a copy of the embedding, so that poisoned
/// embedding rows leave the logits alone.
fn untie(dir: &Path) {
    edit_json(&dir.join(CONFIG), |c| c["tie_word_embeddings"] = false.into());
    edit_f32_tensors(&dir.join(WEIGHTS), |tensors| {
        let (_, shape, values) = tensors.iter().find(|t| t.0 == EMBED).unwrap().clone();
        tensors.push(("lm_head.weight".into(), shape, values));
    });
}

/// Prompt 1 of [`nan_embedding_rows`]: every token it does not use has a NaN embedding row in the tuned model.
const CLEAN_PROMPT: &str = "Hello there";
/// Prompt 0 of [`nan_embedding_rows`]: longer than [`CLEAN_PROMPT`], so that it is padded to this one's length when
/// both run in one batch, and made of other tokens.
const POISONED_PROMPT: &str = "Zebras? 42 quokkas, jumping wildly! #%&*";

/// Untied copies whose tuned embedding is NaN on every row but those of [`CLEAN_PROMPT`]'s tokens.
fn nan_embedding_rows(sb: &Sandbox) -> Args {
    let models = Models::copy(sb);
    for dir in models.both() {
        untie(dir);
        // Without BOS the clean prompt does not use token 0, so a pad of 0 would reach a NaN row: the case can
        // catch padding that leaks across rows.
        edit_json(&dir.join(TOKENIZER), |t| t["post_processor"] = Value::Null);
    }
    let tokenizer = mdiff_core::text::Tokenizer::load(&models.tuned.join(TOKENIZER)).unwrap();
    let clean = tokenizer
        .encode(&mdiff_core::text::PromptContent::Text(CLEAN_PROMPT.into()))
        .unwrap();
    edit_f32_tensors(&models.tuned.join(WEIGHTS), |tensors| {
        let (_, shape, values) = tensors.iter_mut().find(|t| t.0 == EMBED).unwrap();
        let width = shape[1];
        for (id, row) in values.chunks_exact_mut(width).enumerate() {
            if !clean.iter().any(|&c| c as usize == id) {
                row.fill(f32::NAN);
            }
        }
    });
    let text = format!("{POISONED_PROMPT}\n{CLEAN_PROMPT}\n");
    models.compare(sb, &write_prompts(sb, "prompts.txt", &text))
}

/// Every bad input, with the exit code it must end with: 2, or 0 for problems that skip the section or are
/// reported inside it.
const CASES: &[(&str, Setup, i32)] = &[
    ("no config.json", no_config, 2),
    ("--config", config_from_flag, 0),
    ("config.json beside the base only", config_beside_base_only, 0),
    ("no tokenizer.json", no_tokenizer, 2),
    ("--tokenizer", tokenizer_from_flag, 0),
    ("--config names nothing", config_flag_names_nothing, 2),
    ("--tokenizer names nothing", tokenizer_flag_names_nothing, 2),
    ("tuned vocabulary differs", tuned_vocab_differs, 2),
    ("tuned claims Mistral", tuned_claims_mistral, 2),
    ("BERT", both_bert, 2),
    ("config.json not JSON", config_not_json, 2),
    ("config.json without hidden_size", config_without_hidden_size, 2),
    ("empty prompt file", empty_prompt_file, 2),
    ("blank lines only", blank_lines_only, 2),
    ("empty .jsonl", empty_jsonl, 2),
    ("invalid JSON on line 2", jsonl_invalid_line_2, 2),
    ("neither text nor messages", jsonl_neither_text_nor_messages, 2),
    ("messages without a chat template", chat_without_template, 2),
    ("prompt past the context", prompt_past_context, 0),
    ("--device cuda", device_cuda, 2),
    ("--device cuda:1", device_cuda_1, 2),
    ("--device tpu", device_tpu, 2),
    ("--device cuda:x", device_cuda_x, 2),
    ("--dtype f64", dtype_f64, 2),
    ("--prompts without kl", prompts_without_kl, 2),
    ("--tokenizer past the vocabulary", tokenizer_flag_past_vocab, 2),
    ("tuned tokenizer with added tokens", tuned_tokenizer_has_added_tokens, 2),
    ("tuned lacks a tensor", tuned_lacks_up_proj, 2),
    ("tuned tensor of the wrong shape", tuned_up_proj_one_row_short, 2),
    ("NaN final norm", tuned_final_norm_nan, 0),
    ("NaN embedding rows", nan_embedding_rows, 0),
];

// ---- running -----------------------------------------------------------------------------------------------

/// Runs `setup` and asserts exit 2, one clean error line holding every needle, and no report written.
fn fails_with(setup: Setup, needles: impl FnOnce(&Sandbox) -> Vec<String>) {
    let sb = mdiff_tests::fails_with(setup, needles);
    assert!(!sb.join(REPORT).exists(), "a failed run wrote a report");
}

/// Fixed needles.
fn needles(words: &[&str]) -> impl FnOnce(&Sandbox) -> Vec<String> {
    let words: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
    move |_| words
}

/// Runs `setup`, asserts success, and returns the report with the run.
fn succeeds(setup: Setup) -> (Value, Run) {
    let (sb, run) = run_case(setup);
    run.assert_ok();
    let report = serde_json::from_str(&std::fs::read_to_string(sb.join(REPORT)).unwrap()).unwrap();
    (report, run)
}

/// Runs `setup` after renaming every tensor of the sandbox's `tuned/` copy, so that the weight diff (the first
/// long stage) would fail with "no tensor names in common": an error found before that stage wins.
fn run_with_unpairable_weights(setup: Setup) -> (Sandbox, Run) {
    let sb = Sandbox::new();
    let args = setup(&sb);
    edit_f32_tensors(&sb.join("tuned").join(WEIGHTS), |tensors| {
        for (name, ..) in tensors.iter_mut() {
            *name = format!("renamed.{name}");
        }
    });
    let run = sb.mdiff(&args);
    (sb, run)
}

/// Asserts a behaviour section over the two [`SHORT_PROMPTS`] with finite KL everywhere and nothing skipped.
fn assert_behaviour_ran(report: &Value) {
    let behaviour = &report["behaviour"];
    assert_eq!(behaviour["num_prompts"], 2, "{behaviour}");
    assert!(
        behaviour["summary"]["kl_tuned_base"]["mean"]
            .as_f64()
            .is_some_and(|kl| kl > 0.0)
    );
    assert_eq!(report["skipped"], serde_json::json!([]));
}

fn prompts(report: &Value) -> &Vec<Value> {
    report["behaviour"]["prompts"].as_array().unwrap()
}

// ---- tests -------------------------------------------------------------------------------------------------

/// Issue #15: kl is named in --methods, so a missing config is an error, not a report without the section.
#[test]
fn missing_config_fails_a_named_kl_and_names_the_flag() {
    fails_with(no_config, needles(&["--methods kl", "config.json", "--config"]));

    let (report, run) = succeeds(config_from_flag);
    assert_behaviour_ran(&report);
    assert!(run.warnings().is_empty(), "{}", run.stderr);
}

#[test]
fn config_beside_the_base_only_serves_both_with_a_warning() {
    let (report, run) = succeeds(config_beside_base_only);
    assert_behaviour_ran(&report);
    let warnings = run.warnings();
    assert!(
        warnings.len() == 1 && warnings[0].contains("no config.json beside the tuned weights"),
        "{}",
        run.stderr
    );
    assert_eq!(report["behaviour"]["warnings"], serde_json::json!(warnings));
}

/// Issue #15: as [`missing_config_fails_a_named_kl_and_names_the_flag`], for the tokenizer.
#[test]
fn missing_tokenizer_fails_a_named_kl_and_names_the_flag() {
    fails_with(
        no_tokenizer,
        needles(&["--methods kl", "tokenizer.json", "--tokenizer"]),
    );

    let (report, run) = succeeds(tokenizer_from_flag);
    assert_behaviour_ran(&report);
    assert!(run.warnings().is_empty(), "{}", run.stderr);
}

#[test]
fn config_and_tokenizer_flags_naming_missing_files() {
    fails_with(config_flag_names_nothing, |sb| {
        vec!["cannot read".into(), shown(&sb.join("no-such-dir").join(CONFIG))]
    });
    fails_with(tokenizer_flag_names_nothing, |sb| {
        vec!["cannot read".into(), shown(&sb.join("no-such-dir").join(TOKENIZER))]
    });
}

#[test]
fn models_with_different_vocabularies_or_architectures() {
    let vocab = |sb: &Sandbox| {
        let vocab = base_config(sb)["vocab_size"].as_u64().unwrap();
        vec![
            "not comparable".into(),
            "vocabulary".into(),
            format!("base {vocab}, tuned {}", vocab + 1),
        ]
    };
    fails_with(tuned_vocab_differs, vocab);
    fails_with(
        tuned_claims_mistral,
        needles(&[
            "not comparable",
            "architecture differs",
            "LlamaForCausalLM",
            "MistralForCausalLM",
        ]),
    );
}

#[test]
fn unsupported_architecture_lists_the_supported_ones() {
    fails_with(both_bert, |sb| {
        vec![
            shown(&sb.join("base").join(CONFIG)),
            "BertModel".into(),
            "not supported".into(),
            "LlamaForCausalLM".into(),
            "GPT2LMHeadModel".into(),
            "--methods weights".into(),
        ]
    });
}

#[test]
fn unusable_config_json() {
    fails_with(config_not_json, |sb| {
        vec![shown(&sb.join("base").join(CONFIG)), "not valid JSON".into()]
    });
    fails_with(config_without_hidden_size, |sb| {
        vec![shown(&sb.join("base").join(CONFIG)), "missing \"hidden_size\"".into()]
    });
}

#[test]
fn prompt_files_without_prompts() {
    for (setup, name) in [
        (empty_prompt_file as Setup, "prompts.txt"),
        (blank_lines_only, "prompts.txt"),
        (empty_jsonl, "prompts.jsonl"),
    ] {
        fails_with(setup, |sb| {
            vec![
                format!("{}: no prompts found", shown(&sb.join(name))),
                "one prompt per line".into(),
            ]
        });
    }
}

#[test]
fn malformed_jsonl_names_the_line() {
    fails_with(jsonl_invalid_line_2, |sb| {
        vec![
            format!("{}:2: ", shown(&sb.join("prompts.jsonl"))),
            "invalid JSON".into(),
            "{\"text\": \"...\"}".into(),
        ]
    });
    fails_with(jsonl_neither_text_nor_messages, |sb| {
        vec![
            format!("{}:1: ", shown(&sb.join("prompts.jsonl"))),
            "\"messages\"".into(),
            "found {\"prompt\":\"the wrong key\"}".into(),
        ]
    });
}

#[test]
fn chat_prompts_need_a_chat_template() {
    fails_with(chat_without_template, |sb| {
        vec![
            format!("{}:1", shown(&sb.join("prompts.jsonl"))),
            "no chat_template".into(),
            "{\"text\": ...}".into(),
        ]
    });
}

/// Prompt files, devices and dtypes are checked before the weight diff starts, so a typo costs no waiting.
#[test]
fn prompt_device_and_dtype_errors_come_before_the_weight_diff() {
    for (setup, needle) in [
        (empty_prompt_file as Setup, "no prompts found"),
        (jsonl_invalid_line_2, "invalid JSON"),
        (jsonl_neither_text_nor_messages, "expected {\"text\""),
        (device_cuda, "--features cuda"),
        (device_tpu, "unknown device"),
        (dtype_f64, "unknown dtype"),
        (
            prompts_without_kl,
            "add kl, swap, patch, lens or crosscoder to --methods",
        ),
    ] {
        let (sb, run) = run_with_unpairable_weights(setup);
        run.assert_fails_cleanly(2, &[needle]);
        assert!(!sb.join(REPORT).exists());
    }
    // The control: with good flags and prompts, these weights do fail, before the weight diff since #15: the
    // tuned config no longer fits its renamed tensors.
    let (_, run) = run_with_unpairable_weights(|sb| Models::copy(sb).compare_short(sb));
    run.assert_fails_cleanly(2, &["but the weights hold no layers"]);
}

/// Chat templates and configs are read before the weight diff too: finding out that the prompts cannot be rendered
/// or the models cannot be run only after diffing every weight of a large model loses the user that time, and the
/// weight report with it.
#[test]
fn chat_template_and_config_errors_come_before_the_weight_diff() {
    for (setup, needle) in [
        (chat_without_template as Setup, "no chat_template"),
        (tuned_claims_mistral, "architecture differs"),
        (tokenizer_flag_past_vocab, "token ids"),
        (config_flag_names_nothing, "no-such-dir"),
    ] {
        let (_, run) = run_with_unpairable_weights(setup);
        run.assert_fails_cleanly(2, &[needle]);
    }
}

#[test]
fn prompt_longer_than_the_context_is_truncated_with_a_warning() {
    let (sb, run) = run_case(prompt_past_context);
    run.assert_ok();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(sb.join(REPORT)).unwrap()).unwrap();
    let context = context_len(&sb);
    let rows = prompts(&report);
    let long = &rows[0];
    let dropped = long["truncated_tokens"].as_u64().unwrap();
    assert!(dropped > 0, "{long}");
    assert_eq!(
        long["tokens"].as_array().unwrap().len(),
        context,
        "kept tokens = the context"
    );
    assert_eq!(long["kl_tuned_base"].as_array().unwrap().len(), context);
    assert_eq!(rows[1]["truncated_tokens"], 0, "the short prompt is untouched");

    let warnings = run.warnings();
    assert_eq!(warnings.len(), 1, "one warning, for the long prompt: {}", run.stderr);
    let warning = warnings[0];
    for needle in [
        format!("{}:1", shown(&sb.join("prompts.txt"))),
        format!("has {} tokens", dropped + context as u64),
        format!("context of {context}"),
        format!("last {dropped} tokens were dropped"),
    ] {
        assert!(warning.contains(&needle), "{needle:?} not in {warning:?}");
    }
    assert_eq!(report["behaviour"]["warnings"], serde_json::json!([warning]));
}

/// This build has no `cuda` feature: `mdiff_bin` builds `diff-cli` with its default features.
#[test]
fn cuda_device_on_a_cpu_build_and_unknown_devices_or_dtypes() {
    for setup in [device_cuda as Setup, device_cuda_1] {
        fails_with(
            setup,
            needles(&["without CUDA support", "--features cuda", "--device cpu"]),
        );
    }
    fails_with(device_tpu, needles(&["unknown device \"tpu\"", "cpu, cuda or cuda:N"]));
    fails_with(
        device_cuda_x,
        needles(&["unknown device \"cuda:x\"", "cpu, cuda or cuda:N"]),
    );
    fails_with(dtype_f64, needles(&["unknown dtype \"f64\"", "f32, bf16 or f16"]));
}

#[test]
fn nan_logits_are_counted_not_fatal() {
    let (report, run) = succeeds(tuned_final_norm_nan);
    let behaviour = &report["behaviour"];
    let rows = prompts(&report);
    let num_positions: usize = rows.iter().map(|p| p["tokens"].as_array().unwrap().len()).sum();
    assert!(num_positions > 0);
    assert_eq!(behaviour["num_positions"], num_positions);
    assert_eq!(behaviour["non_finite"]["tuned_positions"], num_positions);
    assert_eq!(behaviour["non_finite"]["base_positions"], 0);
    for stat in ["kl_tuned_base", "kl_base_tuned", "top1_agreement", "entropy_tuned"] {
        assert!(
            behaviour["summary"].get(stat).is_none_or(Value::is_null),
            "summary.{stat}"
        );
    }
    for row in rows {
        for kl in ["kl_tuned_base", "kl_base_tuned"] {
            let values = row[kl].as_array().unwrap();
            assert!(values.len() == row["tokens"].as_array().unwrap().len() && values.iter().all(Value::is_null));
        }
        assert!(row.get("mean_kl_tuned_base").is_none_or(Value::is_null), "{row}");
    }
    assert_eq!(
        behaviour["top_positions"],
        serde_json::json!([]),
        "no finite position to rank"
    );

    let warnings = run.warnings();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    for needle in [
        format!("{num_positions} positions had NaN or infinite logits"),
        format!("tuned: {num_positions}"),
    ] {
        assert!(warnings[0].contains(&needle), "{needle:?} not in {:?}", warnings[0]);
    }
    // The weight diff sees the poisoned tensor too.
    let norm = report["weights"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == FINAL_NORM)
        .unwrap();
    assert!(
        norm["non_finite"]["tuned_nan"].as_u64().is_some_and(|n| n > 0),
        "{norm}"
    );
}

/// Prompts share batches only to go faster: the NaN of one prompt must not reach another through the padding
/// (positions past a prompt's end are masked out, but 0 × NaN is still NaN). With a padding id that
/// [`CLEAN_PROMPT`] uses itself (a BOS that every prompt starts with), the padding is finite and this cannot fail.
#[test]
fn nan_in_one_prompt_does_not_reach_the_prompts_batched_with_it() {
    let sb = Sandbox::new();
    let args = nan_embedding_rows(&sb);
    let read = || -> Value { serde_json::from_str(&std::fs::read_to_string(sb.join(REPORT)).unwrap()).unwrap() };
    sb.mdiff(&with(args.clone(), "--batch-tokens", "1")).assert_ok();
    let alone = read();
    let run = sb.mdiff(&args);
    run.assert_ok();
    let batched = read();

    let kl = |report: &Value, prompt: usize| report["behaviour"]["prompts"][prompt]["kl_tuned_base"].clone();
    let finite = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .all(|x| x.as_f64().is_some_and(f64::is_finite))
    };
    assert!(
        finite(&kl(&alone, 1)),
        "run alone, the clean prompt is finite: {}",
        kl(&alone, 1)
    );
    assert!(
        kl(&alone, 0).as_array().unwrap().iter().any(Value::is_null),
        "the poisoned prompt has NaN logits"
    );
    assert!(
        finite(&kl(&batched, 1)),
        "batched, the clean prompt is still finite: {}",
        kl(&batched, 1)
    );
    for (a, b) in kl(&alone, 1)
        .as_array()
        .unwrap()
        .iter()
        .zip(kl(&batched, 1).as_array().unwrap())
    {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "KL alone {a} vs batched {b}");
    }
    assert_eq!(alone["behaviour"]["non_finite"], batched["behaviour"]["non_finite"]);
    let count = batched["behaviour"]["non_finite"]["tuned_positions"].as_u64().unwrap();
    assert!(
        run.warnings()
            .iter()
            .any(|w| w.contains(&format!("{count} positions had NaN or infinite logits"))),
        "{}",
        run.stderr
    );
}

#[test]
fn tokenizer_with_more_ids_than_the_model() {
    fails_with(tokenizer_flag_past_vocab, |sb| {
        vec![
            shown(&sb.join("bigger").join(TOKENIZER)),
            "cannot use tokenizer".into(),
            "token ids but the model's vocabulary is".into(),
        ]
    });
    fails_with(
        tuned_tokenizer_has_added_tokens,
        needles(&["not comparable", "tokenizers differ", "--tokenizer"]),
    );
}

/// The weight diff tolerates a missing or reshaped tensor (it lists them); running the model cannot.
#[test]
fn weights_that_do_not_fit_the_config() {
    fails_with(tuned_lacks_up_proj, |sb| {
        vec![
            shown(&sb.join("tuned")),
            format!("tensor {UP_PROJ} is missing"),
            "config.json".into(),
        ]
    });
    fails_with(tuned_up_proj_one_row_short, |sb| {
        let config = base_config(sb);
        let [rows, cols] = ["intermediate_size", "hidden_size"].map(|k| config[k].as_u64().unwrap());
        vec![
            shown(&sb.join("tuned")),
            format!("tensor {UP_PROJ} has shape [{}, {cols}]", rows - 1),
            format!("config.json implies [{rows}, {cols}]"),
        ]
    });
}

/// Every case in one loop: whatever the input, `mdiff` ends with its exit code and never panics; failures are one
/// `mdiff: error:` line and leave no report, successes print nothing on stderr but `warning:` lines.
#[test]
fn no_bad_behaviour_input_panics() {
    assert_cases(CASES, |code, run, sb| {
        if code == 2 {
            run.stderr.lines().count() == 1 && run.stderr.starts_with("mdiff: error: ") && !sb.join(REPORT).exists()
        } else {
            run.stderr.lines().all(|l| l.starts_with("warning: ")) && sb.join(REPORT).is_file()
        }
    });
}

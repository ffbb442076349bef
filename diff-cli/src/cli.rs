//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mdiff_core::analysis::{Granularity, Site};
use mdiff_core::model::{DeviceSpec, RunDtype};
use mdiff_core::report::{Method, Score};

/// What changed when a language model was fine-tuned.
#[derive(Debug, Parser)]
#[command(name = "mdiff", version, about, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare a base model with a fine-tuned one (full checkpoint or PEFT LoRA adapter) and write a report.
    #[command(after_help = COMPARE_EXAMPLES)]
    Compare(Box<CompareArgs>),
    /// List a checkpoint's tensors, dtypes, parameter count and architecture.
    #[command(after_help = INSPECT_EXAMPLES)]
    Inspect(InspectArgs),
    /// Check a report against a release policy (gate.toml): exit 0 when every rule holds, 1 when one fails.
    #[command(after_help = GATE_EXAMPLES)]
    Gate(Box<GateArgs>),
    /// Open a report in the native viewer (the separate `mdiff-viewer` binary).
    #[command(after_help = VIEW_EXAMPLES)]
    View(ViewArgs),
    /// Serve the web viewer and a report on 127.0.0.1 (no display needed; reach it over `ssh -L`).
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Crosscoders on both models' residual streams: collect paired activations, train, analyse.
    #[command(subcommand)]
    Crosscoder(CrosscoderCommand),
}

/// `mdiff crosscoder …`.
#[derive(Debug, Subcommand)]
pub enum CrosscoderCommand {
    /// Run both models on a prompt set and write their activations at one hook to a directory of safetensors
    /// shards (format: docs/methods.md, "Paired activations").
    #[command(after_help = COLLECT_EXAMPLES)]
    Collect(Box<CollectArgs>),
    /// Train a crosscoder (BatchTopK by default, or L1) on collected activations, with checkpoints and --resume.
    #[command(after_help = TRAIN_EXAMPLES)]
    Train(Box<TrainArgs>),
    /// Analyse a trained crosscoder: relative decoder norms, shared/base-only/tuned-only latents, latent scaling,
    /// top contexts; writes the report's `crosscoder` section as JSON.
    #[command(after_help = ANALYZE_EXAMPLES)]
    Analyze(Box<AnalyzeArgs>),
}

const TRAIN_EXAMPLES: &str = "\
Examples:
  mdiff crosscoder train acts/ -o cc/
  mdiff crosscoder train acts/ -o cc/ --latents 16384 --k 32 --steps 20000 --batch-size 2048
  mdiff crosscoder train acts/ -o cc-l1/ --l1 0.5
  mdiff crosscoder train acts/ -o cc/ --resume        # after an interruption, with the same flags

cc/crosscoder.json holds the settings; cc/crosscoder.safetensors the weights, optimizer state and counters,
rewritten atomically every --checkpoint-every steps, so a killed run loses only the steps since the last one.";

const ANALYZE_EXAMPLES: &str = "\
Examples:
  mdiff crosscoder analyze cc/ --activations acts/ --tokenizer base/tokenizer.json
  mdiff crosscoder analyze cc/ --activations acts/ --tuned-only 0.95 --json > latents.json";

/// `mdiff crosscoder train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Directory of paired activations (from `mdiff crosscoder collect`, or written in its format).
    pub activations: PathBuf,
    /// Directory for the crosscoder (new or empty; with --resume, the run to continue).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Number of latents [default: 8 × d_model].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub latents: Option<u32>,
    /// Mean active latents per token (BatchTopK).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
    /// Train the L1 variant with this sparsity coefficient λ instead of BatchTopK.
    #[arg(long, value_name = "LAMBDA", conflicts_with = "k")]
    pub l1: Option<f64>,
    /// Optimizer steps.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Token rows per step.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Peak learning rate of Adam (linear warm-up over 5% of the steps, linear decay over the last 20%).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A latent that has not fired for this many rows is dead and gets the auxiliary loss (BatchTopK)
    /// [default: a tenth of the rows the run sees, at most 10M].
    #[arg(long, value_name = "ROWS", value_parser = clap::value_parser!(u64).range(1..))]
    pub dead_after: Option<u64>,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,
    /// Continue the run in --output from its last checkpoint (the flags must be those it started with).
    #[arg(long)]
    pub resume: bool,
    /// Compute device for the encoder product: cpu, cuda or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu", value_parser = parse_from_str::<DeviceSpec>)]
    pub device: DeviceSpec,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

/// `mdiff crosscoder analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Directory of a trained crosscoder (crosscoder.json + crosscoder.safetensors).
    pub crosscoder: PathBuf,
    /// The activations to analyse on (usually those it was trained on).
    #[arg(long, value_name = "DIR")]
    pub activations: PathBuf,
    /// tokenizer.json to show contexts as text (without it, token ids).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Where to write the analysis JSON [default: CROSSCODER/analysis.json].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Rows analysed: the first ones of the set [default: all].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tokens: Option<u64>,
    /// Relative decoder norm below which a latent is base-only.
    #[arg(long, default_value_t = 0.1)]
    pub base_only: f64,
    /// Relative decoder norm above which a latent is tuned-only.
    #[arg(long, default_value_t = 0.9)]
    pub tuned_only: f64,
    /// The shared band of the relative decoder norm, LOW,HIGH.
    #[arg(long, value_name = "LOW,HIGH", value_delimiter = ',', default_value = "0.4,0.6")]
    pub shared: Vec<f64>,
    /// Latents the table lists per class.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print the analysis JSON on stdout instead of the table (it is still written to -o).
    #[arg(long)]
    pub json: bool,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

const COLLECT_EXAMPLES: &str = "\
Examples:
  mdiff crosscoder collect fixtures/tiny-llama/base fixtures/tiny-llama/full-ft -o acts/
  mdiff crosscoder collect base/ tuned/ --prompts corpus.txt --hook blocks.12.hook_resid_post --max-tokens 2000000 -o acts/

The directory must be new or empty; activations.json is written last, so a killed run leaves no usable set, and
collecting again into the same directory replaces what it left.";

/// The flags of every command that runs the two models.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Compute device: cpu, cuda or cuda:N (cuda needs a build with --features cuda).
    #[arg(long, default_value = "cpu", value_parser = parse_from_str::<DeviceSpec>)]
    pub device: DeviceSpec,
    /// Dtype of weights and activations while running the models: f32, bf16 or f16 (logits and stored
    /// activations are f32).
    #[arg(long, default_value = "f32", value_parser = parse_from_str::<RunDtype>)]
    pub dtype: RunDtype,
    /// config.json for both models (overrides the ones beside the weights).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// tokenizer.json for both models (overrides the ones beside the weights).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
}

/// `mdiff crosscoder collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The model before fine-tuning (a model directory with config.json and tokenizer.json).
    pub base: PathBuf,
    /// The fine-tuned model: a model directory or a PEFT adapter directory for BASE.
    pub tuned: PathBuf,
    /// Directory to write (new or empty).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Prompts to run (.txt, .jsonl or .json, as for compare); default: the built-in set.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Hook to read in both models (TransformerLens name); default: the middle block's hook_resid_post.
    #[arg(long, value_name = "NAME")]
    pub hook: Option<String>,
    /// Keep positions holding the beginning-of-sequence token (left out by default: their norms dwarf the rest).
    #[arg(long)]
    pub keep_bos: bool,
    /// Stop after this many token rows.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tokens: u64,
    /// Token rows per shard file.
    #[arg(long, default_value_t = 1 << 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub shard_tokens: u32,
    /// Padded tokens per forward batch.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_tokens: u32,
    /// Where and how the models run.
    #[command(flatten)]
    pub run: RunArgs,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

const COMPARE_EXAMPLES: &str = "\
Examples:
  mdiff compare fixtures/tiny-llama/base fixtures/tiny-llama/full-ft
  mdiff compare base/ lora-adapter/ -o lora-report.json
  mdiff compare base.safetensors tuned.safetensors --methods weights --json > report.json
  mdiff compare base/ tuned/ --methods kl --prompts prompts.jsonl --device cuda --dtype bf16
  mdiff compare base/ tuned/ --methods kl,swap,patch --layers 10-15 --patch-positions 2
  mdiff compare base/ tuned/ --methods weights,kl,crosscoder --crosscoder-dir cc/
  mdiff compare base/ tuned/ --prompts prompts.jsonl --gate gate.toml --baseline last.json --junit gate.xml

Prompt files: .txt (one prompt per line), .jsonl ({\"text\": ...} or {\"messages\": [{\"role\", \"content\"}]} per
line; messages are rendered with the model's chat template) or .json (an array of those objects). Without --prompts
a built-in set of 64 prompts is used.";

const GATE_EXAMPLES: &str = "\
Examples:
  mdiff gate report.json --policy fixtures/gate.toml
  mdiff gate report.json --policy gate.toml --baseline last-release.json --junit gate.xml --markdown gate.md
  mdiff gate report.json --policy gate.toml --format json > gate.json
  mdiff gate --list-metrics

Exit codes: 0 every rule holds (or is skipped), 1 a rule failed, 2 a bad policy, report or baseline.
A rule on a section the report lacks fails and names the --methods to add. Policy format: docs/ci.md.";

const INSPECT_EXAMPLES: &str = "\
Examples:
  mdiff inspect fixtures/tiny-llama/base
  mdiff inspect model.safetensors --json";

const VIEW_EXAMPLES: &str = "\
Examples:
  mdiff view mdiff-report.json
  mdiff view report.json --viewer ~/bin/mdiff-viewer

The report is checked first; then mdiff-viewer is looked for: --viewer, else $MDIFF_VIEWER, else beside mdiff,
else on PATH. `cargo build --release -p viewer` puts it next to mdiff; `cargo install --path viewer` puts it on
PATH.";

const SERVE_EXAMPLES: &str = "\
Examples:
  mdiff serve mdiff-report.json                    # then open the printed http://127.0.0.1:8080/?url=… address
  mdiff serve report.json --port 6006
  mdiff serve report.json --web-dir ~/mdiff-web   # a bundle built elsewhere with viewer/build-web.sh
  ssh -L 8080:127.0.0.1:8080 gpu-box               # on your laptop, to reach a report on a remote machine

The report is checked first. The web viewer is looked for: --web-dir, else $MDIFF_WEB_DIR, else web/ beside mdiff,
else viewer/dist of the source tree mdiff was built from (viewer/build-web.sh writes it). Only 127.0.0.1 listens,
and only the bundle and this one report are served. Ctrl-C stops.";

/// `mdiff compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The model before fine-tuning: a .safetensors file or a Hugging Face model directory.
    pub base: PathBuf,
    /// The fine-tuned model: a .safetensors file, a model directory, or a PEFT adapter directory for BASE.
    pub tuned: PathBuf,
    /// Where to write the JSON report (atomically).
    #[arg(short, long, default_value = "mdiff-report.json")]
    pub output: PathBuf,
    /// Analyses to run, comma-separated: weights, kl, swap, patch, lens, crosscoder [default: weights,kl,lens].
    /// A named method that cannot run is an error; a default one is skipped with a warning. swap, patch (they
    /// rerun the models per part) and crosscoder (trains a model) run only when named.
    #[arg(long, value_delimiter = ',', value_parser = parse_method)]
    pub methods: Option<Vec<Method>>,
    /// Seed of every random choice; the same inputs and seed give the same report.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Leading singular values of ΔW computed per matrix (0 skips the spectrum: faster on huge models).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub singular_values: u16,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// How many changed tensors the summary table lists.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print the report JSON on stdout instead of the summary table (the report is still written to -o).
    #[arg(long)]
    pub json: bool,
    /// Prompts for the behavioural methods (.txt, .jsonl or .json); default: the built-in set of 64.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Where and how the models run.
    #[command(flatten)]
    pub run: RunArgs,
    /// Padded tokens per batch when running the models (bigger is faster and uses more memory).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_tokens: u32,
    /// How many most-divergent positions the report keeps (with context and top tokens).
    #[arg(long, default_value_t = 20)]
    pub top_positions: usize,
    /// Most likely next tokens of each model stored for every position (what the viewer shows on hover;
    /// 0 stores none and makes large reports much smaller).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(0..=100))]
    pub token_top_k: u16,
    /// Whose tokens the KL summary, group summaries and most divergent positions score: all, or only positions
    /// predicting a token of the user's (plain-text prompts count as the user's) or the assistant's messages of
    /// chat-templated prompts. Per-prompt rows stay complete; lens, swap, patch and crosscoder use every position.
    #[arg(long, value_enum, default_value_t = ScoreArg::All)]
    pub score: ScoreArg,
    /// Positions the logit lens reads: the first prompts of the set, whole, up to this many (at least one prompt).
    /// Each costs three unembeddings per layer.
    #[arg(long, default_value_t = LENS_POSITIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub lens_positions: u32,
    /// Positions weight swapping and activation patching score: the first prompts of the set, whole, up to this
    /// many. Every swapped part or patched cell runs the models over them again.
    #[arg(long, default_value_t = LOCALIZE_POSITIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub localize_positions: u32,
    /// Layers swap and patch sweep, e.g. 0,3,10-15 (default: all).
    #[arg(long, value_name = "LIST", value_parser = parse_layers)]
    pub layers: Option<Layers>,
    /// What one swap row puts back: component (attention and MLP per layer) or tensor (each projection and norm).
    #[arg(long, default_value = "component", value_parser = parse_from_str::<Granularity>)]
    pub swap_granularity: Granularity,
    /// Activations patch copies, comma-separated: resid_pre, attn_out, mlp_out.
    #[arg(long, value_delimiter = ',', default_value = "resid_pre,attn_out,mlp_out", value_parser = parse_from_str::<Site>)]
    pub patch_sites: Vec<Site>,
    /// Also patch one position at a time (layer × position) on the N prompts with the largest KL.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub patch_positions: usize,
    /// Patch one position at a time on these prompts (indices into the prompt set, from 0) instead.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub patch_prompts: Option<Vec<usize>>,
    /// Keep the crosscoder's activations and dictionary in this new or empty directory (default: a temporary
    /// one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub crosscoder_dir: Option<PathBuf>,
    /// Training steps of the crosscoder (256 rows each).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..))]
    pub crosscoder_steps: u64,
    /// Active latents per token of the crosscoder (BatchTopK).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub crosscoder_k: u32,
    /// Check the report against this policy (as `mdiff gate`) once it is written; exit 1 when a rule fails.
    #[arg(long, value_name = "POLICY")]
    pub gate: Option<PathBuf>,
    /// What `--gate` writes and compares against.
    #[command(flatten)]
    pub gate_options: GateOptions,
}

/// `mdiff gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// The report to check (written by `mdiff compare`).
    #[arg(required_unless_present = "list_metrics")]
    pub report: Option<PathBuf>,
    /// The policy: limits on report metrics and on which tensors may change (TOML; see docs/ci.md).
    #[arg(long, value_name = "FILE", required_unless_present = "list_metrics")]
    pub policy: Option<PathBuf>,
    /// Baseline, JUnit and Markdown.
    #[command(flatten)]
    pub options: GateOptions,
    /// What stdout gets: a table for people, or the results as JSON.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Print every metric a rule can address, and exit.
    #[arg(long, exclusive = true)]
    pub list_metrics: bool,
}

/// The flags `mdiff gate` and `mdiff compare --gate` share.
#[derive(Debug, Args)]
pub struct GateOptions {
    /// The report of an earlier release, for relative limits (max_increase, max_decrease).
    #[arg(long, value_name = "REPORT")]
    pub baseline: Option<PathBuf>,
    /// Accept a baseline computed on another base model, prompt set, seed or report schema.
    #[arg(long)]
    pub allow_different_inputs: bool,
    /// Also write the results as JUnit XML, one testcase per rule.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write a Markdown summary (headline numbers, failing rules, most divergent prompts) for
    /// $GITHUB_STEP_SUMMARY or a pull-request comment.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

impl GateOptions {
    /// Whether any of the flags was given.
    pub fn any(&self) -> bool {
        self.baseline.is_some() || self.allow_different_inputs || self.junit.is_some() || self.markdown.is_some()
    }
}

/// Layer indices from `--layers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers(pub Vec<usize>);

/// `0,3,10-15` → [0, 3, 10, 11, 12, 13, 14, 15].
fn parse_layers(text: &str) -> Result<Layers, String> {
    let bad = || format!("{text:?} is not a layer list; write e.g. 0,3,10-15");
    let mut layers = Vec::new();
    for part in text.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b {
                    return Err(bad());
                }
                layers.extend(a..=b);
            }
            None => layers.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(Layers(layers))
}

/// `mdiff inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A .safetensors file, a model directory, or a PEFT adapter directory.
    pub checkpoint: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `mdiff view`.
#[derive(Debug, Args)]
pub struct ViewArgs {
    /// The JSON report to open (as written by `mdiff compare`).
    pub report: PathBuf,
    /// The viewer binary to run [default: $MDIFF_VIEWER, else mdiff-viewer beside mdiff, else on PATH].
    #[arg(long, value_name = "PATH")]
    pub viewer: Option<PathBuf>,
}

/// Default of `--lens-positions`: the lens is a default method, so its budget keeps the default run within a few
/// KL runs (each position costs three unembeddings per layer; docs/benchmarks.md, "The default run").
const LENS_POSITIONS: u32 = 512;

/// Default of `--localize-positions` (swap and patch run only when named; their cost is per position and part).
const LOCALIZE_POSITIONS: u32 = 1024;

/// A value parser for the option types `mdiff_core` parses itself (device, dtype, granularity, sites): the same
/// strings as its reports, one message for a bad one.
fn parse_from_str<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = mdiff_core::Error>,
{
    text.parse().map_err(|e: mdiff_core::Error| e.to_string())
}

/// `mdiff serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The JSON report to serve (as written by `mdiff compare`).
    pub report: PathBuf,
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The built web viewer [default: $MDIFF_WEB_DIR, else web/ beside mdiff, else the source tree's viewer/dist].
    #[arg(long, value_name = "DIR")]
    pub web_dir: Option<PathBuf>,
}

fn parse_method(name: &str) -> Result<Method, String> {
    Method::ALL
        .into_iter()
        .find(|m| m.name() == name.trim())
        .ok_or_else(|| {
            let known: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method {name:?}; choose from {}", known.join(", "))
        })
}

/// `--score`, spelled as [`Score`] is in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScoreArg {
    /// Every position.
    All,
    /// Positions predicting a token of a user message.
    User,
    /// Positions predicting a token of an assistant message.
    Assistant,
}

impl From<ScoreArg> for Score {
    fn from(arg: ScoreArg) -> Self {
        match arg {
            ScoreArg::All => Self::All,
            ScoreArg::User => Self::User,
            ScoreArg::Assistant => Self::Assistant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn methods_parse_from_a_comma_list() {
        let cli = Cli::try_parse_from(["mdiff", "compare", "a", "b", "--methods", "weights,kl"]).unwrap();
        let Command::Compare(args) = cli.command else {
            panic!("not compare")
        };
        assert_eq!(args.methods, Some(vec![Method::Weights, Method::Kl]));
        let cli = Cli::try_parse_from(["mdiff", "compare", "a", "b"]).unwrap();
        let Command::Compare(args) = cli.command else {
            panic!("not compare")
        };
        assert_eq!(args.methods, None, "no --methods is told apart from a given list");
        assert!(Cli::try_parse_from(["mdiff", "compare", "a", "b", "--methods", "nope"]).is_err());
    }

    #[test]
    fn layer_lists_parse_ranges() {
        assert_eq!(parse_layers("0,3,5-7").unwrap(), Layers(vec![0, 3, 5, 6, 7]));
        assert!(parse_layers("7-5").is_err());
        assert!(parse_layers("a").is_err());
        assert!(parse_layers("").is_err());
    }

    #[test]
    fn view_takes_one_report_and_an_optional_viewer() {
        let cli = Cli::try_parse_from(["mdiff", "view", "r.json", "--viewer", "bin/v"]).unwrap();
        let Command::View(args) = cli.command else {
            panic!("not view")
        };
        assert_eq!(args.report, PathBuf::from("r.json"));
        assert_eq!(args.viewer, Some(PathBuf::from("bin/v")));
        assert!(Cli::try_parse_from(["mdiff", "view"]).is_err());
        assert!(Cli::try_parse_from(["mdiff", "view", "a.json", "b.json"]).is_err());
    }

    #[test]
    fn serve_takes_one_report_a_port_and_a_web_dir() {
        let cli = Cli::try_parse_from(["mdiff", "serve", "r.json", "--port", "0", "--web-dir", "w"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.report, PathBuf::from("r.json"));
        assert_eq!(args.port, 0);
        assert_eq!(args.web_dir, Some(PathBuf::from("w")));
        let Command::Serve(args) = Cli::try_parse_from(["mdiff", "serve", "r.json"]).unwrap().command else {
            panic!("not serve")
        };
        assert_eq!((args.port, args.web_dir), (8080, None));
        assert!(Cli::try_parse_from(["mdiff", "serve", "r.json", "--port", "65536"]).is_err());
    }
}

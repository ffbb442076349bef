//! PEFT LoRA adapters, merged onto the base one tensor at a time: W' = W + s·B·A.
//!
//! The merge itself is peft-rs's (`LoraLayer::from_weights` + `Mergeable::merge`), which computes
//! `W + (B·A)·s` in f32 in the same order as PEFT's `merge_and_unload`. peft-rs 1.2 falls short of real PEFT
//! adapters in three places, handled here instead:
//! - its `HfLoraConfig` takes `lora_alpha` as an integer and `target_modules` as a list only, and has no
//!   `rank_pattern`/`alpha_pattern`, so `adapter_config.json` is parsed by [`AdapterConfig`];
//! - its key helpers expect `lora_A.<adapter>.weight` and match module prefixes by substring (`layers.1` would
//!   match `layers.10`), so keys are parsed exactly here;
//! - its merge ignores `fan_in_fan_out` (GPT-2 `Conv1D`) and embedding adapters, whose update is (B·A)ᵀ; those are
//!   merged as Aᵀ·Bᵀ (its factors swapped and transposed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use peft_rs::{LoraConfig, LoraLayer, Mergeable};
use regex::Regex;
use serde::Deserialize;

use super::dtype::TensorData;
use super::pairing::{canonical_name, resolve_name};
use super::safetensors_file::SafetensorsFile;
use super::{TensorInfo, TensorSource};
use crate::error::{Error, Result};
use crate::report::{LoraModule, LoraSummary};

const ADAPTER_CONFIG: &str = "adapter_config.json";
pub(super) const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// `target_modules`: names matched as suffixes, or one regular expression matched against the whole module name.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names; a module matches when its name equals one or ends with `.name`.
    List(Vec<String>),
    /// A regular expression that must match the whole module name.
    Regex(String),
}

/// `{pattern: value}` in file order: PEFT takes the first pattern that matches, so order matters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Patterns<T>(pub Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patterns<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Patterns<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map from module pattern to value, or null")
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(Patterns(Vec::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Patterns(entries))
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl<T: Copy> Patterns<T> {
    /// PEFT's `get_pattern_key`: the first pattern p with `(.*\.)?(p)$` matching the module name.
    fn lookup(&self, module: &str) -> std::result::Result<Option<T>, regex::Error> {
        for (pattern, value) in &self.0 {
            if Regex::new(&format!(r"^(?:.*\.)?(?:{pattern})$"))?.is_match(module) {
                return Ok(Some(*value));
            }
        }
        Ok(None)
    }
}

/// The fields of PEFT's `adapter_config.json` that decide the merged weights.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdapterConfig {
    /// Must be `LORA`.
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    /// Default rank.
    pub r: usize,
    /// Default alpha (PEFT writes an int; floats are accepted).
    pub lora_alpha: f64,
    /// Which modules carry adapters.
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Per-module rank overrides.
    #[serde(default)]
    pub rank_pattern: Patterns<usize>,
    /// Per-module alpha overrides.
    #[serde(default)]
    pub alpha_pattern: Patterns<f64>,
    /// Weights stored `[in, out]` (GPT-2 `Conv1D`): the update is (B·A)ᵀ.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Scale by alpha/√r instead of alpha/r.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA (not supported).
    #[serde(default)]
    pub use_dora: bool,
    /// Hub id or path of the base model.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
}

fn default_peft_type() -> String {
    "LORA".into()
}

/// Which LoRA tensor a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    A,
    B,
    EmbeddingA,
    EmbeddingB,
    Magnitude,
    /// `lora_B.bias` (PEFT's `lora_bias = true`).
    Bias,
    /// A LoRA tensor name we do not recognize.
    Unknown,
}

/// Whether `key` names a LoRA factor as PEFT writes them (`…q_proj.lora_A.weight`, `…lora_embedding_A`, ...).
pub(super) fn is_lora_key(key: &str) -> bool {
    parse_lora_key(key).is_some()
}

/// Splits `model.layers.0.self_attn.q_proj.lora_A.weight` into the module and the part.
fn parse_lora_key(key: &str) -> Option<(&str, Part)> {
    const MARKERS: [(&str, Part); 5] = [
        (".lora_embedding_A", Part::EmbeddingA),
        (".lora_embedding_B", Part::EmbeddingB),
        (".lora_magnitude_vector", Part::Magnitude),
        (".lora_A", Part::A),
        (".lora_B", Part::B),
    ];
    MARKERS.iter().find_map(|&(marker, part)| {
        let at = key.find(marker)?;
        let rest = key.get(at + marker.len()..)?;
        if !(rest.is_empty() || rest.starts_with('.')) {
            return None;
        }
        let module = key.get(..at).unwrap_or_default();
        // After the marker PEFT writes `.weight`, `.<adapter>.weight`, or (embeddings) nothing or `.<adapter>`.
        let tail: Vec<&str> = rest.split('.').skip(1).collect();
        let part = match (tail.as_slice(), part) {
            (_, Part::Magnitude) => Part::Magnitude,
            ([.., "bias"], Part::B) => Part::Bias,
            ([] | ["weight"] | [_, "weight"], _) => part,
            ([_], Part::EmbeddingA | Part::EmbeddingB) => part,
            _ => Part::Unknown,
        };
        Some((module, part))
    })
}

/// One adapted module, resolved against the base.
#[derive(Debug, Clone)]
struct ModuleUpdate {
    module: String,
    a_key: String,
    b_key: String,
    r: usize,
    alpha: f64,
    scaling: f64,
    /// Whether the update is (B·A)ᵀ: `fan_in_fan_out` or an embedding.
    transposed: bool,
}

/// The tuned side of a base + adapter pair: base tensors, with adapted ones merged as they are read.
pub struct LoraSource {
    dir: PathBuf,
    config: AdapterConfig,
    adapter: SafetensorsFile,
    base: Arc<dyn TensorSource>,
    tensors: BTreeMap<String, TensorInfo>,
    /// Base tensor name → its update.
    updates: BTreeMap<String, ModuleUpdate>,
    /// Base tensor name → adapter key of a full replacement (`modules_to_save`, trained biases).
    replaced: BTreeMap<String, String>,
}

impl LoraSource {
    /// Reads and validates the adapter in `dir` against `base`.
    ///
    /// # Errors
    /// [`Error::InvalidAdapter`] for a bad config, unsupported adapter type, missing A/B halves, ranks that do not
    /// match `r`/`rank_pattern`, or update shapes that do not fit the base; [`Error::AdapterTargetMissing`] for a
    /// module the base lacks; file errors of [`SafetensorsFile::open`].
    pub fn open(dir: &Path, base: Arc<dyn TensorSource>) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidAdapter {
            path: dir.to_path_buf(),
            reason,
        };
        let config_path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Read {
            path: config_path.clone(),
            source,
        })?;
        let config: AdapterConfig =
            serde_json::from_str(&text).map_err(|e| invalid(format!("{ADAPTER_CONFIG}: {e}")))?;
        if !config.peft_type.eq_ignore_ascii_case("LORA") {
            return Err(invalid(format!(
                "peft_type {} is not supported; mdiff merges LORA adapters",
                config.peft_type
            )));
        }
        if config.use_dora {
            return Err(invalid(
                "DoRA adapters (use_dora) are not supported yet; merge it with PEFT's \
                                merge_and_unload() and compare the merged checkpoint"
                    .into(),
            ));
        }
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        if !weights_path.is_file() {
            let bin = dir.join("adapter_model.bin");
            if bin.is_file() {
                return Err(Error::PickleCheckpoint { path: bin });
            }
            return Err(invalid(format!("no {ADAPTER_WEIGHTS} beside {ADAPTER_CONFIG}")));
        }
        let adapter = SafetensorsFile::open(&weights_path)?;
        let base_names: BTreeMap<&str, &str> = base.tensors().keys().map(|n| (canonical_name(n), n.as_str())).collect();

        let mut halves: BTreeMap<&str, [Option<(&str, Part)>; 2]> = BTreeMap::new();
        let mut replaced = BTreeMap::new();
        for key in adapter.tensors().keys() {
            let canonical = canonical_name(key);
            match parse_lora_key(canonical) {
                Some((module, Part::Bias)) => {
                    return Err(invalid(format!(
                        "{module} has a LoRA bias (lora_bias = true), which mdiff does not merge yet; merge it with \
                         PEFT's merge_and_unload() and compare the merged checkpoint"
                    )));
                }
                Some((_, Part::Unknown)) => {
                    return Err(invalid(format!("unrecognized LoRA tensor {key} in {ADAPTER_WEIGHTS}")));
                }
                Some((module, Part::Magnitude)) => {
                    return Err(invalid(format!(
                        "{module} has a DoRA magnitude vector; DoRA is not supported yet"
                    )));
                }
                Some((module, part @ (Part::A | Part::EmbeddingA))) => {
                    halves.entry(module).or_default()[0] = Some((key.as_str(), part));
                }
                Some((module, part)) => halves.entry(module).or_default()[1] = Some((key.as_str(), part)),
                None => {
                    let target = strip_modules_to_save(canonical);
                    let Some(base_name) = resolve_name(&base_names, &target) else {
                        return Err(Error::AdapterTargetMissing {
                            path: dir.to_path_buf(),
                            module: target.clone(),
                            tensor: target,
                        });
                    };
                    replaced.insert(base_name.to_string(), key.clone());
                }
            }
        }
        if halves.is_empty() {
            return Err(invalid(format!("{ADAPTER_WEIGHTS} holds no lora_A/lora_B tensors")));
        }
        let matcher = TargetMatcher::new(config.target_modules.as_ref()).map_err(&invalid)?;
        matcher.check_base_has_targets(&base_names).map_err(&invalid)?;

        let mut updates = BTreeMap::new();
        for (module, [a, b]) in halves {
            let (Some((a_key, a_part)), Some((b_key, _))) = (a, b) else {
                let missing = if a.is_none() { "lora_A" } else { "lora_B" };
                return Err(invalid(format!(
                    "{module} has no {missing} tensor; the adapter file is incomplete"
                )));
            };
            if !matcher.matches(module) {
                return Err(invalid(format!(
                    "holds weights for {module}, which target_modules does not name"
                )));
            }
            let weight = format!("{module}.weight");
            let Some(base_name) = resolve_name(&base_names, &weight) else {
                return Err(Error::AdapterTargetMissing {
                    path: dir.to_path_buf(),
                    module: module.to_string(),
                    tensor: weight,
                });
            };
            let mut update =
                resolve_update(&config, module, a_key, b_key, a_part == Part::EmbeddingA).map_err(&invalid)?;
            update.transposed =
                check_shapes(&update, adapter.tensors(), base.tensors().get(base_name)).map_err(&invalid)?;
            updates.insert(base_name.to_string(), update);
        }

        let mut tensors = base.tensors().clone();
        for (base_name, key) in &replaced {
            if let (Some(info), Some(slot)) = (adapter.tensors().get(key), tensors.get_mut(base_name)) {
                if info.shape != slot.shape {
                    return Err(invalid(format!(
                        "{key} has shape {:?} but replaces {base_name} of shape {:?}",
                        info.shape, slot.shape
                    )));
                }
                *slot = info.clone();
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            adapter,
            base,
            tensors,
            updates,
            replaced,
        })
    }

    /// The adapter's weight file.
    #[must_use]
    pub fn adapter_file(&self) -> &SafetensorsFile {
        &self.adapter
    }

    /// The adapter as the report describes it.
    #[must_use]
    pub fn summary(&self) -> LoraSummary {
        let (target_modules, target_modules_is_regex) = match &self.config.target_modules {
            Some(TargetModules::List(list)) => (list.clone(), false),
            Some(TargetModules::Regex(re)) => (vec![re.clone()], true),
            None => (Vec::new(), false),
        };
        LoraSummary {
            adapter_path: self.dir.display().to_string(),
            base_model_name_or_path: self.config.base_model_name_or_path.clone(),
            r: self.config.r,
            lora_alpha: self.config.lora_alpha,
            use_rslora: self.config.use_rslora,
            fan_in_fan_out: self.config.fan_in_fan_out,
            target_modules,
            target_modules_is_regex,
            rank_pattern: self.config.rank_pattern.0.iter().cloned().collect(),
            alpha_pattern: self.config.alpha_pattern.0.iter().cloned().collect(),
            modules: self
                .updates
                .iter()
                .map(|(tensor, u)| LoraModule {
                    tensor: tensor.clone(),
                    r: u.r,
                    alpha: u.alpha,
                    scaling: u.scaling,
                })
                .collect(),
            replaced_tensors: self.replaced.keys().cloned().collect(),
        }
    }

    fn merge(&self, base_name: &str, update: &ModuleUpdate) -> Result<Vec<f32>> {
        let merge_err = |source| Error::Merge {
            module: update.module.clone(),
            source,
        };
        let info = self
            .base
            .tensors()
            .get(base_name)
            .ok_or_else(|| Error::TensorNotFound {
                tensor: base_name.to_string(),
                path: self.dir.clone(),
            })?;
        let dev = Device::Cpu;
        let load = |key: &str| -> Result<Tensor> {
            let shape = self
                .adapter
                .tensors()
                .get(key)
                .map(|i| i.shape.clone())
                .unwrap_or_default();
            Ok(Tensor::from_vec(self.adapter.read(key)?.into_vec(), shape, &dev)?)
        };
        let (mut a, mut b) = (load(&update.a_key)?, load(&update.b_key)?);
        if update.transposed {
            // (B·A)ᵀ = Aᵀ·Bᵀ: swap and transpose the thin factors rather than transposing W twice.
            (a, b) = (b.t()?.contiguous()?, a.t()?.contiguous()?);
        }
        // peft-rs takes alpha as an integer; for a fractional alpha fold s into B and merge with s = 1.
        let lora_config = if update.alpha.fract() == 0.0 && update.alpha >= 1.0 {
            LoraConfig {
                r: update.r,
                alpha: update.alpha as usize,
                use_rslora: self.config.use_rslora,
                ..LoraConfig::default()
            }
        } else {
            b = (b * update.scaling)?;
            LoraConfig {
                r: update.r,
                alpha: update.r,
                use_rslora: false,
                ..LoraConfig::default()
            }
        };
        let layer = LoraLayer::from_weights(a, b, lora_config).map_err(merge_err)?;
        let weight = Tensor::from_vec(self.base.read(base_name)?.into_vec(), info.shape.clone(), &dev)?;
        let merged = layer.merge(&weight).map_err(merge_err)?;
        Ok(merged.flatten_all()?.to_vec1::<f32>()?)
    }
}

impl TensorSource for LoraSource {
    fn tensors(&self) -> &BTreeMap<String, TensorInfo> {
        &self.tensors
    }

    fn read(&self, name: &str) -> Result<TensorData<'_>> {
        if let Some(update) = self.updates.get(name) {
            return self.merge(name, update).map(TensorData::Owned);
        }
        if let Some(key) = self.replaced.get(name) {
            return self.adapter.read(key);
        }
        self.base.read(name)
    }
}

/// `lm_head.modules_to_save.default.weight` → `lm_head.weight`.
fn strip_modules_to_save(name: &str) -> String {
    const MARKER: &str = ".modules_to_save.";
    match name.find(MARKER) {
        Some(at) => {
            let after = name.get(at + MARKER.len()..).unwrap_or_default();
            let rest = after.split_once('.').map_or("", |(_, rest)| rest);
            format!("{}.{rest}", name.get(..at).unwrap_or_default())
        }
        None => name.to_string(),
    }
}

fn resolve_update(
    config: &AdapterConfig,
    module: &str,
    a_key: &str,
    b_key: &str,
    embedding: bool,
) -> std::result::Result<ModuleUpdate, String> {
    let bad_pattern = |e: regex::Error| format!("rank_pattern/alpha_pattern is not a valid regex: {e}");
    let r = config
        .rank_pattern
        .lookup(module)
        .map_err(bad_pattern)?
        .unwrap_or(config.r);
    let alpha = config
        .alpha_pattern
        .lookup(module)
        .map_err(bad_pattern)?
        .unwrap_or(config.lora_alpha);
    if r == 0 || alpha <= 0.0 || !alpha.is_finite() {
        return Err(format!(
            "{module}: r = {r} and lora_alpha = {alpha} must both be positive"
        ));
    }
    let scaling = if config.use_rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    };
    Ok(ModuleUpdate {
        module: module.to_string(),
        a_key: a_key.to_string(),
        b_key: b_key.to_string(),
        r,
        alpha,
        scaling,
        transposed: config.fan_in_fan_out || embedding,
    })
}

/// Checks A `[r, in]`, B `[out, r]` against r and the base weight, before any tensor is read, and returns whether
/// the update is applied transposed.
fn check_shapes(
    update: &ModuleUpdate,
    adapter: &BTreeMap<String, TensorInfo>,
    weight: Option<&TensorInfo>,
) -> std::result::Result<bool, String> {
    let shape = |key: &str| adapter.get(key).map(|i| i.shape.clone()).unwrap_or_default();
    let (a, b) = (shape(&update.a_key), shape(&update.b_key));
    let module = &update.module;
    let [a_rows, a_cols] = a[..] else {
        return Err(format!("{module}: lora_A has shape {a:?}, expected 2-D"));
    };
    let [b_rows, b_cols] = b[..] else {
        return Err(format!("{module}: lora_B has shape {b:?}, expected 2-D"));
    };
    if a_rows != update.r || b_cols != update.r {
        return Err(format!(
            "{module}: r = {} (from r/rank_pattern) but lora_A is {a:?} and lora_B is {b:?}; the config and the \
             tensors disagree",
            update.r
        ));
    }
    // PEFT decides the layout per layer (Conv1D stores [in, out], Linear [out, in]) and the saved
    // `fan_in_fan_out` flag is only the last value it set; the shapes settle it unless the weight is square.
    let (linear, conv1d) = (vec![b_rows, a_cols], vec![a_cols, b_rows]);
    match weight.map(|w| &w.shape) {
        Some(w) if *w == linear && *w == conv1d => Ok(update.transposed),
        Some(w) if *w == linear => Ok(false),
        Some(w) if *w == conv1d => Ok(true),
        Some(w) => Err(format!(
            "{module}: update B·A has shape {linear:?} (or {conv1d:?} transposed) but the base weight is {w:?}"
        )),
        None => Err(format!("{module}: base weight not found")),
    }
}

/// `target_modules` as PEFT's `check_target_module_exists` applies it.
enum TargetMatcher<'a> {
    Any,
    List(&'a [String]),
    Regex(Regex),
}

impl<'a> TargetMatcher<'a> {
    fn new(targets: Option<&'a TargetModules>) -> std::result::Result<Self, String> {
        Ok(match targets {
            None => Self::Any,
            Some(TargetModules::List(list)) if list.iter().any(|t| t == "all-linear") => Self::Any,
            Some(TargetModules::List(list)) => Self::List(list),
            Some(TargetModules::Regex(re)) => Self::Regex(
                Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("target_modules is not a valid regex: {e}"))?,
            ),
        })
    }

    fn matches(&self, module: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|t| module == t || module.ends_with(&format!(".{t}"))),
            Self::Regex(re) => re.is_match(module),
        }
    }

    /// PEFT refuses an adapter whose targets match nothing in the model; an entry that matches nothing next to
    /// ones that do is fine (a list shared between architectures).
    fn check_base_has_targets(&self, base_names: &BTreeMap<&str, &str>) -> std::result::Result<(), String> {
        let mut modules = base_names.keys().filter_map(|n| n.rsplit_once('.').map(|(m, _)| m));
        let (matched, described) = match self {
            Self::Any => return Ok(()),
            Self::List(list) => (modules.any(|m| self.matches(m)), format!("{list:?}")),
            Self::Regex(re) => (modules.any(|m| re.is_match(m)), format!("{:?}", re.as_str())),
        };
        if matched {
            Ok(())
        } else {
            Err(format!(
                "target_modules {described} match no module of the base model; is the adapter meant for another base?"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peft_keys_with_and_without_adapter_name() {
        let cases = [
            (
                "model.layers.1.q_proj.lora_A.weight",
                Some(("model.layers.1.q_proj", Part::A)),
            ),
            ("m.q_proj.lora_B.default.weight", Some(("m.q_proj", Part::B))),
            (
                "model.embed_tokens.lora_embedding_A",
                Some(("model.embed_tokens", Part::EmbeddingA)),
            ),
            ("m.wte.lora_embedding_B.default", Some(("m.wte", Part::EmbeddingB))),
            ("m.c_attn.lora_B.bias", Some(("m.c_attn", Part::Bias))),
            (
                "m.c_attn.lora_A.default.weight.extra",
                Some(("m.c_attn", Part::Unknown)),
            ),
            ("model.layers.1.q_proj.weight", None),
            ("x.lora_Almost.weight", None),
        ];
        for (key, want) in cases {
            assert_eq!(parse_lora_key(key), want, "{key}");
        }
    }

    #[test]
    fn pattern_lookup_follows_peft_first_match_semantics() {
        let p = Patterns(vec![
            ("down_proj".to_string(), 2usize),
            ("layers.1.mlp.down_proj".to_string(), 8),
        ]);
        assert_eq!(p.lookup("model.layers.1.mlp.down_proj").unwrap(), Some(2));
        assert_eq!(p.lookup("model.layers.1.mlp.up_proj").unwrap(), None);
        assert_eq!(p.lookup("model.layers.1.mlp.xdown_proj").unwrap(), None);
    }

    #[test]
    fn modules_to_save_keys_map_to_the_base_tensor() {
        assert_eq!(
            strip_modules_to_save("lm_head.modules_to_save.default.weight"),
            "lm_head.weight"
        );
        assert_eq!(strip_modules_to_save("model.norm.weight"), "model.norm.weight");
    }

    #[test]
    fn target_list_matches_suffixes_and_regex_matches_whole_names() {
        let list = TargetModules::List(vec!["q_proj".into()]);
        let m = TargetMatcher::new(Some(&list)).unwrap();
        assert!(m.matches("model.layers.0.self_attn.q_proj") && !m.matches("model.layers.0.self_attn.xq_proj"));
        let re = TargetModules::Regex(r".*\.mlp\.(gate|down)_proj".into());
        let m = TargetMatcher::new(Some(&re)).unwrap();
        assert!(m.matches("model.layers.0.mlp.gate_proj") && !m.matches("model.layers.0.mlp.gate_proj.x"));
    }
}

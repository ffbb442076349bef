//! Pairing base and tuned tensors by name.
//!
//! Names match exactly after stripping PEFT's `base_model.model.` wrapper; when only one side carries the base
//! model prefix of a `*ForCausalLM` checkpoint (`model.`, GPT-2's `transformer.`, ...: exports of the bare
//! `*Model`, as GPT-2's Hub weights are), it is ignored too.

use std::collections::BTreeMap;

use super::TensorInfo;
use crate::error::{Error, Result};
use crate::report::{DtypeMismatch, ShapeMismatch};

const PEFT_PREFIX: &str = "base_model.model.";
/// transformers' `base_model_prefix` values (plus the dot) of the architectures we know, and where a multimodal
/// checkpoint keeps its language model (Gemma 3: `language_model.model.` on the Hub, `model.language_model.` in
/// transformers ≥ 4.52's own layout), so its tower pairs with a text-only model's tensors.
const MODEL_PREFIXES: [&str; 7] = [
    "model.",
    "transformer.",
    "gpt_neox.",
    "backbone.",
    "model.language_model.",
    "language_model.model.",
    "language_model.",
];

/// A name with PEFT's wrapper prefix removed.
#[must_use]
pub fn canonical_name(name: &str) -> &str {
    name.strip_prefix(PEFT_PREFIX).unwrap_or(name)
}

/// Finds `canonical` in a canonical → original name table, ignoring a `model.` prefix on either side.
pub(crate) fn resolve_name<'a>(table: &BTreeMap<&'a str, &'a str>, canonical: &str) -> Option<&'a str> {
    resolve_entry(table, canonical).map(|(_, original)| original)
}

fn resolve_entry<'a>(table: &BTreeMap<&'a str, &'a str>, canonical: &str) -> Option<(&'a str, &'a str)> {
    let stripped = MODEL_PREFIXES
        .iter()
        .filter_map(|p| canonical.strip_prefix(p).map(String::from));
    let prefixed = MODEL_PREFIXES.iter().map(|p| format!("{p}{canonical}"));
    std::iter::once(canonical.to_string())
        .chain(stripped)
        .chain(prefixed)
        .find_map(|c| table.get_key_value(c.as_str()).map(|(k, v)| (*k, *v)))
}

/// Two tensors with the same meaning and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Canonical name (the base's, prefix-stripped).
    pub name: String,
    /// Name in the base source.
    pub base_name: String,
    /// Name in the tuned source.
    pub tuned_name: String,
    /// Base dtype and shape.
    pub base: TensorInfo,
    /// Tuned dtype and shape.
    pub tuned: TensorInfo,
}

/// The outcome of pairing two tensor tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairing {
    /// Pairs with equal shapes, sorted by canonical name.
    pub pairs: Vec<Pair>,
    /// Pairs whose shapes differ (not diffable).
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// Pairs (also in `pairs`) whose dtypes differ.
    pub dtype_mismatches: Vec<DtypeMismatch>,
    /// Base names with no partner.
    pub unmatched_base: Vec<String>,
    /// Tuned names with no partner.
    pub unmatched_tuned: Vec<String>,
}

/// Pairs tensors of `base` and `tuned` by name.
///
/// # Errors
/// [`Error::NothingPaired`] when no name pairs at all (different architectures, or the wrong files).
pub fn pair_tensors(base: &BTreeMap<String, TensorInfo>, tuned: &BTreeMap<String, TensorInfo>) -> Result<Pairing> {
    let base_by_canonical: BTreeMap<&str, &str> =
        base.keys().map(|name| (canonical_name(name), name.as_str())).collect();
    let mut used_base: BTreeMap<&str, &str> = BTreeMap::new();
    let mut pairing = Pairing::default();
    let mut named_pairs = 0usize;

    for (tuned_name, tuned_info) in tuned {
        let found =
            resolve_entry(&base_by_canonical, canonical_name(tuned_name)).filter(|(c, _)| !used_base.contains_key(*c));
        let Some((base_canonical, base_name)) = found else {
            pairing.unmatched_tuned.push(tuned_name.clone());
            continue;
        };
        used_base.insert(base_canonical, base_name);
        named_pairs += 1;
        let Some(base_info) = base.get(base_name) else {
            continue;
        };
        if base_info.shape != tuned_info.shape {
            pairing.shape_mismatches.push(ShapeMismatch {
                name: base_canonical.to_string(),
                base: base_info.shape.clone(),
                tuned: tuned_info.shape.clone(),
            });
            continue;
        }
        if base_info.dtype != tuned_info.dtype {
            pairing.dtype_mismatches.push(DtypeMismatch {
                name: base_canonical.to_string(),
                base: base_info.dtype.clone(),
                tuned: tuned_info.dtype.clone(),
            });
        }
        pairing.pairs.push(Pair {
            name: base_canonical.to_string(),
            base_name: base_name.to_string(),
            tuned_name: tuned_name.clone(),
            base: base_info.clone(),
            tuned: tuned_info.clone(),
        });
    }
    pairing.unmatched_base = base
        .keys()
        .filter(|name| !used_base.contains_key(canonical_name(name)))
        .cloned()
        .collect();

    if named_pairs == 0 {
        return Err(Error::NothingPaired {
            base_count: base.len(),
            base_example: base.keys().next().cloned().unwrap_or_else(|| "(none)".into()),
            tuned_count: tuned.len(),
            tuned_example: tuned.keys().next().cloned().unwrap_or_else(|| "(none)".into()),
        });
    }
    pairing.pairs.sort_by(|a, b| a.name.cmp(&b.name));
    pairing.shape_mismatches.sort_by(|a, b| a.name.cmp(&b.name));
    pairing.dtype_mismatches.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pairing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &str, &[usize])]) -> BTreeMap<String, TensorInfo> {
        entries
            .iter()
            .map(|(n, d, s)| {
                (
                    (*n).to_string(),
                    TensorInfo {
                        dtype: (*d).to_string(),
                        shape: s.to_vec(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn strips_peft_and_one_sided_model_prefixes() {
        let base = table(&[("model.layers.0.w", "F32", &[2, 2]), ("lm_head.weight", "F32", &[4, 2])]);
        let tuned = table(&[
            ("base_model.model.layers.0.w", "BF16", &[2, 2]),
            ("lm_head.weight", "F32", &[4, 3]),
        ]);
        let p = pair_tensors(&base, &tuned).unwrap();
        assert_eq!(p.pairs.len(), 1);
        assert_eq!(p.pairs[0].name, "model.layers.0.w");
        assert_eq!(p.pairs[0].tuned_name, "base_model.model.layers.0.w");
        assert_eq!(p.dtype_mismatches.len(), 1);
        assert_eq!(p.shape_mismatches[0].tuned, vec![4, 3]);
        assert!(p.unmatched_base.is_empty() && p.unmatched_tuned.is_empty());
    }

    #[test]
    fn nothing_in_common_is_an_error_naming_examples() {
        let base = table(&[("a", "F32", &[1])]);
        let tuned = table(&[("b", "F32", &[1])]);
        let err = pair_tensors(&base, &tuned).unwrap_err().to_string();
        assert!(err.contains("e.g. a") && err.contains("e.g. b"), "{err}");
    }

    #[test]
    fn gpt2_hub_names_without_transformer_prefix_pair_with_save_pretrained_names() {
        let base = table(&[
            ("h.0.attn.c_attn.weight", "F32", &[4, 12]),
            ("wte.weight", "F32", &[8, 4]),
        ]);
        let tuned = table(&[
            ("transformer.h.0.attn.c_attn.weight", "F32", &[4, 12]),
            ("transformer.wte.weight", "F32", &[8, 4]),
        ]);
        let p = pair_tensors(&base, &tuned).unwrap();
        assert_eq!(p.pairs.len(), 2);
        assert!(p.unmatched_base.is_empty() && p.unmatched_tuned.is_empty());
    }
}

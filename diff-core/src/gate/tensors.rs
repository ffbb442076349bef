//! `[[tensors]]` rules: which tensors may change.

use super::policy::TensorRule;
use crate::report::WeightsSection;

/// A changed tensor that breaks a rule, and how it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The tensor's name (without checkpoint prefix where it was paired).
    pub tensor: String,
    /// `‖ΔW‖/‖W‖ = 0.012`, `only in the tuned model`, `shape [8, 4] → [9, 4]`.
    pub change: String,
}

/// The head's name in a model whose unembedding is tied to its token embedding (`tie_word_embeddings`): such a
/// checkpoint stores no head, and the head *is* the embedding, so patterns for the head apply to that tensor.
const TIED_HEAD: &str = "lm_head.weight";

/// Whether `name` is the token embedding (Llama-style `embed_tokens`, GPT-2's `wte`), which a tied head shares.
fn is_token_embedding(name: &str) -> bool {
    name.ends_with("embed_tokens.weight") || name.ends_with("wte.weight")
}

/// `names`, with [`TIED_HEAD`] added when the head is tied and one of them is the token embedding.
fn with_tied_head(mut names: Vec<&str>, tied_embeddings: bool) -> Vec<&str> {
    if tied_embeddings && names.iter().any(|n| is_token_embedding(n)) {
        names.push(TIED_HEAD);
    }
    names
}

/// The changed tensors of `weights` that `rule` does not allow, in name order. With `tied_embeddings` (the base
/// model's config ties its head to the token embedding), the embedding also answers to `lm_head.weight`.
///
/// Changed means: some entry differs and ‖ΔW‖/‖W‖ exceeds the rule's `min_relative_change`; or the count of NaN or
/// ±Inf entries differs (those entries are left out of the statistics); or the tensor is only in one model, or
/// changed shape. A tensor mdiff did not diff (an integer or FP8 dtype) cannot be shown unchanged and counts too.
#[must_use]
pub fn violations(rule: &TensorRule, weights: &WeightsSection, tied_embeddings: bool) -> Vec<Violation> {
    let breaks = |names: &[&str]| {
        let names = with_tied_head(names.to_vec(), tied_embeddings);
        let matches = |patterns: &[String]| patterns.iter().any(|p| names.iter().any(|n| glob_match(p, n)));
        (!rule.allow.is_empty() && !matches(&rule.allow)) || matches(&rule.forbid)
    };
    let mut found = Vec::new();
    let mut flag = |tensor: &str, change: String| {
        found.push(Violation {
            tensor: tensor.to_string(),
            change,
        });
    };
    for t in &weights.tensors {
        let n = &t.non_finite;
        let non_finite_changed = n.base_nan != n.tuned_nan || n.base_inf != n.tuned_inf;
        // A base of norm zero has no relative change; any change to it counts.
        let changed = t.num_changed > 0 && t.relative.is_none_or(|r| r > rule.min_relative_change);
        if !(changed || non_finite_changed) || !breaks(&[&t.name, &t.base_name, &t.tuned_name]) {
            continue;
        }
        let change = match t.relative {
            _ if non_finite_changed => format!(
                "NaN/Inf entries {} → {}",
                n.base_nan + n.base_inf,
                n.tuned_nan + n.tuned_inf
            ),
            Some(r) => format!("‖ΔW‖/‖W‖ = {}", super::number(r)),
            None => "changed (the base is all zeros)".into(),
        };
        flag(&t.name, change);
    }
    let one_sided = [
        (&weights.unmatched_base, "only in the base model"),
        (&weights.unmatched_tuned, "only in the tuned model"),
    ];
    for (names, change) in one_sided {
        for name in names.iter().filter(|n| breaks(&[n])) {
            flag(name, change.into());
        }
    }
    for m in weights.shape_mismatches.iter().filter(|m| breaks(&[&m.name])) {
        flag(&m.name, format!("shape {:?} → {:?}", m.base, m.tuned));
    }
    for s in weights.skipped_tensors.iter().filter(|s| breaks(&[&s.name])) {
        flag(
            &s.name,
            format!("not diffed ({}), so it cannot be shown unchanged", s.reason),
        );
    }
    found.sort_by(|a, b| a.tensor.cmp(&b.tensor));
    found
}

/// The rule's patterns that match no tensor of `weights` at all: almost always a typo, which would otherwise let
/// the rule hold forever. A tied head matches through the token embedding (see [`violations`]).
#[must_use]
pub fn unmatched_patterns<'a>(rule: &'a TensorRule, weights: &WeightsSection, tied_embeddings: bool) -> Vec<&'a str> {
    let names: Vec<&str> = weights
        .tensors
        .iter()
        .flat_map(|t| [t.name.as_str(), t.base_name.as_str(), t.tuned_name.as_str()])
        .chain(weights.unmatched_base.iter().map(String::as_str))
        .chain(weights.unmatched_tuned.iter().map(String::as_str))
        .chain(weights.shape_mismatches.iter().map(|m| m.name.as_str()))
        .chain(weights.skipped_tensors.iter().map(|s| s.name.as_str()))
        .collect();
    let names = with_tied_head(names, tied_embeddings);
    rule.allow
        .iter()
        .chain(&rule.forbid)
        .filter(|p| !names.iter().any(|n| glob_match(p, n)))
        .map(String::as_str)
        .collect()
}

/// Whether `text` matches the glob `pattern`: `*` matches any run of characters (dots included), `?` one
/// character, everything else itself.
#[must_use]
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much of the text it has swallowed: on a mismatch, let it take one more.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_shell_patterns_across_dots() {
        assert!(glob_match("*embed_tokens*", "model.embed_tokens.weight"));
        assert!(glob_match(
            "layers.*.self_attn.q_proj.weight",
            "layers.3.self_attn.q_proj.weight"
        ));
        assert!(glob_match("layers.?.mlp.*", "layers.7.mlp.down_proj.weight"));
        assert!(!glob_match("layers.?.mlp.*", "layers.17.mlp.down_proj.weight"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("lm_head.weight", "lm_head.weight2"));
        assert!(glob_match("*.weight", "x.weight"));
        assert!(!glob_match("*.weight", "x.bias"));
        assert!(glob_match("**a", "bba"));
    }
}

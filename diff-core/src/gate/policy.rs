//! The policy file (`gate.toml`): rules over report metrics and over which tensors may change.
//!
//! ```toml
//! [[rule]]
//! metric = "behaviour.kl_tuned_base.tokens.mean"
//! max = 0.1
//!
//! [[rule]]
//! name = "refusals stay put"
//! metric = "behaviour.kl_tuned_base.tokens.mean"
//! group = "refusal"
//! max = 0.05
//! max_increase = 0.2        # at most 20% above the baseline report's value
//!
//! [[tensors]]
//! name = "embeddings must not change"
//! forbid = ["*embed_tokens*", "*lm_head*"]
//! ```

use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use super::metrics::{Metric, catalogue, find};
use crate::error::{Error, Result};

/// A gate policy: every rule must hold for the gate to pass.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mdiff gate policy")]
pub struct Policy {
    /// Limits on report metrics (`[[rule]]` tables).
    #[serde(default, rename = "rule")]
    pub rules: Vec<MetricRule>,
    /// Which tensors may change (`[[tensors]]` tables).
    #[serde(default)]
    pub tensors: Vec<TensorRule>,
}

/// A limit on one metric of the report, optionally on one prompt group and relative to a baseline report.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricRule {
    /// What the rule is called in tables, JUnit and Markdown [default: the metric, and the group].
    #[serde(default)]
    pub name: Option<String>,
    /// Dotted path of the metric (`mdiff gate --list-metrics` prints them all).
    #[schemars(with = "String")]
    pub metric: Spanned<String>,
    /// Evaluate on the prompts of this group only (behaviour metrics; prompts carry `"group"`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub group: Option<Spanned<String>>,
    /// The value must be at most this.
    #[serde(default)]
    pub max: Option<f64>,
    /// The value must be at least this.
    #[serde(default)]
    pub min: Option<f64>,
    /// With `--baseline`: the value may exceed the baseline's by at most this fraction of |baseline|.
    #[serde(default)]
    pub max_increase: Option<f64>,
    /// With `--baseline`: the value may fall below the baseline's by at most this fraction of |baseline|.
    #[serde(default)]
    pub max_decrease: Option<f64>,
}

/// Which tensors may change: a changed tensor must match an `allow` pattern (when any is given) and no `forbid`
/// pattern. Patterns are globs (`*` any run of characters, `?` one) matched against the tensor's name with and
/// without its checkpoint prefix.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorRule {
    /// What the rule is called [default: built from the patterns].
    #[serde(default)]
    pub name: Option<String>,
    /// Only tensors matching one of these may change.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Tensors matching one of these must not change.
    #[serde(default)]
    pub forbid: Vec<String>,
    /// A paired tensor counts as changed when ‖ΔW‖/‖W‖ exceeds this (0: any changed entry). Tensors only one
    /// model has, and shape changes, always count.
    #[serde(default)]
    pub min_relative_change: f64,
}

impl MetricRule {
    /// The rule's display name.
    #[must_use]
    pub fn display_name(&self) -> String {
        match (&self.name, &self.group) {
            (Some(name), _) => name.clone(),
            (None, Some(group)) => format!("{} [group {}]", self.metric.get_ref(), group.get_ref()),
            (None, None) => self.metric.get_ref().clone(),
        }
    }

    /// The group, if any.
    #[must_use]
    pub fn group(&self) -> Option<&str> {
        self.group.as_ref().map(|g| g.get_ref().as_str())
    }
}

impl TensorRule {
    /// The rule's display name.
    #[must_use]
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let mut parts = Vec::new();
        if !self.allow.is_empty() {
            parts.push(format!("only {} may change", self.allow.join(", ")));
        }
        if !self.forbid.is_empty() {
            parts.push(format!("{} must not change", self.forbid.join(", ")));
        }
        format!("tensors: {}", parts.join("; "))
    }
}

impl Policy {
    /// Reads and checks a policy file.
    ///
    /// # Errors
    /// [`Error::Read`]; [`Error::InvalidPolicy`] for TOML syntax, unknown keys and wrong types (with line and
    /// column), unknown metrics (listing the valid ones), and rules without a limit.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let at = line_column(std::str::from_utf8(valid).unwrap_or_default(), valid.len());
            Error::InvalidPolicy {
                path: path.to_path_buf(),
                reason: format!("{at}: not UTF-8 text; save the policy as UTF-8"),
            }
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks policy text; `path` names it in errors.
    ///
    /// # Errors
    /// As [`Policy::read`].
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidPolicy {
            path: path.to_path_buf(),
            reason,
        };
        let policy: Self = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            invalid(match e.span() {
                Some(span) => format!("{}: {message}", line_column(text, span.start)),
                None => message,
            })
        })?;
        if policy.rules.is_empty() && policy.tensors.is_empty() {
            return Err(invalid(
                "no [[rule]] or [[tensors]] table; a policy needs at least one rule".into(),
            ));
        }
        for rule in &policy.rules {
            rule.check(text).map_err(invalid)?;
        }
        // Rule names key the JUnit testcases and the tables: each must be there, and once.
        let names: Vec<String> = policy
            .rules
            .iter()
            .map(MetricRule::display_name)
            .chain(policy.tensors.iter().map(TensorRule::display_name))
            .collect();
        if names.iter().any(|n| n.trim().is_empty()) {
            return Err(invalid(
                "a rule has an empty `name`; name it, or leave `name` out".into(),
            ));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(invalid(format!(
                    "two rules are both called {name:?}; give one of them a different `name`"
                )));
            }
        }
        for (index, rule) in policy.tensors.iter().enumerate() {
            rule.check()
                .map_err(|reason| invalid(format!("[[tensors]] #{}: {reason}", index + 1)))?;
        }
        Ok(policy)
    }
}

impl MetricRule {
    fn check(&self, text: &str) -> std::result::Result<(), String> {
        let at = |span: std::ops::Range<usize>| line_column(text, span.start);
        let path = self.metric.get_ref();
        let Some(metric) = find(path) else {
            let valid: Vec<&str> = catalogue().iter().map(|m| m.path.as_str()).collect();
            return Err(format!(
                "{}: unknown metric {path:?}; valid metrics: {}",
                at(self.metric.span()),
                valid.join(", ")
            ));
        };
        let here = at(self.metric.span());
        if let Some(group) = &self.group
            && !metric.per_group()
        {
            let groupable: Vec<&str> = catalogue()
                .iter()
                .filter(|m| m.per_group())
                .map(|m| m.path.as_str())
                .collect();
            return Err(format!(
                "{}: metric {path:?} has no per-group value, so `group` cannot apply; group rules take: {}",
                at(group.span()),
                groupable.join(", ")
            ));
        }
        let limits = [self.max, self.min, self.max_increase, self.max_decrease];
        if limits.iter().all(Option::is_none) {
            return Err(format!(
                "{here}: the rule on {path:?} has no limit; give max, min, max_increase or max_decrease"
            ));
        }
        if limits.iter().flatten().any(|v| !v.is_finite()) {
            return Err(format!(
                "{here}: the limits of the rule on {path:?} must be finite numbers"
            ));
        }
        if [self.max_increase, self.max_decrease]
            .into_iter()
            .flatten()
            .any(|v| v < 0.0)
        {
            return Err(format!(
                "{here}: max_increase and max_decrease are fractions of the baseline's value and cannot be negative"
            ));
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(format!("{here}: the rule on {path:?} has min {min} above max {max}"));
        }
        Ok(())
    }

    /// The metric the rule reads (checked when the policy was parsed).
    pub(super) fn metric(&self) -> Option<&'static Metric> {
        find(self.metric.get_ref())
    }
}

impl TensorRule {
    fn check(&self) -> std::result::Result<(), String> {
        if self.allow.is_empty() && self.forbid.is_empty() {
            return Err("give `allow` or `forbid` patterns (e.g. forbid = [\"*embed_tokens*\"])".into());
        }
        if let Some(p) = self
            .allow
            .iter()
            .chain(&self.forbid)
            .find(|p| p.trim() != p.as_str() || p.is_empty())
        {
            return Err(format!(
                "pattern {p:?} is empty or has spaces around it; tensor names have none"
            ));
        }
        if !(self.min_relative_change.is_finite() && self.min_relative_change >= 0.0) {
            return Err(format!(
                "min_relative_change must be a finite number ≥ 0, found {}",
                self.min_relative_change
            ));
        }
        Ok(())
    }
}

/// `line L, column C` (both 1-based) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> String {
    // toml's spans are byte offsets on character boundaries; stay safe if one is not.
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// The JSON Schema of [`Policy`], as committed in `docs/gate.schema.json`.
#[must_use]
pub fn policy_json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(Policy)).unwrap_or_default();
    // Editors complete and check `metric` against the catalogue.
    if let Some(metric) = schema.pointer_mut("/$defs/MetricRule/properties/metric") {
        let paths = catalogue()
            .iter()
            .map(|m| serde_json::Value::from(m.path.as_str()))
            .collect();
        metric["enum"] = serde_json::Value::Array(paths);
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy> {
        Policy::parse(text, Path::new("gate.toml"))
    }

    fn reason(text: &str) -> String {
        match parse(text) {
            Err(Error::InvalidPolicy { reason, .. }) => reason,
            other => panic!("expected an invalid policy, got {other:?}"),
        }
    }

    #[test]
    fn rules_and_tensor_rules_parse() {
        let policy = parse(
            r#"
[[rule]]
metric = "behaviour.kl_tuned_base.tokens.mean"
max = 0.1

[[rule]]
name = "refusals"
metric = "behaviour.kl_tuned_base.tokens.mean"
group = "refusal"
max = 0.05
max_increase = 0.2

[[tensors]]
forbid = ["*embed_tokens*"]
"#,
        )
        .unwrap();
        assert_eq!(policy.rules.len(), 2);
        assert_eq!(policy.rules[0].display_name(), "behaviour.kl_tuned_base.tokens.mean");
        assert_eq!(policy.rules[1].display_name(), "refusals");
        assert_eq!(policy.rules[1].group(), Some("refusal"));
        assert_eq!(
            policy.tensors[0].display_name(),
            "tensors: *embed_tokens* must not change"
        );
    }

    #[test]
    fn syntax_unknown_keys_and_wrong_types_name_line_and_column() {
        let r = reason("[[rule]]\nmetric = \"behaviour.top1_agreement\"\nmin = 0.9\nmaximum = 1\n");
        assert!(r.starts_with("line 4, column 1:") && r.contains("maximum"), "{r}");
        let r = reason("[[rule]]\nmetric = \"behaviour.top1_agreement\"\nmin = \"high\"\n");
        assert!(r.starts_with("line 3, column 7:"), "{r}");
        let r = reason("[[rule]\nmetric = 1\n");
        assert!(r.starts_with("line 1,"), "{r}");
        let r = reason("[[rules]]\nmetric = \"behaviour.top1_agreement\"\nmin = 0.9\n");
        assert!(r.contains("rules"), "{r}");
        assert!(!r.contains('\n'), "one line: {r}");
    }

    #[test]
    fn unknown_metrics_list_the_valid_ones() {
        let r = reason("\n[[rule]]\nmetric = \"behaviour.kl.mean\"\nmax = 1\n");
        assert!(r.starts_with("line 3, column 10: unknown metric"), "{r}");
        assert!(r.contains("behaviour.kl_tuned_base.tokens.mean") && r.contains("crosscoder.classes.tuned_only"));
    }

    #[test]
    fn rules_must_have_a_sensible_limit_and_group() {
        assert!(reason("[[rule]]\nmetric = \"weights.changed_tensors\"\n").contains("has no limit"));
        assert!(reason("[[rule]]\nmetric = \"weights.changed_tensors\"\nmax = nan\n").contains("finite"));
        assert!(reason("[[rule]]\nmetric = \"weights.changed_tensors\"\nmin = 3\nmax = 2\n").contains("above max"));
        assert!(reason("[[rule]]\nmetric = \"weights.changed_tensors\"\nmax_increase = -0.1\n").contains("negative"));
        let both = "[[rule]]\nmetric = \"weights.changed_tensors\"\nmax_increase = 0.1\nmax_decrease = -0.5\n";
        assert!(reason(both).contains("negative"), "each relative limit is checked");
        let twice = "[[rule]]\nmetric = \"weights.changed_tensors\"\nmax = 1\n\
                     [[rule]]\nmetric = \"weights.changed_tensors\"\nmin = 0\n";
        assert!(
            reason(twice).contains("both called \"weights.changed_tensors\""),
            "{}",
            reason(twice)
        );
        let blank = "[[rule]]\nname = \" \"\nmetric = \"weights.changed_tensors\"\nmax = 1\n";
        assert!(reason(blank).contains("empty `name`"));
        assert!(reason("[[tensors]]\nforbid = [\" *embed* \"]\n").contains("spaces"));
        let r = reason("[[rule]]\nmetric = \"weights.changed_tensors\"\ngroup = \"code\"\nmax = 2\n");
        assert!(
            r.starts_with("line 3, column 9:") && r.contains("no per-group value"),
            "{r}"
        );
        assert!(reason("").contains("needs at least one rule"));
        assert!(reason("[[tensors]]\nname = \"x\"\n").contains("allow"));
        assert!(reason("[[tensors]]\nforbid = [\"\"]\n").contains("empty"));
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_column("ab\ncd", 4), "line 2, column 2");
        assert_eq!(line_column("é\nx", 3), "line 2, column 1");
        assert_eq!(line_column("", 0), "line 1, column 1");
    }
}

//! Release gating: a policy of limits on a report's metrics, evaluated to pass or fail (`mdiff gate`).
//!
//! [`Policy`] is read from `gate.toml`; [`evaluate`] checks every rule against a report and, for relative
//! limits, a baseline report of an earlier release ([`baseline::differences`] says whether it is one). Rules on a
//! section the report lacks fail with the `--methods` to add; they never crash. This module only reads reports, so
//! it builds without the `compute` feature.

pub mod baseline;
pub mod metrics;
mod policy;
pub mod tensors;

use std::fmt::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use policy::{MetricRule, Policy, TensorRule, policy_json_schema};

use self::metrics::Lookup;
use crate::report::{Method, Report};

/// What a rule came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every limit holds.
    Pass,
    /// A limit is broken, or the value could not be read.
    Fail,
    /// Only relative limits, and no baseline was given.
    Skip,
}

impl Status {
    /// `pass`, `FAIL`, `skip`: failures stand out in a table.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        }
    }
}

/// Which side of the value a limit bounds, and how the bound was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    /// value ≤ setting.
    Max,
    /// value ≥ setting.
    Min,
    /// value ≤ baseline + setting·|baseline|.
    MaxIncrease,
    /// value ≥ baseline − setting·|baseline|.
    MaxDecrease,
}

/// One limit of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Limit {
    /// The kind.
    pub kind: LimitKind,
    /// The number in the policy.
    pub setting: f64,
    /// The bound the value was held to; absent for a relative limit without a baseline value.
    pub bound: Option<f64>,
    /// Whether the value is within the bound (absent when either is).
    pub holds: Option<bool>,
}

impl Limit {
    fn new(kind: LimitKind, setting: f64, bound: Option<f64>, value: Option<f64>) -> Self {
        let holds = bound.zip(value).map(|(bound, value)| match kind {
            LimitKind::Max | LimitKind::MaxIncrease => value <= bound,
            LimitKind::Min | LimitKind::MaxDecrease => value >= bound,
        });
        Self {
            kind,
            setting,
            bound,
            holds,
        }
    }

    /// How `value` breaks this limit, naming the limit: `2.07 is above the maximum 1.5`, `0.19 is below the
    /// minimum 0.25`, `2.07 is above baseline +20% = 1.598`.
    #[must_use]
    pub fn violation(&self, value: f64) -> String {
        let bound = self.bound.unwrap_or(self.setting);
        // Four digits can print a value just past its bound as the bound itself; then all of them.
        let shown = if number(bound) == number(value) {
            format!("{value}")
        } else {
            number(value)
        };
        let percent = number(100.0 * self.setting);
        match self.kind {
            LimitKind::Max => format!("{shown} is above the maximum {}", number(self.setting)),
            LimitKind::Min => format!("{shown} is below the minimum {}", number(self.setting)),
            LimitKind::MaxIncrease => format!("{shown} is above baseline +{percent}% = {}", number(bound)),
            LimitKind::MaxDecrease => format!("{shown} is below baseline −{percent}% = {}", number(bound)),
        }
    }

    /// `≤ 0.1`, `≥ 0.9`, `≤ +20% of baseline = 0.06`.
    #[must_use]
    pub fn describe(&self) -> String {
        let bound = self.bound.map_or_else(|| "no baseline".to_string(), number);
        match self.kind {
            LimitKind::Max => format!("≤ {}", number(self.setting)),
            LimitKind::Min => format!("≥ {}", number(self.setting)),
            LimitKind::MaxIncrease => format!("≤ baseline +{}% ({bound})", number(100.0 * self.setting)),
            LimitKind::MaxDecrease => format!("≥ baseline −{}% ({bound})", number(100.0 * self.setting)),
        }
    }
}

pub use crate::units::short as number;

/// One rule's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuleResult {
    /// The rule's name.
    pub name: String,
    /// The metric, for metric rules; absent for `[[tensors]]` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The prompt group, for group rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The value read (for `[[tensors]]` rules: how many changed tensors break the rule).
    pub value: Option<f64>,
    /// The baseline's value, when relative limits read one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The limits, in policy order.
    pub limits: Vec<Limit>,
    /// The verdict.
    pub status: Status,
    /// Why it failed or was skipped; empty when it passed.
    pub message: String,
}

/// Every rule's result, in policy order (metric rules, then tensor rules).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Outcome {
    /// Whether no rule failed.
    pub passed: bool,
    /// Rules that failed.
    pub failed: usize,
    /// Rules that were skipped (relative limits without a baseline).
    pub skipped: usize,
    /// The results.
    pub rules: Vec<RuleResult>,
}

/// Evaluates every rule of `policy` on `report`, with `baseline` for relative limits.
///
/// The caller checks first that `baseline` is a fair one ([`baseline::differences`]).
#[must_use]
pub fn evaluate(report: &Report, policy: &Policy, baseline: Option<&Report>) -> Outcome {
    let mut rules: Vec<RuleResult> = policy
        .rules
        .iter()
        .map(|rule| metric_rule(report, rule, baseline))
        .collect();
    rules.extend(policy.tensors.iter().map(|rule| tensor_rule(report, rule)));
    let count = |status| rules.iter().filter(|r| r.status == status).count();
    let (failed, skipped) = (count(Status::Fail), count(Status::Skip));
    Outcome {
        passed: failed == 0,
        failed,
        skipped,
        rules,
    }
}

fn metric_rule(report: &Report, rule: &MetricRule, baseline: Option<&Report>) -> RuleResult {
    let group = rule.group();
    let mut result = RuleResult {
        name: rule.display_name(),
        metric: Some(rule.metric.get_ref().clone()),
        group: group.map(str::to_string),
        value: None,
        baseline: None,
        limits: Vec::new(),
        status: Status::Fail,
        message: String::new(),
    };
    // Unknown metrics are refused when the policy is parsed.
    let Some(metric) = rule.metric() else {
        result.message = format!("unknown metric {:?}", rule.metric.get_ref());
        return result;
    };
    let value = match metric.lookup(report, group) {
        Lookup::Value(v) => v,
        missing => {
            result.message = why_missing(&missing, &metric.path, group);
            return result;
        }
    };
    result.value = Some(value);
    let mut problems = Vec::new();
    let relative = rule.max_increase.is_some() || rule.max_decrease.is_some();
    let base_value = match baseline.filter(|_| relative).map(|b| metric.lookup(b, group)) {
        Some(Lookup::Value(b)) => Some(b),
        Some(missing) => {
            problems.push(format!(
                "the baseline has no value: {}",
                why_missing(&missing, &metric.path, group)
            ));
            None
        }
        None => None,
    };
    result.baseline = base_value;
    let absolute = [(LimitKind::Max, rule.max), (LimitKind::Min, rule.min)];
    for (kind, setting) in absolute {
        if let Some(setting) = setting {
            result
                .limits
                .push(Limit::new(kind, setting, Some(setting), Some(value)));
        }
    }
    let relative_limits = [
        (LimitKind::MaxIncrease, rule.max_increase, 1.0),
        (LimitKind::MaxDecrease, rule.max_decrease, -1.0),
    ];
    for (kind, setting, sign) in relative_limits {
        if let Some(setting) = setting {
            let bound = base_value.map(|b| b + sign * setting * b.abs());
            result.limits.push(Limit::new(kind, setting, bound, Some(value)));
        }
    }
    for limit in result.limits.iter().filter(|l| l.holds == Some(false)) {
        problems.push(limit.violation(value));
    }
    let evaluated = result.limits.iter().any(|l| l.holds.is_some());
    result.status = if !problems.is_empty() {
        Status::Fail
    } else if evaluated {
        Status::Pass
    } else {
        problems.push("relative limits need --baseline".into());
        Status::Skip
    };
    result.message = problems.join("; ");
    result
}

/// Why `path` has no value, for a rule's message.
fn why_missing(lookup: &Lookup, path: &str, group: Option<&str>) -> String {
    match lookup {
        Lookup::SectionMissing { method, skipped } => {
            let mut text = format!(
                "section missing: run compare with --methods {method} (it fills `{}`)",
                method.section()
            );
            if let Some(reason) = skipped {
                let _ = write!(text, "; compare skipped it: {reason}");
            }
            text
        }
        Lookup::GroupMissing(groups) if groups.is_empty() => format!(
            "group {:?} is not in the report: its prompts have no groups; give each prompt a \"group\" in a .jsonl \
             prompt file",
            group.unwrap_or_default()
        ),
        Lookup::GroupMissing(groups) => format!(
            "group {:?} is not in the report; its prompts' groups are {}",
            group.unwrap_or_default(),
            groups.join(", ")
        ),
        Lookup::Undefined => {
            format!("no value: {path} is undefined in this report (no finite position or score to read it from)")
        }
        Lookup::Value(_) => String::new(),
    }
}

/// How many violating tensors a `[[tensors]]` message names before "and N more".
const LISTED_TENSORS: usize = 5;

#[allow(clippy::cast_precision_loss, reason = "tensor counts")]
fn tensor_rule(report: &Report, rule: &TensorRule) -> RuleResult {
    let mut result = RuleResult {
        name: rule.display_name(),
        metric: None,
        group: None,
        value: None,
        baseline: None,
        limits: Vec::new(),
        status: Status::Fail,
        message: String::new(),
    };
    if let Some(missing) = metrics::missing_section(report, Method::Weights) {
        result.message = why_missing(&missing, "weights", None);
        return result;
    }
    let Some(weights) = &report.weights else {
        return result;
    };
    let tied = report
        .inputs
        .base
        .config
        .as_ref()
        .and_then(|c| c.tie_word_embeddings)
        .unwrap_or(false);
    let found = tensors::violations(rule, weights, tied);
    let unmatched = tensors::unmatched_patterns(rule, weights, tied);
    // A pattern that matches nothing makes the count meaningless (the rule is not what it says): no value then, so
    // the table does not read "0 ≤ 0 FAIL"; the message says which pattern.
    let value = (!found.is_empty() || unmatched.is_empty()).then_some(found.len() as f64);
    result.value = value;
    result.limits = vec![Limit::new(LimitKind::Max, 0.0, Some(0.0), value)];
    let mut problems = Vec::new();
    if !found.is_empty() {
        let mut listed: Vec<String> = found
            .iter()
            .take(LISTED_TENSORS)
            .map(|v| format!("{} ({})", v.tensor, v.change))
            .collect();
        if found.len() > LISTED_TENSORS {
            listed.push(format!("and {} more", found.len() - LISTED_TENSORS));
        }
        problems.push(format!(
            "{} changed against the rule: {}",
            found.len(),
            listed.join(", ")
        ));
    }
    if !unmatched.is_empty() {
        problems.push(format!(
            "{} match no tensor of either model; check the names with `mdiff inspect`",
            unmatched
                .iter()
                .map(|p| format!("{p:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    result.status = if problems.is_empty() {
        Status::Pass
    } else {
        Status::Fail
    };
    result.message = problems.join("; ");
    result
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;

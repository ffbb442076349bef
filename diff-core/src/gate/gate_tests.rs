use std::path::Path;

use super::*;
use crate::report::{BehaviourSummary, Method, SkippedSection, parse_report};

/// A fixture report: every section, the built-in prompts (with their groups).
fn fixture(name: &str) -> Report {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/reports/tiny-llama-{name}.json"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_report(&bytes, &path).unwrap()
}

fn policy(text: &str) -> Policy {
    Policy::parse(text, Path::new("gate.toml")).unwrap()
}

fn one(report: &Report, rule: &str, baseline: Option<&Report>) -> RuleResult {
    let outcome = evaluate(report, &policy(rule), baseline);
    assert_eq!(outcome.rules.len(), 1);
    outcome.rules.into_iter().next().unwrap()
}

fn summary(report: &Report) -> &BehaviourSummary {
    &report.behaviour.as_ref().unwrap().summary
}

fn summary_mut(report: &mut Report) -> &mut BehaviourSummary {
    &mut report.behaviour.as_mut().unwrap().summary
}

fn kl(report: &Report) -> &crate::report::Distribution {
    summary(report).kl_tuned_base.as_ref().unwrap()
}

fn kl_mean(report: &Report) -> f64 {
    kl(report).mean
}

#[test]
fn every_metric_reads_a_value_from_a_report_with_every_section() {
    let report = fixture("full-ft");
    for metric in metrics::catalogue() {
        match metric.lookup(&report, None) {
            Lookup::Value(v) => assert!(v.is_finite(), "{}", metric.path),
            other => panic!("{}: {other:?}", metric.path),
        }
    }
    let read = |path: &str| match metrics::find(path).unwrap().lookup(&report, None) {
        Lookup::Value(v) => v,
        other => panic!("{other:?}"),
    };
    // Spot checks against the report's own fields.
    assert_eq!(read("behaviour.kl_tuned_base.tokens.mean"), kl_mean(&report));
    let w = report.weights.as_ref().unwrap();
    assert_eq!(read("weights.changed_tensors"), w.totals.num_changed as f64);
    let cc = report.crosscoder.as_ref().unwrap();
    assert_eq!(read("crosscoder.classes.tuned_only"), cc.classes.tuned_only as f64);
    assert_eq!(read("crosscoder.tuned_only_share"), cc.tuned_only_share);
    let best_swap = report
        .swap
        .as_ref()
        .unwrap()
        .rows
        .iter()
        .filter_map(|r| r.removed)
        .fold(f64::MIN, f64::max);
    assert_eq!(read("swap.top.score"), best_swap);
    assert_eq!(
        read("behaviour.kl_tuned_base.tokens.p99"),
        kl(&report).percentiles["p99"]
    );
}

#[test]
fn limits_pass_and_fail_with_the_value_and_bound_in_the_message() {
    let report = fixture("full-ft");
    let mean = kl_mean(&report);
    let pass = one(
        &report,
        &format!(
            "[[rule]]\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\nmax = {}\n",
            mean * 1.01
        ),
        None,
    );
    assert_eq!(pass.status, Status::Pass, "{pass:?}");
    assert_eq!(pass.value, Some(mean));
    assert!(pass.message.is_empty());

    let fail = one(
        &report,
        &format!(
            "[[rule]]\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\nmax = {}\n",
            mean * 0.99
        ),
        None,
    );
    assert_eq!(fail.status, Status::Fail);
    assert!(
        fail.message.contains(&number(mean)) && fail.message.contains("is above the maximum"),
        "{}",
        fail.message
    );

    let min = one(
        &report,
        "[[rule]]\nmetric = \"behaviour.top1_agreement\"\nmin = 0.99\n",
        None,
    );
    assert_eq!(min.status, Status::Fail);
    assert_eq!(min.limits[0].kind, LimitKind::Min);
    assert_eq!(min.limits[0].holds, Some(false));
    assert!(min.message.ends_with("is below the minimum 0.99"), "{}", min.message);

    let outcome = evaluate(
        &report,
        &policy(&format!(
            "[[rule]]\nmetric = \"weights.changed_tensors\"\nmax = 100\n[[rule]]\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\nmax = {}\n",
            mean * 0.5
        )),
        None,
    );
    assert!(!outcome.passed);
    assert_eq!((outcome.failed, outcome.skipped), (1, 0));
}

#[test]
fn a_rule_on_a_missing_section_fails_and_names_the_method() {
    let mut report = fixture("full-ft");
    report.crosscoder = None;
    report.behaviour = None;
    report.skipped.push(SkippedSection::new(
        Method::Kl,
        "no tokenizer.json beside the weights; pass --tokenizer".into(),
    ));
    let r = one(
        &report,
        "[[rule]]\nmetric = \"crosscoder.classes.tuned_only\"\nmax = 3\n",
        None,
    );
    assert_eq!(r.status, Status::Fail);
    assert_eq!(r.value, None);
    assert!(
        r.message
            .starts_with("section missing: run compare with --methods crosscoder"),
        "{}",
        r.message
    );
    let r = one(
        &report,
        "[[rule]]\nmetric = \"behaviour.top1_agreement\"\nmin = 0.1\n",
        None,
    );
    assert!(
        r.message.contains("--methods kl") && r.message.contains("pass --tokenizer"),
        "{}",
        r.message
    );
    report.weights = None;
    let r = one(&report, "[[tensors]]\nforbid = [\"*embed*\"]\n", None);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("--methods weights"), "{}", r.message);
}

#[test]
fn group_rules_read_the_group_summary() {
    let report = fixture("full-ft");
    let behaviour = report.behaviour.as_ref().unwrap();
    let refusal = behaviour.groups["refusal"].summary.kl_tuned_base.as_ref().unwrap().mean;
    assert!(
        (refusal - kl_mean(&report)).abs() > 1e-9,
        "a group must not read the whole set"
    );
    let rule = "[[rule]]\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\ngroup = \"refusal\"\nmax = 1000\n";
    let r = one(&report, rule, None);
    assert_eq!(
        (r.status, r.value, r.group.as_deref()),
        (Status::Pass, Some(refusal), Some("refusal"))
    );

    // The group's statistics are those of its prompts' positions, each token prefix the group's prompts share
    // counted once (docs/methods.md, "Shared prefixes"); token strings stand in for the ids here.
    let members: Vec<_> = behaviour
        .prompts
        .iter()
        .filter(|p| p.group.as_deref() == Some("refusal"))
        .collect();
    let mut ids = std::collections::BTreeMap::new();
    let sequences: Vec<Vec<u32>> = members
        .iter()
        .map(|p| {
            p.tokens
                .iter()
                .map(|t| {
                    let next = u32::try_from(ids.len()).unwrap();
                    *ids.entry(t.clone()).or_insert(next)
                })
                .collect()
        })
        .collect();
    let shared = crate::stats::shared_prefix_lengths(sequences.iter().map(Vec::as_slice));
    assert!(
        shared.iter().any(|&n| n > 0),
        "the refusal prompts share their template's start"
    );
    let positions: Vec<f64> = members
        .iter()
        .zip(&shared)
        .flat_map(|(p, &n)| p.kl_tuned_base.iter().skip(n).flatten().copied())
        .collect();
    let mean = positions.iter().sum::<f64>() / positions.len() as f64;
    assert!(
        (mean - refusal).abs() < 1e-12 * mean.abs().max(1.0),
        "{mean} vs {refusal}"
    );

    let r = one(
        &report,
        "[[rule]]\nmetric = \"behaviour.top1_agreement\"\ngroup = \"safety\"\nmin = 0\n",
        None,
    );
    assert_eq!(r.status, Status::Fail);
    assert!(
        r.message.contains("\"safety\"") && r.message.contains("refusal"),
        "{}",
        r.message
    );

    let mut ungrouped = report.clone();
    ungrouped.behaviour.as_mut().unwrap().groups.clear();
    let r = one(&ungrouped, rule, None);
    assert!(r.message.contains("have no groups"), "{}", r.message);
}

#[test]
fn relative_limits_use_the_baseline_and_skip_without_one() {
    let report = fixture("full-ft");
    let mean = kl_mean(&report);
    let rule = "[[rule]]\nmetric = \"behaviour.kl_tuned_base.tokens.mean\"\nmax_increase = 0.2\n";

    let skipped = evaluate(&report, &policy(rule), None);
    assert!(skipped.passed);
    assert_eq!(skipped.skipped, 1);
    assert_eq!(skipped.rules[0].status, Status::Skip);
    assert!(skipped.rules[0].message.contains("--baseline"));

    // 20% above a baseline of mean/1.1 is 1.0909·mean: passes. Of mean/1.3, 0.923·mean: fails.
    let mut baseline = report.clone();
    let scale = |b: &mut Report, by: f64| summary_mut(b).kl_tuned_base.as_mut().unwrap().mean = mean / by;
    scale(&mut baseline, 1.1);
    let r = one(&report, rule, Some(&baseline));
    assert_eq!(r.status, Status::Pass, "{r:?}");
    assert_eq!(r.baseline, Some(mean / 1.1));
    assert!((r.limits[0].bound.unwrap() - 1.2 * mean / 1.1).abs() < 1e-12);
    scale(&mut baseline, 1.3);
    let r = one(&report, rule, Some(&baseline));
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("baseline +20%"), "{}", r.message);

    // max_decrease bounds from below, with |baseline| so negative metrics work too.
    let decrease = "[[rule]]\nmetric = \"behaviour.top1_agreement\"\nmax_decrease = 0.1\n";
    let agreement = summary(&report).top1_agreement.unwrap();
    let mut baseline = report.clone();
    summary_mut(&mut baseline).top1_agreement = Some(agreement / 0.85);
    assert_eq!(one(&report, decrease, Some(&baseline)).status, Status::Fail);
    summary_mut(&mut baseline).top1_agreement = Some(agreement / 0.95);
    assert_eq!(one(&report, decrease, Some(&baseline)).status, Status::Pass);

    // A negative baseline: the bounds use |baseline|, so "+20%" still means "at most 20% worse".
    let delta = "[[rule]]\nmetric = \"behaviour.delta_p_next.mean\"\nmax_increase = 0.2\nmax_decrease = 0.2\n";
    let value = summary(&report).delta_p_next.as_ref().unwrap().mean;
    assert!(value < 0.0, "the fixture's mean Δp is negative: {value}");
    let mut baseline = report.clone();
    summary_mut(&mut baseline).delta_p_next.as_mut().unwrap().mean = value / 1.1;
    let r = one(&report, delta, Some(&baseline));
    let b = value / 1.1;
    assert_eq!(r.limits[0].bound, Some(b + 0.2 * b.abs()));
    assert_eq!(r.limits[1].bound, Some(b - 0.2 * b.abs()));
    assert_eq!(r.status, Status::Pass, "{r:?}");
    summary_mut(&mut baseline).delta_p_next.as_mut().unwrap().mean = value / 1.5;
    let r = one(&report, delta, Some(&baseline));
    assert_eq!(r.status, Status::Fail, "{r:?}");
    assert!(r.message.contains("baseline −20%"), "{}", r.message);

    let mut empty = report.clone();
    empty.behaviour = None;
    let r = one(&report, rule, Some(&empty));
    assert_eq!(r.status, Status::Fail);
    assert!(
        r.message.starts_with("the baseline has no value: section missing"),
        "{}",
        r.message
    );
}

#[test]
fn tensor_rules_list_the_tensors_that_changed_against_them() {
    let full = fixture("full-ft");
    let r = one(&full, "[[tensors]]\nforbid = [\"*layers.2.mlp.*\"]\n", None);
    assert_eq!((r.status, r.value), (Status::Fail, Some(3.0)));
    assert!(
        r.message.contains("model.layers.2.mlp.down_proj.weight (‖ΔW‖/‖W‖ = "),
        "{}",
        r.message
    );

    let lora = fixture("lora");
    let allow_targets = "[[tensors]]\nallow = [\"*.self_attn.q_proj.weight\", \"*.self_attn.v_proj.weight\"]\n";
    assert_eq!(one(&lora, allow_targets, None).status, Status::Pass);
    let r = one(&full, allow_targets, None);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("and 2 more"), "7 tensors, 5 listed: {}", r.message);

    // A threshold above every change lets them all through.
    let loose = "[[tensors]]\nforbid = [\"*\"]\nmin_relative_change = 1e9\n";
    assert_eq!(one(&full, loose, None).status, Status::Pass);

    // NaNs appearing in a tensor change it, though they are left out of its statistics.
    let mut poisoned = lora.clone();
    let embed = poisoned
        .weights
        .as_mut()
        .unwrap()
        .tensors
        .iter_mut()
        .find(|t| t.name.contains("embed_tokens"))
        .unwrap();
    assert_eq!(embed.num_changed, 0);
    embed.non_finite.tuned_nan = 3;
    let r = one(&poisoned, "[[tensors]]\nforbid = [\"*embed_tokens*\"]\n", None);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("NaN/Inf entries 0 → 3"), "{}", r.message);

    // A pattern that matches nothing is a typo that would hold forever. Without a count that means what the rule
    // says, the rule has no value (issue #15: the table read "0 ≤ 0 FAIL").
    let with_tie = |tied: bool| {
        let mut report = lora.clone();
        report.inputs.base.config.as_mut().unwrap().tie_word_embeddings = Some(tied);
        report
    };
    let r = one(
        &with_tie(false),
        "[[tensors]]\nforbid = [\"*embeddings*\", \"*embed_tokens*\", \"*lm_head*\"]\n",
        None,
    );
    assert_eq!((r.status, r.value), (Status::Fail, None));
    assert!(
        r.message.starts_with("\"*embeddings*\", \"*lm_head*\" match no tensor"),
        "{}",
        r.message
    );

    // These tiny models tie the head to the embedding: `lm_head.weight` is `embed_tokens`, so a head pattern matches
    // it (issue #15: docs/ci.md's example failed on `*lm_head*`), and a changed embedding breaks it.
    let tied = with_tie(true);
    let r = one(
        &tied,
        "[[tensors]]\nforbid = [\"*embed_tokens*\", \"*lm_head*\"]\n",
        None,
    );
    assert_eq!((r.status, r.value), (Status::Pass, Some(0.0)), "{}", r.message);
    let mut retrained = tied.clone();
    let embed = retrained
        .weights
        .as_mut()
        .unwrap()
        .tensors
        .iter_mut()
        .find(|t| t.name.ends_with("embed_tokens.weight"))
        .unwrap();
    (embed.num_changed, embed.relative) = (10, Some(0.2));
    let r = one(&retrained, "[[tensors]]\nforbid = [\"*lm_head*\"]\n", None);
    assert_eq!((r.status, r.value), (Status::Fail, Some(1.0)));
    assert!(
        r.message.contains("embed_tokens.weight (‖ΔW‖/‖W‖ = 0.2)"),
        "{}",
        r.message
    );

    // A tensor only one model has is a change, whatever the threshold.
    let mut grown = full.clone();
    grown
        .weights
        .as_mut()
        .unwrap()
        .unmatched_tuned
        .push("model.embed_tokens.extra".into());
    let r = one(
        &grown,
        "[[tensors]]\nforbid = [\"*embed_tokens*\"]\nmin_relative_change = 1e9\n",
        None,
    );
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("only in the tuned model"), "{}", r.message);
}

#[test]
fn baselines_of_other_inputs_are_named_by_every_difference() {
    let report = fixture("full-ft");
    assert!(baseline::differences(&report, &report).is_empty());
    // Another tuned model on the same base, prompts and seed is what a baseline is.
    assert!(baseline::differences(&report, &fixture("lora")).is_empty());

    let mut other = report.clone();
    other.schema_version = "1.4".into();
    other.settings.seed = 7;
    other.settings.prompts_sha256 = Some("0".repeat(64));
    other.inputs.base.files[0].header_sha256 = Some("f".repeat(64));
    let found = baseline::differences(&report, &other);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].contains("schema version 1.4"));
    assert!(found[1].contains("base model: the safetensors headers differ"));
    assert!(found[2].contains("seed 7"));
    assert!(found[3].contains("prompt sets differ"));
    // All but the prompts show before compare runs.
    let early = baseline::known_before_compare(&report.schema_version, &report.inputs.base, 0, None, &other);
    assert_eq!(early, found[..3]);
    let hash = report.settings.prompts_sha256.as_deref();
    let early = baseline::known_before_compare(&report.schema_version, &report.inputs.base, 0, hash, &other);
    assert_eq!(early, found);
    // Summaries over the assistant's tokens are not comparable with ones over all tokens.
    let mut assistant = report.clone();
    assistant.settings.score = crate::report::Score::Assistant;
    let found = baseline::differences(&report, &assistant);
    assert_eq!(
        found,
        ["the scored tokens differ (--score all here, assistant in the baseline)"]
    );

    let mut resized = report.clone();
    resized.inputs.base.files[0].size_bytes += 1;
    resized.inputs.base.size_bytes += 1;
    assert!(baseline::differences(&report, &resized)[0].contains("bytes"));
    // Paths may differ: the same files, checked out elsewhere.
    let mut moved = report.clone();
    moved.inputs.base.path = "/elsewhere/base".into();
    moved.inputs.base.files[0].path = "/elsewhere/base/model.safetensors".into();
    assert!(baseline::differences(&report, &moved).is_empty());
}

/// Issue #15: positions the summary leaves out by design (repeated prompt prefixes, other roles' tokens with
/// --score) are not "non-finite"; a position without a finite KL is, once.
#[test]
fn non_finite_positions_count_the_rows_not_what_the_summary_left_out() {
    let rule = "[[rule]]\nmetric = \"behaviour.non_finite_positions\"\nmax = 0\n";
    let mut report = fixture("lora");
    assert!(report.behaviour.as_ref().unwrap().folded_positions > 0);
    assert_eq!(one(&report, rule, None).value, Some(0.0));
    let row = &mut report.behaviour.as_mut().unwrap().prompts[3];
    row.kl_tuned_base[2] = None;
    row.kl_tuned_base[4] = Some(f64::INFINITY);
    let r = one(&report, rule, None);
    assert_eq!((r.status, r.value), (Status::Fail, Some(2.0)));
}

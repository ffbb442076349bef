//! Whether a baseline report can stand beside a report: same schema, base model, prompts, `--score` and seed.
//!
//! The tuned model is expected to differ (it is the next release); everything that fixes what the numbers
//! mean must not.

use crate::report::{ModelInput, Report};

/// Every way `baseline` differs from `report` in what its numbers mean; empty when it is a fair baseline.
#[must_use]
pub fn differences(report: &Report, baseline: &Report) -> Vec<String> {
    let settings = &report.settings;
    let mut found = known_before_compare(
        &report.schema_version,
        &report.inputs.base,
        settings.seed,
        None,
        baseline,
    );
    if settings.prompts_sha256 != baseline.settings.prompts_sha256 {
        found.push(match (&settings.prompts_sha256, &baseline.settings.prompts_sha256) {
            (Some(_), Some(_)) => PROMPTS_DIFFER.to_string(),
            (Some(_), None) => "the baseline ran no prompts (or predates prompt hashes)".to_string(),
            _ => "this report ran no prompts and the baseline did".to_string(),
        });
    }
    if settings.score != baseline.settings.score {
        found.push(format!(
            "the scored tokens differ (--score {} here, {} in the baseline)",
            settings.score.name(),
            baseline.settings.score.name()
        ));
    }
    found
}

const PROMPTS_DIFFER: &str = "the prompt sets differ";

/// The differences that show before any model runs: the schema version a report will have, the base model's
/// files, the seed, and the prompt set's hash when the models will run on prompts (`None` skips it). `compare
/// --gate` checks these first, so a wrong baseline fails in a second.
#[must_use]
pub fn known_before_compare(
    schema_version: &str,
    base: &ModelInput,
    seed: u64,
    prompts_sha256: Option<&str>,
    baseline: &Report,
) -> Vec<String> {
    let mut found = Vec::new();
    if schema_version != baseline.schema_version {
        found.push(format!(
            "schema version {} against {schema_version}",
            baseline.schema_version
        ));
    }
    if let Some(reason) = model_difference(base, &baseline.inputs.base) {
        found.push(format!("base model: {reason}"));
    }
    if seed != baseline.settings.seed {
        found.push(format!("seed {} against {seed}", baseline.settings.seed));
    }
    if let (Some(ours), Some(theirs)) = (prompts_sha256, baseline.settings.prompts_sha256.as_deref())
        && ours != theirs
    {
        found.push(PROMPTS_DIFFER.into());
    }
    found
}

/// How two descriptions of a model's files differ, by size and header hash (paths may differ).
fn model_difference(a: &ModelInput, b: &ModelInput) -> Option<String> {
    if a.files.len() != b.files.len() {
        return Some(format!("{} weight files against {}", b.files.len(), a.files.len()));
    }
    let mut sizes_a: Vec<u64> = a.files.iter().map(|f| f.size_bytes).collect();
    let mut sizes_b: Vec<u64> = b.files.iter().map(|f| f.size_bytes).collect();
    sizes_a.sort_unstable();
    sizes_b.sort_unstable();
    if sizes_a != sizes_b {
        return Some(format!("{} bytes against {}", b.size_bytes, a.size_bytes));
    }
    let hashes = |m: &ModelInput| -> Option<Vec<String>> {
        let mut h: Vec<String> = m.files.iter().map(|f| f.header_sha256.clone()).collect::<Option<_>>()?;
        h.sort_unstable();
        Some(h)
    };
    match (hashes(a), hashes(b)) {
        (Some(x), Some(y)) if x != y => Some("the safetensors headers differ".into()),
        (Some(_), None) | (None, Some(_)) => {
            Some("one report has no header hashes (written with report schema 1.4 or older)".into())
        }
        _ => None,
    }
}

//! Checks of `--score`, which only the KL summaries apply (docs/methods.md, "Scoring one role's tokens").

use crate::error::{Error, Result};
use crate::report::{Method, Score};

use super::EncodedPrompt;

/// Refuses `--score` without the kl method (nothing would apply it); with other behavioural methods `named` on the
/// command line, returns a warning that they use every position.
///
/// # Errors
/// [`Error::Usage`] when `score` is a role and `methods` lacks kl.
pub fn check_score_methods(score: Score, methods: &[Method], named: bool) -> Result<Option<String>> {
    if score.is_all() {
        return Ok(None);
    }
    let name = score.name();
    if !methods.contains(&Method::Kl) {
        return Err(Error::Usage(format!(
            "--score {name} applies to the kl method only; add kl to --methods or leave --score out"
        )));
    }
    let ignoring: Vec<&str> = methods
        .iter()
        .filter(|m| m.runs_models() && **m != Method::Kl)
        .map(|m| m.name())
        .collect();
    Ok((named && !ignoring.is_empty()).then(|| {
        format!(
            "--score {name} applies to the kl summaries only; {} use every position",
            ignoring.join(", ")
        )
    }))
}

/// Refuses a `--score` that leaves no position of `prompts` to score.
///
/// # Errors
/// [`Error::Usage`] naming the role when every [`EncodedPrompt::scored`] is false.
pub fn check_scored_positions(score: Score, prompts: &[EncodedPrompt]) -> Result<()> {
    match score.role() {
        Some(role) if !prompts.iter().flat_map(|p| &p.scored).any(|&s| s) => Err(Error::Usage(format!(
            "--score {role} leaves no position to score: no {role} message of any prompt appears verbatim in its \
             rendered chat template (plain-text prompts count as the user's); give prompts as \
             {{\"messages\": [...]}} with {role} turns or leave --score out"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_score_methods, check_scored_positions};
    use crate::analysis::EncodedPrompt;
    use crate::report::{Method, Score};

    #[test]
    fn score_needs_kl_and_warns_of_methods_that_ignore_it() {
        assert!(check_score_methods(Score::User, &[Method::Weights, Method::Lens], true).is_err());
        assert_eq!(check_score_methods(Score::All, &[Method::Lens], true).unwrap(), None);
        let warning = check_score_methods(Score::Assistant, &[Method::Kl, Method::Lens, Method::Swap], true);
        assert!(warning.unwrap().unwrap().contains("lens, swap use every position"));
        // The default methods include lens; --score alone should not warn about a method nobody named.
        assert_eq!(check_score_methods(Score::User, &Method::DEFAULT, false).unwrap(), None);
    }

    #[test]
    fn a_score_that_keeps_nothing_is_refused() {
        let prompt = |scored: Vec<bool>| EncodedPrompt {
            line: 1,
            chat_template: true,
            ids: vec![1; scored.len()],
            truncated_tokens: 0,
            group: None,
            id: None,
            scored,
        };
        assert!(check_scored_positions(Score::Assistant, &[prompt(vec![false; 3]), prompt(vec![])]).is_err());
        assert!(check_scored_positions(Score::Assistant, &[prompt(vec![false, true])]).is_ok());
        assert!(check_scored_positions(Score::All, &[prompt(vec![false])]).is_ok());
    }
}

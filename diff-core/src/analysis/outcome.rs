//! [`Outcome`]: an analysis's section, or why it has none on this pair.

/// What a step produced: its result, or why there is none on this pair (and, for a missing input, which flag
/// supplies it). Errors stay in [`crate::Result`]; a skip is not an error, but [`crate::compare`] turns it into one
/// when the user named the method.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome<T> {
    /// The step ran and this is its result.
    Done(T),
    /// Nothing to compute here, for this reason.
    Skipped(String),
}

impl<T> Outcome<T> {
    /// The result, or the skip's reason as the error: for callers that treat a skip as a failure.
    ///
    /// # Errors
    /// The reason of [`Outcome::Skipped`].
    pub fn into_result(self) -> Result<T, String> {
        match self {
            Self::Done(value) => Ok(value),
            Self::Skipped(reason) => Err(reason),
        }
    }
}

//! Per-position comparison of two next-token distributions and streaming summaries of the results.

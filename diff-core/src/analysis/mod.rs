//! Behavioural analyses that run both models.

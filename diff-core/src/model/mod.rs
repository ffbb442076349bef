//! The hooked transformer runtime.

//! What a valid Prometheus metric and label name is, and the default caps on one sample of
//! script output: the pure predicates and numbers that both `script_metrics:` (checking a
//! rule's names and defaulting its caps) and `crate::script_metrics::parse` (reading a
//! transcript) need, kept here, below both, so config imports nothing above it.
//!
//! Owns the two name predicates and the four default caps. Does not own checking a rule
//! (`script_metrics`) nor reading samples (`crate::script_metrics::parse`).

/// Samples kept from one transcript when a rule does not say (`max_series`).
pub const DEFAULT_MAX_SERIES: usize = 500;
/// Longest metric name (before the prefix) and label name, in bytes (`max_name_length`).
pub const DEFAULT_MAX_NAME_LENGTH: usize = 128;
/// Longest label value, in bytes (`max_label_length`).
pub const DEFAULT_MAX_LABEL_LENGTH: usize = 1024;
/// Most labels of a sample's own (`max_labels`).
pub const DEFAULT_MAX_LABELS: usize = 16;

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

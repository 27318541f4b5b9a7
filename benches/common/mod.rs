//! Set-up the benchmarks share (`mod common;` in each): knobs from the environment and memory
//! figures from `/proc`.
//!
//! Owns: `env_or`, `env_list` and the `/proc/<pid>/status` readers. Does not own: what a benchmark runs or
//! prints, nor starting the simulator or the exporter (each benchmark does that its own way).
#![allow(dead_code)]

/// `name` from the environment parsed as `T`, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `name` from the environment as a comma-separated list of `T` (entries that do not parse
/// are left out), or `default` (the same form) when unset.
pub fn env_list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// A field of `/proc/<pid>/status` in KiB (`pid` is a number or `self`; `field` includes the
/// colon, `"VmHWM:"`), or `None` where `/proc` or the field is not there.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// This process's peak resident set (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    status_kib("self", "VmHWM:")
}

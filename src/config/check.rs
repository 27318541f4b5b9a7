//! The checks every section shares.
//!
//! Owns [`Invalid`] (a section's complaint: the key under the section and the message), how
//! a bound is shown (`30d`, `100ms`) and a duration checked against one, and the id syntax
//! safe in URLs and OData filters; with the tests of the bounds of the file-level scalar keys
//! (`poll_interval`, `request_timeout`, `series_ttl`, `max_clock_skew`, `max_transcript_bytes`,
//! `script_metrics_parse_timeout`,
//! `max_series`, `max_requests_in_flight`) and of the sections. Does not own the bounds
//! themselves (`limits`), the file-level keys and their checks (`mod`'s `RawFile`), the
//! sections (`tenant`, `auth`, `cloud`, …), nor naming the file in the error (`mod`).

use std::time::Duration;

use super::limits::DAY;

/// A section's complaint: the key, relative to where the section sits, and the message.
/// The caller prefixes the key with the section's own place (`tenants[0].`, `auth.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invalid {
    pub key: String,
    pub message: String,
    /// The tenant's sign-in could not be resolved from the environment or a file (a variable
    /// not set, a certificate file missing or unreadable): that tenant is refused alone and
    /// the others go on (#34), where any other complaint refuses the whole file.
    pub unresolved: bool,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            message: message.into(),
            unresolved: false,
        }
    }

    /// This complaint, marked as a sign-in that cannot be resolved when it is one: a message
    /// naming a variable that is not set, or a key that names a file (`client_secret_file`,
    /// `auth.certificate_file`, `auth.pkcs12_file`, ...), whose file is missing, unreadable
    /// or (a certificate) not acceptable now. See: #34
    pub fn sign_in(self) -> Invalid {
        // The key-shape complaints (two methods' keys, a key of another method, a required
        // key left out) are the file's fault, not the environment's.
        let shape = ["not used by", "only used with", "set either", "required"]
            .iter()
            .any(|m| self.message.contains(m));
        let unresolved =
            self.message.contains(" is not set") || (self.key.ends_with("_file") && !shape);
        Invalid { unresolved, ..self }
    }

    /// The same complaint one level up: `prefix` goes before the key (`discovery.` + `overlap`).
    pub fn under(self, prefix: &str) -> Invalid {
        Invalid {
            key: format!("{prefix}{}", self.key),
            message: self.message,
            unresolved: self.unresolved,
        }
    }
}

/// A duration in the largest whole unit of the file's notation: `30d`, `24h`, `90s`, `100ms`.
fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        return humantime_serde::re::humantime::format_duration(d).to_string();
    }
    match s {
        0 => "0s".into(),
        s if s % DAY == 0 => format!("{}d", s / DAY),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A duration must lie in `min..=max`; the message gives the bound in the file's notation.
pub(super) fn check_range(v: Duration, (min, max): (Duration, Duration)) -> Result<(), String> {
    if v < min {
        return Err(format!("must be at least {}", show_duration(min)));
    }
    if v > max {
        return Err(format!(
            "must be at most {} (got {})",
            show_duration(max),
            show_duration(v)
        ));
    }
    Ok(())
}

/// Ids are put into URLs and OData filters; refuse anything that could change their meaning.
pub(super) fn is_safe_id(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fixtures::{GOOD, assert_errors, parse};
    use super::*;

    /// The cap on requests in flight across tenants: a default, and a value that is kept.
    #[test]
    fn max_requests_in_flight_has_a_default() {
        assert_eq!(
            parse(GOOD).unwrap().max_requests_in_flight,
            super::super::DEFAULT_MAX_REQUESTS_IN_FLIGHT
        );
        assert_eq!(
            parse(&format!("max_requests_in_flight: 8\n{GOOD}"))
                .unwrap()
                .max_requests_in_flight,
            8
        );
    }

    /// See: #13. Durations that overflow a timer or make no sense fail `--config.check`,
    /// naming the key and the bound; so do the size and count keys out of their range.
    #[test]
    fn out_of_range_values_are_refused() {
        assert_errors(&[
            (
                format!("poll_interval: 10000000000000000000s\n{GOOD}"),
                "config file cfg.yml: poll_interval: must be at most 1d (got 10000000000000000000s)",
            ),
            (
                format!("poll_interval: 10ms\n{GOOD}"),
                "config file cfg.yml: poll_interval: must be at least 100ms",
            ),
            (
                format!("request_timeout: 0s\n{GOOD}"),
                "config file cfg.yml: request_timeout: must be at least 100ms",
            ),
            (
                format!("series_ttl: 400days\n{GOOD}"),
                "config file cfg.yml: series_ttl: must be at most 365d (got 400d)",
            ),
            (
                format!("max_clock_skew: 2days\n{GOOD}"),
                "config file cfg.yml: max_clock_skew: must be at most 1d (got 2d)",
            ),
            (
                format!("max_clock_skew: 0s\n{GOOD}"),
                "config file cfg.yml: max_clock_skew: must be at least 1s",
            ),
            (
                format!("script_metrics_parse_timeout: 0s\n{GOOD}"),
                "config file cfg.yml: script_metrics_parse_timeout: must be at least 1ms",
            ),
            (
                format!("script_metrics_parse_timeout: 2m\n{GOOD}"),
                "config file cfg.yml: script_metrics_parse_timeout: must be at most 1m (got 2m)",
            ),
            (
                format!("{GOOD}    lookback: 60days\n"),
                "config file cfg.yml: tenants[0].lookback: must be at most 30d (got 60d)",
            ),
            (
                format!("{GOOD}    quota:\n      hour: 8days\n"),
                "config file cfg.yml: tenants[0].quota.hour: must be at most 7d (got 8d)",
            ),
            (
                format!("max_transcript_bytes: 18446744073709551615\n{GOOD}"),
                "config file cfg.yml: max_transcript_bytes: must be at most 1073741824 (1 GiB; got 18446744073709551615)",
            ),
            (
                format!("max_requests_in_flight: 0\n{GOOD}"),
                "config file cfg.yml: max_requests_in_flight: must be between 1 and 4096 (got 0)",
            ),
            (
                format!("max_requests_in_flight: 100000\n{GOOD}"),
                "config file cfg.yml: max_requests_in_flight: must be between 1 and 4096 (got 100000)",
            ),
        ]);
        // Too large to be a duration at all: a parse error naming the key.
        let e = parse(&format!("poll_interval: 100000000000000000000s\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config file cfg.yml: poll_interval: invalid value: string \"100000000000000000000s\", expected a duration"),
            "{e}"
        );
    }

    #[test]
    fn bounds_are_shown_in_the_files_notation() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(3 * DAY), "3d"),
        ];
        for (d, want) in cases {
            assert_eq!(show_duration(d), want);
        }
    }
}

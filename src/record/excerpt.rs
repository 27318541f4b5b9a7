//! The excerpt of a transcript the transcript page shows (#22): `script_output` and
//! `script_errors` as the `transcript_log` redaction policy lets them out, never more, and
//! bounded, stored in the state file with the run it belongs to (`state::LastRun`).
//!
//! Owns what an excerpt holds and its bounds: the policy's text (truncate: the first
//! `max_bytes`; hash: the digest; drop: absent; none: the text) cut at [`MAX_FIELD_BYTES`]
//! a field, so the latest run of `max_series` (10,000 by default) series takes at most
//! 10,000 × 2 × 4 KiB = 80 MiB in the state file, and 5 MiB with the default policy (256
//! bytes a field). Does not own the policy (`config`, applied by `events`), where excerpts
//! are kept (`state`), or how they are shown (`web::transcripts`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{RedactMode, Redaction};

/// The most of `script_output` (and of `script_errors`) an excerpt keeps, whatever the policy.
pub const MAX_FIELD_BYTES: usize = 4096;

/// A transcript's text as the page may show it, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Excerpt {
    /// The command's index in its action.
    pub index: u32,
    /// When the exporter retrieved the transcript.
    pub retrieved_at: DateTime<Utc>,
    /// The `transcript_log.output` mode in force then: `none`, `truncate`, `hash` or `drop`.
    pub redaction: String,
    /// `script_output` after the policy; `None` when dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `script_errors` after the policy; `None` when dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
}

impl Excerpt {
    pub fn new(
        policy: &Redaction,
        output: &str,
        errors: &str,
        index: u32,
        retrieved_at: DateTime<Utc>,
    ) -> Excerpt {
        Excerpt {
            index,
            retrieved_at,
            redaction: mode_name(policy.mode).to_string(),
            output: policy.apply(output).map(bounded),
            errors: policy.apply(errors).map(bounded),
        }
    }

    /// This excerpt as `policy` lets it out now: never more than when it was kept, and less
    /// when the policy is stricter now (a reload or a restart to a stricter
    /// `transcript_log`): `drop` removes the text, `hash` withholds it (the whole text is not
    /// kept to digest), a shorter `truncate` or new `scrub` patterns apply to what is kept.
    pub fn under(&self, policy: &Redaction) -> Excerpt {
        let kept = strictness(&self.redaction);
        let now = strictness(mode_name(policy.mode));
        let restrict = |text: &Option<String>| -> Option<String> {
            let text = text.as_ref()?;
            match (policy.mode, self.redaction.as_str()) {
                (RedactMode::Drop, _) => None,
                // A digest stays a digest.
                (_, "hash") => Some(text.clone()),
                (RedactMode::Hash, _) => None,
                _ => policy.apply(text).map(bounded),
            }
        };
        Excerpt {
            index: self.index,
            retrieved_at: self.retrieved_at,
            redaction: if now > kept {
                mode_name(policy.mode).to_string()
            } else {
                self.redaction.clone()
            },
            output: restrict(&self.output),
            errors: restrict(&self.errors),
        }
    }

    /// Bytes of text it holds.
    pub fn text_bytes(&self) -> usize {
        self.output.as_ref().map_or(0, String::len) + self.errors.as_ref().map_or(0, String::len)
    }
}

/// How much a mode withholds: `none` < `truncate` < `hash` < `drop`.
fn strictness(mode: &str) -> u8 {
    match mode {
        "none" => 0,
        "truncate" => 1,
        "hash" => 2,
        _ => 3,
    }
}

fn mode_name(mode: RedactMode) -> &'static str {
    match mode {
        RedactMode::None => "none",
        RedactMode::Truncate => "truncate",
        RedactMode::Hash => "hash",
        RedactMode::Drop => "drop",
    }
}

/// At most [`MAX_FIELD_BYTES`], cut at a character boundary and marked with `…`.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_FIELD_BYTES {
        let mut cut = MAX_FIELD_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(mode: RedactMode, max_bytes: usize) -> Redaction {
        Redaction {
            mode,
            max_bytes,
            ..Redaction::default()
        }
    }

    #[test]
    fn follows_the_policy_and_never_holds_more() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let e = Excerpt::new(&policy(RedactMode::Truncate, 5), "abcdefgh", "", 2, at);
        assert_eq!(e.output.as_deref(), Some("abcde…"));
        assert_eq!(e.errors.as_deref(), Some(""));
        assert_eq!(e.redaction, "truncate");
        let e = Excerpt::new(&policy(RedactMode::Hash, 5), "abc", "x", 0, at);
        assert!(
            e.output
                .as_deref()
                .is_some_and(|o| o.starts_with("sha256:"))
        );
        let e = Excerpt::new(&policy(RedactMode::Drop, 5), "abc", "x", 0, at);
        assert_eq!(
            (e.output, e.errors, e.redaction.as_str()),
            (None, None, "drop")
        );
        let big = "é".repeat(MAX_FIELD_BYTES);
        let e = Excerpt::new(&policy(RedactMode::None, 0), &big, "", 0, at);
        let out = e.output.unwrap_or_default();
        assert!(
            out.len() <= MAX_FIELD_BYTES + '…'.len_utf8(),
            "{}",
            out.len()
        );
        assert!(out.ends_with('…'));
    }

    /// A stricter policy reaches what is already kept; a looser one never shows more.
    /// See: #32 item 7
    #[test]
    fn a_stricter_policy_reaches_what_is_kept() {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let kept = Excerpt::new(
            &policy(RedactMode::None, 0),
            "secret-ish text",
            "err",
            0,
            at,
        );
        let dropped = kept.under(&policy(RedactMode::Drop, 0));
        assert_eq!((dropped.output, dropped.errors), (None, None));
        assert_eq!(dropped.redaction, "drop");
        let hashed = kept.under(&policy(RedactMode::Hash, 0));
        assert_eq!((hashed.output, hashed.redaction.as_str()), (None, "hash"));
        let short = kept.under(&policy(RedactMode::Truncate, 6));
        assert_eq!(short.output.as_deref(), Some("secret…"));
        assert_eq!(short.redaction, "truncate");
        let scrubbed = kept.under(&Redaction {
            mode: RedactMode::None,
            scrubbers: vec![regex::Regex::new("secret").unwrap()],
            ..Redaction::default()
        });
        assert_eq!(scrubbed.output.as_deref(), Some("[REDACTED]-ish text"));
        // Looser now: what was kept under truncate is all there is.
        let truncated = Excerpt::new(&policy(RedactMode::Truncate, 6), "secret-ish", "", 0, at);
        assert_eq!(truncated.under(&policy(RedactMode::None, 0)), truncated);
        assert_eq!(truncated.under(&policy(RedactMode::Truncate, 6)), truncated);
        let digest = Excerpt::new(&policy(RedactMode::Hash, 0), "x", "", 0, at);
        assert_eq!(digest.under(&policy(RedactMode::None, 0)), digest);
    }
}

//! Builders the state's unit tests share (`state/mod.rs` and `state/store/tests.rs`): a run,
//! a series key and a result key of tenant `t`.
#![allow(clippy::unwrap_used)]

use chrono::{TimeZone, Utc};

use super::{LastRun, ResultKey, SeriesKey};

pub(crate) fn run(secs: i64, code: i64) -> LastRun {
    LastRun {
        end_time: Utc.timestamp_opt(secs, 0).unwrap(),
        exit_code: code,
        errors_present: false,
        action_id: format!("a{secs}"),
        excerpt: None,
        signature: None,
    }
}

pub(crate) fn series(m: &str) -> SeriesKey {
    ("t".into(), m.into(), "s.ps1".into())
}

pub(crate) fn rkey(action: &str, index: u32) -> ResultKey {
    ResultKey {
        tenant: "t".into(),
        action_id: action.into(),
        index,
    }
}

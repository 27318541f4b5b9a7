//! The scenario's nouns: a machine action, its commands and the blobs they produced, and the
//! action's status at a moment on the simulator clock.
//!
//! Owns those types and the status rules. Does not own how they are drawn (`generate`) or shown
//! (`view`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A command result stored in the fake blob container.
#[derive(Debug, Clone)]
pub enum Blob {
    /// A RunScript transcript, served uncompressed.
    Transcript {
        bytes: Vec<u8>,
        script: String,
        exit_code: i64,
        errors_present: bool,
        /// The bytes are not valid transcript JSON.
        malformed: bool,
        /// The samples its output reports, when the scenario has `script_metrics` on (see
        /// `printed`).
        printed: Vec<(String, i64)>,
    },
    /// A GetFile result: one gzip stream.
    File { gz: Vec<u8> },
}

#[derive(Debug, Clone)]
pub struct SimCommand {
    pub index: u32,
    pub kind: &'static str,
    pub params: Vec<(&'static str, String)>,
    /// `commandStatus` once the action is final (`Created` before).
    pub status: &'static str,
    pub errors: Vec<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// Last path segment of the blob (`{index}-{hex}`); results exist only when Completed.
    pub blob_name: String,
    pub blob: Option<Blob>,
}

#[derive(Debug, Clone)]
pub struct SimAction {
    pub id: String,
    pub kind: &'static str,
    pub requestor: &'static str,
    pub comment: &'static str,
    pub machine_id: String,
    pub dns: String,
    pub scope: Option<&'static str>,
    pub created: DateTime<Utc>,
    /// Wall time it turned InProgress.
    pub started: DateTime<Utc>,
    /// Wall time it became final.
    pub finished: DateTime<Utc>,
    /// Simulator-clock offset at which it turns InProgress (zero: already at start).
    pub started_after: Duration,
    /// Simulator-clock offset at which it becomes final (zero: already final at start).
    pub final_after: Duration,
    /// The final status.
    pub status: &'static str,
    pub commands: Vec<SimCommand>,
}

impl SimAction {
    pub fn is_final_at(&self, elapsed: Duration) -> bool {
        elapsed >= self.final_after
    }

    pub fn is_live_response(&self) -> bool {
        self.kind == "LiveResponse"
    }

    pub fn status_at(&self, elapsed: Duration) -> &'static str {
        if self.is_final_at(elapsed) {
            self.status
        } else if elapsed >= self.started_after {
            "InProgress"
        } else {
            "Pending"
        }
    }
}

//! The records the state keeps, shared by its indexes and the state file: the key of a
//! command result, the key of a per-machine series, the latest run of a series, an action
//! followed by id, the latest attempt of a series and whose history a tenant's entries are
//! (its identity).
//!
//! Owns these types and their serde form (the JSON values of the state file). Does not own the
//! indexes or the exactly-once rules over them (`state`), nor the tables and keys of the file
//! (`state::redb_file`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One command result: (tenant, action id, command index).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResultKey {
    pub tenant: String,
    pub action_id: String,
    pub index: u32,
}

/// The latest run of a script on a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub end_time: DateTime<Utc>,
    pub exit_code: i64,
    pub errors_present: bool,
    pub action_id: String,
    /// What the transcript page shows of this run (#22), committed with it; absent in files
    /// written before, so the field is optional in both directions (state format: added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excerpt: Option<crate::record::excerpt::Excerpt>,
    /// Why this run failed (#36), kept with it so that the signature counts survive a restart
    /// and move with the state; absent for a run that did not fail and in files written
    /// before (state format: added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::record::signature::Signature>,
}

/// (tenant, machine, script).
pub type SeriesKey = (String, String, String);

/// An action discovery follows by id: not final yet, or final with results still to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub created: DateTime<Utc>,
    /// The status last seen (`Pending`, `InProgress`, or a final one).
    pub status: String,
}

/// The latest attempt to run a script on a machine, by the action's `lastUpdateDateTimeUtc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// Whether the command ran (Completed); false: it never ran.
    pub ran: bool,
    pub action_id: String,
}

/// Whose history a tenant's entries are (#24): the state is keyed by tenant name, and the
/// same name pointed at another tenant (or another API) must not inherit its watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantIdentity {
    pub tenant_id: String,
    /// The API base URL, as configured (`api_url`).
    pub api_url: String,
}

//! A device of `GET /api/machines`, with the fields that route alerts.
//!
//! Owns the machine's serde type. Does not own which machines are read (`machines`).

use serde::Deserialize;

use super::null_as_empty;

/// A device of `GET /api/machines`, with the fields that route alerts. Missing strings are
/// empty (the API leaves some null on machines that never reported).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub computer_dns_name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rbac_group_name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub os_platform: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub health_status: String,
    #[serde(default, deserialize_with = "null_as_vec")]
    pub machine_tags: Vec<String>,
    /// ISO 8601 UTC; picks the current device when a name answers twice.
    #[serde(default)]
    pub last_seen: Option<String>,
}

fn null_as_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

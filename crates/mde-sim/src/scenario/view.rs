//! The JSON view of a machine action as the API serves it at a moment (the live API's field
//! order), and the fields `$filter` reads from it.
//!
//! Owns the view types and their `Record` impls. Does not own the action's state (`model`) or the
//! `$filter` language (`crate::filter`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::encode::iso;
use super::model::SimAction;
use crate::filter::{Field, Record};

impl SimAction {
    /// The entity as served at `elapsed` on the simulator clock.
    pub fn view(&self, elapsed: Duration, context: Option<String>) -> ActionJson<'_> {
        let status = self.status_at(elapsed);
        let is_final = self.is_final_at(elapsed);
        let last_update = match status {
            "Pending" => self.created,
            "InProgress" => self.started,
            _ => self.finished,
        };
        let cancelled = status == "Cancelled";
        ActionJson {
            context,
            id: &self.id,
            kind: self.kind,
            title: None,
            requestor: self.requestor,
            requestor_comment: self.comment,
            status,
            machine_id: &self.machine_id,
            computer_dns_name: &self.dns,
            creation_date_time_utc: iso(self.created),
            last_update_date_time_utc: iso(last_update),
            cancellation_requestor: cancelled.then_some("analyst@contoso.com"),
            cancellation_comment: cancelled.then_some("No longer needed"),
            cancellation_date_time_utc: cancelled.then(|| iso(self.finished)),
            error_h_result: 0,
            scope: self.scope,
            external_id: None,
            request_source: "PublicApi",
            related_file_info: None,
            commands: self
                .commands
                .iter()
                .map(|c| CommandJson {
                    index: c.index,
                    start_time: c.start.filter(|_| is_final).map(iso),
                    end_time: c.end.filter(|_| is_final).map(iso),
                    command_status: if is_final { c.status } else { "Created" },
                    errors: if is_final { &c.errors } else { &[] },
                    command: CommandSpecJson {
                        kind: c.kind,
                        params: c
                            .params
                            .iter()
                            .map(|(k, v)| ParamJson { key: k, value: v })
                            .collect(),
                    },
                })
                .collect(),
            troubleshoot_info: None,
            created: self.created,
        }
    }
}

/// A machine action in the live API's field order (see the spec's field table).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionJson<'a> {
    #[serde(rename = "@odata.context", skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub title: Option<&'a str>,
    pub requestor: &'a str,
    pub requestor_comment: &'a str,
    pub status: &'a str,
    pub machine_id: &'a str,
    pub computer_dns_name: &'a str,
    pub creation_date_time_utc: String,
    pub last_update_date_time_utc: String,
    pub cancellation_requestor: Option<&'a str>,
    pub cancellation_comment: Option<&'a str>,
    pub cancellation_date_time_utc: Option<String>,
    pub error_h_result: i64,
    pub scope: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub request_source: &'a str,
    pub related_file_info: Option<()>,
    pub commands: Vec<CommandJson<'a>>,
    pub troubleshoot_info: Option<()>,
    /// For `$filter`/`$orderby`; not serialized (the string above is).
    #[serde(skip)]
    pub created: DateTime<Utc>,
}

impl Record for ActionJson<'_> {
    fn text(&self, field: Field) -> &str {
        match field {
            Field::Id => self.id,
            Field::Status => self.status,
            Field::MachineId => self.machine_id,
            Field::Type => self.kind,
            Field::Requestor => self.requestor,
            Field::CreationDateTimeUtc => "",
        }
    }
    fn created(&self) -> DateTime<Utc> {
        self.created
    }
}

/// What `$filter` sees of an action at a moment, without rendering the whole entity.
pub struct Head<'a> {
    a: &'a SimAction,
    status: &'static str,
}

impl<'a> Head<'a> {
    pub fn new(a: &'a SimAction, elapsed: Duration) -> Self {
        Head {
            a,
            status: a.status_at(elapsed),
        }
    }
}

impl Record for Head<'_> {
    fn text(&self, field: Field) -> &str {
        match field {
            Field::Id => &self.a.id,
            Field::Status => self.status,
            Field::MachineId => &self.a.machine_id,
            Field::Type => self.a.kind,
            Field::Requestor => self.a.requestor,
            Field::CreationDateTimeUtc => "",
        }
    }
    fn created(&self) -> DateTime<Utc> {
        self.a.created
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandJson<'a> {
    pub index: u32,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub command_status: &'a str,
    pub errors: &'a [String],
    pub command: CommandSpecJson<'a>,
}

#[derive(Debug, Serialize)]
pub struct CommandSpecJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub params: Vec<ParamJson<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ParamJson<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

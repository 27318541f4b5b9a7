//! A machine action and its commands (`GET /api/machineactions/{id}`, one item of a list).
//!
//! Owns the action's serde types and its open enums (an unknown status is kept, not refused).
//! Does not own list pages (`page`).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::ParseError;

macro_rules! open_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
        #[serde(from = "String")]
        pub enum $name {
            $($variant,)*
            /// A value this version does not know; kept so it can still be counted.
            Other(String),
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                match s.as_str() {
                    $(stringify!($variant) => $name::$variant,)*
                    _ => $name::Other(s),
                }
            }
        }
        impl $name {
            /// The API's spelling, used as a label value.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                    $name::Other(s) => s,
                }
            }
        }
    };
}

open_enum!(
    /// `MachineAction.status`.
    ActionStatus { Pending, InProgress, Succeeded, Failed, TimeOut, Cancelled }
);
open_enum!(
    /// `commands[].commandStatus`.
    CommandStatus { Created, InProgress, Completed, Failed }
);
open_enum!(
    /// `commands[].command.type`.
    CommandType { RunScript, GetFile, PutFile }
);

impl ActionStatus {
    /// Final statuses never change again. Unknown values are treated as not final, so the
    /// action is looked at again rather than forgotten.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded
                | ActionStatus::Failed
                | ActionStatus::TimeOut
                | ActionStatus::Cancelled
        )
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Param {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CommandSpec {
    #[serde(rename = "type")]
    pub kind: CommandType,
    #[serde(default)]
    pub params: Vec<Param>,
}

/// One entry of `commands[]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub index: u32,
    #[serde(default)]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    pub command_status: CommandStatus,
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
    pub command: CommandSpec,
}

impl Command {
    /// `ScriptName` of a RunScript command.
    pub fn script_name(&self) -> Option<&str> {
        self.command
            .params
            .iter()
            .find(|p| p.key.eq_ignore_ascii_case("ScriptName"))
            .and_then(|p| p.value.as_deref())
    }
}

/// A machine action (`GET /api/machineactions/{id}` or one item of the list).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineAction {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub requestor: Option<String>,
    pub status: ActionStatus,
    #[serde(default)]
    pub machine_id: Option<String>,
    #[serde(default)]
    pub computer_dns_name: Option<String>,
    #[serde(default)]
    pub creation_date_time_utc: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_update_date_time_utc: Option<DateTime<Utc>>,
    #[serde(default)]
    pub commands: Vec<Command>,
}

impl MachineAction {
    pub fn is_live_response(&self) -> bool {
        self.kind == "LiveResponse"
    }
    /// The `machine` label: the DNS name, else the machine id.
    pub fn machine(&self) -> &str {
        self.computer_dns_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.machine_id.as_deref())
            .unwrap_or("unknown")
    }
}

pub fn parse_action(bytes: &[u8]) -> Result<MachineAction, ParseError> {
    serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))
}

#[cfg(test)]
pub(super) const ACTION: &str = r#"{
  "@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions/$entity",
  "id": "6f0c2b1e-8d3a-4c55-9a0e-3b7d41f2c9aa", "type": "LiveResponse", "title": null,
  "requestor": "prom-mde-exporter", "requestorComment": "collect triage", "status": "Succeeded",
  "machineId": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07", "computerDnsName": "ws-eng-042.contoso.com",
  "creationDateTimeUtc": "2025-03-18T21:02:00.3538594Z", "lastUpdateDateTimeUtc": "2025-03-18T21:04:41.93163Z",
  "cancellationRequestor": null, "cancellationComment": null, "cancellationDateTimeUtc": null,
  "errorHResult": 0, "scope": null, "externalId": null, "requestSource": "PublicApi", "relatedFileInfo": null,
  "commands": [
    {"index": 0, "startTime": "2025-03-18T21:04:01.92Z", "endTime": "2025-03-18T21:04:04.693Z",
     "commandStatus": "Completed", "errors": [],
     "command": {"type": "RunScript", "params": [{"key": "ScriptName", "value": "triage.ps1"}, {"key": "Args", "value": "-Quick"}]}},
    {"index": 1, "startTime": null, "endTime": null, "commandStatus": "Exploded", "errors": [],
     "command": {"type": "GetFile", "params": [{"key": "Path", "value": "C:\\Windows\\Temp\\triage.zip"}]}}
  ],
  "troubleshootInfo": null, "someFutureField": {"x": 1}
}"#;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_action() {
        let a = parse_action(ACTION.as_bytes()).unwrap();
        assert!(a.is_live_response());
        assert_eq!(a.status, ActionStatus::Succeeded);
        assert!(a.status.is_final());
        assert_eq!(a.machine(), "ws-eng-042.contoso.com");
        assert_eq!(a.commands[0].script_name(), Some("triage.ps1"));
        assert_eq!(a.commands[0].command.kind, CommandType::RunScript);
        assert_eq!(
            a.commands[1].command_status,
            CommandStatus::Other("Exploded".into())
        );
        assert_eq!(a.commands[1].command_status.as_str(), "Exploded");
        let end = a.commands[0].end_time.unwrap();
        assert_eq!(end.timestamp_millis(), 1742331844693);
    }

    #[test]
    fn unknown_action_status_is_not_final() {
        let a = parse_action(ACTION.replace("\"Succeeded\"", "\"Paused\"").as_bytes()).unwrap();
        assert_eq!(a.status.as_str(), "Paused");
        assert!(!a.status.is_final());
    }
}

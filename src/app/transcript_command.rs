//! `mde-liveresponse-exporter transcript`: print one Live Response result as the API returns
//! it (script name, exit code, output, errors; a GetFile result's size), so that the evidence
//! behind an alert is one command away.
//!
//! Owns choosing the command, the checks with their error messages, and the printed text.
//! Sends through the same [`Client`] as the collector (token, quota, size caps, metrics),
//! with a quota of its own: it does not share windows with a running exporter. Does not own
//! HTTP or parsing.

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::time::Instant;

use crate::api::model::{CommandStatus, CommandType, MachineAction};
use crate::api::{Client, ErrorKind, Http, QuotaWait};
use crate::config::{Config, Tenant};
use crate::metrics::Metrics;
use crate::quota::Quota;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub tenant: String,
    pub action_id: String,
    /// `None`: every command that has a result.
    pub index: Option<u32>,
}

/// A problem the user can act on; the message says which.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no tenant named {name:?} in the configuration (tenants: {known})")]
    UnknownTenant { name: String, known: String },
    #[error("tenant {tenant}: action {action_id} does not exist (the API answered 404)")]
    UnknownAction { tenant: String, action_id: String },
    #[error("action {action_id} is a {kind} action, not LiveResponse: it has no results")]
    NotLiveResponse { action_id: String, kind: String },
    #[error(
        "action {action_id} has {count} command(s) (index 0 to {last}); --index {index} is out of range",
        last = count.saturating_sub(1)
    )]
    IndexOutOfRange {
        action_id: String,
        index: u32,
        count: usize,
    },
    #[error(
        "action {action_id} index {index}: the {kind} command is {status} (action {action_status}); its result can be read once the command is Completed"
    )]
    NotCompleted {
        action_id: String,
        index: u32,
        kind: String,
        status: String,
        action_status: String,
    },
    #[error("action {action_id} index {index} is a {kind} command, which has no result")]
    NoResult {
        action_id: String,
        index: u32,
        kind: String,
    },
    /// The API error's text is in the message, so it is not also a `source` (which
    /// `{:#}` would print a second time).
    #[error("tenant {tenant}: {error}")]
    Api {
        tenant: String,
        error: crate::api::Error,
    },
    #[error(transparent)]
    Start(#[from] crate::api::http::BuildError),
}

/// Fetch and render what `req` asks for.
pub async fn run(config: &Config, req: &Request) -> Result<Printed, Error> {
    let tenant = find_tenant(config, &req.tenant)?;
    let metrics = Arc::new(Metrics::new());
    let http = Http::new(
        crate::api::http::client(config.request_timeout)?,
        config.max_requests_in_flight,
        &metrics,
    );
    let quota = Quota::shared(&tenant.quota);
    let client = Client::new(tenant, http, quota, metrics)
        .map_err(|error| Error::Api {
            tenant: tenant.name.clone(),
            error,
        })?
        .with_trusted_hosts(&crate::api::trusted_hosts(&config.trusted_result_hosts));
    // The same quota rules as the collector: wait for room, but not for ever.
    let wait = || QuotaWait::Until(Instant::now() + config.request_timeout);
    let api = |error| Error::Api {
        tenant: tenant.name.clone(),
        error,
    };
    let action = match client.get_machine_action(&req.action_id, wait()).await {
        Ok(a) => a,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Error::UnknownAction {
                tenant: tenant.name.clone(),
                action_id: req.action_id.clone(),
            });
        }
        Err(e) => return Err(api(e)),
    };
    let wanted = select(&action, req.index)?;
    let mut text = header(&action);
    let mut unreadable = 0;
    for index in wanted {
        let Some(c) = action.commands.iter().find(|c| c.index == index) else {
            continue;
        };
        let _ = writeln!(text, "\n--- index {index}: {} ---", describe(c));
        if let Some(reason) = no_result(&action, c) {
            let _ = writeln!(text, "{reason}");
            continue;
        }
        match fetch(&client, config, &action.id, c, wait()).await {
            Ok(result) => text.push_str(&result),
            // One command asked for: its error is the answer. Every command: the others are
            // still shown, and the exit status says something could not be read.
            Err(e) if req.index.is_some() => return Err(api(e)),
            Err(e) => {
                unreadable += 1;
                let _ = writeln!(text, "error: {e}");
            }
        }
    }
    Ok(Printed { text, unreadable })
}

/// What `run` prints, and how many results could not be read.
#[derive(Debug)]
pub struct Printed {
    pub text: String,
    pub unreadable: usize,
}

/// The result of one command, as text.
async fn fetch(
    client: &Client,
    config: &Config,
    action_id: &str,
    c: &crate::api::model::Command,
    wait: QuotaWait,
) -> Result<String, crate::api::Error> {
    let link = client
        .get_result_download_link(action_id, c.index, wait)
        .await?;
    let mut out = String::new();
    match c.command.kind {
        CommandType::RunScript => {
            let what = format!("transcript of {action_id} index {}", c.index);
            let t = client
                .fetch_transcript(&link, config.max_transcript_bytes, &what)
                .await?;
            let _ = writeln!(out, "script_name: {}", t.script_name);
            let _ = writeln!(out, "exit_code: {}", t.exit_code);
            let _ = writeln!(out, "script_output:\n{}", or_empty(&t.script_output));
            let _ = writeln!(out, "script_errors:\n{}", or_empty(&t.script_errors));
        }
        _ => {
            let size = client.measure_file(&link).await?;
            let _ = writeln!(
                out,
                "size: {size} bytes (gzip-compressed as the API serves it; not downloaded)"
            );
        }
    }
    Ok(out)
}

/// The text without trailing blank lines, or `(empty)`.
fn or_empty(text: &str) -> &str {
    match text.trim_end() {
        "" => "(empty)",
        t => t,
    }
}

fn find_tenant<'a>(config: &'a Config, name: &str) -> Result<&'a Tenant, Error> {
    config
        .tenants
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::UnknownTenant {
            name: name.to_string(),
            known: config
                .tenants
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The indexes to print: the one asked for (checked), or every command.
fn select(action: &MachineAction, index: Option<u32>) -> Result<Vec<u32>, Error> {
    if !action.is_live_response() {
        return Err(Error::NotLiveResponse {
            action_id: action.id.clone(),
            kind: action.kind.clone(),
        });
    }
    let Some(index) = index else {
        return Ok(action.commands.iter().map(|c| c.index).collect());
    };
    let Some(c) = action.commands.iter().find(|c| c.index == index) else {
        return Err(Error::IndexOutOfRange {
            action_id: action.id.clone(),
            index,
            count: action.commands.len(),
        });
    };
    if !matches!(
        c.command.kind,
        CommandType::RunScript | CommandType::GetFile
    ) {
        return Err(Error::NoResult {
            action_id: action.id.clone(),
            index,
            kind: c.command.kind.as_str().to_string(),
        });
    }
    if c.command_status != CommandStatus::Completed {
        return Err(Error::NotCompleted {
            action_id: action.id.clone(),
            index,
            kind: c.command.kind.as_str().to_string(),
            status: c.command_status.as_str().to_string(),
            action_status: action.status.as_str().to_string(),
        });
    }
    Ok(vec![index])
}

/// Why a command listed without `--index` has nothing to fetch, if so.
fn no_result(action: &MachineAction, c: &crate::api::model::Command) -> Option<String> {
    if !matches!(
        c.command.kind,
        CommandType::RunScript | CommandType::GetFile
    ) {
        return Some(format!(
            "no result: a {} command has none",
            c.command.kind.as_str()
        ));
    }
    if c.command_status != CommandStatus::Completed {
        let errors = if c.errors.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = c
                .errors
                .iter()
                .map(|e| match e {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            format!("; errors: {}", list.join("; "))
        };
        return Some(format!(
            "no result: the command is {} (action {}){errors}",
            c.command_status.as_str(),
            action.status.as_str()
        ));
    }
    None
}

fn describe(c: &crate::api::model::Command) -> String {
    let params: Vec<String> = c
        .command
        .params
        .iter()
        .filter_map(|p| p.value.as_deref().map(|v| format!("{}={v}", p.key)))
        .collect();
    format!(
        "{} {} [{}]",
        c.command.kind.as_str(),
        params.join(" "),
        c.command_status.as_str()
    )
}

fn header(a: &MachineAction) -> String {
    let mut out = format!("action {} ({})", a.id, a.status.as_str());
    let _ = write!(out, " on {}", a.machine());
    if let Some(r) = &a.requestor {
        let _ = write!(out, ", requested by {r}");
    }
    if let Some(t) = a.creation_date_time_utc {
        let _ = write!(out, " at {}", t.to_rfc3339());
    }
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn action(status: &str, commands: &str) -> MachineAction {
        crate::api::model::parse_action(
            format!(
                r#"{{"id":"a1","type":"LiveResponse","status":"{status}","machineId":"m","computerDnsName":"pc","commands":{commands}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    const CMDS: &str = r#"[
        {"index":0,"commandStatus":"Completed","errors":[],"command":{"type":"PutFile","params":[{"key":"FileName","value":"x.ps1"}]}},
        {"index":1,"commandStatus":"Completed","errors":[],"command":{"type":"RunScript","params":[{"key":"ScriptName","value":"x.ps1"}]}},
        {"index":2,"commandStatus":"Created","errors":[],"command":{"type":"GetFile","params":[{"key":"Path","value":"C:\\x"}]}}
    ]"#;

    // See: #12
    #[test]
    fn index_checks_name_the_problem() {
        let a = action("InProgress", CMDS);
        assert_eq!(select(&a, Some(1)).unwrap(), vec![1]);
        assert_eq!(select(&a, None).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            select(&a, Some(3)).unwrap_err().to_string(),
            "action a1 has 3 command(s) (index 0 to 2); --index 3 is out of range"
        );
        assert_eq!(
            select(&a, Some(0)).unwrap_err().to_string(),
            "action a1 index 0 is a PutFile command, which has no result"
        );
        assert_eq!(
            select(&a, Some(2)).unwrap_err().to_string(),
            "action a1 index 2: the GetFile command is Created (action InProgress); its result can be read once the command is Completed"
        );
    }
}

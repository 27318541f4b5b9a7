//! `GET /api/machines`: the tenant's devices with the fields that route alerts (`rbacGroupId`,
//! `rbacGroupName`, `osPlatform`, `healthStatus`, `machineTags`, `lastSeen`, ...), and the
//! `$filter` rules the real API documents for them.
//!
//! Owns the device attributes (derived deterministically from the scenario's machines: the
//! device group from the name's prefix, tags and health from the id) and the machines
//! `$filter`: `eq`/`ne` on `id`, `computerDnsName`, `healthStatus`, `osPlatform`,
//! `rbacGroupId` (a number), `riskScore`, `exposureLevel`, and `machineTags/any(t: t eq '…')`,
//! joined by `and`/`or` (`and` binds tighter; no parentheses). `rbacGroupName` is refused, as
//! the real API refuses it. Does not own the quota, bearer and fault checks (`gate`) or the endpoint name (`endpoints`).

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::Simulator;
use super::endpoints::LIST_MACHINES;
use super::gate::api_call;
use super::respond::{api_error, json_ok};
use super::scenario::iso;

/// A device as `GET /api/machines` shows it (and as tests compare against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TruthMachine {
    pub id: String,
    pub computer_dns_name: String,
    pub first_seen: String,
    pub last_seen: String,
    pub os_platform: String,
    pub version: String,
    pub health_status: String,
    pub onboarding_status: String,
    pub rbac_group_id: u32,
    pub rbac_group_name: String,
    pub risk_score: String,
    pub exposure_level: String,
    pub is_aad_joined: bool,
    pub machine_tags: Vec<String>,
}

/// Every machine of the scenario, by id order.
pub(crate) fn all(sim: &Simulator) -> Vec<TruthMachine> {
    let mut by_id: BTreeMap<&str, &str> = BTreeMap::new();
    for a in &sim.inner.actions {
        by_id.insert(&a.machine_id, &a.dns);
    }
    let seen = iso(sim.inner.anchor);
    let extra = sim.inner.lock().faults.extra_machine_tags.clone();
    by_id
        .into_iter()
        .map(|(id, dns)| {
            // The group follows the name, as device-group rules in the portal usually do.
            let (group_id, group, os, mut tags): (u32, &str, &str, Vec<&str>) =
                if dns.starts_with("srv-sql") {
                    (
                        102,
                        "SQL Servers",
                        "WindowsServer2022",
                        vec!["tier0", "sql"],
                    )
                } else if dns.starts_with("ws-fin") {
                    (
                        103,
                        "Finance Workstations",
                        "Windows11",
                        vec!["finance", "pci"],
                    )
                } else {
                    (
                        101,
                        "Engineering Workstations",
                        "Windows11",
                        vec!["engineering"],
                    )
                };
            let n = id
                .get(..2)
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            if n % 3 == 0 {
                tags.push("vip");
            }
            TruthMachine {
                id: id.to_string(),
                computer_dns_name: dns.to_string(),
                first_seen: "2024-01-15T08:00:00Z".into(),
                last_seen: seen.clone(),
                os_platform: os.into(),
                version: if os == "Windows11" { "24H2" } else { "21H2" }.into(),
                health_status: if n % 5 == 0 { "Inactive" } else { "Active" }.into(),
                onboarding_status: "Onboarded".into(),
                rbac_group_id: group_id,
                rbac_group_name: group.into(),
                risk_score: ["None", "Low", "Medium", "High"][(n % 4) as usize].into(),
                exposure_level: ["Low", "Medium", "High"][(n % 3) as usize].into(),
                is_aad_joined: true,
                machine_tags: tags
                    .into_iter()
                    .map(String::from)
                    .chain(extra.iter().cloned())
                    .collect(),
            }
        })
        .collect()
}

impl Simulator {
    /// The devices `GET /api/machines` serves.
    pub fn machines(&self) -> Vec<TruthMachine> {
        all(self)
    }
}

#[derive(Debug, PartialEq)]
enum Term {
    Eq(String, String, bool),
    Tag(String),
}

/// OR of ANDs of terms.
type Filter = Vec<Vec<Term>>;

fn odata(message: &str) -> String {
    message.to_string()
}

/// Read a quoted OData string at the start of `s`: (value, rest).
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('\'')?.char_indices().peekable();
    let body = &s[1..];
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|(_, c)| *c) == Some('\'') {
                chars.next();
                out.push('\'');
            } else {
                return Some((out, &body[i + 1..]));
            }
        } else {
            out.push(c);
        }
    }
    None
}

const FIELDS: [&str; 7] = [
    "id",
    "computerDnsName",
    "healthStatus",
    "osPlatform",
    "rbacGroupId",
    "riskScore",
    "exposureLevel",
];

fn parse_filter(text: &str) -> Result<Filter, String> {
    let mut out: Filter = vec![Vec::new()];
    let mut rest = text.trim();
    loop {
        let term;
        if let Some(r) = rest.strip_prefix("machineTags/any(") {
            // machineTags/any(t: t eq 'value')
            let (var, r) = r
                .split_once(':')
                .ok_or_else(|| odata("Syntax error in machineTags/any"))?;
            let r = r.trim_start();
            let r = r
                .strip_prefix(var.trim())
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix("eq"))
                .map(str::trim_start)
                .ok_or_else(|| odata("Syntax error in machineTags/any"))?;
            let (value, r) = quoted(r).ok_or_else(|| odata("Unterminated string literal"))?;
            let r = r
                .trim_start()
                .strip_prefix(')')
                .ok_or_else(|| odata("Syntax error in machineTags/any"))?;
            term = Term::Tag(value);
            rest = r.trim_start();
        } else {
            let (field, r) = rest
                .split_once(' ')
                .ok_or_else(|| odata(&format!("Syntax error at position 0 in '{text}'.")))?;
            if field == "rbacGroupName" {
                return Err(odata(
                    "The query specified in the URI is not valid. The property 'rbacGroupName' cannot be used in the $filter query option.",
                ));
            }
            if !FIELDS.contains(&field) {
                return Err(odata(&format!(
                    "The query specified in the URI is not valid. Could not find a property named '{field}' on type 'microsoft.windowsDefenderATP.api.PublicAssetDto'."
                )));
            }
            let (op, r) = r
                .trim_start()
                .split_once(' ')
                .ok_or_else(|| odata("Syntax error: expected an operator"))?;
            let negate = match op {
                "eq" => false,
                "ne" => true,
                other => return Err(odata(&format!("Operator '{other}' is not supported here"))),
            };
            let r = r.trim_start();
            let (value, r) = if field == "rbacGroupId" {
                let end = r.find(' ').unwrap_or(r.len());
                let v = &r[..end];
                if v.parse::<u32>().is_err() {
                    return Err(odata(&format!("'{v}' is not a valid rbacGroupId")));
                }
                (v.to_string(), &r[end..])
            } else {
                quoted(r).ok_or_else(|| odata("Unterminated string literal"))?
            };
            term = Term::Eq(field.to_string(), value, negate);
            rest = r.trim_start();
        }
        if let Some(last) = out.last_mut() {
            last.push(term);
        }
        if rest.is_empty() {
            return Ok(out);
        }
        if let Some(r) = rest.strip_prefix("and ") {
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix("or ") {
            out.push(Vec::new());
            rest = r.trim_start();
        } else {
            return Err(odata(&format!("Syntax error near '{rest}'")));
        }
    }
}

fn matches(m: &TruthMachine, f: &Filter) -> bool {
    f.iter().any(|all| {
        all.iter().all(|t| match t {
            Term::Tag(v) => m.machine_tags.iter().any(|x| x == v),
            Term::Eq(field, v, negate) => {
                let actual = match field.as_str() {
                    "id" => m.id.clone(),
                    // Names compare without case, like DNS.
                    "computerDnsName" => m.computer_dns_name.to_lowercase(),
                    "healthStatus" => m.health_status.clone(),
                    "osPlatform" => m.os_platform.clone(),
                    "rbacGroupId" => m.rbac_group_id.to_string(),
                    "riskScore" => m.risk_score.clone(),
                    _ => m.exposure_level.clone(),
                };
                let want = if field == "computerDnsName" {
                    v.to_lowercase()
                } else {
                    v.clone()
                };
                (actual == want) != *negate
            }
        })
    })
}

#[derive(Serialize)]
struct Page {
    #[serde(rename = "@odata.context")]
    context: String,
    value: Vec<TruthMachine>,
}

/// `GET /api/machines[?$filter=…][&$top=n]`.
pub(crate) async fn list_machines(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = api_call(&sim, &headers, LIST_MACHINES).await {
        return r;
    }
    let q: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let filter = match q.get("$filter").map(|f| parse_filter(f)) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(message)) => {
            return api_error(StatusCode::BAD_REQUEST, "ODataError", &message);
        }
    };
    let top = match q.get("$top").map(|t| t.parse::<usize>()) {
        None => 10_000,
        Some(Ok(n)) if n <= 10_000 => n,
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "ODataError",
                "The limit of '10000' for Top query has been exceeded.",
            );
        }
    };
    let value: Vec<TruthMachine> = all(&sim)
        .into_iter()
        .filter(|m| filter.as_ref().is_none_or(|f| matches(m, f)))
        .take(top)
        .collect();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    json_ok(&Page {
        context: format!("http://{host}/api/$metadata#Machines"),
        value,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn machine(dns: &str, tags: &[&str]) -> TruthMachine {
        TruthMachine {
            id: "abc".into(),
            computer_dns_name: dns.into(),
            first_seen: String::new(),
            last_seen: String::new(),
            os_platform: "Windows11".into(),
            version: String::new(),
            health_status: "Active".into(),
            onboarding_status: String::new(),
            rbac_group_id: 101,
            rbac_group_name: "Eng".into(),
            risk_score: "Low".into(),
            exposure_level: "Low".into(),
            is_aad_joined: true,
            machine_tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn documented_fields_filter_and_rbac_group_name_is_refused() {
        let m = machine("ws-1.contoso.com", &["pci"]);
        let ok = |f: &str| matches(&m, &parse_filter(f).unwrap());
        assert!(ok(
            "computerDnsName eq 'x' or computerDnsName eq 'WS-1.contoso.com'"
        ));
        assert!(!ok(
            "computerDnsName eq 'ws-1.contoso.com' and healthStatus eq 'Inactive'"
        ));
        assert!(ok("rbacGroupId eq 101 and machineTags/any(t: t eq 'pci')"));
        assert!(ok("id ne 'other'"));
        assert!(
            parse_filter("rbacGroupName eq 'Eng'")
                .unwrap_err()
                .contains("'rbacGroupName' cannot be used in the $filter")
        );
        assert!(parse_filter("computerDnsName eq 'unterminated").is_err());
        let (v, rest) = quoted("'o''brien' or").unwrap();
        assert_eq!((v.as_str(), rest), ("o'brien", " or"));
    }
}

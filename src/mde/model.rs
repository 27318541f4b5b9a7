//! The API's nouns as serde types, and pure parsers from bytes.
//!
//! Owns how a machine action, a list page, a download link and a transcript are read, leniently
//! where the API is known to vary (unknown fields and status values are kept, not rejected)
//! and strictly where a value matters. Does no I/O.

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Why some bytes could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("transcript is not text: {0}")]
    Encoding(String),
}

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

/// One page of `GET /api/machineactions`. Items that do not parse are reported, not fatal:
/// one odd action must not hide the others.
#[derive(Debug)]
pub struct ActionPage {
    pub actions: Vec<MachineAction>,
    pub invalid: Vec<String>,
    pub next_link: Option<String>,
}

/// Longest id quoted in a problem message: ids come from the network.
const MAX_ID_SHOWN: usize = 64;

/// Parse a list page item by item. The envelope (`{"value": [...], "@odata.nextLink": ...}`)
/// is walked by a small scanner that only finds where each item starts and ends; every item is
/// then parsed on its own, straight from the page's bytes, into a [`MachineAction`]. So an
/// item with invalid UTF-8, a lone surrogate escape or nesting deeper than serde_json's
/// recursion limit is skipped and reported while the rest of the page counts, and the page is
/// never held a second time as a `serde_json::Value` tree (which cost about 16 times its size).
///
/// serde_json cannot do this alone: an error inside one element of a sequence aborts the whole
/// document, and `RawValue` (which would delimit items) refuses a page whose bytes are not all
/// UTF-8. Only a broken envelope (truncated, not an object, `value` not an array) fails the page.
pub fn parse_action_page(bytes: &[u8]) -> Result<ActionPage, ParseError> {
    let (actions, invalid, next_link) = parse_page::<MachineAction>(bytes, "action")?;
    Ok(ActionPage {
        actions,
        invalid,
        next_link,
    })
}

/// A parsed list page: the items that parse, the problems of those that do not, and the
/// `@odata.nextLink`.
pub(crate) type Page<T> = (Vec<T>, Vec<String>, Option<String>);

/// The items of a list page that parse as `T`, the problems of those that do not (each
/// naming the item as `what` and its id), and the `@odata.nextLink`. See [`parse_action_page`].
pub(crate) fn parse_page<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> Result<Page<T>, ParseError> {
    let mut items = Vec::new();
    let mut invalid = Vec::new();
    let mut next_link = None;
    let mut s = Scanner { b: bytes, i: 0 };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.eat(b'}') {
        return s.end().map(|()| (items, invalid, next_link));
    }
    loop {
        s.ws();
        let (ks, ke) = s.value()?;
        let key: String = serde_json::from_slice(&bytes[ks..ke])
            .map_err(|e| ParseError::Json(format!("page key at byte {ks}: {e}")))?;
        s.ws();
        s.expect(b':')?;
        s.ws();
        match key.as_str() {
            "value" => {
                s.expect(b'[')?;
                s.ws();
                if !s.eat(b']') {
                    loop {
                        s.ws();
                        let (vs, ve) = s.value()?;
                        match parse_item::<T>(&bytes[vs..ve], what) {
                            Ok(a) => items.push(a),
                            Err(problem) => invalid.push(problem),
                        }
                        s.ws();
                        if s.eat(b']') {
                            break;
                        }
                        s.expect(b',')?;
                    }
                }
            }
            "@odata.nextLink" => {
                let (vs, ve) = s.value()?;
                next_link = serde_json::from_slice(&bytes[vs..ve])
                    .map_err(|e| ParseError::Json(format!("@odata.nextLink: {e}")))?;
            }
            _ => {
                s.value()?;
            }
        }
        s.ws();
        if s.eat(b'}') {
            break;
        }
        s.expect(b',')?;
    }
    s.end().map(|()| (items, invalid, next_link))
}

/// One item of a list page, or why it was skipped (naming its id when it has a readable one).
fn parse_item<T: serde::de::DeserializeOwned>(raw: &[u8], what: &str) -> Result<T, String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let text = std::str::from_utf8(raw);
    let problem = match text.map(serde_json::from_str::<T>) {
        Ok(Ok(a)) => return Ok(a),
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("not UTF-8: {e}"),
    };
    let id = text
        .ok()
        .and_then(|t| serde_json::from_str::<IdOnly>(t).ok())
        .map(|i| {
            // Shown as Rust escapes control characters: no line breaks from the network.
            let mut id: String = i.id.chars().take(MAX_ID_SHOWN).collect();
            if id.len() < i.id.len() {
                id.push('…');
            }
            id.escape_debug().to_string()
        })
        .unwrap_or_else(|| "<no readable id>".to_string());
    Err(format!("{what} {id}: {problem}"))
}

/// Finds where JSON values start and end without building them. It checks only what it needs
/// to find boundaries (strings, escapes, bracket depth); each value it delimits is parsed by
/// serde_json, which checks the rest. Iterative: nesting depth costs no stack.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn err(&self, what: &str) -> ParseError {
        if self.i >= self.b.len() {
            ParseError::Json(format!("page ends early: {what}"))
        } else {
            ParseError::Json(format!("{what} at byte {}", self.i))
        }
    }

    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }

    /// Only whitespace may follow the page.
    fn end(&mut self) -> Result<(), ParseError> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.err("trailing characters after the page"))
        }
    }

    /// Skip a string whose opening quote is at `i`.
    fn string(&mut self) -> Result<(), ParseError> {
        self.i += 1;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
        Err(self.err("unterminated string"))
    }

    /// The span of the value starting at `i`, which is left just after it.
    fn value(&mut self) -> Result<(usize, usize), ParseError> {
        let start = self.i;
        match self.b.get(self.i) {
            None => return Err(self.err("expected a value")),
            Some(b'"') => self.string()?,
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                loop {
                    match self.b.get(self.i) {
                        None => return Err(self.err("unterminated object or array")),
                        Some(b'"') => self.string()?,
                        Some(b'{' | b'[') => {
                            depth += 1;
                            self.i += 1;
                        }
                        Some(b'}' | b']') => {
                            depth -= 1;
                            self.i += 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        Some(_) => self.i += 1,
                    }
                }
            }
            Some(_) => {
                while self.b.get(self.i).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(self.err("expected a value"));
                }
            }
        }
        Ok((start, self.i.min(self.b.len())))
    }
}

pub fn parse_action(bytes: &[u8]) -> Result<MachineAction, ParseError> {
    serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))
}

/// The answer of `GetLiveResponseResultDownloadLink`.
#[derive(Debug, Deserialize)]
struct RawLink {
    value: String,
}

/// A short-lived SAS URL. Its `Debug` hides the signature.
#[derive(Clone)]
pub struct DownloadLink(pub url::Url);

impl std::fmt::Debug for DownloadLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DownloadLink({})", redact_url(&self.0))
    }
}

pub fn parse_download_link(bytes: &[u8]) -> Result<DownloadLink, ParseError> {
    let raw: RawLink =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let url = url::Url::parse(&raw.value)
        .map_err(|e| ParseError::Json(format!("download link is not a URL: {e}")))?;
    Ok(DownloadLink(url))
}

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

/// Query parameters whose values are credentials (SAS signature, tokens).
const SECRET_PARAMS: &[&str] = &["sig", "token", "access_token", "client_secret", "code"];

/// A URL safe to show: credential parameters (the SAS `sig`, tokens) are replaced by
/// `REDACTED`; the rest of the query (expiry, filter) stays, since it helps debugging.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (
                    k.into_owned(),
                    if secret {
                        "REDACTED".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The RunScript result document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Transcript {
    pub script_name: String,
    pub exit_code: i64,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub script_output: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub script_errors: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl Transcript {
    pub fn errors_present(&self) -> bool {
        !self.script_errors.trim().is_empty()
    }
}

/// Parse a transcript. PowerShell writes BOMs and sometimes UTF-16, and raw control
/// characters (NUL among them) inside strings; all of that is accepted.
///
/// Memory stays near the size of the transcript: UTF-8 is read in place (no copy of the
/// bytes), only UTF-16 is converted; the escaped copy is made only when the first parse fails.
/// At most the bytes, one text copy and the parsed strings are alive at once.
pub fn parse_transcript(bytes: &[u8]) -> Result<Transcript, ParseError> {
    let text = decode_text(bytes)?;
    match serde_json::from_str::<Transcript>(&text) {
        Ok(t) => Ok(t),
        Err(first) => {
            let escaped = escape_raw_controls(&text);
            if escaped == *text {
                return Err(ParseError::Json(first.to_string()));
            }
            drop(text);
            serde_json::from_str(&escaped).map_err(|e| ParseError::Json(e.to_string()))
        }
    }
}

fn decode_text(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, ParseError> {
    use std::borrow::Cow;
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return std::str::from_utf8(rest)
            .map(Cow::Borrowed)
            .map_err(|e| ParseError::Encoding(e.to_string()));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        if rest.len() % 2 != 0 {
            return Err(ParseError::Encoding("odd length UTF-16LE".into()));
        }
        let units = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        return char::decode_utf16(units)
            .collect::<Result<String, _>>()
            .map(Cow::Owned)
            .map_err(|e| ParseError::Encoding(e.to_string()));
    }
    std::str::from_utf8(bytes)
        .map(Cow::Borrowed)
        .map_err(|e| ParseError::Encoding(e.to_string()))
}

/// Escape raw control characters that appear inside JSON strings (invalid JSON, but seen in
/// script output), leaving everything outside strings as it is.
fn escape_raw_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
                out.push(c);
                continue;
            }
            match c {
                '\\' => {
                    escaped = true;
                    out.push(c);
                }
                '"' => {
                    in_string = false;
                    out.push(c);
                }
                c if (c as u32) < 0x20 => {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                }
                c => out.push(c),
            }
        } else {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// The `error` object of an API error body.
#[derive(Debug, Deserialize)]
struct RawApiError {
    error: ApiErrorBody,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

pub fn parse_api_error(bytes: &[u8]) -> Option<ApiErrorBody> {
    serde_json::from_slice::<RawApiError>(bytes)
        .ok()
        .map(|e| e.error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ACTION: &str = r#"{
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

    #[test]
    fn a_bad_item_does_not_hide_the_page() {
        let page = format!(
            r#"{{"value":[{ACTION}, {{"id":"broken","type":"LiveResponse"}}],"@odata.nextLink":"https://x/api/machineactions?$skip=2"}}"#
        );
        let p = parse_action_page(page.as_bytes()).unwrap();
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.invalid.len(), 1);
        assert!(
            p.invalid[0].starts_with("action broken: missing field `status`"),
            "{:?}",
            p.invalid
        );
        assert_eq!(
            p.next_link.as_deref(),
            Some("https://x/api/machineactions?$skip=2")
        );
    }

    /// See: #13. One hostile item (invalid UTF-8, a lone surrogate, nesting far deeper than
    /// any parser's recursion limit) is skipped; the items around it and the nextLink count.
    #[test]
    fn hostile_items_are_skipped_not_the_page() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let mut page = Vec::new();
        page.extend_from_slice(b"{\"@odata.context\":\"x\",\"value\":[");
        page.extend_from_slice(ACTION.as_bytes());
        // Invalid UTF-8 inside a string of the second item.
        page.extend_from_slice(b",{\"id\":\"bad-utf8\",\"type\":\"LiveResponse\",\"status\":\"Succeeded\",\"requestor\":\"\xff\xfe\"}");
        // A lone surrogate escape in a field that matters.
        page.extend_from_slice(
            br#",{"id":"lone","type":"LiveResponse","status":"Succeeded","requestor":"\ud800"}"#,
        );
        // Very deep nesting in an unknown field is skipped over (the item counts); in a field
        // that is read, it passes serde_json's recursion limit and the item is skipped.
        page.extend_from_slice(
            format!(
                r#",{{"id":"deep-unknown","type":"LiveResponse","status":"Succeeded","x":{deep}}}"#
            )
            .as_bytes(),
        );
        page.extend_from_slice(
            format!(r#",{{"id":"deep","type":"LiveResponse","status":"Succeeded","commands":[{{"index":0,"commandStatus":"Failed","command":{{"type":"RunScript"}},"errors":{deep}}}]}}"#)
                .as_bytes(),
        );
        page.extend_from_slice(b",");
        page.extend_from_slice(ACTION.replace("6f0c2b1e", "70000000").as_bytes());
        page.extend_from_slice(b"],\"@odata.nextLink\":\"https://x/api/machineactions?$skip=5\"}");
        let p = parse_action_page(&page).unwrap();
        let ids: Vec<&str> = p.actions.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "6f0c2b1e-8d3a-4c55-9a0e-3b7d41f2c9aa",
                "deep-unknown",
                "70000000-8d3a-4c55-9a0e-3b7d41f2c9aa"
            ]
        );
        assert_eq!(p.invalid.len(), 3, "{:?}", p.invalid);
        assert!(
            p.invalid[0].starts_with("action <no readable id>: not UTF-8"),
            "{:?}",
            p.invalid
        );
        assert!(p.invalid[1].starts_with("action lone: "), "{:?}", p.invalid);
        assert!(p.invalid[1].contains("hex escape"), "{:?}", p.invalid);
        assert!(
            p.invalid[2].starts_with("action deep: recursion limit exceeded"),
            "{:?}",
            p.invalid
        );
        assert_eq!(
            p.next_link.as_deref(),
            Some("https://x/api/machineactions?$skip=5")
        );
    }

    #[test]
    fn a_broken_envelope_fails_the_page_with_its_place() {
        let err = |b: &[u8]| parse_action_page(b).unwrap_err().to_string();
        assert_eq!(err(b"[]"), "invalid JSON: expected '{' at byte 0");
        assert_eq!(
            err(b"{\"value\": {}}"),
            "invalid JSON: expected '[' at byte 10"
        );
        assert_eq!(
            err(b"{\"value\": [{\"id\":\"a\""),
            "invalid JSON: page ends early: unterminated object or array"
        );
        assert_eq!(
            err(b"{\"value\": []} x"),
            "invalid JSON: trailing characters after the page at byte 14"
        );
        assert!(parse_action_page(b" { } ").unwrap().actions.is_empty());
        let p = parse_action_page(b"{\"value\":[],\"@odata.nextLink\":null}").unwrap();
        assert_eq!(p.next_link, None);
    }

    #[test]
    fn malformed_page_is_an_error() {
        assert!(matches!(
            parse_action_page(b"{\"value\": [").unwrap_err(),
            ParseError::Json(_)
        ));
    }

    #[test]
    fn transcript_with_nul_and_unicode() {
        let t = parse_transcript(
            "{\"script_name\":\"a.ps1\",\"exit_code\":3,\"script_output\":\"caf\u{e9} \u{65e5}\u{672c}\u{0}x\",\"script_errors\":\"\"}".as_bytes(),
        )
        .unwrap();
        assert_eq!(t.exit_code, 3);
        assert_eq!(t.script_output, "café 日本\0x");
        assert!(!t.errors_present());
        let escaped = parse_transcript(
            br#"{"script_name":"a.ps1","exit_code":0,"script_output":"a\u0000b","script_errors":"boom"}"#,
        )
        .unwrap();
        assert_eq!(escaped.script_output, "a\0b");
        assert!(escaped.errors_present());
    }

    #[test]
    fn transcript_with_bom_and_utf16() {
        let json =
            r#"{"script_name":"b.ps1","exit_code":1,"script_output":null,"script_errors":"x"}"#;
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(json.as_bytes());
        assert_eq!(parse_transcript(&bom).unwrap().exit_code, 1);
        let mut utf16 = vec![0xFF, 0xFE];
        for u in json.encode_utf16() {
            utf16.extend_from_slice(&u.to_le_bytes());
        }
        let t = parse_transcript(&utf16).unwrap();
        assert_eq!(t.script_name, "b.ps1");
        assert_eq!(t.script_output, "");
    }

    #[test]
    fn malformed_transcripts_are_errors() {
        assert!(matches!(
            parse_transcript(b"{\"script_name\":\"x\""),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse_transcript(&[0xC3, 0x28]),
            Err(ParseError::Encoding(_))
        ));
        assert!(matches!(
            parse_transcript(br#"{"script_name":"x","exit_code":"zero"}"#),
            Err(ParseError::Json(_))
        ));
    }

    #[test]
    fn link_debug_hides_the_signature() {
        let l = parse_download_link(
            br#"{"@odata.context":"x","value":"https://a.blob.core.windows.net/c/b?se=2021&sp=r&sig=SECRET%3D"}"#,
        )
        .unwrap();
        let shown = format!("{l:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.contains("a.blob.core.windows.net/c/b?se=2021&sp=r&sig=REDACTED"),
            "{shown}"
        );
    }

    #[test]
    fn api_error_body() {
        let e = parse_api_error(br#"{"error":{"code":"429","message":"API calls quota exceeded! maximum allowed 100 per 00:01:00","target":"g"}}"#).unwrap();
        assert_eq!(e.code, "429");
        assert!(parse_api_error(b"<xml/>").is_none());
    }
}

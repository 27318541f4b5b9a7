//! The failure signature of a run (#36): why it failed, as a short normalised template that
//! the same failure on another machine gives too, and a stable id (a hash of the template).
//!
//! A run fails when its exit code is not 0 or it wrote to `script_errors`. The template comes
//! from the first error record of `script_errors` (for PowerShell: its message line, with the
//! `FullyQualifiedErrorId` and the category of `CategoryInfo` when the record has them), or,
//! when `script_errors` is blank, from the last line of `script_output` and the exit code. In
//! it, quoted values, paths, URLs, e-mail-like user names, GUIDs, hex, numbers, timestamps,
//! long opaque tokens and the machine's own host name are masked (`<str>`, `<path>`, `<url>`,
//! `<user>`, `<guid>`, `<hex>` for `0x…`, `<n>` for numbers and bare hex runs, `<id>`, `<host>`), whitespace is folded to one space
//! and control characters go; it is cut at [`MAX_TEMPLATE_BYTES`].
//!
//! Script text is hostile: only the first [`MAX_SCAN_BYTES`] of `script_errors` and the last
//! [`MAX_TAIL_BYTES`] of `script_output` are read, each character once (masking is one pass:
//! a quote whose closing quote is not found is not looked for again), so the cost of a run is
//! bounded whatever its size (benches/signature.rs).
//!
//! Owns the template, the id and what a policy lets out of them ([`Signature::redacted`]).
//! Does not own when a signature is taken (`outcome`), keeping it (`state`, with the run),
//! counting machines per signature (`metrics::signatures`) nor the pages (`web`).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{RedactMode, Redaction};

/// The longest template, in bytes (a label value of every signature series).
pub const MAX_TEMPLATE_BYTES: usize = 320;
/// How much of `script_errors` is read: its first error record is at its start.
pub const MAX_SCAN_BYTES: usize = 16 * 1024;
/// How much of the end of `script_output` is read when `script_errors` is blank.
pub const MAX_TAIL_BYTES: usize = 4 * 1024;
/// How many lines the message of an error record may span (a wrapped message).
const MAX_MESSAGE_LINES: usize = 3;
/// How many lines after the message are searched for `CategoryInfo` and
/// `FullyQualifiedErrorId`.
const MAX_RECORD_LINES: usize = 12;
/// Hex digits of the id: 48 bits, no collision to fear among the signatures of a script.
const ID_HEX: usize = 12;

/// Why a run failed: the template and its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The first [`ID_HEX`] hex digits of the SHA-256 of the template as taken (before any
    /// policy withheld it): the same failure gives the same id whatever the policy.
    pub id: String,
    /// The normalised template; empty when the `transcript_log` policy withholds it (`hash`,
    /// `drop`).
    pub template: String,
}

impl Signature {
    /// The signature of a run, `None` when it did not fail. `host` is the machine's name as
    /// the series spell it (its DNS name): it and its first label are masked.
    pub fn of(errors: &str, output: &str, exit_code: i64, host: &str) -> Option<Signature> {
        // Blank or not is judged on the part that is read: a megabyte of spaces costs no more.
        let errors = head(errors, MAX_SCAN_BYTES);
        let template = if !errors.trim().is_empty() {
            from_errors(errors, host)
        } else if exit_code != 0 {
            from_output(tail(output, MAX_TAIL_BYTES), exit_code, host)
        } else {
            return None;
        };
        Some(Signature::from_template(template))
    }

    fn from_template(template: String) -> Signature {
        let digest = Sha256::digest(template.as_bytes());
        let mut id = String::with_capacity(ID_HEX);
        for b in digest.iter().take(ID_HEX / 2) {
            id.push_str(&format!("{b:02x}"));
        }
        Signature { id, template }
    }

    /// This signature as `policy` lets it out: the `scrub` patterns applied to the template
    /// (a match becomes `[REDACTED]`), and no template at all under `hash` or `drop` (the id
    /// still groups the runs). `truncate` leaves it: it is already bounded and masked.
    pub fn redacted(&self, policy: &Redaction) -> Signature {
        let template = match policy.mode {
            RedactMode::Hash | RedactMode::Drop => String::new(),
            RedactMode::None | RedactMode::Truncate => {
                let mut t = self.template.clone();
                for re in &policy.scrubbers {
                    t = re.replace_all(&t, "[REDACTED]").into_owned();
                }
                cut(&mut t);
                t
            }
        };
        Signature {
            id: self.id.clone(),
            template,
        }
    }
}

/// At most `max` bytes from the start of `s`, at a character boundary.
fn head(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// At most `max` bytes from the end of `s`, at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Cut `t` to [`MAX_TEMPLATE_BYTES`] at a character boundary, marked with `…`.
fn cut(t: &mut String) {
    if t.len() > MAX_TEMPLATE_BYTES {
        let mut end = MAX_TEMPLATE_BYTES - '…'.len_utf8();
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
        t.push('…');
    }
}

/// Lines of a record that belong to PowerShell's position and context block, not the message.
fn is_context_line(trimmed: &str) -> bool {
    trimmed.starts_with("At ")
        || trimmed.starts_with("At line:")
        || trimmed.starts_with('+')
        || trimmed.starts_with("Line |")
}

/// The template of the first error record of `errors`.
fn from_errors(errors: &str, host: &str) -> String {
    let mut lines = errors.lines().skip_while(|l| l.trim().is_empty());
    let mut message = String::new();
    let mut context = Vec::new();
    for (n, line) in lines.by_ref().enumerate() {
        let t = line.trim();
        if n > 0 && (t.is_empty() || is_context_line(t)) {
            if !t.is_empty() {
                context.push(t);
            }
            break;
        }
        if n >= MAX_MESSAGE_LINES {
            break;
        }
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(t);
    }
    // PowerShell 7's concise view puts the message last, after `Line |` and the code: `| msg`.
    let mut concise: Option<&str> = None;
    let (mut id, mut category) = (None, None);
    for line in context
        .into_iter()
        .chain(lines.by_ref().take(MAX_RECORD_LINES))
    {
        let t = line.trim().trim_start_matches('+').trim_start();
        if let Some(v) = field(t, "FullyQualifiedErrorId") {
            id = Some(v);
            break;
        } else if let Some(v) = field(t, "CategoryInfo") {
            category = Some(categories(v));
        } else if let Some(rest) = line.trim().strip_prefix('|') {
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('~') {
                concise = Some(rest);
            }
        }
    }
    let mut out = String::with_capacity(MAX_TEMPLATE_BYTES);
    match concise {
        // `Get-Item: C:\x.ps1:3` then `| message`: the command, then the message.
        Some(m) => {
            let command = message.split(':').next().unwrap_or_default();
            mask(command, host, &mut out);
            out.push_str(": ");
            mask(m, host, &mut out);
        }
        None => mask(&message, host, &mut out),
    }
    if let Some(id) = id {
        out.push_str(" [");
        mask(id, host, &mut out);
        out.push(']');
    }
    if let Some((category, exception)) = category {
        out.push_str(" (");
        mask(category, host, &mut out);
        if !exception.is_empty() {
            out.push_str(", ");
            mask(exception, host, &mut out);
        }
        out.push(')');
    }
    cut(&mut out);
    out
}

/// The value of `Key : value`, `key` matched exactly.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(key)?.trim_start().strip_prefix(':')?;
    Some(rest.trim())
}

/// `CategoryInfo`'s category (before the first `:`) and its exception type (after the last
/// `], `): `PermissionDenied: (C:\x:String) [Get-Item], UnauthorizedAccessException`.
fn categories(v: &str) -> (&str, &str) {
    let category = v.split(':').next().unwrap_or_default().trim();
    let exception = v.rsplit_once("], ").map_or("", |(_, e)| e.trim());
    (category, exception)
}

/// The template of a run that failed without writing to `script_errors`: its exit code and the
/// last non-blank line of its output.
fn from_output(output: &str, exit_code: i64, host: &str) -> String {
    let mut out = format!("exit code {exit_code}");
    match output.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
        Some(last) => {
            out.push_str(": ");
            mask(last, host, &mut out);
        }
        None => out.push_str(" (no output)"),
    }
    cut(&mut out);
    out
}

/// The quote that closes `open`.
fn closing(open: char) -> Option<char> {
    match open {
        '\'' => Some('\''),
        '"' => Some('"'),
        '‘' | '’' => Some('’'),
        '“' | '”' => Some('”'),
        _ => None,
    }
}

/// Append `text` masked to `out`, stopping once `out` is past the template's bound. One pass:
/// each character is looked at a bounded number of times (a quote whose closing quote is
/// missing marks that kind as never closing, so it is not searched for again).
fn mask(text: &str, host: &str, out: &mut String) {
    let host = host.trim_end_matches('.');
    let short = host.split('.').next().unwrap_or_default();
    let mut unclosed: Vec<char> = Vec::new();
    let mut rest = text;
    while !rest.is_empty() && out.len() <= MAX_TEMPLATE_BYTES {
        let Some(c) = rest.chars().next() else { break };
        if c.is_whitespace() || c.is_control() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let prev_word = out.chars().last().is_some_and(char::is_alphanumeric);
        if let Some(close) = closing(c)
            && !prev_word
            && !unclosed.contains(&close)
        {
            // The closing quote: the next one not followed by a letter or digit (so that
            // `don't` inside is no end).
            let body = &rest[c.len_utf8()..];
            let end = body.char_indices().find(|&(i, q)| {
                q == close
                    && !body[i + q.len_utf8()..]
                        .chars()
                        .next()
                        .is_some_and(char::is_alphanumeric)
            });
            match end {
                Some((i, q)) => {
                    out.push_str("<str>");
                    rest = &body[i + q.len_utf8()..];
                }
                None => {
                    unclosed.push(close);
                    rest = body;
                }
            }
            continue;
        }
        // A token: up to the next whitespace or quote.
        let len = rest
            .char_indices()
            .find(|&(_, ch)| ch.is_whitespace() || ch.is_control() || closing(ch).is_some())
            .map_or(rest.len(), |(i, _)| i);
        let len = len.max(c.len_utf8());
        token(&rest[..len], host, short, out);
        rest = &rest[len..];
    }
    // A quote or token may have taken `out` past the bound; the caller cuts.
    if out.ends_with(' ') {
        out.pop();
    }
}

/// Append one token masked: its leading and trailing punctuation kept, its core classified.
fn token(tok: &str, host: &str, short: &str, out: &mut String) {
    let lead: &[char] = &['(', '[', '{', '<'];
    let trail: &[char] = &['.', ',', ';', ':', ')', ']', '}', '>', '!', '?'];
    let core_start = tok.len() - tok.trim_start_matches(lead).len();
    let core = tok[core_start..].trim_end_matches(trail);
    let after = &tok[core_start + core.len()..];
    out.push_str(&tok[..core_start]);
    if !core.is_empty() {
        let class = classify(core, host, short);
        match class {
            // Consecutive paths are one (a path with spaces in it).
            Some("<path>") if out.ends_with("<path> ") => {
                out.pop();
            }
            Some(c) => out.push_str(c),
            None => digits_masked(core, out),
        }
    }
    out.push_str(after);
}

/// What a whole token is masked as, `None`: only its digits.
fn classify(core: &str, host: &str, short: &str) -> Option<&'static str> {
    let is_host = |h: &str| !h.is_empty() && core.eq_ignore_ascii_case(h);
    if is_host(host) || is_host(short) {
        return Some("<host>");
    }
    if core.contains("://") {
        return Some("<url>");
    }
    if core.contains('@') && !core.starts_with('@') {
        return Some("<user>");
    }
    let first = core.chars().next().unwrap_or(' ');
    // Numbers, versions, addresses, dates and times: a digit first, then digits and separators.
    if first.is_ascii_digit()
        && core
            .chars()
            .all(|c| c.is_ascii_digit() || "-:.,/+TZ".contains(c))
    {
        return Some("<n>");
    }
    if is_guid(core) {
        return Some("<guid>");
    }
    let hex_body = core.strip_prefix("0x").or_else(|| core.strip_prefix("0X"));
    if hex_body.is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit())) {
        return Some("<hex>");
    }
    if core.contains('\\') || (core.len() > 1 && core.contains('/')) {
        return Some("<path>");
    }
    let digit = core.chars().any(|c| c.is_ascii_digit());
    // A bare run of hex digits (an HRESULT, a hash) is a number whether or not a letter is in
    // it: `80070005` and `8007000E` are masked alike.
    if digit && core.len() >= 8 && core.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some("<n>");
    }
    if digit
        && core.len() >= 20
        && core
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c))
    {
        return Some("<id>");
    }
    None
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `core` with each run of digits as `<n>`.
fn digits_masked(core: &str, out: &mut String) {
    let mut in_digits = false;
    for c in core.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push_str("<n>");
            }
            in_digits = true;
        } else {
            in_digits = false;
            // A label value never holds these: the exposition escapes them, a page shows them.
            out.push(if c == '"' { '\'' } else { c });
        }
    }
}

#[cfg(test)]
mod tests;

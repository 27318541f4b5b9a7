//! A list page (`{"value": [...], "@odata.nextLink": ...}`), read item by item so one odd
//! item never hides the others.
//!
//! Owns the envelope scanner (which also applies `poison`'s rules to each item in the same
//! walk) and the per-item parse. Does not own the item types (`action`, `machine`) nor the
//! poison rules (`poison`).

use serde::Deserialize;

use super::poison::{self, Escape, MAX_DEPTH};
use super::{MachineAction, ParseError};

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
    let mut s = Scanner::new(bytes);
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
                        let (vs, ve, poison) = s.item()?;
                        match parse_item::<T>(&bytes[vs..ve], poison, what) {
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

/// One item of a list page, or why it was skipped (naming its id when it has a readable one):
/// not UTF-8, poison in any field (`poison`, found by the scanner while it delimited the
/// item), or not of the item's type.
fn parse_item<T: serde::de::DeserializeOwned>(
    raw: &[u8],
    poison: Option<String>,
    what: &str,
) -> Result<T, String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let text = std::str::from_utf8(raw);
    let problem = match (text, poison) {
        (Err(e), _) => format!("not UTF-8: {e}"),
        (Ok(_), Some(poison)) => poison,
        (Ok(t), None) => match serde_json::from_str::<T>(t) {
            Ok(a) => return Ok(a),
            Err(e) => e.to_string(),
        },
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
/// serde_json, which checks the rest. Iterative: nesting depth costs no stack. While it
/// delimits an item ([`Scanner::item`]) it also applies `poison`'s rules to the escapes and
/// brackets it passes, so an item is walked once before serde_json reads it.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Within an item: where it starts (offsets in poison messages are from there).
    item: Option<usize>,
    /// The low half of a surrogate pair already judged with its high half.
    pair_low_at: Option<usize>,
    /// The first poison found in the current item.
    poison: Option<String>,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scanner {
            b,
            i: 0,
            item: None,
            pair_low_at: None,
            poison: None,
        }
    }

    /// The span of the item starting at `i`, and why it is poison if it is.
    fn item(&mut self) -> Result<(usize, usize, Option<String>), ParseError> {
        self.item = Some(self.i);
        self.pair_low_at = None;
        self.poison = None;
        let span = self.value();
        self.item = None;
        let (start, end) = span?;
        Ok((start, end, self.poison.take()))
    }

    /// Judge the escape at `i` (within an item, until its first poison).
    fn judge_escape(&mut self) {
        let Some(start) = self.item else { return };
        if self.poison.is_some() {
            return;
        }
        if self.pair_low_at == Some(self.i) {
            self.pair_low_at = None;
            return;
        }
        match poison::escape(self.b, self.i) {
            Escape::Fine => {}
            Escape::Pair => self.pair_low_at = Some(self.i + 6),
            Escape::Lone => {
                self.poison = Some(format!(
                    "lone UTF-16 surrogate escape at byte {}",
                    self.i - start
                ));
            }
        }
    }

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
                b'\\' => {
                    self.judge_escape();
                    self.i += 2;
                }
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
                            if let Some(start) = self.item
                                && depth > MAX_DEPTH
                                && self.poison.is_none()
                            {
                                self.poison = Some(format!(
                                    "nesting deeper than {MAX_DEPTH} levels at byte {}",
                                    self.i - start
                                ));
                            }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::action::ACTION;
    use super::*;

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
        // Very deep nesting is skipped, in a field that is not read as in one that is (#24).
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
                "70000000-8d3a-4c55-9a0e-3b7d41f2c9aa"
            ]
        );
        assert_eq!(p.invalid.len(), 4, "{:?}", p.invalid);
        assert!(
            p.invalid[0].starts_with("action <no readable id>: not UTF-8"),
            "{:?}",
            p.invalid
        );
        assert!(p.invalid[1].starts_with("action lone: "), "{:?}", p.invalid);
        assert!(
            p.invalid[1].contains("lone UTF-16 surrogate"),
            "{:?}",
            p.invalid
        );
        assert!(
            p.invalid[2].starts_with("action deep-unknown: nesting deeper than 128 levels"),
            "{:?}",
            p.invalid
        );
        assert!(
            p.invalid[3].starts_with("action deep: nesting deeper than 128 levels"),
            "{:?}",
            p.invalid
        );
        assert_eq!(
            p.next_link.as_deref(),
            Some("https://x/api/machineactions?$skip=5")
        );
    }

    /// #24 item 9: a poison item in a field the action type does not read is skipped and
    /// reported like one in a field it reads; valid surrogate pairs still parse.
    #[test]
    fn poison_in_a_field_that_is_not_read_skips_the_item() {
        let item = |id: &str, comment: &str| {
            format!(
                r#"{{"id":"{id}","type":"LiveResponse","status":"Succeeded","requestorComment":{comment}}}"#
            )
        };
        let page = format!(
            r#"{{"value":[{},{},{},{},{}]}}"#,
            item("lone-high", r#""x\ud800y""#),
            item("lone-low", r#""\udc00""#),
            item("high-then-not-low", r#""\ud800\u0041""#),
            item(
                "pair",
                r#""\ud83d\ude00 and \\ud800 (an escaped backslash)""#
            ),
            item("deep-ok", "[[[1]]]"),
        );
        let p = parse_action_page(page.as_bytes()).unwrap();
        let ids: Vec<&str> = p.actions.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["pair", "deep-ok"], "{:?}", p.invalid);
        assert_eq!(p.invalid.len(), 3, "{:?}", p.invalid);
        for (problem, id) in p
            .invalid
            .iter()
            .zip(["lone-high", "lone-low", "high-then-not-low"])
        {
            assert!(
                problem.starts_with(&format!(
                    "action {id}: lone UTF-16 surrogate escape at byte "
                )),
                "{problem}"
            );
        }
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
}

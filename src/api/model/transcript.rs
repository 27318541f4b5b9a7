//! The RunScript result document (a transcript), read from bytes that may be UTF-8, UTF-16
//! with a BOM, or hold raw control characters.
//!
//! Owns decoding and parsing a transcript. Does not own fetching it (`api::download`).

use serde::Deserialize;

use super::{ParseError, null_as_empty};

/// The RunScript result document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Written")]
pub struct Transcript {
    pub script_name: String,
    pub exit_code: i64,
    pub script_output: String,
    /// `script_errors`, or `script_error` as older revisions of the API's documentation
    /// spell it (the non-empty one when a document has both).
    pub script_errors: String,
}

/// The document as written: both spellings of the error stream's key are read.
#[derive(Deserialize)]
struct Written {
    script_name: String,
    exit_code: i64,
    #[serde(default, deserialize_with = "null_as_empty")]
    script_output: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    script_errors: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    script_error: String,
}

impl From<Written> for Transcript {
    fn from(w: Written) -> Transcript {
        Transcript {
            script_name: w.script_name,
            exit_code: w.exit_code,
            script_output: w.script_output,
            script_errors: if w.script_errors.is_empty() {
                w.script_error
            } else {
                w.script_errors
            },
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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

    /// Older revisions of the API's documentation spell the key `script_error`: its text
    /// counts as errors too. See: #32 item 13
    #[test]
    fn the_older_script_error_key_is_read() {
        let t = parse_transcript(
            br#"{"script_name":"a.ps1","exit_code":1,"script_output":"","script_error":"Access denied"}"#,
        )
        .unwrap();
        assert_eq!(t.script_errors, "Access denied");
        assert!(t.errors_present());
        let both = parse_transcript(
            br#"{"script_name":"a.ps1","exit_code":1,"script_errors":"new","script_error":"old"}"#,
        )
        .unwrap();
        assert_eq!(both.script_errors, "new");
        let neither =
            parse_transcript(br#"{"script_name":"a.ps1","exit_code":0,"script_output":"ok"}"#)
                .unwrap();
        assert!(!neither.errors_present());
    }
}

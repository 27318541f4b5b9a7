//! The text of a file a person wrote or a tool saved: the configuration, a tenant file, a
//! client secret, a PKCS#12 password, a federated token or a PostgreSQL URL file. YAML, JSON
//! and these files are UTF-8, but the tools that write them on Windows save other things too.
//!
//! Owns turning a file's bytes into its text. A UTF-8 byte order mark is dropped: Notepad and
//! Windows PowerShell 5.1's `Out-File -Encoding utf8` write one, YAML allows it, JSON parsers
//! refuse it ("expected value at line 1 column 1"), and in a secret it would be sent as part
//! of the secret. UTF-16 (what `>` and `Out-File` write by default in Windows PowerShell 5.1),
//! a NUL byte and bytes that are not UTF-8 are refused with a message that says which and
//! where; a lossy reading would have turned them into tenant names, label values or secrets
//! of U+FFFD. Does not own reading the file, nor naming it in the message (each caller does).
//! Imports nothing from the crate.

/// Why a file's bytes are not text this exporter reads, and on which line when it is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct NotText {
    /// 1-based; `None` when the whole file is refused (UTF-16).
    pub line: Option<usize>,
    /// What is wrong, with the column when there is a line.
    pub message: String,
}

const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

/// The text of `bytes`: UTF-8 without its byte order mark, or why not.
pub fn decode(bytes: &[u8]) -> Result<&str, NotText> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(NotText {
            line: None,
            message: "UTF-16 text (the file begins with a UTF-16 byte order mark, as Windows \
                      PowerShell 5.1's `>` and `Out-File` write): save it as UTF-8"
                .into(),
        });
    }
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let good = bytes.get(..e.valid_up_to()).unwrap_or_default();
        let (line, column) = place(std::str::from_utf8(good).unwrap_or_default());
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
        NotText {
            line: Some(line),
            message: format!("not UTF-8 text: byte 0x{byte:02X} at column {column}"),
        }
    })?;
    if let Some(at) = text.find('\0') {
        let (line, column) = place(text.get(..at).unwrap_or_default());
        return Err(NotText {
            line: Some(line),
            message: format!(
                "a NUL byte at column {column}: not a text file (UTF-16 without a byte order \
                 mark, or binary); save it as UTF-8"
            ),
        });
    }
    Ok(text)
}

/// The line and column (both 1-based, the column in characters) just after `before`.
fn place(before: &str) -> (usize, usize) {
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// See: #34. A byte order mark is not part of the text; what is not UTF-8 text is refused
    /// with where and why, on the exact messages.
    #[test]
    fn text_is_utf8_without_its_mark_and_the_rest_is_named() {
        assert_eq!(decode(b"a: 1\n").unwrap(), "a: 1\n");
        assert_eq!(decode(b"\xEF\xBB\xBFa: 1\n").unwrap(), "a: 1\n");
        assert_eq!(decode(b"").unwrap(), "");
        assert_eq!(decode("é: ü\n".as_bytes()).unwrap(), "é: ü\n");
        // Only a leading mark goes.
        assert_eq!(decode(b"a\xEF\xBB\xBF").unwrap(), "a\u{FEFF}");

        let e = decode(b"- name: ok\n- name: d\xFF\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(
            e.to_string(),
            "line 2: not UTF-8 text: byte 0xFF at column 10"
        );
        // Columns count characters, not bytes.
        let e = decode("é\u{0}".as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1: a NUL byte at column 2: not a text file (UTF-16 without a byte order mark, \
             or binary); save it as UTF-8"
        );
        for utf16 in [&b"\xFF\xFEa\x00"[..], &b"\xFE\xFF\x00a"[..]] {
            let e = decode(utf16).unwrap_err();
            assert_eq!(e.line, None);
            assert_eq!(
                e.to_string(),
                "UTF-16 text (the file begins with a UTF-16 byte order mark, as Windows \
                 PowerShell 5.1's `>` and `Out-File` write): save it as UTF-8"
            );
        }
        // UTF-16 without a mark: its NUL bytes give it away.
        let e = decode(b"[\x00{\x00").unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.message.starts_with("a NUL byte at column 2"), "{e}");
    }
}

//! The checks an item of a list page passes before it is parsed, whatever fields its type
//! reads (#24): no lone UTF-16 surrogate escape and no nesting deeper than [`MAX_DEPTH`], in
//! any field. serde_json skips the fields a type does not read without decoding their escapes
//! and without its recursion limit, so a poison item would otherwise be processed as an action.
//! (Invalid UTF-8 is refused by the caller, over the item's whole bytes.)
//!
//! Owns those two checks. Does not own delimiting the items (`page`'s scanner) nor parsing them.

/// Deepest nesting of arrays and objects an item may have, the item itself counting as 1:
/// serde_json's own recursion limit, so a field that is read and one that is not are alike.
pub(super) const MAX_DEPTH: usize = 128;

fn hex4(b: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// Why `raw` (one JSON value, already delimited) is poison, or `Ok`.
pub(super) fn check(raw: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'"' => {
                i += 1;
                while i < raw.len() && raw[i] != b'"' {
                    if raw[i] == b'\\' {
                        if raw.get(i + 1) == Some(&b'u') {
                            let at = i;
                            let unit = hex4(&raw[i + 2..]).unwrap_or(0);
                            i += 6;
                            if (0xDC00..0xE000).contains(&unit) {
                                return Err(format!("lone UTF-16 surrogate escape at byte {at}"));
                            }
                            if (0xD800..0xDC00).contains(&unit) {
                                let low = (raw.get(i) == Some(&b'\\')
                                    && raw.get(i + 1) == Some(&b'u'))
                                .then(|| raw.get(i + 2..).and_then(hex4))
                                .flatten();
                                match low {
                                    Some(l) if (0xDC00..0xE000).contains(&l) => i += 6,
                                    _ => {
                                        return Err(format!(
                                            "lone UTF-16 surrogate escape at byte {at}"
                                        ));
                                    }
                                }
                            }
                            continue;
                        }
                        i += 2;
                        continue;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "nesting deeper than {MAX_DEPTH} levels at byte {i}"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

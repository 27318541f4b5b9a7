//! The checks an item of a list page passes before it is parsed, whatever fields its type
//! reads (#24): no lone UTF-16 surrogate escape and no nesting deeper than [`MAX_DEPTH`], in
//! any field. serde_json skips the fields a type does not read without decoding their escapes
//! and without its recursion limit, so a poison item would otherwise be processed as an action.
//! (Invalid UTF-8 is refused by the caller, over the item's whole bytes.)
//!
//! Owns those two rules: the depth limit and the verdict on one `\u` escape ([`escape`]).
//! Does not own the walk: `page`'s scanner applies them while it delimits the item, so an
//! item is walked once before serde_json parses it (it was walked a second time here before,
//! #32).

/// Deepest nesting of arrays and objects an item may have, the item itself counting as 1:
/// serde_json's own recursion limit, so a field that is read and one that is not are alike.
pub(super) const MAX_DEPTH: usize = 128;

/// What one escape says about the item.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Escape {
    /// Not a surrogate, or not a `\u` escape at all.
    Fine,
    /// A high surrogate followed by its low half (the escape 6 bytes on): that escape is
    /// part of this pair and must not be judged alone.
    Pair,
    /// A surrogate without its other half.
    Lone,
}

fn hex4(b: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// The verdict on the escape whose backslash is at `b[at]`.
pub(super) fn escape(b: &[u8], at: usize) -> Escape {
    if b.get(at + 1) != Some(&b'u') {
        return Escape::Fine;
    }
    let unit = b.get(at + 2..).and_then(hex4).unwrap_or(0);
    if (0xDC00..0xE000).contains(&unit) {
        return Escape::Lone;
    }
    if (0xD800..0xDC00).contains(&unit) {
        let next = at + 6;
        let low = (b.get(next) == Some(&b'\\') && b.get(next + 1) == Some(&b'u'))
            .then(|| b.get(next + 2..).and_then(hex4))
            .flatten();
        return match low {
            Some(l) if (0xDC00..0xE000).contains(&l) => Escape::Pair,
            _ => Escape::Lone,
        };
    }
    Escape::Fine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_judged_with_their_other_half() {
        assert_eq!(escape(br#"\n"#, 0), Escape::Fine);
        assert_eq!(escape(br#"\u00e9"#, 0), Escape::Fine);
        assert_eq!(escape(br#"\ud83d\ude00"#, 0), Escape::Pair);
        assert_eq!(escape(br#"\ud83d"#, 0), Escape::Lone);
        assert_eq!(escape(br#"\ud83dx\ude00"#, 0), Escape::Lone);
        assert_eq!(escape(br#"\ude00"#, 0), Escape::Lone);
        assert_eq!(escape(br#"\uzz"#, 0), Escape::Fine);
    }
}

//! One JSON object printed by a script, found amid transcript noise, and the numbers its
//! rule's dotted paths point at. A pure core. See: #21
//!
//! Owns finding the object (the first line that opens with `{` from which a whole JSON
//! object parses, the object may span many lines) and reading a path (`disk.free_gb`,
//! `volumes.0.free`: object keys, or array indexes). Does not own the rule's names (`config`)
//! nor where the values go (`store`).

use serde_json::Value;

/// Lines opening with `{` tried before giving up: a transcript full of braces must not cost
/// a parse attempt per line.
const MAX_ATTEMPTS: usize = 64;

/// The first JSON object of `output`, if any.
pub fn find_object(output: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let mut attempts = 0;
    let mut start = 0;
    while start < output.len() {
        let end = output[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(output.len(), |i| start + i + 1);
        let line = &output[start..end];
        if let Some(brace) = line.iter().position(|b| !b.is_ascii_whitespace())
            && line[brace] == b'{'
        {
            attempts += 1;
            let mut stream =
                serde_json::Deserializer::from_slice(&output[start + brace..]).into_iter::<Value>();
            if let Some(Ok(Value::Object(map))) = stream.next() {
                return Some(map);
            }
            if attempts >= MAX_ATTEMPTS {
                return None;
            }
        }
        start = end;
    }
    None
}

/// The number at `path` in `object`: a number as it is, a boolean as 1 or 0; `None` when the
/// path is missing or leads to anything else.
pub fn number_at(object: &serde_json::Map<String, Value>, path: &str) -> Option<f64> {
    let mut segments = path.split('.');
    let mut at = object.get(segments.next()?)?;
    for seg in segments {
        at = match at {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match at {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const OUTPUT: &str = "**********************\r\n\
Windows PowerShell transcript start\r\n\
{ not json at all\r\n\
{\r\n  \"disk\": {\"free_gb\": 3.5, \"encrypted\": true},\r\n  \"patches_missing\": 2,\r\n\
  \"volumes\": [{\"free\": 7}], \"name\": \"ws-042\"\r\n}\r\n\
{\"later\": 1}\r\n\
Windows PowerShell transcript end\r\n";

    #[test]
    fn the_first_object_amid_noise() {
        let o = find_object(OUTPUT.as_bytes()).unwrap();
        assert_eq!(number_at(&o, "disk.free_gb"), Some(3.5));
        assert_eq!(number_at(&o, "disk.encrypted"), Some(1.0));
        assert_eq!(number_at(&o, "patches_missing"), Some(2.0));
        assert_eq!(number_at(&o, "volumes.0.free"), Some(7.0));
        assert_eq!(number_at(&o, "later"), None, "the first object only");
        for missing in [
            "name",
            "disk",
            "disk.nope",
            "volumes.x",
            "volumes.3.free",
            "",
            "a..b",
        ] {
            assert_eq!(number_at(&o, missing), None, "{missing:?}");
        }
    }

    #[test]
    fn no_object() {
        assert!(find_object(b"just text\n[1, 2]\n{broken").is_none());
        assert!(find_object(b"").is_none());
        let braces = "{\n".repeat(10_000);
        assert!(find_object(braces.as_bytes()).is_none());
    }
}

//! One JSON object printed by a script, found amid transcript noise, and the numbers its
//! rule's dotted paths point at. A pure core, bounded in the bytes it parses whatever the
//! output holds. See: #21, #32
//!
//! Owns finding the object (the first line that opens with `{` from which a whole JSON
//! object parses, the object may span many lines) and reading a path (`disk.free_gb`,
//! `volumes.0.free`: object keys, or array indexes). Does not own the rule's names (`config`)
//! nor where the values go (`store`).

use serde_json::Value;

/// Lines opening with `{` tried before giving up: a transcript full of braces must not cost
/// a parse attempt per line.
const MAX_ATTEMPTS: usize = 64;

/// The most one attempt reads: an object a script prints to be read is small, and an
/// unclosed one (`{"a":[` and megabytes after it) must not be read to the end of the output.
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// The most all attempts of one output read together: with [`MAX_ATTEMPTS`] lines of
/// `{"a":[` a hostile transcript cost 64 full parses (23 CPU-seconds for 14 MB, on the
/// collector's worker); now at most this many bytes are parsed, whatever it prints. See: #32
pub const MAX_PARSED_BYTES: usize = 4 << 20;

/// The first JSON object of `output`, if any.
pub fn find_object(output: &[u8]) -> Option<serde_json::Map<String, Value>> {
    scan(output, MAX_OBJECT_BYTES, MAX_PARSED_BYTES).0
}

/// [`find_object`] with its bounds, and how many bytes its attempts were given to parse.
fn scan(
    output: &[u8],
    max_object: usize,
    budget: usize,
) -> (Option<serde_json::Map<String, Value>>, usize) {
    let mut attempts = 0;
    let mut parsed = 0;
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
            let from = start + brace;
            let room = max_object.min(budget - parsed);
            let slice = &output[from..output.len().min(from + room)];
            parsed += slice.len();
            let mut stream = serde_json::Deserializer::from_slice(slice).into_iter::<Value>();
            if let Some(Ok(Value::Object(map))) = stream.next() {
                return (Some(map), parsed);
            }
            if attempts >= MAX_ATTEMPTS || parsed >= budget {
                return (None, parsed);
            }
        }
        start = end;
    }
    (None, parsed)
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

    /// A hostile transcript: lines that open an object never closed, then megabytes. Each
    /// attempt reads at most its bound and all of them together at most theirs, and an
    /// object after the hostile lines within the attempts is still found. See: #32 item 3
    #[test]
    fn an_unclosed_object_is_not_read_to_the_end_whatever_the_output_holds() {
        let mut hostile = Vec::new();
        for _ in 0..64 {
            hostile.extend_from_slice(b"{\"a\":[\n");
        }
        hostile.extend(std::iter::repeat_n(b'1', 3 << 20).flat_map(|d| [d, b',']));
        let (found, parsed) = scan(&hostile, MAX_OBJECT_BYTES, MAX_PARSED_BYTES);
        assert!(found.is_none());
        assert!(parsed <= MAX_PARSED_BYTES, "{parsed}");
        assert!(find_object(&hostile).is_none());

        let mut then_good = b"{\"a\":[\n{\"a\":[\n".to_vec();
        then_good.extend_from_slice(b"{\"free\": 7}\n");
        let (found, _) = scan(&then_good, 1 << 10, 1 << 12);
        assert_eq!(found.and_then(|o| number_at(&o, "free")), Some(7.0));

        // An object larger than one attempt's bound is not read.
        let big = format!("{{\"pad\": \"{}\", \"free\": 1}}\n", "x".repeat(2048));
        assert!(scan(big.as_bytes(), 1 << 10, 1 << 12).0.is_none());
        assert!(scan(big.as_bytes(), 1 << 12, 1 << 14).0.is_some());
    }
}

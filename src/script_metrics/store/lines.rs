//! The form a set's samples are held in (#21): each sample as the bytes of its whole line in
//! the Prometheus text format (name, the set's own labels, the sample's, the value), so that a
//! scrape copies one block of bytes per family and set instead of formatting 200,000
//! samples; and reading those bytes back (for the protobuf format and for
//! [`super::Store::get`]).
//!
//! Owns the bytes of a sample line: label escaping and number formatting as
//! `prometheus-client` 0.26 writes them (a test holds the direct writer and the encoder equal),
//! and their exact inverse. Does not own which sets are held (`store`) nor the families'
//! headers and order (`render`).

use std::borrow::Cow;

use super::Kind;

/// `{tenant="…",machine="…",script="…"`: how every sample line of one set begins after the
/// family name (the closing brace is in each line, after the sample's own labels).
pub fn prefix(tenant: &str, machine: &str, script: &str) -> String {
    let mut out = String::with_capacity(32 + tenant.len() + machine.len() + script.len());
    push_labels(
        &mut out,
        &[("tenant", tenant), ("machine", machine), ("script", script)],
    );
    out
}

/// `{k="v",…` (no closing brace: more labels may follow), the values escaped.
pub fn push_labels(out: &mut String, labels: &[(&str, &str)]) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_label(out, k, v);
    }
}

/// The name a family's samples have: a counter's end in `_total` (in both text formats).
pub fn sample_name(name: &str, kind: Kind) -> String {
    let mut out = String::with_capacity(name.len() + 6);
    push_sample_name(&mut out, name, kind);
    out
}

/// [`sample_name`], appended to `out`.
pub fn push_sample_name(out: &mut String, name: &str, kind: Kind) {
    out.push_str(name);
    if kind == Kind::Counter {
        out.push_str("_total");
    }
}

/// The lines of one family of a set: per sample `<sample name><prefix>,k="v",…} <value>\n`
/// (`<prefix>}` without labels of its own), the value as Prometheus text writes it
/// (non-finite: `+Inf`, `-Inf`, `NaN`); and whether a value is infinite (OpenMetrics spells
/// those differently, see [`push_line`]).
pub fn lines(
    sample_name: &str,
    prefix: &str,
    samples: &[(Vec<(String, String)>, f64)],
) -> (Box<str>, bool) {
    let mut out = String::with_capacity(samples.len() * (sample_name.len() + prefix.len() + 24));
    let mut infinite = false;
    for (labels, v) in samples {
        out.push_str(sample_name);
        out.push_str(prefix);
        for (k, v) in labels {
            out.push(',');
            push_label(&mut out, k, v);
        }
        out.push('}');
        infinite |= v.is_infinite();
        push_value(&mut out, *v);
    }
    (out.into_boxed_str(), infinite)
}

/// ` <value>\n`, as Prometheus text writes a float: finite by `dtoa` (as `prometheus-client`
/// does, in both formats), else `+Inf`, `-Inf`, `NaN`.
pub fn push_value(out: &mut String, v: f64) {
    out.push(' ');
    if v.is_finite() {
        out.push_str(dtoa::Buffer::new().format_finite(v));
    } else if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_sign_positive() {
        out.push_str("+Inf");
    } else {
        out.push_str("-Inf");
    }
    out.push('\n');
}

/// Append one held line (of [`lines`]) to `out` in the text format asked for: as it is, or in
/// OpenMetrics with an infinite value spelled `inf` / `-inf`.
pub fn push_line(out: &mut String, line: &str, openmetrics: bool) {
    if openmetrics {
        if let Some(head) = line.strip_suffix(" +Inf\n") {
            out.push_str(head);
            out.push_str(" inf\n");
            return;
        }
        if let Some(head) = line.strip_suffix(" -Inf\n") {
            out.push_str(head);
            out.push_str(" -inf\n");
            return;
        }
    }
    out.push_str(line);
}

/// `key="value"`, the value escaped as label values are (`\`, `"`, newline).
pub fn push_label(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str("=\"");
    if value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
    } else {
        out.push_str(value);
    }
    out.push('"');
}

/// Samples: each one's own labels and value (as in `store::Family`).
pub type Samples = Vec<(Vec<(String, String)>, f64)>;

/// Held lines that do not read back: a bug of [`lines`], never of a script's output (which
/// only ever reaches the store through [`lines`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable;

/// The samples of held `lines` (of [`lines`]): each one's own labels (those after the set's
/// three) and value, exactly as they were given to [`lines`] (NaN's payload aside).
pub fn read(lines: &str) -> Result<Samples, Unreadable> {
    let mut out = Vec::new();
    each_sample(lines, |labels, v| {
        let own = labels.get(3..).ok_or(Unreadable)?;
        out.push((
            own.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            v,
        ));
        Ok::<(), Unreadable>(())
    })?;
    Ok(out)
}

/// `f` with each held sample's labels (the set's three, then its own) and value, in order;
/// the labels borrowed from `lines` where they have no escape. (The protobuf format reads
/// 200,000 of them a scrape.)
pub fn each_sample<E: From<Unreadable>>(
    lines: &str,
    mut f: impl FnMut(&[(&str, &str)], f64) -> Result<(), E>,
) -> Result<(), E> {
    let mut parsed: Vec<(&str, Cow<'_, str>)> = Vec::new();
    for line in lines.split_terminator('\n') {
        parsed.clear();
        let value = read_line(line, &mut parsed)?;
        if parsed.len() < 3 {
            return Err(Unreadable.into());
        }
        let labels: Vec<(&str, &str)> = parsed.iter().map(|(k, v)| (*k, v.as_ref())).collect();
        f(&labels, value)?;
    }
    Ok(())
}

impl From<Unreadable> for std::fmt::Error {
    fn from(_: Unreadable) -> Self {
        std::fmt::Error
    }
}

/// One line's labels into `labels`; its value.
fn read_line<'a>(
    line: &'a str,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<f64, Unreadable> {
    let (_, mut rest) = line.split_once('{').ok_or(Unreadable)?;
    loop {
        if let Some(value) = rest.strip_prefix("} ") {
            return read_value(value);
        }
        if !labels.is_empty() {
            rest = rest.strip_prefix(',').ok_or(Unreadable)?;
        }
        let (key, after) = rest.split_once("=\"").ok_or(Unreadable)?;
        let end = after
            .bytes()
            .position(|b| matches!(b, b'"' | b'\\'))
            .ok_or(Unreadable)?;
        let value = if after.as_bytes()[end] == b'"' {
            rest = &after[end + 1..];
            Cow::Borrowed(&after[..end])
        } else {
            let (value, tail) = unescape(after)?;
            rest = tail;
            Cow::Owned(value)
        };
        labels.push((key, value));
    }
}

/// A label value with escapes, after its opening quote; the rest after its closing quote.
fn unescape(s: &str) -> Result<(String, &str), Unreadable> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    loop {
        match chars.next().ok_or(Unreadable)? {
            (i, '"') => return Ok((value, &s[i + 1..])),
            (_, '\\') => match chars.next().ok_or(Unreadable)?.1 {
                'n' => value.push('\n'),
                c => value.push(c),
            },
            (_, c) => value.push(c),
        }
    }
}

fn read_value(v: &str) -> Result<f64, Unreadable> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|_| Unreadable),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn owned(samples: &[(&[(&str, &str)], f64)]) -> Samples {
        samples
            .iter()
            .map(|(l, v)| {
                (
                    l.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    *v,
                )
            })
            .collect()
    }

    /// The held bytes of hostile labels and odd numbers, and back.
    #[test]
    fn lines_are_the_text_format_and_read_back() {
        let samples = owned(&[
            (&[], 1.0),
            (&[("path", "C:\\a\"b\"\nc} 1"), ("e", "")], -0.5),
            (&[("k", "v")], f64::INFINITY),
            (&[("k", "w")], f64::NEG_INFINITY),
            (&[("k", "x")], 5e-324),
        ]);
        let prefix = prefix("t\"", "m\\", "s\n");
        assert_eq!(
            prefix,
            "{tenant=\"t\\\"\",machine=\"m\\\\\",script=\"s\\n\""
        );
        let name = sample_name("x", Kind::Counter);
        assert_eq!(name, "x_total");
        let (held, infinite) = lines(&name, &prefix, &samples);
        assert!(infinite);
        let after: Vec<&str> = held
            .lines()
            .map(|l| l.strip_prefix(&format!("x_total{prefix}")).unwrap())
            .collect();
        assert_eq!(
            after,
            [
                "} 1.0",
                ",path=\"C:\\\\a\\\"b\\\"\\nc} 1\",e=\"\"} -0.5",
                ",k=\"v\"} +Inf",
                ",k=\"w\"} -Inf",
                ",k=\"x\"} 5e-324",
            ]
        );
        assert_eq!(read(&held).unwrap(), samples);
        let mut om = String::new();
        for line in held.split_inclusive('\n') {
            push_line(&mut om, line, true);
        }
        assert!(om.contains(",k=\"v\"} inf\nx_total"), "{om}");
        assert!(om.contains(",k=\"w\"} -inf\nx_total"), "{om}");
    }

    #[test]
    fn what_lines_never_write_does_not_read() {
        for bad in [
            "x 1\n",
            "x{a=\"1\",b=\"2\",c=\"3\",k=\"v} 1\n",
            "x{a=\"1\",b=\"2\",c=\"3\",k} 1\n",
            "x{a=\"1\",b=\"2\",c=\"3\"} x\n",
            "x{a=\"1\",b=\"2\"} 1\n",
            "x{a=\"1\\",
        ] {
            assert_eq!(read(bad), Err(Unreadable), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Any labels and any number read back as they were given.
        #[test]
        fn any_sample_reads_back(
            labels in proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,16}|[\\\\\"\\n}{,= ]{0,8}"), 0..4),
            v in proptest::num::f64::ANY,
        ) {
            let samples = vec![(labels, v)];
            let back = read(&lines("n", &prefix("t", "m}", "s"), &samples).0).unwrap();
            proptest::prop_assert_eq!(&back[0].0, &samples[0].0);
            proptest::prop_assert!(back[0].1 == v || (v.is_nan() && back[0].1.is_nan()));
        }
    }
}

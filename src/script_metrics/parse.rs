//! Prometheus text-format sample lines read out of a transcript's `script_output`, amid the
//! noise a PowerShell transcript carries (its header and footer, whatever else the script
//! printed). A pure core: bytes in, samples and counts out. See: #21
//!
//! Owns what a line is: noise (ignored), a comment, `# HELP`, `# TYPE`, a sample, or a line
//! that starts like a sample and does not parse (counted invalid, left out; the rest of the
//! transcript still counts), and the bounds of one transcript (series, name and label sizes,
//! label count). Does not own where the samples go (`store`), the prefix and the exporter's
//! own labels (`store`), nor what a valid metric or label name is and the default caps
//! (`crate::config::metric_name`, below both this and the `script_metrics:` checks).
//!
//! No crate fits: `prometheus-parse` (a dev-dependency here) and `openmetrics-parser` read a
//! whole exposition and fail or stop on the first foreign line, and neither counts the lines it
//! could not read; a transcript is mostly foreign lines.
//!
//! A line *starts like a sample* when it opens (after blanks) with a metric name immediately
//! followed by `{`, or by blanks and then something that starts like a number (a digit, `+`,
//! `-`, `.`, `NaN`, `Inf`). So `Windows PowerShell transcript start` and `Username: CONTOSO\x`
//! are noise, while `disk_free_gb 3,5`, `x{a="1" 2` and `x 1 2 3` are invalid.

use std::collections::BTreeMap;

use crate::config::metric_name::{
    DEFAULT_MAX_LABEL_LENGTH, DEFAULT_MAX_LABELS, DEFAULT_MAX_NAME_LENGTH, DEFAULT_MAX_SERIES,
};
use crate::config::metric_name::{is_label_name, is_metric_name};

/// Caps on one transcript's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Samples kept from one transcript (`max_series`); the rest are dropped.
    pub max_series: usize,
    /// Longest metric name (before the prefix) and longest label name.
    pub max_name_len: usize,
    /// Longest label value, in bytes.
    pub max_label_value_len: usize,
    /// Most labels on one sample (its own, before `tenant`, `machine`, `script`).
    pub max_labels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: DEFAULT_MAX_SERIES,
            max_name_len: DEFAULT_MAX_NAME_LENGTH,
            max_label_value_len: DEFAULT_MAX_LABEL_LENGTH,
            max_labels: DEFAULT_MAX_LABELS,
        }
    }
}

/// A family's `# TYPE`, as far as it is honoured.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Kind {
    Gauge,
    Counter,
    /// No `# TYPE`, or `# TYPE … untyped` / `unknown`.
    Untyped,
}

/// Why a sample that parsed was not kept (the `reason` label of
/// `mde_script_metrics_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Drop {
    /// Beyond `max_series` samples in one transcript.
    MaxSeries,
    /// A metric or label name longer than `max_name_len`.
    NameTooLong,
    /// A label value longer than `max_label_value_len`.
    LabelTooLong,
    /// More than `max_labels` labels.
    TooManyLabels,
    /// A sample of a family typed `histogram` or `summary` (not served: their series only
    /// make sense together, and a script that prints one prints gauges as easily).
    UnsupportedType,
    /// Beyond the total of series a rule may hold (`store`).
    MaxTotal,
    /// Beyond the bytes one transcript may give (`max_bytes`, `store`).
    MaxBytes,
    /// Beyond the bytes a rule may hold (`max_total_bytes`, `store`).
    MaxTotalBytes,
    /// A held set cut to its fair share of the rule's totals, to make room for another
    /// machine's set (`store`, #32 item 5).
    FairShare,
    /// The prefixed name lies under one of the exporter's own prefixes (`store`).
    ReservedName,
    /// A label name starting with `__` (reserved for Prometheus itself, `__name__` among
    /// them): Prometheus refuses such a sample and with it the whole scrape.
    ReservedLabel,
    /// The family's name, or the name its samples are exposed under (a counter's `_total`),
    /// is another family's of the same output, or the family was printed with two types:
    /// the exposition would have one name in two families.
    NameClash,
}

impl Drop {
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::MaxSeries => "max_series",
            Drop::NameTooLong => "name_too_long",
            Drop::LabelTooLong => "label_too_long",
            Drop::TooManyLabels => "too_many_labels",
            Drop::UnsupportedType => "unsupported_type",
            Drop::MaxTotal => "max_total",
            Drop::MaxBytes => "max_bytes",
            Drop::MaxTotalBytes => "max_total_bytes",
            Drop::FairShare => "fair_share",
            Drop::ReservedName => "reserved_name",
            Drop::ReservedLabel => "reserved_label",
            Drop::NameClash => "name_clash",
        }
    }
}

/// One sample as the script printed it (no prefix, none of the exporter's labels).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family name: for a counter, without its `_total`.
    pub name: String,
    /// Its own labels, in the order printed; none with an empty value (Prometheus reads an
    /// empty value as no label) and none whose name starts with `__`.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// What one transcript's output gave.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Parsed {
    /// The samples kept, in the order printed; a sample printed twice (same name and labels,
    /// in any order) is kept once, with the later value.
    pub samples: Vec<Sample>,
    /// `# TYPE` and `# HELP` of the families that have samples.
    pub kinds: BTreeMap<String, Kind>,
    pub help: BTreeMap<String, String>,
    /// Lines that started like a sample (or a `# TYPE`) and did not parse.
    pub invalid: u64,
    /// Samples that parsed and were not kept, by reason.
    pub dropped: BTreeMap<Drop, u64>,
}

/// The samples of `output`, within `limits`.
pub fn parse(output: &[u8], limits: &Limits) -> Parsed {
    let mut out = Parsed::default();
    let mut declared: BTreeMap<String, Declared> = BTreeMap::new();
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    // Where each (name, labels sorted by name) sits in `out.samples`: a repeat replaces the
    // value, whatever the order its labels were printed in.
    let mut index: std::collections::HashMap<(String, Vec<(String, String)>), usize> =
        std::collections::HashMap::new();
    // The names each family is exposed under (its own, and a counter's `_total`): two
    // families may not share one.
    let mut exposed: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for raw in output.split(|&b| b == b'\n') {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(line) = std::str::from_utf8(raw) else {
            // Not text: invalid if it starts like a sample, noise otherwise.
            if starts_like_sample(&String::from_utf8_lossy(raw)) {
                out.invalid += 1;
            }
            continue;
        };
        let line = line.trim_matches(|c| c == ' ' || c == '\t');
        if let Some(comment) = line.strip_prefix('#') {
            match comment_line(comment) {
                Comment::Type(name, d) => {
                    declared.insert(name, d);
                }
                Comment::Help(name, text) => {
                    help.insert(name, text);
                }
                Comment::Invalid => out.invalid += 1,
                Comment::Other => {}
            }
            continue;
        }
        if !starts_like_sample(line) {
            continue;
        }
        let Some((name, mut labels, value)) = sample_line(line) else {
            out.invalid += 1;
            continue;
        };
        // An empty value is no label at all to Prometheus: `x{a=""}` and `x` are one series.
        labels.retain(|(_, v)| !v.is_empty());
        if labels.iter().any(|(k, _)| k.starts_with("__")) {
            *out.dropped.entry(Drop::ReservedLabel).or_default() += 1;
            continue;
        }
        let (family, kind) = family_of(&name, &declared);
        let kind = match kind {
            Declared::Unsupported => {
                *out.dropped.entry(Drop::UnsupportedType).or_default() += 1;
                continue;
            }
            Declared::Kind(k) => k,
        };
        if let Some(why) = over_limits(&family, &labels, limits) {
            *out.dropped.entry(why).or_default() += 1;
            continue;
        }
        if clashes(&family, kind, &out.kinds, &mut exposed) {
            *out.dropped.entry(Drop::NameClash).or_default() += 1;
            continue;
        }
        let mut sorted = labels.clone();
        sorted.sort();
        let key = (family.clone(), sorted);
        if let Some(&i) = index.get(&key) {
            out.samples[i].value = value;
            continue;
        }
        if out.samples.len() >= limits.max_series {
            *out.dropped.entry(Drop::MaxSeries).or_default() += 1;
            continue;
        }
        index.insert(key, out.samples.len());
        out.kinds.insert(family.clone(), kind);
        out.samples.push(Sample {
            name: family,
            labels,
            value,
        });
    }
    for name in out.kinds.keys() {
        if let Some(h) = help.remove(name) {
            out.help.insert(name.clone(), h);
        }
    }
    out
}

/// Whether a sample of `family` (of `kind`) would give a name two families share: the family
/// was seen with another kind, or its name or its exposed sample name (a counter's `_total`)
/// is another family's. A family seen first keeps its names (recorded in `exposed`).
fn clashes(
    family: &str,
    kind: Kind,
    kinds: &BTreeMap<String, Kind>,
    exposed: &mut std::collections::HashMap<String, String>,
) -> bool {
    if let Some(seen) = kinds.get(family) {
        return *seen != kind;
    }
    let sample_name = match kind {
        Kind::Counter => format!("{family}_total"),
        _ => family.to_string(),
    };
    let names = [family.to_string(), sample_name];
    if names
        .iter()
        .any(|n| exposed.get(n).is_some_and(|owner| owner != family))
    {
        return true;
    }
    for n in names {
        exposed.insert(n, family.to_string());
    }
    false
}

#[derive(Debug, Clone, Copy)]
enum Declared {
    Kind(Kind),
    Unsupported,
}

enum Comment {
    Type(String, Declared),
    Help(String, String),
    /// `# TYPE` with a bad name or an unknown type.
    Invalid,
    Other,
}

fn comment_line(comment: &str) -> Comment {
    let rest = comment.trim_start_matches([' ', '\t']);
    let (word, rest) = split_blank(rest);
    match word {
        "TYPE" => {
            let (name, rest) = split_blank(rest);
            let kind = rest.trim_matches([' ', '\t']);
            if !is_metric_name(name) {
                return Comment::Invalid;
            }
            let d = match kind {
                "gauge" => Declared::Kind(Kind::Gauge),
                "counter" => Declared::Kind(Kind::Counter),
                "untyped" | "unknown" => Declared::Kind(Kind::Untyped),
                "histogram" | "summary" | "gaugehistogram" => Declared::Unsupported,
                _ => return Comment::Invalid,
            };
            Comment::Type(name.to_string(), d)
        }
        "HELP" => {
            let (name, text) = split_blank(rest);
            if !is_metric_name(name) {
                return Comment::Other;
            }
            Comment::Help(name.to_string(), unescape_help(text))
        }
        _ => Comment::Other,
    }
}

fn split_blank(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The family a sample belongs to and its declared kind: a sample `x_total` of a family
/// declared `# TYPE x counter` is `x`; histogram and summary samples (`_bucket`, `_sum`,
/// `_count`, or the bare name) belong to their declared family.
fn family_of(name: &str, declared: &BTreeMap<String, Declared>) -> (String, Declared) {
    if let Some(d) = declared.get(name) {
        let family = match d {
            Declared::Kind(Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        return (family.to_string(), *d);
    }
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(d) = declared.get(base)
        {
            match (d, suffix) {
                (Declared::Kind(Kind::Counter), "_total") => {
                    return (base.to_string(), *d);
                }
                (Declared::Unsupported, _) => return (base.to_string(), *d),
                _ => {}
            }
        }
    }
    (name.to_string(), Declared::Kind(Kind::Untyped))
}

fn over_limits(name: &str, labels: &[(String, String)], limits: &Limits) -> Option<Drop> {
    if name.len() > limits.max_name_len {
        return Some(Drop::NameTooLong);
    }
    if labels.len() > limits.max_labels {
        return Some(Drop::TooManyLabels);
    }
    for (k, v) in labels {
        if k.len() > limits.max_name_len {
            return Some(Drop::NameTooLong);
        }
        if v.len() > limits.max_label_value_len {
            return Some(Drop::LabelTooLong);
        }
    }
    None
}

fn name_len(s: &str) -> usize {
    s.bytes()
        .position(|c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b':'))
        .unwrap_or(s.len())
}

fn starts_like_sample(line: &str) -> bool {
    let line = line.trim_start_matches([' ', '\t']);
    let n = name_len(line);
    if n == 0 || !is_metric_name(&line[..n]) {
        return false;
    }
    let rest = &line[n..];
    if rest.starts_with('{') {
        return true;
    }
    let after = rest.trim_start_matches([' ', '\t']);
    if after.len() == rest.len() {
        return false; // no blank after the name
    }
    let first = after.bytes().next();
    matches!(first, Some(c) if c.is_ascii_digit() || c == b'+' || c == b'-' || c == b'.')
        || after.starts_with("NaN")
        || after.starts_with("Inf")
}

/// A sample's own labels, in the order printed.
type Labels = Vec<(String, String)>;

/// `name{labels} value [timestamp]`; `None` if it does not parse.
fn sample_line(line: &str) -> Option<(String, Labels, f64)> {
    let n = name_len(line);
    let name = &line[..n];
    let mut rest = &line[n..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = label_set(after, &mut labels)?;
    }
    let rest = rest.strip_prefix([' ', '\t'])?;
    let (value, rest) = split_blank(rest.trim_start_matches([' ', '\t']));
    let value = parse_value(value)?;
    let rest = rest.trim_matches([' ', '\t']);
    if !rest.is_empty() {
        // A timestamp (milliseconds); the transcript's time is used instead.
        let (ts, more) = split_blank(rest);
        if ts.parse::<i64>().is_err() || !more.is_empty() {
            return None;
        }
    }
    Some((name.to_string(), labels, value))
}

/// The labels after `{`, up to and including `}`; the rest of the line.
fn label_set<'a>(mut s: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let n = s
            .bytes()
            .position(|c| !(c.is_ascii_alphanumeric() || c == b'_'))
            .unwrap_or(s.len());
        let key = &s[..n];
        if !is_label_name(key) {
            return None;
        }
        s = s[n..].trim_start_matches([' ', '\t']);
        s = s.strip_prefix('=')?.trim_start_matches([' ', '\t']);
        s = s.strip_prefix('"')?;
        let (value, rest) = quoted(s)?;
        if labels.iter().any(|(k, _)| k == key) {
            return None; // a label twice
        }
        labels.push((key.to_string(), value));
        s = rest.trim_start_matches([' ', '\t']);
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// A label value after its opening quote: `\\`, `\"` and `\n` unescaped; NUL refused.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                _ => return None,
            },
            '\0' => return None,
            c => out.push(c),
        }
    }
    None // unclosed
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        // Rust also reads "inf", "infinity" and "nan" in any case; Prometheus does not.
        _ if s
            .bytes()
            .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E') =>
        {
            None
        }
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TRANSCRIPT: &str = "**********************\r\n\
Windows PowerShell transcript start\r\n\
Start time: 20250318210401\r\n\
Username: CONTOSO\\svc-mde\r\n\
Machine: WS-ENG-042 (Microsoft Windows NT 10.0.19045.0)\r\n\
**********************\r\n\
# HELP compliance_bitlocker_on 1 if BitLocker protects the OS volume.\r\n\
# TYPE compliance_bitlocker_on gauge\r\n\
compliance_bitlocker_on{volume=\"C:\"} 0\r\n\
# TYPE compliance_checks counter\r\n\
compliance_checks_total 12\r\n\
compliance_signature_age_days 30.5 1710000000000\r\n\
disk_free_gb{drive=\"C:\" 3\r\n\
PS>TerminatingError(): \"oops\"\r\n\
**********************\r\n\
Windows PowerShell transcript end\r\n";

    fn one(line: &str) -> Parsed {
        parse(line.as_bytes(), &Limits::default())
    }

    #[test]
    fn samples_amid_transcript_noise() {
        let p = one(TRANSCRIPT);
        let names: Vec<_> = p.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "compliance_bitlocker_on",
                "compliance_checks",
                "compliance_signature_age_days"
            ]
        );
        assert_eq!(
            p.samples[0].labels,
            vec![("volume".to_string(), "C:".to_string())]
        );
        assert_eq!(p.samples[1].value, 12.0);
        assert_eq!(p.samples[2].value, 30.5);
        assert_eq!(p.kinds["compliance_checks"], Kind::Counter);
        assert_eq!(p.kinds["compliance_bitlocker_on"], Kind::Gauge);
        assert_eq!(p.kinds["compliance_signature_age_days"], Kind::Untyped);
        assert_eq!(
            p.help["compliance_bitlocker_on"],
            "1 if BitLocker protects the OS volume."
        );
        // Only the unclosed brace: the header and footer are noise.
        assert_eq!(p.invalid, 1);
        assert!(p.dropped.is_empty());
    }

    #[test]
    fn lines_that_start_like_a_sample_and_do_not_parse_are_invalid() {
        for bad in [
            "x{a=\"1\" 2",
            "x{a=1} 2",
            "x{a=\"1\",a=\"2\"} 2",
            "x 1,5",
            "x 1 2 3",
            "x 1 soon",
            "x{a=\"\\q\"} 1",
            "x{a=\"nul\0\"} 1",
            "x 1x",
            "x{1a=\"b\"} 1",
            "# TYPE x flux",
            "# TYPE 1x gauge",
        ] {
            assert_eq!(one(bad).invalid, 1, "{bad:?}");
            assert!(one(bad).samples.is_empty(), "{bad:?}");
        }
        for noise in [
            "Windows PowerShell transcript start",
            "Username: CONTOSO\\x",
            "",
            "   ",
            "**********",
            "# just a comment",
            "-1 is not a name",
            "x",
            "x=1",
        ] {
            let p = one(noise);
            assert_eq!((p.invalid, p.samples.len()), (0, 0), "{noise:?}");
        }
    }

    #[test]
    fn values_timestamps_and_escapes() {
        let p = one(
            "a NaN\nb +Inf\nc -Inf\nd 1e3\ne -0.5 123\nf{v=\"q\\\"b\\\\s\\nn\",} 1\ng{ x = \"1\" , y=\"\" } 2",
        );
        assert_eq!(p.invalid, 0, "{p:?}");
        let v: Vec<f64> = p.samples.iter().map(|s| s.value).collect();
        assert!(v[0].is_nan());
        assert_eq!(
            &v[1..],
            &[f64::INFINITY, f64::NEG_INFINITY, 1000.0, -0.5, 1.0, 2.0]
        );
        assert_eq!(p.samples[5].labels[0].1, "q\"b\\s\nn");
        // `y=""` parses, and is no label: Prometheus reads an empty value as none. See: #32
        assert_eq!(
            p.samples[6].labels,
            vec![("x".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn a_repeat_keeps_the_later_value() {
        let p = one("x{a=\"1\"} 1\nx{a=\"1\"} 2\nx{a=\"2\"} 3");
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.samples[0].value, 2.0);
    }

    #[test]
    fn histograms_and_summaries_are_dropped_and_counted() {
        let p = one(
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n# TYPE s summary\ns{quantile=\"0.5\"} 1\ng 1",
        );
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.dropped[&Drop::UnsupportedType], 4);
    }

    #[test]
    fn bounds_drop_and_count() {
        let limits = Limits {
            max_series: 2,
            max_name_len: 8,
            max_label_value_len: 4,
            max_labels: 1,
        };
        let p = parse(
            b"a 1\nb 2\nc 3\nlong_name_x 1\nd{a=\"12345\"} 1\ne{a=\"1\",b=\"2\"} 1\na 5",
            &limits,
        );
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.samples[0].value, 5.0, "a repeat is no new series");
        assert_eq!(p.dropped[&Drop::MaxSeries], 1);
        assert_eq!(p.dropped[&Drop::NameTooLong], 1);
        assert_eq!(p.dropped[&Drop::LabelTooLong], 1);
        assert_eq!(p.dropped[&Drop::TooManyLabels], 1);
    }

    #[test]
    fn invalid_utf8_is_invalid_only_where_a_sample_starts() {
        let p = parse(
            b"ok 1\nbad{a=\"\xff\"} 1\n\xfe\xfe noise\n",
            &Limits::default(),
        );
        assert_eq!(p.samples.len(), 1);
        assert_eq!(p.invalid, 1);
    }
}

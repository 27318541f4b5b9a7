//! A strict reader of every body the exporter serves (#32 item 2), written here from the
//! formats' specifications and sharing no code with the exporter: the Prometheus text format
//! 0.0.4, OpenMetrics 1.0 text, and the Prometheus protobuf format (decoded with prost into
//! the data model generated from Prometheus' own `metrics.proto`). It names every problem a
//! strict scraper would have, where `promtool check metrics` and `prometheus-parse` are
//! lenient (`prometheus-parse` reads a label twice as one; promtool lints names but takes two
//! families of one name).
//!
//! Owns what is checked: each line parses (names, label names and escapes, the value, a
//! timestamp, an OpenMetrics exemplar); no label twice, no label starting with `__`; one
//! `# HELP` and one `# TYPE` per family, before its samples; families never interleaved; each
//! sample in its family (OpenMetrics: a counter's samples end in `_total`); no series twice
//! (name and sorted labels); no sample name in two families; OpenMetrics ends with `# EOF`.
//! Protobuf: the same per family and metric, the value field of the family's type present.
//! Does not own fetching the bodies (the tests that use it).

use std::collections::{BTreeMap, HashMap, HashSet};

use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    MetricFamily, MetricType,
};
use prost::Message;

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A float as the formats spell it: decimal with an optional exponent, or (in any case, as
/// both OpenMetrics' grammar and Go's ParseFloat take them) `NaN`, `Inf` or `Infinity` with
/// an optional sign on the infinities.
fn is_value(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let unsigned = lower.strip_prefix(['+', '-']).unwrap_or(&lower);
    if lower == "nan" || unsigned == "inf" || unsigned == "infinity" {
        return true;
    }
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let digits = mantissa.replacen('.', "", 1);
    let mantissa_ok = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

type Labels = Vec<(String, String)>;

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest after `}`; `Err` names what
/// is wrong.
fn labels(s: &str, openmetrics: bool) -> Result<(Labels, &str), String> {
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    let mut out = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value without \"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().ok_or("an unclosed label value")?;
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("escape \\{other:?} in a label value")),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((name.to_string(), value));
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
            if openmetrics && rest.starts_with('}') {
                return Err("a trailing comma in the labels".into());
            }
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ,".into());
        }
    }
}

/// The sample names a family of `kind` named `family` may have (OpenMetrics names the family
/// without the suffixes, the text format names a counter's family with its `_total`).
fn sample_names(family: &str, kind: &str, openmetrics: bool) -> Vec<String> {
    let with = |suffixes: &[&str]| suffixes.iter().map(|s| format!("{family}{s}")).collect();
    match (kind, openmetrics) {
        ("counter", true) => with(&["_total", "_created"]),
        ("histogram", _) => with(&["_bucket", "_sum", "_count", "_created"]),
        ("gaugehistogram", true) => with(&["_bucket", "_gsum", "_gcount"]),
        ("summary", _) => with(&["", "_sum", "_count", "_created"]),
        ("info", true) => with(&["_info"]),
        _ => with(&[""]),
    }
}

/// Every problem a strict scraper would have with a text body (the Prometheus text format, or
/// OpenMetrics with `openmetrics`), each named with its line; empty when the body is valid.
pub fn text_problems(body: &str, openmetrics: bool) -> Vec<String> {
    let mut out = Vec::new();
    let kinds: &[&str] = if openmetrics {
        &[
            "counter",
            "gauge",
            "histogram",
            "gaugehistogram",
            "stateset",
            "info",
            "summary",
            "unknown",
        ]
    } else {
        &["counter", "gauge", "histogram", "summary", "untyped"]
    };
    let mut current: Option<String> = None;
    let mut families: HashSet<String> = HashSet::new();
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut sampled: HashSet<String> = HashSet::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut eof = false;
    if !body.is_empty() && !body.ends_with('\n') {
        out.push("the body does not end with a newline".into());
    }
    // A family named by metadata or a sample starts here; one seen before is interleaved.
    let mut enter = |name: &str, current: &mut Option<String>, out: &mut Vec<String>| {
        if current.as_deref() != Some(name) {
            if !families.insert(name.to_string()) {
                out.push(format!("family {name} interleaved with another"));
            }
            *current = Some(name.to_string());
        }
    };
    for (n, line) in body.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if eof {
            out.push(format!("{at} after # EOF"));
            continue;
        }
        if line.is_empty() {
            if openmetrics {
                out.push(format!("{at}: an empty line"));
            }
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if openmetrics && line == "# EOF" {
                eof = true;
                continue;
            }
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            let (name, rest) = (words.next().unwrap_or_default(), words.next());
            if !matches!(keyword, "HELP" | "TYPE" | "UNIT") || !comment.starts_with(' ') {
                if openmetrics {
                    out.push(format!("{at}: a comment OpenMetrics does not have"));
                }
                continue;
            }
            if !is_metric_name(name) {
                out.push(format!("{at}: metric name {name:?}"));
                continue;
            }
            enter(name, &mut current, &mut out);
            if sampled.contains(name) {
                out.push(format!("{at}: metadata after the family's samples"));
            }
            match keyword {
                "HELP" if !helped.insert(name.to_string()) => {
                    out.push(format!("{at}: # HELP twice for {name}"));
                }
                "TYPE" => {
                    let kind = rest.unwrap_or_default();
                    if !kinds.contains(&kind) {
                        out.push(format!("{at}: type {kind:?}"));
                    }
                    if typed.insert(name.to_string(), kind.to_string()).is_some() {
                        out.push(format!("{at}: # TYPE twice for {name}"));
                    }
                }
                _ => {}
            }
            continue;
        }
        // A sample: name, labels, value, and perhaps a timestamp and (OpenMetrics) an exemplar.
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if !is_metric_name(name) {
            out.push(format!("{at}: metric name {name:?}"));
            continue;
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            match labels(&line[name_end..], openmetrics) {
                Ok(parsed) => parsed,
                Err(e) => {
                    out.push(format!("{at}: {e}"));
                    continue;
                }
            }
        } else {
            (Vec::new(), &line[name_end..])
        };
        let (sample, exemplar) = match rest.split_once(" # ") {
            Some((s, e)) if openmetrics => (s, Some(e)),
            _ => (rest, None),
        };
        let fields: Vec<&str> = sample.strip_prefix(' ').unwrap_or("").split(' ').collect();
        let value_ok = match fields.as_slice() {
            [v] => is_value(v),
            [v, ts] => is_value(v) && is_value(ts),
            _ => false,
        };
        if !value_ok {
            out.push(format!("{at}: not one value (and a timestamp)"));
        }
        if let Some(e) = exemplar {
            let ok = labels_ok(e) && e.contains("} ");
            if !ok {
                out.push(format!("{at}: exemplar {e:?}"));
            }
        }
        let mut names = HashSet::new();
        for (k, _) in &labels {
            if !names.insert(k.as_str()) {
                out.push(format!("{at}: label {k} twice"));
            }
            if k.starts_with("__") {
                out.push(format!("{at}: reserved label {k}"));
            }
        }
        // Its family: the current one when the name is one of its sample names, else a
        // family of its own (untyped).
        let family = match &current {
            Some(f)
                if sample_names(f, typed.get(f).map_or("", String::as_str), openmetrics)
                    .iter()
                    .any(|s| s == name) =>
            {
                f.clone()
            }
            Some(f) if f == name => {
                out.push(format!("{at}: a sample named as its {} family", typed[f]));
                f.clone()
            }
            _ => {
                enter(name, &mut current, &mut out);
                name.to_string()
            }
        };
        sampled.insert(family.clone());
        match owner.get(name) {
            Some(f) if *f != family => {
                out.push(format!(
                    "{at}: sample name {name} in families {f} and {family}"
                ));
            }
            _ => {
                owner.insert(name.to_string(), family);
            }
        }
        let mut sorted = labels;
        sorted.sort();
        if !series.insert((name.to_string(), sorted)) {
            out.push(format!("{at}: series twice"));
        }
    }
    if openmetrics && !eof {
        out.push("no # EOF at the end".into());
    }
    out
}

/// Whether an exemplar's `{labels} value [timestamp]` reads.
fn labels_ok(e: &str) -> bool {
    labels(e, true).is_ok_and(|(l, rest)| {
        l.iter().all(|(k, _)| !k.starts_with("__"))
            && rest
                .strip_prefix(' ')
                .is_some_and(|r| r.split(' ').all(is_value))
    })
}

/// The families of a length-delimited protobuf body; `Err` when it does not decode.
pub fn decode_protobuf(mut body: &[u8]) -> Result<Vec<MetricFamily>, String> {
    let mut out = Vec::new();
    while !body.is_empty() {
        out.push(MetricFamily::decode_length_delimited(&mut body).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Every problem a strict scraper would have with a protobuf body, named.
pub fn protobuf_problems(body: &[u8]) -> Vec<String> {
    let families = match decode_protobuf(body) {
        Ok(f) => f,
        Err(e) => return vec![format!("the body does not decode: {e}")],
    };
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for f in &families {
        let name = &f.name;
        if !is_metric_name(name) {
            out.push(format!("metric name {name:?}"));
        }
        if !names.insert(name.clone()) {
            out.push(format!("family {name} twice"));
        }
        let kind = MetricType::try_from(f.r#type).ok();
        let series_names: Vec<String> = match kind {
            Some(MetricType::Histogram | MetricType::GaugeHistogram) => {
                ["", "_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect()
            }
            Some(MetricType::Summary) => ["", "_sum", "_count"]
                .iter()
                .map(|s| format!("{name}{s}"))
                .collect(),
            Some(_) => vec![name.clone()],
            None => {
                out.push(format!("family {name}: type {}", f.r#type));
                vec![name.clone()]
            }
        };
        for s in series_names {
            if let Some(other) = owner.insert(s.clone(), name.clone()) {
                out.push(format!("series name {s} in families {other} and {name}"));
            }
        }
        let mut sets = HashSet::new();
        for m in &f.metric {
            let mut seen = HashSet::new();
            for l in &m.label {
                if !is_label_name(&l.name) {
                    out.push(format!("{name}: label name {:?}", l.name));
                }
                if l.name.starts_with("__") {
                    out.push(format!("{name}: reserved label {}", l.name));
                }
                if !seen.insert(l.name.as_str()) {
                    out.push(format!("{name}: label {} twice", l.name));
                }
            }
            let mut sorted: Vec<(&str, &str)> = m
                .label
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str()))
                .collect();
            sorted.sort();
            if !sets.insert(sorted) {
                out.push(format!("{name}: series twice: {:?}", m.label));
            }
            let has_value = match kind {
                Some(MetricType::Counter) => m.counter.is_some(),
                Some(MetricType::Gauge) => m.gauge.is_some(),
                Some(MetricType::Untyped) => m.untyped.is_some(),
                Some(MetricType::Histogram | MetricType::GaugeHistogram) => m.histogram.is_some(),
                Some(MetricType::Summary) => m.summary.is_some(),
                None => true,
            };
            if !has_value {
                out.push(format!("{name}: a metric without its type's value"));
            }
        }
    }
    out
}

/// A series: its name and sorted labels.
pub type Series = (String, Vec<(String, String)>);

/// The value of each sample of a text body that reads (see [`text_problems`] for the rest).
pub fn text_values(body: &str, openmetrics: bool) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let (mut l, rest) = if line[name_end..].starts_with('{') {
            match labels(&line[name_end..], openmetrics) {
                Ok(parsed) => parsed,
                Err(_) => continue,
            }
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value = rest.split(' ').nth(1).and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            l.sort();
            out.insert((line[..name_end].to_string(), l), v);
        }
    }
    out
}

/// The value of each counter, gauge and untyped metric of protobuf `families`, by the name
/// the text format gives its sample (the family's).
pub fn protobuf_values(families: &[MetricFamily]) -> BTreeMap<Series, f64> {
    let mut out = BTreeMap::new();
    for f in families {
        for m in &f.metric {
            let value = match MetricType::try_from(f.r#type) {
                Ok(MetricType::Counter) => m.counter.as_ref().map(|c| c.value),
                Ok(MetricType::Gauge) => m.gauge.as_ref().map(|g| g.value),
                Ok(MetricType::Untyped) => m.untyped.as_ref().map(|u| u.value),
                _ => continue,
            };
            let mut l: Vec<(String, String)> = m
                .label
                .iter()
                .map(|p| (p.name.clone(), p.value.clone()))
                .collect();
            l.sort();
            // A metric without its value reads as 0, as Prometheus reads it.
            out.insert((f.name.clone(), l), value.unwrap_or(0.0));
        }
    }
    out
}

//! The OpenMetrics text `/metrics` serves, read back into families: the one encoding path of
//! the contract, so that what is pushed is what a scrape shows.
//!
//! Owns reading the text prometheus-client writes (`# HELP`, `# TYPE`, `# UNIT`, samples with
//! escaped label values and exemplars). Does not own what a family becomes in OTLP (`build`)
//! nor the encoding itself (`metrics`). A pure function of the text.

/// A family's OpenMetrics type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl Kind {
    fn parse(word: &str) -> Kind {
        match word {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "gaugehistogram" => Kind::GaugeHistogram,
            "summary" => Kind::Summary,
            "info" => Kind::Info,
            "stateset" => Kind::StateSet,
            _ => Kind::Unknown,
        }
    }
}

/// Label pairs, in the order written.
pub type Labels = Vec<(String, String)>;

/// An exemplar: its labels (the exporter's carry `trace_id`), value and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    /// Unix seconds.
    pub timestamp: Option<f64>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// What follows the family name: `""`, `_total`, `_bucket`, `_sum`, `_count`, `_info`...
    pub suffix: String,
    pub labels: Labels,
    pub value: f64,
    pub exemplar: Option<Exemplar>,
}

/// One family, as its `# TYPE` line names it (a counter's name without `_total`).
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub unit: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// Read `text` (whole families, e.g. one chunk of [`crate::metrics::Metrics::encode_chunks`])
/// into `out`. The error names the line; it would be a bug of the encoder.
pub fn parse(text: &str, out: &mut Vec<Family>) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let fail = |what: &str| format!("OpenMetrics line {}: {what}: {line:?}", n + 1);
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (words.next(), words.next()) else {
                return Err(fail("a comment line without a name"));
            };
            let value = words.next().unwrap_or_default();
            // HELP opens a family (prometheus-client writes it first): two families may share
            // a name (mde_liveresponse_script_not_run, a counter and a gauge).
            let family = match out.last_mut() {
                Some(f) if keyword != "HELP" && f.name == name && f.samples.is_empty() => f,
                _ => {
                    out.push(Family {
                        name: name.to_string(),
                        help: String::new(),
                        unit: String::new(),
                        kind: Kind::Unknown,
                        samples: Vec::new(),
                    });
                    match out.last_mut() {
                        Some(f) => f,
                        None => return Err(fail("no family")),
                    }
                }
            };
            match keyword {
                "HELP" => family.help = unescape_help(value),
                "TYPE" => family.kind = Kind::parse(value),
                "UNIT" => family.unit = value.to_string(),
                _ => {}
            }
            continue;
        }
        let Some(family) = out.last_mut() else {
            return Err(fail("a sample before any # TYPE line"));
        };
        let sample = sample(line, &family.name).map_err(|e| fail(&e))?;
        family.samples.push(sample);
    }
    Ok(())
}

/// A `# HELP` text with its escapes (`\\`, `\n`, `\"`) undone.
fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `name{labels} value [timestamp] [# {labels} value [timestamp]]`.
fn sample(line: &str, family: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    let suffix = name
        .strip_prefix(family)
        .ok_or_else(|| format!("sample {name} outside its family {family}"))?
        .to_string();
    let mut rest = &line[name_end..];
    let labels = if rest.starts_with('{') {
        let (labels, after) = label_set(rest)?;
        rest = after;
        labels
    } else {
        Vec::new()
    };
    let rest = rest.trim_start();
    let (values, exemplar) = match rest.split_once(" # ") {
        Some((values, exemplar)) => (values, Some(exemplar)),
        None => (rest, None),
    };
    let value = values
        .split(' ')
        .next()
        .ok_or_else(|| "no value".to_string())
        .and_then(number)?;
    let exemplar = match exemplar {
        None => None,
        Some(text) => {
            let text = text.trim_start();
            if !text.starts_with('{') {
                return Err("an exemplar without labels".into());
            }
            let (labels, after) = label_set(text)?;
            let mut words = after.split_whitespace();
            let value = number(words.next().ok_or("an exemplar without a value")?)?;
            let timestamp = words.next().map(number).transpose()?;
            Some(Exemplar {
                labels,
                value,
                timestamp,
            })
        }
    };
    Ok(Sample {
        suffix,
        labels,
        value,
        exemplar,
    })
}

/// A number as OpenMetrics writes it (`1`, `0.25`, `1e-05`, `+Inf`, `NaN`).
fn number(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .map_err(|_| format!("{text:?} is not a number"))
}

/// `{a="1",b="x\"y"}` at the start of `text`: the pairs, and what follows the `}`.
fn label_set(text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = text
        .strip_prefix('{')
        .ok_or_else(|| "labels without {".to_string())?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once("=\"")
            .ok_or_else(|| "a label without =\"".to_string())?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an unterminated label value".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        labels.push((name.trim_start_matches(',').to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn one(text: &str) -> Vec<Family> {
        let mut out = Vec::new();
        parse(text, &mut out).unwrap();
        out
    }

    #[test]
    fn counters_histograms_and_exemplars() {
        let text = "# HELP runs Runs, by \\\"script\\\".\n# TYPE runs counter\n\
            runs_total{tenant=\"t\",script=\"a \\\"b\\\" \\\\ c\\nd\"} 3 # {trace_id=\"4bf9\"} 1.0 1700000000.5\n\
            # HELP d Duration.\n# TYPE d histogram\n\
            d_sum{tenant=\"t\"} 0.5\nd_count{tenant=\"t\"} 2\n\
            d_bucket{tenant=\"t\",le=\"0.1\"} 1\nd_bucket{tenant=\"t\",le=\"+Inf\"} 2\n# EOF\n";
        let f = one(text);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "runs");
        assert_eq!(f[0].help, "Runs, by \"script\".");
        assert_eq!(f[0].kind, Kind::Counter);
        let s = &f[0].samples[0];
        assert_eq!(s.suffix, "_total");
        assert_eq!(
            s.labels,
            vec![
                ("tenant".into(), "t".into()),
                ("script".into(), "a \"b\" \\ c\nd".into())
            ]
        );
        assert_eq!(s.value, 3.0);
        assert_eq!(
            s.exemplar,
            Some(Exemplar {
                labels: vec![("trace_id".into(), "4bf9".into())],
                value: 1.0,
                timestamp: Some(1_700_000_000.5),
            })
        );
        assert_eq!(f[1].kind, Kind::Histogram);
        let inf = &f[1].samples[3];
        assert_eq!((inf.suffix.as_str(), inf.value), ("_bucket", 2.0));
        assert_eq!(inf.labels[1], ("le".into(), "+Inf".into()));
    }

    /// The counter and the gauge named mde_liveresponse_script_not_run stay two families.
    #[test]
    fn two_families_of_one_name() {
        let f = one(
            "# HELP n Counted.\n# TYPE n counter\nn_total 2\n# HELP n Now.\n# TYPE n gauge\nn 1\n",
        );
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].kind, f[0].samples.len()), (Kind::Counter, 1));
        assert_eq!((f[1].kind, f[1].help.as_str()), (Kind::Gauge, "Now."));
    }

    #[test]
    fn a_label_value_may_hold_what_separates_an_exemplar() {
        let f = one("# TYPE g gauge\ng{x=\"a # {b} }\"} 1.5e-3\ng 7\n");
        assert_eq!(f[0].samples[0].labels[0].1, "a # {b} }");
        assert_eq!(f[0].samples[0].value, 0.0015);
        assert_eq!(f[0].samples[0].exemplar, None);
        assert_eq!(f[0].samples[1].labels, vec![]);
        assert_eq!(f[0].samples[1].value, 7.0);
    }

    #[test]
    fn what_is_not_openmetrics_is_an_error_naming_the_line() {
        let mut out = Vec::new();
        assert_eq!(
            parse("x 1\n", &mut out).unwrap_err(),
            "OpenMetrics line 1: a sample before any # TYPE line: \"x 1\""
        );
        assert_eq!(
            parse("# TYPE g gauge\ng{a=\"1} 2\n", &mut out).unwrap_err(),
            "OpenMetrics line 2: an unterminated label value: \"g{a=\\\"1} 2\""
        );
        assert_eq!(
            parse("# TYPE g gauge\nh 1\n", &mut Vec::new()).unwrap_err(),
            "OpenMetrics line 2: sample h outside its family g: \"h 1\""
        );
    }
}

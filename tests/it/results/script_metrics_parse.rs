//! The script-output parser on hostile input (#21): arbitrary bytes, a flood of 20,000
//! series, 1 MiB lines, NUL bytes, invalid UTF-8, escaped quotes and backslashes in label
//! values. See: #21

use mde_liveresponse_exporter::script_metrics::parse::{Drop, Limits, parse};
use proptest::prelude::*;

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bytes: no panic, and never more than max_series samples nor more verdicts than lines.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let limits = Limits { max_series: 7, ..Limits::default() };
        let p = parse(&bytes, &limits);
        let lines = bytes.split(|&b| b == b'\n').count() as u64;
        prop_assert!(p.samples.len() <= 7);
        prop_assert!(p.invalid + p.samples.len() as u64 <= lines);
    }

    /// Samples with hostile label values, printed in the text format amid noise lines, are read
    /// back exactly (an empty value as no label).
    #[test]
    fn printed_samples_are_read_back(
        samples in proptest::collection::vec(
            ("[a-z_][a-z0-9_]{0,12}", "[ -~\\\\\"\n\u{e9}\u{1F600}]{0,40}", -1e9f64..1e9),
            1..40,
        ),
        noise in proptest::collection::vec("[A-Z][a-z]{0,10}( [a-zA-Z:\\\\]{0,10}){0,4}", 0..10),
    ) {
        let mut text = String::from("**********************\r\nWindows PowerShell transcript start\r\n");
        for (i, (name, value, v)) in samples.iter().enumerate() {
            if let Some(n) = noise.get(i) {
                text.push_str(n);
                text.push_str("\r\n");
            }
            // One series per line: the index keeps them apart.
            text.push_str(&format!("{name}{{i=\"{i}\",v=\"{}\"}} {v}\r\n", escape(value)));
        }
        text.push_str("Windows PowerShell transcript end\r\n");
        let p = parse(text.as_bytes(), &Limits { max_series: 1000, ..Limits::default() });
        prop_assert_eq!(p.invalid, 0);
        prop_assert_eq!(p.samples.len(), samples.len());
        for (got, (name, value, v)) in p.samples.iter().zip(&samples) {
            prop_assert_eq!(&got.name, name);
            // An empty value is no label (Prometheus reads `v=""` as none). See: #32
            if value.is_empty() {
                prop_assert_eq!(got.labels.len(), 1);
            } else {
                prop_assert_eq!(&got.labels[1].1, value);
            }
            prop_assert_eq!(got.value, *v);
        }
    }
}

#[test]
fn a_flood_of_20000_series_keeps_max_series() {
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!("flood{{i=\"{i}\"}} {i}\n"));
    }
    let p = parse(text.as_bytes(), &Limits::default());
    assert_eq!(p.samples.len(), 500);
    assert_eq!(p.dropped[&Drop::MaxSeries], 19_500);
    assert_eq!(p.invalid, 0);
}

#[test]
fn one_mib_lines() {
    let big = "x".repeat(1024 * 1024);
    let text = format!("{big}\nlabel{{v=\"{big}\"}} 1\nname_{big} 1\nok 1\n");
    let p = parse(text.as_bytes(), &Limits::default());
    assert_eq!(p.samples.len(), 1);
    assert_eq!(p.dropped[&Drop::LabelTooLong], 1);
    assert_eq!(p.dropped[&Drop::NameTooLong], 1);
    assert_eq!(p.invalid, 0);
}

#[test]
fn nul_bytes_and_invalid_utf8() {
    let p = parse(
        b"\0\0\0\nnul{v=\"a\0b\"} 1\nbad{v=\"\xc3\x28\"} 1\n\xff noise\nok{v=\"\\\\\\\"\"} 2\n",
        &Limits::default(),
    );
    assert_eq!(p.samples.len(), 1);
    assert_eq!(p.samples[0].labels[0].1, "\\\"");
    assert_eq!(p.invalid, 2);
}

//! Whatever scripts print, every body the exporter serves stays one a strict scraper takes
//! (#32 item 2): hostile outputs drawn by proptest (names that clash across scripts and
//! types, typed twice, `_total` games, labels twice, `__` labels, the exporter's own label
//! names, escapes, odd values, `# EOF` in the middle) go through the simulator as the
//! transcripts of every script, read under rules of both formats by one exporter; then
//! `/metrics` in the Prometheus text format, OpenMetrics and protobuf, and the tenant's
//! `/probe`, are each checked by the independent strict reader (`common::exposition`).

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use crate::common::exposition::{
    Series, decode_protobuf, protobuf_problems, protobuf_values, text_problems, text_values,
};
use crate::common::*;
use mde_sim::{BlobFault, SimConfig};

const PROTO: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";
const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0";

/// Every script of the simulator's library under a rule: the text format for five of them,
/// and JSON for one, whose names clash with what the others may print.
const RULES: &str = "script_metrics:
  - script: check-bitlocker.ps1
    format: prometheus
  - script: collect-triage.ps1
    format: prometheus
  - script: hunt-persistence.ps1
    format: prometheus
  - script: legacy-inventory.ps1
    format: prometheus
  - script: restart-sensor.ps1
    format: prometheus
  - script: get-av-status.ps1
    format: json
    metrics:
      - name: c_total
        path: c
      - name: x
        path: x.y
      - name: up
        path: up
";

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(items)
}

/// One line a compromised machine's script may print.
fn hostile_line() -> impl Strategy<Value = String> {
    let name = || pick(&["c", "c_total", "x", "x_total", "up", "x_bucket", "a:b", "_"]);
    let label = (
        pick(&[
            "tenant",
            "machine",
            "script",
            "exported_tenant",
            "__name__",
            "__x",
            "a",
            "b",
            "le",
            "1x",
            "",
        ]),
        pick(&["", "v", "w", "\\\"", "\\\\", "\\n", "é", "a b", "}", ","]),
    );
    let value = pick(&[
        "1",
        "-1",
        "0.5",
        "NaN",
        "+Inf",
        "-Inf",
        "1e400",
        "0x1",
        "abc",
        "",
        "1 2",
        "2 1700000000000",
    ]);
    let sample =
        (name(), proptest::collection::vec(label, 0..4), value).prop_map(|(n, labels, v)| {
            if labels.is_empty() {
                return format!("{n} {v}");
            }
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{n}{{{}}} {v}", l.join(","))
        });
    let kind = pick(&[
        "counter",
        "gauge",
        "untyped",
        "unknown",
        "histogram",
        "summary",
        "info",
        "bogus",
    ]);
    prop_oneof![
        4 => sample,
        2 => (name(), kind).prop_map(|(n, k)| format!("# TYPE {n} {k}")),
        1 => (name(), "[ -~]{0,12}").prop_map(|(n, h)| format!("# HELP {n} {h}")),
        1 => Just("# EOF".to_string()),
        1 => Just("{\"c\": 3, \"x\": {\"y\": -1}, \"up\": true}".to_string()),
        1 => "[^\n\r]{0,24}",
    ]
}

/// `n` outputs, drawn the same way every run.
fn hostile_outputs(n: usize) -> Vec<String> {
    let mut runner = TestRunner::deterministic();
    let lines = proptest::collection::vec(hostile_line(), 1..14);
    (0..n)
        .map(|_| {
            let tree = lines.new_tree(&mut runner).unwrap();
            tree.current().join("\r\n")
        })
        .collect()
}

async fn body(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> Vec<u8> {
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.unwrap().to_vec()
}

// See: #32 item 2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_served_is_valid_whatever_scripts_print() {
    let (sim, addr) = start_sim(SimConfig {
        finish_within: std::time::Duration::from_secs(5),
        ..SimConfig::default()
    })
    .await;
    let outputs = hostile_outputs(48);
    for out in &outputs {
        sim.faults()
            .blob_fault(BlobFault::Printed(out.as_str().into()), 1);
    }
    let exporter = start_exporter_with(&sim, addr, "", RULES).await;
    let a = exporter.addr;
    let m = settled(&sim, a).await;
    // The run was not vacuous: script series were served and some output was left out.
    assert!(
        m.keys()
            .any(|(n, _)| n.starts_with("mde_script_") && !n.starts_with("mde_script_metrics_"))
    );
    assert!(sum(&m, "mde_script_metrics_dropped_total", &[]) > 0.0);
    assert!(sum(&m, "mde_script_metrics_lines_invalid_total", &[]) > 0.0);

    let text = String::from_utf8(body(a, "/metrics", None).await).unwrap();
    assert_eq!(text_problems(&text, false), Vec::<String>::new(), "{text}");
    let om = String::from_utf8(body(a, "/metrics", Some(OPENMETRICS)).await).unwrap();
    assert!(om.ends_with("# EOF\n"));
    assert_eq!(text_problems(&om, true), Vec::<String>::new(), "{om}");
    let proto = body(a, "/metrics", Some(PROTO)).await;
    assert_eq!(protobuf_problems(&proto), Vec::<String>::new());
    // The script series have the same values in protobuf as in text (an untyped one was
    // read as 0 from protobuf before: its value was in the gauge field). Compared on a
    // protobuf scrape taken between two text scrapes with the same script series: the
    // simulator's machines go on running scripts, and a transcript that arrives between two
    // scrapes replaces a set.
    let script =
        |k: &&Series| k.0.starts_with("mde_script_") && !k.0.starts_with("mde_script_metrics_");
    let script_series = |text: &str| -> Vec<(Series, f64)> {
        let values = text_values(text, false);
        let mut v: Vec<(Series, f64)> = values
            .iter()
            .filter(|(k, _)| script(k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut attempts = 0;
    let (text, proto) = loop {
        let before = String::from_utf8(body(a, "/metrics", None).await).unwrap();
        let proto = body(a, "/metrics", Some(PROTO)).await;
        let after = String::from_utf8(body(a, "/metrics", None).await).unwrap();
        let same = |x: &[(Series, f64)], y: &[(Series, f64)]| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p.0 == q.0 && (p.1 == q.1 || p.1.is_nan() && q.1.is_nan()))
        };
        if same(&script_series(&before), &script_series(&after)) {
            break (after, proto);
        }
        attempts += 1;
        assert!(
            attempts < 50,
            "the script series never held still between two scrapes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let in_text = text_values(&text, false);
    let in_proto = protobuf_values(&decode_protobuf(&proto).unwrap());
    let text_series: Vec<&Series> = in_text.keys().filter(script).collect();
    assert!(!text_series.is_empty());
    for k in text_series {
        let (t, p) = (in_text[k], in_proto.get(k).copied());
        assert!(
            p.is_some_and(|p| p == t || p.is_nan() && t.is_nan()),
            "{k:?}: {t} in text, {p:?} in protobuf"
        );
    }
    let probe = String::from_utf8(body(a, "/probe?target=sim", None).await).unwrap();
    assert!(probe.contains("mde_script_"), "{probe}");
    assert_eq!(
        text_problems(&probe, false),
        Vec::<String>::new(),
        "{probe}"
    );
    exporter.shutdown().await.unwrap();
}

/// The strict reader itself: each problem it must name in a body, named; and a valid body of
/// each format passes.
#[test]
fn the_strict_reader_finds_what_it_must() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\n# TYPE g gauge\ng 1.5 1700000000000\nu{y=\"\\\"\"} NaN\n";
    assert_eq!(text_problems(good, false), Vec::<String>::new());
    let good_om = "# HELP a A.\n# TYPE a counter\na_total{x=\"1\"} 1 # {trace_id=\"ab\"} 1.0 1.5\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 2\n# EOF\n";
    assert_eq!(text_problems(good_om, true), Vec::<String>::new());
    let bad: &[(&str, bool, &str)] = &[
        ("a{x=\"1\",x=\"2\"} 1\n", false, "label x twice"),
        ("a{__name__=\"b\"} 1\n", false, "reserved label"),
        ("a{x=\"1\"} 1\na{x=\"1\"} 2\n", false, "series twice"),
        (
            "a{p=\"1\",q=\"2\"} 1\na{q=\"2\",p=\"1\"} 2\n",
            false,
            "series twice",
        ),
        ("# TYPE a gauge\n# TYPE a gauge\na 1\n", false, "TYPE twice"),
        ("# HELP a x\n# HELP a y\na 1\n", false, "HELP twice"),
        ("a 1\nb 1\na{x=\"1\"} 1\n", false, "interleaved"),
        ("a 1\n# TYPE a gauge\n", false, "after the family's samples"),
        ("a{x=\"1} 1\n", false, "unclosed"),
        ("a{x=\"\\t\"} 1\n", false, "escape"),
        ("a 1,5\n", false, "not one value"),
        ("1a 1\n", false, "metric name"),
        ("a{1x=\"v\"} 1\n", false, "label name"),
        (
            "# TYPE c counter\nc_total 1\n# TYPE c_total gauge\nc_total 2\n# EOF\n",
            true,
            "in families",
        ),
        (
            "# TYPE c_total counter\nc_total 1\n# TYPE c_total gauge\nc_total 2\n",
            false,
            "TYPE twice",
        ),
        (
            "# TYPE c counter\nc 1\n# EOF\n",
            true,
            "a sample named as its counter family",
        ),
        ("a 1\n", true, "no # EOF"),
        ("# EOF\na 1\n", true, "after # EOF"),
        ("a{x=\"1\",} 1\n# EOF\n", true, "trailing comma"),
        (
            "# some comment\na 1\n# EOF\n",
            true,
            "comment OpenMetrics does not have",
        ),
        ("# TYPE a bogus\na 1\n", false, "type"),
    ];
    for (body, om, want) in bad {
        let found = text_problems(body, *om);
        assert!(
            found.iter().any(|p| p.contains(want)),
            "{body:?} (openmetrics: {om}): want {want:?}, found {found:?}"
        );
    }
    // Protobuf: a family twice, and a label twice, found.
    use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
        Gauge, LabelPair, Metric, MetricFamily, MetricType,
    };
    use prost::Message;
    let family = |name: &str, labels: &[(&str, &str)]| MetricFamily {
        name: name.into(),
        r#type: MetricType::Gauge as i32,
        metric: vec![Metric {
            label: labels
                .iter()
                .map(|(k, v)| LabelPair {
                    name: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            gauge: Some(Gauge { value: 1.0 }),
            ..Metric::default()
        }],
        ..MetricFamily::default()
    };
    let encode = |families: &[MetricFamily]| {
        let mut out = Vec::new();
        for f in families {
            f.encode_length_delimited(&mut out).unwrap();
        }
        out
    };
    assert_eq!(
        protobuf_problems(&encode(&[family("a", &[("x", "1")])])),
        Vec::<String>::new()
    );
    let twice = protobuf_problems(&encode(&[family("a", &[]), family("a", &[])]));
    assert!(
        twice.iter().any(|p| p.contains("family a twice")),
        "{twice:?}"
    );
    let label = protobuf_problems(&encode(&[family("a", &[("x", "1"), ("x", "2")])]));
    assert!(
        label.iter().any(|p| p.contains("label x twice")),
        "{label:?}"
    );
    let reserved = protobuf_problems(&encode(&[family("a", &[("__name__", "b")])]));
    assert!(
        reserved.iter().any(|p| p.contains("reserved")),
        "{reserved:?}"
    );
}

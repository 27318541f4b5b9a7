//! Unit tests of `script_metrics::store`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::config::{JsonMetric, ScriptFormat, ScriptRule};
use prometheus_client::registry::Registry;
use std::sync::Arc;

pub(super) fn rule(format: ScriptFormat) -> ScriptRule {
    ScriptRule {
        script: "check.ps1".into(),
        format,
        prefix: "mde_script_".into(),
        max_series: 500,
        max_total_series: 50_000,
        max_bytes: 256 * 1024,
        max_total_bytes: 32 * 1024 * 1024,
        ttl: Duration::from_secs(7 * 86_400),
        max_name_length: 128,
        max_label_length: 1024,
        max_labels: 16,
        metrics: Vec::new(),
    }
}

fn key(machine: &str) -> SetKey {
    ("t".into(), machine.into(), "check.ps1".into())
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn render(store: Store) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(store));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
    out
}

#[test]
fn own_labels_become_exported_and_the_prefix_applies() {
    let r = rule(ScriptFormat::Prometheus);
    let e = extract(
        &r,
        b"# TYPE bitlocker_on gauge\nbitlocker_on{tenant=\"evil\",machine=\"m\",script=\"s\",volume=\"C:\"} 0\nmetrics_lines_invalid_total 5\n",
    );
    assert_eq!(e.families.len(), 1);
    assert_eq!(e.families[0].name, "mde_script_bitlocker_on");
    let labels: Vec<&str> = e.families[0].samples[0]
        .0
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        labels,
        [
            "exported_tenant",
            "exported_machine",
            "exported_script",
            "volume"
        ]
    );
    assert_eq!(e.dropped[&Drop::ReservedName], 1);
    let store = Store::default();
    store.record(key("ws-1"), at("2025-03-18T21:04:41Z"), 0, &r, e);
    let text = render(store);
    assert!(
        text.contains("# TYPE mde_script_bitlocker_on gauge"),
        "{text}"
    );
    assert!(
        text.contains("mde_script_bitlocker_on{tenant=\"t\",machine=\"ws-1\",script=\"check.ps1\",exported_tenant=\"evil\",exported_machine=\"m\",exported_script=\"s\",volume=\"C:\"} 0"),
        "{text}"
    );
    assert!(text.contains("mde_script_metrics_last_transcript_timestamp_seconds{tenant=\"t\",machine=\"ws-1\",script=\"check.ps1\"} 1742331881"), "{text}");
    assert!(text.contains("mde_script_metrics_dropped_total{tenant=\"t\",script=\"check.ps1\",reason=\"reserved_name\"} 1"), "{text}");
}

#[test]
fn the_latest_transcript_wins_and_a_sample_no_longer_printed_disappears() {
    let r = rule(ScriptFormat::Prometheus);
    let store = Store::default();
    let k = key("ws-1");
    store.record(
        k.clone(),
        at("2025-03-18T10:00:00Z"),
        0,
        &r,
        extract(&r, b"a 1\nb 2\n"),
    );
    // An older action comes late: counted, not shown.
    let late = store.record(
        k.clone(),
        at("2025-03-18T09:00:00Z"),
        0,
        &r,
        extract(&r, b"a 9\nbad{ 1\n"),
    );
    assert_eq!(late, Recorded::Older);
    assert_eq!(store.get(&k).unwrap().families[0].samples[0].1, 1.0);
    // Within one action a later command wins.
    store.record(
        k.clone(),
        at("2025-03-18T10:00:00Z"),
        1,
        &r,
        extract(&r, b"a 3\n"),
    );
    let set = store.get(&k).unwrap();
    assert_eq!(set.families.len(), 1, "b is gone");
    assert_eq!(set.families[0].samples[0].1, 3.0);
    let text = render(store);
    assert!(
        text.contains(
            "mde_script_metrics_lines_invalid_total{tenant=\"t\",script=\"check.ps1\"} 1"
        ),
        "{text}"
    );
    assert!(!text.contains("mde_script_b"), "{text}");
}

#[test]
fn counters_and_untyped() {
    let r = rule(ScriptFormat::Prometheus);
    let store = Store::default();
    store.record(
        key("m"),
        at("2025-03-18T10:00:00Z"),
        0,
        &r,
        extract(&r, b"# TYPE runs counter\nruns_total 4\nplain 2\n"),
    );
    let text = render(store);
    assert!(text.contains("# TYPE mde_script_runs counter"), "{text}");
    assert!(
        text.contains("mde_script_runs_total{tenant=\"t\",machine=\"m\",script=\"check.ps1\"} 4"),
        "{text}"
    );
    assert!(text.contains("# TYPE mde_script_plain unknown"), "{text}");
}

#[test]
fn the_total_per_rule_is_bounded() {
    let mut r = rule(ScriptFormat::Prometheus);
    r.max_total_series = 3;
    let store = Store::default();
    store.record(
        key("a"),
        at("2025-03-18T10:00:00Z"),
        0,
        &r,
        extract(&r, b"x 1\ny 1\n"),
    );
    store.record(
        key("b"),
        at("2025-03-18T10:00:00Z"),
        0,
        &r,
        extract(&r, b"x 1\ny 1\n"),
    );
    assert_eq!(store.get(&key("b")).unwrap().series(), 1);
    // Replacing a set frees its own room first.
    store.record(
        key("a"),
        at("2025-03-18T11:00:00Z"),
        0,
        &r,
        extract(&r, b"x 1\n"),
    );
    store.record(
        key("b"),
        at("2025-03-18T11:00:00Z"),
        0,
        &r,
        extract(&r, b"x 1\ny 1\n"),
    );
    assert_eq!(store.get(&key("b")).unwrap().series(), 2);
    let text = render(store);
    assert!(text.contains("reason=\"max_total\"} 1"), "{text}");
}

#[test]
fn sets_past_their_ttl_expire() {
    let r = rule(ScriptFormat::Prometheus);
    let store = Store::default();
    store.record(
        key("old"),
        at("2025-03-01T10:00:00Z"),
        0,
        &r,
        extract(&r, b"x 1\n"),
    );
    store.record(
        key("new"),
        at("2025-03-18T10:00:00Z"),
        0,
        &r,
        extract(&r, b"x 1\n"),
    );
    // No time to judge by (the tenant's clock refuses): nothing expires. See: #24 item 7
    assert!(store.expire(&|_| None).is_empty());
    assert_eq!(
        store.expire(&|_| Some(at("2025-03-19T00:00:00Z"))),
        vec![key("old")]
    );
    assert!(store.get(&key("old")).is_none());
    assert!(store.get(&key("new")).is_some());
}

#[test]
fn json_rules_read_their_paths() {
    let mut r = rule(ScriptFormat::Json);
    r.metrics = vec![
        JsonMetric {
            name: "disk_free_gb".into(),
            path: "disk.free_gb".into(),
            help: Some("Free disk".into()),
        },
        JsonMetric {
            name: "reboot_pending".into(),
            path: "reboot".into(),
            help: None,
        },
        JsonMetric {
            name: "missing".into(),
            path: "nope".into(),
            help: None,
        },
    ];
    let e = extract(
        &r,
        b"noise\n{\"disk\": {\"free_gb\": 3.5}, \"reboot\": true}\nmore noise\n",
    );
    assert_eq!(e.invalid, 1);
    let got: Vec<(&str, f64)> = e
        .families
        .iter()
        .map(|f| (f.name.as_str(), f.samples[0].1))
        .collect();
    assert_eq!(
        got,
        [
            ("mde_script_disk_free_gb", 3.5),
            ("mde_script_reboot_pending", 1.0)
        ]
    );
    assert_eq!(e.families[0].help.as_deref(), Some("Free disk"));
}

// See: #21. The caps on one sample are the rule's keys: a sample within the defaults is
// dropped under a rule with smaller caps, for the reason of the cap it exceeds.
#[test]
fn the_caps_on_one_sample_are_the_rules() {
    let text = b"disk_free{drive=\"C:\",kind=\"ssd\",pool=\"a\"} 3\nlong_metric_name 1\nv{label=\"0123456789\"} 2\nok 4\n";
    let defaults = extract(&rule(ScriptFormat::Prometheus), text);
    assert_eq!(defaults.series(), 4);
    assert!(defaults.dropped.is_empty());
    let mut r = rule(ScriptFormat::Prometheus);
    r.max_labels = 2;
    r.max_name_length = 10;
    r.max_label_length = 5;
    let e = extract(&r, text);
    let kept: Vec<&str> = e.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(kept, ["mde_script_ok"]);
    assert_eq!(
        e.dropped,
        [
            (Drop::NameTooLong, 1),
            (Drop::LabelTooLong, 1),
            (Drop::TooManyLabels, 1)
        ]
        .into_iter()
        .collect()
    );
}

// See: #21. The set the state file keeps was the one extracted, not the one served: beyond
// the rule's total, a restart restored more series than the total allows. The collector now
// cuts the extracted set with cap_to_total before writing it; the set written is the set
// served, and the excess is counted once.
#[test]
fn the_set_kept_in_the_state_is_within_the_total() {
    let mut r = rule(ScriptFormat::Prometheus);
    r.max_total_series = 3;
    let store = Store::default();
    let when = at("2025-03-18T10:00:00Z");
    store.record(key("a"), when, 0, &r, extract(&r, b"x 1\ny 1\n"));
    let mut e = extract(&r, b"x 1\ny 1\n");
    store.cap_to_total(&key("b"), &r, &mut e);
    let durable = Set::new(when, 0, &r, &e);
    store.record(key("b"), when, 0, &r, e);
    assert_eq!(durable.series(), 1);
    assert_eq!(store.get(&key("b")).unwrap(), durable);
    // After a restart the restored sets hold the total, no more.
    let restarted = Store::default();
    restarted.restore(key("a"), store.get(&key("a")).unwrap());
    restarted.restore(key("b"), durable);
    let text = render(restarted);
    assert_eq!(
        text.matches("{tenant=\"t\",machine=").count() - 2,
        3,
        "{text}"
    );
    assert!(render(store).contains("reason=\"max_total\"} 1"));
}

/// See: #21. The store as two parts (what `/metrics` registers, so that two threads share
/// the script series) gives every family once, whole, with the samples the single collector
/// gives, and the store's own families once.
#[test]
fn two_parts_give_every_family_once_and_whole() {
    let r = rule(ScriptFormat::Prometheus);
    let store = Arc::new(Store::default());
    for m in 0..30 {
        let body = format!(
            "a_one {m}\nb_two{{v=\"x\"}} 2\nc_three 3\nd_four 4\ne_five{{k=\"q\\\"uote\"}} 5\n"
        );
        let e = extract(&r, body.as_bytes());
        store.record(
            key(&format!("m{m:02}")),
            at("2026-12-01T00:00:00Z"),
            0,
            &r,
            e,
        );
    }
    let one = {
        let mut reg = Registry::default();
        reg.register_collector(Box::new(store.parts(1).remove(0)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    };
    let two = {
        let mut reg = Registry::default();
        for p in store.parts(2) {
            reg.register_collector(Box::new(p));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    };
    // Each family once: its block of lines (HELP, TYPE, samples) is the same in both bodies.
    let blocks = |body: &str| -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut name = String::new();
        for line in body.lines().filter(|l| !l.starts_with("# EOF")) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                name = rest.split(' ').next().unwrap().to_string();
                assert!(!out.contains_key(&name), "{name} twice");
            }
            out.entry(name.clone())
                .or_insert_with(String::new)
                .push_str(&format!("{line}\n"));
        }
        out
    };
    let (b1, b2) = (blocks(&one), blocks(&two));
    // Five script families, and the store's own: the set times and the abandoned readings
    // (at 0).
    assert_eq!(b1.len(), 7, "{one}");
    assert_eq!(b1, b2);
    assert_eq!(one.len(), two.len());
    assert_eq!(
        two.matches("mde_script_metrics_last_transcript_timestamp_seconds{")
            .count(),
        30
    );
}

/// The body of `parts` of `store` in one text format: through each part's collector
/// (`prometheus-client`), or written directly (what `/metrics` does).
fn bodies(store: &Arc<Store>, parts: usize, openmetrics: bool) -> (String, String) {
    let mut reg = Registry::default();
    let mut direct = String::new();
    for p in store.parts(parts) {
        p.write_text(&mut direct, openmetrics).unwrap();
        reg.register_collector(Box::new(p));
    }
    let mut encoded = String::new();
    if openmetrics {
        prometheus_client::encoding::text::encode_registry(&mut encoded, &reg).unwrap();
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut encoded, &reg).unwrap();
    }
    (direct, encoded)
}

fn family(
    name: &str,
    kind: Kind,
    help: Option<&str>,
    samples: Vec<(Vec<(&str, &str)>, f64)>,
) -> Family {
    Family {
        name: name.into(),
        kind,
        help: help.map(Into::into),
        samples: samples
            .into_iter()
            .map(|(l, v)| {
                (
                    l.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
                    v,
                )
            })
            .collect(),
    }
}

/// See: #21. The direct writer gives, in both text formats and split in one part or two, the
/// very bytes `prometheus-client` gives for the same families: counters (`_total`), gauges,
/// untyped, help with `\` and newlines, label values with quotes, backslashes, newlines and
/// non-ASCII, non-finite and extreme numbers, a name two sets give as different kinds, and
/// the store's own families.
#[test]
fn the_direct_writer_writes_what_the_encoder_writes() {
    let store = Arc::new(Store::default());
    let hostile = "C:\\Users\\\"evil\"\nline two ✓ \u{1F600}";
    store.restore(
        ("tenant \"a\"".into(), "ws-01\\x".into(), "check.ps1".into()),
        Set {
            produced: at("2026-12-01T10:00:00.123Z"),
            index: 0,
            ttl: Duration::from_secs(60),
            families: vec![
                family(
                    "mde_script_runs",
                    Kind::Counter,
                    Some("help with \\ and\nnewline"),
                    vec![(vec![("volume", hostile)], 3.0)],
                ),
                family(
                    "mde_script_free_bytes",
                    Kind::Gauge,
                    None,
                    vec![
                        (vec![], f64::NAN),
                        (vec![("v", "inf")], f64::INFINITY),
                        (vec![("v", "-inf")], f64::NEG_INFINITY),
                        (vec![("v", "tiny")], 5e-324),
                        (vec![("v", "big")], 1.7976931348623157e308),
                        (vec![("v", "neg zero")], -0.0),
                        (vec![("v", "tenth")], 0.1),
                        (vec![("a", ""), ("b", "x")], -12345.678),
                    ],
                ),
                family(
                    "mde_script_odd",
                    Kind::Untyped,
                    Some("untyped"),
                    vec![(vec![("k", "v")], 1.0)],
                ),
            ],
        },
    );
    store.restore(
        ("t".into(), "ws-02".into(), "other.ps1".into()),
        Set {
            produced: at("2026-12-01T11:00:00Z"),
            index: 1,
            ttl: Duration::from_secs(60),
            families: vec![
                family(
                    "mde_script_free_bytes",
                    Kind::Gauge,
                    None,
                    vec![(vec![("v", "2")], 2.5)],
                ),
                family("mde_script_zeta", Kind::Counter, None, vec![(vec![], 1e21)]),
                // This set is first in key order, so it gives these two families their
                // kinds: the other set's samples of them change names (`_total` or not).
                family("mde_script_odd", Kind::Counter, None, vec![(vec![], 2.0)]),
                family(
                    "mde_script_runs",
                    Kind::Gauge,
                    None,
                    vec![(vec![], f64::INFINITY)],
                ),
            ],
        },
    );
    // Invalid lines and drops, for the store's own counters.
    let r = rule(ScriptFormat::Prometheus);
    let mut long = "x".repeat(300);
    long.push_str(" 1\nbad{ 1\n");
    let e = extract(&r, long.as_bytes());
    assert!(e.invalid > 0 && !e.dropped.is_empty(), "{e:?}");
    store.record(key("ws-03"), at("2026-12-01T12:00:00Z"), 0, &r, e);
    for openmetrics in [false, true] {
        for parts in [1, 2, 3] {
            let (direct, encoded) = bodies(&store, parts, openmetrics);
            assert!(encoded.contains("mde_script_metrics_dropped"), "{encoded}");
            assert_eq!(direct, encoded, "openmetrics {openmetrics}, {parts} parts");
        }
    }
}

proptest::proptest! {
    /// See: #21. Any label value and any number: the same bytes as the encoder.
    #[test]
    fn the_direct_writer_agrees_on_any_label_and_value(
        machine in "\\PC{0,12}",
        value in "[\\\\\"\\n a-zé✓]{0,12}",
        v in proptest::num::f64::ANY,
    ) {
        let store = Arc::new(Store::default());
        store.restore(
            ("t".into(), machine, "s.ps1".into()),
            Set {
                produced: at("2026-12-01T10:00:00Z"),
                index: 0,
                ttl: Duration::from_secs(60),
                families: vec![
                    family("mde_script_g", Kind::Gauge, None, vec![(vec![("l", value.as_str())], v)]),
                    family("mde_script_c", Kind::Counter, None, vec![(vec![], v.abs())]),
                ],
            },
        );
        for openmetrics in [false, true] {
            let (direct, encoded) = bodies(&store, 2, openmetrics);
            proptest::prop_assert_eq!(direct, encoded);
        }
    }
}

/// See: #21. A set is held as its sample lines and read back exactly as it was given: what
/// `get` returns (and the state file's copy is compared with) is the set restored, hostile
/// labels, help, extreme numbers and a family name given twice (its samples together) too.
#[test]
fn a_held_set_reads_back_as_it_was_given() {
    let store = Store::default();
    let set = Set {
        produced: at("2026-12-01T10:00:00.5Z"),
        index: 3,
        ttl: Duration::from_secs(60),
        families: vec![
            family(
                "mde_script_a",
                Kind::Counter,
                Some("h \\ \n"),
                vec![(vec![("p", "C:\\x\"y\"\n} 1,z=\"")], 1e21)],
            ),
            family(
                "mde_script_b",
                Kind::Gauge,
                None,
                vec![
                    (vec![], -0.0),
                    (vec![("v", "1")], f64::INFINITY),
                    (vec![("v", "2"), ("w", "")], 5e-324),
                ],
            ),
        ],
    };
    let key = ("t\"".to_string(), "m\\".to_string(), "s.ps1".to_string());
    store.restore(key.clone(), set.clone());
    assert_eq!(store.get(&key).unwrap(), set);
    assert_eq!(
        store.produced(&key),
        Some((at("2026-12-01T10:00:00.5Z"), 3))
    );
    let mut twice = set.clone();
    twice.families.push(family(
        "mde_script_b",
        Kind::Untyped,
        None,
        vec![(vec![("v", "3")], 3.0)],
    ));
    store.restore(key.clone(), twice);
    let back = store.get(&key).unwrap();
    assert_eq!(back.families.len(), 2);
    assert_eq!(back.families[1].kind, Kind::Gauge);
    assert_eq!(back.families[1].samples.len(), 4);
    assert_eq!(back.series(), 5);
}

/// See: #21. Replacing and expiring sets leaves no family, fragment or help text behind: a
/// family no set has any more is gone from the body.
#[test]
fn a_replaced_set_leaves_nothing_behind() {
    let r = rule(ScriptFormat::Prometheus);
    let store = Arc::new(Store::default());
    let e = extract(&r, b"# HELP old_one Old.\nold_one 1\nkept 2\n");
    store.record(key("a"), at("2026-12-01T00:00:00Z"), 0, &r, e);
    let e = extract(&r, b"kept 3\n");
    store.record(key("a"), at("2026-12-02T00:00:00Z"), 0, &r, e);
    let (text, _) = bodies(&store, 1, false);
    assert!(!text.contains("old_one"), "{text}");
    assert!(text.contains("mde_script_kept{tenant=\"t\",machine=\"a\",script=\"check.ps1\"} 3"));
    {
        let inner = store.inner.read().unwrap();
        assert_eq!(inner.families.len(), 1);
    }
    let now = at("2026-12-30T00:00:00Z");
    assert_eq!(store.expire(&|_| Some(now)), vec![key("a")]);
    let inner = store.inner.read().unwrap();
    assert!(inner.families.is_empty() && inner.sets.is_empty() && inner.helps.is_empty());
}

/// See: #21. A script that prints a new `# HELP` every run does not grow the help texts held
/// for good: those no set has any more are forgotten.
#[test]
fn help_texts_no_set_has_are_forgotten() {
    let r = rule(ScriptFormat::Prometheus);
    let store = Store::default();
    let start = at("2026-12-01T00:00:00Z");
    for run in 0..10_000_i64 {
        let body = format!("# HELP x Run {run}.\nx 1\n");
        let e = extract(&r, body.as_bytes());
        store.record(key("a"), start + chrono::Duration::seconds(run), 0, &r, e);
    }
    let inner = store.inner.read().unwrap();
    assert!(
        inner.helps.len() <= HELPS_PRUNED_FROM + 1,
        "{}",
        inner.helps.len()
    );
    assert!(inner.helps.contains("Run 9999."));
}

/// See: #21. After a reload, only the (tenant, script) pairs still configured keep their sets
/// and counts; the totals follow.
#[test]
fn retain_keeps_only_what_is_configured() {
    let r = rule(ScriptFormat::Prometheus);
    let store = Arc::new(Store::default());
    for (tenant, script) in [("t", "check.ps1"), ("t", "gone.ps1"), ("u", "check.ps1")] {
        let e = extract(&r, b"# HELP x X.\nx 1\nbad{ 1\n");
        let k = (tenant.to_string(), "m".to_string(), script.to_string());
        store.record(k, at("2026-12-01T00:00:00Z"), 0, &r, e);
    }
    let removed = store.retain(&|tenant, script| tenant == "t" && script == "check.ps1");
    assert_eq!(removed, 2);
    let (text, _) = bodies(&store, 1, false);
    assert_eq!(text.matches("mde_script_x{").count(), 1, "{text}");
    assert!(
        !text.contains("gone.ps1") && !text.contains("tenant=\"u\""),
        "{text}"
    );
    let inner = store.inner.read().unwrap();
    assert_eq!(inner.totals.len(), 1);
    assert_eq!(inner.invalid.len(), 1);
    assert_eq!(inner.helps.len(), 1);
}

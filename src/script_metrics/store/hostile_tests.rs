//! A compromised machine's script output against the exposition: whatever a script prints,
//! the body stays one Prometheus accepts (no label twice, no `__` label, no series twice, no
//! family typed twice), checked by a strict reader of our own bodies in both text formats.
//! See: #32 item 1

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::config::{ScriptFormat, ScriptRule};

fn rule() -> ScriptRule {
    super::tests::rule(ScriptFormat::Prometheus)
}

/// The labels of a sample line (`name{a="x",...} value`), as written.
fn labels_of(line: &str) -> (String, Vec<(String, String)>) {
    let Some(open) = line.find('{') else {
        let name = line.split(' ').next().unwrap_or_default();
        return (name.to_string(), Vec::new());
    };
    let name = line[..open].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..];
    loop {
        if rest.starts_with('}') {
            break;
        }
        let eq = rest.find("=\"").expect("a label");
        let key = rest[..eq].to_string();
        rest = &rest[eq + 2..];
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("a closed value");
            match c {
                '\\' => {
                    value.push(chars.next().expect("an escape").1);
                }
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key, value));
        rest = rest[end + 1..].trim_start_matches(',');
    }
    (name, labels)
}

/// What Prometheus would refuse in a body: every problem, named.
fn problems(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut typed = HashSet::new();
    let mut series = HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default().to_string();
            if !typed.insert(name.clone()) {
                out.push(format!("family {name} typed twice"));
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, labels) = labels_of(line);
        let mut names = HashSet::new();
        for (k, v) in &labels {
            if !names.insert(k.clone()) {
                out.push(format!("label {k} twice in {line}"));
            }
            if k.starts_with("__") {
                out.push(format!("reserved label {k} in {line}"));
            }
            if v.is_empty() {
                out.push(format!("empty label {k} in {line}"));
            }
        }
        let mut sorted = labels.clone();
        sorted.sort();
        if !series.insert((name.clone(), sorted)) {
            out.push(format!("series twice: {line}"));
        }
    }
    out
}

fn bodies(output: &[u8]) -> (Extracted, Vec<String>) {
    let r = rule();
    let e = extract(&r, output);
    let store = Arc::new(Store::default());
    store.record(
        ("t".into(), "ws-1".into(), "check.ps1".into()),
        "2025-03-18T21:04:41Z".parse().unwrap(),
        0,
        &r,
        e.clone(),
    );
    let mut bodies = Vec::new();
    for openmetrics in [false, true] {
        let mut body = String::new();
        for part in store.parts(1) {
            part.write_text(&mut body, openmetrics).unwrap();
        }
        bodies.push(body);
    }
    (e, bodies)
}

fn assert_valid(output: &[u8]) -> Extracted {
    let (e, bodies) = bodies(output);
    for body in bodies {
        assert_eq!(problems(&body), Vec::<String>::new(), "{body}");
    }
    e
}

#[test]
fn an_exported_label_already_taken_is_exported_again() {
    let e = assert_valid(b"x{tenant=\"a\",exported_tenant=\"b\"} 1\n");
    let labels: Vec<&str> = e.families[0].samples[0]
        .0
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(labels, ["exported_exported_tenant", "exported_tenant"]);
}

#[test]
fn a_reserved_label_drops_the_sample() {
    let e = assert_valid(b"x{__name__=\"up\"} 1\ny{a=\"1\",__meta=\"2\"} 2\nz 3\n");
    assert_eq!(e.series(), 1, "only z");
    assert_eq!(e.dropped[&Drop::ReservedLabel], 2);
}

#[test]
fn labels_in_another_order_are_one_series() {
    let e = assert_valid(b"x{a=\"1\",b=\"2\"} 1\nx{b=\"2\",a=\"1\"} 5\n");
    assert_eq!(e.series(), 1);
    assert_eq!(e.families[0].samples[0].1, 5.0, "the later value");
}

#[test]
fn an_empty_label_value_is_no_label() {
    let e = assert_valid(b"x{a=\"\"} 1\nx 2\ny{a=\"\",b=\"1\"} 3\n");
    assert_eq!(e.series(), 2);
    assert_eq!(e.families[0].samples, vec![(Vec::new(), 2.0)]);
}

#[test]
fn a_counter_beside_a_gauge_of_its_sample_name_keeps_the_first() {
    let e = assert_valid(b"# TYPE c counter\nc_total 1\n# TYPE c_total gauge\nc_total 2\n");
    assert_eq!(e.families.len(), 1);
    assert_eq!(e.families[0].name, "mde_script_c");
    assert_eq!(e.dropped[&Drop::NameClash], 1);
    let e = assert_valid(b"# TYPE c_total gauge\nc_total 2\n# TYPE c counter\nc_total 1\n");
    assert_eq!(e.families.len(), 1);
    assert_eq!(e.families[0].name, "mde_script_c_total");
}

#[test]
fn one_family_printed_with_two_types_keeps_the_first() {
    let e = assert_valid(b"# TYPE c gauge\nc 1\n# TYPE c counter\nc_total 2\n");
    assert_eq!(e.series(), 1);
    assert_eq!(e.dropped[&Drop::NameClash], 1);
}

#[test]
fn the_strict_reader_sees_what_it_must() {
    // The checker itself: each problem it must find, found.
    let body = "# TYPE a gauge\n# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\na{__name__=\"b\"} 1\na{y=\"\"} 1\nb{p=\"1\",q=\"2\"} 1\nb{q=\"2\",p=\"1\"} 1\n";
    assert_eq!(problems(body).len(), 5, "{:?}", problems(body));
}

/// The text body of a store (the families' lines and headers).
fn body_of(store: &Arc<Store>) -> String {
    let mut body = String::new();
    for part in store.parts(1) {
        part.write_text(&mut body, false).unwrap();
    }
    body
}

fn dropped(store: &Arc<Store>, reason: &str) -> u64 {
    let inner = store.inner.read().unwrap();
    inner
        .dropped
        .get(&("t".to_string(), "check.ps1".to_string(), reason))
        .copied()
        .unwrap_or(0)
}

fn at(minute: u32) -> DateTime<Utc> {
    format!("2025-03-18T21:{minute:02}:00Z").parse().unwrap()
}

/// See: #32 item 5. Two noisy machines report first and fill the rule's total; nine ordinary
/// machines come after. First-come, the nine got 0 of 9 for the ttl. Now each set has at
/// least an equal share of the total: the noisy sets are cut to theirs (`fair_share`), every
/// ordinary machine's sample is served, and the total holds after each transcript.
#[test]
fn a_rules_total_is_shared_fairly_not_first_come() {
    let mut r = rule();
    r.max_total_series = 1000;
    let store = Arc::new(Store::default());
    let noisy: String = (0..500).map(|i| format!("x{{i=\"{i}\"}} 1\n")).collect();
    for m in ["noisy-1", "noisy-2"] {
        let key = ("t".into(), m.into(), "check.ps1".into());
        store.record(key, at(0), 0, &r, extract(&r, noisy.as_bytes()));
    }
    for i in 0..9 {
        let key: SetKey = ("t".into(), format!("ws-{i}"), "check.ps1".into());
        store.record(key.clone(), at(1), 0, &r, extract(&r, b"ok 1\n"));
        assert_eq!(store.get(&key).unwrap().series(), 1, "ws-{i}");
        let total = store.inner.read().unwrap().totals[&("t".into(), "check.ps1".into())];
        assert!(total <= 1000, "{total}");
    }
    let body = body_of(&store);
    assert_eq!(body.matches("mde_script_ok{").count(), 9);
    assert!(dropped(&store, "fair_share") > 0);
    // The state file keeps what is served: a noisy set read back is its share.
    let noisy_1 = ("t".into(), "noisy-1".into(), "check.ps1".into());
    assert!(store.get(&noisy_1).unwrap().series() <= 1000 / 3);
}

/// See: #32 item 5. Series of 16 KB each (label values at their caps): the count bounds let
/// 500 of them through, 8 MB from one transcript. The bytes are bounded too: one transcript
/// gives at most `max_bytes`, a rule holds at most `max_total_bytes`, and what is left out is
/// counted (`max_bytes`, then `fair_share` or `max_total_bytes`).
#[test]
fn script_series_are_bounded_in_bytes_per_transcript_and_per_rule() {
    let mut r = rule();
    r.max_label_length = 1024;
    r.max_bytes = 64 * 1024;
    r.max_total_bytes = 256 * 1024;
    let value = "v".repeat(1000);
    let fat: String = (0..500)
        .map(|i| {
            let labels: Vec<String> = (0..16).map(|k| format!("l{k}=\"{value}\"")).collect();
            format!("x{{i=\"{i}\",{}}} 1\n", labels[..15].join(","))
        })
        .collect();
    let store = Arc::new(Store::default());
    for m in 0..8 {
        let key: SetKey = ("t".into(), format!("ws-{m}"), "check.ps1".into());
        store.record(key.clone(), at(m), 0, &r, extract(&r, fat.as_bytes()));
        let served = body_of(&store).len();
        // The body's sample lines are what the bytes count (about): headers aside, the rule's
        // bound holds after every transcript.
        assert!(served <= 256 * 1024 + 4096, "{served} bytes after ws-{m}");
        assert!(store.get(&key).is_some(), "ws-{m} has its share");
    }
    assert!(dropped(&store, "max_bytes") > 0);
    assert!(dropped(&store, "fair_share") + dropped(&store, "max_total_bytes") > 0);
}

/// Both text bodies of `store`, each checked by the strict reader.
fn assert_store_valid(store: &Arc<Store>) -> String {
    let mut text = String::new();
    for openmetrics in [false, true] {
        let mut body = String::new();
        for part in store.parts(1) {
            part.write_text(&mut body, openmetrics).unwrap();
        }
        assert_eq!(problems(&body), Vec::<String>::new(), "{body}");
        if !openmetrics {
            text = body;
        }
    }
    text
}

/// See: #32 item 3. Two sets (two machines under one rule, then two rules) give one family
/// name with two types, or a counter `c` beside another set's gauge `c_total`: the family held
/// first wins, the later set's clashing family is left out and its samples counted
/// (`name_clash`), its other families kept; the bodies have one `# TYPE` per name. Before,
/// both were held: `# TYPE mde_script_c_total` twice in the text format.
#[test]
fn a_family_name_across_sets_keeps_the_first_held() {
    let r = rule();
    let store = Arc::new(Store::default());
    let key = |m: &str| -> SetKey { ("t".into(), m.into(), "check.ps1".into()) };
    let first = b"# TYPE c counter\nc_total 1\n# TYPE g gauge\ng 1\n";
    store.record(key("ws-1"), at(0), 0, &r, extract(&r, first));
    // A gauge named as the counter's samples, a counter of the gauge's name, and one that
    // agrees with the first (kept).
    let second = b"# TYPE c_total gauge\nc_total 2\n# TYPE g counter\ng_total 3\nok 1\n";
    store.record(key("ws-0"), at(1), 0, &r, extract(&r, second));
    let body = assert_store_valid(&store);
    assert_eq!(
        body.matches("# TYPE mde_script_c_total ").count(),
        1,
        "{body}"
    );
    assert!(body.contains("# TYPE mde_script_c_total counter"), "{body}");
    assert!(body.contains("# TYPE mde_script_g gauge"), "{body}");
    assert!(body.contains("mde_script_ok{"), "{body}");
    let names: Vec<String> = store
        .get(&key("ws-0"))
        .unwrap()
        .families
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["mde_script_ok"]);
    assert_eq!(dropped(&store, "name_clash"), 2);
    // The same set again (a later transcript of ws-0): still left out, counted again.
    store.record(key("ws-0"), at(2), 0, &r, extract(&r, second));
    assert_eq!(dropped(&store, "name_clash"), 4);
    // The first set's own later transcript may change its own family's type: no other set
    // holds it.
    let later = b"# TYPE c counter\nc_total 2\n# TYPE g counter\ng_total 2\n";
    store.record(key("ws-1"), at(3), 0, &r, extract(&r, later));
    assert_store_valid(&store);
    let held = store.get(&key("ws-1")).unwrap();
    assert_eq!(held.families[1].name, "mde_script_g");
    assert_eq!(held.families[1].kind, Kind::Counter);

    // Two rules: a JSON rule's gauge `c_total` after a text rule's counter `c`, in another
    // script: left out the same way. And a restore (a state file written before this rule)
    // keeps the first held too.
    let mut json = super::tests::rule(crate::config::ScriptFormat::Json);
    json.script = "inventory.ps1".into();
    json.metrics = vec![crate::config::JsonMetric {
        name: "c_total".into(),
        path: "c".into(),
        help: None,
    }];
    let jkey: SetKey = ("t".into(), "ws-1".into(), "inventory.ps1".into());
    store.record(
        jkey.clone(),
        at(4),
        0,
        &json,
        extract(&json, b"{\"c\": 5}\n"),
    );
    assert!(store.get(&jkey).is_some_and(|s| s.families.is_empty()));
    let clashing = Set::new(at(5), 0, &json, &extract(&json, b"{\"c\": 5}\n"));
    assert_eq!(clashing.families.len(), 1);
    store.restore(jkey.clone(), clashing);
    assert!(store.get(&jkey).is_some_and(|s| s.families.is_empty()));
    assert_store_valid(&store);
}

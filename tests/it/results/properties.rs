//! Property tests over the three parsers that take input from outside: transcripts (from
//! blob storage), machine-action list pages (from the API) and the configuration file. None
//! may panic whatever the bytes, and hostile items in a page never cost the good ones.
//!
//! Bounded for CI: 64 cases per property by default, `PROPTEST_CASES=10000` for a longer run.
//! See: #13

use std::path::Path;

use mde_liveresponse_exporter::api::model::{parse_action_page, parse_transcript};
use mde_liveresponse_exporter::config::{Config, limits};
use proptest::prelude::*;

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn action(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"LiveResponse","status":"Succeeded","computerDnsName":"m","commands":[{{"index":0,"commandStatus":"Completed","command":{{"type":"RunScript","params":[{{"key":"ScriptName","value":"a.ps1"}}]}}}}]}}"#
    )
}

/// An item that must be skipped: its `status` is not a readable string.
fn hostile_item() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Bytes that are not UTF-8 inside the status string (no quote or backslash, so the
        // string still ends where it should).
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|mut bytes| {
            bytes.retain(|b| *b != b'"' && *b != b'\\');
            let mut item = br#"{"id":"x","type":"LiveResponse","status":""#.to_vec();
            item.push(0xff);
            item.extend_from_slice(&bytes);
            item.extend_from_slice(b"\"}");
            item
        }),
        // A lone surrogate escape.
        (0xd800u32..0xe000).prop_map(|u| format!(
            r#"{{"id":"x","type":"LiveResponse","status":"a\u{u:04x}b"}}"#
        )
        .into_bytes()),
        // Nesting, shallow or far deeper than any recursion limit.
        (1usize..20_000).prop_map(|d| format!(
            r#"{{"id":"x","type":"LiveResponse","status":{}{}}}"#,
            "[".repeat(d),
            "]".repeat(d)
        )
        .into_bytes()),
    ]
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn transcripts_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_transcript(&bytes);
    }

    #[test]
    fn transcripts_round_trip(
        name in ".{0,40}",
        code in any::<i64>(),
        output in any::<String>(),
        errors in any::<String>(),
        bom in any::<bool>(),
    ) {
        let json = serde_json::json!({
            "script_name": name, "exit_code": code,
            "script_output": output, "script_errors": errors,
        });
        let mut bytes = if bom { vec![0xEF, 0xBB, 0xBF] } else { Vec::new() };
        bytes.extend_from_slice(json.to_string().as_bytes());
        let t = parse_transcript(&bytes).unwrap();
        prop_assert_eq!(t.script_name, name);
        prop_assert_eq!(t.exit_code, code);
        prop_assert_eq!(t.script_output, output);
        prop_assert_eq!(t.script_errors, errors);
    }

    #[test]
    fn pages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_action_page(&bytes);
    }

    #[test]
    fn hostile_items_never_cost_the_good_ones(
        layout in proptest::collection::vec(proptest::option::of(hostile_item()), 0..12),
        next in proptest::option::of("[a-z]{1,10}"),
    ) {
        let mut page = b"{\"@odata.context\":\"x\",\"value\":[".to_vec();
        let mut want = Vec::new();
        let mut hostile = 0;
        for (i, item) in layout.iter().enumerate() {
            if i > 0 {
                page.push(b',');
            }
            match item {
                Some(bytes) => {
                    hostile += 1;
                    page.extend_from_slice(bytes);
                }
                None => {
                    let id = format!("good-{i}");
                    page.extend_from_slice(action(&id).as_bytes());
                    want.push(id);
                }
            }
        }
        page.push(b']');
        if let Some(n) = &next {
            page.extend_from_slice(format!(",\"@odata.nextLink\":\"https://h/{n}\"").as_bytes());
        }
        page.push(b'}');
        let p = parse_action_page(&page).unwrap();
        let got: Vec<&str> = p.actions.iter().map(|a| a.id.as_str()).collect();
        prop_assert_eq!(got, want.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(p.invalid.len(), hostile);
        prop_assert_eq!(p.next_link, next.map(|n| format!("https://h/{n}")));
    }

    #[test]
    fn configs_never_panic(text in any::<String>()) {
        let _ = Config::parse(&text, Path::new("p.yml"), &|_| None);
    }

    #[test]
    fn accepted_durations_are_within_bounds(
        n in any::<u64>(),
        unit in prop_oneof![Just("ns"), Just("ms"), Just("s"), Just("m"), Just("h"), Just("d"), Just("w"), Just("y")],
    ) {
        let text = format!(
            "poll_interval: {n}{unit}\nseries_ttl: {n}{unit}\ntenants:\n  - name: t\n    tenant_id: t\n    client_id: c\n    client_secret: s\n"
        );
        if let Ok(c) = Config::parse(&text, Path::new("p.yml"), &|_| None) {
            prop_assert!(c.poll_interval >= limits::POLL_INTERVAL.0);
            prop_assert!(c.poll_interval <= limits::POLL_INTERVAL.1);
            prop_assert!(c.series_ttl <= limits::SERIES_TTL.1);
        }
    }
}

//! Tests of the scenario: determinism, the status timeline, views, transcripts and blobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::generate::SCRIPTS;
use super::*;
use crate::SimConfig;

fn anchor() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T12:00:00.1234567Z")
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn the_same_seed_gives_the_same_tenant() {
    let a = generate(&SimConfig::default(), anchor());
    let b = generate(&SimConfig::default(), anchor());
    let ids = |v: &[SimAction]| {
        v.iter()
            .map(|a| (a.id.clone(), a.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    let c = generate(
        &SimConfig {
            seed: 43,
            ..SimConfig::default()
        },
        anchor(),
    );
    assert_ne!(ids(&a), ids(&c));
}

#[test]
fn the_default_scenario_has_every_status_and_command_shape() {
    let cfg = SimConfig::default();
    let actions = generate(&cfg, anchor());
    assert_eq!(actions.iter().filter(|a| a.is_live_response()).count(), 80);
    assert_eq!(actions.len(), 88);
    let at_start: BTreeSet<&str> = actions
        .iter()
        .map(|a| a.status_at(Duration::ZERO))
        .collect();
    let all = [
        "Cancelled",
        "Failed",
        "InProgress",
        "Pending",
        "Succeeded",
        "TimeOut",
    ];
    assert_eq!(at_start, all.into_iter().collect());
    let kinds: BTreeSet<&str> = actions
        .iter()
        .flat_map(|a| a.commands.iter().map(|c| c.kind))
        .collect();
    assert_eq!(
        kinds,
        ["GetFile", "PutFile", "RunScript"].into_iter().collect()
    );
    let scripts: BTreeSet<String> = actions
        .iter()
        .flat_map(|a| a.commands.iter())
        .filter_map(|c| match &c.blob {
            Some(Blob::Transcript { script, .. }) => Some(script.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(scripts.len(), SCRIPTS.len(), "{scripts:?}");
    assert!(
        actions
            .iter()
            .any(|a| a.commands.iter().filter(|c| c.kind == "RunScript").count() > 1)
    );
    // After `finish_within`, everything is final.
    assert!(actions.iter().all(|a| a.is_final_at(cfg.finish_within)));
    assert!(actions.windows(2).all(|w| w[0].created <= w[1].created));
}

#[test]
fn command_states_follow_the_action_outcome() {
    for a in generate(
        &SimConfig {
            actions: 300,
            ..SimConfig::default()
        },
        anchor(),
    ) {
        let order: Vec<u8> = a
            .commands
            .iter()
            .map(|c| match c.kind {
                "PutFile" => 0,
                "RunScript" => 1,
                _ => 2,
            })
            .collect();
        assert!(order.is_sorted(), "documented command order");
        let st: Vec<&str> = a.commands.iter().map(|c| c.status).collect();
        match a.status {
            "Succeeded" => assert!(st.iter().all(|s| *s == "Completed")),
            "Failed" if a.is_live_response() => {
                let f = st.iter().position(|s| *s == "Failed").unwrap();
                assert!(st[..f].iter().all(|s| *s == "Completed"));
                assert!(st[f + 1..].iter().all(|s| *s == "Created"));
                assert!(!a.commands[f].errors.is_empty());
            }
            _ => assert!(!st.contains(&"Failed")),
        }
        for c in &a.commands {
            assert_eq!(
                c.blob.is_some(),
                c.status == "Completed" && c.kind != "PutFile"
            );
            if let (Some(s), Some(e)) = (c.start, c.end) {
                assert!(a.created <= s && s < e && e <= a.finished, "{a:?}");
            }
            if let Some(Blob::Transcript {
                bytes,
                malformed,
                exit_code,
                ..
            }) = &c.blob
            {
                let parsed = serde_json::from_slice::<serde_json::Value>(bytes);
                assert_eq!(parsed.is_err(), *malformed);
                if let Ok(v) = parsed {
                    assert_eq!(v["exit_code"], *exit_code);
                    assert!(
                        v["script_output"]
                            .as_str()
                            .unwrap()
                            .starts_with("Transcript started, output file is C:\\ProgramData\\")
                    );
                }
            }
        }
    }
}

// See: #9
#[test]
fn queued_and_not_run_shapes_are_added_without_changing_the_rest() {
    let base = generate(&SimConfig::default(), anchor());
    let cfg = SimConfig {
        queued_for_days: 4,
        not_run: 8,
        ..SimConfig::default()
    };
    let more = generate(&cfg, anchor());
    assert_eq!(more.len(), base.len() + 12);
    for a in &base {
        assert!(
            more.iter().any(|b| b.id == a.id),
            "the seed's scenario is kept"
        );
    }
    let queued: Vec<&SimAction> = more
        .iter()
        .filter(|a| anchor() - a.created > chrono::Duration::days(1))
        .collect();
    assert_eq!(queued.len(), 4);
    for a in &queued {
        assert_eq!(a.status_at(Duration::ZERO), "Pending");
        assert!(a.is_final_at(cfg.finish_within));
    }
    assert!(queued.iter().any(|a| a.status == "TimeOut"));
    let failed_before_running = more
        .iter()
        .flat_map(|a| a.commands.iter())
        .filter(|c| c.kind == "RunScript" && c.status == "Failed" && c.start.is_none())
        .count();
    assert_eq!(failed_before_running, 2);
}

#[test]
fn the_entity_keeps_the_api_field_order() {
    let actions = generate(&SimConfig::default(), anchor());
    let text = serde_json::to_string(&actions[0].view(Duration::ZERO, Some("ctx".into()))).unwrap();
    let fields = [
        "@odata.context",
        "id",
        "type",
        "title",
        "requestor",
        "requestorComment",
        "status",
        "machineId",
        "computerDnsName",
        "creationDateTimeUtc",
        "lastUpdateDateTimeUtc",
        "cancellationRequestor",
        "cancellationComment",
        "cancellationDateTimeUtc",
        "errorHResult",
        "scope",
        "externalId",
        "requestSource",
        "relatedFileInfo",
        "commands",
        "troubleshootInfo",
    ];
    let pos: Vec<usize> = fields
        .iter()
        .map(|f| {
            text.find(&format!("\"{f}\":"))
                .unwrap_or_else(|| panic!("{f} in {text}"))
        })
        .collect();
    assert!(pos.is_sorted(), "{text}");
    assert!(!text.contains("\"created\""));
    assert_eq!(iso(anchor()), "2026-01-01T12:00:00.1234567Z");
}

#[test]
fn the_gzip_bomb_is_small_and_inflates_to_what_it_claims() {
    let bomb = gzip_bomb(8);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&bomb[..])
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out.len(), 8 << 20);
    assert!(out.iter().all(|b| *b == 0));
}

// See: #20
#[test]
fn a_fleet_waits_on_offline_devices_and_a_tenth_comes_online() {
    let base = generate(&SimConfig::default(), anchor());
    let cfg = SimConfig {
        fleet: 200,
        ..SimConfig::default()
    };
    let more = generate(&cfg, anchor());
    assert_eq!(more.len(), base.len() + 200);
    let fleet: Vec<&SimAction> = more
        .iter()
        .filter(|a| a.dns.starts_with("fleet-"))
        .collect();
    assert_eq!(fleet.len(), 200);
    let machines: BTreeSet<&str> = fleet.iter().map(|a| a.machine_id.as_str()).collect();
    assert_eq!(machines.len(), 200, "a device of its own each");
    for a in &fleet {
        assert_eq!(a.status_at(Duration::ZERO), "Pending");
        assert!(anchor() - a.created <= chrono::Duration::minutes(90));
    }
    let online: Vec<&&SimAction> = fleet.iter().filter(|a| a.status == "Succeeded").collect();
    assert_eq!(online.len(), 20);
    for a in &online {
        assert!(a.is_final_at(cfg.finish_within));
        assert_eq!(a.commands[0].status, "Completed");
        assert!(a.commands[0].blob.is_some());
    }
    // The others stay Pending until their 2-hour queue ends, then time out, never started.
    for a in fleet.iter().filter(|a| a.status != "Succeeded") {
        assert_eq!(a.status, "TimeOut");
        assert_eq!(a.status_at(Duration::from_secs(29 * 60)), "Pending");
        assert!(a.is_final_at(Duration::from_secs(2 * 3600)));
        assert_eq!(a.commands[0].status, "Created");
    }
}

// See: #21. The scripts of the script_metrics scenario print their findings amid the noise;
// the rest of the tenant is drawn as without it.
#[test]
fn script_metrics_change_what_two_scripts_print_and_nothing_else() {
    let cfg = SimConfig {
        not_run: 4,
        queued_for_days: 3,
        ..SimConfig::default()
    };
    let plain = generate(&cfg, anchor());
    let with = generate(
        &SimConfig {
            script_metrics: true,
            ..cfg
        },
        anchor(),
    );
    let shape = |v: &[SimAction]| {
        v.iter()
            .flat_map(|a| {
                a.commands.iter().map(move |c| match &c.blob {
                    Some(Blob::Transcript {
                        script, exit_code, ..
                    }) => (a.id.clone(), a.status, c.status, script.clone(), *exit_code),
                    _ => (a.id.clone(), a.status, c.status, String::new(), 0),
                })
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&plain), shape(&with));
    let output = |bytes: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v["script_output"].as_str().unwrap().to_string()
    };
    let (mut text, mut json) = (0, 0);
    for (a, b) in plain.iter().zip(&with) {
        for (c, d) in a.commands.iter().zip(&b.commands) {
            let (
                Some(Blob::Transcript {
                    bytes: before,
                    printed: none,
                    malformed: false,
                    ..
                }),
                Some(Blob::Transcript {
                    bytes,
                    script,
                    printed,
                    ..
                }),
            ) = (&c.blob, &d.blob)
            else {
                continue;
            };
            assert!(none.is_empty());
            let out = output(bytes);
            match script.as_str() {
                TEXT_SCRIPT => {
                    text += 1;
                    assert_eq!(printed.len(), 3);
                    assert!(out.starts_with("Transcript started, output file is C:\\"));
                    assert!(out.contains("# TYPE bitlocker_protection_on gauge\n"));
                    for (name, value) in printed {
                        let line = out
                            .lines()
                            .find(|l| {
                                l.starts_with(&format!("{name}{{"))
                                    || l.starts_with(&format!("{name} "))
                            })
                            .unwrap();
                        assert!(line.ends_with(&format!(" {value}")), "{line}");
                    }
                }
                JSON_SCRIPT => {
                    json += 1;
                    let at = out.find("{\n").unwrap();
                    let end = out.rfind("}\n").unwrap();
                    let v: serde_json::Value = serde_json::from_str(&out[at..=end]).unwrap();
                    for (path, value) in printed {
                        let mut x = &v;
                        for k in path.split('.') {
                            x = &x[k];
                        }
                        let got = x.as_i64().or(x.as_bool().map(i64::from)).unwrap();
                        assert_eq!(got, *value, "{path}");
                    }
                }
                _ => {
                    assert!(printed.is_empty());
                    assert_eq!(out, output(before));
                }
            }
        }
    }
    assert!(text > 0 && json > 0, "{text} {json}");
}

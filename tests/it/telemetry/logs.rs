//! Log lines of the real binary: flat JSON and logfmt (`ts`, `level`, `msg`, then the fields,
//! each key once), one start-up line, one line per tenant and poll, the log flags on
//! `simulate`, and an unknown level word refused with the valid ones. See: #12

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{BIN, Binary, DEMO_ARGS};

/// A logfmt line as (key, value) pairs in order; quoted values are unescaped.
fn logfmt(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some('t') => value.push('\t'),
                        Some('r') => value.push('\r'),
                        Some(other) => value.push(other),
                        None => {}
                    },
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ' ' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn keys_once(pairs: &[(String, String)], line: &str) {
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in pairs {
        assert!(seen.insert(k.clone()), "key {k} repeated in {line}");
    }
}

#[test]
fn an_unknown_level_word_is_an_error_listing_the_valid_ones() {
    let out = Command::new(BIN)
        .args(["--demo", "--log.level", "verbose"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "unknown log level \"verbose\": use one of off, error, warn, info, debug, trace"
        ),
        "{err}"
    );
}

#[test]
fn json_lines_are_flat_with_a_start_up_line_and_a_line_per_poll() {
    let mut exporter = Binary::demo(&[]);
    let addr = exporter.addr;
    // Wait until a poll has ended with transcripts counted (its success is recorded last).
    for _ in 0..300 {
        let body = reqwest::blocking::get(format!("http://{addr}/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        if body.contains("mde_liveresponse_script_runs_total{")
            && body.contains("mde_exporter_poll_success{tenant=\"demo\"} 1")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(exporter.terminate(), Some(0));
    let logs = exporter.logs();
    let lines: Vec<(&String, serde_json::Value)> = logs
        .iter()
        .filter_map(|l| Some((l, serde_json::from_str(l).ok()?)))
        .collect();
    assert!(!lines.is_empty(), "{logs:?}");
    for (raw, v) in &lines {
        assert!(raw.starts_with("{\"ts\":\""), "{raw}");
        let level = raw.find(",\"level\":").unwrap_or(usize::MAX);
        let msg = raw.find(",\"msg\":").unwrap_or(usize::MAX);
        assert!(
            level < msg && msg < usize::MAX,
            "ts, level, msg first: {raw}"
        );
        assert!(
            v.get("fields").is_none() && v.get("span").is_none(),
            "{raw}"
        );
        // A key written twice would be visible in the raw text (serde keeps the last).
        let obj = v.as_object().unwrap();
        for k in obj.keys() {
            assert_eq!(
                raw.matches(&format!("\"{k}\":")).count(),
                1,
                "{k} twice in {raw}"
            );
        }
    }
    let find = |msg: &str| {
        lines
            .iter()
            .find(|(_, v)| v["msg"] == msg)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {msg:?} line in {logs:?}"))
    };
    let start = find("exporter listening");
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert!(start["revision"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(start["tls"], false);
    assert_eq!(start["tenants"], "demo");
    assert_eq!(start["addr"], addr.to_string());

    let poll = find("poll done");
    assert_eq!(poll["level"], "info");
    assert_eq!(poll["tenant"], "demo");
    for key in [
        "discovered",
        "fetched",
        "waiting",
        "quota_left",
        "duration_s",
    ] {
        assert!(poll[key].is_number(), "{key} in {poll}");
    }
    assert!(
        lines
            .iter()
            .any(|(_, v)| v["msg"] == "poll done" && v["fetched"].as_u64() > Some(0)),
        "a poll that fetched results: {logs:?}"
    );
    // The transcript event: flat, with the poll's and the result's span fields once.
    let t = lines
        .iter()
        .find(|(_, v)| v["event"] == "transcript")
        .map(|(_, v)| v.clone())
        .expect("a transcript event");
    assert_eq!(t["tenant"], "demo");
    assert!(
        t["exit_code"].is_number() && t["action_id"].is_string(),
        "{t}"
    );
}

/// Start `args` with logfmt on stderr; return the child and its first `n` lines that match.
fn logfmt_lines(args: &[&str], until: &str, n: usize) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--log.format", "logfmt"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    let mut matched = 0;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains(until) {
            matched += 1;
        }
        lines.push(line);
        if matched >= n || lines.len() > 10_000 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn logfmt_lines_repeat_no_key() {
    let lines = logfmt_lines(&DEMO_ARGS, "msg=\"poll done\"", 1);
    assert!(
        lines.iter().any(|l| l.contains("event=transcript")),
        "{lines:?}"
    );
    for line in &lines {
        let pairs = logfmt(line);
        let keys: Vec<&str> = pairs.iter().take(3).map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ts", "level", "msg"], "{line}");
        keys_once(&pairs, line);
    }
    let poll = lines
        .iter()
        .map(|l| logfmt(l))
        .find(|p| p.iter().any(|(k, v)| k == "msg" && v == "poll done"))
        .expect("a poll line");
    assert!(
        poll.iter().any(|(k, v)| k == "tenant" && v == "demo"),
        "{poll:?}"
    );
}

#[test]
fn simulate_takes_the_log_flags() {
    let lines = logfmt_lines(
        &[
            "simulate",
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.level",
            "info",
        ],
        "simulator listening",
        1,
    );
    let line = lines
        .iter()
        .find(|l| l.contains("simulator listening"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let pairs = logfmt(line);
    assert_eq!(pairs[0].0, "ts", "{line}");
    assert!(
        pairs
            .iter()
            .any(|(k, v)| k == "msg" && v.starts_with("simulator listening")),
        "{line}"
    );
}

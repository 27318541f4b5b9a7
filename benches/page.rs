//! List-page benchmark (not a test, #32 leftover "poison.rs walks each item a third time"):
//! the cost of `api::model::parse_action_page` on a page of `BENCH_ITEMS` actions (default
//! 10,000, the page size discovery asks for), shaped like the API's documented action (two
//! commands, the fields the exporter does not read included), and on a page whose items carry
//! escapes (`\"`, `\\`, `\u00e9`, a surrogate pair) in their strings. Each page is parsed
//! `BENCH_RUNS` times (default 30); it prints the p50 and max per page and per item. Run it
//! with `cargo bench --bench page`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use mde_liveresponse_exporter::api::model::parse_action_page;

mod common;

use common::env_or;

fn action(i: usize, escapes: bool) -> String {
    let comment = if escapes {
        r#"collect \"triage\" from C:\\Temp \u00e9t\u00e9 \ud83d\ude00"#
    } else {
        "collect triage"
    };
    format!(
        r#"{{"id": "6f0c2b1e-8d3a-4c55-9a0e-{i:012x}", "type": "LiveResponse", "title": null,
  "requestor": "prom-mde-exporter", "requestorComment": "{comment}", "status": "Succeeded",
  "machineId": "1e5bc9d7e413ddd7902c2932e418702b{i:08x}", "computerDnsName": "ws-{i:05}.contoso.com",
  "creationDateTimeUtc": "2025-03-18T21:02:00.3538594Z", "lastUpdateDateTimeUtc": "2025-03-18T21:04:41.93163Z",
  "cancellationRequestor": null, "cancellationComment": null, "cancellationDateTimeUtc": null,
  "errorHResult": 0, "scope": null, "externalId": null, "requestSource": "PublicApi", "relatedFileInfo": null,
  "commands": [
    {{"index": 0, "startTime": "2025-03-18T21:04:01.92Z", "endTime": "2025-03-18T21:04:04.693Z",
     "commandStatus": "Completed", "errors": [],
     "command": {{"type": "RunScript", "params": [{{"key": "ScriptName", "value": "triage.ps1"}}, {{"key": "Args", "value": "-Quick"}}]}}}},
    {{"index": 1, "startTime": null, "endTime": null, "commandStatus": "Completed", "errors": [],
     "command": {{"type": "GetFile", "params": [{{"key": "Path", "value": "C:\\Windows\\Temp\\triage.zip"}}]}}}}
  ],
  "troubleshootInfo": null}}"#
    )
}

fn page(n: usize, escapes: bool) -> Vec<u8> {
    let items: Vec<String> = (0..n).map(|i| action(i, escapes)).collect();
    format!(
        r#"{{"@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions", "value": [{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn main() {
    let n: usize = env_or("BENCH_ITEMS", 10_000);
    let runs: usize = env_or("BENCH_RUNS", 30);
    println!("page benchmark: {n} actions a page, {runs} runs a shape");
    for (shape, escapes) in [("plain", false), ("escapes", true)] {
        let bytes = page(n, escapes);
        let mut times: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let p = parse_action_page(black_box(&bytes)).unwrap();
            times.push(t.elapsed());
            assert_eq!(p.actions.len(), n, "{:?}", p.invalid.first());
        }
        times.sort();
        let p50 = times[runs / 2];
        let max = times[runs - 1];
        println!(
            "{shape:>8}: {:.1} MB, p50 {:.1} ms ({:.2} us an item), max {:.1} ms",
            bytes.len() as f64 / 1e6,
            p50.as_secs_f64() * 1e3,
            p50.as_secs_f64() * 1e6 / n as f64,
            max.as_secs_f64() * 1e3
        );
    }
}

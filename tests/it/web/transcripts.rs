//! `GET /transcripts` (#22 item 1): the latest transcript of a machine and script from the
//! excerpts kept in the state file, as JSON or escaped HTML, under the redaction policy.

use std::time::Duration;

use crate::common::*;
use chrono::{TimeZone, Utc};
use mde_liveresponse_exporter::record::excerpt::Excerpt;
use mde_liveresponse_exporter::record::state::{LastRun, ResultKey, State};
use mde_sim::SimConfig;

const EXTERNAL: &str = "https://mde.example/exporter";

fn scenario(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        machines: 4,
        actions: 10,
        finish_within: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

async fn json(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value, String) {
    let (status, _, body) = get(addr, path, Some("application/json")).await;
    let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (status, v, body)
}

fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The transcript page of `machine` and `script` of the simulator's tenant.
fn page(machine: &str, script: &str) -> String {
    format!(
        "/transcripts?tenant=sim&machine={}&script={}",
        q(machine),
        q(script)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_transcript_follows_the_redaction_policy() {
    // See: #22
    mde_liveresponse_exporter::app::web::set_external_url(Some(EXTERNAL.to_string()));
    for (mode, seed) in [("truncate", 301), ("hash", 302), ("drop", 303)] {
        let (sim, addr) = start_sim(scenario(seed)).await;
        all_final(&sim).await;
        let policy = format!("transcript_log:\n  output: {mode}\n  max_bytes: 40\n");
        let yaml = config_yaml(&sim, addr, sim.credentials().2, "", &policy);
        let exporter = start_exporter(parse_config(&yaml)).await;
        let a = exporter.addr;
        settled(&sim, a).await;
        let latest = sim.truth().last_by_machine_script();
        let ((machine, script), t) = latest
            .iter()
            .find(|(_, t)| !t.malformed)
            .expect("a well-formed transcript");
        let path = page(machine, script);
        let (status, v, body) = json(a, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(v["tenant"], "sim");
        assert_eq!(v["machine"], machine.as_str());
        assert_eq!(v["script"], script.as_str());
        assert_eq!(v["action_id"], t.action_id.as_str());
        assert_eq!(v["index"], t.index);
        assert_eq!(v["exit_code"], t.exit_code);
        assert_eq!(v["errors_present"], t.errors_present);
        assert_eq!(
            v["completed_at"]
                .as_str()
                .map(|s| s.parse::<chrono::DateTime<Utc>>().unwrap()),
            Some(t.end_time)
        );
        assert!(v["retrieved_at"].is_string(), "{body}");
        assert_eq!(v["redaction"], mode);
        assert_eq!(
            v["url"],
            format!(
                "{EXTERNAL}/transcripts?tenant=sim&machine={}&script={}&action={}&index={}",
                q(machine),
                q(script),
                q(&t.action_id),
                t.index
            )
        );
        if mode == "truncate" {
            // The status page links each recent transcript to the page (#22).
            let (_, _, status_page) = get(a, "/", None).await;
            let prefix = format!("href=\"{EXTERNAL}/transcripts?tenant=sim&amp;machine=");
            let at = status_page
                .find(&prefix)
                .expect("a transcript link on the status page");
            let href = &status_page[at + "href=\"".len()..];
            let href = &href[..href.find('"').unwrap()];
            let path = href.strip_prefix(EXTERNAL).unwrap().replace("&amp;", "&");
            let (linked, _, body) = json(a, &path).await;
            assert_eq!(linked, 200, "{path}: {body}");
        }
        let output = v["output"].as_str();
        match mode {
            "truncate" => {
                let o = output.unwrap();
                assert!(o.starts_with("Transcript started"), "{o}");
                assert!(o.len() <= 40 + '…'.len_utf8(), "{o}");
            }
            "hash" => {
                assert!(output.is_some_and(|o| o.starts_with("sha256:")), "{body}");
                assert!(
                    v["errors"]
                        .as_str()
                        .is_some_and(|o| o.starts_with("sha256:")),
                    "{body}"
                );
            }
            _ => {
                assert!(
                    v.get("output").is_none() && v.get("errors").is_none(),
                    "{body}"
                );
                let (_, _, page) = get(a, &path, None).await;
                assert!(
                    page.contains("dropped by the redaction policy (drop)"),
                    "{page}"
                );
            }
        }
        // The one retained run, by its action and index; another is not retained.
        let (status, _, _) = json(
            a,
            &format!("{path}&action={}&index={}", q(&t.action_id), t.index),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _, body) = json(a, &format!("{path}&action=older-action")).await;
        assert_eq!(status, 404);
        assert!(
            body.contains("is not retained: only the latest run per machine and script is kept"),
            "{body}"
        );
        exporter.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_transcripts_survive_a_restart_and_their_text_is_escaped() {
    // See: #22. The state file holds a run whose script printed HTML, as a hostile script
    // would; the exporter started on that file shows it without a poll having found it.
    mde_liveresponse_exporter::app::web::set_external_url(Some(EXTERNAL.to_string()));
    let (sim, addr) = start_sim(SimConfig {
        actions: 0,
        ..scenario(310)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.redb");
    let machine = "pc-1.contoso.example\"><img src=x onerror=alert(2)>";
    let script = "<b>evil</b>.ps1";
    let output = "<script>alert(1)</script>\n<a href=\"javascript:alert(1)\">click</a>\n";
    // An hour ago, so the series is well inside the default series_ttl (24h).
    let completed = Utc.timestamp_opt(Utc::now().timestamp() - 3600, 0).unwrap();
    let retrieved = completed + chrono::Duration::seconds(60);
    {
        let mut state = State::open(Some(&state_path)).unwrap();
        let run = LastRun {
            end_time: completed,
            exit_code: 3,
            errors_present: true,
            action_id: "action-1".into(),
            excerpt: Some(Excerpt {
                index: 0,
                retrieved_at: retrieved,
                redaction: "none".into(),
                output: Some(output.into()),
                errors: Some("</pre><script>alert(3)</script>".into()),
            }),
            signature: None,
        };
        let key = ResultKey {
            tenant: "sim".into(),
            action_id: "action-1".into(),
            index: 0,
        };
        state
            .commit_result(
                key,
                Some((("sim".into(), machine.into(), script.into()), run)),
            )
            .unwrap();
    }
    let global = format!("state_path: {}\n", state_path.display());
    let yaml = config_yaml(&sim, addr, sim.credentials().2, "", &global);
    let exporter = start_exporter(parse_config(&yaml)).await;
    let a = exporter.addr;
    let path = page(machine, script);

    let (status, v, body) = json(a, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(v["output"], output);
    assert_eq!(v["exit_code"], 3);
    let time = |k: &str| {
        v[k].as_str()
            .map(|s| s.parse::<chrono::DateTime<Utc>>().unwrap())
    };
    assert_eq!(time("completed_at"), Some(completed));
    assert_eq!(time("retrieved_at"), Some(retrieved));

    let resp = reqwest::get(format!("http://{a}{path}")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    let page = resp.text().await.unwrap();
    for raw in [
        "<script",
        "<img",
        "<b>",
        "href=\"javascript:",
        "</pre><script",
    ] {
        assert!(
            !page.contains(raw),
            "{raw} is on the page unescaped:\n{page}"
        );
    }
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;a href=&quot;javascript:alert(1)&quot;&gt;click&lt;/a&gt;"),
        "{page}"
    );
    assert!(page.contains("&lt;b&gt;evil&lt;/b&gt;.ps1"), "{page}");
    // The only link is the page's own, under the external URL, its values percent-encoded.
    assert_eq!(page.matches("<a ").count(), 1, "{page}");
    assert!(
        page.contains(&format!(
            "<a href=\"{EXTERNAL}/transcripts?tenant=sim&amp;machine="
        )),
        "{page}"
    );

    // 404s say why; 400 without the three parameters.
    let (status, _, body) = get(a, "/transcripts?tenant=sim&machine=pc-9&script=x.ps1", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        "no transcript of \"x.ps1\" on \"pc-9\" (tenant \"sim\") is kept: never retrieved, or expired (no run within series_ttl) or evicted (max_series)\n"
    );
    let (status, _, body) = get(a, "/transcripts?tenant=other&machine=m&script=s", None).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        "unknown tenant \"other\": no tenant of that name is served here\n"
    );
    let (status, _, body) = get(a, "/transcripts?tenant=sim", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "tenant, machine and script are required: /transcripts?tenant=T&machine=M&script=S\n"
    );
    exporter.shutdown().await.unwrap();
}

/// A stricter `transcript_log` reaches what is already kept: after a reload to `drop` the
/// page shows no text, and the state file no longer holds it (a restart reads none).
/// See: #32 item 7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stricter_policy_reaches_the_kept_transcripts_and_the_state_file() {
    let (sim, addr) = start_sim(scenario(307)).await;
    all_final(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.redb");
    let secret = sim.credentials().2.to_string();
    let global = |mode: &str| {
        format!(
            "state_path: {}\ntranscript_log:\n  output: {mode}\n",
            state_path.display()
        )
    };
    let loose = parse_config(&config_yaml(&sim, addr, &secret, "", &global("none")));
    let strict = parse_config(&config_yaml(&sim, addr, &secret, "", &global("drop")));
    let loader: mde_liveresponse_exporter::app::Loader =
        std::sync::Arc::new(move || Ok(strict.clone()));
    let exporter = start_exporter_with_loader(loose, loader).await;
    let a = exporter.addr;
    settled(&sim, a).await;
    let latest = sim.truth().last_by_machine_script();
    let ((machine, script), _) = latest
        .iter()
        .find(|(_, t)| !t.malformed)
        .expect("a well-formed transcript");
    let path = page(machine, script);
    let (_, v, body) = json(a, &path).await;
    assert_eq!(v["redaction"], "none", "{body}");
    assert!(v["output"].is_string(), "{body}");
    exporter.reload().await.unwrap();
    let (status, v, body) = json(a, &path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(v["redaction"], "drop", "{body}");
    assert!(v["output"].is_null() && v["errors"].is_null(), "{body}");
    exporter.shutdown().await.unwrap();
    let state = State::open(Some(&state_path)).unwrap();
    let texts: usize = state
        .last_runs()
        .filter_map(|(_, r)| r.excerpt.as_ref())
        .map(|e| usize::from(e.output.is_some()) + usize::from(e.errors.is_some()))
        .sum();
    assert_eq!(
        texts, 0,
        "the state file holds no text after the reload to drop"
    );
}

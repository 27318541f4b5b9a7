//! Injected faults and delays, the truth helpers and time scaling.

use super::*;

#[tokio::test]
async fn injected_faults_answer_with_each_services_error_shape() {
    let s = start(quick(SimConfig::default())).await;
    let f = s.sim.faults();
    f.fail_next("token", 503, 1);
    let a = s.token_v2(&s.sim.config().client_secret.clone()).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["error"], "temporarily_unavailable");
    let token = s.token().await;
    s.all_final().await;

    f.fail_next("list_machine_actions", 500, 1);
    f.throttle_next("list_machine_actions", 1, None);
    f.throttle_next("list_machine_actions", 1, Some(7));
    f.malformed_api("list_machine_actions", 1);
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!(
        (a.status, a.json()["error"]["code"].as_str()),
        (500, Some("InternalServerError"))
    );
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!((a.status, a.header("retry-after")), (429, None));
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!((a.status, a.header("retry-after")), (429, Some("7")));
    let a = s.get(&token, "/api/machineactions").await;
    assert_eq!(a.status, 200);
    assert!(serde_json::from_slice::<Value>(&a.body).is_err());
    assert_eq!(s.get(&token, "/api/machineactions").await.status, 200);
    assert_eq!(s.sim.stats().throttled["list_machine_actions"], 2);

    let truth = s.sim.truth();
    let t = truth.transcripts.iter().find(|t| !t.malformed).unwrap();
    let url = s.link(&token, &t.action_id, t.index).await.json()["value"]
        .as_str()
        .unwrap()
        .to_string();
    f.fail_next("download", 500, 1);
    f.blob_fault(BlobFault::NotFound, 1);
    f.blob_fault(BlobFault::Garbage, 1);
    f.blob_fault(BlobFault::Huge(300_000), 1);
    f.blob_fault(BlobFault::GzipBomb, 1);
    f.blob_fault(BlobFault::Truncated, 1);
    assert_storage_error(&s.download(&url).await, 500, "InternalError");
    assert_storage_error(&s.download(&url).await, 404, "BlobNotFound");
    let garbage = s.download(&url).await;
    assert_eq!(garbage.status, 200);
    assert!(serde_json::from_slice::<Value>(&garbage.body).is_err());
    let huge = s.download(&url).await;
    assert_eq!(huge.body.len(), 300_000);
    assert_eq!(huge.header("content-length"), Some("300000"));
    let v: Value = serde_json::from_slice(&huge.body).unwrap();
    assert_eq!(v["exit_code"], 0);
    let bomb = s.download(&url).await;
    assert!(bomb.body.len() < 2 << 20, "{}", bomb.body.len());
    let mut head = vec![0u8; 1 << 20];
    flate2::read::GzDecoder::new(&bomb.body[..])
        .read_exact(&mut head)
        .unwrap();
    let truncated = s.http.get(&url).send().await.unwrap();
    assert_eq!(truncated.status(), 200);
    assert!(truncated.bytes().await.is_err(), "the body breaks off");
    // Faulted answers are not downloads; the next one is the real blob.
    assert!(
        !s.sim
            .stats()
            .downloads
            .contains_key(&(t.action_id.clone(), t.index))
    );
    let real = s.download(&url).await;
    assert_eq!(real.json()["script_name"], t.script.as_str());
    assert_eq!(s.sim.stats().downloads[&(t.action_id.clone(), t.index)], 1);
    assert_eq!(s.sim.stats().requests["download"], 7);
}

#[tokio::test]
async fn truth_helpers_agree_with_each_other() {
    let s = start(quick(SimConfig::default())).await;
    s.all_final().await;
    let truth = s.sim.truth();
    assert_eq!(truth.actions_by_status().values().sum::<u64>(), 80);
    assert!(
        truth
            .actions_by_status()
            .keys()
            .all(|k| ["Succeeded", "Failed", "TimeOut", "Cancelled"].contains(&k.as_str()))
    );
    let completed_runs = truth
        .actions
        .iter()
        .flat_map(|a| a.commands.iter())
        .filter(|(k, st)| k == "RunScript" && st == "Completed")
        .count();
    assert_eq!(completed_runs, truth.transcripts.len());
    let ok = truth.transcripts.iter().filter(|t| !t.malformed).count() as u64;
    assert_eq!(truth.runs_by_script().values().sum::<u64>(), ok);
    assert!(
        !truth
            .runs_by_script()
            .contains_key(scenario::MALFORMED_SCRIPT)
    );
    let last = truth.last_by_machine_script();
    for ((machine, script), t) in &last {
        assert!(
            truth
                .transcripts
                .iter()
                .filter(|o| !o.malformed && &o.machine == machine && &o.script == script)
                .all(|o| o.end_time <= t.end_time)
        );
    }
    let pairs: BTreeSet<(&str, &str)> = truth
        .transcripts
        .iter()
        .filter(|t| !t.malformed)
        .map(|t| (t.machine.as_str(), t.script.as_str()))
        .collect();
    assert_eq!(pairs.len(), last.len());
}

#[test]
fn time_scaling_shrinks_every_clock_driven_duration() {
    let c = SimConfig::default().time_scaled(60.0);
    assert_eq!(c.minute, Duration::from_secs(1));
    assert_eq!(c.hour, Duration::from_secs(60));
    assert_eq!(c.link_ttl, Duration::from_secs(30));
    assert_eq!(c.token_ttl, Duration::from_secs_f64(3599.0 / 60.0));
    assert_eq!(c.finish_within, Duration::from_secs(1));
    // The scenario's past is not clock-driven.
    assert_eq!(c.history, SimConfig::default().history);
    assert_eq!(
        SimConfig::default().time_scaled(0.0).minute,
        Duration::from_secs(60)
    );
}

#[tokio::test(start_paused = true)]
async fn delays_hold_the_answer_on_the_simulator_clock() {
    let s = start(SimConfig::default()).await;
    let token = s.token().await;
    s.sim
        .faults()
        .delay("get_machine_action", Duration::from_secs(30));
    let id = s.sim.inner.actions[0].id.clone();
    let t0 = Instant::now();
    let a = s.get(&token, &format!("/api/machineactions/{id}")).await;
    assert_eq!(a.status, 200);
    assert!(Instant::now() - t0 >= Duration::from_secs(30));
    s.sim.faults().delay("get_machine_action", Duration::ZERO);
}

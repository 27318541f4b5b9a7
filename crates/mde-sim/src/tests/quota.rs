//! The quota windows: per-endpoint 429s, the hourly window, a steady noisy neighbour.

use super::*;

#[tokio::test]
async fn the_quota_answers_429_with_retry_after_per_endpoint() {
    let s = start(SimConfig {
        per_minute: 5,
        ..SimConfig::default()
    })
    .await;
    let token = s.token().await;
    for _ in 0..5 {
        assert_eq!(
            s.get(&token, "/api/machineactions?$top=1").await.status,
            200
        );
    }
    let a = s.get(&token, "/api/machineactions?$top=1").await;
    assert_eq!(a.status, 429);
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
    let e = &a.json()["error"];
    assert_eq!(e["code"], "429");
    assert_eq!(
        e["message"],
        "API calls quota exceeded! maximum allowed 5 per 00:01:00"
    );
    assert_eq!(e["target"].as_str().unwrap().len(), 36);
    // Each endpoint has its own windows.
    let id = s.sim.truth().actions[0].id.clone();
    assert_eq!(
        s.get(&token, &format!("/api/machineactions/{id}"))
            .await
            .status,
        200
    );
    let stats = s.sim.stats();
    assert_eq!(stats.throttled["list_machine_actions"], 1);
    assert_eq!(stats.requests["list_machine_actions"], 6);
    assert!(!stats.throttled.contains_key("get_machine_action"));

    // A neighbour on the same app registration spends the get window.
    s.sim.faults().spend_quota("get_machine_action", 10);
    assert_eq!(
        s.get(&token, &format!("/api/machineactions/{id}"))
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn the_hourly_window_and_a_scaled_minute() {
    let s = start(SimConfig {
        per_minute: 100,
        per_hour: 3,
        ..SimConfig::default().time_scaled(60.0)
    })
    .await;
    assert_eq!(s.sim.config().minute, Duration::from_secs(1));
    let token = s.token().await;
    for _ in 0..3 {
        assert_eq!(
            s.get(&token, "/api/machineactions?$top=1").await.status,
            200
        );
    }
    let a = s.get(&token, "/api/machineactions?$top=1").await;
    assert_eq!(a.status, 429);
    assert_eq!(
        a.json()["error"]["message"],
        "API calls quota exceeded! maximum allowed 3 per 00:01:00"
    );
    assert_eq!(a.header("retry-after"), Some("60"));
}

#[tokio::test(start_paused = true)]
async fn a_noisy_neighbour_spends_each_quota_steadily_but_never_beyond_it() {
    let sim = Simulator::new(SimConfig {
        per_minute: 20,
        ..SimConfig::default()
    });
    sim.faults().noisy_neighbour(30);
    let used = |ep: &'static str| {
        let key = (sim.config().client_id.clone(), ep);
        let mut st = sim.inner.lock();
        st.throttles
            .get_mut(&key)
            .map_or((0, 0), |t| t.used(Instant::now()))
    };
    // One call at once, then one every two seconds.
    tokio::time::sleep(Duration::from_millis(20_500)).await;
    for ep in endpoints::QUOTA_ENDPOINTS {
        assert_eq!(used(ep), (11, 11), "{ep}");
    }
    // Refused calls spend nothing: the calls at 40..58 s are refused, the one at 60 s gets
    // the slot the call at 0 s freed.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(used(endpoints::LIST), (20, 21));
    drop(sim);
}

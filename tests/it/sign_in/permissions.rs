//! The token's `roles` claim is read: a missing application permission is shown as
//! `mde_exporter_permission_missing`, on the status page and in `/-/ready`'s reason; either
//! `Machine.Read.All` or `Machine.ReadWrite.All` will do (the documentation disagrees), and
//! `Machine.LiveResponse` alone is not enough to read results. See: #10

use std::time::Duration;

use crate::common::*;
use mde_sim::SimConfig;

async fn exporter_with_roles(
    seed: u64,
    roles: &[&str],
) -> (mde_liveresponse_exporter::app::Handle, mde_sim::Simulator) {
    let (sim, addr) = start_sim(SimConfig {
        seed,
        machines: 3,
        actions: 6,
        finish_within: Duration::from_millis(200),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..SimConfig::default()
    })
    .await;
    let exporter = start_exporter_on(&sim, addr).await;
    (exporter, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_response_alone_is_not_enough_and_is_named() {
    let (exporter, _sim) = exporter_with_roles(121, &["Machine.LiveResponse"]).await;
    let at = exporter.addr;
    eventually("the missing permission in the metric", || async move {
        sum(
            &scrape(at).await,
            "mde_exporter_permission_missing",
            &[("tenant", "sim"), ("permission", "Machine.Read.All")],
        ) == 1.0
    })
    .await;
    eventually("the missing permission in /-/ready", || async move {
        let (status, _, body) = get(at, "/-/ready", None).await;
        status == 503
            && body.contains("tenant sim: the token lacks the application permission Machine.Read.All (Machine.Read.All or Machine.ReadWrite.All on WindowsDefenderATP, with admin consent)")
    })
    .await;
    let (_, _, page) = get(at, "/", None).await;
    assert!(
        page.contains("Missing application permission: <code>Machine.Read.All</code>"),
        "{page}"
    );
    // The simulator refuses to read, as the API does.
    let m = scrape(at).await;
    assert!(
        sum(
            &m,
            "mde_api_requests_total",
            &[("endpoint", "list_machine_actions"), ("code", "403")]
        ) > 0.0
    );
    exporter.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_all_is_accepted_for_reading() {
    let (exporter, _sim) = exporter_with_roles(122, &["Machine.ReadWrite.All"]).await;
    let at = exporter.addr;
    eventually("ready with ReadWrite.All", || async move {
        get(at, "/-/ready", None).await.0 == 200
    })
    .await;
    let m = scrape(at).await;
    assert_eq!(
        sum(
            &m,
            "mde_exporter_permission_missing",
            &[("tenant", "sim"), ("permission", "Machine.Read.All")]
        ),
        0.0
    );
    assert!(
        m.keys()
            .any(|(n, _)| n == "mde_exporter_permission_missing")
    );
    exporter.shutdown().await.unwrap();
}

//! Every answer says what it is and what it may load: `X-Content-Type-Options: nosniff` and a
//! Content-Security-Policy on the status page, the text answers (400, 404, the 404 of an
//! unknown path) and `/metrics`. See: #32 item 11

use crate::common::*;
use mde_sim::SimConfig;

#[tokio::test]
async fn every_answer_has_nosniff_and_a_content_security_policy() {
    let (sim, addr) = start_sim(SimConfig::default()).await;
    let exporter = start_exporter_on(&sim, addr).await;
    let client = reqwest::Client::new();
    for (path, status) in [
        ("/", 200),
        ("/metrics", 200),
        ("/-/healthy", 200),
        ("/probe", 400),
        ("/probe?target=nobody", 404),
        ("/no-such-page", 404),
        ("/transcripts?tenant=nobody&machine=m&script=s", 404),
    ] {
        let resp = client
            .get(format!("http://{}{path}", exporter.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let h = resp.headers();
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{path}"
        );
        let csp = h
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        assert!(csp.starts_with("default-src 'none'"), "{path}: {csp:?}");
    }
    exporter.shutdown().await.unwrap();
}

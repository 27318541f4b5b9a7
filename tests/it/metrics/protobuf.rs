//! The Prometheus protobuf exposition (#23): a scraper that prefers it (Prometheus 3 with
//! `PrometheusProto` first in `scrape_protocols`) gets length-delimited `MetricFamily`
//! messages, decoded here with prost: every family of the text format, custom collectors
//! included, and the API and poll latency histograms with both their classic buckets and
//! native buckets. The text formats stay as they were (`metrics::contract`).

use std::collections::BTreeSet;

use crate::common::{eventually, scrape, start_exporter_on, start_sim, sum};
use mde_sim::SimConfig;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    MetricFamily, MetricType,
};
use prost::Message;

const PROTO: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

async fn families(addr: std::net::SocketAddr) -> Vec<MetricFamily> {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .header(
            "accept",
            format!("{PROTO};q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    );
    let mut body = resp.bytes().await.unwrap();
    let mut out = Vec::new();
    while !body.is_empty() {
        out.push(MetricFamily::decode_length_delimited(&mut body).unwrap());
    }
    out
}

// See: #23
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protobuf_scrape_has_classic_and_native_latency_histograms() {
    let (sim, addr) = start_sim(SimConfig {
        machines: 5,
        actions: 20,
        ..SimConfig::default()
    })
    .await;
    let exporter = start_exporter_on(&sim, addr).await;
    let a = exporter.addr;
    eventually("a poll and API calls observed", || async move {
        let m = scrape(a).await;
        sum(&m, "mde_exporter_poll_duration_seconds_count", &[]) > 0.0
            && sum(&m, "mde_api_request_duration_seconds_count", &[]) > 0.0
    })
    .await;

    // The text body first: a family that appears between the two scrapes (mde_machine_info
    // once the machine list has come) is then in the later protobuf body too.
    let text = crate::common::get(a, "/metrics", None).await.2;
    let proto = families(a).await;
    for name in [
        "mde_api_request_duration_seconds",
        "mde_exporter_poll_duration_seconds",
    ] {
        let f = proto
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} in the protobuf body"));
        assert_eq!(f.r#type, MetricType::Histogram as i32, "{name}");
        let observed: Vec<_> = f
            .metric
            .iter()
            .filter_map(|m| m.histogram.as_ref())
            .filter(|h| h.sample_count > 0)
            .collect();
        assert!(!observed.is_empty(), "{name} has observations");
        for h in observed {
            // Classic: the bounds of the text format, cumulative, ending at the count.
            assert!(h.bucket.len() >= 11, "{name} classic buckets");
            assert_eq!(
                h.bucket.last().map(|b| b.cumulative_count),
                Some(h.sample_count),
                "{name}: the last classic bucket holds every observation"
            );
            // Native: schema 3 (factor 1.1), spans whose deltas add up to the count.
            assert_eq!(h.schema, 3, "{name}");
            assert!(!h.positive_span.is_empty(), "{name} native spans");
            let native: i64 = h
                .positive_delta
                .iter()
                .scan(0i64, |c, d| {
                    *c += d;
                    Some(*c)
                })
                .sum();
            assert_eq!(
                native as u64 + h.zero_count,
                h.sample_count,
                "{name}: every observation in a native bucket"
            );
        }
    }

    // Every family of the text format is in protobuf too, custom collectors included.
    let text_names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(|n| n.trim_end_matches("_total").to_string())
        .collect();
    let proto_names: BTreeSet<String> = proto
        .iter()
        .map(|f| f.name.trim_end_matches("_total").to_string())
        .collect();
    let missing: Vec<_> = text_names.difference(&proto_names).collect();
    assert!(missing.is_empty(), "missing from protobuf: {missing:?}");
    for collected in [
        "process_resident_memory_bytes",
        "mde_api_quota_remaining",
        "mde_exporter_http_connections_open",
    ] {
        assert!(
            proto_names.contains(collected),
            "{collected} (a collector) in protobuf"
        );
    }
}

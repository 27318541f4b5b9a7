//! The `OTEL_*` variables of the metrics signal, read from a map.

use super::*;

/// The error as its message, as `--config.check` prints it.
fn resolve_with(vars: &[(&str, &str)], otel: &OtelConfig) -> Result<Option<PushConfig>, String> {
    let map: std::collections::BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PushConfig::resolve(otel, &|name| map.get(name).cloned()).map_err(|e| e.to_string())
}

fn resolve(vars: &[(&str, &str)]) -> Result<Option<PushConfig>, String> {
    resolve_with(vars, &OtelConfig::default())
}

#[test]
fn off_unless_otlp_is_asked_for() {
    assert_eq!(resolve(&[]).unwrap(), None);
    assert_eq!(resolve(&[("OTEL_METRICS_EXPORTER", "none")]).unwrap(), None);
    assert_eq!(
        resolve(&[("OTEL_METRICS_EXPORTER", "prometheus")]).unwrap(),
        None
    );
    // A trace endpoint alone pushes no metrics.
    assert_eq!(
        resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap(),
        None
    );
    assert_eq!(
        resolve(&[
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_SDK_DISABLED", "true")
        ])
        .unwrap(),
        None
    );
    assert_eq!(
        resolve(&[("OTEL_METRICS_EXPORTER", "console")]).unwrap_err(),
        "OTEL_METRICS_EXPORTER=\"console\" is not supported (use otlp to push over OTLP as well as serve /metrics, or none)"
    );
}

#[test]
fn defaults_are_the_specifications() {
    let c = resolve(&[("OTEL_METRICS_EXPORTER", "prometheus,otlp")])
        .unwrap()
        .unwrap();
    assert_eq!(c.endpoint, "http://localhost:4318/v1/metrics");
    assert_eq!(c.protocol, Protocol::HttpProtobuf);
    assert_eq!(c.interval, Duration::from_secs(60));
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert_eq!(c.export_timeout, Duration::from_secs(30));
    assert!(c.headers.is_empty());
    let name = c.resource.iter().find(|kv| kv.key == "service.name");
    assert!(name.is_some(), "{:?}", c.resource);
    let grpc = resolve(&[
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        (grpc.endpoint.as_str(), grpc.protocol),
        ("http://localhost:4317", Protocol::Grpc)
    );
}

/// The spans' endpoint rules, with the metrics variable first.
#[test]
fn endpoints() {
    let on = ("OTEL_METRICS_EXPORTER", "otlp");
    let endpoint = |vars: &[(&str, &str)], otel: &OtelConfig| {
        let mut all = vec![on];
        all.extend_from_slice(vars);
        resolve_with(&all, otel).unwrap().unwrap().endpoint
    };
    let none = OtelConfig::default();
    // The shared endpoint gets the signal's path.
    assert_eq!(
        endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")], &none),
        "http://c:4318/v1/metrics"
    );
    // The metrics one is taken as given (Prometheus's receiver is under /api/v1/otlp).
    assert_eq!(
        endpoint(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4318"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://prom:9090/api/v1/otlp/v1/metrics"
                ),
            ],
            &none
        ),
        "http://prom:9090/api/v1/otlp/v1/metrics"
    );
    // The config file's otel.endpoint comes before the shared variable.
    let file = OtelConfig {
        endpoint: Some("http://file:4318/v1/traces".into()),
        ..OtelConfig::default()
    };
    assert_eq!(
        endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")], &file),
        "http://file:4318/v1/metrics"
    );
    // gRPC endpoints have no path to add.
    assert_eq!(
        endpoint(
            &[
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ],
            &none
        ),
        "http://c:4317"
    );
}

#[test]
fn protocols_times_and_their_errors() {
    let on = ("OTEL_METRICS_EXPORTER", "otlp");
    let c = resolve(&[
        on,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "3000"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(c.protocol, Protocol::HttpProtobuf);
    assert_eq!(c.interval, Duration::from_millis(500));
    assert_eq!(c.timeout, Duration::from_secs(3));
    let file = OtelConfig {
        protocol: Some(Protocol::Grpc),
        ..OtelConfig::default()
    };
    let c = resolve_with(
        &[on, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
        &file,
    );
    assert_eq!(c.unwrap().unwrap().protocol, Protocol::Grpc);
    for (var, value, want) in [
        (
            "OTEL_METRIC_EXPORT_INTERVAL",
            "1m",
            "OTEL_METRIC_EXPORT_INTERVAL=\"1m\" is not a positive number of milliseconds",
        ),
        (
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "0",
            "OTEL_EXPORTER_OTLP_TIMEOUT=\"0\" is not a positive number of milliseconds",
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "http/xml",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=\"http/xml\" is not supported (use grpc, http/protobuf or http/json)",
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
            "zstd",
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION=\"zstd\" is not supported (use gzip or none)",
        ),
        (
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "deflate",
            "OTEL_EXPORTER_OTLP_COMPRESSION=\"deflate\" is not supported (use gzip or none)",
        ),
    ] {
        assert_eq!(resolve(&[on, (var, value)]).unwrap_err(), want, "{var}");
    }
}

/// Headers are merged (the metrics variable's keys win), values percent-decoded, and an
/// error never shows a value.
#[test]
fn headers_merge_and_stay_secret() {
    let on = ("OTEL_METRICS_EXPORTER", "otlp");
    let c = resolve(&[
        on,
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Basic%20c2VjcmV0, x-tenant = a",
        ),
        ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=b"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        c.headers,
        vec![
            ("Authorization".to_string(), "Basic c2VjcmV0".to_string()),
            ("x-tenant".to_string(), "b".to_string()),
        ]
    );
    assert_eq!(c.header_names(), ["Authorization", "x-tenant"]);
    assert!(!format!("{:?}", c.header_names()).contains("c2VjcmV0"));
    let err = resolve(&[on, ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x=s3cret%0D")]).unwrap_err();
    assert_eq!(
        err,
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS: header \"x\" cannot be sent (its value is not shown)"
    );
    let err = resolve(&[on, ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,s3cret-token")]).unwrap_err();
    assert_eq!(
        err,
        "OTEL_EXPORTER_OTLP_HEADERS: entry 2 has no '=' (key=value pairs, comma-separated; values not shown)"
    );
}

#[test]
fn the_instance_id_defaults_unless_given() {
    let attrs = with_instance_id(vec![build::attribute("service.name", "x")], "host:9717");
    let id = attrs.iter().find(|kv| kv.key == "service.instance.id");
    assert_eq!(
        id.and_then(|kv| kv.value.clone()),
        build::attribute("", "host:9717").value
    );
    let given = with_instance_id(
        vec![build::attribute("service.instance.id", "mine")],
        "host:9717",
    );
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].value, build::attribute("", "mine").value);
}

/// The exporter's registry with every kind of family it serves (counters and histograms with
/// trace exemplars, gauges, the quota collectors, script output with non-finite values):
/// each family a scrape in OpenMetrics shows is pushed once, the one left out of OpenMetrics
/// (the not-run gauge's old name) is not, and script output keeps its types and values.
#[test]
fn the_exporters_families_are_pushed_once_each() {
    use crate::config::{QuotaConfig, ScriptFormat, ScriptRule};
    use crate::metrics::{MachineScriptLabels, ScriptSeries, TraceLabel};
    use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let m = Metrics::new();
    let t = "contoso";
    let trace = || {
        Some(TraceLabel {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        })
    };
    crate::shared::init_tenant_series(&m, t);
    m.api.record_request(
        t,
        "machines",
        "200".into(),
        Duration::from_millis(120),
        trace(),
    );
    m.results.record_transcript(t, "a.ps1", 1, true, trace);
    let labels = MachineScriptLabels {
        tenant: t.into(),
        machine: "host-1".into(),
        script: "a.ps1".into(),
    };
    m.results.set_script_series(
        &labels,
        ScriptSeries {
            exit_code: 1,
            errors_present: true,
            end_time: 1_764_299_000.5,
        },
    );
    m.results.set_script_not_run(&labels, true);
    let quota = std::sync::Arc::new(std::sync::Mutex::new(crate::quota::Quota::new(
        &QuotaConfig::default(),
    )));
    let name = t.to_string();
    m.api
        .set_quotas([(&name, &quota)], Arc::new(|_: &str| true));
    let rule = ScriptRule {
        script: "a.ps1".into(),
        format: ScriptFormat::Prometheus,
        prefix: "mde_script_".into(),
        max_series: 500,
        max_total_series: 50_000,
        max_bytes: 256 * 1024,
        max_total_bytes: 32 * 1024 * 1024,
        ttl: Duration::from_secs(86_400),
        max_name_length: 128,
        max_label_length: 1024,
        max_labels: 16,
        metrics: Vec::new(),
    };
    let output = b"# TYPE free gauge\nfree{volume=\"C:\"} NaN\nfree{volume=\"D:\"} +Inf\n\
        # TYPE runs counter\nruns_total 3\nplain 1.5\n";
    let extracted = crate::script_metrics::store::extract(&rule, output);
    let key = (t.to_string(), "host-1".to_string(), "a.ps1".to_string());
    let produced = chrono::DateTime::from_timestamp(1_764_299_000, 0).unwrap();
    m.script_metrics.record(key, produced, 0, &rule, extracted);

    let pushed = built(&m, 2, 1).unwrap();
    let mut names: Vec<&str> = pushed.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    let all = names.len();
    names.dedup();
    assert_eq!(names.len(), all, "a family pushed twice: {names:?}");
    let get = |name: &str| {
        pushed
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name} in {names:?}"))
    };
    let values = |m: &Metric| -> Vec<f64> {
        let points = match &m.data {
            Some(metric::Data::Gauge(g)) => &g.data_points,
            Some(metric::Data::Sum(s)) => &s.data_points,
            other => panic!("{other:?}"),
        };
        points
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsDouble(v)) => v,
                _ => panic!("{p:?}"),
            })
            .collect()
    };
    // The not-run gauge under its new name only (its old one is text format only).
    assert!(!pushed.iter().any(|m| {
        m.name == "mde_liveresponse_script_not_run"
            && matches!(m.data, Some(metric::Data::Gauge(_)))
    }));
    assert!(names.contains(&"mde_liveresponse_script_not_run_current"));
    let Some(metric::Data::Sum(runs)) = &get("mde_liveresponse_script_runs").data else {
        panic!()
    };
    assert_eq!(runs.data_points[0].exemplars[0].trace_id[0], 0x4b);
    let Some(metric::Data::Histogram(h)) = &get("mde_api_request_duration_seconds").data else {
        panic!()
    };
    assert!(h.data_points.iter().any(|p| !p.exemplars.is_empty()));
    assert!(
        names.iter().any(|n| n.starts_with("mde_api_quota_")),
        "{names:?}"
    );
    // Script output: a counter without `_total`, a gauge and an untyped family as gauges,
    // non-finite values as they are.
    assert_eq!(values(get("mde_script_runs")), [3.0]);
    assert!(matches!(
        get("mde_script_runs").data,
        Some(metric::Data::Sum(_))
    ));
    assert_eq!(values(get("mde_script_plain")), [1.5]);
    let free = values(get("mde_script_free"));
    assert!(free[0].is_nan() && free[1] == f64::INFINITY, "{free:?}");
}

/// Compression: the metrics variable, then `otel.compression`, then the generic variable;
/// none by default (the specification's). http/json takes the HTTP endpoint. See: #32
#[test]
fn compression_and_json_follow_the_variables() {
    let on = ("OTEL_METRICS_EXPORTER", "otlp");
    let c = resolve(&[on]).unwrap().unwrap();
    assert_eq!(c.compression, Compression::None);
    let c = resolve(&[on, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")])
        .unwrap()
        .unwrap();
    assert_eq!(c.compression, Compression::Gzip);
    let file = OtelConfig {
        compression: Some(Compression::None),
        ..Default::default()
    };
    let c = resolve_with(&[on, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")], &file)
        .unwrap()
        .unwrap();
    assert_eq!(c.compression, Compression::None, "the file's key wins");
    let c = resolve_with(
        &[on, ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "GZIP")],
        &file,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        c.compression,
        Compression::Gzip,
        "the metrics variable wins"
    );

    let c = resolve(&[
        on,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.endpoint.as_str(), c.protocol),
        ("http://c:4318/v1/metrics", Protocol::HttpJson)
    );
}

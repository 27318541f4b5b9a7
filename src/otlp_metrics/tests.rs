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
            "http/json",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL=\"http/json\" is not supported (use grpc or http/protobuf)",
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

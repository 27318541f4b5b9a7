//! The registry's families as prometheus-client's Prometheus protobuf structs
//! (`io.prometheus.client.MetricFamily`, [`crate::metrics::Metrics::encode_structs`]) turned
//! into OTLP metrics: the same metrics `build` makes from the OpenMetrics text read back.
//!
//! Owns the mapping of each protobuf type: a counter (named `<name>_total` there) a monotonic
//! cumulative sum named `<name>`, a gauge and an untyped family a gauge (an info family
//! arrives as a gauge named `<name>_info`), a histogram an explicit-bucket cumulative
//! histogram (the `+Inf` bucket's bound left out, cumulative counts made per-bucket), its
//! buckets' exemplars the point's. Does not own the encoding (`metrics`) nor the cut into
//! requests (`build`).

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
    exemplar, metric, number_data_point,
};
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as prom;

use super::build::{Times, attribute, gauge, hex, points};

fn attributes(labels: &[prom::LabelPair]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|l| attribute(&l.name, &l.value))
        .collect()
}

/// An exemplar; a `trace_id` label of 16 hex bytes becomes its trace.
fn exemplar(e: &prom::Exemplar, times: Times) -> Exemplar {
    let mut trace_id = Vec::new();
    let mut filtered = Vec::new();
    for l in &e.label {
        match (l.name.as_str(), hex(&l.value)) {
            ("trace_id", Some(bytes)) if bytes.len() == 16 => trace_id = bytes,
            _ => filtered.push(attribute(&l.name, &l.value)),
        }
    }
    let time = e.timestamp.as_ref().map_or(times.now, |t| {
        (t.seconds.max(0) as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.nanos.max(0) as u64)
    });
    Exemplar {
        filtered_attributes: filtered,
        time_unix_nano: time,
        span_id: Vec::new(),
        trace_id,
        value: Some(exemplar::Value::AsDouble(e.value)),
    }
}

fn number_point(m: &prom::Metric, times: Times, start: bool) -> NumberDataPoint {
    let (value, exemplar) = match (&m.counter, &m.gauge, &m.untyped) {
        (Some(c), _, _) => (c.value, c.exemplar.as_ref()),
        (None, Some(g), _) => (g.value, None),
        (None, None, Some(u)) => (u.value, None),
        (None, None, None) => (0.0, None),
    };
    NumberDataPoint {
        attributes: attributes(&m.label),
        start_time_unix_nano: if start { times.start } else { 0 },
        time_unix_nano: times.now,
        exemplars: exemplar
            .map(|e| self::exemplar(e, times))
            .into_iter()
            .collect(),
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(value)),
    }
}

fn histogram_point(m: &prom::Metric, times: Times) -> Option<HistogramDataPoint> {
    let h = m.histogram.as_ref()?;
    let mut explicit_bounds = Vec::with_capacity(h.bucket.len());
    let mut bucket_counts = Vec::with_capacity(h.bucket.len() + 1);
    let mut exemplars = Vec::new();
    let mut below = 0;
    for b in &h.bucket {
        if b.upper_bound.is_finite() {
            explicit_bounds.push(b.upper_bound);
            bucket_counts.push(b.cumulative_count.saturating_sub(below));
            below = b.cumulative_count;
        }
        exemplars.extend(b.exemplar.as_ref().map(|e| exemplar(e, times)));
    }
    // The last bucket (+Inf) up to the count.
    bucket_counts.push(h.sample_count.saturating_sub(below));
    Some(HistogramDataPoint {
        attributes: attributes(&m.label),
        start_time_unix_nano: times.start,
        time_unix_nano: times.now,
        count: h.sample_count,
        sum: Some(h.sample_sum),
        bucket_counts,
        explicit_bounds,
        exemplars,
        flags: 0,
        min: None,
        max: None,
    })
}

/// The OTLP metric of one family; none for a family without series or of a type left out.
pub fn family(f: &prom::MetricFamily, times: Times) -> Option<Metric> {
    let metric = match prom::MetricType::try_from(f.r#type).ok()? {
        prom::MetricType::Counter => Metric {
            name: f.name.strip_suffix("_total").unwrap_or(&f.name).to_string(),
            description: f.help.clone(),
            data: Some(metric::Data::Sum(Sum {
                data_points: f
                    .metric
                    .iter()
                    .map(|m| number_point(m, times, true))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        prom::MetricType::Gauge | prom::MetricType::Untyped => gauge(
            f.name.clone(),
            &f.help,
            f.metric
                .iter()
                .map(|m| number_point(m, times, false))
                .collect(),
        ),
        prom::MetricType::Histogram => Metric {
            name: f.name.clone(),
            description: f.help.clone(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: f
                    .metric
                    .iter()
                    .filter_map(|m| histogram_point(m, times))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        },
        prom::MetricType::Summary | prom::MetricType::GaugeHistogram => return None,
    };
    (points(&metric) > 0).then_some(metric)
}

/// Every family of the registry's parts as OTLP metrics.
pub fn metrics<E: std::fmt::Display>(
    parts: impl IntoIterator<Item = Result<Vec<prom::MetricFamily>, E>>,
    times: Times,
) -> Result<Vec<Metric>, String> {
    let mut out = Vec::new();
    for part in parts {
        let part = part.map_err(|e| format!("encoding the metrics: {e}"))?;
        out.extend(part.iter().filter_map(|f| family(f, times)));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use prometheus_client::encoding::{prometheus_protobuf, text};
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram as PromHistogram;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::config::{QuotaConfig, ScriptFormat, ScriptRule};
    use crate::metrics::{
        MachineInfoLabels, MachineScriptLabels, Metrics, ScriptSeries, TraceLabel,
    };
    use crate::otlp_metrics::{Route, build, built};

    const TIMES: Times = Times {
        now: 2_000_000_000_000_000_000,
        start: 1_000_000_000_000_000_000,
    };

    /// The metrics as comparable text, in name order, without the `process_*` families (their
    /// values change between two encodings).
    fn sorted(metrics: Vec<Metric>) -> Vec<String> {
        let mut out: Vec<String> = metrics
            .iter()
            .filter(|m| !m.name.starts_with("process_"))
            .map(|m| format!("{m:?}"))
            .collect();
        out.sort();
        out
    }

    fn trace() -> Option<TraceLabel> {
        Some(TraceLabel {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        })
    }

    /// Every kind of family the exporter serves, script output with non-finite values and
    /// label values to escape included: both routes give the same OTLP metrics.
    #[test]
    fn the_exporters_families_give_what_the_text_read_back_gives() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let m = Metrics::new();
        let t = "contoso \"eu\"\\west";
        crate::shared::init_tenant_series(&m, t);
        m.api.record_request(
            t,
            "machines",
            "200".into(),
            Duration::from_millis(120),
            trace(),
        );
        m.api
            .record_request(t, "download", "429".into(), Duration::from_secs(3), None);
        m.poll.record_poll(
            t,
            true,
            Duration::from_millis(800),
            1_764_300_000.25,
            0,
            trace(),
        );
        m.results.record_transcript(t, "a.ps1", 1, true, trace);
        let labels = MachineScriptLabels {
            tenant: t.into(),
            machine: "host\nnewline".into(),
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
        m.machines.expose_machine(
            &MachineInfoLabels {
                tenant: t.into(),
                machine: "host-1".into(),
                machine_id: "ab".repeat(20),
                rbac_group: "Tier 1".into(),
                os_platform: "Windows11".into(),
                health_status: "Active".into(),
            },
            [],
        );
        let quota = std::sync::Arc::new(std::sync::Mutex::new(crate::quota::Quota::new(
            &QuotaConfig::default(),
        )));
        let name = t.to_string();
        m.api.set_quotas([(&name, &quota)]);
        let rule = ScriptRule {
            script: "a.ps1".into(),
            format: ScriptFormat::Prometheus,
            prefix: "mde_script_".into(),
            max_series: 500,
            max_total_series: 50_000,
            ttl: Duration::from_secs(86_400),
            max_name_length: 128,
            max_label_length: 1024,
            max_labels: 16,
            metrics: Vec::new(),
        };
        let output =
            b"# HELP free Free \"space\".\n# TYPE free gauge\nfree{volume=\"C:\\\\\"} NaN\n\
            free{volume=\"D:\"} +Inf\nfree{volume=\"E:\"} -Inf\n\
            # TYPE runs counter\nruns_total 3\nplain{x=\"a\\\"b\"} 1.5e-3\nnot a sample {\n";
        let extracted = crate::script_metrics::store::extract(&rule, output);
        let key = (t.to_string(), "host-1".to_string(), "a.ps1".to_string());
        let produced = chrono::DateTime::from_timestamp(1_764_299_000, 0).unwrap();
        m.script_metrics.record(key, produced, 0, &rule, extracted);

        let text = sorted(built(&m, Route::Text, TIMES.now, TIMES.start).unwrap());
        let structs = sorted(built(&m, Route::Structs, TIMES.now, TIMES.start).unwrap());
        assert!(text.len() > 20, "{text:?}");
        for kind in [
            "Sum(",
            "Gauge(",
            "Histogram(",
            "NaN",
            "inf",
            "trace_id: [75",
        ] {
            assert!(text.iter().any(|m| m.contains(kind)), "no {kind}");
        }
        assert_eq!(text, structs);
    }

    /// What prometheus-client offers beyond the exporter's own families: an info family, a
    /// float counter, a plain histogram, an empty family, a signed gauge.
    #[test]
    fn info_float_counters_plain_histograms_and_empty_families_are_the_same() {
        let mut r = Registry::default();
        r.register(
            "build",
            "Build.",
            Info::new(vec![("version".to_string(), "1.2".to_string())]),
        );
        let c: Counter<f64, std::sync::atomic::AtomicU64> = Counter::default();
        c.inc_by(0.25);
        r.register("waited_seconds", "Waited.", c);
        let h = PromHistogram::new([0.1, 1.0]);
        for v in [0.05, 0.5, 0.5, 7.0] {
            h.observe(v);
        }
        r.register("duration_seconds", "Duration.", h);
        r.register(
            "nothing",
            "Empty.",
            Family::<Vec<(String, String)>, Gauge>::default(),
        );
        let g: Gauge<i64> = Gauge::default();
        g.set(-3);
        r.register("signed", "Signed.", g);
        let mut body = String::new();
        text::encode(&mut body, &r).unwrap();
        let text = sorted(build::metrics([body.as_bytes()], TIMES).unwrap());
        let structs = sorted(metrics([prometheus_protobuf::encode(&r)], TIMES).unwrap());
        assert_eq!(text.len(), 4, "{text:?}");
        assert_eq!(text, structs);
    }

    /// A help text with a backslash: the OpenMetrics text writes it as it is, and reading it
    /// back takes the backslash for an escape; the structs keep it as a scrape shows it.
    #[test]
    fn a_help_with_a_backslash_is_kept() {
        let mut r = Registry::default();
        let g: Gauge = Gauge::default();
        r.register("free", "Free on C:\\ (bytes)", g);
        let m = metrics([prometheus_protobuf::encode(&r)], TIMES).unwrap();
        assert_eq!(m[0].description, "Free on C:\\ (bytes).");
    }
}

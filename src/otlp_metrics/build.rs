//! The registry's families, as prometheus-client's Prometheus protobuf structs give them
//! ([`crate::metrics::Metrics::encode_structs`]), turned into OTLP metrics named so that
//! Prometheus's OTLP translation (`UnderscoreEscapingWithSuffixes`, Prometheus 3's default)
//! gives back the names `/metrics` serves; and the requests that carry them, cut to a size
//! receivers take.
//!
//! Owns the mapping of each type and the cut. A counter (`<name>_total` in the structs) is a
//! monotonic cumulative sum named `<name>` (the translation appends `_total`), a gauge and an
//! untyped family a gauge (an info family arrives as the gauge `<name>_info`), a histogram an
//! explicit-bucket cumulative histogram (the `+Inf` bucket's bound left out, the cumulative
//! bucket counts made per-bucket counts, the buckets' exemplars the point's). No family
//! carries a unit: a unit would append a suffix, and the names already end in theirs
//! (`_seconds`, `_bytes`). Summaries and gauge histograms are left out (the exporter serves
//! none), as are families without series. Labels become string attributes; a `trace_id`
//! exemplar label becomes the exemplar's trace. Does not own the encoding (`metrics`), the
//! resource's attributes (`mod`) nor sending (`send`).

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as prom;
use prost::Message;

/// The times every point of one export carries, in Unix nanoseconds: `now`, and `start`
/// (when the counters and histograms started counting: the process's start).
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub now: u64,
    pub start: u64,
}

/// A string attribute.
pub fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// Bytes of a hex string, if it is one.
fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn gauge(name: String, help: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name,
        description: help.to_string(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

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

/// The data points of a metric.
pub fn points(m: &Metric) -> usize {
    match &m.data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        _ => 0,
    }
}

/// Every family of the registry's parts (`Metrics::encode_structs`) as OTLP metrics.
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

/// `points` moved (not copied: a fleet's family holds tens of thousands) into parts of at
/// most `max` each, in order.
fn parts<T>(points: Vec<T>, max: usize) -> impl Iterator<Item = Vec<T>> {
    let mut rest = points.into_iter();
    std::iter::from_fn(move || {
        let part: Vec<T> = rest.by_ref().take(max).collect();
        (!part.is_empty()).then_some(part)
    })
}

/// A metric cut into parts of at most `max_points` data points each (one part when it has
/// fewer), each part the same metric with some of its points.
fn cut(m: Metric, max_points: usize) -> Vec<Metric> {
    if points(&m) <= max_points {
        return vec![m];
    }
    let Metric {
        name,
        description,
        unit,
        metadata,
        data,
    } = m;
    let part = |data| Metric {
        name: name.clone(),
        description: description.clone(),
        unit: unit.clone(),
        metadata: metadata.clone(),
        data: Some(data),
    };
    match data {
        Some(metric::Data::Gauge(g)) => parts(g.data_points, max_points)
            .map(|data_points| part(metric::Data::Gauge(Gauge { data_points })))
            .collect(),
        Some(metric::Data::Sum(s)) => {
            let (temporality, monotonic) = (s.aggregation_temporality, s.is_monotonic);
            parts(s.data_points, max_points)
                .map(|data_points| {
                    part(metric::Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: temporality,
                        is_monotonic: monotonic,
                    }))
                })
                .collect()
        }
        Some(metric::Data::Histogram(h)) => {
            let temporality = h.aggregation_temporality;
            parts(h.data_points, max_points)
                .map(|data_points| {
                    part(metric::Data::Histogram(Histogram {
                        data_points,
                        aggregation_temporality: temporality,
                    }))
                })
                .collect()
        }
        other => vec![Metric {
            name,
            description,
            unit,
            metadata,
            data: other,
        }],
    }
}

/// Data points a request carries at most: a 46 MB `/metrics` (2,000 tenants) in one request
/// is far over what receivers accept (gRPC's default limit is 4 MiB).
pub const MAX_POINTS: usize = 2_000;
/// Encoded bytes a request carries at most, short of gRPC's default 4 MiB.
pub const MAX_BYTES: usize = 3 * 1024 * 1024;

/// The requests carrying `metrics`: each with the resource and scope, at most `max_points`
/// data points and, unless one part is larger alone, `max_bytes` encoded bytes.
pub fn requests(
    metrics: Vec<Metric>,
    resource: &Resource,
    scope: &InstrumentationScope,
    max_points: usize,
    max_bytes: usize,
) -> Vec<ExportMetricsServiceRequest> {
    let request = |metrics: Vec<Metric>| ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope.clone()),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let max_points = max_points.max(1);
    let mut out = Vec::new();
    let (mut batch, mut batch_points, mut batch_bytes) = (Vec::new(), 0, 0);
    for part in metrics.into_iter().flat_map(|m| cut(m, max_points)) {
        let (n, bytes) = (points(&part), part.encoded_len());
        if !batch.is_empty() && (batch_points + n > max_points || batch_bytes + bytes > max_bytes) {
            out.push(request(std::mem::take(&mut batch)));
            (batch_points, batch_bytes) = (0, 0);
        }
        batch_points += n;
        batch_bytes += bytes;
        batch.push(part);
    }
    if !batch.is_empty() {
        out.push(request(batch));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use prometheus_client::encoding::prometheus_protobuf;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::exemplar::CounterWithExemplar;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram as Classic;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::registry::Registry;

    use super::*;

    type Labels = Vec<(String, String)>;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const TIMES: Times = Times {
        now: 2_000_000_000_000_000_000,
        start: 1_000_000_000_000_000_000,
    };

    fn one(r: &Registry) -> Vec<Metric> {
        metrics([prometheus_protobuf::encode(r)], TIMES).unwrap()
    }

    fn value(p: &NumberDataPoint) -> f64 {
        match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            _ => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_counter_is_a_monotonic_cumulative_sum_without_total() {
        let mut r = Registry::default();
        let runs = Family::<Labels, CounterWithExemplar<Labels>>::default();
        r.register("runs", "Runs", runs.clone());
        let series = runs.get_or_create(&labels(&[("tenant", "t")]));
        series.inc_by(2, None, None);
        series.inc_by(
            1,
            Some(labels(&[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")])),
            Some(UNIX_EPOCH + Duration::from_millis(1500)),
        );
        let m = one(&r);
        assert_eq!(m[0].name, "runs");
        assert_eq!(m[0].unit, "");
        assert_eq!(m[0].description, "Runs.");
        let Some(metric::Data::Sum(s)) = &m[0].data else {
            panic!("{m:?}")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &s.data_points[0];
        assert_eq!(value(p), 3.0);
        assert_eq!(p.attributes, vec![attribute("tenant", "t")]);
        assert_eq!(
            (p.start_time_unix_nano, p.time_unix_nano),
            (TIMES.start, TIMES.now)
        );
        assert_eq!(p.exemplars[0].trace_id.len(), 16);
        assert_eq!(p.exemplars[0].trace_id[0], 0x4b);
        assert_eq!(p.exemplars[0].time_unix_nano, 1_500_000_000);
    }

    #[test]
    fn histograms_get_per_bucket_counts_and_lose_le() {
        let mut r = Registry::default();
        let d = Family::<Labels, Classic, fn() -> Classic>::new_with_constructor(|| {
            Classic::new([0.1, 1.0])
        });
        r.register("d", "D", d.clone());
        for v in [0.0625, 0.5, 0.5, 2.4375] {
            d.get_or_create(&labels(&[("t", "a")])).observe(v);
        }
        let _ = d.get_or_create(&labels(&[("t", "b")]));
        let m = one(&r);
        let Some(metric::Data::Histogram(h)) = &m[0].data else {
            panic!("{m:?}")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        // (A family's series come in no set order.)
        let of = |t: &str| {
            h.data_points
                .iter()
                .find(|p| p.attributes == vec![attribute("t", t)])
                .unwrap()
        };
        let a = of("a");
        assert_eq!(a.attributes, vec![attribute("t", "a")]);
        assert_eq!(a.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(a.bucket_counts, vec![1, 2, 1]);
        assert_eq!((a.count, a.sum), (4, Some(3.5)));
        assert_eq!(of("b").bucket_counts, vec![0, 0, 0]);
    }

    #[test]
    fn gauges_info_and_empty_families() {
        let mut r = Registry::default();
        let g = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        g.get_or_create(&labels(&[("x", "1")])).set(2.5);
        r.register("g", "G", g);
        r.register("i", "I", Info::new(labels(&[("v", "1")])));
        r.register("empty", "Empty", Family::<Labels, Counter>::default());
        let mut families = prometheus_protobuf::encode(&r).unwrap();
        // prometheus-client makes no summary; the exporter serves none.
        families.push(prom::MetricFamily {
            name: "s".into(),
            r#type: prom::MetricType::Summary as i32,
            metric: vec![prom::Metric {
                summary: Some(prom::Summary {
                    sample_count: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        let m = metrics([Ok::<_, std::fmt::Error>(families)], TIMES).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["g", "i_info"]);
        let Some(metric::Data::Gauge(g)) = &m[0].data else {
            panic!()
        };
        assert_eq!(value(&g.data_points[0]), 2.5);
        assert_eq!(g.data_points[0].start_time_unix_nano, 0);
    }

    #[test]
    fn requests_are_cut_by_points_and_bytes() {
        let mut r = Registry::default();
        let big = Family::<Labels, Gauge>::default();
        for i in 0..25 {
            big.get_or_create(&labels(&[("i", &i.to_string())])).set(i);
        }
        r.register("big", "Big", big);
        let small: Counter = Counter::default();
        small.inc();
        r.register("small", "Small", small);
        let m = one(&r);
        let scope = InstrumentationScope::default();
        let r = requests(m.clone(), &Resource::default(), &scope, 10, usize::MAX);
        let counts: Vec<Vec<usize>> = r
            .iter()
            .map(|r| {
                r.resource_metrics[0].scope_metrics[0]
                    .metrics
                    .iter()
                    .map(points)
                    .collect()
            })
            .collect();
        assert_eq!(counts, vec![vec![10], vec![10], vec![5, 1]]);
        // A cut counter stays a monotonic cumulative sum in every part.
        let mut r = Registry::default();
        let c = Family::<Labels, Counter>::default();
        for i in 0..25 {
            c.get_or_create(&labels(&[("i", &i.to_string())])).inc_by(i);
        }
        r.register("c", "C", c);
        let parts = cut(one(&r).remove(0), 10);
        assert_eq!(parts.iter().map(points).collect::<Vec<_>>(), [10, 10, 5]);
        for p in &parts {
            let Some(metric::Data::Sum(s)) = &p.data else {
                panic!("{p:?}")
            };
            assert!(s.is_monotonic);
            assert_eq!(
                s.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            );
        }
        // By bytes: every part alone.
        let r = requests(m, &Resource::default(), &scope, 10, 1);
        assert_eq!(r.len(), 4);
        assert!(r.iter().all(|r| r.resource_metrics[0].resource.is_some()));
    }

    /// A help text with a backslash is pushed as a scrape shows it. (Read back from the
    /// OpenMetrics text, which writes help unescaped, the backslash was taken for an escape.)
    #[test]
    fn a_help_with_a_backslash_is_kept() {
        let mut r = Registry::default();
        r.register("free", "Free on C:\\ (bytes)", Gauge::<i64>::default());
        assert_eq!(one(&r)[0].description, "Free on C:\\ (bytes).");
    }
}

//! Families read back from `/metrics` turned into OTLP metrics, named so that Prometheus's
//! OTLP translation (`UnderscoreEscapingWithSuffixes`, Prometheus 3's default) gives back the
//! names `/metrics` serves; and the requests that carry them, cut to a size receivers take.
//!
//! Owns the mapping of each OpenMetrics type and the cut. A counter is a monotonic cumulative
//! sum named without `_total` (the translation appends it), a gauge (and an `unknown` family)
//! a gauge, a histogram an explicit-bucket cumulative histogram (`le` leaves the attributes,
//! the cumulative bucket counts become per-bucket counts), an info family a gauge named
//! `<name>_info`, a stateset a gauge with its state label. No family carries a unit: a unit
//! would append a suffix, and the names already end in theirs (`_seconds`, `_bytes`).
//! Summaries and gauge histograms are left out (the exporter serves none). Labels become
//! string attributes; a `trace_id` exemplar becomes the point's exemplar. Does not own the
//! resource's attributes (`mod`), reading the text (`parse`) nor sending (`send`).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::parse::{self, Family, Kind, Sample};

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

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| attribute(k, v)).collect()
}

fn seconds_to_nanos(seconds: f64) -> u64 {
    // Saturating: a timestamp outside u64 nanoseconds is not one the exporter writes.
    (seconds * 1e9) as u64
}

/// The exemplar of a sample, when it names a trace (the exporter's name theirs `trace_id`).
fn exemplar(sample: &Sample, times: Times) -> Option<Exemplar> {
    let e = sample.exemplar.as_ref()?;
    let mut trace_id = Vec::new();
    let mut filtered = Vec::new();
    for (k, v) in &e.labels {
        match (k.as_str(), hex(v)) {
            ("trace_id", Some(bytes)) if bytes.len() == 16 => trace_id = bytes,
            _ => filtered.push(attribute(k, v)),
        }
    }
    Some(Exemplar {
        filtered_attributes: filtered,
        time_unix_nano: e.timestamp.map_or(times.now, seconds_to_nanos),
        span_id: Vec::new(),
        trace_id,
        value: Some(exemplar::Value::AsDouble(e.value)),
    })
}

/// Bytes of a hex string, if it is one.
pub(super) fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn number_point(sample: &Sample, times: Times, start: bool) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(&sample.labels),
        start_time_unix_nano: if start { times.start } else { 0 },
        time_unix_nano: times.now,
        exemplars: exemplar(sample, times).into_iter().collect(),
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(sample.value)),
    }
}

pub(super) fn gauge(name: String, help: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name,
        description: help.to_string(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

/// The OTLP metrics of one family; none for a family without samples or of a type left out.
pub fn family(f: &Family, times: Times) -> Option<Metric> {
    fn with<'a>(f: &'a Family, suffix: &'a str) -> impl Iterator<Item = &'a Sample> {
        f.samples.iter().filter(move |s| s.suffix == suffix)
    }
    let metric = match f.kind {
        Kind::Counter => Metric {
            name: f.name.clone(),
            description: f.help.clone(),
            data: Some(metric::Data::Sum(Sum {
                data_points: with(f, "_total")
                    .map(|s| number_point(s, times, true))
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        },
        Kind::Gauge | Kind::Unknown | Kind::StateSet => gauge(
            f.name.clone(),
            &f.help,
            with(f, "").map(|s| number_point(s, times, false)).collect(),
        ),
        Kind::Info => gauge(
            format!("{}_info", f.name),
            &f.help,
            with(f, "_info")
                .map(|s| number_point(s, times, false))
                .collect(),
        ),
        Kind::Histogram => Metric {
            name: f.name.clone(),
            description: f.help.clone(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: histogram_points(f, times),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        },
        Kind::Summary | Kind::GaugeHistogram => return None,
    };
    (points(&metric) > 0).then_some(metric)
}

/// A histogram family's series, one point each: the samples grouped by their labels without
/// `le`, in the order they came.
fn histogram_points(f: &Family, times: Times) -> Vec<HistogramDataPoint> {
    #[derive(Default)]
    struct Series {
        buckets: Vec<(f64, f64)>,
        sum: Option<f64>,
        count: f64,
        exemplars: Vec<Exemplar>,
        labels: Vec<(String, String)>,
    }
    let mut order: Vec<Vec<(String, String)>> = Vec::new();
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for s in &f.samples {
        let mut labels = s.labels.clone();
        let le = labels
            .iter()
            .position(|(k, _)| k == "le")
            .map(|i| labels.remove(i).1);
        let entry = series.entry(labels.clone()).or_insert_with(|| {
            order.push(labels.clone());
            Series {
                labels,
                ..Default::default()
            }
        });
        match (s.suffix.as_str(), le) {
            ("_bucket", Some(le)) => {
                if let Ok(bound) = le.parse::<f64>() {
                    entry.buckets.push((bound, s.value));
                }
                entry.exemplars.extend(exemplar(s, times));
            }
            ("_sum", _) => entry.sum = Some(s.value),
            ("_count", _) => entry.count = s.value,
            _ => {}
        }
    }
    order
        .iter()
        .filter_map(|labels| series.remove(labels))
        .map(|mut s| {
            s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            // Bounds without +Inf; per-bucket counts (OTLP) from cumulative ones (OpenMetrics),
            // the last bucket up to the count.
            let explicit_bounds: Vec<f64> = s
                .buckets
                .iter()
                .map(|b| b.0)
                .filter(|b| b.is_finite())
                .collect();
            let mut bucket_counts = Vec::with_capacity(explicit_bounds.len() + 1);
            let mut below = 0.0;
            for &(_, cumulative) in s.buckets.iter().filter(|b| b.0.is_finite()) {
                bucket_counts.push((cumulative - below).max(0.0) as u64);
                below = cumulative;
            }
            bucket_counts.push((s.count - below).max(0.0) as u64);
            HistogramDataPoint {
                attributes: attributes(&s.labels),
                start_time_unix_nano: times.start,
                time_unix_nano: times.now,
                count: s.count as u64,
                sum: s.sum,
                bucket_counts,
                explicit_bounds,
                exemplars: s.exemplars,
                flags: 0,
                min: None,
                max: None,
            }
        })
        .collect()
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

/// Every family of an OpenMetrics body (its chunks) as OTLP metrics.
pub fn metrics<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    times: Times,
) -> Result<Vec<Metric>, String> {
    let mut families = Vec::new();
    for chunk in chunks {
        let text = std::str::from_utf8(chunk).map_err(|e| format!("OpenMetrics body: {e}"))?;
        let mut these = Vec::new();
        parse::parse(text, &mut these)?;
        families.extend(these.iter().filter_map(|f| family(f, times)));
    }
    Ok(families)
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
    use super::*;

    const TIMES: Times = Times {
        now: 2_000_000_000_000_000_000,
        start: 1_000_000_000_000_000_000,
    };

    fn one(text: &str) -> Vec<Metric> {
        metrics([text.as_bytes()], TIMES).unwrap()
    }

    fn value(p: &NumberDataPoint) -> f64 {
        match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            _ => panic!("{p:?}"),
        }
    }

    #[test]
    fn a_counter_is_a_monotonic_cumulative_sum_without_total() {
        let m = one(
            "# HELP runs Runs.\n# TYPE runs counter\nruns_total{tenant=\"t\"} 3 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 1.0 1.5\n",
        );
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
        let m = one("# TYPE d histogram\n\
            d_sum{t=\"a\"} 3.5\nd_count{t=\"a\"} 4\n\
            d_bucket{t=\"a\",le=\"0.1\"} 1\nd_bucket{t=\"a\",le=\"1.0\"} 3\nd_bucket{t=\"a\",le=\"+Inf\"} 4\n\
            d_sum{t=\"b\"} 0\nd_count{t=\"b\"} 0\n\
            d_bucket{t=\"b\",le=\"0.1\"} 0\nd_bucket{t=\"b\",le=\"1.0\"} 0\nd_bucket{t=\"b\",le=\"+Inf\"} 0\n");
        let Some(metric::Data::Histogram(h)) = &m[0].data else {
            panic!("{m:?}")
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let a = &h.data_points[0];
        assert_eq!(a.attributes, vec![attribute("t", "a")]);
        assert_eq!(a.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(a.bucket_counts, vec![1, 2, 1]);
        assert_eq!((a.count, a.sum), (4, Some(3.5)));
        assert_eq!(h.data_points[1].bucket_counts, vec![0, 0, 0]);
    }

    #[test]
    fn gauges_info_and_empty_families() {
        let m = one(
            "# TYPE g gauge\ng{x=\"1\"} 2.5\n# TYPE i info\ni_info{v=\"1\"} 1\n\
             # TYPE empty counter\n# TYPE s summary\ns_count 1\n",
        );
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
        let mut text = String::from("# TYPE big gauge\n");
        for i in 0..25 {
            text.push_str(&format!("big{{i=\"{i}\"}} {i}\n"));
        }
        text.push_str("# TYPE small counter\nsmall_total 1\n");
        let m = one(&text);
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
        let mut counter = String::from("# TYPE c counter\n");
        for i in 0..25 {
            counter.push_str(&format!("c_total{{i=\"{i}\"}} {i}\n"));
        }
        let parts = cut(one(&counter).remove(0), 10);
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
}

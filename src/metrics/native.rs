//! The latency histograms that are also native histograms (#23): classic buckets with trace
//! exemplars in the text formats, and, in the Prometheus protobuf format, the same classic
//! buckets and the native (sparse, exponential) buckets beside them.
//!
//! prometheus-client 0.26 has no histogram that holds exemplars and native buckets at once
//! (`HistogramWithExemplars` is classic only, and an `Exemplar` cannot be built outside the
//! crate), so each series keeps both: the one with exemplars is encoded in the text formats,
//! unchanged, and the classic-and-native one in protobuf, where these two families carry no
//! exemplars. The choice is made per encoding by [`protobuf_scope`], set only by `encode`
//! around a protobuf encoding on its own thread.
//!
//! Without a trace pipeline no observation carries an exemplar, and the histogram with
//! exemplars only repeated the other's classic buckets: the process then keeps the
//! classic-and-native one alone ([`keep_exemplars`], set by `app::run` from the telemetry it
//! started), which the text formats encode as the same classic histogram, byte for byte. One
//! latency series held two histograms: at 2,000 tenants, 7 MiB (#34).
//!
//! The counters with exemplars ([`ExCounter`]) follow the same switch: without exemplars a
//! plain counter, one allocation instead of two (a counter inside a lock beside its exemplar).
//!
//! Owns the metric types, the family type made of it ([`ExHistogramFamily`]), its native bucket
//! configuration, whether exemplars are kept, and the protobuf switch. Does not own the families (the groups `api` and
//! `poll`, with their bucket bounds) nor the encoding (`encode`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, NativeHistogramConfig};
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::labels::TraceLabel;

thread_local! {
    /// Whether this thread is encoding the Prometheus protobuf format now.
    static PROTOBUF: Cell<bool> = const { Cell::new(false) };
}

/// Whether the latency histograms made from now on keep exemplars (a histogram with them
/// beside the classic-and-native one). On unless told otherwise: in-process users (tests,
/// benchmarks) see exemplars whenever a span is traced, as before.
static EXEMPLARS: AtomicBool = AtomicBool::new(true);

/// Keep exemplars in the latency histograms made from now on (`true` when spans are
/// exported: only a traced span gives an observation its exemplar). Called once at start,
/// before any series exists.
pub fn keep_exemplars(on: bool) {
    EXEMPLARS.store(on, Ordering::Relaxed);
}

/// Run `f` (a protobuf encoding) with the native buckets switched on for this thread.
pub(super) fn protobuf_scope<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            PROTOBUF.with(|p| p.set(self.0));
        }
    }
    let _reset = Reset(PROTOBUF.with(|p| p.replace(true)));
    f()
}

/// The native buckets: growth factor 1.1 (schema 3, the Prometheus default), at most 160
/// buckets (client_golang's usual limit; beyond it the resolution halves), never reset.
fn native_config() -> NativeHistogramConfig {
    NativeHistogramConfig::default().max_buckets(160)
}

/// A latency histogram: classic buckets with exemplars (when kept, see [`keep_exemplars`]),
/// and native buckets for protobuf.
#[derive(Debug, Clone)]
pub struct ClassicAndNative {
    with_exemplars: Option<HistogramWithExemplars<TraceLabel>>,
    native: Histogram,
}

impl ClassicAndNative {
    pub fn new(buckets: &[f64]) -> Self {
        ClassicAndNative::made(buckets, EXEMPLARS.load(Ordering::Relaxed))
    }

    fn made(buckets: &[f64], exemplars: bool) -> Self {
        ClassicAndNative {
            with_exemplars: exemplars.then(|| HistogramWithExemplars::new(buckets.iter().copied())),
            native: Histogram::new_classic_and_native(buckets.iter().copied(), native_config()),
        }
    }

    /// Observe `v` in both, with the trace as the classic bucket's exemplar.
    pub fn observe(&self, v: f64, exemplar: Option<TraceLabel>, timestamp: Option<SystemTime>) {
        if let Some(h) = &self.with_exemplars {
            h.observe(v, exemplar, timestamp);
        }
        self.native.observe(v);
    }
}

impl TypedMetric for ClassicAndNative {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ClassicAndNative {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match &self.with_exemplars {
            Some(h) if !PROTOBUF.with(Cell::get) => h.encode(encoder),
            // The text encoders write the classic buckets alone.
            _ => self.native.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A counter whose increments carry the trace that made them (OpenMetrics exemplars), when
/// exemplars are kept (see [`keep_exemplars`]); a plain counter otherwise, encoded the same.
#[derive(Debug, Clone)]
pub enum ExCounter {
    WithExemplar(CounterWithExemplar<TraceLabel>),
    Plain(Counter),
}

impl Default for ExCounter {
    fn default() -> Self {
        ExCounter::made(EXEMPLARS.load(Ordering::Relaxed))
    }
}

impl ExCounter {
    fn made(exemplars: bool) -> Self {
        if exemplars {
            ExCounter::WithExemplar(CounterWithExemplar::default())
        } else {
            ExCounter::Plain(Counter::default())
        }
    }

    /// Add `v`, with the trace as the exemplar when kept; the value before.
    pub fn inc_by(
        &self,
        v: u64,
        exemplar: Option<TraceLabel>,
        timestamp: Option<SystemTime>,
    ) -> u64 {
        match self {
            ExCounter::WithExemplar(c) => c.inc_by(v, exemplar, timestamp),
            ExCounter::Plain(c) => c.inc_by(v),
        }
    }

    pub fn value(&self) -> u64 {
        match self {
            ExCounter::WithExemplar(c) => c.get().0,
            ExCounter::Plain(c) => c.get(),
        }
    }
}

impl TypedMetric for ExCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ExCounter {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            ExCounter::WithExemplar(c) => c.encode(encoder),
            ExCounter::Plain(c) => c.encode(encoder),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A latency histogram family: classic buckets with exemplars, native buckets as well in
/// protobuf.
pub type ExHistogramFamily<L> = Family<L, ClassicAndNative, Buckets>;

/// The bucket bounds a family's series are made with.
#[derive(Clone)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<ClassicAndNative> for Buckets {
    fn new_metric(&self) -> ClassicAndNative {
        ClassicAndNative::new(self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use prometheus_client::encoding::{prometheus_protobuf, prometheus_text, text};
    use prometheus_client::registry::Registry;

    fn registry(metric: impl prometheus_client::registry::Metric) -> Registry {
        let mut r = Registry::default();
        r.register("latency_seconds", "Latency", metric);
        r
    }

    // See: #23. Both text formats are those of the classic histogram with exemplars, byte for
    // byte; protobuf has the classic buckets and the native ones.
    #[test]
    fn text_formats_unchanged_protobuf_has_both_bucket_kinds() {
        let bounds = [0.1, 1.0, 10.0];
        let ours = ClassicAndNative::new(&bounds);
        let classic = HistogramWithExemplars::<TraceLabel>::new(bounds.iter().copied());
        for (v, trace) in [
            (0.05, None),
            (0.4, Some("4bf92f3577b34da6a3ce929d0e0e4736")),
            (30.0, None),
        ] {
            let ex = trace.map(|t| TraceLabel { trace_id: t.into() });
            ours.observe(v, ex.clone(), None);
            classic.observe(v, ex, None);
        }
        let (ours, classic) = (registry(ours), registry(classic));
        let (mut a, mut b) = (String::new(), String::new());
        prometheus_text::encode(&mut a, &ours).unwrap();
        prometheus_text::encode(&mut b, &classic).unwrap();
        assert_eq!(a, b);
        let (mut a, mut b) = (String::new(), String::new());
        text::encode(&mut a, &ours).unwrap();
        text::encode(&mut b, &classic).unwrap();
        assert_eq!(a, b);
        assert!(
            a.contains("trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\""),
            "{a}"
        );

        let families = protobuf_scope(|| prometheus_protobuf::encode(&ours)).unwrap();
        let h = families[0].metric[0].histogram.as_ref().unwrap();
        assert_eq!(h.sample_count, 3);
        let classic: Vec<(f64, u64)> = h
            .bucket
            .iter()
            .map(|b| (b.upper_bound, b.cumulative_count))
            .collect();
        assert_eq!(classic[..3], [(0.1, 1), (1.0, 2), (10.0, 2)]);
        assert_eq!(h.schema, 3);
        assert!(!h.positive_span.is_empty());
        let native: i64 = h
            .positive_delta
            .iter()
            .scan(0, |c, d| {
                *c += d;
                Some(*c)
            })
            .sum();
        assert_eq!(native, 3, "each observation in a native bucket");
        // Outside the scope, protobuf gets the classic histogram alone.
        let families = prometheus_protobuf::encode(&ours).unwrap();
        let h = families[0].metric[0].histogram.as_ref().unwrap();
        assert!(h.positive_span.is_empty() && h.positive_delta.is_empty());
    }

    // See: #34. Without exemplars one histogram serves every format: the text formats are the
    // classic histogram's, byte for byte, and protobuf has both bucket kinds.
    #[test]
    fn without_exemplars_one_histogram_encodes_the_same() {
        let bounds = [0.1, 1.0, 10.0];
        let one = ClassicAndNative::made(&bounds, false);
        let two = ClassicAndNative::made(&bounds, true);
        assert!(one.with_exemplars.is_none() && two.with_exemplars.is_some());
        for v in [0.05, 0.4, 30.0, 0.4] {
            one.observe(v, None, None);
            two.observe(v, None, None);
        }
        let (one, two) = (registry(one), registry(two));
        for openmetrics in [false, true] {
            let (mut a, mut b) = (String::new(), String::new());
            if openmetrics {
                text::encode(&mut a, &one).unwrap();
                text::encode(&mut b, &two).unwrap();
            } else {
                prometheus_text::encode(&mut a, &one).unwrap();
                prometheus_text::encode(&mut b, &two).unwrap();
            }
            assert_eq!(a, b);
            assert!(a.contains("latency_seconds_bucket{le=\"+Inf\"} 4"), "{a}");
        }
        let mut a = protobuf_scope(|| prometheus_protobuf::encode(&one)).unwrap();
        let mut b = protobuf_scope(|| prometheus_protobuf::encode(&two)).unwrap();
        // Each made at its own instant.
        for f in a.iter_mut().chain(b.iter_mut()) {
            for m in &mut f.metric {
                if let Some(h) = m.histogram.as_mut() {
                    h.start_timestamp = None;
                }
            }
        }
        assert_eq!(a, b);
        assert!(
            !a[0].metric[0]
                .histogram
                .as_ref()
                .unwrap()
                .positive_span
                .is_empty()
        );
    }

    // See: #34. A counter without exemplars encodes as the one with them did, in every format.
    #[test]
    fn a_plain_counter_encodes_as_one_without_exemplars() {
        let (one, two) = (ExCounter::made(false), ExCounter::made(true));
        assert!(matches!(one, ExCounter::Plain(_)));
        for c in [&one, &two] {
            c.inc_by(3, None, None);
            c.inc_by(2, None, None);
        }
        assert_eq!((one.value(), two.value()), (5, 5));
        let (one, two) = (registry(one), registry(two));
        let (mut a, mut b) = (String::new(), String::new());
        text::encode(&mut a, &one).unwrap();
        text::encode(&mut b, &two).unwrap();
        assert_eq!(a, b);
        assert!(a.contains("latency_seconds_total 5"), "{a}");
        let (mut a, mut b) = (String::new(), String::new());
        prometheus_text::encode(&mut a, &one).unwrap();
        prometheus_text::encode(&mut b, &two).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            prometheus_protobuf::encode(&one).unwrap(),
            prometheus_protobuf::encode(&two).unwrap()
        );
    }
}

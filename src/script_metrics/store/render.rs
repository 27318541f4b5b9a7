//! Rendering the script-output store for `/metrics` (#21): the store in [`Part`]s that the two
//! encoding threads share, each written directly in the two text formats (what `/metrics`
//! does: the held sample lines copied, no sample formatted at a scrape) and each a
//! `prometheus-client` collector (the protobuf format and the OTLP push; the samples read
//! back from the held lines).
//!
//! Owns the order of the families (name order; the sets of a family in key order), which
//! kind and help a family gets (its first set's), which part encodes which family, and the
//! headers and own families' lines (`mde_script_metrics_*`) in both text formats, the bytes the collector gives (a
//! test holds the two equal). Does not own how the sets are held (`store`), the bytes of a
//! sample line (`lines`) nor the body they go in (`metrics::encode`).
//!
//! A direct writer that formatted every sample at each scrape was tried first and measured no
//! faster than the encoder (207 against 190 ms of CPU for 200,000 series): the time went to
//! formatting the samples, which is why they are held formatted.

use std::fmt::Write as _;
use std::sync::{Arc, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::lines::{self, push_labels, push_line, push_sample_name, push_value};
use super::{Fragment, Inner, Kind, SetKey, Store};

/// The help of a family whose script gave none.
const DEFAULT_HELP: &str = "Printed by a script, read from its Live Response transcript";
const LAST_NAME: &str = "mde_script_metrics_last_transcript_timestamp_seconds";
const LAST_HELP: &str = "lastUpdateDateTimeUtc (Unix seconds) of the action whose transcript gave the current script_metrics set of a script on a machine";
const INVALID_NAME: &str = "mde_script_metrics_lines_invalid";
const INVALID_HELP: &str = "Lines of script output that started like a sample and did not parse, and JSON paths missing or not a number, by script";
const DROPPED_NAME: &str = "mde_script_metrics_dropped";
const DROPPED_HELP: &str = "Script output samples that parsed and were not kept, by reason (max_series, max_total, max_bytes, max_total_bytes, fair_share, name_too_long, label_too_long, too_many_labels, unsupported_type, reserved_name, reserved_label, name_clash)";

const ABANDONED_NAME: &str = "mde_script_metrics_parse_abandoned";
const ABANDONED_HELP: &str = "Transcripts whose script output took longer to read than script_metrics_parse_timeout: the reading was abandoned and the transcript gave no set (the set held stays), by script";

type Sets = std::collections::BTreeMap<Arc<SetKey>, Fragment>;

/// The script families of part `part` of `parts`, in name order: positions `part`,
/// `part + parts`, ... Each with its kind and help (its first set's, in key order).
fn families(
    inner: &Inner,
    part: usize,
    parts: usize,
) -> impl Iterator<Item = (&str, Kind, &str, &Sets)> {
    inner
        .families
        .iter()
        .skip(part)
        .step_by(parts.max(1))
        .filter_map(|(name, sets)| {
            let first = sets.values().next()?;
            let help = first.help.as_deref().unwrap_or(DEFAULT_HELP);
            Some((&**name, first.kind, help, sets))
        })
}

/// One of `count` parts of the store for `/metrics` (#21): the script families at positions
/// `index`, `index + count`, ... of the name order, and with index 0 the store's own families
/// (`mde_script_metrics_*`). The registry holds the parts apart, so that the two threads that
/// encode a large body share 200,000 script series out between them instead of one thread
/// encoding them all. Each part walks the sets once to find its families.
#[derive(Debug, Clone)]
pub struct Part {
    store: Arc<Store>,
    index: usize,
    count: usize,
}

impl Store {
    /// The store as `count` parts (at least one), each a collector of its own.
    pub fn parts(self: &Arc<Self>, count: usize) -> Vec<Part> {
        let count = count.max(1);
        (0..count)
            .map(|index| Part {
                store: self.clone(),
                index,
                count,
            })
            .collect()
    }
}

impl Part {
    /// Append this part's families to `out` in the Prometheus text format, or OpenMetrics
    /// text: the bytes its collector gives in that format (a test holds the two equal),
    /// the samples' lines copied as held. 200,000 series: see docs/benchmarks.md.
    pub fn write_text(&self, out: &mut String, openmetrics: bool) -> std::fmt::Result {
        let inner = self
            .store
            .inner
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let w = TextWriter { openmetrics };
        for (name, kind, help, sets) in families(&inner, self.index, self.count) {
            w.descriptor(out, name, help, kind)?;
            for fragment in sets.values() {
                // The held lines as they are, unless they need another name (a set that gave
                // this name as a counter under a gauge family, or the other way round) or
                // OpenMetrics' spelling of an infinite value.
                let renamed = (fragment.kind == Kind::Counter) != (kind == Kind::Counter);
                let plain = !(renamed || openmetrics && fragment.infinite);
                if plain {
                    out.push_str(&fragment.lines);
                    continue;
                }
                for line in fragment.lines.split_inclusive('\n') {
                    let labels = line.find('{').map_or(line, |at| &line[at..]);
                    push_sample_name(out, name, kind);
                    push_line(out, labels, openmetrics);
                }
            }
        }
        if self.index != 0 {
            return Ok(());
        }
        if !inner.sets.is_empty() {
            w.descriptor(out, LAST_NAME, LAST_HELP, Kind::Gauge)?;
            for held in inner.sets.values() {
                out.push_str(LAST_NAME);
                out.push_str(&held.prefix);
                out.push('}');
                push_value(out, held.produced.timestamp_millis() as f64 / 1000.0);
            }
        }
        if !inner.invalid.is_empty() {
            w.descriptor(out, INVALID_NAME, INVALID_HELP, Kind::Counter)?;
            for ((tenant, script), n) in &inner.invalid {
                push_sample_name(out, INVALID_NAME, Kind::Counter);
                push_labels(out, &[("tenant", tenant), ("script", script)]);
                out.push('}');
                push_u64(out, *n);
            }
        }
        if !inner.dropped.is_empty() {
            w.descriptor(out, DROPPED_NAME, DROPPED_HELP, Kind::Counter)?;
            for ((tenant, script, reason), n) in &inner.dropped {
                push_sample_name(out, DROPPED_NAME, Kind::Counter);
                push_labels(
                    out,
                    &[("tenant", tenant), ("script", script), ("reason", reason)],
                );
                out.push('}');
                push_u64(out, *n);
            }
        }
        if !inner.abandoned.is_empty() {
            w.descriptor(out, ABANDONED_NAME, ABANDONED_HELP, Kind::Counter)?;
            for ((tenant, script), n) in &inner.abandoned {
                push_sample_name(out, ABANDONED_NAME, Kind::Counter);
                push_labels(out, &[("tenant", tenant), ("script", script)]);
                out.push('}');
                push_u64(out, *n);
            }
        }
        Ok(())
    }
}

/// The headers and names of the two text formats as `prometheus-client` 0.26 writes them for
/// gauges, counters and untyped families without prefix, unit or exemplars: Prometheus text
/// names a counter `name_total` in its `# HELP`/`# TYPE` lines too, escapes `\` and newlines
/// in help and calls an unknown type `untyped`; OpenMetrics keeps the bare name in those
/// lines, does not escape help and says `unknown`. (Sample names, the sample lines, and how
/// OpenMetrics spells an infinite value: `lines`.)
struct TextWriter {
    openmetrics: bool,
}

impl TextWriter {
    fn descriptor(&self, out: &mut String, name: &str, help: &str, kind: Kind) -> std::fmt::Result {
        let suffix = if kind == Kind::Counter && !self.openmetrics {
            "_total"
        } else {
            ""
        };
        let kind = match (kind, self.openmetrics) {
            (Kind::Counter, _) => "counter",
            (Kind::Gauge, _) => "gauge",
            (Kind::Untyped, false) => "untyped",
            (Kind::Untyped, true) => "unknown",
        };
        write!(out, "# HELP {name}{suffix} ")?;
        if self.openmetrics {
            out.push_str(help);
        } else {
            for c in help.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
        }
        write!(out, "\n# TYPE {name}{suffix} {kind}\n")
    }
}

/// ` <n>\n`.
fn push_u64(out: &mut String, n: u64) {
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(n));
    out.push('\n');
}

impl Collector for Part {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.store.encode_part(encoder, self.index, self.count)
    }
}

impl Collector for Store {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_part(encoder, 0, 1)
    }
}

impl Store {
    fn encode_part(
        &self,
        mut encoder: DescriptorEncoder,
        part: usize,
        parts: usize,
    ) -> Result<(), std::fmt::Error> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        for (name, kind, help, sets) in families(&inner, part, parts) {
            let metric_type = match kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Untyped => MetricType::Unknown,
            };
            let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
            for fragment in sets.values() {
                // Held lines are only ever written by `lines`: one that does not read back
                // is a bug, an encoding error rather than a body without it.
                lines::each_sample(&fragment.lines, |labels, value| {
                    let mut e = family.encode_family(&labels)?;
                    match kind {
                        Kind::Counter => e.encode_counter::<NoLabelSet, _, u64>(&value, None),
                        _ => e.encode_gauge(&value),
                    }
                })?;
            }
        }
        if part != 0 {
            return Ok(());
        }
        if !inner.sets.is_empty() {
            let mut last =
                encoder.encode_descriptor(LAST_NAME, LAST_HELP, None, MetricType::Gauge)?;
            for (k, set) in &inner.sets {
                let ts = set.produced.timestamp_millis() as f64 / 1000.0;
                last.encode_family(&[
                    ("tenant", k.0.as_str()),
                    ("machine", k.1.as_str()),
                    ("script", k.2.as_str()),
                ])?
                .encode_gauge(&ts)?;
            }
        }
        if !inner.invalid.is_empty() {
            let mut f =
                encoder.encode_descriptor(INVALID_NAME, INVALID_HELP, None, MetricType::Counter)?;
            for ((tenant, script), n) in &inner.invalid {
                f.encode_family(&[("tenant", tenant.as_str()), ("script", script.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        if !inner.dropped.is_empty() {
            let mut f =
                encoder.encode_descriptor(DROPPED_NAME, DROPPED_HELP, None, MetricType::Counter)?;
            for ((tenant, script, reason), n) in &inner.dropped {
                f.encode_family(&[
                    ("tenant", tenant.as_str()),
                    ("script", script.as_str()),
                    ("reason", *reason),
                ])?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        if !inner.abandoned.is_empty() {
            let mut f = encoder.encode_descriptor(
                ABANDONED_NAME,
                ABANDONED_HELP,
                None,
                MetricType::Counter,
            )?;
            for ((tenant, script), n) in &inner.abandoned {
                f.encode_family(&[("tenant", tenant.as_str()), ("script", script.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(n, None)?;
            }
        }
        Ok(())
    }
}

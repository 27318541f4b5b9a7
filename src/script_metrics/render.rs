//! Rendering the script-output store for `/metrics` (#21): the store in [`Part`]s that the two
//! encoding threads share, each a `prometheus-client` collector.
//!
//! Owns the order of the families (name order; the sets of a family in key order), which
//! kind and help a family gets, and which part encodes which family. Does not own the sets
//! (`store`) nor the body they go in (`metrics::encode`).
//!
//! A direct writer of the two text formats (the same bytes, without the encoder's objects)
//! was tried and measured no faster than the encoder here (207 against 190 ms of CPU for
//! 200,000 series): the time goes to walking and formatting the samples, not to the encoder.

use std::sync::{Arc, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{Family, Inner, Kind, SetKey, Store};

/// The help of a family whose script gave none.
const DEFAULT_HELP: &str = "Printed by a script, read from its Live Response transcript";
const LAST_NAME: &str = "mde_script_metrics_last_transcript_timestamp_seconds";
const LAST_HELP: &str = "lastUpdateDateTimeUtc (Unix seconds) of the action whose transcript gave the current script_metrics set of a script on a machine";
const INVALID_NAME: &str = "mde_script_metrics_lines_invalid";
const INVALID_HELP: &str = "Lines of script output that started like a sample and did not parse, and JSON paths missing or not a number, by script";
const DROPPED_NAME: &str = "mde_script_metrics_dropped";
const DROPPED_HELP: &str = "Script output samples that parsed and were not kept, by reason (max_series, max_total, name_too_long, label_too_long, too_many_labels, unsupported_type, reserved_name)";

/// One script family as rendered: its name, kind, help, and the sets that have it.
struct Rendered<'a> {
    name: &'a str,
    kind: Kind,
    help: &'a str,
    sets: Vec<(&'a SetKey, &'a Family)>,
}

/// The script families of part `part` of `parts`, in name order; the sets of one family in
/// key order (the sets are held in key order: one pass, no sort of 200,000 entries). A name
/// two sets give different kinds or help takes the first set's, in key order.
fn families(inner: &Inner, part: usize, parts: usize) -> Vec<Rendered<'_>> {
    let mut by_name: std::collections::HashMap<&str, Rendered<'_>> = Default::default();
    for (key, set) in &inner.sets {
        for f in &set.families {
            by_name
                .entry(f.name.as_str())
                .or_insert_with(|| Rendered {
                    name: f.name.as_str(),
                    kind: f.kind,
                    help: f.help.as_deref().unwrap_or(DEFAULT_HELP),
                    sets: Vec::new(),
                })
                .sets
                .push((key, f));
        }
    }
    let mut names: Vec<&str> = by_name.keys().copied().collect();
    names.sort_unstable();
    names
        .into_iter()
        .skip(part)
        .step_by(parts.max(1))
        .filter_map(|n| by_name.remove(n))
        .collect()
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
        // One label list for every sample, refilled (not one allocation a sample).
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(8);
        for f in families(&inner, part, parts) {
            let metric_type = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
                Kind::Untyped => MetricType::Unknown,
            };
            let mut family = encoder.encode_descriptor(f.name, f.help, None, metric_type)?;
            for ((tenant, machine, script), fam) in f.sets {
                for (labels, value) in &fam.samples {
                    all.clear();
                    all.extend([
                        ("tenant", tenant.as_str()),
                        ("machine", machine.as_str()),
                        ("script", script.as_str()),
                    ]);
                    all.extend(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    let labels = all.as_slice();
                    let mut e = family.encode_family(&labels)?;
                    match f.kind {
                        Kind::Counter => e.encode_counter::<NoLabelSet, _, u64>(value, None)?,
                        _ => e.encode_gauge(value)?,
                    }
                }
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
        Ok(())
    }
}

//! The registry in parts (#11, #21): one family or collector to a part, in registration order,
//! with the size each took in the latest body, whether it is left out of OpenMetrics, and
//! whether it is a part of the script-output store (written directly by the text formats).
//!
//! Owns that bookkeeping. Does not own the families (`metrics`) nor the encoding (`encode`).

use std::sync::atomic::AtomicUsize;

use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;

/// The registry, one family (or collector) to a part, in the order they were registered, with
/// the size each took in the latest body; see [`Metrics::encode_chunks`] (in `encode`).
#[derive(Default)]
pub struct Parts {
    pub parts: Vec<Registry>,
    pub last_len: Vec<AtomicUsize>,
    /// Parts left out of the OpenMetrics exposition (a name that clashes there).
    pub text_only: Vec<bool>,
    /// Per part, the script-output part it is, if it is one: the text formats write it
    /// directly, the same bytes its collector gives (#21).
    pub script: Vec<Option<crate::script_metrics::store::Part>>,
}

impl Parts {
    pub fn register(
        &mut self,
        name: &str,
        help: impl Into<String>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut r = Registry::default();
        r.register(name, help, metric);
        self.push(r);
    }

    /// As [`Parts::register`], served in the Prometheus text format only.
    pub fn register_text_only(
        &mut self,
        name: &str,
        help: impl Into<String>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.register(name, help, metric);
        if let Some(last) = self.text_only.last_mut() {
            *last = true;
        }
    }

    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        let mut r = Registry::default();
        r.register_collector(collector);
        self.push(r);
    }

    pub fn register_script_part(&mut self, part: crate::script_metrics::store::Part) {
        let mut r = Registry::default();
        r.register_collector(Box::new(part.clone()));
        self.push(r);
        if let Some(last) = self.script.last_mut() {
            *last = Some(part);
        }
    }

    fn push(&mut self, r: Registry) {
        self.parts.push(r);
        self.last_len.push(AtomicUsize::new(0));
        self.text_only.push(false);
        self.script.push(None);
    }
}

//! The `/metrics` body: every family encoded in registration order, one thread for a small
//! body, two for a large one, into buffers sized by the previous body (See: #11); or, in the
//! Prometheus protobuf format, on one thread with the latency histograms' native buckets
//! (See: #23), an unknown type's values in their own field (#32); and every family of the
//! OpenMetrics body as the Prometheus protobuf structs, for the OTLP push (`otlp_metrics`).
//!
//! Owns the encoding. Does not own the families nor their names (the groups), their order
//! (`metrics`), nor how the registry is cut into parts (`registry`).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::{
    MetricFamily, MetricType, Untyped,
};
use prometheus_client::encoding::{prometheus_protobuf, prometheus_text, text};
use prost::Message as _;

use super::Metrics;

impl Metrics {
    /// Encode every family. OpenMetrics (with exemplars) when asked for, else Prometheus text.
    pub fn encode(&self, openmetrics: bool) -> Result<String, std::fmt::Error> {
        join(self.encode_chunks(openmetrics)?)
    }

    /// Encode every family in the Prometheus protobuf format (length-delimited
    /// `MetricFamily` messages), the latency histograms with native buckets beside their
    /// classic ones. On the caller's thread: the native switch is per thread (see `native`).
    pub fn encode_protobuf(&self) -> Result<Bytes, std::fmt::Error> {
        super::native::protobuf_scope(|| {
            let mut out = Vec::with_capacity(
                self.registry
                    .last_len
                    .iter()
                    .map(|l| l.load(Ordering::Relaxed))
                    .sum::<usize>()
                    .max(16 * 1024),
            );
            for part in &self.registry.parts {
                for mut family in prometheus_protobuf::encode(part)? {
                    untyped_values(&mut family);
                    family
                        .encode_length_delimited(&mut out)
                        .map_err(|_| std::fmt::Error)?;
                }
            }
            Ok(Bytes::from(out))
        })
    }

    /// The families of each part the OpenMetrics exposition carries (those left out of it are
    /// left out here), in its order, as the Prometheus protobuf structs: what the OTLP push is
    /// built from. Encoded on the caller's thread outside the protobuf switch (see `native`),
    /// so the latency histograms give their classic buckets with exemplars, as in OpenMetrics.
    /// One part at a time, for the caller to turn into what it needs before the next.
    pub fn encode_structs(
        &self,
    ) -> impl Iterator<Item = Result<Vec<MetricFamily>, std::fmt::Error>> + '_ {
        let parts = &self.registry;
        parts
            .parts
            .iter()
            .zip(&parts.text_only)
            .filter(|(_, text_only)| !**text_only)
            .map(|(part, _)| prometheus_protobuf::encode(part))
    }

    /// Encode every family, as chunks to be sent one after the other. A small body is one
    /// chunk. A large one is encoded by two threads (the caller's and one more), the families
    /// shared out between them by the sizes they had in the previous body (largest first, to
    /// whichever thread has less so far), each thread writing into one buffer of its own; the
    /// chunks are slices of the two buffers, one a family, in registration order, so the body
    /// is the one a single thread makes, never copied into one string (which would hold it
    /// twice). The largest family bounds the gain: it is encoded by one thread. Two threads
    /// halve the time to encode 50,000 series when a core is free. See: #11
    ///
    /// Each buffer is allocated once, at the size its families took last time plus an eighth:
    /// grown by doubling from 16 KiB, a 5 MB body (50,000 series) was reallocated nine times.
    /// A large body's buffers are at least [`MAPPED`], see there.
    pub fn encode_chunks(&self, openmetrics: bool) -> Result<Vec<Bytes>, std::fmt::Error> {
        self.encode_split(openmetrics, true)
    }

    /// As [`Metrics::encode_chunks`], on the caller's thread alone, into one chunk (for the
    /// render benchmark's comparison).
    pub fn encode_on_one_thread(&self, openmetrics: bool) -> Result<Vec<Bytes>, std::fmt::Error> {
        self.encode_split(openmetrics, false)
    }

    fn encode_split(
        &self,
        openmetrics: bool,
        two_threads: bool,
    ) -> Result<Vec<Bytes>, std::fmt::Error> {
        let parts = &self.registry;
        let n = parts.parts.len();
        let last: Vec<usize> = parts
            .last_len
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect();
        let total: usize = last.iter().sum();
        // Encode `families` into one buffer; where each family landed in it.
        type Spans = Vec<(usize, std::ops::Range<usize>)>;
        let encode_run =
            |families: &[usize], eof: bool| -> Result<(Bytes, Spans), std::fmt::Error> {
                let expected: usize = families.iter().map(|&i| last[i]).sum();
                let mut room = (expected + expected / 8).max(16 * 1024);
                if total >= PARALLEL_FROM {
                    room = room.max(MAPPED);
                }
                let mut out = String::with_capacity(room);
                let mut spans = Vec::with_capacity(families.len());
                for &i in families {
                    let start = out.len();
                    if openmetrics && parts.text_only[i] {
                        // A name that clashes in OpenMetrics (see `Parts::text_only`).
                        spans.push((i, start..start));
                        continue;
                    }
                    if let Some(script) = &parts.script[i] {
                        // 200,000 script series: their held lines copied, not encoded sample
                        // by sample (the same bytes). (#21)
                        script.write_text(&mut out, openmetrics)?;
                    } else if openmetrics {
                        text::encode_registry(&mut out, &parts.parts[i])?;
                    } else {
                        prometheus_text::encode(&mut out, &parts.parts[i])?;
                    }
                    parts.last_len[i].store(out.len() - start, Ordering::Relaxed);
                    spans.push((i, start..out.len()));
                }
                if eof {
                    text::encode_eof(&mut out)?;
                }
                Ok((Bytes::from(out), spans))
            };
        let chunks = if two_threads && total >= PARALLEL_FROM {
            let mut by_size: Vec<usize> = (0..n).collect();
            by_size.sort_by_key(|&i| std::cmp::Reverse(last[i]));
            let (mut first, mut second) = (Vec::new(), Vec::new());
            let (mut load_first, mut load_second) = (0, 0);
            for i in by_size {
                if load_first <= load_second {
                    first.push(i);
                    load_first += last[i];
                } else {
                    second.push(i);
                    load_second += last[i];
                }
            }
            // The quota gauges read tokio's clock: the other thread reads the same one.
            let runtime = tokio::runtime::Handle::try_current().ok();
            let (mine, theirs) = std::thread::scope(|scope| {
                let other = std::thread::Builder::new()
                    .name("metrics-encode".into())
                    .spawn_scoped(scope, || {
                        let _entered = runtime.as_ref().map(|r| r.enter());
                        encode_run(&second, false)
                    });
                let mine = encode_run(&first, false);
                let theirs = match other {
                    // A panic in the other thread is an encoder bug; it surfaces as an
                    // encoding error rather than taking the server down.
                    Ok(handle) => handle.join().map_err(|_| std::fmt::Error),
                    // No thread to be had (a process limit): this one does it all.
                    Err(_) => Ok(encode_run(&second, false)),
                };
                (mine, theirs)
            });
            let mut by_index: Vec<Bytes> = vec![Bytes::new(); n];
            for (buffer, spans) in [mine?, theirs??] {
                for (i, span) in spans {
                    by_index[i] = buffer.slice(span);
                }
            }
            by_index.retain(|c| !c.is_empty());
            if openmetrics {
                let mut eof = String::new();
                text::encode_eof(&mut eof)?;
                by_index.push(Bytes::from(eof));
            }
            by_index
        } else {
            let all: Vec<usize> = (0..n).collect();
            vec![encode_run(&all, openmetrics)?.0]
        };
        Ok(chunks)
    }
}

/// Chunks joined into one string.
/// `prometheus-client` 0.26 writes the values of a family of unknown type (script output
/// with no `# TYPE`) in the `gauge` field of its `UNTYPED` metrics, where the format (and
/// Prometheus' parser) reads `untyped`: a protobuf scrape read every such series as 0. The
/// value is moved to its field. Found by the tests' strict reader (#32 item 2).
fn untyped_values(family: &mut MetricFamily) {
    if family.r#type != MetricType::Untyped as i32 {
        return;
    }
    for m in &mut family.metric {
        if m.untyped.is_none()
            && let Some(g) = m.gauge.take()
        {
            m.untyped = Some(Untyped { value: g.value });
        }
    }
}

fn join(chunks: Vec<Bytes>) -> Result<String, std::fmt::Error> {
    let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    String::from_utf8(out).map_err(|_| std::fmt::Error)
}

/// The least room a buffer of a large body gets: 32 MiB and a page. An allocation this
/// large is mapped fresh from the system by glibc's allocator (its mmap threshold never
/// exceeds 32 MiB on 64-bit systems; musl's is far lower) and given back to it when freed,
/// and only the pages written cost memory. A smaller buffer would come from the heap of the
/// thread that encoded it and stay there between scrapes: with 2,000 tenants, a 46 MB body
/// held for good (steady RSS 209 MiB instead of 158 MiB in `cargo bench --bench scale`).
const MAPPED: usize = 32 * 1024 * 1024 + 4096;

/// From this many bytes of body (as last encoded) on, `/metrics` is encoded by two threads.
/// About 5,000 series; below it a thread costs more than it saves.
const PARALLEL_FROM: usize = 512 * 1024;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::metrics::{MachineScriptLabels, ScriptSeries};
    /// Enough series in families far apart in the registry for a body over
    /// [`PARALLEL_FROM`].
    fn large() -> Metrics {
        let m = Metrics::new();
        for i in 0..4000 {
            let labels = MachineScriptLabels {
                tenant: format!("tenant-{}", i % 40).into(),
                machine: format!("machine-{i}.contoso.example").into(),
                script: "collect-inventory.ps1".into(),
            };
            m.results.set_script_series(
                &labels,
                ScriptSeries {
                    exit_code: i % 3,
                    errors_present: false,
                    end_time: 0.0,
                },
            );
            m.results.set_script_not_run(&labels, true);
        }
        m
    }

    /// The body without the `process_*` samples, which change between two encodings.
    fn steady(body: &str) -> String {
        body.lines()
            .filter(|l| !l.starts_with("process_"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// See: #11. Once the previous body says it is large, the next is encoded in chunks on two
    /// threads; sent one after the other they are exactly the body one thread makes, in both
    /// formats, with OpenMetrics' `# EOF` once, at the end.
    #[test]
    fn a_large_body_in_chunks_is_the_same_body() {
        for openmetrics in [false, true] {
            let m = large();
            let one = m.encode_chunks(openmetrics).unwrap();
            let one: Vec<String> = one
                .into_iter()
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            assert_eq!(
                one.len(),
                1,
                "the first body has no previous size to split by"
            );
            assert!(one[0].len() > PARALLEL_FROM);
            let two = m.encode_chunks(openmetrics).unwrap();
            // A chunk per family that has series, in registration order.
            assert!(two.len() > 2, "{} chunks", two.len());
            assert!(two.iter().all(|c| !c.is_empty()));
            // (Not assert_eq: a failure would print megabytes.)
            let two = join(two).unwrap();
            assert!(
                steady(&two) == steady(&one[0]),
                "two chunks differ from one"
            );
            assert!(steady(&m.encode(openmetrics).unwrap()) == steady(&one[0]));
            assert_eq!(one[0].matches("# EOF").count(), usize::from(openmetrics));
        }
    }

    /// A small body stays one chunk, encoded on the caller's thread.
    #[test]
    fn a_small_body_is_one_chunk() {
        let m = Metrics::new();
        let first = m.encode(false).unwrap();
        let again = m.encode_chunks(false).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            steady(std::str::from_utf8(&again[0]).unwrap()),
            steady(&first)
        );
    }
}

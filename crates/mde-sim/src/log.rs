//! The simulator binary's log lines, in the exporter's shape: one flat JSON record per event,
//! `ts`, `level`, `msg`, `target` (only for other crates' events), then the fields of the
//! spans the event happens in (outermost first) and of the event itself, each key once (the
//! innermost value wins). One log pipeline reads both programs. The line is written by the
//! `flat-log` crate both programs share, not by an import: the simulator never depends on the
//! exporter it checks.
//!
//! Owns installing the subscriber of the `mde-sim` binary. Does not own the line format
//! (`flat-log`), the filter syntax (`tracing_subscriber::EnvFilter`) nor the exporter's logs.

use flat_log::{FlatFormat, Format};
use tracing_subscriber::fmt::format::JsonFields;

/// The simulator's own events (known by their message, no `target`).
const OWN_TARGETS: &[&str] = &["mde_sim"];

/// The event formatter of the simulator's lines: flat JSON.
pub fn flat_json() -> FlatFormat {
    FlatFormat::new(Format::Json, OWN_TARGETS)
}

/// Log flat JSON lines to stderr, filtered by `filter`.
pub fn init(filter: tracing_subscriber::EnvFilter) {
    tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(flat_json())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    // See: #24 (item 10). The simulator used tracing's nested JSON (`fields`, `span`,
    // `spans`, `timestamp`); it now writes the exporter's flat records.
    #[test]
    fn lines_are_flat_json_like_the_exporters() {
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFields::new())
            .event_format(flat_json())
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("serve", addr = "127.0.0.1:1", tenants = 2);
            let _e = span.enter();
            tracing::info!(tenants = 3, seed = 7u64, "simulator listening");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line = text.lines().next().unwrap();
        let (head, rest) = line.split_once(",\"level\"").unwrap();
        assert!(head.starts_with("{\"ts\":\"20"), "{line}");
        assert_eq!(
            rest,
            ":\"info\",\"msg\":\"simulator listening\",\"addr\":\"127.0.0.1:1\",\"tenants\":3,\"seed\":7}",
            "flat, each key once, the event's value wins"
        );
        let record: Value = serde_json::from_str(line).unwrap();
        assert!(record.get("fields").is_none() && record.get("span").is_none());
        assert!(line.starts_with("{\"ts\":\""), "{line}");
    }
}

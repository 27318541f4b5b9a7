//! The simulator binary's log lines, in the exporter's shape: one flat JSON record per event,
//! `ts`, `level`, `msg`, `target` (only for other crates' events), then the fields of the
//! spans the event happens in (outermost first) and of the event itself, each key once (the
//! innermost value wins). One log pipeline reads both programs. A copy of the exporter's JSON
//! format rather than an import: the simulator never depends on the exporter it checks.
//!
//! Owns writing a line and installing the subscriber of the `mde-sim` binary. Does not own the
//! filter syntax (`tracing_subscriber::EnvFilter`) nor the exporter's logs.

use std::fmt;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Log flat JSON lines to stderr, filtered by `filter`.
pub fn init(filter: tracing_subscriber::EnvFilter) {
    tracing_subscriber::fmt()
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The event formatter; span fields are stored by [`JsonFields`] and read back here.
pub struct FlatJson;

/// Fields in first-seen order; a later value for a key replaces the earlier one in place.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn put(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key.to_string(), value)),
        }
    }
}

/// Collects an event's fields; `message` becomes the record's `msg`.
struct Visitor<'a> {
    fields: &'a mut Fields,
    message: &'a mut Option<String>,
}

impl Visitor<'_> {
    fn value(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            *self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.put(field.name(), value);
        }
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.value(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.value(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.value(field, Value::from(format!("{value:?}")));
    }
}

/// One record as a JSON object, keys in order: head first, then the fields not named like a
/// head key.
fn render(ts: &str, level: &str, msg: &str, target: Option<&str>, fields: &Fields) -> String {
    let mut head = vec![
        ("ts", Value::from(ts)),
        ("level", Value::from(level)),
        ("msg", Value::from(msg)),
    ];
    if let Some(t) = target {
        head.push(("target", Value::from(t)));
    }
    let mut out = String::from("{");
    let rest = fields
        .0
        .iter()
        .filter(|(k, _)| !head.iter().any(|(h, _)| h == k))
        .map(|(k, v)| (k.as_str(), v));
    for (i, (k, v)) in head.iter().map(|(k, v)| (*k, v)).chain(rest).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(k).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    out
}

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(stored) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&stored.fields) {
                    for (k, v) in map {
                        fields.put(&k, v);
                    }
                }
            }
        }
        let mut message = None;
        event.record(&mut Visitor {
            fields: &mut fields,
            message: &mut message,
        });
        let meta = event.metadata();
        let target = meta.target();
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = meta.level().as_str().to_ascii_lowercase();
        let line = render(
            &ts,
            &level,
            message.as_deref().unwrap_or_default(),
            (!target.starts_with("mde_sim")).then_some(target),
            &fields,
        );
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

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
            .event_format(FlatJson)
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

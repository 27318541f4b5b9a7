//! The flat log line both programs write, the exporter and its simulator: one record per
//! event, `ts`, `level`, `msg`, `target` (only for events of crates other than the program's
//! own), then the fields of the spans the event happens in (outermost first) and of the event
//! itself, each key once (the innermost value wins), as JSON or logfmt. This is the shape of
//! Prometheus's own logs, so the same log pipeline reads both programs and Prometheus.
//!
//! A crate of its own so that the simulator (`mde-sim`), which never depends on the exporter
//! it checks, and the exporter write the same bytes from one formatter.
//!
//! Owns writing a line ([`FlatFormat`]) and the two formats ([`Format`]). Does not own which
//! events are written (each program's filters), the flags that choose a format, nor
//! installing a subscriber.

use std::fmt;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Logfmt,
}

/// The event formatter for both line formats. Span fields must be stored by
/// [`JsonFields`](tracing_subscriber::fmt::format::JsonFields) (a JSON object per span), which
/// is read back here.
pub struct FlatFormat {
    format: Format,
    own_targets: &'static [&'static str],
}

impl FlatFormat {
    /// A formatter writing `format` lines. Events whose target starts with one of
    /// `own_targets` (the program's own crates) are known by their message; other crates'
    /// events also say where they come from (`target`).
    pub fn new(format: Format, own_targets: &'static [&'static str]) -> Self {
        Self {
            format,
            own_targets,
        }
    }
}

/// Fields in first-seen order; a later value for a key replaces the earlier one in place.
#[derive(Default)]
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn put(&mut self, key: &str, value: Value) {
        // `otel.*` fields steer the span exporter (span name, kind); they are not log data.
        if key.starts_with("otel.") {
            return;
        }
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

/// Whether a logfmt value must be quoted.
fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c <= ' ' || c == '=' || c == '"' || c == '\\')
}

fn logfmt_value(out: &mut String, v: &Value) {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if !needs_quotes(&text) {
        out.push_str(&text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Render one record (the tests check the exact text).
fn render(
    format: Format,
    ts: &str,
    level: &str,
    msg: &str,
    target: Option<&str>,
    fields: &Fields,
) -> String {
    let mut head: Vec<(&str, Value)> = vec![
        ("ts", Value::from(ts)),
        ("level", Value::from(level)),
        ("msg", Value::from(msg)),
    ];
    if let Some(t) = target {
        head.push(("target", Value::from(t)));
    }
    // A field named like a head key does not repeat it.
    let rest = fields
        .0
        .iter()
        .filter(|(k, _)| !head.iter().any(|(h, _)| h == k));
    match format {
        Format::Json => {
            let mut out = String::from("{");
            let all = head
                .iter()
                .map(|(k, v)| (*k, v))
                .chain(rest.map(|(k, v)| (k.as_str(), v)));
            for (i, (k, v)) in all.enumerate() {
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
        Format::Logfmt => {
            let mut out = String::new();
            let all = head
                .iter()
                .map(|(k, v)| (*k, v))
                .chain(rest.map(|(k, v)| (k.as_str(), v)));
            for (i, (k, v)) in all.enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push('=');
                logfmt_value(&mut out, v);
            }
            out
        }
    }
}

impl<S, N> FormatEvent<S, N> for FlatFormat
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
        // Our own events are known by their message; other crates' say where they come from.
        let target = meta.target();
        let ours = self.own_targets.iter().any(|own| target.starts_with(own));
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = meta.level().as_str().to_ascii_lowercase();
        let line = render(
            self.format,
            &ts,
            &level,
            message.as_deref().unwrap_or_default(),
            (!ours).then_some(target),
            &fields,
        );
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, Value)]) -> Fields {
        let mut f = Fields::default();
        for (k, v) in pairs {
            f.put(k, v.clone());
        }
        f
    }

    // See: #12
    #[test]
    fn json_is_flat_with_ts_level_msg_first_and_each_key_once() {
        let f = fields(&[
            ("tenant", Value::from("a")),
            ("otel.name", Value::from("GET x")),
            ("exit_code", Value::from(3)),
            ("tenant", Value::from("b")),
        ]);
        assert_eq!(
            render(
                Format::Json,
                "2026-11-28T03:00:00.000Z",
                "info",
                "hi \"x\"",
                None,
                &f
            ),
            r#"{"ts":"2026-11-28T03:00:00.000Z","level":"info","msg":"hi \"x\"","tenant":"b","exit_code":3}"#
        );
    }

    // See: #12
    #[test]
    fn logfmt_quotes_what_needs_it_and_repeats_no_key() {
        let f = fields(&[
            ("tenant", Value::from("demo")),
            ("error", Value::from("a=b \"c\"\nd")),
            ("empty", Value::from("")),
            ("ok", Value::from(true)),
            ("tenant", Value::from("demo")),
        ]);
        assert_eq!(
            render(
                Format::Logfmt,
                "T",
                "warn",
                "poll failed",
                Some("hyper"),
                &f
            ),
            r#"ts=T level=warn msg="poll failed" target=hyper tenant=demo error="a=b \"c\"\nd" empty="" ok=true"#
        );
    }
}

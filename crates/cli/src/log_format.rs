//! How `rbk` writes its logs to stderr: `--log-format text` (the default,
//! tracing's human format) or `json`, one JSON object per line for log
//! shippers (Loki, Elasticsearch, Cloud Logging) that would otherwise
//! parse text with regular expressions. Level filtering is `RBK_LOG` in
//! both.
//!
//! tracing-subscriber's own `json` feature needs the `tracing-serde`
//! crate, which this build does not have offline; [`JsonLines`] is the few
//! dozen lines of it rbk needs: `timestamp` (RFC 3339, UTC), `level`,
//! `target`, `message`, the event's other fields by name (numbers and
//! booleans stay JSON numbers and booleans), and `spans`, the names and
//! fields of the spans the event happened in, outermost first.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// tracing's human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process' log subscriber: `RBK_LOG` filter (default
/// `warn`), stderr, in `format`.
pub fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RBK_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a terminal: log files stay greppable
        // (`grep build_id=...`).
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).init(),
    }
}

/// Formats each event as one line of JSON (see the module docs).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut obj = Map::new();
        obj.insert("timestamp".into(), crate::utc::rfc3339_ms(crate::utc::now_ms()).into());
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        let mut fields = JsonFields(Map::new());
        event.record(&mut fields);
        obj.insert("message".into(), fields.0.remove("message").unwrap_or(Value::String(String::new())));
        for (k, v) in fields.0 {
            // An event field named like one of ours keeps its value under
            // a prefixed name instead of overwriting it.
            let k = if obj.contains_key(&k) { format!("field.{k}") } else { k };
            obj.insert(k, v);
        }
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| {
                    let ext = span.extensions();
                    let f = ext.get::<FormattedFields<N>>().map(|f| f.fields.as_str()).unwrap_or_default();
                    serde_json::json!({ "name": span.name(), "fields": f })
                })
                .collect();
            if !spans.is_empty() {
                obj.insert("spans".into(), spans.into());
            }
        }
        writeln!(writer, "{}", Value::Object(obj))
    }
}

/// An event's fields as JSON values.
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), rbk_client::tls::describe(value).into());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_event_is_one_json_object_with_its_fields_typed_and_its_spans() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || out.clone()).with_ansi(false).event_format(JsonLines).finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("build", build_id = "b-1");
            let _in = span.enter();
            tracing::warn!(worker = "w1", attempt = 2u64, retried = true, "step \"x\" failed");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "step \"x\" failed");
        assert_eq!((v["worker"].as_str(), v["attempt"].as_u64(), v["retried"].as_bool()), (Some("w1"), Some(2), Some(true)));
        assert_eq!(v["spans"][0]["name"], "build");
        assert!(v["spans"][0]["fields"].as_str().unwrap().contains("b-1"), "{v}");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v["target"].as_str().unwrap().contains("log_format"), "{v}");
    }
}

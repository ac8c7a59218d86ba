//! Log lines on stderr: text for people, or (`--log-format json`) one JSON object per line in
//! the Elastic Common Schema, which Filebeat or Logstash ship into Elasticsearch without a grok
//! pattern (see `deploy/filebeat.yml`).
//!
//! ECS names for what ECS has a name for (the request's id, method, status and duration, the
//! user, the error); everything else a line carries (a job's or node's id, a route template, a
//! count), from the event and the spans around it, under `aiedge.*`, the custom namespace ECS
//! asks for.

use std::fmt;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The ECS version the lines follow.
pub const ECS_VERSION: &str = "8.11.0";

/// Installs the process's subscriber: `RUST_LOG`, else info (and warn for the chatty crates).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn,tower_http=info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.fmt_fields(JsonFields::new()).event_format(Ecs).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Formats an event as one ECS JSON line. Needs the span fields as JSON ([`JsonFields`]).
pub struct Ecs;

impl<S, N> FormatEvent<S, N> for Ecs
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("@timestamp".into(), humantime::format_rfc3339_millis(SystemTime::now()).to_string().into());
        line.insert("log.level".into(), meta.level().as_str().to_ascii_lowercase().into());
        line.insert("log.logger".into(), meta.target().into());
        line.insert("ecs.version".into(), ECS_VERSION.into());
        line.insert("service.name".into(), "aiedge-server".into());
        // The spans' fields first (outermost first), so the event's own win.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else { continue };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    for (name, value) in fields {
                        put(&mut line, &name, value);
                    }
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        line.insert("message".into(), fields.message.unwrap_or_default().into());
        for (name, value) in fields.values {
            put(&mut line, &name, value);
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Puts a field under its ECS name, or under `aiedge.*`.
fn put(line: &mut Map<String, Value>, name: &str, value: Value) {
    let (key, value) = match name {
        "request_id" => ("http.request.id".to_owned(), value),
        "method" => ("http.request.method".to_owned(), value),
        "status" if value.is_number() => ("http.response.status_code".to_owned(), value),
        // ECS durations are in nanoseconds.
        "latency_ms" => ("event.duration".to_owned(), value.as_f64().map_or(value, |ms| Value::from((ms * 1e6).round() as u64))),
        "user_id" => match value.as_str() {
            Some("") => return,
            _ => ("user.id".to_owned(), value),
        },
        "error" => ("error.message".to_owned(), Value::from(value.as_str().map_or_else(|| value.to_string(), str::to_owned))),
        other => (format!("aiedge.{other}"), value),
    };
    line.insert(key, value);
}

/// An event's message and fields, as JSON values.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(String, Value)>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: Value) {
        self.values.push((field.name().to_owned(), value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.add(field, value.into());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.add(field, text.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use super::*;

    /// Every ECS field a line may carry, with its JSON type; `aiedge.*` is ours.
    const ECS_FIELDS: &[(&str, &str)] = &[
        ("@timestamp", "string"),
        ("log.level", "string"),
        ("log.logger", "string"),
        ("ecs.version", "string"),
        ("service.name", "string"),
        ("message", "string"),
        ("http.request.id", "string"),
        ("http.request.method", "string"),
        ("http.response.status_code", "number"),
        ("event.duration", "number"),
        ("user.id", "string"),
        ("error.message", "string"),
    ];

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(emit: impl FnOnce()) -> Vec<Map<String, Value>> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).fmt_fields(JsonFields::new()).event_format(Ecs).finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap().as_object().unwrap().clone()).collect()
    }

    fn check_names(line: &Map<String, Value>) {
        for (key, value) in line {
            if key.starts_with("aiedge.") {
                continue;
            }
            let (_, kind) = ECS_FIELDS.iter().find(|(name, _)| name == key).unwrap_or_else(|| panic!("`{key}` is not an ECS field we use"));
            let ok = match *kind {
                "string" => value.is_string(),
                _ => value.is_number(),
            };
            assert!(ok, "`{key}` should be a {kind}: {value}");
        }
        for required in ["@timestamp", "log.level", "message", "ecs.version"] {
            assert!(line.contains_key(required), "{required} missing: {line:?}");
        }
    }

    #[test]
    fn a_request_line_is_ecs() {
        let lines = lines_of(|| {
            tracing::info!(target: "aiedge::http", request_id = "abc", method = "POST", route = "/api/v1/jobs", status = 201u16,
                latency_ms = 2.5, user_id = "u-1", "request");
        });
        let line = &lines[0];
        check_names(line);
        assert_eq!(line["http.request.id"], "abc");
        assert_eq!(line["http.request.method"], "POST");
        assert_eq!(line["http.response.status_code"], 201);
        assert_eq!(line["event.duration"], 2_500_000);
        assert_eq!(line["user.id"], "u-1");
        assert_eq!(line["aiedge.route"], "/api/v1/jobs");
        assert_eq!(line["log.logger"], "aiedge::http");
        assert_eq!(line["message"], "request");
        // RFC 3339 in UTC, to the millisecond.
        let at = line["@timestamp"].as_str().unwrap();
        assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
    }

    #[test]
    fn a_domain_event_carries_its_spans_fields() {
        let lines = lines_of(|| {
            let span = tracing::info_span!("finish", job_id = "j-1", node_id = "n-1", attempt = 2u32);
            let _entered = span.enter();
            tracing::warn!(error = "disk full", "finish refused");
        });
        let line = &lines[0];
        check_names(line);
        assert_eq!(line["aiedge.job_id"], "j-1");
        assert_eq!(line["aiedge.node_id"], "n-1");
        assert_eq!(line["aiedge.attempt"], 2);
        assert_eq!(line["error.message"], "disk full");
        assert_eq!(line["log.level"], "warn");
        assert_eq!(line["message"], "finish refused");
    }
}

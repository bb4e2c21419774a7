//! JSON logs on stdout in Cloud Logging's shape: `severity`, `message`,
//! `logging.googleapis.com/trace`, the span's fields, and phone numbers masked.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The span field that carries the Cloud Trace name (`projects/P/traces/T`).
pub const TRACE_FIELD: &str = "trace";
const TRACE_KEY: &str = "logging.googleapis.com/trace";
const SPAN_FIELD: &str = "span_id";
const SPAN_KEY: &str = "logging.googleapis.com/spanId";

/// Installs the JSON logger; the level comes from `RUST_LOG` (default `info`).
/// A second call is a no-op, so tests and the local stack may call it freely.
pub fn init() {
    init_with_default("info");
}

/// As [`init`], with another level when `RUST_LOG` is unset (the demo keeps
/// its terminal for the story and logs only warnings).
pub fn init_with_default(level: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(CloudLogging),
        )
        .try_init();
}

/// The trace and span of a request, from W3C `traceparent`
/// (`00-TRACE_ID-SPAN_ID-FLAGS`) or else Google's `X-Cloud-Trace-Context`
/// (`TRACE_ID/SPAN_ID;o=1`): the trace as Cloud Logging names it, and the
/// span id (hex, as Cloud Logging's `spanId` takes it).
pub fn trace_context(
    project: Option<&str>,
    traceparent: Option<&str>,
    cloud: Option<&str>,
) -> Option<(String, Option<String>)> {
    let w3c = traceparent.and_then(|h| {
        let parts: Vec<&str> = h.trim().split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
        match parts.as_slice() {
            [version, trace, span, flags]
                if hex(version, 2)
                    && hex(trace, 32)
                    && hex(span, 16)
                    && hex(flags, 2)
                    && *trace != "00000000000000000000000000000000" =>
            {
                Some((trace.to_string(), Some(span.to_string())))
            }
            _ => None,
        }
    });
    let (trace_id, span) = w3c.or_else(|| {
        let h = cloud?;
        let trace = h.split(['/', ';']).next()?.trim().to_owned();
        // Google's span id is decimal; Cloud Logging wants 16 hex digits.
        let span = h
            .split_once('/')
            .and_then(|(_, rest)| rest.split(';').next())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|n| format!("{n:016x}"));
        Some((trace, span))
    })?;
    Some((trace_name(project, &trace_id)?, span))
}

/// The Cloud Trace name for an `X-Cloud-Trace-Context` header (`TRACE_ID/SPAN_ID;o=1`).
pub fn trace_name(project: Option<&str>, header: &str) -> Option<String> {
    let trace_id = header.split(['/', ';']).next()?.trim();
    if trace_id.is_empty() || !trace_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(match project {
        Some(p) => format!("projects/{p}/traces/{trace_id}"),
        None => trace_id.to_owned(),
    })
}

/// Formats one event as one JSON line in Cloud Logging's shape.
pub struct CloudLogging;

impl<S, N> FormatEvent<S, N> for CloudLogging
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
        let mut line = Map::new();
        line.insert(
            "severity".into(),
            severity(*event.metadata().level()).into(),
        );
        line.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("target".into(), event.metadata().target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields) {
                    for (k, v) in map {
                        let key = if k == TRACE_FIELD {
                            TRACE_KEY.to_owned()
                        } else if k == SPAN_FIELD {
                            SPAN_KEY.to_owned()
                        } else {
                            k
                        };
                        line.insert(key, v);
                    }
                }
            }
        }
        let mut visitor = JsonVisitor(Map::new());
        event.record(&mut visitor);
        let message = visitor
            .0
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        line.extend(visitor.0);
        line.insert("message".into(), message);
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{}", mask_phone_numbers(&text))
    }
}

fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
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
        let mut chain = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        self.0.insert(field.name().into(), chain.into());
    }
}

/// Masks every `+` (or its URL encoding `%2B`) followed by 7 to 15 digits,
/// whatever wrote it: the last line of defence that keeps phone numbers out of logs.
pub fn mask_phone_numbers(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let plus = if bytes[i] == b'+' {
            1
        } else if bytes.len() - i >= 3 && bytes[i..i + 3].eq_ignore_ascii_case(b"%2B") {
            3
        } else {
            0
        };
        if plus > 0 {
            let digits = bytes[i + plus..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if (7..=15).contains(&digits) {
                let number = format!("+{}", &text[i + plus..i + plus + digits]);
                out.push_str(&text[copied..i + plus]);
                out.push_str(&crate::domain::phone::mask(&number)[1..]);
                i += plus + digits;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// A request path as logs may show it: a segment that is a phone number in
/// any form people write one (`4155552671`, `(415)%20555-2671`,
/// `whatsapp:+1…`, `0044 20…`) is masked whole, since national numbers have
/// no `+` for [`mask_phone_numbers`] to find.
pub fn mask_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if looks_like_a_phone_number(segment) {
                "***".to_owned()
            } else {
                mask_phone_numbers(segment)
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn looks_like_a_phone_number(segment: &str) -> bool {
    let decoded: String = form_urlencoded::parse(format!("s={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let decoded = decoded.replace('+', " ");
    let body = crate::domain::phone::without_whatsapp_prefix(&decoded);
    let digits = body.chars().filter(char::is_ascii_digit).count();
    (7..=15).contains(&digits)
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || " ()-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_in_paths_are_masked() {
        for path in [
            "/v1/users/4155552671",
            "/v1/users/(415)%20555-2671",
            "/v1/users/415.555.2671",
            "/v1/users/%2B14155552671",
            "/v1/users/+14155552671",
            "/v1/users/whatsapp:+14155552671",
            "/v1/users/0044%2020%207946%200958",
        ] {
            let masked = mask_path(path);
            assert_eq!(masked, "/v1/users/***", "{path}");
        }
        // Ids, counts and words are not numbers of people.
        for path in [
            "/v1/campaigns/0193a8a4-0000-7000-8000-00000000f022/stats",
            "/v1/messages",
            "/v1/imports/123",
        ] {
            assert_eq!(mask_path(path), path);
        }
    }

    #[test]
    fn phone_numbers_are_masked_anywhere_in_a_line() {
        assert_eq!(
            mask_phone_numbers(r#"{"to":"whatsapp:+14155552671","n":"+12"}"#),
            r#"{"to":"whatsapp:+1415*****71","n":"+12"}"#
        );
        assert_eq!(mask_phone_numbers("plain text"), "plain text");
        assert_eq!(
            mask_phone_numbers("/v1/users/%2B14155552671"),
            "/v1/users/%2B1415*****71"
        );
    }

    #[test]
    fn traceparent_and_the_cloud_header_both_correlate() {
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_context(
                Some("p"),
                Some(w3c),
                Some("105445aa7843bc8bf206b12000100000/1;o=1")
            ),
            Some((
                "projects/p/traces/4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
                Some("00f067aa0ba902b7".to_owned())
            ))
        );
        assert_eq!(
            trace_context(
                Some("p"),
                Some("garbage"),
                Some("105445aa7843bc8bf206b12000100000/255;o=1")
            ),
            Some((
                "projects/p/traces/105445aa7843bc8bf206b12000100000".to_owned(),
                Some("00000000000000ff".to_owned())
            ))
        );
        assert_eq!(trace_context(None, None, None), None);
    }

    #[test]
    fn trace_names_follow_the_cloud_trace_header() {
        assert_eq!(
            trace_name(Some("proj"), "105445aa7843bc8bf206b12000100000/1;o=1").as_deref(),
            Some("projects/proj/traces/105445aa7843bc8bf206b12000100000")
        );
        assert_eq!(trace_name(None, "abc").as_deref(), Some("abc"));
        assert_eq!(trace_name(Some("p"), "not-hex/1"), None);
    }
}

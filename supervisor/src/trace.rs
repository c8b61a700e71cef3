//! W3C trace context (`traceparent`), carried from a JSON-RPC caller to its job's runner.
//!
//! A caller that sends an HTTP `traceparent` header with a request that creates a job
//! (`create_job`, `run_job`, `play`) has it stored with the job; a job created without
//! one gets a fresh trace. Every attempt's request frame carries it as
//! `context.trace_context = {"traceparent": ..}`, so a runner's spans join the caller's
//! trace, and `get_job` shows the job's `trace_id`.
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              |  |                                |                |
//!              |  trace id (16 bytes, hex)         parent id (8)    flags
//!              version
//! ```
//!
//! Only version `00` in its exact form is accepted (lowercase hex, ids not all zero);
//! anything else is ignored as the W3C specification asks, and the job starts a trace of
//! its own.
//!
//! # Spans
//!
//! The supervisor's work on a job is a chain of `tracing` spans of target
//! [`OTEL_TARGET`], for OpenTelemetry export (`--otlp-endpoint`, feature `otlp`):
//!
//! ```text
//! rpc.call (a JSON-RPC call; parent: the caller's traceparent header)
//! ├── store.create, store.start, ... (each job store call made inside a span)
//! └── dispatch.attempt (one attempt; parent: the job's traceparent)
//!     └── runner.request (the request to the runner; its traceparent is what the
//!                         request frame carries as context.trace_context)
//! ```
//!
//! With export on, a job created inside `rpc.call` stores that span's traceparent, so
//! its attempts (on any instance, later) join the call's trace, and the runner's spans
//! join `runner.request`. Without export (or without the `otlp` feature) the spans are
//! never built (the binary's log filter leaves their target out) and the job keeps the
//! caller's traceparent, or a fresh one, as before.

use std::fmt;

use rand::RngCore;

/// A valid `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// Length of a version-00 `traceparent`: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// Parses a version-00 `traceparent`; `None` for anything else.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim();
        if s.len() != TRACEPARENT_LEN {
            return None;
        }
        let mut parts = s.split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        let mut flag = [0u8; 1];
        decode_lower_hex(trace, &mut trace_id)?;
        decode_lower_hex(parent, &mut parent_id)?;
        decode_lower_hex(flags, &mut flag)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags: flag[0],
        })
    }

    /// A new trace: random ids, sampled flag set (a trace the supervisor starts is as
    /// worth recording as one a caller started).
    pub fn generate() -> TraceParent {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        while parent_id == [0; 8] {
            rng.fill_bytes(&mut parent_id);
        }
        TraceParent {
            trace_id,
            parent_id,
            flags: 0x01,
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// Lowercase hex only (the specification forbids uppercase), exactly `out.len()` bytes.
fn decode_lower_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(s, out).ok()
}

/// The trace id of a stored `traceparent`, if it parses.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    TraceParent::parse(traceparent).map(|t| t.trace_id())
}

/// The `tracing` target of the spans meant for export (module docs); the binary's log
/// output leaves it out.
pub const OTEL_TARGET: &str = "hero_supervisor::otel";

/// Makes `parent` (a remote span: a caller's, or the one a job was created in) the
/// parent of `span`, which must not have been entered yet. Without OTLP export nothing
/// happens.
pub fn set_parent(span: &tracing::Span, parent: &TraceParent) {
    #[cfg(feature = "otlp")]
    {
        use opentelemetry::trace::{
            SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if span.is_none() {
            return;
        }
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // Err only when no OpenTelemetry layer is installed: nothing to join then.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, parent);
}

/// The traceparent naming `span` itself, when it is exported (OTLP on); `None` otherwise.
pub fn of_span(span: &tracing::Span) -> Option<TraceParent> {
    #[cfg(feature = "otlp")]
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if span.is_none() {
            return None;
        }
        let context = span.context();
        let otel = context.span();
        let sc = otel.span_context();
        if sc.is_valid() {
            return Some(TraceParent {
                trace_id: sc.trace_id().to_bytes(),
                parent_id: sc.span_id().to_bytes(),
                flags: sc.trace_flags().to_u8(),
            });
        }
        None
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = span;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_prints_the_specification_example() {
        let t = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(t.to_string(), SAMPLE);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceParent::parse(&format!(" {SAMPLE} ")), Some(t));
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        for bad in [
            "",
            "00",
            &SAMPLE.to_uppercase(),
            &SAMPLE.replace("00-4b", "01-4b"),
            &SAMPLE.replace("-01", "-1"),
            &SAMPLE.replace("-01", "-0g"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{e9}",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "accepted {bad:?}");
        }
    }

    #[test]
    fn generated_traces_round_trip_and_differ() {
        let a = TraceParent::generate();
        let b = TraceParent::generate();
        assert_ne!(a, b);
        assert_eq!(TraceParent::parse(&a.to_string()), Some(a));
        assert_eq!(trace_id_of(&a.to_string()), Some(a.trace_id()));
    }
}

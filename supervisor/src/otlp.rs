//! OpenTelemetry export of the supervisor's spans over OTLP/HTTP (feature `otlp`, part of
//! `cli`; off at run time unless an endpoint is given: `--otlp-endpoint`).
//!
//! The library's spans are plain `tracing` spans of target [`crate::trace::OTEL_TARGET`]
//! (`rpc.call`, `store.<op>`, `dispatch.attempt`, `runner.request`; see
//! [`crate::trace`]). [`Exporter::start`] builds an OTLP exporter (HTTP, JSON bodies) with
//! the SDK's batch processor, and [`Exporter::layer`] the `tracing` layer that turns
//! those spans into OpenTelemetry spans for it. Nothing else is exported: log events
//! stay in the log.
//!
//! The batch processor runs on a thread of its own with a blocking HTTP client (the
//! exporter's recommended setup), so nothing of it runs on the server's runtime; spans
//! are sent every 5 s (`OTEL_BSP_SCHEDULE_DELAY`, ms) and by [`Exporter::shutdown`],
//! which the binary calls after the server stopped. A collector that is down costs the
//! spans of that time (the processor's queue is bounded, 2,048 spans), never a job.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use crate::trace::OTEL_TARGET;

/// The service name spans carry (`service.name`), unless `OTEL_SERVICE_NAME` says
/// another.
pub const SERVICE_NAME: &str = "hero-supervisor";

/// Why the exporter did not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("invalid OTLP endpoint {endpoint:?}: expected http(s)://host[:port][/path]")]
    Endpoint {
        /// As given.
        endpoint: String,
    },
    /// The exporter refused its configuration.
    #[error("cannot start the OTLP exporter: {0}")]
    Build(String),
}

/// A running exporter. Dropping it without [`Exporter::shutdown`] loses the spans not
/// sent yet.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// The URL spans are posted to: `endpoint` (the collector's base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` gives it) with `/v1/traces`.
pub fn traces_url(endpoint: &str) -> Result<String, OtlpError> {
    let bad = || OtlpError::Endpoint {
        endpoint: endpoint.to_owned(),
    };
    let url = url::Url::parse(endpoint).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
}

impl Exporter {
    /// Starts exporting to the collector at `endpoint` (its base URL, e.g.
    /// `http://127.0.0.1:4318`; spans go to `<endpoint>/v1/traces`). Call it outside
    /// an async runtime (the binary does, before building its runtime).
    pub fn start(endpoint: &str) -> Result<Exporter, OtlpError> {
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(url)
            .build()
            .map_err(|e| OtlpError::Build(e.to_string()))?;
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| SERVICE_NAME.to_owned());
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        Ok(Exporter { provider })
    }

    /// The `tracing` layer feeding this exporter: the spans of [`OTEL_TARGET`] only.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let tracer = self.provider.tracer(SERVICE_NAME);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(Targets::new().with_target(OTEL_TARGET, tracing::Level::INFO))
    }

    /// Sends what is left and stops. Blocks: call it outside an async runtime.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the OTLP exporter did not shut down cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_endpoint_with_the_signal_path() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://collector.example/otlp/").unwrap(),
            "https://collector.example/otlp/v1/traces"
        );
        for bad in ["", "127.0.0.1:4318", "ftp://x", "http://"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }
}

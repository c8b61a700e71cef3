//! The server's logs: to stderr, filtered by `RUST_LOG` (default `info`), and, with
//! `--otlp-endpoint`, the spans of [`hero_supervisor::trace::OTEL_TARGET`] exported over
//! OTLP ([`hero_supervisor::otlp`]). Those spans never reach the log output.

use hero_supervisor::otlp::Exporter;
use hero_supervisor::trace::OTEL_TARGET;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber, with `exporter`'s layer when given; a second call
/// (or one after another subscriber was installed) changes nothing.
pub(crate) fn init(exporter: Option<&Exporter>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The export spans are for the collector only; `{target}=off` wins over any
    // broader directive of RUST_LOG.
    let filter = match format!("{OTEL_TARGET}=off").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(exporter.map(Exporter::layer))
        .try_init();
}

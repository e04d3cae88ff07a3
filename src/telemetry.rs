//! Logging with `tracing`: readable text on a terminal, JSON for collectors, to stderr.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing. `RUST_LOG` overrides `level`.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

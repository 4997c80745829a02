//! Logging set-up shared by the three binaries: `tracing` to stderr, text or
//! JSON lines, filtered by `RUST_LOG` (default `info`). The OpenTelemetry
//! exporter plugs in here.

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

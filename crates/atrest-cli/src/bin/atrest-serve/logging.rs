//! The service's log: `tracing` events on standard error, as text or JSON
//! lines.

/// How the service's log is written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event (time, level, message, fields such as
    /// `request_id`).
    Json,
}

/// Sends the service's log (through `tracing`) to standard error: its
/// notices, and each failed request with its id. Never a key or a token.
pub(crate) fn init(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .with_ansi(false)
        // A log that cannot be written (a full disk) must not take the
        // request down with it: its lines are lost, the work goes on.
        .log_internal_errors(false);
    // Only fails if a subscriber is set already: then that one logs.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

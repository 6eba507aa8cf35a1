//! Log set-up (text or JSON on stderr, `RUST_LOG` first) and the panic hook that redacts.

use crate::LogFormat;

/// A panic's message goes through the same redaction as ferry's own errors: a library that
/// panics with a URL or a key in its message does not print it.
pub(crate) fn redact_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        eprintln!(
            "ferry panicked in thread {}{place}: {}",
            thread.name().unwrap_or("unnamed"),
            ferry_core::config::redact_known(&message)
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

pub(crate) fn init_logging(default: &str, format: LogFormat) {
    // `RUST_LOG`, when set and not empty, overrides the flags.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|_| tracing_subscriber::EnvFilter::try_from_default_env().ok());
    // Module paths (`ferry_core::config`) help whoever debugs, not whoever reads a
    // warning: in text they come with -vv or RUST_LOG (JSON records always carry them).
    let targets = from_env.is_some() || default == "debug";
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder
            .with_target(targets)
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

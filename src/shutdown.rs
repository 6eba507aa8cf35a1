//! Process shutdown: SIGTERM or Ctrl-C cancels one token that every loop watches.

use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

/// The signal that asked this process to stop (2 for SIGINT, 15 for SIGTERM), 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signal that asked this process to stop, if one did: an interrupted `sync` or `run`
/// exits `128 + signal` once it has drained, as shells report a process a signal ended.
pub(crate) fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second one ends the process
/// at once (exit 128 + that signal): what it held is claimed again when its leases run out,
/// or at once by the next process on the same state dir.
pub(crate) fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!(
            "stopping: no new work is claimed, and copies in flight finish first; \
             a second Ctrl-C (or SIGTERM) stops at once"
        );
        child.cancel();
        wait_for_signal().await;
        let signal = RECEIVED.load(Ordering::Relaxed);
        eprintln!("stopped at once; run the same command to resume");
        std::process::exit(128 + signal);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                let signal = tokio::select! {
                    _ = term.recv() => 15,
                    _ = tokio::signal::ctrl_c() => 2,
                };
                RECEIVED.store(signal, Ordering::Relaxed);
            }
            Err(_) => {
                ctrl_c().await;
                RECEIVED.store(2, Ordering::Relaxed);
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c().await;
        RECEIVED.store(2, Ordering::Relaxed);
    }
}

/// Waits for Ctrl-C; where no handler can be installed, waits forever (a process that
/// cannot hear signals keeps running rather than stopping as if asked to).
async fn ctrl_c() {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %e, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

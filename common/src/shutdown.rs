//! Process shutdown: SIGTERM or Ctrl-C cancels one token that every loop watches.

use std::sync::atomic::{AtomicI32, Ordering};

use tokio_util::sync::CancellationToken;

/// The signal that asked this process to stop (2 for SIGINT, 15 for SIGTERM), 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signal that asked this process to stop, if one did: an interrupted `sync` or `run`
/// exits `128 + signal` once it has drained, as shells report a process a signal ended.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Returns a token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; no new work is claimed");
        child.cancel();
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
                let _ = tokio::signal::ctrl_c().await;
                RECEIVED.store(2, Ordering::Relaxed);
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        RECEIVED.store(2, Ordering::Relaxed);
    }
}

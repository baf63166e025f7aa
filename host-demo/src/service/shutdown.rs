//! Stopping: on SIGTERM or SIGINT the service takes no new work (the API answers writes with
//! 503, no actor starts another fetch), every actor finishes the guest call and the commit it
//! is in (a fetch ends at its next delivery: what is committed stays, the rest is fetched again
//! after a restart), within `shutdown_grace` (10 s); then the process exits 0.

use tracing::warn;

use super::Shared;

/// Waits for SIGTERM or SIGINT; the signal's name.
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        // Without signal handlers the process can still be stopped the hard way; the store's
        // transactions keep that safe.
        warn!("cannot install the SIGTERM/SIGINT handlers");
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Cancels every actor and waits for them, at most `shutdown_grace`.
pub async fn stop(shared: &Shared) {
    shared.root.cancel();
    shared.all.close();
    let grace = shared.options.shutdown_grace;
    if tokio::time::timeout(grace, shared.all.wait()).await.is_err() {
        warn!(
            still_running = shared.all.len(),
            grace_secs = grace.as_secs(),
            "operations still running after the grace period are abandoned; what they committed stays, the rest is fetched again"
        );
    }
}

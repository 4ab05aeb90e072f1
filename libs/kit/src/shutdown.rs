//! One shutdown token for the whole process, cancelled by SIGTERM or SIGINT.
//! A second signal exits at once, as linkerd and vector do.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGTERM/SIGINT; the second one
/// terminates the process immediately.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutdown signal received, draining (signal again to quit at once)");
        cancel.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second shutdown signal, exiting now");
        std::process::exit(130);
    });
    Ok(token)
}

/// Waits for a background task to finish after its shutdown token fired,
/// for at most `grace`; a task still running then is aborted, so shutting
/// down always ends.
pub async fn join_within<T>(mut task: tokio::task::JoinHandle<T>, grace: std::time::Duration, what: &str) {
    if tokio::time::timeout(grace, &mut task).await.is_err() {
        tracing::warn!(task = what, grace_secs = grace.as_secs(), "did not stop in time, aborting it");
        task.abort();
    }
}

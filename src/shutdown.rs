//! Graceful shutdown: SIGINT and SIGTERM cancel a token that every long-running task watches.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Cancel `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
            "SIGTERM"
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<&str>();
        let signal = tokio::select! {
            s = ctrl_c => s,
            s = term => s,
            _ = token.cancelled() => return,
        };
        info!(
            signal,
            "shutting down: stop fetching, finish in-flight work, flush, commit"
        );
        token.cancel();
    });
}

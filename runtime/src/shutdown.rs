//! One `CancellationToken` per process, cancelled on SIGTERM or SIGINT.
//!
//! Every long-running task of a binary takes a clone of that token (or a
//! child of it) and stops when it is cancelled; `main` waits for the tasks.

use tracing::info;

pub use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT (Ctrl-C).
///
/// The signal handlers are installed before this returns, so a signal that
/// arrives right after start is not lost (the default action would kill the
/// process without a drain). Must be called inside a tokio runtime.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let signals = Signals::install();
    let cancel = token.clone();
    tokio::spawn(async move {
        let name = signals.recv().await;
        info!(signal = name, "shutting down");
        cancel.cancel();
    });
    token
}

/// Waits for the first SIGTERM or SIGINT and returns its name.
pub async fn signal() -> &'static str {
    Signals::install().recv().await
}

#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        // Installing a handler only fails when the runtime has no signal
        // driver; then Ctrl-C below is the fallback.
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(mut self) -> &'static str {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        if self.term.is_none() && self.int.is_none() {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
        tokio::select! {
            _ = next(&mut self.term) => "SIGTERM",
            _ = next(&mut self.int) => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Signals
    }

    async fn recv(self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = on_signals();
        assert!(!token.is_cancelled());
        // tokio's handler stays installed for the life of the process, so
        // the signal cannot kill the test binary.
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .expect("cancelled after SIGTERM");
    }
}

//! Polling with a deadline: every wait in a test must end, and say what it waited for.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::bail;

const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `check` every 200 ms until it returns `Ok(Some(value))`, for at most `timeout`.
/// An `Err` from `check` is remembered and retried (the API may hiccup); the last one is
/// reported on timeout. An error made with [`give_up`] ends the wait at once.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    wait_every(POLL_INTERVAL, what, timeout, check).await
}

/// [`wait_for`] calling `check` every `interval` (longer when many waits poll the same
/// apiserver at once).
pub async fn wait_every<T, F, Fut>(
    interval: Duration,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) if e.is::<GiveUp>() => return Err(e),
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(e) => bail!(
                    "timed out after {}s waiting for {what}; last error: {e:#}",
                    timeout.as_secs()
                ),
                None => bail!("timed out after {}s waiting for {what}", timeout.as_secs()),
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// The error of a check that knows the awaited state can no longer come (the pod ended
/// in another phase, the Job failed): [`wait_for`] returns it at once instead of
/// retrying until the timeout.
#[derive(Debug)]
pub struct GiveUp(pub String);

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GiveUp {}

/// An error that ends a [`wait_for`] at once, saying `why`.
pub fn give_up(why: impl Into<String>) -> anyhow::Error {
    GiveUp(why.into()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_value() {
        let calls = AtomicU32::new(0);
        let v = wait_for("the third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((n == 3).then_some(n))
        })
        .await
        .expect("value within the timeout");
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_with_the_last_error() {
        let err = wait_for::<(), _, _>("nothing", Duration::from_millis(300), || async {
            anyhow::bail!("still broken")
        })
        .await
        .expect_err("must time out");
        let msg = format!("{err:#}");
        assert!(msg.contains("waiting for nothing"), "{msg}");
        assert!(msg.contains("still broken"), "{msg}");
    }

    #[tokio::test]
    async fn gives_up_at_once() {
        let calls = AtomicU32::new(0);
        let err = wait_for::<(), _, _>("a pod that ended", Duration::from_secs(30), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(give_up("pod ended Failed"))
        })
        .await
        .expect_err("must give up");
        assert_eq!(format!("{err:#}"), "pod ended Failed");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

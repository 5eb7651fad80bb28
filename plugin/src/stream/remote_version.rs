//! Whether the remote apiserver can carry the end of stdin on its own
//! (`v5.channel.k8s.io`, Kubernetes 1.30+). Asked once per process from the
//! remote's `/version`: there is one remote cluster per plugin, and its
//! apiserver is not upgraded under a running stream often enough to matter
//! (a plugin restart picks the new version up).

use tokio::sync::OnceCell;
use tracing::{info, warn};

static CARRIES_STDIN_CLOSE: OnceCell<bool> = OnceCell::const_new();

/// True when the remote apiserver speaks `v5.channel.k8s.io` (1.30+). An
/// unreadable version counts as old: the paths for an old remote work on
/// a new one too, only less directly.
pub async fn carries_stdin_close(client: &kube::Client) -> bool {
    *CARRIES_STDIN_CLOSE
        .get_or_init(|| async {
            match client.apiserver_version().await {
                Ok(v) => {
                    let new = at_least_1_30(&v.major, &v.minor);
                    info!(major = %v.major, minor = %v.minor, v5_channel = new, "remote apiserver version");
                    new
                }
                Err(e) => {
                    warn!(error = %e, "remote apiserver version unknown: treating it as older than 1.30");
                    false
                }
            }
        })
        .await
}

/// `major.minor` >= 1.30; providers append `+` to the minor (`"20+"`).
pub fn at_least_1_30(major: &str, minor: &str) -> bool {
    let num = |s: &str| {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse::<u32>()
            .ok()
    };
    match (num(major), num(minor)) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 30),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_1_30_carry_the_end_of_stdin() {
        assert!(!at_least_1_30("1", "20"));
        assert!(!at_least_1_30("1", "29+"));
        assert!(at_least_1_30("1", "30"));
        assert!(at_least_1_30("1", "31+"));
        assert!(at_least_1_30("2", "0"));
        assert!(!at_least_1_30("", ""));
    }
}

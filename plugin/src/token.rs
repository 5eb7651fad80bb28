//! The bearer token callers must send, re-read when its file changes, so a
//! rotated token (a Secret volume updated in place by the kubelet) takes
//! effect without a restart.
//!
//! Each request costs one `stat`; the file is read again only when its
//! modification time or length changed. A file that turns unreadable or
//! empty keeps the last good token (a rotation half-written is not an
//! open door, nor a lock-out) and is logged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tracing::{info, warn};

/// What identifies one version of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// The token of a file, followed.
#[derive(Debug)]
pub struct TokenFile {
    path: Option<PathBuf>,
    current: Mutex<(Option<Stamp>, Arc<str>)>,
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    // metadata() follows the Secret volume's `..data` symlink swap.
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

impl TokenFile {
    /// `token` as read at start from `path` (`None`: a fixed token).
    pub fn new(path: Option<PathBuf>, token: String) -> Self {
        let s = path.as_ref().and_then(stamp);
        TokenFile {
            path,
            current: Mutex::new((s, Arc::from(token))),
        }
    }

    /// The token now (re-read if the file changed).
    pub fn current(&self) -> Arc<str> {
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            return guard.1.clone();
        };
        let now = stamp(path);
        if now.is_some() && now != guard.0 {
            match std::fs::read_to_string(path).map(|t| t.trim().to_owned()) {
                Ok(t) if !t.is_empty() => {
                    if *t != *guard.1 {
                        info!(file = %path.display(), "bearer token file changed: new token in effect");
                    }
                    *guard = (now, Arc::from(t));
                }
                Ok(_) => {
                    warn!(file = %path.display(), "bearer token file is empty; keeping the previous token")
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot re-read the bearer token file; keeping the previous token")
                }
            }
        }
        guard.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_changes_the_token_and_a_broken_one_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").expect("write");
        let t = TokenFile::new(Some(path.clone()), "first".into());
        assert_eq!(&*t.current(), "first");
        // Another length: seen even within one mtime tick.
        std::fs::write(&path, "second-token").expect("write");
        assert_eq!(&*t.current(), "second-token");
        std::fs::write(&path, "  \n").expect("write");
        assert_eq!(
            &*t.current(),
            "second-token",
            "empty file: previous token kept"
        );
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(
            &*t.current(),
            "second-token",
            "missing file: previous token kept"
        );
        assert_eq!(&*TokenFile::new(None, "fixed".into()).current(), "fixed");
    }
}

//! `offload-bastion keygen`: the bastion's key on disk, for running it
//! outside Kubernetes (in a cluster the installer keeps it in a Secret).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use offload_wire::tunnel::{KeyError, generate_ed25519, public_of_private};

#[derive(Debug, thiserror::Error)]
pub enum KeyfileError {
    #[error("key file {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}")]
    Key { path: PathBuf, source: KeyError },
}

/// Create the key at `out` (OpenSSH ed25519, mode 0600) unless it exists
/// (or `force`: rotation). Returns the public key line.
pub fn keygen(out: &Path, force: bool) -> Result<String, KeyfileError> {
    let io = |source| KeyfileError::Io {
        path: out.to_owned(),
        source,
    };
    let key = |source| KeyfileError::Key {
        path: out.to_owned(),
        source,
    };
    if out.exists() && !force {
        let private = std::fs::read_to_string(out).map_err(io)?;
        return public_of_private(&private).map_err(key);
    }
    let (private, public) = generate_ed25519("offload-bastion").map_err(key)?;
    // Written aside and renamed, so a crash never leaves half a key.
    let tmp = out.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(private.as_bytes()).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(io)?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("id_ed25519");
        let public = keygen(&path, false).expect("keygen");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(keygen(&path, false).expect("again"), public);
        assert_ne!(keygen(&path, true).expect("rotate"), public);
    }
}

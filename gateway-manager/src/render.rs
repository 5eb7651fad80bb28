//! Rendering of the gateway's `sshd_config` and `authorized_keys`, and the
//! gateway host key. Pure functions; the Kubernetes layer puts the output in a
//! ConfigMap and a Secret, the bastion tests feed it to a real `sshd`.
//!
//! Hardening, and why:
//! - keys only (`AuthenticationMethods publickey`, no password, no
//!   keyboard-interactive, no PAM), one allowed user, no root;
//! - remote forwarding only (`AllowTcpForwarding remote`, `PermitOpen none`),
//!   no tty, agent, X11, tun or unix-socket forwarding, no user rc;
//! - `GatewayPorts clientspecified` so the bastion can listen on 0.0.0.0
//!   (the per-pod Services reach the gateway pod's IP, not its loopback);
//! - what may be listened on is pinned per key with `permitlisten`, one per
//!   port of the range (OpenSSH has no port ranges), and `command="/bin/false"`
//!   because `restrict` alone still lets a key run commands;
//! - a short `ClientAliveInterval`, so the session of a bastion that vanished
//!   is reaped within seconds and its listening ports freed for the new one.

use std::fmt::Write as _;

use ssh_key::{LineEnding, PrivateKey, PublicKey, private::Ed25519Keypair};

use crate::ports::PortRange;

/// What goes into `sshd_config`. Paths are as seen by `sshd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshdConfig {
    pub port: u16,
    /// `None`: every address (the pod).
    pub listen_address: Option<String>,
    pub host_key_path: String,
    pub authorized_keys_path: String,
    pub pid_file: String,
    /// The only account that may log in (the tunnel user the gateway runs as).
    pub user: String,
    pub client_alive_interval_secs: u32,
    pub client_alive_count_max: u32,
}

impl SshdConfig {
    /// The layout of the gateway image (`deploy/images/gateway`).
    pub fn for_gateway_image() -> Self {
        Self {
            port: 2222,
            listen_address: None,
            host_key_path: "/etc/ssh/gateway/hostkey/ssh_host_ed25519_key".into(),
            authorized_keys_path: "/etc/ssh/gateway/config/authorized_keys".into(),
            pid_file: "/tmp/sshd.pid".into(),
            user: GATEWAY_USER.into(),
            client_alive_interval_secs: 5,
            client_alive_count_max: 3,
        }
    }

    /// Render for OpenSSH 9.2 (Debian bookworm): only options it knows.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Rendered by gateway-manager; do not edit.");
        let _ = writeln!(s, "Port {}", self.port);
        if let Some(addr) = &self.listen_address {
            let _ = writeln!(s, "ListenAddress {addr}");
        }
        let _ = writeln!(s, "HostKey {}", self.host_key_path);
        let _ = writeln!(s, "PidFile {}", self.pid_file);
        let _ = writeln!(s, "AuthorizedKeysFile {}", self.authorized_keys_path);
        let _ = writeln!(s, "AllowUsers {}", self.user);
        let _ = writeln!(s, "ClientAliveInterval {}", self.client_alive_interval_secs);
        let _ = writeln!(s, "ClientAliveCountMax {}", self.client_alive_count_max);
        s.push_str(HARDENING);
        s
    }
}

/// The account the gateway `sshd` runs as and the bastion logs in as.
pub const GATEWAY_USER: &str = "tunnel";

const HARDENING: &str = "\
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
PermitRootLogin no
PermitEmptyPasswords no
# Secrets and config live in read-only mounts whose parents are not ours.
StrictModes no
AllowTcpForwarding remote
PermitOpen none
GatewayPorts clientspecified
AllowAgentForwarding no
AllowStreamLocalForwarding no
X11Forwarding no
PermitTTY no
PermitTunnel no
PermitUserRC no
PermitUserEnvironment no
ForceCommand /bin/false
UseDNS no
TCPKeepAlive yes
LoginGraceTime 20
MaxAuthTries 3
MaxStartups 20:50:100
LogLevel VERBOSE
";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an OpenSSH public key: {0}")]
    PublicKey(String),
    #[error("cannot encode key: {0}")]
    Encode(String),
}

/// Parse and normalise a public key line (`type base64 [comment]`): the
/// comment is dropped, so nothing but the key reaches authorized_keys.
pub fn normalise_public_key(line: &str) -> Result<String, KeyError> {
    let key =
        PublicKey::from_openssh(line.trim()).map_err(|e| KeyError::PublicKey(e.to_string()))?;
    let mut key = key;
    key.set_comment("");
    key.to_openssh()
        .map(|s| s.trim().to_owned())
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// The `authorized_keys` of the gateway: the bastion's key may only listen on
/// `listen_host:<port>` for each port of the range, and do nothing else.
pub fn authorized_keys(
    bastion_public_key: &str,
    range: PortRange,
    listen_host: &str,
) -> Result<String, KeyError> {
    let key = normalise_public_key(bastion_public_key)?;
    let mut line = String::from("restrict,port-forwarding,command=\"/bin/false\"");
    for port in range.iter() {
        let _ = write!(line, ",permitlisten=\"{listen_host}:{port}\"");
    }
    line.push(' ');
    line.push_str(&key);
    line.push('\n');
    Ok(line)
}

/// A new ed25519 key pair: (private key in OpenSSH PEM format, public key line).
pub fn generate_ed25519(comment: &str) -> Result<(String, String), KeyError> {
    let mut seed = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut seed);
    let pair = Ed25519Keypair::from_seed(&seed);
    seed.fill(0);
    let mut key = PrivateKey::from(pair);
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let public = normalise_public_key(
        &key.public_key()
            .to_openssh()
            .map_err(|e| KeyError::Encode(e.to_string()))?,
    )?;
    Ok((private.to_string(), public))
}

/// The public key line of an OpenSSH private key.
pub fn public_of_private(private_openssh: &str) -> Result<String, KeyError> {
    let key = PrivateKey::from_openssh(private_openssh)
        .map_err(|e| KeyError::PublicKey(e.to_string()))?;
    let line = key
        .public_key()
        .to_openssh()
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    normalise_public_key(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_config_is_hardened() {
        let c = SshdConfig::for_gateway_image().render();
        for want in [
            "Port 2222\n",
            "AllowUsers tunnel\n",
            "PasswordAuthentication no\n",
            "PermitRootLogin no\n",
            "AllowTcpForwarding remote\n",
            "PermitOpen none\n",
            "GatewayPorts clientspecified\n",
            "PermitTTY no\n",
            "AllowAgentForwarding no\n",
            "X11Forwarding no\n",
            "ClientAliveInterval 5\n",
            "ClientAliveCountMax 3\n",
            "AuthenticationMethods publickey\n",
            "UsePAM no\n",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
        assert!(!c.contains("ListenAddress"));
        let mut l = SshdConfig::for_gateway_image();
        l.listen_address = Some("127.0.0.1".into());
        assert!(l.render().contains("ListenAddress 127.0.0.1\n"));
    }

    #[test]
    fn authorized_keys_pins_every_port_and_drops_comment() {
        let (_, public) = generate_ed25519("bastion@remote").expect("keygen");
        assert!(!public.contains("bastion@remote"));
        let with_comment = format!("{public} some comment");
        let range = PortRange::new(40000, 40002).expect("range");
        let line = authorized_keys(&with_comment, range, "0.0.0.0").expect("render");
        assert_eq!(
            line,
            format!(
                "restrict,port-forwarding,command=\"/bin/false\",permitlisten=\"0.0.0.0:40000\",\
                 permitlisten=\"0.0.0.0:40001\",permitlisten=\"0.0.0.0:40002\" {public}\n"
            )
        );
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn authorized_keys_rejects_injection() {
        for bad in [
            "",
            "ssh-ed25519",
            "command=\"sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA",
            "ssh-ed25519 AAAA\nssh-ed25519 BBBB",
        ] {
            assert!(
                authorized_keys(bad, PortRange::default(), "0.0.0.0").is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keygen_round_trip() {
        let (private, public) = generate_ed25519("gateway").expect("keygen");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(public.starts_with("ssh-ed25519 "));
        assert_eq!(public_of_private(&private), Ok(public.clone()));
        let (_, other) = generate_ed25519("gateway").expect("keygen");
        assert_ne!(public, other);
    }
}

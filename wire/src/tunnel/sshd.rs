//! The gateway's OpenSSH policy, as text: its `sshd_config` and the
//! `authorized_keys` line of the bastion. Pure functions; gateway-manager
//! puts the output in a ConfigMap, the bastion's test harness feeds it to a
//! real `sshd`. It is part of the contract because it decides what the
//! bastion may do on the gateway: log in as [`GATEWAY_USER`], request remote
//! forwards on the ports of the range, nothing else.
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

use super::ports::PortRange;
use super::sshkey::{KeyError, normalise_public_key};

/// The account the gateway `sshd` runs as and the bastion logs in as.
pub const GATEWAY_USER: &str = "tunnel";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::sshkey::generate_ed25519;

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
}

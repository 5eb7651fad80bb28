//! A real OpenSSH gateway on loopback, for tests and the benchmark.
//!
//! It runs Debian's `/usr/sbin/sshd` as a non-root user with the
//! `sshd_config` and `authorized_keys` of the tunnel contract
//! ([`offload_wire::tunnel::sshd`], what gateway-manager renders), exactly
//! like the gateway pod. When we are root, the dedicated account
//! `offload-tunnel` is created once (unlocked, no password, nologin shell)
//! and sshd runs as it; otherwise sshd runs as the current user.
//! The whole process group is killed on drop, so the per-connection sshd
//! processes (which hold the forwarded ports) go too.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use offload_wire::tunnel::{PortRange, SshdConfig, authorized_keys, generate_ed25519};
use russh::keys::PrivateKey;

pub const SSHD: &str = "/usr/sbin/sshd";
pub const TEST_USER: &str = "offload-tunnel";

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{SSHD} is missing: apt-get install openssh-server openssh-client")]
    NoSshd,
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn setup(msg: impl Into<String>) -> HarnessError {
    HarnessError::Setup(msg.into())
}

/// A key pair on disk (OpenSSH format) and in memory.
pub struct KeyPair {
    pub private: PrivateKey,
    pub private_path: PathBuf,
    pub public: String,
}

pub struct TestGateway {
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    /// The gateway host public key line (what the annotation carries).
    pub host_key: String,
    /// A key the gateway authorizes (the bastion's).
    pub client: KeyPair,
    pub range: PortRange,
    pub listen_host: String,
    uid_gid: Option<(u32, u32)>,
    child: Option<Child>,
}

fn run(cmd: &mut Command) -> Result<String, HarnessError> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(setup(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn euid() -> Result<u32, HarnessError> {
    run(Command::new("id").arg("-u"))?
        .parse()
        .map_err(|_| setup("id -u"))
}

/// The account sshd runs as, and its uid/gid when we must switch to it.
fn sshd_user() -> Result<(String, Option<(u32, u32)>), HarnessError> {
    if euid()? != 0 {
        return Ok((run(Command::new("id").arg("-un"))?, None));
    }
    if Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success()
        .then_some(())
        .is_none()
    {
        // Unlocked (password field "NP" is no valid hash, so no password
        // login either): sshd refuses locked accounts even for keys.
        let _ = run(Command::new("useradd").args([
            "-r",
            "-M",
            "-d",
            "/nonexistent",
            "-s",
            "/usr/sbin/nologin",
            "-p",
            "NP",
            TEST_USER,
        ]));
    }
    let uid = run(Command::new("id").args(["-u", TEST_USER]))?
        .parse()
        .map_err(|_| setup("uid"))?;
    let gid = run(Command::new("id").args(["-g", TEST_USER]))?
        .parse()
        .map_err(|_| setup("gid"))?;
    Ok((TEST_USER.to_owned(), Some((uid, gid))))
}

/// A free loopback port.
pub fn free_port() -> Result<u16, HarnessError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A range of `len` ports that are all free right now (below the ephemeral range).
pub fn free_range(len: u16) -> Result<PortRange, HarnessError> {
    for _ in 0..50 {
        let first: u16 = 20000 + rand::random::<u16>() % (12000 - len);
        let all_free = (first..first + len).all(|p| {
            TcpListener::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("0.0.0.0", p)).is_ok()
        });
        if all_free {
            return PortRange::new(first, first + len - 1).map_err(|e| setup(e.to_string()));
        }
    }
    Err(setup("no free port range"))
}

pub fn write_key(dir: &Path, name: &str, comment: &str) -> Result<KeyPair, HarnessError> {
    let (private, public) = generate_ed25519(comment).map_err(|e| setup(e.to_string()))?;
    let path = dir.join(name);
    fs::write(&path, &private)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    fs::write(dir.join(format!("{name}.pub")), format!("{public}\n"))?;
    let key = PrivateKey::from_openssh(&private).map_err(|e| setup(e.to_string()))?;
    Ok(KeyPair {
        private: key,
        private_path: path,
        public,
    })
}

impl TestGateway {
    /// Start sshd on `127.0.0.1:<free port>`, authorizing a fresh client key
    /// to listen on `listen_host:<each port of range>`.
    pub fn start(range: PortRange, listen_host: &str) -> Result<Self, HarnessError> {
        if !Path::new(SSHD).exists() {
            return Err(HarnessError::NoSshd);
        }
        let (user, uid_gid) = sshd_user()?;
        let dir = std::env::temp_dir().join(format!(
            "offload-gw-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let host = write_key(&dir, "host_ed25519", "gateway")?;
        let client = write_key(&dir, "client_ed25519", "bastion")?;
        let ak = authorized_keys(&client.public, range, listen_host)
            .map_err(|e| setup(e.to_string()))?;
        fs::write(dir.join("authorized_keys"), ak)?;
        let mut gw = Self {
            port: 0,
            user,
            host_key: host.public,
            client,
            range,
            listen_host: listen_host.to_owned(),
            uid_gid,
            child: None,
            dir,
        };
        gw.port = free_port()?;
        gw.write_config()?;
        if let Some((uid, gid)) = gw.uid_gid {
            run(Command::new("chown").args([
                "-R",
                &format!("{uid}:{gid}"),
                &gw.dir.display().to_string(),
            ]))?;
            // The client key stays readable by us (root).
        }
        gw.spawn()?;
        Ok(gw)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    fn write_config(&self) -> Result<(), HarnessError> {
        let cfg = SshdConfig {
            port: self.port,
            listen_address: Some("127.0.0.1".into()),
            host_key_path: self.dir.join("host_ed25519").display().to_string(),
            authorized_keys_path: self.dir.join("authorized_keys").display().to_string(),
            pid_file: self.dir.join("sshd.pid").display().to_string(),
            user: self.user.clone(),
            client_alive_interval_secs: 2,
            client_alive_count_max: 2,
        };
        fs::write(self.config_path(), cfg.render())?;
        Ok(())
    }

    /// Authorize another key line verbatim (for the "unauthorized key" test
    /// it is enough to *not* call this).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("sshd.log"))?;
        let mut cmd = Command::new(SSHD);
        cmd.args(["-D", "-e", "-f"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((uid, gid)) = self.uid_gid {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(setup(format!("sshd exited with {status}: {}", self.log())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(setup(format!("sshd did not listen: {}", self.log())))
    }

    /// Kill sshd and every per-connection child (they hold the forwards),
    /// like a gateway container restart does.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Per-connection sshd processes call setsid(), so the process
            // group does not hold them: walk the process tree instead.
            let mut pids = descendants(c.id());
            pids.push(c.id());
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start sshd again on the same port with the same keys.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill();
        self.spawn()
    }

    /// `ssh` options for a plain OpenSSH client with the same key and pinning.
    pub fn ssh_args(&self) -> Result<Vec<String>, HarnessError> {
        let known = self.dir.join("known_hosts_client");
        fs::write(
            &known,
            format!("[127.0.0.1]:{} {}\n", self.port, self.host_key),
        )?;
        Ok(vec![
            "-N".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.client.private_path.display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known.display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ExitOnForwardFailure=yes".into(),
            "-o".into(),
            "Ciphers=aes256-gcm@openssh.com".into(),
            "-F".into(),
            "/dev/null".into(),
            format!("{}@127.0.0.1", self.user),
        ])
    }
}

/// Every process below `root` in the process tree (from /proc).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may contain spaces and parens.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

//! The flags of the pod security policy (a `--help` section of their own).

use clap::Args;

use super::values::{StringList, parse_string_list};
use crate::policy::Level;

/// `--help` section of the policy flags.
const POLICY: &str = "Pod security policy (what remote pods may ask for; every refusal is a 403 naming the field and the rule)";

#[derive(Clone, Debug, Args)]
pub struct PolicyFlags {
    /// Pod Security Standards level every pod must meet (see
    /// kubernetes.io/docs/concepts/security/pod-security-standards):
    /// `baseline` refuses host namespaces, privileged containers, capabilities
    /// beyond the baseline set, hostPath, hostPort, probes/hooks aimed at
    /// another host, AppArmor/seccomp Unconfined (fields and 1.20
    /// annotations), SELinux options, procMount and unsafe sysctls; `restricted` also requires runAsNonRoot,
    /// allowPrivilegeEscalation: false, drop ALL capabilities and a
    /// RuntimeDefault/Localhost seccomp profile; `privileged` checks none of
    /// this (only the volume types below). The --allow-* flags are
    /// exceptions at every level.
    #[arg(long, env = "OFFLOAD_PLUGIN_POD_SECURITY_LEVEL", default_value = "baseline", help_heading = POLICY)]
    pub pod_security_level: Level,

    /// Volume types remote pods may use (comma or JSON list of the PodSpec
    /// volume keys, e.g. nfs, csi, gitRepo; `*` for all). Not in the list:
    /// refused. hostPath is decided by the level and --allow-host-path.
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_VOLUME_TYPES", value_parser = parse_string_list,
          default_value = "configMap,secret,emptyDir,projected,downwardAPI,persistentVolumeClaim,ephemeral",
          help_heading = POLICY)]
    pub allow_volume_types: StringList,

    /// Capabilities containers may add beyond the baseline set (AUDIT_WRITE,
    /// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE,
    /// SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT), e.g. NET_ADMIN.
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_CAPABILITIES", value_parser = parse_string_list, default_value = "", help_heading = POLICY)]
    pub allow_capabilities: StringList,

    /// Sysctls pods may set beyond the safe set (kernel.shm_rmid_forced,
    /// net.ipv4.ip_local_port_range, net.ipv4.ip_unprivileged_port_start,
    /// net.ipv4.tcp_syncookies, net.ipv4.ping_group_range).
    #[arg(long, env = "OFFLOAD_PLUGIN_ALLOW_SYSCTLS", value_parser = parse_string_list, default_value = "", help_heading = POLICY)]
    pub allow_sysctls: StringList,

    /// `*.security.*kubernetes.io` annotations (seccomp, AppArmor) kept on
    /// the remote pod: exact keys or prefixes ending in `*`. Others are
    /// dropped (they name profiles of the local nodes); the checked
    /// securityContext fields still cross.
    #[arg(long, env = "OFFLOAD_PLUGIN_KEEP_SECURITY_ANNOTATIONS", value_parser = parse_string_list, default_value = "", help_heading = POLICY)]
    pub keep_security_annotations: StringList,
}

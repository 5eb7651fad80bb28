//! Parsing helpers for flags shared between binaries that used to spell
//! them differently: the shared clap group carries the canonical names, and
//! each binary keeps its former flag names (hidden aliases) and former
//! environment variables (read when the canonical one is unset), so no
//! deployed command line or manifest breaks.

use std::ffi::OsString;

use clap::{ArgMatches, Command, FromArgMatches, parser::ValueSource};

/// A flag's former names in one binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renamed {
    /// The clap id of the argument (its field name).
    pub id: &'static str,
    /// The former long flag, accepted as a hidden alias.
    pub old_flag: Option<&'static str>,
    /// The former environment variable, read when neither the flag nor
    /// the canonical variable is given.
    pub old_env: Option<&'static str>,
}

/// `--log-json` reads `env` in this binary (each binary kept its own name).
pub fn log_env(cmd: Command, env: &'static str) -> Command {
    cmd.mut_arg(crate::telemetry::LogArgs::LOG_JSON_ID, |a| a.env(env))
}

/// Adds the former flag names of `renamed` as hidden aliases.
pub fn old_names(mut cmd: Command, renamed: &[Renamed]) -> Command {
    for r in renamed {
        if let Some(old) = r.old_flag {
            cmd = cmd.mut_arg(r.id, |a| {
                if a.get_long() == Some(old) {
                    a
                } else {
                    a.alias(old)
                }
            });
        }
    }
    cmd
}

/// Parses `args` with `cmd` (already carrying [`old_names`]), then reads
/// the former environment variables of `renamed` (looked up with `env`)
/// for arguments that got no value from the command line or their
/// canonical variable.
pub fn try_parse_from<C: FromArgMatches>(
    cmd: Command,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    renamed: &[Renamed],
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<C, clap::Error> {
    let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = cmd.clone().try_get_matches_from(&args)?;
    let extra = fallbacks(&cmd, &matches, renamed, env);
    let mut matches = if extra.is_empty() {
        matches
    } else {
        args.extend(extra);
        cmd.try_get_matches_from(&args)?
    };
    C::from_arg_matches_mut(&mut matches)
}

/// [`try_parse_from`] on the process's arguments and environment; prints
/// the error (or the help) and exits like `Parser::parse`.
pub fn parse<C: FromArgMatches>(cmd: Command, renamed: &[Renamed]) -> C {
    let err_cmd = cmd.clone();
    try_parse_from(cmd, std::env::args_os(), renamed, |k| std::env::var_os(k))
        .unwrap_or_else(|e| e.format(&mut err_cmd.clone()).exit())
}

/// `--flag=value` for every former variable that has to stand in.
fn fallbacks(
    cmd: &Command,
    matches: &ArgMatches,
    renamed: &[Renamed],
    env: impl Fn(&str) -> Option<OsString>,
) -> Vec<OsString> {
    let mut extra = Vec::new();
    for r in renamed {
        let Some(old_env) = r.old_env else { continue };
        let given = matches!(
            matches.value_source(r.id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        let Some(value) = env(old_env).filter(|v| !v.is_empty()) else {
            continue;
        };
        let Some(long) = cmd
            .get_arguments()
            .find(|a| a.get_id() == r.id)
            .and_then(|a| a.get_long())
        else {
            continue;
        };
        let mut flag = OsString::from(format!("--{long}="));
        flag.push(value);
        extra.push(flag);
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use pretty_assertions::assert_eq;

    #[derive(Parser, Debug, PartialEq)]
    struct Cli {
        #[arg(long, env = "GATEWAY_NAME", default_value = "offload-gateway")]
        gateway_name: String,
        #[arg(long, env = "GATEWAY_NODE_PORT", default_value_t = 30222)]
        gateway_node_port: u16,
        #[command(flatten)]
        log: crate::telemetry::LogArgs,
    }

    const RENAMED: &[Renamed] = &[
        Renamed {
            id: "gateway_name",
            old_flag: Some("gateway-name"),
            old_env: Some("GATEWAY_MANAGER_GATEWAY_NAME"),
        },
        Renamed {
            id: "gateway_node_port",
            old_flag: Some("node-port"),
            old_env: Some("GATEWAY_MANAGER_NODE_PORT"),
        },
    ];

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Cli, clap::Error> {
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        let cmd = log_env(old_names(Cli::command(), RENAMED), "OLD_LOG_JSON");
        try_parse_from(cmd, args.iter().copied(), RENAMED, |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn old_flags_are_aliases() {
        let c = parse(&["x", "--node-port", "0"], &[]).expect("parse");
        assert_eq!(c.gateway_node_port, 0);
        assert_eq!(c.gateway_name, "offload-gateway");
        let c = parse(&["x", "--gateway-node-port=1"], &[]).expect("parse");
        assert_eq!(c.gateway_node_port, 1);
        old_names(Cli::command(), RENAMED).debug_assert();
    }

    #[test]
    fn old_env_stands_in_only_when_nothing_else_is_given() {
        let old = [
            ("GATEWAY_MANAGER_GATEWAY_NAME", "gw"),
            ("GATEWAY_MANAGER_NODE_PORT", "31000"),
        ];
        let c = parse(&["x"], &old).expect("parse");
        assert_eq!(
            (c.gateway_name.as_str(), c.gateway_node_port),
            ("gw", 31000)
        );
        let c = parse(&["x", "--node-port", "5"], &old).expect("parse");
        assert_eq!(c.gateway_node_port, 5, "the command line wins");
        let bad = parse(&["x"], &[("GATEWAY_MANAGER_NODE_PORT", "many")]);
        assert!(
            bad.is_err(),
            "a bad former variable is an error, not ignored"
        );
    }

    #[test]
    fn log_env_is_renamed() {
        let cmd = log_env(Cli::command(), "OLD_LOG_JSON");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "log_json")
            .expect("log_json");
        assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new("OLD_LOG_JSON")));
    }
}

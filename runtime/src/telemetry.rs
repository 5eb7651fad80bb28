//! Tracing setup shared by every binary: a `RUST_LOG` filter, text or JSON
//! lines (one JSON layout for all binaries), and no ANSI colour codes when
//! the output is not a terminal (a log collector would store them verbatim).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// The log flags every binary flattens into its clap struct
/// (`#[command(flatten)]`). The environment variable is `LOG_JSON` (the
/// provider's); a binary whose variable has another name sets it with
/// [`crate::cli::log_env`].
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct LogArgs {
    /// Log as JSON lines (one object per event); filter with `RUST_LOG`.
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,
}

impl LogArgs {
    /// The clap id of `--log-json` (for `Command::mut_arg`).
    pub const LOG_JSON_ID: &'static str = "log_json";

    pub fn json(json: bool) -> Self {
        LogArgs { log_json: json }
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides `info`.
pub fn init(args: &LogArgs) -> Result<(), TryInitError> {
    init_with_default(args, "info")
}

/// [`init`] with another filter when `RUST_LOG` is unset (the bastion
/// quiets russh: `info,russh=warn`).
pub fn init_with_default(args: &LogArgs, default_filter: &str) -> Result<(), TryInitError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = use_ansi(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    let registry = tracing_subscriber::registry().with(filter);
    if args.log_json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .try_init()
    }
}

/// Colours only for a person at a terminal who did not ask for none
/// (<https://no-color.org>).
fn use_ansi(stdout_is_terminal: bool, no_color: bool) -> bool {
    stdout_is_terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn flag_parses() {
        assert!(!Cli::parse_from(["x"]).log.log_json);
        assert!(Cli::parse_from(["x", "--log-json"]).log.log_json);
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn colours_only_on_a_terminal() {
        assert!(use_ansi(true, false));
        assert!(!use_ansi(false, false));
        assert!(!use_ansi(true, true));
    }
}

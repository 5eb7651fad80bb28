//! offload-bastion: see the crate docs (`src/lib.rs`) and `README.md`.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use offload_bastion::run::{RunArgs, run};
use offload_runtime::telemetry::{self, LogArgs};
use offload_runtime::{cli, shutdown};

mod bench;

#[derive(Parser)]
#[command(name = "offload-bastion", version, about)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Hold the tunnels: one SSH connection per gateway, one forward per port.
    Run(Box<RunArgs>),
    /// Create the bastion key (OpenSSH ed25519) if absent and print its public key.
    Keygen {
        /// Where the private key is written (0600).
        #[arg(long, env = "BASTION_KEY_FILE")]
        out: PathBuf,
        /// Replace an existing key (rotation).
        #[arg(long)]
        force: bool,
    },
    /// Throughput and latency through our tunnel vs `ssh -N -R`, on loopback.
    Bench(bench::BenchArgs),
}

/// The flags, `--log-json` reading `BASTION_LOG_JSON` and given before or
/// after the subcommand, as always.
fn parse() -> Cli {
    let cmd = cli::log_env(Cli::command(), "BASTION_LOG_JSON")
        .mut_arg(LogArgs::LOG_JSON_ID, |a| a.global(true));
    let mut err_cmd = cmd.clone();
    cmd.try_get_matches()
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m))
        .unwrap_or_else(|e| e.format(&mut err_cmd).exit())
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = parse();
    telemetry::init_with_default(&cli.log, "info,russh=warn")?;
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Cmd::Run(args) => rt.block_on(async { run(*args, shutdown::on_signals()).await })?,
        Cmd::Keygen { out, force } => {
            println!("{}", offload_bastion::keyfile::keygen(&out, force)?);
        }
        Cmd::Bench(args) => rt.block_on(bench::run(args))?,
    }
    Ok(())
}

//! `gateway-manager`: the tunnel's local half in standalone mode, next to
//! another Virtual Kubelet (for example interLink's own). The flags and what
//! runs are in `gateway_manager::standalone`; see `gateway_manager::webhook`
//! for why.

use gateway_manager::standalone::{self, Args};
use offload_runtime::{shutdown, telemetry};

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse_env();
    telemetry::init(&args.log)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let stop = shutdown::on_signals();
        standalone::run(args, stop).await
    })?;
    Ok(())
}

//! `strata-traffic`: the traffic service (routes and the HTTP ingress) on its own.

use std::path::PathBuf;

use clap::Parser;

/// Runs Strata's traffic service: the routes API and the HTTP ingress.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML config file; `STRATA_TRAFFIC__...` variables override it.
    #[arg(long, env = "STRATA_TRAFFIC_CONFIG")]
    config: Option<PathBuf>,
}

/// The ingress allocates per request; mimalloc's thread-local free lists
/// cost less per allocation than glibc's malloc (measured with
/// deploy/bench/proxy.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = strata_kit::telemetry::init("strata-traffic");
    let config: strata_traffic::Config = strata_kit::settings::load("traffic", args.config.as_deref())?;
    let shutdown = strata_kit::shutdown::on_signal()?;
    strata_traffic::run(config, shutdown).await?;
    Ok(())
}

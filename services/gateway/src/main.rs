//! `strata-gateway`: the platform's single entry point on its own.

use std::path::PathBuf;

use clap::Parser;

/// Runs Strata's gateway, routing each call to the concern that owns it.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML config file; `STRATA_GATEWAY__...` variables override it.
    #[arg(long, env = "STRATA_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = strata_kit::telemetry::init("strata-gateway");
    let config: strata_gateway::Config = strata_kit::settings::load("gateway", args.config.as_deref())?;
    let shutdown = strata_kit::shutdown::on_signal()?;
    strata_gateway::run(config, shutdown).await?;
    Ok(())
}

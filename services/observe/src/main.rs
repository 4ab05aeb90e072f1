//! `strata-observe`: the observe service on its own.

use std::path::PathBuf;

use clap::Parser;

/// Runs Strata's observe service (checks, alerts, the event log, metrics).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML config file; `STRATA_OBSERVE__...` variables override it.
    #[arg(long, env = "STRATA_OBSERVE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = strata_kit::telemetry::init("strata-observe");
    let config: strata_observe::Config = strata_kit::settings::load("observe", args.config.as_deref())?;
    let shutdown = strata_kit::shutdown::on_signal()?;
    strata_observe::run(config, shutdown).await?;
    Ok(())
}

//! `strata-data`: the data service on its own.

use std::path::PathBuf;

use clap::Parser;

/// Runs Strata's data service (PostgreSQL databases on demand).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML config file; `STRATA_DATA__...` variables override it.
    #[arg(long, env = "STRATA_DATA_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = strata_kit::telemetry::init("strata-data");
    let config: strata_data::Config = strata_kit::settings::load("data", args.config.as_deref())?;
    let shutdown = strata_kit::shutdown::on_signal()?;
    strata_data::run(config, shutdown).await?;
    Ok(())
}

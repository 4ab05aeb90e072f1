//! `strata-compute`: the compute service on its own.

use std::path::PathBuf;

use clap::Parser;

/// Runs Strata's compute service (apps, releases, instances).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A TOML config file; `STRATA_COMPUTE__...` variables override it.
    #[arg(long, env = "STRATA_COMPUTE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A static site release's instance: `strata-compute __static-site DIR` on $PORT.
    if let Some(dir) = strata_compute::static_site::subcommand_dir(std::env::args_os()) {
        return Ok(strata_compute::static_site::serve_from_env(dir).await?);
    }
    let args = Args::parse();
    let _telemetry = strata_kit::telemetry::init("strata-compute");
    let config: strata_compute::Config = strata_kit::settings::load("compute", args.config.as_deref())?;
    let shutdown = strata_kit::shutdown::on_signal()?;
    strata_compute::run(config, shutdown).await?;
    Ok(())
}

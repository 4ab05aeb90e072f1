//! `strata`: run the platform on one machine and drive it.

mod admins;
mod checks;
mod commands;
mod db;
mod events;
mod output;
mod pack;
mod routes;
mod session;
mod teams;
mod tokens;
mod up;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Getting started:
  strata up                              start the platform here (NATS, SQLite, all services)
  strata deploy examples/python-hello    push code; it is built and runs
  strata apps info -a python-hello       see where it runs
  strata scale 3 -a python-hello         run three instances
  strata rollback -a python-hello        go back to the previous release
  strata deploy --canary -a python-hello run the new release beside the current one
  strata logs -f -a python-hello         follow its logs
  strata db create orders && strata db bind orders python-hello
  strata tokens create ci --scope read   an API token for a script (shown once)
  strata admins add ann@example.com      make someone a platform admin (admins only)

Exit codes: 0 ok, 1 failed, 2 bad usage, 3 not signed in or not allowed,
4 not found, 5 deployment failed, 6 platform unavailable.";

/// Strata: push code, it runs. A self-service developer platform.
#[derive(Parser)]
#[command(name = "strata", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// The platform's gateway.
    #[arg(long, global = true, env = "STRATA_ENDPOINT")]
    endpoint: Option<String>,
    /// A credential; overrides the one stored by `strata login`.
    #[arg(long, global = true, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Act for this team (platform admins only).
    #[arg(long, global = true, env = "STRATA_TEAM")]
    team: Option<String>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine, in one process.
    Up(up::UpArgs),
    /// Store the endpoint and credential for later commands.
    Login {
        /// An API token (`strata_...`): the admin token `strata up` prints, or one from `strata tokens create`.
        #[arg(long)]
        token: String,
    },
    /// Forget the stored credential.
    Logout,
    /// Create, list, inspect and delete apps.
    #[command(subcommand)]
    Apps(commands::AppsCommand),
    /// Build and release code: a directory (default `.`) or a command.
    Deploy(commands::DeployArgs),
    /// List an app's releases.
    Releases(commands::AppArg),
    /// Deploy an earlier release again (the previous one by default).
    Rollback(commands::RollbackArgs),
    /// Run N instances of the app.
    Scale(commands::ScaleArgs),
    /// List the app's running instances.
    Ps(commands::AppArg),
    /// Show (and follow) the app's logs.
    Logs(commands::LogsArgs),
    /// Set, unset and list config vars (the app's environment).
    #[command(subcommand)]
    Config(commands::ConfigCommand),
    /// PostgreSQL databases on demand: create, bind to apps, rotate, back up.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Routes from hosts and paths to apps: create, list, stats, delete.
    #[command(subcommand)]
    Routes(routes::RoutesCommand),
    /// Health checks on apps: add, list, history, delete.
    #[command(subcommand)]
    Checks(checks::ChecksCommand),
    /// Alerts, the channels they go to and the rules that fire them.
    #[command(subcommand)]
    Alerts(checks::AlertsCommand),
    /// The platform's event log (the audit trail); `--follow` to watch it.
    Events(events::EventsArgs),
    /// Teams and their members.
    #[command(subcommand)]
    Teams(teams::TeamsCommand),
    /// API tokens: create, list, revoke.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Platform admins: list, add, remove (platform admins only).
    #[command(subcommand)]
    Admins(admins::AdminsCommand),
    /// Who the platform takes you for.
    Whoami,
    /// Keys and identities, for operators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Serves a static site (used by the static build pack).
    #[command(name = "__static-site", hide = true)]
    StaticSite { dir: PathBuf },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Make an Ed25519 key pair for signing identity tokens.
    Keygen {
        /// Directory to write `signing.pem` (private) and `public.pem` into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Mint an identity token for a team.
    MintToken {
        /// The private key (`signing.pem` from `strata admin keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        team: String,
        /// admin, owner, member, viewer or service.
        #[arg(long, default_value = "member")]
        role: strata_kit::Role,
        /// Who the token speaks for.
        #[arg(long, default_value = "cli")]
        subject: String,
        /// How long it is valid, e.g. `1h`, `30days`.
        #[arg(long, default_value = "12h")]
        ttl: humantime::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = output::exit_code(&error);
            eprintln!("error: {}", output::describe(&error));
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Login { token } => session::login(&global, &token).await,
        Command::Logout => session::logout(),
        Command::Apps(command) => commands::apps(&global, command).await,
        Command::Deploy(args) => commands::deploy(&global, args).await,
        Command::Releases(args) => commands::releases(&global, args).await,
        Command::Rollback(args) => commands::rollback(&global, args).await,
        Command::Scale(args) => commands::scale(&global, args).await,
        Command::Ps(args) => commands::ps(&global, args).await,
        Command::Logs(args) => commands::logs(&global, args).await,
        Command::Config(command) => commands::config(&global, command).await,
        Command::Db(command) => db::run(&global, command).await,
        Command::Routes(command) => routes::run(&global, command).await,
        Command::Checks(command) => checks::checks(&global, command).await,
        Command::Alerts(command) => checks::alerts(&global, command).await,
        Command::Events(args) => events::run(&global, args).await,
        Command::Teams(command) => teams::run(&global, command).await,
        Command::Tokens(command) => tokens::run(&global, command).await,
        Command::Admins(command) => admins::run(&global, command).await,
        Command::Whoami => tokens::whoami(&global).await,
        Command::Admin(AdminCommand::Keygen { out }) => session::keygen(&out),
        Command::Admin(AdminCommand::MintToken { key, team, role, subject, ttl }) => {
            let pem = std::fs::read_to_string(&key)?;
            let token =
                strata_kit::identity::Signer::from_private_pem(&pem)?.mint(&subject, &team, role, ttl.into())?;
            println!("{token}");
            Ok(())
        }
        Command::StaticSite { dir } => {
            let port = std::env::var("PORT")?.parse()?;
            Ok(strata_compute::static_site::serve(dir, port).await?)
        }
    }
}

//! `strata db`: databases on demand, through the data service.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use strata_proto::data::v1 as pb;

use crate::{
    Global,
    output::{self, ago, table},
    session,
};

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create a PostgreSQL database for your team.
    Create {
        name: String,
        /// hobby (5 connections) or standard (20).
        #[arg(long, default_value = "hobby")]
        plan: String,
        /// Makes a retried create safe (default: a fresh id per run).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// List your team's databases.
    List,
    /// Show a database; `--credentials` prints its connection URL.
    Info {
        name: String,
        #[arg(long)]
        credentials: bool,
    },
    /// Delete a database and its role (its bindings go too).
    Delete {
        name: String,
        #[arg(long)]
        yes: bool,
    },
    /// Give an app the database as DATABASE_URL (a new release rolls out).
    Bind { name: String, app: String },
    /// Take DATABASE_URL away from an app.
    Unbind { name: String, app: String },
    /// New credentials; bound apps are restarted with them.
    Rotate { name: String },
    /// Back up a database (pg_dump), or list its backups with --list.
    Backup {
        name: String,
        #[arg(long)]
        list: bool,
    },
    /// Restore a backup into a new database.
    Restore {
        /// The backup id (`strata db backup NAME --list`).
        backup: String,
        /// The new database's name.
        #[arg(long)]
        into: String,
    },
}

fn state_name(state: i32) -> String {
    pb::DatabaseState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("DATABASE_STATE_").to_lowercase())
        .unwrap_or_default()
}

fn db_json(db: &pb::Database) -> serde_json::Value {
    json!({"name": db.name, "id": db.id, "team": db.team, "state": state_name(db.state), "plan": db.plan, "server": db.server, "apps": db.apps})
}

pub async fn run(global: &Global, command: DbCommand) -> anyhow::Result<()> {
    let mut data = session::data(global).await?;
    match command {
        DbCommand::Create { name, plan, request_id } => {
            let request_id = request_id.unwrap_or_else(|| format!("cli-{}", std::process::id()) + &name);
            let db = data.create_database(pb::CreateDatabaseRequest { name, plan, request_id }).await?.into_inner();
            if global.json {
                return output::json(&db_json(&db));
            }
            println!("Created database {} ({} plan). Bind it: strata db bind {} APP", db.name, db.plan, db.name);
        }
        DbCommand::List => {
            let dbs = data.list_databases(pb::ListDatabasesRequest {}).await?.into_inner().databases;
            if global.json {
                return output::json(&json!(dbs.iter().map(db_json).collect::<Vec<_>>()));
            }
            let rows = dbs
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        state_name(d.state),
                        d.plan.clone(),
                        d.apps.join(","),
                        ago(d.created_at.as_ref()),
                    ]
                })
                .collect();
            println!("{}", table(&["name", "state", "plan", "apps", "created"], rows));
        }
        DbCommand::Info { name, credentials } => {
            let db = data.get_database(pb::GetDatabaseRequest { name: name.clone() }).await?.into_inner();
            let creds = if credentials {
                Some(data.get_credentials(pb::GetCredentialsRequest { name }).await?.into_inner())
            } else {
                None
            };
            if global.json {
                let mut value = db_json(&db);
                if let Some(c) = &creds {
                    value["url"] = json!(c.url);
                }
                return output::json(&value);
            }
            println!("{} ({}, {} plan, on {})", db.name, state_name(db.state), db.plan, db.server);
            println!("  bound to: {}", if db.apps.is_empty() { "-".to_owned() } else { db.apps.join(", ") });
            if let Some(c) = creds {
                println!("  url: {}", c.url);
            }
        }
        DbCommand::Delete { name, yes } => {
            anyhow::ensure!(yes, "deleting {name} drops its data for good: pass --yes to confirm");
            data.delete_database(pb::DeleteDatabaseRequest { name: name.clone() }).await?;
            println!("Deleted database {name}");
        }
        DbCommand::Bind { name, app } => {
            data.bind(pb::BindRequest { database: name.clone(), app: app.clone() }).await?;
            println!("Bound {name} to {app}: a release with DATABASE_URL is rolling out");
        }
        DbCommand::Unbind { name, app } => {
            data.unbind(pb::UnbindRequest { database: name.clone(), app: app.clone() }).await?;
            println!("Unbound {name} from {app}");
        }
        DbCommand::Rotate { name } => {
            let db = data.rotate_credentials(pb::RotateCredentialsRequest { name: name.clone() }).await?.into_inner();
            println!(
                "Rotated the credentials of {name}; restarting {}",
                if db.apps.is_empty() { "no apps".to_owned() } else { db.apps.join(", ") }
            );
        }
        DbCommand::Backup { name, list } => {
            if list {
                let backups = data.list_backups(pb::ListBackupsRequest { database: name }).await?.into_inner().backups;
                if global.json {
                    return output::json(&json!(
                        backups.iter().map(|b| json!({"id": b.id, "size_bytes": b.size_bytes})).collect::<Vec<_>>()
                    ));
                }
                let rows = backups
                    .iter()
                    .map(|b| vec![b.id.clone(), b.size_bytes.to_string(), ago(b.created_at.as_ref())])
                    .collect();
                println!("{}", table(&["backup", "bytes", "taken"], rows));
            } else {
                let backup = data.create_backup(pb::CreateBackupRequest { database: name }).await?.into_inner();
                if global.json {
                    return output::json(&json!({"id": backup.id, "size_bytes": backup.size_bytes}));
                }
                println!("Backup {} ({} bytes)", backup.id, backup.size_bytes);
            }
        }
        DbCommand::Restore { backup, into } => {
            let db = data
                .restore_backup(pb::RestoreBackupRequest { backup_id: backup, name: into })
                .await
                .context("restoring")?
                .into_inner();
            println!("Restored into database {}", db.name);
        }
    }
    Ok(())
}

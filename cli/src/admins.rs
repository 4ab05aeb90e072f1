//! `strata admins`: the platform admins, through the gateway (platform
//! admins only, with an admin-scoped token).

use clap::Subcommand;
use serde_json::json;
use strata_proto::gateway::v1 as pb;

use crate::{
    Global,
    output::{self, ago, table},
    session,
};

#[derive(Subcommand)]
pub enum AdminsCommand {
    /// List the platform admins.
    List,
    /// Make a subject a platform admin (nothing changes if it is one).
    Add {
        /// A person's login or a bot's name, e.g. `ann@example.com`.
        subject: String,
    },
    /// Take a subject's platform admin rights; its tokens keep its team role
    /// only. The last admin cannot be removed.
    Remove { subject: String },
}

fn admin_json(admin: &pb::PlatformAdmin) -> serde_json::Value {
    json!({
        "subject": admin.subject,
        "created_by": admin.created_by,
        "created_at": crate::tokens::when(admin.created_at.as_ref()),
    })
}

pub async fn run(global: &Global, command: AdminsCommand) -> anyhow::Result<()> {
    let mut gateway = session::gateway(global).await?;
    match command {
        AdminsCommand::List => {
            let admins = gateway.list_platform_admins(pb::ListPlatformAdminsRequest {}).await?.into_inner().admins;
            if global.json {
                return output::json(&admins.iter().map(admin_json).collect());
            }
            let rows = admins.iter().map(|a| {
                let by = if a.created_by.is_empty() { "-".to_owned() } else { a.created_by.clone() };
                vec![a.subject.clone(), by, ago(a.created_at.as_ref())]
            });
            println!("{}", table(&["subject", "added by", "since"], rows.collect()));
        }
        AdminsCommand::Add { subject } => {
            let admin = gateway.add_platform_admin(pb::AddPlatformAdminRequest { subject }).await?.into_inner();
            if global.json {
                return output::json(&admin_json(&admin));
            }
            println!(
                "{} is a platform admin; give them an admin-scoped token with \
                 `strata tokens create NAME --for {} --scope admin`",
                admin.subject, admin.subject
            );
        }
        AdminsCommand::Remove { subject } => {
            let admin = gateway.remove_platform_admin(pb::RemovePlatformAdminRequest { subject }).await?.into_inner();
            if global.json {
                return output::json(&admin_json(&admin));
            }
            println!("{} is no longer a platform admin", admin.subject);
        }
    }
    Ok(())
}

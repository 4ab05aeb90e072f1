//! `strata teams`: teams and their members, through the gateway.

use clap::Subcommand;
use serde_json::json;
use strata_proto::gateway::v1 as pb;

use crate::{
    Global,
    output::{self, ago, table},
    session,
};

#[derive(Subcommand)]
pub enum TeamsCommand {
    /// Create a team with its first owner (platform admins).
    Create {
        name: String,
        /// Who owns it: a subject such as `ann@example.com`.
        #[arg(long)]
        owner: String,
    },
    /// List your teams (every team for a platform admin).
    List,
    /// Your team's members.
    #[command(subcommand)]
    Members(MembersCommand),
}

#[derive(Subcommand)]
pub enum MembersCommand {
    /// List the members of your team.
    List,
    /// Add a member, or change a member's role (owners).
    Add {
        subject: String,
        /// owner, member or viewer.
        #[arg(long, default_value = "member")]
        role: RoleArg,
    },
    /// Remove a member; their tokens are revoked (owners).
    Remove { subject: String },
}

/// A member's role, as the CLI spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Owner,
    Member,
    Viewer,
}

impl From<RoleArg> for pb::TeamRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Owner => pb::TeamRole::Owner,
            RoleArg::Member => pb::TeamRole::Member,
            RoleArg::Viewer => pb::TeamRole::Viewer,
        }
    }
}

/// `owner` for `TEAM_ROLE_OWNER`, `-` when unset.
pub fn role_name(role: i32) -> String {
    match pb::TeamRole::try_from(role) {
        Ok(pb::TeamRole::Unspecified) | Err(_) => "-".to_owned(),
        Ok(role) => role.as_str_name().trim_start_matches("TEAM_ROLE_").to_lowercase(),
    }
}

fn team_json(team: &pb::Team) -> serde_json::Value {
    json!({"name": team.name, "id": team.id, "role": role_name(team.role)})
}

fn member_json(member: &pb::Member) -> serde_json::Value {
    json!({"team": member.team, "subject": member.subject, "role": role_name(member.role)})
}

pub async fn run(global: &Global, command: TeamsCommand) -> anyhow::Result<()> {
    let mut gateway = session::gateway(global).await?;
    match command {
        TeamsCommand::Create { name, owner } => {
            let team = gateway.create_team(pb::CreateTeamRequest { name, owner: owner.clone() }).await?.into_inner();
            if global.json {
                return output::json(&team_json(&team));
            }
            println!("Created team {} owned by {owner}", team.name);
        }
        TeamsCommand::List => {
            let teams = gateway.list_teams(pb::ListTeamsRequest {}).await?.into_inner().teams;
            if global.json {
                return output::json(&teams.iter().map(team_json).collect());
            }
            let rows = teams.iter().map(|t| vec![t.name.clone(), role_name(t.role), ago(t.created_at.as_ref())]);
            println!("{}", table(&["team", "your role", "created"], rows.collect()));
        }
        TeamsCommand::Members(MembersCommand::List) => {
            let members = gateway.list_members(pb::ListMembersRequest {}).await?.into_inner().members;
            if global.json {
                return output::json(&members.iter().map(member_json).collect());
            }
            let rows = members.iter().map(|m| vec![m.subject.clone(), role_name(m.role), ago(m.created_at.as_ref())]);
            println!("{}", table(&["subject", "role", "since"], rows.collect()));
        }
        TeamsCommand::Members(MembersCommand::Add { subject, role }) => {
            let role = pb::TeamRole::from(role) as i32;
            let member = gateway.add_member(pb::AddMemberRequest { subject, role }).await?.into_inner();
            if global.json {
                return output::json(&member_json(&member));
            }
            println!("{} is {} of team {}", member.subject, role_name(member.role), member.team);
        }
        TeamsCommand::Members(MembersCommand::Remove { subject }) => {
            let removed =
                gateway.remove_member(pb::RemoveMemberRequest { subject: subject.clone() }).await?.into_inner();
            if global.json {
                return output::json(&json!({"subject": subject, "revoked_tokens": removed.revoked_tokens}));
            }
            println!("Removed {subject}; {} of their tokens revoked", removed.revoked_tokens);
        }
    }
    Ok(())
}

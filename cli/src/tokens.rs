//! `strata tokens` and `strata whoami`: API tokens, through the gateway.

use clap::Subcommand;
use serde_json::json;
use strata_proto::gateway::v1 as pb;

use crate::{
    Global,
    output::{self, ago, table},
    session,
};

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an API token; its secret is printed once.
    Create {
        /// What it is for (`ci`, `laptop`, ...).
        name: String,
        /// read, write (implies read) or admin, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "read,write")]
        scope: Vec<ScopeArg>,
        /// How long it is valid, e.g. `30days`, `12h` (default 90 days).
        #[arg(long)]
        ttl: Option<humantime::Duration>,
        /// Whose token it is (owners, for another member of the team).
        #[arg(long = "for")]
        subject: Option<String>,
    },
    /// List your tokens (your team's, for an owner), with when each was last
    /// used (recorded to within about 30 seconds).
    List {
        /// Include revoked and expired tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token: calls made with it are refused from now on.
    Revoke { id: String },
}

/// A token scope, as the CLI spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ScopeArg {
    Read,
    Write,
    Admin,
}

impl From<ScopeArg> for pb::Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Read => pb::Scope::Read,
            ScopeArg::Write => pb::Scope::Write,
            ScopeArg::Admin => pb::Scope::Admin,
        }
    }
}

fn scope_names(scopes: &[i32]) -> Vec<String> {
    scopes
        .iter()
        .filter_map(|s| pb::Scope::try_from(*s).ok())
        .map(|s| s.as_str_name().trim_start_matches("SCOPE_").to_lowercase())
        .collect()
}

/// An RFC 3339 time for a protobuf timestamp, `-` when unset.
pub fn when(ts: Option<&strata_proto::pbjson_types::Timestamp>) -> String {
    ts.and_then(|t| {
        let secs = u64::try_from(t.seconds).ok()?;
        Some(
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string(),
        )
    })
    .unwrap_or_else(|| "-".to_owned())
}

fn token_json(token: &pb::Token) -> serde_json::Value {
    json!({
        "id": token.id, "name": token.name, "team": token.team, "subject": token.subject,
        "scopes": scope_names(&token.scopes), "hint": token.hint, "created_by": token.created_by,
        "expires_at": when(token.expires_at.as_ref()),
        "revoked_at": token.revoked_at.as_ref().map(|t| when(Some(t))),
        "last_used_at": token.last_used_at.as_ref().map(|t| when(Some(t))),
    })
}

pub async fn run(global: &Global, command: TokensCommand) -> anyhow::Result<()> {
    let mut gateway = session::gateway(global).await?;
    match command {
        TokensCommand::Create { name, scope, ttl, subject } => {
            let request = pb::CreateTokenRequest {
                name,
                scopes: scope.into_iter().map(|s| pb::Scope::from(s) as i32).collect(),
                ttl_seconds: ttl.map_or(0, |t| std::time::Duration::from(t).as_secs()),
                subject: subject.unwrap_or_default(),
            };
            let created = gateway.create_token(request).await?.into_inner();
            let token = created.token.unwrap_or_default();
            if global.json {
                let mut value = token_json(&token);
                value["secret"] = json!(created.secret);
                return output::json(&value);
            }
            println!(
                "Created token {} ({}) for {} in team {}, scopes {}, expires {}.",
                token.id,
                token.name,
                token.subject,
                token.team,
                scope_names(&token.scopes).join(","),
                when(token.expires_at.as_ref())
            );
            println!("Its secret, shown only now:");
            println!("  {}", created.secret);
        }
        TokensCommand::List { all } => {
            let tokens = gateway.list_tokens(pb::ListTokensRequest { all }).await?.into_inner().tokens;
            if global.json {
                return output::json(&tokens.iter().map(token_json).collect());
            }
            let rows = tokens.iter().map(|t| {
                vec![
                    t.id.clone(),
                    t.name.clone(),
                    t.subject.clone(),
                    scope_names(&t.scopes).join(","),
                    t.hint.clone(),
                    ago(t.created_at.as_ref()),
                    // Written every 30 s or so by the gateway: `-` may mean "just now".
                    t.last_used_at.as_ref().map_or_else(|| "-".to_owned(), |at| ago(Some(at))),
                    if t.revoked_at.is_some() { "revoked".to_owned() } else { when(t.expires_at.as_ref()) },
                ]
            });
            let header = ["id", "name", "subject", "scopes", "hint", "created", "last used", "expires"];
            println!("{}", table(&header, rows.collect()));
        }
        TokensCommand::Revoke { id } => {
            let token = gateway.revoke_token(pb::RevokeTokenRequest { id }).await?.into_inner();
            if global.json {
                return output::json(&token_json(&token));
            }
            println!("Revoked token {} ({}) of {}", token.id, token.name, token.subject);
        }
    }
    Ok(())
}

/// `strata whoami`.
pub async fn whoami(global: &Global) -> anyhow::Result<()> {
    let me = session::gateway(global).await?.who_am_i(pb::WhoAmIRequest {}).await?.into_inner();
    if global.json {
        return output::json(&json!({
            "subject": me.subject, "team": me.team, "role": me.role, "token_id": me.token_id,
            "scopes": scope_names(&me.scopes), "expires_at": when(me.expires_at.as_ref()),
            "platform_admin": me.platform_admin,
        }));
    }
    println!(
        "{} in team {} as {}{} (token {}, scopes {}, expires {})",
        me.subject,
        me.team,
        me.role,
        if me.platform_admin { ", platform admin" } else { "" },
        me.token_id,
        scope_names(&me.scopes).join(","),
        when(me.expires_at.as_ref())
    );
    Ok(())
}

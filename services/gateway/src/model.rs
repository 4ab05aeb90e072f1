//! The gateway's records, as the store returns them.

use strata_kit::Role;

use crate::token::Scopes;

/// A member's role in a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeamRole {
    /// Everything, including members and every token of the team.
    Owner,
    /// Reads and changes the team's resources.
    Member,
    /// Reads only.
    Viewer,
}

impl TeamRole {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            TeamRole::Owner => "owner",
            TeamRole::Member => "member",
            TeamRole::Viewer => "viewer",
        }
    }

    /// Parses the stored form; an unknown value reads as the least power.
    pub fn parse(stored: &str) -> Self {
        match stored {
            "owner" => TeamRole::Owner,
            "member" => TeamRole::Member,
            _ => TeamRole::Viewer,
        }
    }

    /// The role identity tokens carry for a member in this role.
    pub fn identity_role(self) -> Role {
        match self {
            TeamRole::Owner => Role::Owner,
            TeamRole::Member => Role::Member,
            TeamRole::Viewer => Role::Viewer,
        }
    }
}

/// A team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamRecord {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A subject's membership of a team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub team: String,
    pub subject: String,
    pub role: TeamRole,
    pub created_at: i64,
}

/// An API token, without its secret (which is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub team: String,
    pub subject: String,
    pub name: String,
    pub hint: String,
    pub scopes: Scopes,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// When a call was last made with it, as last written (see
    /// [`crate::usage`]).
    pub last_used_at: Option<i64>,
}

impl TokenRecord {
    /// Whether calls may be made with it at `now` (Unix ms).
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// A subject with platform admin rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformAdminRecord {
    pub subject: String,
    pub created_at: i64,
    /// Who made it an admin; empty for admins made before this was kept.
    pub created_by: String,
}

/// What checking a token needs, read in one query: the token, its holder's
/// role in the token's team, and whether the holder is a platform admin.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub token: TokenRecord,
    pub member_role: Option<TeamRole>,
    pub platform_admin: bool,
}

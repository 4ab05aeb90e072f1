//! The only place the gateway touches its own SQL.

use sqlx::{AnyConnection, Row, any::AnyRow};
use strata_events::{EventTx, Outbox};

use crate::{
    model::{MemberRecord, PlatformAdminRecord, TeamRecord, TeamRole, TokenGrant, TokenRecord},
    token::Scopes,
};

type Result<T> = std::result::Result<T, sqlx::Error>;

const TOKEN_COLUMNS: &str = "t.id, t.team, t.subject, t.name, t.hint, t.scopes, t.created_by, t.created_at, \
                             t.expires_at, t.revoked_at, t.last_used_at";

fn team_of(row: &AnyRow) -> Result<TeamRecord> {
    Ok(TeamRecord { id: row.try_get("id")?, name: row.try_get("name")?, created_at: row.try_get("created_at")? })
}

fn member_of(row: &AnyRow) -> Result<MemberRecord> {
    Ok(MemberRecord {
        team: row.try_get("team")?,
        subject: row.try_get("subject")?,
        role: TeamRole::parse(&row.try_get::<String, _>("role")?),
        created_at: row.try_get("created_at")?,
    })
}

fn token_of(row: &AnyRow) -> Result<TokenRecord> {
    let scopes: String = row.try_get("scopes")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        subject: row.try_get("subject")?,
        name: row.try_get("name")?,
        hint: row.try_get("hint")?,
        // A scope this version does not know grants nothing.
        scopes: Scopes::parse(&scopes).unwrap_or_default(),
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn platform_admin_of(row: &AnyRow) -> Result<PlatformAdminRecord> {
    Ok(PlatformAdminRecord {
        subject: row.try_get("subject")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

/// The gateway's database.
#[derive(Debug, Clone)]
pub struct Store {
    outbox: Outbox,
}

impl Store {
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.outbox.db().pool()
    }

    /// Whether this process is the database's only writer (a SQLite file is
    /// owned by one gateway; Postgres may be shared by replicas).
    pub fn single_writer(&self) -> bool {
        self.outbox.db().backend() == strata_kit::store::Backend::Sqlite
    }

    /// A write transaction that can carry events.
    pub async fn begin(&self) -> Result<EventTx> {
        self.outbox.begin().await
    }

    /// The token whose secret hashes to `hash`, with what its holder may do:
    /// the one query every authenticated call makes.
    pub async fn token_grant(&self, hash: &str) -> Result<Option<TokenGrant>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS}, m.role AS member_role, a.subject AS admin_subject FROM tokens t \
             LEFT JOIN members m ON m.team = t.team AND m.subject = t.subject \
             LEFT JOIN platform_admins a ON a.subject = t.subject \
             WHERE t.secret_hash = $1"
        )))
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(TokenGrant {
            token: token_of(&row)?,
            member_role: row.try_get::<Option<String>, _>("member_role")?.as_deref().map(TeamRole::parse),
            platform_admin: row.try_get::<Option<String>, _>("admin_subject")?.is_some(),
        }))
    }

    pub async fn team_by_name(&self, name: &str) -> Result<Option<TeamRecord>> {
        sqlx::query("SELECT id, name, created_at FROM teams WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(team_of)
            .transpose()
    }

    /// Every team, with `subject`'s role in each.
    pub async fn teams_all(&self, subject: &str) -> Result<Vec<(TeamRecord, Option<TeamRole>)>> {
        sqlx::query(
            "SELECT t.id, t.name, t.created_at, m.role FROM teams t \
             LEFT JOIN members m ON m.team = t.name AND m.subject = $1 ORDER BY t.name",
        )
        .bind(subject)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| Ok((team_of(row)?, row.try_get::<Option<String>, _>("role")?.as_deref().map(TeamRole::parse))))
        .collect()
    }

    /// The teams `subject` is a member of, with its role.
    pub async fn teams_of(&self, subject: &str) -> Result<Vec<(TeamRecord, Option<TeamRole>)>> {
        sqlx::query(
            "SELECT t.id, t.name, t.created_at, m.role FROM teams t \
             JOIN members m ON m.team = t.name WHERE m.subject = $1 ORDER BY t.name",
        )
        .bind(subject)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| Ok((team_of(row)?, Some(TeamRole::parse(&row.try_get::<String, _>("role")?)))))
        .collect()
    }

    /// The membership of `subject` in `team`.
    pub async fn member(&self, team: &str, subject: &str) -> Result<Option<MemberRecord>> {
        member(&mut *self.pool().acquire().await?, team, subject).await
    }

    /// The members of `team`, by subject.
    pub async fn members(&self, team: &str) -> Result<Vec<MemberRecord>> {
        sqlx::query("SELECT team, subject, role, created_at FROM members WHERE team = $1 ORDER BY subject")
            .bind(team)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(member_of)
            .collect()
    }

    /// Whether `subject` is a platform admin.
    pub async fn is_platform_admin(&self, subject: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT subject FROM platform_admins WHERE subject = $1")
            .bind(subject)
            .fetch_optional(self.pool())
            .await?
            .is_some())
    }

    /// Every platform admin, by subject.
    pub async fn platform_admins(&self) -> Result<Vec<PlatformAdminRecord>> {
        sqlx::query("SELECT subject, created_at, created_by FROM platform_admins ORDER BY subject")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(platform_admin_of)
            .collect()
    }

    /// The subjects of every platform admin, locked until the end of the
    /// transaction on `conn`, so that two removals at once cannot both see
    /// another admin left. (A SQLite write transaction holds the whole
    /// database already.)
    pub async fn platform_admins_locked(&self, conn: &mut AnyConnection) -> Result<Vec<String>> {
        let sql = if self.single_writer() {
            "SELECT subject FROM platform_admins"
        } else {
            "SELECT subject FROM platform_admins FOR UPDATE"
        };
        sqlx::query(sql).fetch_all(conn).await?.iter().map(|row| row.try_get("subject")).collect()
    }

    /// Tokens of `team`, of one subject when given, newest first.
    pub async fn tokens(&self, team: &str, subject: Option<&str>) -> Result<Vec<TokenRecord>> {
        let rows = match subject {
            Some(subject) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.team = $1 AND t.subject = $2 \
                     ORDER BY t.created_at DESC, t.id DESC"
                )))
                .bind(team)
                .bind(subject)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.team = $1 ORDER BY t.created_at DESC, t.id DESC"
                )))
                .bind(team)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(token_of).collect()
    }

    /// A token by id, in any team.
    pub async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(token_of)
            .transpose()
    }
}

/// The membership of `subject` in `team`.
pub async fn member(conn: &mut AnyConnection, team: &str, subject: &str) -> Result<Option<MemberRecord>> {
    sqlx::query("SELECT team, subject, role, created_at FROM members WHERE team = $1 AND subject = $2")
        .bind(team)
        .bind(subject)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(member_of)
        .transpose()
}

/// Inserts a team unless one of that name exists; returns whether it did.
pub async fn team_insert(conn: &mut AnyConnection, team: &TeamRecord) -> Result<bool> {
    let done =
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(&team.id)
            .bind(&team.name)
            .bind(team.created_at)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds a member, or changes the role of an existing one.
pub async fn member_upsert(conn: &mut AnyConnection, member: &MemberRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO members (team, subject, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (team, subject) DO UPDATE SET role = excluded.role",
    )
    .bind(&member.team)
    .bind(&member.subject)
    .bind(member.role.as_str())
    .bind(member.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes a membership; returns whether there was one.
pub async fn member_delete(conn: &mut AnyConnection, team: &str, subject: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM members WHERE team = $1 AND subject = $2")
        .bind(team)
        .bind(subject)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// How many owners `team` has.
pub async fn owner_count(conn: &mut AnyConnection, team: &str) -> Result<i64> {
    sqlx::query("SELECT COUNT(*) AS n FROM members WHERE team = $1 AND role = 'owner'")
        .bind(team)
        .fetch_one(conn)
        .await?
        .try_get("n")
}

/// The platform admin record of `subject`, if it is one.
pub async fn platform_admin(conn: &mut AnyConnection, subject: &str) -> Result<Option<PlatformAdminRecord>> {
    sqlx::query("SELECT subject, created_at, created_by FROM platform_admins WHERE subject = $1")
        .bind(subject)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(platform_admin_of)
        .transpose()
}

/// Makes `admin.subject` a platform admin unless it is one; returns whether
/// it was not.
pub async fn platform_admin_insert(conn: &mut AnyConnection, admin: &PlatformAdminRecord) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO platform_admins (subject, created_at, created_by) VALUES ($1, $2, $3) \
         ON CONFLICT (subject) DO NOTHING",
    )
    .bind(&admin.subject)
    .bind(admin.created_at)
    .bind(&admin.created_by)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes platform admin rights from `subject`; returns whether it had them.
pub async fn platform_admin_delete(conn: &mut AnyConnection, subject: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM platform_admins WHERE subject = $1").bind(subject).execute(conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Records a new token with the hash of its secret.
pub async fn token_insert(conn: &mut AnyConnection, token: &TokenRecord, secret_hash: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO tokens (id, team, subject, name, secret_hash, hint, scopes, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&token.id)
    .bind(&token.team)
    .bind(&token.subject)
    .bind(&token.name)
    .bind(secret_hash)
    .bind(&token.hint)
    .bind(token.scopes.to_stored())
    .bind(&token.created_by)
    .bind(token.created_at)
    .bind(token.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a token revoked at `now`; returns whether it was still unrevoked.
pub async fn token_revoke(conn: &mut AnyConnection, id: &str, now: i64) -> Result<bool> {
    let done = sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that token `id` was last used at `at` (Unix ms), unless a later
/// use is recorded already (by another gateway replica, or an earlier
/// flush that raced this one).
pub async fn token_used(conn: &mut AnyConnection, id: &str, at: i64) -> Result<()> {
    sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)")
        .bind(id)
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The unrevoked tokens of `subject` in `team`.
pub async fn tokens_unrevoked(conn: &mut AnyConnection, team: &str, subject: &str) -> Result<Vec<TokenRecord>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.team = $1 AND t.subject = $2 AND t.revoked_at IS NULL"
    )))
    .bind(team)
    .bind(subject)
    .fetch_all(conn)
    .await?
    .iter()
    .map(token_of)
    .collect()
}

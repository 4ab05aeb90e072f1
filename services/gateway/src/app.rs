//! The gateway's domain: who a token speaks for, and the rules for teams,
//! members and tokens. The gRPC and REST edges decode, call in here, encode.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use strata_kit::{Role, error::validate_name, store::now_ms};
use strata_proto::gateway::v1 as pb;

use crate::{
    events,
    model::{MemberRecord, PlatformAdminRecord, TeamRecord, TeamRole, TokenGrant, TokenRecord},
    store::{self, Store},
    token::{self, Scope, Scopes},
    usage::TokenUse,
};

/// Lifetime of a token created without one.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// The longest a token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// What went wrong, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No usable credential (UNAUTHENTICATED, 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A credential that does not allow this (PERMISSION_DENIED, 403).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The gateway's database failed; retrying is the right move.
    #[error("the gateway's database did not answer; try again")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<strata_events::EventsError> for GatewayError {
    fn from(error: strata_events::EventsError) -> Self {
        match error {
            strata_events::EventsError::Database(e) => GatewayError::Database(e),
            other => GatewayError::Internal(other.to_string()),
        }
    }
}

impl From<strata_kit::ApiError> for GatewayError {
    fn from(error: strata_kit::ApiError) -> Self {
        use strata_kit::ApiError as E;
        match error {
            E::InvalidArgument(m) => GatewayError::InvalidArgument(m),
            E::NotFound(m) => GatewayError::NotFound(m),
            E::AlreadyExists(m) => GatewayError::AlreadyExists(m),
            E::FailedPrecondition(m) => GatewayError::FailedPrecondition(m),
            E::PermissionDenied(m) => GatewayError::PermissionDenied(m),
            E::Unavailable(m) | E::Internal(m) => GatewayError::Internal(m),
        }
    }
}

impl From<GatewayError> for tonic::Status {
    fn from(error: GatewayError) -> Self {
        let message = error.to_string();
        match error {
            GatewayError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            GatewayError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            GatewayError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            GatewayError::NotFound(_) => tonic::Status::not_found(message),
            GatewayError::AlreadyExists(_) => tonic::Status::already_exists(message),
            GatewayError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            GatewayError::Database(error) => {
                tracing::error!(%error, "gateway database error");
                tonic::Status::unavailable(message)
            }
            GatewayError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

type Result<T> = std::result::Result<T, GatewayError>;

/// Who is calling, as the gateway established it from an API token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's holder.
    pub subject: String,
    /// The team the call is scoped to: the token's, or the one a platform
    /// admin acts for.
    pub team: String,
    /// The role the services see.
    pub role: Role,
    /// The API token the call was made with.
    pub token_id: String,
    /// What that token may do.
    pub scopes: Scopes,
    /// When it expires (Unix ms).
    pub expires_at: i64,
    /// Whether its holder is a platform admin.
    pub platform_admin: bool,
}

impl Caller {
    fn require_write(&self) -> Result<()> {
        if self.role.can_write() {
            Ok(())
        } else {
            Err(GatewayError::PermissionDenied(format!(
                "{} can only read in team {} (a viewer, or a read-only token): ask a team owner",
                self.subject, self.team
            )))
        }
    }

    /// Only a platform admin calling with an admin-scoped token (the only
    /// caller the services see as admin) manages the platform itself.
    fn require_platform_admin(&self, what: &str) -> Result<()> {
        if self.role == Role::Admin {
            return Ok(());
        }
        let why = if self.platform_admin {
            "this token is not admin-scoped: call with one that is (`strata tokens create NAME --scope admin`)"
        } else {
            "ask a platform admin to do it"
        };
        Err(GatewayError::PermissionDenied(format!(
            "only platform admins, with an admin-scoped token, may {what}; {} may not: {why}",
            self.subject
        )))
    }

    /// Owners of the team and platform admins manage members and all tokens.
    fn require_owner(&self) -> Result<()> {
        if matches!(self.role, Role::Owner | Role::Admin) {
            Ok(())
        } else {
            Err(GatewayError::PermissionDenied(format!(
                "only owners of team {} (with a write token) and platform admins can do this; {} is not one",
                self.team, self.subject
            )))
        }
    }
}

/// Checks a subject name: a person's login or a bot's name, as identity
/// tokens carry it.
pub fn validate_subject(subject: &str) -> Result<()> {
    let valid = !subject.is_empty()
        && subject.len() <= 100
        && subject.chars().all(|c| c.is_ascii_alphanumeric() || "@._-+".contains(c));
    if valid {
        Ok(())
    } else {
        Err(GatewayError::InvalidArgument(format!(
            "invalid subject {subject:?}: use 1 to 100 letters, digits and @ . _ - + (e.g. `ann@example.com`)"
        )))
    }
}

/// Teams, members and tokens.
#[derive(Debug, Clone)]
pub struct Gateway {
    store: Store,
    grants: Arc<GrantCache>,
    /// Token uses not yet written ([`crate::usage`]).
    uses: Arc<TokenUse>,
}

/// Recently read token grants, by secret hash. Only used when this process
/// is the only writer of the database (SQLite: one gateway owns the file),
/// and every write here invalidates all of it at once (a generation bump
/// after commit), so revoking a token, removing a member, changing a role
/// or adding or removing a platform admin still takes effect on the very
/// next call. With Postgres, where other gateway replicas may write, every
/// call reads the database.
#[derive(Debug, Default)]
struct GrantCache {
    enabled: bool,
    generation: AtomicU64,
    entries: Mutex<HashMap<String, (u64, Instant, TokenGrant)>>,
}

/// How long a cached grant is used at most (memory hygiene: correctness
/// rests on the invalidation, not on this).
const GRANT_TTL: Duration = Duration::from_secs(10);
/// Cached grants at most; the cache is emptied when it is full.
const GRANT_CAPACITY: usize = 10_000;

impl GrantCache {
    fn get(&self, hash: &str) -> Option<TokenGrant> {
        let generation = self.generation.load(Ordering::Acquire);
        let entries = self.entries.lock().ok()?;
        let (at, fetched, grant) = entries.get(hash)?;
        (*at == generation && fetched.elapsed() < GRANT_TTL).then(|| grant.clone())
    }

    fn put(&self, hash: String, generation: u64, grant: TokenGrant) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= GRANT_CAPACITY {
                entries.clear();
            }
            entries.insert(hash, (generation, Instant::now(), grant));
        }
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Gateway {
    /// The gateway's domain over `store`.
    pub fn new(store: Store) -> Self {
        let enabled = store.single_writer();
        Self {
            store,
            grants: Arc::new(GrantCache { enabled, ..GrantCache::default() }),
            uses: Arc::new(TokenUse::default()),
        }
    }

    /// The grant cache's generation when grants are cached (this process is
    /// the database's only writer), `None` when every call must read the
    /// database. What is decided from a grant may be kept as long as the
    /// generation stays the same: every write here changes it.
    pub fn cache_generation(&self) -> Option<u64> {
        self.grants.enabled.then(|| self.grants.generation.load(Ordering::Acquire))
    }

    /// Commits a write, then invalidates every cached grant.
    async fn commit(&self, tx: strata_events::EventTx) -> Result<()> {
        tx.commit().await?;
        self.grants.invalidate();
        Ok(())
    }

    /// The grant of the token whose secret hashes to `hash`.
    async fn grant(&self, hash: String) -> Result<Option<TokenGrant>> {
        if !self.grants.enabled {
            return Ok(self.store.token_grant(&hash).await?);
        }
        if let Some(grant) = self.grants.get(&hash) {
            return Ok(Some(grant));
        }
        // Read the generation before the database: a write committed in
        // between makes this entry stale at once.
        let generation = self.grants.generation.load(Ordering::Acquire);
        let grant = self.store.token_grant(&hash).await?;
        if let Some(grant) = &grant {
            self.grants.put(hash, generation, grant.clone());
        }
        Ok(grant)
    }

    /// Who `secret` speaks for, acting for `acting_team` when given (platform
    /// admins only), noting the use of the token. Revoking a token, removing
    /// a member, changing a role or a platform admin takes effect at once, in
    /// every gateway replica sharing the database (see [`GrantCache`]).
    pub async fn authenticate(&self, secret: &str, acting_team: Option<&str>) -> Result<Caller> {
        let caller = self.check(secret, acting_team).await?;
        self.token_used(&caller.token_id);
        Ok(caller)
    }

    /// Notes a call admitted with token `token_id` (a map insert: written
    /// later by [`Gateway::run_token_use_flusher`]). For calls admitted
    /// without [`Gateway::authenticate`], from what an earlier one decided.
    pub fn token_used(&self, token_id: &str) {
        self.uses.note(token_id, now_ms());
    }

    /// Writes the token uses noted since the last time, in one transaction;
    /// returns how many tokens it wrote. On failure they are kept for the
    /// next time. Grants stay cached: when a token was used changes nothing
    /// about what it may do.
    pub async fn token_use_flush(&self) -> Result<usize> {
        let taken = self.uses.take();
        if taken.is_empty() {
            return Ok(0);
        }
        // In id order, so that two replicas flushing the same tokens lock
        // their rows in the same order (no deadlock on Postgres).
        let mut uses: Vec<(&String, &i64)> = taken.iter().collect();
        uses.sort_unstable();
        let written = async {
            let mut tx = self.store.begin().await?;
            for (id, at) in uses {
                store::token_used(tx.conn(), id, *at).await?;
            }
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => Ok(taken.len()),
            Err(error) => {
                self.uses.restore(taken);
                Err(error.into())
            }
        }
    }

    /// Writes noted token uses every `interval` until `shutdown`, then once
    /// more, so that the uses of the last interval are not lost.
    pub async fn run_token_use_flusher(self, interval: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.token_use_flush().await {
                tracing::warn!(%error, "writing when tokens were last used failed; retrying at the next flush");
            }
        }
        match self.token_use_flush().await {
            Ok(tokens) => tracing::debug!(tokens, "wrote when tokens were last used, at shutdown"),
            Err(error) => tracing::warn!(%error, "writing when tokens were last used failed at shutdown"),
        }
    }

    /// [`Gateway::authenticate`] without noting a use.
    async fn check(&self, secret: &str, acting_team: Option<&str>) -> Result<Caller> {
        if !token::is_api_token(secret) {
            return Err(GatewayError::Unauthenticated(
                "not a Strata API token (they start with `strata_`): create one with `strata tokens create`".to_owned(),
            ));
        }
        let Some(grant) = self.grant(token::hash(secret)).await? else {
            return Err(GatewayError::Unauthenticated("unknown API token: check it, or create a new one".to_owned()));
        };
        let token = grant.token;
        if token.revoked_at.is_some() {
            return Err(GatewayError::Unauthenticated(format!(
                "API token {} ({}) was revoked: create a new one",
                token.id, token.name
            )));
        }
        if token.expires_at <= now_ms() {
            return Err(GatewayError::Unauthenticated(format!(
                "API token {} ({}) has expired: create a new one",
                token.id, token.name
            )));
        }
        let base = Caller {
            subject: token.subject.clone(),
            team: token.team.clone(),
            role: Role::Viewer,
            token_id: token.id.clone(),
            scopes: token.scopes.clone(),
            expires_at: token.expires_at,
            platform_admin: grant.platform_admin,
        };
        if grant.platform_admin && token.scopes.contains(Scope::Admin) {
            let team = match acting_team.filter(|t| *t != token.team) {
                Some(team) => {
                    self.store.team_by_name(team).await?.ok_or_else(|| {
                        GatewayError::NotFound(format!("no team {team:?} to act for: see `strata teams list`"))
                    })?;
                    team.to_owned()
                }
                None => token.team,
            };
            return Ok(Caller { team, role: Role::Admin, ..base });
        }
        if let Some(team) = acting_team.filter(|t| *t != token.team) {
            return Err(GatewayError::PermissionDenied(format!(
                "{} may not act for team {team}: only a platform admin's admin-scoped token can",
                token.subject
            )));
        }
        let Some(member_role) = grant.member_role else {
            return Err(GatewayError::Unauthenticated(format!(
                "{} is no longer a member of team {}: ask an owner to add them again",
                token.subject, token.team
            )));
        };
        let role = if token.scopes.contains(Scope::Write) { member_role.identity_role() } else { Role::Viewer };
        Ok(Caller { role, ..base })
    }

    /// Creates a team with its first owner (platform admins only).
    pub async fn team_create(&self, caller: &Caller, name: &str, owner: &str) -> Result<TeamRecord> {
        if caller.role != Role::Admin {
            return Err(GatewayError::PermissionDenied(
                "only platform admins create teams: ask one to create it for you".to_owned(),
            ));
        }
        self.team_ensure(name, owner, &caller.subject)
            .await?
            .ok_or_else(|| GatewayError::AlreadyExists(format!("team {name:?} already exists: pick another name")))
    }

    /// Creates `name` owned by `owner` unless it exists; `None` when it did.
    async fn team_ensure(&self, name: &str, owner: &str, by: &str) -> Result<Option<TeamRecord>> {
        validate_name("team", name)?;
        validate_subject(owner)?;
        let now = now_ms();
        let team = TeamRecord { id: uuid::Uuid::now_v7().to_string(), name: name.to_owned(), created_at: now };
        let mut tx = self.store.begin().await?;
        if !store::team_insert(tx.conn(), &team).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let member =
            MemberRecord { team: name.to_owned(), subject: owner.to_owned(), role: TeamRole::Owner, created_at: now };
        store::member_upsert(tx.conn(), &member).await?;
        tx.emit(
            events::TEAM_CREATED,
            &team.id,
            name,
            &pb::TeamCreated {
                team_id: team.id.clone(),
                team: name.to_owned(),
                owner: owner.to_owned(),
                created_by: by.to_owned(),
            },
        )
        .await?;
        self.commit(tx).await?;
        tracing::info!(team = %name, owner = %owner, by = %by, "team created");
        Ok(Some(team))
    }

    /// The caller's teams (all of them for a platform admin), with its role.
    pub async fn team_list(&self, caller: &Caller) -> Result<Vec<(TeamRecord, Option<TeamRole>)>> {
        Ok(if caller.role == Role::Admin {
            self.store.teams_all(&caller.subject).await?
        } else {
            self.store.teams_of(&caller.subject).await?
        })
    }

    /// Adds a member to the caller's team or changes its role.
    pub async fn member_add(&self, caller: &Caller, subject: &str, role: TeamRole) -> Result<MemberRecord> {
        caller.require_owner()?;
        validate_subject(subject)?;
        let mut tx = self.store.begin().await?;
        let existing = store::member(tx.conn(), &caller.team, subject).await?;
        if let Some(existing) = &existing
            && existing.role == TeamRole::Owner
            && role != TeamRole::Owner
            && store::owner_count(tx.conn(), &caller.team).await? <= 1
        {
            tx.rollback().await?;
            return Err(GatewayError::FailedPrecondition(format!(
                "{subject} is the last owner of team {}: make someone else owner first",
                caller.team
            )));
        }
        let member = MemberRecord {
            team: caller.team.clone(),
            subject: subject.to_owned(),
            role,
            created_at: existing.map_or_else(now_ms, |m| m.created_at),
        };
        store::member_upsert(tx.conn(), &member).await?;
        self.commit(tx).await?;
        tracing::info!(team = %caller.team, member = %subject, role = role.as_str(), by = %caller.subject, "member set");
        Ok(member)
    }

    /// Removes a member and revokes its tokens in the team; returns how many.
    pub async fn member_remove(&self, caller: &Caller, subject: &str) -> Result<u32> {
        caller.require_owner()?;
        let mut tx = self.store.begin().await?;
        let Some(existing) = store::member(tx.conn(), &caller.team, subject).await? else {
            tx.rollback().await?;
            return Err(GatewayError::NotFound(format!("{subject} is not a member of team {}", caller.team)));
        };
        if existing.role == TeamRole::Owner && store::owner_count(tx.conn(), &caller.team).await? <= 1 {
            tx.rollback().await?;
            return Err(GatewayError::FailedPrecondition(format!(
                "{subject} is the last owner of team {}: make someone else owner first",
                caller.team
            )));
        }
        store::member_delete(tx.conn(), &caller.team, subject).await?;
        let now = now_ms();
        let tokens = store::tokens_unrevoked(tx.conn(), &caller.team, subject).await?;
        for token in &tokens {
            store::token_revoke(tx.conn(), &token.id, now).await?;
            emit_revoked(&mut tx, token, &caller.subject, "member removed").await?;
        }
        self.commit(tx).await?;
        tracing::info!(team = %caller.team, member = %subject, by = %caller.subject, revoked = tokens.len(), "member removed");
        Ok(u32::try_from(tokens.len()).unwrap_or(u32::MAX))
    }

    /// The members of the caller's team.
    pub async fn member_list(&self, caller: &Caller) -> Result<Vec<MemberRecord>> {
        Ok(self.store.members(&caller.team).await?)
    }

    /// Creates a token for `subject` (the caller when empty) in the caller's
    /// team; returns it with its secret, which is not kept.
    pub async fn token_create(
        &self,
        caller: &Caller,
        name: &str,
        scopes: Scopes,
        ttl: Duration,
        subject: &str,
    ) -> Result<(TokenRecord, String)> {
        caller.require_write()?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(GatewayError::InvalidArgument(
                "a token needs a name of 1 to 64 characters saying what it is for (e.g. `ci`)".to_owned(),
            ));
        }
        if scopes.is_empty() {
            return Err(GatewayError::InvalidArgument("a token needs at least one scope: read, write or admin".into()));
        }
        if ttl > MAX_TOKEN_TTL {
            return Err(GatewayError::InvalidArgument("a token lives at most a year: give a shorter ttl".to_owned()));
        }
        let ttl = if ttl.is_zero() { DEFAULT_TOKEN_TTL } else { ttl };
        let subject = if subject.is_empty() { caller.subject.as_str() } else { subject };
        if subject != caller.subject {
            caller.require_owner()?;
        }
        let holder_admin = self.store.is_platform_admin(subject).await?;
        if scopes.contains(Scope::Admin) && !(caller.role == Role::Admin && holder_admin) {
            return Err(GatewayError::PermissionDenied(
                "admin-scoped tokens are for platform admins, created with an admin-scoped token".to_owned(),
            ));
        }
        let member = self.store.member(&caller.team, subject).await?;
        if member.is_none() && !(holder_admin && scopes.contains(Scope::Admin)) {
            return Err(GatewayError::FailedPrecondition(format!(
                "{subject} is not a member of team {}: add them with `strata teams members add` first",
                caller.team
            )));
        }
        self.token_insert(&caller.team, subject, name, scopes, ttl, &caller.subject).await
    }

    async fn token_insert(
        &self,
        team: &str,
        subject: &str,
        name: &str,
        scopes: Scopes,
        ttl: Duration,
        by: &str,
    ) -> Result<(TokenRecord, String)> {
        let secret = token::generate();
        let now = now_ms();
        let record = TokenRecord {
            id: uuid::Uuid::now_v7().to_string(),
            team: team.to_owned(),
            subject: subject.to_owned(),
            name: name.to_owned(),
            hint: secret.hint.clone(),
            scopes,
            created_by: by.to_owned(),
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            revoked_at: None,
            last_used_at: None,
        };
        let mut tx = self.store.begin().await?;
        store::token_insert(tx.conn(), &record, &secret.hash).await?;
        self.commit(tx).await?;
        tracing::info!(team = %team, subject = %subject, token = %record.id, scopes = %record.scopes.to_stored(), by = %by, "token created");
        Ok((record, secret.secret))
    }

    /// The caller's tokens, or the whole team's for an owner or admin.
    pub async fn token_list(&self, caller: &Caller, include_inactive: bool) -> Result<Vec<TokenRecord>> {
        let subject = if caller.require_owner().is_ok() { None } else { Some(caller.subject.as_str()) };
        let now = now_ms();
        let mut tokens = self.store.tokens(&caller.team, subject).await?;
        if !include_inactive {
            tokens.retain(|t| t.is_active(now));
        }
        Ok(tokens)
    }

    /// Revokes a token of the caller's team: its holder's own, or any for an
    /// owner or admin. Revoking a revoked token changes nothing.
    pub async fn token_revoke(&self, caller: &Caller, id: &str) -> Result<TokenRecord> {
        let not_found =
            || GatewayError::NotFound(format!("no token {id} in team {}: see `strata tokens list`", caller.team));
        let token = self.store.token_by_id(id).await?.filter(|t| t.team == caller.team).ok_or_else(not_found)?;
        if token.subject != caller.subject {
            caller.require_owner()?;
        }
        let now = now_ms();
        let mut tx = self.store.begin().await?;
        if store::token_revoke(tx.conn(), &token.id, now).await? {
            emit_revoked(&mut tx, &token, &caller.subject, "revoked").await?;
            self.commit(tx).await?;
            tracing::info!(team = %token.team, subject = %token.subject, token = %token.id, by = %caller.subject, "token revoked");
            return Ok(TokenRecord { revoked_at: Some(now), ..token });
        }
        tx.rollback().await?;
        Ok(self.store.token_by_id(id).await?.unwrap_or(token))
    }

    /// The platform admins (platform admins only).
    pub async fn admin_list(&self, caller: &Caller) -> Result<Vec<PlatformAdminRecord>> {
        caller.require_platform_admin("list platform admins")?;
        Ok(self.store.platform_admins().await?)
    }

    /// Makes `subject` a platform admin (platform admins only). Idempotent,
    /// as adding a member is: an admin already returns its record unchanged.
    pub async fn admin_add(&self, caller: &Caller, subject: &str) -> Result<PlatformAdminRecord> {
        caller.require_platform_admin("add platform admins")?;
        validate_subject(subject)?;
        let admin = PlatformAdminRecord {
            subject: subject.to_owned(),
            created_at: now_ms(),
            created_by: caller.subject.clone(),
        };
        let mut tx = self.store.begin().await?;
        if !self.admin_insert(&mut tx, &admin).await? {
            let existing = store::platform_admin(tx.conn(), subject).await?;
            tx.rollback().await?;
            return existing.ok_or_else(|| GatewayError::Internal(format!("platform admin {subject} vanished")));
        }
        self.commit(tx).await?;
        tracing::info!(admin = %subject, by = %caller.subject, "platform admin added");
        Ok(admin)
    }

    /// Inserts `admin` with its event unless it is an admin already.
    async fn admin_insert(&self, tx: &mut strata_events::EventTx, admin: &PlatformAdminRecord) -> Result<bool> {
        if !store::platform_admin_insert(tx.conn(), admin).await? {
            return Ok(false);
        }
        let added = pb::PlatformAdminAdded { subject: admin.subject.clone(), added_by: admin.created_by.clone() };
        // Platform admins belong to no team: the event's team is empty.
        tx.emit(events::ADMIN_ADDED, &admin.subject, "", &added).await?;
        Ok(true)
    }

    /// Takes platform admin rights from `subject` (platform admins only);
    /// the last admin stays. Its tokens keep working with its team role
    /// alone, from the very next call.
    pub async fn admin_remove(&self, caller: &Caller, subject: &str) -> Result<PlatformAdminRecord> {
        caller.require_platform_admin("remove platform admins")?;
        validate_subject(subject)?;
        let mut tx = self.store.begin().await?;
        let admins = self.store.platform_admins_locked(tx.conn()).await?;
        let Some(admin) = store::platform_admin(tx.conn(), subject).await? else {
            tx.rollback().await?;
            return Err(GatewayError::NotFound(format!(
                "{subject} is not a platform admin: `strata admins list` shows who is"
            )));
        };
        if admins.iter().all(|a| a == subject) {
            tx.rollback().await?;
            return Err(GatewayError::FailedPrecondition(format!(
                "{subject} is the last platform admin: add another with `strata admins add` first, so the \
                 platform is never left without one"
            )));
        }
        store::platform_admin_delete(tx.conn(), subject).await?;
        let removed = pb::PlatformAdminRemoved { subject: subject.to_owned(), removed_by: caller.subject.clone() };
        tx.emit(events::ADMIN_REMOVED, subject, "", &removed).await?;
        self.commit(tx).await?;
        tracing::info!(admin = %subject, by = %caller.subject, "platform admin removed");
        Ok(admin)
    }

    /// Makes sure the platform has its first admin (`admin`, when it has no
    /// admin at all), a team `admin` owns, and a token of `admin` whose
    /// secret is in `existing` or newly made: admin-scoped while `admin` is a
    /// platform admin. Returns the secret to use and whether it is new.
    pub async fn bootstrap(&self, admin: &str, team: &str, existing: Option<&str>) -> Result<(String, bool)> {
        validate_subject(admin)?;
        let now = now_ms();
        // The first admin only: once admins are managed through the API, one
        // removed there stays removed across restarts.
        let mut tx = self.store.begin().await?;
        let admins = self.store.platform_admins_locked(tx.conn()).await?;
        let is_admin = if admins.is_empty() {
            let record =
                PlatformAdminRecord { subject: admin.to_owned(), created_at: now, created_by: BOOTSTRAP_BY.to_owned() };
            self.admin_insert(&mut tx, &record).await?;
            self.commit(tx).await?;
            true
        } else {
            tx.rollback().await?;
            admins.iter().any(|a| a == admin)
        };
        if !is_admin {
            tracing::warn!(
                admin,
                "the bootstrap subject is no longer a platform admin (removed through the API): its token gets \
                 its team role only; `strata admins add {admin}` makes it one again"
            );
        }
        self.team_ensure(team, admin, BOOTSTRAP_BY).await?;
        if self.store.member(team, admin).await?.is_none() {
            let mut tx = self.store.begin().await?;
            let member = MemberRecord {
                team: team.to_owned(),
                subject: admin.to_owned(),
                role: TeamRole::Owner,
                created_at: now,
            };
            store::member_upsert(tx.conn(), &member).await?;
            self.commit(tx).await?;
        }
        // Keep a token that still works for a while; otherwise make a new one.
        let renew_before = now + i64::try_from(BOOTSTRAP_RENEW.as_millis()).unwrap_or(i64::MAX);
        if let Some(secret) = existing
            && let Ok(caller) = self.check(secret, None).await
            && caller.subject == admin
            && (caller.role == Role::Admin || !is_admin)
            && caller.expires_at > renew_before
        {
            return Ok((secret.to_owned(), false));
        }
        let scopes = if is_admin {
            Scopes::new([Scope::Read, Scope::Write, Scope::Admin])
        } else {
            Scopes::new([Scope::Read, Scope::Write])
        };
        let (_, secret) = self.token_insert(team, admin, "bootstrap", scopes, BOOTSTRAP_TTL, BOOTSTRAP_BY).await?;
        Ok((secret, true))
    }
}

/// Who the bootstrap acts as, in records and events.
const BOOTSTRAP_BY: &str = "strata-bootstrap";
/// Lifetime of the bootstrap admin token.
pub const BOOTSTRAP_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// A bootstrap token closer than this to its expiry is replaced at start.
const BOOTSTRAP_RENEW: Duration = Duration::from_secs(24 * 3600);

async fn emit_revoked(tx: &mut strata_events::EventTx, token: &TokenRecord, by: &str, reason: &str) -> Result<()> {
    tx.emit(
        events::TOKEN_REVOKED,
        &token.id,
        &token.team,
        &pb::TokenRevoked {
            token_id: token.id.clone(),
            name: token.name.clone(),
            subject: token.subject.clone(),
            revoked_by: by.to_owned(),
            reason: reason.to_owned(),
        },
    )
    .await?;
    Ok(())
}

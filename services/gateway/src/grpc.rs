//! The gRPC edge of the gateway's own API (`strata.gateway.v1.GatewayService`):
//! decode, call [`Gateway`], encode. The caller was established by the
//! authentication layer ([`crate::auth`]) and travels in the extensions.

use std::time::Duration;

use strata_kit::error::timestamp;
use strata_proto::gateway::v1::{self as pb, gateway_service_server::GatewayService};
use tonic::{Request, Response, Status};

use crate::{
    app::{Caller, Gateway},
    model::{MemberRecord, PlatformAdminRecord, TeamRecord, TeamRole, TokenRecord},
    overview::Aggregator,
    token::{Scope, Scopes},
};

/// The `strata.gateway.v1.GatewayService` implementation.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    gateway: Gateway,
    aggregator: Aggregator,
}

impl GatewayApi {
    pub fn new(gateway: Gateway, aggregator: Aggregator) -> Self {
        Self { gateway, aggregator }
    }
}

/// The identity token the authentication layer put on the call, to ask the
/// other concerns as the caller.
fn identity<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or_else(|| Status::unauthenticated("no identity on this call"))
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller on this call"))
}

/// The proto form of a team role.
pub fn team_role_to_pb(role: Option<TeamRole>) -> pb::TeamRole {
    match role {
        Some(TeamRole::Owner) => pb::TeamRole::Owner,
        Some(TeamRole::Member) => pb::TeamRole::Member,
        Some(TeamRole::Viewer) => pb::TeamRole::Viewer,
        None => pb::TeamRole::Unspecified,
    }
}

/// A team role from its proto form.
pub fn team_role_from_pb(role: i32) -> Result<TeamRole, Status> {
    match pb::TeamRole::try_from(role) {
        Ok(pb::TeamRole::Owner) => Ok(TeamRole::Owner),
        Ok(pb::TeamRole::Member) => Ok(TeamRole::Member),
        Ok(pb::TeamRole::Viewer) => Ok(TeamRole::Viewer),
        _ => Err(Status::invalid_argument("give a role: owner, member or viewer")),
    }
}

/// The proto form of scopes.
pub fn scopes_to_pb(scopes: &Scopes) -> Vec<i32> {
    scopes
        .iter()
        .map(|s| match s {
            Scope::Read => pb::Scope::Read,
            Scope::Write => pb::Scope::Write,
            Scope::Admin => pb::Scope::Admin,
        } as i32)
        .collect()
}

/// Scopes from their proto form.
pub fn scopes_from_pb(scopes: &[i32]) -> Result<Scopes, Status> {
    scopes
        .iter()
        .map(|s| match pb::Scope::try_from(*s) {
            Ok(pb::Scope::Read) => Ok(Scope::Read),
            Ok(pb::Scope::Write) => Ok(Scope::Write),
            Ok(pb::Scope::Admin) => Ok(Scope::Admin),
            _ => Err(Status::invalid_argument("unknown scope: use read, write or admin")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Scopes::new)
}

/// The proto form of a team.
pub fn team_to_pb(team: &TeamRecord, role: Option<TeamRole>) -> pb::Team {
    pb::Team {
        id: team.id.clone(),
        name: team.name.clone(),
        created_at: Some(timestamp(team.created_at)),
        role: team_role_to_pb(role) as i32,
    }
}

/// The proto form of a member.
pub fn member_to_pb(member: &MemberRecord) -> pb::Member {
    pb::Member {
        team: member.team.clone(),
        subject: member.subject.clone(),
        role: team_role_to_pb(Some(member.role)) as i32,
        created_at: Some(timestamp(member.created_at)),
    }
}

/// The proto form of a token (never its secret).
pub fn token_to_pb(token: &TokenRecord) -> pb::Token {
    pb::Token {
        id: token.id.clone(),
        name: token.name.clone(),
        team: token.team.clone(),
        subject: token.subject.clone(),
        scopes: scopes_to_pb(&token.scopes),
        hint: token.hint.clone(),
        created_at: Some(timestamp(token.created_at)),
        expires_at: Some(timestamp(token.expires_at)),
        revoked_at: token.revoked_at.map(timestamp),
        created_by: token.created_by.clone(),
        last_used_at: token.last_used_at.map(timestamp),
    }
}

/// The proto form of a platform admin.
pub fn platform_admin_to_pb(admin: &PlatformAdminRecord) -> pb::PlatformAdmin {
    pb::PlatformAdmin {
        subject: admin.subject.clone(),
        created_at: Some(timestamp(admin.created_at)),
        created_by: admin.created_by.clone(),
    }
}

/// The proto form of who the caller is.
pub fn whoami_to_pb(caller: &Caller) -> pb::WhoAmIResponse {
    pb::WhoAmIResponse {
        subject: caller.subject.clone(),
        team: caller.team.clone(),
        role: format!("{:?}", caller.role).to_lowercase(),
        token_id: caller.token_id.clone(),
        scopes: scopes_to_pb(&caller.scopes),
        expires_at: Some(timestamp(caller.expires_at)),
        platform_admin: caller.platform_admin,
    }
}

#[tonic::async_trait]
impl GatewayService for GatewayApi {
    async fn create_team(&self, request: Request<pb::CreateTeamRequest>) -> Result<Response<pb::Team>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let team = self.gateway.team_create(&caller, &req.name, &req.owner).await?;
        let role = (req.owner == caller.subject).then_some(TeamRole::Owner);
        Ok(Response::new(team_to_pb(&team, role)))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let caller = caller(&request)?;
        let teams = self.gateway.team_list(&caller).await?;
        Ok(Response::new(pb::ListTeamsResponse { teams: teams.iter().map(|(t, r)| team_to_pb(t, *r)).collect() }))
    }

    async fn add_member(&self, request: Request<pb::AddMemberRequest>) -> Result<Response<pb::Member>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let member = self.gateway.member_add(&caller, &req.subject, team_role_from_pb(req.role)?).await?;
        Ok(Response::new(member_to_pb(&member)))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = caller(&request)?;
        let revoked_tokens = self.gateway.member_remove(&caller, &request.get_ref().subject).await?;
        Ok(Response::new(pb::RemoveMemberResponse { revoked_tokens }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = caller(&request)?;
        let members = self.gateway.member_list(&caller).await?;
        Ok(Response::new(pb::ListMembersResponse { members: members.iter().map(member_to_pb).collect() }))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let caller = caller(&request)?;
        let req = request.get_ref();
        let (token, secret) = self
            .gateway
            .token_create(
                &caller,
                &req.name,
                scopes_from_pb(&req.scopes)?,
                Duration::from_secs(req.ttl_seconds),
                &req.subject,
            )
            .await?;
        Ok(Response::new(pb::CreatedToken { token: Some(token_to_pb(&token)), secret }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let caller = caller(&request)?;
        let tokens = self.gateway.token_list(&caller, request.get_ref().all).await?;
        Ok(Response::new(pb::ListTokensResponse { tokens: tokens.iter().map(token_to_pb).collect() }))
    }

    async fn revoke_token(&self, request: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::Token>, Status> {
        let caller = caller(&request)?;
        let token = self.gateway.token_revoke(&caller, &request.get_ref().id).await?;
        Ok(Response::new(token_to_pb(&token)))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        Ok(Response::new(whoami_to_pb(&caller(&request)?)))
    }

    async fn list_platform_admins(
        &self,
        request: Request<pb::ListPlatformAdminsRequest>,
    ) -> Result<Response<pb::ListPlatformAdminsResponse>, Status> {
        let admins = self.gateway.admin_list(&caller(&request)?).await?;
        Ok(Response::new(pb::ListPlatformAdminsResponse { admins: admins.iter().map(platform_admin_to_pb).collect() }))
    }

    async fn add_platform_admin(
        &self,
        request: Request<pb::AddPlatformAdminRequest>,
    ) -> Result<Response<pb::PlatformAdmin>, Status> {
        let admin = self.gateway.admin_add(&caller(&request)?, &request.get_ref().subject).await?;
        Ok(Response::new(platform_admin_to_pb(&admin)))
    }

    async fn remove_platform_admin(
        &self,
        request: Request<pb::RemovePlatformAdminRequest>,
    ) -> Result<Response<pb::PlatformAdmin>, Status> {
        let admin = self.gateway.admin_remove(&caller(&request)?, &request.get_ref().subject).await?;
        Ok(Response::new(platform_admin_to_pb(&admin)))
    }

    async fn get_app_overview(
        &self,
        request: Request<pb::GetAppOverviewRequest>,
    ) -> Result<Response<pb::AppOverview>, Status> {
        caller(&request)?;
        let identity = identity(&request)?;
        let app = &request.get_ref().app;
        strata_kit::error::validate_name("app", app).map_err(Status::from)?;
        Ok(Response::new(self.aggregator.app_overview(&identity, app).await?))
    }

    async fn get_catalog(&self, request: Request<pb::GetCatalogRequest>) -> Result<Response<pb::Catalog>, Status> {
        caller(&request)?;
        Ok(Response::new(self.aggregator.catalog().await))
    }
}

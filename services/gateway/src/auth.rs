//! Authentication at the edge: every call through the gateway (gRPC
//! pass-through, the gateway's own API, REST) must carry
//! `authorization: Bearer strata_...`. The token is checked against the
//! gateway's database, then replaced by a short-lived identity token signed
//! by the gateway, which the service behind the call verifies itself. The
//! API token never leaves the gateway. Refusals are logged for audit, with who
//! and what but never the token.
//!
//! What a credential was found to allow is kept for the next calls with it
//! (the caller and its signed identity), but only under the rules of the
//! gateway's grant cache ([`Gateway::cache_generation`]): while this process
//! is the database's only writer, and until the next write to teams,
//! members, platform admins or tokens, which drops it all at once — so revoking a token takes
//! effect on the very next call. Where other gateway replicas share the
//! database (Postgres), nothing is kept and every call reads the database.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, header, uri::PathAndQuery},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use strata_kit::{identity::Signer, store::now_ms};

use crate::{
    app::{Caller, Gateway, GatewayError},
    problem::Problem,
};

/// The header a platform admin names the team it acts for with.
pub const ACT_FOR_TEAM: &str = "x-strata-team";

/// What the authentication layer needs (cheap to clone: every call does).
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: Gateway,
    signer: Signer,
    /// Lifetime of the identity tokens forwarded to services.
    identity_ttl: Duration,
    /// Identity tokens minted recently, by (subject, team, role), with when
    /// they were minted. Only the signature is reused, never the decision.
    identities: Mutex<HashMap<String, (String, Instant)>>,
    /// Recent admissions, by [`credential_key`].
    admissions: Mutex<HashMap<[u8; 32], Kept>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("identity_ttl", &self.identity_ttl).finish_non_exhaustive()
    }
}

/// An admission kept for the next calls with the same credential.
struct Kept {
    /// The grant cache generation it was decided under.
    generation: u64,
    decided: Instant,
    admission: Admission,
    /// When its identity token was minted.
    minted: Instant,
}

/// A call let in: who makes it, and the identity to forward in place of the
/// API token.
#[derive(Clone)]
pub struct Admission {
    pub caller: Arc<Caller>,
    /// `Bearer <identity token>`.
    authorization: HeaderValue,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("caller", &self.caller).finish_non_exhaustive()
    }
}

/// Identity tokens and admissions kept at most (each map is emptied when
/// full).
const CAPACITY: usize = 10_000;
/// How long an admission is reused at most (memory hygiene: correctness
/// rests on the generation, as for the grant cache).
const ADMISSION_TTL: Duration = Duration::from_secs(10);

/// The key an admission is kept under: a digest of the API token and the
/// team acted for, so that no token is kept in the clear.
fn credential_key(secret: &str, acting: Option<&str>) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(secret.as_bytes());
    if let Some(team) = acting {
        digest.update([0]);
        digest.update(team.as_bytes());
    }
    digest.finalize().into()
}

impl Auth {
    pub fn new(gateway: Gateway, signer: Signer, identity_ttl: Duration) -> Self {
        let inner = Inner { gateway, signer, identity_ttl, identities: Mutex::default(), admissions: Mutex::default() };
        Self { inner: Arc::new(inner) }
    }

    /// An identity token for `caller`: a recent one for the same identity
    /// while it has more than half its lifetime left, else a new one.
    pub fn identity(&self, caller: &Caller) -> Result<String, strata_kit::identity::IdentityError> {
        self.identity_minted(caller).map(|(token, _)| token)
    }

    /// The same, with when it was minted.
    fn identity_minted(&self, caller: &Caller) -> Result<(String, Instant), strata_kit::identity::IdentityError> {
        let inner = &self.inner;
        let key = format!("{}\n{}\n{:?}", caller.subject, caller.team, caller.role);
        if let Ok(cache) = inner.identities.lock()
            && let Some((token, minted)) = cache.get(&key)
            && minted.elapsed() < inner.identity_ttl / 2
        {
            return Ok((token.clone(), *minted));
        }
        let token = inner.signer.mint(&caller.subject, &caller.team, caller.role, inner.identity_ttl)?;
        let minted = Instant::now();
        if let Ok(mut cache) = inner.identities.lock() {
            if cache.len() >= CAPACITY {
                cache.clear();
            }
            cache.insert(key, (token.clone(), minted));
        }
        Ok((token, minted))
    }

    /// Whether the call with these headers may go on, and as whom; a refusal
    /// in the call's protocol (logged) if not.
    pub async fn admit(&self, headers: &HeaderMap, method: &str) -> Result<Admission, Response> {
        let grpc = is_grpc(headers);
        let secret = match bearer(headers) {
            Ok(secret) => secret,
            Err(error) => {
                tracing::warn!(%method, reason = %error, "call refused: no credential");
                return Err(refuse(grpc, error));
            }
        };
        let acting = headers.get(ACT_FOR_TEAM).and_then(|v| v.to_str().ok()).map(str::trim);
        let key = credential_key(secret, acting);
        // Read before the database: a write committed in between makes what
        // is kept below stale at once.
        let generation = self.inner.gateway.cache_generation();
        if let Some(generation) = generation
            && let Some(admission) = self.kept(&key, generation)
        {
            self.inner.gateway.token_used(&admission.caller.token_id);
            return Ok(admission);
        }
        let caller = match self.inner.gateway.authenticate(secret, acting).await {
            Ok(caller) => caller,
            Err(error) => {
                tracing::warn!(%method, acting_for = acting.unwrap_or(""), reason = %error, "call refused: credential not accepted");
                return Err(refuse(grpc, error));
            }
        };
        let (identity, minted) = match self.identity_minted(&caller) {
            Ok(identity) => identity,
            Err(error) => {
                tracing::error!(%error, "cannot sign an identity token");
                return Err(refuse(grpc, GatewayError::Internal("the gateway cannot sign identities".to_owned())));
            }
        };
        let Ok(mut authorization) = HeaderValue::from_str(&format!("Bearer {identity}")) else {
            return Err(refuse(grpc, GatewayError::Internal("identity token is not a header value".to_owned())));
        };
        authorization.set_sensitive(true);
        let admission = Admission { caller: Arc::new(caller), authorization };
        if let Some(generation) = generation
            && let Ok(mut kept) = self.inner.admissions.lock()
        {
            if kept.len() >= CAPACITY {
                kept.clear();
            }
            let entry = Kept { generation, decided: Instant::now(), admission: admission.clone(), minted };
            kept.insert(key, entry);
        }
        Ok(admission)
    }

    /// A kept admission that still holds: same generation, recent, token
    /// not expired, identity with more than half its lifetime left.
    fn kept(&self, key: &[u8; 32], generation: u64) -> Option<Admission> {
        let kept = self.inner.admissions.lock().ok()?;
        let entry = kept.get(key)?;
        let holds = entry.generation == generation
            && entry.decided.elapsed() < ADMISSION_TTL
            && entry.minted.elapsed() < self.inner.identity_ttl / 2
            && entry.admission.caller.expires_at > now_ms();
        holds.then(|| entry.admission.clone())
    }
}

impl Admission {
    /// Puts the identity in place of the API token.
    fn apply(&self, request: &mut Request) {
        let headers = request.headers_mut();
        headers.insert(header::AUTHORIZATION, self.authorization.clone());
        headers.remove(ACT_FOR_TEAM);
    }
}

/// Whether `headers` announce a gRPC call (rather than REST or a browser).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/grpc"))
}

fn bearer(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        GatewayError::Unauthenticated(
            "missing `authorization: Bearer strata_...`: sign in with `strata login`".to_owned(),
        )
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| GatewayError::Unauthenticated("the authorization header must be `Bearer <token>`".to_owned()))
}

/// A refusal, in the protocol of the call.
fn refuse(grpc: bool, error: GatewayError) -> Response {
    if grpc { tonic::Status::from(error).into_http() } else { Problem::from(error).into_response() }
}

/// Authenticates `request`, swaps its credential, hands it to `next` with
/// the caller, and audits a refusal by what answers.
pub async fn authenticated<F, Fut>(auth: &Auth, mut request: Request, next: F) -> Response
where
    F: FnOnce(Request, &Arc<Caller>) -> Fut,
    Fut: Future<Output = Response>,
{
    let method = request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let admission = match auth.admit(request.headers(), method.path()).await {
        Ok(admission) => admission,
        Err(refusal) => return refusal,
    };
    admission.apply(&mut request);
    let response = next(request, &admission.caller).await;
    audit_refusal(&admission.caller, method.path(), &response);
    response
}

/// The middleware for the gateway's own API and REST: as [`authenticated`],
/// with the caller in the request's extensions. (gRPC calls passed through
/// to the services are authenticated by [`crate::proxy::service`] itself.)
pub async fn authenticate(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    authenticated(&auth, request, |mut request, caller| {
        request.extensions_mut().insert(Caller::clone(caller));
        next.run(request)
    })
    .await
}

/// Logs a refusal by the service behind the call (or the gateway's own API),
/// when the response says so up front.
fn audit_refusal(caller: &Caller, method: &str, response: &Response) {
    let grpc_code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32);
    let refused = match grpc_code {
        Some(code) => matches!(code, tonic::Code::PermissionDenied | tonic::Code::Unauthenticated),
        None => matches!(response.status().as_u16(), 401 | 403),
    };
    if refused {
        let message = response
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .map(percent_decode)
            .unwrap_or_default();
        tracing::warn!(
            team = %caller.team, subject = %caller.subject, role = ?caller.role, token = %caller.token_id,
            %method, reason = %message, "call refused by the service"
        );
    }
}

/// Decodes the percent-encoding of `grpc-message`.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = value.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer(&headers), Err(GatewayError::Unauthenticated(_))));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(matches!(bearer(&headers), Err(GatewayError::Unauthenticated(_))));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer strata_abc "));
        assert_eq!(bearer(&headers).ok(), Some("strata_abc"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc+proto"));
        assert!(is_grpc(&headers));
        assert_eq!(percent_decode("a%20b%C3%A9"), "a bé");
    }

    #[test]
    fn admissions_are_kept_per_token_and_team_acted_for() {
        let key = credential_key("strata_abc", None);
        assert_eq!(key, credential_key("strata_abc", None));
        assert_ne!(key, credential_key("strata_abd", None));
        assert_ne!(key, credential_key("strata_abc", Some("blue")));
        assert_ne!(credential_key("strata_abc", Some("blue")), credential_key("strata_abc", Some("green")));
    }
}

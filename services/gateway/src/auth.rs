//! Authentication at the edge: every call through the gateway (gRPC
//! pass-through, the gateway's own API, REST) must carry
//! `authorization: Bearer strata_...`. The token is checked against the
//! gateway's database, then replaced by a short-lived identity token signed
//! by the gateway, which the service behind the call verifies itself. The
//! API token never leaves the gateway. Refusals are logged for audit, with who
//! and what but never the token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use strata_kit::identity::Signer;

use crate::{
    app::{Caller, Gateway, GatewayError},
    problem::Problem,
};

/// The header a platform admin names the team it acts for with.
pub const ACT_FOR_TEAM: &str = "x-strata-team";

/// What the authentication layer needs.
#[derive(Debug, Clone)]
pub struct Auth {
    gateway: Gateway,
    signer: Signer,
    /// Lifetime of the identity tokens forwarded to services.
    identity_ttl: Duration,
    /// Identity tokens minted recently, by (subject, team, role). Only the
    /// signature is reused, never the decision: every call is authenticated.
    identities: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

/// Identity tokens kept for reuse at most.
const IDENTITY_CAPACITY: usize = 10_000;

impl Auth {
    pub fn new(gateway: Gateway, signer: Signer, identity_ttl: Duration) -> Self {
        Self { gateway, signer, identity_ttl, identities: Arc::default() }
    }

    /// An identity token for `caller`: a recent one for the same identity
    /// while it has more than half its lifetime left, else a new one.
    pub fn identity(&self, caller: &Caller) -> Result<String, strata_kit::identity::IdentityError> {
        let key = format!("{}\n{}\n{:?}", caller.subject, caller.team, caller.role);
        if let Ok(cache) = self.identities.lock()
            && let Some((token, minted)) = cache.get(&key)
            && minted.elapsed() < self.identity_ttl / 2
        {
            return Ok(token.clone());
        }
        let token = self.signer.mint(&caller.subject, &caller.team, caller.role, self.identity_ttl)?;
        if let Ok(mut cache) = self.identities.lock() {
            if cache.len() >= IDENTITY_CAPACITY {
                cache.clear();
            }
            cache.insert(key, (token.clone(), Instant::now()));
        }
        Ok(token)
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

/// The middleware: authenticates, swaps the credential, and audits.
pub async fn authenticate(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    let grpc = is_grpc(request.headers());
    let method = request.uri().path().to_owned();
    let secret = match bearer(request.headers()) {
        Ok(secret) => secret,
        Err(error) => {
            tracing::warn!(%method, reason = %error, "call refused: no credential");
            return refuse(grpc, error);
        }
    };
    let acting = request.headers().get(ACT_FOR_TEAM).and_then(|v| v.to_str().ok()).map(str::trim);
    let caller = match auth.gateway.authenticate(secret, acting).await {
        Ok(caller) => caller,
        Err(error) => {
            tracing::warn!(%method, acting_for = acting.unwrap_or(""), reason = %error, "call refused: credential not accepted");
            return refuse(grpc, error);
        }
    };
    let identity = match auth.identity(&caller) {
        Ok(identity) => identity,
        Err(error) => {
            tracing::error!(%error, "cannot sign an identity token");
            return refuse(grpc, GatewayError::Internal("the gateway cannot sign identities".to_owned()));
        }
    };
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {identity}")) else {
        return refuse(grpc, GatewayError::Internal("identity token is not a header value".to_owned()));
    };
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request.headers_mut().remove(ACT_FOR_TEAM);
    let audit = caller.clone();
    request.extensions_mut().insert(caller);
    let response = next.run(request).await;
    audit_refusal(&audit, &method, &response);
    response
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
}

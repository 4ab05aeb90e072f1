//! Identity: who is calling, for which team, in which role.
//!
//! Every call to a Strata service carries `authorization: Bearer <token>`, a
//! short-lived JWT signed with Ed25519 (EdDSA) by whoever issues identities
//! (the gateway, or `strata` for a local platform). Services hold only the
//! public key: they verify the token themselves, so a service reached directly
//! still refuses anonymous, forged or expired calls.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, service::Interceptor};

/// Issuer written into and required from every identity token.
pub const ISSUER: &str = "strata";
/// Audience of identity tokens: the platform's services.
pub const AUDIENCE: &str = "strata-services";

/// What a caller may do within its team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Platform administrator.
    Admin,
    /// Owns the team: everything, including members and tokens.
    Owner,
    /// Reads and changes the team's resources.
    Member,
    /// Reads only.
    Viewer,
    /// Another Strata service calling on a team's behalf.
    Service,
}

impl Role {
    /// Whether this role may change resources.
    pub fn can_write(self) -> bool {
        !matches!(self, Role::Viewer)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            "service" => Ok(Role::Service),
            other => Err(format!("unknown role {other:?}: use admin, owner, member, viewer or service")),
        }
    }
}

/// The claims of an identity token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who: a user, token or service name.
    pub sub: String,
    /// The team every read and write is scoped to.
    pub team: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// The verified caller, handed to every handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub team: String,
    pub role: Role,
}

impl Identity {
    /// The identity the [`Authenticator`] attached to `request`.
    pub fn of<T>(request: &Request<T>) -> Result<Identity, Status> {
        request
            .extensions()
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no identity on this call"))
    }

    /// Fails with PERMISSION_DENIED unless the role may change resources.
    pub fn require_write(&self) -> Result<(), Status> {
        if self.role.can_write() {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{} is a viewer of team {}: viewers can read but not change; ask a team owner for the member role",
                self.subject, self.team
            )))
        }
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid key: {0}")]
    Key(String),
    #[error("invalid identity token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
}

/// How many verified tokens a [`Verifier`] remembers.
const VERIFIED_CAPACITY: usize = 4096;
/// Seconds of clock skew allowed on `exp`.
const LEEWAY_SECS: u64 = 5;

/// Checks identity tokens with the platform's public key.
///
/// A caller sends the same token on every call until it nears expiry (the
/// gateway mints one per grant and reuses it), and an Ed25519 check costs
/// tens of microseconds, more than the rest of a cheap call. So a token
/// whose signature and claims were checked once is remembered, byte for
/// byte, with the identity it carries and its expiry: the same bytes carry
/// the same valid signature, and expiry is still checked on every call.
#[derive(Clone)]
pub struct Verifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    verified: Arc<Mutex<Verified>>,
}

/// Verified tokens, with the identity each carries and its expiry.
type Verified = HashMap<Box<str>, (Identity, u64)>;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens signed by the key whose public half is `pem`.
    pub fn from_public_pem(pem: &str) -> Result<Self, IdentityError> {
        let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| IdentityError::Key(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self { key: Arc::new(key), validation: Arc::new(validation), verified: Arc::default() })
    }

    /// Verifies `token` and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        self.verify_at(token, SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
    }

    /// [`Verifier::verify`] with the clock at `now` (seconds since the epoch)
    /// for remembered tokens.
    fn verify_at(&self, token: &str, now: u64) -> Result<Identity, IdentityError> {
        let live = |exp: u64| now <= exp.saturating_add(LEEWAY_SECS);
        if let Ok(verified) = self.verified.lock()
            && let Some((identity, exp)) = verified.get(token)
            && live(*exp)
        {
            return Ok(identity.clone());
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?;
        let claims = data.claims;
        if claims.team.is_empty() {
            return Err(IdentityError::Key("token names no team".to_owned()));
        }
        if !live(claims.exp) {
            return Err(jsonwebtoken::errors::Error::from(jsonwebtoken::errors::ErrorKind::ExpiredSignature).into());
        }
        let identity = Identity { subject: claims.sub, team: claims.team, role: claims.role };
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CAPACITY {
                verified.retain(|_, (_, exp)| live(*exp));
                if verified.len() >= VERIFIED_CAPACITY {
                    verified.clear();
                }
            }
            verified.insert(token.into(), (identity.clone(), claims.exp));
        }
        Ok(identity)
    }
}

/// Signs identity tokens; only issuers (the gateway, `strata`) hold one.
#[derive(Clone)]
pub struct Signer {
    key: Arc<EncodingKey>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a PKCS#8 PEM Ed25519 private key.
    pub fn from_private_pem(pem: &str) -> Result<Self, IdentityError> {
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| IdentityError::Key(e.to_string()))?;
        Ok(Self { key: Arc::new(key) })
    }

    /// Mints a token for `subject` in `team` with `role`, valid for `ttl`.
    pub fn mint(&self, subject: &str, team: &str, role: Role, ttl: Duration) -> Result<String, IdentityError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            team: team.to_owned(),
            role,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key)?)
    }
}

/// A new Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate_keypair() -> Result<(String, String), IdentityError> {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let private = signing.to_pkcs8_pem(LineEnding::LF).map_err(|e| IdentityError::Key(e.to_string()))?;
    let public =
        signing.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| IdentityError::Key(e.to_string()))?;
    Ok((private.to_string(), public))
}

/// A tonic interceptor that verifies the bearer token of every call and puts
/// the [`Identity`] in the request's extensions. Refusals are UNAUTHENTICATED
/// and logged without the token.
#[derive(Clone, Debug)]
pub struct Authenticator {
    verifier: Verifier,
}

impl Authenticator {
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <token>`: log in with `strata login`")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <token>`"))?;
        match self.verifier.verify(token.trim()) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
                Ok(request)
            }
            Err(error) => {
                tracing::info!(%error, "call refused: identity token not accepted");
                Err(Status::unauthenticated(format!("{error}: get a fresh token with `strata login`")))
            }
        }
    }
}

/// A client-side interceptor that sends `authorization: Bearer <token>` on
/// every call.
#[derive(Clone, Debug)]
pub struct BearerToken {
    value: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl BearerToken {
    /// Fails when `token` holds characters a header cannot carry.
    pub fn new(token: &str) -> Result<Self, IdentityError> {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| IdentityError::Key("the token holds characters a header cannot carry".to_owned()))?;
        Ok(Self { value })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.value.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_foreign_keys_do_not() -> Result<(), IdentityError> {
        let (private, public) = generate_keypair()?;
        let (other_private, _) = generate_keypair()?;
        let verifier = Verifier::from_public_pem(&public)?;
        let token = Signer::from_private_pem(&private)?.mint("ann", "blue", Role::Member, Duration::from_secs(60))?;
        let identity = verifier.verify(&token)?;
        assert_eq!(identity, Identity { subject: "ann".into(), team: "blue".into(), role: Role::Member });

        let forged =
            Signer::from_private_pem(&other_private)?.mint("ann", "blue", Role::Admin, Duration::from_secs(60))?;
        assert!(verifier.verify(&forged).is_err());
        Ok(())
    }

    #[test]
    fn remembered_tokens_still_expire_and_altered_ones_are_checked_again() -> Result<(), IdentityError> {
        let (private, public) = generate_keypair()?;
        let signer = Signer::from_private_pem(&private)?;
        let verifier = Verifier::from_public_pem(&public)?;
        let token = signer.mint("ann", "blue", Role::Viewer, Duration::from_secs(60))?;
        assert_eq!(verifier.verify(&token)?.role, Role::Viewer);
        assert_eq!(verifier.verify(&token)?.role, Role::Viewer, "remembered");

        // Claims that say admin, under the viewer token's signature.
        let admin = signer.mint("ann", "blue", Role::Admin, Duration::from_secs(60))?;
        let signed_part =
            |t: &str| t.rsplit_once('.').map(|(content, signature)| (content.to_owned(), signature.to_owned()));
        let (Some((admin_content, _)), Some((_, signature))) = (signed_part(&admin), signed_part(&token)) else {
            return Err(IdentityError::Key("tokens have three parts".into()));
        };
        assert!(verifier.verify(&format!("{admin_content}.{signature}")).is_err());

        // A remembered token past its expiry (and the leeway) is refused.
        let later = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() + 60 + LEEWAY_SECS + 2;
        assert!(verifier.verify_at(&token, later).is_err());
        Ok(())
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() -> Result<(), IdentityError> {
        let (private, public) = generate_keypair()?;
        let signer = Signer::from_private_pem(&private)?;
        let verifier = Verifier::from_public_pem(&public)?;
        for i in 0..VERIFIED_CAPACITY + 10 {
            verifier.verify(&signer.mint(&format!("u{i}"), "blue", Role::Member, Duration::from_secs(60))?)?;
        }
        let kept = verifier.verified.lock().map(|v| v.len()).unwrap_or(usize::MAX);
        assert!(kept <= VERIFIED_CAPACITY, "{kept} tokens remembered");
        Ok(())
    }

    #[test]
    fn expired_tokens_are_refused() -> Result<(), IdentityError> {
        let (private, public) = generate_keypair()?;
        let signer = Signer::from_private_pem(&private)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: "ann".into(),
            team: "blue".into(),
            role: Role::Owner,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now - 600,
            exp: now - 300,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &signer.key)?;
        assert!(Verifier::from_public_pem(&public)?.verify(&token).is_err());
        Ok(())
    }
}

//! API tokens: how their secrets are made, recognised and stored, and the
//! scopes that bound what a token may do.
//!
//! A secret is `strata_` followed by 40 random bytes from the OS (320 bits) in
//! unpadded URL-safe base64. Only its SHA-256 is stored. A slow password hash
//! (argon2, bcrypt) exists to make guessing *low-entropy* human passwords
//! expensive; a 320-bit random secret cannot be guessed, so one fast hash is
//! enough, and it lets every call be checked with one indexed lookup. Looking
//! up by hash also means no secret-dependent comparison runs in the gateway.

use std::fmt;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The first characters of every API token.
pub const PREFIX: &str = "strata_";
/// Random bytes in a secret (320 bits; the hint shows 24 of them).
const SECRET_BYTES: usize = 40;
/// Characters of the random part shown as the token's hint.
const HINT_CHARS: usize = 4;

/// A freshly made secret: what the caller sees once, and what is stored.
#[derive(Clone)]
pub struct NewSecret {
    /// `strata_...`, shown once.
    pub secret: String,
    /// Hex SHA-256 of `secret`.
    pub hash: String,
    /// `strata_` and the first characters, to recognise it in a list.
    pub hint: String,
}

impl fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSecret").field("hint", &self.hint).finish_non_exhaustive()
    }
}

/// Makes a new random secret.
pub fn generate() -> NewSecret {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let random = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let secret = format!("{PREFIX}{random}");
    let hint = format!("{PREFIX}{}…", &random[..HINT_CHARS]);
    NewSecret { hash: hash(&secret), secret, hint }
}

/// Whether `value` looks like an API token (rather than, say, a JWT).
pub fn is_api_token(value: &str) -> bool {
    value.strip_prefix(PREFIX).is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The stored form of a secret: hex SHA-256.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}

/// What a token may do, within its holder's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Read the team's resources.
    Read,
    /// Change them.
    Write,
    /// Act as a platform admin for any team.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}: use read, write or admin")),
        }
    }
}

/// A token's scopes. Write and admin imply read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// The set of `scopes`, sorted, without repeats, with read added when
    /// write or admin is there.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut scopes: Vec<Scope> = scopes.into_iter().collect();
        if !scopes.is_empty() {
            scopes.push(Scope::Read);
        }
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    /// Parses the stored form (space-separated names).
    pub fn parse(stored: &str) -> Result<Self, String> {
        stored.split_whitespace().map(str::parse).collect::<Result<Vec<_>, _>>().map(Self::new)
    }

    /// The stored form.
    pub fn to_stored(&self) -> String {
        self.0.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
    }

    /// Whether `scope` is among them.
    pub fn contains(&self, scope: Scope) -> bool {
        self.0.contains(&scope)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_recognisable_and_stored_only_as_a_hash() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert!(is_api_token(&a.secret), "{}", a.hint);
        // 40 bytes in unpadded base64: 54 characters after the prefix.
        assert_eq!(a.secret.len(), PREFIX.len() + 54);
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret[PREFIX.len()..]));
        assert!(a.secret.starts_with(a.hint.trim_end_matches('…')));
        // Known answer, so the stored form never changes by accident.
        assert_eq!(hash("strata_x"), "c80b781f0a6f515e0709e18306406bc3058e659885e6b274d8e55cd2b06ad2e4");
        assert!(!format!("{a:?}").contains(&a.secret));
    }

    #[test]
    fn only_strata_tokens_are_api_tokens() {
        assert!(!is_api_token("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.sig"));
        assert!(!is_api_token("strata_"));
        assert!(!is_api_token("strata_abc def"));
        assert!(is_api_token("strata_abc-DEF_123"));
    }

    #[test]
    fn write_and_admin_imply_read() -> Result<(), String> {
        assert_eq!(Scopes::new([Scope::Write]).to_stored(), "read write");
        assert_eq!(Scopes::parse("admin write admin")?.to_stored(), "read write admin");
        assert!(Scopes::new([]).is_empty());
        assert!(Scopes::parse("read delete").is_err());
        Ok(())
    }
}

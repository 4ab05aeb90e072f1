//! Routes as traffic stores them, and the rules a route must follow: what a
//! host pattern and a path prefix may look like, when two routes overlap,
//! and what makes a set of weighted backends sane.

use serde::{Deserialize, Serialize};
use strata_kit::{ApiError, error::validate_name};

/// Largest request body a route may allow (1 GiB).
pub const MAX_BODY_LIMIT: u64 = 1 << 30;
/// The body limit when a route sets none (10 MiB).
pub const DEFAULT_BODY_LIMIT: u64 = 10 << 20;
/// Longest timeout a route may set (10 minutes).
pub const MAX_TIMEOUT_MS: u32 = 600_000;
/// The timeout when a route sets none (30 s).
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
/// Largest weight of one backend.
pub const MAX_WEIGHT: u32 = 1000;
/// Most backends one route may split between.
pub const MAX_BACKENDS: usize = 16;

/// Where a share of a route's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub app: String,
    /// A release version; 0 means whichever releases of the app run.
    pub release: u32,
    pub weight: u32,
}

/// A route's match and destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Lower-case; `*.` in front for a wildcard.
    pub host: String,
    pub path_prefix: String,
    pub backends: Vec<Backend>,
    pub max_body_bytes: u64,
    pub timeout_ms: u32,
}

/// A stored route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    pub id: String,
    pub team: String,
    pub name: String,
    pub spec: RouteSpec,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An app instance the ingress may send requests to, as compute announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub instance_id: String,
    pub team: String,
    pub app: String,
    pub release: u32,
    pub host: String,
    pub port: u16,
    /// A check of observe's reported it failing.
    pub check_failed: bool,
}

/// An app traffic has heard of, with when it first did (which decides who
/// gets a contested default host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub team: String,
    pub app: String,
    pub first_seen: i64,
}

impl RouteSpec {
    /// Checks and normalises a spec from a caller: lower-cases the host,
    /// fills the defaults.
    pub fn validated(mut self) -> Result<Self, ApiError> {
        self.host = self.host.trim().to_ascii_lowercase();
        validate_host(&self.host)?;
        if self.path_prefix.is_empty() {
            self.path_prefix = "/".to_owned();
        }
        validate_path_prefix(&self.path_prefix)?;
        validate_backends(&self.backends)?;
        if self.max_body_bytes == 0 {
            self.max_body_bytes = DEFAULT_BODY_LIMIT;
        }
        if self.max_body_bytes > MAX_BODY_LIMIT {
            return Err(ApiError::InvalidArgument(format!(
                "max_body_bytes {} is above the limit of {MAX_BODY_LIMIT} (1 GiB)",
                self.max_body_bytes
            )));
        }
        if self.timeout_ms == 0 {
            self.timeout_ms = DEFAULT_TIMEOUT_MS;
        }
        if self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(ApiError::InvalidArgument(format!(
                "timeout_ms {} is above the limit of {MAX_TIMEOUT_MS} (10 minutes)",
                self.timeout_ms
            )));
        }
        Ok(self)
    }

    /// Whether this route and `other` could both match one request.
    pub fn overlaps(&self, other: &RouteSpec) -> bool {
        hosts_overlap(&self.host, &other.host) && paths_overlap(&self.path_prefix, &other.path_prefix)
    }

    /// Whether any backend sends traffic to `app`.
    pub fn targets(&self, app: &str) -> bool {
        self.backends.iter().any(|b| b.app == app)
    }
}

/// A DNS name of letters, digits and hyphens, optionally `*.` in front.
pub fn validate_host(host: &str) -> Result<(), ApiError> {
    let invalid = |why: &str| {
        Err(ApiError::InvalidArgument(format!(
            "host {host:?} {why}; use a name like `api.example.test` or a wildcard like `*.example.test`, without a port"
        )))
    };
    if host.is_empty() {
        return invalid("is empty");
    }
    if host.len() > 253 {
        return invalid("is longer than 253 characters");
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return invalid("may hold `*` only as its whole first label");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return invalid("has an empty label or one longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return invalid("may hold only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("has a label that starts or ends with a hyphen");
        }
    }
    if host.starts_with("*.") && !name.contains('.') {
        return invalid("is a wildcard over a top-level domain");
    }
    Ok(())
}

/// An absolute path without query or fragment.
pub fn validate_path_prefix(prefix: &str) -> Result<(), ApiError> {
    let problem = if !prefix.starts_with('/') {
        Some("must start with `/`")
    } else if prefix.len() > 1024 {
        Some("is longer than 1024 characters")
    } else if prefix.contains(['?', '#']) {
        Some("may not hold a query or fragment")
    } else if prefix.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        Some("may not hold spaces or control characters")
    } else {
        None
    };
    match problem {
        Some(why) => Err(ApiError::InvalidArgument(format!("path prefix {prefix:?} {why}"))),
        None => Ok(()),
    }
}

fn validate_backends(backends: &[Backend]) -> Result<(), ApiError> {
    if backends.is_empty() {
        return Err(ApiError::InvalidArgument("a route needs at least one backend (an app to send traffic to)".into()));
    }
    if backends.len() > MAX_BACKENDS {
        return Err(ApiError::InvalidArgument(format!("a route may split between at most {MAX_BACKENDS} backends")));
    }
    let mut total = 0;
    for (i, backend) in backends.iter().enumerate() {
        validate_name("app", &backend.app)?;
        if backend.weight > MAX_WEIGHT {
            return Err(ApiError::InvalidArgument(format!(
                "backend {} ({}) has weight {}; weights go from 0 to {MAX_WEIGHT}",
                i + 1,
                backend.app,
                backend.weight
            )));
        }
        if backends[..i].iter().any(|b| b.app == backend.app && b.release == backend.release) {
            return Err(ApiError::InvalidArgument(format!(
                "backend {} repeats app {} release {}; give each app and release once",
                i + 1,
                backend.app,
                backend.release
            )));
        }
        total += backend.weight;
    }
    if total == 0 {
        return Err(ApiError::InvalidArgument("the backends' weights are all 0: no request could be routed".into()));
    }
    // An unversioned backend and a versioned one of the same app would send
    // the pinned release's traffic through both shares.
    for backend in backends.iter().filter(|b| b.release == 0) {
        if backends.iter().any(|b| b.app == backend.app && b.release != 0) {
            return Err(ApiError::InvalidArgument(format!(
                "app {} is given both with and without a release; a split between releases names every release",
                backend.app
            )));
        }
    }
    Ok(())
}

/// Whether a request host (lower-case, without port) matches a host pattern.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        // `*.example.test` matches any name below example.test, not itself.
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => pattern == host,
    }
}

fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(_), None) => host_matches(a, b),
        (None, Some(_)) => host_matches(b, a),
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
    }
}

/// Whether `path` falls under `prefix`, on a segment boundary: `/api`
/// matches `/api` and `/api/x`, not `/apix`.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

fn paths_overlap(a: &str, b: &str) -> bool {
    path_matches(a, b) || path_matches(b, a)
}

/// The default hosts of an app: `<app>.localhost` for whoever first had an
/// app of that name, and `<app>.<team>.localhost` always.
pub fn default_hosts(team: &str, app: &str) -> (String, String) {
    (format!("{app}.localhost"), format!("{app}.{team}.localhost"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(host: &str, path: &str) -> RouteSpec {
        RouteSpec {
            host: host.into(),
            path_prefix: path.into(),
            backends: vec![Backend { app: "web".into(), release: 0, weight: 1 }],
            max_body_bytes: 0,
            timeout_ms: 0,
        }
    }

    #[test]
    fn hosts_are_checked() {
        for good in ["api.example.test", "*.example.test", "a-b.c1.test", "localhost"] {
            assert!(validate_host(good).is_ok(), "{good}");
        }
        for bad in ["", "api.example.test:80", "*", "*.test", "a.*.test", "-a.test", "a..test", "A.test", "a b.test"] {
            assert!(validate_host(bad).is_err(), "{bad}");
        }
        assert_eq!(spec("API.Example.TEST", "/").validated().map(|s| s.host).ok(), Some("api.example.test".into()));
    }

    #[test]
    fn paths_match_on_segment_boundaries() {
        assert!(path_matches("/", "/anything"));
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/v1"));
        assert!(!path_matches("/api", "/apix"));
        assert!(path_matches("/api/", "/api/x"));
        assert!(!path_matches("/api/", "/api"));
        assert!(validate_path_prefix("api").is_err());
        assert!(validate_path_prefix("/a?b").is_err());
    }

    #[test]
    fn wildcards_match_below_their_domain() {
        assert!(host_matches("*.example.test", "a.example.test"));
        assert!(host_matches("*.example.test", "a.b.example.test"));
        assert!(!host_matches("*.example.test", "example.test"));
        assert!(!host_matches("*.example.test", "aexample.test"));
    }

    #[test]
    fn overlap_needs_both_host_and_path() {
        assert!(spec("a.test", "/").overlaps(&spec("a.test", "/api")));
        assert!(!spec("a.test", "/web").overlaps(&spec("a.test", "/api")));
        assert!(spec("*.a.test", "/").overlaps(&spec("x.a.test", "/")));
        assert!(spec("*.a.test", "/").overlaps(&spec("*.x.a.test", "/")));
        assert!(!spec("*.a.test", "/").overlaps(&spec("a.test", "/")));
        assert!(!spec("b.test", "/").overlaps(&spec("a.test", "/")));
    }

    #[test]
    fn weights_must_be_sane() {
        let with = |backends: Vec<(&str, u32, u32)>| RouteSpec {
            backends: backends
                .into_iter()
                .map(|(app, release, weight)| Backend { app: app.into(), release, weight })
                .collect(),
            ..spec("a.test", "/")
        };
        assert!(with(vec![("web", 7, 90), ("web", 8, 10)]).validated().is_ok());
        assert!(with(vec![]).validated().is_err());
        assert!(with(vec![("web", 7, 0), ("web", 8, 0)]).validated().is_err());
        assert!(with(vec![("web", 7, 1001)]).validated().is_err());
        assert!(with(vec![("web", 7, 1), ("web", 7, 2)]).validated().is_err());
        assert!(with(vec![("web", 0, 1), ("web", 7, 2)]).validated().is_err());
        assert!(with(vec![("Bad Name", 0, 1)]).validated().is_err());
    }
}

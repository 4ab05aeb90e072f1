//! The events the gateway publishes. Payloads are in
//! `proto/strata/gateway/v1/events.proto`; none carries a secret or its hash.

use strata_events::EventType;

/// A team was created, with its first owner.
pub const TEAM_CREATED: EventType = EventType::new("gateway", "team", "created");
/// A token was revoked (by a caller, or with its holder's membership).
pub const TOKEN_REVOKED: EventType = EventType::new("gateway", "token", "revoked");
/// A subject was made a platform admin (`team` is empty: admins belong to
/// no team).
pub const ADMIN_ADDED: EventType = EventType::new("gateway", "admin", "added");
/// A subject's platform admin rights were taken away.
pub const ADMIN_REMOVED: EventType = EventType::new("gateway", "admin", "removed");

//! The data service's records.

/// A PostgreSQL server databases are placed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRecord {
    pub id: String,
    pub name: String,
    /// Sealed: it holds the admin password.
    pub admin_url_enc: String,
    pub address: String,
    pub capacity: u32,
    pub created_at: i64,
}

/// Where a database is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbState {
    /// Recorded; the role and database may not exist on the server yet.
    Provisioning,
    Ready,
    /// Being dropped from the server.
    Deleting,
}

impl DbState {
    pub fn as_str(self) -> &'static str {
        match self {
            DbState::Provisioning => "provisioning",
            DbState::Ready => "ready",
            DbState::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "ready" => DbState::Ready,
            "deleting" => DbState::Deleting,
            _ => DbState::Provisioning,
        }
    }
}

/// A team's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseRecord {
    pub id: String,
    pub team: String,
    pub name: String,
    pub server_id: String,
    pub db_ident: String,
    pub role_ident: String,
    pub password_enc: String,
    pub pending_password_enc: Option<String>,
    pub plan: String,
    pub state: DbState,
    pub request_id: String,
    pub created_at: i64,
}

/// A database bound to an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRecord {
    pub id: String,
    pub database_id: String,
    pub team: String,
    pub app: String,
    pub created_at: i64,
}

/// A pg_dump of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: String,
    pub database_id: String,
    pub team: String,
    pub database: String,
    pub path: String,
    pub size_bytes: u64,
    pub created_at: i64,
}

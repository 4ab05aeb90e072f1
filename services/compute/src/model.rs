//! Compute's domain records, as the store reads and writes them.

use std::collections::BTreeMap;

/// An app and its desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: String,
    pub team: String,
    pub name: String,
    /// The release that should run; `None` before the first deploy.
    pub release_id: Option<String>,
    /// How many instances of it should run.
    pub instances: u32,
    /// A second release that runs beside the current one (a canary); routes
    /// decide the share of requests each gets.
    pub canary_release_id: Option<String>,
    /// How many instances of the canary should run (0 without a canary).
    pub canary_instances: u32,
    pub created_at: i64,
}

/// A config var; secret values are never shown, logged or put in events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigVar {
    pub key: String,
    pub value: String,
    pub secret: bool,
}

/// Where a release came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Archive,
    Command,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Archive => "archive",
            SourceKind::Command => "command",
        }
    }

    pub fn parse(s: &str) -> Self {
        if s == "archive" { SourceKind::Archive } else { SourceKind::Command }
    }
}

/// An immutable release: artifact + config snapshot + how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: String,
    pub app_id: String,
    pub version: u32,
    pub source: SourceKind,
    pub buildpack: String,
    /// Program and arguments (`$PORT` is replaced per instance).
    pub argv: Vec<String>,
    pub workdir: String,
    /// The app's config when the release was made.
    pub env: BTreeMap<String, String>,
    pub created_at: i64,
}

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus {
    Building,
    RollingOut,
    Succeeded,
    Failed,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Building => "building",
            DeploymentStatus::RollingOut => "rolling_out",
            DeploymentStatus::Succeeded => "succeeded",
            DeploymentStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "building" => DeploymentStatus::Building,
            "rolling_out" => DeploymentStatus::RollingOut,
            "succeeded" => DeploymentStatus::Succeeded,
            _ => DeploymentStatus::Failed,
        }
    }
}

/// One attempt to roll out a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub app_id: String,
    pub release_id: Option<String>,
    pub version: u32,
    pub status: DeploymentStatus,
    pub reason: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// The release starts beside the current one as its canary.
    pub canary: bool,
}

/// An uploaded, checked source archive waiting to be deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub app_id: String,
    pub path: String,
    pub size_bytes: u64,
    pub files: u32,
    pub created_at: i64,
}

/// The persisted record of an instance this node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub app_id: String,
    pub release_id: String,
    pub version: u32,
    pub state: String,
    pub host: String,
    pub port: u16,
    pub pid: u32,
    pub pid_start: u64,
    pub restarts: u32,
    pub started_at: i64,
}

//! How the CLI talks back: tables for people, JSON for scripts, errors that
//! say what to do, and exit codes scripts can trust.

use comfy_table::{Table, presets::NOTHING};
use tonic::Code;

/// A deployment that ran to its end but failed.
#[derive(Debug)]
pub struct DeploymentFailed(pub String);

impl std::fmt::Display for DeploymentFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "deployment failed: {}", self.0)
    }
}

impl std::error::Error for DeploymentFailed {}

/// No credential anywhere.
#[derive(Debug)]
pub struct NotSignedIn;

impl std::fmt::Display for NotSignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not signed in: run `strata login --token <credential>` (the credential is printed by `strata up`) or set STRATA_TOKEN")
    }
}

impl std::error::Error for NotSignedIn {}

/// The exit code for an error.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<DeploymentFailed>().is_some() {
        return 5;
    }
    if error.downcast_ref::<NotSignedIn>().is_some() {
        return 3;
    }
    if error.downcast_ref::<tonic::transport::Error>().is_some() {
        return 6;
    }
    match error.downcast_ref::<tonic::Status>().map(tonic::Status::code) {
        Some(Code::Unauthenticated | Code::PermissionDenied) => 3,
        Some(Code::NotFound) => 4,
        Some(Code::Unavailable | Code::DeadlineExceeded) => 6,
        _ => 1,
    }
}

/// The message for an error: a gRPC status shows its own message.
pub fn describe(error: &anyhow::Error) -> String {
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        return match status.code() {
            Code::Unavailable => format!(
                "the platform is unavailable ({}): is `strata up` running, and is --endpoint right?",
                status.message()
            ),
            _ => status.message().to_owned(),
        };
    }
    if error.downcast_ref::<tonic::transport::Error>().is_some() {
        return format!("cannot reach the platform ({error:#}): is `strata up` running, and is --endpoint right?");
    }
    format!("{error:#}")
}

/// A borderless table with a header row.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_header(header.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    table.to_string()
}

/// Prints `value` as pretty JSON.
pub fn json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "3 minutes ago" for a protobuf timestamp.
pub fn ago(ts: Option<&strata_proto::pbjson_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".to_owned() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let secs = (now - ts.seconds).max(0) as u64;
    let rounded = std::time::Duration::from_secs(if secs > 3600 { secs / 60 * 60 } else { secs });
    format!("{} ago", humantime::format_duration(rounded))
}

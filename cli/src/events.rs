//! `strata events`: the platform's event log (the audit trail), filtered
//! and optionally followed live.

use clap::Args;
use futures::StreamExt;
use strata_proto::observe::v1 as pb;

use crate::{Global, session};

#[derive(Args)]
pub struct EventsArgs {
    /// Only events about this app.
    #[arg(short, long)]
    pub app: Option<String>,
    /// Only events whose type contains this, e.g. `deployment` or `observe.check`.
    #[arg(long = "type")]
    pub ty: Option<String>,
    /// Only events of the last ..., e.g. `1h`, `2days`.
    #[arg(long)]
    pub since: Option<humantime::Duration>,
    /// How many of the latest events to show.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub limit: u32,
    /// Keep printing events as they happen.
    #[arg(short, long)]
    pub follow: bool,
}

fn print(global: &Global, event: &pb::Event) -> anyhow::Result<()> {
    if global.json {
        let data: serde_json::Value = serde_json::from_str(&event.data_json).unwrap_or(serde_json::Value::Null);
        let value = serde_json::json!({
            "seq": event.seq, "id": event.id, "type": event.r#type, "subject": event.subject,
            "team": event.team, "app": event.app, "time": event.time.as_ref().map(|t| t.seconds), "data": data,
        });
        println!("{}", serde_json::to_string(&value)?);
        return Ok(());
    }
    let ty = event.r#type.trim_start_matches("dev.strata.").trim_end_matches(".v1");
    let when = event
        .time
        .as_ref()
        .and_then(|t| u64::try_from(t.seconds).ok())
        .map(|s| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s)).to_string()
        })
        .unwrap_or_default();
    println!("{when}  {ty:<30} {:<16} {}", if event.app.is_empty() { "-" } else { &event.app }, event.data_json);
    Ok(())
}

pub async fn run(global: &Global, args: EventsArgs) -> anyhow::Result<()> {
    let mut observe = session::observe(global).await?;
    let app = args.app.unwrap_or_default();
    let ty = args.ty.unwrap_or_default();
    if args.follow {
        let mut stream =
            observe.follow_events(pb::FollowEventsRequest { app, r#type: ty, tail: args.limit }).await?.into_inner();
        while let Some(event) = stream.next().await {
            print(global, &event?)?;
        }
        return Ok(());
    }
    let since = args.since.map(|d| {
        let at = std::time::SystemTime::now() - std::time::Duration::from(d);
        let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        strata_proto::pbjson_types::Timestamp { seconds: i64::try_from(secs).unwrap_or(0), nanos: 0 }
    });
    let events = observe
        .list_events(pb::ListEventsRequest { app, r#type: ty, since, until: None, limit: args.limit, after_seq: 0 })
        .await?
        .into_inner()
        .events;
    if events.is_empty() && !global.json {
        println!("No events.");
    }
    for event in &events {
        print(global, event)?;
    }
    Ok(())
}

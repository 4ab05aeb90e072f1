//! `strata checks` and `strata alerts`: health checks on apps, and where
//! their failures (and compute's) are announced, through observe.

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use strata_proto::observe::v1 as pb;

use crate::{
    Global,
    output::{self, ago, table},
    session,
};

/// How a check probes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    Http,
    Tcp,
    Grpc,
}

#[derive(Subcommand)]
pub enum ChecksCommand {
    /// Add a check on an app's instances (-a) or on a URL (--url). An app's
    /// own check replaces its default one.
    Add {
        name: String,
        /// Check every instance of this app.
        #[arg(short, long, env = "STRATA_APP", conflicts_with = "url")]
        app: Option<String>,
        /// Check this URL instead (http://host:port/path; tcp://host:port).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_enum, default_value = "http")]
        kind: Kind,
        /// HTTP path on each instance.
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// Accepted HTTP statuses, e.g. `200-299` or `204`.
        #[arg(long, default_value = "200-399")]
        status: String,
        /// The HTTP body must contain this.
        #[arg(long)]
        body_contains: Option<String>,
        /// The service asked of grpc.health.v1 (default: the whole server).
        #[arg(long)]
        grpc_service: Option<String>,
        /// Seconds between runs.
        #[arg(long, default_value_t = 10)]
        interval: u32,
        /// Milliseconds a run may take (default: 2000, or the interval when shorter).
        #[arg(long)]
        timeout_ms: Option<u32>,
        /// Failures in a row before a target counts as down.
        #[arg(long, default_value_t = 3)]
        fail_after: u32,
        /// Passes in a row before a down target counts as up again.
        #[arg(long, default_value_t = 2)]
        recover_after: u32,
    },
    /// List your team's checks with their state, uptime and latency.
    List {
        /// Only this app's checks.
        #[arg(short, long, env = "STRATA_APP")]
        app: Option<String>,
    },
    /// A check's latest results, newest first.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Delete a check (its open alerts resolve).
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Alerts, open ones first.
    List,
    /// Add a channel: a webhook (signed POSTs) or a NATS subject.
    ChannelAdd {
        name: String,
        /// http:// URL receiving a JSON POST per alert.
        #[arg(long, requires = "secret", conflicts_with = "nats")]
        webhook: Option<String>,
        /// Signs each POST: `X-Strata-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
        #[arg(long, env = "STRATA_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// A NATS subject receiving the alert's JSON.
        #[arg(long)]
        nats: Option<String>,
    },
    /// List channels.
    Channels,
    /// Delete a channel.
    ChannelDelete { name: String },
    /// Add a rule: when to alert, and which channels hear of it.
    RuleAdd {
        name: String,
        /// check-failed, crash-loop or deployment-failed.
        #[arg(long, value_enum)]
        on: Condition,
        /// Only this app.
        #[arg(short, long)]
        app: Option<String>,
        /// Only this check (check-failed).
        #[arg(long)]
        check: Option<String>,
        /// A channel to notify (repeat for more).
        #[arg(long = "channel", required = true)]
        channels: Vec<String>,
        /// Crashes that make a crash loop.
        #[arg(long, default_value_t = 3)]
        crash_restarts: u32,
    },
    /// List rules.
    Rules,
    /// Delete a rule.
    RuleDelete { name: String },
}

/// What a rule watches.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Condition {
    CheckFailed,
    CrashLoop,
    DeploymentFailed,
}

fn status_range(text: &str) -> anyhow::Result<(u32, u32)> {
    let parse = |s: &str| s.trim().parse::<u32>().with_context(|| format!("invalid status {s:?} in {text:?}"));
    match text.split_once('-') {
        Some((low, high)) => Ok((parse(low)?, parse(high)?)),
        None => {
            let status = parse(text)?;
            Ok((status, status))
        }
    }
}

fn state_name(state: i32) -> String {
    pb::TargetState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("TARGET_STATE_").to_lowercase())
        .unwrap_or_default()
}

fn kind_name(kind: i32) -> String {
    pb::CheckKind::try_from(kind)
        .map(|s| s.as_str_name().trim_start_matches("CHECK_KIND_").to_lowercase())
        .unwrap_or_default()
}

fn condition_name(condition: i32) -> String {
    pb::AlertCondition::try_from(condition)
        .map(|s| s.as_str_name().trim_start_matches("ALERT_CONDITION_").to_lowercase())
        .unwrap_or_default()
}

fn percent(stats: Option<&pb::Stats>) -> String {
    match stats {
        Some(s) if s.runs > 0 => format!("{:.2}%", s.uptime * 100.0),
        _ => "-".to_owned(),
    }
}

fn check_json(c: &pb::Check) -> serde_json::Value {
    json!({
        "name": c.name, "id": c.id, "app": c.app, "url": c.url, "kind": kind_name(c.kind),
        "state": state_name(c.state), "default": c.default_check, "interval_secs": c.interval_secs,
        "targets": c.targets.iter().map(|t| json!({
            "instance": t.instance_id, "host": t.host, "port": t.port, "state": state_name(t.state),
            "last_latency_ms": t.last_latency_ms, "last_error": t.last_error,
        })).collect::<Vec<_>>(),
        "uptime_1h": c.last_hour.as_ref().map(|s| s.uptime), "uptime_24h": c.last_day.as_ref().map(|s| s.uptime),
        "p95_ms_1h": c.last_hour.as_ref().map(|s| s.latency_p95_ms),
    })
}

pub async fn checks(global: &Global, command: ChecksCommand) -> anyhow::Result<()> {
    let mut observe = session::observe(global).await?;
    match command {
        ChecksCommand::Add {
            name,
            app,
            url,
            kind,
            path,
            method,
            status,
            body_contains,
            grpc_service,
            interval,
            timeout_ms,
            fail_after,
            recover_after,
        } => {
            let (expect_status_min, expect_status_max) = status_range(&status)?;
            let kind = match kind {
                Kind::Http => pb::CheckKind::Http,
                Kind::Tcp => pb::CheckKind::Tcp,
                Kind::Grpc => pb::CheckKind::Grpc,
            };
            let check = observe
                .create_check(pb::CreateCheckRequest {
                    name,
                    app: app.unwrap_or_default(),
                    url: url.unwrap_or_default(),
                    kind: kind.into(),
                    http: Some(pb::HttpSpec {
                        method,
                        path,
                        expect_status_min,
                        expect_status_max,
                        body_contains: body_contains.unwrap_or_default(),
                    }),
                    grpc: Some(pb::GrpcSpec { service: grpc_service.unwrap_or_default() }),
                    interval_secs: interval,
                    timeout_ms: timeout_ms.unwrap_or(0),
                    fail_after,
                    recover_after,
                })
                .await?
                .into_inner();
            if global.json {
                return output::json(&check_json(&check));
            }
            let on = if check.app.is_empty() { check.url.clone() } else { format!("app {}", check.app) };
            println!("Added check {} on {on}, every {} s. See it: strata checks list", check.name, check.interval_secs);
        }
        ChecksCommand::List { app } => {
            let checks =
                observe.list_checks(pb::ListChecksRequest { app: app.unwrap_or_default() }).await?.into_inner().checks;
            if global.json {
                return output::json(&json!(checks.iter().map(check_json).collect::<Vec<_>>()));
            }
            let rows = checks
                .iter()
                .map(|c| {
                    let passing = c.targets.iter().filter(|t| t.state == pb::TargetState::Passing as i32).count();
                    vec![
                        if c.default_check { format!("{} (default)", c.name) } else { c.name.clone() },
                        if c.app.is_empty() { c.url.clone() } else { c.app.clone() },
                        kind_name(c.kind),
                        state_name(c.state),
                        format!("{passing}/{}", c.targets.len()),
                        percent(c.last_hour.as_ref()),
                        percent(c.last_day.as_ref()),
                        c.last_hour.as_ref().map(|s| format!("{:.0} ms", s.latency_p95_ms)).unwrap_or_default(),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["name", "target", "kind", "state", "passing", "uptime 1h", "uptime 24h", "p95 1h"], rows)
            );
        }
        ChecksCommand::History { name, limit } => {
            let results = observe.check_history(pb::CheckHistoryRequest { name, limit }).await?.into_inner().results;
            if global.json {
                let value: Vec<_> = results
                    .iter()
                    .map(|r| json!({"instance": r.instance_id, "ok": r.ok, "latency_ms": r.latency_ms, "error": r.error, "at": r.at.as_ref().map(|t| t.seconds)}))
                    .collect();
                return output::json(&json!(value));
            }
            let rows = results
                .iter()
                .map(|r| {
                    vec![
                        ago(r.at.as_ref()),
                        if r.instance_id.is_empty() { "url".to_owned() } else { r.instance_id.clone() },
                        if r.ok { "ok".to_owned() } else { "FAIL".to_owned() },
                        format!("{} ms", r.latency_ms),
                        r.error.clone(),
                    ]
                })
                .collect();
            println!("{}", table(&["when", "target", "result", "latency", "error"], rows));
        }
        ChecksCommand::Delete { name } => {
            observe.delete_check(pb::DeleteCheckRequest { name: name.clone() }).await?;
            println!("Deleted check {name}");
        }
    }
    Ok(())
}

pub async fn alerts(global: &Global, command: AlertsCommand) -> anyhow::Result<()> {
    let mut observe = session::observe(global).await?;
    match command {
        AlertsCommand::List => {
            let alerts = observe.list_alerts(pb::ListAlertsRequest {}).await?.into_inner().alerts;
            if global.json {
                let value: Vec<_> = alerts
                    .iter()
                    .map(|a| json!({"id": a.id, "rule": a.rule, "condition": condition_name(a.condition), "app": a.app, "check": a.check, "summary": a.summary, "open": a.open}))
                    .collect();
                return output::json(&json!(value));
            }
            let rows = alerts
                .iter()
                .map(|a| {
                    vec![
                        if a.open { "OPEN".to_owned() } else { "resolved".to_owned() },
                        a.rule.clone(),
                        a.app.clone(),
                        ago(a.fired_at.as_ref()),
                        a.summary.clone(),
                    ]
                })
                .collect();
            println!("{}", table(&["state", "rule", "app", "fired", "summary"], rows));
        }
        AlertsCommand::ChannelAdd { name, webhook, secret, nats } => {
            use pb::create_channel_request::Target;
            let target = match (webhook, nats) {
                (Some(url), None) => Target::Webhook(pb::WebhookChannel { url, secret: secret.unwrap_or_default() }),
                (None, Some(subject)) => Target::Nats(pb::NatsChannel { subject }),
                _ => anyhow::bail!("give the channel either --webhook URL --secret S or --nats SUBJECT"),
            };
            let channel =
                observe.create_channel(pb::CreateChannelRequest { name, target: Some(target) }).await?.into_inner();
            println!("Added {} channel {} ({})", channel.kind, channel.name, channel.target);
        }
        AlertsCommand::Channels => {
            let channels = observe.list_channels(pb::ListChannelsRequest {}).await?.into_inner().channels;
            if global.json {
                let value: Vec<_> =
                    channels.iter().map(|c| json!({"name": c.name, "kind": c.kind, "target": c.target})).collect();
                return output::json(&json!(value));
            }
            let rows = channels.iter().map(|c| vec![c.name.clone(), c.kind.clone(), c.target.clone()]).collect();
            println!("{}", table(&["name", "kind", "target"], rows));
        }
        AlertsCommand::ChannelDelete { name } => {
            observe.delete_channel(pb::DeleteChannelRequest { name: name.clone() }).await?;
            println!("Deleted channel {name}");
        }
        AlertsCommand::RuleAdd { name, on, app, check, channels, crash_restarts } => {
            let condition = match on {
                Condition::CheckFailed => pb::AlertCondition::CheckFailed,
                Condition::CrashLoop => pb::AlertCondition::CrashLoop,
                Condition::DeploymentFailed => pb::AlertCondition::DeploymentFailed,
            };
            let rule = observe
                .create_alert_rule(pb::CreateAlertRuleRequest {
                    name,
                    condition: condition.into(),
                    app: app.unwrap_or_default(),
                    check: check.unwrap_or_default(),
                    channels,
                    crash_restarts,
                })
                .await?
                .into_inner();
            println!("Added rule {} ({}) → {}", rule.name, condition_name(rule.condition), rule.channels.join(", "));
        }
        AlertsCommand::Rules => {
            let rules = observe.list_alert_rules(pb::ListAlertRulesRequest {}).await?.into_inner().rules;
            if global.json {
                let value: Vec<_> = rules
                    .iter()
                    .map(|r| json!({"name": r.name, "condition": condition_name(r.condition), "app": r.app, "check": r.check, "channels": r.channels}))
                    .collect();
                return output::json(&json!(value));
            }
            let rows = rules
                .iter()
                .map(|r| {
                    vec![
                        r.name.clone(),
                        condition_name(r.condition),
                        if r.app.is_empty() { "*".to_owned() } else { r.app.clone() },
                        if r.check.is_empty() { "*".to_owned() } else { r.check.clone() },
                        r.channels.join(","),
                    ]
                })
                .collect();
            println!("{}", table(&["name", "on", "app", "check", "channels"], rows));
        }
        AlertsCommand::RuleDelete { name } => {
            observe.delete_alert_rule(pb::DeleteAlertRuleRequest { name: name.clone() }).await?;
            println!("Deleted rule {name}");
        }
    }
    Ok(())
}

//! Alerts: rules fire and resolve alerts inside the transaction that
//! records what triggered them (with the `alert.fired` / `.resolved` event
//! and one delivery row per channel), and a deliverer sends the deliveries:
//! webhooks as a signed JSON POST with retries and backoff, NATS channels
//! as a message on the channel's subject.
//!
//! Webhook receivers verify `X-Strata-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the raw body under the channel's secret, and may drop
//! repeats by `X-Strata-Delivery` (the same on every retry).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::json;
use sha2::Sha256;
use strata_events::{Bus, EventTx, EventsError};
use strata_kit::store::now_ms;
use strata_proto::observe::v1 as pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    events,
    metrics::{DeliveryLabels, Metrics},
    model::{AlertRecord, Condition, RuleRecord},
    store::Store,
};

/// The signature header of webhook deliveries.
pub const SIGNATURE_HEADER: &str = "x-strata-signature";
/// The delivery id header: the same on every retry of one delivery.
pub const DELIVERY_HEADER: &str = "x-strata-delivery";

/// Why an alert could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Events(#[from] EventsError),
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// What fired or resolved, for the rules to match.
#[derive(Debug, Clone)]
pub struct Trigger<'a> {
    pub team: &'a str,
    pub condition: Condition,
    pub app: &'a str,
    /// The check's name (check alerts).
    pub check: &'a str,
    /// The alert key: the check id, or the app for compute alerts.
    pub key: &'a str,
    pub summary: &'a str,
    /// Crash count (crash-loop alerts).
    pub restarts: u32,
}

fn rule_matches(rule: &RuleRecord, trigger: &Trigger<'_>) -> bool {
    (rule.app.is_empty() || rule.app == trigger.app)
        && (rule.check.is_empty() || rule.check == trigger.check)
        && (trigger.condition != Condition::CrashLoop || trigger.restarts >= rule.crash_restarts.max(1))
}

/// Fires an alert for every matching rule that has none open about this
/// key; returns whether deliveries were queued.
pub async fn fire(tx: &mut EventTx, trigger: &Trigger<'_>) -> Result<bool, AlertError> {
    let now = now_ms();
    let mut queued = false;
    for rule in Store::rules_for(tx.conn(), trigger.team, trigger.condition).await? {
        if !rule_matches(&rule, trigger) || Store::alert_open(tx.conn(), &rule.id, trigger.key).await?.is_some() {
            continue;
        }
        let alert = AlertRecord {
            id: uuid::Uuid::now_v7().to_string(),
            team: trigger.team.to_owned(),
            rule_id: rule.id.clone(),
            rule: rule.name.clone(),
            condition: trigger.condition,
            app: trigger.app.to_owned(),
            check: trigger.check.to_owned(),
            key: trigger.key.to_owned(),
            summary: trigger.summary.to_owned(),
            open: true,
            fired_at: now,
            resolved_at: None,
        };
        Store::alert_insert(tx.conn(), &alert).await?;
        let data = pb::AlertFired {
            alert_id: alert.id.clone(),
            rule: rule.name.clone(),
            condition: trigger.condition.as_str().to_owned(),
            app: alert.app.clone(),
            check: alert.check.clone(),
            summary: alert.summary.clone(),
        };
        tx.emit(events::ALERT_FIRED, &alert.id, &alert.team, &data).await?;
        queued |= queue(tx, &rule, &alert, "firing", now).await?;
        tracing::info!(team = %alert.team, rule = %rule.name, app = %alert.app, summary = %alert.summary, "alert fired");
    }
    Ok(queued)
}

/// Resolves the open alerts of `condition` about `key`; returns whether
/// deliveries were queued.
pub async fn resolve(
    tx: &mut EventTx,
    team: &str,
    condition: Condition,
    key: &str,
    summary: &str,
) -> Result<bool, AlertError> {
    let now = now_ms();
    let mut queued = false;
    let rules = Store::rules_for(tx.conn(), team, condition).await?;
    for mut alert in Store::alerts_open_for(tx.conn(), team, condition, key).await? {
        Store::alert_resolve(tx.conn(), &alert.id, now).await?;
        alert.open = false;
        alert.resolved_at = Some(now);
        alert.summary = summary.to_owned();
        let data = pb::AlertResolved {
            alert_id: alert.id.clone(),
            rule: alert.rule.clone(),
            condition: condition.as_str().to_owned(),
            app: alert.app.clone(),
            check: alert.check.clone(),
            summary: summary.to_owned(),
        };
        tx.emit(events::ALERT_RESOLVED, &alert.id, team, &data).await?;
        if let Some(rule) = rules.iter().find(|r| r.id == alert.rule_id) {
            queued |= queue(tx, rule, &alert, "resolved", now).await?;
        }
        tracing::info!(team, rule = %alert.rule, app = %alert.app, "alert resolved");
    }
    Ok(queued)
}

/// The JSON every channel receives.
fn payload(alert: &AlertRecord, status: &str, at: i64) -> serde_json::Value {
    json!({
        "alert_id": alert.id,
        "status": status,
        "rule": alert.rule,
        "condition": alert.condition.as_str(),
        "team": alert.team,
        "app": alert.app,
        "check": alert.check,
        "summary": alert.summary,
        "at": humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0))
        ).to_string(),
    })
}

async fn queue(
    tx: &mut EventTx,
    rule: &RuleRecord,
    alert: &AlertRecord,
    status: &str,
    now: i64,
) -> Result<bool, AlertError> {
    let body = payload(alert, status, now).to_string();
    let mut queued = false;
    for name in &rule.channels {
        match Store::channel_by_name(tx.conn(), &alert.team, name).await? {
            Some(channel) => {
                let id = uuid::Uuid::now_v7().to_string();
                Store::delivery_insert(tx.conn(), &id, &alert.team, &channel.id, &body, now).await?;
                queued = true;
            }
            None => tracing::warn!(team = %alert.team, rule = %rule.name, channel = %name, "alert channel is gone"),
        }
    }
    Ok(queued)
}

/// Delay before the attempt after `attempts` failed ones: 1 s doubling to 60 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// Sends pending deliveries.
pub struct Deliverer {
    pub store: Store,
    pub bus: Bus,
    pub wake: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub max_attempts: u32,
    pub timeout: Duration,
}

impl Deliverer {
    /// Sends due deliveries until `shutdown`, woken by new ones and polling as a fallback.
    pub async fn run(self, shutdown: CancellationToken) {
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(hyper_util::client::legacy::connect::HttpConnector::new());
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.store.deliveries_due(now_ms(), 32).await {
                Ok(due) if !due.is_empty() => {
                    let this = &self;
                    let client = &client;
                    let sends = due.into_iter().map(|(id, channel, body, attempts)| async move {
                        this.deliver(client, &id, &channel, &body, attempts).await
                    });
                    futures::future::join_all(sends).await;
                    continue;
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "cannot read pending deliveries"),
            }
            let wait = match self.store.next_delivery_at().await {
                Ok(Some(at)) => {
                    Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(Duration::from_secs(5))
                }
                _ => Duration::from_secs(5),
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = woken => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn deliver(
        &self,
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        id: &str,
        channel_id: &str,
        body: &str,
        attempts: u32,
    ) {
        let attempts = attempts + 1;
        let channel = match self.store.channel_by_id(channel_id).await {
            Ok(Some(channel)) => channel,
            Ok(None) => {
                self.record(id, "gone", attempts, "failed", 0, "the channel was deleted").await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the channel of a delivery");
                return;
            }
        };
        let outcome = match channel.kind.as_str() {
            "webhook" => self.post(client, &channel.target, &channel.secret, id, body).await,
            "nats" => self.publish(&channel.target, id, body).await,
            other => Err((false, format!("unknown channel kind {other}"))),
        };
        match outcome {
            Ok(()) => self.record(id, &channel.kind, attempts, "delivered", 0, "").await,
            Err((retriable, error)) if retriable && attempts < self.max_attempts => {
                let next = now_ms() + i64::try_from(backoff(attempts).as_millis()).unwrap_or(60_000);
                tracing::warn!(delivery = id, channel = %channel.name, attempts, %error, "alert delivery failed, will retry");
                self.record(id, &channel.kind, attempts, "pending", next, &error).await;
            }
            Err((_, error)) => {
                tracing::error!(delivery = id, channel = %channel.name, attempts, %error, "alert delivery failed for good");
                self.record(id, &channel.kind, attempts, "failed", 0, &error).await;
            }
        }
    }

    async fn record(&self, id: &str, kind: &str, attempts: u32, state: &str, next_at: i64, error: &str) {
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabels { kind: kind.to_owned(), outcome: state.to_owned() })
            .inc();
        if let Err(e) = self.store.delivery_attempted(id, attempts, state, next_at, error).await {
            tracing::warn!(error = %e, delivery = id, "cannot record a delivery attempt");
        }
    }

    /// POSTs `body`; `Err((retriable, why))` on failure.
    async fn post(
        &self,
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        url: &str,
        secret: &str,
        id: &str,
        body: &str,
    ) -> Result<(), (bool, String)> {
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "strata-observe")
            .header(SIGNATURE_HEADER, sign(secret, body.as_bytes()))
            .header(DELIVERY_HEADER, id)
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| (false, format!("bad webhook request: {e}")))?;
        let response = tokio::time::timeout(self.timeout, client.request(request))
            .await
            .map_err(|_| (true, format!("no answer within {} ms", self.timeout.as_millis())))?
            .map_err(|e| (true, e.to_string()))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            // Client errors will not get better, except timeouts and throttling.
            let retriable = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
            Err((retriable, format!("webhook answered {status}")))
        }
    }

    async fn publish(&self, subject: &str, id: &str, body: &str) -> Result<(), (bool, String)> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Strata-Delivery", id);
        self.bus
            .client()
            .publish_with_headers(subject.to_owned(), headers, Bytes::from(body.to_owned()))
            .await
            .map_err(|e| (true, e.to_string()))?;
        self.bus.client().flush().await.map_err(|e| (true, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}

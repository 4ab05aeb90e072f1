//! Durable pull consumers with idempotent handlers.
//!
//! Each message is handled inside one database transaction that also records
//! the event id in the inbox table; the message is acknowledged only after
//! that transaction commits. A redelivered event finds its inbox row and is
//! acknowledged without running the handler again. A retriable failure naks
//! with an exponential delay; a fatal one terminates the message (it is logged
//! and never redelivered).

use std::{future::Future, time::Duration};

use async_nats::jetstream::{
    AckKind,
    consumer::{self, AckPolicy, DeliverPolicy, pull},
};
use futures::StreamExt;
use strata_kit::store::now_ms;
use tokio_util::sync::CancellationToken;

use crate::{Bus, CloudEvent, EventTx, EventsError, Outbox};

/// Why a handler could not finish.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Try again later (a dependency is down, a row is locked, ...).
    #[error("retriable: {0}")]
    Retry(String),
    /// Never going to work (malformed event, broken invariant): give up.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> Self {
        HandleError::Retry(error.to_string())
    }
}

impl From<EventsError> for HandleError {
    fn from(error: EventsError) -> Self {
        HandleError::Retry(error.to_string())
    }
}

/// Handles one event inside `tx`; whatever it writes (including new events)
/// commits together with the inbox row.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, tx: &mut EventTx, event: &CloudEvent) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Called once `event`'s effect is committed (not for a redelivery that
    /// the inbox skipped): the place to refresh what is derived from the
    /// database, such as an in-memory table.
    fn committed(&self, event: &CloudEvent) {
        let _ = event;
    }
}

/// A durable consumer: its name (`<service>-<purpose>`), the subject filter,
/// and where a new consumer starts.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub durable_name: String,
    /// A filter under the bus prefix, e.g. `compute.instance.*` (one filter:
    /// NATS 2.9 has no multi-filter consumers).
    pub filter: String,
    pub deliver_policy: DeliverPolicy,
    /// Deliveries before a message is given up.
    pub max_deliver: i64,
}

impl ConsumerSpec {
    /// A consumer that reads the filtered history from the start.
    pub fn new(durable_name: impl Into<String>, filter: impl Into<String>) -> Self {
        Self {
            durable_name: durable_name.into(),
            filter: filter.into(),
            deliver_policy: DeliverPolicy::All,
            max_deliver: 20,
        }
    }
}

/// Delay before redelivery after the `delivered`-th failed attempt.
fn retry_delay(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    Duration::from_millis(250 * 2u64.pow(exponent)).min(Duration::from_secs(30))
}

/// Runs the consumer until `shutdown`. Errors only when the consumer cannot
/// be created; transient trouble afterwards is logged and retried.
pub async fn run<H: Handler>(
    bus: Bus,
    outbox: Outbox,
    spec: ConsumerSpec,
    handler: H,
    shutdown: CancellationToken,
) -> Result<(), EventsError> {
    let consumer_error = |e: &dyn std::fmt::Display| EventsError::Consumer {
        consumer: spec.durable_name.clone(),
        message: e.to_string(),
    };
    let stream = bus.ensure_stream().await?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &spec.durable_name,
            pull::Config {
                durable_name: Some(spec.durable_name.clone()),
                filter_subject: bus.filter(&spec.filter),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: spec.max_deliver,
                deliver_policy: spec.deliver_policy,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| consumer_error(&e))?;

    while !shutdown.is_cancelled() {
        let mut messages = match consumer.stream().max_messages_per_batch(64).messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(consumer = %spec.durable_name, %error, "cannot pull messages, retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(consumer = %spec.durable_name, %error, "pull failed, resubscribing");
                    break;
                }
                None => break,
            };
            let outcome = handle_one(&outbox, &spec.durable_name, &handler, &message).await;
            let ack = match outcome {
                Ok(()) => message.ack().await,
                Err(HandleError::Retry(reason)) => {
                    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                    let delay = retry_delay(delivered);
                    tracing::warn!(consumer = %spec.durable_name, delivered, %reason, "event handling failed, will retry");
                    message.ack_with(AckKind::Nak(Some(delay))).await
                }
                Err(HandleError::Fatal(reason)) => {
                    tracing::error!(consumer = %spec.durable_name, subject = %message.subject, %reason, "event cannot be handled, dropping it");
                    message.ack_with(AckKind::Term).await
                }
            };
            if let Err(error) = ack {
                // The effect is committed; a redelivery will find the inbox row.
                tracing::warn!(consumer = %spec.durable_name, %error, "acknowledgement failed");
            }
        }
    }
    Ok(())
}

async fn handle_one<H: Handler>(
    outbox: &Outbox,
    consumer: &str,
    handler: &H,
    message: &async_nats::jetstream::Message,
) -> Result<(), HandleError> {
    let event: CloudEvent =
        serde_json::from_slice(&message.payload).map_err(|e| HandleError::Fatal(format!("not a CloudEvent: {e}")))?;
    let mut tx = outbox.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO strata_inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(&event.id)
    .bind(now_ms())
    .execute(tx.conn())
    .await?
    .rows_affected();
    if inserted == 0 {
        tracing::debug!(consumer, event = %event.id, "already handled");
        tx.rollback().await?;
        return Ok(());
    }
    match handler.handle(&mut tx, &event).await {
        Ok(()) => {
            tx.commit().await?;
            handler.committed(&event);
            Ok(())
        }
        Err(error) => {
            tx.rollback().await?;
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(250));
        assert_eq!(retry_delay(2), Duration::from_millis(500));
        assert_eq!(retry_delay(50), Duration::from_secs(16));
    }
}

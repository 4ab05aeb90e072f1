//! The transactional outbox and its relay.
//!
//! A state change and the events that announce it are written in one database
//! transaction ([`EventTx`]); committing wakes the relay in process, which
//! publishes pending rows in order with `Nats-Msg-Id` = event id and marks
//! them sent only after JetStream acknowledged them. A crash between publish
//! and mark re-publishes on restart, and JetStream's duplicate window drops the
//! copy: nothing is lost, nothing is delivered twice.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::context::PublishAckFuture;
use serde::Serialize;
use sqlx::{Any, AnyConnection, Row, Transaction};
use strata_kit::{Db, store::now_ms};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{Bus, CloudEvent, EventType, EventsError};

/// Rows published per round trip of the relay.
const BATCH: i64 = 256;
/// How often the relay looks for rows nobody woke it for (written by another
/// process sharing the database, or left by a crash).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Sent rows are kept this long (for inspection), then deleted.
const KEEP_SENT: Duration = Duration::from_secs(3600);

/// Writes events into the outbox and wakes the relay. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Db,
    subject_prefix: String,
    wake: Arc<Notify>,
}

impl Outbox {
    /// An outbox in `db` whose events go to subjects under `subject_prefix`.
    pub fn new(db: Db, subject_prefix: &str) -> Self {
        Self { db, subject_prefix: subject_prefix.to_owned(), wake: Arc::new(Notify::new()) }
    }

    /// Starts a write transaction that can carry events.
    pub async fn begin(&self) -> Result<EventTx, sqlx::Error> {
        Ok(EventTx { tx: self.db.begin().await?, outbox: self.clone(), has_events: false })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Publishes pending events until `shutdown`; returns once the last batch
    /// in flight is settled.
    pub async fn run_relay(self, bus: Bus, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        let mut last_prune = std::time::Instant::now();
        loop {
            // Register interest before looking, so a commit that lands
            // between the query and the wait still wakes us.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();

            match self.relay_batch(&bus).await {
                Ok(0) => {
                    backoff = Duration::from_millis(50);
                    if last_prune.elapsed() > KEEP_SENT / 4 {
                        last_prune = std::time::Instant::now();
                        if let Err(error) = self.prune().await {
                            tracing::warn!(%error, "pruning sent outbox rows failed");
                        }
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = woken => {}
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                // A full batch may mean more is waiting: go again at once.
                Ok(_) => backoff = Duration::from_millis(50),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay could not publish");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Publishes what is pending now, for at most `deadline`: the last pass of
    /// a service that is shutting down. What cannot be published stays in the
    /// outbox for the next start.
    pub async fn flush(&self, bus: &Bus, deadline: Duration) {
        let flushed = tokio::time::timeout(deadline, async {
            loop {
                match self.relay_batch(bus).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "outbox flush stopped; the rest goes out on next start");
                        break;
                    }
                }
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!("outbox not fully flushed at shutdown; the rest goes out on next start");
        }
    }

    /// Publishes one batch of pending rows; returns how many were sent.
    async fn relay_batch(&self, bus: &Bus) -> Result<usize, EventsError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, subject, payload FROM strata_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(self.db.pool())
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }

        // Pipeline the publishes, then collect the acks in order: one round
        // trip per batch instead of one per event.
        let mut in_flight: Vec<(i64, PublishAckFuture)> = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            let event_id: String = row.try_get("event_id")?;
            let subject: String = row.try_get("subject")?;
            let payload: String = row.try_get("payload")?;
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(payload.into_bytes().into())
                .message_id(event_id);
            match bus.jetstream().send_publish(subject, publish).await {
                Ok(ack) => in_flight.push((seq, ack)),
                Err(error) => {
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
        let mut sent = Vec::with_capacity(in_flight.len());
        for (seq, ack) in in_flight {
            match ack.await {
                Ok(_) => sent.push(seq),
                Err(error) => {
                    failure.get_or_insert(error.to_string());
                    break;
                }
            }
        }
        if !sent.is_empty() {
            // Numbered placeholders: the Any driver's QueryBuilder writes `?`,
            // which Postgres does not accept.
            let list: Vec<String> = (0..sent.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!("UPDATE strata_outbox SET sent_at = $1 WHERE seq IN ({})", list.join(", "));
            let mut update = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
            for seq in &sent {
                update = update.bind(*seq);
            }
            update.execute(self.db.pool()).await?;
        }
        match failure {
            Some(message) if sent.is_empty() => {
                Err(EventsError::Stream { stream: bus.settings().stream.clone(), message })
            }
            _ => Ok(sent.len()),
        }
    }

    async fn prune(&self) -> Result<(), sqlx::Error> {
        let cutoff = now_ms() - i64::try_from(KEEP_SENT.as_millis()).unwrap_or(i64::MAX);
        sqlx::query("DELETE FROM strata_outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(cutoff)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}

/// A write transaction that can carry events: they are published if, and
/// only if, it commits.
pub struct EventTx {
    tx: Transaction<'static, Any>,
    outbox: Outbox,
    has_events: bool,
}

impl std::fmt::Debug for EventTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTx").field("has_events", &self.has_events).finish_non_exhaustive()
    }
}

impl EventTx {
    /// The connection to run the state change on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Records an event of type `ty` about resource `subject` of `team`;
    /// returns the event.
    pub async fn emit<M: Serialize>(
        &mut self,
        ty: EventType,
        subject: &str,
        team: &str,
        data: &M,
    ) -> Result<CloudEvent, EventsError> {
        let event = CloudEvent::new(ty, subject, team, data)?;
        let payload = serde_json::to_string(&event)?;
        sqlx::query("INSERT INTO strata_outbox (event_id, subject, payload, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&event.id)
            .bind(ty.subject(&self.outbox.subject_prefix))
            .bind(payload)
            .bind(now_ms())
            .execute(&mut *self.tx)
            .await?;
        self.has_events = true;
        Ok(event)
    }

    /// Commits, then wakes the relay if events were written.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        if self.has_events {
            self.outbox.wake.notify_one();
        }
        Ok(())
    }

    /// Rolls back: neither the state change nor its events happen.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

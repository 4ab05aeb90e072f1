//! The events library against the real NATS and a real database (SQLite and
//! Postgres): the transactional outbox and its relay (order, `Nats-Msg-Id`,
//! exactly once, rollback, the duplicate window, catching up after downtime)
//! and durable consumers with their inbox (each event takes effect once,
//! retries, redeliveries, fatal events). Everything is read back from the
//! stream and the tables themselves, not from what the library says it did.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use async_nats::jetstream::{self, consumer, message::PublishMessage};
use sqlx::Row;
use strata_events::{Bus, CloudEvent, ConsumerSpec, EventTx, EventType, HandleError, Handler, Outbox};
use strata_integration_tests::{Backend, TestEnv, wait_for};
use strata_kit::Db;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread")] async fn $scenario() { super::$scenario(super::Backend::Postgres).await } )* }
    };
}

on_both_backends!(
    committed_events_are_published_once_in_order_and_rolled_back_ones_never,
    republication_after_a_crash_is_dropped_by_the_duplicate_window,
    relay_catches_up_when_started_late_and_polls_for_rows_nobody_woke_it_for,
    consumer_takes_each_event_into_effect_exactly_once,
);

/// The event type every test emits.
const THING_HAPPENED: EventType = EventType::new("test", "thing", "happened");
/// How long a test waits for anything to reach the stream or a consumer.
const PATIENCE: Duration = Duration::from_secs(30);

/// One service's share of the events machinery: its database (with the
/// outbox and inbox tables), its outbox, and its connection to the test's stream.
struct Service {
    db: Db,
    outbox: Outbox,
    bus: Bus,
}

impl Service {
    async fn start(env: &mut TestEnv, backend: Backend, name: &str) -> Self {
        let db = Db::connect(&env.database_url(backend, name).await, 4).await.unwrap();
        db.migrate(strata_events::migrations(&db)).await.unwrap();
        let outbox = Outbox::new(db.clone(), &env.nats.subject_prefix);
        let bus = Bus::connect(&env.nats, name).await.unwrap();
        bus.ensure_stream().await.unwrap();
        Self { db, outbox, bus }
    }

    /// Runs the relay in the background until the returned token is cancelled.
    fn spawn_relay(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let stop = CancellationToken::new();
        (stop.clone(), tokio::spawn(self.outbox.clone().run_relay(self.bus.clone(), stop)))
    }

    /// Outbox rows not marked as sent.
    async fn unsent(&self) -> i64 {
        count(&self.db, "SELECT COUNT(*) AS n FROM strata_outbox WHERE sent_at IS NULL").await
    }
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    sqlx::query(sql).fetch_one(db.pool()).await.unwrap().get::<i64, _>("n")
}

/// Commits one transaction carrying one event per number in `numbers`.
async fn commit_events(outbox: &Outbox, numbers: impl IntoIterator<Item = u32>) -> Vec<CloudEvent> {
    let mut tx = outbox.begin().await.unwrap();
    let mut events = Vec::new();
    for n in numbers {
        events.push(emit(&mut tx, n).await);
    }
    tx.commit().await.unwrap();
    events
}

async fn emit(tx: &mut EventTx, n: u32) -> CloudEvent {
    tx.emit(THING_HAPPENED, &format!("thing-{n}"), "team-test", &serde_json::json!({ "n": n })).await.unwrap()
}

fn ids(events: &[CloudEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// A message as the stream holds it.
#[derive(Debug)]
struct Stored {
    subject: String,
    msg_id: String,
    event: CloudEvent,
}

/// Every message on the test's stream, in stream order.
async fn stored(env: &TestEnv) -> Vec<Stored> {
    let stream = jetstream::new(env.nats().await).get_stream(&env.nats.stream).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        out.push(Stored {
            subject: message.subject.to_string(),
            msg_id: message.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default(),
            event: serde_json::from_slice(&message.payload).unwrap(),
        });
    }
    out
}

/// Waits until the stream holds at least `n` messages, then returns them all.
async fn wait_stored(env: &TestEnv, n: u64) -> Vec<Stored> {
    let stream = jetstream::new(env.nats().await).get_stream(&env.nats.stream).await.unwrap();
    wait_for(&format!("{n} messages on the stream"), PATIENCE, || async {
        (stream.get_info().await.ok()?.state.messages >= n).then_some(())
    })
    .await;
    stored(env).await
}

async fn committed_events_are_published_once_in_order_and_rolled_back_ones_never(backend: Backend) {
    let mut env = TestEnv::new();
    let service = Service::start(&mut env, backend, "producer").await;
    let (stop, relay) = service.spawn_relay();

    let mut expected = commit_events(&service.outbox, [1, 2, 3]).await;
    let mut tx = service.outbox.begin().await.unwrap();
    let rolled_back = emit(&mut tx, 99).await;
    tx.rollback().await.unwrap();
    for n in 4..=10 {
        expected.extend(commit_events(&service.outbox, [n]).await);
    }
    // A last event committed after everything else: once it is on the
    // stream, anything published before it (twice, or rolled back) is too.
    let marker = commit_events(&service.outbox, [11]).await;
    expected.extend(marker.clone());

    let on_stream = wait_stored(&env, expected.len() as u64).await;
    assert_eq!(on_stream.last().map(|s| &s.event), marker.last(), "the marker is the last message");
    assert_eq!(on_stream.iter().map(|s| s.event.id.clone()).collect::<Vec<_>>(), ids(&expected), "order");
    for (stored, event) in on_stream.iter().zip(&expected) {
        assert_eq!(&stored.event, event, "the stream holds the event as emitted");
        assert_eq!(stored.msg_id, event.id, "Nats-Msg-Id is the event id");
        assert_eq!(stored.subject, THING_HAPPENED.subject(&env.nats.subject_prefix));
    }
    assert!(on_stream.iter().all(|s| s.event.id != rolled_back.id), "a rolled-back event was published");
    assert_eq!(count(&service.db, "SELECT COUNT(*) AS n FROM strata_outbox").await, expected.len() as i64);
    wait_for("every outbox row marked sent", PATIENCE, || async { (service.unsent().await == 0).then_some(()) }).await;

    stop.cancel();
    relay.await.unwrap();
    env.cleanup().await;
}

async fn republication_after_a_crash_is_dropped_by_the_duplicate_window(backend: Backend) {
    let mut env = TestEnv::new();
    let service = Service::start(&mut env, backend, "producer").await;
    let events = commit_events(&service.outbox, 1..=5).await;
    service.outbox.flush(&service.bus, PATIENCE).await;
    assert_eq!(service.unsent().await, 0);
    let first = stored(&env).await;
    assert_eq!(first.iter().map(|s| s.event.id.clone()).collect::<Vec<_>>(), ids(&events));

    // A crash between publishing and marking: on restart the rows look unsent.
    sqlx::query("UPDATE strata_outbox SET sent_at = NULL").execute(service.db.pool()).await.unwrap();
    assert_eq!(service.unsent().await, 5);
    let (stop, relay) = service.spawn_relay();
    wait_for("the relay to publish the rows again", PATIENCE, || async { (service.unsent().await == 0).then_some(()) })
        .await;

    let state = jetstream::new(env.nats().await).get_stream(&env.nats.stream).await.unwrap().get_info().await.unwrap();
    assert_eq!((state.state.messages, state.state.last_sequence), (5, 5), "JetStream kept one copy of each event");
    let again = stored(&env).await;
    let copies = |all: &[Stored]| all.iter().map(|s| (s.msg_id.clone(), s.event.clone())).collect::<Vec<_>>();
    assert_eq!(copies(&again), copies(&first));
    // What the relay relies on: JetStream says so when it drops a copy.
    let copy = PublishMessage::build().payload(b"copy".as_slice().into()).message_id(events[0].id.clone());
    let ack = service
        .bus
        .jetstream()
        .send_publish(THING_HAPPENED.subject(&env.nats.subject_prefix), copy)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate, "{ack:?}");

    stop.cancel();
    relay.await.unwrap();
    env.cleanup().await;
}

async fn relay_catches_up_when_started_late_and_polls_for_rows_nobody_woke_it_for(backend: Backend) {
    let mut env = TestEnv::new();
    let service = Service::start(&mut env, backend, "producer").await;

    // Written while no relay runs (the service was down): more than one
    // relay batch, in several transactions.
    let mut expected = commit_events(&service.outbox, 1..=200).await;
    expected.extend(commit_events(&service.outbox, 201..=300).await);
    expected.extend(commit_events(&service.outbox, [301]).await);
    assert!(stored(&env).await.is_empty(), "nothing is published without a relay");

    let (stop, relay) = service.spawn_relay();
    let on_stream = wait_stored(&env, expected.len() as u64).await;
    assert_eq!(on_stream.iter().map(|s| s.event.id.clone()).collect::<Vec<_>>(), ids(&expected));

    // Rows committed by another process sharing the database: no wake-up
    // reaches this relay, its polling has to find them.
    let elsewhere = Outbox::new(service.db.clone(), &env.nats.subject_prefix);
    expected.extend(commit_events(&elsewhere, [302, 303]).await);
    let on_stream = wait_stored(&env, expected.len() as u64).await;
    assert_eq!(on_stream.iter().map(|s| s.event.id.clone()).collect::<Vec<_>>(), ids(&expected));
    assert!(on_stream.iter().all(|s| s.msg_id == s.event.id));
    wait_for("every outbox row marked sent", PATIENCE, || async { (service.unsent().await == 0).then_some(()) }).await;

    stop.cancel();
    relay.await.unwrap();
    env.cleanup().await;
}

/// A handler that writes what it handled into the `handled` table (inside
/// the consumer's transaction) and can be told to fail.
struct Recorder {
    /// Events that fail with a retriable error on their first attempt.
    retry_once: HashSet<String>,
    /// Events that fail fatally.
    fatal: HashSet<String>,
    attempts: Mutex<HashMap<String, u32>>,
    /// Every call, as it happens.
    calls: mpsc::UnboundedSender<String>,
}

impl Handler for Recorder {
    async fn handle(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap();
            let attempt = attempts.entry(event.id.clone()).or_default();
            *attempt += 1;
            *attempt
        };
        self.calls.send(event.id.clone()).unwrap();
        // The effect is written before failing: a failure must roll it back.
        sqlx::query("INSERT INTO handled (event_id, attempt) VALUES ($1, $2)")
            .bind(&event.id)
            .bind(i64::from(attempt))
            .execute(tx.conn())
            .await?;
        if self.fatal.contains(&event.id) {
            return Err(HandleError::Fatal("this event can never be handled".to_owned()));
        }
        if attempt == 1 && self.retry_once.contains(&event.id) {
            return Err(HandleError::Retry("a dependency is down".to_owned()));
        }
        Ok(())
    }
}

/// The `handled` table: event id to the attempts recorded, in insertion order.
async fn handled(db: &Db) -> BTreeMap<String, Vec<i64>> {
    let rows =
        sqlx::query("SELECT event_id, attempt FROM handled ORDER BY attempt").fetch_all(db.pool()).await.unwrap();
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in rows {
        out.entry(row.get("event_id")).or_default().push(row.get("attempt"));
    }
    out
}

/// Waits until the consumer has had `deliveries` deliveries and every one of
/// the `messages` on the stream is acknowledged or terminated.
async fn wait_settled(env: &TestEnv, durable: &str, messages: u64, deliveries: u64) -> consumer::Info {
    let stream = jetstream::new(env.nats().await).get_stream(&env.nats.stream).await.unwrap();
    wait_for(&format!("consumer {durable} to settle"), PATIENCE, || async {
        let info = stream.consumer_info(durable).await.ok()?;
        let settled = info.num_pending == 0
            && info.num_ack_pending == 0
            && info.delivered.stream_sequence == messages
            && info.ack_floor.stream_sequence == messages
            && info.delivered.consumer_sequence >= deliveries;
        settled.then_some(info)
    })
    .await
}

fn drain_calls(calls: &mut mpsc::UnboundedReceiver<String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    while let Ok(id) = calls.try_recv() {
        *counts.entry(id).or_default() += 1;
    }
    counts
}

async fn consumer_takes_each_event_into_effect_exactly_once(backend: Backend) {
    let mut env = TestEnv::new();
    let producer = Service::start(&mut env, backend, "producer").await;
    let service = Service::start(&mut env, backend, "consumer").await;
    // No key on purpose: an event handled twice shows up as two rows.
    sqlx::raw_sql("CREATE TABLE handled (event_id TEXT NOT NULL, attempt BIGINT NOT NULL)")
        .execute(service.db.pool())
        .await
        .unwrap();
    let durable = format!("test-recorder-{}", env.id);

    let mut events = Vec::new();
    for n in 1..=5 {
        events.extend(commit_events(&producer.outbox, [n]).await);
    }
    let [first, retried, known, fatal, last] = [0, 1, 2, 3, 4].map(|i| events[i].id.clone());
    // `known` took effect before, but its acknowledgement was lost: the inbox has it.
    sqlx::query("INSERT INTO strata_inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3)")
        .bind(&durable)
        .bind(&known)
        .bind(0_i64)
        .execute(service.db.pool())
        .await
        .unwrap();
    producer.outbox.flush(&producer.bus, PATIENCE).await;
    assert_eq!(wait_stored(&env, 5).await.len(), 5);

    let (calls_tx, mut calls) = mpsc::unbounded_channel();
    let recorder = Recorder {
        retry_once: HashSet::from([retried.clone()]),
        fatal: HashSet::from([fatal.clone()]),
        attempts: Mutex::new(HashMap::new()),
        calls: calls_tx,
    };
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(strata_events::consumer::run(
        service.bus.clone(),
        service.outbox.clone(),
        ConsumerSpec::new(durable.clone(), "test.thing.*"),
        recorder,
        stop.clone(),
    ));

    // Five deliveries and one redelivery (of `retried`); `fatal` is
    // terminated, so nothing stays pending for it.
    let info = wait_settled(&env, &durable, 5, 6).await;
    assert_eq!(info.delivered.consumer_sequence, 6, "exactly one redelivery: {info:?}");
    let counts = drain_calls(&mut calls);
    assert_eq!(counts.get(&first), Some(&1));
    assert_eq!(counts.get(&retried), Some(&2), "retried after a retriable failure");
    assert_eq!(counts.get(&known), None, "an event already in the inbox is not handled again");
    assert_eq!(counts.get(&fatal), Some(&1), "a fatal failure is not retried");
    assert_eq!(counts.get(&last), Some(&1), "events after a fatal one are still handled");
    let effects = handled(&service.db).await;
    let expected_effects =
        BTreeMap::from([(first.clone(), vec![1]), (retried.clone(), vec![2]), (last.clone(), vec![1])]);
    assert_eq!(effects, expected_effects, "each effect once; failed attempts rolled back");
    let inbox: HashSet<String> = sqlx::query("SELECT event_id FROM strata_inbox WHERE consumer = $1")
        .bind(&durable)
        .fetch_all(service.db.pool())
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("event_id"))
        .collect();
    assert_eq!(inbox, HashSet::from([first.clone(), retried, known, last]), "the fatal event is not in the inbox");

    // The same event arrives again (re-published outside the duplicate
    // window): acknowledged, never handled a second time.
    let payload = serde_json::to_vec(&events[0]).unwrap();
    service
        .bus
        .jetstream()
        .publish(THING_HAPPENED.subject(&env.nats.subject_prefix), payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_settled(&env, &durable, 6, 7).await;
    assert!(drain_calls(&mut calls).is_empty(), "a copy of a handled event reached the handler");
    assert_eq!(handled(&service.db).await, expected_effects);

    stop.cancel();
    consumer.await.unwrap().unwrap();
    env.cleanup().await;
}

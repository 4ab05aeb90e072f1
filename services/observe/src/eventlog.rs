//! The platform event log: a durable consumer of the whole stream stores
//! every event (the audit trail), and hands each one, once committed, to
//! the clients following the log live.

use std::{collections::HashMap, sync::Mutex};

use strata_events::{CloudEvent, EventTx, HandleError, Handler};
use strata_kit::store::now_ms;

use crate::{app::Observe, metrics::Metrics, model::LoggedEvent, store::Store};
use std::sync::Arc;

/// The app an event is about: the `app` field of its data, when it has one.
pub fn app_of(event: &CloudEvent) -> String {
    event.data.get("app").and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

/// Stores events in the log.
pub struct EventLog {
    observe: Observe,
    metrics: Arc<Metrics>,
    /// Events stored by a transaction not yet committed, by event id.
    pending: Mutex<HashMap<String, LoggedEvent>>,
}

impl EventLog {
    /// An event log handler that hands committed events to `observe`'s followers.
    pub fn new(observe: Observe, metrics: Arc<Metrics>) -> Self {
        Self { observe, metrics, pending: Mutex::new(HashMap::new()) }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, LoggedEvent>> {
        match self.pending.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Handler for EventLog {
    async fn handle(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        let app = app_of(event);
        let time_ms = humantime::parse_rfc3339_weak(&event.time)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .unwrap_or_else(now_ms);
        let seq = Store::event_insert(tx.conn(), event, &app, time_ms).await?;
        let logged = LoggedEvent {
            seq,
            id: event.id.clone(),
            ty: event.ty.clone(),
            source: event.source.clone(),
            subject: event.subject.clone(),
            team: event.team.clone(),
            app,
            time_ms,
            data: event.data.to_string(),
        };
        self.pending().insert(event.id.clone(), logged);
        Ok(())
    }

    fn committed(&self, event: &CloudEvent) {
        self.metrics.events_logged.inc();
        if let Some(logged) = self.pending().remove(&event.id) {
            self.observe.event_logged(logged);
        }
    }
}

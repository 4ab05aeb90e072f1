//! The recorder: takes finished runs, moves each target's confirmation
//! state, and writes in batches: every few hundred milliseconds one
//! transaction holds the batch's results, its per-minute rollups, and the
//! confirmed state changes with their `check.failed` / `.recovered` events
//! and alerts. At 1,000 runs a second that is a handful of multi-row
//! statements per batch instead of a transaction per run.

use std::{collections::HashMap, sync::Arc, time::Duration};

use strata_proto::observe::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    alerts::{self, Trigger},
    app::{Failure, Observe},
    events,
    metrics::Metrics,
    model::{CheckDef, Condition, Confirmations, Histogram, LastResult, RunResult, State, Target, Transition},
    store::Store,
};

/// Longest a result waits before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Results per batch at most.
const BATCH: usize = 2000;

/// A confirmed change, with what to restore if its batch is not written.
struct Change {
    check: Arc<CheckDef>,
    target: Arc<Target>,
    transition: Transition,
    before: Confirmations,
    before_since: i64,
    at_ms: i64,
    error: String,
    /// Whether a target of the check is failing after this batch.
    check_failing: bool,
}

/// Records runs until `shutdown` and the runs channel is drained.
pub async fn run(
    observe: Observe,
    metrics: Arc<Metrics>,
    mut runs: mpsc::Receiver<RunResult>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            received = runs.recv() => match received {
                Some(result) => {
                    batch.push(result);
                    if batch.len() < BATCH {
                        continue;
                    }
                }
                None => closing = true,
            },
            _ = tick.tick() => {}
            () = shutdown.cancelled(), if !closing => {
                // The scheduler stops too; drain what its last runs send.
                closing = true;
                runs.close();
                continue;
            }
        }
        if !batch.is_empty() {
            flush(&observe, &metrics, std::mem::take(&mut batch)).await;
        }
        if closing && runs.is_empty() && runs.is_closed() {
            return;
        }
    }
}

async fn flush(observe: &Observe, metrics: &Metrics, batch: Vec<RunResult>) {
    let mut changes = Vec::new();
    let mut kept = Vec::with_capacity(batch.len());
    observe.live.with(|live| {
        for result in batch {
            let Some(check) = live.get_mut(&result.check.record.id) else { continue };
            let Some(target) = check.targets.get_mut(&result.target.key) else { continue };
            let before = target.confirmations.clone();
            let before_since = target.since;
            target.last = Some(LastResult {
                at_ms: result.at_ms,
                ok: result.ok,
                latency_ms: result.latency_ms,
                error: result.error.clone(),
            });
            let record = &check.def.record;
            if let Some(transition) = target.confirmations.record(result.ok, record.fail_after, record.recover_after) {
                target.since = result.at_ms;
                changes.push(Change {
                    check: check.def.clone(),
                    target: target.target.clone(),
                    transition,
                    before,
                    before_since,
                    at_ms: result.at_ms,
                    error: result.error.clone(),
                    check_failing: false,
                });
            }
            kept.push(result);
        }
        for change in &mut changes {
            change.check_failing = live.get(&change.check.record.id).is_some_and(|c| c.any_failing());
        }
    });
    for result in &kept {
        let record = &result.check.record;
        metrics.run_finished(&record.team, &record.app, &record.name, result.ok, result.latency_ms);
    }
    let mut rollups: HashMap<(String, i64), Histogram> = HashMap::new();
    for result in &kept {
        rollups
            .entry((result.check.record.id.clone(), result.at_ms.div_euclid(60_000)))
            .or_default()
            .observe(result.ok, result.latency_ms);
    }
    let rollups: Vec<(String, i64, Histogram)> = rollups.into_iter().map(|((id, m), h)| (id, m, h)).collect();
    match write(observe, &kept, &rollups, &changes).await {
        Ok(queued) => {
            if queued {
                observe.deliveries_queued();
            }
        }
        Err(error) => {
            tracing::error!(%error, results = kept.len(), "check results not recorded");
            metrics.results_dropped.inc_by(u64::try_from(kept.len()).unwrap_or(0));
            // Unconfirm the changes, so the next run confirms them again
            // and their events are not lost.
            observe.live.with(|live| {
                for change in changes {
                    if let Some(target) =
                        live.get_mut(&change.check.record.id).and_then(|c| c.targets.get_mut(&change.target.key))
                    {
                        target.confirmations = change.before;
                        target.since = change.before_since;
                    }
                }
            });
        }
    }
}

async fn write(
    observe: &Observe,
    results: &[RunResult],
    rollups: &[(String, i64, Histogram)],
    changes: &[Change],
) -> Result<bool, Failure> {
    let mut tx = observe.store.begin().await?;
    Store::results_insert(tx.conn(), results).await?;
    Store::rollups_add(tx.conn(), rollups).await?;
    let mut queued = false;
    for change in changes {
        let record = &change.check.record;
        let target = &change.target;
        let state = match change.transition {
            Transition::Failed => State::Failing,
            Transition::Recovered | Transition::Passed => State::Passing,
        };
        Store::target_state_set(tx.conn(), &record.id, &target.key, state, change.at_ms).await?;
        let where_ = if target.key.is_empty() {
            record.url.clone()
        } else {
            format!("instance {} ({}:{})", target.key, target.host, target.port)
        };
        match change.transition {
            Transition::Failed => {
                let data = pb::CheckFailed {
                    check_id: record.id.clone(),
                    check: record.name.clone(),
                    app_id: target.app_id.clone(),
                    app: record.app.clone(),
                    instance_id: target.key.clone(),
                    host: target.host.clone(),
                    port: u32::from(target.port),
                    reason: change.error.clone(),
                    kind: record.kind.as_str().to_owned(),
                    url: record.url.clone(),
                };
                tx.emit(events::CHECK_FAILED, &record.id, &record.team, &data).await?;
                tracing::warn!(team = %record.team, check = %record.name, target = %where_, reason = %change.error, "check failed");
                let summary = format!("check {} failing on {where_}: {}", record.name, change.error);
                let trigger = Trigger {
                    team: &record.team,
                    condition: Condition::CheckFailed,
                    app: &record.app,
                    check: &record.name,
                    key: &record.id,
                    summary: &summary,
                    restarts: 0,
                };
                queued |= alerts::fire(&mut tx, &trigger).await?;
            }
            Transition::Recovered => {
                let data = pb::CheckRecovered {
                    check_id: record.id.clone(),
                    check: record.name.clone(),
                    app_id: target.app_id.clone(),
                    app: record.app.clone(),
                    instance_id: target.key.clone(),
                    host: target.host.clone(),
                    port: u32::from(target.port),
                    kind: record.kind.as_str().to_owned(),
                    url: record.url.clone(),
                };
                tx.emit(events::CHECK_RECOVERED, &record.id, &record.team, &data).await?;
                tracing::info!(team = %record.team, check = %record.name, target = %where_, "check recovered");
                if !change.check_failing {
                    let summary = format!("check {} passing again", record.name);
                    queued |=
                        alerts::resolve(&mut tx, &record.team, Condition::CheckFailed, &record.id, &summary).await?;
                }
            }
            Transition::Passed => {}
        }
    }
    tx.commit().await?;
    Ok(queued)
}

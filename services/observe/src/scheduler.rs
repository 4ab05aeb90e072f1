//! The scheduler: every (check, target) pair runs once per interval, at a
//! fixed offset inside the interval derived from a hash of the pair, so
//! thousands of checks spread evenly instead of firing together, and a
//! restart keeps the spread.
//!
//! Next-due instants sit in a binary heap (a timer wheel's job at this
//! scale, with one timer armed at a time). A semaphore bounds the runs in
//! flight: when it is exhausted the loop waits, and runs that start late
//! show in `strata_observe_schedule_lag_seconds`. A pair that fell a whole
//! interval behind skips the missed runs rather than bursting to catch up.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use strata_kit::store::now_ms;
use tokio::{
    sync::{Semaphore, mpsc},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::Metrics,
    model::{CheckDef, RunResult, Target},
    probe::Prober,
};

/// Runs later than this count as off schedule.
pub const ON_SCHEDULE: Duration = Duration::from_secs(1);

/// What the scheduler is told.
#[derive(Debug)]
pub enum Command {
    /// Runs `check` against exactly `targets` from now on.
    Set { check: Arc<CheckDef>, targets: Vec<Arc<Target>> },
    /// Stops running the check.
    Remove { check_id: String },
}

/// A handle to the scheduler task.
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl SchedulerHandle {
    /// A handle and the receiver [`run`] takes.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Runs `check` against exactly `targets` from now on.
    pub fn set(&self, check: Arc<CheckDef>, targets: Vec<Arc<Target>>) {
        if self.tx.send(Command::Set { check, targets }).is_err() {
            tracing::debug!("scheduler stopped; check not scheduled");
        }
    }

    /// Stops running the check.
    pub fn remove(&self, check_id: &str) {
        let _ = self.tx.send(Command::Remove { check_id: check_id.to_owned() });
    }
}

type Key = (String, String);

struct Slot {
    check: Arc<CheckDef>,
    target: Arc<Target>,
    generation: u64,
}

/// The offset of a pair inside its interval: stable across restarts.
pub fn offset(check_id: &str, target: &str, interval: Duration) -> Duration {
    let mut hasher = std::hash::DefaultHasher::new();
    (check_id, target).hash(&mut hasher);
    let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hasher.finish() % interval_ms)
}

/// The scheduler's state: slots, their next-due instants, and per check its targets.
struct Schedule {
    slots: HashMap<Key, Slot>,
    by_check: HashMap<String, HashSet<String>>,
    heap: BinaryHeap<Reverse<(Instant, u64, Key)>>,
    generation: u64,
}

impl Schedule {
    fn new() -> Self {
        Self { slots: HashMap::new(), by_check: HashMap::new(), heap: BinaryHeap::new(), generation: 0 }
    }

    fn first_due(&self, key: &Key, interval: Duration, now: Instant) -> Instant {
        // The wall clock places the run at its offset inside the interval,
        // so the spread survives restarts.
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let wall = u64::try_from(now_ms()).unwrap_or(0);
        let target_offset = u64::try_from(offset(&key.0, &key.1, interval).as_millis()).unwrap_or(0);
        let into_interval = wall % interval_ms;
        let wait = (target_offset + interval_ms - into_interval) % interval_ms;
        now + Duration::from_millis(wait)
    }

    fn push(&mut self, key: Key, due: Instant) -> u64 {
        self.generation += 1;
        self.heap.push(Reverse((due, self.generation, key)));
        self.generation
    }

    fn apply(&mut self, command: Command, now: Instant) {
        match command {
            Command::Set { check, targets } => {
                let id = check.record.id.clone();
                let wanted: HashSet<String> = targets.iter().map(|t| t.key.clone()).collect();
                let previous = self.by_check.remove(&id).unwrap_or_default();
                for gone in previous.difference(&wanted) {
                    self.slots.remove(&(id.clone(), gone.clone()));
                }
                for target in targets {
                    let key = (id.clone(), target.key.clone());
                    match self.slots.get_mut(&key) {
                        Some(slot) if slot.check.interval == check.interval => {
                            slot.check = check.clone();
                            slot.target = target;
                        }
                        _ => {
                            let due = self.first_due(&key, check.interval, now);
                            let generation = self.push(key.clone(), due);
                            self.slots.insert(key, Slot { check: check.clone(), target, generation });
                        }
                    }
                }
                self.by_check.insert(id, wanted);
            }
            Command::Remove { check_id } => {
                for target in self.by_check.remove(&check_id).unwrap_or_default() {
                    self.slots.remove(&(check_id.clone(), target));
                }
            }
        }
    }

    /// Pops the next due run, if it is due by `now` and still scheduled.
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, Arc<CheckDef>, Arc<Target>)> {
        loop {
            let Reverse((due, generation, _)) = self.heap.peek()?;
            if *due > now {
                return None;
            }
            let (due, generation) = (*due, *generation);
            let Reverse((_, _, key)) = self.heap.pop()?;
            let Some(slot) = self.slots.get(&key) else { continue };
            if slot.generation != generation {
                continue;
            }
            let (check, target) = (slot.check.clone(), slot.target.clone());
            let mut next = due + check.interval;
            if next <= now {
                // A whole interval behind: skip what was missed.
                next = now + check.interval;
            }
            let generation = self.push(key.clone(), next);
            if let Some(slot) = self.slots.get_mut(&key) {
                slot.generation = generation;
            }
            return Some((due, check, target));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }
}

/// Runs the scheduler until `shutdown`; finished runs go to `results`.
pub async fn run(
    mut commands: mpsc::UnboundedReceiver<Command>,
    prober: Prober,
    max_in_flight: usize,
    results: mpsc::Sender<RunResult>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut schedule = Schedule::new();
    let runs = tokio_util::task::TaskTracker::new();
    loop {
        let next = schedule.next_due();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            command = commands.recv() => match command {
                Some(command) => {
                    schedule.apply(command, Instant::now());
                    metrics.scheduled_targets.set(i64::try_from(schedule.slots.len()).unwrap_or(i64::MAX));
                }
                None => break,
            },
            () = tokio::time::sleep_until(next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))),
                if next.is_some() => {
                while let Some((due, check, target)) = schedule.pop_due(Instant::now()) {
                    let permit = tokio::select! {
                        () = shutdown.cancelled() => break,
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                    };
                    let prober = prober.clone();
                    let results = results.clone();
                    let metrics = metrics.clone();
                    runs.spawn(async move {
                        let lag = Instant::now().saturating_duration_since(due);
                        metrics.run_started(lag, lag > ON_SCHEDULE);
                        let at_ms = now_ms();
                        let outcome = prober.run(&check, &target).await;
                        drop(permit);
                        let result = RunResult {
                            check,
                            target,
                            at_ms,
                            ok: outcome.ok,
                            latency_ms: outcome.latency_ms,
                            error: outcome.error,
                        };
                        let _ = results.send(result).await;
                    });
                }
            }
        }
    }
    runs.close();
    // Runs in flight end within their timeouts; their results still count.
    runs.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckRecord, Kind, Spec};

    fn check(id: &str, interval_ms: i64) -> Arc<CheckDef> {
        Arc::new(CheckDef::new(
            CheckRecord {
                id: id.to_owned(),
                team: "t".to_owned(),
                name: id.to_owned(),
                app: String::new(),
                url: "http://127.0.0.1:1/".to_owned(),
                kind: Kind::Http,
                spec: Spec::default(),
                interval_ms,
                timeout_ms: 100,
                fail_after: 3,
                recover_after: 2,
                is_default: false,
                created_at: 0,
            },
            String::new(),
        ))
    }

    fn target(key: &str) -> Arc<Target> {
        Arc::new(Target { key: key.to_owned(), host: "127.0.0.1".to_owned(), port: 1, app_id: String::new() })
    }

    #[test]
    fn offsets_spread_over_the_interval() {
        let interval = Duration::from_secs(10);
        let mut per_second = [0u32; 10];
        for i in 0..10_000 {
            let o = offset(&format!("check-{i}"), "", interval);
            assert!(o < interval);
            per_second[usize::try_from(o.as_secs()).unwrap_or(0)] += 1;
        }
        // 1,000 expected per second; a herd would pile into one.
        assert!(per_second.iter().all(|n| (850..1150).contains(n)), "{per_second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn runs_come_once_per_interval_and_removed_targets_stop() {
        // Every run due in [from, to], popped the way the scheduler's loop
        // does, clock stepping 10 ms, and once more at `to` itself: a
        // target's first run may fall anywhere in its first interval (its
        // offset is placed by the wall clock), up to its last millisecond.
        fn runs_until(schedule: &mut Schedule, from: Instant, to: Instant) -> Vec<(Instant, String)> {
            let mut runs = Vec::new();
            let mut now = from;
            loop {
                while let Some((due, _, t)) = schedule.pop_due(now) {
                    runs.push((due, t.key.clone()));
                }
                if now >= to {
                    return runs;
                }
                now = (now + Duration::from_millis(10)).min(to);
            }
        }
        let mut schedule = Schedule::new();
        let start = Instant::now();
        schedule.apply(Command::Set { check: check("a", 1000), targets: vec![target("i1"), target("i2")] }, start);
        // Three intervals: each target's first run is in [start, start + 999 ms].
        let mut now = start + Duration::from_millis(2999);
        let runs = runs_until(&mut schedule, start, now);
        assert_eq!(runs.iter().filter(|(_, k)| k == "i1").count(), 3, "{runs:?}");
        assert_eq!(runs.iter().filter(|(_, k)| k == "i2").count(), 3, "{runs:?}");

        schedule.apply(Command::Set { check: check("a", 1000), targets: vec![target("i2")] }, now);
        let end = now + Duration::from_millis(2000);
        let later: Vec<String> = runs_until(&mut schedule, now, end).into_iter().map(|(_, k)| k).collect();
        now = end;
        assert_eq!(later, vec!["i2".to_owned(), "i2".to_owned()]);

        schedule.apply(Command::Remove { check_id: "a".to_owned() }, now);
        assert!(schedule.pop_due(now + Duration::from_secs(5)).is_none());
    }
}

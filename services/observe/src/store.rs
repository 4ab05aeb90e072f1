//! The only place observe touches its own SQL.

use sqlx::{AnyConnection, Row, any::AnyRow};
use strata_events::{CloudEvent, EventTx, Outbox};

use crate::model::{
    AlertRecord, ChannelRecord, CheckRecord, Condition, EventFilter, Histogram, InstanceRecord, Kind, LoggedEvent,
    RuleRecord, RunResult, Spec, State,
};

type Result<T> = std::result::Result<T, sqlx::Error>;

/// Observe's database.
#[derive(Debug, Clone)]
pub struct Store {
    outbox: Outbox,
}

const CHECK_COLUMNS: &str = "id, team, name, app, url, kind, spec, interval_ms, timeout_ms, fail_after, recover_after, \
                             is_default, created_at";
const RULE_COLUMNS: &str = "id, team, name, condition, app, check_name, channels, crash_restarts, created_at";
const ALERT_COLUMNS: &str = "id, team, rule_id, rule, condition, app, check_name, alert_key, summary, is_open, \
                             fired_at, resolved_at";
const EVENT_COLUMNS: &str = "seq, event_id, type, source, subject, team, app, time_ms, data";
const BUCKETS: &str = "b0, b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11";

fn decode_error(what: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("stored {what} {value:?} is not valid").into())
}

fn check_of(row: &AnyRow) -> Result<CheckRecord> {
    let kind: String = row.try_get("kind")?;
    let spec: String = row.try_get("spec")?;
    Ok(CheckRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        app: row.try_get("app")?,
        url: row.try_get("url")?,
        kind: Kind::parse(&kind).ok_or_else(|| decode_error("check kind", &kind))?,
        spec: serde_json::from_str::<Spec>(&spec).map_err(|_| decode_error("check spec", &spec))?,
        interval_ms: row.try_get("interval_ms")?,
        timeout_ms: row.try_get("timeout_ms")?,
        fail_after: u32::try_from(row.try_get::<i64, _>("fail_after")?).unwrap_or(3),
        recover_after: u32::try_from(row.try_get::<i64, _>("recover_after")?).unwrap_or(2),
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn instance_of(row: &AnyRow) -> Result<InstanceRecord> {
    Ok(InstanceRecord {
        instance_id: row.try_get("instance_id")?,
        team: row.try_get("team")?,
        app_id: row.try_get("app_id")?,
        app: row.try_get("app")?,
        host: row.try_get("host")?,
        port: u16::try_from(row.try_get::<i64, _>("port")?).unwrap_or(0),
    })
}

fn channel_of(row: &AnyRow) -> Result<ChannelRecord> {
    Ok(ChannelRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        target: row.try_get("target")?,
        secret: row.try_get("secret")?,
        created_at: row.try_get("created_at")?,
    })
}

fn rule_of(row: &AnyRow) -> Result<RuleRecord> {
    let condition: String = row.try_get("condition")?;
    let channels: String = row.try_get("channels")?;
    Ok(RuleRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        name: row.try_get("name")?,
        condition: Condition::parse(&condition).ok_or_else(|| decode_error("rule condition", &condition))?,
        app: row.try_get("app")?,
        check: row.try_get("check_name")?,
        channels: serde_json::from_str(&channels).map_err(|_| decode_error("rule channels", &channels))?,
        crash_restarts: u32::try_from(row.try_get::<i64, _>("crash_restarts")?).unwrap_or(3),
        created_at: row.try_get("created_at")?,
    })
}

fn alert_of(row: &AnyRow) -> Result<AlertRecord> {
    let condition: String = row.try_get("condition")?;
    Ok(AlertRecord {
        id: row.try_get("id")?,
        team: row.try_get("team")?,
        rule_id: row.try_get("rule_id")?,
        rule: row.try_get("rule")?,
        condition: Condition::parse(&condition).ok_or_else(|| decode_error("alert condition", &condition))?,
        app: row.try_get("app")?,
        check: row.try_get("check_name")?,
        key: row.try_get("alert_key")?,
        summary: row.try_get("summary")?,
        open: row.try_get::<i64, _>("is_open")? != 0,
        fired_at: row.try_get("fired_at")?,
        resolved_at: row.try_get("resolved_at")?,
    })
}

fn event_of(row: &AnyRow) -> Result<LoggedEvent> {
    Ok(LoggedEvent {
        seq: row.try_get("seq")?,
        id: row.try_get("event_id")?,
        ty: row.try_get("type")?,
        source: row.try_get("source")?,
        subject: row.try_get("subject")?,
        team: row.try_get("team")?,
        app: row.try_get("app")?,
        time_ms: row.try_get("time_ms")?,
        data: row.try_get("data")?,
    })
}

fn histogram_of(row: &AnyRow) -> Result<Histogram> {
    let mut h = Histogram {
        runs: u64::try_from(row.try_get::<Option<i64>, _>("runs")?.unwrap_or(0)).unwrap_or(0),
        ok: u64::try_from(row.try_get::<Option<i64>, _>("ok")?.unwrap_or(0)).unwrap_or(0),
        buckets: [0; 12],
    };
    for (i, bucket) in h.buckets.iter_mut().enumerate() {
        *bucket = u64::try_from(row.try_get::<Option<i64>, _>(format!("b{i}").as_str())?.unwrap_or(0)).unwrap_or(0);
    }
    Ok(h)
}

/// `($1, $2, ...), ($n+1, ...)`: numbered placeholders for `rows` rows of
/// `columns` values (the Any driver's QueryBuilder writes `?`, which
/// Postgres refuses).
fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// The store in the outbox's database.
    pub fn new(outbox: Outbox) -> Self {
        Self { outbox }
    }

    fn pool(&self) -> &sqlx::AnyPool {
        self.outbox.db().pool()
    }

    /// Starts a write transaction that can carry events.
    pub async fn begin(&self) -> Result<EventTx> {
        self.outbox.begin().await
    }

    // ---- apps and instances (learned from compute) ----

    /// Records an app's id (from compute's events).
    pub async fn app_upsert(conn: &mut AnyConnection, team: &str, app: &str, app_id: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO apps (team, app, app_id, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (team, app) DO UPDATE SET app_id = excluded.app_id, updated_at = excluded.updated_at",
        )
        .bind(team)
        .bind(app)
        .bind(app_id)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Forgets an app and its instances.
    pub async fn app_delete(conn: &mut AnyConnection, team: &str, app: &str) -> Result<()> {
        sqlx::query("DELETE FROM apps WHERE team = $1 AND app = $2").bind(team).bind(app).execute(&mut *conn).await?;
        sqlx::query("DELETE FROM instances WHERE team = $1 AND app = $2").bind(team).bind(app).execute(conn).await?;
        Ok(())
    }

    /// The id of a team's app, when known.
    pub async fn app_id(&self, team: &str, app: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT app_id FROM apps WHERE team = $1 AND app = $2")
            .bind(team)
            .bind(app)
            .fetch_optional(self.pool())
            .await
    }

    /// Records an instance where it listens now.
    pub async fn instance_upsert(conn: &mut AnyConnection, instance: &InstanceRecord, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO instances (instance_id, team, app_id, app, host, port, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (instance_id) DO UPDATE SET \
             host = excluded.host, port = excluded.port, updated_at = excluded.updated_at",
        )
        .bind(&instance.instance_id)
        .bind(&instance.team)
        .bind(&instance.app_id)
        .bind(&instance.app)
        .bind(&instance.host)
        .bind(i64::from(instance.port))
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Forgets an instance and its targets' states.
    pub async fn instance_delete(conn: &mut AnyConnection, instance_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM instances WHERE instance_id = $1").bind(instance_id).execute(&mut *conn).await?;
        sqlx::query("DELETE FROM target_states WHERE target = $1").bind(instance_id).execute(conn).await?;
        Ok(())
    }

    /// The known instances of a team's app.
    pub async fn instances_of(&self, team: &str, app: &str) -> Result<Vec<InstanceRecord>> {
        sqlx::query(
            "SELECT instance_id, team, app_id, app, host, port FROM instances WHERE team = $1 AND app = $2 \
             ORDER BY instance_id",
        )
        .bind(team)
        .bind(app)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(instance_of)
        .collect()
    }

    // ---- checks ----

    /// Inserts a check.
    pub async fn check_insert(conn: &mut AnyConnection, check: &CheckRecord) -> Result<()> {
        let spec = serde_json::to_string(&check.spec).map_err(|e| sqlx::Error::Encode(e.into()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO checks ({CHECK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )))
        .bind(&check.id)
        .bind(&check.team)
        .bind(&check.name)
        .bind(&check.app)
        .bind(&check.url)
        .bind(check.kind.as_str())
        .bind(spec)
        .bind(check.interval_ms)
        .bind(check.timeout_ms)
        .bind(i64::from(check.fail_after))
        .bind(i64::from(check.recover_after))
        .bind(i64::from(check.is_default))
        .bind(check.created_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A team's check by name.
    pub async fn check_by_name(&self, team: &str, name: &str) -> Result<Option<CheckRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {CHECK_COLUMNS} FROM checks WHERE team = $1 AND name = $2")))
            .bind(team)
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(check_of)
            .transpose()
    }

    /// A check by id.
    pub async fn check_by_id(&self, id: &str) -> Result<Option<CheckRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {CHECK_COLUMNS} FROM checks WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(check_of)
            .transpose()
    }

    /// The team's checks (of `app` when given), by name.
    pub async fn checks_list(&self, team: &str, app: Option<&str>) -> Result<Vec<CheckRecord>> {
        let rows = match app {
            Some(app) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CHECK_COLUMNS} FROM checks WHERE team = $1 AND app = $2 ORDER BY name"
                )))
                .bind(team)
                .bind(app)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {CHECK_COLUMNS} FROM checks WHERE team = $1 ORDER BY name"
                )))
                .bind(team)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter().map(check_of).collect()
    }

    /// Every (team, app) that has checks: what the scheduler loads at start.
    pub async fn check_groups(&self) -> Result<Vec<(String, String)>> {
        sqlx::query("SELECT DISTINCT team, app FROM checks")
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("team")?, row.try_get("app")?)))
            .collect()
    }

    /// The checks of (team, app), inside a transaction.
    pub async fn checks_in(conn: &mut AnyConnection, team: &str, app: &str) -> Result<Vec<CheckRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {CHECK_COLUMNS} FROM checks WHERE team = $1 AND app = $2")))
            .bind(team)
            .bind(app)
            .fetch_all(conn)
            .await?
            .iter()
            .map(check_of)
            .collect()
    }

    /// Deletes a check with its states, results and rollups.
    pub async fn check_delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM checks WHERE id = $1").bind(id).execute(&mut *conn).await?;
        sqlx::query("DELETE FROM target_states WHERE check_id = $1").bind(id).execute(&mut *conn).await?;
        sqlx::query("DELETE FROM rollups WHERE check_id = $1").bind(id).execute(&mut *conn).await?;
        sqlx::query("DELETE FROM results WHERE check_id = $1").bind(id).execute(conn).await?;
        Ok(())
    }

    // ---- target states ----

    /// Records a target's confirmed state.
    pub async fn target_state_set(
        conn: &mut AnyConnection,
        check_id: &str,
        target: &str,
        state: State,
        since: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO target_states (check_id, target, state, since) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (check_id, target) DO UPDATE SET state = excluded.state, since = excluded.since",
        )
        .bind(check_id)
        .bind(target)
        .bind(state.as_str())
        .bind(since)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The stored states of a check's targets: (target, state, since).
    pub async fn target_states(&self, check_id: &str) -> Result<Vec<(String, State, i64)>> {
        sqlx::query("SELECT target, state, since FROM target_states WHERE check_id = $1")
            .bind(check_id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| {
                Ok((row.try_get("target")?, State::parse(&row.try_get::<String, _>("state")?), row.try_get("since")?))
            })
            .collect()
    }

    // ---- results and rollups ----

    /// Writes a batch of results (multi-row statements: one round trip per
    /// 100 results).
    pub async fn results_insert(conn: &mut AnyConnection, results: &[RunResult]) -> Result<()> {
        for chunk in results.chunks(100) {
            let sql = format!(
                "INSERT INTO results (check_id, target, at, ok, latency_ms, error) VALUES {}",
                placeholders(chunk.len(), 6)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for r in chunk {
                query = query
                    .bind(r.check.record.id.clone())
                    .bind(r.target.key.clone())
                    .bind(r.at_ms)
                    .bind(i64::from(r.ok))
                    .bind(i64::from(r.latency_ms))
                    .bind(r.error.clone());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Adds per-minute histograms to the rollups.
    pub async fn rollups_add(conn: &mut AnyConnection, rollups: &[(String, i64, Histogram)]) -> Result<()> {
        for chunk in rollups.chunks(50) {
            let updates: Vec<String> = (0..12).map(|i| format!("b{i} = rollups.b{i} + excluded.b{i}")).collect();
            let sql = format!(
                "INSERT INTO rollups (check_id, minute, runs, ok, {BUCKETS}) VALUES {} \
                 ON CONFLICT (check_id, minute) DO UPDATE SET runs = rollups.runs + excluded.runs, \
                 ok = rollups.ok + excluded.ok, {}",
                placeholders(chunk.len(), 16),
                updates.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (check_id, minute, h) in chunk {
                query = query.bind(check_id.clone()).bind(*minute).bind(i64_of(h.runs)).bind(i64_of(h.ok));
                for bucket in h.buckets {
                    query = query.bind(i64_of(bucket));
                }
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The latest results of a check, newest first: (target, at, ok, latency, error).
    pub async fn history(&self, check_id: &str, limit: i64) -> Result<Vec<(String, i64, bool, u32, String)>> {
        sqlx::query(
            "SELECT target, at, ok, latency_ms, error FROM results WHERE check_id = $1 ORDER BY at DESC LIMIT $2",
        )
        .bind(check_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("target")?,
                row.try_get("at")?,
                row.try_get::<i64, _>("ok")? != 0,
                u32::try_from(row.try_get::<i64, _>("latency_ms")?).unwrap_or(u32::MAX),
                row.try_get("error")?,
            ))
        })
        .collect()
    }

    /// A check's runs since `minute` (Unix minutes). Sums are cast: Postgres
    /// sums BIGINTs into NUMERIC, which the Any driver cannot decode.
    pub async fn stats(&self, check_id: &str, since_minute: i64) -> Result<Histogram> {
        let sums: Vec<String> = (0..12).map(|i| format!("CAST(SUM(b{i}) AS BIGINT) AS b{i}")).collect();
        let sql = format!(
            "SELECT CAST(SUM(runs) AS BIGINT) AS runs, CAST(SUM(ok) AS BIGINT) AS ok, {} FROM rollups WHERE check_id = $1 AND minute >= $2",
            sums.join(", ")
        );
        let row =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(check_id).bind(since_minute).fetch_one(self.pool()).await?;
        histogram_of(&row)
    }

    /// Every app's runs since `minute`: (team, app, histogram).
    pub async fn app_stats(&self, since_minute: i64) -> Result<Vec<(String, String, Histogram)>> {
        let sums: Vec<String> = (0..12).map(|i| format!("CAST(SUM(r.b{i}) AS BIGINT) AS b{i}")).collect();
        let sql = format!(
            "SELECT c.team AS team, c.app AS app, CAST(SUM(r.runs) AS BIGINT) AS runs, CAST(SUM(r.ok) AS BIGINT) AS ok, {} \
             FROM rollups r JOIN checks c ON c.id = r.check_id WHERE r.minute >= $1 GROUP BY c.team, c.app",
            sums.join(", ")
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(since_minute)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| Ok((row.try_get("team")?, row.try_get("app")?, histogram_of(row)?)))
            .collect()
    }

    /// Drops results before `results_before` (ms) and rollups before `rollups_before` (minutes).
    pub async fn prune(&self, results_before: i64, rollups_before: i64) -> Result<()> {
        sqlx::query("DELETE FROM results WHERE at < $1").bind(results_before).execute(self.pool()).await?;
        sqlx::query("DELETE FROM rollups WHERE minute < $1").bind(rollups_before).execute(self.pool()).await?;
        sqlx::query("DELETE FROM deliveries WHERE state <> 'pending' AND created_at < $1")
            .bind(results_before)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- channels ----

    /// Inserts a channel.
    pub async fn channel_insert(conn: &mut AnyConnection, channel: &ChannelRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO channels (id, team, name, kind, target, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&channel.id)
        .bind(&channel.team)
        .bind(&channel.name)
        .bind(&channel.kind)
        .bind(&channel.target)
        .bind(&channel.secret)
        .bind(channel.created_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A team's channels, by name.
    pub async fn channels_list(&self, team: &str) -> Result<Vec<ChannelRecord>> {
        sqlx::query(
            "SELECT id, team, name, kind, target, secret, created_at FROM channels WHERE team = $1 ORDER BY name",
        )
        .bind(team)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(channel_of)
        .collect()
    }

    /// A channel by id (for delivery).
    pub async fn channel_by_id(&self, id: &str) -> Result<Option<ChannelRecord>> {
        sqlx::query("SELECT id, team, name, kind, target, secret, created_at FROM channels WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .as_ref()
            .map(channel_of)
            .transpose()
    }

    /// A team's channel by name, inside a transaction.
    pub async fn channel_by_name(conn: &mut AnyConnection, team: &str, name: &str) -> Result<Option<ChannelRecord>> {
        sqlx::query(
            "SELECT id, team, name, kind, target, secret, created_at FROM channels WHERE team = $1 AND name = $2",
        )
        .bind(team)
        .bind(name)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(channel_of)
        .transpose()
    }

    /// Deletes a channel; whether there was one.
    pub async fn channel_delete(&self, team: &str, name: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM channels WHERE team = $1 AND name = $2")
            .bind(team)
            .bind(name)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    // ---- rules and alerts ----

    /// Inserts an alert rule.
    pub async fn rule_insert(conn: &mut AnyConnection, rule: &RuleRecord) -> Result<()> {
        let channels = serde_json::to_string(&rule.channels).map_err(|e| sqlx::Error::Encode(e.into()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO rules ({RULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .bind(&rule.id)
        .bind(&rule.team)
        .bind(&rule.name)
        .bind(rule.condition.as_str())
        .bind(&rule.app)
        .bind(&rule.check)
        .bind(channels)
        .bind(i64::from(rule.crash_restarts))
        .bind(rule.created_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A team's alert rules, by name.
    pub async fn rules_list(&self, team: &str) -> Result<Vec<RuleRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RULE_COLUMNS} FROM rules WHERE team = $1 ORDER BY name")))
            .bind(team)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(rule_of)
            .collect()
    }

    /// A team's rules on `condition`, inside a transaction.
    pub async fn rules_for(conn: &mut AnyConnection, team: &str, condition: Condition) -> Result<Vec<RuleRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RULE_COLUMNS} FROM rules WHERE team = $1 AND condition = $2 ORDER BY name"
        )))
        .bind(team)
        .bind(condition.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(rule_of)
        .collect()
    }

    /// Deletes a rule; whether there was one.
    pub async fn rule_delete(&self, team: &str, name: &str) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM rules WHERE team = $1 AND name = $2")
            .bind(team)
            .bind(name)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(deleted > 0)
    }

    /// The open alert of a rule about `key`, if any.
    pub async fn alert_open(conn: &mut AnyConnection, rule_id: &str, key: &str) -> Result<Option<AlertRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE rule_id = $1 AND alert_key = $2 AND is_open = 1"
        )))
        .bind(rule_id)
        .bind(key)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(alert_of)
        .transpose()
    }

    /// Open alerts of the team about `key` under `condition`.
    pub async fn alerts_open_for(
        conn: &mut AnyConnection,
        team: &str,
        condition: Condition,
        key: &str,
    ) -> Result<Vec<AlertRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE team = $1 AND condition = $2 AND alert_key = $3 AND is_open = 1"
        )))
        .bind(team)
        .bind(condition.as_str())
        .bind(key)
        .fetch_all(conn)
        .await?
        .iter()
        .map(alert_of)
        .collect()
    }

    /// Inserts an alert.
    pub async fn alert_insert(conn: &mut AnyConnection, alert: &AlertRecord) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )))
        .bind(&alert.id)
        .bind(&alert.team)
        .bind(&alert.rule_id)
        .bind(&alert.rule)
        .bind(alert.condition.as_str())
        .bind(&alert.app)
        .bind(&alert.check)
        .bind(&alert.key)
        .bind(&alert.summary)
        .bind(i64::from(alert.open))
        .bind(alert.fired_at)
        .bind(alert.resolved_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Marks an alert resolved at `at`.
    pub async fn alert_resolve(conn: &mut AnyConnection, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE alerts SET is_open = 0, resolved_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// A team's latest alerts, open ones first.
    pub async fn alerts_list(&self, team: &str) -> Result<Vec<AlertRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE team = $1 ORDER BY is_open DESC, fired_at DESC LIMIT 500"
        )))
        .bind(team)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(alert_of)
        .collect()
    }

    // ---- deliveries ----

    /// Queues a delivery of `payload` to a channel, due now.
    pub async fn delivery_insert(
        conn: &mut AnyConnection,
        id: &str,
        team: &str,
        channel_id: &str,
        payload: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO deliveries (id, team, channel_id, payload, attempts, next_at, state, last_error, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5, 'pending', '', $5)",
        )
        .bind(id)
        .bind(team)
        .bind(channel_id)
        .bind(payload)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Pending deliveries due by `now`: (id, channel id, payload, attempts).
    pub async fn deliveries_due(&self, now: i64, limit: i64) -> Result<Vec<(String, String, String, u32)>> {
        sqlx::query(
            "SELECT id, channel_id, payload, attempts FROM deliveries WHERE state = 'pending' AND next_at <= $1 \
             ORDER BY next_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get("id")?,
                row.try_get("channel_id")?,
                row.try_get("payload")?,
                u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
            ))
        })
        .collect()
    }

    /// When the next pending delivery is due (ms), if any.
    pub async fn next_delivery_at(&self) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT MIN(next_at) FROM deliveries WHERE state = 'pending'").fetch_one(self.pool()).await
    }

    /// Records an attempt: `state` is pending (retry at `next_at`), delivered or failed.
    pub async fn delivery_attempted(
        &self,
        id: &str,
        attempts: u32,
        state: &str,
        next_at: i64,
        error: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE deliveries SET attempts = $2, state = $3, next_at = $4, last_error = $5 WHERE id = $1")
            .bind(id)
            .bind(i64::from(attempts))
            .bind(state)
            .bind(next_at)
            .bind(error)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    // ---- the event log ----

    /// Appends an event; returns its position.
    pub async fn event_insert(conn: &mut AnyConnection, event: &CloudEvent, app: &str, time_ms: i64) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO event_log (event_id, type, source, subject, team, app, time_ms, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
        )
        .bind(&event.id)
        .bind(&event.ty)
        .bind(&event.source)
        .bind(&event.subject)
        .bind(&event.team)
        .bind(app)
        .bind(time_ms)
        .bind(event.data.to_string())
        .fetch_one(conn)
        .await
    }

    /// Drops events logged before `before` (ms).
    pub async fn event_log_prune(&self, before: i64) -> Result<()> {
        sqlx::query("DELETE FROM event_log WHERE time_ms < $1").bind(before).execute(self.pool()).await?;
        Ok(())
    }

    /// The latest `filter.limit` matching events, oldest first.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<LoggedEvent>> {
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM event_log WHERE team = $1 AND seq > $2");
        let mut n = 2;
        let mut next = |clause: &str| {
            n += 1;
            format!(" AND {clause} ${n}")
        };
        if !filter.app.is_empty() {
            sql += &next("app =");
        }
        if !filter.ty.is_empty() {
            sql += &next("type LIKE");
        }
        if filter.since_ms.is_some() {
            sql += &next("time_ms >=");
        }
        if filter.until_ms.is_some() {
            sql += &next("time_ms <=");
        }
        sql += &format!(" ORDER BY seq DESC LIMIT ${}", n + 1);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(filter.team.clone()).bind(filter.after_seq);
        if !filter.app.is_empty() {
            query = query.bind(filter.app.clone());
        }
        if !filter.ty.is_empty() {
            // A plain substring: LIKE's wildcards are dropped (event types have none).
            let escaped = filter.ty.replace(['%', '_'], "");
            query = query.bind(format!("%{escaped}%"));
        }
        if let Some(since) = filter.since_ms {
            query = query.bind(since);
        }
        if let Some(until) = filter.until_ms {
            query = query.bind(until);
        }
        let mut events: Vec<LoggedEvent> =
            query.bind(filter.limit).fetch_all(self.pool()).await?.iter().map(event_of).collect::<Result<_>>()?;
        events.reverse();
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}

//! The traffic domain: routes owned by teams, endpoints learned from
//! compute's events, and the routing table built from both.
//!
//! Every change is committed with its event first; the table is then rebuilt
//! from the database and swapped in whole. A rebuild that cannot read the
//! database keeps the last table: the ingress goes on serving what it knew
//! (static stability).

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use strata_events::{CloudEvent, EventTx, HandleError};
use strata_kit::{ApiError, Identity, error::validate_name, store::now_ms};
use strata_proto::{compute::v1 as compute_pb, traffic::v1 as pb};
use tokio::sync::Notify;

use crate::{
    events,
    model::{EndpointRecord, RouteRecord, RouteSpec},
    stats::Snapshot,
    store::{self, Store},
    table::{self, Served, Shared, Table},
    upstream::Upstreams,
};

/// The traffic service's state.
#[derive(Clone)]
pub struct Traffic {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    table: Arc<ArcSwap<Table>>,
    /// What the current table serves (explicit and default routes).
    served: ArcSwap<Vec<Served>>,
    shared: Mutex<Shared>,
    /// Serialises rebuilds, so an older snapshot never replaces a newer one.
    rebuilding: tokio::sync::Mutex<()>,
    rebuild_wanted: Notify,
    workers: usize,
    upstreams: Vec<Arc<Upstreams>>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic").field("workers", &self.inner.workers).finish()
    }
}

/// An endpoint as the API shows it.
#[derive(Debug, Clone)]
pub struct EndpointView {
    pub record: EndpointRecord,
    pub in_flight: u32,
    pub ejected: bool,
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no route named {name} in your team; see `strata routes list`"))
}

impl Traffic {
    pub fn new(store: Store, workers: usize, upstreams: Vec<Arc<Upstreams>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                table: Arc::new(ArcSwap::from_pointee(Table::default())),
                served: ArcSwap::from_pointee(Vec::new()),
                shared: Mutex::new(Shared::default()),
                rebuilding: tokio::sync::Mutex::new(()),
                rebuild_wanted: Notify::new(),
                workers,
                upstreams,
            }),
        }
    }

    /// The table the ingress reads.
    pub fn table(&self) -> Arc<ArcSwap<Table>> {
        self.inner.table.clone()
    }

    /// Rebuilds the table from the database and swaps it in.
    pub async fn rebuild(&self) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.inner.rebuilding.lock().await;
        let store = &self.inner.store;
        let routes = store.routes_all().await?;
        let endpoints = store.endpoints_all().await?;
        let apps = store.apps_all().await?;
        let mut served: Vec<Served> = routes.iter().map(|r| Served { record: r.clone(), is_default: false }).collect();
        served.extend(table::default_routes(&routes, &endpoints, &apps));
        let table = {
            let mut shared = self.inner.shared.lock().map_err(|_| sqlx::Error::PoolClosed)?;
            let table = table::build(&served, &endpoints, &mut shared, self.inner.workers);
            let live: std::collections::HashSet<_> = shared.endpoints().map(|e| e.addr).collect();
            for upstreams in &self.inner.upstreams {
                upstreams.retain(|addr| live.contains(addr));
            }
            table
        };
        self.inner.table.store(Arc::new(table));
        self.inner.served.store(Arc::new(served));
        Ok(())
    }

    /// Asks the rebuild task for a fresh table.
    pub fn rebuild_soon(&self) {
        self.inner.rebuild_wanted.notify_one();
    }

    /// Rebuilds whenever asked, until `shutdown`; retries while the database
    /// is unavailable (serving the last table meanwhile).
    pub async fn run_rebuilder(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.inner.rebuild_wanted.notified() => {}
            }
            if let Err(error) = self.rebuild().await {
                tracing::warn!(%error, "cannot rebuild the routing table; serving the last one");
                self.rebuild_soon();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }

    async fn rebuilt(&self) -> Result<(), ApiError> {
        self.rebuild().await.map_err(ApiError::from)
    }

    /// Refuses a spec that another team's route (or default route) could
    /// match as well, and the same match twice in one team.
    fn check_overlaps(&self, team: &str, id: &str, spec: &RouteSpec, routes: &[RouteRecord]) -> Result<(), ApiError> {
        for other in routes.iter().filter(|r| r.id != id) {
            if other.team != team && other.spec.overlaps(spec) {
                return Err(ApiError::PermissionDenied(format!(
                    "host {} with path {} overlaps a route of another team ({} {}); choose another host or path",
                    spec.host, spec.path_prefix, other.spec.host, other.spec.path_prefix
                )));
            }
            if other.team == team && other.spec.host == spec.host && other.spec.path_prefix == spec.path_prefix {
                return Err(ApiError::AlreadyExists(format!(
                    "route {} already sends {}{} somewhere; update it instead",
                    other.name, spec.host, spec.path_prefix
                )));
            }
        }
        let served = self.inner.served.load();
        if let Some(default) =
            served.iter().find(|s| s.is_default && s.record.team != team && s.record.spec.overlaps(spec))
        {
            return Err(ApiError::PermissionDenied(format!(
                "host {} is the default host of another team's app; choose another host",
                default.record.spec.host
            )));
        }
        Ok(())
    }

    pub async fn route_create(&self, who: &Identity, name: &str, spec: RouteSpec) -> Result<Served, ApiError> {
        who.require_write()?;
        validate_name("route", name)?;
        let spec = spec.validated()?;
        let mut tx = self.inner.store.begin().await?;
        if store::route_by_name(tx.conn(), &who.team, name).await?.is_some() {
            return Err(ApiError::AlreadyExists(format!(
                "route {name} already exists; update it or pick another name"
            )));
        }
        let routes = store::routes_in(tx.conn()).await?;
        let id = uuid::Uuid::now_v7().to_string();
        self.check_overlaps(&who.team, &id, &spec, &routes)?;
        let now = now_ms();
        let record =
            RouteRecord { id, team: who.team.clone(), name: name.to_owned(), spec, created_at: now, updated_at: now };
        store::route_insert(tx.conn(), &record).await?;
        let served = Served { record, is_default: false };
        tx.emit(
            events::ROUTE_CREATED,
            &served.record.id,
            &who.team,
            &pb::RouteCreated { route: Some(route_pb(&served)) },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(team = %who.team, route = %name, host = %served.record.spec.host, "route created");
        self.rebuilt().await?;
        Ok(served)
    }

    pub async fn route_update(&self, who: &Identity, name: &str, spec: RouteSpec) -> Result<Served, ApiError> {
        who.require_write()?;
        let spec = spec.validated()?;
        let mut tx = self.inner.store.begin().await?;
        let Some(mut record) = store::route_by_name(tx.conn(), &who.team, name).await? else {
            return Err(if name.starts_with("default:") {
                ApiError::FailedPrecondition(format!(
                    "{name} is a default route; create a route of your own for the app and the default goes away"
                ))
            } else {
                not_found(name)
            });
        };
        let routes = store::routes_in(tx.conn()).await?;
        self.check_overlaps(&who.team, &record.id, &spec, &routes)?;
        record.spec = spec;
        record.updated_at = now_ms();
        store::route_update(tx.conn(), &record).await?;
        let served = Served { record, is_default: false };
        tx.emit(
            events::ROUTE_UPDATED,
            &served.record.id,
            &who.team,
            &pb::RouteUpdated { route: Some(route_pb(&served)) },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(team = %who.team, route = %name, "route updated");
        self.rebuilt().await?;
        Ok(served)
    }

    pub async fn route_delete(&self, who: &Identity, name: &str) -> Result<(), ApiError> {
        who.require_write()?;
        let mut tx = self.inner.store.begin().await?;
        let Some(record) = store::route_by_name(tx.conn(), &who.team, name).await? else {
            return Err(not_found(name));
        };
        store::route_delete(tx.conn(), &record.id).await?;
        tx.emit(events::ROUTE_DELETED, &record.id, &who.team, &deleted_pb(&record, "deleted")).await?;
        tx.commit().await?;
        tracing::info!(team = %who.team, route = %name, "route deleted");
        self.rebuilt().await
    }

    /// A route of the caller's team, explicit or default.
    pub fn route_get(&self, who: &Identity, name: &str) -> Result<Served, ApiError> {
        self.inner
            .served
            .load()
            .iter()
            .find(|s| s.record.team == who.team && s.record.name == name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// The caller's routes (optionally only those to `app`), explicit first.
    pub fn route_list(&self, who: &Identity, app: &str) -> Vec<Served> {
        self.inner
            .served
            .load()
            .iter()
            .filter(|s| s.record.team == who.team && (app.is_empty() || s.record.spec.targets(app)))
            .cloned()
            .collect()
    }

    pub fn route_stats(&self, who: &Identity, name: &str) -> Result<Snapshot, ApiError> {
        let route = self.route_get(who, name)?;
        let shared = self.inner.shared.lock().map_err(|_| ApiError::Internal("statistics unavailable".into()))?;
        Ok(shared.stats(&route.record.id).map(|s| s.snapshot()).unwrap_or_default())
    }

    /// Every route's labels and counters (for the metrics endpoint).
    pub fn all_stats(&self) -> Vec<(crate::stats::RouteLabels, Snapshot)> {
        match self.inner.shared.lock() {
            Ok(shared) => shared.all_stats().map(|(labels, stats)| (labels.clone(), stats.snapshot())).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub async fn endpoint_list(&self, who: &Identity, app: &str) -> Result<Vec<EndpointView>, ApiError> {
        let records = self.inner.store.endpoints_all().await?;
        let shared = self.inner.shared.lock().map_err(|_| ApiError::Internal("endpoints unavailable".into()))?;
        Ok(records
            .into_iter()
            .filter(|r| r.team == who.team && (app.is_empty() || r.app == app))
            .map(|record| {
                let state = shared.endpoint(&record.instance_id);
                EndpointView {
                    in_flight: state.map_or(0, |s| s.in_flight()),
                    ejected: state.is_some_and(|s| s.ejected()),
                    record,
                }
            })
            .collect())
    }

    /// Applies one of compute's or observe's events inside the consumer's
    /// transaction; the table is rebuilt once it is committed.
    pub async fn apply_event(&self, tx: &mut EventTx, event: &CloudEvent) -> Result<(), HandleError> {
        let malformed = |e: serde_json::Error| HandleError::Fatal(format!("malformed {}: {e}", event.ty));
        let team = event.team.as_str();
        if events::INSTANCE_STARTED.matches(event) {
            let started: compute_pb::InstanceStarted = event.data_as().map_err(malformed)?;
            store::app_seen(tx.conn(), team, &started.app, now_ms()).await.map_err(retry)?;
            let record = EndpointRecord {
                instance_id: started.instance_id,
                team: team.to_owned(),
                app: started.app,
                release: started.release_version,
                host: started.host,
                port: u16::try_from(started.port).map_err(|_| HandleError::Fatal("port out of range".into()))?,
                check_failed: false,
            };
            store::endpoint_upsert(tx.conn(), &record).await.map_err(retry)?;
        } else if events::INSTANCE_STOPPING.matches(event) {
            let gone: compute_pb::InstanceStopping = event.data_as().map_err(malformed)?;
            store::endpoint_delete(tx.conn(), &gone.instance_id).await.map_err(retry)?;
        } else if events::INSTANCE_STOPPED.matches(event) {
            let gone: compute_pb::InstanceStopped = event.data_as().map_err(malformed)?;
            store::endpoint_delete(tx.conn(), &gone.instance_id).await.map_err(retry)?;
        } else if events::INSTANCE_CRASHED.matches(event) {
            let gone: compute_pb::InstanceCrashed = event.data_as().map_err(malformed)?;
            store::endpoint_delete(tx.conn(), &gone.instance_id).await.map_err(retry)?;
        } else if events::APP_CREATED.matches(event) {
            let created: compute_pb::AppCreated = event.data_as().map_err(malformed)?;
            store::app_seen(tx.conn(), team, &created.app, now_ms()).await.map_err(retry)?;
        } else if events::APP_DELETED.matches(event) {
            let deleted: compute_pb::AppDeleted = event.data_as().map_err(malformed)?;
            self.app_deleted(tx, team, &deleted.app).await.map_err(retry)?;
        } else if events::CHECK_FAILED.matches(event) {
            let failed: CheckTarget = event.data_as().map_err(malformed)?;
            if !failed.instance_id.is_empty() {
                store::endpoint_check(tx.conn(), &failed.instance_id, true).await.map_err(retry)?;
            }
        } else if events::CHECK_RECOVERED.matches(event) {
            let recovered: CheckTarget = event.data_as().map_err(malformed)?;
            if !recovered.instance_id.is_empty() {
                store::endpoint_check(tx.conn(), &recovered.instance_id, false).await.map_err(retry)?;
            }
        }
        Ok(())
    }

    /// An app is gone: its endpoints, and its routes (or its share of routes
    /// that split with other apps) go too, each with its event.
    async fn app_deleted(&self, tx: &mut EventTx, team: &str, app: &str) -> Result<(), ApiError> {
        store::app_delete(tx.conn(), team, app).await?;
        for mut route in store::routes_in(tx.conn()).await? {
            if route.team != team || !route.spec.targets(app) {
                continue;
            }
            route.spec.backends.retain(|b| b.app != app);
            if route.spec.backends.iter().all(|b| b.weight == 0) {
                store::route_delete(tx.conn(), &route.id).await?;
                tx.emit(events::ROUTE_DELETED, &route.id, team, &deleted_pb(&route, "app deleted")).await?;
            } else {
                route.updated_at = now_ms();
                store::route_update(tx.conn(), &route).await?;
                let served = Served { record: route, is_default: false };
                tx.emit(
                    events::ROUTE_UPDATED,
                    &served.record.id,
                    team,
                    &pb::RouteUpdated { route: Some(route_pb(&served)) },
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// What traffic needs of observe's `check.failed` / `check.recovered`: the
/// instance the check probed (empty for a check of a URL). Read by field
/// name (proto3 JSON), so traffic does not build against observe's API.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckTarget {
    #[serde(default)]
    instance_id: String,
}

fn retry(error: impl std::fmt::Display) -> HandleError {
    HandleError::Retry(error.to_string())
}

fn deleted_pb(route: &RouteRecord, reason: &str) -> pb::RouteDeleted {
    pb::RouteDeleted {
        route_id: route.id.clone(),
        name: route.name.clone(),
        host: route.spec.host.clone(),
        path_prefix: route.spec.path_prefix.clone(),
        reason: reason.to_owned(),
    }
}

/// A route as the API and events show it.
pub fn route_pb(served: &Served) -> pb::Route {
    let r = &served.record;
    pb::Route {
        id: r.id.clone(),
        team: r.team.clone(),
        name: r.name.clone(),
        host: r.spec.host.clone(),
        path_prefix: r.spec.path_prefix.clone(),
        backends: r
            .spec
            .backends
            .iter()
            .map(|b| pb::Backend { app: b.app.clone(), release: b.release, weight: b.weight })
            .collect(),
        max_body_bytes: r.spec.max_body_bytes,
        timeout_ms: r.spec.timeout_ms,
        is_default: served.is_default,
        created_at: Some(strata_kit::error::timestamp(r.created_at)),
        updated_at: Some(strata_kit::error::timestamp(r.updated_at)),
    }
}

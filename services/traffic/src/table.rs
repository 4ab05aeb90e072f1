//! The routing table the ingress reads: an immutable snapshot swapped in
//! whole (`ArcSwap`) whenever routes or endpoints change, so the request
//! path takes no lock. Endpoint load and ejection state, and route
//! counters, are shared atomics that survive rebuilds.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use rand::Rng;

use crate::{
    model::{self, AppRecord, EndpointRecord, RouteRecord},
    stats::{RouteLabels, RouteStats},
    upstream::ConnectError,
};

/// How many endpoints one request may try, counting retries.
pub const MAX_ATTEMPTS: usize = 3;

/// How long an endpoint that refused a connection stays out of rotation
/// after its first refusal; doubles with each further one, up to a minute.
const EJECT_BASE: Duration = Duration::from_secs(2);
const EJECT_MAX: Duration = Duration::from_secs(60);

fn clock_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One app instance and its load-balancing state.
#[derive(Debug)]
pub struct Endpoint {
    pub instance_id: String,
    pub app: String,
    pub release: u32,
    pub addr: SocketAddr,
    in_flight: AtomicU32,
    /// Out of rotation until this `clock_ms` (passive ejection).
    ejected_until: AtomicU64,
    consecutive_refusals: AtomicU32,
    /// observe reported its check failing.
    check_failed: AtomicBool,
}

impl Endpoint {
    fn new(record: &EndpointRecord, addr: SocketAddr) -> Self {
        Self {
            instance_id: record.instance_id.clone(),
            app: record.app.clone(),
            release: record.release,
            addr,
            in_flight: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            consecutive_refusals: AtomicU32::new(0),
            check_failed: AtomicBool::new(record.check_failed),
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Whether it is out of rotation (refused connections, or a failing check).
    pub fn ejected(&self) -> bool {
        self.check_failed.load(Relaxed) || self.ejected_until.load(Relaxed) > clock_ms()
    }

    /// A request starts; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// It refused a connection: out of rotation for a while, longer each
    /// time in a row.
    pub fn eject(&self) {
        let refusals = self.consecutive_refusals.fetch_add(1, Relaxed).min(5);
        let duration = (EJECT_BASE * 2u32.pow(refusals)).min(EJECT_MAX);
        let until = clock_ms() + u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until.store(until, Relaxed);
        tracing::info!(instance = %self.instance_id, app = %self.app, addr = %self.addr, ?duration, "endpoint ejected");
    }

    /// A connection succeeded.
    pub fn connected(&self) {
        if self.consecutive_refusals.load(Relaxed) != 0 {
            self.consecutive_refusals.store(0, Relaxed);
            self.ejected_until.store(0, Relaxed);
        }
    }

    pub fn set_check_failed(&self, failed: bool) {
        self.check_failed.store(failed, Relaxed);
    }
}

/// A request in flight to an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The endpoints one backend of a route may use.
#[derive(Debug)]
pub struct Cluster {
    pub app: String,
    pub release: u32,
    pub endpoints: Vec<Arc<Endpoint>>,
}

impl Cluster {
    /// Power of two choices on requests in flight, among endpoints in
    /// rotation other than `exclude`. When every endpoint is ejected, picks
    /// among all of them (better a likely failure than a certain one).
    pub fn pick(&self, exclude: &[&Arc<Endpoint>]) -> Option<&Arc<Endpoint>> {
        let usable = |e: &&Arc<Endpoint>| !exclude.iter().any(|x| Arc::ptr_eq(x, e));
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let mut rng = rand::thread_rng();
        if n > 1 {
            let a = rng.gen_range(0..n);
            let b = (a + rng.gen_range(1..n)) % n;
            let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
            let ok = |e: &&Arc<Endpoint>| usable(e) && !e.ejected();
            match (ok(&ea), ok(&eb)) {
                (true, true) => return Some(if eb.in_flight() < ea.in_flight() { eb } else { ea }),
                (true, false) => return Some(ea),
                (false, true) => return Some(eb),
                (false, false) => {}
            }
        }
        let healthy: Vec<_> = self.endpoints.iter().filter(|e| usable(e) && !e.ejected()).collect();
        let pool = if healthy.is_empty() { self.endpoints.iter().filter(usable).collect() } else { healthy };
        match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            len => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..len)) % len;
                Some(if pool[b].in_flight() < pool[a].in_flight() { pool[b] } else { pool[a] })
            }
        }
    }
}

/// A route as the ingress serves it.
#[derive(Debug)]
pub struct RouteEntry {
    pub id: String,
    pub team: String,
    pub name: String,
    pub path_prefix: String,
    /// (cumulative weight, cluster); weight-0 backends are left out.
    backends: Vec<(u32, Cluster)>,
    pub max_body_bytes: u64,
    pub timeout: Duration,
    pub stats: Arc<RouteStats>,
}

impl RouteEntry {
    /// A backend chosen by weight.
    pub fn pick_backend(&self) -> Option<&Cluster> {
        let total = self.backends.last()?.0;
        if self.backends.len() == 1 {
            return Some(&self.backends[0].1);
        }
        let roll = rand::thread_rng().gen_range(0..total);
        self.backends.iter().find(|(cumulative, _)| roll < *cumulative).map(|(_, cluster)| cluster)
    }

    /// An endpoint of a backend picked by weight, and a connection to it
    /// from `open`. An endpoint that cannot be reached joins `tried` (one
    /// that refuses or times out is also ejected) and another of the
    /// backend's is tried, up to [`MAX_ATTEMPTS`] in all. Fails with the
    /// status and a short reason to answer the client with.
    pub async fn connect<C, F, Fut>(
        &self,
        tried: &mut Vec<Arc<Endpoint>>,
        mut open: F,
    ) -> Result<(Arc<Endpoint>, C), (u16, String)>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<C, ConnectError>>,
    {
        let Some(cluster) = self.pick_backend() else {
            return Err((503, format!("route {} has no backend", self.name)));
        };
        let mut last_error = None;
        while tried.len() < MAX_ATTEMPTS {
            let excluded: Vec<&Arc<Endpoint>> = tried.iter().collect();
            let Some(endpoint) = cluster.pick(&excluded).cloned() else { break };
            match open(endpoint.addr).await {
                Ok(connection) => {
                    endpoint.connected();
                    return Ok((endpoint, connection));
                }
                Err(error) => {
                    if matches!(error, ConnectError::Refused | ConnectError::TimedOut(_)) {
                        endpoint.eject();
                    }
                    tracing::debug!(addr = %endpoint.addr, %error, "endpoint connect failed");
                    last_error = Some(error);
                    tried.push(endpoint);
                }
            }
        }
        let release = if cluster.release == 0 { String::new() } else { format!(" release v{}", cluster.release) };
        Err(match last_error {
            None if tried.is_empty() => (503, format!("no instance of app {}{release} is running", cluster.app)),
            None => (502, format!("app {}{release} has no other instance to try", cluster.app)),
            Some(error) => (502, format!("app {}{release} cannot be reached: {error}", cluster.app)),
        })
    }

    /// The apps named by the route's backends, for messages.
    pub fn apps(&self) -> String {
        let mut apps: Vec<&str> = self.backends.iter().map(|(_, c)| c.app.as_str()).collect();
        apps.dedup();
        apps.join(", ")
    }
}

/// The whole table: exact hosts first, then wildcards (longest suffix
/// first); inside a host, the longest path prefix wins.
#[derive(Debug, Default)]
pub struct Table {
    exact: HashMap<String, Vec<Arc<RouteEntry>>>,
    wildcard: Vec<(String, Vec<Arc<RouteEntry>>)>,
}

impl Table {
    /// The route for a request to `host` (lower-case, no port) and `path`.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<RouteEntry>> {
        let by_prefix = |routes: &'_ [Arc<RouteEntry>]| -> Option<usize> {
            routes.iter().position(|r| model::path_matches(&r.path_prefix, path))
        };
        if let Some(routes) = self.exact.get(host)
            && let Some(i) = by_prefix(routes)
        {
            return Some(&routes[i]);
        }
        for (suffix, routes) in &self.wildcard {
            if host.len() > suffix.len()
                && host.ends_with(suffix.as_str())
                && let Some(i) = by_prefix(routes)
            {
                return Some(&routes[i]);
            }
        }
        None
    }
}

/// What outlives a table: endpoint state and route counters, by id.
#[derive(Debug, Default)]
pub struct Shared {
    endpoints: HashMap<String, Arc<Endpoint>>,
    stats: HashMap<String, (RouteLabels, Arc<RouteStats>)>,
}

impl Shared {
    /// The endpoint state of an instance, if the table holds it.
    pub fn endpoint(&self, instance_id: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(instance_id)
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Arc<Endpoint>> {
        self.endpoints.values()
    }

    /// A route's counters, by route id.
    pub fn stats(&self, route_id: &str) -> Option<&Arc<RouteStats>> {
        self.stats.get(route_id).map(|(_, s)| s)
    }

    /// Every route's labels and counters.
    pub fn all_stats(&self) -> impl Iterator<Item = &(RouteLabels, Arc<RouteStats>)> {
        self.stats.values()
    }
}

/// A route the table serves, explicit or default.
#[derive(Debug, Clone)]
pub struct Served {
    pub record: RouteRecord,
    pub is_default: bool,
}

/// The default routes: each app with a running endpoint and no route of its
/// own gets `<app>.<team>.localhost`, and `<app>.localhost` unless an
/// explicit route or an app seen earlier holds that host.
pub fn default_routes(routes: &[RouteRecord], endpoints: &[EndpointRecord], apps: &[AppRecord]) -> Vec<Served> {
    let running: HashSet<(&str, &str)> = endpoints.iter().map(|e| (e.team.as_str(), e.app.as_str())).collect();
    let mut apps: Vec<&AppRecord> = apps.iter().filter(|a| running.contains(&(&a.team, &a.app))).collect();
    apps.sort_by(|a, b| (a.first_seen, &a.team, &a.app).cmp(&(b.first_seen, &b.team, &b.app)));
    let mut taken: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for app in apps {
        if routes.iter().any(|r| r.team == app.team && r.spec.targets(&app.app)) {
            continue;
        }
        let (short, long) = model::default_hosts(&app.team, &app.app);
        let names = [format!("default:{}", app.app), format!("default:{}.{}", app.app, app.team)];
        for (host, name) in [short, long].into_iter().zip(names) {
            let explicit = routes.iter().any(|r| model::host_matches(&r.spec.host, &host) || r.spec.host == host);
            if explicit || !taken.insert(host.clone()) {
                continue;
            }
            out.push(Served {
                record: RouteRecord {
                    id: format!("default:{}:{}:{host}", app.team, app.app),
                    team: app.team.clone(),
                    name,
                    spec: model::RouteSpec {
                        host,
                        path_prefix: "/".to_owned(),
                        backends: vec![model::Backend { app: app.app.clone(), release: 0, weight: 1 }],
                        max_body_bytes: model::DEFAULT_BODY_LIMIT,
                        timeout_ms: model::DEFAULT_TIMEOUT_MS,
                    },
                    created_at: app.first_seen,
                    updated_at: app.first_seen,
                },
                is_default: true,
            });
        }
    }
    out
}

/// Builds a table from the stored routes and endpoints, reusing the state in
/// `shared` and dropping what no longer exists.
pub fn build(served: &[Served], endpoints: &[EndpointRecord], shared: &mut Shared, workers: usize) -> Table {
    let mut live = HashMap::new();
    let mut by_app: HashMap<(&str, &str), Vec<Arc<Endpoint>>> = HashMap::new();
    for record in endpoints {
        let Ok(addr) = format!("{}:{}", record.host, record.port).parse::<SocketAddr>() else {
            tracing::warn!(instance = %record.instance_id, host = %record.host, "endpoint address is not an IP address; skipped");
            continue;
        };
        let endpoint = match shared.endpoints.get(&record.instance_id) {
            Some(existing) if existing.addr == addr => {
                existing.set_check_failed(record.check_failed);
                existing.clone()
            }
            _ => Arc::new(Endpoint::new(record, addr)),
        };
        by_app.entry((&record.team, &record.app)).or_default().push(endpoint.clone());
        live.insert(record.instance_id.clone(), endpoint);
    }
    shared.endpoints = live;

    let mut stats = HashMap::new();
    let mut exact: HashMap<String, Vec<Arc<RouteEntry>>> = HashMap::new();
    let mut wildcard: HashMap<String, Vec<Arc<RouteEntry>>> = HashMap::new();
    for route in served {
        let record = &route.record;
        let clusters: Vec<(u32, Cluster)> = record
            .spec
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .map(|backend| {
                let endpoints: Vec<_> = by_app
                    .get(&(record.team.as_str(), backend.app.as_str()))
                    .map(|all| {
                        all.iter().filter(|e| backend.release == 0 || e.release == backend.release).cloned().collect()
                    })
                    .unwrap_or_default();
                (backend.weight, Cluster { app: backend.app.clone(), release: backend.release, endpoints })
            })
            .collect();
        // A backend with no running instance (a release promoted away, a
        // canary that crashed) gives its share to the others rather than
        // answering 503 for it; only when none has an instance do requests
        // reach the empty backends, to be told so.
        let serving = clusters.iter().any(|(_, c)| !c.endpoints.is_empty());
        let mut backends = Vec::new();
        let mut cumulative = 0;
        for (weight, cluster) in clusters {
            if serving && cluster.endpoints.is_empty() {
                continue;
            }
            cumulative += weight;
            backends.push((cumulative, cluster));
        }
        let route_stats = match shared.stats.remove(&record.id) {
            Some((_, existing)) => existing,
            None => Arc::new(RouteStats::new(workers)),
        };
        let labels = RouteLabels {
            team: record.team.clone(),
            route: record.name.clone(),
            app: record.spec.backends.iter().map(|b| b.app.as_str()).collect::<Vec<_>>().join(","),
            host: record.spec.host.clone(),
        };
        stats.insert(record.id.clone(), (labels, route_stats.clone()));
        let entry = Arc::new(RouteEntry {
            id: record.id.clone(),
            team: record.team.clone(),
            name: record.name.clone(),
            path_prefix: record.spec.path_prefix.clone(),
            backends,
            max_body_bytes: record.spec.max_body_bytes,
            timeout: Duration::from_millis(u64::from(record.spec.timeout_ms)),
            stats: route_stats,
        });
        match record.spec.host.strip_prefix('*') {
            Some(suffix) => wildcard.entry(suffix.to_owned()).or_default().push(entry),
            None => exact.entry(record.spec.host.clone()).or_default().push(entry),
        }
    }
    shared.stats = stats;
    let longest_prefix_first = |routes: &mut Vec<Arc<RouteEntry>>| {
        routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
    };
    exact.values_mut().for_each(longest_prefix_first);
    let mut wildcard: Vec<_> = wildcard.into_iter().collect();
    wildcard.iter_mut().for_each(|(_, routes)| longest_prefix_first(routes));
    wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
    Table { exact, wildcard }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::{Backend, RouteSpec};

    fn route(team: &str, name: &str, host: &str, path: &str, backends: &[(&str, u32, u32)]) -> RouteRecord {
        RouteRecord {
            id: format!("{team}-{name}"),
            team: team.into(),
            name: name.into(),
            spec: RouteSpec {
                host: host.into(),
                path_prefix: path.into(),
                backends: backends
                    .iter()
                    .map(|(a, r, w)| Backend { app: (*a).into(), release: *r, weight: *w })
                    .collect(),
                max_body_bytes: 1024,
                timeout_ms: 1000,
            },
            created_at: 0,
            updated_at: 0,
        }
    }

    fn endpoint(team: &str, app: &str, release: u32, port: u16) -> EndpointRecord {
        EndpointRecord {
            instance_id: format!("{app}-{release}-{port}"),
            team: team.into(),
            app: app.into(),
            release,
            host: "127.0.0.1".into(),
            port,
            check_failed: false,
        }
    }

    fn table(routes: &[RouteRecord], endpoints: &[EndpointRecord], apps: &[AppRecord]) -> Table {
        let mut served: Vec<Served> = routes.iter().map(|r| Served { record: r.clone(), is_default: false }).collect();
        served.extend(default_routes(routes, endpoints, apps));
        build(&served, endpoints, &mut Shared::default(), 1)
    }

    #[test]
    fn exact_beats_wildcard_and_longest_prefix_wins() {
        let t = table(
            &[
                route("a", "root", "api.test", "/", &[("web", 0, 1)]),
                route("a", "v1", "api.test", "/v1", &[("v1", 0, 1)]),
                route("a", "wild", "*.test", "/", &[("wild", 0, 1)]),
            ],
            &[],
            &[],
        );
        assert_eq!(t.lookup("api.test", "/v1/x").map(|r| r.name.as_str()), Some("v1"));
        assert_eq!(t.lookup("api.test", "/v10").map(|r| r.name.as_str()), Some("root"));
        assert_eq!(t.lookup("other.test", "/").map(|r| r.name.as_str()), Some("wild"));
        assert!(t.lookup("test", "/").is_none());
        assert!(t.lookup("api.other", "/").is_none());
    }

    #[test]
    fn splits_follow_the_weights() {
        let t = table(
            &[route("a", "canary", "c.test", "/", &[("web", 7, 90), ("web", 8, 10)])],
            &[endpoint("a", "web", 7, 1), endpoint("a", "web", 8, 2)],
            &[],
        );
        let route = t.lookup("c.test", "/").unwrap();
        let mut v8 = 0;
        for _ in 0..10_000 {
            let cluster = route.pick_backend().unwrap();
            let endpoint = cluster.pick(&[]).unwrap();
            assert_eq!(endpoint.release, cluster.release);
            if cluster.release == 8 {
                v8 += 1;
            }
        }
        assert!((800..1200).contains(&v8), "{v8} of 10000 went to v8");
    }

    #[test]
    fn a_backend_without_instances_gives_its_share_to_the_others() {
        // v7 was promoted away: the route still names it, with no instance.
        let t = table(
            &[route("a", "canary", "c.test", "/", &[("web", 7, 90), ("web", 8, 10)])],
            &[endpoint("a", "web", 8, 2)],
            &[],
        );
        let entry = t.lookup("c.test", "/").unwrap();
        for _ in 0..1_000 {
            assert_eq!(entry.pick_backend().unwrap().release, 8);
        }
        // Nothing runs at all: the request still finds a backend, which has
        // no endpoint to offer (the ingress answers 503).
        let t = table(&[route("a", "canary", "c.test", "/", &[("web", 7, 90), ("web", 8, 10)])], &[], &[]);
        let cluster = t.lookup("c.test", "/").unwrap().pick_backend().unwrap();
        assert!(cluster.pick(&[]).is_none());
    }

    #[test]
    fn two_choices_prefer_the_less_loaded_and_skip_ejected() {
        let t = table(
            &[route("a", "r", "a.test", "/", &[("web", 0, 1)])],
            &[endpoint("a", "web", 1, 1), endpoint("a", "web", 1, 2)],
            &[],
        );
        let cluster = t.lookup("a.test", "/").unwrap().pick_backend().unwrap();
        let busy = cluster.endpoints[0].clone();
        let _guards: Vec<_> = (0..5).map(|_| busy.begin()).collect();
        for _ in 0..100 {
            assert_eq!(cluster.pick(&[]).unwrap().addr.port(), cluster.endpoints[1].addr.port());
        }
        cluster.endpoints[1].eject();
        assert!(Arc::ptr_eq(cluster.pick(&[]).unwrap(), &busy));
        assert!(Arc::ptr_eq(cluster.pick(&[&busy]).unwrap(), &cluster.endpoints[1]), "all ejected: any but excluded");
        cluster.endpoints[1].connected();
        assert!(!cluster.endpoints[1].ejected());
    }

    #[test]
    fn default_routes_yield_to_explicit_ones_and_to_earlier_apps() {
        let apps = [
            AppRecord { team: "a".into(), app: "web".into(), first_seen: 1 },
            AppRecord { team: "b".into(), app: "web".into(), first_seen: 2 },
            AppRecord { team: "a".into(), app: "api".into(), first_seen: 3 },
            AppRecord { team: "a".into(), app: "idle".into(), first_seen: 4 },
        ];
        let endpoints = [endpoint("a", "web", 1, 1), endpoint("b", "web", 1, 2), endpoint("a", "api", 1, 3)];
        let routes = [route("a", "api", "api.example.test", "/", &[("api", 0, 1)])];
        let hosts: Vec<(String, String)> = default_routes(&routes, &endpoints, &apps)
            .into_iter()
            .map(|s| (s.record.team, s.record.spec.host))
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("a".into(), "web.localhost".into()),
                ("a".into(), "web.a.localhost".into()),
                ("b".into(), "web.b.localhost".into()),
            ]
        );
    }
}

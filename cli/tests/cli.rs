//! The real `strata` binary, as a user runs it: `strata up` on free ports with
//! its own data directory and stream, then the CLI against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use strata_integration_tests::{http_get, nats_url, repo_root, wait_for};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata up` running as a child process.
struct Platform {
    child: Child,
    data_dir: PathBuf,
    config_dir: tempfile::TempDir,
    endpoint: String,
    token: String,
    stream: String,
}

impl Platform {
    async fn up(data_dir: &Path, stream: &str) -> Self {
        let child = Command::new(STRATA)
            .args(["up", "--listen", "127.0.0.1:0", "--compute-listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0"])
            .args([
                "--traffic-listen",
                "127.0.0.1:0",
                "--ingress-listen",
                "127.0.0.1:0",
                "--observe-listen",
                "127.0.0.1:0",
            ])
            .args(["--db-prefix", &format!("{}_", stream.to_lowercase())])
            .args(["--stream", stream, "--subject-prefix", &stream.to_lowercase()])
            .arg("--data-dir")
            .arg(data_dir)
            .env("NATS_URL", nats_url())
            .env_remove("STRATA_TOKEN")
            .env_remove("STRATA_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let endpoints = data_dir.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let json: serde_json::Value = wait_for("strata up to write its endpoints", Duration::from_secs(60), || async {
            std::fs::read(&endpoints).ok().and_then(|b| serde_json::from_slice(&b).ok())
        })
        .await;
        let endpoint = json["gateway"].as_str().unwrap().to_owned();
        strata_integration_tests::wait_serving(endpoint.trim_start_matches("http://").parse().unwrap(), "").await;
        Self {
            child,
            data_dir: data_dir.to_path_buf(),
            config_dir: tempfile::tempdir().unwrap(),
            endpoint,
            token: std::fs::read_to_string(data_dir.join("admin-token")).unwrap(),
            stream: stream.to_owned(),
        }
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(STRATA)
            .args(args)
            .env("STRATA_ENDPOINT", &self.endpoint)
            .env("STRATA_TOKEN", &self.token)
            .env("STRATA_CONFIG_DIR", self.config_dir.path())
            .env_remove("STRATA_APP")
            .current_dir(repo_root())
            .output()
            .unwrap()
    }

    /// `strata args` with another credential and config directory.
    fn strata_as(&self, token: &str, config_dir: &Path, args: &[&str]) -> Output {
        Command::new(STRATA)
            .args(args)
            .env("STRATA_ENDPOINT", &self.endpoint)
            .env("STRATA_TOKEN", token)
            .env("STRATA_CONFIG_DIR", config_dir)
            .env_remove("STRATA_APP")
            .env_remove("STRATA_TEAM")
            .current_dir(repo_root())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.strata(args);
        assert!(out.status.success(), "strata {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        serde_json::from_str(&self.ok(&args)).unwrap()
    }

    /// Ctrl-C, as a user would stop it.
    fn interrupt(mut self) -> PathBuf {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::Signal::SIGINT)
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("strata up did not stop within 60s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "strata up exited with {status}");
        self.data_dir.clone()
    }
}

impl Drop for Platform {
    /// A failed test still stops its platform (and so its apps).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = self.child.wait();
        }
    }
}

fn url_port(url: &str) -> u32 {
    url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn push_code_and_it_runs_then_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("CLI_{}", &uuid_like()[..10]);
    let platform = Platform::up(&dir.path().join("data"), &stream).await;

    let deployed = platform.json(&["deploy", "examples/python-hello"]);
    assert_eq!(deployed["status"], "succeeded", "{deployed}");
    assert_eq!(deployed["release"], 1);
    let url = deployed["urls"][0].as_str().unwrap();
    let (status, body) = http_get(url_port(url), "/").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("hello from python-hello (release v1)"), "{body}");

    let apps = platform.json(&["apps", "list"]);
    assert_eq!(apps[0]["name"], "python-hello");
    assert_eq!(apps[0]["status"], "running");
    assert!(platform.ok(&["apps", "list"]).contains("python-hello"));

    platform.ok(&["scale", "2", "-a", "python-hello"]);
    assert_eq!(platform.json(&["ps", "-a", "python-hello"]).as_array().unwrap().len(), 2);

    platform.ok(&["config", "set", "GREETING=hi", "-a", "python-hello"]);
    // The new release serves at once; the old instances drain shortly after.
    let ps = wait_for("the old release to drain", Duration::from_secs(30), || async {
        let ps = platform.json(&["ps", "-a", "python-hello"]);
        ps.as_array().unwrap().iter().all(|i| i["release"] == 2).then_some(ps)
    })
    .await;
    let (_, greeting) = http_get(url_port(ps[0]["url"].as_str().unwrap()), "/env/GREETING").await.unwrap();
    assert_eq!(greeting, "hi");

    let rolled = platform.json(&["rollback", "-a", "python-hello"]);
    assert_eq!(rolled["release"], 1, "{rolled}");
    let releases = platform.json(&["releases", "-a", "python-hello"]);
    assert_eq!(releases.as_array().unwrap().len(), 2);
    assert_eq!(releases[1]["current"], true);

    let logs = platform.ok(&["logs", "-a", "python-hello"]);
    assert!(logs.contains("GET /"), "{logs}");

    // Exit codes scripts can trust.
    assert_eq!(platform.strata(&["apps", "info", "nope"]).status.code(), Some(4));
    assert_eq!(platform.strata(&["apps", "create", "Bad_Name"]).status.code(), Some(1));
    let forged = Command::new(STRATA)
        .args(["apps", "list"])
        .env("STRATA_ENDPOINT", &platform.endpoint)
        .env("STRATA_TOKEN", "not-a-token")
        .output()
        .unwrap();
    assert_eq!(forged.status.code(), Some(3));
    let nowhere = Command::new(STRATA)
        .args(["apps", "list"])
        .env("STRATA_ENDPOINT", "http://127.0.0.1:1")
        .env("STRATA_TOKEN", &platform.token)
        .output()
        .unwrap();
    assert_eq!(nowhere.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("strata up"));

    // A failing release: exit code 5, and the running release stays.
    let failed =
        platform.strata(&["deploy", "-a", "python-hello", "--cmd", "--", "python3", "-c", "raise SystemExit(3)"]);
    assert_eq!(failed.status.code(), Some(5), "{}", String::from_utf8_lossy(&failed.stderr));
    let ps = wait_for("only release 1 to run", Duration::from_secs(30), || async {
        let ps = platform.json(&["ps", "-a", "python-hello"]);
        ps.as_array().unwrap().iter().all(|i| i["release"] == 1 && i["state"] == "running").then_some(ps)
    })
    .await;

    // Ctrl-C stops the apps; the next `strata up` brings them back.
    let old_port = url_port(ps[0]["url"].as_str().unwrap());
    let data_dir = platform.interrupt();
    assert!(http_get(old_port, "/").await.is_err(), "an app kept running after Ctrl-C");
    let platform = Platform::up(&data_dir, &stream).await;
    let ps = wait_for("the apps to come back", Duration::from_secs(30), || async {
        let ps = platform.json(&["ps", "-a", "python-hello"]);
        (ps.as_array().unwrap().iter().filter(|i| i["state"] == "running").count() == 2).then_some(ps)
    })
    .await;
    for instance in ps.as_array().unwrap() {
        assert_eq!(http_get(url_port(instance["url"].as_str().unwrap()), "/").await.unwrap().0, 200);
    }
    let stream = platform.stream.clone();
    platform.interrupt();
    delete_stream(&stream).await;
}

#[test]
fn help_teaches() {
    let out = Command::new(STRATA).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in ["strata up", "strata deploy examples/python-hello", "Exit codes"] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn not_signed_in_says_how_to_sign_in() {
    let config = tempfile::tempdir().unwrap();
    let out = Command::new(STRATA)
        .args(["apps", "list"])
        .env("STRATA_CONFIG_DIR", config.path())
        .env_remove("STRATA_TOKEN")
        .current_dir(config.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("strata login"));
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string().to_uppercase()
}

async fn delete_stream(stream: &str) {
    if let Ok(client) = async_nats::connect(nats_url()).await {
        let _ = async_nats::jetstream::new(client).delete_stream(stream).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_deploys_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("CLI_{}", &uuid_like()[..10]);
    let platform = Platform::up(&dir.path().join("data"), &stream).await;
    for (example, expect) in [
        ("python-hello", "hello from python-hello"),
        ("python-venv", "hello from python-venv"),
        ("node-hello", "hello from node-hello"),
        ("rust-hello", "hello from rust-hello"),
        ("static-site", "<html"),
    ] {
        let path = format!("examples/{example}");
        let out = platform.strata(&["deploy", &path, "--json"]);
        assert!(out.status.success(), "{example}: {}", String::from_utf8_lossy(&out.stderr));
        let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (status, body) = http_get(url_port(deployed["urls"][0].as_str().unwrap()), "/").await.unwrap();
        assert_eq!(status, 200, "{example}");
        assert!(body.to_lowercase().contains(expect), "{example}: {body}");
    }
    let stream = platform.stream.clone();
    platform.interrupt();
    delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_on_demand_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("CLI_{}", &uuid_like()[..10]);
    let platform = Platform::up(&dir.path().join("data"), &stream).await;

    platform.ok(&["deploy", "examples/python-db"]);
    let created = platform.json(&["db", "create", "visits"]);
    assert_eq!(created["state"], "ready", "{created}");
    assert_eq!(created["server"], "local");
    platform.ok(&["db", "bind", "visits", "python-db"]);

    // The bound app gets DATABASE_URL in a new release and answers from the database.
    let answered = wait_for("the bound app to answer from its database", Duration::from_secs(60), || async {
        let ps = platform.json(&["ps", "-a", "python-db"]);
        let instance = ps.as_array()?.iter().find(|i| i["release"] == 2 && i["state"] == "running")?.clone();
        let (status, body) = http_get(url_port(instance["url"].as_str()?), "/").await.ok()?;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(answered, "visits: 1\n");

    let listed = platform.json(&["db", "list"]);
    assert_eq!(listed[0]["apps"][0], "python-db", "{listed}");
    let info = platform.json(&["db", "info", "visits", "--credentials"]);
    assert!(info["url"].as_str().unwrap().starts_with("postgres://"), "{info}");
    assert_eq!(platform.strata(&["db", "create", "Bad\"Name"]).status.code(), Some(1));
    assert_eq!(platform.strata(&["db", "delete", "visits"]).status.code(), Some(1), "deleting needs --yes");
    platform.ok(&["db", "delete", "visits", "--yes"]);
    assert_eq!(platform.json(&["db", "list"]).as_array().unwrap().len(), 0);
    assert_eq!(platform.strata(&["db", "info", "visits"]).status.code(), Some(4));

    let prefix = format!("{}_", stream.to_lowercase());
    assert_eq!(strata_integration_tests::pg_objects(&prefix).await, (vec![], vec![]));
    let stream = platform.stream.clone();
    platform.interrupt();
    delete_stream(&stream).await;
    strata_integration_tests::pg_drop_all(&prefix).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn teams_and_tokens_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("CLI_{}", &uuid_like()[..10]);
    let platform = Platform::up(&dir.path().join("data"), &stream).await;
    assert!(platform.token.trim().starts_with("strata_"), "strata up wrote an API token");

    // The bootstrap admin: a platform admin owning team `default`.
    let me = platform.json(&["whoami"]);
    assert_eq!(
        (me["subject"].as_str(), me["team"].as_str(), me["platform_admin"].as_bool()),
        (Some("admin"), Some("default"), Some(true))
    );

    // The admin makes a team, and acts for it to give its owner a token.
    platform.ok(&["teams", "create", "blue", "--owner", "ann"]);
    let teams = platform.json(&["teams", "list"]);
    assert!(teams.as_array().unwrap().iter().any(|t| t["name"] == "blue"), "{teams}");
    let created = platform.json(&["tokens", "create", "laptop", "--for", "ann", "--team", "blue"]);
    let ann = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["subject"], "ann");

    // Ann logs in, stores it, and works in her team.
    let ann_config = tempfile::tempdir().unwrap();
    let login = Command::new(STRATA)
        .args(["login", "--token", &ann, "--endpoint", &platform.endpoint])
        .env("STRATA_CONFIG_DIR", ann_config.path())
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ENDPOINT")
        .output()
        .unwrap();
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    assert!(String::from_utf8_lossy(&login.stdout).contains("as ann (team blue, role owner)"));
    let as_ann = |args: &[&str]| {
        Command::new(STRATA)
            .args(args)
            .env("STRATA_CONFIG_DIR", ann_config.path())
            .env_remove("STRATA_TOKEN")
            .env_remove("STRATA_ENDPOINT")
            .env_remove("STRATA_TEAM")
            .current_dir(ann_config.path())
            .output()
            .unwrap()
    };
    let out = as_ann(&["apps", "create", "shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_ann(&["teams", "members", "add", "vic", "--role", "viewer"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = as_ann(&["tokens", "create", "vic-ci", "--for", "vic", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let vic: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (vic_secret, vic_id) = (vic["secret"].as_str().unwrap(), vic["id"].as_str().unwrap());

    // The viewer reads but cannot change: exit code 3.
    let vic_config = tempfile::tempdir().unwrap();
    let listed = platform.strata_as(vic_secret, vic_config.path(), &["apps", "list", "--json"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("shop"));
    let denied = platform.strata_as(vic_secret, vic_config.path(), &["apps", "create", "nope"]);
    assert_eq!(denied.status.code(), Some(3), "{}", String::from_utf8_lossy(&denied.stderr));
    // The admin's own team does not see blue's app.
    assert!(!platform.ok(&["apps", "list"]).contains("shop"));

    // Tokens are listed without secrets, and revoked at once.
    let out = as_ann(&["tokens", "list"]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("vic-ci") && table.contains("laptop"), "{table}");
    assert!(!table.contains(vic_secret));
    let out = as_ann(&["tokens", "revoke", vic_id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused = platform.strata_as(vic_secret, vic_config.path(), &["apps", "list"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"));

    // Members: listed, removed.
    let out = as_ann(&["teams", "members", "list", "--json"]);
    let members: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    assert!(as_ann(&["teams", "members", "remove", "vic"]).status.success());

    // Tokens show when they were last used (written every 30 s or so).
    let out = as_ann(&["tokens", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("LAST USED"), "{}", String::from_utf8_lossy(&out.stdout));
    let listed = platform.json(&["tokens", "list"]);
    assert!(listed[0].get("last_used_at").is_some(), "{listed}");

    // Platform admins: listed, added, removed; never the last; admins only.
    let admins = platform.json(&["admins", "list"]);
    assert_eq!(admins[0]["subject"], "admin", "{admins}");
    assert_eq!(admins[0]["created_by"], "strata-bootstrap", "{admins}");
    assert!(platform.ok(&["admins", "add", "carol"]).contains("carol is a platform admin"));
    assert!(platform.ok(&["admins", "list"]).contains("carol"));
    let denied = as_ann(&["admins", "list"]);
    assert_eq!(denied.status.code(), Some(3), "{}", String::from_utf8_lossy(&denied.stderr));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("only platform admins"));
    assert_eq!(platform.json(&["admins", "remove", "carol"])["subject"], "carol");
    assert_eq!(platform.json(&["admins", "list"]).as_array().unwrap().len(), 1);
    let last = platform.strata(&["admins", "remove", "admin"]);
    assert_eq!(last.status.code(), Some(1), "{}", String::from_utf8_lossy(&last.stderr));
    assert!(String::from_utf8_lossy(&last.stderr).contains("last platform admin"));

    let stream = platform.stream.clone();
    platform.interrupt();
    delete_stream(&stream).await;
}

/// A GET through the ingress at `addr` with a Host header: (status, body).
async fn get_via(addr: &str, host: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_checks_and_events_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("CLI_{}", &uuid_like()[..10]);
    let data_dir = dir.path().join("data");
    let platform = Platform::up(&data_dir, &stream).await;
    let endpoints: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("endpoints.json")).unwrap()).unwrap();
    let ingress = endpoints["ingress"].as_str().unwrap().trim_start_matches("http://").to_owned();

    platform.ok(&["deploy", "examples/python-hello"]);
    // Every deployed app answers at <app>.localhost through the ingress.
    let (_, body) = wait_for("python-hello.localhost through the ingress", Duration::from_secs(30), || async {
        get_via(&ingress, "python-hello.localhost", "/").await.filter(|(status, _)| *status == 200)
    })
    .await;
    assert!(body.contains("hello from python-hello"), "{body}");
    let routes = platform.json(&["routes", "list"]);
    assert_eq!(routes[0]["host"], "python-hello.localhost", "{routes}");
    assert_eq!(routes[0]["default"], true, "{routes}");

    let created = platform.json(&["routes", "create", "shop", "--host", "shop.example.test", "--to", "python-hello"]);
    assert_eq!(created["backends"][0]["app"], "python-hello", "{created}");
    let (status, body) = get_via(&ingress, "shop.example.test", "/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(get_via(&ingress, "python-hello.localhost", "/").await.unwrap().0, 404, "the default route gave way");
    let stats = platform.json(&["routes", "stats", "shop"]);
    assert!(stats["requests"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(
        platform.strata(&["routes", "create", "bad", "--host", "x.test:80", "--to", "python-hello"]).status.code(),
        Some(1)
    );
    platform.ok(&["routes", "delete", "shop"]);
    assert_eq!(platform.strata(&["routes", "stats", "shop"]).status.code(), Some(4));

    // The app's default check goes passing; the deploy is in the event log.
    let check = wait_for("python-hello's default check passing", Duration::from_secs(60), || async {
        let checks = platform.json(&["checks", "list", "-a", "python-hello"]);
        checks.as_array()?.iter().find(|c| c["default"] == true && c["state"] == "passing").cloned()
    })
    .await;
    assert_eq!(check["app"], "python-hello", "{check}");
    let out = platform.ok(&["events", "-a", "python-hello", "--json"]);
    let types: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    let position = |ty: &str| types.iter().position(|t| t == ty).unwrap_or_else(|| panic!("no {ty} in {types:?}"));
    assert!(
        position("dev.strata.compute.deployment.started.v1") < position("dev.strata.compute.deployment.succeeded.v1")
    );

    let stream = platform.stream.clone();
    platform.interrupt();
    delete_stream(&stream).await;
}

//! Test support for the build packs and the static site server: source trees
//! in temporary directories, the examples, running a built release the way
//! the runtime does, and a raw HTTP/1.1 client.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

use super::{BuildError, Built};
use crate::runtime::process::{self, Launch, Proc};

/// A temporary directory holding `files` (path, contents).
pub(crate) fn tree(files: &[(&str, &str)]) -> io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for (path, contents) in files {
        let path = dir.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(dir)
}

/// A copy of `examples/<name>` in a temporary directory, without anything
/// an earlier build left in it.
pub(crate) fn example(name: &str) -> io::Result<tempfile::TempDir> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
    let dir = tempfile::tempdir()?;
    copy_tree(&source, dir.path())?;
    Ok(dir)
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if ["target", "node_modules", ".venv"].iter().any(|skip| name == *skip) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::create_dir(to.join(&name))?;
            copy_tree(&entry.path(), &to.join(&name))?;
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
        }
    }
    Ok(())
}

/// Builds `dir`, returning what was built and the build log.
pub(crate) async fn build_logged(dir: &Path) -> (Result<Built, BuildError>, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let built = super::build(dir, &tx).await;
    drop(tx);
    let mut log = Vec::new();
    while let Some(line) = rx.recv().await {
        log.push(line);
    }
    (built, log)
}

/// A built release running as an instance would: `argv` in the release
/// directory with `PORT` and `STRATA_RELEASE` set. Killed when dropped.
pub(crate) struct Instance {
    pub(crate) port: u16,
    proc: Proc,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Instance {
    /// Starts `argv` in `dir` and waits until it accepts connections.
    pub(crate) async fn start(dir: &Path, argv: &[String]) -> io::Result<Instance> {
        let log_dir = tempfile::tempdir()?;
        let log = log_dir.path().join("instance.log");
        let launch = Launch {
            argv: argv.to_vec(),
            workdir: dir.display().to_string(),
            env: BTreeMap::from([("STRATA_RELEASE".to_owned(), "v3".to_owned())]),
            instance_id: format!("i-buildpack-test-{}", uuid::Uuid::new_v4()),
            node_id: format!("node-buildpack-test-{}", std::process::id()),
        };
        let port = process::free_port()?;
        let proc = process::spawn(&launch, port, &log)?;
        let instance = Instance { port, proc, log, _log_dir: log_dir };
        if tokio::time::timeout(Duration::from_secs(30), process::wait_ready("127.0.0.1", port)).await.is_err() {
            return Err(io::Error::other(format!("{argv:?} did not listen on {port}; its log:\n{}", instance.log())));
        }
        Ok(instance)
    }

    /// What the instance wrote to stdout and stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        process::kill_group(self.proc.pid);
    }
}

/// A reply read off the wire.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// The header lines, lower-cased.
    pub(crate) headers: Vec<String>,
    pub(crate) body: String,
}

impl Reply {
    /// The value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|line| line.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    }
}

/// `GET path` on 127.0.0.1:`port`.
pub(crate) async fn http_get(port: u16, path: &str) -> io::Result<Reply> {
    http_request(port, &format!("GET {path} HTTP/1.1")).await
}

/// Sends `request_line` (with a Host header) and reads the reply until the
/// server closes the connection.
pub(crate) async fn http_request(port: u16, request_line: &str) -> io::Result<Reply> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("{request_line}\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(|| io::Error::other(format!("no head in {raw:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    Ok(Reply { status, headers: lines.map(str::to_ascii_lowercase).collect(), body: body.to_owned() })
}

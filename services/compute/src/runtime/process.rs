//! The process driver's system side: start an instance as a child process in
//! its own process group, signal the group, and recognise a process again
//! after compute restarts (by pid, start time and its `STRATA_INSTANCE_ID`).
//!
//! Output goes straight to a log file rather than through a pipe, so an
//! instance outlives a compute crash without dying on a broken pipe, and a
//! restarted compute can adopt it.

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io,
    path::Path,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

/// Environment variable naming the compute node that started a process.
pub const NODE_ENV: &str = "STRATA_NODE_ID";
/// Environment variable naming the instance a process is.
pub const INSTANCE_ENV: &str = "STRATA_INSTANCE_ID";

/// What to run for an instance.
#[derive(Debug, Clone)]
pub struct Launch {
    pub argv: Vec<String>,
    pub workdir: String,
    pub env: BTreeMap<String, String>,
    pub instance_id: String,
    pub node_id: String,
}

/// A running instance process: our child, or one adopted after a restart.
#[derive(Debug)]
pub struct Proc {
    pub pid: u32,
    pub start_time: u64,
    child: Option<tokio::process::Child>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or -1 when a signal ended it (or it was not our child).
    pub code: i32,
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Self {
        Exit { code: status.code().unwrap_or(-1) }
    }
}

/// Starts `launch` on `port`, appending its stdout and stderr to `log`.
pub fn spawn(launch: &Launch, port: u16, log: &Path) -> io::Result<Proc> {
    let (program, args) = launch
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the release has no command to run"))?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let port_text = port.to_string();
    let args: Vec<String> =
        args.iter().map(|a| a.replace("${PORT}", &port_text).replace("$PORT", &port_text)).collect();

    let mut command = tokio::process::Command::new(program);
    command
        .args(&args)
        .current_dir(&launch.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own group, so a stop reaches whatever it started (shells, shims).
        .process_group(0)
        .kill_on_drop(false);
    // The platform's own settings (keys, URLs) are not the app's business.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRATA_") {
            command.env_remove(&key);
        }
    }
    command
        .envs(&launch.env)
        .env("PORT", &port_text)
        .env(NODE_ENV, &launch.node_id)
        .env(INSTANCE_ENV, &launch.instance_id);

    let child = command.spawn()?;
    let pid = child.id().ok_or_else(|| io::Error::other("the process exited before it could be watched"))?;
    let start_time = start_time(pid).unwrap_or(0);
    Ok(Proc { pid, start_time, child: Some(child) })
}

impl Proc {
    /// Re-attaches to a process a previous compute started, if it is still
    /// the same process (pid not reused) and still that instance.
    pub fn adopt(pid: u32, start_time: u64, instance_id: &str) -> Option<Proc> {
        if pid == 0 || !is_alive(pid, start_time) {
            return None;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let wanted = format!("{INSTANCE_ENV}={instance_id}");
        environ.split(|b| *b == 0).any(|var| var == wanted.as_bytes()).then_some(Proc { pid, start_time, child: None })
    }

    /// Waits until the process exits.
    pub async fn wait(&mut self) -> Exit {
        match self.child.as_mut() {
            Some(child) => child.wait().await.map(Exit::from).unwrap_or(Exit { code: -1 }),
            None => {
                // Not our child: we cannot wait(2) for it, so watch /proc.
                while is_alive(self.pid, self.start_time) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Exit { code: -1 }
            }
        }
    }

    /// Sends `signal` to the process group.
    pub fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // ESRCH (already gone) is fine.
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; also ends anything left
    /// in its group.
    pub async fn stop(&mut self, grace: Duration) -> Exit {
        self.signal(Signal::SIGTERM);
        let exit = match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                tracing::info!(pid = self.pid, "instance ignored SIGTERM, killing it");
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        };
        self.signal(Signal::SIGKILL);
        exit
    }
}

/// The start time of `pid` in clock ticks after boot (field 22 of
/// `/proc/<pid>/stat`), and whether it is a zombie.
fn stat(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(start, _)| start)
}

/// Whether `pid` is alive and is the process that started at `start_time`
/// (0 skips that check).
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    match stat(pid) {
        Some((start, zombie)) => !zombie && (start_time == 0 || start == start_time),
        None => false,
    }
}

/// Processes started by compute node `node_id`: (pid, instance id).
pub fn processes_of_node(node_id: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let node = format!("{NODE_ENV}={node_id}");
    let instance_prefix = format!("{INSTANCE_ENV}=");
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let mut vars = environ.split(|b| *b == 0);
            if !vars.clone().any(|v| v == node.as_bytes()) {
                return None;
            }
            let instance = vars.find_map(|v| std::str::from_utf8(v).ok()?.strip_prefix(&instance_prefix))?.to_owned();
            // Only group leaders: the children of an instance go with its group.
            let pgid = nix::unistd::getpgid(Some(Pid::from_raw(i32::try_from(pid).ok()?))).ok()?;
            (pgid.as_raw() == i32::try_from(pid).ok()?).then_some((pid, instance))
        })
        .collect()
}

/// Kills the process group led by `pid`.
pub fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Waits until something accepts connections on `host:port`.
pub async fn wait_ready(host: &str, port: u16) {
    loop {
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawned_processes_are_recognised_and_stopped() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let launch = Launch {
            argv: vec!["sleep".into(), "30".into()],
            workdir: dir.path().display().to_string(),
            env: BTreeMap::new(),
            instance_id: "i-test".into(),
            node_id: format!("node-{}", std::process::id()),
        };
        let mut proc = spawn(&launch, 1, &dir.path().join("log"))?;
        assert!(is_alive(proc.pid, proc.start_time));
        // Until the child has exec'd, /proc shows the parent's environment.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while processes_of_node(&launch.node_id).is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(Proc::adopt(proc.pid, proc.start_time, "i-test").is_some());
        assert!(Proc::adopt(proc.pid, proc.start_time, "i-other").is_none());
        assert!(Proc::adopt(proc.pid, proc.start_time + 1, "i-test").is_none());
        assert_eq!(processes_of_node(&launch.node_id), vec![(proc.pid, "i-test".to_owned())]);
        let exit = proc.stop(Duration::from_secs(5)).await;
        assert_eq!(exit.code, -1);
        assert!(!is_alive(proc.pid, proc.start_time));
        Ok(())
    }
}

//! One build step: a child process in the source directory, its stdout and
//! stderr streamed line by line to the build log (indented like Heroku's),
//! the last lines kept for the error when it fails.
//!
//! The step runs in its own process group. Dropping the future that runs it
//! (a cancelled or timed-out build) kills the whole group, so compilers and
//! installers started by the step do not outlive the build.

use std::{
    collections::VecDeque,
    ffi::OsStr,
    path::Path,
    process::Stdio,
    sync::{Mutex, PoisonError},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::{BuildError, Log};

/// Lines of output a failed step's error shows.
const TAIL_LINES: usize = 15;
/// Longest line sent to the log; longer output is split.
const MAX_LINE: u64 = 8 * 1024;
/// How the log indents a step's output.
const INDENT: &str = "       ";

/// Runs `argv` in `dir` with `env` added to compute's environment (less
/// compute's own `STRATA_*` settings), streaming its output to `log`.
pub(super) async fn run(dir: &Path, log: &Log, argv: &[&str], env: &[(&str, &OsStr)]) -> Result<(), BuildError> {
    let step = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(BuildError::Invalid("a build step has no command".to_owned()));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // The platform's own settings (keys, URLs) are not the build's business.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRATA_") {
            command.env_remove(&key);
        }
    }
    command.envs(env.iter().copied());

    let mut child = command.spawn().map_err(|source| BuildError::StepStart {
        step: step.clone(),
        program: (*program).to_owned(),
        source,
    })?;
    let group = Group(child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let tail = Mutex::new(VecDeque::with_capacity(TAIL_LINES));
    let exited = async {
        let status = child.wait().await;
        // Whatever the step left running in the background would hold its
        // output open (and outlive the build): end it with the step.
        group.kill();
        status
    };
    let (status, (), ()) = tokio::join!(exited, pump(stdout, log, &tail), pump(stderr, log, &tail));
    let status = status?;
    if status.success() {
        return Ok(());
    }
    let tail = tail.into_inner().unwrap_or_else(PoisonError::into_inner).into();
    Err(BuildError::StepFailed { step, code: status.code(), tail })
}

/// Sends each line of `stream` to `log` and keeps the last ones in `tail`.
async fn pump(stream: Option<impl AsyncRead + Unpin>, log: &Log, tail: &Mutex<VecDeque<String>>) {
    let Some(stream) = stream else { return };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = format!("{INDENT}{}", text.trim_end_matches(['\n', '\r']));
        let _ = log.send(line.clone());
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// A step's process group, killed when the step ends or is dropped.
struct Group(Option<Pid>);

impl Group {
    fn kill(&self) {
        if let Some(pid) = self.0 {
            // ESRCH (nothing left) is fine.
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::runtime::process::is_alive;

    #[tokio::test]
    async fn output_is_streamed_indented_from_both_streams() -> Result<(), BuildError> {
        let dir = tempfile::tempdir()?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        run(
            dir.path(),
            &tx,
            &["sh", "-c", "echo out; echo err >&2; echo \"$GREETING\"; pwd"],
            &[("GREETING", OsStr::new("hi there"))],
        )
        .await?;
        drop(tx);
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        lines.sort();
        let pwd = format!("       {}", dir.path().canonicalize()?.display());
        let mut want = vec!["       err".to_owned(), "       hi there".to_owned(), "       out".to_owned(), pwd];
        want.sort();
        assert_eq!(lines, want);
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_step_reports_its_exit_code_and_last_lines() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (tx, _rx) = mpsc::unbounded_channel();
        let script = "for i in $(seq 1 40); do echo line $i; done; exit 7";
        let error = run(dir.path(), &tx, &["sh", "-c", script], &[]).await.err();
        let Some(BuildError::StepFailed { step, code, tail }) = error else { panic!("{error:?}") };
        assert_eq!(step, format!("sh -c {script}"));
        assert_eq!(code, Some(7));
        let want: Vec<String> = (26..=40).map(|i| format!("       line {i}")).collect();
        assert_eq!(tail, want, "the last {TAIL_LINES} lines, in order");

        // stderr counts too (its order against stdout is not fixed, so alone here).
        let error = run(dir.path(), &tx, &["sh", "-c", "echo boom >&2; exit 3"], &[]).await.err();
        let Some(BuildError::StepFailed { code, tail, .. }) = error else { panic!("{error:?}") };
        assert_eq!((code, tail), (Some(3), vec!["       boom".to_owned()]));
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_program_says_so() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (tx, _rx) = mpsc::unbounded_channel();
        let error = run(dir.path(), &tx, &["strata-no-such-tool", "build"], &[]).await.err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("could not start `strata-no-such-tool build`"), "{message}");
        assert!(message.contains("is `strata-no-such-tool` installed"), "{message}");
        Ok(())
    }

    #[tokio::test]
    async fn background_processes_do_not_outlive_the_step() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (tx, _rx) = mpsc::unbounded_channel();
        // The background sleep keeps stdout open: the step must still end.
        let argv = ["sh", "-c", "sleep 30 & echo $! > bg.pid"];
        tokio::time::timeout(Duration::from_secs(10), run(dir.path(), &tx, &argv, &[]))
            .await?
            .map_err(std::io::Error::other)?;
        let pid = read_pid(&dir.path().join("bg.pid"))?;
        assert!(gone(pid).await, "the background process {pid} survived its step");
        Ok(())
    }

    #[tokio::test]
    async fn dropping_a_running_step_kills_it_and_its_children() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (tx, _rx) = mpsc::unbounded_channel();
        let script = "sleep 30 & echo $! > child.pid; echo $$ > step.pid; wait";
        let argv = ["sh", "-c", script];
        // What `app::build` does with its build timeout.
        let timed_out = tokio::time::timeout(Duration::from_millis(500), run(dir.path(), &tx, &argv, &[])).await;
        assert!(timed_out.is_err(), "the step ended on its own: {timed_out:?}");
        for file in ["step.pid", "child.pid"] {
            let pid = read_pid(&dir.path().join(file))?;
            assert!(gone(pid).await, "{file}: process {pid} survived the cancelled build");
        }
        Ok(())
    }

    fn read_pid(file: &Path) -> std::io::Result<u32> {
        std::fs::read_to_string(file)?.trim().parse().map_err(std::io::Error::other)
    }

    /// Whether `pid` is (or soon is) no longer running.
    async fn gone(pid: u32) -> bool {
        for _ in 0..250 {
            if !is_alive(pid, 0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

//! Build packs: turn an unpacked source tree into "how to run it".
//!
//! Detection runs in a fixed order and the first pack that recognises the tree
//! builds it. The language packs (Python, Node.js, Rust) come first because
//! they own the build: a Procfile beside them only names the command to run
//! once their install or compile step is done. A Procfile with no language
//! beside it is run as is, and a plain `index.html` is served as a static
//! site. A tree no pack recognises fails with a message listing what was
//! looked for.
//!
//! Every build step is a child process in the source directory whose output
//! is streamed to the build log (see [`step`]).

mod node;
mod procfile;
mod python;
mod rust;
mod static_files;
mod step;
#[cfg(test)]
pub(crate) mod testing;

use std::path::Path;

use tokio::sync::mpsc;

/// What a build produced: which pack, and the command an instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub buildpack: &'static str,
    pub argv: Vec<String>,
}

/// Why a build failed; the message is shown to the user as is.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no build pack recognises this app: looked for {looked_for}")]
    NotRecognised { looked_for: String },
    #[error("{0}")]
    Invalid(String),
    #[error("could not start `{step}`: {source} (is `{program}` installed on the compute node?)")]
    StepStart { step: String, program: String, source: std::io::Error },
    #[error("`{step}` failed with {}{}", exit_text(*code), tail_text(tail))]
    StepFailed {
        /// The command line of the step.
        step: String,
        /// Its exit code; `None` when a signal ended it.
        code: Option<i32>,
        /// Its last lines of output (stdout and stderr, interleaved).
        tail: Vec<String>,
    },
    #[error("reading the source: {0}")]
    Io(#[from] std::io::Error),
}

fn exit_text(code: Option<i32>) -> String {
    code.map_or_else(|| "no exit code (killed by a signal)".to_owned(), |code| format!("exit code {code}"))
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() { String::new() } else { format!("; its last output:\n{}", tail.join("\n")) }
}

/// Where build log lines go.
type Log = mpsc::UnboundedSender<String>;

/// Sends one line to the build log; a build whose log nobody reads goes on.
fn say(log: &Log, line: impl Into<String>) {
    let _ = log.send(line.into());
}

/// A build pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pack {
    Python,
    Node,
    Rust,
    Procfile,
    Static,
}

impl Pack {
    /// Every pack, in detection order.
    pub const DETECTION_ORDER: [Pack; 5] = [Pack::Python, Pack::Node, Pack::Rust, Pack::Procfile, Pack::Static];

    /// The pack's name, as releases record it.
    pub fn name(self) -> &'static str {
        match self {
            Pack::Python => "python",
            Pack::Node => "node",
            Pack::Rust => "rust",
            Pack::Procfile => "procfile",
            Pack::Static => "static",
        }
    }

    /// What the pack looks for, for the "not recognised" message.
    fn looks_for(self) -> &'static str {
        match self {
            Pack::Python => python::LOOKS_FOR,
            Pack::Node => node::LOOKS_FOR,
            Pack::Rust => rust::LOOKS_FOR,
            Pack::Procfile => procfile::LOOKS_FOR,
            Pack::Static => static_files::LOOKS_FOR,
        }
    }

    fn recognises(self, dir: &Path) -> bool {
        match self {
            Pack::Python => python::recognises(dir),
            Pack::Node => node::recognises(dir),
            Pack::Rust => rust::recognises(dir),
            Pack::Procfile => procfile::recognises(dir),
            Pack::Static => static_files::recognises(dir),
        }
    }
}

/// The pack that builds `dir`: the first in [`Pack::DETECTION_ORDER`] that
/// recognises it.
pub fn detect(dir: &Path) -> Option<Pack> {
    Pack::DETECTION_ORDER.into_iter().find(|pack| pack.recognises(dir))
}

/// Detects the pack for `dir` and builds it, sending log lines to `log`.
///
/// Dropping the returned future (a cancelled or timed-out build) kills the
/// running build step and everything it started.
pub async fn build(dir: &Path, log: &mpsc::UnboundedSender<String>) -> Result<Built, BuildError> {
    let Some(pack) = detect(dir) else {
        let looked_for = Pack::DETECTION_ORDER.map(Pack::looks_for).join(", ");
        return Err(BuildError::NotRecognised { looked_for });
    };
    // Read first so a Procfile without a `web:` line fails before a long install.
    let web = procfile::web_command(dir).await?;
    let argv = match pack {
        Pack::Python => python::build(dir, web.as_deref(), log).await?,
        Pack::Node => node::build(dir, web.as_deref(), log).await?,
        Pack::Rust => rust::build(dir, web.as_deref(), log).await?,
        Pack::Procfile => procfile::build(web, log)?,
        Pack::Static => static_files::build(log)?,
    };
    Ok(Built { buildpack: pack.name(), argv })
}

/// Runs `command` through `sh`, replacing the shell so signals reach the app.
fn shell(command: &str) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), format!("exec {command}")]
}

/// Like [`shell`], after exporting `vars`; their values may refer to `$PWD`
/// (the release directory, where instances start) and to earlier values
/// such as `$PATH`.
fn shell_with(vars: &[(&str, &str)], command: &str) -> Vec<String> {
    let exports: Vec<String> = vars.iter().map(|(name, value)| format!("{name}=\"{value}\"")).collect();
    vec!["sh".to_owned(), "-c".to_owned(), format!("export {}; exec {command}", exports.join(" "))]
}

/// Reads `dir/name`, or `None` when there is no such file.
async fn read_optional(dir: &Path, name: &str) -> Result<Option<String>, BuildError> {
    match tokio::fs::read_to_string(dir.join(name)).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildpack::testing::tree;

    #[test]
    fn detection_follows_the_documented_order() -> std::io::Result<()> {
        let cases: &[(&[&str], Option<Pack>)] = &[
            (&["Procfile"], Some(Pack::Procfile)),
            (&["requirements.txt"], Some(Pack::Python)),
            (&["pyproject.toml"], Some(Pack::Python)),
            (&["package.json"], Some(Pack::Node)),
            (&["Cargo.toml"], Some(Pack::Rust)),
            (&["index.html"], Some(Pack::Static)),
            // The language owns the build; the Procfile only names the command.
            (&["Procfile", "requirements.txt"], Some(Pack::Python)),
            (&["Procfile", "package.json"], Some(Pack::Node)),
            (&["Procfile", "Cargo.toml"], Some(Pack::Rust)),
            (&["requirements.txt", "package.json", "Cargo.toml"], Some(Pack::Python)),
            (&["package.json", "Cargo.toml", "index.html"], Some(Pack::Node)),
            (&["Cargo.toml", "index.html"], Some(Pack::Rust)),
            (&["Procfile", "index.html"], Some(Pack::Procfile)),
            (&["README.md", "app.py"], None),
        ];
        for (files, want) in cases {
            let dir = tree(&files.iter().map(|f| (*f, "")).collect::<Vec<_>>())?;
            assert_eq!(detect(dir.path()), *want, "{files:?}");
        }
        // Markers are files: a directory of that name is not one.
        let dir = tree(&[("package.json/x", "")])?;
        assert_eq!(detect(dir.path()), None);
        Ok(())
    }

    #[tokio::test]
    async fn unknown_trees_list_what_was_looked_for() -> std::io::Result<()> {
        let dir = tree(&[("README.md", "hi")])?;
        let (tx, _rx) = mpsc::unbounded_channel();
        let error = build(dir.path(), &tx).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("no build pack recognises this app: looked for "), "{error}");
        for wanted in ["Procfile", "requirements.txt", "pyproject.toml", "package.json", "Cargo.toml", "index.html"] {
            assert!(error.contains(wanted), "{error}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_procfile_without_web_fails_before_any_install() -> std::io::Result<()> {
        let dir = tree(&[("Procfile", "worker: python3 work.py\n"), ("requirements.txt", "flask\n")])?;
        let (tx, _rx) = mpsc::unbounded_channel();
        let error = build(dir.path(), &tx).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("no `web:` process"), "{error}");
        assert!(!dir.path().join(".venv").exists());
        Ok(())
    }

    #[test]
    fn failed_steps_say_what_failed_and_show_the_end_of_the_output() {
        let error = BuildError::StepFailed {
            step: "npm ci".to_owned(),
            code: Some(1),
            tail: vec!["       npm ERR! missing lock".to_owned()],
        };
        assert_eq!(
            error.to_string(),
            "`npm ci` failed with exit code 1; its last output:\n       npm ERR! missing lock"
        );
        let error = BuildError::StepFailed { step: "cargo build".to_owned(), code: None, tail: vec![] };
        assert_eq!(error.to_string(), "`cargo build` failed with no exit code (killed by a signal)");
    }

    #[test]
    fn shell_commands_export_then_exec() {
        assert_eq!(shell("./server"), ["sh", "-c", "exec ./server"]);
        assert_eq!(
            shell_with(&[("PATH", "$PWD/bin:$PATH"), ("A", "b")], "app --port $PORT"),
            ["sh", "-c", "export PATH=\"$PWD/bin:$PATH\" A=\"b\"; exec app --port $PORT"]
        );
    }
}

//! Build packs: turn an unpacked source tree into "how to run it".
//!
//! Detection runs in a fixed order and the first pack that recognises the tree
//! builds it. Each pack is a small function; a tree no pack recognises fails
//! with a message listing what was looked for.

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
    #[error("reading the source: {0}")]
    Io(#[from] std::io::Error),
}

/// The packs in detection order, with what each looks for.
const PACKS: &[(&str, &str)] = &[("procfile", "a Procfile with a `web:` process")];

/// Detects the pack for `dir` and builds it, sending log lines to `log`.
pub async fn build(dir: &Path, log: &mpsc::UnboundedSender<String>) -> Result<Built, BuildError> {
    if let Some(built) = procfile(dir, log).await? {
        return Ok(built);
    }
    Err(BuildError::NotRecognised { looked_for: PACKS.iter().map(|(_, what)| *what).collect::<Vec<_>>().join(", ") })
}

/// `Procfile`: runs the `web:` command as given, through `sh`.
async fn procfile(dir: &Path, log: &mpsc::UnboundedSender<String>) -> Result<Option<Built>, BuildError> {
    let path = dir.join("Procfile");
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let _ = log.send("-----> Procfile detected".to_owned());
    let command = parse_procfile(&text, "web").ok_or_else(|| {
        BuildError::Invalid("the Procfile has no `web:` process: add a line like `web: ./server`".to_owned())
    })?;
    let _ = log.send(format!("       web: {command}"));
    Ok(Some(Built { buildpack: "procfile", argv: shell(&command) }))
}

/// The command of process type `kind` in a Procfile.
pub fn parse_procfile(text: &str, kind: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, command) = line.trim().split_once(':')?;
        (name.trim() == kind && !command.trim().is_empty()).then(|| command.trim().to_owned())
    })
}

/// Runs `command` through `sh`, replacing the shell so signals reach the app.
fn shell(command: &str) -> Vec<String> {
    vec!["sh".to_owned(), "-c".to_owned(), format!("exec {command}")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfile_web_line_is_found() {
        let text = "# comment\nworker: ./work\nweb: python3 app.py --port $PORT\n";
        assert_eq!(parse_procfile(text, "web").as_deref(), Some("python3 app.py --port $PORT"));
        assert_eq!(parse_procfile("worker: x", "web"), None);
        assert_eq!(parse_procfile("web:   ", "web"), None);
    }

    #[tokio::test]
    async fn unknown_trees_list_what_was_looked_for() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (tx, _rx) = mpsc::unbounded_channel();
        let error = build(dir.path(), &tx).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("Procfile"), "{error}");
        Ok(())
    }
}

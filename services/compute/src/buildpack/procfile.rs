//! The `procfile` pack: a `Procfile` and no language to build, so its `web:`
//! command runs as is. Beside a language, the Procfile only names the
//! command ([`web_command`]) and the language pack builds.

use std::path::Path;

use super::{BuildError, Log, say, shell};

pub(super) const LOOKS_FOR: &str = "a Procfile with a `web:` process";

const FILE: &str = "Procfile";

pub(super) fn recognises(dir: &Path) -> bool {
    dir.join(FILE).is_file()
}

/// The Procfile's `web:` command: `None` without a Procfile, an error when
/// there is one without a `web:` process.
pub(super) async fn web_command(dir: &Path) -> Result<Option<String>, BuildError> {
    let Some(text) = super::read_optional(dir, FILE).await? else { return Ok(None) };
    parse(&text, "web").map(Some).ok_or_else(|| {
        BuildError::Invalid("the Procfile has no `web:` process: add a line like `web: ./server`".to_owned())
    })
}

/// Runs the `web:` command through `sh`.
pub(super) fn build(web: Option<String>, log: &Log) -> Result<Vec<String>, BuildError> {
    let command = web.ok_or_else(|| BuildError::Invalid("there is no Procfile".to_owned()))?;
    say(log, "-----> Procfile detected");
    say(log, format!("       web: {command}"));
    Ok(shell(&command))
}

/// The command of process type `kind` in a Procfile.
fn parse(text: &str, kind: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (name, command) = line.trim().split_once(':')?;
        (name.trim() == kind && !command.trim().is_empty()).then(|| command.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::buildpack::testing::tree;

    #[test]
    fn procfile_web_line_is_found() {
        let text = "# comment\nworker: ./work\nweb: python3 app.py --port $PORT\n";
        assert_eq!(parse(text, "web").as_deref(), Some("python3 app.py --port $PORT"));
        assert_eq!(parse("worker: x", "web"), None);
        assert_eq!(parse("web:   ", "web"), None);
    }

    #[tokio::test]
    async fn a_plain_procfile_runs_its_web_command_through_sh() -> Result<(), BuildError> {
        let dir = tree(&[("Procfile", "web: ./server --port $PORT\n")])?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let built = super::super::build(dir.path(), &tx).await?;
        assert_eq!(built.buildpack, "procfile");
        assert_eq!(built.argv, ["sh", "-c", "exec ./server --port $PORT"]);
        assert_eq!(rx.recv().await.as_deref(), Some("-----> Procfile detected"));
        Ok(())
    }
}

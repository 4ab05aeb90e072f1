//! The `python` pack: `requirements.txt` or `pyproject.toml`.
//!
//! Each release gets its own virtualenv in `.venv` inside the release
//! directory, and its dependencies are installed there with the venv's pip.
//! When there is nothing to install the venv is made without pip, which
//! keeps such builds well under a second. The app runs with `.venv/bin`
//! first on `PATH`: the Procfile's `web:` command, or `app.py` / `main.py`.

use std::{ffi::OsStr, path::Path};

use super::{BuildError, Log, say, shell_with, step};

pub(super) const LOOKS_FOR: &str = "requirements.txt or pyproject.toml (Python)";

const REQUIREMENTS: &str = "requirements.txt";
const PYPROJECT: &str = "pyproject.toml";
/// Scripts run by convention when there is no Procfile, in this order.
const CONVENTIONAL_SCRIPTS: [&str; 2] = ["app.py", "main.py"];
/// What the app runs with: the release's venv first on `PATH`.
const VENV_ENV: [(&str, &str); 2] = [("PATH", "$PWD/.venv/bin:$PATH"), ("VIRTUAL_ENV", "$PWD/.venv")];

pub(super) fn recognises(dir: &Path) -> bool {
    dir.join(REQUIREMENTS).is_file() || dir.join(PYPROJECT).is_file()
}

/// Makes the venv, installs the dependencies and returns the argv to run.
pub(super) async fn build(dir: &Path, web: Option<&str>, log: &Log) -> Result<Vec<String>, BuildError> {
    say(log, "-----> Python app detected");
    let command = match web {
        Some(web) => web.to_owned(),
        None => {
            let script =
                CONVENTIONAL_SCRIPTS.into_iter().find(|script| dir.join(script).is_file()).ok_or_else(|| {
                    BuildError::Invalid(
                        "a Python app needs a Procfile with a `web:` process, or an app.py or main.py to run"
                            .to_owned(),
                    )
                })?;
            format!(".venv/bin/python {script}")
        }
    };

    let install = install_args(dir).await?;
    say(log, "-----> Creating a virtualenv in .venv");
    // --clear: a .venv that came with the upload belongs to another machine.
    let mut venv = vec!["python3", "-m", "venv", "--clear"];
    if install.is_none() {
        venv.push("--without-pip");
    }
    venv.push(".venv");
    step::run(dir, log, &venv, &[]).await?;
    match install {
        Some(args) => {
            say(log, "-----> Installing dependencies with pip");
            let env = [("PIP_DISABLE_PIP_VERSION_CHECK", OsStr::new("1")), ("PIP_NO_INPUT", OsStr::new("1"))];
            step::run(dir, log, &args, &env).await?;
        }
        None => say(log, "-----> requirements.txt lists no packages, skipping pip install"),
    }

    say(log, format!("       web: {command}"));
    Ok(shell_with(&VENV_ENV, &command))
}

/// The pip command that installs the app's dependencies, or `None` when
/// there is nothing to install. requirements.txt wins over pyproject.toml,
/// as on Heroku.
async fn install_args(dir: &Path) -> Result<Option<Vec<&'static str>>, BuildError> {
    match super::read_optional(dir, REQUIREMENTS).await? {
        Some(text) if has_requirements(&text) => Ok(Some(vec![".venv/bin/pip", "install", "-r", REQUIREMENTS])),
        Some(_) => Ok(None),
        None => Ok(Some(vec![".venv/bin/pip", "install", "."])),
    }
}

/// Whether a requirements file asks pip to install anything: a line that is
/// not blank, a comment or a global option (such as `--index-url`).
fn has_requirements(text: &str) -> bool {
    text.lines().any(|line| {
        // pip's comments start a line or follow whitespace.
        let line = match line.find(" #").or_else(|| line.find("\t#")) {
            Some(at) => &line[..at],
            None => line,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return false;
        }
        !line.starts_with('-') || ["-r", "--requirement", "-e", "--editable"].iter().any(|opt| line.starts_with(opt))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildpack::testing::{Instance, build_logged, example, http_get, tree};

    #[test]
    fn requirement_lines_are_told_from_comments_and_options() {
        for empty in
            ["", "\n\n", "# nothing yet\n", "  # indented comment\n", "--index-url https://pypi.example/simple\n"]
        {
            assert!(!has_requirements(empty), "{empty:?}");
        }
        for some in ["flask\n", "# web\nflask==3.0  # pinned\n", "-r base.txt\n", "-e .\n", "requests>=2"] {
            assert!(has_requirements(some), "{some:?}");
        }
    }

    #[tokio::test]
    async fn a_procfile_command_runs_with_the_venv_first_on_path() -> anyhow::Result<()> {
        let web = "python -c \"import sys; open('prefix.txt', 'w').write(sys.prefix)\"";
        let dir = tree(&[("requirements.txt", "# none\n"), ("Procfile", &format!("web: {web}\n"))])?;
        let (built, log) = build_logged(dir.path()).await;
        let built = built?;
        assert_eq!(built.buildpack, "python");
        assert_eq!(
            built.argv,
            ["sh", "-c", &format!("export PATH=\"$PWD/.venv/bin:$PATH\" VIRTUAL_ENV=\"$PWD/.venv\"; exec {web}")]
        );
        assert!(log.iter().any(|l| l.contains("skipping pip install")), "{log:?}");

        // `python` on that PATH is the release's venv, not the system's.
        let status = tokio::process::Command::new(&built.argv[0])
            .args(&built.argv[1..])
            .current_dir(dir.path())
            .env_remove("VIRTUAL_ENV")
            .status()
            .await?;
        assert!(status.success());
        let prefix = std::fs::read_to_string(dir.path().join("prefix.txt"))?;
        assert_eq!(Path::new(&prefix).canonicalize()?, dir.path().join(".venv").canonicalize()?);
        Ok(())
    }

    #[tokio::test]
    async fn without_a_procfile_or_a_conventional_script_the_build_says_what_to_add() -> std::io::Result<()> {
        let dir = tree(&[("requirements.txt", ""), ("server.py", "")])?;
        let (built, _) = build_logged(dir.path()).await;
        let error = built.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("Procfile") && error.contains("app.py"), "{error}");
        Ok(())
    }

    /// End to end: the python-venv example builds a venv without pip (fast)
    /// and serves from it.
    #[tokio::test]
    async fn python_venv_example_builds_and_serves() -> anyhow::Result<()> {
        let dir = example("python-venv")?;
        let started = std::time::Instant::now();
        let (built, log) = build_logged(dir.path()).await;
        let built = built?;
        let took = started.elapsed();
        assert_eq!(built.buildpack, "python");
        assert!(dir.path().join(".venv/bin/python").exists());
        assert!(!dir.path().join(".venv/bin/pip").exists(), "nothing to install, yet pip was set up: {log:?}");
        // Well under a second alone; generous for a busy test machine.
        assert!(took.as_secs() < 10, "took {took:?}");

        let instance = Instance::start(dir.path(), &built.argv).await?;
        let reply = http_get(instance.port, "/").await?;
        assert_eq!(reply.status, 200, "{reply:?} {}", instance.log());
        assert_eq!(reply.body, "hello from python-venv (release v3)\n");
        let reply = http_get(instance.port, "/env/VIRTUAL_ENV").await?;
        assert!(reply.body.ends_with("/.venv"), "{reply:?}");
        Ok(())
    }
}

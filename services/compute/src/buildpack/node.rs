//! The `node` pack: `package.json`.
//!
//! Dependencies are installed with `npm ci` when there is a lock file (the
//! exact tree it records) and `npm install` otherwise; a package without
//! dependencies skips npm altogether. The app runs with `npm start`, or the
//! Procfile's `web:` command, with `node_modules/.bin` first on `PATH`.

use std::{ffi::OsStr, path::Path};

use serde_json::Value;

use super::{BuildError, Log, say, shell_with, step};

pub(super) const LOOKS_FOR: &str = "package.json (Node.js)";

const MANIFEST: &str = "package.json";
const LOCK_FILES: [&str; 2] = ["package-lock.json", "npm-shrinkwrap.json"];
/// The dependency kinds `npm ci` / `npm install` install by default.
const DEPENDENCY_KINDS: [&str; 3] = ["dependencies", "devDependencies", "optionalDependencies"];
/// npm asks the registry about newer npm versions now and then: not in a
/// build, and not in an app's instances.
const NO_UPDATE_CHECK: (&str, &str) = ("NPM_CONFIG_UPDATE_NOTIFIER", "false");

pub(super) fn recognises(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Installs the dependencies and returns the argv to run.
pub(super) async fn build(dir: &Path, web: Option<&str>, log: &Log) -> Result<Vec<String>, BuildError> {
    say(log, "-----> Node.js app detected");
    let text = tokio::fs::read_to_string(dir.join(MANIFEST)).await?;
    let manifest: Value =
        serde_json::from_str(&text).map_err(|e| BuildError::Invalid(format!("package.json is not valid JSON: {e}")))?;
    let command = match web {
        Some(web) => web.to_owned(),
        // Without a start script, `npm start` runs `node server.js`.
        None if manifest["scripts"]["start"].is_string() || dir.join("server.js").is_file() => "npm start".to_owned(),
        None => {
            return Err(BuildError::Invalid(
                "a Node.js app needs a `start` script in package.json, a server.js, or a Procfile with a `web:` process"
                    .to_owned(),
            ));
        }
    };

    if needs_install(&manifest) {
        let npm = if LOCK_FILES.iter().any(|lock| dir.join(lock).is_file()) { "ci" } else { "install" };
        say(log, format!("-----> Installing dependencies with npm {npm}"));
        let env = [(NO_UPDATE_CHECK.0, OsStr::new(NO_UPDATE_CHECK.1))];
        step::run(dir, log, &["npm", npm, "--no-audit", "--no-fund"], &env).await?;
    } else {
        say(log, "-----> package.json has no dependencies, skipping npm install");
    }

    say(log, format!("       web: {command}"));
    Ok(shell_with(&[("PATH", "$PWD/node_modules/.bin:$PATH"), NO_UPDATE_CHECK], &command))
}

/// Whether the package lists any dependency npm would install.
fn needs_install(manifest: &Value) -> bool {
    DEPENDENCY_KINDS.iter().any(|kind| manifest[kind].as_object().is_some_and(|deps| !deps.is_empty()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::buildpack::testing::{Instance, build_logged, example, http_get, tree};

    #[test]
    fn only_listed_dependencies_need_an_install() {
        assert!(!needs_install(&json!({"name": "x", "scripts": {"start": "node server.js"}})));
        assert!(!needs_install(&json!({"dependencies": {}, "devDependencies": {}})));
        assert!(needs_install(&json!({"dependencies": {"express": "^4"}})));
        assert!(needs_install(&json!({"devDependencies": {"typescript": "^5"}})));
        assert!(needs_install(&json!({"optionalDependencies": {"fsevents": "*"}})));
    }

    #[tokio::test]
    async fn a_procfile_command_runs_with_node_modules_bin_on_path() -> anyhow::Result<()> {
        let dir = tree(&[("package.json", "{\"name\": \"x\"}"), ("Procfile", "web: serve --port $PORT\n")])?;
        let (built, log) = build_logged(dir.path()).await;
        let built = built?;
        assert_eq!(built.buildpack, "node");
        assert_eq!(
            built.argv[2],
            "export PATH=\"$PWD/node_modules/.bin:$PATH\" NPM_CONFIG_UPDATE_NOTIFIER=\"false\"; exec serve --port $PORT"
        );
        assert!(log.iter().any(|l| l.contains("skipping npm install")), "{log:?}");
        Ok(())
    }

    #[tokio::test]
    async fn broken_manifests_and_nothing_to_start_are_explained() -> std::io::Result<()> {
        let dir = tree(&[("package.json", "{ not json")])?;
        let error = build_logged(dir.path()).await.0.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("package.json is not valid JSON"), "{error}");

        let dir = tree(&[("package.json", "{\"scripts\": {\"test\": \"true\"}}")])?;
        let error = build_logged(dir.path()).await.0.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("`start` script"), "{error}");
        Ok(())
    }

    /// End to end: node-hello has no dependencies, so npm never runs at
    /// build time; `npm start` serves it.
    #[tokio::test]
    async fn node_hello_example_builds_and_serves() -> anyhow::Result<()> {
        let dir = example("node-hello")?;
        let (built, log) = build_logged(dir.path()).await;
        let built = built?;
        assert_eq!(built.buildpack, "node");
        assert!(log.iter().any(|l| l.contains("skipping npm install")), "{log:?}");
        // `npm install` would have written a lock file and node_modules.
        assert!(!dir.path().join("package-lock.json").exists() && !dir.path().join("node_modules").exists());

        let instance = Instance::start(dir.path(), &built.argv).await?;
        let reply = http_get(instance.port, "/").await?;
        assert_eq!(reply.status, 200, "{reply:?} {}", instance.log());
        assert_eq!(reply.body, "hello from node-hello (release v3)\n");
        Ok(())
    }
}

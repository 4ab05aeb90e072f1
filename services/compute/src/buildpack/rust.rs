//! The `rust` pack: `Cargo.toml`.
//!
//! `cargo build --release` (`--locked` when a Cargo.lock came with the
//! source) with the target directory inside the release directory, then the
//! binary runs: the Procfile's `web:` command, or the package's binary as
//! Cargo.toml names it (`default-run`, the only `[[bin]]`, or the package).

use std::path::Path;

use serde::Deserialize;

use super::{BuildError, Log, say, shell_with, step};

pub(super) const LOOKS_FOR: &str = "Cargo.toml (Rust)";

const MANIFEST: &str = "Cargo.toml";

/// The little of Cargo.toml this pack reads.
#[derive(Debug, Deserialize)]
struct Manifest {
    package: Option<Package>,
    #[serde(default)]
    bin: Vec<BinTarget>,
}

#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    #[serde(rename = "default-run")]
    default_run: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BinTarget {
    name: Option<String>,
}

pub(super) fn recognises(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Compiles the app and returns the argv to run.
pub(super) async fn build(dir: &Path, web: Option<&str>, log: &Log) -> Result<Vec<String>, BuildError> {
    say(log, "-----> Rust app detected");
    let manifest = tokio::fs::read_to_string(dir.join(MANIFEST)).await?;
    // With a Procfile the command is the app's choice; without, find the binary first so
    // a manifest that does not name one fails before the compile.
    let binary = if web.is_none() { Some(binary_name(&manifest)?) } else { None };

    let target_dir = std::path::absolute(dir)?.join("target");
    let mut cargo = vec!["cargo", "build", "--release"];
    if dir.join("Cargo.lock").is_file() {
        cargo.push("--locked");
    }
    say(log, "-----> Compiling with cargo build --release");
    step::run(dir, log, &cargo, &[("CARGO_TARGET_DIR", target_dir.as_os_str())]).await?;

    let command = match binary {
        Some(binary) => {
            if !target_dir.join("release").join(&binary).is_file() {
                return Err(BuildError::Invalid(format!(
                    "cargo built no binary named {binary:?}: add a Procfile with a `web:` process naming the one to run"
                )));
            }
            format!("./target/release/{binary}")
        }
        None => web.unwrap_or_default().to_owned(),
    };
    say(log, format!("       web: {command}"));
    Ok(shell_with(&[("PATH", "$PWD/target/release:$PATH")], &command))
}

/// The binary `cargo build` makes for this manifest and the app runs.
fn binary_name(manifest: &str) -> Result<String, BuildError> {
    let manifest: Manifest =
        toml::from_str(manifest).map_err(|e| BuildError::Invalid(format!("Cargo.toml is not valid: {e}")))?;
    let package = manifest.package.ok_or_else(|| {
        BuildError::Invalid(
            "Cargo.toml has no [package]: deploy the directory of the package to run, or add a Procfile".to_owned(),
        )
    })?;
    let name = match (package.default_run, manifest.bin.as_slice()) {
        (Some(default_run), _) => default_run,
        (None, []) => package.name,
        (None, [only]) => only.name.clone().unwrap_or(package.name),
        (None, bins) => {
            let names: Vec<&str> = bins.iter().filter_map(|bin| bin.name.as_deref()).collect();
            if !names.contains(&package.name.as_str()) {
                return Err(BuildError::Invalid(format!(
                    "Cargo.toml has several binaries ({}): set `default-run` in [package] or add a Procfile \
                     with a `web:` process naming the one to run",
                    names.join(", ")
                )));
            }
            package.name
        }
    };
    // It becomes part of a shell command.
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(BuildError::Invalid(format!("Cargo.toml names an unusable binary {name:?}")));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildpack::testing::{Instance, build_logged, example, http_get};

    fn name_of(manifest: &str) -> String {
        binary_name(manifest).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn the_binary_is_found_in_the_manifest() {
        let package = "[package]\nname = \"shop\"\nversion = \"0.1.0\"\nedition = \"2024\"\n";
        assert_eq!(name_of(package), "shop");
        assert_eq!(name_of(&format!("{package}[dependencies]\nserde = \"1\"\n[workspace]\n")), "shop");
        assert_eq!(name_of(&format!("{package}[[bin]]\nname = \"shop-web\"\npath = \"src/web.rs\"\n")), "shop-web");
        assert_eq!(name_of(&format!("{package}[[bin]]\npath = \"src/main.rs\"\n")), "shop");
        let two = format!("{package}[[bin]]\nname = \"shop-web\"\n[[bin]]\nname = \"shop-admin\"\n");
        assert!(name_of(&two).contains("several binaries (shop-web, shop-admin)"), "{}", name_of(&two));
        let two_with_package = format!("{package}[[bin]]\nname = \"shop\"\n[[bin]]\nname = \"shop-admin\"\n");
        assert_eq!(name_of(&two_with_package), "shop");
        let default_run = package.replace("edition", "default-run = \"shop-admin\"\nedition");
        assert_eq!(
            name_of(&format!("{default_run}[[bin]]\nname = \"shop-web\"\n[[bin]]\nname = \"shop-admin\"\n")),
            "shop-admin"
        );
    }

    #[test]
    fn manifests_without_a_usable_binary_are_explained() {
        assert!(name_of("[workspace]\nmembers = [\"a\"]\n").contains("no [package]"));
        assert!(name_of("[package\nname = ").contains("Cargo.toml is not valid"));
        assert!(name_of("[package]\nname = \"x\"\ndefault-run = \"x; rm -rf /\"\n").contains("unusable binary"));
    }

    /// End to end (compiles for a few seconds): rust-hello builds with its
    /// target directory in the release and serves.
    #[tokio::test]
    async fn rust_hello_example_builds_and_serves() -> anyhow::Result<()> {
        let dir = example("rust-hello")?;
        let (built, log) = build_logged(dir.path()).await;
        let built = built.map_err(|e| anyhow::anyhow!("{e}\n{}", log.join("\n")))?;
        assert_eq!(built.buildpack, "rust");
        assert_eq!(built.argv[2], "export PATH=\"$PWD/target/release:$PATH\"; exec ./target/release/rust-hello");
        assert!(dir.path().join("target/release/rust-hello").is_file());

        let instance = Instance::start(dir.path(), &built.argv).await?;
        let reply = http_get(instance.port, "/").await?;
        assert_eq!(reply.status, 200, "{reply:?} {}", instance.log());
        assert_eq!(reply.body, "hello from rust-hello (release v3)\n");
        Ok(())
    }
}

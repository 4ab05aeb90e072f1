//! The `static` pack: an `index.html` at the root and nothing to build.
//!
//! The release is served by Strata's built-in file server
//! ([`crate::static_site`]): instances run the compute executable itself
//! with a hidden subcommand, so nothing else need be installed.

use std::path::Path;

use super::{BuildError, Log, say};
use crate::static_site;

pub(super) const LOOKS_FOR: &str = "index.html (static site)";

pub(super) fn recognises(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// `<this executable> __static-site .`: instances start in the release
/// directory, so `.` is the site.
pub(super) fn build(log: &Log) -> Result<Vec<String>, BuildError> {
    say(log, "-----> Static site detected (index.html)");
    let exe = std::env::current_exe()?.into_os_string().into_string().map_err(|exe| {
        BuildError::Invalid(format!("the path of the compute executable is not UTF-8: {}", exe.to_string_lossy()))
    })?;
    say(log, "       served by Strata's built-in file server");
    Ok(vec![exe, static_site::SUBCOMMAND.to_owned(), ".".to_owned()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildpack::testing::{build_logged, example, http_get};

    /// End to end: the static-site example builds into the file server's
    /// command line, and that server serves it. (The argv itself starts the
    /// test binary here, so the server runs in-process.)
    #[tokio::test]
    async fn static_site_example_builds_and_serves() -> anyhow::Result<()> {
        let dir = example("static-site")?;
        let (built, _) = build_logged(dir.path()).await;
        let built = built?;
        assert_eq!(built.buildpack, "static");
        assert_eq!(built.argv[0], std::env::current_exe()?.display().to_string());
        assert_eq!(built.argv[1..], ["__static-site", "."]);

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(static_site::serve_on(listener, dir.path().join(&built.argv[2])));
        let reply = http_get(port, "/").await?;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, std::fs::read_to_string(dir.path().join("index.html"))?);
        let reply = http_get(port, "/style.css").await?;
        assert_eq!((reply.status, reply.header("content-type")), (200, Some("text/css; charset=utf-8")));
        server.abort();
        Ok(())
    }
}

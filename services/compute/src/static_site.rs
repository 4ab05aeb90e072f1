//! A tiny HTTP/1.1 file server: what the `static` build pack's instances run
//! (`<compute executable> __static-site DIR`, listening on `$PORT`).
//!
//! GET and HEAD only, one request per connection. A directory is served by
//! its `index.html`. The request path is percent-decoded and a `..` segment is
//! refused; a file (or symlink) that resolves outside the directory is not
//! found, so nothing outside the site can be read.

use std::{
    ffi::{OsStr, OsString},
    io::{self, Write as _},
    os::unix::ffi::OsStringExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The hidden subcommand of the compute executables that runs this server.
pub const SUBCOMMAND: &str = "__static-site";

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may take to send its request and read the reply.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory to serve when `args` (as from [`std::env::args_os`], the
/// program first) are `<program> __static-site [DIR]`; `.` when DIR is left out.
pub fn subcommand_dir(args: impl IntoIterator<Item = OsString>) -> Option<PathBuf> {
    let mut args = args.into_iter().skip(1);
    if args.next()? != SUBCOMMAND {
        return None;
    }
    Some(args.next().map_or_else(|| PathBuf::from("."), PathBuf::from))
}

/// Serves `dir` on the port in `$PORT` until the process is stopped.
pub async fn serve_from_env(dir: PathBuf) -> io::Result<()> {
    let port = std::env::var("PORT").ok().and_then(|port| port.parse().ok()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "set PORT to the port the static site should listen on")
    })?;
    serve(dir, port).await
}

/// Serves `dir` on 127.0.0.1:`port` until the process is stopped.
pub async fn serve(dir: PathBuf, port: u16) -> io::Result<()> {
    serve_on(TcpListener::bind(("127.0.0.1", port)).await?, dir).await
}

/// Serves `dir` on `listener`; returns only when `dir` cannot be served.
pub async fn serve_on(listener: TcpListener, dir: PathBuf) -> io::Result<()> {
    let root = Arc::new(tokio::fs::canonicalize(&dir).await?);
    log(format_args!("static-site: serving {} on {}", root.display(), listener.local_addr()?));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like pass; keep serving.
                log(format_args!("static-site: accept failed: {error}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let root = Arc::clone(&root);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, handle(stream, &root)).await;
        });
    }
}

/// A line to the instance's log; a closed stdout is not worth failing a request for.
fn log(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// A reply: status, headers and what follows them.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

enum Body {
    Text(&'static str),
    File { file: tokio::fs::File, len: u64 },
}

impl Reply {
    fn text(status: u16, body: &'static str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_owned())],
            body: Body::Text(body),
        }
    }

    fn len(&self) -> u64 {
        match &self.body {
            Body::Text(text) => text.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

/// A request refused before the disk is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    BadRequest,
    BadPath,
    NotHttp1,
    Method,
}

impl Refusal {
    fn reply(self) -> Reply {
        match self {
            Refusal::BadRequest => Reply::text(400, "bad request\n"),
            Refusal::BadPath => Reply::text(400, "bad request path\n"),
            Refusal::NotHttp1 => Reply::text(505, "only HTTP/1.x is served here\n"),
            Refusal::Method => {
                let mut reply = Reply::text(405, "only GET and HEAD are served here\n");
                reply.headers.push(("Allow", "GET, HEAD".to_owned()));
                reply
            }
        }
    }
}

async fn handle(mut stream: TcpStream, root: &Path) -> io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return write(&mut stream, None, Reply::text(431, "request header too large\n")).await;
    };
    let head = String::from_utf8_lossy(&head);
    let request_line = head.lines().next().unwrap_or_default();
    let (method, reply) = match parse_request_line(request_line) {
        Ok((method, target)) => (Some(method), respond(root, target).await),
        Err(refusal) => (None, refusal.reply()),
    };
    log(format_args!("static-site: \"{request_line}\" {}", reply.status));
    write(&mut stream, method, reply).await
}

/// Reads up to the blank line ending the request head; `None` when it is too
/// large, an empty head when the client closed first.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let read = stream.read(&mut chunk).await?;
        head.extend_from_slice(&chunk[..read]);
        if read == 0 || head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// `METHOD TARGET HTTP/1.x`: the method and the target, or the error reply.
fn parse_request_line(line: &str) -> Result<(Method, &str), Refusal> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Refusal::NotHttp1);
    }
    match method {
        "GET" => Ok((Method::Get, target)),
        "HEAD" => Ok((Method::Head, target)),
        _ => Err(Refusal::Method),
    }
}

/// The reply to a GET of `target` (`/path?query`) in `root`.
async fn respond(root: &Path, target: &str) -> Reply {
    let (path, query) = target.split_once('?').map_or((target, None), |(path, query)| (path, Some(query)));
    let segments = match segments(path) {
        Ok(segments) => segments,
        Err(refusal) => return refusal.reply(),
    };
    let mut file = segments.iter().fold(root.to_path_buf(), |file, segment| file.join(segment));
    let Ok(meta) = tokio::fs::metadata(&file).await else { return Reply::text(404, "not found\n") };
    if meta.is_dir() {
        if !path.ends_with('/') {
            // Relative links in the index resolve against the directory only with the slash.
            let mut reply = Reply::text(301, "moved\n");
            // One leading slash: `//host/` would send the browser to another site.
            let path = path.trim_start_matches('/');
            let location = match query {
                Some(query) => format!("/{path}/?{query}"),
                None => format!("/{path}/"),
            };
            reply.headers.push(("Location", location));
            return reply;
        }
        file.push("index.html");
    }
    // Symlinks must not lead out of the site.
    match tokio::fs::canonicalize(&file).await {
        Ok(real) if real.starts_with(root) => {}
        _ => return Reply::text(404, "not found\n"),
    }
    let opened = match tokio::fs::File::open(&file).await {
        Ok(opened) => opened,
        Err(_) => return Reply::text(404, "not found\n"),
    };
    match opened.metadata().await {
        Ok(meta) if meta.is_file() => Reply {
            status: 200,
            headers: vec![("Content-Type", content_type(&file).to_owned())],
            body: Body::File { file: opened, len: meta.len() },
        },
        _ => Reply::text(404, "not found\n"),
    }
}

/// The decoded segments of a request path, without empty and `.` ones; a
/// `..` segment, a bad escape or a NUL byte is a bad request.
fn segments(path: &str) -> Result<Vec<OsString>, Refusal> {
    if !path.starts_with('/') {
        return Err(Refusal::BadPath);
    }
    let decoded = percent_decode(path).ok_or(Refusal::BadPath)?;
    let mut segments = Vec::new();
    for segment in decoded.split(|b| *b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Refusal::BadPath),
            _ if segment.contains(&0) => return Err(Refusal::BadPath),
            _ => segments.push(OsString::from_vec(segment.to_vec())),
        }
    }
    Ok(segments)
}

/// `%XX` escapes decoded; `None` for a malformed escape.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The Content-Type of a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let extension = path.extension().and_then(OsStr::to_str).unwrap_or_default().to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "mp3" => "audio/mpeg",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// Writes `reply`; the body only for a GET (`method` is `None` when the
/// request could not be read, and the error text is sent).
async fn write(stream: &mut TcpStream, method: Option<Method>, reply: Reply) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        reply.len()
    ));
    stream.write_all(head.as_bytes()).await?;
    if method != Some(Method::Head) {
        match reply.body {
            Body::Text(text) => stream.write_all(text.as_bytes()).await?,
            Body::File { file, len } => {
                tokio::io::copy(&mut file.take(len), stream).await?;
            }
        }
    }
    stream.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buildpack::testing::{http_get, http_request, tree};

    /// A site in `site/` with a secret beside it, served on a free port.
    async fn site() -> anyhow::Result<(tempfile::TempDir, u16, tokio::task::JoinHandle<io::Result<()>>)> {
        let dir = tree(&[
            ("secret.txt", "do not serve\n"),
            ("site/index.html", "<h1>home</h1>\n"),
            ("site/style.css", "h1 { color: red }\n"),
            ("site/app.JS", "console.log(1)\n"),
            ("site/blob.bin", "\u{1}\u{2}"),
            ("site/hello world.txt", "spaced\n"),
            ("site/docs/index.html", "<h1>docs</h1>\n"),
            ("site/empty/.keep", ""),
        ])?;
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), dir.path().join("site/leak.txt"))?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let server = tokio::spawn(serve_on(listener, dir.path().join("site")));
        Ok((dir, port, server))
    }

    #[tokio::test]
    async fn files_and_directory_indexes_are_served_with_their_type() -> anyhow::Result<()> {
        let (_dir, port, server) = site().await?;
        for (path, body, content_type) in [
            ("/", "<h1>home</h1>\n", "text/html; charset=utf-8"),
            ("/index.html?utm=1", "<h1>home</h1>\n", "text/html; charset=utf-8"),
            ("/docs/", "<h1>docs</h1>\n", "text/html; charset=utf-8"),
            ("/style.css", "h1 { color: red }\n", "text/css; charset=utf-8"),
            ("/app.JS", "console.log(1)\n", "text/javascript; charset=utf-8"),
            ("/blob.bin", "\u{1}\u{2}", "application/octet-stream"),
            ("/hello%20world.txt", "spaced\n", "text/plain; charset=utf-8"),
            ("//docs/./index.html", "<h1>docs</h1>\n", "text/html; charset=utf-8"),
        ] {
            let reply = http_get(port, path).await?;
            assert_eq!((reply.status, reply.body.as_str()), (200, body), "{path}: {reply:?}");
            assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
            assert_eq!(reply.header("content-length"), Some(body.len().to_string().as_str()), "{path}");
        }
        let reply = http_get(port, "/docs?x=1").await?;
        assert_eq!((reply.status, reply.header("location")), (301, Some("/docs/?x=1")));
        let reply = http_get(port, "//docs").await?;
        assert_eq!((reply.status, reply.header("location")), (301, Some("/docs/")));
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn missing_files_are_not_found() -> anyhow::Result<()> {
        let (_dir, port, server) = site().await?;
        for path in ["/nope.html", "/docs/nope/", "/empty/", "/style.css/x"] {
            let reply = http_get(port, path).await?;
            assert_eq!((reply.status, reply.body.as_str()), (404, "not found\n"), "{path}");
        }
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn nothing_outside_the_site_can_be_read() -> anyhow::Result<()> {
        let (_dir, port, server) = site().await?;
        for path in ["/../secret.txt", "/docs/../../secret.txt", "/%2e%2e/secret.txt", "/docs/..%2f..%2fsecret.txt"] {
            let reply = http_get(port, path).await?;
            assert_eq!(reply.status, 400, "{path}: {reply:?}");
            assert!(!reply.body.contains("do not serve"), "{path}");
        }
        for path in ["secret.txt", "/%zz", "/a%00b"] {
            assert_eq!(http_get(port, path).await?.status, 400, "{path}");
        }
        // A symlink out of the site is not followed.
        assert_eq!(http_get(port, "/leak.txt").await?.status, 404);
        server.abort();
        Ok(())
    }

    #[tokio::test]
    async fn head_has_no_body_and_other_methods_are_refused() -> anyhow::Result<()> {
        let (_dir, port, server) = site().await?;
        let reply = http_request(port, "HEAD /style.css HTTP/1.1").await?;
        assert_eq!((reply.status, reply.body.as_str()), (200, ""));
        assert_eq!(reply.header("content-length"), Some("18"));
        let reply = http_request(port, "POST / HTTP/1.1").await?;
        assert_eq!((reply.status, reply.header("allow")), (405, Some("get, head")));
        assert_eq!(http_request(port, "GET /").await?.status, 400);
        server.abort();
        Ok(())
    }

    #[test]
    fn the_subcommand_is_recognised() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(subcommand_dir(args(&["strata-compute", "__static-site", "/srv/site"])), Some("/srv/site".into()));
        assert_eq!(subcommand_dir(args(&["strata", "__static-site"])), Some(".".into()));
        assert_eq!(subcommand_dir(args(&["strata-compute", "--config", "x.toml"])), None);
        assert_eq!(subcommand_dir(args(&["strata-compute"])), None);
    }
}

//! rust-hello: a tiny Strata example app using only the Rust standard library.
//!
//! Listens on 127.0.0.1:$PORT.
//!   GET /         -> 200 "hello from rust-hello (release $STRATA_RELEASE)\n"
//!   GET /healthz  -> 200 "ok"
//! Logs one line per request to stdout; SIGTERM ends it.

use std::{
    env,
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    process::ExitCode,
    thread,
};

const APP: &str = "rust-hello";

fn main() -> ExitCode {
    let Some(port) = env::var("PORT").ok().and_then(|port| port.parse::<u16>().ok()) else {
        eprintln!("{APP}: set PORT to the port to listen on");
        return ExitCode::from(2);
    };
    let release = env::var("STRATA_RELEASE").unwrap_or_else(|_| "dev".to_owned());
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("{APP}: cannot listen on 127.0.0.1:{port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{APP}: release {release} listening on 127.0.0.1:{port}");
    for stream in listener.incoming().flatten() {
        let release = release.clone();
        thread::spawn(move || {
            if let Err(error) = answer(stream, &release) {
                eprintln!("{APP}: {error}");
            }
        });
    }
    ExitCode::SUCCESS
}

/// Reads one request and answers it.
fn answer(stream: TcpStream, release: &str) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers are not needed: skip to the blank line.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let request_line = request_line.trim_end();
    let mut parts = request_line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next().map(|target| target.split('?').next())) {
        (Some("GET"), Some(Some("/"))) => ("200 OK", format!("hello from {APP} (release {release})\n")),
        (Some("GET"), Some(Some("/healthz"))) => ("200 OK", "ok".to_owned()),
        (Some("GET"), _) => ("404 Not Found", "not found\n".to_owned()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_owned()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    println!("{APP}: {peer} \"{request_line}\" {}", &status[..3]);
    Ok(())
}

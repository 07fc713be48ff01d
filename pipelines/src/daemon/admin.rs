//! The admin HTTP endpoint: `/metrics` (Prometheus text), `/healthz`, `/readyz`,
//! `POST /rules/reload` and `POST /actions/release` (bearer token). A small HTTP/1.1 server on its own thread: one
//! request per connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::metrics::Metrics;

/// What the endpoint serves.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The bearer token `POST /rules/reload` needs; `None` = reloads over HTTP are off.
    pub token: Option<String>,
    /// Where reload requests go (the daemon's batch loop answers between batches).
    pub reload: crossbeam_channel::Sender<super::ReloadRequest>,
    /// Where releases go (`POST /actions/release`, same token).
    pub release: crossbeam_channel::Sender<super::ReleaseRequest>,
}

/// Binds `addr` and serves on a background thread; returns the bound address.
pub fn serve(addr: &str, admin: Admin) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name("admin-http".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = handle(stream, &admin);
        }
    })?;
    Ok(local)
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The refusal when the bearer token is off or wrong.
fn refused(admin: &Admin, bearer: Option<&str>, what: &str) -> Option<(&'static str, String)> {
    let Some(token) = &admin.token else {
        return Some((
            "403 Forbidden",
            format!("{what} over HTTP is off: set admin_token (or ANNING_ADMIN_TOKEN)\n"),
        ));
    };
    if !bearer.is_some_and(|b| same(b, token)) {
        return Some((
            "401 Unauthorized",
            "a valid `Authorization: Bearer <admin_token>` header is required\n".into(),
        ));
    }
    None
}

fn release(admin: &Admin, bearer: Option<&str>, body: &str) -> (&'static str, String) {
    if let Some(r) = refused(admin, bearer, "releasing") {
        return r;
    }
    let ask = match super::ReleaseAsk::parse(body) {
        Ok(a) => a,
        Err(e) => return ("400 Bad Request", e + "\n"),
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    if admin.release.send((ask, tx)).is_err() {
        return ("503 Service Unavailable", "the daemon is stopping\n".into());
    }
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(action)) => ("200 OK", action),
        Ok(Err(msg)) => ("404 Not Found", msg),
        Err(_) => ("504 Gateway Timeout", "no answer from the batch loop within 60 s\n".into()),
    }
}

fn reload(admin: &Admin, bearer: Option<&str>) -> (&'static str, String) {
    if let Some(r) = refused(admin, bearer, "reloading (SIGHUP reloads too)") {
        return r;
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    if admin.reload.send(tx).is_err() {
        return ("503 Service Unavailable", "the daemon is stopping\n".into());
    }
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(msg)) => ("200 OK", msg),
        Ok(Err(msg)) => ("422 Unprocessable Entity", msg),
        Err(_) => ("504 Gateway Timeout", "no answer from the batch loop within 60 s\n".into()),
    }
}

fn handle(mut stream: TcpStream, admin: &Admin) -> std::io::Result<()> {
    let metrics = &admin.metrics;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Headers: the bearer token and the body's length matter.
    let mut line = String::new();
    let mut bearer = None;
    let mut length = 0usize;
    while reader.read_line(&mut line)? > 2 {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("authorization")
                && let Some(t) = value.trim().strip_prefix("Bearer ")
            {
                bearer = Some(t.trim().to_string());
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        line.clear();
    }
    let mut body = vec![0u8; length.min(64 * 1024)];
    std::io::Read::read_exact(&mut reader, &mut body)?;
    let body = String::from_utf8_lossy(&body);
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", metrics.render()),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if metrics.ready.load(Relaxed) => ("200 OK", "text/plain", "ready\n".to_string()),
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready: waiting for partitions or state\n".to_string(),
        ),
        ("POST", "/rules/reload") => {
            let (status, body) = reload(admin, bearer.as_deref());
            (status, "text/plain", body)
        }
        ("POST", "/actions/release") => {
            let (status, body) = release(admin, bearer.as_deref(), &body);
            (
                status,
                if status.starts_with("200") {
                    "application/json"
                } else {
                    "text/plain"
                },
                body,
            )
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "method not allowed\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

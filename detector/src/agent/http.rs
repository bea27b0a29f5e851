//! The metrics endpoint: a small HTTP/1.1 server on its own thread (a
//! current-thread tokio runtime), serving
//!
//! - `GET /metrics`: the exposition text, OpenMetrics unless the client
//!   asks for the Prometheus text format only ([`Format::negotiate`]);
//! - `GET /healthz`: 200 while the pipeline loop runs, 503 otherwise;
//! - `GET /readyz`: 200 when, besides, the probes the ready rules need are
//!   attached; 503 with the reason otherwise.
//!
//! One request per connection (`Connection: close`), read with a timeout
//! and a size cap; a scrape only reads atomics, so the pipeline thread is
//! never held up by it.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::metrics::{AgentMetrics, Format};

/// Bytes of request head read at most.
const MAX_HEAD: usize = 8 << 10;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;

/// Binds the endpoint's socket (before privileges are dropped, so a port
/// below 1024 works with CAP_NET_BIND_SERVICE).
pub fn bind(addr: SocketAddr) -> io::Result<StdListener> {
    let l = StdListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `listener` on a thread of its own until the process exits.
pub fn spawn(
    listener: StdListener,
    metrics: Arc<AgentMetrics>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("the metrics endpoint cannot listen: {e}");
                        return;
                    }
                };
                serve(listener, metrics).await;
            });
        })
}

async fn serve(listener: TcpListener, metrics: Arc<AgentMetrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let conn = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                log::warn!("the metrics endpoint could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let m = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _ = handle(conn, &m).await;
            drop(permit);
        });
    }
}

/// A parsed request head: method, path (without the query) and the
/// `Accept` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub accept: Option<String>,
}

/// Parses a request head (`None` if it is not HTTP).
pub fn parse_request(head: &str) -> Option<Request> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    if !first.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    let accept = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("accept")
            .then(|| v.trim().to_string())
    });
    Some(Request {
        method,
        path,
        accept,
    })
}

/// The response to `req`: status, content type, body.
pub fn respond(req: &Request, metrics: &Arc<AgentMetrics>) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method != "GET" && req.method != "HEAD" {
        return (405, TEXT, "only GET and HEAD are served\n".into());
    }
    match req.path.as_str() {
        "/metrics" => {
            let f = Format::negotiate(req.accept.as_deref());
            (200, f.content_type(), metrics.render(f))
        }
        "/healthz" => {
            let h = metrics.health();
            if h.alive {
                (200, TEXT, "ok\n".into())
            } else {
                (503, TEXT, format!("{}\n", h.reason))
            }
        }
        "/readyz" => {
            let h = metrics.health();
            if h.ready {
                (200, TEXT, "ready\n".into())
            } else {
                (503, TEXT, format!("{}\n", h.reason))
            }
        }
        "/" => (
            200,
            TEXT,
            "detector agent: /metrics /healthz /readyz\n".into(),
        ),
        _ => (404, TEXT, "not found: /metrics /healthz /readyz\n".into()),
    }
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn read_head(conn: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn handle(mut conn: TcpStream, metrics: &Arc<AgentMetrics>) -> io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut conn)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let (code, ctype, body, head_only) = match head.as_deref().and_then(parse_request) {
        Some(req) => {
            let (c, t, b) = respond(&req, metrics);
            (c, t, b, req.method == "HEAD")
        }
        None => (
            400,
            "text/plain; charset=utf-8",
            "bad request\n".into(),
            false,
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        status_text(code),
        body.len()
    );
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    conn.write_all(out.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse() {
        let r = parse_request(
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\naccept: text/plain;version=0.0.4",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.accept.as_deref(), Some("text/plain;version=0.0.4"));
        assert_eq!(parse_request("garbage"), None);
        assert_eq!(parse_request("GET / SMTP"), None);
    }
}

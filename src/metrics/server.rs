//! The HTTP endpoint for scrapes and health checks: `GET /metrics`, `GET /healthz`.
//!
//! One tiny_http server on its own named thread, answering from the shared [`Metrics`] and
//! [`Health`]; it owns no state of its own. It stops when the [`MetricsServer`] is dropped.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::exposition::CONTENT_TYPE;
use super::{Health, Metrics};

/// Upper bound on how long the thread waits for a request before re-checking the stop flag.
/// `unblock()` normally wakes it at once; this is the fallback.
const POLL: Duration = Duration::from_millis(500);

/// A running metrics/health endpoint. Dropping it stops the server and joins its thread.
pub struct MetricsServer {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Binds `bind` (`host:port`; port 0 picks a free one) and serves on a thread named
    /// `metrics-http`. Fails when the address cannot be bound.
    pub fn start(bind: &str, metrics: Metrics, health: Health) -> io::Result<MetricsServer> {
        let server = Server::http(bind).map_err(|err| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("metrics server cannot listen on {bind}: {err}"),
            )
        })?;
        let addr = server.server_addr().to_ip().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "metrics server needs an IP address",
            )
        })?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("metrics-http".into())
                .spawn(move || serve(&server, &stop, &metrics, &health))?
        };
        log::info!("metrics: serving /metrics and /healthz on http://{addr}");
        Ok(MetricsServer {
            server,
            stop,
            thread: Some(thread),
            addr,
        })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and joins the thread (same as dropping).
    pub fn stop(self) {}
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("metrics: server thread panicked");
        }
    }
}

fn serve(server: &Server, stop: &AtomicBool, metrics: &Metrics, health: &Health) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(POLL) {
            Ok(Some(request)) => respond(request, metrics, health),
            Ok(None) => {}
            Err(err) => log::debug!("metrics: accept failed: {err}"),
        }
    }
}

fn respond(request: Request, metrics: &Metrics, health: &Health) {
    let path = request.url().split('?').next().unwrap_or("");
    let known = matches!(path, "/metrics" | "/healthz");
    let response = if known && !matches!(request.method(), Method::Get | Method::Head) {
        with_header(
            text(405, "method not allowed\n", "text/plain; charset=utf-8"),
            "Allow",
            "GET, HEAD",
        )
    } else {
        match path {
            "/metrics" => text(200, &metrics.render(), CONTENT_TYPE),
            "/healthz" => {
                let report = health.check();
                if report.is_healthy() {
                    text(200, "ok\n", "text/plain; charset=utf-8")
                } else {
                    text(503, &report.to_json(), "application/json")
                }
            }
            _ => text(404, "not found\n", "text/plain; charset=utf-8"),
        }
    };
    // A scraper that hung up mid-answer is its own problem.
    if let Err(err) = request.respond(response) {
        log::debug!("metrics: writing response failed: {err}");
    }
}

fn text(status: u16, body: &str, content_type: &str) -> Response<io::Cursor<Vec<u8>>> {
    with_header(
        Response::from_string(body).with_status_code(status),
        "Content-Type",
        content_type,
    )
}

/// Header names and values here are ASCII constants, so `from_bytes` cannot fail; if it ever
/// did, the answer goes out without that header rather than panicking the server thread.
fn with_header<R: io::Read>(response: Response<R>, name: &str, value: &str) -> Response<R> {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

//! A minimal blocking HTTP/1.1 server for the simulators: one thread per connection, keep-alive,
//! `Content-Length` and chunked request bodies, bounded header and body sizes.
//!
//! Why not tiny_http (which the crate also depends on): tiny_http 0.12's task pool
//! (`util/task_pool.rs`, `TaskPool::spawn`) counts a worker that was woken but has not yet taken
//! its task as still idle, so when several connections arrive together one of them can be queued
//! behind long-lived keep-alive connections and never served: the client hangs until its timeout.
//! Every multi-threaded client hits this at start-up (measured: 16 threads, two 2 s timeouts per
//! run). A thread per connection has no such queue.

use log::debug;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Longest request line or header line read.
const MAX_LINE: u64 = 64 * 1024;
/// Most header lines in one request.
const MAX_HEADERS: usize = 200;
/// Largest request body accepted.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// A parsed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, as sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer; `Content-Length` is added by the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A handler answering this status makes the server close the connection without a response.
pub const HANGUP: u16 = 0;

/// What serves the requests; called on the connection's thread.
pub type Handler = Arc<dyn Fn(HttpRequest) -> HttpResponse + Send + Sync>;

/// A running server. Stops on [`HttpServer::shutdown`] or drop.
pub struct HttpServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    stopping: AtomicBool,
    next_id: AtomicU64,
    active: AtomicUsize,
    max_connections: usize,
    /// Open connections (clones), so shutdown can close them.
    conns: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Listen on `bind` and serve every connection on its own thread (`name-conn-N`). Connections
/// beyond `max_connections` get a 503 and are closed.
pub fn start(
    bind: &str,
    name: &str,
    max_connections: usize,
    handler: Handler,
) -> io::Result<HttpServer> {
    let listener = TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    let inner = Arc::new(Inner {
        stopping: AtomicBool::new(false),
        next_id: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        max_connections: max_connections.max(1),
        conns: Mutex::new(HashMap::new()),
        threads: Mutex::new(Vec::new()),
    });
    let accept = {
        let inner = Arc::clone(&inner);
        let name = name.to_owned();
        std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || accept_loop(&listener, &inner, &name, &handler))?
    };
    Ok(HttpServer {
        addr,
        inner,
        accept: Mutex::new(Some(accept)),
    })
}

fn accept_loop(listener: &TcpListener, inner: &Arc<Inner>, name: &str, handler: &Handler) {
    for stream in listener.incoming() {
        if inner.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        if inner.active.load(Ordering::SeqCst) >= inner.max_connections {
            let mut s = stream;
            let _ = write_response(
                &mut s,
                &HttpResponse {
                    status: 503,
                    headers: Vec::new(),
                    body: br#"{"detail": "Too many connections."}"#.to_vec(),
                },
                false,
            );
            continue;
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&inner.conns).insert(id, clone);
        }
        inner.active.fetch_add(1, Ordering::SeqCst);
        let conn_inner = Arc::clone(inner);
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, &handler);
                lock(&conn_inner.conns).remove(&id);
                conn_inner.active.fetch_sub(1, Ordering::SeqCst);
            });
        match spawned {
            Ok(handle) => {
                let mut threads = lock(&inner.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
            Err(e) => {
                debug!("{name}: cannot spawn a connection thread: {e}");
                lock(&inner.conns).remove(&id);
                inner.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl HttpServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (a client reusing keep-alive connections opens few).
    pub fn connections_accepted(&self) -> u64 {
        self.inner.next_id.load(Ordering::Relaxed)
    }

    /// Stop accepting, close open connections and join every thread. Idempotent.
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let accept = lock(&self.accept).take();
        if let Some(accept) = accept {
            // Wake the blocking accept() with a connection of our own.
            let _ = TcpStream::connect(self.addr);
            let _ = accept.join();
        }
        for conn in lock(&self.inner.conns).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.inner.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let request = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(status) => {
                let body = format!(r#"{{"detail": "Bad request ({status})."}}"#).into_bytes();
                let _ = write_response(
                    &mut writer,
                    &HttpResponse {
                        status,
                        headers: Vec::new(),
                        body,
                    },
                    false,
                );
                return;
            }
        };
        let keep_alive = request
            .header("connection")
            .is_none_or(|c| !c.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let response = handler(request);
        if response.status == HANGUP {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if write_response(&mut writer, &response, keep_alive).is_err() || !keep_alive {
            return;
        }
    }
}

/// One line, at most `MAX_LINE` bytes, without its CRLF. `None` at a clean end of stream.
fn read_line(reader: &mut BufReader<TcpStream>) -> Result<Option<String>, u16> {
    let mut line = Vec::new();
    match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
        Ok(0) => Ok(None),
        Ok(_) if !line.ends_with(b"\n") => Err(431),
        Ok(_) => {
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            String::from_utf8(line).map(Some).map_err(|_| 400)
        }
        Err(_) => Ok(None),
    }
}

/// `Ok(None)`: the client closed the connection. `Err(status)`: answer that and close.
fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<HttpRequest>, u16> {
    let mut line = String::new();
    // Tolerate empty lines between requests (RFC 9112 §2.2).
    while line.is_empty() {
        match read_line(reader)? {
            Some(l) => line = l,
            None => return Ok(None),
        }
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(url), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(505);
    }
    let mut request = HttpRequest {
        method: method.to_owned(),
        url: url.to_owned(),
        ..HttpRequest::default()
    };
    loop {
        let Some(header) = read_line(reader)? else {
            return Err(400);
        };
        if header.is_empty() {
            break;
        }
        if request.headers.len() >= MAX_HEADERS {
            return Err(431);
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(400);
        };
        request
            .headers
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked(reader)?;
    } else if let Some(len) = request.header("content-length") {
        let len: usize = len.trim().parse().map_err(|_| 400u16)?;
        if len > MAX_BODY {
            return Err(413);
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(|_| 400u16)?;
        request.body = body;
    }
    Ok(Some(request))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Result<Vec<u8>, u16> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?.ok_or(400u16)?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| 400u16)?;
        if size == 0 {
            // Trailers, up to the empty line.
            while read_line(reader)?.is_some_and(|l| !l.is_empty()) {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(413);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(|_| 400u16)?;
        read_line(reader)?;
    }
}

fn write_response(w: &mut TcpStream, r: &HttpResponse, keep_alive: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_body = !matches!(r.status, 204 | 304) && !(100..200).contains(&r.status);
    if has_body {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if has_body {
        out.extend_from_slice(&r.body);
    }
    w.write_all(&out)?;
    w.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo() -> Handler {
        Arc::new(|r: HttpRequest| HttpResponse {
            status: 200,
            headers: vec![("X-Method".into(), r.method.clone())],
            body: [r.url.as_bytes(), b"|", &r.body].concat(),
        })
    }

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(raw).expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_keep_alive_content_length_and_chunked_bodies() {
        let server = start("127.0.0.1:0", "t", 8, echo()).expect("server");
        let out = exchange(
            server.addr(),
            b"POST /a?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
              POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1;ext\r\n!\r\n0\r\n\r\n\
              GET /c HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(
            out.contains("Content-Length: 10\r\n\r\n/a?x=1|abc"),
            "{out}"
        );
        assert!(out.contains("/b|hi!"), "{out}");
        assert!(out.ends_with("Connection: close\r\n\r\n/c|"), "{out}");
        server.shutdown();
    }

    #[test]
    fn malformed_requests_get_an_error_and_a_close() {
        let server = start("127.0.0.1:0", "t", 8, echo()).expect("server");
        assert!(exchange(server.addr(), b"NONSENSE\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(exchange(server.addr(), b"GET / SPDY/3\r\n\r\n").starts_with("HTTP/1.1 505"));
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n";
        assert!(exchange(server.addr(), huge).starts_with("HTTP/1.1 413"));
        let bad_chunk = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(exchange(server.addr(), bad_chunk).starts_with("HTTP/1.1 400"));
    }

    #[test]
    fn shutdown_closes_idle_connections() {
        let server = start("127.0.0.1:0", "t", 8, echo()).expect("server");
        let mut idle = TcpStream::connect(server.addr()).expect("connect");
        idle.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        let mut buf = [0u8; 64];
        let _ = idle.read(&mut buf).expect("answer");
        server.shutdown();
        let mut rest = Vec::new();
        assert_eq!(idle.read_to_end(&mut rest).unwrap_or(0), 0);
    }
}

//! Raw TCP servers for the clients' transport tests (what mockito cannot do): one that drops
//! connections without answering, one that never answers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A server that closes its first `drops` connections without answering (a stale keep-alive
/// connection, a reset), then answers every later request with `body` (HTTP 200, JSON). Returns
/// its URL and the count of connections it took.
pub fn dropping_server(drops: usize, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            if count.fetch_add(1, Ordering::SeqCst) < drops {
                drop(stream);
                continue;
            }
            read_request(&mut stream);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, accepted)
}

/// A server that accepts connections and never answers (a request timeout). Returns its URL and
/// the count of connections it took.
pub fn silent_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted)
}

/// Read one request (head, then `Content-Length` bytes of body).
fn read_request(stream: &mut TcpStream) {
    let mut buf = [0u8; 8192];
    let mut got = Vec::new();
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let len = text[..head_end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                if k.eq_ignore_ascii_case("content-length") {
                    v.trim().parse::<usize>().ok()
                } else {
                    None
                }
            })
            .unwrap_or(0);
        if got.len() >= head_end + 4 + len {
            return;
        }
    }
}

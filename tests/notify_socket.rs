//! sd_notify over a real Unix datagram socket owned by the test (a path socket in a temp dir):
//! what systemd would receive for READY, STATUS, gated WATCHDOG and STOPPING.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harfanglab_intel::{Notifier, WatchdogGate};

/// A listening socket in a fresh temp directory, removed on drop.
struct Listener {
    dir: PathBuf,
    path: PathBuf,
    socket: UnixDatagram,
}

impl Listener {
    fn new(tag: &str) -> Listener {
        let dir = std::env::temp_dir().join(format!(
            "hli-notify-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Listener { dir, path, socket }
    }

    /// A notifier built as systemd would configure it, without touching the process env.
    fn notifier(&self, watchdog_usec: Option<&str>) -> Notifier {
        let path = self.path.to_str().unwrap().to_owned();
        let usec = watchdog_usec.map(str::to_owned);
        let pid = std::process::id().to_string();
        Notifier::from_lookup(move |name| match name {
            "NOTIFY_SOCKET" => Some(path.clone()),
            "WATCHDOG_USEC" => usec.clone(),
            "WATCHDOG_PID" => Some(pid.clone()),
            _ => None,
        })
    }

    fn recv(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Everything queued right now, without waiting.
    fn drain(&self) -> Vec<String> {
        self.socket.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        self.socket.set_nonblocking(false).unwrap();
        out
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ready_status_and_stopping_reach_the_socket() {
    let listener = Listener::new("lifecycle");
    let notifier = listener.notifier(None);
    assert!(notifier.is_enabled());

    notifier.ready();
    assert_eq!(listener.recv(), "READY=1");
    notifier.status("streaming\nfrom 1718445605000-0");
    assert_eq!(listener.recv(), "STATUS=streaming from 1718445605000-0");
    notifier.stopping();
    assert_eq!(listener.recv(), "STOPPING=1");
    assert!(listener.drain().is_empty());
}

#[test]
fn watchdog_interval_comes_from_watchdog_usec() {
    let listener = Listener::new("interval");
    let notifier = listener.notifier(Some("60000000"));
    assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(60)));
    let gate = WatchdogGate::new(notifier, Duration::from_secs(50));
    assert_eq!(gate.tick_interval(), Some(Duration::from_secs(30)));
}

#[test]
fn watchdog_is_fed_only_while_the_pipeline_progresses() {
    let listener = Listener::new("gate");
    let notifier = listener.notifier(Some("60000000"));
    let gate = WatchdogGate::new(notifier, Duration::from_secs(30));
    let t0 = Instant::now();

    gate.progress_at(t0);
    assert!(gate.tick_at(t0 + Duration::from_secs(10)));
    assert_eq!(listener.recv(), "WATCHDOG=1");

    // No report for longer than the window: the gate goes quiet.
    assert!(!gate.tick_at(t0 + Duration::from_secs(31)));
    assert!(!gate.tick_at(t0 + Duration::from_secs(45)));
    assert!(listener.drain().is_empty());

    // Progress (or a healthy idle report) resumes feeding.
    gate.progress_at(t0 + Duration::from_secs(50));
    assert!(gate.tick_at(t0 + Duration::from_secs(55)));
    assert_eq!(listener.recv(), "WATCHDOG=1");
}

#[test]
fn watchdog_thread_ticks_until_stopped() {
    let listener = Listener::new("thread");
    // 200 ms watchdog → a tick every 100 ms.
    let notifier = listener.notifier(Some("200000"));
    let gate = WatchdogGate::new(notifier, Duration::from_secs(3600));
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let handle = gate
        .spawn(stop_rx)
        .unwrap()
        .expect("a watchdog is configured");
    assert_eq!(listener.recv(), "WATCHDOG=1");
    assert_eq!(listener.recv(), "WATCHDOG=1");
    drop(stop_tx);
    handle.join().unwrap();
}

#[test]
fn no_watchdog_means_no_thread() {
    let listener = Listener::new("nothread");
    let gate = WatchdogGate::new(listener.notifier(None), Duration::from_secs(1));
    let (_stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    assert!(gate.spawn(stop_rx).unwrap().is_none());
}

#[test]
fn a_vanished_socket_is_not_fatal() {
    let listener = Listener::new("gone");
    let notifier = listener.notifier(None);
    drop(listener);
    // The listener and its directory are gone: sends fail, are logged, nothing panics.
    notifier.ready();
    notifier.status("still running");
    notifier.stopping();
}

//! systemd service notifications (`sd_notify`) and the watchdog gate, with std only.
//!
//! [`Notifier`] sends `READY=1`, `STATUS=…`, `WATCHDOG=1` and `STOPPING=1` datagrams to the socket
//! named by `NOTIFY_SOCKET` (a path or an abstract `@name`). Without that variable every method
//! is a no-op, so the same binary runs under systemd, in a container or in a terminal. A failed
//! send is logged once and never stops the service: a notification is advice, not work.
//!
//! [`WatchdogGate`] turns "the process is alive" into "the pipeline is alive": the pipeline
//! reports progress (or a healthy idle heartbeat) and the gate sends `WATCHDOG=1` only while that
//! report is recent. A wedged pipeline therefore stops feeding the watchdog and systemd restarts
//! the service (`WatchdogSec=` in `systemd/harfanglab-intel.service`).
//!
//! This module does not own the policy of *when* to call `ready()` (after the first successful
//! stream connection) or `stopping()` (on the shutdown signal): the caller does.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// A handle on the service manager's notification socket. Cheap to clone; clones share the
/// socket and the "error already logged" flag.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
struct Inner {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// Where the socket points, for the one log line.
    target: String,
    error_logged: AtomicBool,
}

impl Notifier {
    /// A notifier that never sends anything (not under systemd).
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the process environment.
    pub fn from_env() -> Notifier {
        Notifier::from_lookup(|name| std::env::var(name).ok())
    }

    /// Same as [`Notifier::from_env`] with an injectable variable lookup (tests pass a map, so
    /// they never mutate the process environment). A socket that cannot be set up is logged and
    /// yields a disabled notifier: systemd then times the start out, which names the problem.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Notifier {
        let watchdog = watchdog_from(
            lookup("WATCHDOG_USEC").as_deref(),
            lookup("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        let Some(target) = lookup("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
            return Notifier {
                inner: None,
                watchdog,
            };
        };
        match connect(&target) {
            Ok((socket, addr)) => {
                log::debug!("sd_notify: notifications go to {target}");
                Notifier {
                    inner: Some(Arc::new(Inner {
                        socket,
                        addr,
                        target,
                        error_logged: AtomicBool::new(false),
                    })),
                    watchdog,
                }
            }
            Err(err) => {
                log::warn!(
                    "sd_notify: cannot use NOTIFY_SOCKET={target}: {err}; notifications are off"
                );
                Notifier {
                    inner: None,
                    watchdog,
                }
            }
        }
    }

    /// Whether notifications are actually sent (`NOTIFY_SOCKET` was set and usable).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The watchdog timeout systemd expects (`WATCHDOG_USEC`), when it is meant for this process
    /// (`WATCHDOG_PID` unset or equal to our pid). Send `WATCHDOG=1` at about half this period.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1`: startup is finished (for `Type=notify`, systemd starts dependants now).
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `STATUS=…`: a one-line status shown by `systemctl status`. Newlines are flattened because
    /// the protocol is newline-separated `KEY=VALUE` assignments.
    pub fn status(&self, status: &str) {
        if self.inner.is_none() {
            return;
        }
        let line: String = status
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send(&format!("STATUS={line}"));
    }

    /// `WATCHDOG=1`: keep-alive. Prefer [`WatchdogGate`], which only sends while the pipeline moves.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// Sends one datagram; errors are logged once per notifier (then at debug) and swallowed.
    fn send(&self, message: &str) {
        let Some(inner) = &self.inner else { return };
        if let Err(err) = inner.socket.send_to_addr(message.as_bytes(), &inner.addr) {
            if inner.error_logged.swap(true, Ordering::Relaxed) {
                log::debug!("sd_notify: sending to {} failed: {err}", inner.target);
            } else {
                log::warn!(
                    "sd_notify: sending to {} failed: {err} (further failures are logged at debug)",
                    inner.target
                );
            }
        }
    }
}

/// Opens an unbound datagram socket and resolves `NOTIFY_SOCKET` (`/path` or `@abstract`).
fn connect(target: &str) -> io::Result<(UnixDatagram, SocketAddr)> {
    let addr = if let Some(name) = target.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())?
    } else if target.starts_with('/') {
        SocketAddr::from_pathname(target)?
    } else {
        // systemd also accepts `vsock:` addresses (VMs); std cannot speak AF_VSOCK.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only absolute paths and @abstract names are supported",
        ));
    };
    Ok((UnixDatagram::unbound()?, addr))
}

/// `WATCHDOG_USEC` applies to us only when `WATCHDOG_PID` is unset or names our pid
/// (sd_watchdog_enabled(3)); zero or junk means no watchdog.
fn watchdog_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(own_pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Feeds the systemd watchdog only while the pipeline reports progress or a healthy idle state.
///
/// Cheap to clone. Call [`WatchdogGate::progress`] from the pipeline: on each completion, on each
/// retry attempt, and on each idle tick while nothing is stuck (including "reconnecting to
/// OpenCTI"). It measures that the loops still turn, not that the ends answer: an outage of
/// HarfangLab or OpenCTI must not become a watchdog restart loop (`/healthz` reports outages).
/// Then run [`WatchdogGate::spawn`] or call [`WatchdogGate::tick`] periodically.
#[derive(Clone, Debug)]
pub struct WatchdogGate {
    notifier: Notifier,
    stale_after: Duration,
    base: Instant,
    /// Nanoseconds after `base` of the last progress report, plus one (0 = never).
    last_progress: Arc<AtomicU64>,
    /// When the last `WATCHDOG=1` was sent, for [`WatchdogGate::tick`]'s return value only.
    last_sent: Arc<Mutex<Option<Instant>>>,
}

impl WatchdogGate {
    /// A gate that considers the pipeline alive for `stale_after` after each progress report.
    /// Creation counts as a report, so startup has one window to connect. `stale_after` should
    /// be below the systemd watchdog period minus one tick, else a wedge is noticed one period late.
    pub fn new(notifier: Notifier, stale_after: Duration) -> WatchdogGate {
        let base = Instant::now();
        let gate = WatchdogGate {
            notifier,
            stale_after,
            base,
            last_progress: Arc::new(AtomicU64::new(0)),
            last_sent: Arc::new(Mutex::new(None)),
        };
        gate.progress_at(base);
        gate
    }

    /// How often to call [`WatchdogGate::tick`]: half the systemd watchdog period, or `None` when
    /// systemd set no watchdog for this process.
    pub fn tick_interval(&self) -> Option<Duration> {
        self.notifier.watchdog_interval().map(|w| w / 2)
    }

    /// The pipeline made progress, or is idle and healthy (connected, nothing stuck).
    pub fn progress(&self) {
        self.progress_at(Instant::now());
    }

    /// [`WatchdogGate::progress`] at a given instant (tests drive the clock).
    pub fn progress_at(&self, now: Instant) {
        let offset = now.saturating_duration_since(self.base).as_nanos();
        let stamp = u64::try_from(offset).unwrap_or(u64::MAX - 1) + 1;
        // fetch_max: reports from several workers may land out of order.
        self.last_progress.fetch_max(stamp, Ordering::Relaxed);
    }

    /// Whether the last progress report is within `stale_after` of `now`.
    pub fn is_fresh_at(&self, now: Instant) -> bool {
        let stamp = self.last_progress.load(Ordering::Relaxed);
        if stamp == 0 {
            return false;
        }
        let last = self.base + Duration::from_nanos(stamp - 1);
        now.saturating_duration_since(last) <= self.stale_after
    }

    /// Sends `WATCHDOG=1` if the pipeline is fresh; returns whether it did.
    pub fn tick(&self) -> bool {
        self.tick_at(Instant::now())
    }

    /// [`WatchdogGate::tick`] at a given instant (tests drive the clock).
    pub fn tick_at(&self, now: Instant) -> bool {
        if !self.is_fresh_at(now) {
            let mut last_sent = self.last_sent.lock().unwrap_or_else(|e| e.into_inner());
            // Log once per stall, not once per tick.
            if last_sent.is_some() {
                log::error!(
                    "watchdog: no pipeline progress for more than {:?}; no longer feeding the systemd watchdog",
                    self.stale_after
                );
                *last_sent = None;
            }
            return false;
        }
        self.notifier.watchdog();
        *self.last_sent.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        true
    }

    /// Starts a named thread that ticks every [`WatchdogGate::tick_interval`] until `stop`
    /// disconnects or receives a message (e.g. the pipeline's `Shutdown::receiver()`, whatever its
    /// message type). Returns
    /// `Ok(None)` when systemd set no watchdog, so there is nothing to feed.
    pub fn spawn<T: Send + 'static>(
        &self,
        stop: Receiver<T>,
    ) -> io::Result<Option<thread::JoinHandle<()>>> {
        let Some(every) = self.tick_interval() else {
            return Ok(None);
        };
        let gate = self.clone();
        let handle = thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                gate.tick();
                // A message or a dropped sender both mean "stop".
                while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
                    gate.tick();
                }
            })?;
        Ok(Some(handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_needs_a_positive_usec() {
        assert_eq!(watchdog_from(None, None, 7), None);
        assert_eq!(watchdog_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_from(Some("junk"), None, 7), None);
        assert_eq!(
            watchdog_from(Some("60000000"), None, 7),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn watchdog_for_another_pid_is_ignored() {
        assert_eq!(watchdog_from(Some("1000"), Some("8"), 7), None);
        assert_eq!(watchdog_from(Some("1000"), Some("x"), 7), None);
        assert_eq!(
            watchdog_from(Some("1000"), Some("7"), 7),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn without_notify_socket_everything_is_a_no_op() {
        let n = Notifier::from_lookup(|_| None);
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready();
        n.status("x");
        n.watchdog();
        n.stopping();
    }

    #[test]
    fn relative_or_vsock_socket_is_refused_not_fatal() {
        let n = Notifier::from_lookup(|k| (k == "NOTIFY_SOCKET").then(|| "vsock:2:1".to_owned()));
        assert!(!n.is_enabled());
        n.ready();
    }

    #[test]
    fn abstract_socket_name_is_accepted() {
        let n = Notifier::from_lookup(|k| {
            (k == "NOTIFY_SOCKET").then(|| "@hli-test-nobody-listens".to_owned())
        });
        assert!(n.is_enabled());
        // Nobody listens: the send fails, is logged once and does not panic.
        n.ready();
        n.ready();
    }

    #[test]
    fn gate_is_fresh_only_within_the_window() {
        let gate = WatchdogGate::new(Notifier::disabled(), Duration::from_secs(10));
        let t0 = Instant::now();
        gate.progress_at(t0);
        assert!(gate.is_fresh_at(t0 + Duration::from_secs(9)));
        assert!(!gate.is_fresh_at(t0 + Duration::from_secs(11)));
        // An older report arriving late does not move the clock back.
        gate.progress_at(t0 + Duration::from_secs(20));
        gate.progress_at(t0 + Duration::from_secs(5));
        assert!(gate.is_fresh_at(t0 + Duration::from_secs(29)));
    }
}

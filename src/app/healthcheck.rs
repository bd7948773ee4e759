//! The `healthcheck` command: ask a running connector's `/healthz` on the loopback interface
//! (the container `HEALTHCHECK`), one line out. Healthy exits 0, unhealthy or unreachable 1, a
//! configuration error 2. Logging is not started: the container runtime keeps this output, one
//! line is enough.

use super::{AppError, read_raw_config};
use crate::config::Config;
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The `healthcheck` command: read the configuration like `run`, ask `/healthz`, write
/// `healthy (...)` to `out`. `Err`: [`AppError::Config`] (exit 2) or [`AppError::Unhealthy`]
/// (exit 1).
pub fn healthcheck_command(path: Option<&Path>, out: &mut dyn Write) -> Result<(), AppError> {
    let config = Config::from_raw(&read_raw_config(path)?).map_err(AppError::Config)?;
    let addr = healthz_address(&config).ok_or(AppError::Unhealthy(HealthcheckError::NotEnabled))?;
    probe_healthz(addr, HEALTHCHECK_TIMEOUT).map_err(AppError::Unhealthy)?;
    let _ = writeln!(out, "healthy (http://{addr}/healthz)");
    Ok(())
}

/// How long `healthcheck` waits for `/healthz`, connection included: below the container
/// `HEALTHCHECK --timeout=5s`, so a hung connector reads as "unhealthy: timed out", not as a
/// killed probe.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why `healthcheck` found the connector unhealthy. Every variant exits 1.
#[derive(Debug)]
pub enum HealthcheckError {
    /// `CONNECTOR_EXPOSE_METRICS` is off: there is no endpoint to ask.
    NotEnabled,
    /// Nothing answered at `url` (connection refused, timeout, reset).
    Unreachable { url: String, source: ureq::Error },
    /// `/healthz` answered something other than 200; `body` is its (JSON) reasons.
    Unhealthy { status: u16, body: String },
}

impl fmt::Display for HealthcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthcheckError::NotEnabled => f.write_str(
                "metrics are not exposed (CONNECTOR_EXPOSE_METRICS is false), so there is no \
                 /healthz to ask: set CONNECTOR_EXPOSE_METRICS=true for the connector and for \
                 this command",
            ),
            HealthcheckError::Unreachable { url, source } => {
                write!(f, "cannot reach {url}: {source}")
            }
            HealthcheckError::Unhealthy { status, body } => {
                write!(f, "unhealthy (HTTP {status}): {body}")
            }
        }
    }
}

impl std::error::Error for HealthcheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HealthcheckError::Unreachable { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where `healthcheck` asks: the configured metrics port on the loopback interface. The probe
/// runs inside the connector's own host or container, so loopback always reaches a server bound
/// to `0.0.0.0`/`::` (the default) or to loopback, and the check never leaves the machine. A
/// server bound to one non-loopback address is not reachable this way. `None` when metrics are
/// not exposed.
pub fn healthz_address(config: &Config) -> Option<SocketAddr> {
    let bind = config.connector.metrics_addr?;
    let ip = match bind.ip() {
        IpAddr::V6(v6) if v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Some(SocketAddr::new(ip, bind.port()))
}

/// `GET http://<addr>/healthz` with `timeout` for the whole exchange, no proxy, no redirect.
/// `Ok` on 200; otherwise why not.
pub fn probe_healthz(addr: SocketAddr, timeout: Duration) -> Result<(), HealthcheckError> {
    let url = format!("http://{addr}/healthz");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // Loopback only: an HTTP_PROXY in the container environment must not see this request.
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .get(&url)
        .call()
        .map_err(|source| HealthcheckError::Unreachable {
            url: url.clone(),
            source,
        })?;
    let status = response.status().as_u16();
    if status == 200 {
        return Ok(());
    }
    // The 503 body is a short JSON reason list; cap it so a stranger on the port cannot flood us.
    let body = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_else(|e| format!("(body unreadable: {e})"));
    Err(HealthcheckError::Unhealthy {
        status,
        body: body.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_is_asked_on_loopback_at_the_metrics_port() {
        let mut config = Config::default();
        assert!(healthz_address(&config).is_none());
        for (bind, expected) in [
            ("0.0.0.0:9095", "127.0.0.1:9095"),
            ("10.1.2.3:9100", "127.0.0.1:9100"),
            ("[::]:9095", "127.0.0.1:9095"),
            ("[::1]:9095", "[::1]:9095"),
        ] {
            config.connector.metrics_addr = Some(bind.parse().unwrap());
            assert_eq!(
                healthz_address(&config),
                Some(expected.parse().unwrap()),
                "{bind}"
            );
        }
    }
}

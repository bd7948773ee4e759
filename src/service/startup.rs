//! Startup: the steps that bring both ends up before serving, in order: OpenCTI `about` →
//! `registerConnector` → the local checkpoint reconciled with the platform's state → first
//! `pingConnector` → HarfangLab `probe` → the three source lists. Each step retries an
//! unreachable end until it is up or shutdown ([`until_up`]), and a fatal answer ends the run.
//! What it establishes is one [`Started`] value, which `Started::serve` consumes.

use super::hooks::{self, Pinged};
use super::{RunOptions, ServiceError, Started};
use crate::config::Config;
use crate::harfanglab::model::{SourceKind, SourceLists};
use crate::harfanglab::{Client, HarfangLabError};
use crate::opencti::api::{OpenCtiApi, PlatformVersion, Registration};
use crate::pipeline::Shutdown;
use crate::retry::{FailureKind, RetryPolicy, Retryable};
use crate::state::{self, CheckpointStore, CheckpointWriter, FirstRun, LocalCheckpoint};
use std::fmt;
use std::time::{Duration, SystemTime};

/// The startup steps, in order (module doc): each retries an unreachable end until it is up or
/// shutdown (`None` then), and stops at a fatal answer.
pub(super) struct Startup<'a> {
    config: &'a Config,
    shutdown: &'a Shutdown,
    opts: &'a RunOptions,
    dry_run: bool,
    connector_id: String,
}

/// OpenCTI's answer to startup: the platform version and its copy of our stream state.
struct Platform {
    api: OpenCtiApi,
    release: String,
    version: Option<PlatformVersion>,
    state: Option<String>,
}

/// Where the stream starts: the reconciled checkpoint and the thread that keeps it.
struct Position {
    file_id: String,
    first_run: FirstRun,
    start: state::Checkpoint,
    writer: CheckpointWriter,
}

impl<'a> Startup<'a> {
    pub(super) fn new(config: &'a Config, shutdown: &'a Shutdown, opts: &'a RunOptions) -> Self {
        Startup {
            config,
            shutdown,
            opts,
            dry_run: config.harfanglab.dry_run,
            connector_id: config.connector.id.to_string(),
        }
    }

    /// about → register → checkpoint reconcile → first ping → HarfangLab probe → source lists.
    pub(super) fn run(self) -> Result<Option<Started<'a>>, ServiceError> {
        let Some(platform) = self.opencti()? else {
            return Ok(None);
        };
        let mut position = self.position(platform.state.as_deref())?;
        let first_ping = self.first_ping(&platform, &mut position);
        let client = Client::new(
            self.config.harfanglab_client_options(),
            self.shutdown.receiver().clone(),
        )
        .map_err(ServiceError::ClientSetup)?;
        let Some((probe_version, lists)) = self.harfanglab(&client)? else {
            return Ok(None);
        };
        log::info!(
            "harfanglab-intel {} running{}: OpenCTI {}, stream {:?}, HarfangLab {}, \
             source lists {:?} (ioc {}, sigma {}, yara {}), {} workers",
            env!("CARGO_PKG_VERSION"),
            if self.dry_run { " in DRY-RUN mode" } else { "" },
            platform.release,
            self.config.connector.live_stream_id,
            probe_version.as_deref().unwrap_or("(version unknown)"),
            self.config.harfanglab.source_list_name,
            lists.ioc,
            lists.sigma,
            lists.yara,
            self.config.service.describe_workers(),
        );
        Ok(Some(Started {
            config: self.config,
            shutdown: self.shutdown,
            opts: self.opts,
            api: platform.api,
            client,
            version: platform.version,
            dry_run: self.dry_run,
            connector_id: self.connector_id,
            file_id: position.file_id,
            first_run: position.first_run,
            start: position.start,
            writer: position.writer,
            first_ping,
            lists,
        }))
    }

    /// OpenCTI: version, then registration (its answer carries the platform's copy of our
    /// state; skipped in dry-run).
    fn opencti(&self) -> Result<Option<Platform>, ServiceError> {
        let backoff_max = self.opts.startup_backoff_max;
        let api = OpenCtiApi::new(self.config.opencti_api_options())
            .map_err(ServiceError::OpenCti)?
            .with_shutdown(self.shutdown.receiver().clone());
        let Some(release) = until_up("OpenCTI", self.shutdown, backoff_max, || api.about())
            .map_err(ServiceError::OpenCti)?
        else {
            return Ok(None);
        };
        let version = PlatformVersion::parse(&release);
        let state = if self.dry_run {
            log::info!(
                "[dry-run] not registering the connector in OpenCTI (no state is written there)"
            );
            None
        } else {
            let c = &self.config.connector;
            let reg = Registration {
                id: self.connector_id.clone(),
                name: c.name.clone(),
                scope: c.scope.clone(),
            };
            let registered = until_up("OpenCTI registration", self.shutdown, backoff_max, || {
                api.register_connector(&reg, version)
            })
            .map_err(ServiceError::OpenCti)?;
            let Some(registered) = registered else {
                return Ok(None);
            };
            registered.connector_state
        };
        Ok(Some(Platform {
            api,
            release,
            version,
            state,
        }))
    }

    /// The local checkpoint reconciled with the platform's state, and its writer thread.
    fn position(&self, platform_state: Option<&str>) -> Result<Position, ServiceError> {
        let file_id = if self.dry_run {
            format!("{}.dry-run", self.connector_id)
        } else {
            self.connector_id.clone()
        };
        let state_dir = &self.config.service.state_dir;
        std::fs::create_dir_all(state_dir).map_err(|source| ServiceError::StateDir {
            path: state_dir.clone(),
            source,
        })?;
        let store = CheckpointStore::new(state_dir, &file_id);
        let local = match store.load() {
            Ok(l) => l,
            Err(e) => {
                log::error!("{e}; ignoring the local checkpoint");
                None
            }
        };
        let first_run = self.config.first_run();
        let reconciled = state::reconcile(
            local.as_ref(),
            platform_state,
            &first_run,
            SystemTime::now(),
        );
        log::info!(
            "stream position: start after {} (recover until {}; {:?})",
            reconciled.checkpoint.start_from,
            reconciled
                .checkpoint
                .recover_until
                .as_deref()
                .unwrap_or("-"),
            reconciled.origin
        );
        let writer = CheckpointWriter::spawn(
            store,
            LocalCheckpoint {
                checkpoint: reconciled.checkpoint.clone(),
                platform_acked: reconciled.platform_acked,
            },
            state::DEFAULT_SAVE_INTERVAL,
        )
        .map_err(ServiceError::Thread)?;
        Ok(Position {
            file_id,
            first_run,
            start: reconciled.checkpoint,
            writer,
        })
    }

    /// First ping right after registration, as pycti does: OpenCTI sees the connector alive and
    /// holds its position from the start, not one ping interval later (a crash in between would
    /// lose it there). A reset seen here moves the start to the first-run position. `None`: not
    /// sent (dry-run); else whether it went through.
    fn first_ping(&self, platform: &Platform, position: &mut Position) -> Option<bool> {
        if self.dry_run {
            return None;
        }
        let pinged = hooks::ping(
            &platform.api,
            &self.connector_id,
            &position.writer,
            platform.version,
        );
        if pinged == Pinged::Reset {
            position.start = position.first_run.checkpoint(SystemTime::now());
            position.writer.replace(LocalCheckpoint {
                checkpoint: position.start.clone(),
                platform_acked: false,
            });
        }
        Some(pinged != Pinged::Failed)
    }

    /// HarfangLab: probe (its version), then our three source lists.
    fn harfanglab(
        &self,
        client: &Client,
    ) -> Result<Option<(Option<String>, SourceLists)>, ServiceError> {
        let backoff_max = self.opts.startup_backoff_max;
        let Some(probe) = until_up("HarfangLab", self.shutdown, backoff_max, || client.probe())
            .map_err(ServiceError::HarfangLab)?
        else {
            return Ok(None);
        };
        let name = &self.config.harfanglab.source_list_name;
        // One startup step per list: the client does not retry a 5xx or 429 itself, so a flaky
        // answer redoes (and backs off) only the list it hit, not the ones already found. After a
        // shutdown the later steps return `None` at once.
        let source = |kind: SourceKind| {
            until_up(
                &format!("HarfangLab {} list", kind.resource()),
                self.shutdown,
                backoff_max,
                || {
                    if self.dry_run {
                        dry_run_source(client, kind, name)
                    } else {
                        client.ensure_source(kind, name).map(|list| list.id)
                    }
                },
            )
            .map_err(ServiceError::HarfangLab)
        };
        let (Some(ioc), Some(sigma), Some(yara)) = (
            source(SourceKind::Ioc)?,
            source(SourceKind::Sigma)?,
            source(SourceKind::Yara)?,
        ) else {
            return Ok(None);
        };
        Ok(Some((probe.version, SourceLists { ioc, sigma, yara })))
    }
}

/// Retry at startup until up or shutdown. `Ok(None)`: shutdown came first. Transient and
/// unavailable failures are retried, a permanent one is returned.
fn until_up<T, E: fmt::Display + Retryable>(
    what: &str,
    shutdown: &Shutdown,
    backoff_max: Duration,
    mut call: impl FnMut() -> Result<T, E>,
) -> Result<Option<T>, E> {
    let policy = RetryPolicy::until_stopped(Duration::from_secs(1), backoff_max);
    let mut rng = fastrand::Rng::new();
    for retry in 0u32.. {
        if shutdown.is_triggered() {
            return Ok(None);
        }
        match call() {
            Ok(v) => return Ok(Some(v)),
            Err(e) if shutdown.is_triggered() => {
                log::debug!("{what}: {e} (shutting down)");
                return Ok(None);
            }
            Err(e) => {
                let retry_after = match e.failure_kind() {
                    FailureKind::Permanent => return Err(e),
                    FailureKind::Transient => None,
                    FailureKind::Unavailable { retry_after } => retry_after,
                };
                let wait = policy.delay(retry, retry_after, &mut rng);
                log::warn!(
                    "{what} not reachable at startup (attempt {}): {e}; retrying in {}",
                    retry + 1,
                    humantime::format_duration(Duration::from_millis(
                        u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
                    ))
                );
                if shutdown.wait_timeout(wait) {
                    return Ok(None);
                }
            }
        }
    }
    Ok(None)
}

/// Dry-run: find a source list, never create it (a missing one gets a placeholder id, so every
/// lookup in it finds nothing and every write is logged as a creation).
fn dry_run_source(
    client: &Client,
    kind: SourceKind,
    name: &str,
) -> Result<String, HarfangLabError> {
    Ok(match client.find_source(kind, name)? {
        Some(list) => list.id,
        None => {
            log::info!(
                "[dry-run] would create {} {name:?} (it does not exist yet)",
                kind.resource()
            );
            format!("dry-run-{}", kind.resource())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_retry_stops_on_fatal_and_on_shutdown() {
        let s = Shutdown::new();
        let mut n = 0;
        let r: Result<Option<()>, HarfangLabError> =
            until_up("x", &s, Duration::from_millis(1), || {
                n += 1;
                if n < 3 {
                    Err(HarfangLabError::Timeout { op: "t".into() })
                } else {
                    Err(HarfangLabError::Unauthorized {
                        op: "t".into(),
                        detail: "d".into(),
                    })
                }
            });
        assert!(matches!(r, Err(HarfangLabError::Unauthorized { .. })));
        assert_eq!(n, 3);
        s.trigger();
        let r: Result<Option<()>, HarfangLabError> =
            until_up("x", &s, Duration::from_millis(1), || Ok(()));
        assert_eq!(r, Ok(None));
    }
}

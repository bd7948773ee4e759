//! What each component is built from: one constructor per options type, reading the validated
//! [`Config`] (ripgrep's `HiArgs` hands out `args.searcher()`, `args.printer()` the same way).
//!
//! The service (`run`, the demo) and `check` both start from these; `check` only shortens the
//! timeouts and retries of what they return, and the service only adds its own knobs
//! (`RunOptions`: stream backoff, summary and tick periods, counters). A setting that reaches a
//! component is therefore mapped here and nowhere else.

use super::{Config, Recover};
use crate::concurrency::{AdaptiveOptions, ConcurrencyLimit, MAX_LIMIT};
use crate::harfanglab::ClientOptions;
use crate::opencti::TlsOptions;
use crate::opencti::api::ApiOptions;
use crate::opencti::stream::StreamOptions;
use crate::pipeline::PipelineOptions;
use crate::state::FirstRun;

impl Config {
    /// TLS towards OpenCTI (GraphQL and stream share it).
    pub fn opencti_tls(&self) -> TlsOptions {
        TlsOptions {
            verify: self.opencti.tls.verify(),
            ca_bundle: self.opencti.tls.ca_file().map(Into::into),
        }
    }

    /// The OpenCTI GraphQL client: URL, token, TLS, request timeout, custom headers, and a
    /// connection pool for every worker plus the pinger and registration.
    pub fn opencti_api_options(&self) -> ApiOptions {
        let mut o = ApiOptions::new(self.opencti.url.clone(), self.opencti.token.clone());
        o.tls = self.opencti_tls();
        o.timeout = self.opencti.request_timeout;
        o.custom_headers = self.opencti.custom_headers.clone();
        // Every worker reads indicators; the pinger and registration share the pool too.
        o.max_idle_connections = self.max_workers() + 2;
        o
    }

    /// The live-stream reader: URL, token, stream id and its three headers, TLS, the dead-stream
    /// timeout. The connect timeout is `HARFANGLAB_INTEL_CONNECT_TIMEOUT`, which serves both ends.
    pub fn stream_options(&self) -> StreamOptions {
        let c = &self.connector;
        let mut o = StreamOptions::new(
            self.opencti.url.clone(),
            self.opencti.token.clone(),
            c.live_stream_id.clone(),
        );
        o.listen_delete = c.listen_delete;
        o.no_dependencies = c.no_dependencies;
        o.with_inferences = c.with_inferences;
        o.tls = self.opencti_tls();
        o.idle_timeout = c.stream_idle_timeout;
        o.connect_timeout = self.harfanglab.connect_timeout;
        o
    }

    /// The HarfangLab REST client: URL, token, TLS, timeouts, a connection per worker, and the
    /// limit on requests in flight: the worker count, or adaptive for `auto`.
    pub fn harfanglab_client_options(&self) -> ClientOptions {
        let h = &self.harfanglab;
        let mut o = ClientOptions::new(h.url.clone(), h.token.clone());
        o.verify_tls = h.tls.verify();
        o.ca_file = h.tls.ca_file().map(Into::into);
        o.connect_timeout = h.connect_timeout;
        o.request_timeout = h.request_timeout;
        o.max_idle_connections = self.max_workers();
        // Waits for a slot of the limit are part of the drain, and end with it.
        o.shutdown_drain = self.service.shutdown_timeout;
        o.concurrency = if self.service.workers_auto {
            ConcurrencyLimit::Adaptive(AdaptiveOptions::default())
        } else {
            ConcurrencyLimit::Fixed(self.workers())
        };
        o
    }

    /// The pipeline core: workers, in-flight window, shutdown deadline, the retry policy of
    /// failed events and the coalescing cap. Periods and counters keep their defaults (the
    /// service sets its own), and so does `worker_limit`: for `auto` the caller hands in its
    /// client's limiter.
    pub fn pipeline_options(&self) -> PipelineOptions {
        let workers = self.workers();
        PipelineOptions {
            workers,
            // About 512 events in flight whatever the worker count (at least 8 per worker):
            // enough to keep every worker busy across keys, while memory stays bounded by the
            // window (each event holds its STIX payload). A growing pool (`auto`) keeps 8 per
            // worker: 128 at the start, 2,048 at 256 workers.
            queue_per_worker: if self.service.workers_auto {
                8
            } else {
                (512 / workers).clamp(8, 64)
            },
            shutdown_deadline: self.service.shutdown_timeout,
            retry: self.harfanglab.event_retry(),
            coalesce_max: self.service.coalesce_max.max(1),
            ..PipelineOptions::default()
        }
    }

    /// Where a first run (no checkpoint anywhere) starts on the stream.
    pub fn first_run(&self) -> FirstRun {
        FirstRun {
            start_timestamp: self.connector.start_timestamp_ms.map(|t| t.to_string()),
            recover_iso_date: match &self.connector.recover {
                Recover::UntilNow => None,
                Recover::Disabled => Some("false".to_owned()),
                Recover::Until(d) => Some(d.clone()),
            },
        }
    }

    /// Worker threads, at least one (a hand-built `Config` may say 0); for `auto`, the start.
    fn workers(&self) -> usize {
        self.service.workers.max(1)
    }

    /// The most worker threads there can be: `workers`, or 256 for `auto`.
    fn max_workers(&self) -> usize {
        if self.service.workers_auto {
            MAX_LIMIT
        } else {
            self.workers()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsVerify;
    use std::time::{Duration, SystemTime};

    #[test]
    fn recover_setting_maps_to_first_run() {
        let mut c = Config::default();
        c.connector.recover = Recover::Disabled;
        c.connector.start_timestamp_ms = Some(1718445600000);
        let cp = c.first_run().checkpoint(SystemTime::UNIX_EPOCH);
        assert_eq!(cp.start_from, "1718445600000-0");
        assert_eq!(cp.recover_until, None);
        c.connector.recover = Recover::UntilNow;
        assert!(
            c.first_run()
                .checkpoint(SystemTime::now())
                .recover_until
                .is_some()
        );
    }

    #[test]
    fn every_setting_reaches_its_component() {
        let mut c = Config::default();
        c.opencti.url = "https://octi.example".into();
        c.opencti.tls = TlsVerify::CaFile("/etc/ca.pem".into());
        c.opencti.request_timeout = Duration::from_secs(7);
        c.connector.live_stream_id = "live".into();
        c.connector.listen_delete = false;
        c.connector.with_inferences = true;
        c.connector.stream_idle_timeout = Duration::from_secs(9);
        c.harfanglab.url = "https://hl.example".into();
        c.harfanglab.tls = TlsVerify::Disabled;
        c.harfanglab.connect_timeout = Duration::from_secs(3);
        c.harfanglab.request_timeout = Duration::from_secs(11);
        c.harfanglab.max_retries = 5;
        c.service.workers = 16;
        c.service.shutdown_timeout = Duration::from_secs(13);

        let api = c.opencti_api_options();
        assert_eq!(api.url, "https://octi.example");
        assert_eq!(api.timeout, Duration::from_secs(7));
        assert_eq!(api.tls.ca_bundle.as_deref(), Some("/etc/ca.pem".as_ref()));
        assert_eq!(api.max_idle_connections, 18);

        let s = c.stream_options();
        assert_eq!(s.stream_id, "live");
        assert!(!s.listen_delete && s.no_dependencies && s.with_inferences);
        assert!(s.tls.verify);
        assert_eq!(s.idle_timeout, Duration::from_secs(9));
        assert_eq!(s.connect_timeout, Duration::from_secs(3));

        let h = c.harfanglab_client_options();
        assert!(!h.verify_tls);
        assert_eq!(h.connect_timeout, Duration::from_secs(3));
        assert_eq!(h.request_timeout, Duration::from_secs(11));
        assert_eq!(h.max_idle_connections, 16);
        assert_eq!(h.shutdown_drain, Duration::from_secs(13));

        let p = c.pipeline_options();
        assert_eq!(p.workers, 16);
        assert_eq!(p.queue_per_worker, 32);
        assert_eq!(p.shutdown_deadline, Duration::from_secs(13));
        assert_eq!(p.retry.max_retries, 5);
        assert_eq!(p.coalesce_max, 1, "a hand-built Config does not coalesce");
        c.service.coalesce_max = 32;
        assert_eq!(c.pipeline_options().coalesce_max, 32);

        assert_eq!(h.concurrency, ConcurrencyLimit::Fixed(16));

        c.service.workers = 0;
        assert_eq!(c.pipeline_options().workers, 1);
        assert_eq!(c.harfanglab_client_options().max_idle_connections, 1);

        c.service.workers = 16;
        c.service.workers_auto = true;
        let h = c.harfanglab_client_options();
        assert!(matches!(h.concurrency, ConcurrencyLimit::Adaptive(_)));
        assert_eq!(h.max_idle_connections, MAX_LIMIT);
        assert_eq!(c.opencti_api_options().max_idle_connections, MAX_LIMIT + 2);
        let p = c.pipeline_options();
        assert_eq!((p.workers, p.queue_per_worker), (16, 8));
    }
}

//! The OpenCTI side of the connector: the live stream (SSE framing, typed events, the reader
//! thread) and the GraphQL API (about, register, ping, indicator read).
//!
//! `sse` and `events` are pure; `stream` and `api` hold the ureq agents. The wire contract is
//! `/work/shared/docs/opencti-protocol.md` (section numbers in comments refer to it).

pub mod api;
pub mod events;
pub mod sse;
pub mod stream;

/// Strip trailing `/` from a configured base URL (pycti 7 does the same, §8).
pub(crate) fn base_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

//! A ureq resolver that remembers host lookups for a short while, shared by the OpenCTI GraphQL
//! and the HarfangLab clients.
//!
//! Why: ureq 3 resolves the host on *every* request, before it looks in its connection pool, and
//! when any timeout is configured (we always set one) its `DefaultResolver` spawns a thread per
//! lookup so the lookup can time out. With three requests per event that was three thread
//! spawns and exits (stack mmap/munmap, TLB shootdowns across cores) and three `getaddrinfo`
//! calls per event, the largest cost in a profile of the connector at 32 workers. A pooled
//! connection does not even use the answer. Answers are kept for [`TTL`]; failures are not
//! kept (the caller's retry asks again), so a DNS change is seen within `TTL` on new connections.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// How long a lookup is reused.
pub const TTL: Duration = Duration::from_secs(30);

/// [`DefaultResolver`] behind a per-agent cache keyed by scheme and authority.
#[derive(Default)]
pub struct CachingResolver {
    inner: DefaultResolver,
    cache: Mutex<HashMap<String, (Instant, Vec<SocketAddr>)>>,
}

impl fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver").finish_non_exhaustive()
    }
}

impl CachingResolver {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Instant, Vec<SocketAddr>)>> {
        // The map holds plain data: a panic elsewhere cannot leave it half-updated.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or_default(),
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = key(uri);
        if let Some((at, addrs)) = self.lock().get(&key)
            && at.elapsed() < TTL
        {
            let mut out = self.empty();
            for a in addrs {
                out.push(*a);
            }
            return Ok(out);
        }
        let fresh = self.inner.resolve(uri, config, timeout)?;
        let addrs: Vec<SocketAddr> = fresh.iter().copied().collect();
        self.lock().insert(key, (Instant::now(), addrs));
        Ok(fresh)
    }
}

/// An agent like `Agent::new_with_config`, with the caching resolver.
pub fn agent(config: Config) -> ureq::Agent {
    ureq::Agent::with_parts(config, DefaultConnector::new(), CachingResolver::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lookup_comes_from_the_cache_until_the_ttl() {
        let r = CachingResolver::default();
        let config = ureq::Agent::config_builder().build();
        let uri: Uri = "http://127.0.0.1:8080/x".parse().unwrap();
        let first = r.resolve(&uri, &config, NextTimeout::default()).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0], "127.0.0.1:8080".parse().unwrap());
        // Poison the cached answer: a cached lookup returns it, a fresh one would not.
        let marker: SocketAddr = "127.0.0.2:1".parse().unwrap();
        r.lock().get_mut(&key(&uri)).unwrap().1 = vec![marker];
        let second = r.resolve(&uri, &config, NextTimeout::default()).unwrap();
        assert_eq!(&second[..], &[marker]);
        // Past the TTL the resolver asks again.
        r.lock().get_mut(&key(&uri)).unwrap().0 = Instant::now() - TTL;
        let third = r.resolve(&uri, &config, NextTimeout::default()).unwrap();
        assert_eq!(third[0], "127.0.0.1:8080".parse().unwrap());
    }
}

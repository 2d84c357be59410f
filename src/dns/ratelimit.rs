//! Per-source rate limit, pure: a token bucket per source address, time as a parameter, at
//! most `sources` buckets (least recently seen forgotten first), so a flood of spoofed sources
//! costs bounded memory. A forgotten source starts again with a full bucket, which is the
//! price of the bound.

use std::net::IpAddr;
use std::num::NonZeroUsize;

/// The limiter.
pub struct RateLimiter {
    /// Tokens added per second.
    rate: f64,
    /// Bucket size.
    burst: f64,
    /// Source → (tokens, last refill in ms).
    buckets: lru::LruCache<IpAddr, (f64, u64)>,
}

impl RateLimiter {
    /// `rate` queries per second per source, bursts of `burst`, `sources` tracked at most.
    pub fn new(rate: u32, burst: u32, sources: usize) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: lru::LruCache::new(NonZeroUsize::new(sources.max(1)).expect("max(1)")),
        }
    }

    /// May `src` be answered at `now_ms`? Takes a token when it may.
    pub fn allow(&mut self, src: IpAddr, now_ms: u64) -> bool {
        let (burst, rate) = (self.burst, self.rate);
        let (tokens, last) = self.buckets.get_or_insert_mut(src, || (burst, now_ms));
        let elapsed = now_ms.saturating_sub(*last) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * rate).min(burst);
        *last = now_ms.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_the_rate() {
        let mut l = RateLimiter::new(10, 5, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..8).filter(|_| l.allow(a, 0)).count(), 5);
        // Another source is not affected.
        assert!(l.allow(b, 0));
        // 100 ms later: one more token (10/s).
        assert!(l.allow(a, 100));
        assert!(!l.allow(a, 100));
        // A long pause refills to the burst, not beyond.
        assert_eq!((0..20).filter(|_| l.allow(a, 60_000)).count(), 5);
        // Time going backwards takes nothing and gives nothing.
        assert!(!l.allow(a, 0));
    }

    #[test]
    fn the_number_of_sources_is_bounded() {
        let mut l = RateLimiter::new(1, 1, 2);
        for i in 0..1000u32 {
            l.allow(IpAddr::from(i.to_be_bytes()), 0);
        }
        assert_eq!(l.buckets.len(), 2);
    }
}

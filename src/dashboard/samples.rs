//! The charts' ring buffer: every `dashboard.sample_interval_secs` the region samples its own
//! counters (requests, 5xx answers, shed requests, conflicts) and its replication lag, and keeps
//! the last `dashboard.samples` samples in memory (an hour by default). The dashboard draws them
//! as inline SVG. The ring and the rate arithmetic are pure; [`run`] is the only clock.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Running totals read at one instant (counters only grow, but a restart of the counted thing
/// is tolerated: a total below the previous one counts as a new start).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub shed: u64,
    pub conflicts: u64,
}

/// One point of the charts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// End of the interval, milliseconds since the epoch.
    pub at_millis: i64,
    /// HTTP requests per second over the interval, and those answered 5xx.
    pub requests_per_sec: f64,
    pub errors_per_sec: f64,
    /// SCIM requests shed (503 at admission) per second.
    pub shed_per_sec: f64,
    /// Conflict records indexed during the interval.
    pub conflicts: u64,
    /// The worst peer's lag at the end: changes it lacks, and the age of the oldest one.
    pub lag_changes: u64,
    pub lag_seconds: f64,
}

/// The last samples, oldest first.
pub struct Ring {
    inner: Mutex<RingInner>,
}

struct RingInner {
    cap: usize,
    items: VecDeque<Sample>,
    last: Option<(i64, Totals)>,
}

fn delta(now: u64, before: u64) -> u64 {
    if now >= before {
        now - before
    } else {
        now
    }
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            inner: Mutex::new(RingInner {
                cap: cap.max(2),
                items: VecDeque::new(),
                last: None,
            }),
        }
    }

    /// Take the totals and lag read at `at_millis`. The first reading only sets the baseline.
    pub fn record(&self, at_millis: i64, totals: Totals, lag_changes: u64, lag_seconds: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t0, before)) = g.last {
            let secs = ((at_millis - t0) as f64 / 1000.0).max(0.001);
            let rate = |now: u64, b: u64| delta(now, b) as f64 / secs;
            let sample = Sample {
                at_millis,
                requests_per_sec: rate(totals.requests, before.requests),
                errors_per_sec: rate(totals.errors, before.errors),
                shed_per_sec: rate(totals.shed, before.shed),
                conflicts: delta(totals.conflicts, before.conflicts),
                lag_changes,
                lag_seconds,
            };
            g.items.push_back(sample);
            while g.items.len() > g.cap {
                g.items.pop_front();
            }
        }
        g.last = Some((at_millis, totals));
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.items.iter().copied().collect()
    }
}

/// The worst lag among the peers of a replication status (`node`'s JSON).
pub fn worst_lag(status: &serde_json::Value) -> (u64, f64) {
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .fold((0, 0.0), |(c, s), p| {
            let changes = p["behind_changes"].as_u64().unwrap_or(0);
            let secs = p["oldest_unacked_ms"].as_f64().unwrap_or(0.0) / 1000.0;
            (c.max(changes), f64::max(s, secs))
        })
}

/// Sample `state` every interval until the task is dropped.
pub async fn run(state: std::sync::Arc<crate::api::AppState>) {
    let every = std::time::Duration::from_secs(state.config.dashboard.sample_interval_secs);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let status = state
            .replication
            .get()
            .and_then(|s| s.lock().ok().map(|v| v.clone()))
            .unwrap_or(serde_json::Value::Null);
        let (lag_changes, lag_seconds) = worst_lag(&status);
        let totals = Totals {
            requests: state.metrics.totals.requests(),
            errors: state.metrics.totals.errors(),
            shed: state.metrics.shed.get(),
            conflicts: state.store.conflicts_indexed().iter().map(|(_, n)| n).sum(),
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        state
            .dashboard
            .samples
            .record(now as i64, totals, lag_changes, lag_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_rates_over_the_interval_and_the_ring_keeps_the_last_ones() {
        let ring = Ring::new(2);
        let t = |requests, errors| Totals {
            requests,
            errors,
            shed: 0,
            conflicts: requests / 10,
        };
        ring.record(0, t(0, 0), 0, 0.0);
        assert!(
            ring.samples().is_empty(),
            "the first reading is the baseline"
        );
        ring.record(10_000, t(100, 10), 3, 1.5);
        let s = ring.samples();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].requests_per_sec, 10.0);
        assert_eq!(s[0].errors_per_sec, 1.0);
        assert_eq!(s[0].conflicts, 10);
        assert_eq!((s[0].lag_changes, s[0].lag_seconds), (3, 1.5));
        ring.record(20_000, t(300, 10), 0, 0.0);
        ring.record(30_000, t(300, 10), 0, 0.0);
        let s = ring.samples();
        assert_eq!(s.len(), 2, "capped");
        assert_eq!(s[0].requests_per_sec, 20.0);
        assert_eq!(s[1].requests_per_sec, 0.0);
    }

    #[test]
    fn the_worst_peer_sets_the_lag() {
        let status = serde_json::json!({"peers": [
            {"behind_changes": 5, "oldest_unacked_ms": 200},
            {"behind_changes": 1, "oldest_unacked_ms": 4000}]});
        assert_eq!(worst_lag(&status), (5, 4.0));
        assert_eq!(worst_lag(&serde_json::Value::Null), (0, 0.0));
    }
}

//! The health prober: every `dns.probe_interval_ms` each region's `/health` is fetched over
//! HTTP or HTTPS, as its URL says (this region's own included); a 200 within `dns.probe_timeout_ms` is a good
//! probe, anything else a failed one. Results go to the [`View`], whose hysteresis decides
//! when a region stops or starts being answered.
//!
//! One task per probed region, so a region that hangs delays only its own probes. Probes are
//! not retried: the next one comes soon enough, and the hysteresis absorbs single losses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::View;

/// Probe every region of `view` until `stop` changes (or its sender goes away).
pub fn spawn(
    view: Arc<View>,
    urls: Vec<String>,
    interval: Duration,
    timeout: Duration,
    client: reqwest::ClientBuilder,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // No proxy: probes go straight to the regions' listeners. Keep-alive connections make a
    // probe one request; a killed region's connection errors at once.
    let client = match client
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(1)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the health probe client; no probes");
            return Vec::new();
        }
    };
    urls.into_iter()
        .enumerate()
        .map(|(index, url)| {
            let (view, client, mut stop) = (view.clone(), client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                    }
                    let start = Instant::now();
                    let probe = async {
                        let r = client.get(&url).send().await.ok()?;
                        let ok = r.status() == reqwest::StatusCode::OK;
                        // Read the body so the connection can be reused.
                        r.bytes().await.ok()?;
                        Some(ok)
                    };
                    let ok = matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(true)));
                    view.observe(index, ok, start.elapsed());
                }
            })
        })
        .collect()
}

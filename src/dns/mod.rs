//! Geo-DNS: every region answers for the service name and sends each client to its nearest
//! healthy region.
//!
//! - [`routing`]: pure: client (ECS or source) + region table + health → ordered regions and
//!   the ECS scope; probe hysteresis.
//! - [`zone`]: pure: the zone's records and the answer to one question ([`zone::Reply`]).
//! - [`ratelimit`]: pure: per-source token buckets, bounded.
//! - [`server`]: the responder (UDP + TCP), the only hickory-server user: decode, rate-limit,
//!   ask the zone, echo ECS, encode (truncation sets TC; clients retry over TCP).
//! - [`client`]: one question over UDP/TCP with an optional ECS option (idp-sim, tests, bench).
//! - [`prober`]: probes every region's `/health` over HTTP and feeds the [`View`].
//! - [`View`]: the live health of each region, the metrics, and the JSON `/health` shows.
//!
//! Every region's responder has the same table (from its file) and probes the same regions, so
//! with the same health view every region gives the same answer to the same question.

pub mod client;
pub mod prober;
pub mod ratelimit;
pub mod routing;
pub mod server;
pub mod zone;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use routing::{Flip, Health, Hysteresis};

/// Labels naming a region.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    pub region: String,
}

/// Labels of an answer: the first region answered and the query type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub region: String,
    pub qtype: String,
}

/// Labels of a response: its code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RcodeLabels {
    pub rcode: String,
}

/// Labels of a probe: the region and the outcome (`ok`, `fail`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub region: String,
    pub outcome: String,
}

/// The responder's and prober's metrics, in their own registry (prefix `geoscim_dns`),
/// appended to `/metrics` by [`View::append_metrics`].
pub struct Metrics {
    registry: Registry,
    /// 1 while a region is answered.
    pub healthy: Family<RegionLabels, Gauge>,
    /// Routed answers by first region and query type.
    pub answers: Family<AnswerLabels, Counter>,
    /// Routed answers given while every region was down (every region answered).
    pub fail_open: Counter,
    /// Responses by code (NOERROR, NXDOMAIN, REFUSED, FORMERR…).
    pub responses: Family<RcodeLabels, Counter>,
    /// Queries dropped by the per-source rate limit or the in-flight cap.
    pub rate_limited: Counter,
    pub overloaded: Counter,
    /// Responses truncated (TC) for UDP.
    pub truncated: Counter,
    /// Probe latency by region (failures included, up to the timeout).
    pub probe_seconds: Family<RegionLabels, Histogram>,
    /// Probes by region and outcome.
    pub probes: Family<ProbeLabels, Counter>,
    /// Health state changes by region.
    pub flips: Family<RegionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("geoscim_dns");
        let m = Metrics {
            healthy: Family::default(),
            answers: Family::default(),
            fail_open: Counter::default(),
            responses: Family::default(),
            rate_limited: Counter::default(),
            overloaded: Counter::default(),
            truncated: Counter::default(),
            probe_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 12))
            }),
            probes: Family::default(),
            flips: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "region_healthy",
            "1 while the region is answered (its /health probes pass)",
            m.healthy.clone(),
        );
        registry.register(
            "answers",
            "routed A/AAAA answers by first region and query type",
            m.answers.clone(),
        );
        registry.register(
            "fail_open",
            "routed answers given with every region down (all regions answered)",
            m.fail_open.clone(),
        );
        registry.register(
            "responses",
            "responses by response code",
            m.responses.clone(),
        );
        registry.register(
            "rate_limited",
            "queries dropped by the per-source rate limit",
            m.rate_limited.clone(),
        );
        registry.register(
            "overloaded",
            "queries dropped because dns.max_in_flight were being handled",
            m.overloaded.clone(),
        );
        registry.register(
            "truncated",
            "UDP responses truncated (TC set; the client retries over TCP)",
            m.truncated.clone(),
        );
        registry.register(
            "probe_duration_seconds",
            "health probe latency by probed region",
            m.probe_seconds.clone(),
        );
        registry.register(
            "probes",
            "health probes by probed region and outcome",
            m.probes.clone(),
        );
        registry.register(
            "health_flips",
            "health state changes by region",
            m.flips.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// The live view of one region's responder and prober, shared by both and by the API.
pub struct View {
    /// The zone (and its routing table).
    pub zone: zone::Zone,
    /// This region's name.
    pub region: String,
    /// Each region's health, by table index; the responder reads only `up`.
    up: Vec<AtomicBool>,
    health: Mutex<Vec<Health>>,
    hysteresis: Hysteresis,
    /// The prober's clock: milliseconds since this view was made.
    started: Instant,
    pub metrics: Metrics,
    /// The service name (`scim.geoscim.test`), for `/health`.
    service_name: String,
    /// The responder's bound address, once bound (for `/health`: tests bind port 0).
    pub listen: std::sync::OnceLock<std::net::SocketAddr>,
    /// A digest of the `[dns]` settings but `listen` ([`table_digest`]): equal in every region
    /// that answers alike, so `/health` lets operators compare regions.
    pub table_digest: std::sync::OnceLock<String>,
}

/// The first 16 hex digits of the SHA-256 of `cfg`'s JSON with `listen` left out: what must be
/// equal in every region's file.
pub fn table_digest(cfg: &crate::config::DnsConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut shared = cfg.clone();
    shared.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let json = serde_json::to_vec(&shared).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..8])
}

impl View {
    /// A view of `zone` for region `region`; every region starts up.
    pub fn new(zone: zone::Zone, region: &str, service_name: String, h: Hysteresis) -> View {
        let n = zone.table.regions.len();
        let metrics = Metrics::default();
        for r in &zone.table.regions {
            metrics
                .healthy
                .get_or_create(&RegionLabels {
                    region: r.name.clone(),
                })
                .set(1);
        }
        View {
            up: (0..n).map(|_| AtomicBool::new(true)).collect(),
            health: Mutex::new((0..n).map(|_| Health::new(0)).collect()),
            zone,
            region: region.to_string(),
            hysteresis: h,
            started: Instant::now(),
            metrics,
            service_name,
            listen: std::sync::OnceLock::new(),
            table_digest: std::sync::OnceLock::new(),
        }
    }

    /// Each region's current health, by table index.
    pub fn healthy(&self) -> Vec<bool> {
        self.up.iter().map(|u| u.load(Ordering::Relaxed)).collect()
    }

    /// Milliseconds on the view's clock.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Take a probe result for region `index`, which took `took`.
    pub fn observe(&self, index: usize, ok: bool, took: Duration) {
        let Some(name) = self.zone.table.regions.get(index).map(|r| r.name.clone()) else {
            return;
        };
        let labels = RegionLabels {
            region: name.clone(),
        };
        self.metrics
            .probe_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.metrics
            .probes
            .get_or_create(&ProbeLabels {
                region: name.clone(),
                outcome: if ok { "ok" } else { "fail" }.into(),
            })
            .inc();
        let now = self.now_ms();
        let flip = match self.health.lock() {
            Ok(mut h) => h[index].observe(ok, now, self.hysteresis),
            Err(_) => None,
        };
        if let Some(flip) = flip {
            let up = flip == Flip::Up;
            self.up[index].store(up, Ordering::Relaxed);
            self.metrics
                .healthy
                .get_or_create(&labels)
                .set(i64::from(up));
            self.metrics.flips.get_or_create(&labels).inc();
            if up {
                tracing::info!(region = %name, "region healthy again: answered by DNS");
            } else {
                tracing::warn!(region = %name, "region unhealthy: no longer answered by DNS");
            }
        }
    }

    /// The `dns` part of `/health`: the service name, this responder and every region's state.
    pub fn status(&self) -> Value {
        let now = self.now_ms();
        let health = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        let regions: Vec<Value> = self
            .zone
            .table
            .regions
            .iter()
            .zip(health)
            .map(|(r, h)| {
                json!({
                    "region": r.name, "up": h.up,
                    "last_probe": match h.last_ok { None => "none", Some(true) => "ok", Some(false) => "fail" },
                    "ok_streak": h.ok_streak, "fail_streak": h.fail_streak,
                    "since_ms": now.saturating_sub(h.since_ms), "probes": h.probes, "flips": h.flips,
                    "addrs": r.addrs,
                })
            })
            .collect();
        json!({"zone": self.zone.apex(), "service": self.service_name,
               "listen": self.listen.get().map(|a| a.to_string()),
               "table_digest": self.table_digest.get(), "regions": regions})
    }

    /// `/metrics` with the DNS series added before its `# EOF`.
    pub fn append_metrics(&self, exposition: String) -> String {
        let mut out = exposition
            .strip_suffix("# EOF\n")
            .unwrap_or(&exposition)
            .to_string();
        let _ =
            prometheus_client::encoding::text::encode_registry(&mut out, &self.metrics.registry);
        out.push_str("# EOF\n");
        out
    }
}

/// Errors starting the responder.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Zone(#[from] zone::ZoneError),
    #[error("cannot read the bound dns address: {0}")]
    Addr(std::io::Error),
}

/// The sockets a responder serves: a UDP socket and a TCP listener, normally on the same
/// address and port.
pub struct Sockets {
    pub udp: tokio::net::UdpSocket,
    pub tcp: tokio::net::TcpListener,
}

impl Sockets {
    /// Bind UDP and TCP on `addr`: the same port on both, and with port 0 one port free for
    /// both.
    pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Sockets> {
        let (udp, tcp) = server::bind(addr).await?;
        Ok(Sockets { udp, tcp })
    }
}

/// A running responder and prober.
pub struct Running {
    /// The view both share (and the API shows).
    pub view: std::sync::Arc<View>,
    /// The bound address (UDP and TCP).
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop the responder and the prober.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Start region `region`'s responder on the bound `sockets` (`cfg.listen` is not read: the
/// caller bound it) and its prober; `https://` health URLs are verified against the system's
/// roots and the CA file `peer_ca` (`http.peer_ca`).
pub async fn start(
    cfg: &crate::config::DnsConfig,
    region: &str,
    peer_ca: Option<&std::path::Path>,
    sockets: Sockets,
) -> Result<Running, StartError> {
    let zone = zone::Zone::new(cfg)?;
    let view = std::sync::Arc::new(View::new(
        zone,
        region,
        cfg.service_name(),
        Hysteresis {
            fall: cfg.fall_after,
            rise: cfg.rise_after,
        },
    ));
    let Sockets { udp, tcp } = sockets;
    let addr = udp.local_addr().map_err(StartError::Addr)?;
    let _ = view.listen.set(addr);
    let _ = view.table_digest.set(table_digest(cfg));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = prober::spawn(
        view.clone(),
        cfg.regions.iter().map(|r| r.health_url.clone()).collect(),
        Duration::from_millis(cfg.probe_interval_ms),
        Duration::from_millis(cfg.probe_timeout_ms),
        crate::tls::client::builder_with_peer_ca(peer_ca),
        stop_rx.clone(),
    );
    let (cfg, responder_view) = (cfg.clone(), view.clone());
    tasks.push(tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        let shutdown = async move {
            while !*stop_rx.borrow() {
                if stop_rx.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = server::serve(responder_view, &cfg, udp, tcp, shutdown).await {
            tracing::error!(error = %e, "dns responder stopped");
        }
    }));
    Ok(Running {
        view,
        addr,
        stop,
        tasks,
    })
}

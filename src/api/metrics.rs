//! Prometheus metrics for the HTTP API (text exposition at `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route template (`/scim/v2/Users/{id}`), never the raw path, so ids do not explode
    /// the label space.
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// Labels of a latency observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Labels of a refused token request or access token: why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A fixed code (`invalid_client`, `expired`…), never request text.
    pub reason: String,
}

/// Plain running totals of answered requests, for the dashboard's charts (the labelled
/// families above cannot be summed without encoding them).
#[derive(Default)]
pub struct RequestTotals {
    requests: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl RequestTotals {
    /// Count one answered request with this status.
    pub fn count(&self, status: u16) {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_add(1, Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Relaxed);
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Of those, answered with a 5xx status.
    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The API's metrics.
pub struct Metrics {
    /// Totals of `requests` without labels (not exported: the dashboard's charts read them).
    pub totals: RequestTotals,
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency by route, 0.1 ms to ~3 s.
    pub latency: Family<RouteLabels, Histogram>,
    /// SCIM requests being handled now.
    pub in_flight: Gauge,
    /// SCIM requests refused with 503 because `http.max_in_flight` was reached.
    pub shed: Counter,
    /// Writes that waited for the replication write quorum.
    pub quorum_waits: Counter,
    /// Of those, writes answered 503 because the quorum did not confirm in time.
    pub quorum_timeouts: Counter,
    /// Lookups at the peers before a 404 (no false 404s), and those a peer answered.
    pub peer_lookups: Counter,
    pub peer_lookup_hits: Counter,
    /// HTTP connections open now.
    pub connections: Gauge,
    /// Connections closed at once because `http.max_connections` were open.
    pub connections_refused: Counter,
    /// Requests answered 503 because they took longer than `http.request_timeout_ms`.
    pub request_timeouts: Counter,
    /// Request bodies that did not arrive within `http.body_read_timeout_ms` (408).
    pub body_timeouts: Counter,
    /// Access tokens issued at `/oauth/token`.
    pub oauth_tokens_issued: Counter,
    /// Token requests refused, by OAuth error code.
    pub oauth_token_requests_refused: Family<ReasonLabels, Counter>,
    /// Bearer JWTs the SCIM API refused, by reason (expired, bad_signature…).
    pub oauth_access_tokens_refused: Family<ReasonLabels, Counter>,
    /// The HTTPS listener's reloads and failed handshakes.
    pub tls: crate::tls::TlsMetrics,
    /// SCIM event feeds: SETs delivered, acknowledged, refused, dropped; failed pushes.
    pub events: EventMetrics,
}

/// Labels of an event counter: the tenant (configured tenants only, so the set is small).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

/// Labels of delivered SETs: the tenant and how (`poll` or `push`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub tenant: String,
    pub via: String,
}

/// The event feeds' counters (see `crate::events`).
#[derive(Clone, Default)]
pub struct EventMetrics {
    pub delivered: Family<DeliveryLabels, Counter>,
    pub acknowledged: Family<TenantLabels, Counter>,
    pub refused: Family<TenantLabels, Counter>,
    pub dropped: Family<TenantLabels, Counter>,
    pub push_failures: Family<TenantLabels, Counter>,
    pub pending: Family<TenantLabels, Gauge>,
}

impl EventMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_delivered",
            "SETs sent to a receiver, by tenant and how (poll, push); resends included",
            self.delivered.clone(),
        );
        registry.register(
            "events_acknowledged",
            "SETs a receiver acknowledged (poll ack, push 202)",
            self.acknowledged.clone(),
        );
        registry.register(
            "events_refused",
            "SETs a receiver refused (poll setErrs, push 400): removed, not resent",
            self.refused.clone(),
        );
        registry.register(
            "events_dropped",
            "SETs dropped unacknowledged because the feed held events.max_pending",
            self.dropped.clone(),
        );
        registry.register(
            "events_push_failures",
            "Pushes that failed (timeout, connection, 5xx, 401/403) and are retried",
            self.push_failures.clone(),
        );
        registry.register(
            "events_pending",
            "SETs in the tenant's feed not yet acknowledged",
            self.pending.clone(),
        );
    }

    /// The labels of `tenant`.
    pub fn tenant(tenant: &str) -> TenantLabels {
        TenantLabels {
            tenant: tenant.to_string(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("geoscim");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        let in_flight = Gauge::default();
        let shed = Counter::default();
        let (quorum_waits, quorum_timeouts) = (Counter::default(), Counter::default());
        let (peer_lookups, peer_lookup_hits) = (Counter::default(), Counter::default());
        let connections = Gauge::default();
        let (connections_refused, request_timeouts, body_timeouts) =
            (Counter::default(), Counter::default(), Counter::default());
        let oauth_tokens_issued = Counter::default();
        let oauth_token_requests_refused = Family::<ReasonLabels, Counter>::default();
        let oauth_access_tokens_refused = Family::<ReasonLabels, Counter>::default();
        // Every reason from zero, so a rate of refusals has a series before the first one.
        let reason = |r: &str| ReasonLabels {
            reason: r.to_string(),
        };
        for code in crate::oauth::request::ERROR_CODES {
            let _ = oauth_token_requests_refused.get_or_create(&reason(code));
        }
        for e in crate::oauth::TokenError::ALL {
            let _ = oauth_access_tokens_refused.get_or_create(&reason(e.reason()));
        }
        registry.register(
            "oauth_tokens_issued",
            "Access tokens issued at /oauth/token",
            oauth_tokens_issued.clone(),
        );
        registry.register(
            "oauth_token_requests_refused",
            "Token requests refused, by OAuth error code",
            oauth_token_requests_refused.clone(),
        );
        registry.register(
            "oauth_access_tokens_refused",
            "Bearer JWTs refused by the SCIM API, by reason",
            oauth_access_tokens_refused.clone(),
        );
        registry.register(
            "http_connections",
            "HTTP connections open",
            connections.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once because http.max_connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "http_request_timeouts",
            "Requests answered 503 after http.request_timeout_ms",
            request_timeouts.clone(),
        );
        registry.register(
            "http_body_timeouts",
            "Request bodies not received within http.body_read_timeout_ms (408)",
            body_timeouts.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "http_in_flight",
            "SCIM requests being handled",
            in_flight.clone(),
        );
        registry.register(
            "http_shed",
            "SCIM requests refused with 503 under overload",
            shed.clone(),
        );
        registry.register(
            "replication_quorum_waits",
            "Writes that waited for the replication write quorum",
            quorum_waits.clone(),
        );
        registry.register(
            "replication_quorum_timeouts",
            "Quorum writes answered 503 because the quorum did not confirm in time",
            quorum_timeouts.clone(),
        );
        registry.register(
            "replication_peer_lookups",
            "Lookups at the peers for an id or userName this region lacked",
            peer_lookups.clone(),
        );
        registry.register(
            "replication_peer_lookup_hits",
            "Peer lookups that found the resource",
            peer_lookup_hits.clone(),
        );
        let tls = crate::tls::TlsMetrics::default();
        tls.register(&mut registry);
        let events = EventMetrics::default();
        events.register(&mut registry);
        Metrics {
            tls,
            events,
            totals: RequestTotals::default(),
            registry,
            connections,
            connections_refused,
            request_timeouts,
            body_timeouts,
            oauth_tokens_issued,
            oauth_token_requests_refused,
            oauth_access_tokens_refused,
            quorum_waits,
            quorum_timeouts,
            peer_lookups,
            peer_lookup_hits,
            requests,
            latency,
            in_flight,
            shed,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Per-peer replication metrics, read from the replication node's status (see
/// `replication::node`) at scrape time and appended to the exposition before its `# EOF`.
/// Gauges: connection state, changes the peer lacks, age of the oldest unacknowledged change,
/// whether the last digest comparison differed. Counters (since this process started): entries
/// sent, forwarded, received, duplicates, retransmissions; UDP bytes sent and received across
/// reconnections; digest comparisons, matches and divergences.
pub fn with_replication(exposition: String, status: &serde_json::Value) -> String {
    use serde_json::Value;
    use std::fmt::Write;
    let body = exposition
        .strip_suffix("# EOF\n")
        .unwrap_or(&exposition)
        .to_string();
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    let mut out = body;
    let series: &[(&str, &str, &str, &str)] = &[
        (
            "replication_peer_connected",
            "gauge",
            "connected",
            "1 when the connection to the peer is up",
        ),
        (
            "replication_behind_changes",
            "gauge",
            "behind_changes",
            "changes we hold that the peer has not acknowledged",
        ),
        (
            "replication_oldest_unacked_seconds",
            "gauge",
            "oldest_unacked_ms",
            "age of the oldest change the peer has not acknowledged",
        ),
        (
            "replication_sent_entries",
            "counter",
            "sent_entries",
            "entries sent to the peer, resends included",
        ),
        (
            "replication_forwarded_entries",
            "counter",
            "forwarded_entries",
            "entries of third regions sent to the peer",
        ),
        (
            "replication_received_entries",
            "counter",
            "received_entries",
            "entries received from the peer",
        ),
        (
            "replication_duplicate_entries",
            "counter",
            "duplicate_entries",
            "received entries already held",
        ),
        (
            "replication_retransmits",
            "counter",
            "retransmits",
            "resends after an acknowledgement timeout",
        ),
        (
            "replication_bytes_sent",
            "counter",
            "bytes_sent",
            "UDP payload bytes sent to the peer, all connections (handshakes, frames, \
             acknowledgements, keep-alives, retransmissions)",
        ),
        (
            "replication_bytes_received",
            "counter",
            "bytes_received",
            "UDP payload bytes received from the peer, all connections",
        ),
        (
            "replication_digests_compared",
            "counter",
            "digests_compared",
            "document digests from the peer taken at the same marks as ours",
        ),
        (
            "replication_digests_matched",
            "counter",
            "digests_matched",
            "compared digests equal to ours",
        ),
        (
            "replication_divergence",
            "counter",
            "divergences",
            "compared digests that differed from ours: same changes, different documents",
        ),
        (
            "replication_diverged",
            "gauge",
            "diverged",
            "1 when the last digest comparison with the peer differed (cleared by the next match)",
        ),
    ];
    for (name, kind, field, help) in series {
        let _ = writeln!(out, "# HELP geoscim_{name} {help}.");
        let _ = writeln!(out, "# TYPE geoscim_{name} {kind}");
        let suffix = if *kind == "counter" { "_total" } else { "" };
        for p in &peers {
            let peer = p["peer"].as_str().unwrap_or_default();
            let value = match (*field, &p[*field]) {
                (_, Value::Bool(b)) => f64::from(u8::from(*b)),
                ("connected" | "diverged", _) => 0.0,
                ("oldest_unacked_ms", v) => v.as_f64().map_or(0.0, |ms| ms / 1000.0),
                (_, v) => v.as_f64().unwrap_or(0.0),
            };
            let _ = writeln!(out, "geoscim_{name}{suffix}{{peer=\"{peer}\"}} {value}");
        }
    }
    out.push_str(
        "# HELP geoscim_replication_failed_connections replication connection set-ups that \
         failed, dialled or accepted (refused handshakes, timeouts).\n",
    );
    out.push_str("# TYPE geoscim_replication_failed_connections counter\n");
    let failed = status["failed_connections"].as_u64().unwrap_or(0);
    let _ = writeln!(out, "geoscim_replication_failed_connections_total {failed}");
    out.push_str("# EOF\n");
    out
}

/// Conflict records this region indexed since the process started, per rule (see
/// `store::Store::conflicts_indexed`), appended to the exposition before its `# EOF`. Every region
/// counts each record once, whether it observed the merge itself or received the record.
pub fn with_conflicts(exposition: String, counts: &[(crate::conflict::Rule, u64)]) -> String {
    with_conflicts_and_store(exposition, counts, 0)
}

/// [`with_conflicts`], plus the store's counters: replicated changes quarantined.
pub fn with_conflicts_and_store(
    exposition: String,
    counts: &[(crate::conflict::Rule, u64)],
    quarantined: u64,
) -> String {
    use std::fmt::Write;
    let mut out = exposition
        .strip_suffix("# EOF\n")
        .unwrap_or(&exposition)
        .to_string();
    out.push_str("# HELP geoscim_conflicts automatic conflict resolutions recorded, by rule.\n");
    out.push_str("# TYPE geoscim_conflicts counter\n");
    for (rule, n) in counts {
        let _ = writeln!(
            out,
            "geoscim_conflicts_total{{rule=\"{}\"}} {n}",
            rule.as_str()
        );
    }
    out.push_str(
        "# HELP geoscim_replication_quarantined replicated changes Automerge rejected, kept aside \
         (not applied) so their origin goes on.\n",
    );
    out.push_str("# TYPE geoscim_replication_quarantined counter\n");
    let _ = writeln!(out, "geoscim_replication_quarantined_total {quarantined}");
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_counters_are_one_series_per_rule_before_eof() {
        let counts: Vec<_> = crate::conflict::Rule::ALL
            .iter()
            .map(|r| (*r, u64::from(*r == crate::conflict::Rule::DeleteWins)))
            .collect();
        let text = with_conflicts(Metrics::default().encode(), &counts);
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(text.contains("geoscim_conflicts_total{rule=\"delete-wins\"} 1\n"));
        assert!(text.contains("geoscim_conflicts_total{rule=\"sticky-deactivation\"} 0\n"));
    }

    #[test]
    fn replication_series_go_before_eof() {
        let m = Metrics::default();
        let status = serde_json::json!({"peers": [{"peer": "us", "connected": true,
            "behind_changes": 3, "oldest_unacked_ms": 1500, "sent_entries": 7,
            "bytes_sent": 12345, "bytes_received": 678, "diverged": true, "divergences": 2,
            "digests_compared": 5, "digests_matched": 3}], "failed_connections": 4});
        let text = with_replication(m.encode(), &status);
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(
            text.contains("geoscim_replication_peer_connected{peer=\"us\"} 1"),
            "{text}"
        );
        assert!(text.contains("geoscim_replication_oldest_unacked_seconds{peer=\"us\"} 1.5"));
        assert!(text.contains("geoscim_replication_sent_entries_total{peer=\"us\"} 7"));
        assert!(text.contains("# TYPE geoscim_replication_bytes_sent counter"));
        assert!(text.contains("geoscim_replication_bytes_sent_total{peer=\"us\"} 12345"));
        assert!(text.contains("geoscim_replication_bytes_received_total{peer=\"us\"} 678"));
        assert!(text.contains("geoscim_replication_divergence_total{peer=\"us\"} 2"));
        assert!(text.contains("geoscim_replication_digests_compared_total{peer=\"us\"} 5"));
        assert!(text.contains("geoscim_replication_digests_matched_total{peer=\"us\"} 3"));
        assert!(text.contains("geoscim_replication_diverged{peer=\"us\"} 1"));
        assert!(text.contains("geoscim_replication_failed_connections_total 4\n"));
    }
}

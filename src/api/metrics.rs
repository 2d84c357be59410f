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

/// The API's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency by route, 0.1 ms to ~3 s.
    pub latency: Family<RouteLabels, Histogram>,
    /// SCIM requests being handled now.
    pub in_flight: Gauge,
    /// SCIM requests refused with 503 because `http.max_in_flight` was reached.
    pub shed: Counter,
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
        Metrics {
            registry,
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

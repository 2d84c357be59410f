//! `[events]` and `[tenants.<name>.events]`: SCIM security events (RFC 9967), polled
//! (RFC 8936) or pushed (RFC 8935). See [`crate::events`].

use serde::{Deserialize, Serialize};

/// `[events]`: limits shared by every tenant's feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The `iss` of every SET. Default: `oauth.issuer`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The most SETs one poll answers (a poll's `maxEvents` above it is lowered to it).
    #[serde(default = "default_poll_max_events")]
    pub poll_max_events: usize,
    /// How long a poll with `returnImmediately: false` waits for a first event.
    #[serde(default = "default_poll_wait_ms")]
    pub poll_wait_ms: u64,
    /// How long one push may take before it counts as failed and is retried.
    #[serde(default = "default_push_timeout_ms")]
    pub push_timeout_ms: u64,
    /// The first wait after a failed push; it doubles (with jitter) up to `push_backoff_max_ms`.
    #[serde(default = "default_push_backoff_ms")]
    pub push_backoff_ms: u64,
    #[serde(default = "default_push_backoff_max_ms")]
    pub push_backoff_max_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            issuer: None,
            poll_max_events: default_poll_max_events(),
            poll_wait_ms: default_poll_wait_ms(),
            push_timeout_ms: default_push_timeout_ms(),
            push_backoff_ms: default_push_backoff_ms(),
            push_backoff_max_ms: default_push_backoff_max_ms(),
        }
    }
}

fn default_poll_max_events() -> usize {
    1000
}
fn default_poll_wait_ms() -> u64 {
    15_000
}
fn default_push_timeout_ms() -> u64 {
    10_000
}
fn default_push_backoff_ms() -> u64 {
    500
}
fn default_push_backoff_max_ms() -> u64 {
    60_000
}

/// How a tenant's events reach its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// The receiver polls `POST /scim/v2/Events` at any region; every region's feed holds the
    /// events of every write in the cluster (its own and those it merged).
    Poll,
    /// Each region pushes the events of the writes it accepted to `push_url`.
    Push,
}

/// `[tenants.<name>.events]`: one tenant's event feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantEventsConfig {
    pub delivery: Delivery,
    /// The receiver's endpoint (push): an absolute https URL (http only on loopback).
    #[serde(default)]
    pub push_url: Option<String>,
    /// A file holding the value of the `Authorization` header of every push (e.g.
    /// `Bearer …`), so no secret sits in the config. Without it pushes carry none.
    #[serde(default)]
    pub push_authorization_file: Option<std::path::PathBuf>,
    /// A PEM file of the CAs the receiver's certificate may chain to (besides the system's).
    #[serde(default)]
    pub push_ca: Option<std::path::PathBuf>,
    /// The `aud` of the tenant's SETs. Default: the push URL, else the tenant's name.
    #[serde(default)]
    pub audience: Option<String>,
    /// Events kept unacknowledged at most; beyond it the oldest go (non-offboarding ones
    /// first), counted in `geoscim_events_dropped_total`.
    #[serde(default = "default_max_pending")]
    pub max_pending: u64,
}

fn default_max_pending() -> u64 {
    100_000
}

impl TenantEventsConfig {
    /// The `aud` claim of this tenant's SETs.
    pub fn audience(&self, tenant: &str) -> String {
        self.audience
            .clone()
            .or_else(|| self.push_url.clone())
            .unwrap_or_else(|| tenant.to_string())
    }

    /// The rule this tenant's events section breaks, if any.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=10_000_000).contains(&self.max_pending) {
            return Err("events.max_pending must be between 1 and 10000000".into());
        }
        match (self.delivery, &self.push_url) {
            (Delivery::Push, None) => {
                Err("events.delivery = \"push\" needs events.push_url".into())
            }
            (Delivery::Poll, Some(_)) => {
                Err("events.push_url is only for events.delivery = \"push\"".into())
            }
            (Delivery::Push, Some(url)) => check_push_url(url),
            (Delivery::Poll, None) => Ok(()),
        }
    }
}

/// An absolute https URL, or http to a loopback address (a receiver on the same machine).
fn check_push_url(url: &str) -> Result<(), String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Err(format!("events.push_url {url:?} is not a URL"));
    };
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "events.push_url {url:?} must be an absolute https URL (http only to loopback)"
        )),
    }
}

impl EventsConfig {
    /// The ranges of the numeric keys: (key, value, min, max).
    pub fn ranges(&self) -> Vec<(&'static str, u64, u64, u64)> {
        vec![
            (
                "events.poll_max_events",
                self.poll_max_events as u64,
                1,
                100_000,
            ),
            ("events.poll_wait_ms", self.poll_wait_ms, 0, 300_000),
            ("events.push_timeout_ms", self.push_timeout_ms, 100, 600_000),
            ("events.push_backoff_ms", self.push_backoff_ms, 10, 600_000),
            (
                "events.push_backoff_max_ms",
                self.push_backoff_max_ms,
                10,
                86_400_000,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(delivery: Delivery, url: Option<&str>) -> TenantEventsConfig {
        TenantEventsConfig {
            delivery,
            push_url: url.map(str::to_string),
            push_authorization_file: None,
            push_ca: None,
            audience: None,
            max_pending: 10,
        }
    }

    #[test]
    fn push_needs_an_https_url_or_loopback_http_and_poll_takes_none() {
        assert!(tenant(Delivery::Poll, None).check().is_ok());
        assert!(tenant(Delivery::Push, Some("https://rx.example/events"))
            .check()
            .is_ok());
        assert!(tenant(Delivery::Push, Some("http://127.0.0.1:9/events"))
            .check()
            .is_ok());
        for bad in [
            "http://rx.example/events",
            "ftp://x",
            "not a url",
            "/events",
        ] {
            assert!(tenant(Delivery::Push, Some(bad)).check().is_err(), "{bad}");
        }
        assert!(tenant(Delivery::Push, None).check().is_err());
        assert!(tenant(Delivery::Poll, Some("https://rx.example"))
            .check()
            .is_err());
        let t = tenant(Delivery::Push, Some("https://rx.example/e"));
        assert_eq!(t.audience("acme"), "https://rx.example/e");
        assert_eq!(tenant(Delivery::Poll, None).audience("acme"), "acme");
    }
}

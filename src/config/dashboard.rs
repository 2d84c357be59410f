//! The `[dashboard]` table: the conflict dashboard every region serves at `/dashboard`.
//!
//! The dashboard signs in with an admin token and keeps a server-side session (a random id in
//! an HttpOnly cookie), so its limits are the sessions and event streams a region holds at once.
//! `[[dashboard.regions]]` names the other regions' HTTP base URLs: the cluster view reads their
//! `/health` from the server (the browser talks to one region only). Without it, the URLs come
//! from `[[dns.regions]].health_url` when the responder is configured.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The dashboard's sessions, streams and samples.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve `/dashboard` at all (the admin API stays either way).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A session ends this long after sign-in, seconds.
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// Sessions held at once; a new sign-in beyond it ends the oldest session.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Live conflict streams (server-sent events) open at once; beyond it, 503.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// A stream is closed after this long, seconds (the browser reconnects by itself), so an
    /// idle tab holds nothing for ever.
    #[serde(default = "default_stream_max_secs")]
    pub stream_max_secs: u64,
    /// How long the cluster view waits for another region's `/health`, milliseconds.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// Seconds between two samples of the charts' ring buffer.
    #[serde(default = "default_sample_interval_secs")]
    pub sample_interval_secs: u64,
    /// Samples kept (the charts' window is this times the interval: an hour by default).
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// The other regions' HTTP base URLs, for the cluster view.
    #[serde(default)]
    pub regions: Vec<DashboardRegion>,
}

/// Another region's HTTP base URL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DashboardRegion {
    /// The region's name (as in its own file).
    pub name: String,
    /// `http://host:port`, without a trailing `/`: its `/health` is read from there.
    pub url: String,
}

fn default_true() -> bool {
    true
}
fn default_session_ttl_secs() -> u64 {
    8 * 3600
}
fn default_max_sessions() -> usize {
    64
}
fn default_max_streams() -> usize {
    16
}
fn default_stream_max_secs() -> u64 {
    3600
}
fn default_probe_timeout_ms() -> u64 {
    1000
}
fn default_sample_interval_secs() -> u64 {
    10
}
fn default_samples() -> usize {
    360
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            session_ttl_secs: default_session_ttl_secs(),
            max_sessions: default_max_sessions(),
            max_streams: default_max_streams(),
            stream_max_secs: default_stream_max_secs(),
            probe_timeout_ms: default_probe_timeout_ms(),
            sample_interval_secs: default_sample_interval_secs(),
            samples: default_samples(),
            regions: Vec::new(),
        }
    }
}

impl DashboardConfig {
    /// Check every limit; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, rule: &str| {
            Err(ConfigError::Invalid {
                key,
                rule: rule.to_string(),
            })
        };
        if !(60..=7 * 24 * 3600).contains(&self.session_ttl_secs) {
            return invalid(
                "dashboard.session_ttl_secs",
                "must be between 60 and 604800 (a week)",
            );
        }
        if !(1..=10_000).contains(&self.max_sessions) {
            return invalid("dashboard.max_sessions", "must be between 1 and 10000");
        }
        if !(1..=1000).contains(&self.max_streams) {
            return invalid("dashboard.max_streams", "must be between 1 and 1000");
        }
        if !(10..=24 * 3600).contains(&self.stream_max_secs) {
            return invalid("dashboard.stream_max_secs", "must be between 10 and 86400");
        }
        if !(50..=30_000).contains(&self.probe_timeout_ms) {
            return invalid("dashboard.probe_timeout_ms", "must be between 50 and 30000");
        }
        if !(1..=3600).contains(&self.sample_interval_secs) {
            return invalid(
                "dashboard.sample_interval_secs",
                "must be between 1 and 3600",
            );
        }
        if !(2..=100_000).contains(&self.samples) {
            return invalid("dashboard.samples", "must be between 2 and 100000");
        }
        for r in &self.regions {
            if !crate::ids::is_valid_name(&r.name) {
                return invalid(
                    "dashboard.regions.name",
                    "must be 1-63 characters of a-z, 0-9, '-' and '_'",
                );
            }
            if !(r.url.starts_with("http://") || r.url.starts_with("https://"))
                || r.url.ends_with('/')
            {
                return invalid(
                    "dashboard.regions.url",
                    "must be an absolute http(s) URL without a trailing '/'",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_name_their_key() {
        DashboardConfig::default().validate().unwrap();
        let bad = DashboardConfig {
            max_streams: 0,
            ..DashboardConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("dashboard.max_streams"), "{err}");
        let bad = DashboardConfig {
            regions: vec![DashboardRegion {
                name: "eu".into(),
                url: "eu.example:8080".into(),
            }],
            ..DashboardConfig::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("dashboard.regions.url"), "{err}");
    }
}

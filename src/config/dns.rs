//! The `[dns]` table: this region's geo-DNS responder, its health prober, and the routing table
//! every region shares.
//!
//! Every region must give the same answer to the same question, so every region's file carries
//! the whole cluster's routing table (`[[dns.regions]]`, `[[dns.networks]]`, `[[dns.tenants]]`)
//! and the same zone settings; only `listen` differs. `geoscim up` refuses a folder whose files
//! disagree, and `/health` shows a digest of the table so operators can compare regions.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The responder, the prober and the routing table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP address of this region's responder (the same port on both).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The zone this responder is authoritative for (e.g. `geoscim.test`); everything outside
    /// it is REFUSED, so the responder is never an open resolver.
    pub zone: String,
    /// The service name's first label: IdPs use `<service>.<zone>`. Empty: the zone apex itself.
    #[serde(default = "default_service")]
    pub service: String,
    /// TTL of A/AAAA answers, seconds. Short, because it adds to the failover time.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u32,
    /// TTL of negative answers (NXDOMAIN, NODATA: the SOA minimum), seconds.
    #[serde(default = "default_ttl")]
    pub negative_ttl_secs: u32,
    /// TTL of SOA, NS and SRV records, seconds (they change with the files, not with health).
    #[serde(default = "default_static_ttl")]
    pub static_ttl_secs: u32,
    /// Regions per A/AAAA answer: 1 answers one region; more give an ordered fallback set.
    #[serde(default = "default_answer_count")]
    pub answer_count: usize,
    /// Largest UDP answer, bytes (also capped by the client's EDNS size, 512 without EDNS).
    /// Larger answers are truncated (TC) and the client retries over TCP.
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
    /// A TCP connection that sends no query for this long is closed.
    #[serde(default = "default_tcp_idle_timeout_ms")]
    pub tcp_idle_timeout_ms: u64,
    /// Queries per second answered per source address (token bucket refill); beyond it,
    /// queries are dropped (UDP) so the responder cannot be used to amplify.
    #[serde(default = "default_rate_limit_qps")]
    pub rate_limit_qps: u32,
    /// Token bucket size per source address (bursts).
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
    /// Source addresses tracked by the rate limiter at once; beyond it the oldest are forgotten.
    #[serde(default = "default_rate_limit_sources")]
    pub rate_limit_sources: usize,
    /// Queries handled at once; beyond it, queries are dropped (UDP) or the connection waits.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// SOA serial. Bump it when the files change, so secondaries notice.
    #[serde(default = "default_serial")]
    pub soa_serial: u32,
    /// How often each region's `/health` is probed, milliseconds.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// A probe without a 200 within this time failed, milliseconds.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    /// Failed probes in a row before a region is answered no more.
    #[serde(default = "default_fall_after")]
    pub fall_after: u32,
    /// Good probes in a row before a down region is answered again.
    #[serde(default = "default_rise_after")]
    pub rise_after: u32,
    /// Every region of the cluster, this one included.
    #[serde(default)]
    pub regions: Vec<DnsRegion>,
    /// Client networks with a known place, for clients outside every `serves` network.
    #[serde(default)]
    pub networks: Vec<DnsNetwork>,
    /// Per-tenant names `<tenant>.<zone>` with a home region.
    #[serde(default)]
    pub tenants: Vec<DnsTenant>,
}

/// One region in the routing table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsRegion {
    /// The region's name.
    pub name: String,
    /// Its public service addresses (A and AAAA of the service name and tenant names).
    pub addrs: Vec<IpAddr>,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Client networks (CIDR) this region serves first.
    #[serde(default)]
    pub serves: Vec<IpNet>,
    /// The URL of its `/health` (plain HTTP), probed by every region.
    pub health_url: String,
    /// Its responder's address: an NS record `ns-<name>.<zone>` with this glue. Unset: the
    /// region runs no responder (it is still routed to).
    #[serde(default)]
    pub ns: Option<IpAddr>,
    /// Its QUIC replication address: an SRV record under `_geoscim._udp.<zone>` (target
    /// `<name>.region.<zone>`). Unset: not announced.
    #[serde(default)]
    pub quic: Option<SocketAddr>,
}

/// A client network with a known place.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsNetwork {
    pub net: IpNet,
    pub lat: f64,
    pub lon: f64,
}

/// A tenant's own name and its home region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsTenant {
    /// The tenant; its name is `<tenant>.<zone>`.
    pub tenant: String,
    /// The region answered first while it is healthy (data residency).
    pub home: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5300))
}
fn default_service() -> String {
    "scim".to_string()
}
fn default_ttl() -> u32 {
    5
}
fn default_static_ttl() -> u32 {
    300
}
fn default_answer_count() -> usize {
    1
}
fn default_max_udp_payload() -> u16 {
    1232
}
fn default_tcp_idle_timeout_ms() -> u64 {
    5000
}
fn default_rate_limit_qps() -> u32 {
    2000
}
fn default_rate_limit_burst() -> u32 {
    4000
}
fn default_rate_limit_sources() -> usize {
    65_536
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_serial() -> u32 {
    1
}
fn default_probe_interval_ms() -> u64 {
    500
}
fn default_probe_timeout_ms() -> u64 {
    300
}
fn default_fall_after() -> u32 {
    2
}
fn default_rise_after() -> u32 {
    3
}

/// Is `s` a DNS name of letters, digits and hyphens (labels of 1-63, 253 in all)?
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl DnsConfig {
    /// The service name without the trailing dot (`scim.geoscim.test`).
    pub fn service_name(&self) -> String {
        if self.service.is_empty() {
            self.zone.clone()
        } else {
            format!("{}.{}", self.service, self.zone)
        }
    }

    /// Check the rules types cannot express; `region` is this region's name.
    pub fn validate(&self, region: &str) -> Result<(), ConfigError> {
        let invalid = |key, rule: String| Err(ConfigError::Invalid { key, rule });
        let zone = self.zone.trim_end_matches('.');
        if !is_dns_name(zone) || zone != self.zone.to_ascii_lowercase() {
            return invalid(
                "dns.zone",
                "must be a lower-case DNS name (labels of a-z, 0-9, '-')".into(),
            );
        }
        if !self.service.is_empty() && !is_dns_name(&self.service) {
            return invalid("dns.service", "must be one DNS label or empty".into());
        }
        if self.ttl_secs == 0 || self.ttl_secs > 86_400 {
            return invalid("dns.ttl_secs", "must be 1..=86400".into());
        }
        if self.negative_ttl_secs > 86_400 {
            return invalid("dns.negative_ttl_secs", "must be at most 86400".into());
        }
        if self.static_ttl_secs > 604_800 {
            return invalid("dns.static_ttl_secs", "must be at most 604800".into());
        }
        if self.answer_count == 0 {
            return invalid("dns.answer_count", "must be at least 1".into());
        }
        if self.max_udp_payload < 512 {
            return invalid("dns.max_udp_payload", "must be at least 512".into());
        }
        if self.tcp_idle_timeout_ms < 100 {
            return invalid("dns.tcp_idle_timeout_ms", "must be at least 100".into());
        }
        if self.rate_limit_qps == 0 || self.rate_limit_burst == 0 {
            return invalid(
                "dns.rate_limit_qps",
                "rate_limit_qps and rate_limit_burst must be at least 1".into(),
            );
        }
        if self.rate_limit_sources == 0 {
            return invalid("dns.rate_limit_sources", "must be at least 1".into());
        }
        if self.max_in_flight == 0 {
            return invalid("dns.max_in_flight", "must be at least 1".into());
        }
        if self.probe_interval_ms < 50 {
            return invalid("dns.probe_interval_ms", "must be at least 50".into());
        }
        if self.probe_timeout_ms == 0 || self.probe_timeout_ms > self.probe_interval_ms {
            return invalid(
                "dns.probe_timeout_ms",
                "must be at least 1 and at most dns.probe_interval_ms".into(),
            );
        }
        if self.fall_after == 0 || self.rise_after == 0 {
            return invalid(
                "dns.fall_after",
                "fall_after and rise_after must be at least 1".into(),
            );
        }
        if !self.regions.iter().any(|r| r.name == region) {
            return invalid(
                "dns.regions",
                format!("must list every region, this one ({region}) included"),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        let mut serves = std::collections::BTreeSet::new();
        for r in &self.regions {
            if !crate::ids::is_valid_name(&r.name) || !is_dns_name(&r.name.replace('_', "-")) {
                return invalid(
                    "dns.regions.name",
                    format!(
                        "{:?} must be a region name that is also a DNS label",
                        r.name
                    ),
                );
            }
            if !names.insert(r.name.as_str()) {
                return invalid("dns.regions.name", format!("{} is listed twice", r.name));
            }
            if r.addrs.is_empty() {
                return invalid(
                    "dns.regions.addrs",
                    format!("region {} needs at least one address", r.name),
                );
            }
            if !(-90.0..=90.0).contains(&r.lat) || !(-180.0..=180.0).contains(&r.lon) {
                return invalid(
                    "dns.regions.lat",
                    format!("region {}: lat must be -90..=90 and lon -180..=180", r.name),
                );
            }
            for n in &r.serves {
                if n.trunc() != *n {
                    return invalid(
                        "dns.regions.serves",
                        format!("{n} has host bits set (write {})", n.trunc()),
                    );
                }
                if !serves.insert(*n) {
                    return invalid(
                        "dns.regions.serves",
                        format!("{n} is served by two regions"),
                    );
                }
            }
            if !(r.health_url.starts_with("http://") || r.health_url.starts_with("https://")) {
                return invalid(
                    "dns.regions.health_url",
                    format!("region {}: must be an http:// or https:// URL", r.name),
                );
            }
        }
        for n in &self.networks {
            if n.net.trunc() != n.net {
                return invalid("dns.networks.net", format!("{} has host bits set", n.net));
            }
            if !(-90.0..=90.0).contains(&n.lat) || !(-180.0..=180.0).contains(&n.lon) {
                return invalid(
                    "dns.networks.lat",
                    format!("{}: lat must be -90..=90 and lon -180..=180", n.net),
                );
            }
        }
        for t in &self.tenants {
            if !crate::ids::is_valid_name(&t.tenant) || !is_dns_name(&t.tenant) {
                return invalid(
                    "dns.tenants.tenant",
                    format!(
                        "{:?} must be a tenant name that is also a DNS label",
                        t.tenant
                    ),
                );
            }
            if !names.contains(t.home.as_str()) {
                return invalid(
                    "dns.tenants.home",
                    format!("tenant {}: {} is not in dns.regions", t.tenant, t.home),
                );
            }
            if t.tenant == self.service || t.tenant == "region" || t.tenant.starts_with("ns-") {
                return invalid(
                    "dns.tenants.tenant",
                    format!(
                        "{} would clash with the service name, an NS name (ns-*) or the SRV \
                         targets (region)",
                        t.tenant
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    const HEAD: &str = "region = \"eu\"\ndata_dir = \"d\"\n[dns]\nzone = \"geoscim.test\"\n";
    const BASE: &str = "region = \"eu\"\ndata_dir = \"d\"\n[dns]\nzone = \"geoscim.test\"\n\
        [[dns.regions]]\nname = \"eu\"\naddrs = [\"127.0.1.1\"]\nlat = 50.1\nlon = 8.7\n\
        serves = [\"10.1.0.0/16\"]\nhealth_url = \"http://127.0.1.1:8080/health\"\n";

    /// The error of BASE with `extra` appended (tables) or, for `dns.` keys, inserted after
    /// `[dns]`.
    fn err(extra: &str) -> String {
        let text = if extra.starts_with('[') || extra.starts_with("unknown") {
            format!("{BASE}{extra}")
        } else {
            format!("{HEAD}{extra}\n{}", &BASE[HEAD.len()..])
        };
        Config::from_toml(&text, "t", []).unwrap_err().to_string()
    }

    #[test]
    fn a_dns_table_parses_with_defaults() {
        let c = Config::from_toml(BASE, "t", []).unwrap();
        let d = c.dns.unwrap();
        assert_eq!(d.service_name(), "scim.geoscim.test");
        assert_eq!((d.ttl_secs, d.answer_count), (5, 1));
        assert_eq!((d.probe_interval_ms, d.probe_timeout_ms), (500, 300));
        assert_eq!((d.fall_after, d.rise_after), (2, 3));
    }

    #[test]
    fn dns_rules_name_the_key() {
        assert!(err("ttl_secs = 0").contains("dns.ttl_secs"));
        assert!(err("probe_timeout_ms = 900").contains("dns.probe_timeout_ms"));
        assert!(
            err("[[dns.tenants]]\ntenant = \"acme\"\nhome = \"mars\"").contains("dns.tenants.home")
        );
        assert!(
            err("[[dns.networks]]\nnet = \"10.0.0.1/8\"\nlat = 0.0\nlon = 0.0")
                .contains("dns.networks.net")
        );
        assert!(err("[[dns.regions]]\nname = \"us\"\naddrs = []\nlat = 1.0\nlon = 1.0\nhealth_url = \"http://x\"")
            .contains("dns.regions.addrs"));
        assert!(err(
            "[[dns.regions]]\nname = \"us\"\naddrs = [\"127.0.1.2\"]\nlat = 1.0\nlon = 1.0\n\
                     serves = [\"10.1.0.0/16\"]\nhealth_url = \"http://x\""
        )
        .contains("served by two regions"));
        assert!(err("unknown_key = 1").contains("unknown_key"));
        assert!(err("ttl_secs = 0\nbogus = 2").contains("bogus"));
        let no_self = Config::from_toml(&BASE.replace("name = \"eu\"", "name = \"us\""), "t", [])
            .unwrap_err()
            .to_string();
        assert!(no_self.contains("dns.regions"), "{no_self}");
        // The environment reaches dns keys too.
        let c =
            Config::from_toml(BASE, "t", [("GEOSCIM_DNS__TTL_SECS".into(), "30".into())]).unwrap();
        assert_eq!(c.dns.unwrap().ttl_secs, 30);
    }

    #[test]
    fn the_local_cluster_files_are_valid_and_share_one_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("regions/local");
        let mut tables = Vec::new();
        for r in ["eu", "us", "ap"] {
            let c = Config::load(&dir.join(format!("{r}.toml")), []).unwrap();
            let mut d = c.dns.expect("a [dns] table");
            d.listen = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
            tables.push(d);
            assert!(c.replication.unwrap().peers_srv.is_some());
        }
        assert!(tables.windows(2).all(|w| w[0] == w[1]));
    }
}

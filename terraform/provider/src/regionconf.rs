//! A region's settings as the provider takes them, checked and turned into the region file
//! `geoscim serve --config` reads. Pure: no files, no processes.
//!
//! Every region of a cluster is given the same `cluster` list (name, addresses, coordinates,
//! `serves` networks of each region), so the regions' routing tables are identical without one
//! region resource referring to another (which Terraform would refuse as a cycle): peers are
//! everyone else in the list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// One region of the cluster, as every region sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    /// HTTP listen address (`ip:port`); its IP is the region's DNS answer.
    pub http: SocketAddr,
    /// QUIC replication address.
    pub quic: SocketAddr,
    /// DNS responder address.
    pub dns: SocketAddr,
    pub lat: f64,
    pub lon: f64,
    /// CIDRs answered this region first.
    pub serves: Vec<String>,
}

/// Everything one region's file is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// This region's name (one of `cluster`).
    pub name: String,
    pub cluster: Vec<Member>,
    pub data_dir: String,
    pub certs_dir: String,
    /// The zone the responders serve.
    pub zone: String,
    /// `async` or `sync`.
    pub mode: String,
    pub write_quorum: i64,
    /// `(tenant, sha256)` of the tenant tokens accepted.
    pub tokens: Vec<(String, String)>,
    /// SHA-256 of the admin tokens accepted.
    pub admin_hashes: Vec<String>,
    /// `(tenant, home region)`: tenant names answered their home first.
    pub tenants: Vec<(String, String)>,
}

/// A setting that cannot work, naming the attribute and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {problem}")]
pub struct Invalid {
    /// The attribute path as written in the configuration.
    pub attribute: String,
    /// What is wrong and what to write instead.
    pub problem: String,
}

fn invalid(attribute: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        attribute: attribute.into(),
        problem: problem.into(),
    }
}

/// geoscim's rule for names (regions, tenants): 1-63 of a-z 0-9 - _.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parse an `ip:port` attribute.
pub fn parse_addr(attribute: &str, value: &str) -> Result<SocketAddr, Invalid> {
    value.parse().map_err(|_| {
        invalid(
            attribute,
            format!("{value:?} is not an ip:port address (e.g. \"127.0.3.1:8080\")"),
        )
    })
}

/// Check the settings as a whole: what `validate()` of the region file would refuse, said in
/// terms of the Terraform attributes.
pub fn check(s: &Settings) -> Result<(), Invalid> {
    if !is_valid_name(&s.name) {
        return Err(invalid(
            "name",
            format!(
                "{:?} must be 1-63 characters of a-z, 0-9, '-' and '_'",
                s.name
            ),
        ));
    }
    let mut names = BTreeSet::new();
    let mut http = BTreeSet::new();
    for (i, m) in s.cluster.iter().enumerate() {
        if !is_valid_name(&m.name) {
            return Err(invalid(
                format!("cluster[{i}].name"),
                format!(
                    "{:?} must be 1-63 characters of a-z, 0-9, '-' and '_'",
                    m.name
                ),
            ));
        }
        if !names.insert(m.name.as_str()) {
            return Err(invalid(
                format!("cluster[{i}].name"),
                format!(
                    "region {:?} is listed twice; give each region one entry",
                    m.name
                ),
            ));
        }
        if !http.insert(m.http) {
            return Err(invalid(
                format!("cluster[{i}].http"),
                format!(
                    "{} is used by two regions; give each its own address",
                    m.http
                ),
            ));
        }
        if !(-90.0..=90.0).contains(&m.lat) || !(-180.0..=180.0).contains(&m.lon) {
            return Err(invalid(
                format!("cluster[{i}]"),
                "lat must be within -90..90 and lon within -180..180",
            ));
        }
        for (j, net) in m.serves.iter().enumerate() {
            if net.parse::<ipnet::IpNet>().is_err() {
                return Err(invalid(
                    format!("cluster[{i}].serves[{j}]"),
                    format!("{net:?} is not a CIDR network (e.g. \"10.1.0.0/16\")"),
                ));
            }
        }
    }
    if !names.contains(s.name.as_str()) {
        return Err(invalid(
            "cluster",
            format!(
                "has no entry named {:?}; list this region in cluster too",
                s.name
            ),
        ));
    }
    if s.mode != "async" && s.mode != "sync" {
        return Err(invalid(
            "replication_mode",
            format!("{:?} is not a mode; use \"async\" or \"sync\"", s.mode),
        ));
    }
    if s.write_quorum < 1 || s.write_quorum as usize > s.cluster.len() {
        return Err(invalid(
            "write_quorum",
            format!(
                "{} is outside 1..={} (the regions in cluster)",
                s.write_quorum,
                s.cluster.len()
            ),
        ));
    }
    if s.zone.is_empty() || s.zone.starts_with('.') || s.zone.contains("..") {
        return Err(invalid(
            "zone",
            format!("{:?} is not a DNS zone (e.g. \"geoscim.test\")", s.zone),
        ));
    }
    for (i, (tenant, sha)) in s.tokens.iter().enumerate() {
        if !is_valid_name(tenant) {
            return Err(invalid(format!("tokens[{i}].tenant"), "not a tenant name"));
        }
        if !is_sha256_hex(sha) {
            return Err(invalid(
                format!("tokens[{i}].sha256"),
                "must be 64 hex characters (the token's sha256, from geoscim_token)",
            ));
        }
    }
    for (i, sha) in s.admin_hashes.iter().enumerate() {
        if !is_sha256_hex(sha) {
            return Err(invalid(
                format!("admin_token_hashes[{i}]"),
                "must be 64 hex characters (an admin geoscim_token's sha256)",
            ));
        }
    }
    for (i, (tenant, home)) in s.tenants.iter().enumerate() {
        if !is_valid_name(tenant) || !names.contains(home.as_str()) {
            return Err(invalid(
                format!("tenant_homes[{i}]"),
                format!("{tenant:?} -> {home:?}: the home must be a region of cluster"),
            ));
        }
    }
    Ok(())
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The region file (TOML) for `s`, already checked.
pub fn render(s: &Settings) -> String {
    use toml::{Table, Value};
    let me = s
        .cluster
        .iter()
        .find(|m| m.name == s.name)
        .expect("checked: the region is in its cluster");
    let mut root = Table::new();
    root.insert("region".into(), Value::String(s.name.clone()));
    root.insert("data_dir".into(), Value::String(s.data_dir.clone()));
    let mut http = Table::new();
    http.insert("listen".into(), Value::String(me.http.to_string()));
    root.insert("http".into(), Value::Table(http));
    let tokens: Vec<Value> = s
        .tokens
        .iter()
        .map(|(tenant, sha)| {
            let mut t = Table::new();
            t.insert("tenant".into(), Value::String(tenant.clone()));
            t.insert("sha256".into(), Value::String(sha.to_ascii_lowercase()));
            Value::Table(t)
        })
        .collect();
    root.insert("tokens".into(), Value::Array(tokens));
    let admins: Vec<Value> = s
        .admin_hashes
        .iter()
        .map(|sha| {
            let mut t = Table::new();
            t.insert("sha256".into(), Value::String(sha.to_ascii_lowercase()));
            Value::Table(t)
        })
        .collect();
    root.insert("admin_tokens".into(), Value::Array(admins));

    let mut rep = Table::new();
    rep.insert("listen".into(), Value::String(me.quic.to_string()));
    rep.insert("certs_dir".into(), Value::String(s.certs_dir.clone()));
    rep.insert("mode".into(), Value::String(s.mode.clone()));
    rep.insert("write_quorum".into(), Value::Integer(s.write_quorum));
    let peers: Vec<Value> = s
        .cluster
        .iter()
        .filter(|m| m.name != s.name)
        .map(|m| {
            let mut t = Table::new();
            t.insert("region".into(), Value::String(m.name.clone()));
            t.insert("addr".into(), Value::String(m.quic.to_string()));
            Value::Table(t)
        })
        .collect();
    rep.insert("peers".into(), Value::Array(peers));
    root.insert("replication".into(), Value::Table(rep));

    let mut dns = Table::new();
    dns.insert("listen".into(), Value::String(me.dns.to_string()));
    dns.insert("zone".into(), Value::String(s.zone.clone()));
    let regions: Vec<Value> = s
        .cluster
        .iter()
        .map(|m| {
            let mut t = Table::new();
            t.insert("name".into(), Value::String(m.name.clone()));
            t.insert(
                "addrs".into(),
                Value::Array(vec![Value::String(m.http.ip().to_string())]),
            );
            t.insert("lat".into(), Value::Float(m.lat));
            t.insert("lon".into(), Value::Float(m.lon));
            t.insert(
                "serves".into(),
                Value::Array(m.serves.iter().cloned().map(Value::String).collect()),
            );
            t.insert(
                "health_url".into(),
                Value::String(format!("http://{}/health", m.http)),
            );
            t.insert("ns".into(), Value::String(m.dns.ip().to_string()));
            t.insert("quic".into(), Value::String(m.quic.to_string()));
            Value::Table(t)
        })
        .collect();
    dns.insert("regions".into(), Value::Array(regions));
    let tenants: Vec<Value> = s
        .tenants
        .iter()
        .map(|(tenant, home)| {
            let mut t = Table::new();
            t.insert("tenant".into(), Value::String(tenant.clone()));
            t.insert("home".into(), Value::String(home.clone()));
            Value::Table(t)
        })
        .collect();
    dns.insert("tenants".into(), Value::Array(tenants));
    root.insert("dns".into(), Value::Table(dns));
    format!(
        "# Written by terraform-provider-geoscim for region {:?}; changes are overwritten.\n{}",
        s.name,
        toml::to_string(&root).expect("a TOML table serialises")
    )
}

/// Which of a region's attributes differ between two plans, by attribute name: each of them
/// needs the region restarted (the file is read once, at start), so the plan replaces it.
pub fn restart_needed(
    before: &BTreeMap<&str, String>,
    after: &BTreeMap<&str, String>,
) -> Vec<String> {
    let keys: BTreeSet<&&str> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(**k) != after.get(**k))
        .map(|k| k.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, i: u8) -> Member {
        Member {
            name: name.into(),
            http: format!("127.0.3.{i}:8080").parse().unwrap(),
            quic: format!("127.0.3.{i}:7100").parse().unwrap(),
            dns: format!("127.0.3.{i}:5300").parse().unwrap(),
            lat: 10.0 * i as f64,
            lon: 5.5,
            serves: vec![format!("10.{i}.0.0/16")],
        }
    }

    fn settings() -> Settings {
        Settings {
            name: "eu".into(),
            cluster: vec![member("eu", 1), member("us", 2), member("ap", 3)],
            data_dir: "/tmp/x/eu/data".into(),
            certs_dir: "/tmp/x/certs".into(),
            zone: "geoscim.test".into(),
            mode: "async".into(),
            write_quorum: 2,
            tokens: vec![("default".into(), "ab".repeat(32))],
            admin_hashes: vec!["cd".repeat(32)],
            tenants: vec![("default".into(), "eu".into())],
        }
    }

    #[test]
    fn a_rendered_file_names_every_other_region_as_a_peer_and_all_in_the_table() {
        let text = render(&settings());
        let v: toml::Table = text.parse().unwrap();
        assert_eq!(v["region"].as_str(), Some("eu"));
        assert_eq!(v["http"]["listen"].as_str(), Some("127.0.3.1:8080"));
        let peers = v["replication"]["peers"].as_array().unwrap();
        let names: Vec<&str> = peers
            .iter()
            .map(|p| p["region"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["us", "ap"]);
        assert_eq!(peers[0]["addr"].as_str(), Some("127.0.3.2:7100"));
        let table = v["dns"]["regions"].as_array().unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(
            table[2]["health_url"].as_str(),
            Some("http://127.0.3.3:8080/health")
        );
        assert_eq!(table[2]["addrs"][0].as_str(), Some("127.0.3.3"));
        assert_eq!(
            v["tokens"][0]["sha256"].as_str(),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(v["dns"]["tenants"][0]["home"].as_str(), Some("eu"));
    }

    #[test]
    fn every_region_of_a_cluster_gets_the_same_routing_table() {
        let eu: toml::Table = render(&settings()).parse().unwrap();
        let us: toml::Table = render(&Settings {
            name: "us".into(),
            ..settings()
        })
        .parse()
        .unwrap();
        assert_eq!(eu["dns"]["regions"], us["dns"]["regions"]);
        assert_ne!(eu["http"], us["http"]);
    }

    #[test]
    fn errors_name_the_attribute_and_the_fix() {
        let e = check(&Settings {
            name: "xx".into(),
            ..settings()
        })
        .unwrap_err();
        assert_eq!(e.attribute, "cluster");
        assert!(e.problem.contains("list this region"), "{e}");

        let mut s = settings();
        s.cluster[1].http = s.cluster[0].http;
        assert_eq!(check(&s).unwrap_err().attribute, "cluster[1].http");

        let mut s = settings();
        s.cluster[2].serves = vec!["10.1.0.0".into()];
        assert_eq!(check(&s).unwrap_err().attribute, "cluster[2].serves[0]");

        let e = check(&Settings {
            write_quorum: 4,
            ..settings()
        })
        .unwrap_err();
        assert_eq!(e.attribute, "write_quorum");

        let e = check(&Settings {
            mode: "quorum".into(),
            ..settings()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("replication_mode:"), "{e}");
        assert!(check(&settings()).is_ok());
        assert!(parse_addr("http", "localhost").is_err());
    }

    #[test]
    fn a_changed_setting_is_named_as_needing_a_restart() {
        let a: BTreeMap<&str, String> =
            [("mode", "async".to_string()), ("zone", "z".into())].into();
        let mut b = a.clone();
        assert!(restart_needed(&a, &b).is_empty());
        b.insert("mode", "sync".into());
        assert_eq!(restart_needed(&a, &b), ["mode"]);
    }
}

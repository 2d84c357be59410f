//! The zone, pure: which records answer a question. Built once from the `[dns]` config;
//! [`Zone::answer`] takes the question, the client and the health view and returns a
//! [`Reply`] (response code, sections, ECS scope). No sockets: `server` only decodes,
//! rate-limits, calls this and encodes.
//!
//! Names served (all under the zone `Z`):
//! - `Z`: SOA, NS (`ns-<region>.Z` for every region with a responder); A/AAAA too when the
//!   service label is empty.
//! - `<service>.Z`: A/AAAA, routed ([`routing`]); `<tenant>.Z`: A/AAAA, routed with the home
//!   region first.
//! - `ns-<region>.Z`: A/AAAA of that region's responder (glue).
//! - `_geoscim._udp.Z`: SRV, one per region with a QUIC address: priority 0, weight 0, the QUIC
//!   port, target `<region>.region.Z` (whose A/AAAA is the QUIC address), so a peer's region
//!   name (its certificate's name) is the target's first label.
//!
//! Other names in the zone: NXDOMAIN with the SOA (NODATA for names that exist only as parents
//! of others, e.g. `_udp.Z`). Names outside the zone and classes other than IN: REFUSED.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::routing::{self, Client, Family, GeoPoint, Table};
use crate::config::DnsConfig;

/// The SRV owner name's labels under the zone.
pub const PEERS_SRV_LABEL: &str = "_geoscim._udp";
/// The label between a region's name and the zone in SRV targets.
pub const REGION_LABEL: &str = "region";

/// Errors building a zone (names that do not form valid DNS names).
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("invalid DNS name {name:?}: {source}")]
    Name {
        name: String,
        source: hickory_proto::ProtoError,
    },
}

/// What a name holds.
#[derive(Debug, Clone)]
enum Node {
    /// Routed A/AAAA: the service name (`None`) or a tenant's name.
    Routed(Option<String>),
    /// Fixed records (by type) and their additional section.
    Fixed {
        records: Vec<Record>,
        additionals: Vec<Record>,
    },
}

/// The zone of one cluster: the same in every region.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The apex, lower case, without the final dot.
    apex: String,
    soa: Record,
    /// The SOA with the negative TTL, for NXDOMAIN and NODATA answers (RFC 2308 §5).
    negative_soa: Record,
    /// Lower-case names without the final dot → what they hold; the apex's NS and SOA too.
    nodes: BTreeMap<String, Node>,
    /// Names that exist only as ancestors of others (empty non-terminals: NODATA, not
    /// NXDOMAIN).
    parents: BTreeSet<String>,
    /// The routing table.
    pub table: Table,
    ttl: u32,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub rcode: ResponseCode,
    /// The name is in our zone (authoritative answer).
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// ECS scope prefix to echo (0 when the answer does not depend on the client).
    pub scope: u8,
    /// For routed answers: the regions answered (for metrics) and whether it failed open.
    pub routed: Option<routing::Answer>,
}

fn name(s: &str) -> Result<Name, ZoneError> {
    Name::from_ascii(format!("{s}.")).map_err(|source| ZoneError::Name {
        name: s.to_string(),
        source,
    })
}

fn address_record(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// The routing table of a `[dns]` config.
pub fn table(cfg: &DnsConfig) -> Table {
    Table {
        regions: cfg
            .regions
            .iter()
            .map(|r| routing::Region {
                name: r.name.clone(),
                addrs: r.addrs.clone(),
                location: GeoPoint {
                    lat: r.lat,
                    lon: r.lon,
                },
                serves: r.serves.clone(),
            })
            .collect(),
        networks: cfg
            .networks
            .iter()
            .map(|n| routing::Network {
                net: n.net,
                location: GeoPoint {
                    lat: n.lat,
                    lon: n.lon,
                },
            })
            .collect(),
        tenants: cfg
            .tenants
            .iter()
            .filter_map(|t| {
                let home = cfg.regions.iter().position(|r| r.name == t.home)?;
                Some((t.tenant.clone(), home))
            })
            .collect(),
        answer_count: cfg.answer_count,
    }
}

impl Zone {
    /// The zone of a validated `[dns]` config.
    pub fn new(cfg: &DnsConfig) -> Result<Zone, ZoneError> {
        let apex = cfg.zone.trim_end_matches('.').to_ascii_lowercase();
        let apex_name = name(&apex)?;
        let st = cfg.static_ttl_secs;
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut add = |owner: String, record: Record, additionals: Vec<Record>| match nodes
            .entry(owner)
            .or_insert_with(|| Node::Fixed {
                records: Vec::new(),
                additionals: Vec::new(),
            }) {
            Node::Fixed {
                records,
                additionals: extra,
            } => {
                records.push(record);
                extra.extend(additionals);
            }
            Node::Routed(_) => {}
        };
        // NS and their glue.
        let mut ns_names = Vec::new();
        for r in &cfg.regions {
            let Some(ip) = r.ns else { continue };
            let owner = format!("ns-{}.{apex}", r.name.replace('_', "-"));
            let ns_name = name(&owner)?;
            let glue = address_record(&ns_name, st, ip);
            add(owner, glue.clone(), Vec::new());
            ns_names.push((ns_name, glue));
        }
        let mname = match ns_names.first() {
            Some((n, _)) => n.clone(),
            None => apex_name.clone(),
        };
        let rname = name(&format!("hostmaster.{apex}"))?;
        let soa_data = |minimum: u32| {
            RData::SOA(SOA::new(
                mname.clone(),
                rname.clone(),
                cfg.soa_serial,
                // refresh, retry, expire: for secondaries; the zone changes with the files.
                3600,
                600,
                86_400,
                minimum,
            ))
        };
        let soa = Record::from_rdata(apex_name.clone(), st, soa_data(cfg.negative_ttl_secs));
        let negative_soa = Record::from_rdata(
            apex_name.clone(),
            cfg.negative_ttl_secs.min(st),
            soa_data(cfg.negative_ttl_secs),
        );
        add(apex.clone(), soa.clone(), Vec::new());
        for (ns_name, glue) in &ns_names {
            add(
                apex.clone(),
                Record::from_rdata(apex_name.clone(), st, RData::NS(NS(ns_name.clone()))),
                vec![glue.clone()],
            );
        }
        // SRV records for replication peers.
        let srv_owner = format!("{PEERS_SRV_LABEL}.{apex}");
        let srv_name = name(&srv_owner)?;
        for r in &cfg.regions {
            let Some(quic) = r.quic else { continue };
            let target_owner = format!("{}.{REGION_LABEL}.{apex}", r.name);
            let target = name(&target_owner)?;
            let glue = address_record(&target, st, quic.ip());
            add(target_owner, glue.clone(), Vec::new());
            add(
                srv_owner.clone(),
                Record::from_rdata(
                    srv_name.clone(),
                    st,
                    RData::SRV(SRV::new(0, 0, quic.port(), target)),
                ),
                vec![glue],
            );
        }
        // Routed names last: they replace nothing fixed (validation keeps them apart).
        let service = cfg.service_name().to_ascii_lowercase();
        if service == apex {
            // The apex answers A/AAAA too: keep its SOA/NS by routing only address queries.
            nodes.insert(format!("{apex}#routed"), Node::Routed(None));
        } else {
            nodes.insert(service, Node::Routed(None));
        }
        for t in &cfg.tenants {
            nodes
                .entry(format!("{}.{apex}", t.tenant))
                .or_insert_with(|| Node::Routed(Some(t.tenant.clone())));
        }
        let mut parents = BTreeSet::new();
        for owner in nodes.keys() {
            let owner = owner.trim_end_matches("#routed");
            let mut rest = owner;
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() <= apex.len() {
                    break;
                }
                parents.insert(parent.to_string());
                rest = parent;
            }
        }
        Ok(Zone {
            apex,
            soa,
            negative_soa,
            nodes,
            parents,
            table: table(cfg),
            ttl: cfg.ttl_secs,
        })
    }

    /// The apex, lower case, without the final dot.
    pub fn apex(&self) -> &str {
        &self.apex
    }

    /// Answer one question from `client`, given each region's health.
    pub fn answer(
        &self,
        qname: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        client: &Client,
        healthy: &[bool],
    ) -> Reply {
        let mut reply = Reply {
            rcode: ResponseCode::NoError,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
            scope: 0,
            routed: None,
        };
        let owner = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let in_zone = owner == self.apex || owner.ends_with(&format!(".{}", self.apex));
        if !in_zone || qclass != DNSClass::IN {
            reply.rcode = ResponseCode::Refused;
            return reply;
        }
        reply.authoritative = true;
        let routed_key = if owner == self.apex {
            format!("{owner}#routed")
        } else {
            owner.clone()
        };
        let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
        let mut found = false;
        if let Some(Node::Routed(tenant)) = self.nodes.get(&routed_key) {
            found = true;
            for (t, family) in [(RecordType::A, Family::V4), (RecordType::AAAA, Family::V6)] {
                if !wants(t) {
                    continue;
                }
                let a = self
                    .table
                    .answer(client, family, tenant.as_deref(), healthy);
                reply.scope = reply.scope.max(a.scope);
                for ip in &a.addrs {
                    // Answer with the name as asked (case preserved, RFC 4343).
                    reply.answers.push(address_record(qname, self.ttl, *ip));
                }
                if reply.routed.is_none() || !a.addrs.is_empty() {
                    reply.routed = Some(a);
                }
            }
        }
        if let Some(Node::Fixed {
            records,
            additionals,
        }) = self.nodes.get(&owner)
        {
            found = true;
            for r in records.iter().filter(|r| wants(r.record_type())) {
                let mut r = r.clone();
                r.name = qname.clone();
                reply.answers.push(r);
            }
            if !reply.answers.is_empty() {
                reply.additionals.extend(additionals.iter().cloned());
            }
        }
        if !found && !self.parents.contains(&owner) {
            reply.rcode = ResponseCode::NXDomain;
        }
        if reply.answers.is_empty() {
            // NXDOMAIN or NODATA: the SOA tells resolvers how long to remember it.
            reply.authorities.push(self.negative_soa.clone());
        }
        reply
    }

    /// The SOA record (for tests and tools).
    pub fn soa(&self) -> &Record {
        &self.soa
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DnsConfig, DnsRegion, DnsTenant};

    pub(crate) fn config() -> DnsConfig {
        let region = |name: &str, n: u8, lat, lon, serves: &str| DnsRegion {
            name: name.into(),
            addrs: vec![
                format!("127.0.1.{n}").parse().unwrap(),
                format!("fd00::{n}").parse().unwrap(),
            ],
            lat,
            lon,
            serves: vec![serves.parse().unwrap()],
            health_url: format!("http://127.0.1.{n}:8080/health"),
            ns: Some(format!("127.0.1.{n}").parse().unwrap()),
            quic: Some(format!("127.0.1.{n}:7100").parse().unwrap()),
        };
        let text = "zone = \"geoscim.test\"";
        let mut cfg: DnsConfig = toml::from_str(text).unwrap();
        cfg.regions = vec![
            region("eu", 1, 50.1, 8.7, "10.1.0.0/16"),
            region("us", 2, 38.9, -77.4, "10.2.0.0/16"),
            region("ap", 3, 1.35, 103.8, "10.3.0.0/16"),
        ];
        cfg.tenants = vec![DnsTenant {
            tenant: "acme".into(),
            home: "us".into(),
        }];
        cfg
    }

    fn ask(z: &Zone, q: &str, t: RecordType, from: &str) -> Reply {
        z.answer(
            &Name::from_ascii(q).unwrap(),
            t,
            DNSClass::IN,
            &Client::from_source(from.parse().unwrap()),
            &[true, true, true],
        )
    }

    fn rdata(r: &Reply) -> Vec<String> {
        r.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn the_service_name_is_routed_and_carries_the_short_ttl() {
        let z = Zone::new(&config()).unwrap();
        let r = ask(&z, "scim.geoscim.test.", RecordType::A, "10.3.1.1");
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authoritative);
        assert_eq!(rdata(&r), ["127.0.1.3"]);
        assert_eq!(r.answers[0].ttl, 5);
        assert_eq!(r.scope, 16);
        let r = ask(&z, "SCIM.GeoSCIM.test.", RecordType::AAAA, "10.1.1.1");
        assert_eq!(rdata(&r), ["fd00::1"]);
        assert_eq!(r.answers[0].name.to_ascii(), "SCIM.GeoSCIM.test.");
    }

    #[test]
    fn tenant_names_answer_the_home_region() {
        let z = Zone::new(&config()).unwrap();
        let r = ask(&z, "acme.geoscim.test.", RecordType::A, "10.3.1.1");
        assert_eq!(rdata(&r), ["127.0.1.2"]);
    }

    #[test]
    fn apex_has_soa_and_ns_with_glue() {
        let z = Zone::new(&config()).unwrap();
        let r = ask(&z, "geoscim.test.", RecordType::SOA, "10.3.1.1");
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].record_type(), RecordType::SOA);
        let r = ask(&z, "geoscim.test.", RecordType::NS, "10.3.1.1");
        assert_eq!(r.answers.len(), 3);
        assert_eq!(r.additionals.len(), 3);
        let r = ask(&z, "ns-us.geoscim.test.", RecordType::A, "10.3.1.1");
        assert_eq!(rdata(&r), ["127.0.1.2"]);
    }

    #[test]
    fn peers_srv_lists_every_region_with_a_quic_address() {
        let z = Zone::new(&config()).unwrap();
        let r = ask(
            &z,
            "_geoscim._udp.geoscim.test.",
            RecordType::SRV,
            "10.3.1.1",
        );
        let mut srv = rdata(&r);
        srv.sort();
        assert_eq!(
            srv,
            [
                "0 0 7100 ap.region.geoscim.test.",
                "0 0 7100 eu.region.geoscim.test.",
                "0 0 7100 us.region.geoscim.test.",
            ]
        );
        assert_eq!(r.additionals.len(), 3);
        let r = ask(&z, "eu.region.geoscim.test.", RecordType::A, "10.3.1.1");
        assert_eq!(rdata(&r), ["127.0.1.1"]);
    }

    #[test]
    fn unknown_names_are_nxdomain_with_soa_and_parents_are_nodata() {
        let z = Zone::new(&config()).unwrap();
        let r = ask(&z, "nope.geoscim.test.", RecordType::A, "10.3.1.1");
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(r.authorities[0].ttl, 5);
        for parent in ["_udp.geoscim.test.", "region.geoscim.test."] {
            let r = ask(&z, parent, RecordType::A, "10.3.1.1");
            assert_eq!(r.rcode, ResponseCode::NoError, "{parent}");
            assert!(r.answers.is_empty());
            assert_eq!(r.authorities.len(), 1);
        }
        // A known name without the asked type: NODATA.
        let r = ask(&z, "scim.geoscim.test.", RecordType::MX, "10.3.1.1");
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities.len(), 1);
    }

    #[test]
    fn names_outside_the_zone_and_other_classes_are_refused() {
        let z = Zone::new(&config()).unwrap();
        for q in ["example.com.", "test.", "xgeoscim.test.", "."] {
            let r = ask(&z, q, RecordType::A, "10.3.1.1");
            assert_eq!(r.rcode, ResponseCode::Refused, "{q}");
            assert!(!r.authoritative);
            assert!(r.answers.is_empty() && r.authorities.is_empty());
        }
        let r = z.answer(
            &Name::from_ascii("scim.geoscim.test.").unwrap(),
            RecordType::A,
            DNSClass::CH,
            &Client::from_source("10.3.1.1".parse().unwrap()),
            &[true; 3],
        );
        assert_eq!(r.rcode, ResponseCode::Refused);
    }

    #[test]
    fn an_empty_service_label_routes_the_apex_and_keeps_its_soa() {
        let mut cfg = config();
        cfg.service = String::new();
        let z = Zone::new(&cfg).unwrap();
        let r = ask(&z, "geoscim.test.", RecordType::A, "10.2.1.1");
        assert_eq!(rdata(&r), ["127.0.1.2"]);
        let r = ask(&z, "geoscim.test.", RecordType::SOA, "10.2.1.1");
        assert_eq!(r.answers.len(), 1);
    }
}

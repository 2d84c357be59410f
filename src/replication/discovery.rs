//! Peers from DNS: `replication.peers_srv` (e.g. `_geoscim._udp.geoscim.test`) looked up with
//! hickory-resolver at `replication.peers_srv_servers` (e.g. the cluster's own responders,
//! which serve these records from `[[dns.regions]]`), again every `peers_srv_refresh_ms`.
//!
//! # Record format
//! One SRV record per region: `_geoscim._udp.<zone>. SRV 0 0 <quic port> <region>.region.<zone>.`
//! with an A/AAAA record for the target (the QUIC address). The target's first label is the
//! region's name, which its certificate must carry (the transport checks it when dialling), so
//! DNS can point at a region but cannot make anyone else pass for it. Priority and weight are
//! not used: every region is a peer.
//!
//! Each lookup hands every peer found to the replication node, which dials the new ones (static
//! `peers` still work, and a peer listed both ways is dialled once). A failed lookup keeps the
//! peers already known.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

use crate::config::PeerConfig;

/// Errors of one discovery lookup.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot build the resolver: {0}")]
    Resolver(String),
    #[error("SRV lookup of {name} failed: {message}")]
    Lookup { name: String, message: String },
}

/// A stub resolver asking only `servers` (each with its own port), UDP first then TCP.
pub fn resolver(
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, DiscoveryError> {
    let name_servers = servers
        .iter()
        .map(|s| {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        })
        .collect();
    let mut builder = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], name_servers),
        TokioRuntimeProvider::default(),
    );
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = 1;
    // Only fully qualified names are asked; no search list, no hosts file.
    opts.ndots = 0;
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    builder
        .build()
        .map_err(|e| DiscoveryError::Resolver(e.to_string()))
}

/// The region a target `<region>.region.<zone>` names: its first label, when that is a valid
/// region name.
pub fn region_of_target(target: &Name) -> Option<String> {
    let first = target.iter().next()?;
    let label = std::str::from_utf8(first).ok()?.to_ascii_lowercase();
    crate::ids::is_valid_name(&label).then_some(label)
}

/// Look `name` up once: every peer its SRV records name (targets resolved to addresses; the
/// additional section's glue is used by the resolver's cache), sorted by region.
pub async fn lookup(
    resolver: &TokioResolver,
    name: &str,
) -> Result<Vec<PeerConfig>, DiscoveryError> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let failed = |e: &dyn std::fmt::Display| DiscoveryError::Lookup {
        name: fqdn.clone(),
        message: e.to_string(),
    };
    let srv = resolver
        .srv_lookup(fqdn.as_str())
        .await
        .map_err(|e| failed(&e))?;
    let mut peers = Vec::new();
    for record in srv.answers() {
        let RData::SRV(s) = &record.data else {
            continue;
        };
        let Some(region) = region_of_target(&s.target) else {
            tracing::warn!(target = %s.target, "SRV target does not start with a region name; ignored");
            continue;
        };
        // Glue first (the responder sends it), else an address lookup.
        let glue = srv.additionals().iter().find_map(|g| match &g.data {
            RData::A(a) if g.name == s.target => Some(std::net::IpAddr::V4(a.0)),
            RData::AAAA(a) if g.name == s.target => Some(std::net::IpAddr::V6(a.0)),
            _ => None,
        });
        let ip = match glue {
            Some(ip) => ip,
            None => match resolver.lookup_ip(s.target.clone()).await {
                Ok(ips) => match ips.iter().next() {
                    Some(ip) => ip,
                    None => continue,
                },
                Err(e) => {
                    tracing::warn!(target = %s.target, error = %e, "cannot resolve an SRV target");
                    continue;
                }
            },
        };
        peers.push(PeerConfig {
            region,
            addr: SocketAddr::new(ip, s.port),
        });
    }
    peers.sort_by(|a, b| a.region.cmp(&b.region));
    peers.dedup_by(|a, b| a.region == b.region);
    Ok(peers)
}

/// Look `name` up now and every `refresh`, calling `found` with every peer (this region's own
/// record skipped) until `found` returns false (the node is gone).
pub fn spawn(
    name: String,
    servers: Vec<SocketAddr>,
    refresh: Duration,
    own_region: String,
    mut found: impl FnMut(PeerConfig) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let resolver = match resolver(&servers, Duration::from_secs(2)) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "peer discovery disabled");
                return;
            }
        };
        let mut tick = tokio::time::interval(refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Fresh answers each round: the resolver's cache would hide new regions for a TTL.
            resolver.clear_cache();
            match lookup(&resolver, &name).await {
                Ok(peers) => {
                    for p in peers.into_iter().filter(|p| p.region != own_region) {
                        if !found(p) {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer discovery lookup failed; keeping known peers")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_the_first_label_of_the_target() {
        let n = Name::from_ascii("eu-west_1.region.geoscim.test.").unwrap();
        assert_eq!(region_of_target(&n).as_deref(), Some("eu-west_1"));
        let n = Name::from_ascii("EU.region.geoscim.test.").unwrap();
        assert_eq!(region_of_target(&n).as_deref(), Some("eu"));
        assert_eq!(region_of_target(&Name::root()), None);
    }
}

//! How idp-sim finds a region: the service (or tenant) name resolved at the given DNS servers,
//! the answer kept for its TTL and asked again when it expires or after a connection failure.
//!
//! Without ECS this is hickory-resolver (its cache honours the TTL). With `--ecs` it is
//! [`crate::dns::client`] (hickory-resolver cannot send ECS), with the same TTL rule here.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::TokioResolver;
use ipnet::IpNet;

/// Errors resolving the name.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("invalid name {0:?}")]
    Name(String),
    #[error("resolver: {0}")]
    Resolver(String),
    #[error("no address for {0}")]
    Empty(String),
    #[error("lookup failed: {0}")]
    Lookup(String),
}

enum Backend {
    /// Boxed: the resolver is large and the other variant small.
    Hickory(Box<TokioResolver>),
    Ecs {
        servers: Vec<SocketAddr>,
        subnet: IpNet,
        cache: Option<(Vec<IpAddr>, Instant)>,
    },
}

/// The name's resolver.
pub struct NameResolver {
    name: Name,
    backend: Backend,
    /// Lookups sent (cache misses), for the report.
    pub lookups: u64,
}

impl NameResolver {
    /// Resolve `name` at `servers`; with `ecs`, send it as the client subnet.
    pub fn new(
        name: &str,
        servers: &[SocketAddr],
        ecs: Option<IpNet>,
    ) -> Result<NameResolver, ResolveError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let name = Name::from_ascii(&fqdn).map_err(|_| ResolveError::Name(fqdn.clone()))?;
        let backend = match ecs {
            Some(subnet) => Backend::Ecs {
                servers: servers.to_vec(),
                subnet,
                cache: None,
            },
            None => Backend::Hickory(Box::new(
                crate::replication::discovery::resolver(servers, Duration::from_millis(800))
                    .map_err(|e| ResolveError::Resolver(e.to_string()))?,
            )),
        };
        Ok(NameResolver {
            name,
            backend,
            lookups: 0,
        })
    }

    /// The name's addresses (A), from the cache while the TTL lasts.
    pub async fn resolve(&mut self) -> Result<Vec<IpAddr>, ResolveError> {
        match &mut self.backend {
            Backend::Hickory(r) => {
                // The resolver answers from its cache until the records' TTL runs out.
                let l = r
                    .lookup(self.name.clone(), RecordType::A)
                    .await
                    .map_err(|e| ResolveError::Lookup(e.to_string()))?;
                let addrs: Vec<IpAddr> = l.iter_ips().collect();
                if addrs.is_empty() {
                    return Err(ResolveError::Empty(self.name.to_string()));
                }
                Ok(addrs)
            }
            Backend::Ecs {
                servers,
                subnet,
                cache,
            } => {
                if let Some((addrs, until)) = cache {
                    if Instant::now() < *until {
                        return Ok(addrs.clone());
                    }
                }
                self.lookups += 1;
                let mut last = String::from("no server");
                for s in servers.iter() {
                    match crate::dns::client::query(
                        *s,
                        &self.name,
                        RecordType::A,
                        Some((subnet.network(), subnet.prefix_len())),
                        Duration::from_millis(800),
                    )
                    .await
                    {
                        Ok(m) => {
                            let (addrs, ttl) = crate::dns::client::addresses(&m);
                            if addrs.is_empty() {
                                last = format!("{s}: {}", m.metadata.response_code);
                                continue;
                            }
                            *cache = Some((
                                addrs.clone(),
                                Instant::now() + Duration::from_secs(ttl.into()),
                            ));
                            return Ok(addrs);
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(ResolveError::Lookup(last))
            }
        }
    }

    /// Forget the cached answer (after a connection failure: the region may be gone).
    pub fn invalidate(&mut self) {
        match &mut self.backend {
            Backend::Hickory(r) => r.clear_cache(),
            Backend::Ecs { cache, .. } => *cache = None,
        }
    }
}

/// Addresses of an answer (hickory `Lookup`), A and AAAA.
trait IterIps {
    fn iter_ips(&self) -> Box<dyn Iterator<Item = IpAddr> + '_>;
}

impl IterIps for hickory_resolver::lookup::Lookup {
    fn iter_ips(&self) -> Box<dyn Iterator<Item = IpAddr> + '_> {
        use hickory_resolver::proto::rr::RData;
        Box::new(self.answers().iter().filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        }))
    }
}

//! Data source `geoscim_cluster`: what the cluster says about itself right now, per region
//! (health, replication lag, peers, digest of the marks, conflict count) and which region its
//! DNS answers for given client networks (ECS). With `wait_for` it polls (bounded by
//! `timeout_ms`) until the answers avoid the regions expected down, or until the cluster has
//! converged, and reports how long that took (`waited_ms`): the failover and convergence
//! figures of the runbook are these numbers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{DataSource, Diagnostics};

use crate::probe::{self, RegionHealth};
use crate::region::{default_binary, MemberValue};
use crate::schema::{attr, error_at, schema, secret, string_map, strings};

/// One region as the data source reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegionReport {
    pub up: Value<bool>,
    pub status: Value<String>,
    pub lag: Value<i64>,
    pub connected_peers: Value<i64>,
    pub diverged: Value<bool>,
    pub digest: Value<String>,
    pub conflicts: Value<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    pub cluster: Value<Vec<MemberValue>>,
    pub zone: Value<String>,
    pub service: Value<String>,
    pub binary: Value<String>,
    pub admin_token: Value<String>,
    pub client_subnets: Value<BTreeMap<String, String>>,
    pub expect_down: Value<Vec<String>>,
    pub wait_for: Value<String>,
    pub timeout_ms: Value<i64>,
    pub report_file: Value<String>,
    pub label: Value<String>,
    // Computed.
    pub regions: Value<BTreeMap<String, RegionReport>>,
    pub answers: Value<BTreeMap<String, String>>,
    pub up: Value<Vec<String>>,
    pub converged: Value<bool>,
    pub digests_equal: Value<bool>,
    pub max_lag: Value<i64>,
    pub waited_ms: Value<i64>,
}

/// One observation of the whole cluster.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub health: BTreeMap<String, RegionHealth>,
    pub conflicts: BTreeMap<String, Option<i64>>,
    /// Client network name -> the region answered (empty: no answer).
    pub answers: BTreeMap<String, String>,
}

/// The observation satisfies `wait_for`.
pub fn satisfied(o: &Observation, wait_for: &str, expect_down: &[String]) -> bool {
    match wait_for {
        "answers" => {
            let down_ok = o
                .health
                .iter()
                .all(|(name, h)| h.up != expect_down.contains(name));
            // An answer must name an up region of this view (an address outside it, e.g. a
            // region the view's responders cannot reach, does not count as moved).
            down_ok
                && o.answers
                    .values()
                    .all(|r| o.health.get(r).is_some_and(|h| h.up) && !expect_down.contains(r))
        }
        "converged" => probe::converged(&o.health),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(up: bool) -> RegionHealth {
        RegionHealth {
            up,
            ..Default::default()
        }
    }

    #[test]
    fn answers_wait_until_dns_avoids_the_down_region_and_it_is_down() {
        let mut o = Observation::default();
        o.health.insert("eu".into(), health(true));
        o.health.insert("us".into(), health(true));
        o.answers.insert("eu-client".into(), "eu".into());
        let down = vec!["eu".to_string()];
        assert!(!satisfied(&o, "answers", &down), "eu still up and answered");
        o.health.insert("eu".into(), health(false));
        assert!(
            !satisfied(&o, "answers", &down),
            "eu down but still answered"
        );
        o.answers.insert("eu-client".into(), "us".into());
        assert!(satisfied(&o, "answers", &down));
        o.answers.insert("eu-client".into(), String::new());
        assert!(!satisfied(&o, "answers", &down), "no answer at all");
        o.answers.insert("eu-client".into(), "10.231.1.2".into());
        assert!(
            !satisfied(&o, "answers", &down),
            "an address of no region in the view"
        );
        assert!(satisfied(&o, "none", &down));
    }
}

struct Target {
    name: String,
    http: SocketAddr,
    dns: SocketAddr,
}

async fn observe(
    targets: &[Target],
    binary: &std::path::Path,
    qname: &str,
    subnets: &BTreeMap<String, String>,
    admin_token: &str,
) -> Observation {
    let client = probe::client(Duration::from_millis(800));
    let mut o = Observation::default();
    for t in targets {
        o.health.insert(
            t.name.clone(),
            probe::summarise(probe::health(&client, t.http).await),
        );
        o.conflicts.insert(
            t.name.clone(),
            probe::conflicts(&client, t.http, admin_token).await,
        );
    }
    let by_ip: BTreeMap<String, String> = targets
        .iter()
        .map(|t| (t.http.ip().to_string(), t.name.clone()))
        .collect();
    for (label, subnet) in subnets {
        let mut answered = String::new();
        // The first responder that answers (a client's resolver tries the NS set in turn).
        for t in targets {
            if let Some(addrs) = probe::dns_answer(binary, t.dns, qname, Some(subnet)).await {
                answered = addrs
                    .first()
                    .map(|a| by_ip.get(a).cloned().unwrap_or_else(|| a.clone()))
                    .unwrap_or_default();
                break;
            }
        }
        o.answers.insert(label.clone(), answered);
    }
    o
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterDataSource;

/// The type of one `cluster` entry: the same objects `geoscim_region.cluster` takes (an object
/// type, not nested attributes, which tf-provider 0.2.2 declares invalidly).
fn member_type() -> T {
    T::Object(
        [
            ("name", T::String),
            ("http", T::String),
            ("quic", T::String),
            ("dns", T::String),
            ("lat", T::Number),
            ("lon", T::Number),
            ("serves", strings()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    )
}

#[async_trait]
impl DataSource for ClusterDataSource {
    type State<'a> = ClusterState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let report: std::collections::HashMap<String, T> = [
            ("up", T::Bool),
            ("status", T::String),
            ("lag", T::Number),
            ("connected_peers", T::Number),
            ("diverged", T::Bool),
            ("digest", T::String),
            ("conflicts", T::Number),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Some(schema(
            "Health, replication lag, digests and conflict counts of every region, and which region DNS answers per client network.",
            vec![
                ("cluster", attr(T::List(Box::new(member_type())), C::Required, "the regions (the same list the regions were given)")),
                ("zone", attr(T::String, C::Optional, "DNS zone (default geoscim.test)")),
                ("service", attr(T::String, C::Optional, "first label of the service name (default scim)")),
                ("binary", attr(T::String, C::Optional, "geoscim binary for DNS questions (default: next to the provider)")),
                ("admin_token", secret(T::String, C::Optional, "an admin token: conflict counts need it")),
                ("client_subnets", attr(string_map(), C::Optional, "label -> client network (CIDR), sent as ECS")),
                ("expect_down", attr(strings(), C::Optional, "regions that should be down (for wait_for = answers)")),
                ("wait_for", attr(T::String, C::Optional, "none (default), answers (DNS avoids expect_down and they are down, the others up) or converged")),
                ("timeout_ms", attr(T::Number, C::Optional, "how long wait_for polls (default 60000); then the last observation is reported")),
                ("report_file", attr(T::String, C::Optional, "append one JSON line per read here (label, wait_for, waited_ms, answers, per-region health): the stack's measured figures")),
                ("label", attr(T::String, C::Optional, "the label of this read in report_file")),
                ("regions", attr(T::Map(Box::new(T::Object(report))), C::Computed, "per region: up, status, lag, connected_peers, diverged, digest, conflicts (-1: unknown)")),
                ("answers", attr(string_map(), C::Computed, "client label -> region answered (empty: no answer)")),
                ("up", attr(strings(), C::Computed, "regions whose /health is 200")),
                ("converged", attr(T::Bool, C::Computed, "every region up, caught up, connected, not diverged, equal digests")),
                ("digests_equal", attr(T::Bool, C::Computed, "every region that is up holds the same changes")),
                ("max_lag", attr(T::Number, C::Computed, "largest lag of any region that is up")),
                ("waited_ms", attr(T::Number, C::Computed, "how long wait_for took (the failover or convergence time)")),
            ],
        ))
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::State<'a>> {
        let mut state = config;
        let mut targets = vec![];
        for (i, m) in state
            .cluster
            .as_ref_option()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = m.name.as_ref_option().cloned().unwrap_or_default();
            let parse = |v: &Value<String>| -> Option<SocketAddr> {
                v.as_ref_option().and_then(|a| a.parse().ok())
            };
            let (Some(http), Some(dns)) = (parse(&m.http), parse(&m.dns)) else {
                error_at(
                    diags,
                    "cluster",
                    "invalid address",
                    format!("cluster[{i}]: http and dns must be ip:port"),
                );
                return None;
            };
            targets.push(Target { name, http, dns });
        }
        let wait_for = state
            .wait_for
            .as_ref_option()
            .cloned()
            .unwrap_or_else(|| "none".into());
        if !["none", "answers", "converged"].contains(&wait_for.as_str()) {
            error_at(
                diags,
                "wait_for",
                "invalid wait_for",
                format!("{wait_for:?}: use \"none\", \"answers\" or \"converged\""),
            );
            return None;
        }
        let expect_down = state
            .expect_down
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let subnets = state
            .client_subnets
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let qname = format!(
            "{}.{}",
            state
                .service
                .as_ref_option()
                .cloned()
                .unwrap_or_else(|| "scim".into()),
            state
                .zone
                .as_ref_option()
                .cloned()
                .unwrap_or_else(|| "geoscim.test".into())
        );
        let binary = state
            .binary
            .as_ref_option()
            .map(PathBuf::from)
            .unwrap_or_else(default_binary);
        let admin = state
            .admin_token
            .as_ref_option()
            .cloned()
            .unwrap_or_default();
        let timeout = Duration::from_millis(
            state
                .timeout_ms
                .as_ref_option()
                .copied()
                .unwrap_or(60_000)
                .max(0) as u64,
        );
        let start = Instant::now();
        let mut o;
        loop {
            o = observe(&targets, &binary, &qname, &subnets, &admin).await;
            if satisfied(&o, &wait_for, &expect_down) || start.elapsed() >= timeout {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let up: Vec<&RegionHealth> = o.health.values().filter(|h| h.up).collect();
        state.digests_equal = Value::Value(up.windows(2).all(|w| w[0].digest == w[1].digest));
        state.max_lag = Value::Value(up.iter().map(|h| h.lag).max().unwrap_or(0));
        state.converged = Value::Value(probe::converged(&o.health));
        state.up = Value::Value(
            o.health
                .iter()
                .filter(|(_, h)| h.up)
                .map(|(n, _)| n.clone())
                .collect(),
        );
        state.regions = Value::Value(
            o.health
                .iter()
                .map(|(n, h)| {
                    (
                        n.clone(),
                        RegionReport {
                            up: Value::Value(h.up),
                            status: Value::Value(h.status.clone()),
                            lag: Value::Value(h.lag),
                            connected_peers: Value::Value(h.connected_peers),
                            diverged: Value::Value(h.diverged),
                            digest: Value::Value(h.digest.clone()),
                            conflicts: Value::Value(
                                o.conflicts.get(n).copied().flatten().unwrap_or(-1),
                            ),
                        },
                    )
                })
                .collect(),
        );
        state.answers = Value::Value(o.answers.clone());
        state.waited_ms = Value::Value(start.elapsed().as_millis() as i64);
        if let Some(path) = state.report_file.as_ref_option().filter(|p| !p.is_empty()) {
            let line = serde_json::json!({
                "label": state.label.as_ref_option(),
                "wait_for": wait_for,
                "satisfied": satisfied(&o, &wait_for, &expect_down),
                "waited_ms": start.elapsed().as_millis() as u64,
                "expect_down": expect_down,
                "answers": o.answers,
                "converged": probe::converged(&o.health),
                "regions": o.health.iter().map(|(n, h)| (n.clone(), serde_json::json!({
                    "up": h.up, "status": h.status, "lag": h.lag, "digest": &h.digest[..12.min(h.digest.len())],
                }))).collect::<serde_json::Map<_, _>>(),
            });
            use std::io::Write;
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                diags.root_warning("report_file not written", format!("{path}: {e}"));
            }
        }
        Some(state)
    }
}

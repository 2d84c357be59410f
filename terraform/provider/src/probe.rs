//! What a running cluster says about itself, read from outside: `/health` over HTTP, the admin
//! API's conflict log, and the responders' answers (asked with `geoscim dns-query`, which can
//! send an EDNS Client Subnet; hickory-resolver cannot). The summaries are pure functions of
//! the answers, so they are tested without a cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// What one region's `/health` says, boiled down to what an SRE watches.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegionHealth {
    /// `/health` answered 200.
    pub up: bool,
    /// `ok`, `unavailable` (503 with reasons), or `unreachable` (no answer).
    pub status: String,
    /// The most changes any peer still lacks of what this region holds (`behind_changes`).
    pub lag: i64,
    /// Peers this region has a connection to.
    pub connected_peers: i64,
    /// Peers listed.
    pub peers: i64,
    /// A digest comparison with some peer found different documents at the same marks.
    pub diverged: bool,
    /// SHA-256 of the region's high-water marks (`replication.hwm`): equal digests mean the
    /// regions hold the same changes.
    pub digest: String,
    /// Regions this region's responder does not answer (its prober sees them down), sorted.
    pub dns_down: Vec<String>,
}

/// Summarise a `/health` answer (`None`: no answer at all).
pub fn summarise(answer: Option<(u16, Value)>) -> RegionHealth {
    let Some((code, body)) = answer else {
        return RegionHealth {
            status: "unreachable".into(),
            ..Default::default()
        };
    };
    let rep = &body["replication"];
    let peers = rep["peers"].as_array().cloned().unwrap_or_default();
    let hwm = canonical(&rep["hwm"]);
    RegionHealth {
        up: code == 200,
        status: body["status"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("http {code}")),
        lag: peers
            .iter()
            .filter_map(|p| p["behind_changes"].as_i64())
            .max()
            .unwrap_or(0),
        connected_peers: peers
            .iter()
            .filter(|p| p["connected"].as_bool() == Some(true))
            .count() as i64,
        peers: peers.len() as i64,
        diverged: peers.iter().any(|p| p["diverged"].as_bool() == Some(true)),
        digest: hex::encode(Sha256::digest(hwm.as_bytes())),
        dns_down: {
            let mut down: Vec<String> = body["dns"]["regions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["up"].as_bool() == Some(false))
                .filter_map(|r| r["region"].as_str().map(str::to_string))
                .collect();
            down.sort();
            down
        },
    }
}

/// JSON with object keys sorted, so equal values give equal text.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// The regions are converged: every one listed is up, connected to all its peers, lacks
/// nothing, has not diverged, all hold the same changes, and every responder answers every
/// region again (a region that just returned is answered once its rise threshold has passed).
pub fn converged(regions: &BTreeMap<String, RegionHealth>) -> bool {
    let up: Vec<&RegionHealth> = regions.values().filter(|h| h.up).collect();
    !up.is_empty()
        && up.len() == regions.len()
        && up.iter().all(|h| {
            h.lag == 0 && !h.diverged && h.connected_peers == h.peers && h.dns_down.is_empty()
        })
        && up.windows(2).all(|w| w[0].digest == w[1].digest)
}

/// GET `http://<addr>/health`: the status code and JSON body, or `None` without an answer.
pub async fn health(client: &reqwest::Client, addr: SocketAddr) -> Option<(u16, Value)> {
    let r = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    Some((code, body))
}

/// The conflict count of a region's admin API (`None` without an answer or a token).
pub async fn conflicts(
    client: &reqwest::Client,
    addr: SocketAddr,
    admin_token: &str,
) -> Option<i64> {
    if admin_token.is_empty() {
        return None;
    }
    let r = client
        .get(format!("http://{addr}/admin/v1/conflicts?count=1"))
        .bearer_auth(admin_token)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Value>().await.ok()?["totalResults"].as_i64()
}

/// A client for the probes: short timeouts (a hung region must read as down, not hang the plan).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .expect("a plain HTTP client builds")
}

/// Ask the responder at `server` for `name` (optionally with ECS `subnet`) through the
/// `geoscim dns-query` command: the answered addresses, or `None` when it did not answer.
pub async fn dns_answer(
    binary: &Path,
    server: SocketAddr,
    name: &str,
    subnet: Option<&str>,
) -> Option<Vec<String>> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["dns-query", "--json", "--name", name, "--server"])
        .arg(server.to_string())
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(s) = subnet {
        cmd.args(["--subnet", s]);
    }
    let out = tokio::time::timeout(Duration::from_secs(5), cmd.output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["addrs"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(hwm: Value, peers: Value) -> Option<(u16, Value)> {
        Some((
            200,
            json!({"status": "ok", "replication": {"hwm": hwm, "peers": peers}}),
        ))
    }

    #[test]
    fn a_health_answer_boils_down_to_lag_peers_and_digest() {
        let h = summarise(body(
            json!({"eu": 5, "us": 3}),
            json!([{"peer": "us", "connected": true, "behind_changes": 2},
                   {"peer": "ap", "connected": false, "behind_changes": 7, "diverged": false}]),
        ));
        assert!(h.up);
        assert_eq!((h.lag, h.connected_peers, h.peers), (7, 1, 2));
        assert!(!h.diverged);
        assert!(h.dns_down.is_empty());
        let seen = summarise(Some((
            200,
            json!({"dns": {"regions": [
            {"region": "us", "up": false}, {"region": "eu", "up": true}]}}),
        )));
        assert_eq!(seen.dns_down, ["us"]);
        // Key order does not change the digest.
        let same = summarise(body(json!({"us": 3, "eu": 5}), json!([])));
        assert_eq!(h.digest, same.digest);
        assert_ne!(
            h.digest,
            summarise(body(json!({"us": 4, "eu": 5}), json!([]))).digest
        );
    }

    #[test]
    fn no_answer_is_unreachable_and_a_503_is_down() {
        assert_eq!(summarise(None).status, "unreachable");
        assert!(!summarise(None).up);
        let h = summarise(Some((503, json!({"status": "unavailable"}))));
        assert!(!h.up);
        assert_eq!(h.status, "unavailable");
    }

    #[test]
    fn converged_needs_every_region_up_caught_up_and_equal() {
        let peers = json!([{"connected": true, "behind_changes": 0}]);
        let ok = summarise(body(json!({"eu": 5}), peers.clone()));
        let mut m: BTreeMap<String, RegionHealth> = [
            ("eu".to_string(), ok.clone()),
            ("us".to_string(), ok.clone()),
        ]
        .into();
        assert!(converged(&m));
        let behind = summarise(body(
            json!({"eu": 5}),
            json!([{"connected": true, "behind_changes": 1}]),
        ));
        m.insert("us".into(), behind);
        assert!(!converged(&m));
        m.insert("us".into(), summarise(body(json!({"eu": 4}), peers)));
        assert!(!converged(&m), "different marks");
        m.insert("us".into(), summarise(None));
        assert!(!converged(&m), "a region down");
        let mut unanswered = ok.clone();
        unanswered.dns_down = vec!["eu".into()];
        m.insert("us".into(), unanswered);
        assert!(!converged(&m), "a responder still not answering a region");
        m.insert("us".into(), ok);
        assert!(converged(&m));
    }
}

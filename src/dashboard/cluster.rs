//! The cluster view: every region this one knows, with its health, its role in DNS answers,
//! replication lag per peer, last contact, digest state, version and uptime.
//!
//! This region sees the others three ways, and shows each for what it is: their `/health`
//! (read from the server, `[[dashboard.regions]]` or `[[dns.regions]].health_url`), the DNS
//! prober's verdict when a responder runs here, and the replication connection. [`view`] is
//! pure over those readings; [`probe`] does the reading.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

/// What reading another region's `/health` gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// It answered: status code and JSON body (Null when not JSON).
    Answered(u16, Value),
    /// No answer (refused, timed out): why.
    Failed(String),
}

/// Read every region's `/health` at once, each bounded by `timeout`.
pub async fn probe(
    client: &reqwest::Client,
    urls: &BTreeMap<String, String>,
    timeout: Duration,
) -> BTreeMap<String, Probe> {
    let reads = urls.iter().map(|(name, url)| async move {
        let read = async {
            let r = client.get(url).timeout(timeout).send().await?;
            let status = r.status().as_u16();
            let body = r.json::<Value>().await.unwrap_or(Value::Null);
            Ok::<_, reqwest::Error>(Probe::Answered(status, body))
        };
        let probe = match read.await {
            Ok(p) => p,
            Err(e) if e.is_timeout() => {
                Probe::Failed(format!("no answer within {} ms", timeout.as_millis()))
            }
            Err(e) => Probe::Failed(format!("unreachable: {e}")),
        };
        (name.clone(), probe)
    });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect()
}

/// The `/health` URL of every other region: `[[dashboard.regions]]` first, else the DNS table's.
pub fn health_urls(config: &crate::config::Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(dns) = &config.dns {
        for r in &dns.regions {
            out.insert(r.name.clone(), r.health_url.clone());
        }
    }
    for r in &config.dashboard.regions {
        out.insert(r.name.clone(), format!("{}/health", r.url));
    }
    out.remove(&config.region);
    out
}

/// This region's own readings.
pub struct Own<'a> {
    pub region: &'a str,
    pub version: &'a str,
    pub uptime_secs: u64,
    /// Its own `/health` answer (status, body).
    pub health: (u16, Value),
}

fn digest_state(p: &Value) -> &'static str {
    if p["diverged"].as_bool() == Some(true) {
        "differs"
    } else if p["digests_matched"].as_u64().unwrap_or(0) > 0 {
        "matches"
    } else {
        "not compared yet"
    }
}

/// The cluster as this region sees it: `own`, the replication status (`node`'s JSON, Null when
/// it does not replicate), the DNS status (`dns::View::status`, Null without a responder) and
/// the other regions' `/health` readings.
pub fn view(
    own: &Own,
    replication: &Value,
    dns: &Value,
    probes: &BTreeMap<String, Probe>,
) -> Value {
    let peers: BTreeMap<&str, &Value> = replication["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["peer"].as_str()?, p)))
        .collect();
    let dns_regions: BTreeMap<&str, &Value> = dns["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["region"].as_str()?, r)))
        .collect();
    let mut names: BTreeSet<&str> = BTreeSet::from([own.region]);
    names.extend(peers.keys());
    names.extend(dns_regions.keys());
    names.extend(probes.keys().map(String::as_str));
    let regions: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let is_self = name == own.region;
            let (health, reason, version, uptime) = if is_self {
                let (code, body) = &own.health;
                let reasons = body["reasons"].clone();
                (
                    if *code == 200 { "healthy" } else { "unhealthy" },
                    if *code == 200 {
                        "this region: storage and API probes pass".to_string()
                    } else {
                        format!("this region: {reasons}")
                    },
                    Value::from(own.version),
                    Value::from(own.uptime_secs),
                )
            } else {
                match probes.get(name) {
                    Some(Probe::Answered(200, body)) => (
                        "healthy",
                        "/health answered 200".to_string(),
                        body["version"].clone(),
                        body["uptime_secs"].clone(),
                    ),
                    Some(Probe::Answered(code, body)) => (
                        "unhealthy",
                        format!("/health answered {code}: {}", body["reasons"]),
                        body["version"].clone(),
                        body["uptime_secs"].clone(),
                    ),
                    Some(Probe::Failed(why)) => {
                        ("unreachable", why.clone(), Value::Null, Value::Null)
                    }
                    None => match peers.get(name) {
                        Some(p) if p["connected"].as_bool() == Some(true) => (
                            "healthy",
                            "replication connected (no /health URL configured)".to_string(),
                            Value::Null,
                            Value::Null,
                        ),
                        Some(_) => (
                            "unreachable",
                            "replication disconnected (no /health URL configured)".to_string(),
                            Value::Null,
                            Value::Null,
                        ),
                        None => (
                            "unknown",
                            "no /health URL configured".to_string(),
                            Value::Null,
                            Value::Null,
                        ),
                    },
                }
            };
            let dns = dns_regions.get(name).map(|r| {
                json!({
                    "answered": r["up"].as_bool() == Some(true),
                    "lastProbe": r["last_probe"], "sinceMs": r["since_ms"],
                })
            });
            let replication = peers.get(name).map(|p| {
                json!({
                    "connected": p["connected"].as_bool() == Some(true),
                    "behindChanges": p["behind_changes"].as_u64().unwrap_or(0),
                    "oldestUnackedSecs": p["oldest_unacked_ms"].as_f64().map(|ms| ms / 1000.0),
                    "lastContactSecs": p["last_contact_ms"].as_f64().map(|ms| ms / 1000.0),
                    "digest": digest_state(p),
                    "digestsCompared": p["digests_compared"], "digestsMatched": p["digests_matched"],
                })
            });
            json!({
                "name": name, "self": is_self, "health": health, "reason": reason,
                "version": version, "uptimeSecs": uptime, "dns": dns, "replication": replication,
            })
        })
        .collect();
    json!({
        "region": own.region,
        "marks": replication["hwm"],
        "regions": regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(code: u16) -> Own<'static> {
        Own {
            region: "eu",
            version: "0.1.0",
            uptime_secs: 5,
            health: (code, json!({"reasons": ["storage probe failed"]})),
        }
    }

    #[test]
    fn every_region_shows_health_lag_contact_and_digest() {
        let replication = json!({"hwm": {"eu": 3}, "peers": [
            {"peer": "us", "connected": true, "behind_changes": 2, "oldest_unacked_ms": 1500,
             "last_contact_ms": 200, "diverged": false, "digests_matched": 1, "digests_compared": 1},
            {"peer": "ap", "connected": false, "behind_changes": 0, "last_contact_ms": null}]});
        let dns = json!({"regions": [{"region": "us", "up": true, "last_probe": "ok"}]});
        let probes = BTreeMap::from([
            (
                "us".to_string(),
                Probe::Answered(200, json!({"version": "0.1.0", "uptime_secs": 9})),
            ),
            (
                "ap".to_string(),
                Probe::Failed("no answer within 1000 ms".into()),
            ),
        ]);
        let v = view(&own(200), &replication, &dns, &probes);
        let by: BTreeMap<&str, &Value> = v["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].as_str().unwrap(), r))
            .collect();
        assert_eq!(by["eu"]["health"], "healthy");
        assert_eq!(by["eu"]["self"], true);
        assert_eq!(by["us"]["health"], "healthy");
        assert_eq!(by["us"]["uptimeSecs"], 9);
        assert_eq!(by["us"]["replication"]["behindChanges"], 2);
        assert_eq!(by["us"]["replication"]["oldestUnackedSecs"], 1.5);
        assert_eq!(by["us"]["replication"]["lastContactSecs"], 0.2);
        assert_eq!(by["us"]["replication"]["digest"], "matches");
        assert_eq!(by["us"]["dns"]["answered"], true);
        assert_eq!(by["ap"]["health"], "unreachable");
        assert_eq!(by["ap"]["replication"]["connected"], false);
        assert_eq!(by["ap"]["dns"], Value::Null);
    }

    #[test]
    fn an_unhealthy_self_and_peers_without_urls_say_so() {
        let replication = json!({"peers": [{"peer": "us", "connected": true}]});
        let v = view(&own(503), &replication, &Value::Null, &BTreeMap::new());
        assert_eq!(v["regions"][0]["name"], "eu");
        assert_eq!(v["regions"][0]["health"], "unhealthy");
        assert!(v["regions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("storage probe"));
        assert_eq!(v["regions"][1]["health"], "healthy");
        assert!(v["regions"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("no /health URL"));
    }
}

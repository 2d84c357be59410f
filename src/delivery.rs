//! The runtime of the event feeds: push delivery to a tenant's receiver (RFC 8935) and the
//! bound on what a feed keeps pending (`events.max_pending`). The feeds themselves are in
//! `store`; the SETs in `events`; polls in `api::events`.
//!
//! One task per tenant with events. A pushing task sends the oldest pending SET, one at a
//! time and in feed order, and removes it once the receiver answers 2xx (RFC 8935 expects
//! 202). A 400 `invalid_request` means this SET cannot be taken: it is removed and counted as
//! refused. Every other failure (no connection, a timeout, 5xx, 401/403, 429, or a 400 naming
//! a key, issuer or audience the receiver does not accept, which a fix on either side
//! cures) keeps the SET and retries after a backoff that doubles from `events.push_backoff_ms`
//! up to `events.push_backoff_max_ms`, with jitter. Nothing is lost across a restart: the
//! feed is in RocksDB, and a SET whose 202 was lost in a crash is sent again (same `jti`).
//!
//! Every task also trims its feed to `max_pending` once a second.

use std::sync::Arc;
use std::time::Duration;

use crate::api::metrics::{DeliveryLabels, EventMetrics};
use crate::api::AppState;
use crate::config::{Delivery, TenantEventsConfig};

/// How often a feed is trimmed to its bound (and an idle pusher looks again).
const TICK: Duration = Duration::from_secs(1);

/// Errors setting up delivery (at start: a file the config names cannot be read).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(
        "invalid config key `tenants.{tenant}.events.push_authorization_file`: {path}: {source}"
    )]
    Authorization {
        tenant: String,
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config key `tenants.{tenant}.events.push_ca`: {source}")]
    Ca {
        tenant: String,
        source: crate::tls::client::CaError,
    },
    #[error("cannot build the push client of tenant {tenant}: {source}")]
    Client {
        tenant: String,
        source: reqwest::Error,
    },
}

/// One tenant's pusher: where, with what, how.
struct Pusher {
    tenant: String,
    url: String,
    authorization: Option<String>,
    client: reqwest::Client,
}

/// What one push came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// The receiver cannot take this SET (400 `invalid_request`): removed, not resent.
    Refused(String),
    /// Try again later.
    Failed(String),
}

/// Read the files the events config names and build the push clients: before serving, so a
/// wrong file stops the start naming the key.
pub fn prepare(state: &AppState) -> Result<Vec<Task>, DeliveryError> {
    let mut tasks = Vec::new();
    for (tenant, t) in &state.config.tenants {
        let Some(events) = &t.events else { continue };
        // Every series from zero, so rates and alerts have a series before the first event.
        let m = &state.metrics.events;
        let labels = EventMetrics::tenant(tenant);
        for via in ["poll", "push"] {
            let _ = m.delivered.get_or_create(&DeliveryLabels {
                tenant: tenant.clone(),
                via: via.into(),
            });
        }
        for family in [&m.acknowledged, &m.refused, &m.dropped, &m.push_failures] {
            let _ = family.get_or_create(&labels);
        }
        let _ = m.pending.get_or_create(&labels);
        let pusher = match events.delivery {
            Delivery::Poll => None,
            Delivery::Push => Some(pusher(state, tenant, events)?),
        };
        tasks.push(Task {
            tenant: tenant.clone(),
            max_pending: events.max_pending,
            pusher,
        });
    }
    Ok(tasks)
}

fn pusher(
    state: &AppState,
    tenant: &str,
    events: &TenantEventsConfig,
) -> Result<Pusher, DeliveryError> {
    let authorization = match &events.push_authorization_file {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| DeliveryError::Authorization {
                    tenant: tenant.to_string(),
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
    };
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(state.config.events.push_timeout_ms))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &events.push_ca {
        let roots = crate::tls::client::read_ca_file(ca, "push_ca").map_err(|source| {
            DeliveryError::Ca {
                tenant: tenant.to_string(),
                source,
            }
        })?;
        builder = crate::tls::client::trusting(builder, &roots);
    }
    let client = builder.build().map_err(|source| DeliveryError::Client {
        tenant: tenant.to_string(),
        source,
    })?;
    Ok(Pusher {
        tenant: tenant.to_string(),
        url: events.push_url.clone().unwrap_or_default(),
        authorization,
        client,
    })
}

/// One tenant's delivery task, ready to run.
pub struct Task {
    tenant: String,
    max_pending: u64,
    pusher: Option<Pusher>,
}

/// Run every task until the returned handles are aborted (at shutdown).
pub fn spawn(state: Arc<AppState>, tasks: Vec<Task>) -> Vec<tokio::task::JoinHandle<()>> {
    tasks
        .into_iter()
        .map(|task| tokio::spawn(run(state.clone(), task)))
        .collect()
}

async fn run(state: Arc<AppState>, task: Task) {
    let labels = EventMetrics::tenant(&task.tenant);
    let mut changes = state.store.event_changes();
    let mut failures: u32 = 0;
    let mut last_trim = tokio::time::Instant::now() - TICK;
    loop {
        if last_trim.elapsed() >= TICK {
            trim(&state, &task, &labels).await;
            last_trim = tokio::time::Instant::now();
        }
        let Some(pusher) = &task.pusher else {
            let _ = tokio::time::timeout(TICK, changes.changed()).await;
            continue;
        };
        let store = state.store.clone();
        let tenant = task.tenant.clone();
        let next = tokio::task::spawn_blocking(move || store.pending_events(&tenant, 1)).await;
        let event = match next {
            Ok(Ok((mut events, _))) => events.pop(),
            Ok(Err(e)) => {
                tracing::error!(tenant = %task.tenant, error = %e, "reading the event feed failed");
                None
            }
            Err(_) => None,
        };
        let Some(event) = event else {
            let _ = tokio::time::timeout(TICK, changes.changed()).await;
            continue;
        };
        let outcome = match crate::api::events::compact_set(&state, &task.tenant, &event) {
            Ok(set) => push(pusher, &set).await,
            Err(e) => Outcome::Failed(format!("signing: {}", e.detail())),
        };
        let via = DeliveryLabels {
            tenant: task.tenant.clone(),
            via: "push".into(),
        };
        let metrics = &state.metrics.events;
        match outcome {
            Outcome::Delivered | Outcome::Refused(_) => {
                metrics.delivered.get_or_create(&via).inc();
                if let Outcome::Refused(why) = &outcome {
                    tracing::warn!(tenant = %task.tenant, jti = %event.jti, reason = %why,
                        "the event receiver refused a SET; it is not sent again");
                    metrics.refused.get_or_create(&labels).inc();
                } else {
                    metrics.acknowledged.get_or_create(&labels).inc();
                }
                failures = 0;
                let store = state.store.clone();
                let (tenant, jti) = (task.tenant.clone(), vec![event.jti.clone()]);
                let removed =
                    tokio::task::spawn_blocking(move || store.ack_events(&tenant, &jti)).await;
                if !matches!(removed, Ok(Ok(_))) {
                    tracing::error!(tenant = %task.tenant, jti = %event.jti,
                        "removing a delivered SET failed; it will be sent again");
                    tokio::time::sleep(TICK).await;
                }
            }
            Outcome::Failed(why) => {
                metrics.push_failures.get_or_create(&labels).inc();
                let wait = backoff(&state.config.events, failures, rand::random::<f64>());
                failures = failures.saturating_add(1);
                tracing::warn!(tenant = %task.tenant, jti = %event.jti, reason = %why,
                    retry_in_ms = wait.as_millis() as u64, "pushing a SET failed; will retry");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Trim the feed to its bound; count and log what had to go.
async fn trim(state: &Arc<AppState>, task: &Task, labels: &crate::api::metrics::TenantLabels) {
    let store = state.store.clone();
    let (tenant, max) = (task.tenant.clone(), task.max_pending);
    let result = tokio::task::spawn_blocking(move || {
        let dropped = store.trim_events(&tenant, max)?;
        Ok::<_, crate::store::StoreError>((dropped, store.pending_event_count(&tenant)?))
    })
    .await;
    if let Ok(Ok((dropped, pending))) = result {
        let metrics = &state.metrics.events;
        metrics.pending.get_or_create(labels).set(pending as i64);
        if !dropped.is_empty() {
            let offboardings = dropped.iter().filter(|e| e.intent.is_offboarding()).count();
            tracing::warn!(
                tenant = %task.tenant, dropped = dropped.len(), offboardings,
                first = %dropped[0].jti, max_pending = task.max_pending,
                "the event feed is full: its oldest unacknowledged events were dropped"
            );
            metrics
                .dropped
                .get_or_create(labels)
                .inc_by(dropped.len() as u64);
        }
    }
}

/// The wait after `failures` failed pushes in a row: the base doubled per failure, at most the
/// maximum, times a jitter factor in [0.5, 1) from `unit` (a number in [0, 1)).
fn backoff(cfg: &crate::config::EventsConfig, failures: u32, unit: f64) -> Duration {
    let full = cfg
        .push_backoff_ms
        .saturating_mul(1u64 << failures.min(30))
        .min(cfg.push_backoff_max_ms);
    Duration::from_millis(((full as f64) * (0.5 + unit.clamp(0.0, 1.0) / 2.0)) as u64)
}

/// Push one SET (RFC 8935 §2).
async fn push(pusher: &Pusher, set: &str) -> Outcome {
    let mut request = pusher
        .client
        .post(&pusher.url)
        .header(
            reqwest::header::CONTENT_TYPE,
            crate::events::set::SET_MEDIA_TYPE,
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(set.to_string());
    if let Some(auth) = &pusher.authorization {
        request = request.header(reqwest::header::AUTHORIZATION, auth);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("{}: {e}", pusher.url)),
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    classify(status.as_u16(), &body, &pusher.tenant)
}

/// What a receiver's error answer means for the SET.
fn classify(status: u16, body: &serde_json::Value, tenant: &str) -> Outcome {
    let err = body["err"].as_str().unwrap_or_default();
    let description = body["description"].as_str().unwrap_or_default();
    let why = format!("{status} {err} {description}").trim().to_string();
    if status == 400 && err == "invalid_request" {
        Outcome::Refused(why)
    } else {
        if status == 400 || status == 401 || status == 403 {
            tracing::error!(tenant, answer = %why,
                "the event receiver refuses this region's SETs: check its key, issuer, \
                 audience or the push authorization");
        }
        Outcome::Failed(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_an_invalid_request_drops_a_set_and_everything_else_is_retried() {
        let refused = classify(400, &json!({"err": "invalid_request"}), "t");
        assert!(matches!(refused, Outcome::Refused(_)));
        for (status, body) in [
            (400, json!({"err": "invalid_key"})),
            (400, json!({"err": "invalid_audience"})),
            (401, json!({"err": "authentication_failed"})),
            (403, json!({})),
            (429, json!({})),
            (503, json!({})),
        ] {
            assert!(
                matches!(classify(status, &body, "t"), Outcome::Failed(_)),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_with_jitter() {
        let cfg = crate::config::EventsConfig {
            push_backoff_ms: 100,
            push_backoff_max_ms: 1000,
            ..Default::default()
        };
        assert_eq!(backoff(&cfg, 0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(&cfg, 2, 0.999_999), Duration::from_millis(399));
        assert_eq!(backoff(&cfg, 10, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(&cfg, 40, 0.0), Duration::from_millis(500));
    }
}

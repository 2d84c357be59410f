//! The admin API's live views, for the dashboard and for operators' scripts alike:
//!
//! - `GET /admin/v1/cluster`: every region with health, DNS role, replication lag per peer,
//!   last contact, digest state, version, uptime (`dashboard::cluster`);
//! - `GET /admin/v1/offboardings/pending`: deactivations and deletes some region holds that
//!   not every region has acknowledged yet, oldest first (`replication::pending` over the
//!   store's records at their log positions);
//! - `GET /admin/v1/conflicts/stream?tenant=&rule=&resource=&since=&until=`: the conflict log
//!   as server-sent events, one `conflict` event per record as it is indexed (`reset` when the
//!   stream fell behind and the client should read `/admin/v1/conflicts` again);
//! - `GET /admin/v1/resources/{type}/{id}?tenant=`: a resource's current JSON and ETag;
//! - `GET /admin/v1/resources/{type}?tenant=&q=`: find resources by id or userName/displayName;
//! - `GET /admin/v1/samples`: the charts' samples of the last hour.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::admin::{conflict_query, json_response, params, resource_kind};
use super::render::{render, Members};
use super::{blocking, ApiError, AppState};
use crate::conflict::{Conflict, ConflictQuery};
use crate::dashboard::cluster;
use crate::scim::ScimError;
use crate::store::StoreError;

/// How often a stream looks at the feed.
const STREAM_POLL: Duration = Duration::from_millis(250);

fn replication_status(state: &AppState) -> Value {
    state
        .replication
        .get()
        .and_then(|s| s.lock().ok().map(|v| v.clone()))
        .unwrap_or(Value::Null)
}

/// `GET /admin/v1/cluster`.
pub async fn cluster_view(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let urls = cluster::health_urls(&state.config);
    let timeout = Duration::from_millis(state.config.dashboard.probe_timeout_ms);
    let (own_health, probes) = tokio::join!(
        super::health_reading(&state),
        cluster::probe(&state.dashboard.client, &urls, timeout)
    );
    let own = cluster::Own {
        region: state.store.region(),
        version: super::VERSION,
        uptime_secs: state.dashboard.started.elapsed().as_secs(),
        health: (own_health.0.as_u16(), own_health.1),
    };
    let dns = state.dns.get().map(|d| d.status()).unwrap_or(Value::Null);
    Ok(json_response(&cluster::view(
        &own,
        &replication_status(&state),
        &dns,
        &probes,
    )))
}

fn now_millis() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `GET /admin/v1/offboardings/pending?count=`: oldest first, at most `count` (capped by
/// `scim.max_page_size`).
pub async fn pending_offboardings(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let max = state.config.scim.max_page_size;
    let mut count = state.config.scim.default_page_size.min(max);
    for (name, value) in params(raw, &["count"])? {
        let n = crate::scim::list::parse_int_text(&name, &value)?;
        count = crate::scim::list::page_size(n, max);
    }
    // Records not yet known to be everywhere stay few (they are collected once every region
    // has them); the scan is bounded all the same.
    let scan = max.saturating_mul(10).max(1000);
    let (records, truncated) = blocking(&state, move |store| store.offboardings(scan)).await?;
    let peers = crate::replication::pending::reported_marks(&replication_status(&state));
    let mut list = crate::replication::pending::pending(records, &peers, now_millis());
    let total = list.len();
    list.truncate(count);
    Ok(json_response(&json!({
        "totalResults": total,
        "itemsPerPage": list.len(),
        "truncated": truncated,
        "Resources": list,
    })))
}

/// Does a record pass a stream's filters (those of [`ConflictQuery`] but paging)?
fn matches(q: &ConflictQuery, c: &Conflict) -> bool {
    q.tenant.as_ref().is_none_or(|t| *t == c.tenant)
        && q.rule.is_none_or(|r| r == c.rule)
        && q.resource_id.as_ref().is_none_or(|id| *id == c.resource_id)
        && q.since.as_ref().is_none_or(|s| c.at.as_str() >= s.as_str())
        && q.until.as_ref().is_none_or(|u| c.at.as_str() < u.as_str())
}

/// Releases a stream's slot in `dashboard.max_streams` when the stream ends.
struct StreamSlot(Arc<AppState>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.dashboard.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `GET /admin/v1/conflicts/stream`: records indexed from now on, as they come. Bounded: at most
/// `dashboard.max_streams` at once (503 beyond), each closed after `dashboard.stream_max_secs`
/// (browsers reconnect by themselves).
pub async fn conflict_stream(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = conflict_query(raw, 1, 1)?;
    let max = state.config.dashboard.max_streams;
    if state.dashboard.streams.fetch_add(1, Ordering::AcqRel) >= max {
        state.dashboard.streams.fetch_sub(1, Ordering::AcqRel);
        return Err(ScimError::Unavailable(format!(
            "{max} conflict streams are open (dashboard.max_streams); retry later"
        ))
        .into());
    }
    let slot = StreamSlot(state.clone());
    let until = Instant::now() + Duration::from_secs(state.config.dashboard.stream_max_secs);
    let from = state.store.feed_position();
    // State: (slot, position, records ready to send).
    let start = (slot, from, std::collections::VecDeque::<Event>::new());
    let stream = futures_util::stream::unfold(start, move |(slot, mut pos, mut ready)| {
        let q = q.clone();
        async move {
            loop {
                if let Some(event) = ready.pop_front() {
                    return Some((Ok::<_, std::convert::Infallible>(event), (slot, pos, ready)));
                }
                if Instant::now() >= until {
                    return None;
                }
                tokio::time::sleep(STREAM_POLL).await;
                let (records, next) = slot.0.store.conflicts_after(pos);
                pos = next;
                match records {
                    None => ready.push_back(Event::default().event("reset").data("{}")),
                    Some(records) => {
                        for c in records.iter().filter(|c| matches(&q, c)) {
                            let data = serde_json::to_string(c).unwrap_or_default();
                            ready.push_back(Event::default().event("conflict").data(data));
                        }
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn tenant_param(
    raw: Option<String>,
    extra: &[&str],
) -> Result<(String, Vec<(String, String)>), ApiError> {
    let mut known = vec!["tenant"];
    known.extend_from_slice(extra);
    let all = params(raw, &known)?;
    let tenant = all
        .iter()
        .find(|(n, _)| n == "tenant")
        .map(|(_, v)| v.clone())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ScimError::InvalidValue("query parameter 'tenant' is required".into()))?;
    Ok((tenant, all))
}

/// `GET /admin/v1/resources/{type}/{id}?tenant=`: the resource as the SCIM API would serve it
/// (members not listed), with its ETag.
pub async fn resource(
    State(state): State<Arc<AppState>>,
    Path((kind_text, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let kind = resource_kind(&kind_text)?;
    let (tenant, _) = tenant_param(raw, &[])?;
    let base = state
        .config
        .public_url
        .clone()
        .map(|u| format!("{u}/scim/v2"))
        .unwrap_or_else(|| {
            let http = &state.config.http;
            format!("{}://{}/scim/v2", http.scheme(), http.listen)
        });
    let (t, i) = (tenant.clone(), id.clone());
    let rendered = blocking(&state, move |store| {
        let Some(stored) = store.get(&t, kind, &i)? else {
            return Err(StoreError::NotFound(i));
        };
        render(store, &t, kind, stored.view, &base, &Members::Hidden)
    })
    .await
    .map_err(|e| match e.0 {
        ScimError::NotFound(_) => ApiError(ScimError::NotFound(format!(
            "no live {} {id:?} in tenant {tenant:?} (its history may still be there)",
            kind.name()
        ))),
        other => ApiError(other),
    })?;
    Ok(json_response(&json!({
        "tenant": tenant, "resourceType": kind.name(), "id": id,
        "etag": rendered.version, "resource": rendered.body,
    })))
}

/// `GET /admin/v1/resources/{type}?tenant=&q=`: live resources whose id is `q`, or whose
/// userName (users) or displayName (groups) equals `q` (case-insensitively).
pub async fn resource_search(
    State(state): State<Arc<AppState>>,
    Path(kind_text): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let kind = resource_kind(&kind_text)?;
    let (tenant, all) = tenant_param(raw, &["q"])?;
    let q = all
        .into_iter()
        .find(|(n, _)| n == "q")
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ScimError::InvalidValue("query parameter 'q' is required".into()))?;
    let t = tenant.clone();
    let found = blocking(&state, move |store| {
        let mut out = Vec::new();
        if crate::ids::is_plausible_id(&q) {
            if let Some(s) = store.get(&t, kind, &q)? {
                out.push(s.view);
            }
        }
        let attr = match kind {
            crate::scim::schema::ResourceKind::User => "userName",
            crate::scim::schema::ResourceKind::Group => "displayName",
        };
        for id in store.lookup(&t, kind, attr, &q)?.into_iter().take(100) {
            if out.iter().any(|v| v["id"] == json!(id)) {
                continue;
            }
            if let Some(s) = store.get(&t, kind, &id)? {
                out.push(s.view);
            }
        }
        Ok(out)
    })
    .await?;
    let hits: Vec<Value> = found
        .iter()
        .map(|v| {
            json!({"id": v["id"], "userName": v["userName"], "displayName": v["displayName"],
                   "active": v["active"], "version": v["meta"]["version"]})
        })
        .collect();
    Ok(json_response(&json!({
        "tenant": tenant, "resourceType": kind.name(), "totalResults": hits.len(), "Resources": hits,
    })))
}

/// `GET /admin/v1/samples`: the ring buffer, oldest first.
pub async fn samples(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(json_response(&json!({
        "intervalSecs": state.config.dashboard.sample_interval_secs,
        "samples": state.dashboard.samples.samples(),
    })))
}

//! `/Users`, `/Groups` and `/.search`: the resource endpoints.
//!
//! Each handler parses and validates with the pure `scim` core, runs one store operation on the
//! blocking pool, and renders the stored view for this client: absolute `meta.location`, a user's
//! computed `groups`, a group's members minus deleted resources, then `attributes` /
//! `excludedAttributes`.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{Map, Value};

use super::{base_url, blocking, inline, scim_response, ApiError, AppState, ScimJson, Tenant};
use crate::scim::filter::{self, AttrPath, FilterLimits};
use crate::scim::list::{self, ListLimits, ListQuery};
use crate::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA};
use crate::scim::{patch, resource, ScimError};
use crate::store::{indexed_attrs, Created, Lookup, Store, StoreError, Stored};

fn limits(state: &AppState) -> ListLimits {
    ListLimits {
        filter: filter_limits(state),
        default_count: state.config.scim.default_page_size,
        max_count: state.config.scim.max_page_size,
    }
}

fn filter_limits(state: &AppState) -> FilterLimits {
    FilterLimits {
        max_len: state.config.scim.max_filter_len,
        max_depth: state.config.scim.max_filter_depth,
    }
}

fn query_pairs(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The stored attributes of a normalised resource: everything but `schemas`, `id`, `meta`.
fn stored_attrs(resource: Value) -> Map<String, Value> {
    match resource {
        Value::Object(mut m) => {
            for k in ["schemas", "id", "meta"] {
                m.remove(k);
            }
            m
        }
        _ => Map::new(),
    }
}

/// Stored attributes as a resource the SCIM core can work on (with `schemas`).
fn as_resource(kind: ResourceKind, attrs: &Map<String, Value>) -> Value {
    let mut schemas = vec![Value::String(kind.core_schema().id.to_string())];
    if attrs.contains_key(ENTERPRISE_USER_SCHEMA) {
        schemas.push(Value::String(ENTERPRISE_USER_SCHEMA.to_string()));
    }
    let mut m = Map::new();
    m.insert("schemas".into(), Value::Array(schemas));
    m.extend(attrs.clone());
    Value::Object(m)
}

/// Render a stored view for the client (see the module doc).
fn render(
    store: &Store,
    tenant: &str,
    kind: ResourceKind,
    mut view: Value,
    base: &str,
) -> Result<Value, StoreError> {
    let id = view["id"].as_str().unwrap_or_default().to_string();
    if let Some(meta) = view.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert(
            "location".into(),
            Value::String(format!("{base}/{}/{id}", kind.endpoint())),
        );
    }
    match kind {
        ResourceKind::User => {
            let groups = store.groups_of(tenant, &id, base)?;
            if !groups.is_empty() {
                insert_before_meta(&mut view, "groups", Value::Array(groups));
            }
        }
        ResourceKind::Group => {
            if let Some(members) = view.get("members").and_then(Value::as_array) {
                let ids: Vec<&str> = members
                    .iter()
                    .map(|m| m["value"].as_str().unwrap_or_default())
                    .collect();
                let live = store.live_ids(tenant, &ids)?;
                let kept: Vec<Value> = members
                    .iter()
                    .zip(live)
                    .filter(|(_, l)| *l)
                    .map(|(m, _)| m.clone())
                    .collect();
                if kept.is_empty() {
                    view.as_object_mut().map(|m| m.remove("members"));
                } else {
                    view["members"] = Value::Array(kept);
                }
            }
        }
    }
    Ok(view)
}

fn insert_before_meta(view: &mut Value, key: &str, value: Value) {
    if let Some(m) = view.as_object_mut() {
        let meta = m.remove("meta");
        m.insert(key.into(), value);
        if let Some(meta) = meta {
            m.insert("meta".into(), meta);
        }
    }
}

/// Hold the answer of a write until the write quorum has it, where the quorum applies: every
/// write in `sync` mode; in every mode (unless `offboarding_quorum` is off) deletes and writes
/// that leave a user inactive, so an acknowledged offboarding survives the loss of this region.
/// On timeout: 503 + `Retry-After`; the change stays here and replicates later, and the retry
/// is idempotent (a replayed POST finds the user, a PATCH or PUT rewrites nothing).
async fn confirm(state: &AppState, offboarding: bool) -> Result<(), ApiError> {
    let Some(q) = state.cluster.get() else {
        return Ok(());
    };
    if !(q.all_writes || (q.offboarding && offboarding)) {
        return Ok(());
    }
    state.metrics.quorum_waits.inc();
    if q.wait(state.store.last_local_seq()).await {
        Ok(())
    } else {
        state.metrics.quorum_timeouts.inc();
        Err(ApiError(ScimError::Unavailable(format!(
            "the change is stored in this region but {} regions did not confirm it within {} ms; \
             it will replicate, and retrying is safe",
            q.size,
            q.timeout.as_millis()
        ))))
    }
}

/// No false 404s during replication lag: when this region has never seen `id`, ask the
/// reachable peers (bounded by `lookup_timeout_ms`) and merge what they hold before going on.
async fn ensure_local(
    state: &Arc<AppState>,
    tenant: &str,
    kind: ResourceKind,
    id: &str,
) -> Result<(), ApiError> {
    let Some(cluster) = state.cluster.get() else {
        return Ok(());
    };
    if state.store.knows(tenant, kind, id)? {
        return Ok(());
    }
    let lookup = Lookup::Id {
        tenant: tenant.to_string(),
        kind,
        id: id.to_string(),
    };
    state.metrics.peer_lookups.inc();
    if let Some(doc) = cluster.fetch(lookup.encode()).await {
        state.metrics.peer_lookup_hits.inc();
        let tenant = tenant.to_string();
        blocking(state, move |store| store.import(&tenant, &doc).map(|_| ())).await?;
    }
    Ok(())
}

/// The same for a userName an equality filter looks for.
async fn ensure_user_name(
    state: &Arc<AppState>,
    tenant: &str,
    user_name: &str,
) -> Result<bool, ApiError> {
    let Some(cluster) = state.cluster.get() else {
        return Ok(false);
    };
    let lookup = Lookup::UserName {
        tenant: tenant.to_string(),
        user_name: user_name.to_string(),
    };
    state.metrics.peer_lookups.inc();
    let Some(doc) = cluster.fetch(lookup.encode()).await else {
        return Ok(false);
    };
    state.metrics.peer_lookup_hits.inc();
    let tenant = tenant.to_string();
    blocking(state, move |store| store.import(&tenant, &doc).map(|_| ())).await?;
    Ok(true)
}

/// Does this view describe an inactive user (an offboarding write)?
fn inactive(view: &Value) -> bool {
    view.get("active") == Some(&Value::Bool(false))
}

fn resource_response(
    status: StatusCode,
    body: &Value,
    version: &str,
    location: Option<&str>,
) -> Response {
    let mut response = scim_response(status, body);
    if let Ok(v) = HeaderValue::from_str(version) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(header::LOCATION, loc);
    }
    response
}

// ---- handlers (thin wrappers binding the resource kind) ----

pub async fn list_users(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    q: RawQuery,
) -> Result<Response, ApiError> {
    list_get(s, t, h, q, ResourceKind::User).await
}
pub async fn list_groups(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    q: RawQuery,
) -> Result<Response, ApiError> {
    list_get(s, t, h, q, ResourceKind::Group).await
}
pub async fn search_users(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    b: ScimJson,
) -> Result<Response, ApiError> {
    search(s, t, h, b, &[ResourceKind::User]).await
}
pub async fn search_groups(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    b: ScimJson,
) -> Result<Response, ApiError> {
    search(s, t, h, b, &[ResourceKind::Group]).await
}
pub async fn search_all(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    b: ScimJson,
) -> Result<Response, ApiError> {
    search(s, t, h, b, &[ResourceKind::User, ResourceKind::Group]).await
}
pub async fn create_user(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    q: RawQuery,
    b: ScimJson,
) -> Result<Response, ApiError> {
    create(s, t, h, q, b, ResourceKind::User).await
}
pub async fn create_group(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    q: RawQuery,
    b: ScimJson,
) -> Result<Response, ApiError> {
    create(s, t, h, q, b, ResourceKind::Group).await
}
pub async fn get_user(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
    q: RawQuery,
) -> Result<Response, ApiError> {
    get_one(s, t, h, p, q, ResourceKind::User).await
}
pub async fn get_group(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
    q: RawQuery,
) -> Result<Response, ApiError> {
    get_one(s, t, h, p, q, ResourceKind::Group).await
}
pub async fn replace_user(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
    q: RawQuery,
    b: ScimJson,
) -> Result<Response, ApiError> {
    replace(s, t, h, p, q, b, ResourceKind::User).await
}
pub async fn replace_group(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
    q: RawQuery,
    b: ScimJson,
) -> Result<Response, ApiError> {
    replace(s, t, h, p, q, b, ResourceKind::Group).await
}
pub async fn patch_user(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
    q: RawQuery,
    b: ScimJson,
) -> Result<Response, ApiError> {
    patch_one(s, t, h, p, q, b, ResourceKind::User).await
}
pub async fn patch_group(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
    q: RawQuery,
    b: ScimJson,
) -> Result<Response, ApiError> {
    patch_one(s, t, h, p, q, b, ResourceKind::Group).await
}
pub async fn delete_user(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
) -> Result<Response, ApiError> {
    delete(s, t, h, p, ResourceKind::User).await
}
pub async fn delete_group(
    s: State<Arc<AppState>>,
    t: Extension<Tenant>,
    h: HeaderMap,
    p: Path<String>,
) -> Result<Response, ApiError> {
    delete(s, t, h, p, ResourceKind::Group).await
}

// ---- the work ----

async fn list_get(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    kind: ResourceKind,
) -> Result<Response, ApiError> {
    let query = list::parse_query(&query_pairs(raw), &limits(&state))?;
    run_list(state, tenant, headers, query, vec![kind]).await
}

async fn search(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    ScimJson(body): ScimJson,
    kinds: &'static [ResourceKind],
) -> Result<Response, ApiError> {
    let query = list::parse_search(&body, &limits(&state))?;
    run_list(state, tenant, headers, query, kinds.to_vec()).await
}

async fn run_list(
    state: Arc<AppState>,
    tenant: String,
    headers: HeaderMap,
    query: ListQuery,
    kinds: Vec<ResourceKind>,
) -> Result<Response, ApiError> {
    let base = base_url(&state, &headers);
    let run = || {
        let (tenant, kinds, query, base) =
            (tenant.clone(), kinds.clone(), query.clone(), base.clone());
        blocking(&state, move |store| {
            list_in_store(store, &tenant, &kinds, &query, &base)
        })
    };
    let mut body = run().await?;
    // No false empty answers for an IdP's lookup by userName during replication lag.
    if body["totalResults"] == 0 && kinds.contains(&ResourceKind::User) {
        let wanted = query
            .filter
            .as_ref()
            .map(filter::required_eq)
            .unwrap_or_default();
        if let Some((_, user_name)) = wanted
            .iter()
            .find(|(p, _)| p.sub.is_none() && p.name.eq_ignore_ascii_case("userName"))
        {
            if ensure_user_name(&state, &tenant, user_name).await? {
                body = run().await?;
            }
        }
    }
    Ok(scim_response(StatusCode::OK, &body))
}

/// Evaluate a list query: index lookups for required equality terms on indexed attributes, a
/// scan of the tenant's views otherwise; a plain page (no filter, no sort) parses only the page.
fn list_in_store(
    store: &Store,
    tenant: &str,
    kinds: &[ResourceKind],
    q: &ListQuery,
    base: &str,
) -> Result<Value, StoreError> {
    let skip = q.start_index.max(1) - 1;
    if kinds.len() == 1 && q.filter.is_none() && q.sort_by.is_none() {
        let kind = kinds[0];
        let total = store.count(tenant, kind)?;
        let mut page = Vec::new();
        if q.count > 0 {
            for view in store.scan(tenant, kind).skip(skip).take(q.count) {
                let view = render(store, tenant, kind, view?, base)?;
                page.push(list::project(
                    &view,
                    kind,
                    &q.attributes,
                    &q.excluded_attributes,
                ));
            }
        }
        return Ok(list::list_response(total, q.start_index.max(1), page));
    }
    let mut matched: Vec<(ResourceKind, Value)> = Vec::new();
    for &kind in kinds {
        let mut views = Vec::new();
        match q
            .filter
            .as_ref()
            .and_then(|f| indexed_candidates(store, tenant, kind, f).transpose())
        {
            Some(ids) => {
                for id in ids? {
                    if let Some(s) = store.get(tenant, kind, &id)? {
                        views.push(s.view);
                    }
                }
            }
            None => {
                for v in store.scan(tenant, kind) {
                    views.push(v?);
                }
            }
        }
        if let Some(f) = &q.filter {
            views.retain(|v| filter::matches(f, v, kind));
        }
        if let Some(by) = &q.sort_by {
            list::sort(&mut views, kind, by, q.descending);
        }
        matched.extend(views.into_iter().map(|v| (kind, v)));
    }
    let total = matched.len();
    let mut page = Vec::new();
    for (kind, view) in matched.into_iter().skip(skip).take(q.count) {
        let view = render(store, tenant, kind, view, base)?;
        page.push(list::project(
            &view,
            kind,
            &q.attributes,
            &q.excluded_attributes,
        ));
    }
    Ok(list::list_response(total, q.start_index.max(1), page))
}

/// Candidate ids from the index when the filter requires `attr eq "value"` on an indexed
/// attribute; `None` when it does not (scan instead). Candidates are re-checked by the filter.
fn indexed_candidates(
    store: &Store,
    tenant: &str,
    kind: ResourceKind,
    f: &filter::Filter,
) -> Result<Option<Vec<String>>, StoreError> {
    for (path, value) in filter::required_eq(f) {
        if let Some(attr) = index_name(kind, &path) {
            let mut ids = store.lookup(tenant, kind, attr, &value)?;
            ids.sort();
            ids.dedup();
            return Ok(Some(ids));
        }
    }
    Ok(None)
}

/// The index that serves an attribute path, if any.
fn index_name(kind: ResourceKind, path: &AttrPath) -> Option<&'static str> {
    if let Some(uri) = &path.uri {
        if !uri.eq_ignore_ascii_case(kind.core_schema().id) {
            return None;
        }
    }
    let full = match &path.sub {
        Some(sub) => format!("{}.{}", path.name, sub),
        // A multi-valued attribute without a sub-attribute compares its `value` (RFC 7644).
        None if path.name.eq_ignore_ascii_case("emails") => "emails.value".to_string(),
        None => path.name.clone(),
    };
    indexed_attrs(kind)
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(&full))
}

async fn create(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ScimJson(body): ScimJson,
    kind: ResourceKind,
) -> Result<Response, ApiError> {
    let attrs = stored_attrs(resource::normalize(kind, &body)?);
    let (attributes, excluded) = projection(&state, raw)?;
    let base = base_url(&state, &headers);
    let (stored, view) = blocking(&state, move |store| {
        let stored = match store.create(&tenant, kind, attrs)? {
            Created::New(s) | Created::Replay(s) => s,
        };
        let view = render(store, &tenant, kind, stored.view.clone(), &base)?;
        Ok((stored, view))
    })
    .await?;
    confirm(&state, inactive(&view)).await?;
    let location = view["meta"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let body = list::project(&view, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::CREATED,
        &body,
        &stored.version,
        Some(&location),
    ))
}

fn projection(
    state: &AppState,
    raw: Option<String>,
) -> Result<(Vec<AttrPath>, Vec<AttrPath>), ApiError> {
    let pairs: Vec<(String, String)> = query_pairs(raw)
        .into_iter()
        .filter(|(k, _)| {
            k.eq_ignore_ascii_case("attributes") || k.eq_ignore_ascii_case("excludedAttributes")
        })
        .collect();
    let q = list::parse_query(&pairs, &limits(state))?;
    Ok((q.attributes, q.excluded_attributes))
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if crate::ids::is_plausible_id(id) {
        Ok(())
    } else {
        Err(ApiError(ScimError::NotFound(
            "no resource with this id".into(),
        )))
    }
}

async fn get_one(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    kind: ResourceKind,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    ensure_local(&state, &tenant, kind, &id).await?;
    let (attributes, excluded) = projection(&state, raw)?;
    let base = base_url(&state, &headers);
    let found = inline(&state, |store| {
        let Some(stored) = store.get(&tenant, kind, &id)? else {
            return Err(StoreError::NotFound(id));
        };
        let view = render(store, &tenant, kind, stored.view.clone(), &base)?;
        Ok((stored, view))
    })?;
    let (stored, view) = found;
    if let Some(tag) = header_str(&headers, header::IF_NONE_MATCH) {
        if crate::store::etag_matches(&tag, &stored.version) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&stored.version) {
                response.headers_mut().insert(header::ETAG, v);
            }
            return Ok(response);
        }
    }
    let body = list::project(&view, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::OK,
        &body,
        &stored.version,
        None,
    ))
}

async fn replace(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    ScimJson(body): ScimJson,
    kind: ResourceKind,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    ensure_local(&state, &tenant, kind, &id).await?;
    let incoming = resource::normalize(kind, &body)?;
    let (attributes, excluded) = projection(&state, raw)?;
    let if_match = header_str(&headers, header::IF_MATCH);
    let base = base_url(&state, &headers);
    // A PUT writes only what changed, except that `active: false` is always re-asserted: a
    // deactivation is never a no-op, so it also beats a reactivation concurrent with it.
    let reassert: Vec<String> = match incoming.get("active") {
        Some(Value::Bool(false)) => vec!["active".to_string()],
        _ => Vec::new(),
    };
    let (stored, view) = blocking(&state, move |store| {
        let stored = store.update(&tenant, kind, &id, if_match.as_deref(), &|old| {
            let replaced = resource::replace(kind, &as_resource(kind, old), &incoming)?;
            Ok((stored_attrs(replaced), reassert.clone()))
        })?;
        let view = render(store, &tenant, kind, stored.view.clone(), &base)?;
        Ok((stored, view))
    })
    .await?;
    confirm(&state, inactive(&view)).await?;
    let body = list::project(&view, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::OK,
        &body,
        &stored.version,
        None,
    ))
}

async fn patch_one(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    ScimJson(body): ScimJson,
    kind: ResourceKind,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    ensure_local(&state, &tenant, kind, &id).await?;
    let ops = patch::parse_request(
        &body,
        state.config.scim.max_patch_ops,
        &filter_limits(&state),
    )?;
    let (attributes, excluded) = projection(&state, raw)?;
    let if_match = header_str(&headers, header::IF_MATCH);
    let base = base_url(&state, &headers);
    let (stored, view): (Stored, Value) = blocking(&state, move |store| {
        let stored = store.update(&tenant, kind, &id, if_match.as_deref(), &|old| {
            let mut resource = as_resource(kind, old);
            let outcome = patch::apply(&mut resource, kind, &ops)?;
            Ok((stored_attrs(resource), outcome.explicit))
        })?;
        let view = render(store, &tenant, kind, stored.view.clone(), &base)?;
        Ok((stored, view))
    })
    .await?;
    confirm(&state, inactive(&view)).await?;
    let body = list::project(&view, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::OK,
        &body,
        &stored.version,
        None,
    ))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(Tenant(tenant)): Extension<Tenant>,
    headers: HeaderMap,
    Path(id): Path<String>,
    kind: ResourceKind,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    ensure_local(&state, &tenant, kind, &id).await?;
    let if_match = header_str(&headers, header::IF_MATCH);
    blocking(&state, move |store| {
        store.delete(&tenant, kind, &id, if_match.as_deref())
    })
    .await?;
    confirm(&state, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

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

use super::list::list_in_store;
use super::paging::{cursor_page, cursor_response};
use super::render::{render, stored_attrs, MemberPaging, Members, Rendered};
use super::{base_url, blocking, inline, scim_response, ApiError, AppState, ScimJson, Tenant};
use crate::scim::filter::{self, AttrPath, FilterLimits};
use crate::scim::list::{self, ListLimits, ListQuery};
use crate::scim::members::{self as scim_members, Touch};
use crate::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA};
use crate::scim::{cursor, patch, resource, ScimError};
use crate::store::{Created, Lookup, Store, StoreError};

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

/// Hold the answer of a write until the write quorum has it, where the quorum applies: every
/// write in `sync` mode; in every mode (unless `offboarding_quorum` is off) deletes and writes
/// that leave a user inactive, so an acknowledged offboarding survives the loss of this region.
/// On timeout: 503 + `Retry-After`; the change stays here and replicates later, and the retry
/// is safe (a replayed POST finds its userName taken and creates no second user; a PATCH or
/// PUT rewrites nothing).
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

/// A resource answer: the body (projected), its ETag, `Location` for a create, and for a group
/// whose members were read, how many it lists (`Geoscim-Members-Total`) and the next page
/// (`Link: <…?membersCursor=…>; rel="next"`).
fn resource_response(
    status: StatusCode,
    body: &Value,
    rendered: &Rendered,
    location: Option<&str>,
    base: &str,
) -> Response {
    let mut response = scim_response(status, body);
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&rendered.version) {
        h.insert(header::ETAG, v);
    }
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(header::LOCATION, loc);
    }
    if let Some(MemberPaging { total, next }) = &rendered.members {
        h.insert(MEMBERS_TOTAL, HeaderValue::from(*total));
        if let Some(cursor) = next {
            let id = body["id"].as_str().unwrap_or_default();
            let link = format!(
                "<{base}/Groups/{id}?membersCursor={}>; rel=\"next\"",
                form_urlencoded::byte_serialize(cursor.as_bytes()).collect::<String>()
            );
            if let Ok(v) = HeaderValue::from_str(&link) {
                h.insert(header::LINK, v);
            }
        }
    }
    response
}

/// How many members a group lists in all, on answers that show a page of them.
const MEMBERS_TOTAL: header::HeaderName = header::HeaderName::from_static("geoscim-members-total");

/// The members a group's GET shows: `membersCursor` (the last member id of the previous page)
/// and `membersCount` (capped at `scim.max_members_per_page`), unless the projection hides
/// them.
fn members_for_get(
    state: &AppState,
    raw: Option<&str>,
    attributes: &[AttrPath],
    excluded: &[AttrPath],
) -> Result<Members, ApiError> {
    if !scim_members::shown(attributes, excluded) {
        return Ok(Members::Hidden);
    }
    let max = state.config.scim.max_members_per_page;
    let mut count = max;
    let mut after = None;
    for (k, v) in query_pairs(raw.map(str::to_string)) {
        if k.eq_ignore_ascii_case("membersCount") {
            let n = list::parse_int_text("membersCount", &v)?;
            count = list::page_size(n, max);
        } else if k.eq_ignore_ascii_case("membersCursor") {
            if !crate::ids::is_plausible_id(&v) {
                return Err(ApiError(ScimError::BadRequest(
                    "membersCursor is not a member id from a previous page".into(),
                )));
            }
            after = Some(v);
        }
    }
    Ok(Members::Page { after, count })
}

/// The members a write's answer shows: all of them for a group that lists at most
/// `scim.write_response_members`, the first page when `attributes` names them, none
/// otherwise (IdPs do not read them, and a one-member change must not answer a large group).
fn members_for_write(
    state: &AppState,
    store: &Store,
    tenant: &str,
    id: &str,
    attributes: &[AttrPath],
    excluded: &[AttrPath],
) -> Result<Members, StoreError> {
    if !scim_members::shown(attributes, excluded) {
        return Ok(Members::Hidden);
    }
    let small = state.config.scim.write_response_members;
    let asked = attributes.iter().any(scim_members::is_members);
    if asked {
        return Ok(Members::Page {
            after: None,
            count: state.config.scim.max_members_per_page,
        });
    }
    if small > 0 && store.member_total(tenant, id)? <= small as u64 {
        return Ok(Members::Page {
            after: None,
            count: small,
        });
    }
    Ok(Members::Hidden)
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
        let state = state.clone();
        async move {
            match &query.cursor {
                Some(_) => cursor_list(state, tenant, kinds, query, base).await,
                None => {
                    let max_members = state.config.scim.max_members_per_page;
                    blocking(&state, move |store| {
                        list_in_store(store, &tenant, &kinds, &query, &base, max_members)
                    })
                    .await
                }
            }
        }
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

/// A cursor page (RFC 9865): open the client's cursor (none for the first page), read the page
/// after (or before) its key, seal the cursors of the pages around it.
async fn cursor_list(
    state: Arc<AppState>,
    tenant: String,
    kinds: Vec<ResourceKind>,
    query: ListQuery,
    base: String,
) -> Result<Value, ApiError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let fingerprint = cursor::fingerprint(&tenant, &kinds, query.filter.as_ref());
    let text = query.cursor.as_deref().unwrap_or_default();
    let from = if text.trim().is_empty() {
        None
    } else {
        let c = cursor::decode(
            &state.cursor_key,
            text,
            fingerprint,
            now,
            state.config.scim.cursor_timeout_secs,
        )?;
        if usize::from(c.position.kind) >= kinds.len() {
            return Err(ApiError(ScimError::InvalidCursor(
                "the cursor is malformed".into(),
            )));
        }
        Some((c.direction, c.position))
    };
    let max_members = state.config.scim.max_members_per_page;
    let page = blocking(&state, move |store| {
        cursor_page(store, &tenant, &kinds, &query, from, &base, max_members)
    })
    .await?;
    let seal = |direction, position| {
        cursor::encode(
            &state.cursor_key,
            &cursor::Cursor {
                direction,
                position,
                issued_at: now,
                fingerprint,
            },
        )
    };
    Ok(cursor_response(
        page.total,
        page.resources,
        page.next.map(|p| seal(cursor::Direction::After, p)),
        page.previous.map(|p| seal(cursor::Direction::Before, p)),
    ))
}

pub(super) async fn create(
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
    // Whether the answer waits for the offboarding quorum: the tenant's sticky set decides.
    let sticky = state.store.policy(&tenant).sticky;
    let (rendered, attributes, excluded) = {
        let (state2, base) = (state.clone(), base.clone());
        blocking(&state, move |store| {
            let stored = match store.create(&tenant, kind, attrs)? {
                Created::New(s) | Created::Replay(s) => s,
            };
            let id = stored.view["id"].as_str().unwrap_or_default().to_string();
            let members = members_for_write(&state2, store, &tenant, &id, &attributes, &excluded)?;
            let rendered = render(store, &tenant, kind, stored.view, &base, &members)?;
            Ok((rendered, attributes, excluded))
        })
        .await?
    };
    confirm(&state, sticky.restricts(&rendered.body)).await?;
    let location = rendered.body["meta"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let body = list::project(&rendered.body, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::CREATED,
        &body,
        &rendered,
        Some(&location),
        &base,
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
    let members = match kind {
        ResourceKind::Group => {
            let (attributes, excluded) = projection(&state, raw.clone())?;
            members_for_get(&state, raw.as_deref(), &attributes, &excluded)?
        }
        ResourceKind::User => Members::Hidden,
    };
    let (attributes, excluded) = projection(&state, raw)?;
    let base = base_url(&state, &headers);
    let rendered = inline(&state, |store| {
        let Some(stored) = store.get(&tenant, kind, &id)? else {
            return Err(StoreError::NotFound(id));
        };
        render(store, &tenant, kind, stored.view, &base, &members)
    })?;
    if let Some(tag) = header_str(&headers, header::IF_NONE_MATCH) {
        if crate::store::etag_matches(&tag, &rendered.version) {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            if let Ok(v) = HeaderValue::from_str(&rendered.version) {
                response.headers_mut().insert(header::ETAG, v);
            }
            return Ok(response);
        }
    }
    let body = list::project(&rendered.body, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::OK,
        &body,
        &rendered,
        None,
        &base,
    ))
}

pub(super) async fn replace(
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
    // A PUT writes only what changed, except that a restrictive sticky value (`active: false`,
    // or one of the tenant's sticky attributes) is always re-asserted: an offboarding is never
    // a no-op, so it also beats a reversal concurrent with it. A group's PUT writes only the
    // members that differ from the list it sends.
    let reassert = restrictive_keys(&state.store.policy(&tenant).sticky, &incoming);
    let (state2, base2) = (state.clone(), base.clone());
    // Whether the answer waits for the offboarding quorum: the tenant's sticky set decides.
    let sticky = state.store.policy(&tenant).sticky;
    let (rendered, attributes, excluded) = blocking(&state, move |store| {
        let stored = store.replace(&tenant, kind, &id, if_match.as_deref(), &|old| {
            let replaced = resource::replace(kind, &as_resource(kind, old), &incoming)?;
            Ok((stored_attrs(replaced), reassert.clone()))
        })?;
        let members = members_for_write(&state2, store, &tenant, &id, &attributes, &excluded)?;
        let rendered = render(store, &tenant, kind, stored.view, &base2, &members)?;
        Ok((rendered, attributes, excluded))
    })
    .await?;
    confirm(&state, sticky.restricts(&rendered.body)).await?;
    let body = list::project(&rendered.body, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::OK,
        &body,
        &rendered,
        None,
        &base,
    ))
}

pub(super) async fn patch_one(
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
    let (state2, base2) = (state.clone(), base.clone());
    // Whether the answer waits for the offboarding quorum: the tenant's sticky set decides.
    let sticky = state.store.policy(&tenant).sticky;
    let (rendered, attributes, excluded) = blocking(&state, move |store| {
        let apply = |old: &Map<String, Value>| {
            let mut resource = as_resource(kind, old);
            let outcome = patch::apply(&mut resource, kind, &ops)?;
            Ok((stored_attrs(resource), outcome.explicit))
        };
        let stored = match kind {
            // Only the members the operations name are read and written (see scim::members).
            ResourceKind::Group => {
                let touch: Touch = scim_members::touched(&ops);
                let named = scim_members::named_removals(&ops);
                store.update_group_removing(
                    &tenant,
                    &id,
                    if_match.as_deref(),
                    &touch,
                    &named,
                    &apply,
                )?
            }
            ResourceKind::User => store.update(&tenant, kind, &id, if_match.as_deref(), &apply)?,
        };
        let members = members_for_write(&state2, store, &tenant, &id, &attributes, &excluded)?;
        let rendered = render(store, &tenant, kind, stored.view, &base2, &members)?;
        Ok((rendered, attributes, excluded))
    })
    .await?;
    confirm(&state, sticky.restricts(&rendered.body)).await?;
    let body = list::project(&rendered.body, kind, &attributes, &excluded);
    Ok(resource_response(
        StatusCode::OK,
        &body,
        &rendered,
        None,
        &base,
    ))
}

pub(super) async fn delete(
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

/// The stored keys (`name`, or `<URN>:<name>` inside an extension) of `resource` whose values
/// restrict access under `sticky`.
fn restrictive_keys(sticky: &crate::conflict::sticky::StickySet, resource: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(map) = resource.as_object() else {
        return out;
    };
    for (k, v) in map {
        match v {
            Value::Object(inner) if k.starts_with("urn:") => {
                for (ik, iv) in inner {
                    let key = format!("{k}:{ik}");
                    if sticky.restrictive(&key, iv) == Some(true) {
                        out.push(key);
                    }
                }
            }
            _ => {
                if sticky.restrictive(k, v) == Some(true) {
                    out.push(k.clone());
                }
            }
        }
    }
    out
}

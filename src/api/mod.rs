//! HTTP API: the SCIM endpoints under `/scim/v2`, the admin API under `/admin/v1` (`admin`:
//! conflict log and resource histories, admin tokens only), the OAuth token endpoint
//! `/oauth/token` (`oauth`, with `[oauth]`), `/health` and `/metrics` (axum).
//!
//! This layer owns authentication (bearer token, static or an OAuth JWT → tenant), load shedding, the SCIM error mapping
//! and content types; SCIM semantics live in `scim` and persistence in `store`. [`app`] builds the
//! router from state, so tests can drive it without a socket.

mod admin;
mod admin_live;
mod bulk;
mod discovery;
pub mod events;
mod list;
pub mod metrics;
pub mod oauth;
mod paging;
mod render;
mod resources;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::scim::ScimError;
use crate::store::{Store, StoreError};

/// The SCIM media type (RFC 7644 §3.1).
pub const SCIM_JSON: &str = "application/scim+json";

/// Shared state of one region's HTTP API.
pub struct AppState {
    /// The region's store.
    pub store: Arc<Store>,
    /// The region's configuration (limits, public URL).
    pub config: Config,
    /// Accepted tokens: hex SHA-256 → tenant.
    pub tokens: HashMap<String, String>,
    /// Accepted admin tokens (`/admin/v1`), as lower-case hex SHA-256; from `admin_tokens`.
    pub admin_tokens: std::collections::HashSet<String>,
    /// Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// SCIM requests in flight, for load shedding.
    in_flight: AtomicUsize,
    /// The replication status (JSON), when this region replicates; shown by `/health`.
    pub replication: std::sync::OnceLock<Arc<std::sync::Mutex<Value>>>,
    /// Write-quorum waits and peer lookups, when this region replicates.
    pub cluster: std::sync::OnceLock<crate::replication::node::Handle>,
    /// The geo-DNS view (health of every region, DNS metrics), when this region runs a
    /// responder; shown by `/health` and `/metrics`.
    pub dns: std::sync::OnceLock<Arc<crate::dns::View>>,
    /// The dashboard's sessions, chart samples and stream count.
    pub dashboard: crate::dashboard::Dashboard,
    /// Seals the cursors of cursor pagination: `scim.cursor_key`, else random per process.
    pub cursor_key: crate::scim::cursor::CursorKey,
    /// OAuth client credentials and the JWT access tokens the SCIM API accepts, when the
    /// config has `[oauth]` (set by `server::prepare`, which reads the signing key).
    pub oauth: Option<crate::oauth::OAuth>,
    /// The event feeds' delivery tasks, made by `server::prepare` (which reads their files)
    /// and started by `server::serve`.
    pub delivery: std::sync::Mutex<Vec<crate::delivery::Task>>,
}

impl AppState {
    /// State for a store and config; `tokens` maps token hashes to tenants.
    pub fn new(store: Arc<Store>, config: Config, tokens: HashMap<String, String>) -> AppState {
        let admin_tokens = config
            .admin_tokens
            .iter()
            .map(|t| t.sha256.to_ascii_lowercase())
            .collect();
        let dashboard =
            crate::dashboard::Dashboard::new(&config.dashboard, config.http.peer_ca.as_deref());
        // `validate()` has checked that the key is hex.
        let cursor_key = match config.scim.cursor_key.as_deref().map(hex::decode) {
            Some(Ok(secret)) => crate::scim::cursor::CursorKey::new(&secret),
            _ => crate::scim::cursor::CursorKey::new(&rand::random::<[u8; 32]>()),
        };
        AppState {
            store,
            config,
            tokens,
            admin_tokens,
            metrics: metrics::Metrics::default(),
            in_flight: AtomicUsize::new(0),
            replication: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            dns: std::sync::OnceLock::new(),
            dashboard,
            cursor_key,
            oauth: None,
            delivery: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// The hex SHA-256 of a token: the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
}

/// The router of one region.
pub fn app(state: Arc<AppState>) -> Router {
    let scim = Router::new()
        .route(
            "/Users",
            get(resources::list_users)
                .post(resources::create_user)
                .fallback(not_allowed),
        )
        .route(
            "/Users/.search",
            post(resources::search_users).fallback(not_allowed),
        )
        .route(
            "/Users/{id}",
            get(resources::get_user)
                .put(resources::replace_user)
                .patch(resources::patch_user)
                .delete(resources::delete_user)
                .fallback(not_allowed),
        )
        .route(
            "/Groups",
            get(resources::list_groups)
                .post(resources::create_group)
                .fallback(not_allowed),
        )
        .route(
            "/Groups/.search",
            post(resources::search_groups).fallback(not_allowed),
        )
        .route(
            "/Groups/{id}",
            get(resources::get_group)
                .put(resources::replace_group)
                .patch(resources::patch_group)
                .delete(resources::delete_group)
                .fallback(not_allowed),
        )
        .route(
            "/.search",
            post(resources::search_all).fallback(not_allowed),
        )
        .route("/Bulk", post(bulk::bulk).fallback(not_allowed))
        .route("/Events", post(events::poll_events).fallback(not_allowed))
        .route(
            "/ServiceProviderConfig",
            get(discovery::service_provider_config).fallback(not_allowed),
        )
        .route("/Schemas", get(discovery::schemas).fallback(not_allowed))
        .route(
            "/Schemas/{id}",
            get(discovery::schema).fallback(not_allowed),
        )
        .route(
            "/ResourceTypes",
            get(discovery::resource_types).fallback(not_allowed),
        )
        .route(
            "/ResourceTypes/{id}",
            get(discovery::resource_type).fallback(not_allowed),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), shed_load))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit));
    // The token endpoint is outside the bearer layer (clients authenticate there with their
    // secret) but inside admission and the time limit like every SCIM request.
    let token = oauth::router()
        .layer(middleware::from_fn_with_state(state.clone(), shed_load))
        .layer(middleware::from_fn_with_state(state.clone(), time_limit));
    let router = if state.oauth.is_some() {
        Router::new().merge(token)
    } else {
        Router::new()
    };
    router
        .nest("/scim/v2", scim)
        .nest("/admin/v1", admin::router(state.clone()))
        .merge(crate::dashboard::router())
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

/// A bug must still answer with a SCIM error, not a dropped connection. Store writes commit
/// atomically, so a panic leaves either the whole change or none of it.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError(ScimError::Internal(
        "the request failed unexpectedly".into(),
    ))
    .into_response()
}

/// Any SCIM error as an HTTP response with the SCIM error body.
pub struct ApiError(pub ScimError);

impl From<ScimError> for ApiError {
    fn from(e: ScimError) -> Self {
        ApiError(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError(match e {
            StoreError::NotFound(id) => ScimError::NotFound(format!("resource {id} not found")),
            StoreError::PreconditionFailed { current } => ScimError::PreconditionFailed(format!(
                "If-Match does not match the current version {current}"
            )),
            StoreError::Scim(e) => e,
            other => {
                tracing::error!(error = %other, "storage failure");
                ScimError::Unavailable("storage is unavailable; retry later".into())
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = scim_response(status, &self.0.to_json());
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A SCIM JSON response.
pub fn scim_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

async fn not_found() -> ApiError {
    ApiError(ScimError::NotFound("no such endpoint".into()))
}

async fn not_allowed() -> ApiError {
    ApiError(ScimError::MethodNotAllowed(
        "this endpoint does not support this method".into(),
    ))
}

/// The tenant a request acts for, set by [`authenticate`].
#[derive(Clone, Debug)]
pub struct Tenant(pub String);

/// Bearer token → tenant: a static token (by its hash) or, with `[oauth]`, a valid JWT access
/// token; 401 otherwise (a refused JWT says why in `WWW-Authenticate`, RFC 6750 §3).
async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = bearer_token(request.headers());
    let Some(token) = token else {
        return ApiError(ScimError::Unauthorized("a bearer token is required".into()))
            .into_response();
    };
    let tenant = match state.tokens.get(&token_hash(&token)) {
        Some(tenant) => tenant.clone(),
        None => match &state.oauth {
            Some(service) if crate::oauth::looks_like_jwt(&token) => {
                match service.verify(&token, crate::oauth::unix_now()) {
                    Ok(verified) => verified.tenant,
                    Err(e) => return oauth::invalid_token(&state, e),
                }
            }
            _ => {
                let mut r = ApiError(ScimError::Unauthorized("unknown bearer token".into()))
                    .into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer error=\"invalid_token\", error_description=\"unknown bearer token\"",
                    ),
                );
                return r;
            }
        },
    };
    request.extensions_mut().insert(Tenant(tenant));
    next.run(request).await
}

tokio::task_local! {
    /// The admission of the request this task serves (see [`shed_load`]): [`blocking`] takes a
    /// share of it into the store work it starts.
    static ADMITTED: Arc<Admitted>;
}

/// One admitted SCIM request. Its slot in `http.max_in_flight` is freed when the last share
/// drops: when the request is answered *and* every store task it started has finished, so a
/// client that hangs up does not free a slot its store work still uses.
struct Admitted(Arc<AppState>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.in_flight.dec();
    }
}

/// Bounded concurrency: beyond `http.max_in_flight` SCIM requests (counting store work that
/// outlives its request), answer 503 at once.
async fn shed_load(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let max = state.config.http.max_in_flight;
    if state.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
        state.metrics.shed.inc();
        return ApiError(ScimError::Unavailable(format!(
            "overloaded: {max} requests in flight; retry later"
        )))
        .into_response();
    }
    state.metrics.in_flight.inc();
    let admitted = Arc::new(Admitted(state.clone()));
    ADMITTED.scope(admitted, next.run(request)).await
}

/// A request not answered within `http.request_timeout_ms` gets 503 (store work it started
/// finishes on its own, still counted in `http.max_in_flight`; a write may have been applied,
/// and retrying is safe: a retried create finds its userName taken (409, one user), PUT and
/// PATCH rewrite nothing twice).
async fn time_limit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let limit = std::time::Duration::from_millis(state.config.http.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.request_timeouts.inc();
            ApiError(ScimError::Unavailable(format!(
                "the request took longer than {} ms; a write may have been applied; retrying \
                 is safe",
                limit.as_millis()
            )))
            .into_response()
        }
    }
}

async fn record_metrics(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let start = Instant::now();
    let mut response = next.run(request).await;
    // Every 503 says when to come back, as configured.
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        if let Ok(v) = HeaderValue::from_str(&state.config.http.retry_after_secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    state
        .metrics
        .latency
        .get_or_create(&metrics::RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    state.metrics.totals.count(response.status().as_u16());
    state
        .metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let replication = state
        .replication
        .get()
        .and_then(|s| s.lock().ok().map(|v| v.clone()));
    let text = metrics::with_conflicts_and_store(
        state.metrics.encode(),
        &state.store.conflicts_indexed(),
        state.store.quarantined_count(),
    );
    let text = match replication {
        Some(status) => metrics::with_replication(text, &status),
        None => text,
    };
    let text = match state.dns.get() {
        Some(dns) => dns.append_metrics(text),
        None => text,
    };
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// 200 only when a real RocksDB write and read succeed; the JSON says why otherwise.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let (status, body) = health_reading(&state).await;
    let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// This process's version (shown by `/health` and the dashboard).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What `/health` answers: the status and the JSON body (also the dashboard's own reading).
pub(crate) async fn health_reading(state: &Arc<AppState>) -> (StatusCode, Value) {
    let store = state.store.clone();
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        tokio::task::spawn_blocking(move || store.probe()),
    )
    .await;
    let storage = match probe {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("storage probe failed: {e}")),
        Ok(Err(e)) => Err(format!("storage probe crashed: {e}")),
        Err(_) => Err("storage probe timed out after 2 s".to_string()),
    };
    let replication = state
        .replication
        .get()
        .and_then(|s| s.lock().ok().map(|v| v.clone()))
        .unwrap_or(Value::Null);
    // A region that refuses writes (recovering its own log) is not one an IdP should reach;
    // one whose writes only wait a moment at start is (its check says so).
    let writes = state.store.writes_blocked();
    let waiting = state.store.writes_refused();
    let (status, mut body) = match (storage, writes) {
        (Ok(()), None) => (
            StatusCode::OK,
            json!({"status": "ok", "region": state.store.region(),
                   "checks": {"api": "ok", "storage": "ok",
                              "writes": waiting.unwrap_or_else(|| "ok".into())}}),
        ),
        (storage, writes) => {
            let storage_text = match &storage {
                Ok(()) => "ok".to_string(),
                Err(reason) => reason.clone(),
            };
            let reasons: Vec<String> = storage.err().into_iter().chain(writes.clone()).collect();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable", "region": state.store.region(),
                       "checks": {"api": "ok", "storage": storage_text,
                                  "writes": writes.unwrap_or_else(|| "ok".into())},
                       "reasons": reasons}),
            )
        }
    };
    body["replication"] = replication;
    if let Some(dns) = state.dns.get() {
        body["dns"] = dns.status();
    }
    body["version"] = json!(VERSION);
    body["uptime_secs"] = json!(state.dashboard.started.elapsed().as_secs());
    (status, body)
}

/// A JSON request body, limited in size; malformed JSON is SCIM `invalidSyntax`, an oversized
/// body is 413, a non-JSON content type is 415.
pub struct ScimJson(pub Value);

impl FromRequest<Arc<AppState>> for ScimJson {
    type Rejection = ApiError;

    async fn from_request(
        request: Request<Body>,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let limit = state.config.http.max_body_bytes;
        read_json(request, state, limit, |limit| {
            format!("the request body exceeds http.max_body_bytes ({limit} bytes)")
        })
        .await
        .map(ScimJson)
    }
}

/// Read a JSON request body of at most `limit` bytes (413 with `too_large(limit)` beyond it),
/// within `http.body_read_timeout_ms` (else 408); a non-JSON content type is 415, malformed
/// JSON `invalidSyntax`.
pub(crate) async fn read_json(
    request: Request<Body>,
    state: &Arc<AppState>,
    limit: usize,
    too_large: fn(usize) -> String,
) -> Result<Value, ApiError> {
    if let Some(ct) = request.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.is_empty() && !ct.contains("json") {
            return Err(ScimError::UnsupportedMediaType(format!(
                "content type {ct:?} is not supported; send {SCIM_JSON}"
            ))
            .into());
        }
    }
    let wait = std::time::Duration::from_millis(state.config.http.body_read_timeout_ms);
    let bytes =
        match tokio::time::timeout(wait, axum::body::to_bytes(request.into_body(), limit)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return Err(ApiError(ScimError::PayloadTooLarge(too_large(limit)))),
            Err(_) => {
                state.metrics.body_timeouts.inc();
                return Err(ApiError(ScimError::RequestTimeout(format!(
                    "the request body did not arrive within http.body_read_timeout_ms ({} ms)",
                    wait.as_millis()
                ))));
            }
        };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError(ScimError::InvalidSyntax(format!(
            "the body is not valid JSON: {e}"
        )))
    })
}

/// The absolute SCIM base URL for responses (`meta.location`, `$ref`): `public_url` when set,
/// else the `Host` the client used, with this listener's scheme (`https` with `[http.tls]`).
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return format!("{url}/scim/v2");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| state.config.http.listen.to_string());
    format!("{}://{host}/scim/v2", state.config.http.scheme())
}

/// Run a short store read on the current task: point reads hit RocksDB's memtable or block
/// cache and take microseconds, less than a hand-off to the blocking pool would cost.
pub fn inline<T>(
    state: &AppState,
    f: impl FnOnce(&Store) -> Result<T, StoreError>,
) -> Result<T, ApiError> {
    f(&state.store).map_err(ApiError::from)
}

/// Run blocking store work (writes, which wait for the WAL sync, and scans) off the async
/// runtime.
pub async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    // The request's admission goes with the work: it stays counted until the work ends, even
    // if the request is gone (the client hung up, or the request timed out).
    let admitted = ADMITTED.try_with(Arc::clone).ok();
    match tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        f(&store)
    })
    .await
    {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "store task failed");
            Err(ApiError(ScimError::Internal(
                "the request failed unexpectedly".into(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn state(dir: &std::path::Path, extra: &str) -> Arc<AppState> {
        let config = Config::from_toml(
            &format!("region = \"h\"\ndata_dir = \"{}\"\n{extra}", dir.display()),
            "test",
            Vec::new(),
        )
        .unwrap();
        let store = Store::open(
            dir,
            crate::store::StoreOptions {
                region: "h".into(),
                sync_writes: false,
                doc_cache_size: 10,
                io_statistics: false,
                history_entries: 1000,
                tenants: Default::default(),
            },
        )
        .unwrap();
        let tokens = HashMap::from([(token_hash("tok"), "t".to_string())]);
        Arc::new(AppState::new(Arc::new(store), config, tokens))
    }

    #[tokio::test]
    async fn store_work_keeps_its_admission_when_the_request_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), "");
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        // What `shed_load` does for one admitted request, then a handler's blocking call.
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        state.metrics.in_flight.inc();
        let admitted = Arc::new(Admitted(state.clone()));
        let s2 = state.clone();
        let request = ADMITTED.scope(admitted, async move {
            blocking(&s2, move |_| {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
                Ok(())
            })
            .await
        });
        let handle = tokio::spawn(request);
        started_rx.await.unwrap();
        // The client hangs up: the request's future is dropped while the store work runs.
        handle.abort();
        let _ = handle.await;
        assert_eq!(
            state.in_flight.load(Ordering::Acquire),
            1,
            "the work still holds it"
        );
        release_tx.send(()).unwrap();
        for _ in 0..200 {
            if state.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the admission was never released");
    }

    #[tokio::test]
    async fn every_503_carries_the_configured_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), "[http]\nretry_after_secs = 7");
        state.store.refuse_writes("recovering".into());
        let post = Request::builder()
            .method("POST")
            .uri("/scim/v2/Users")
            .header("authorization", "Bearer tok")
            .header("content-type", SCIM_JSON)
            .body(Body::from(
                r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a"}"#,
            ))
            .unwrap();
        let r = app(state.clone()).oneshot(post).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        let health = Request::builder()
            .uri("/health")
            .body(Body::empty())
            .unwrap();
        let r = app(state).oneshot(health).await.unwrap();
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    }

    #[tokio::test]
    async fn health_answers_503_with_the_reason_while_writes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path(), "");
        let get = || {
            Request::builder()
                .uri("/health")
                .body(Body::empty())
                .unwrap()
        };
        let r = app(state.clone()).oneshot(get()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        state.store.refuse_writes("recovering its own log".into());
        let r = app(state.clone()).oneshot(get()).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["checks"]["writes"], "recovering its own log");
        assert_eq!(v["checks"]["storage"], "ok");
        state.store.open_writes();
        let r = app(state).oneshot(get()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

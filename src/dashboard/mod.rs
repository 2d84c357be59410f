//! The conflict dashboard at `/dashboard`, served by every region: what the cluster decided and
//! what is at risk, live, in a browser.
//!
//! - `mod.rs`: the pages (a sign-in form, one page of plain HTML/CSS/JS embedded in the binary:
//!   no CDN, no build step) and sign-in / sign-out;
//! - [`session`]: server-side sessions behind an HttpOnly, SameSite=Strict cookie, with a CSRF
//!   token for sign-out;
//! - [`cluster`]: the cluster view (every region's health, DNS role, lag, contact, digest);
//! - [`samples`]: the charts' in-process ring buffer.
//!
//! The page reads the admin API (`/admin/v1`, see `api::admin`), which accepts the session
//! cookie as well as an admin bearer token: the page never holds a token. Everything it reads
//! is a GET; the one state change, sign-out, needs the session's CSRF token.

pub mod cluster;
pub mod samples;
pub mod session;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;
use session::{cookie_value, Sessions, COOKIE};

/// The dashboard's share of a region's state.
pub struct Dashboard {
    pub sessions: Sessions,
    pub samples: samples::Ring,
    /// Live conflict streams open now (capped by `dashboard.max_streams`).
    pub streams: AtomicUsize,
    /// When this process started (uptime).
    pub started: Instant,
    /// For reading other regions' `/health`.
    pub client: reqwest::Client,
}

impl Dashboard {
    /// The dashboard of a region; `peer_ca` (`http.peer_ca`) is trusted when reading other
    /// regions' `https://` health.
    pub fn new(
        cfg: &crate::config::DashboardConfig,
        peer_ca: Option<&std::path::Path>,
    ) -> Dashboard {
        Dashboard {
            sessions: Sessions::new(Duration::from_secs(cfg.session_ttl_secs), cfg.max_sessions),
            samples: samples::Ring::new(cfg.samples),
            streams: AtomicUsize::new(0),
            started: Instant::now(),
            client: crate::tls::client::builder_with_peer_ca(peer_ca)
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }

    /// The live session a request's cookie names.
    pub fn session(&self, headers: &HeaderMap) -> Option<(String, session::Valid)> {
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .find_map(|h| cookie_value(h, COOKIE))?;
        let valid = self.sessions.check(id, Instant::now())?;
        Some((id.to_string(), valid))
    }
}

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The largest sign-in form accepted.
const MAX_FORM_BYTES: usize = 8 << 10;

/// The dashboard's routes (merged at the root).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/session", get(session_info))
        .route(
            "/dashboard/app.js",
            get(|| async { asset(APP_JS, "text/javascript") }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset(APP_CSS, "text/css") }),
        )
}

/// Headers every dashboard answer carries: nothing cached, nothing framed, scripts and styles
/// only from this origin (so an injected string can never run), no referrer to other sites
/// (`same-origin`, not `no-referrer`: with that, browsers send `Origin: null` on our own form
/// posts, which [`same_origin`] refuses).
fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn asset(text: &'static str, content_type: &'static str) -> Response {
    let mut r = text.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    harden(r)
}

fn html(status: StatusCode, text: String) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    harden(r)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn login_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(message))
    };
    html(
        status,
        LOGIN
            .replace("{{region}}", &escape(state.store.region()))
            .replace("{{message}}", &message),
    )
}

fn disabled() -> Response {
    html(
        StatusCode::NOT_FOUND,
        "<!doctype html><title>geoscim</title><p>The dashboard is turned off here \
         (dashboard.enabled = false).</p>"
            .into(),
    )
}

/// `GET /dashboard`: the page with a live session, else the sign-in form.
async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !state.config.dashboard.enabled {
        return disabled();
    }
    match state.dashboard.session(&headers) {
        Some(_) => html(
            StatusCode::OK,
            INDEX.replace("{{region}}", &escape(state.store.region())),
        ),
        None => login_page(&state, StatusCode::OK, ""),
    }
}

/// A state-changing request must come from our own page: its `Origin` (sent by browsers with
/// every POST), when present, names the host it was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

async fn form(request: Request<Body>) -> Option<Vec<(String, String)>> {
    let ct = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let bytes = tokio::time::timeout(
        Duration::from_secs(10),
        axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES),
    )
    .await
    .ok()?
    .ok()?;
    Some(
        form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `POST /dashboard/login` (form `token`): an admin token starts a session; anything else
/// (a tenant's token included) shows the form again with 401.
async fn login(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    if !state.config.dashboard.enabled {
        return disabled();
    }
    if !same_origin(request.headers()) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            "sign in from this region's own page",
        );
    }
    let Some(form) = form(request).await else {
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            "send the sign-in form (application/x-www-form-urlencoded, at most 8 KiB)",
        );
    };
    let token = field(&form, "token").unwrap_or_default().trim();
    if token.is_empty() || !state.admin_tokens.contains(&crate::api::token_hash(token)) {
        tracing::info!("dashboard sign-in refused: not an admin token");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            "That is not an admin token of this region (tenant tokens are not accepted).",
        );
    }
    let id = state.dashboard.sessions.create(Instant::now());
    tracing::info!("dashboard sign-in");
    // Secure when the browser reaches us over HTTPS: this listener's own TLS, or a TLS
    // load balancer in front (an https public_url).
    let secure = state.config.http.tls.is_some()
        || state
            .config
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        state.config.dashboard.session_ttl_secs,
        if secure { "; Secure" } else { "" }
    );
    redirect_with_cookie(&cookie)
}

fn redirect_with_cookie(cookie: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
    if let Ok(v) = HeaderValue::from_str(cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    harden(r)
}

/// `POST /dashboard/logout` with the session's CSRF token (form field `csrf` or header
/// `X-CSRF-Token`): ends the session and clears the cookie. 403 without the right token.
async fn logout(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    let headers = request.headers().clone();
    let Some((id, _)) = state.dashboard.session(&headers) else {
        return login_page(&state, StatusCode::UNAUTHORIZED, "You are not signed in.");
    };
    let header_token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token = match header_token {
        Some(t) => t,
        None => form(request)
            .await
            .and_then(|f| field(&f, "csrf").map(str::to_string))
            .unwrap_or_default(),
    };
    if !same_origin(&headers) || !state.dashboard.sessions.end(&id, &token, Instant::now()) {
        let mut r = (
            StatusCode::FORBIDDEN,
            "sign-out needs the page's CSRF token",
        )
            .into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return harden(r);
    }
    tracing::info!("dashboard sign-out");
    redirect_with_cookie(&format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
}

/// `GET /dashboard/session`: the signed-in session's CSRF token and remaining time (401
/// without one), for the page's sign-out button.
async fn session_info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some((_, valid)) = state.dashboard.session(&headers) else {
        return crate::api::ApiError(crate::scim::ScimError::Unauthorized(
            "no dashboard session".into(),
        ))
        .into_response();
    };
    let body = serde_json::json!({
        "region": state.store.region(), "csrf": valid.csrf, "expiresInSecs": valid.expires_in,
    });
    let mut r = serde_json::to_vec(&body)
        .unwrap_or_default()
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    harden(r)
}

#[cfg(test)]
mod tests;

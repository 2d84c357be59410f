//! Wiring only: bind what the config names ([`Listeners::bind`]), open the store, gather
//! tokens, build the API, start replication and DNS on their bound sockets ([`start`]), serve
//! until the shutdown future resolves ([`Running::serve`]). `main` (through `cli`) and tests
//! both come through here; a test binds every socket on port 0 first, so regions in one
//! process can name each other's real addresses before any of them starts.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::store::{Store, StoreError, StoreOptions, TenantPolicy};

pub use crate::dns::Sockets as DnsSockets;

/// The tenant that gets a token on first start when none is configured.
pub const DEFAULT_TENANT: &str = "default";

/// A region ready to serve.
pub struct Prepared {
    /// The API state (store, config, tokens, metrics).
    pub state: Arc<AppState>,
    /// A token created on this start (first start, no token configured): print it once.
    pub new_token: Option<String>,
}

/// Errors starting a region.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open storage: {0}")]
    Store(#[from] StoreError),
    #[error("invalid config key `{0}`")]
    Config(String),
    #[error("{0}")]
    OAuth(#[from] crate::oauth::SetupError),
    #[error("{0}")]
    Delivery(#[from] crate::delivery::DeliveryError),
    /// A listener the config names could not be bound.
    #[error("cannot bind {key} {addr}: {source}")]
    Bind {
        /// The config key of the address (`http.listen`, `replication.listen`, `dns.listen`).
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The listeners given do not match the config (a `[replication]` or `[dns]` table without
    /// its socket, or a socket without its table).
    #[error("{0}")]
    Listeners(String),
    #[error("cannot read the bound http address: {0}")]
    HttpAddr(std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    PeerCa(#[from] crate::tls::client::CaError),
    #[error(transparent)]
    Replication(#[from] crate::replication::node::NodeError),
    #[error(transparent)]
    Dns(#[from] crate::dns::StartError),
    #[error("opening the store failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("http listener: {0}")]
    Http(std::io::Error),
}

/// Every socket a region serves on, bound before it starts: the HTTP(S) listener, the
/// replication endpoint's UDP socket (with `[replication]`) and the DNS responder's UDP socket
/// and TCP listener (with `[dns]`). The config's listen addresses are not read once these
/// exist.
pub struct Listeners {
    pub http: TcpListener,
    pub quic: Option<std::net::UdpSocket>,
    pub dns: Option<DnsSockets>,
}

impl Listeners {
    /// Bind what `config` names: `http.listen`, `replication.listen` with `[replication]`,
    /// `dns.listen` (UDP and TCP) with `[dns]`. An error names the key and the address.
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let bind_error = |key, addr| move |source| ServerError::Bind { key, addr, source };
        let addr = config.http.listen;
        let http = TcpListener::bind(addr)
            .await
            .map_err(bind_error("http.listen", addr))?;
        let quic = match &config.replication {
            Some(r) => Some(
                std::net::UdpSocket::bind(r.listen)
                    .map_err(bind_error("replication.listen", r.listen))?,
            ),
            None => None,
        };
        let dns = match &config.dns {
            Some(d) => Some(
                DnsSockets::bind(d.listen)
                    .await
                    .map_err(bind_error("dns.listen", d.listen))?,
            ),
            None => None,
        };
        Ok(Listeners { http, quic, dns })
    }
}

/// The addresses a started region serves on (the real ports when bound to port 0).
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    pub http: SocketAddr,
    pub quic: Option<SocketAddr>,
    pub dns: Option<SocketAddr>,
}

/// A started region: replication and DNS run, the HTTP listener is bound and waits for
/// [`Running::serve`].
pub struct Running {
    /// The API state (store, config, tokens, metrics).
    pub state: Arc<AppState>,
    /// Where it serves.
    pub addrs: Addrs,
    /// A token created on this start (first start, no token configured): print it once.
    pub new_token: Option<String>,
    http: TcpListener,
    tls: Option<crate::tls::Acceptor>,
    node: Option<crate::replication::node::Node>,
    dns: Option<crate::dns::Running>,
}

impl Running {
    /// The HTTP base URL: `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.state.config.http.scheme(), self.addrs.http)
    }

    /// Serve HTTP(S) until `shutdown` resolves, then stop HTTP (connections finish their
    /// requests), DNS and replication, in that order.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let served = serve_http(self.state, self.http, self.tls, shutdown).await;
        stop(self.dns, self.node).await;
        served.map_err(ServerError::Http)
    }
}

/// Start a region on bound `listeners`: read the HTTPS certificate and `http.peer_ca` (a bad
/// file stops the start before the store opens), [`prepare`], start replication (before HTTP
/// answers, so lookups at the peers work from the first request), the TLS acceptor and DNS.
/// On an error, what already started is stopped again.
pub async fn start(config: Config, listeners: Listeners) -> Result<Running, ServerError> {
    let Listeners { http, quic, dns } = listeners;
    let mismatch = |socket: bool, table: bool, what: &str| match (socket, table) {
        (false, true) => Err(ServerError::Listeners(format!(
            "the config has [{what}] but no {what} socket was given"
        ))),
        (true, false) => Err(ServerError::Listeners(format!(
            "a {what} socket was given but the config has no [{what}]"
        ))),
        _ => Ok(()),
    };
    mismatch(quic.is_some(), config.replication.is_some(), "replication")?;
    mismatch(dns.is_some(), config.dns.is_some(), "dns")?;
    let http_addr = http.local_addr().map_err(ServerError::HttpAddr)?;
    // The files are read before anything starts: a missing or bad one stops the start here,
    // naming the key and the path.
    let certificate = match &config.http.tls {
        Some(tls) => Some(crate::tls::load(tls)?),
        None => None,
    };
    if let Some(ca) = &config.http.peer_ca {
        crate::tls::client::read_ca_file(ca, "http.peer_ca")?;
    }
    let Prepared { state, new_token } =
        tokio::task::spawn_blocking(move || prepare(config)).await??;
    let config = &state.config;
    // Replication first: once HTTP answers, lookups at the peers (no false 404s) must work.
    let node = match (&config.replication, quic) {
        (Some(cfg), Some(socket)) => {
            let node =
                crate::replication::node::start(state.store.clone(), &config.region, cfg, socket)
                    .await?;
            let _ = state.replication.set(node.status.clone());
            let _ = state.cluster.set(node.handle.clone());
            Some(node)
        }
        _ => None,
    };
    let tls = match (&config.http.tls, certificate) {
        (Some(cfg), Some(initial)) => {
            tracing::info!(sha256 = %initial.sha256, cert = %cfg.cert.display(), "http.tls: serving HTTPS");
            let metrics = state.metrics.tls.clone();
            match crate::tls::Acceptor::start(cfg, initial, metrics) {
                Ok(acceptor) => Some(acceptor),
                Err(e) => {
                    stop(None, node).await;
                    return Err(e.into());
                }
            }
        }
        _ => {
            tracing::warn!(
                "the HTTP listener speaks plain HTTP (no [http.tls] in the config): only for \
                 a region behind a load balancer that terminates TLS; IdPs require https://"
            );
            None
        }
    };
    let dns = match (&config.dns, dns) {
        (Some(cfg), Some(sockets)) => {
            let peer_ca = config.http.peer_ca.as_deref();
            match crate::dns::start(cfg, &config.region, peer_ca, sockets).await {
                Ok(running) => {
                    let _ = state.dns.set(running.view.clone());
                    Some(running)
                }
                Err(e) => {
                    stop(None, node).await;
                    return Err(e.into());
                }
            }
        }
        _ => None,
    };
    let addrs = Addrs {
        http: http_addr,
        quic: node.as_ref().map(|n| n.addr),
        dns: dns.as_ref().map(|d| d.addr),
    };
    Ok(Running {
        state,
        addrs,
        new_token,
        http,
        tls,
        node,
        dns,
    })
}

/// [`start`] and [`Running::serve`]: run a region on bound `listeners` until `shutdown`
/// resolves, for callers that need neither its addresses nor a created token.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    start(config, listeners).await?.serve(shutdown).await
}

/// Stop DNS, then replication.
async fn stop(dns: Option<crate::dns::Running>, node: Option<crate::replication::node::Node>) {
    if let Some(dns) = dns {
        dns.shutdown().await;
    }
    if let Some(node) = node {
        node.shutdown().await;
    }
}

/// Open the store and build the API state. On first start with no token configured (none in
/// the config, none created before), create one for tenant `default` and keep only its hash.
/// OAuth clients count as configured credentials. With `[oauth]`, read this region's signing key.
pub fn prepare(config: Config) -> Result<Prepared, ServerError> {
    // The signing key is read before anything else: a wrong file fails the start loudly.
    let oauth = config
        .oauth
        .as_ref()
        .map(crate::oauth::OAuth::load)
        .transpose()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Store::open(
        &config.data_dir,
        StoreOptions {
            region: config.region.clone(),
            sync_writes: config.storage.sync_writes,
            doc_cache_size: config.storage.doc_cache_size,
            io_statistics: false,
            history_entries: config.storage.member_history_entries,
            tenants: tenant_policies(&config)?,
        },
    )?;
    let mut tokens: HashMap<String, String> = store.stored_tokens()?;
    let mut new_token = None;
    let oauth_clients = config.oauth.as_ref().is_some_and(|o| !o.clients.is_empty());
    if tokens.is_empty() && config.tokens.is_empty() && !oauth_clients {
        let token = new_token_text();
        let hash = api::token_hash(&token);
        store.add_token(&hash, DEFAULT_TENANT)?;
        tokens.insert(hash, DEFAULT_TENANT.to_string());
        new_token = Some(token);
    }
    for t in &config.tokens {
        tokens.insert(t.sha256.to_ascii_lowercase(), t.tenant.clone());
    }
    let mut state = AppState::new(Arc::new(store), config, tokens);
    state.oauth = oauth;
    let tasks = crate::delivery::prepare(&state)?;
    state.delivery = std::sync::Mutex::new(tasks);
    let state = Arc::new(state);
    Ok(Prepared { state, new_token })
}

/// A new random bearer token (256 bits, URL-safe).
pub fn new_token_text() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "gs_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Serve the API (HTTP only: no replication, no DNS) on an already-bound listener until
/// `shutdown` resolves; HTTPS when `tls` is given (see [`crate::tls`]), plain HTTP otherwise.
///
/// Each connection is served by hyper with a header-read timeout (`http.header_read_timeout_ms`:
/// a client that sends half a header is dropped then), and at most `http.max_connections` are
/// open at once (a connection beyond that is closed at once and counted). A TLS connection
/// holds its slot from accept on, and its handshake must finish within
/// `http.tls.handshake_timeout_ms` (in the connection's own task, so a slow handshake delays
/// no other); the header-read timeout starts after it. On shutdown the listener stops,
/// connections finish their requests (graceful shutdown, bounded by `http.request_timeout_ms`)
/// and the call returns.
pub async fn serve_http(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<crate::tls::Acceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let http = state.config.http.clone();
    let app = api::app(state.clone());
    // The dashboard's chart samples, for as long as the region serves.
    let sampler = tokio::spawn(crate::dashboard::samples::run(state.clone()));
    // The event feeds' pushers and bounds.
    let tasks = std::mem::take(&mut *state.delivery.lock().unwrap_or_else(|p| p.into_inner()));
    let delivery = crate::delivery::spawn(state.clone(), tasks);
    let slots = Arc::new(tokio::sync::Semaphore::new(http.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_millis(
            http.header_read_timeout_ms,
        ));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let handshake = tls
        .as_ref()
        .map(|t| (t.acceptor.clone(), t.handshake_timeout, t.metrics.clone()));
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors or similar: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.metrics.connections_refused.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        // Made now, before a shutdown can start, so a connection still in its handshake when
        // one does is closed gracefully right after it.
        let watcher = graceful.watcher();
        let (state, builder, handshake) = (state.clone(), builder.clone(), handshake.clone());
        state.metrics.connections.inc();
        tokio::spawn(async move {
            let _slot = slot;
            match handshake {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some((acceptor, limit, metrics)) => {
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                            let _ = watcher.watch(conn.into_owned()).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            let reason = crate::tls::HandshakeLabels { reason: "error" };
                            metrics.handshake_failures.get_or_create(&reason).inc();
                        }
                        Err(_) => {
                            let reason = crate::tls::HandshakeLabels { reason: "timeout" };
                            metrics.handshake_failures.get_or_create(&reason).inc();
                        }
                    }
                }
            }
            state.metrics.connections.dec();
        });
    }
    drop(listener);
    drop(tls);
    sampler.abort();
    for task in delivery {
        task.abort();
    }
    let grace = std::time::Duration::from_millis(http.request_timeout_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace period");
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The store's per-tenant write policies from `[tenants.<name>]`; sticky attributes are
/// checked against the schema here.
fn tenant_policies(config: &Config) -> Result<BTreeMap<String, TenantPolicy>, ServerError> {
    config
        .tenants
        .iter()
        .map(|(name, t)| {
            let entries: Vec<_> = t
                .sticky
                .iter()
                .map(|s| (s.attribute.clone(), s.restrictive.clone()))
                .collect();
            let sticky = crate::conflict::sticky::resolve(&entries)
                .map_err(|rule| ServerError::Config(format!("tenants.{name}.{rule}")))?;
            let policy = TenantPolicy {
                idempotent_create: t.idempotent_create,
                unique_group_names: t.unique_group_names,
                sticky,
                events: match t.events.as_ref().map(|e| e.delivery) {
                    None => crate::store::FeedScope::None,
                    Some(crate::config::Delivery::Poll) => crate::store::FeedScope::All,
                    Some(crate::config::Delivery::Push) => crate::store::FeedScope::Own,
                },
            };
            Ok((name.clone(), policy))
        })
        .collect()
}

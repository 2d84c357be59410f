//! Wiring only: open the store, gather tokens, build the API, serve bound listeners until the
//! shutdown future resolves. Tests and `main` both come through here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::store::{Store, StoreError, StoreOptions};

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
}

/// Open the store and build the API state. On first start with no token configured (none in
/// the config, none created before), create one for tenant `default` and keep only its hash.
pub fn prepare(config: Config) -> Result<Prepared, ServerError> {
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
        },
    )?;
    let mut tokens: HashMap<String, String> = store.stored_tokens()?;
    let mut new_token = None;
    if tokens.is_empty() && config.tokens.is_empty() {
        let token = new_token_text();
        let hash = api::token_hash(&token);
        store.add_token(&hash, DEFAULT_TENANT)?;
        tokens.insert(hash, DEFAULT_TENANT.to_string());
        new_token = Some(token);
    }
    for t in &config.tokens {
        tokens.insert(t.sha256.to_ascii_lowercase(), t.tenant.clone());
    }
    let state = Arc::new(AppState::new(Arc::new(store), config, tokens));
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

/// Serve the API on an already-bound listener until `shutdown` resolves.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, api::app(state))
        .with_graceful_shutdown(shutdown)
        .await
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

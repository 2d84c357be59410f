//! Region configuration: one TOML file per region, then environment overrides, then `validate()`.
//!
//! Every key has a default except `region` and `data_dir`, and every key can be overridden by an
//! environment variable: `GEOSCIM_` followed by the key path in upper case, with `__` between a
//! table and its key (`GEOSCIM_DATA_DIR`, `GEOSCIM_HTTP__LISTEN`, `GEOSCIM_SCIM__MAX_PAGE_SIZE`).
//! The value is read as a TOML value when it parses as one (`true`, `1000`,
//! `[{tenant="a", sha256="…"}]`) and as a plain string otherwise (`127.0.0.1:0`). Unknown keys are
//! errors that name the key, in the file and in the environment alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod dashboard;
mod dns;
mod events;
mod oauth;
mod tls;
mod validate;
pub use dashboard::{DashboardConfig, DashboardRegion};
pub use dns::{is_dns_name, DnsConfig, DnsNetwork, DnsRegion, DnsTenant};
pub use events::{Delivery, EventsConfig, TenantEventsConfig};
pub use oauth::{
    decode_public_key, is_valid_client_id, is_valid_kid, ClientConfig, OAuthConfig,
    PublicKeyConfig, SigningKeyConfig, MAX_SECRETS_PER_CLIENT,
};
pub use tls::TlsConfig;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "GEOSCIM_";

/// Errors loading or validating a config. Each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, wrong type).
    #[error("invalid config {origin}: {message}")]
    Parse { origin: String, message: String },
    /// A key has a value that parses but breaks a rule.
    #[error("invalid config key `{key}`: {rule}")]
    Invalid { key: &'static str, rule: String },
    /// A `GEOSCIM_*` environment variable that names no config key (a typo would otherwise be
    /// ignored silently).
    #[error(
        "environment variable {name} names no config key (the first part after GEOSCIM_ must be \
         one of {keys}, nested keys joined by `__`, e.g. GEOSCIM_HTTP__LISTEN)"
    )]
    UnknownEnv { name: String, keys: String },
}

/// One region's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This region's name: its identity in the cluster, its Automerge actor and its log origin.
    pub region: String,
    /// RocksDB directory. Relative paths are relative to the working directory.
    pub data_dir: PathBuf,
    /// Absolute base URL clients use (the geo-routed name), without `/scim/v2`. When unset,
    /// `meta.location` is built from the request's `Host` header.
    #[serde(default)]
    pub public_url: Option<String>,
    /// HTTP listener and its limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// Limits on SCIM requests.
    #[serde(default)]
    pub scim: ScimConfig,
    /// Storage tuning.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Bearer tokens, stored only as SHA-256 hashes. See `geoscim token create`.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Admin bearer tokens (the admin API under `/admin/v1`), stored only as SHA-256 hashes.
    /// Separate from `tokens` so that no tenant's IdP credential can read across tenants. See
    /// `geoscim token create --admin`.
    #[serde(default)]
    pub admin_tokens: Vec<AdminTokenConfig>,
    /// Replication to peer regions; absent for a single region.
    #[serde(default)]
    pub replication: Option<ReplicationConfig>,
    /// The geo-DNS responder and its health prober; absent: no responder.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Per-tenant write policies (`[tenants.<name>]`); a tenant not named gets the defaults.
    /// Every region must have the same: they decide what a write answers.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantConfig>,
    /// The conflict dashboard at `/dashboard`: sessions, streams, chart samples, peer URLs.
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// OAuth 2.0 client credentials at `/oauth/token` and the JWT access tokens every region
    /// accepts; absent: static bearer tokens only.
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
    /// Limits of the SCIM event feeds (RFC 9967 SETs) that tenants turn on with
    /// `[tenants.<name>.events]`.
    #[serde(default)]
    pub events: EventsConfig,
}

/// `[tenants.<name>]`: how one tenant's creates and renames treat names already taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// A POST of an existing userName with exactly the same attributes answers 201 with the
    /// existing user instead of 409 `uniqueness` (for an IdP that retries POSTs blindly).
    #[serde(default)]
    pub idempotent_create: bool,
    /// Group displayNames are unique in the tenant, compared case-insensitively.
    #[serde(default = "yes")]
    pub unique_group_names: bool,
    /// Attributes besides `active` whose restrictive values win every concurrent write (an
    /// attribute that gates access downstream, e.g. `userType = "Terminated"`).
    #[serde(default)]
    pub sticky: Vec<StickyConfig>,
    /// The tenant's SCIM event feed (RFC 9967 SETs); absent: no events are kept.
    #[serde(default)]
    pub events: Option<TenantEventsConfig>,
}

/// One sticky attribute of a tenant (`[[tenants.<name>.sticky]]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// A single-valued, writable User attribute: a core name (`userType`) or
    /// `<extension URN>:<name>`. Checked against the schema at start.
    pub attribute: String,
    /// The values that restrict access (strings, booleans or numbers of the attribute's type).
    pub restrictive: Vec<serde_json::Value>,
}

/// How many sticky attributes a tenant may name (each costs a lookup on every write).
pub const MAX_STICKY_ATTRIBUTES: usize = 16;

fn yes() -> bool {
    true
}

/// Replication over QUIC with mutual TLS (see `geoscim certs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// UDP address of this region's QUIC endpoint; port 0 binds a free port (printed).
    #[serde(default = "default_quic_listen")]
    pub listen: SocketAddr,
    /// Folder with `ca.pem` and this region's `<region>.pem` / `<region>.key`, made by
    /// `geoscim certs` (or `geoscim up`); a folder without them stops the region at start.
    pub certs_dir: PathBuf,
    /// The other regions and where their QUIC endpoints listen.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// `async`: a write answers 2xx after the local commit. `sync`: after `write_quorum`
    /// regions (this one included) hold it durably, else 503 after `quorum_timeout_ms` (the
    /// local change stays and replicates later; retrying is idempotent).
    #[serde(default)]
    pub mode: ReplicationMode,
    /// Regions, this one included, that must hold a write before a quorum write answers 2xx.
    #[serde(default = "default_write_quorum")]
    pub write_quorum: usize,
    /// How long a quorum write waits before answering 503 + `Retry-After`.
    #[serde(default = "default_quorum_timeout_ms")]
    pub quorum_timeout_ms: u64,
    /// Deactivations (`active` set to false) and deletes wait for the quorum in every mode, so an
    /// acknowledged offboarding survives the loss of the region that took it.
    #[serde(default = "default_true")]
    pub offboarding_quorum: bool,
    /// How long a region that lacks an id or userName waits for its peers' answers before it
    /// answers 404 (IdPs quarantine apps that answer 404 for users that exist).
    #[serde(default = "default_lookup_timeout_ms")]
    pub lookup_timeout_ms: u64,
    /// How often this region sends each peer a digest of its documents' heads, so that two
    /// regions holding the same log entries but different documents (a bug or corruption) are
    /// noticed (`/health`, `/metrics`, a warning in the log). 0 turns digests off. Tests set it
    /// low; in production each comparison costs a digest snapshot, so seconds are plenty.
    #[serde(default = "default_digest_interval_ms")]
    pub digest_interval_ms: u64,
    /// How often tombstones that every region has seen are collected (their Automerge history
    /// dropped, their id kept so it is never reused and late changes are ignored). 0: never.
    #[serde(default = "default_tombstone_gc_interval_ms")]
    pub tombstone_gc_interval_ms: u64,
    /// How often removed membership records that no write can reach anymore are collected
    /// (every region holds the removal, and every write concurrent with it has arrived here).
    /// 0: never.
    #[serde(default = "default_membership_gc_interval_ms")]
    pub membership_gc_interval_ms: u64,
    /// How often the replication log is truncated (entries every known region holds, beyond
    /// the `log_keep_entries` window). 0: never.
    #[serde(default = "default_truncate_interval_ms")]
    pub truncate_interval_ms: u64,
    /// Per origin, how many of the newest entries every region holds are kept anyway: a slow
    /// or restored peer within this window catches up entry by entry instead of by snapshot.
    #[serde(default = "default_log_keep_entries")]
    pub log_keep_entries: u64,
    /// Per origin, the most entries kept for a region that does not acknowledge them (down,
    /// partitioned): beyond this the log is cut anyway and that region gets a snapshot when it
    /// returns. 0: no limit (a region that stays down holds the log back forever).
    #[serde(default = "default_log_max_entries")]
    pub log_max_entries: u64,
    /// Bytes of documents and records per snapshot chunk (one message).
    #[serde(default = "default_snapshot_chunk_bytes")]
    pub snapshot_chunk_bytes: usize,
    /// Snapshot chunks sent and not yet acknowledged (applied) by the receiver.
    #[serde(default = "default_snapshot_window")]
    pub snapshot_window: u64,
    /// At start, writes wait until a peer has reported what it holds of this region, at most
    /// this long: a region restored from an old backup must not reuse sequence numbers the
    /// cluster already holds. 0: no wait.
    #[serde(default = "default_start_hold_ms")]
    pub start_hold_ms: u64,
    /// An SRV name (`_geoscim._udp.<zone>`) whose records list peers (target
    /// `<region>.region.<zone>`, the QUIC port), looked up at `peers_srv_servers` and refreshed
    /// every `peers_srv_refresh_ms`; peers found are dialled like `peers`. Unset: static only.
    #[serde(default)]
    pub peers_srv: Option<String>,
    /// DNS servers (address and port) asked for `peers_srv`, e.g. the cluster's responders.
    #[serde(default)]
    pub peers_srv_servers: Vec<SocketAddr>,
    /// How often `peers_srv` is looked up again, milliseconds.
    #[serde(default = "default_peers_srv_refresh_ms")]
    pub peers_srv_refresh_ms: u64,
}

fn default_start_hold_ms() -> u64 {
    3_000
}

fn default_membership_gc_interval_ms() -> u64 {
    60_000
}
fn default_truncate_interval_ms() -> u64 {
    10_000
}
fn default_log_keep_entries() -> u64 {
    10_000
}
fn default_log_max_entries() -> u64 {
    10_000_000
}
fn default_snapshot_chunk_bytes() -> usize {
    1 << 20
}
fn default_snapshot_window() -> u64 {
    4
}

fn default_peers_srv_refresh_ms() -> u64 {
    30_000
}

fn default_tombstone_gc_interval_ms() -> u64 {
    60_000
}

fn default_lookup_timeout_ms() -> u64 {
    500
}

/// The smallest non-zero `replication.digest_interval_ms`: faster comparisons find nothing
/// sooner (replication itself takes longer than that to settle) and only cost snapshots.
pub const MIN_DIGEST_INTERVAL_MS: u64 = 100;

fn default_digest_interval_ms() -> u64 {
    30_000
}

/// When a write answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// After the local commit.
    #[default]
    Async,
    /// After `write_quorum` regions committed it.
    Sync,
}

fn default_write_quorum() -> usize {
    2
}
fn default_quorum_timeout_ms() -> u64 {
    2000
}

/// One peer region.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's region name (must match its certificate).
    pub region: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
}

fn default_quic_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to bind; port 0 binds a free port (printed once bound).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted; larger bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// SCIM requests handled at once; beyond it requests get 503 + `Retry-After` at once, so
    /// admitted requests keep a bounded latency instead of queueing without bound.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Seconds sent in `Retry-After` with every 503 (load shed, quorum timeout, storage or
    /// replication unavailable, request timeout).
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
    /// A connection must send a request's headers within this long (from its first byte), or
    /// it is closed: a client that sends half a header holds nothing for longer.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this long once the handler reads it; else 408.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// A request not answered within this long gets 503 + `Retry-After` (store work already
    /// started finishes, within `max_in_flight`; a write may have been applied, and retrying is
    /// safe). IdPs give up after 60 s: answer well before.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Open connections at most; beyond it new connections are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// HTTPS: certificate and key files (`[http.tls]`, see `config::tls`). Absent: plain HTTP,
    /// for a region behind a load balancer that terminates TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// PEM file of CA certificates trusted, besides the system's roots, by this region's own
    /// HTTPS requests to other regions (the DNS responder's `/health` probes, the dashboard's
    /// cluster view): the cluster CA of a local cluster, a private CA.
    #[serde(default)]
    pub peer_ca: Option<PathBuf>,
}

/// Limits on SCIM requests (all of them appear in `/ServiceProviderConfig` where SCIM has a slot).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimConfig {
    /// Longest filter accepted, in bytes.
    #[serde(default = "default_max_filter_len")]
    pub max_filter_len: usize,
    /// Deepest filter nesting accepted.
    #[serde(default = "default_max_filter_depth")]
    pub max_filter_depth: usize,
    /// Page size when a list request has no `count`.
    #[serde(default = "default_page_size")]
    pub default_page_size: usize,
    /// Largest page served (`filter.maxResults`); larger `count`s are capped.
    #[serde(default = "default_max_page_size")]
    pub max_page_size: usize,
    /// Most operations in one PATCH request (Okta sends up to 1,000 member changes).
    #[serde(default = "default_max_patch_ops")]
    pub max_patch_ops: usize,
    /// Most members one group shows in a body (GET, lists): the first page, in member id order;
    /// later pages by `membersCursor` (see the README). Bounds the answer whatever the group's
    /// size.
    #[serde(default = "default_max_members_per_page")]
    pub max_members_per_page: usize,
    /// A write's answer (POST, PUT, PATCH of a group) lists the group's members only when it
    /// has at most this many (or when `attributes` asks for them): IdPs do not read them, and
    /// a one-member change to a large group must not answer the group. 0: never.
    #[serde(default = "default_write_response_members")]
    pub write_response_members: usize,
    /// Seconds a cursor of cursor pagination (RFC 9865) stays valid after the page that issued
    /// it (`cursorTimeout`); older cursors answer 400 `expiredCursor`.
    #[serde(default = "default_cursor_timeout_secs")]
    pub cursor_timeout_secs: u64,
    /// Hex secret (at least 32 hex digits) that seals cursors. Give every region of a cluster
    /// the same one, so a client can follow a cursor to whichever region DNS sends it next.
    /// Unset: a random key per process, and cursors work only at the process that issued them.
    #[serde(default)]
    pub cursor_key: Option<String>,
    /// Most operations in one `POST /Bulk` (`bulk.maxOperations`); more: 413. They run one
    /// after another within `http.request_timeout_ms`.
    #[serde(default = "default_bulk_max_operations")]
    pub bulk_max_operations: usize,
    /// Largest `POST /Bulk` body in bytes (`bulk.maxPayloadSize`); larger: 413. Bulk bodies
    /// have their own limit because they are meant to be larger than single requests.
    #[serde(default = "default_bulk_max_payload_bytes")]
    pub bulk_max_payload_bytes: usize,
}

/// Storage tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Sync the WAL before answering a write. Only tests of throughput ceilings turn this off.
    #[serde(default = "default_true")]
    pub sync_writes: bool,
    /// Automerge documents kept loaded (each costs ~18 KB of heap).
    #[serde(default = "default_doc_cache")]
    pub doc_cache_size: usize,
    /// Entries of membership history kept per group for the admin API (one per write that
    /// changed members; the oldest go first, in batches; 0 keeps none).
    #[serde(default = "default_member_history_entries")]
    pub member_history_entries: usize,
}

fn default_member_history_entries() -> usize {
    1000
}

/// One accepted bearer token, as the hex SHA-256 of the token text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The tenant this token acts for.
    pub tenant: String,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
}

/// One accepted admin token, as the hex SHA-256 of the token text. Admin tokens act for every
/// tenant, so they belong to operators, never to an IdP.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenConfig {
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_in_flight() -> usize {
    256
}
fn default_retry_after_secs() -> u64 {
    1
}
fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_body_read_timeout_ms() -> u64 {
    30_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_connections() -> usize {
    4096
}
fn default_max_filter_len() -> usize {
    4096
}
fn default_max_filter_depth() -> usize {
    32
}
fn default_page_size() -> usize {
    100
}
fn default_max_page_size() -> usize {
    1000
}
fn default_max_patch_ops() -> usize {
    1000
}
fn default_max_members_per_page() -> usize {
    1000
}
fn default_write_response_members() -> usize {
    100
}
fn default_bulk_max_operations() -> usize {
    1000
}
fn default_bulk_max_payload_bytes() -> usize {
    1024 * 1024
}
fn default_cursor_timeout_secs() -> u64 {
    600
}
fn default_true() -> bool {
    true
}
fn default_doc_cache() -> usize {
    10_000
}

impl HttpConfig {
    /// The listener's URL scheme: `https` with `[http.tls]`, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            max_in_flight: default_max_in_flight(),
            retry_after_secs: default_retry_after_secs(),
            header_read_timeout_ms: default_header_read_timeout_ms(),
            body_read_timeout_ms: default_body_read_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_connections: default_max_connections(),
            tls: None,
            peer_ca: None,
        }
    }
}

impl Default for ScimConfig {
    fn default() -> Self {
        ScimConfig {
            max_filter_len: default_max_filter_len(),
            max_filter_depth: default_max_filter_depth(),
            default_page_size: default_page_size(),
            max_page_size: default_max_page_size(),
            max_patch_ops: default_max_patch_ops(),
            max_members_per_page: default_max_members_per_page(),
            write_response_members: default_write_response_members(),
            cursor_timeout_secs: default_cursor_timeout_secs(),
            cursor_key: None,
            bulk_max_operations: default_bulk_max_operations(),
            bulk_max_payload_bytes: default_bulk_max_payload_bytes(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sync_writes: true,
            doc_cache_size: default_doc_cache(),
            member_history_entries: default_member_history_entries(),
        }
    }
}

/// `GEOSCIM_*` variables that are not configuration: read by geoscim's other commands (the
/// log filter and format, the tokens of `idp-sim` and `conflicts`) and by its test suite and
/// tools. Every other `GEOSCIM_*` variable must name a config key.
pub const OTHER_ENV: &[&str] = &[
    "LOG",
    "LOG_FORMAT",
    "TOKEN",
    "ADMIN_TOKEN",
    "BIN",
    "BINARY",
    "SCIM2",
    "SIM_SEED",
    "SIM_SEEDS",
    "UPDATE_SCREENSHOT",
    "TERRAFORM_TEST",
];

/// Top-level keys: a `GEOSCIM_*` variable's first segment must be one of them.
const TOP_LEVEL_KEYS: &[&str] = &[
    "region",
    "data_dir",
    "public_url",
    "http",
    "scim",
    "storage",
    "tokens",
    "admin_tokens",
    "replication",
    "dns",
    "tenants",
    "dashboard",
    "oauth",
    "events",
];

impl Config {
    /// Load `path`, apply overrides from `env` (pairs of name and value), then validate.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string(), env)
    }

    /// Parse TOML text (named `origin` in errors), apply environment overrides, validate.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        apply_env(&mut table, env)?;
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: format!("{origin} (after environment overrides)"),
                    message: e.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }
}

/// Apply `GEOSCIM_*` overrides to the parsed table. A variable whose first segment is no
/// top-level key (and not one of [`OTHER_ENV`]) is an error; a wrong nested key is caught by
/// the schema (`deny_unknown_fields`) when the table is read.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if OTHER_ENV.contains(&rest) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if !TOP_LEVEL_KEYS.contains(&path[0].as_str()) || path.iter().any(String::is_empty) {
            return Err(ConfigError::UnknownEnv {
                name,
                keys: TOP_LEVEL_KEYS.join(", "),
            });
        }
        let value = parse_env_value(&raw);
        let mut node = &mut *table;
        for key in &path[..path.len() - 1] {
            let entry = node
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            node = entry.as_table_mut().expect("just made a table");
        }
        node.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

/// A TOML value when the text is one, else the text as a string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_fill_everything_but_region_and_data_dir() {
        let c = Config::from_toml("region = \"a\"\ndata_dir = \"d\"", "t", []).unwrap();
        assert_eq!(c.http.listen, default_listen());
        assert_eq!(c.scim.max_page_size, 1000);
        assert!(c.storage.sync_writes);
    }

    #[test]
    fn numeric_keys_out_of_range_are_refused_naming_the_key() {
        let base = "region = \"a\"\ndata_dir = \"d\"\n[replication]\ncerts_dir = \"c\"\nwrite_quorum = 1\n";
        for (name, value, key) in [
            (
                "GEOSCIM_HTTP__MAX_BODY_BYTES",
                "1000000000",
                "http.max_body_bytes",
            ),
            (
                "GEOSCIM_SCIM__MAX_FILTER_DEPTH",
                "100000",
                "scim.max_filter_depth",
            ),
            (
                "GEOSCIM_STORAGE__DOC_CACHE_SIZE",
                "1000000000",
                "storage.doc_cache_size",
            ),
            (
                "GEOSCIM_REPLICATION__QUORUM_TIMEOUT_MS",
                "0",
                "replication.quorum_timeout_ms",
            ),
            (
                "GEOSCIM_REPLICATION__LOOKUP_TIMEOUT_MS",
                "86400000",
                "replication.lookup_timeout_ms",
            ),
            (
                "GEOSCIM_REPLICATION__TRUNCATE_INTERVAL_MS",
                "5",
                "replication.truncate_interval_ms",
            ),
            (
                "GEOSCIM_REPLICATION__START_HOLD_MS",
                "3600000",
                "replication.start_hold_ms",
            ),
        ] {
            let e = Config::from_toml(base, "t", env(&[(name, value)])).unwrap_err();
            assert!(e.to_string().contains(key), "{name}: {e}");
        }
        // 0 turns an interval off.
        Config::from_toml(
            base,
            "t",
            env(&[("GEOSCIM_REPLICATION__TRUNCATE_INTERVAL_MS", "0")]),
        )
        .unwrap();
    }

    #[test]
    fn an_environment_variable_that_names_no_key_is_an_error_naming_it() {
        for name in [
            "GEOSCIM_HTTTP__LISTEN",
            "GEOSCIM_UNRELATED_THING",
            "GEOSCIM_HTTP____X",
        ] {
            let e = Config::from_toml("region = \"a\"\ndata_dir = \"d\"", "t", env(&[(name, "1")]))
                .unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
        // A wrong nested key is refused by the schema, naming the key.
        let e = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"",
            "t",
            env(&[("GEOSCIM_HTTP__LISTN", "127.0.0.1:1")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
    }

    /// Every key a config serialises to is one [`apply_env`] accepts (a new top-level section
    /// must be added to `TOP_LEVEL_KEYS`).
    #[test]
    fn every_top_level_key_is_known_to_the_environment_overrides() {
        let mut c = Config::from_toml("region = \"a\"\ndata_dir = \"d\"", "t", []).unwrap();
        c.public_url = Some("https://x".into());
        let table = toml::Table::try_from(&c).unwrap();
        for key in table.keys() {
            assert!(TOP_LEVEL_KEYS.contains(&key.as_str()), "{key} missing");
        }
    }

    #[test]
    fn environment_overrides_nested_keys_and_parses_toml_values() {
        let c = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"",
            "t",
            env(&[
                ("GEOSCIM_DATA_DIR", "/tmp/x"),
                ("GEOSCIM_HTTP__LISTEN", "127.0.0.1:0"),
                ("GEOSCIM_SCIM__MAX_PAGE_SIZE", "50"),
                ("GEOSCIM_SCIM__DEFAULT_PAGE_SIZE", "10"),
                (
                    "GEOSCIM_TOKENS",
                    &format!("[{{tenant=\"t1\", sha256=\"{}\"}}]", "a".repeat(64)),
                ),
                ("GEOSCIM_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http.listen.port(), 0);
        assert_eq!(c.scim.max_page_size, 50);
        assert_eq!(c.tokens[0].tenant, "t1");
    }

    #[test]
    fn admin_tokens_come_from_the_file_or_the_environment_and_are_validated() {
        let file = format!(
            "region = \"a\"\ndata_dir = \"d\"\n[[admin_tokens]]\nsha256 = \"{}\"",
            "b".repeat(64)
        );
        let c = Config::from_toml(&file, "t", []).unwrap();
        assert_eq!(c.admin_tokens[0].sha256, "b".repeat(64));
        assert!(c.tokens.is_empty(), "admin tokens are not tenant tokens");

        let c = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"",
            "t",
            env(&[(
                "GEOSCIM_ADMIN_TOKENS",
                &format!("[{{sha256=\"{}\"}}]", "c".repeat(64)),
            )]),
        )
        .unwrap();
        assert_eq!(c.admin_tokens[0].sha256, "c".repeat(64));

        let err = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"",
            "t",
            env(&[("GEOSCIM_ADMIN_TOKENS", "[{sha256=\"abc\"}]")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("admin_tokens.sha256"), "{err}");
        // An admin token has no tenant: a stray `tenant` key is an error, not ignored.
        let err = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"",
            "t",
            env(&[(
                "GEOSCIM_ADMIN_TOKENS",
                &format!("[{{tenant=\"t\", sha256=\"{}\"}}]", "c".repeat(64)),
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tenant"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = Config::from_toml("region = \"a\"\ndata_dir = \"d\"\nlisten = 1", "t", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        let err = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"",
            "t",
            env(&[("GEOSCIM_HTTP__LISTN", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn paging_and_bulk_limits_are_validated_naming_the_key() {
        for (line, key) in [
            ("cursor_timeout_secs = 0", "scim.cursor_timeout_secs"),
            ("cursor_key = \"abc\"", "scim.cursor_key"),
            (
                "cursor_key = \"zz00112233445566778899aabbccddeeff\"",
                "scim.cursor_key",
            ),
            ("bulk_max_operations = 0", "scim.bulk_max_operations"),
            (
                "bulk_max_payload_bytes = 100",
                "scim.bulk_max_payload_bytes",
            ),
        ] {
            let err = Config::from_toml(
                &format!("region = \"a\"\ndata_dir = \"d\"\n[scim]\n{line}"),
                "t",
                [],
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
        let ok = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"\n[scim]\n\
             cursor_key = \"00112233445566778899aabbccddeeff\"\nbulk_max_operations = 5",
            "t",
            [],
        )
        .unwrap();
        assert_eq!(ok.scim.bulk_max_operations, 5);
        assert_eq!(ok.scim.cursor_timeout_secs, 600);
    }

    #[test]
    fn event_feeds_need_oauth_a_valid_delivery_and_sane_waits() {
        let base = "region = \"a\"\ndata_dir = \"d\"\n";
        let oauth = "[oauth]\nsigning_key = {kid = \"k\", file = \"k.pem\"}\n[[oauth.keys]]\n\
                     kid = \"k\"\nx = \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"\n";
        let err = |text: String| Config::from_toml(&text, "t", []).unwrap_err().to_string();
        let e = err(format!(
            "{base}[tenants.acme.events]\ndelivery = \"poll\"\n"
        ));
        assert!(
            e.contains("tenants.<name>.events") && e.contains("[oauth]"),
            "{e}"
        );
        let e = err(format!(
            "{base}{oauth}[tenants.acme.events]\ndelivery = \"push\"\n\
             push_url = \"http://rx.example/e\"\n"
        ));
        assert!(e.contains("acme") && e.contains("push_url"), "{e}");
        let e = err(format!(
            "{base}{oauth}[tenants.acme.events]\ndelivery = \"mail\"\n"
        ));
        assert!(e.contains("delivery") || e.contains("mail"), "{e}");
        let e = err(format!(
            "{base}[events]\npush_backoff_ms = 5000\npush_backoff_max_ms = 100\n"
        ));
        assert!(e.contains("events.push_backoff_max_ms"), "{e}");
        let e = err(format!("{base}[events]\npoll_wait_ms = 40000\n"));
        assert!(e.contains("events.poll_wait_ms"), "{e}");
        let ok = Config::from_toml(
            &format!("{base}{oauth}[tenants.acme.events]\ndelivery = \"poll\"\n"),
            "t",
            [],
        )
        .unwrap();
        assert_eq!(
            ok.tenants["acme"].events.as_ref().unwrap().max_pending,
            100_000
        );
    }

    #[test]
    fn validation_names_the_key() {
        let err = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"\n[scim]\ndefault_page_size = 5000",
            "t",
            [],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("scim.default_page_size"), "{err}");
        let err = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"\n[replication]\ncerts_dir = \"c\"\n\
             write_quorum = 1\ndigest_interval_ms = 10",
            "t",
            [],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("replication.digest_interval_ms"), "{err}");
        let c = Config::from_toml(
            "region = \"a\"\ndata_dir = \"d\"\n[replication]\ncerts_dir = \"c\"\nwrite_quorum = 1",
            "t",
            env(&[("GEOSCIM_REPLICATION__DIGEST_INTERVAL_MS", "0")]),
        )
        .unwrap();
        assert_eq!(c.replication.unwrap().digest_interval_ms, 0);
        let err = Config::from_toml("region = \"A B\"\ndata_dir = \"d\"", "t", [])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`region`"), "{err}");
    }
}

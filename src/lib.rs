//! geoscim: an active-active, multi-region SCIM 2.0 service provider.
//!
//! # Layout
//! - `ids`: tenant, region and resource ids; normalisation of unique values; the deterministic
//!   user ids that make replayed POSTs land on one document. Imports nothing of ours.
//! - `config`: the region file (TOML), `GEOSCIM_*` environment overrides, `validate()`.
//! - `scim`: the pure SCIM core: schemas and discovery documents, filters (parse, print,
//!   evaluate), PATCH, validation of POST/PUT bodies, listing (sort, page, projection), sealed
//!   list cursors (`cursor`), bulk requests and their `bulkId` references (`bulk`), errors.
//!   No I/O.
//! - `conflict`: the pure conflict rules: the document layout they live in (`layout`), the
//!   detection of what each merge decided (`detect`, one record per losing value, deterministic
//!   ids), the userName collision rule, and resource histories (`history`). Reads in-memory
//!   Automerge documents; no I/O; imports nothing of ours.
//! - `store`: the only code that touches RocksDB and writes Automerge documents: documents,
//!   materialised views, indexes, membership records (`members`), per-tenant counters, the
//!   replication log and its truncation (`log`), snapshots for bootstrap (`snapshot`),
//!   tombstones, conflict records, the format-2 → 3 migration; one synced write batch per
//!   request.
//! - `events`: SCIM events (RFC 9967): the intent a write records in its last log entry, the
//!   SET made of it, the RFC 8936 poll request. Pure. Feeds live in `store`, polls in
//!   `api::events`, push delivery and the feeds' bound in `delivery`.
//! - `replication`: replication between regions: the sans-IO protocol core (wire format,
//!   per-origin marks, `Replicator`, snapshot bootstrap), the QUIC transport with mutual TLS (`quic`, the only quinn
//!   user), cluster certificates (`certs`), and the runtime that wires them to the store (`node`).
//! - `dns`: geo-DNS: the pure routing core (`routing`: nearest healthy region for a client or
//!   its ECS prefix, scope, hysteresis, fail-open, tenant home regions), the zone (`zone`,
//!   pure), per-source rate limits (`ratelimit`, pure), the responder (`server`, the only
//!   hickory-server user) and the `/health` prober (`prober`) feeding the shared `View`.
//! - `idp_sim`: `geoscim idp-sim`: a provisioning client that follows DNS (hickory-resolver),
//!   runs a bounded IdP-like workload with retries, and reads every acknowledged write back
//!   from every region.
//! - `local_cluster`: `geoscim up`, the ready-made local cluster of `regions/local/`.
//! - `api`: the axum routers (SCIM, `/health`, `/metrics`, and the admin API `api::admin`:
//!   conflict log and resource histories behind admin tokens): auth, admission and timeouts,
//!   SCIM error mapping, rendering of resources with paged members (`render`), lists (`list`),
//!   cursor pages (`paging`, RFC 9865) and `POST /Bulk` (`bulk`, each operation through the
//!   single-resource handlers).
//! - `oauth`: OAuth 2.0 client credentials: clients and their hashed secrets, token request
//!   parsing, the JWT access tokens (claims, EdDSA signing, verification against every
//!   region's public key) and Ed25519 key files. Pure but for the key files; time is a
//!   parameter. The HTTP side is `api::oauth` (`POST /oauth/token`, bearer JWTs).
//! - `dashboard`: the conflict dashboard at `/dashboard` (one embedded page; sign-in with an
//!   admin token into a server-side session behind an HttpOnly cookie), the cluster view it
//!   shows (`cluster`), and the charts' ring buffer of samples (`samples`). Its data comes from
//!   the admin API (`api::admin_live`: cluster, pending offboardings, the live conflict feed,
//!   resources, samples).
//! - `tls`: HTTPS for the listener (rustls, ring): certificate files checked at start, the
//!   certificate store every handshake reads and its reload on SIGHUP or file change
//!   (`reload`), and CA files for this process's own HTTPS clients (`client`).
//! - `server`: wiring only: bind the listeners a file names; on given listeners, open the
//!   store, gather tokens, start replication and DNS, serve HTTP(S) until shutdown.
//! - `admin_client`: the HTTP client of the admin API and the table `geoscim conflicts` prints.
//! - `cli`: the thin command line over `server` and `admin_client`.
//!
//! Dependencies point mostly one way: `cli → {server, local_cluster, admin_client, idp_sim} →
//! {api, dashboard, replication, dns} → store → conflict → scim`, with `ids` and `config` below
//! everything. Known exceptions: `api` reads `dns::View` for `/health` and `/metrics` and
//! mounts the dashboard's routes (which read `api`'s health); `store` takes one constant from
//! `replication::wire`; `api`, `server` and `cli` use `oauth`, which imports only `config`.
//! `docs/ARCHITECTURE.md` has the map.

pub mod admin_client;
pub mod api;
pub mod cli;
pub mod config;
pub mod conflict;
pub mod dashboard;
pub mod delivery;
pub mod dns;
pub mod events;
pub mod idp_sim;
pub mod ids;
pub mod local_cluster;
pub mod oauth;
pub mod replication;
pub mod scim;
pub mod server;
pub mod store;
pub mod tls;

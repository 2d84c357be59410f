//! Storage: the only code that touches RocksDB and writes Automerge documents.
//!
//! Every write is one RocksDB write batch holding the Automerge document, the materialised SCIM
//! view, the secondary index changes and a replication log entry, written with a synced WAL
//! before the request is answered. Concurrent writers share fsyncs: RocksDB groups the writes of
//! concurrent threads into one WAL sync (group commit), so callers run writes on a blocking
//! thread pool and many requests in flight amortise the disk.
//!
//! Column families (format 2, recorded in `meta`):
//! - `docs`: Automerge bytes per resource, tombstones included (needed for delete-wins later);
//! - `views`: materialised SCIM JSON of live resources, for reads, lists and filters;
//! - `index`: (tenant, type, attribute, normalised value, id) for userName, externalId,
//!   emails.value and group displayName, plus reverse group membership;
//! - `log`: (origin region, sequence) → changed resource and its Automerge change bytes;
//! - `conflicts`: conflict records by time and by id (an index of the records documents carry);
//! - `peers`: reserved;
//! - `meta`: format version, region identity, tokens created on first start, health probe, and
//!   the digest of every document's heads (an XOR kept by a merge operator, so it changes in the
//!   same batch as the documents).

pub mod doc;
pub mod keys;
#[cfg(test)]
mod laws;
mod log;

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use automerge::{ActorId, AutoCommit};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde_json::{Map, Value};

use crate::conflict::{self, Conflict, ConflictQuery, Rule};
use crate::ids;
use crate::scim::schema::ResourceKind;
use crate::scim::ScimError;
use doc::{DocError, Stamp};

pub use log::LogEntry;

/// On-disk format version. Bump it with a migration step when any stored layout changes.
pub const FORMAT_VERSION: &str = "2";

const CF_DOCS: &str = "docs";
const CF_VIEWS: &str = "views";
const CF_INDEX: &str = "index";
const CF_LOG: &str = "log";
const CF_PEERS: &str = "peers";
const CF_CONFLICTS: &str = "conflicts";
const CF_META: &str = "meta";
const ALL_CFS: &[&str] = &[
    CF_DOCS,
    CF_VIEWS,
    CF_INDEX,
    CF_LOG,
    CF_PEERS,
    CF_CONFLICTS,
    CF_META,
];

/// Lock stripes: writes to one resource (or one userName) are serialised, others run in parallel.
const STRIPES: usize = 1024;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No live resource with this id (never existed, or deleted).
    #[error("{0} not found")]
    NotFound(String),
    /// `If-Match` named another version.
    #[error("version mismatch: current version is {current}")]
    PreconditionFailed { current: String },
    /// The request was rejected by SCIM rules (validation, uniqueness...).
    #[error(transparent)]
    Scim(#[from] ScimError),
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    /// An Automerge document could not be read or written.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// Stored bytes are not what this version writes.
    #[error("corrupt or foreign data: {0}")]
    Corrupt(String),
}

impl From<automerge::AutomergeError> for StoreError {
    fn from(e: automerge::AutomergeError) -> Self {
        StoreError::Doc(DocError::Automerge(e))
    }
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// This region's name (actor and log origin).
    pub region: String,
    /// Sync the WAL on every write batch.
    pub sync_writes: bool,
    /// Automerge documents kept loaded.
    pub doc_cache_size: usize,
}

/// A resource as served: the materialised view and its version (weak ETag).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub view: Value,
    pub version: String,
}

impl Stored {
    fn from_view(view: Value) -> Stored {
        let version = view["meta"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Stored { view, version }
    }
}

/// A resource a region asks its peers for (no false 404s during replication lag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Id {
        tenant: String,
        kind: ResourceKind,
        id: String,
    },
    UserName {
        tenant: String,
        user_name: String,
    },
}

impl Lookup {
    /// Encode for the wire (`Fetch.key`).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Lookup::Id { tenant, kind, id } => {
                format!("i\0{tenant}\0{}\0{id}", kind.name()).into_bytes()
            }
            Lookup::UserName { tenant, user_name } => {
                format!("u\0{tenant}\0{user_name}").into_bytes()
            }
        }
    }

    /// Decode; `None` for bytes this version does not understand.
    pub fn decode(bytes: &[u8]) -> Option<Lookup> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(4, '\0');
        let tag = parts.next()?;
        let tenant = parts.next()?.to_string();
        if !crate::ids::is_valid_name(&tenant) {
            return None;
        }
        match tag {
            "i" => {
                let kind = match parts.next()? {
                    "User" => ResourceKind::User,
                    "Group" => ResourceKind::Group,
                    _ => return None,
                };
                Some(Lookup::Id {
                    tenant,
                    kind,
                    id: parts.next()?.to_string(),
                })
            }
            "u" => {
                let rest: Vec<&str> = parts.collect();
                Some(Lookup::UserName {
                    tenant,
                    user_name: rest.join("\0"),
                })
            }
            _ => None,
        }
    }
}

/// What applying a peer's entries did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Changes merged into documents.
    pub applied: usize,
    /// Entries this version could not decode (logged, not applied).
    pub undecodable: usize,
    /// Conflict records new to this region.
    pub conflicts: usize,
}

/// A document's state before a merge: its digest term and the conflict records it held.
struct Before {
    term: [u8; 32],
    recorded: BTreeSet<String>,
}

impl Before {
    fn of(key: &[u8], doc: &mut AutoCommit) -> Result<Before, StoreError> {
        Ok(Before {
            term: heads_term(key, doc),
            recorded: conflict::recorded_ids(doc)
                .map_err(DocError::from)?
                .into_iter()
                .collect(),
        })
    }
}

/// What staging merged documents added to a batch.
#[derive(Default)]
struct Merge {
    /// Local log entries (conflict records written into documents).
    local: Vec<u64>,
    /// The heads-digest delta.
    delta: [u8; 32],
    /// Rules of the conflict records newly indexed.
    indexed: Vec<Rule>,
    /// (tenant, userName) of live users whose userName the merge set or changed: checked for a
    /// collision after the commit.
    users: Vec<(String, String)>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new resource.
    New(Stored),
    /// The same userName with the same attributes already exists: an idempotent replay.
    Replay(Stored),
}

/// The change an update function asks for: the new stored attributes and the attributes it
/// wrote explicitly (a sticky flag among them is re-asserted even if unchanged).
pub type UpdateResult = Result<(Map<String, Value>, Vec<String>), ScimError>;

/// The region's store.
pub struct Store {
    db: DB,
    region: String,
    actor: ActorId,
    write_opts: WriteOptions,
    cache: Mutex<lru::LruCache<Vec<u8>, AutoCommit>>,
    id_locks: Vec<Mutex<()>>,
    name_locks: Vec<Mutex<()>>,
    next_seq: AtomicU64,
    /// Contiguous per-origin high-water marks of the log (what replication may offer).
    marks: log::Marks,
    /// Called after every local commit, so replication can push the new entry at once.
    on_commit: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// XOR over documents of sha256(key, sorted heads), of exactly the committed writes the
    /// marks reflect: updated together with the marks, under this lock.
    digest: Mutex<[u8; 32]>,
    /// Conflict records this process indexed, per rule (in [`Rule::ALL`] order).
    conflicts_indexed: [AtomicU64; 5],
}

/// The meta key of the persisted heads digest.
const DIGEST_KEY: &[u8] = b"digest";

/// RocksDB merge operator for [`DIGEST_KEY`]: XOR of every operand into the existing value.
fn xor_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc = [0u8; 32];
    for part in existing.into_iter().chain(operands) {
        for (a, b) in acc.iter_mut().zip(part) {
            *a ^= b;
        }
    }
    Some(acc.to_vec())
}

fn xor_into(acc: &mut [u8; 32], delta: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(delta) {
        *a ^= b;
    }
}

/// A document's term in the heads digest: sha256(key, sorted heads); zero for no document.
/// A tombstone's term is sha256(key, "deleted") whatever its heads, so collecting it (see
/// [`Store::collect_tombstones`]) leaves the digest as it was, and regions that collected at
/// different times still compare equal.
fn heads_term(key: &[u8], doc: &mut AutoCommit) -> [u8; 32] {
    let mut heads = doc.get_heads();
    if heads.is_empty() {
        return [0; 32];
    }
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, key);
    if doc::is_deleted(doc) {
        sha2::Digest::update(&mut h, b"deleted");
    } else {
        heads.sort();
        for head in &heads {
            sha2::Digest::update(&mut h, head.0);
        }
    }
    sha2::Digest::finalize(h).into()
}

/// The meta key of a tombstone waiting to be collected.
fn tomb_key(doc_key: &[u8]) -> Vec<u8> {
    let mut k = b"tomb\0".to_vec();
    k.extend_from_slice(doc_key);
    k
}

/// What a collected tombstone leaves in `docs`: an empty value. The key stays, so the id is
/// never reused and changes that still arrive for it are dropped (delete wins).
const COLLECTED: &[u8] = b"";

/// A tombstone waiting for every region to see its delete.
#[derive(serde::Serialize, serde::Deserialize)]
struct Tomb {
    tenant: String,
    id: String,
    /// This region's marks when the delete took effect here: a region whose marks reach these
    /// holds every change this region had, the delete and its dependencies included.
    marks: std::collections::BTreeMap<String, u64>,
}

fn stripe<T: Hash>(value: T) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    (h.finish() as usize) % STRIPES
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // A poisoned stripe only means another request panicked while holding it; the data it
    // protects lives in RocksDB, which that request either committed or did not.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Open (or create) the store in `path`. Refuses a directory written by another region or
    /// by an unknown format version.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        // Group commit: while one group of writers waits for the WAL sync, the next group
        // already writes its memtable, so concurrent requests share fsyncs instead of queueing.
        opts.set_enable_pipelined_write(true);
        // Reused (already allocated) WAL files make each fdatasync flush data only, not file size
        // metadata.
        opts.set_recycle_log_file_num(4);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf_opts = Options::default();
            if *name == CF_META {
                cf_opts.set_merge_operator_associative("xor-digest", xor_merge);
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let meta = db.cf_handle(CF_META).expect("meta cf");
        match db.get_cf(meta, b"format")? {
            None => {
                db.put_cf(meta, b"format", FORMAT_VERSION)?;
                db.put_cf(meta, b"region", options.region.as_bytes())?;
            }
            Some(v) if v == FORMAT_VERSION.as_bytes() => {
                let region = db.get_cf(meta, b"region")?.unwrap_or_default();
                if region != options.region.as_bytes() {
                    return Err(StoreError::Corrupt(format!(
                        "{} holds region {:?}, not {:?}",
                        path.display(),
                        String::from_utf8_lossy(&region),
                        options.region
                    )));
                }
            }
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "{} has storage format {:?}; this build reads format {FORMAT_VERSION} \
                     (format 1 predates the conflict rules and has no migration: move the \
                     folder away to start empty and let the region catch up from its peers)",
                    path.display(),
                    String::from_utf8_lossy(&v)
                )))
            }
        }
        let log_cf = db.cf_handle(CF_LOG).expect("log cf");
        let next_seq = log::last_seq(&db, log_cf, &options.region)? + 1;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(options.sync_writes);
        // A crash between two local commits can leave a hole below the last sequence number;
        // fill it so this origin's log stays contiguous for replication.
        let marks = log::Marks::scan(&db, log_cf)?;
        let holes = marks.holes(&options.region);
        if !holes.is_empty() {
            let mut batch = WriteBatch::default();
            for seq in &holes {
                batch.put_cf(log_cf, keys::log(&options.region, *seq), b"");
            }
            db.write_opt(batch, &write_opts)?;
            for seq in holes {
                marks.committed(&options.region, seq);
            }
        }
        let mut digest = [0u8; 32];
        if let Some(v) = db.get_cf(meta, DIGEST_KEY)? {
            if v.len() == 32 {
                digest.copy_from_slice(&v);
            }
        }
        let cache_size = NonZeroUsize::new(options.doc_cache_size.max(1)).expect("nonzero");
        Ok(Store {
            actor: ActorId::from(options.region.as_bytes()),
            region: options.region,
            write_opts,
            cache: Mutex::new(lru::LruCache::new(cache_size)),
            id_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            name_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            next_seq: AtomicU64::new(next_seq),
            marks,
            on_commit: std::sync::OnceLock::new(),
            digest: Mutex::new(digest),
            conflicts_indexed: Default::default(),
            db,
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// This region's name.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// A write stamp for now.
    pub fn stamp(&self) -> Stamp {
        let now = time::OffsetDateTime::now_utc();
        Stamp {
            region: self.region.clone(),
            at: now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            millis: (now.unix_timestamp_nanos() / 1_000_000) as i64,
        }
    }

    /// The live resource `id`, or `None`.
    pub fn get(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
    ) -> Result<Option<Stored>, StoreError> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_VIEWS), keys::resource(tenant, kind, id))?
        else {
            return Ok(None);
        };
        let view: Value = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("view of {id}: {e}")))?;
        Ok(Some(Stored::from_view(view)))
    }

    /// Ids whose indexed `attr` (see [`index_entries`]) has the normalised value of `value`.
    pub fn lookup(
        &self,
        tenant: &str,
        kind: ResourceKind,
        attr: &str,
        value: &str,
    ) -> Result<Vec<String>, StoreError> {
        let norm = normalize_indexed(attr, value);
        let prefix = keys::index_prefix(tenant, kind, attr, &norm);
        self.prefix_keys(CF_INDEX, &prefix)
            .map(|r| r.map(|k| String::from_utf8_lossy(keys::last_part(&k)).into_owned()))
            .collect()
    }

    /// All live views of one type in one tenant, in id order.
    pub fn scan(
        &self,
        tenant: &str,
        kind: ResourceKind,
    ) -> impl Iterator<Item = Result<Value, StoreError>> + '_ {
        let prefix = keys::resource_prefix(tenant, kind);
        self.db
            .iterator_cf(
                self.cf(CF_VIEWS),
                IteratorMode::From(&prefix, Direction::Forward),
            )
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|r| {
                let (_, v) = r?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt(format!("view: {e}")))
            })
    }

    /// How many live resources of one type one tenant has (keys only, no parsing).
    pub fn count(&self, tenant: &str, kind: ResourceKind) -> Result<usize, StoreError> {
        let prefix = keys::resource_prefix(tenant, kind);
        let mut n = 0;
        for key in self.prefix_keys(CF_VIEWS, &prefix) {
            key?;
            n += 1;
        }
        Ok(n)
    }

    fn prefix_keys<'a>(
        &'a self,
        cf: &str,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<Box<[u8]>, StoreError>> + 'a {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .map(|r| r.map(|(k, _)| k).map_err(StoreError::from))
    }

    /// The groups a user (or group) is a direct member of, as SCIM `groups` values, in group id
    /// order. `base` is the SCIM base URL for `$ref`.
    pub fn groups_of(
        &self,
        tenant: &str,
        member: &str,
        base: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let prefix = keys::member_of_prefix(tenant, member);
        let mut out = Vec::new();
        for key in self.prefix_keys(CF_INDEX, &prefix) {
            let key = key?;
            let group = String::from_utf8_lossy(keys::last_part(&key)).into_owned();
            if let Some(g) = self.get(tenant, ResourceKind::Group, &group)? {
                let mut v = Map::new();
                v.insert("value".into(), Value::String(group.clone()));
                v.insert(
                    "$ref".into(),
                    Value::String(format!("{base}/Groups/{group}")),
                );
                if let Some(d) = g.view.get("displayName") {
                    v.insert("display".into(), d.clone());
                }
                v.insert("type".into(), Value::String("direct".into()));
                out.push(Value::Object(v));
            }
        }
        Ok(out)
    }

    /// Which of `ids` are live users or groups of this tenant (members that point at deleted
    /// resources are never listed).
    pub fn live_ids(&self, tenant: &str, ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        let views = self.cf(CF_VIEWS);
        let user_keys: Vec<_> = ids
            .iter()
            .map(|id| (views, keys::resource(tenant, ResourceKind::User, id)))
            .collect();
        let group_keys: Vec<_> = ids
            .iter()
            .map(|id| (views, keys::resource(tenant, ResourceKind::Group, id)))
            .collect();
        let users = self.db.multi_get_cf(user_keys);
        let groups = self.db.multi_get_cf(group_keys);
        users
            .into_iter()
            .zip(groups)
            .map(|(u, g)| Ok(u?.is_some() || g?.is_some()))
            .collect()
    }

    /// Create a resource from normalised attributes (no `schemas`, `id`, `meta`).
    ///
    /// Users get a deterministic id from (tenant, userName), so concurrent or replayed POSTs of
    /// one user meet on one document. A POST whose userName is taken answers `Replay` when the
    /// existing user already has exactly these attributes (the retry of a POST whose response was
    /// lost) and a `uniqueness` error otherwise.
    pub fn create(
        &self,
        tenant: &str,
        kind: ResourceKind,
        attrs: Map<String, Value>,
    ) -> Result<Created, StoreError> {
        match kind {
            ResourceKind::Group => {
                let id = ids::random_id();
                let _g = lock(&self.id_locks[stripe((tenant, &id))]);
                self.write_new(tenant, kind, &id, attrs).map(Created::New)
            }
            ResourceKind::User => {
                let user_name = attrs
                    .get("userName")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ScimError::InvalidValue("userName is required".into()))?
                    .to_string();
                let _n = lock(
                    &self.name_locks[stripe((tenant, ids::normalize_case_insensitive(&user_name)))],
                );
                if let Some(existing) = self
                    .lookup(tenant, kind, "userName", &user_name)?
                    .into_iter()
                    .next()
                {
                    if let Some(stored) = self.get(tenant, kind, &existing)? {
                        if same_attrs(&stored.view, &attrs) {
                            return Ok(Created::Replay(stored));
                        }
                    }
                    return Err(ScimError::Uniqueness(format!(
                        "userName {user_name:?} is already taken"
                    ))
                    .into());
                }
                for n in 0..64 {
                    let id = ids::user_id_candidate(tenant, &user_name, n);
                    let _g = lock(&self.id_locks[stripe((tenant, &id))]);
                    let key = keys::resource(tenant, kind, &id);
                    if self.db.get_pinned_cf(self.cf(CF_DOCS), &key)?.is_some() {
                        continue; // held by a renamed user or a tombstone
                    }
                    return self.write_new(tenant, kind, &id, attrs).map(Created::New);
                }
                Err(StoreError::Corrupt(format!(
                    "no free id for userName {user_name:?}"
                )))
            }
        }
    }

    fn write_new(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        attrs: Map<String, Value>,
    ) -> Result<Stored, StoreError> {
        let stamp = self.stamp();
        let mut doc = doc::create(kind, id, self.actor.clone(), &stamp)?;
        let explicit: Vec<String> = attrs.keys().cloned().collect();
        doc::write_attrs(&mut doc, kind, &Map::new(), &attrs, &explicit, &stamp)?;
        doc.put_modified_and_commit(&stamp);
        let view = doc::materialize(&mut doc, kind)?;
        // A new document's only change is the whole document: store those bytes once (Automerge
        // loads a sequence of changes as well as a saved document).
        let change = doc.save_after(&[]);
        let key = keys::resource(tenant, kind, id);
        let mut batch = WriteBatch::default();
        let delta = self.stage_doc(&mut batch, &key, [0; 32], &mut doc, Some(&change));
        self.stage_view(&mut batch, tenant, kind, id, None, Some(&view))?;
        let seq = self.stage_log(&mut batch, tenant, kind, id, &change);
        self.commit(batch, &[seq], None, delta)?;
        self.cache_put(key, doc);
        Ok(Stored::from_view(view))
    }

    /// Update a live resource: `f` maps its stored attributes to the new ones. Only what differs
    /// is written; a change that writes nothing answers the current resource without a write.
    /// A new userName taken by another user is a `uniqueness` error.
    pub fn update(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
    ) -> Result<Stored, StoreError> {
        self.update_recording(tenant, kind, id, if_match, f, &[])
    }

    /// [`Store::update`] that also stores conflict records in the document (and indexes them).
    fn update_recording(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
        f: &dyn Fn(&Map<String, Value>) -> UpdateResult,
        records: &[Conflict],
    ) -> Result<Stored, StoreError> {
        // A userName change must hold the new name's lock (always taken before the id lock), so
        // the first pass learns the new name and a second pass writes under both locks.
        let mut name_guard: Option<(String, MutexGuard<'_, ()>)> = None;
        for _ in 0..4 {
            let id_guard = lock(&self.id_locks[stripe((tenant, id))]);
            let key = keys::resource(tenant, kind, id);
            let mut doc = self.load_live(&key, id)?;
            let current = doc::version(&mut doc);
            if let Some(tag) = if_match {
                if !etag_matches(tag, &current) {
                    self.cache_put(key, doc);
                    return Err(StoreError::PreconditionFailed { current });
                }
            }
            let old = doc::read_attrs(&doc, kind)?;
            let (new, explicit) = match f(&old) {
                Ok(v) => v,
                Err(e) => {
                    self.cache_put(key, doc);
                    return Err(e.into());
                }
            };
            if kind == ResourceKind::User {
                let old_name = old
                    .get("userName")
                    .and_then(Value::as_str)
                    .map(ids::normalize_case_insensitive);
                let new_name = new
                    .get("userName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let new_norm = ids::normalize_case_insensitive(&new_name);
                if old_name.as_deref() != Some(new_norm.as_str()) {
                    if name_guard.as_ref().map(|(n, _)| n) != Some(&new_norm) {
                        self.cache_put(key, doc);
                        drop(id_guard);
                        drop(name_guard.take());
                        let g = lock(&self.name_locks[stripe((tenant, new_norm.clone()))]);
                        name_guard = Some((new_norm, g));
                        continue;
                    }
                    let taken = self
                        .lookup(tenant, kind, "userName", &new_name)?
                        .into_iter()
                        .any(|other| other != id);
                    if taken {
                        self.cache_put(key, doc);
                        return Err(ScimError::Uniqueness(format!(
                            "userName {new_name:?} is already taken"
                        ))
                        .into());
                    }
                }
            }
            let stamp = self.stamp();
            let heads = doc.get_heads();
            let before = heads_term(&key, &mut doc);
            let old_view = doc::materialize(&mut doc, kind)?;
            let wrote = doc::write_attrs(&mut doc, kind, &old, &new, &explicit, &stamp)?;
            if !(doc::record_conflicts(&mut doc, records)? || wrote) {
                self.cache_put(key, doc);
                return Ok(Stored::from_view(old_view));
            }
            doc.put_modified_and_commit(&stamp);
            let view = doc::materialize(&mut doc, kind)?;
            let change = doc.save_after(&heads);
            let mut batch = WriteBatch::default();
            let mut indexed = Vec::new();
            for record in records {
                if self.stage_record(&mut batch, record)? {
                    indexed.push(record.rule);
                }
            }
            let delta = self.stage_doc(&mut batch, &key, before, &mut doc, None);
            self.stage_view(&mut batch, tenant, kind, id, Some(&old_view), Some(&view))?;
            let seq = self.stage_log(&mut batch, tenant, kind, id, &change);
            self.commit(batch, &[seq], None, delta)?;
            self.count_indexed(&indexed);
            self.cache_put(key, doc);
            return Ok(Stored::from_view(view));
        }
        Err(StoreError::Scim(ScimError::Unavailable(
            "the userName kept changing concurrently; retry".into(),
        )))
    }

    /// Delete a live resource, leaving a tombstone document.
    pub fn delete(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), StoreError> {
        let _g = lock(&self.id_locks[stripe((tenant, id))]);
        let key = keys::resource(tenant, kind, id);
        let mut doc = self.load_live(&key, id)?;
        let current = doc::version(&mut doc);
        if let Some(tag) = if_match {
            if !etag_matches(tag, &current) {
                self.cache_put(key, doc);
                return Err(StoreError::PreconditionFailed { current });
            }
        }
        let stamp = self.stamp();
        let heads = doc.get_heads();
        let before = heads_term(&key, &mut doc);
        let old_view = doc::materialize(&mut doc, kind)?;
        doc::mark_deleted(&mut doc, &stamp)?;
        doc.commit_with(automerge::transaction::CommitOptions::default().with_time(stamp.millis));
        let change = doc.save_after(&heads);
        let mut batch = WriteBatch::default();
        let delta = self.stage_doc(&mut batch, &key, before, &mut doc, None);
        self.stage_view(&mut batch, tenant, kind, id, Some(&old_view), None)?;
        let seq = self.stage_log(&mut batch, tenant, kind, id, &change);
        let mut marks = self.marks.hwm();
        marks.insert(self.region.clone(), seq);
        self.stage_tomb(&mut batch, &key, tenant, id, &marks)?;
        self.commit(batch, &[seq], None, delta)?;
        self.cache_put(key, doc);
        Ok(())
    }

    /// Load a document that must be live (from the cache, else from RocksDB). The caller holds
    /// the id lock and puts the document back (or drops it after a failed write).
    fn load_live(&self, key: &[u8], id: &str) -> Result<AutoCommit, StoreError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(key);
        let doc = match cached {
            Some(doc) => doc,
            None => {
                let Some(bytes) = self.db.get_pinned_cf(self.cf(CF_DOCS), key)? else {
                    return Err(StoreError::NotFound(id.to_string()));
                };
                if bytes.as_ref() == COLLECTED {
                    return Err(StoreError::NotFound(id.to_string()));
                }
                AutoCommit::load(&bytes)?.with_actor(self.actor.clone())
            }
        };
        if doc::is_deleted(&doc) {
            self.cache_put(key.to_vec(), doc);
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(doc)
    }

    fn cache_put(&self, key: Vec<u8>, doc: AutoCommit) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(key, doc);
    }

    /// Stage the view and index changes of a resource going from `old` to `new` (None = absent).
    fn stage_view(
        &self,
        batch: &mut WriteBatch,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), StoreError> {
        let key = keys::resource(tenant, kind, id);
        match new {
            Some(view) => batch.put_cf(
                self.cf(CF_VIEWS),
                &key,
                serde_json::to_vec(view).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ),
            None => batch.delete_cf(self.cf(CF_VIEWS), &key),
        }
        let index = self.cf(CF_INDEX);
        let old_entries: BTreeSet<_> = old.map(|v| index_entries(kind, v)).unwrap_or_default();
        let new_entries: BTreeSet<_> = new.map(|v| index_entries(kind, v)).unwrap_or_default();
        for (attr, value) in old_entries.difference(&new_entries) {
            batch.delete_cf(index, keys::index(tenant, kind, attr, value, id));
        }
        for (attr, value) in new_entries.difference(&old_entries) {
            batch.put_cf(index, keys::index(tenant, kind, attr, value, id), b"");
        }
        if kind == ResourceKind::Group {
            let old_members = old.map(member_ids).unwrap_or_default();
            let new_members = new.map(member_ids).unwrap_or_default();
            for m in old_members.difference(&new_members) {
                batch.delete_cf(index, keys::member_of(tenant, m, id));
            }
            for m in new_members.difference(&old_members) {
                batch.put_cf(index, keys::member_of(tenant, m, id), b"");
            }
        }
        Ok(())
    }

    /// Stage this write's replication log entry; returns its sequence number, which must then go
    /// through [`Store::commit`].
    fn stage_log(
        &self,
        batch: &mut WriteBatch,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
        change: &[u8],
    ) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let entry = LogEntry {
            tenant: tenant.into(),
            kind,
            id: id.into(),
            change: change.to_vec(),
        };
        batch.put_cf(
            self.cf(CF_LOG),
            keys::log(&self.region, seq),
            entry.encode(),
        );
        seq
    }

    /// Stage a document's bytes (`bytes`, else the whole saved document) and its heads-digest
    /// delta from `before`; returns the delta, which [`Store::commit`] applies in memory.
    fn stage_doc(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        before: [u8; 32],
        doc: &mut AutoCommit,
        bytes: Option<&[u8]>,
    ) -> [u8; 32] {
        match bytes {
            Some(b) => batch.put_cf(self.cf(CF_DOCS), key, b),
            None => batch.put_cf(self.cf(CF_DOCS), key, doc.save()),
        }
        let mut delta = before;
        xor_into(&mut delta, &heads_term(key, doc));
        batch.merge_cf(self.cf(CF_META), DIGEST_KEY, delta);
        delta
    }

    /// Write a batch holding the local log entries `local` and the remote entries `remote`
    /// (origin, sequence numbers), then move the marks and the in-memory heads digest together.
    /// On failure a local sequence number would be a hole that stops replication of this
    /// origin, so an empty filler entry takes its place (and `open` fills any hole a crash left).
    fn commit(
        &self,
        batch: WriteBatch,
        local: &[u64],
        remote: Option<(&str, &[u64])>,
        delta: [u8; 32],
    ) -> Result<(), StoreError> {
        match self.db.write_opt(batch, &self.write_opts) {
            Ok(()) => {
                {
                    let mut digest = self.digest.lock().unwrap_or_else(|p| p.into_inner());
                    xor_into(&mut digest, &delta);
                    for seq in local {
                        self.marks.committed(&self.region, *seq);
                    }
                    if let Some((origin, seqs)) = remote {
                        for seq in seqs {
                            self.marks.committed(origin, *seq);
                        }
                    }
                }
                if !local.is_empty() {
                    if let Some(notify) = self.on_commit.get() {
                        notify();
                    }
                }
                Ok(())
            }
            Err(e) => {
                if !local.is_empty() {
                    let mut filler = WriteBatch::default();
                    for seq in local {
                        filler.put_cf(self.cf(CF_LOG), keys::log(&self.region, *seq), b"");
                    }
                    if self.db.write_opt(filler, &self.write_opts).is_ok() {
                        for seq in local {
                            self.marks.committed(&self.region, *seq);
                        }
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Replication log entries of `origin` from `from_seq` on (at most `limit`).
    pub fn log_since(
        &self,
        origin: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEntry)>, StoreError> {
        log::read(&self.db, self.cf(CF_LOG), origin, from_seq, limit)
    }

    /// The highest local log sequence number handed out so far: every local write that has
    /// returned is at or below it (quorum waits use it as their target).
    pub fn last_local_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire).saturating_sub(1)
    }

    /// Register the function called after every local commit (once; later calls are ignored).
    pub fn set_on_commit(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_commit.set(f);
    }

    /// Contiguous high-water marks of the log per origin (what replication may offer peers).
    pub fn log_hwm(&self) -> std::collections::BTreeMap<String, u64> {
        self.marks.hwm()
    }

    /// A digest of every document's heads with the marks it was taken at (one consistent
    /// snapshot), or `None` while some committed entry is above its origin's mark.
    pub fn digest(&self) -> Option<(std::collections::BTreeMap<String, u64>, [u8; 32])> {
        let digest = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        let (hwm, settled) = self.marks.snapshot();
        settled.then_some((hwm, *digest))
    }

    /// Raw log entries of `origin` from `from` on, bounded by count and bytes (at least one).
    pub fn log_read(
        &self,
        origin: &str,
        from: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        log::read_raw(
            &self.db,
            self.cf(CF_LOG),
            origin,
            from,
            max_entries,
            max_bytes,
        )
    }

    /// Apply consecutive log entries of `origin` received from a peer: merge each change into
    /// its document, re-materialise the view and indexes, and log the entry under its origin,
    /// all in one synced batch, so an acknowledgement means the change is durable here.
    /// Entries already held are skipped; an empty entry is a filler (logged, nothing applied);
    /// an entry this version cannot decode is logged (so the log stays contiguous) and counted.
    /// Changes whose Automerge dependencies have not arrived yet stay queued inside the saved
    /// document and take effect when the dependencies come.
    pub fn apply_remote(
        &self,
        origin: &str,
        entries: &[(u64, Vec<u8>)],
    ) -> Result<ApplyReport, StoreError> {
        let mark = self.marks.hwm().get(origin).copied().unwrap_or(0);
        let fresh: Vec<&(u64, Vec<u8>)> = entries.iter().filter(|(seq, _)| *seq > mark).collect();
        let mut report = ApplyReport::default();
        // Group the decodable entries by document, in order.
        let mut by_doc: std::collections::BTreeMap<Vec<u8>, (LogEntry, Vec<&[u8]>)> =
            std::collections::BTreeMap::new();
        for (_, bytes) in &fresh {
            if bytes.is_empty() {
                continue;
            }
            match LogEntry::decode(bytes) {
                Some(e) if crate::ids::is_valid_name(&e.tenant) => {
                    let key = keys::resource(&e.tenant, e.kind, &e.id);
                    by_doc
                        .entry(key)
                        .or_insert_with(|| (e.clone(), Vec::new()))
                        .1
                        .push(&bytes[..]);
                }
                _ => report.undecodable += 1,
            }
        }
        // Lock every touched document's stripe once, in stripe order (no deadlock with other
        // appliers; local writes never wait for a second id stripe while holding one).
        let stripes: BTreeSet<usize> = by_doc
            .values()
            .map(|(e, _)| stripe((e.tenant.as_str(), e.id.as_str())))
            .collect();
        let _guards: Vec<_> = stripes.iter().map(|i| lock(&self.id_locks[*i])).collect();
        let mut batch = WriteBatch::default();
        let mut merge = Merge::default();
        let mut loaded = Vec::new();
        let mut tomb_marks = self.marks.hwm();
        if let Some((seq, _)) = fresh.last() {
            tomb_marks.insert(origin.to_string(), *seq);
        }
        for (key, (first, changes)) in by_doc {
            if self.is_collected(&key)? {
                // Every region saw the delete; what still arrives for it was concurrent with
                // it or older, and the delete wins.
                report.applied += changes.len();
                continue;
            }
            let mut doc = self.load_any(&key)?;
            let before = Before::of(&key, &mut doc)?;
            for bytes in changes {
                let entry = LogEntry::decode(bytes).expect("decoded above");
                doc.load_incremental(&entry.change)?;
                report.applied += 1;
            }
            let resource = (first.tenant.as_str(), first.kind, first.id.as_str());
            self.stage_merged(&mut batch, resource, &mut doc, before, &mut merge)?;
            if doc::is_deleted(&doc) {
                self.stage_tomb(&mut batch, &key, &first.tenant, &first.id, &tomb_marks)?;
            }
            loaded.push((key, doc));
        }
        let seqs: Vec<u64> = fresh.iter().map(|(seq, _)| *seq).collect();
        for (seq, bytes) in &fresh {
            batch.put_cf(self.cf(CF_LOG), keys::log(origin, *seq), bytes);
        }
        self.commit(batch, &merge.local, Some((origin, &seqs)), merge.delta)?;
        self.count_indexed(&merge.indexed);
        report.conflicts = merge.indexed.len();
        for (key, doc) in loaded {
            self.cache_put(key, doc);
        }
        drop(_guards);
        self.settle_user_names(&merge.users)?;
        Ok(report)
    }

    /// The Automerge bytes of the document a peer asks for (see [`Lookup`]), if this region
    /// holds it (tombstones included: a delete must reach the asker too).
    pub fn export(&self, lookup: &Lookup) -> Result<Option<Vec<u8>>, StoreError> {
        let (tenant, kind, id) = match lookup {
            Lookup::Id { tenant, kind, id } => (tenant, *kind, id.clone()),
            Lookup::UserName { tenant, user_name } => {
                match self
                    .lookup(tenant, ResourceKind::User, "userName", user_name)?
                    .into_iter()
                    .next()
                {
                    Some(id) => (tenant, ResourceKind::User, id),
                    None => return Ok(None),
                }
            }
        };
        let key = keys::resource(tenant, kind, &id);
        let _g = lock(&self.id_locks[stripe((tenant.as_str(), id.as_str()))]);
        Ok(self
            .db
            .get_cf(self.cf(CF_DOCS), &key)?
            .filter(|b| b.as_slice() != COLLECTED))
    }

    /// Merge a document a peer sent (for `tenant`) into the local one and re-materialise it.
    /// Its changes reach the log later through normal replication (merging them again then is
    /// a no-op). Returns the resource's type and id.
    pub fn import(&self, tenant: &str, bytes: &[u8]) -> Result<(ResourceKind, String), StoreError> {
        let incoming = AutoCommit::load(bytes)?;
        let kind = doc::kind_of(&incoming)?;
        let id = doc::id_of(&incoming)?;
        let key = keys::resource(tenant, kind, &id);
        let _g = lock(&self.id_locks[stripe((tenant, id.as_str()))]);
        if self.is_collected(&key)? {
            return Ok((kind, id));
        }
        let mut doc = self.load_any(&key)?;
        let before = Before::of(&key, &mut doc)?;
        doc.load_incremental(bytes)?;
        let mut batch = WriteBatch::default();
        let mut merge = Merge::default();
        self.stage_merged(
            &mut batch,
            (tenant, kind, &id),
            &mut doc,
            before,
            &mut merge,
        )?;
        self.commit(batch, &merge.local, None, merge.delta)?;
        self.count_indexed(&merge.indexed);
        self.cache_put(key, doc);
        drop(_g);
        self.settle_user_names(&merge.users)?;
        Ok((kind, id))
    }

    /// Is there any document (live or tombstone) for this id here?
    pub fn knows(&self, tenant: &str, kind: ResourceKind, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_DOCS), keys::resource(tenant, kind, id))?
            .is_some())
    }

    /// Stage a document that received changes from elsewhere (replication or a peer lookup):
    /// the whole document (queued changes included), and the view and index changes from what
    /// is stored now to what the merged document says (none while it is a tombstone or has
    /// no header yet because its creation has not arrived).
    ///
    /// Conflicts the merge shows ([`conflict::detect`]) that the document does not record yet
    /// are written into it as a local change (logged, so they replicate), and every record new
    /// to this region is indexed in `conflicts`.
    fn stage_merged(
        &self,
        batch: &mut WriteBatch,
        (tenant, kind, id): (&str, ResourceKind, &str),
        doc: &mut AutoCommit,
        before: Before,
        merge: &mut Merge,
    ) -> Result<(), StoreError> {
        let key = keys::resource(tenant, kind, id);
        let live = doc::kind_of(doc).is_ok();
        if live {
            let resource = conflict::Resource {
                tenant,
                kind: kind.name(),
                id,
            };
            let found = conflict::detect(doc, resource).map_err(DocError::from)?;
            if !found.is_empty() {
                let heads = doc.get_heads();
                if doc::record_conflicts(doc, &found)? {
                    doc.commit_stamped(&self.stamp());
                    let change = doc.save_after(&heads);
                    merge
                        .local
                        .push(self.stage_log(batch, tenant, kind, id, &change));
                }
            }
            for record in conflict::recorded(doc).map_err(DocError::from)? {
                if !before.recorded.contains(&record.id) && self.stage_record(batch, &record)? {
                    merge.indexed.push(record.rule);
                }
            }
        }
        let old_view = match self.db.get_pinned_cf(self.cf(CF_VIEWS), &key)? {
            Some(b) => Some(
                serde_json::from_slice::<Value>(&b)
                    .map_err(|e| StoreError::Corrupt(format!("view: {e}")))?,
            ),
            None => None,
        };
        let new_view = if doc::is_deleted(doc) || !live {
            None
        } else {
            Some(doc::materialize(doc, kind)?)
        };
        // Only a user whose userName the merge set or changed can now collide with another.
        let user_name = |v: Option<&Value>| {
            v.and_then(|v| v["userName"].as_str())
                .map(ids::normalize_case_insensitive)
        };
        if kind == ResourceKind::User {
            if let Some(name) = new_view.as_ref().and_then(|v| v["userName"].as_str()) {
                if user_name(old_view.as_ref()) != user_name(new_view.as_ref()) {
                    merge.users.push((tenant.to_string(), name.to_string()));
                }
            }
        }
        let delta = self.stage_doc(batch, &key, before.term, doc, None);
        xor_into(&mut merge.delta, &delta);
        self.stage_view(
            batch,
            tenant,
            kind,
            id,
            old_view.as_ref(),
            new_view.as_ref(),
        )
    }

    /// Stage the index entries of a conflict record this region does not hold yet; returns
    /// whether it was new.
    fn stage_record(&self, batch: &mut WriteBatch, record: &Conflict) -> Result<bool, StoreError> {
        let by_id = keys::conflict_by_id(&record.id);
        if self
            .db
            .get_pinned_cf(self.cf(CF_CONFLICTS), &by_id)?
            .is_some()
        {
            return Ok(false);
        }
        let by_time = keys::conflict_by_time(&record.at, &record.id);
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.put_cf(self.cf(CF_CONFLICTS), &by_id, &by_time);
        batch.put_cf(self.cf(CF_CONFLICTS), &by_time, json);
        Ok(true)
    }

    /// After a merge: a userName that two live users hold (see [`conflict::collision_survivor`])
    /// keeps its survivor; every loser is renamed, deactivated and the decision recorded on it.
    /// Every region that sees the collision writes the same, so their copies merge into one.
    fn settle_user_names(&self, touched: &[(String, String)]) -> Result<(), StoreError> {
        for (tenant, name) in touched {
            let holders = self.lookup(tenant, ResourceKind::User, "userName", name)?;
            if holders.len() < 2 {
                continue;
            }
            let mut claims = Vec::new();
            for holder in &holders {
                if let Some(doc) = self.document(tenant, ResourceKind::User, holder)? {
                    if doc::is_deleted(&doc) {
                        continue;
                    }
                    let (by, at) = conflict::creation(&doc)
                        .map_err(DocError::from)?
                        .unwrap_or_default();
                    claims.push(conflict::Claim {
                        id: holder.clone(),
                        created_at: at,
                        created_by: by,
                    });
                }
            }
            let Some(survivor) = conflict::collision_survivor(&claims).cloned() else {
                continue;
            };
            for loser in claims.iter().filter(|c| c.id != survivor.id) {
                let record = conflict::collision_record(tenant, name, &survivor, loser);
                let renamed = conflict::collision_name(name, &loser.id);
                tracing::warn!(
                    tenant, user_name = %name, survivor = %survivor.id, loser = %loser.id,
                    "two users held one userName; the loser is renamed and deactivated"
                );
                let result = self.update_recording(
                    tenant,
                    ResourceKind::User,
                    &loser.id,
                    None,
                    &|old| {
                        let mut new = old.clone();
                        new.insert("userName".into(), Value::String(renamed.clone()));
                        new.insert("active".into(), Value::Bool(false));
                        Ok((new, vec!["active".into(), "userName".into()]))
                    },
                    std::slice::from_ref(&record),
                );
                match result {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Is this document a collected tombstone?
    fn is_collected(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_DOCS), key)?
            .is_some_and(|b| b.as_ref() == COLLECTED))
    }

    /// Remember a tombstone for collection (once: the first marks it was seen at are kept).
    fn stage_tomb(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        tenant: &str,
        id: &str,
        marks: &std::collections::BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        let tk = tomb_key(key);
        if self.db.get_pinned_cf(self.cf(CF_META), &tk)?.is_some() {
            return Ok(());
        }
        let tomb = Tomb {
            tenant: tenant.into(),
            id: id.into(),
            marks: marks.clone(),
        };
        let json = serde_json::to_vec(&tomb).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.put_cf(self.cf(CF_META), tk, json);
        Ok(())
    }

    /// Collect the tombstones every region has seen: `seen` is, per origin, the lowest mark
    /// among all regions of the cluster (this one included). A tombstone whose delete took
    /// effect here at marks that `seen` reaches is replaced by an empty value: its Automerge
    /// history goes, its key stays (the id is never reused, later changes for it are dropped,
    /// lookups answer nothing). The caller must pass marks of *every* region, or none: a region
    /// it does not know about may not have the delete. Returns how many were collected.
    pub fn collect_tombstones(
        &self,
        seen: &std::collections::BTreeMap<String, u64>,
    ) -> Result<usize, StoreError> {
        let prefix = b"tomb\0".to_vec();
        let mut ready = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            let tomb: Tomb = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("tombstone record: {e}")))?;
            let everywhere = tomb
                .marks
                .iter()
                .all(|(origin, mark)| seen.get(origin).is_some_and(|s| s >= mark));
            if everywhere {
                ready.push((k[prefix.len()..].to_vec(), k.to_vec(), tomb));
            }
        }
        let mut collected = 0;
        for (key, tk, tomb) in ready {
            let _g = lock(&self.id_locks[stripe((tomb.tenant.as_str(), tomb.id.as_str()))]);
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.cf(CF_META), &tk);
            match self.db.get_pinned_cf(self.cf(CF_DOCS), &key)? {
                Some(bytes) if bytes.as_ref() != COLLECTED => {
                    if !doc::is_deleted(&AutoCommit::load(&bytes)?) {
                        return Err(StoreError::Corrupt(
                            "a tombstone record for a live document".into(),
                        ));
                    }
                    batch.put_cf(self.cf(CF_DOCS), &key, COLLECTED);
                    collected += 1;
                }
                _ => {}
            }
            self.db.write_opt(batch, &self.write_opts)?;
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop(&key);
        }
        Ok(collected)
    }

    /// Count conflict records indexed by a committed batch.
    fn count_indexed(&self, rules: &[Rule]) {
        for rule in rules {
            if let Some(i) = Rule::ALL.iter().position(|r| r == rule) {
                self.conflicts_indexed[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Conflict records this process has indexed, per rule (for `/metrics`).
    pub fn conflicts_indexed(&self) -> Vec<(Rule, u64)> {
        Rule::ALL
            .iter()
            .zip(&self.conflicts_indexed)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Load a document whatever its state (live, tombstone, or new and empty).
    fn load_any(&self, key: &[u8]) -> Result<AutoCommit, StoreError> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(key);
        if let Some(doc) = cached {
            return Ok(doc);
        }
        Ok(match self.db.get_pinned_cf(self.cf(CF_DOCS), key)? {
            Some(bytes) => AutoCommit::load(&bytes)?.with_actor(self.actor.clone()),
            None => AutoCommit::new().with_actor(self.actor.clone()),
        })
    }

    /// The Automerge document of a resource, live or tombstone (admin history).
    pub fn document(
        &self,
        tenant: &str,
        kind: ResourceKind,
        id: &str,
    ) -> Result<Option<AutoCommit>, StoreError> {
        let key = keys::resource(tenant, kind, id);
        match self.db.get_pinned_cf(self.cf(CF_DOCS), &key)? {
            Some(bytes) if bytes.as_ref() != COLLECTED => Ok(Some(AutoCommit::load(&bytes)?)),
            _ => Ok(None),
        }
    }

    /// Stored conflict records matching `q`, oldest first, and how many match in all.
    pub fn conflicts(&self, q: &ConflictQuery) -> Result<(usize, Vec<Conflict>), StoreError> {
        let mut total = 0;
        let mut page = Vec::new();
        let skip = q.start_index.max(1) - 1;
        let prefix = keys::CONFLICT_BY_TIME;
        for r in self.db.iterator_cf(
            self.cf(CF_CONFLICTS),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(prefix) {
                break;
            }
            let c: Conflict = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("conflict record: {e}")))?;
            let keep = q.tenant.as_ref().is_none_or(|t| *t == c.tenant)
                && q.rule.is_none_or(|r| r == c.rule)
                && q.resource_id.as_ref().is_none_or(|id| *id == c.resource_id)
                && q.since.as_ref().is_none_or(|s| c.at.as_str() >= s.as_str())
                && q.until.as_ref().is_none_or(|u| c.at.as_str() < u.as_str());
            if !keep {
                continue;
            }
            if total >= skip && page.len() < q.count {
                page.push(c);
            }
            total += 1;
        }
        Ok((total, page))
    }

    /// Tokens created by this region (hash → tenant), e.g. the first-start token.
    pub fn stored_tokens(&self) -> Result<HashMap<String, String>, StoreError> {
        let prefix = b"token\0".to_vec();
        let mut out = HashMap::new();
        for r in self
            .db
            .iterator_cf(
                self.cf(CF_META),
                IteratorMode::From(&prefix, Direction::Forward),
            )
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
        {
            let (k, v) = r?;
            out.insert(
                String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        Ok(out)
    }

    /// Keep a token's hash (never the token) for `tenant`.
    pub fn add_token(&self, sha256_hex: &str, tenant: &str) -> Result<(), StoreError> {
        let mut key = b"token\0".to_vec();
        key.extend_from_slice(sha256_hex.as_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key, tenant.as_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        Ok(())
    }

    /// A real write and read of RocksDB, for `/health`.
    pub fn probe(&self) -> Result<(), StoreError> {
        let value = self.stamp().at;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), b"health-probe", value.as_bytes());
        self.db.write_opt(batch, &self.write_opts)?;
        match self.db.get_cf(self.cf(CF_META), b"health-probe")? {
            Some(v) if v == value.as_bytes() => Ok(()),
            _ => Err(StoreError::Corrupt(
                "health probe read back something else".into(),
            )),
        }
    }
}

/// Commit helper: every commit carries the write time, which history and conflict records use.
trait CommitStamped {
    fn put_modified_and_commit(&mut self, stamp: &Stamp);
    /// Commit with the stamp's time, without touching `lastModified` (bookkeeping changes).
    fn commit_stamped(&mut self, stamp: &Stamp);
}

impl CommitStamped for AutoCommit {
    fn commit_stamped(&mut self, stamp: &Stamp) {
        self.commit_with(automerge::transaction::CommitOptions::default().with_time(stamp.millis));
    }

    fn put_modified_and_commit(&mut self, stamp: &Stamp) {
        self.commit_with(automerge::transaction::CommitOptions::default().with_time(stamp.millis));
    }
}

/// Does an `If-Match` header value match `current`? `*` matches any live resource; weak and
/// strong forms of the same tag match (RFC 7232 weak comparison, as SCIM versions are weak).
pub fn etag_matches(header: &str, current: &str) -> bool {
    let strip = |t: &str| {
        t.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string()
    };
    let cur = strip(current);
    header
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == cur)
}

/// Does the stored view carry exactly these attributes (ignoring `id`, `meta`, `schemas`)?
fn same_attrs(view: &Value, attrs: &Map<String, Value>) -> bool {
    let Some(v) = view.as_object() else {
        return false;
    };
    let stored: Map<String, Value> = v
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "id" | "meta" | "schemas"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    &stored == attrs
}

/// Normalise a value for the index of `attr`: case-insensitive attributes are lower-cased.
pub fn normalize_indexed(attr: &str, value: &str) -> String {
    match attr {
        "externalId" => value.to_string(),
        _ => ids::normalize_case_insensitive(value),
    }
}

/// The indexed attributes of a resource type, by index name.
pub fn indexed_attrs(kind: ResourceKind) -> &'static [&'static str] {
    match kind {
        ResourceKind::User => &["userName", "externalId", "emails.value"],
        ResourceKind::Group => &["displayName", "externalId"],
    }
}

/// The index entries (attribute, normalised value) of a view.
fn index_entries(kind: ResourceKind, view: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for attr in indexed_attrs(kind) {
        match attr.split_once('.') {
            None => {
                if let Some(s) = view.get(*attr).and_then(Value::as_str) {
                    out.insert((attr.to_string(), normalize_indexed(attr, s)));
                }
            }
            Some((multi, sub)) => {
                for item in view
                    .get(multi)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(s) = item.get(sub).and_then(Value::as_str) {
                        out.insert((attr.to_string(), normalize_indexed(attr, s)));
                    }
                }
            }
        }
    }
    out
}

fn member_ids(view: &Value) -> BTreeSet<String> {
    view.get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("value").and_then(Value::as_str).map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open(dir: &Path, region: &str) -> Store {
        Store::open(
            dir,
            StoreOptions {
                region: region.into(),
                sync_writes: false,
                doc_cache_size: 100,
            },
        )
        .unwrap()
    }

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn user(store: &Store, name: &str) -> String {
        match store
            .create(
                "t",
                ResourceKind::User,
                attrs(json!({"userName": name, "active": true})),
            )
            .unwrap()
        {
            Created::New(s) | Created::Replay(s) => s.view["id"].as_str().unwrap().to_string(),
        }
    }

    /// Ship everything `from` has of every origin to `to`.
    fn sync(from: &Store, to: &Store) {
        for (origin, _) in from.log_hwm() {
            let have = to.log_hwm().get(&origin).copied().unwrap_or(0);
            let entries = from
                .log_read(&origin, have + 1, 10_000, usize::MAX)
                .unwrap();
            to.apply_remote(&origin, &entries).unwrap();
        }
    }

    fn set(store: &Store, id: &str, key: &str, value: Value, explicit: bool) {
        store
            .update("t", ResourceKind::User, id, None, &|old| {
                let mut new = old.clone();
                new.insert(key.to_string(), value.clone());
                let ex = if explicit {
                    vec![key.to_string()]
                } else {
                    vec![]
                };
                Ok((new, ex))
            })
            .unwrap();
    }

    fn all_conflicts(store: &Store) -> Vec<Conflict> {
        let q = ConflictQuery {
            count: usize::MAX,
            ..Default::default()
        };
        store.conflicts(&q).unwrap().1
    }

    #[test]
    fn a_rename_onto_a_concurrently_created_name_keeps_one_holder() {
        let (de, du) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (eu, us) = (open(de.path(), "eu"), open(du.path(), "us"));
        let old = user(&eu, "old");
        sync(&eu, &us);
        // Partitioned: eu renames "old" to "bob" while us creates "bob".
        set(&eu, &old, "userName", json!("bob"), false);
        let bob = user(&us, "bob");
        assert_ne!(old, bob);
        for _ in 0..3 {
            sync(&eu, &us);
            sync(&us, &eu);
        }
        for store in [&eu, &us] {
            let holders = store
                .lookup("t", ResourceKind::User, "userName", "bob")
                .unwrap();
            assert_eq!(holders.len(), 1, "{holders:?}");
            let conflicts = all_conflicts(store);
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].rule, Rule::UsernameMerge);
        }
        // The survivor is the earlier created user; the loser is renamed and deactivated.
        let loser = eu.get("t", ResourceKind::User, &bob).unwrap().unwrap();
        assert_eq!(loser.view["active"], json!(false));
        assert!(loser.view["userName"]
            .as_str()
            .unwrap()
            .starts_with("bob~conflict-"));
        assert_eq!(
            loser,
            us.get("t", ResourceKind::User, &bob).unwrap().unwrap()
        );
        assert_eq!(
            eu.get("t", ResourceKind::User, &old).unwrap(),
            us.get("t", ResourceKind::User, &old).unwrap()
        );
        assert_eq!(eu.digest().map(|d| d.1), us.digest().map(|d| d.1));
    }

    #[test]
    fn tombstones_are_collected_once_every_region_saw_the_delete_and_stay_deleted() {
        let (de, du) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (eu, us) = (open(de.path(), "eu"), open(du.path(), "us"));
        let bob = user(&eu, "bob");
        sync(&eu, &us);
        // us updates bob concurrently with eu's delete; the update reaches eu only later.
        set(&us, &bob, "title", json!("late"), false);
        eu.delete("t", ResourceKind::User, &bob, None).unwrap();
        // Nothing is collected before every region's marks reach the delete (us has eu's
        // first entry only).
        let seen: std::collections::BTreeMap<String, u64> = us
            .log_hwm()
            .into_iter()
            .filter(|(o, _)| o == "eu")
            .collect();
        assert_eq!(seen.get("eu"), Some(&1));
        assert_eq!(eu.collect_tombstones(&seen).unwrap(), 0);
        assert!(eu
            .document("t", ResourceKind::User, &bob)
            .unwrap()
            .is_some());
        sync(&eu, &us);
        let seen = us
            .log_hwm()
            .into_iter()
            .filter(|(o, _)| o == "eu")
            .collect();
        assert_eq!(eu.collect_tombstones(&seen).unwrap(), 1);
        assert!(eu
            .document("t", ResourceKind::User, &bob)
            .unwrap()
            .is_none());
        assert_eq!(eu.collect_tombstones(&seen).unwrap(), 0);
        // The late concurrent update is dropped: still deleted, and a new POST gets a new id.
        sync(&us, &eu);
        assert!(eu.get("t", ResourceKind::User, &bob).unwrap().is_none());
        assert!(us.get("t", ResourceKind::User, &bob).unwrap().is_none());
        assert!(eu
            .export(&Lookup::Id {
                tenant: "t".into(),
                kind: ResourceKind::User,
                id: bob.clone()
            })
            .unwrap()
            .is_none());
        assert_ne!(user(&eu, "bob"), bob);
        // Collected here, not yet in us: the digests still agree.
        sync(&eu, &us);
        assert_eq!(eu.digest(), us.digest());
    }

    #[test]
    fn the_heads_digest_matches_across_replicas_and_survives_a_restart() {
        let (de, du) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (eu, us) = (open(de.path(), "eu"), open(du.path(), "us"));
        let a = user(&eu, "a");
        user(&us, "b");
        set(&eu, &a, "active", json!(false), true);
        sync(&eu, &us);
        sync(&us, &eu);
        let (d_eu, d_us) = (eu.digest().unwrap(), us.digest().unwrap());
        assert_eq!(d_eu, d_us);
        assert_ne!(d_eu.1, [0; 32]);
        set(&us, &a, "title", json!("x"), false);
        assert_ne!(us.digest().unwrap().1, d_us.1);
        drop(us);
        let us = open(du.path(), "us");
        sync(&us, &eu);
        assert_eq!(eu.digest(), us.digest());
    }

    #[test]
    fn a_replica_fed_the_log_serves_identical_views() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
        let alice = user(&a, "alice");
        let bob = user(&a, "bob");
        set(&a, &alice, "displayName", json!("Alice"), false);
        let group = match a
            .create(
                "t",
                ResourceKind::Group,
                attrs(json!({"displayName": "G", "members": [{"value": alice}]})),
            )
            .unwrap()
        {
            Created::New(s) => s.view["id"].as_str().unwrap().to_string(),
            other => panic!("{other:?}"),
        };
        a.delete("t", ResourceKind::User, &bob, None).unwrap();

        sync(&a, &b);
        assert_eq!(a.log_hwm(), b.log_hwm());
        for (kind, id) in [(ResourceKind::User, &alice), (ResourceKind::Group, &group)] {
            let (va, vb) = (a.get("t", kind, id).unwrap(), b.get("t", kind, id).unwrap());
            assert!(va.is_some());
            assert_eq!(
                serde_json::to_vec(&va.unwrap().view).unwrap(),
                serde_json::to_vec(&vb.unwrap().view).unwrap()
            );
        }
        assert!(b.get("t", ResourceKind::User, &bob).unwrap().is_none());
        assert_eq!(
            b.lookup("t", ResourceKind::User, "userName", "ALICE")
                .unwrap(),
            vec![alice.clone()]
        );
        assert_eq!(b.groups_of("t", &alice, "http://x").unwrap().len(), 1);
        // Applying the same entries again changes nothing.
        let entries = a.log_read("a", 1, 10_000, usize::MAX).unwrap();
        assert_eq!(b.apply_remote("a", &entries).unwrap().applied, 0);
    }

    #[test]
    fn concurrent_writes_in_two_regions_converge_and_deactivation_wins() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
        let id = user(&a, "carol");
        sync(&a, &b);
        set(&a, &id, "active", json!(false), true);
        for _ in 0..3 {
            set(&b, &id, "active", json!(true), true);
        }
        set(&b, &id, "title", json!("Boss"), false);
        sync(&a, &b);
        sync(&b, &a);
        let (va, vb) = (
            a.get("t", ResourceKind::User, &id).unwrap().unwrap(),
            b.get("t", ResourceKind::User, &id).unwrap().unwrap(),
        );
        assert_eq!(va, vb);
        assert_eq!(va.view["active"], json!(false));
        assert_eq!(va.view["title"], json!("Boss"));
        assert_eq!(a.log_hwm(), b.log_hwm());
    }

    #[test]
    fn lookups_round_trip_and_export_import_carries_a_document() {
        for l in [
            Lookup::Id {
                tenant: "t".into(),
                kind: ResourceKind::Group,
                id: "g-1".into(),
            },
            Lookup::UserName {
                tenant: "t".into(),
                user_name: "Odd\0Name@x".into(),
            },
        ] {
            assert_eq!(Lookup::decode(&l.encode()), Some(l));
        }
        assert_eq!(Lookup::decode(b"i\0BAD TENANT\0User\0x"), None);
        assert_eq!(Lookup::decode(b"zz"), None);
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
        let id = user(&a, "dora");
        let doc = a
            .export(&Lookup::UserName {
                tenant: "t".into(),
                user_name: "DORA".into(),
            })
            .unwrap()
            .expect("a holds dora");
        assert_eq!(
            b.import("t", &doc).unwrap(),
            (ResourceKind::User, id.clone())
        );
        assert_eq!(
            a.get("t", ResourceKind::User, &id).unwrap(),
            b.get("t", ResourceKind::User, &id).unwrap()
        );
        assert!(b
            .export(&Lookup::UserName {
                tenant: "t".into(),
                user_name: "nobody".into()
            })
            .unwrap()
            .is_none());
    }

    #[test]
    fn reopening_fills_holes_in_the_local_log() {
        let d = tempfile::tempdir().unwrap();
        {
            let a = open(d.path(), "a");
            user(&a, "x");
            // Simulate a sequence number allocated but never committed (a crash mid-write).
            a.next_seq.fetch_add(1, Ordering::Relaxed);
            user(&a, "y");
            assert_eq!(a.log_hwm()["a"], 1);
        }
        let a = open(d.path(), "a");
        assert_eq!(a.log_hwm()["a"], 3);
        let entries = a.log_read("a", 1, 10, usize::MAX).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|(s, e)| (*s, e.is_empty()))
                .collect::<Vec<_>>(),
            vec![(1, false), (2, true), (3, false)]
        );
    }
}

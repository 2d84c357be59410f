//! Storage: the only code that touches RocksDB and writes Automerge documents.
//!
//! Every write is one RocksDB write batch holding the Automerge document, the materialised SCIM
//! view, the secondary index changes and a replication log entry, written with a synced WAL
//! before the request is answered. Concurrent writers share fsyncs: RocksDB groups the writes of
//! concurrent threads into one WAL sync (group commit), so callers run writes on a blocking
//! thread pool and many requests in flight amortise the disk.
//!
//! Column families (format 3, recorded in `meta`):
//! - `docs`: Automerge bytes per resource, tombstones included (needed for delete-wins later);
//!   a group's document holds its own attributes only, never its members;
//! - `views`: materialised SCIM JSON of live resources, for reads, lists and filters;
//! - `index`: (tenant, type, attribute, normalised value, id) for userName, externalId,
//!   emails.value and group displayName, plus reverse group membership (a User's `groups`);
//! - `members`: one record per (group, member): the membership CRDT of
//!   [`crate::conflict::membership`], so a change to one member reads and writes one key
//!   whatever the group's size;
//! - `counts`: per group, the live member count, the membership digest and the number of
//!   history entries, each kept by a merge operator in the batch that changes the records;
//! - `history`: per group, the last membership changes (bounded by
//!   `storage.member_history_entries`, trimmed in range deletions), for the dashboard and
//!   audits;
//! - `log`: (origin region, sequence) → the changed resource and its Automerge change bytes
//!   (or membership operations), truncated once every known region has applied it;
//! - `conflicts`: conflict records by time and by id (an index of the records documents carry);
//! - `peers`: reserved;
//! - `meta`: format version, region identity, tokens created on first start, health probe,
//!   known regions and their marks, truncation floors, and the digest of every document's heads
//!   (an XOR kept by a merge operator, so it changes in the same batch as the documents).

mod commit;
mod conflicts;
mod digest;
pub mod doc;
mod events;
mod gate;
pub mod keys;
#[cfg(test)]
mod laws;
mod log;
#[cfg(test)]
mod member_tests;
mod members;
mod merge;
mod meta;
mod migrate;
pub mod offboarding;
mod read;
mod sizes;
mod snapshot;
#[cfg(test)]
mod tests;
mod tombstones;
mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use automerge::{ActorId, AutoCommit};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde_json::{Map, Value};

use crate::conflict::sticky::StickySet;
use crate::conflict::{self, Conflict, ConflictQuery, Rule};
use crate::ids;
use crate::scim::schema::ResourceKind;
use crate::scim::ScimError;
use doc::{DocError, Stamp};

pub use conflicts::FEED_CAPACITY;
use digest::{deleted_term, heads_term, xor_into, xor_merge, DIGEST_KEY};
pub use events::{Event, FeedScope};
use gate::WriteGate;
pub use log::LogEntry;
pub use members::{combined_version, groups_digest, member_json, MemberHistory};
pub use offboarding::Offboarding;
pub use sizes::CfSize;
pub use snapshot::{SnapshotApply, SnapshotItem};
use tombstones::{tomb_key, COLLECTED};

/// On-disk format version. Bump it with a migration step when any stored layout changes.
pub const FORMAT_VERSION: &str = "3";

const CF_DOCS: &str = "docs";
const CF_VIEWS: &str = "views";
const CF_INDEX: &str = "index";
const CF_LOG: &str = "log";
const CF_PEERS: &str = "peers";
const CF_CONFLICTS: &str = "conflicts";
const CF_META: &str = "meta";
const CF_MEMBERS: &str = "members";
const CF_COUNTS: &str = "counts";
const CF_HISTORY: &str = "history";
/// The column families with merge operators, whose operands are folded past a bound.
const MERGE_BOUNDED_CFS: [&str; 2] = [CF_META, CF_COUNTS];
const ALL_CFS: &[&str] = &[
    CF_DOCS,
    CF_VIEWS,
    CF_INDEX,
    CF_LOG,
    CF_PEERS,
    CF_CONFLICTS,
    CF_META,
    CF_MEMBERS,
    CF_COUNTS,
    CF_HISTORY,
    events::CF_EVENTS,
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
    /// Replicated changes (these sequence numbers of one origin) that a document cannot take:
    /// `apply_remote` quarantines them and stages the batch again.
    #[error("replicated changes {seqs:?} cannot be merged: {reason}")]
    Poisoned { seqs: BTreeSet<u64>, reason: String },
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
    /// Count RocksDB reads and writes ([`Store::io_counts`]): for tests and benchmarks that
    /// check what an operation touches (costs a little on every access).
    pub io_statistics: bool,
    /// Entries of membership history kept per group (the admin API's group history).
    pub history_entries: usize,
    /// Per-tenant write policies; a tenant not named here gets [`TenantPolicy::default`].
    pub tenants: BTreeMap<String, TenantPolicy>,
}

/// How a tenant's writes behave: names already taken, and which attributes are sticky. Every
/// region should have the same policies: they decide what a write answers and records, never
/// how merges resolve (a sticky write carries its own restrictive mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    /// A POST of a userName that exists with exactly the same attributes answers 201 with the
    /// existing user (the retry of a POST whose answer was lost) instead of 409 `uniqueness`.
    /// Off by default: RFC 7644 §3.3 and the IdPs' validators expect the 409.
    pub idempotent_create: bool,
    /// Group displayNames are unique in the tenant (case-insensitive): a create or rename to a
    /// taken one answers 409 `uniqueness`. On by default.
    pub unique_group_names: bool,
    /// Attributes besides `active` whose restrictive values win every concurrent write
    /// ([`crate::conflict::sticky`]).
    pub sticky: StickySet,
    /// Which writes the tenant's event feed keeps at this region ([`events`]).
    pub events: FeedScope,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        TenantPolicy {
            idempotent_create: false,
            unique_group_names: true,
            sticky: StickySet::default(),
            events: FeedScope::None,
        }
    }
}

/// RocksDB operations counted since the store opened (see [`StoreOptions::io_statistics`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// Keys read by point and multi-get reads.
    pub keys_read: u64,
    /// Keys written (puts, deletes, merges).
    pub keys_written: u64,
    /// Iterator seeks and steps.
    pub iterator_moves: u64,
    /// Blocks (data, index, filter) not found in the block cache: each one read from a file
    /// (the page cache at best) and decompressed.
    pub block_cache_misses: u64,
    /// Entries an iterator stepped over without returning them: deleted or overwritten
    /// versions not yet compacted away.
    pub internal_keys_skipped: u64,
}

impl std::ops::AddAssign for IoCounts {
    fn add_assign(&mut self, o: IoCounts) {
        self.keys_read += o.keys_read;
        self.keys_written += o.keys_written;
        self.iterator_moves += o.iterator_moves;
        self.block_cache_misses += o.block_cache_misses;
        self.internal_keys_skipped += o.internal_keys_skipped;
    }
}

impl std::ops::Sub for IoCounts {
    type Output = IoCounts;
    fn sub(self, o: IoCounts) -> IoCounts {
        IoCounts {
            keys_read: self.keys_read - o.keys_read,
            keys_written: self.keys_written - o.keys_written,
            iterator_moves: self.iterator_moves - o.iterator_moves,
            block_cache_misses: self.block_cache_misses - o.block_cache_misses,
            internal_keys_skipped: self.internal_keys_skipped - o.internal_keys_skipped,
        }
    }
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
    /// Changes Automerge rejected: quarantined (kept, logged, counted), not applied.
    pub quarantined: usize,
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

/// What staging added to a batch: for the commit, and for later steps of the same batch
/// (RocksDB reads do not see an uncommitted batch, so what the batch changes is kept here).
#[derive(Default)]
struct Merge {
    /// Local log entries (conflict records written into documents).
    local: Vec<u64>,
    /// The heads-digest delta.
    delta: [u8; 32],
    /// The conflict records newly indexed (counted, and shown by the live feed, after the commit).
    indexed: Vec<Conflict>,
    /// Deactivations and deletes this batch's view changes make, by (tenant, kind, id, action):
    /// the commit site knows their log position and records them (see `offboarding`).
    offboarded: Vec<(String, ResourceKind, String, offboarding::Action)>,
    /// (tenant, userName) of live users whose userName the merge set or changed: checked for a
    /// collision after the commit.
    users: Vec<(String, String)>,
    /// Resources whose view this batch creates (`true`) or removes, by (tenant, id).
    live: HashMap<(String, String), bool>,
    /// Groups this batch deletes (tenant, id).
    deleted: BTreeSet<(String, String)>,
    /// Membership records this batch writes, by key.
    records: HashMap<Vec<u8>, crate::conflict::membership::Record>,
    /// Membership conflicts this batch's merges decided (logged and indexed with it).
    found: Vec<Conflict>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new resource.
    New(Stored),
    /// The same userName with the same attributes already exists and the tenant's policy
    /// answers such a replay idempotently ([`TenantPolicy::idempotent_create`]).
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
    /// The highest own mark written to `meta` (see [`Store::persist_own_mark`]).
    persisted_own: AtomicU64,
    /// Per origin, the lowest sequence number the log still holds (entries below were
    /// truncated, or never held: a snapshot brought their effect instead). Absent: 1.
    floors: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Called after every local commit, so replication can push the new entry at once.
    on_commit: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// XOR over documents of sha256(key, sorted heads), of exactly the committed writes the
    /// marks reflect: updated together with the marks, under this lock.
    digest: Mutex<[u8; 32]>,
    /// Conflict records this process indexed, per rule (in [`Rule::ALL`] order).
    conflicts_indexed: [AtomicU64; 5],
    /// The conflict records indexed most recently, numbered: the dashboard's live feed.
    feed: conflicts::Feed,
    /// Replicated changes this process quarantined (`/metrics`; the entries stay in `meta`).
    quarantined: AtomicU64,
    /// Whether local writes go on, wait (at start, until a peer has said what it holds of this
    /// region) or are refused (this region's own log is behind what its peers hold of it: new
    /// writes would reuse sequence numbers the cluster already has), with a condition variable
    /// the waiting writes sleep on.
    write_gate: std::sync::Arc<(Mutex<WriteGate>, std::sync::Condvar)>,
    /// The options the database was opened with, when it counts its operations.
    statistics: Option<Options>,
    /// Entries of membership history kept per group.
    history_entries: usize,
    tenants: BTreeMap<String, TenantPolicy>,
    /// Own sequence numbers given up because writes were refused right after they were handed
    /// out (see [`Store::alloc_checked`]).
    abandoned: Mutex<Vec<u64>>,
    /// The last event feed position handed out, whether a batch staged events since the last
    /// announcement, the channel that announces them, and the lock of feed removals.
    event_pos: AtomicU64,
    events_staged: AtomicBool,
    events_changed: tokio::sync::watch::Sender<u64>,
    events_gc: Mutex<()>,
    /// Per origin, held while a batch of its entries is applied ([`Store::apply_remote`]).
    apply_locks: Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
    /// Held while a batch that indexes conflict records checks which are new and commits
    /// ([`Store::commit_indexing`]).
    index_lock: Mutex<()>,
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

/// RocksDB merge operator of `counts`: keys starting with `x` or `r` hold 32-byte digests
/// (XOR of the operands), every other key an i64 (little-endian, summed).
fn counts_merge(
    key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    if matches!(key.first(), Some(b'x' | b'r')) {
        return xor_merge(key, existing, operands);
    }
    let mut sum = 0i64;
    for part in existing.into_iter().chain(operands) {
        if let Ok(b) = <[u8; 8]>::try_from(part) {
            sum = sum.wrapping_add(i64::from_le_bytes(b));
        }
    }
    Some(sum.to_le_bytes().to_vec())
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
        if options.io_statistics {
            opts.enable_statistics();
        }
        let cfs = ALL_CFS.iter().map(|name| {
            // Every column family is compressed (a column family's options do not inherit the
            // database's): views and log entries are JSON and Automerge changes whose small
            // columns Automerge leaves uncompressed. Documents and views are read by key one at
            // a time, but lists and snapshots stream them, and 16 KB blocks compress the names
            // every value repeats ("userName", schema URNs) several times over.
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if [CF_DOCS, CF_VIEWS, CF_LOG].contains(name) {
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_block_size(16 * 1024);
                cf_opts.set_block_based_table_factory(&table);
            }
            if *name == CF_INDEX {
                // A removed member leaves a deletion in its group's member range until a
                // compaction drops it, and a page of members steps over every one: the first
                // page of a 1k group whose batches had come and gone read 5,417 dead entries
                // (0.59 ms; 0.23 ms compacted). A file in which deletions are dense (1,024 in
                // any 4,096 entries) is marked for compaction as soon as it is written.
                cf_opts.add_compact_on_deletion_collector_factory(4096, 1024, 0.0);
            }
            if *name == CF_META {
                cf_opts.set_merge_operator_associative("meta", log::meta_merge);
            }
            if *name == CF_COUNTS {
                cf_opts.set_merge_operator_associative("counts", counts_merge);
            }
            if MERGE_BOUNDED_CFS.contains(name) {
                // Every membership change merges into its group's counters (and every write
                // into the digest): without a bound, a busy group's key gathers tens of
                // thousands of operands in the memtable, and each read of it folds them all
                // (a GET of the group went from 0.2 to 11 ms after 42,000 changes). Past this
                // many, the write folds them into one value instead (strictly: see below).
                cf_opts.set_max_successive_merges(64);
            }
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        // Without `strict`, the fold only happens when the key's older value is in memory: once
        // a flush has moved it to a file whose block is not cached, every later merge of the key
        // counts past the bound, reads all the operands in the memtable, fails, and adds one
        // more. A snapshot bootstrap merges a million times into a big group's counters, and
        // went from thousands of items per second to a few hundred. Strict reads that value
        // (one small point read per 64 merges of a key, usually cached from then on). Not
        // settable through rust-rocksdb's `Options`; a mutable option of the column family.
        for name in MERGE_BOUNDED_CFS {
            let cf = db.cf_handle(name).expect("declared above");
            db.set_options_cf(cf, &[("strict_max_successive_merges", "true")])?;
        }
        let meta = db.cf_handle(CF_META).expect("meta cf");
        let check_region = |db: &DB| -> Result<(), StoreError> {
            let region = db.get_cf(meta, b"region")?.unwrap_or_default();
            if region != options.region.as_bytes() {
                return Err(StoreError::Corrupt(format!(
                    "{} holds region {:?}, not {:?}",
                    path.display(),
                    String::from_utf8_lossy(&region),
                    options.region
                )));
            }
            Ok(())
        };
        let migrate_from_2 = match db.get_cf(meta, b"format")? {
            None => {
                db.put_cf(meta, b"format", FORMAT_VERSION)?;
                db.put_cf(meta, b"region", options.region.as_bytes())?;
                false
            }
            Some(v) if v == FORMAT_VERSION.as_bytes() => {
                check_region(&db)?;
                false
            }
            Some(v) if v == b"2" => {
                check_region(&db)?;
                true
            }
            Some(v) => {
                return Err(StoreError::Corrupt(format!(
                    "{} has storage format {:?}; this build reads format {FORMAT_VERSION} and \
                     migrates format 2 (format 1 predates the conflict rules and has no \
                     migration: move the folder away to start empty and let the region catch \
                     up from its peers)",
                    path.display(),
                    String::from_utf8_lossy(&v)
                )))
            }
        };
        let log_cf = db.cf_handle(CF_LOG).expect("log cf");
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(options.sync_writes);
        // Format 3 keeps the marks in `meta` (start-up reads them, never the whole log); a
        // format-2 folder has them only in its log, read once for the migration.
        let marks = if migrate_from_2 {
            log::Marks::scan(&db, log_cf)?
        } else {
            log::Marks::load(&db, meta, log_cf, &options.region)?
        };
        // A crash between two local commits can leave a hole below the last sequence number;
        // fill it so this origin's log stays contiguous for replication.
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
        let own_mark = marks.hwm().get(&options.region).copied().unwrap_or(0);
        let next_seq = log::last_seq(&db, log_cf, &options.region)?.max(own_mark) + 1;
        let floors = log::load_floors(&db, meta)?;
        let mut digest = [0u8; 32];
        if let Some(v) = db.get_cf(meta, DIGEST_KEY)? {
            if v.len() == 32 {
                digest.copy_from_slice(&v);
            }
        }
        let cache_size = NonZeroUsize::new(options.doc_cache_size.max(1)).expect("nonzero");
        let event_pos = events::last_position(&db, options.tenants.keys().cloned())?;
        let store = Store {
            actor: ActorId::from(options.region.as_bytes()),
            region: options.region,
            write_opts,
            cache: Mutex::new(lru::LruCache::new(cache_size)),
            id_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            name_locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            next_seq: AtomicU64::new(next_seq),
            persisted_own: AtomicU64::new(0),
            marks,
            floors: Mutex::new(floors),
            on_commit: std::sync::OnceLock::new(),
            digest: Mutex::new(digest),
            conflicts_indexed: Default::default(),
            feed: Default::default(),
            quarantined: AtomicU64::new(0),
            write_gate: Default::default(),
            statistics: options.io_statistics.then_some(opts),
            abandoned: Mutex::new(Vec::new()),
            event_pos: AtomicU64::new(event_pos),
            events_staged: AtomicBool::new(false),
            events_changed: tokio::sync::watch::Sender::new(0),
            events_gc: Mutex::new(()),
            apply_locks: Mutex::new(HashMap::new()),
            index_lock: Mutex::new(()),
            history_entries: options.history_entries,
            tenants: options.tenants,
            db,
        };
        if migrate_from_2 {
            store.migrate_from_2()?;
        }
        // What start-up learned from the tail of the own log goes into meta at once, so a
        // snapshot taken before the next write stands for it.
        store.persist_own_mark();
        Ok(store)
    }

    /// RocksDB operations so far, if the store was opened with `io_statistics`.
    pub fn io_counts(&self) -> Option<IoCounts> {
        use rocksdb::statistics::Ticker;
        let o = self.statistics.as_ref()?;
        Some(IoCounts {
            keys_read: o.get_ticker_count(Ticker::NumberKeysRead)
                + o.get_ticker_count(Ticker::NumberMultigetKeysRead),
            keys_written: o.get_ticker_count(Ticker::NumberKeysWritten),
            iterator_moves: o.get_ticker_count(Ticker::NumberDbSeek)
                + o.get_ticker_count(Ticker::NumberDbNext)
                + o.get_ticker_count(Ticker::NumberDbPrev),
            block_cache_misses: o.get_ticker_count(Ticker::BlockCacheMiss),
            internal_keys_skipped: o.get_ticker_count(Ticker::NumberIterSkip),
        })
    }

    /// Replicated changes quarantined by this process (for `/metrics`).
    pub fn quarantined_count(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Lock the stripes of these (tenant, id) pairs, in stripe order (every multi-stripe lock
    /// goes in this order, so none deadlocks with another).
    fn lock_stripes(&self, ids: &[(&str, &str)]) -> Vec<MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = ids.iter().map(|(t, id)| stripe((*t, *id))).collect();
        stripes.iter().map(|i| lock(&self.id_locks[*i])).collect()
    }

    /// Every stripe, in order: for the rare write that may touch any resource.
    fn lock_all(&self) -> Vec<MutexGuard<'_, ()>> {
        self.id_locks.iter().map(lock).collect()
    }

    /// A counter of `counts` (0 when absent).
    fn read_count(&self, key: &[u8]) -> Result<i64, StoreError> {
        Ok(match self.db.get_pinned_cf(self.cf(CF_COUNTS), key)? {
            Some(v) => <[u8; 8]>::try_from(&v[..]).map_or(0, i64::from_le_bytes),
            None => 0,
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
        self.load_stored(key)
    }

    /// Load a document as stored (never from the cache), or a new empty one.
    fn load_stored(&self, key: &[u8]) -> Result<AutoCommit, StoreError> {
        Ok(match self.db.get_pinned_cf(self.cf(CF_DOCS), key)? {
            Some(bytes) if bytes.as_ref() != COLLECTED => {
                AutoCommit::load(&bytes)?.with_actor(self.actor.clone())
            }
            _ => AutoCommit::new().with_actor(self.actor.clone()),
        })
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

//! History that stops growing: log truncation, and snapshots for the regions that need what
//! was truncated.
//!
//! - **Floors.** Per origin, the lowest sequence the log still holds (`floor\0<origin>` in
//!   `meta`; absent: 1). [`Store::truncate_log`] raises them and drops the entries below with
//!   one range delete, so truncating costs the same whatever the history's length.
//! - **Snapshots.** A region whose marks are below a peer's floor (a new, empty region; one
//!   that stayed down too long; one restored from an old backup) cannot catch up entry by
//!   entry. The peer streams its current state instead ([`Store::snapshot`]): from one
//!   consistent RocksDB snapshot, the marks it stands for, then every document (Automerge saved
//!   bytes, collected tombstones included), every membership record and every conflict record.
//!   The receiver merges them ([`Store::apply_snapshot`]), then raises its marks to the
//!   snapshot's and its floors past the entries it never received
//!   ([`Store::finish_snapshot`]); normal replication continues from there.
//! - **Why merging is enough.** Documents and records are CRDTs: merging a state that covers
//!   more history than ours loses nothing of ours. Records need one more rule, because the
//!   sender may have *collected* a removed record (every region had seen the removal): a
//!   snapshot's context is its marks, so every record is joined as if its context covered
//!   them, and a record the snapshot lacks counts as "nothing, having seen the marks". A stale
//!   add of the receiver's own (a restored backup) whose write the marks cover is dropped; a
//!   newer one (a dot above the marks) stays. The receiver walks its own records in key order
//!   alongside the snapshot's (which come sorted) to find the ones the snapshot lacks.
//! - **Bootstrap speed.** A document the receiver lacks is stored as received, its heads, view
//!   and recorded conflicts derived from the bytes on every core ([`prepare_all`]); merging it
//!   into an empty document and saving it again cost about twice as much. Each chunk is one
//!   synced batch, and the marks rise only in [`Store::finish_snapshot`], so a crash mid-way
//!   leaves the region below the peer's floor (it asks again) and never claims to be caught up.
//! - **Large items.** A document larger than a chunk travels in parts (`ITEM_DOC_PART`), each
//!   in a chunk of its own, reassembled by the receiver.

use std::collections::BTreeMap;

use super::*;
use crate::conflict::membership::Record;

/// Snapshot item kinds (the wire carries them opaquely).
pub const ITEM_DOC: u8 = 1;
pub const ITEM_MEMBERSHIP: u8 = 2;
pub const ITEM_CONFLICT: u8 = 3;
/// Part of a document too large for one chunk: value = part index (u32 BE), part count (u32
/// BE), bytes.
pub const ITEM_DOC_PART: u8 = 4;

/// The largest document a snapshot receiver reassembles from parts.
const MAX_DOC_BYTES: usize = 1 << 30;

/// One snapshot item: (kind, storage key, value).
pub type SnapshotItem = (u8, Vec<u8>, Vec<u8>);

impl Store {
    /// Per origin, the lowest sequence the log still holds (absent: 1).
    pub fn log_floor(&self) -> BTreeMap<String, u64> {
        self.floors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Raise the log floors to `floors` (only upwards, never above an origin's mark + 1) and
    /// drop the entries below. Returns the origins whose floor moved.
    pub fn truncate_log(&self, floors: &BTreeMap<String, u64>) -> Result<usize, StoreError> {
        let marks = self.marks.hwm();
        let mut current = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let mut moved = Vec::new();
        for (origin, floor) in floors {
            let mark = marks.get(origin).copied().unwrap_or(0);
            let floor = (*floor).min(mark + 1);
            if floor <= current.get(origin).copied().unwrap_or(1) {
                continue;
            }
            batch.delete_range_cf(
                self.cf(CF_LOG),
                keys::log(origin, 0),
                keys::log(origin, floor),
            );
            batch.put_cf(
                self.cf(CF_META),
                log::floor_key(origin),
                floor.to_be_bytes(),
            );
            moved.push((origin.clone(), floor));
        }
        if moved.is_empty() {
            return Ok(0);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        for (origin, floor) in &moved {
            current.insert(origin.clone(), *floor);
        }
        Ok(moved.len())
    }

    /// Stream this region's state from one consistent RocksDB snapshot: first `begin` with the
    /// marks it stands for, then `chunk` with items of about `chunk_bytes` each. Either callback
    /// returning false stops the stream (the receiver went away).
    pub fn snapshot(
        &self,
        chunk_bytes: usize,
        mut begin: impl FnMut(BTreeMap<String, u64>) -> bool,
        mut chunk: impl FnMut(Vec<SnapshotItem>) -> bool,
    ) -> Result<(), StoreError> {
        let snap = self.db.snapshot();
        let mut marks = BTreeMap::new();
        for (prefix, below) in [(&b"mark\0"[..], 0u64), (&b"floor\0"[..], 1)] {
            for r in snap.iterator_cf(
                self.cf(CF_META),
                IteratorMode::From(prefix, Direction::Forward),
            ) {
                let (k, v) = r?;
                if !k.starts_with(prefix) {
                    break;
                }
                if let Ok(b) = <[u8; 8]>::try_from(&v[..]) {
                    // A floor proves the mark reached floor - 1 (truncation keeps everything
                    // above the mark), even where the persisted own mark lags.
                    let value = u64::from_be_bytes(b).saturating_sub(below);
                    let origin = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    let mark = marks.entry(origin).or_insert(0);
                    *mark = (*mark).max(value);
                }
            }
        }
        if !begin(marks) {
            return Ok(());
        }
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let sources: [(u8, &str, &[u8]); 3] = [
            (ITEM_DOC, CF_DOCS, b""),
            (ITEM_MEMBERSHIP, CF_MEMBERS, b""),
            (ITEM_CONFLICT, CF_CONFLICTS, keys::CONFLICT_BY_TIME),
        ];
        for (kind, cf, prefix) in sources {
            for r in snap.iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward)) {
                let (k, v) = r?;
                if !k.starts_with(prefix) {
                    break;
                }
                if kind == ITEM_DOC && k.len() + v.len() > chunk_bytes {
                    // Too large for a chunk: in parts, each in a chunk of its own.
                    if !items.is_empty() && !chunk(std::mem::take(&mut items)) {
                        return Ok(());
                    }
                    bytes = 0;
                    let parts: Vec<&[u8]> = v.chunks(chunk_bytes.max(1)).collect();
                    for (i, part) in parts.iter().enumerate() {
                        let mut value = Vec::with_capacity(8 + part.len());
                        value.extend_from_slice(&(i as u32).to_be_bytes());
                        value.extend_from_slice(&(parts.len() as u32).to_be_bytes());
                        value.extend_from_slice(part);
                        if !chunk(vec![(ITEM_DOC_PART, k.to_vec(), value)]) {
                            return Ok(());
                        }
                    }
                    continue;
                }
                bytes += k.len() + v.len() + 8;
                items.push((kind, k.to_vec(), v.to_vec()));
                if bytes >= chunk_bytes || items.len() >= crate::replication::wire::MAX_ENTRIES {
                    if !chunk(std::mem::take(&mut items)) {
                        return Ok(());
                    }
                    bytes = 0;
                }
            }
        }
        if !items.is_empty() {
            chunk(items);
        }
        Ok(())
    }

    /// A snapshot standing for `marks` begins.
    pub fn begin_snapshot(&self, marks: BTreeMap<String, u64>) -> SnapshotApply {
        SnapshotApply {
            marks,
            cursor: Vec::new(),
            parts: BTreeMap::new(),
            part_bytes: 0,
        }
    }

    /// Merge one chunk of a snapshot (documents first, then records: the sender streams them
    /// in that order, so groups and members are live when their records arrive). Items this
    /// version cannot read are skipped and counted. Returns how many were merged and skipped.
    pub fn apply_snapshot(
        &self,
        s: &mut SnapshotApply,
        items: &[SnapshotItem],
    ) -> Result<(usize, usize), StoreError> {
        let mut docs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut records: Vec<(&[u8], Record)> = Vec::new();
        let mut conflicts: Vec<Conflict> = Vec::new();
        let mut skipped = 0usize;
        for (kind, key, value) in items {
            match *kind {
                ITEM_DOC => docs.push((key.clone(), value.clone())),
                ITEM_DOC_PART => match s.add_part(key, value) {
                    Ok(Some(whole)) => docs.push((key.clone(), whole)),
                    Ok(None) => {}
                    Err(()) => skipped += 1,
                },
                ITEM_MEMBERSHIP => match (members::split_key(key), Record::decode(value)) {
                    (Some(_), Ok(r)) => records.push((key, r)),
                    _ => skipped += 1,
                },
                ITEM_CONFLICT => match serde_json::from_slice::<Conflict>(value) {
                    Ok(c) => conflicts.push(c),
                    Err(_) => skipped += 1,
                },
                _ => skipped += 1,
            }
        }
        let (mut merged, bad) = self.snapshot_docs(&docs, &s.marks)?;
        skipped += bad;
        if !records.is_empty() || !conflicts.is_empty() {
            merged += self.snapshot_records(s, &records, &conflicts)?;
        }
        Ok((merged, skipped))
    }

    /// Merge a chunk's documents, in one batch: (merged, skipped).
    ///
    /// A document this region does not hold at all (the whole chunk, for a new empty region)
    /// takes the fast path: the received bytes are stored as they came (they are the sender's
    /// saved document; saving again would only re-encode them), and what is derived from them
    /// (heads, view, recorded conflicts) is computed on every core at once ([`prepare`]).
    /// It does not look for conflicts to record: every region that merged the concurrent
    /// changes has looked already, and the next merge of the document here looks again.
    /// A document already stored with exactly the received bytes is left alone (a restarted
    /// bootstrap applies its first chunks again). Every other document is merged.
    fn snapshot_docs(
        &self,
        docs: &[(Vec<u8>, Vec<u8>)],
        marks: &BTreeMap<String, u64>,
    ) -> Result<(usize, usize), StoreError> {
        if docs.is_empty() {
            return Ok((0, 0));
        }
        let _all = self.lock_all();
        // What this region holds of each: absent (fast path), the same bytes, or other.
        let mut held = Vec::with_capacity(docs.len());
        for (key, value) in docs {
            held.push(match self.db.get_pinned_cf(self.cf(CF_DOCS), key)? {
                None => Held::Absent,
                Some(b) if b.as_ref() == value.as_slice() => Held::Same,
                Some(_) => Held::Other,
            });
        }
        let fresh = prepare_all(docs, &held);
        let mut batch = WriteBatch::default();
        let mut merge = Merge::default();
        let mut loaded = Vec::new();
        let mut collected = Vec::new();
        let mut dropped_groups = Vec::new();
        let (mut merged, mut skipped) = (0usize, 0usize);
        // The fast path's digest terms, merged into `meta` once for the chunk.
        let mut fresh_delta = [0u8; 32];
        let staged: Result<(), StoreError> = (|| {
            for (((key, value), held), fresh) in docs.iter().zip(&held).zip(fresh) {
                let Some((tenant, rkind, id)) = split_resource_key(key) else {
                    skipped += 1;
                    continue;
                };
                match held {
                    Held::Same => continue,
                    Held::Absent if value.as_slice() != COLLECTED => {
                        match fresh {
                            Some(Ok(f)) => {
                                xor_into(&mut fresh_delta, &f.term);
                                self.stage_fresh(
                                    &mut batch,
                                    &mut merge,
                                    (key, value),
                                    (tenant, rkind, id),
                                    f,
                                    marks,
                                )?;
                                merged += 1;
                            }
                            Some(Err(PrepareError::Unreadable)) | None => skipped += 1,
                            Some(Err(PrepareError::Doc(e))) => return Err(e.into()),
                        }
                        continue;
                    }
                    _ => {}
                }
                if self.is_collected(key)? {
                    continue;
                }
                if value.as_slice() == COLLECTED {
                    // Collected everywhere: the id stays reserved here too, and delete wins.
                    let old_view = self.get(tenant, rkind, id)?.map(|s| s.view);
                    let mut old = self.load_stored(key)?;
                    let mut delta = heads_term(key, &mut old);
                    xor_into(&mut delta, &deleted_term(key));
                    batch.put_cf(self.cf(CF_DOCS), key, COLLECTED);
                    batch.merge_cf(self.cf(CF_META), DIGEST_KEY, delta);
                    xor_into(&mut merge.delta, &delta);
                    if rkind == ResourceKind::Group && !self.group_deleted(&merge, tenant, id)? {
                        self.stage_group_deleted(&mut batch, &mut merge, tenant, id)?;
                        dropped_groups.push((tenant.to_string(), id.to_string()));
                    }
                    let (old_view, new_view) = (old_view.as_ref(), None);
                    self.stage_view(
                        &mut batch, &mut merge, tenant, rkind, id, old_view, new_view,
                    )?;
                    collected.push(key.clone());
                    merged += 1;
                    continue;
                }
                let mut doc = self.load_any(key)?;
                let before = Before::of(key, &mut doc)?;
                if doc.load_incremental(value).is_err() {
                    skipped += 1;
                    loaded.push((key.clone(), self.load_stored(key)?));
                    continue;
                }
                self.stage_merged(
                    &mut batch,
                    (tenant, rkind, id),
                    &mut doc,
                    before,
                    &mut merge,
                )?;
                if doc::is_deleted(&doc) {
                    self.stage_tomb(&mut batch, key, tenant, id, marks)?;
                }
                loaded.push((key.clone(), doc));
                merged += 1;
            }
            Ok(())
        })();
        if let Err(e) = staged {
            self.write_fillers(&merge.local);
            return Err(e);
        }
        if fresh_delta != [0; 32] {
            batch.merge_cf(self.cf(CF_META), DIGEST_KEY, fresh_delta);
        }
        self.commit_indexing(batch, &merge.local, None, merge.delta, &mut merge.indexed)?;
        for (key, doc) in loaded {
            self.cache_put(key, doc);
        }
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for key in &collected {
                cache.pop(key);
            }
        }
        drop(_all);
        for (tenant, group) in dropped_groups {
            self.drop_group_memberships(&tenant, &group)?;
        }
        self.settle_user_names(&merge.users)?;
        Ok((merged, skipped))
    }

    /// Stage a document this region did not hold (see [`Store::snapshot_docs`]): its bytes as
    /// received, its recorded conflicts, its tombstone, its view (the caller merges its
    /// heads-digest term into `meta`, once per chunk).
    fn stage_fresh(
        &self,
        batch: &mut WriteBatch,
        merge: &mut Merge,
        (key, bytes): (&[u8], &[u8]),
        (tenant, kind, id): (&str, ResourceKind, &str),
        fresh: Fresh,
        marks: &BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        for record in &fresh.recorded {
            if self.stage_record(batch, record)? {
                merge.indexed.push(record.clone());
            }
        }
        if kind == ResourceKind::User {
            if let Some(name) = fresh.view.as_ref().and_then(|v| v["userName"].as_str()) {
                merge.users.push((tenant.to_string(), name.to_string()));
            }
        }
        batch.put_cf(self.cf(CF_DOCS), key, bytes);
        xor_into(&mut merge.delta, &fresh.term);
        if kind == ResourceKind::Group && fresh.deleted && !self.group_deleted(merge, tenant, id)? {
            self.stage_group_deleted(batch, merge, tenant, id)?;
        }
        self.stage_view(batch, merge, tenant, kind, id, None, fresh.view.as_ref())?;
        if fresh.deleted {
            self.stage_tomb(batch, key, tenant, id, marks)?;
        }
        Ok(())
    }

    /// Merge a chunk's membership records (sorted by key) and conflict records. Every record
    /// is joined with the snapshot's marks as its context; this region's records between the
    /// previous chunk's last key and this chunk's that the snapshot lacks are joined with
    /// "nothing, having seen the marks" (see the module docs).
    fn snapshot_records(
        &self,
        s: &mut SnapshotApply,
        records: &[(&[u8], Record)],
        conflicts: &[Conflict],
    ) -> Result<usize, StoreError> {
        let _all = self.lock_all();
        let mut batch = WriteBatch::default();
        let mut merge = Merge::default();
        let mut merged = 0;
        if let Some((last, _)) = records.last() {
            let incoming: std::collections::BTreeSet<&[u8]> =
                records.iter().map(|(k, _)| *k).collect();
            merged += self.covered_walk(&mut batch, &mut merge, s, Some(last), &incoming)?;
            s.cursor = last.to_vec();
        }
        for (key, record) in records {
            let Some((tenant, group, member)) = members::split_key(key) else {
                continue;
            };
            if self.is_collected(&keys::resource(tenant, ResourceKind::Group, group))? {
                continue;
            }
            let old = self.member_record(&merge, key)?;
            let new = old.join(&with_context(record.clone(), &s.marks));
            if self
                .stage_membership(&mut batch, &mut merge, tenant, group, member, new, &s.marks)?
            {
                merged += 1;
            }
        }
        for record in conflicts {
            if self.stage_record(&mut batch, record)? {
                merge.indexed.push(record.clone());
                merged += 1;
            }
        }
        // Decisions the sender's records show were recorded by whoever observed them.
        merge.found.clear();
        self.commit_indexing(batch, &[], None, merge.delta, &mut merge.indexed)?;
        Ok(merged)
    }

    /// Join this region's records after the snapshot's cursor (up to `upto`, inclusive; to the
    /// end when `None`) that are not in `incoming` with "nothing, having seen the marks".
    fn covered_walk(
        &self,
        batch: &mut WriteBatch,
        merge: &mut Merge,
        s: &SnapshotApply,
        upto: Option<&[u8]>,
        incoming: &std::collections::BTreeSet<&[u8]>,
    ) -> Result<usize, StoreError> {
        let nothing = Record {
            values: Vec::new(),
            seen: s.marks.clone(),
        };
        let mut local = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_MEMBERS),
            IteratorMode::From(&s.cursor, Direction::Forward),
        ) {
            let (k, v) = r?;
            if k.as_ref() <= s.cursor.as_slice() && !s.cursor.is_empty() {
                continue;
            }
            if upto.is_some_and(|u| k.as_ref() > u) {
                break;
            }
            if incoming.contains(k.as_ref()) {
                continue;
            }
            if let Ok(record) = Record::decode(&v) {
                local.push((k.to_vec(), record));
            }
        }
        let mut changed = 0;
        for (key, record) in local {
            let Some((tenant, group, member)) = members::split_key(&key) else {
                continue;
            };
            let new = record.join(&nothing);
            if self.stage_membership(batch, merge, tenant, group, member, new, &s.marks)? {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Every chunk of a snapshot is applied: the records after the last one it carried are
    /// walked, then the marks rise to the snapshot's and the floors past the entries this log
    /// never received (so it never offers what it lacks). This region's next sequence number
    /// moves past what the cluster holds of it.
    pub fn finish_snapshot(&self, s: SnapshotApply) -> Result<(), StoreError> {
        {
            let _all = self.lock_all();
            let mut batch = WriteBatch::default();
            let mut merge = Merge::default();
            self.covered_walk(&mut batch, &mut merge, &s, None, &Default::default())?;
            merge.found.clear();
            self.commit(batch, &[], None, merge.delta)?;
        }
        let marks = &s.marks;
        let current = self.marks.hwm();
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = WriteBatch::default();
        let meta = self.cf(CF_META);
        let mut raised = BTreeMap::new();
        for (origin, mark) in marks {
            if current.get(origin).copied().unwrap_or(0) >= *mark {
                continue;
            }
            batch.merge_cf(meta, log::mark_key(origin), mark.to_be_bytes());
            batch.put_cf(meta, log::floor_key(origin), (mark + 1).to_be_bytes());
            batch.delete_range_cf(
                self.cf(CF_LOG),
                keys::log(origin, 0),
                keys::log(origin, mark + 1),
            );
            raised.insert(origin.clone(), *mark);
        }
        self.db.write_opt(batch, &self.write_opts)?;
        for (origin, mark) in &raised {
            floors.insert(origin.clone(), mark + 1);
        }
        self.marks.raise(&raised);
        if let Some(own) = raised.get(&self.region) {
            self.next_seq.fetch_max(own + 1, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// A record as a snapshot standing for `marks` carries it: its context covers the marks.
fn with_context(mut record: Record, marks: &BTreeMap<String, u64>) -> Record {
    for (origin, s) in marks {
        let mark = record.seen.entry(origin.clone()).or_insert(0);
        *mark = (*mark).max(*s);
    }
    record
}

/// A snapshot being applied: the marks it stands for, how far the walk over this region's
/// own membership records has come, and documents arriving in parts.
pub struct SnapshotApply {
    marks: BTreeMap<String, u64>,
    /// The last membership key handled (the walk resumes after it).
    cursor: Vec<u8>,
    parts: BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>,
    part_bytes: usize,
}

impl SnapshotApply {
    /// The marks the snapshot stands for.
    pub fn marks(&self) -> &BTreeMap<String, u64> {
        &self.marks
    }

    /// Keep one part of a large document; the whole document once every part is here.
    fn add_part(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, ()> {
        let (Some(i), Some(n)) = (value.get(..4), value.get(4..8)) else {
            return Err(());
        };
        let i = u32::from_be_bytes(i.try_into().map_err(|_| ())?) as usize;
        let n = u32::from_be_bytes(n.try_into().map_err(|_| ())?) as usize;
        let bytes = &value[8..];
        if i >= n || n > MAX_DOC_BYTES || self.part_bytes + bytes.len() > MAX_DOC_BYTES {
            return Err(());
        }
        let slots = self
            .parts
            .entry(key.to_vec())
            .or_insert_with(|| vec![None; n]);
        if slots.len() != n {
            return Err(());
        }
        self.part_bytes += bytes.len();
        slots[i] = Some(bytes.to_vec());
        if slots.iter().all(Option::is_some) {
            let slots = self.parts.remove(key).unwrap_or_default();
            let whole: Vec<u8> = slots.into_iter().flatten().flatten().collect();
            self.part_bytes -= whole.len();
            return Ok(Some(whole));
        }
        Ok(None)
    }
}

/// (tenant, kind, id) of a `docs` key.
fn split_resource_key(key: &[u8]) -> Option<(&str, ResourceKind, &str)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.split('\0');
    let (tenant, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !crate::ids::is_valid_name(tenant)
        || !crate::ids::is_plausible_id(id)
    {
        return None;
    }
    let kind = match kind {
        "User" => ResourceKind::User,
        "Group" => ResourceKind::Group,
        _ => return None,
    };
    Some((tenant, kind, id))
}

/// What this region holds of a snapshot's document.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Nothing: the fast path.
    Absent,
    /// Exactly the received bytes: nothing to do.
    Same,
    /// Something else (another state, or a collected tombstone): merged.
    Other,
}

/// What a document new to this region brings, derived from its bytes alone.
struct Fresh {
    /// Its heads-digest term (the delta from nothing).
    term: [u8; 32],
    /// A tombstone?
    deleted: bool,
    /// Its materialised view (none for a tombstone, or a document without a header).
    view: Option<Value>,
    /// The conflict records it carries.
    recorded: Vec<Conflict>,
}

/// Why a received document could not be prepared.
enum PrepareError {
    /// Automerge cannot load it: skipped and counted, as any item this version cannot read.
    Unreadable,
    /// It loads, but reading it failed.
    Doc(DocError),
}

/// Load a document's bytes and derive what storing it needs (pure: no store, no I/O).
fn prepare(key: &[u8], kind: ResourceKind, bytes: &[u8]) -> Result<Fresh, PrepareError> {
    let mut doc = AutoCommit::load(bytes).map_err(|_| PrepareError::Unreadable)?;
    let term = heads_term(key, &mut doc);
    let deleted = doc::is_deleted(&doc);
    let live = doc::kind_of(&doc).is_ok();
    let view = if deleted || !live {
        None
    } else {
        Some(doc::materialize(&mut doc, kind).map_err(PrepareError::Doc)?)
    };
    let recorded = if live {
        conflict::recorded(&doc).map_err(|e| PrepareError::Doc(DocError::from(e)))?
    } else {
        Vec::new()
    };
    Ok(Fresh {
        term,
        deleted,
        view,
        recorded,
    })
}

/// A chunk with fewer documents to prepare than this stays on one thread.
const PARALLEL_FROM: usize = 64;

/// [`prepare`] every absent document of a chunk (`None` for the others), spread over the
/// machine's cores: loading and materialising is most of a bootstrap's work.
fn prepare_all(
    docs: &[(Vec<u8>, Vec<u8>)],
    held: &[Held],
) -> Vec<Option<Result<Fresh, PrepareError>>> {
    let one = |(key, value): &(Vec<u8>, Vec<u8>), held: &Held| {
        if *held != Held::Absent || value.as_slice() == COLLECTED {
            return None;
        }
        let (_, kind, _) = split_resource_key(key)?;
        Some(prepare(key, kind, value))
    };
    let absent = held.iter().filter(|h| **h == Held::Absent).count();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(absent / PARALLEL_FROM)
        .max(1);
    if threads == 1 {
        return docs.iter().zip(held).map(|(d, h)| one(d, h)).collect();
    }
    let per = docs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = docs
            .chunks(per)
            .zip(held.chunks(per))
            .map(|(d, h)| {
                scope.spawn(move || d.iter().zip(h).map(|(d, h)| one(d, h)).collect::<Vec<_>>())
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

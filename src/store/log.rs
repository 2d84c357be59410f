//! Replication log entries: which resource changed, with the Automerge change bytes and the
//! membership writes of the same request.
//!
//! Encodings (kept on disk and sent to peers, so small and versioned):
//! ```text
//! v1 := 1:u8 u16 tenant_len, tenant, kind:u8, u16 id_len, id, change…
//! v2 := 2:u8 u16 tenant_len, tenant, kind:u8, u16 id_len, id, varint change_len, change,
//!       varint at_millis, marks, varint n, n × membership write, varint r,
//!       r × (varint len, record JSON)
//! v3 := 3:u8, the fields of v2, intent
//! ```
//! v3 is written for the last entry of a write an API request made (it carries the write's
//! [`Intent`], which events are made of: see [`crate::events`]); v1 when there is nothing but
//! a document change and no intent (bookkeeping), v2 otherwise. A
//! membership write ([`Write`]) carries the member id, add or remove, the member's shown
//! attributes and what the record's context held beyond `marks`; its dot is the entry's
//! (origin, sequence), its time `at_millis`, and its context the writer's `marks` (everything
//! it had applied) plus its own. Conflict records (`r`) are decisions about memberships a region
//! observed while merging: they replicate as entries of their own, since membership records do
//! not keep them.

use rocksdb::{ColumnFamily, Direction, IteratorMode, DB};

use super::{keys, StoreError};
use crate::conflict::membership::{put_marks, put_varint, take_marks, take_varint, Write};
use crate::events::Intent;
use crate::scim::schema::ResourceKind;

/// One replication log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogEntry {
    pub tenant: String,
    pub kind: ResourceKind,
    pub id: String,
    /// Automerge change bytes (`save_after` the heads before the write); empty when the write
    /// changed memberships only.
    pub change: Vec<u8>,
    /// The writing region's clock (milliseconds since the epoch): the time of the membership
    /// writes. 0 in v1 entries.
    pub at: i64,
    /// The writer's marks when it wrote (every entry it had applied): the causal context of the
    /// membership writes. Empty in v1 entries.
    pub context: std::collections::BTreeMap<String, u64>,
    /// Membership writes (`id` is the group).
    pub members: Vec<Write>,
    /// Conflict records (JSON) a region observed while merging memberships.
    pub records: Vec<Vec<u8>>,
    /// What the write meant (on the last entry of a write an API request made).
    pub intent: Option<Intent>,
}

/// The longest conflict record accepted in an entry.
const MAX_RECORD: u64 = 64 << 10;

impl LogEntry {
    /// Encode for storage and the wire.
    pub fn encode(&self) -> Vec<u8> {
        let v2 = !self.members.is_empty() || !self.records.is_empty();
        let mut out = Vec::with_capacity(
            16 + self.tenant.len() + self.id.len() + self.change.len() + 64 * self.members.len(),
        );
        out.push(match (&self.intent, v2) {
            (Some(_), _) => 3,
            (None, true) => 2,
            (None, false) => 1,
        });
        out.extend_from_slice(&(self.tenant.len() as u16).to_be_bytes());
        out.extend_from_slice(self.tenant.as_bytes());
        out.push(match self.kind {
            ResourceKind::User => 0,
            ResourceKind::Group => 1,
        });
        out.extend_from_slice(&(self.id.len() as u16).to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
        if !v2 && self.intent.is_none() {
            out.extend_from_slice(&self.change);
            return out;
        }
        put_varint(&mut out, self.change.len() as u64);
        out.extend_from_slice(&self.change);
        put_varint(&mut out, self.at.max(0) as u64);
        put_marks(&mut out, &self.context);
        put_varint(&mut out, self.members.len() as u64);
        for w in &self.members {
            w.encode_into(&mut out);
        }
        put_varint(&mut out, self.records.len() as u64);
        for r in &self.records {
            put_varint(&mut out, r.len() as u64);
            out.extend_from_slice(r);
        }
        if let Some(intent) = &self.intent {
            intent.encode_into(&mut out);
        }
        out
    }

    /// Decode; `None` for bytes this version did not write.
    pub fn decode(bytes: &[u8]) -> Option<LogEntry> {
        let (&version, rest) = bytes.split_first()?;
        if !(1..=3).contains(&version) {
            return None;
        }
        let (tenant, rest) = take_str(rest)?;
        let (&kind, rest) = rest.split_first()?;
        let kind = match kind {
            0 => ResourceKind::User,
            1 => ResourceKind::Group,
            _ => return None,
        };
        let (id, rest) = take_str(rest)?;
        let mut entry = LogEntry {
            tenant,
            kind,
            id,
            ..LogEntry::default()
        };
        if version == 1 {
            entry.change = rest.to_vec();
            return Some(entry);
        }
        let (len, rest) = take_varint(rest).ok()?;
        let len = usize::try_from(len).ok().filter(|l| *l <= rest.len())?;
        entry.change = rest[..len].to_vec();
        let (at, rest) = take_varint(&rest[len..]).ok()?;
        entry.at = i64::try_from(at).ok()?;
        let (context, rest) = take_marks(rest).ok()?;
        entry.context = context;
        let (n, mut rest) = take_varint(rest).ok()?;
        // Every write takes at least 4 bytes: a count beyond the bytes left is garbage.
        if n > rest.len() as u64 / 4 + 1 {
            return None;
        }
        for _ in 0..n {
            let (w, more) = Write::decode_from(rest).ok()?;
            entry.members.push(w);
            rest = more;
        }
        let (r, mut rest) = take_varint(rest).ok()?;
        if r > rest.len() as u64 + 1 {
            return None;
        }
        for _ in 0..r {
            let (len, more) = take_varint(rest).ok()?;
            if len > MAX_RECORD || len > more.len() as u64 {
                return None;
            }
            entry.records.push(more[..len as usize].to_vec());
            rest = &more[len as usize..];
        }
        if version == 3 {
            let (intent, more) = Intent::decode_from(rest)?;
            entry.intent = Some(intent);
            rest = more;
        }
        rest.is_empty().then_some(entry)
    }
}

fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = u16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]) as usize;
    let s = bytes.get(2..2 + len)?;
    Some((String::from_utf8(s.to_vec()).ok()?, &bytes[2 + len..]))
}

/// The highest sequence number `origin` has in the log (0 when none).
pub fn last_seq(db: &DB, cf: &ColumnFamily, origin: &str) -> Result<u64, StoreError> {
    let mut upper = keys::log(origin, u64::MAX);
    upper.push(0xff);
    let prefix_len = upper.len() - 9;
    let prefix = &upper[..prefix_len].to_vec();
    // The first key at or before the largest possible key of this origin is its last entry.
    if let Some(r) = db
        .iterator_cf(cf, IteratorMode::From(&upper, Direction::Reverse))
        .next()
    {
        let (k, _) = r?;
        if k.starts_with(prefix) && k.len() == prefix_len + 8 {
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[prefix_len..]);
            return Ok(u64::from_be_bytes(seq));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_other_versions() {
        let e = LogEntry {
            tenant: "t".into(),
            kind: ResourceKind::Group,
            id: "g1".into(),
            change: vec![1, 2, 3],
            ..LogEntry::default()
        };
        assert_eq!(LogEntry::decode(&e.encode()), Some(e.clone()));
        let mut bytes = e.encode();
        bytes[0] = 9;
        assert_eq!(LogEntry::decode(&bytes), None);
        assert_eq!(LogEntry::decode(&[1, 0]), None);
        let with_members = LogEntry {
            at: 1_700_000_000_000,
            members: vec![Write {
                group: None,
                member: "u1".into(),
                on: true,
                attrs: Some("{\"display\":\"A\"}".into()),
                seen: [("eu".to_string(), 3)].into(),
            }],
            records: vec![b"{}".to_vec()],
            context: [("us".to_string(), 7)].into(),
            ..e.clone()
        };
        let bytes = with_members.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(LogEntry::decode(&bytes), Some(with_members.clone()));
        for cut in 1..bytes.len() {
            assert_eq!(LogEntry::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        // v3: an intent, with or without memberships.
        for base in [e.clone(), with_members] {
            let with_intent = LogEntry {
                intent: Some(Intent {
                    op: Some(crate::events::Op::Patch),
                    attributes: vec!["active".into()],
                    access: Some(crate::events::Access::Deactivate),
                }),
                ..base
            };
            let bytes = with_intent.encode();
            assert_eq!(bytes[0], 3);
            assert_eq!(LogEntry::decode(&bytes), Some(with_intent));
            for cut in 1..bytes.len() {
                assert_eq!(LogEntry::decode(&bytes[..cut]), None, "cut at {cut}");
            }
        }
    }
}

/// Per-origin contiguous high-water marks of the log: for every origin, the highest `s` such
/// that entries `1..=s` are all durable. Local writes allocate sequence numbers before their
/// batch commits, so commits land slightly out of order; entries above the mark wait in `above`
/// until the gap below them fills. Replication offers peers only what is under the mark.
#[derive(Debug, Default)]
pub struct Marks {
    inner: std::sync::Mutex<MarksInner>,
}

#[derive(Debug, Default)]
struct MarksInner {
    hwm: std::collections::BTreeMap<String, u64>,
    above: std::collections::BTreeMap<String, std::collections::BTreeSet<u64>>,
}

/// The meta key of an origin's persisted mark (u64 big-endian, merged as a maximum).
pub fn mark_key(origin: &str) -> Vec<u8> {
    let mut k = b"mark\0".to_vec();
    k.extend_from_slice(origin.as_bytes());
    k
}

/// The meta key of an origin's log floor: the lowest sequence the log still holds.
pub fn floor_key(origin: &str) -> Vec<u8> {
    let mut k = b"floor\0".to_vec();
    k.extend_from_slice(origin.as_bytes());
    k
}

/// RocksDB merge operator of `meta`: marks (`mark\0…`) keep the largest operand; every other
/// merged key (the heads digest) is an XOR of its operands.
pub fn meta_merge(
    key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    if key.starts_with(b"mark\0") {
        let max = existing
            .into_iter()
            .chain(operands)
            .filter_map(|v| <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes))
            .max()
            .unwrap_or(0);
        return Some(max.to_be_bytes().to_vec());
    }
    super::xor_merge(key, existing, operands)
}

/// Every `prefix ‖ origin → u64` entry of `meta`.
fn read_u64_map(
    db: &DB,
    meta: &ColumnFamily,
    prefix: &[u8],
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    let mut out = std::collections::BTreeMap::new();
    for r in db.iterator_cf(meta, IteratorMode::From(prefix, Direction::Forward)) {
        let (k, v) = r?;
        if !k.starts_with(prefix) {
            break;
        }
        let value = <[u8; 8]>::try_from(&v[..])
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("a mark or floor in meta".into()))?;
        out.insert(
            String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
            value,
        );
    }
    Ok(out)
}

/// The persisted log floors (origins absent from the map have floor 1).
pub fn load_floors(
    db: &DB,
    meta: &ColumnFamily,
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    read_u64_map(db, meta, b"floor\0")
}

impl Marks {
    /// Marks as persisted in `meta`, plus this region's own entries committed above its
    /// persisted (lower-bound) mark: a few, the writes that were in flight. Never reads the
    /// rest of the log.
    pub fn load(
        db: &DB,
        meta: &ColumnFamily,
        log: &ColumnFamily,
        own: &str,
    ) -> Result<Marks, StoreError> {
        let mut persisted = read_u64_map(db, meta, b"mark\0")?;
        // Truncation removes only entries at or below the mark, so a floor proves the mark
        // reached floor - 1 even where the persisted value lags.
        for (origin, floor) in read_u64_map(db, meta, b"floor\0")? {
            let mark = persisted.entry(origin).or_insert(0);
            *mark = (*mark).max(floor.saturating_sub(1));
        }
        let marks = Marks::default();
        {
            let mut m = marks.lock();
            m.hwm = persisted;
        }
        let from = marks.hwm().get(own).copied().unwrap_or(0) + 1;
        let start = keys::log(own, from);
        let prefix = start[..start.len() - 8].to_vec();
        for r in db.iterator_cf(log, IteratorMode::From(&start, Direction::Forward)) {
            let (k, _) = r?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[prefix.len()..]);
            marks.committed(own, u64::from_be_bytes(seq));
        }
        Ok(marks)
    }

    /// Raise the marks to at least `to` (a snapshot brought everything up to them).
    pub fn raise(&self, to: &std::collections::BTreeMap<String, u64>) {
        let mut m = self.lock();
        for (origin, seq) in to {
            let mark = m.hwm.entry(origin.clone()).or_insert(0);
            if *seq > *mark {
                *mark = *seq;
            }
            let mark = *mark;
            if let Some(above) = m.above.get_mut(origin) {
                above.retain(|s| *s > mark);
            }
        }
        // Entries already waiting just above a raised mark now continue it.
        let MarksInner { hwm, above } = &mut *m;
        for (origin, pending) in above.iter_mut() {
            if let Some(mark) = hwm.get_mut(origin) {
                while pending.remove(&(*mark + 1)) {
                    *mark += 1;
                }
            }
        }
    }

    /// Read every log key once (a format-2 folder, whose marks are only in its log).
    pub fn scan(db: &DB, cf: &ColumnFamily) -> Result<Marks, StoreError> {
        let marks = Marks::default();
        for r in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = r?;
            let Some(sep) = k.iter().position(|&b| b == 0) else {
                continue;
            };
            if k.len() != sep + 9 {
                continue;
            }
            let origin = String::from_utf8_lossy(&k[..sep]).into_owned();
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&k[sep + 1..]);
            marks.committed(&origin, u64::from_be_bytes(seq));
        }
        Ok(marks)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MarksInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entry `seq` of `origin` is durable.
    pub fn committed(&self, origin: &str, seq: u64) {
        let mut m = self.lock();
        let MarksInner { hwm, above } = &mut *m;
        let mark = hwm.entry(origin.to_string()).or_insert(0);
        if seq <= *mark {
            return;
        }
        let pending = above.entry(origin.to_string()).or_default();
        pending.insert(seq);
        while pending.remove(&(*mark + 1)) {
            *mark += 1;
        }
    }

    /// The contiguous marks of every origin.
    pub fn hwm(&self) -> std::collections::BTreeMap<String, u64> {
        self.lock().hwm.clone()
    }

    /// The marks, and whether no durable entry waits above them (only then do the documents
    /// reflect exactly the entries under the marks).
    pub fn snapshot(&self) -> (std::collections::BTreeMap<String, u64>, bool) {
        let m = self.lock();
        (m.hwm.clone(), m.above.values().all(|s| s.is_empty()))
    }

    /// The missing sequence numbers of `origin` below its highest durable entry.
    pub fn holes(&self, origin: &str) -> Vec<u64> {
        let m = self.lock();
        let mark = m.hwm.get(origin).copied().unwrap_or(0);
        let Some(top) = m.above.get(origin).and_then(|s| s.last().copied()) else {
            return Vec::new();
        };
        let present = &m.above[origin];
        (mark + 1..top).filter(|s| !present.contains(s)).collect()
    }
}

/// Raw entries of `origin` from `from` on: at most `max_entries`, stopping once `max_bytes` is
/// exceeded (always at least one entry when there is one). Fillers are empty.
pub fn read_raw(
    db: &DB,
    cf: &ColumnFamily,
    origin: &str,
    from: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let start = keys::log(origin, from);
    let prefix = start[..start.len() - 8].to_vec();
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    for r in db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = r?;
        if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 || out.len() >= max_entries {
            break;
        }
        if !out.is_empty() && bytes + v.len() > max_bytes {
            break;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&k[prefix.len()..]);
        bytes += v.len();
        out.push((u64::from_be_bytes(seq), v.to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod mark_tests {
    use super::*;

    #[test]
    fn marks_advance_only_over_contiguous_entries() {
        let m = Marks::default();
        m.committed("a", 2);
        assert_eq!(m.hwm().get("a"), Some(&0));
        assert_eq!(m.holes("a"), vec![1]);
        m.committed("a", 1);
        m.committed("a", 1);
        assert_eq!(m.hwm()["a"], 2);
        m.committed("a", 5);
        assert_eq!(m.holes("a"), vec![3, 4]);
        m.committed("a", 3);
        m.committed("a", 4);
        assert_eq!(m.hwm()["a"], 5);
        assert!(m.holes("a").is_empty());
    }
}

use std::sync::atomic::Ordering;

use super::{Store, CF_LOG};

impl Store {
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
        read_raw(
            &self.db,
            self.cf(CF_LOG),
            origin,
            from,
            max_entries,
            max_bytes,
        )
    }
}

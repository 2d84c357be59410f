//! Replication log entries: which resource changed, with the Automerge change bytes.
//!
//! Encoding (version 1): `[1u8][u16 tenant len][tenant][u8 kind][u16 id len][id][change…]`.
//! Small and versioned, since entries are kept on disk and later sent to peers.

use rocksdb::{ColumnFamily, Direction, IteratorMode, DB};

use super::{keys, StoreError};
use crate::scim::schema::ResourceKind;

const ENTRY_VERSION: u8 = 1;

/// One replication log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub tenant: String,
    pub kind: ResourceKind,
    pub id: String,
    /// Automerge change bytes (`save_after` the heads before the write).
    pub change: Vec<u8>,
}

impl LogEntry {
    /// Encode for storage and the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.tenant.len() + self.id.len() + self.change.len());
        out.push(ENTRY_VERSION);
        out.extend_from_slice(&(self.tenant.len() as u16).to_be_bytes());
        out.extend_from_slice(self.tenant.as_bytes());
        out.push(match self.kind {
            ResourceKind::User => 0,
            ResourceKind::Group => 1,
        });
        out.extend_from_slice(&(self.id.len() as u16).to_be_bytes());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.change);
        out
    }

    /// Decode; `None` for bytes this version did not write.
    pub fn decode(bytes: &[u8]) -> Option<LogEntry> {
        let (&version, rest) = bytes.split_first()?;
        if version != ENTRY_VERSION {
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
        Some(LogEntry {
            tenant,
            kind,
            id,
            change: rest.to_vec(),
        })
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

/// Entries of `origin` with sequence ≥ `from`, at most `limit`.
pub fn read(
    db: &DB,
    cf: &ColumnFamily,
    origin: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, LogEntry)>, StoreError> {
    let start = keys::log(origin, from);
    let prefix = start[..start.len() - 8].to_vec();
    let mut out = Vec::new();
    for r in db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
        let (k, v) = r?;
        if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 || out.len() >= limit {
            break;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&k[prefix.len()..]);
        let entry = LogEntry::decode(&v).ok_or_else(|| StoreError::Corrupt("log entry".into()))?;
        out.push((u64::from_be_bytes(seq), entry));
    }
    Ok(out)
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
        };
        assert_eq!(LogEntry::decode(&e.encode()), Some(e.clone()));
        let mut bytes = e.encode();
        bytes[0] = 9;
        assert_eq!(LogEntry::decode(&bytes), None);
        assert_eq!(LogEntry::decode(&[1, 0]), None);
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

impl Marks {
    /// Read every log key once (at open).
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

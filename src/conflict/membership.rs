//! Membership records: one small remove-wins record per (tenant, group, member), so that adding
//! or removing a member costs the same in a group of ten as in a group of a million. Pure: no
//! I/O, no clock (times are parameters).
//!
//! # The record
//! A record is a *multi-value register with a causal context* (the textbook optimised MVR):
//! - `values`: the concurrent writes that survive, each an add (`on`, with the member's shown
//!   attributes such as `display`) or a removal, identified by its [`Dot`];
//! - `seen`: the causal context, the writes this record has seen, as a version vector
//!   (region → highest sequence number seen *at this record*).
//!
//! A write by a region replaces every value the region has seen: its new state is one value and
//! the old context plus its own dot ([`Record::write`]); that state is also what it ships to
//! the other regions. Receiving a state is a [`Record::join`]: a value survives if both sides
//! hold it, or if the other side has not seen it. The member is listed iff some value survives
//! and every surviving value is an add ([`Record::present`]): a removal concurrent with an add
//! wins (least privilege), and a re-add by a region that had seen the removal counts.
//!
//! # Laws (property-tested in the store's membership laws)
//! - `join` is commutative, associative and idempotent, so states may arrive in any order, any
//!   number of times, through any path (replication, snapshots).
//! - After every write has reached every region, all regions hold byte-identical records, and a
//!   record's `present` is the AND over the *maximal* writes (those no other write saw) of "is
//!   an add", exactly what the members map inside group documents gave before.
//!
//! # Why a version vector per record is exact
//! Dots are (origin region, log sequence number of the entry that carries the write). A region
//! applies each origin's entries in sequence order, and writes to one record are serialised in
//! the region that makes them, so whoever has seen `(r, s)` at a record has seen every earlier
//! write of `r` to it: the set of dots a context covers is downward closed per region, and a
//! single number per region describes it.
//!
//! # Collection
//! Removed records ([`Record::removed`]) do not stay forever: once every region has seen the
//! state and every write concurrent with it has arrived everywhere, no write can arrive that
//! did not see it, and dropping the record changes nothing anyone will ever read
//! ([`gc_step`]).

use std::collections::BTreeMap;

/// A write's identity: the region that made it and the sequence number of the log entry that
/// carries it. Migrated records use `~am:<region>` and the Automerge op counter instead (see
/// `store::migrate`), a counter space of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dot {
    pub region: String,
    pub seq: u64,
}

/// One surviving write of a membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub dot: Dot,
    /// An add (`true`) or a removal.
    pub on: bool,
    /// For an add: the JSON text of the member as listed, without `value` (e.g.
    /// `{"display":"Ann","type":"User"}`); `None` when there is nothing but the id.
    pub attrs: Option<String>,
    /// The writing region's clock at the write (milliseconds since the epoch).
    pub at: i64,
}

/// A membership record: surviving values (sorted by dot, unique) and the causal context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub values: Vec<MemberValue>,
    pub seen: BTreeMap<String, u64>,
}

/// Why bytes are not a record this version wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("membership record truncated")]
    Truncated,
    #[error("malformed membership record: {0}")]
    Malformed(&'static str),
}

impl Record {
    /// Does the context cover `dot` (has this record seen that write)?
    pub fn has_seen(&self, dot: &Dot) -> bool {
        self.seen.get(&dot.region).is_some_and(|s| *s >= dot.seq)
    }

    /// The state after a local write: one value replacing everything this record has seen.
    /// `dot` must be new to the record (the region's next log sequence number).
    pub fn write(&self, dot: Dot, on: bool, attrs: Option<String>, at: i64) -> Record {
        let mut seen = self.seen.clone();
        let mark = seen.entry(dot.region.clone()).or_insert(0);
        *mark = (*mark).max(dot.seq);
        Record {
            values: vec![MemberValue { dot, on, attrs, at }],
            seen,
        }
    }

    /// The state after a local write by a region that has applied everything up to `marks`:
    /// its context covers those too. That is what keeps collection safe: a record collected
    /// in one region and written again there must still outvote the removal a slower region
    /// holds, which the writer's marks prove it saw.
    pub fn write_after(
        &self,
        marks: &BTreeMap<String, u64>,
        dot: Dot,
        on: bool,
        attrs: Option<String>,
        at: i64,
    ) -> Record {
        let mut seen = self.seen.clone();
        for (region, s) in marks {
            let mark = seen.entry(region.clone()).or_insert(0);
            *mark = (*mark).max(*s);
        }
        Record {
            values: Vec::new(),
            seen,
        }
        .write(dot, on, attrs, at)
    }

    /// Merge another state of the same record (see the module docs for the laws).
    pub fn join(&self, other: &Record) -> Record {
        let mut values: Vec<MemberValue> = Vec::new();
        for v in &self.values {
            let in_other = other.values.iter().any(|o| o.dot == v.dot);
            if in_other || !other.has_seen(&v.dot) {
                values.push(v.clone());
            }
        }
        for v in &other.values {
            let in_self = self.values.iter().any(|s| s.dot == v.dot);
            if !in_self && !self.has_seen(&v.dot) {
                values.push(v.clone());
            }
        }
        values.sort_by(|a, b| a.dot.cmp(&b.dot));
        values.dedup_by(|a, b| a.dot == b.dot);
        let mut seen = self.seen.clone();
        for (region, s) in &other.seen {
            let mark = seen.entry(region.clone()).or_insert(0);
            *mark = (*mark).max(*s);
        }
        Record { values, seen }
    }

    /// Is the member listed: some value survives and every surviving value is an add.
    pub fn present(&self) -> bool {
        !self.values.is_empty() && self.values.iter().all(|v| v.on)
    }

    /// Removed: values survive but the member is not listed (every value a removal, or a
    /// removal beside concurrent adds). Only a new write can list it again, so such a record
    /// is a collection candidate.
    pub fn removed(&self) -> bool {
        !self.values.is_empty() && !self.present()
    }

    /// The attributes the member is listed with: of concurrent adds, the latest (then the
    /// greatest dot), the same choice on every region. `None` when not present.
    pub fn shown(&self) -> Option<&MemberValue> {
        if !self.present() {
            return None;
        }
        self.values
            .iter()
            .max_by(|a, b| (a.at, &a.dot).cmp(&(b.at, &b.dot)))
    }

    /// Concurrent writes the remove-wins rule decided: the latest surviving removal against each
    /// surviving add. Empty unless both kinds survive.
    pub fn conflicts(&self) -> Vec<(&MemberValue, &MemberValue)> {
        let Some(removal) = self
            .values
            .iter()
            .filter(|v| !v.on)
            .max_by(|a, b| (a.at, &a.dot).cmp(&(b.at, &b.dot)))
        else {
            return Vec::new();
        };
        self.values
            .iter()
            .filter(|v| v.on)
            .map(|add| (removal, add))
            .collect()
    }

    /// Canonical bytes (equal records encode equally, so digests compare across regions).
    ///
    /// ```text
    /// record := 1:u8 varint n, n × value, varint m, m × (str region, varint seq)
    /// value  := str region, varint seq, on:u8, varint at, varint len+1 (0: no attrs), attrs
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.values.len() * 24 + self.seen.len() * 8);
        out.push(1);
        put_varint(&mut out, self.values.len() as u64);
        for v in &self.values {
            put_str(&mut out, &v.dot.region);
            put_varint(&mut out, v.dot.seq);
            out.push(u8::from(v.on));
            put_varint(&mut out, v.at.max(0) as u64);
            put_opt(&mut out, v.attrs.as_deref());
        }
        put_context(&mut out, &self.seen);
        out
    }

    /// Decode bytes [`Record::encode`] wrote; anything else is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut r = Reader(bytes);
        if r.u8()? != 1 {
            return Err(RecordError::Malformed("unknown record version"));
        }
        let n = r.count()?;
        let mut values = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let region = r.str()?;
            let seq = r.varint()?;
            let on = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(RecordError::Malformed("flag")),
            };
            let at = i64::try_from(r.varint()?).map_err(|_| RecordError::Malformed("time"))?;
            let attrs = r.opt()?;
            values.push(MemberValue {
                dot: Dot { region, seq },
                on,
                attrs,
                at,
            });
        }
        if values.windows(2).any(|w| w[0].dot >= w[1].dot) {
            return Err(RecordError::Malformed("values not sorted by dot"));
        }
        let seen = r.context()?;
        if !r.0.is_empty() {
            return Err(RecordError::Malformed("trailing bytes"));
        }
        Ok(Record { values, seen })
    }
}

/// One membership write as a log entry carries it: the dot is implied (the entry's origin and
/// sequence number), and so are the time and the writer's marks (the entry's, shared by all its
/// writes). Its state is [`Write::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The group, when it is not the entry's resource (a user's delete removes the user from
    /// every group it is in, in its own entry).
    pub group: Option<String>,
    pub member: String,
    pub on: bool,
    pub attrs: Option<String>,
    /// What the record's context held beyond the entry's marks (usually nothing: migrated
    /// records' `~am:` entries).
    pub seen: BTreeMap<String, u64>,
}

impl Write {
    /// The writer's new state of the record, given the entry's dot, time and marks.
    pub fn state(&self, dot: Dot, at: i64, marks: &BTreeMap<String, u64>) -> Record {
        Record {
            values: Vec::new(),
            seen: self.seen.clone(),
        }
        .write_after(marks, dot, self.on, self.attrs.clone(), at)
    }

    /// The part of a record's context a write must carry itself, beside the entry's marks.
    pub fn beyond(
        seen: &BTreeMap<String, u64>,
        marks: &BTreeMap<String, u64>,
    ) -> BTreeMap<String, u64> {
        seen.iter()
            .filter(|(r, s)| marks.get(*r).is_none_or(|m| m < s))
            .map(|(r, s)| (r.clone(), *s))
            .collect()
    }

    /// Append the encoding: `varint len+1, group, str member, on:u8, varint len+1, attrs,
    /// context` (a length of 0 means absent).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_opt(out, self.group.as_deref());
        put_str(out, &self.member);
        out.push(u8::from(self.on));
        put_opt(out, self.attrs.as_deref());
        put_context(out, &self.seen);
    }

    /// Decode one write from the front of `bytes`; returns it and the rest.
    pub fn decode_from(bytes: &[u8]) -> Result<(Write, &[u8]), RecordError> {
        let mut r = Reader(bytes);
        let group = r.opt()?;
        let member = r.str()?;
        let on = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(RecordError::Malformed("flag")),
        };
        let attrs = r.opt()?;
        let seen = r.context()?;
        Ok((
            Write {
                group,
                member,
                on,
                attrs,
                seen,
            },
            r.0,
        ))
    }
}

/// Where a removed record stands on its way to collection (kept by each region for itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// This region's marks when the record reached its current (removed) state: a region whose
    /// marks reach these holds that state.
    pub marks: BTreeMap<String, u64>,
    /// Once every region holds the state: per region, the last sequence number it had handed
    /// out then. Every write concurrent with the state is at or below it.
    pub allocated: Option<BTreeMap<String, u64>>,
}

/// What one region reports of itself: its durable marks and its last handed-out sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub marks: BTreeMap<String, u64>,
    pub allocated: u64,
}

/// The next step for a removed record, from this region's marks (`own`, with `own_allocated`
/// its last handed-out sequence) and the latest report of *every* other region (`peers`, by
/// region; a region missing from it blocks collection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcStep {
    /// Not yet: some region may still lack the state.
    Wait,
    /// Every region holds the state: remember what each had handed out by then.
    Settle(BTreeMap<String, u64>),
    /// Every write concurrent with the state has arrived here: drop the record.
    Collect,
}

/// Decide the next collection step of a removed record (see the module docs).
///
/// Phase 1 waits until every region's marks reach [`Pending::marks`]: all of them hold the
/// removal, so their later writes are causally after it. Phase 2 waits until this region holds
/// every entry up to what each region had handed out by then ([`Pending::allocated`]): the
/// writes made before a region saw the removal, the only ones that can be concurrent with it.
pub fn gc_step(
    pending: &Pending,
    own_region: &str,
    own: &BTreeMap<String, u64>,
    own_allocated: u64,
    peers: &BTreeMap<String, Report>,
    cluster: &[String],
) -> GcStep {
    let reaches = |have: &BTreeMap<String, u64>, want: &BTreeMap<String, u64>| {
        want.iter()
            .all(|(o, s)| have.get(o).copied().unwrap_or(0) >= *s)
    };
    match &pending.allocated {
        None => {
            if !reaches(own, &pending.marks) {
                return GcStep::Wait;
            }
            let mut allocated = BTreeMap::from([(own_region.to_string(), own_allocated)]);
            for region in cluster.iter().filter(|r| r.as_str() != own_region) {
                match peers.get(region) {
                    Some(report) if reaches(&report.marks, &pending.marks) => {
                        allocated.insert(region.clone(), report.allocated);
                    }
                    _ => return GcStep::Wait,
                }
            }
            GcStep::Settle(allocated)
        }
        Some(allocated) => {
            if reaches(own, allocated) {
                GcStep::Collect
            } else {
                GcStep::Wait
            }
        }
    }
}

// ---- canonical encoding helpers ----

/// Append a version vector (sorted regions with their sequence numbers).
pub fn put_marks(out: &mut Vec<u8>, marks: &BTreeMap<String, u64>) {
    put_context(out, marks);
}

/// Read a version vector [`put_marks`] wrote from the front of `bytes`; returns it and the rest.
pub fn take_marks(bytes: &[u8]) -> Result<(BTreeMap<String, u64>, &[u8]), RecordError> {
    let mut r = Reader(bytes);
    let marks = r.context()?;
    Ok((marks, r.0))
}

/// Read a minimal LEB128 varint from the front of `bytes`; returns it and the rest.
pub fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), RecordError> {
    let mut r = Reader(bytes);
    let v = r.varint()?;
    Ok((v, r.0))
}

/// Append an LEB128 varint (the encoding records and log entries share).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_varint(out, 0),
        Some(s) => {
            put_varint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn put_context(out: &mut Vec<u8>, seen: &BTreeMap<String, u64>) {
    put_varint(out, seen.len() as u64);
    for (region, s) in seen {
        put_str(out, region);
        put_varint(out, *s);
    }
}

/// The longest string a record holds (a member id, a region, the shown attributes).
const MAX_STR: u64 = 64 << 10;
/// The most values or context entries a record holds (regions of a cluster, a few times over).
const MAX_COUNT: u64 = 4096;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, RecordError> {
        let (&b, rest) = self.0.split_first().ok_or(RecordError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(RecordError::Malformed("non-minimal varint"));
                }
                return Ok(v);
            }
        }
        Err(RecordError::Malformed("varint too long"))
    }

    fn count(&mut self) -> Result<usize, RecordError> {
        match self.varint()? {
            n if n <= MAX_COUNT => Ok(n as usize),
            _ => Err(RecordError::Malformed("too many entries")),
        }
    }

    fn bytes(&mut self, len: u64) -> Result<&[u8], RecordError> {
        if len > MAX_STR {
            return Err(RecordError::Malformed("string too long"));
        }
        let len = len as usize;
        if self.0.len() < len {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<String, RecordError> {
        let len = self.varint()?;
        let bytes = self.bytes(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Malformed("utf-8"))
    }

    fn opt(&mut self) -> Result<Option<String>, RecordError> {
        match self.varint()? {
            0 => Ok(None),
            n => {
                let bytes = self.bytes(n - 1)?;
                String::from_utf8(bytes.to_vec())
                    .map(Some)
                    .map_err(|_| RecordError::Malformed("utf-8"))
            }
        }
    }

    fn context(&mut self) -> Result<BTreeMap<String, u64>, RecordError> {
        let n = self.count()?;
        let mut seen = BTreeMap::new();
        let mut last: Option<String> = None;
        for _ in 0..n {
            let region = self.str()?;
            if last.as_ref().is_some_and(|l| *l >= region) {
                return Err(RecordError::Malformed("context not sorted"));
            }
            let s = self.varint()?;
            last = Some(region.clone());
            seen.insert(region, s);
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dot(r: &str, s: u64) -> Dot {
        Dot {
            region: r.into(),
            seq: s,
        }
    }

    #[test]
    fn a_removal_concurrent_with_an_add_wins_and_a_re_add_that_saw_it_counts() {
        let base = Record::default().write(dot("eu", 1), true, None, 1);
        let removed = base.write(dot("eu", 2), false, None, 2);
        let readded = base.write(dot("us", 1), true, Some("{\"display\":\"A\"}".into()), 3);
        let merged = removed.join(&readded);
        assert_eq!(merged, readded.join(&removed));
        assert!(!merged.present());
        assert_eq!(merged.conflicts().len(), 1);
        // A re-add by a region that had seen the removal.
        let again = merged.write(dot("us", 2), true, None, 4);
        assert!(again.present());
        assert!(again.join(&merged).present());
        assert!(again.conflicts().is_empty());
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let r = Record::default()
            .write(
                dot("eu", 7),
                true,
                Some("{\"display\":\"Ann\"}".into()),
                1_700_000_000_000,
            )
            .join(&Record::default().write(dot("us", 3), false, None, 5));
        assert_eq!(Record::decode(&r.encode()), Ok(r.clone()));
        let bytes = r.encode();
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err());
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(Record::decode(&extra).is_err());
        let w = Write {
            group: Some("g-2".into()),
            member: "m-1".into(),
            on: false,
            attrs: None,
            seen: BTreeMap::from([("eu".into(), 9)]),
        };
        let mut out = Vec::new();
        w.encode_into(&mut out);
        out.push(42);
        let (back, rest) = Write::decode_from(&out).unwrap();
        assert_eq!((back, rest), (w, &[42u8][..]));
    }

    #[test]
    fn collection_waits_for_every_region_then_for_their_concurrent_writes() {
        let cluster = vec!["a".to_string(), "b".to_string()];
        let marks = BTreeMap::from([("a".to_string(), 5)]);
        let mut p = Pending {
            marks: marks.clone(),
            allocated: None,
        };
        let own = BTreeMap::from([("a".to_string(), 5), ("b".to_string(), 2)]);
        let behind = BTreeMap::from([(
            "b".to_string(),
            Report {
                marks: BTreeMap::from([("a".to_string(), 4)]),
                allocated: 9,
            },
        )]);
        assert_eq!(gc_step(&p, "a", &own, 5, &behind, &cluster), GcStep::Wait);
        assert_eq!(
            gc_step(&p, "a", &own, 5, &BTreeMap::new(), &cluster),
            GcStep::Wait
        );
        let saw = BTreeMap::from([(
            "b".to_string(),
            Report {
                marks: BTreeMap::from([("a".to_string(), 5)]),
                allocated: 9,
            },
        )]);
        let GcStep::Settle(allocated) = gc_step(&p, "a", &own, 6, &saw, &cluster) else {
            panic!("expected settle");
        };
        assert_eq!(allocated["b"], 9);
        p.allocated = Some(allocated);
        // b's writes up to 9 may be concurrent with the removal: wait until they are here.
        assert_eq!(gc_step(&p, "a", &own, 6, &saw, &cluster), GcStep::Wait);
        let caught_up = BTreeMap::from([("a".to_string(), 6), ("b".to_string(), 9)]);
        assert_eq!(
            gc_step(&p, "a", &caught_up, 6, &saw, &cluster),
            GcStep::Collect
        );
    }

    /// The states of up to five writes by three regions, each write seeing a random subset of
    /// the earlier ones (and always its own region's earlier writes): what real histories make.
    fn arb_history() -> impl Strategy<Value = Vec<Record>> {
        prop::collection::vec((0usize..3, any::<bool>(), any::<u8>()), 0..6).prop_map(|writes| {
            let regions = ["eu", "us", "ap"];
            let mut states: Vec<Record> = Vec::new();
            let mut seqs = [0u64; 3];
            for (i, (r, on, mask)) in writes.into_iter().enumerate() {
                let mut base = Record::default();
                for (j, s) in states.iter().enumerate() {
                    let own = s.values.iter().any(|v| v.dot.region == regions[r]);
                    if own || mask & (1 << j) != 0 {
                        base = base.join(s);
                    }
                }
                seqs[r] += 1;
                states.push(base.write(dot(regions[r], seqs[r]), on, None, i as i64));
            }
            states
        })
    }

    fn pick(states: &[Record], mask: u8) -> Record {
        states
            .iter()
            .enumerate()
            .filter(|(j, _)| mask & (1 << j) != 0)
            .fold(Record::default(), |acc, (_, s)| acc.join(s))
    }

    proptest! {
        #[test]
        fn join_is_commutative_associative_and_idempotent(
            h in arb_history(), ma in any::<u8>(), mb in any::<u8>(), mc in any::<u8>()
        ) {
            let (a, b, c) = (pick(&h, ma), pick(&h, mb), pick(&h, mc));
            prop_assert_eq!(a.join(&b), b.join(&a));
            prop_assert_eq!(a.join(&b).join(&c), a.join(&b.join(&c)));
            prop_assert_eq!(a.join(&a), a.clone());
            prop_assert_eq!(Record::decode(&a.encode()), Ok(a.clone()));
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Record::decode(&bytes);
            let _ = Write::decode_from(&bytes);
        }
    }
}

//! Wire format of the replication protocol: versioned messages and their length-prefixed frames.
//!
//! Sans-IO, like mini-redis's `Frame`: [`decode_frame`] looks at a byte buffer and says "a whole
//! message and how many bytes it took", "not enough bytes yet" or "this peer sends garbage"; only
//! the transport reads sockets. Decoding sees untrusted bytes, so it never panics, never allocates
//! more than the frame it was given, and rejects anything this version did not write.
//!
//! # Frame (all integers big-endian or LEB128 varints)
//! ```text
//! frame    := len:u32be payload            len ≤ MAX_FRAME
//! payload  := version:u8 kind:u8 body      version 1 = MessageV1; unknown versions are refused
//! body     := Hello   (kind 1): str region, varint protocol, varint incarnation, hwm, floor
//!           | Entries (kind 2): str origin, varint n, n × (varint seq_delta, bytes change)
//!           | Ack     (kind 3): varint incarnation, hwm
//!           | Need    (kind 4): str origin, varint from
//!           | Status  (kind 5): varint incarnation, hwm, varint n, n × str region  (sorted, unique),
//!                               floor, varint allocated
//!           | Digest  (kind 6): hwm, 32 bytes
//!           | Fetch (7), FetchReply (8): varint request, bytes
//!           | SnapshotRequest (kind 9): hwm
//!           | SnapshotBegin (10): varint id, hwm
//!           | SnapshotChunk (11): varint id, varint n, varint k, k × (u8 kind, bytes key, bytes value)
//!           | SnapshotEnd (12): varint id, varint chunks
//!           | SnapshotAck (13): varint id, varint n
//! floor    := hwm   (per origin, the lowest sequence the log still holds; absent = 1)
//! hwm      := varint n, n × (str origin, varint seq)            (sorted by origin, unique)
//! str      := varint len (≤ MAX_NAME), UTF-8 bytes
//! bytes    := varint len, bytes
//! ```
//! `seq_delta` is the first sequence number itself (≥ 1), then the distance to the previous one
//! (≥ 1): sequences in a batch strictly increase, and a contiguous batch costs one byte per seq.
//! A one-attribute change (~200 bytes of Automerge + the log entry header) therefore travels in
//! about 10 bytes of framing plus the origin name.
//!
//! # Versioning
//! A new wire version adds a `MessageV2` and a `Message::V2` variant with its own version byte;
//! old variants stay decodable. `Hello` is always sent as V1 so that every version can read it,
//! and its `protocol` field (the highest version the sender speaks) negotiates what the
//! connection uses afterwards (the minimum of both).

use std::collections::{BTreeMap, BTreeSet};

/// Highest contiguous sequence held, per origin region (absent = 0 = nothing).
pub type Hwm = BTreeMap<String, u64>;

/// One replication log entry on the wire: its sequence number within its origin, and the
/// opaque log entry bytes (`store::LogEntry::encode`; empty for a filler, see the module docs
/// of `replication`).
pub type Entry = (u64, Vec<u8>);

/// One item of a snapshot: what it is (the store's kinds: documents, membership records,
/// conflict records…), its storage key and its value, all opaque here.
pub type SnapshotItem = (u8, Vec<u8>, Vec<u8>);

/// The largest frame accepted (payload bytes, without the 4-byte length prefix).
pub const MAX_FRAME: usize = 16 << 20;
/// The longest region name accepted.
pub const MAX_NAME: usize = 255;
/// The largest number of origins in one high-water-mark map (a cluster is a handful of regions;
/// the bound keeps a hostile map from costing more than its bytes).
pub const MAX_ORIGINS: usize = 4096;
/// The largest number of entries in one `Entries` message (and of items in a snapshot chunk).
pub const MAX_ENTRIES: usize = 1 << 16;
/// The wire version this build writes.
pub const WIRE_VERSION: u8 = 1;

/// A replication message of any wire version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Version 1.
    V1(MessageV1),
}

/// Version 1 of the replication messages. Every encoding is canonical: a decoder accepts exactly
/// the bytes the encoder writes (sorted maps, minimal varints), nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageV1 {
    /// First message on every connection, both ways: who I am, the highest protocol version I
    /// speak, and my durable high-water marks (so the peer knows what to send me).
    ///
    /// `Hello`, `Ack` and `Status` are *reports* of the sender's durable marks and carry its
    /// `incarnation` (distinct for every start of the sender): within one incarnation marks only
    /// rise, so reports may arrive in any order; a new incarnation's report is taken exactly
    /// (the sender may have restarted with less data).
    Hello {
        region: String,
        protocol: u32,
        incarnation: u64,
        hwm: Hwm,
        /// Per origin, the lowest sequence my log still holds (older entries were truncated):
        /// a peer whose marks are below it cannot catch up from me entry by entry.
        floor: Hwm,
    },
    /// A batch of consecutive-or-increasing log entries of one origin.
    Entries { origin: String, entries: Vec<Entry> },
    /// My durable high-water marks, sent after my own commit of entries a peer sent (feeds the
    /// sender's retransmission, the sync-mode quorum and the replication-lag metric).
    Ack { incarnation: u64, hwm: Hwm },
    /// I hold entries of `origin` beyond a gap: please (re)send from `from`.
    Need { origin: String, from: u64 },
    /// Periodic advertisement: my durable high-water marks and the regions I am connected to
    /// (lets peers decide who forwards an origin I cannot reach).
    Status {
        incarnation: u64,
        hwm: Hwm,
        connected: BTreeSet<String>,
        /// My log floors (see `Hello`).
        floor: Hwm,
        /// The last sequence number I have handed out to a local write (committed or not):
        /// every write I made before this report is at or below it (collection of removed
        /// membership records waits for it).
        allocated: u64,
    },
    /// A digest of all my documents' heads at exactly these high-water marks: two regions with
    /// equal marks must have equal digests, or they diverged.
    Digest { hwm: Hwm, digest: [u8; 32] },
    /// Do you hold this resource? (No false 404s: a region that lacks an id or userName asks
    /// its peers before answering 404.) `key` is the store's lookup key, opaque here.
    Fetch { request: u64, key: Vec<u8> },
    /// The answer to `Fetch`: the Automerge document bytes, empty when the peer lacks it too.
    FetchReply { request: u64, doc: Vec<u8> },
    /// My marks are below your log floor: send me a snapshot of your state.
    SnapshotRequest { hwm: Hwm },
    /// A snapshot follows: my state as of these marks (what the receiver may raise its own
    /// marks to once every chunk is applied).
    SnapshotBegin { id: u64, hwm: Hwm },
    /// Chunk `n` (from 1) of snapshot `id`.
    SnapshotChunk {
        id: u64,
        n: u64,
        items: Vec<SnapshotItem>,
    },
    /// Snapshot `id` had `chunks` chunks.
    SnapshotEnd { id: u64, chunks: u64 },
    /// I applied chunks `1..=n` of snapshot `id` durably (the sender's window).
    SnapshotAck { id: u64, n: u64 },
}

impl From<MessageV1> for Message {
    fn from(m: MessageV1) -> Message {
        Message::V1(m)
    }
}

/// Why bytes are not a message this version understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end in the middle of a field.
    #[error("message truncated")]
    Truncated,
    /// The length prefix announces more than [`MAX_FRAME`] bytes.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(u64),
    /// A wire version this build does not speak.
    #[error("unknown message version {0}")]
    UnknownVersion(u8),
    /// A message kind version 1 does not have.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A field breaks a rule of the format (named).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// Bytes left over after a complete message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

const KIND_HELLO: u8 = 1;
const KIND_ENTRIES: u8 = 2;
const KIND_ACK: u8 = 3;
const KIND_NEED: u8 = 4;
const KIND_STATUS: u8 = 5;
const KIND_DIGEST: u8 = 6;
const KIND_FETCH: u8 = 7;
const KIND_FETCH_REPLY: u8 = 8;
const KIND_SNAPSHOT_REQUEST: u8 = 9;
const KIND_SNAPSHOT_BEGIN: u8 = 10;
const KIND_SNAPSHOT_CHUNK: u8 = 11;
const KIND_SNAPSHOT_END: u8 = 12;
const KIND_SNAPSHOT_ACK: u8 = 13;

/// Encode a message as a payload (no length prefix).
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match msg {
        Message::V1(m) => {
            out.push(1);
            encode_v1(m, &mut out);
        }
    }
    out
}

/// Encode a message as a frame: a 4-byte big-endian length, then the payload.
pub fn encode_frame(msg: &Message) -> Vec<u8> {
    let payload = encode(msg);
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Decode one frame from the start of `buf`: `Ok(None)` when `buf` does not hold a whole frame
/// yet, `Ok(Some((message, bytes used)))` otherwise. An error means the peer is broken or
/// hostile: close the connection.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len as u64));
    }
    let Some(payload) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((decode(payload)?, 4 + len)))
}

/// Decode exactly one payload (no length prefix).
pub fn decode(payload: &[u8]) -> Result<Message, WireError> {
    if payload.len() > MAX_FRAME {
        return Err(WireError::TooLarge(payload.len() as u64));
    }
    let mut r = Reader { buf: payload };
    let msg = match r.u8()? {
        1 => Message::V1(decode_v1(&mut r)?),
        v => return Err(WireError::UnknownVersion(v)),
    };
    if !r.buf.is_empty() {
        return Err(WireError::TrailingBytes(r.buf.len()));
    }
    Ok(msg)
}

fn encode_v1(m: &MessageV1, out: &mut Vec<u8>) {
    match m {
        MessageV1::Hello {
            region,
            protocol,
            incarnation,
            hwm,
            floor,
        } => {
            out.push(KIND_HELLO);
            put_str(out, region);
            put_varint(out, u64::from(*protocol));
            put_varint(out, *incarnation);
            put_hwm(out, hwm);
            put_hwm(out, floor);
        }
        MessageV1::Entries { origin, entries } => {
            out.push(KIND_ENTRIES);
            put_str(out, origin);
            put_varint(out, entries.len() as u64);
            let mut prev = 0u64;
            for (seq, bytes) in entries {
                put_varint(out, seq.wrapping_sub(prev));
                prev = *seq;
                put_varint(out, bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
        }
        MessageV1::Ack { incarnation, hwm } => {
            out.push(KIND_ACK);
            put_varint(out, *incarnation);
            put_hwm(out, hwm);
        }
        MessageV1::Need { origin, from } => {
            out.push(KIND_NEED);
            put_str(out, origin);
            put_varint(out, *from);
        }
        MessageV1::Status {
            incarnation,
            hwm,
            connected,
            floor,
            allocated,
        } => {
            out.push(KIND_STATUS);
            put_varint(out, *incarnation);
            put_hwm(out, hwm);
            put_varint(out, connected.len() as u64);
            for region in connected {
                put_str(out, region);
            }
            put_hwm(out, floor);
            put_varint(out, *allocated);
        }
        MessageV1::Digest { hwm, digest } => {
            out.push(KIND_DIGEST);
            put_hwm(out, hwm);
            out.extend_from_slice(digest);
        }
        MessageV1::Fetch { request, key } => {
            out.push(KIND_FETCH);
            put_varint(out, *request);
            put_varint(out, key.len() as u64);
            out.extend_from_slice(key);
        }
        MessageV1::FetchReply { request, doc } => {
            out.push(KIND_FETCH_REPLY);
            put_varint(out, *request);
            put_varint(out, doc.len() as u64);
            out.extend_from_slice(doc);
        }
        MessageV1::SnapshotRequest { hwm } => {
            out.push(KIND_SNAPSHOT_REQUEST);
            put_hwm(out, hwm);
        }
        MessageV1::SnapshotBegin { id, hwm } => {
            out.push(KIND_SNAPSHOT_BEGIN);
            put_varint(out, *id);
            put_hwm(out, hwm);
        }
        MessageV1::SnapshotChunk { id, n, items } => {
            out.push(KIND_SNAPSHOT_CHUNK);
            put_varint(out, *id);
            put_varint(out, *n);
            put_varint(out, items.len() as u64);
            for (kind, key, value) in items {
                out.push(*kind);
                put_varint(out, key.len() as u64);
                out.extend_from_slice(key);
                put_varint(out, value.len() as u64);
                out.extend_from_slice(value);
            }
        }
        MessageV1::SnapshotEnd { id, chunks } => {
            out.push(KIND_SNAPSHOT_END);
            put_varint(out, *id);
            put_varint(out, *chunks);
        }
        MessageV1::SnapshotAck { id, n } => {
            out.push(KIND_SNAPSHOT_ACK);
            put_varint(out, *id);
            put_varint(out, *n);
        }
    }
}

fn decode_v1(r: &mut Reader<'_>) -> Result<MessageV1, WireError> {
    Ok(match r.u8()? {
        KIND_HELLO => {
            let region = r.name()?;
            let protocol =
                u32::try_from(r.varint()?).map_err(|_| WireError::Malformed("protocol"))?;
            MessageV1::Hello {
                region,
                protocol,
                incarnation: r.varint()?,
                hwm: r.hwm()?,
                floor: r.hwm()?,
            }
        }
        KIND_ENTRIES => {
            let origin = r.name()?;
            let n = r.count(MAX_ENTRIES, "entry count")?;
            // Each entry takes at least two bytes: never reserve more than the input can hold.
            let mut entries = Vec::with_capacity(n.min(r.buf.len() / 2));
            let mut prev = 0u64;
            for _ in 0..n {
                let delta = r.varint()?;
                if delta == 0 {
                    return Err(WireError::Malformed("entry sequences must increase"));
                }
                let seq = prev
                    .checked_add(delta)
                    .ok_or(WireError::Malformed("entry sequence overflows"))?;
                prev = seq;
                let bytes = r.bytes()?.to_vec();
                entries.push((seq, bytes));
            }
            MessageV1::Entries { origin, entries }
        }
        KIND_ACK => MessageV1::Ack {
            incarnation: r.varint()?,
            hwm: r.hwm()?,
        },
        KIND_NEED => {
            let origin = r.name()?;
            let from = r.varint()?;
            if from == 0 {
                return Err(WireError::Malformed("need from sequence 0"));
            }
            MessageV1::Need { origin, from }
        }
        KIND_STATUS => {
            let incarnation = r.varint()?;
            let hwm = r.hwm()?;
            let n = r.count(MAX_ORIGINS, "region count")?;
            let mut connected = BTreeSet::new();
            let mut last: Option<String> = None;
            for _ in 0..n {
                let region = r.name()?;
                if last.as_ref().is_some_and(|l| *l >= region) {
                    return Err(WireError::Malformed("regions must be sorted and unique"));
                }
                last = Some(region.clone());
                connected.insert(region);
            }
            MessageV1::Status {
                incarnation,
                hwm,
                connected,
                floor: r.hwm()?,
                allocated: r.varint()?,
            }
        }
        KIND_DIGEST => {
            let hwm = r.hwm()?;
            let digest: [u8; 32] = r.take(32)?.try_into().map_err(|_| WireError::Truncated)?;
            MessageV1::Digest { hwm, digest }
        }
        KIND_FETCH => MessageV1::Fetch {
            request: r.varint()?,
            key: r.bytes()?.to_vec(),
        },
        KIND_FETCH_REPLY => MessageV1::FetchReply {
            request: r.varint()?,
            doc: r.bytes()?.to_vec(),
        },
        KIND_SNAPSHOT_REQUEST => MessageV1::SnapshotRequest { hwm: r.hwm()? },
        KIND_SNAPSHOT_BEGIN => MessageV1::SnapshotBegin {
            id: r.varint()?,
            hwm: r.hwm()?,
        },
        KIND_SNAPSHOT_CHUNK => {
            let id = r.varint()?;
            let n = r.varint()?;
            let k = r.count(MAX_ENTRIES, "snapshot item count")?;
            // Each item takes at least three bytes: never reserve more than the input holds.
            let mut items = Vec::with_capacity(k.min(r.buf.len() / 3));
            for _ in 0..k {
                let kind = r.u8()?;
                let key = r.bytes()?.to_vec();
                let value = r.bytes()?.to_vec();
                items.push((kind, key, value));
            }
            MessageV1::SnapshotChunk { id, n, items }
        }
        KIND_SNAPSHOT_END => MessageV1::SnapshotEnd {
            id: r.varint()?,
            chunks: r.varint()?,
        },
        KIND_SNAPSHOT_ACK => MessageV1::SnapshotAck {
            id: r.varint()?,
            n: r.varint()?,
        },
        k => return Err(WireError::UnknownKind(k)),
    })
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_hwm(out: &mut Vec<u8>, hwm: &Hwm) {
    put_varint(out, hwm.len() as u64);
    for (origin, seq) in hwm {
        put_str(out, origin);
        put_varint(out, *seq);
    }
}

/// A cursor over untrusted bytes; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(WireError::Malformed("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    // Overlong: one value, one encoding (see `decoded_messages_are_canonical`).
                    return Err(WireError::Malformed("overlong varint"));
                }
                return Ok(v);
            }
        }
        Err(WireError::Malformed("varint longer than 10 bytes"))
    }

    fn count(&mut self, max: usize, what: &'static str) -> Result<usize, WireError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(WireError::Malformed(what));
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        if n > self.buf.len() as u64 {
            return Err(WireError::Truncated);
        }
        self.take(n as usize)
    }

    fn name(&mut self) -> Result<String, WireError> {
        let n = self.count(MAX_NAME, "name longer than 255 bytes")?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed("name is not UTF-8"))
    }

    fn hwm(&mut self) -> Result<Hwm, WireError> {
        let n = self.count(MAX_ORIGINS, "origin count")?;
        let mut hwm = Hwm::new();
        let mut last: Option<String> = None;
        for _ in 0..n {
            let origin = self.name()?;
            if last.as_ref().is_some_and(|l| *l >= origin) {
                return Err(WireError::Malformed("origins must be sorted and unique"));
            }
            last = Some(origin.clone());
            let seq = self.varint()?;
            hwm.insert(origin, seq);
        }
        Ok(hwm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hwm(pairs: &[(&str, u64)]) -> Hwm {
        pairs.iter().map(|(o, s)| (o.to_string(), *s)).collect()
    }

    #[test]
    fn every_kind_round_trips_through_a_frame() {
        let messages = vec![
            MessageV1::Hello {
                region: "eu".into(),
                protocol: 1,
                incarnation: 1_764_000_000_000,
                hwm: hwm(&[("eu", 7), ("us", 3)]),
                floor: hwm(&[("eu", 5)]),
            },
            MessageV1::Entries {
                origin: "us".into(),
                entries: vec![(4, vec![1, 2, 3]), (5, vec![]), (9, vec![7])],
            },
            MessageV1::Ack {
                incarnation: 0,
                hwm: hwm(&[("eu", u64::MAX)]),
            },
            MessageV1::Need {
                origin: "ap".into(),
                from: 12,
            },
            MessageV1::Status {
                incarnation: u64::MAX,
                hwm: hwm(&[]),
                connected: ["ap".to_string(), "us".to_string()].into(),
                floor: hwm(&[("ap", 2)]),
                allocated: 17,
            },
            MessageV1::SnapshotRequest {
                hwm: hwm(&[("eu", 1)]),
            },
            MessageV1::SnapshotBegin {
                id: 3,
                hwm: hwm(&[("eu", 9)]),
            },
            MessageV1::SnapshotChunk {
                id: 3,
                n: 1,
                items: vec![(1, b"t\0User\0x".to_vec(), vec![1, 2]), (2, vec![], vec![])],
            },
            MessageV1::SnapshotEnd { id: 3, chunks: 1 },
            MessageV1::SnapshotAck { id: 3, n: 1 },
            MessageV1::Digest {
                hwm: hwm(&[("eu", 1)]),
                digest: [9; 32],
            },
        ];
        for m in messages {
            let m = Message::V1(m);
            let frame = encode_frame(&m);
            assert_eq!(decode_frame(&frame), Ok(Some((m.clone(), frame.len()))));
            // Any strict prefix is "not yet", never an error or a wrong message.
            for cut in 0..frame.len() {
                assert_eq!(
                    decode_frame(&frame[..cut]),
                    Ok(None),
                    "prefix of {cut} bytes"
                );
            }
        }
    }

    #[test]
    fn a_contiguous_batch_costs_two_bytes_of_framing_per_small_entry() {
        let entries: Vec<Entry> = (1000..1100).map(|s| (s, vec![0; 100])).collect();
        let m = Message::V1(MessageV1::Entries {
            origin: "eu-west".into(),
            entries,
        });
        // 100 × (1 delta byte + 1 length byte + 100 bytes) + header.
        assert!(encode(&m).len() <= 100 * 102 + 16, "{}", encode(&m).len());
    }

    #[test]
    fn foreign_and_malformed_bytes_are_refused() {
        assert_eq!(decode(&[2, 1]), Err(WireError::UnknownVersion(2)));
        assert_eq!(decode(&[1, 99]), Err(WireError::UnknownKind(99)));
        assert_eq!(decode(&[]), Err(WireError::Truncated));
        // Ack with two origins out of order.
        assert_eq!(
            decode(&[1, KIND_ACK, 0, 2, 1, b'b', 1, 1, b'a', 1]),
            Err(WireError::Malformed("origins must be sorted and unique"))
        );
        // Entries whose second sequence does not increase.
        assert_eq!(
            decode(&[1, KIND_ENTRIES, 1, b'a', 2, 5, 0, 0, 0]),
            Err(WireError::Malformed("entry sequences must increase"))
        );
        // Need from 0.
        assert_eq!(
            decode(&[1, KIND_NEED, 1, b'a', 0]),
            Err(WireError::Malformed("need from sequence 0"))
        );
        // Trailing garbage.
        let mut ack = encode(&Message::V1(MessageV1::Ack {
            incarnation: 1,
            hwm: Hwm::new(),
        }));
        ack.push(0);
        assert_eq!(decode(&ack), Err(WireError::TrailingBytes(1)));
        // A length prefix beyond the limit is refused before any bytes arrive.
        assert_eq!(
            decode_frame(&u32::MAX.to_be_bytes()),
            Err(WireError::TooLarge(u32::MAX as u64))
        );
        // A varint that overflows 64 bits.
        assert!(matches!(
            decode(&[
                1, KIND_NEED, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02
            ]),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn a_huge_announced_count_does_not_allocate() {
        // Claims 65,536 entries but carries none: must fail fast on truncation.
        let mut bytes = vec![1, KIND_ENTRIES, 1, b'a'];
        put_varint(&mut bytes, MAX_ENTRIES as u64);
        assert_eq!(decode(&bytes), Err(WireError::Truncated));
        let mut bytes = vec![1, KIND_ENTRIES, 1, b'a'];
        put_varint(&mut bytes, MAX_ENTRIES as u64 + 1);
        assert_eq!(decode(&bytes), Err(WireError::Malformed("entry count")));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9\\-é]{0,12}"
    }

    fn hwm_strategy() -> impl Strategy<Value = Hwm> {
        proptest::collection::btree_map(name(), any::<u64>(), 0..6)
    }

    fn entries_strategy() -> impl Strategy<Value = Vec<Entry>> {
        (
            1u64..u64::MAX / 2,
            proptest::collection::vec(
                (1u64..1000, proptest::collection::vec(any::<u8>(), 0..40)),
                0..20,
            ),
        )
            .prop_map(|(start, items)| {
                let mut seq = start - 1;
                items
                    .into_iter()
                    .map(|(delta, bytes)| {
                        seq += delta;
                        (seq, bytes)
                    })
                    .collect()
            })
    }

    fn message_strategy() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                name(),
                any::<u32>(),
                any::<u64>(),
                hwm_strategy(),
                hwm_strategy()
            )
                .prop_map(|(region, protocol, incarnation, hwm, floor)| {
                    MessageV1::Hello {
                        region,
                        protocol,
                        incarnation,
                        hwm,
                        floor,
                    }
                }),
            (name(), entries_strategy())
                .prop_map(|(origin, entries)| MessageV1::Entries { origin, entries }),
            (any::<u64>(), hwm_strategy())
                .prop_map(|(incarnation, hwm)| MessageV1::Ack { incarnation, hwm }),
            (name(), 1u64..).prop_map(|(origin, from)| MessageV1::Need { origin, from }),
            (
                any::<u64>(),
                hwm_strategy(),
                proptest::collection::btree_set(name(), 0..5),
                hwm_strategy(),
                any::<u64>(),
            )
                .prop_map(|(incarnation, hwm, connected, floor, allocated)| {
                    MessageV1::Status {
                        incarnation,
                        hwm,
                        connected,
                        floor,
                        allocated,
                    }
                }),
            hwm_strategy().prop_map(|hwm| MessageV1::SnapshotRequest { hwm }),
            (any::<u64>(), hwm_strategy())
                .prop_map(|(id, hwm)| MessageV1::SnapshotBegin { id, hwm }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(
                    (
                        any::<u8>(),
                        proptest::collection::vec(any::<u8>(), 0..16),
                        proptest::collection::vec(any::<u8>(), 0..32)
                    ),
                    0..4
                )
            )
                .prop_map(|(id, n, items)| MessageV1::SnapshotChunk { id, n, items }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(id, chunks)| MessageV1::SnapshotEnd { id, chunks }),
            (any::<u64>(), any::<u64>()).prop_map(|(id, n)| MessageV1::SnapshotAck { id, n }),
            (hwm_strategy(), any::<[u8; 32]>())
                .prop_map(|(hwm, digest)| MessageV1::Digest { hwm, digest }),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64))
                .prop_map(|(request, key)| MessageV1::Fetch { request, key }),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..256))
                .prop_map(|(request, doc)| MessageV1::FetchReply { request, doc }),
        ]
        .prop_map(Message::V1)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn encode_then_decode_is_the_identity(m in message_strategy()) {
            let frame = encode_frame(&m);
            prop_assert_eq!(decode_frame(&frame), Ok(Some((m, frame.len()))));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn decoded_messages_are_canonical(
            m in message_strategy(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = encode(&m);
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            // Corrupted bytes never panic, and whatever still decodes is canonical: encoding it
            // gives back exactly these bytes (one message, one encoding).
            if let Ok(decoded) = decode(&bytes) {
                prop_assert_eq!(encode(&decoded), bytes);
            }
        }
    }
}

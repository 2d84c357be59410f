//! The replication state machine of one region: sans-IO, time as a parameter.
//!
//! A [`Replicator`] owns no socket, no clock and no store. The caller (the QUIC layer and the
//! store, or the simulation) feeds it inputs — [`connected`](Replicator::connected),
//! [`disconnected`](Replicator::disconnected), [`received`](Replicator::received),
//! [`local_committed`](Replicator::local_committed), [`applied`](Replicator::applied),
//! [`tick`](Replicator::tick) — each with the current time in milliseconds since any fixed
//! epoch, and drains its outputs: [`poll_transmit`](Replicator::poll_transmit) (messages to
//! send), [`poll_apply`](Replicator::poll_apply) (entries to commit to the store) and
//! [`poll_event`](Replicator::poll_event) (things to log, count or wake up on).
//! [`poll_timeout`](Replicator::poll_timeout) says when to call `tick` next.
//!
//! The log is read through the small [`Log`] trait, passed to the calls that need it, so the
//! store implements it over RocksDB and tests over a map. See the parent module for the
//! protocol's invariants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::needs;
use super::wire::{Entry, Hwm, Message, MessageV1};

/// Milliseconds since an arbitrary fixed epoch (process start, a test's zero): the only notion
/// of time the protocol has. It must not go backwards.
pub type Millis = u64;

/// The protocol version this build speaks (sent in `Hello`). Version 2 added log floors,
/// snapshots and the `allocated` report; its `Hello` is not readable by version 1.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest protocol version this build still talks to.
pub const MIN_PROTOCOL_VERSION: u32 = 2;

/// Read access to this region's durable replication log.
///
/// The log holds entries of every origin under (origin, sequence), its own and those received
/// from peers, and never changes an entry once written. Implementations must be cheap to call:
/// the store keeps the marks in memory.
pub trait Log {
    /// For every origin, the highest sequence `s` such that entries `1..=s` are all durably in
    /// the log (the *contiguous* high-water mark). Entries above it (a local write whose lower
    /// neighbour is still committing) are not offered to peers yet.
    fn hwm(&self) -> Hwm;

    /// Entries of `origin` with sequence ≥ `from`, in order, at most `max_entries`, stopping
    /// once `max_bytes` is exceeded (but always at least one entry if there is one). Returning
    /// fewer (even none, e.g. on a read error) is allowed: the replicator asks again later.
    fn read(&self, origin: &str, from: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry>;

    /// A digest of every document's heads, together with the marks it was taken at (one
    /// consistent snapshot), if the store maintains one. Regions with equal marks hold the
    /// same entries and must therefore have equal digests; see [`Event::Diverged`].
    ///
    /// `None` while the documents reflect entries *above* the marks: a local write that
    /// committed while a lower sequence number is still committing is in its document but not
    /// under the mark yet, so the snapshot is not comparable until the hole fills.
    fn digest(&self) -> Option<(Hwm, [u8; 32])> {
        None
    }

    /// Per origin, the lowest sequence the log still holds (older entries were truncated, or
    /// arrived as a snapshot); absent origins hold everything from 1.
    fn floor(&self) -> Hwm {
        Hwm::new()
    }

    /// The last sequence number handed out to a local write, committed or not.
    fn allocated(&self) -> u64 {
        0
    }
}

/// Tuning of one replicator. [`Config::new`] gives production defaults; every limit exists so
/// that one slow or hostile peer costs bounded memory.
#[derive(Debug, Clone)]
pub struct Config {
    /// This region's name: its log origin and Automerge actor.
    pub region: String,
    /// The other regions of the cluster, so their lag is reported before they ever connect.
    /// Regions that connect without being listed are accepted too (peers found by DNS).
    pub peers: Vec<String>,
    /// Entries per `Entries` message.
    pub max_batch_entries: usize,
    /// Bytes of entries per `Entries` message (one larger entry still goes alone).
    pub max_batch_bytes: usize,
    /// Unacknowledged batches per (peer, origin): the send window.
    pub max_inflight_batches: usize,
    /// Unacknowledged entries per (peer, origin).
    pub max_inflight_entries: u64,
    /// Entries per [`Apply`]; more arrive while the store commits and go in the next one.
    pub max_apply_entries: usize,
    /// Bytes per [`Apply`] (one larger entry still goes alone).
    pub max_apply_bytes: usize,
    /// Bytes of received entries held per origin while waiting for a gap to fill or for the
    /// current apply to finish; beyond it entries are dropped (the sender resends them).
    pub max_held_bytes: usize,
    /// Resend a (peer, origin)'s unacknowledged entries when the oldest batch is this old.
    pub retransmit_after: Millis,
    /// Each resend without progress doubles the wait, up to this.
    pub max_retransmit_after: Millis,
    /// Ask again for a gap's missing entries at most this often.
    pub need_interval: Millis,
    /// Advertise our marks and connections to every peer this often (`Status`).
    pub status_interval: Millis,
    /// Send a document digest this often (0: never).
    pub digest_interval: Millis,
    /// Forward another origin's entries to a peer that has made no progress on them for this
    /// long although we hold them. Must exceed `status_interval` plus a round trip, or healthy
    /// direct paths get duplicated.
    pub forward_after: Millis,
    /// Precision of the "age of the oldest unacknowledged change" (bounds its memory).
    pub lag_resolution: Millis,
    /// Accept entries of our *own* origin beyond our log's mark. Only for a region recovering a
    /// lost log while it takes no writes (see [`Event::OwnLogBehind`]); otherwise a local write
    /// and a recovered entry could claim the same sequence number.
    pub accept_own_entries: bool,
    /// A snapshot asked for and not finished within this long is asked for again (of any
    /// peer that still needs to send one).
    pub snapshot_timeout: Millis,
    /// Distinct for every start of this region (the wall-clock start time in milliseconds is
    /// the simplest choice; a counter kept in the store would be lost with the data it should
    /// flag). Peers take the first report of a new incarnation exactly, so a region that
    /// restarted with less data than it acknowledged is noticed and sent it again.
    pub incarnation: u64,
}

impl Config {
    /// Production defaults for `region` in a cluster with `peers`, started as `incarnation`
    /// (see [`Config::incarnation`]).
    pub fn new(
        region: impl Into<String>,
        peers: impl IntoIterator<Item = impl Into<String>>,
        incarnation: u64,
    ) -> Config {
        Config {
            region: region.into(),
            peers: peers.into_iter().map(Into::into).collect(),
            max_batch_entries: 512,
            max_batch_bytes: 256 << 10,
            max_inflight_batches: 8,
            max_inflight_entries: 4096,
            max_apply_entries: 1024,
            max_apply_bytes: 4 << 20,
            max_held_bytes: 32 << 20,
            retransmit_after: 2_000,
            max_retransmit_after: 30_000,
            need_interval: 500,
            status_interval: 1_000,
            digest_interval: 30_000,
            forward_after: 3_000,
            lag_resolution: 100,
            accept_own_entries: false,
            snapshot_timeout: 600_000,
            incarnation,
        }
    }
}

/// Entries to commit to the store: consecutive entries of `origin`, starting right after the
/// log's current mark for it. The store writes each under (origin, seq) with its effect on the
/// document (Automerge `load_incremental`), in one batch, then calls
/// [`Replicator::applied`] — also when the commit failed.
///
/// At most one `Apply` per origin is outstanding, so the store may commit different origins in
/// parallel and never has to order two batches of one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    /// The peer whose message completed this batch (for metrics; any peer may forward).
    pub from_peer: String,
    /// The region that wrote these changes.
    pub origin: String,
    /// `(seq, log entry bytes)`, consecutive. An empty entry is a filler: log it, apply nothing.
    pub entries: Vec<Entry>,
}

/// Something the caller may want to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `peer`'s durable marks advanced: re-check sync-mode writes waiting for a quorum.
    Acked { peer: String },
    /// `peer` holds more of our own origin than our log does: our log was lost or restored from
    /// an old copy. New local writes would reuse sequence numbers the cluster already holds and
    /// be silently dropped as duplicates, so the store must refuse writes, recover the missing
    /// entries (restart with [`Config::accept_own_entries`]) and continue after `theirs`.
    OwnLogBehind {
        peer: String,
        ours: u64,
        theirs: u64,
    },
    /// `peer` introduced itself with marks below what it had acknowledged: it lost durable data
    /// (quorum guarantees that counted on it no longer hold). It will be sent the entries again.
    PeerRegressed {
        peer: String,
        origin: String,
        acked: u64,
        has: u64,
    },
    /// `peer` and we hold exactly the same log entries but our document digests differ: a bug
    /// or corruption to alert on (the documents will not converge by themselves).
    ///
    /// One known benign case: a document merged from a peer lookup (`Store::import`) can carry
    /// changes above the marks until their log entries arrive, so a single mismatch right after
    /// a lookup is possible; it clears at the next comparison ([`Event::DigestMatched`]).
    Diverged { peer: String, hwm: Hwm },
    /// `peer` and we hold the same log entries and our document digests are equal: the
    /// comparison [`Event::Diverged`] reports the failure of succeeded (clears a divergence).
    DigestMatched { peer: String },
    /// Our marks are below `peer`'s log floor for some origin: entry by entry we cannot catch
    /// up from it, so we asked it for a snapshot (`SnapshotRequest` is queued). The runtime
    /// applies what arrives and calls [`Replicator::snapshot_finished`].
    SnapshotRequested { peer: String },
}

/// A message that breaks the protocol: close the connection (and log it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The `Hello` names another region than the connection was authenticated as.
    #[error("peer authenticated as {expected:?} introduced itself as {got:?}")]
    RegionMismatch { expected: String, got: String },
    /// The peer only speaks protocol versions this build no longer supports.
    #[error("peer speaks protocol version {0}; this build needs at least {MIN_PROTOCOL_VERSION}")]
    UnsupportedProtocol(u32),
    /// An `Entries` message whose sequences are not strictly increasing from 1 on, or whose
    /// origin is empty.
    #[error("bad entries of origin {origin:?}: {reason}")]
    BadEntries {
        origin: String,
        reason: &'static str,
    },
    /// A message attributed to this region itself.
    #[error("a message claims to come from this region itself")]
    FromSelf,
}

/// Replication status of one peer, for `/metrics` and `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's region name.
    pub peer: String,
    /// Whether a connection is up.
    pub connected: bool,
    /// Whether the peer has reported its marks on the current connection.
    pub greeted: bool,
    /// The peer's durable marks as it last reported them.
    pub has: Hwm,
    /// Changes we hold that the peer has not acknowledged (all origins).
    pub behind_changes: u64,
    /// How long ago we obtained the oldest change the peer has not acknowledged (`None` when
    /// it lacks nothing we have). Precise to [`Config::lag_resolution`].
    pub oldest_unacked_age: Option<Millis>,
    /// Entries sent on the current connection and not acknowledged yet.
    pub in_flight: u64,
    /// Entries sent to the peer, resends included.
    pub sent_entries: u64,
    /// Of those, entries of other origins than us (forwarding).
    pub forwarded_entries: u64,
    /// Entries received from the peer.
    pub received_entries: u64,
    /// Of those, entries we already held or had queued.
    pub duplicate_entries: u64,
    /// Times the unacknowledged entries of an origin were resent after a timeout.
    pub retransmits: u64,
    /// The peer's log floors as it last reported them.
    pub floor: Hwm,
    /// The peer's last `Status` of this incarnation: its marks and the last sequence it had
    /// handed out then, from one message (so the pair describes one moment; collection of
    /// removed memberships needs that).
    pub status: Option<(Hwm, u64)>,
}

/// What we know about one peer.
#[derive(Debug, Default)]
struct Peer {
    /// A connection is up: messages can be sent.
    connected: bool,
    /// A report of its marks arrived on this connection, so `has` is current and entries may
    /// be sent.
    greeted: bool,
    /// The incarnation its last report came from: a new one resets `has` exactly.
    incarnation: Option<u64>,
    /// Its durable marks: set exactly by `Hello` (it may have lost data), raised by `Ack` and
    /// `Status` (which may arrive reordered). Feeds what to send, quorum and lag.
    has: Hwm,
    /// When `has[origin]` last rose (or the connection was greeted): a peer that stops
    /// progressing on an origin is stalled, and another region forwards it.
    progress_at: BTreeMap<String, Millis>,
    /// The regions it said it is connected to (last `Status`), to designate one forwarder for
    /// the origins it cannot reach. `None` until it says.
    reaches: Option<BTreeSet<String>>,
    /// Send state per origin on the current connection.
    out: BTreeMap<String, Outbound>,
    /// Whether `OwnLogBehind` was raised on this connection (once is enough).
    warned_own_log: bool,
    /// Its log floors (`Hello`, `Status`): below them it cannot send us entries.
    floor: Hwm,
    /// Its last `Status`: marks and last handed-out sequence, from one message.
    status: Option<(Hwm, u64)>,
    sent_entries: u64,
    forwarded_entries: u64,
    received_entries: u64,
    duplicate_entries: u64,
    retransmits: u64,
}

/// Send state of one origin towards one peer.
#[derive(Debug)]
struct Outbound {
    /// The highest sequence sent on this connection (≥ the peer's mark when anything is in
    /// flight). Sending resumes after it; a timeout or a `Need` moves it back.
    sent: u64,
    /// Batches sent and not acknowledged, oldest first: their last sequence and send time.
    batches: VecDeque<(u64, Millis)>,
    /// Current retransmission timeout (doubles on each resend without progress).
    rto: Millis,
}

/// Receive state of one origin.
#[derive(Debug, Default)]
struct Inbound {
    /// The outstanding [`Apply`]: its last sequence and the peer it came from.
    applying: Option<(u64, String)>,
    /// Entries above the mark (and above `applying`) not yet handed to the store: the next
    /// batch, or entries beyond a gap. Each with the peer that sent it.
    held: BTreeMap<u64, (Vec<u8>, String)>,
    /// Bytes in `held`.
    held_bytes: usize,
    /// Peers that sent entries of this origin since we were last idle: they get an `Ack` after
    /// each commit, so their retransmission timers stop.
    ack_owed: BTreeSet<String>,
    /// When we last sent a `Need` for the current gap.
    need_at: Option<Millis>,
}

/// When we obtained each entry of one origin, in buckets of `lag_resolution`: the age of a
/// peer's oldest missing change (lag metric) and how long a peer has lacked an entry
/// (forwarding) both look it up. Samples are `(last seq of the bucket, bucket start time)`.
#[derive(Debug, Default)]
struct Timeline {
    samples: VecDeque<(u64, Millis)>,
}

/// Bound on timeline samples per origin; beyond it the two oldest merge (keeping the older
/// time, so ages are overestimated, never underestimated).
const TIMELINE_CAP: usize = 4096;

impl Timeline {
    fn record(&mut self, seq: u64, now: Millis, resolution: Millis) {
        match self.samples.back_mut() {
            Some(last) if seq <= last.0 => return,
            Some(last) if now < last.1.saturating_add(resolution) => last.0 = seq,
            _ => self.samples.push_back((seq, now)),
        }
        if self.samples.len() > TIMELINE_CAP {
            if let Some((_, oldest)) = self.samples.pop_front() {
                if let Some(next) = self.samples.front_mut() {
                    next.1 = oldest;
                }
            }
        }
    }

    /// When we obtained entry `seq` (`None` if we have not).
    fn learned_at(&self, seq: u64) -> Option<Millis> {
        let i = self.samples.partition_point(|&(s, _)| s < seq);
        self.samples.get(i).map(|&(_, t)| t)
    }

    /// Forget entries every peer has (`upto` and below).
    fn prune(&mut self, upto: u64) {
        while self.samples.front().is_some_and(|&(s, _)| s <= upto) {
            self.samples.pop_front();
        }
    }
}

/// The replication state machine of one region. See the module docs.
#[derive(Debug)]
pub struct Replicator {
    cfg: Config,
    /// The log's durable contiguous marks, as of the last `local_committed`/`applied`.
    hwm: Hwm,
    inbound: BTreeMap<String, Inbound>,
    peers: BTreeMap<String, Peer>,
    learned: BTreeMap<String, Timeline>,
    /// Control messages (Hello, Need, Status, Digest) waiting to be polled, in order.
    outbox: VecDeque<(String, Message)>,
    /// Peers owed an `Ack` (coalesced: one per poll however many commits happened).
    ack_due: BTreeSet<String>,
    /// Our connection set changed: advertise at the next poll.
    status_due: bool,
    applies: VecDeque<Apply>,
    events: VecDeque<Event>,
    next_status: Millis,
    next_digest: Millis,
    /// Our log floors, as of the last refresh (advertised in `Hello` and `Status`).
    floor: Hwm,
    /// The snapshot we asked for: from whom, since when.
    snapshot: Option<(String, Millis)>,
}

impl Replicator {
    /// A replicator for a region whose log currently holds `log.hwm()`. This is also how a
    /// region restarts: all protocol state is rebuilt from the durable log and the peers'
    /// `Hello`s, so nothing but the log needs to survive a crash.
    pub fn new(cfg: Config, log: &dyn Log, now: Millis) -> Replicator {
        let hwm = log.hwm();
        let mut learned: BTreeMap<String, Timeline> = BTreeMap::new();
        for (origin, &seq) in &hwm {
            learned
                .entry(origin.clone())
                .or_default()
                .record(seq, now, cfg.lag_resolution);
        }
        let peers = cfg
            .peers
            .iter()
            .filter(|p| **p != cfg.region)
            .map(|p| (p.clone(), Peer::default()))
            .collect();
        Replicator {
            next_status: now.saturating_add(cfg.status_interval),
            next_digest: now.saturating_add(cfg.digest_interval),
            cfg,
            hwm,
            inbound: BTreeMap::new(),
            peers,
            learned,
            outbox: VecDeque::new(),
            ack_due: BTreeSet::new(),
            status_due: false,
            applies: VecDeque::new(),
            events: VecDeque::new(),
            floor: log.floor(),
            snapshot: None,
        }
    }

    /// This region's name.
    pub fn region(&self) -> &str {
        &self.cfg.region
    }

    /// The durable marks as last learned from the log.
    pub fn hwm(&self) -> &Hwm {
        &self.hwm
    }

    /// A connection to `peer` is up (a new one replaces any previous). Queues our `Hello`;
    /// no entries are sent on the connection before a report of the peer's marks (its `Hello`,
    /// or any `Ack` or `Status` if that overtook or replaced a lost `Hello`) arrived on it.
    pub fn connected(&mut self, peer: &str, _now: Millis) {
        if peer == self.cfg.region {
            return;
        }
        let hello = MessageV1::Hello {
            region: self.cfg.region.clone(),
            protocol: PROTOCOL_VERSION,
            incarnation: self.cfg.incarnation,
            hwm: self.hwm.clone(),
            floor: self.floor.clone(),
        };
        self.forget_connection(peer);
        let p = self.peers.entry(peer.to_string()).or_default();
        p.connected = true;
        self.outbox.push_back((peer.to_string(), hello.into()));
    }

    /// The connection to `peer` is gone. What was in flight is forgotten (it is resent from the
    /// peer's marks after the next `Hello`); what the peer acknowledged stays (it is durable).
    pub fn disconnected(&mut self, peer: &str, _now: Millis) {
        self.forget_connection(peer);
    }

    /// The snapshot asked of `peer` is over (applied, or given up): marks are re-read from the
    /// log, and another snapshot is asked for if some peer's floor is still above them.
    pub fn snapshot_finished(&mut self, peer: &str, now: Millis, log: &dyn Log) {
        if self.snapshot.as_ref().is_some_and(|(p, _)| p == peer) {
            self.snapshot = None;
        }
        self.refresh(now, log);
        self.status_due = true;
        self.maybe_request_snapshot(now);
    }

    /// Accept (or stop accepting) entries of our own origin beyond our log: while this region
    /// recovers a log that is behind what its peers hold of it ([`Event::OwnLogBehind`]) and
    /// takes no writes.
    pub fn set_accept_own_entries(&mut self, accept: bool) {
        self.cfg.accept_own_entries = accept;
    }

    /// The snapshot in progress, if any: the peer and since when.
    pub fn snapshot_in_progress(&self) -> Option<&(String, Millis)> {
        self.snapshot.as_ref()
    }

    /// Ask a connected peer for a snapshot when our marks are below its floor for some origin
    /// (and no snapshot is in progress, or the last one timed out).
    fn maybe_request_snapshot(&mut self, now: Millis) {
        if let Some((_, since)) = &self.snapshot {
            if now < since.saturating_add(self.cfg.snapshot_timeout) {
                return;
            }
            self.snapshot = None;
        }
        let Some(peer) = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected && p.greeted)
            .find(|(_, p)| needs::snapshot_needed(&self.hwm, &p.floor))
            .map(|(name, _)| name.clone())
        else {
            return;
        };
        self.snapshot = Some((peer.clone(), now));
        self.outbox.push_back((
            peer.clone(),
            MessageV1::SnapshotRequest {
                hwm: self.hwm.clone(),
            }
            .into(),
        ));
        self.events.push_back(Event::SnapshotRequested { peer });
    }

    fn forget_connection(&mut self, peer: &str) {
        if self.snapshot.as_ref().is_some_and(|(p, _)| p == peer) {
            self.snapshot = None;
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.connected = false;
            p.greeted = false;
            p.out.clear();
            p.reaches = None;
            p.warned_own_log = false;
        }
        self.outbox.retain(|(to, _)| to != peer);
        self.ack_due.remove(peer);
        self.status_due = true;
    }

    /// New local writes were committed to the log (or the log's marks changed otherwise):
    /// they are pushed to peers at the next [`poll_transmit`](Self::poll_transmit).
    pub fn local_committed(&mut self, now: Millis, log: &dyn Log) {
        self.refresh(now, log);
    }

    /// The store finished an [`Apply`] of `origin`, successfully or not: the log's marks say
    /// what was committed. Acknowledges to the senders (and to the origin, for its quorum),
    /// hands out the next batch, and asks again for anything that did not commit.
    pub fn applied(&mut self, origin: &str, now: Millis, log: &dyn Log) {
        self.refresh(now, log);
        let mark = self.mark(origin);
        let Some(inb) = self.inbound.get_mut(origin) else {
            return;
        };
        let Some((last, from)) = inb.applying.take() else {
            return;
        };
        if mark < last {
            // Not (all) committed: the entries left `held` when handed out, so ask for them
            // again at once (the sender's timeout would get there too, later).
            inb.need_at = Some(now);
            self.outbox.push_back((
                from,
                MessageV1::Need {
                    origin: origin.to_string(),
                    from: mark + 1,
                }
                .into(),
            ));
        }
        self.ack_due.extend(inb.ack_owed.iter().cloned());
        if origin != self.cfg.region {
            self.ack_due.insert(origin.to_string());
        }
        self.release(origin);
        if let Some(inb) = self.inbound.get_mut(origin) {
            if inb.applying.is_none() && inb.held.is_empty() {
                inb.ack_owed.clear();
            }
        }
        self.check_gap(origin, now);
    }

    /// A message from `peer` arrived. An error means the peer broke the protocol: close the
    /// connection.
    pub fn received(
        &mut self,
        peer: &str,
        msg: Message,
        now: Millis,
        log: &dyn Log,
    ) -> Result<(), ProtocolError> {
        if peer == self.cfg.region {
            return Err(ProtocolError::FromSelf);
        }
        let Message::V1(msg) = msg;
        match msg {
            MessageV1::Hello {
                region,
                protocol,
                incarnation,
                hwm,
                floor,
            } => {
                if region != peer {
                    return Err(ProtocolError::RegionMismatch {
                        expected: peer.to_string(),
                        got: region,
                    });
                }
                if protocol < MIN_PROTOCOL_VERSION {
                    return Err(ProtocolError::UnsupportedProtocol(protocol));
                }
                self.peers.entry(peer.to_string()).or_default().floor = floor;
                self.report(peer, incarnation, &hwm, now);
                self.maybe_request_snapshot(now);
            }
            MessageV1::Entries { origin, entries } => {
                self.on_entries(peer, origin, entries, now)?
            }
            MessageV1::Ack { incarnation, hwm } => self.report(peer, incarnation, &hwm, now),
            MessageV1::Need { origin, from } => self.on_need(peer, &origin, from),
            MessageV1::Status {
                incarnation,
                hwm,
                connected,
                floor,
                allocated,
            } => {
                self.report(peer, incarnation, &hwm, now);
                let p = self.peers.entry(peer.to_string()).or_default();
                p.reaches = Some(connected);
                p.floor = floor;
                p.status = Some((hwm, allocated));
                self.maybe_request_snapshot(now);
            }
            MessageV1::Digest { hwm, digest } => {
                // Only snapshots at equal marks are comparable; others are ignored.
                if let Some((ours, our_digest)) = log.digest() {
                    if ours == hwm {
                        let peer = peer.to_string();
                        self.events.push_back(if our_digest == digest {
                            Event::DigestMatched { peer }
                        } else {
                            Event::Diverged { peer, hwm }
                        });
                    }
                }
            }
            // Resource lookups and snapshots are the runtime's (they need the store), not here.
            MessageV1::Fetch { .. }
            | MessageV1::FetchReply { .. }
            | MessageV1::SnapshotRequest { .. }
            | MessageV1::SnapshotBegin { .. }
            | MessageV1::SnapshotChunk { .. }
            | MessageV1::SnapshotEnd { .. }
            | MessageV1::SnapshotAck { .. } => {}
        }
        Ok(())
    }

    /// A report (`Hello`, `Ack`, `Status`) of the peer's durable marks.
    ///
    /// Within one incarnation of the peer its marks only rise, so reports are lower bounds and
    /// may arrive in any order, twice, or not at all (a later one says more). A report from a
    /// new incarnation is taken exactly: the peer restarted, maybe with less data than it
    /// acknowledged before ([`Event::PeerRegressed`]), and must then be sent it again.
    fn report(&mut self, peer: &str, incarnation: u64, hwm: &Hwm, now: Millis) {
        let p = self.peers.entry(peer.to_string()).or_default();
        let exact = p.incarnation != Some(incarnation);
        p.incarnation = Some(incarnation);
        if p.connected && !p.greeted {
            // First report on this connection: sending may start. Stall timers restart with
            // each connection, so the direct path gets a fair chance before anyone forwards.
            p.greeted = true;
            p.out.clear();
            for origin in self.hwm.keys() {
                p.progress_at.insert(origin.clone(), now);
            }
        }
        if exact {
            // A new incarnation: its last Status describes the process that is gone.
            if let Some(p) = self.peers.get_mut(peer) {
                p.status = None;
            }
        }
        self.set_has(peer, hwm, exact, now);
        let ours = self.mark(&self.cfg.region);
        let theirs = hwm.get(&self.cfg.region).copied().unwrap_or(0);
        let p = self.peers.entry(peer.to_string()).or_default();
        if theirs > ours && !p.warned_own_log {
            p.warned_own_log = true;
            self.events.push_back(Event::OwnLogBehind {
                peer: peer.to_string(),
                ours,
                theirs,
            });
        }
    }

    fn on_entries(
        &mut self,
        peer: &str,
        origin: String,
        entries: Vec<Entry>,
        now: Millis,
    ) -> Result<(), ProtocolError> {
        let bad = |reason| {
            Err(ProtocolError::BadEntries {
                origin: origin.clone(),
                reason,
            })
        };
        if origin.is_empty() {
            return bad("empty origin");
        }
        let mut prev = 0;
        for (seq, _) in &entries {
            if *seq <= prev {
                return bad("sequences must increase from 1");
            }
            prev = *seq;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let n = entries.len() as u64;
        let mark = self.mark(&origin);
        if origin == self.cfg.region && !self.cfg.accept_own_entries && prev > mark {
            // Our own changes, beyond our own log: see `Event::OwnLogBehind`. Never apply them
            // while local writes may claim the same sequence numbers.
            let p = self.peers.entry(peer.to_string()).or_default();
            p.received_entries += n;
            p.duplicate_entries += n;
            if !p.warned_own_log {
                p.warned_own_log = true;
                self.events.push_back(Event::OwnLogBehind {
                    peer: peer.to_string(),
                    ours: mark,
                    theirs: prev,
                });
            }
            self.ack_due.insert(peer.to_string());
            return Ok(());
        }
        let max_held = self.cfg.max_held_bytes;
        let inb = self.inbound.entry(origin.clone()).or_default();
        let floor = mark.max(inb.applying.as_ref().map_or(0, |a| a.0));
        let mut duplicates = 0;
        for (seq, bytes) in entries {
            if seq <= floor || inb.held.contains_key(&seq) {
                duplicates += 1;
                continue;
            }
            // Beyond the budget only the entry that makes progress is kept.
            if seq != floor + 1 && inb.held_bytes + bytes.len() > max_held {
                continue;
            }
            inb.held_bytes += bytes.len();
            inb.held.insert(seq, (bytes, peer.to_string()));
        }
        inb.ack_owed.insert(peer.to_string());
        let p = self.peers.entry(peer.to_string()).or_default();
        p.received_entries += n;
        p.duplicate_entries += duplicates;
        self.release(&origin);
        if self
            .inbound
            .get(&origin)
            .is_some_and(|i| i.applying.is_none())
        {
            // Nothing to commit (duplicates, or entries beyond a gap): say where we are now,
            // which stops the sender resending what we have.
            self.ack_due.insert(peer.to_string());
        }
        self.check_gap(&origin, now);
        Ok(())
    }

    fn on_need(&mut self, peer: &str, origin: &str, from: u64) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let has = p.has.get(origin).copied().unwrap_or(0);
        if let Some(out) = p.out.get_mut(origin) {
            let back_to = from.saturating_sub(1).max(has);
            if back_to < out.sent {
                out.sent = back_to;
                out.batches.retain(|&(last, _)| last <= back_to);
            }
        }
    }

    /// Record the peer's marks: exactly (a new incarnation) or as a lower bound.
    fn set_has(&mut self, peer: &str, hwm: &Hwm, exact: bool, now: Millis) {
        let base_rto = self.cfg.retransmit_after;
        let p = self.peers.entry(peer.to_string()).or_default();
        let mut origins: BTreeSet<String> = hwm.keys().cloned().collect();
        if exact {
            origins.extend(p.has.keys().cloned());
        }
        let mut progressed = false;
        for origin in origins {
            let new = hwm.get(&origin).copied().unwrap_or(0);
            let old = p.has.get(&origin).copied().unwrap_or(0);
            if new > old {
                p.has.insert(origin.clone(), new);
                p.progress_at.insert(origin.clone(), now);
                if let Some(out) = p.out.get_mut(&origin) {
                    out.batches.retain(|&(last, _)| last > new);
                    out.sent = out.sent.max(new);
                    out.rto = base_rto;
                }
                progressed = true;
            } else if exact && new < old {
                self.events.push_back(Event::PeerRegressed {
                    peer: peer.to_string(),
                    origin: origin.clone(),
                    acked: old,
                    has: new,
                });
                p.has.insert(origin.clone(), new);
                p.out.remove(&origin);
            }
        }
        if progressed {
            self.events.push_back(Event::Acked {
                peer: peer.to_string(),
            });
        }
    }

    /// Timers: resend unacknowledged batches whose timeout passed, ask again for gaps,
    /// advertise `Status` and `Digest`. Call it at [`poll_timeout`](Self::poll_timeout) (or
    /// periodically), then drain [`poll_transmit`](Self::poll_transmit).
    pub fn tick(&mut self, now: Millis, log: &dyn Log) {
        let max_rto = self.cfg.max_retransmit_after;
        for p in self.peers.values_mut().filter(|p| p.connected) {
            for (origin, out) in &mut p.out {
                if out
                    .batches
                    .front()
                    .is_some_and(|&(_, at)| now >= at.saturating_add(out.rto))
                {
                    // Go back to the last acknowledged entry (go-back-N): with a window of a
                    // few batches this resends little, and needs no per-entry bookkeeping.
                    out.sent = p.has.get(origin).copied().unwrap_or(0);
                    out.batches.clear();
                    out.rto = out.rto.saturating_mul(2).min(max_rto);
                    p.retransmits += 1;
                }
            }
        }
        let origins: Vec<String> = self.inbound.keys().cloned().collect();
        for origin in origins {
            self.check_gap(&origin, now);
        }
        self.maybe_request_snapshot(now);
        if now >= self.next_status {
            self.status_due = true;
            self.next_status = now.saturating_add(self.cfg.status_interval);
        }
        if self.cfg.digest_interval > 0 && now >= self.next_digest {
            self.next_digest = now.saturating_add(self.cfg.digest_interval);
            if let Some((hwm, digest)) = log.digest() {
                for (name, p) in &self.peers {
                    if p.connected && p.greeted {
                        let m = MessageV1::Digest {
                            hwm: hwm.clone(),
                            digest,
                        };
                        self.outbox.push_back((name.clone(), m.into()));
                    }
                }
            }
        }
        for (origin, timeline) in &mut self.learned {
            let everyone_has = self
                .peers
                .values()
                .map(|p| p.has.get(origin).copied().unwrap_or(0))
                .min();
            timeline.prune(everyone_has.unwrap_or(u64::MAX));
        }
    }

    /// When [`tick`](Self::tick) has work: the earliest retransmission, gap request, status or
    /// digest. (Forwarding decisions are re-evaluated at each poll; a caller that ticks at
    /// least this often, as it must, forwards within one `status_interval` of the rule.)
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut t = self.next_status;
        if self.cfg.digest_interval > 0 {
            t = t.min(self.next_digest);
        }
        for p in self.peers.values().filter(|p| p.connected) {
            for out in p.out.values() {
                if let Some(&(_, at)) = out.batches.front() {
                    t = t.min(at.saturating_add(out.rto));
                }
            }
        }
        for inb in self.inbound.values() {
            if let Some(at) = inb.need_at {
                t = t.min(at.saturating_add(self.cfg.need_interval));
            }
        }
        Some(t)
    }

    /// The next message to send, if any: control messages first, then acknowledgements, then
    /// entries (each peer's still-needed ranges, within its send window). Call it until `None`
    /// after every input. Messages for a peer that is not connected are dropped.
    pub fn poll_transmit(&mut self, now: Millis, log: &dyn Log) -> Option<(String, Message)> {
        loop {
            if let Some((to, m)) = self.outbox.pop_front() {
                if self.peers.get(&to).is_some_and(|p| p.connected) {
                    return Some((to, m));
                }
                continue;
            }
            if self.status_due {
                self.status_due = false;
                let connected: BTreeSet<String> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.connected)
                    .map(|(n, _)| n.clone())
                    .collect();
                for to in &connected {
                    let m = MessageV1::Status {
                        incarnation: self.cfg.incarnation,
                        hwm: self.hwm.clone(),
                        connected: connected.clone(),
                        floor: self.floor.clone(),
                        allocated: log.allocated(),
                    };
                    self.outbox.push_back((to.clone(), m.into()));
                }
                continue;
            }
            if let Some(to) = self.ack_due.pop_first() {
                if self.peers.get(&to).is_some_and(|p| p.connected) {
                    return Some((
                        to,
                        MessageV1::Ack {
                            incarnation: self.cfg.incarnation,
                            hwm: self.hwm.clone(),
                        }
                        .into(),
                    ));
                }
                continue;
            }
            if !self.fill(now, log) {
                return None;
            }
        }
    }

    /// Queue the entries every greeted peer still needs, within its window. True if any.
    fn fill(&mut self, now: Millis, log: &dyn Log) -> bool {
        let cfg = &self.cfg;
        let mut queued = false;
        for (name, p) in self
            .peers
            .iter_mut()
            .filter(|(_, p)| p.connected && p.greeted)
        {
            for (origin, range) in needs::still_needed(&self.hwm, &p.has) {
                let has = range.start() - 1;
                let end = *range.end();
                let out = p.out.entry(origin.to_string()).or_insert_with(|| Outbound {
                    sent: 0,
                    batches: VecDeque::new(),
                    rto: cfg.retransmit_after,
                });
                let mut from = (*range.start()).max(out.sent + 1);
                if from > end || out.batches.len() >= cfg.max_inflight_batches {
                    continue;
                }
                let lacking_since = self
                    .learned
                    .get(origin)
                    .and_then(|t| t.learned_at(has + 1))
                    .unwrap_or(now);
                let stalled_since =
                    lacking_since.max(p.progress_at.get(origin).copied().unwrap_or(0));
                let stalled_for = now.saturating_sub(stalled_since);
                if !needs::should_send(
                    &cfg.region,
                    name,
                    origin,
                    p.reaches.as_ref(),
                    stalled_for,
                    cfg.forward_after,
                ) {
                    continue;
                }
                while from <= end && out.batches.len() < cfg.max_inflight_batches {
                    let room = cfg
                        .max_inflight_entries
                        .saturating_sub(out.sent.saturating_sub(has));
                    let limit =
                        (end - from + 1).min(room).min(cfg.max_batch_entries as u64) as usize;
                    if limit == 0 {
                        break;
                    }
                    let mut entries = log.read(origin, from, limit, cfg.max_batch_bytes);
                    // Keep only the consecutive run we asked for: a log that skips or overshoots
                    // must not make us claim entries we never sent.
                    let run = entries
                        .iter()
                        .enumerate()
                        .take_while(|(i, (seq, _))| *seq == from + *i as u64 && *seq <= end)
                        .count();
                    entries.truncate(run);
                    let Some(&(last, _)) = entries.last() else {
                        break;
                    };
                    let n = entries.len() as u64;
                    p.sent_entries += n;
                    if origin != cfg.region {
                        p.forwarded_entries += n;
                    }
                    out.sent = last;
                    out.batches.push_back((last, now));
                    let m = MessageV1::Entries {
                        origin: origin.to_string(),
                        entries,
                    };
                    self.outbox.push_back((name.clone(), m.into()));
                    queued = true;
                    from = last + 1;
                }
            }
        }
        queued
    }

    /// The next batch to commit to the store, if any.
    pub fn poll_apply(&mut self) -> Option<Apply> {
        self.applies.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// In how many regions (this one included) entry `seq` of `origin` is durable, as far as
    /// we know: the sync-mode quorum check (wait for [`Event::Acked`] to re-check).
    pub fn durable_count(&self, origin: &str, seq: u64) -> usize {
        let here = usize::from(self.mark(origin) >= seq);
        here + self
            .peers
            .values()
            .filter(|p| p.has.get(origin).copied().unwrap_or(0) >= seq)
            .count()
    }

    /// Replication status of every known peer.
    pub fn peer_status(&self, now: Millis) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|(name, p)| {
                let needed = needs::still_needed(&self.hwm, &p.has);
                let oldest = needed
                    .iter()
                    .filter_map(|(origin, range)| {
                        self.learned.get(*origin)?.learned_at(*range.start())
                    })
                    .min();
                let in_flight = p
                    .out
                    .iter()
                    .map(|(o, out)| out.sent.saturating_sub(p.has.get(o).copied().unwrap_or(0)))
                    .sum();
                PeerStatus {
                    peer: name.clone(),
                    connected: p.connected,
                    greeted: p.greeted,
                    has: p.has.clone(),
                    behind_changes: needs::changes_behind(&self.hwm, &p.has),
                    oldest_unacked_age: oldest.map(|t| now.saturating_sub(t)),
                    in_flight,
                    sent_entries: p.sent_entries,
                    forwarded_entries: p.forwarded_entries,
                    received_entries: p.received_entries,
                    duplicate_entries: p.duplicate_entries,
                    retransmits: p.retransmits,
                    floor: p.floor.clone(),
                    status: p.status.clone(),
                }
            })
            .collect()
    }

    /// Held (received, not yet handed to the store) entries of all origins: with the store's
    /// commit queue, the memory replication costs.
    pub fn held_entries(&self) -> usize {
        self.inbound.values().map(|i| i.held.len()).sum()
    }

    fn mark(&self, origin: &str) -> u64 {
        self.hwm.get(origin).copied().unwrap_or(0)
    }

    /// Learn the log's marks (they only rise) and floors.
    fn refresh(&mut self, now: Millis, log: &dyn Log) {
        let floor = log.floor();
        if floor != self.floor {
            self.floor = floor;
            self.status_due = true;
        }
        for (origin, seq) in log.hwm() {
            let old = self.mark(&origin);
            if seq > old {
                self.learned.entry(origin.clone()).or_default().record(
                    seq,
                    now,
                    self.cfg.lag_resolution,
                );
                self.hwm.insert(origin, seq);
            }
        }
    }

    /// Hand the store the next consecutive run of held entries, unless a batch of this origin
    /// is still being committed.
    fn release(&mut self, origin: &str) {
        let mark = self.mark(origin);
        let (max_entries, max_bytes) = (self.cfg.max_apply_entries, self.cfg.max_apply_bytes);
        let Some(inb) = self.inbound.get_mut(origin) else {
            return;
        };
        if inb.applying.is_some() {
            return;
        }
        while let Some(e) = inb.held.first_entry() {
            if *e.key() > mark {
                break;
            }
            inb.held_bytes -= e.remove().0.len();
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut from_peer = None;
        while let Some(e) = inb.held.first_entry() {
            let len = e.get().0.len();
            let full =
                entries.len() >= max_entries || (!entries.is_empty() && bytes + len > max_bytes);
            if *e.key() != mark + 1 + entries.len() as u64 || full {
                break;
            }
            let (seq, (entry, from)) = e.remove_entry();
            inb.held_bytes -= len;
            bytes += len;
            from_peer.get_or_insert(from);
            entries.push((seq, entry));
        }
        if let (Some(&(last, _)), Some(from_peer)) = (entries.last(), from_peer) {
            inb.applying = Some((last, from_peer.clone()));
            self.applies.push_back(Apply {
                from_peer,
                origin: origin.to_string(),
                entries,
            });
        }
    }

    /// If entries are held beyond a gap, ask for the missing ones, at most every
    /// `need_interval`: the peer that sent the first held entry (it holds everything below),
    /// or, if it is gone, the origin itself. (Without either, the senders' retransmission
    /// timeouts fill the gap: nothing above it is acknowledged.)
    fn check_gap(&mut self, origin: &str, now: Millis) {
        let mark = self.mark(origin);
        let need_interval = self.cfg.need_interval;
        let Some(inb) = self.inbound.get_mut(origin) else {
            return;
        };
        let floor = mark.max(inb.applying.as_ref().map_or(0, |a| a.0));
        let Some((&first, (_, from))) = inb.held.first_key_value() else {
            inb.need_at = None;
            return;
        };
        if first <= floor + 1 {
            inb.need_at = None;
            return;
        }
        if inb
            .need_at
            .is_some_and(|at| now < at.saturating_add(need_interval))
        {
            return;
        }
        inb.need_at = Some(now);
        let connected = |p: &str| self.peers.get(p).is_some_and(|p| p.connected);
        let Some(to) = [from.as_str(), origin].into_iter().find(|p| connected(p)) else {
            return;
        };
        let m = MessageV1::Need {
            origin: origin.to_string(),
            from: floor + 1,
        };
        self.outbox.push_back((to.to_string(), m.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log over maps, committing `Apply`s as the store would.
    #[derive(Default)]
    struct MemLog {
        entries: BTreeMap<String, BTreeMap<u64, Vec<u8>>>,
        digest: Option<[u8; 32]>,
    }

    impl MemLog {
        fn write(&mut self, origin: &str, seqs: impl IntoIterator<Item = u64>) {
            for s in seqs {
                self.entries
                    .entry(origin.into())
                    .or_default()
                    .insert(s, format!("{origin}{s}").into_bytes());
            }
        }

        fn commit(&mut self, apply: &Apply) {
            for (seq, bytes) in &apply.entries {
                self.entries
                    .entry(apply.origin.clone())
                    .or_default()
                    .insert(*seq, bytes.clone());
            }
        }
    }

    impl Log for MemLog {
        fn hwm(&self) -> Hwm {
            self.entries
                .iter()
                .map(|(o, e)| {
                    (
                        o.clone(),
                        e.keys().zip(1..).take_while(|(s, i)| *s == i).count() as u64,
                    )
                })
                .collect()
        }

        fn read(
            &self,
            origin: &str,
            from: u64,
            max_entries: usize,
            _max_bytes: usize,
        ) -> Vec<Entry> {
            let Some(e) = self.entries.get(origin) else {
                return vec![];
            };
            e.range(from..)
                .take(max_entries)
                .map(|(s, b)| (*s, b.clone()))
                .collect()
        }

        fn digest(&self) -> Option<(Hwm, [u8; 32])> {
            self.digest.map(|d| (self.hwm(), d))
        }
    }

    fn hwm(pairs: &[(&str, u64)]) -> Hwm {
        pairs.iter().map(|(o, s)| (o.to_string(), *s)).collect()
    }

    fn cfg(region: &str) -> Config {
        let mut c = Config::new(region, ["a", "b", "c"], 1);
        c.max_batch_entries = 2;
        c.max_inflight_batches = 2;
        c
    }

    fn drain(r: &mut Replicator, now: Millis, log: &dyn Log) -> Vec<(String, MessageV1)> {
        std::iter::from_fn(|| r.poll_transmit(now, log))
            .map(|(to, Message::V1(m))| (to, m))
            .collect()
    }

    fn entries_to(sent: &[(String, MessageV1)], peer: &str) -> Vec<(String, Vec<u64>)> {
        sent.iter()
            .filter(|(to, _)| to == peer)
            .filter_map(|(_, m)| match m {
                MessageV1::Entries { origin, entries } => {
                    Some((origin.clone(), entries.iter().map(|e| e.0).collect()))
                }
                _ => None,
            })
            .collect()
    }

    fn entries(origin: &str, seqs: impl IntoIterator<Item = u64>) -> Message {
        MessageV1::Entries {
            origin: origin.into(),
            entries: seqs
                .into_iter()
                .map(|s| (s, format!("{origin}{s}").into_bytes()))
                .collect(),
        }
        .into()
    }

    fn hello(region: &str, marks: &[(&str, u64)]) -> Message {
        hello_from(region, 1, marks)
    }

    fn hello_from(region: &str, incarnation: u64, marks: &[(&str, u64)]) -> Message {
        MessageV1::Hello {
            region: region.into(),
            protocol: PROTOCOL_VERSION,
            incarnation,
            hwm: hwm(marks),
            floor: Hwm::new(),
        }
        .into()
    }

    /// A region `a` with `n` own entries, connected to and greeted by `b` with `b_has`.
    fn greeted(n: u64, b_has: &[(&str, u64)]) -> (Replicator, MemLog) {
        let mut log = MemLog::default();
        log.write("a", 1..=n);
        let mut r = Replicator::new(cfg("a"), &log, 0);
        r.connected("b", 0);
        r.received("b", hello("b", b_has), 0, &log).unwrap();
        (r, log)
    }

    #[test]
    fn hello_comes_first_and_entries_wait_for_the_peers_hello() {
        let mut log = MemLog::default();
        log.write("a", 1..=3);
        let mut r = Replicator::new(cfg("a"), &log, 0);
        r.connected("b", 0);
        let sent = drain(&mut r, 0, &log);
        assert!(
            matches!(&sent[0], (to, MessageV1::Hello { region, hwm, .. }) if to == "b" && region == "a" && *hwm == super::tests::hwm(&[("a", 3)]))
        );
        assert!(entries_to(&sent, "b").is_empty(), "{sent:?}");
        r.received("b", hello("b", &[("a", 1)]), 1, &log).unwrap();
        let sent = drain(&mut r, 1, &log);
        assert_eq!(entries_to(&sent, "b"), vec![("a".into(), vec![2, 3])]);
    }

    #[test]
    fn own_entries_are_pushed_in_batches_within_the_window() {
        let (mut r, log) = greeted(7, &[]);
        let sent = drain(&mut r, 0, &log);
        // Two batches of two: the window is full.
        assert_eq!(
            entries_to(&sent, "b"),
            vec![("a".into(), vec![1, 2]), ("a".into(), vec![3, 4])]
        );
        assert_eq!(
            r.peer_status(0)
                .iter()
                .find(|s| s.peer == "b")
                .unwrap()
                .in_flight,
            4
        );
        // An ack of the first batch opens the window by one batch.
        r.received(
            "b",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 2)]),
            }
            .into(),
            5,
            &log,
        )
        .unwrap();
        assert_eq!(
            entries_to(&drain(&mut r, 5, &log), "b"),
            vec![("a".into(), vec![5, 6])]
        );
        assert_eq!(r.poll_event(), Some(Event::Acked { peer: "b".into() }));
    }

    #[test]
    fn new_local_commits_are_pushed_at_once() {
        let (mut r, mut log) = greeted(0, &[]);
        assert!(entries_to(&drain(&mut r, 0, &log), "b").is_empty());
        log.write("a", [1]);
        r.local_committed(3, &log);
        assert_eq!(
            entries_to(&drain(&mut r, 3, &log), "b"),
            vec![("a".into(), vec![1])]
        );
    }

    #[test]
    fn a_local_write_above_a_transient_gap_waits_for_the_gap() {
        // Sequence 2 is still committing while 3 is in the log: the mark stays at 1.
        let (mut r, mut log) = greeted(1, &[("a", 1)]);
        log.write("a", [3]);
        r.local_committed(1, &log);
        assert!(entries_to(&drain(&mut r, 1, &log), "b").is_empty());
        log.write("a", [2]);
        r.local_committed(2, &log);
        assert_eq!(
            entries_to(&drain(&mut r, 2, &log), "b"),
            vec![("a".into(), vec![2, 3])]
        );
    }

    #[test]
    fn duplicates_are_ignored_but_acknowledged() {
        let mut log = MemLog::default();
        log.write("a", 1..=5);
        let mut r = Replicator::new(cfg("b"), &log, 0);
        r.connected("a", 0);
        drain(&mut r, 0, &log);
        r.received("a", entries("a", 3..=5), 1, &log).unwrap();
        assert_eq!(r.poll_apply(), None);
        let sent = drain(&mut r, 1, &log);
        assert!(
            sent.contains(&(
                "a".into(),
                MessageV1::Ack {
                    incarnation: 1,
                    hwm: hwm(&[("a", 5)])
                }
            )),
            "{sent:?}"
        );
        let status = r.peer_status(1);
        let a = status.iter().find(|s| s.peer == "a").unwrap();
        assert_eq!((a.received_entries, a.duplicate_entries), (3, 3));
    }

    #[test]
    fn one_apply_per_origin_at_a_time_and_the_ack_follows_the_commit() {
        let mut log = MemLog::default();
        let mut r = Replicator::new(cfg("b"), &log, 0);
        r.connected("a", 0);
        drain(&mut r, 0, &log);
        r.received("a", entries("a", 1..=2), 1, &log).unwrap();
        let first = r.poll_apply().unwrap();
        assert_eq!(
            (first.origin.as_str(), first.from_peer.as_str()),
            ("a", "a")
        );
        assert_eq!(
            first.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // More arrives while the store commits: held, not handed out, not acknowledged yet.
        r.received("a", entries("a", 3..=4), 2, &log).unwrap();
        r.received("a", entries("a", 5..=5), 2, &log).unwrap();
        assert_eq!(r.poll_apply(), None);
        assert!(!drain(&mut r, 2, &log)
            .iter()
            .any(|(_, m)| matches!(m, MessageV1::Ack { .. })));
        log.commit(&first);
        r.applied("a", 3, &log);
        assert_eq!(
            drain(&mut r, 3, &log),
            vec![(
                "a".into(),
                MessageV1::Ack {
                    incarnation: 1,
                    hwm: hwm(&[("a", 2)])
                }
            )]
        );
        // Everything that queued up meanwhile goes in one batch (group commit).
        let second = r.poll_apply().unwrap();
        assert_eq!(
            second.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        log.commit(&second);
        r.applied("a", 4, &log);
        assert_eq!(
            drain(&mut r, 4, &log),
            vec![(
                "a".into(),
                MessageV1::Ack {
                    incarnation: 1,
                    hwm: hwm(&[("a", 5)])
                }
            )]
        );
    }

    #[test]
    fn a_gap_is_held_asked_for_and_filled() {
        let mut log = MemLog::default();
        log.write("a", [1]);
        let mut r = Replicator::new(cfg("b"), &log, 0);
        r.connected("c", 0);
        drain(&mut r, 0, &log);
        r.received("c", entries("a", 3..=4), 10, &log).unwrap();
        assert_eq!(r.poll_apply(), None);
        assert_eq!(r.held_entries(), 2);
        let sent = drain(&mut r, 10, &log);
        assert!(
            sent.contains(&(
                "c".into(),
                MessageV1::Need {
                    origin: "a".into(),
                    from: 2
                }
            )),
            "{sent:?}"
        );
        // Asked again only after `need_interval`.
        r.tick(11, &log);
        assert!(!drain(&mut r, 11, &log)
            .iter()
            .any(|(_, m)| matches!(m, MessageV1::Need { .. })));
        r.tick(10 + r.cfg.need_interval, &log);
        assert!(drain(&mut r, 600, &log)
            .iter()
            .any(|(_, m)| matches!(m, MessageV1::Need { .. })));
        r.received("c", entries("a", [2]), 700, &log).unwrap();
        let apply = r.poll_apply().unwrap();
        assert_eq!(
            apply.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }

    #[test]
    fn need_moves_the_sender_back() {
        let (mut r, log) = greeted(4, &[]);
        assert_eq!(entries_to(&drain(&mut r, 0, &log), "b").len(), 2);
        r.received(
            "b",
            MessageV1::Need {
                origin: "a".into(),
                from: 1,
            }
            .into(),
            1,
            &log,
        )
        .unwrap();
        assert_eq!(
            entries_to(&drain(&mut r, 1, &log), "b"),
            vec![("a".into(), vec![1, 2]), ("a".into(), vec![3, 4])]
        );
    }

    #[test]
    fn unacknowledged_batches_are_resent_after_the_timeout_with_backoff() {
        let (mut r, log) = greeted(2, &[]);
        let rto = r.cfg.retransmit_after;
        assert_eq!(entries_to(&drain(&mut r, 0, &log), "b").len(), 1);
        assert_eq!(r.poll_timeout(), Some(rto.min(r.next_status)));
        r.tick(rto - 1, &log);
        assert!(entries_to(&drain(&mut r, rto - 1, &log), "b").is_empty());
        r.tick(rto, &log);
        assert_eq!(
            entries_to(&drain(&mut r, rto, &log), "b"),
            vec![("a".into(), vec![1, 2])]
        );
        // The next timeout is twice as long.
        assert_eq!(
            r.poll_timeout(),
            Some(rto + 2 * rto).min(Some(r.next_status))
        );
        r.tick(rto + 2 * rto - 1, &log);
        assert!(entries_to(&drain(&mut r, rto + 2 * rto - 1, &log), "b").is_empty());
        // An acknowledgement stops it.
        r.received(
            "b",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 2)]),
            }
            .into(),
            4 * rto,
            &log,
        )
        .unwrap();
        r.tick(10 * rto, &log);
        assert!(entries_to(&drain(&mut r, 10 * rto, &log), "b").is_empty());
        assert_eq!(
            r.peer_status(0)
                .iter()
                .find(|s| s.peer == "b")
                .unwrap()
                .retransmits,
            1
        );
    }

    #[test]
    fn a_restarted_region_resumes_from_the_peers_marks() {
        let (mut r, log) = greeted(5, &[]);
        drain(&mut r, 0, &log);
        // Crash: all in-memory state is gone; the log survives.
        let mut r = Replicator::new(cfg("a"), &log, 100);
        r.connected("b", 100);
        r.received("b", hello("b", &[("a", 3)]), 100, &log).unwrap();
        assert_eq!(
            entries_to(&drain(&mut r, 100, &log), "b"),
            vec![("a".into(), vec![4, 5])]
        );
    }

    #[test]
    fn reconnecting_forgets_what_was_in_flight() {
        let (mut r, log) = greeted(2, &[]);
        assert_eq!(entries_to(&drain(&mut r, 0, &log), "b").len(), 1);
        r.disconnected("b", 1);
        assert!(drain(&mut r, 1, &log).is_empty());
        r.connected("b", 2);
        r.received("b", hello("b", &[]), 2, &log).unwrap();
        assert_eq!(
            entries_to(&drain(&mut r, 2, &log), "b"),
            vec![("a".into(), vec![1, 2])]
        );
    }

    #[test]
    fn another_origins_entries_are_forwarded_only_when_the_direct_path_fails() {
        // c holds a's entries 1..=2; b is connected to c and says it reaches a.
        let mut log = MemLog::default();
        log.write("a", 1..=2);
        let mut r = Replicator::new(cfg("c"), &log, 0);
        r.connected("b", 0);
        r.received("b", hello("b", &[]), 0, &log).unwrap();
        let status = MessageV1::Status {
            incarnation: 1,
            hwm: Hwm::new(),
            connected: ["a".into(), "c".into()].into(),
            floor: Hwm::new(),
            allocated: 0,
        };
        r.received("b", status.into(), 0, &log).unwrap();
        assert!(entries_to(&drain(&mut r, 0, &log), "b").is_empty());
        let fwd = r.cfg.forward_after;
        assert!(entries_to(&drain(&mut r, fwd - 1, &log), "b").is_empty());
        // b made no progress on a for `forward_after`: forward.
        let sent = drain(&mut r, fwd, &log);
        assert_eq!(entries_to(&sent, "b"), vec![("a".into(), vec![1, 2])]);
        assert_eq!(r.peer_status(fwd)[1].forwarded_entries, 2);
    }

    #[test]
    fn the_designated_forwarder_steps_in_at_once_when_the_peer_cannot_reach_the_origin() {
        let mut log = MemLog::default();
        log.write("a", 1..=2);
        let mut r = Replicator::new(cfg("c"), &log, 0);
        r.connected("b", 0);
        r.received("b", hello("b", &[]), 0, &log).unwrap();
        // b reaches only c: c is the only candidate.
        let status = MessageV1::Status {
            incarnation: 1,
            hwm: Hwm::new(),
            connected: ["c".into()].into(),
            floor: Hwm::new(),
            allocated: 0,
        };
        r.received("b", status.into(), 0, &log).unwrap();
        assert_eq!(
            entries_to(&drain(&mut r, 0, &log), "b"),
            vec![("a".into(), vec![1, 2])]
        );
    }

    #[test]
    fn a_peer_that_keeps_progressing_is_not_forwarded_to() {
        let mut log = MemLog::default();
        let mut r = Replicator::new(cfg("c"), &log, 0);
        r.connected("b", 0);
        r.received("b", hello("b", &[]), 0, &log).unwrap();
        let reaches: BTreeSet<String> = ["a".into(), "c".into()].into();
        let fwd = r.cfg.forward_after;
        // a writes steadily; b gets it directly and says so in its Status every second.
        for t in (0..10 * fwd).step_by(500) {
            log.write("a", [t / 500 + 1]);
            r.local_committed(t, &log);
            let status = MessageV1::Status {
                incarnation: 1,
                hwm: hwm(&[("a", t / 500)]),
                connected: reaches.clone(),
                floor: Hwm::new(),
                allocated: 0,
            };
            r.received("b", status.into(), t, &log).unwrap();
            assert!(
                entries_to(&drain(&mut r, t, &log), "b").is_empty(),
                "at {t}"
            );
        }
    }

    #[test]
    fn lag_counts_changes_and_the_age_of_the_oldest_unacknowledged_one() {
        let mut log = MemLog::default();
        let mut r = Replicator::new(cfg("a"), &log, 0);
        log.write("a", 1..=2);
        r.local_committed(1_000, &log);
        log.write("a", 3..=5);
        r.local_committed(4_000, &log);
        let b = |r: &Replicator, now| {
            r.peer_status(now)
                .into_iter()
                .find(|s| s.peer == "b")
                .unwrap()
        };
        assert_eq!(
            (b(&r, 5_000).behind_changes, b(&r, 5_000).oldest_unacked_age),
            (5, Some(4_000))
        );
        assert!(!b(&r, 5_000).connected);
        r.connected("b", 5_000);
        r.received("b", hello("b", &[]), 5_000, &log).unwrap();
        r.received(
            "b",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 2)]),
            }
            .into(),
            5_000,
            &log,
        )
        .unwrap();
        assert_eq!(
            (b(&r, 5_000).behind_changes, b(&r, 5_000).oldest_unacked_age),
            (3, Some(1_000))
        );
        r.received(
            "b",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 5)]),
            }
            .into(),
            5_000,
            &log,
        )
        .unwrap();
        assert_eq!(
            (b(&r, 5_000).behind_changes, b(&r, 5_000).oldest_unacked_age),
            (0, None)
        );
    }

    #[test]
    fn durability_counts_this_region_and_every_peer_that_acknowledged() {
        let (mut r, log) = greeted(3, &[]);
        assert_eq!(r.durable_count("a", 3), 1);
        r.connected("c", 0);
        r.received("c", hello("c", &[]), 0, &log).unwrap();
        r.received(
            "b",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 3)]),
            }
            .into(),
            1,
            &log,
        )
        .unwrap();
        r.received(
            "c",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 2)]),
            }
            .into(),
            1,
            &log,
        )
        .unwrap();
        assert_eq!(r.durable_count("a", 2), 3);
        assert_eq!(r.durable_count("a", 3), 2);
        assert_eq!(r.durable_count("a", 4), 0);
        // Acks may arrive reordered: an older one never lowers what we know.
        r.received(
            "b",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 1)]),
            }
            .into(),
            2,
            &log,
        )
        .unwrap();
        assert_eq!(r.durable_count("a", 3), 2);
    }

    #[test]
    fn own_entries_beyond_our_log_are_reported_and_never_applied() {
        let mut log = MemLog::default();
        log.write("a", 1..=2);
        let mut r = Replicator::new(cfg("a"), &log, 0);
        r.connected("b", 0);
        r.received("b", hello("b", &[("a", 9)]), 0, &log).unwrap();
        let events: Vec<_> = std::iter::from_fn(|| r.poll_event()).collect();
        assert!(
            events.contains(&Event::OwnLogBehind {
                peer: "b".into(),
                ours: 2,
                theirs: 9
            }),
            "{events:?}"
        );
        r.received("b", entries("a", 3..=4), 0, &log).unwrap();
        assert_eq!(r.poll_apply(), None);
        // Recovery mode takes them.
        let mut c = cfg("a");
        c.accept_own_entries = true;
        let mut r = Replicator::new(c, &log, 0);
        r.received("b", entries("a", 3..=4), 0, &log).unwrap();
        assert_eq!(r.poll_apply().map(|a| a.entries.len()), Some(2));
    }

    #[test]
    fn reports_of_one_incarnation_only_raise_marks_in_whatever_order_they_arrive() {
        let mut log = MemLog::default();
        log.write("a", 1..=4);
        let mut r = Replicator::new(cfg("a"), &log, 0);
        r.connected("b", 0);
        // A later Ack overtakes the Hello: it counts, and sending may start.
        let ack = |n| {
            MessageV1::Ack {
                incarnation: 7,
                hwm: hwm(&[("a", n)]),
            }
            .into()
        };
        r.received("b", ack(3), 0, &log).unwrap();
        assert_eq!(r.durable_count("a", 3), 2);
        assert_eq!(
            entries_to(&drain(&mut r, 0, &log), "b"),
            vec![("a".into(), vec![4])]
        );
        // The older Hello, even delivered twice, does not lower it nor report a regression.
        r.received("b", hello_from("b", 7, &[("a", 2)]), 0, &log)
            .unwrap();
        r.received("b", hello_from("b", 7, &[("a", 2)]), 0, &log)
            .unwrap();
        assert_eq!(r.durable_count("a", 3), 2);
        let events: Vec<_> = std::iter::from_fn(|| r.poll_event()).collect();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::PeerRegressed { .. })),
            "{events:?}"
        );
    }

    #[test]
    fn a_lost_hello_only_delays_sending_until_the_next_status() {
        let (mut r, log) = greeted(2, &[]);
        r.disconnected("b", 1);
        r.connected("b", 2);
        assert!(entries_to(&drain(&mut r, 2, &log), "b").is_empty());
        let status = MessageV1::Status {
            incarnation: 1,
            hwm: Hwm::new(),
            connected: ["a".into()].into(),
            floor: Hwm::new(),
            allocated: 0,
        };
        r.received("b", status.into(), 3, &log).unwrap();
        assert_eq!(
            entries_to(&drain(&mut r, 3, &log), "b"),
            vec![("a".into(), vec![1, 2])]
        );
    }

    #[test]
    fn a_peer_that_lost_data_is_reported_and_served_again() {
        let (mut r, log) = greeted(2, &[]);
        r.received(
            "b",
            MessageV1::Ack {
                incarnation: 1,
                hwm: hwm(&[("a", 2)]),
            }
            .into(),
            0,
            &log,
        )
        .unwrap();
        drain(&mut r, 0, &log);
        while r.poll_event().is_some() {}
        r.connected("b", 1);
        // Restarted (a new incarnation) with an older copy of its log.
        r.received("b", hello_from("b", 2, &[]), 1, &log).unwrap();
        assert_eq!(
            r.poll_event(),
            Some(Event::PeerRegressed {
                peer: "b".into(),
                origin: "a".into(),
                acked: 2,
                has: 0
            })
        );
        assert_eq!(
            entries_to(&drain(&mut r, 1, &log), "b"),
            vec![("a".into(), vec![1, 2])]
        );
    }

    #[test]
    fn a_failed_commit_is_asked_for_again() {
        let log = MemLog::default();
        let mut r = Replicator::new(cfg("b"), &log, 0);
        r.connected("a", 0);
        drain(&mut r, 0, &log);
        r.received("a", entries("a", 1..=2), 1, &log).unwrap();
        let _lost = r.poll_apply().unwrap();
        r.applied("a", 2, &log); // the store failed: nothing committed
        let sent = drain(&mut r, 2, &log);
        assert!(
            sent.contains(&(
                "a".into(),
                MessageV1::Need {
                    origin: "a".into(),
                    from: 1
                }
            )),
            "{sent:?}"
        );
        r.received("a", entries("a", 1..=2), 3, &log).unwrap();
        assert_eq!(r.poll_apply().map(|a| a.entries.len()), Some(2));
    }

    #[test]
    fn invalid_messages_are_protocol_errors() {
        let (mut r, log) = greeted(0, &[]);
        assert_eq!(
            r.received("c", hello("b", &[]), 0, &log),
            Err(ProtocolError::RegionMismatch {
                expected: "c".into(),
                got: "b".into()
            })
        );
        let old = MessageV1::Hello {
            region: "c".into(),
            protocol: 0,
            incarnation: 1,
            hwm: Hwm::new(),
            floor: Hwm::new(),
        };
        assert_eq!(
            r.received("c", old.into(), 0, &log),
            Err(ProtocolError::UnsupportedProtocol(0))
        );
        let bad = MessageV1::Entries {
            origin: "c".into(),
            entries: vec![(2, vec![]), (2, vec![])],
        };
        assert!(matches!(
            r.received("c", bad.into(), 0, &log),
            Err(ProtocolError::BadEntries { .. })
        ));
        let zero = MessageV1::Entries {
            origin: "c".into(),
            entries: vec![(0, vec![])],
        };
        assert!(matches!(
            r.received("c", zero.into(), 0, &log),
            Err(ProtocolError::BadEntries { .. })
        ));
        assert_eq!(
            r.received("a", hello("a", &[]), 0, &log),
            Err(ProtocolError::FromSelf)
        );
    }

    #[test]
    fn equal_marks_with_different_digests_are_divergence() {
        let mut log = MemLog::default();
        log.write("a", 1..=2);
        log.digest = Some([1; 32]);
        let mut r = Replicator::new(cfg("a"), &log, 0);
        let d = |marks: &[(&str, u64)], digest| {
            MessageV1::Digest {
                hwm: hwm(marks),
                digest,
            }
            .into()
        };
        r.received("b", d(&[("a", 2)], [1; 32]), 0, &log).unwrap();
        r.received("b", d(&[("a", 1)], [2; 32]), 0, &log).unwrap();
        // The equal digest is a match; the one at other marks is not comparable.
        assert_eq!(
            r.poll_event(),
            Some(Event::DigestMatched { peer: "b".into() })
        );
        assert_eq!(r.poll_event(), None);
        r.received("b", d(&[("a", 2)], [2; 32]), 0, &log).unwrap();
        assert_eq!(
            r.poll_event(),
            Some(Event::Diverged {
                peer: "b".into(),
                hwm: hwm(&[("a", 2)])
            })
        );
    }

    #[test]
    fn equal_marks_with_equal_digests_are_a_match() {
        let mut log = MemLog::default();
        log.write("a", 1..=2);
        log.digest = Some([1; 32]);
        let mut r = Replicator::new(cfg("a"), &log, 0);
        let d = |marks: &[(&str, u64)], digest| {
            MessageV1::Digest {
                hwm: hwm(marks),
                digest,
            }
            .into()
        };
        // Other marks: not comparable, whatever the digest.
        r.received("b", d(&[("a", 1)], [1; 32]), 0, &log).unwrap();
        assert_eq!(r.poll_event(), None);
        r.received("b", d(&[("a", 2)], [1; 32]), 0, &log).unwrap();
        assert_eq!(
            r.poll_event(),
            Some(Event::DigestMatched { peer: "b".into() })
        );
        // No digest of our own (documents above the marks): nothing to compare.
        log.digest = None;
        r.received("b", d(&[("a", 2)], [1; 32]), 0, &log).unwrap();
        assert_eq!(r.poll_event(), None);
    }

    #[test]
    fn status_advertises_marks_and_connections_periodically_and_on_change() {
        let (mut r, log) = greeted(1, &[("a", 1)]);
        let sent = drain(&mut r, 0, &log);
        let status = MessageV1::Status {
            incarnation: 1,
            hwm: hwm(&[("a", 1)]),
            connected: ["b".into()].into(),
            floor: Hwm::new(),
            allocated: 0,
        };
        assert!(sent.contains(&("b".into(), status.clone())), "{sent:?}");
        assert!(!drain(&mut r, 1, &log).contains(&("b".into(), status.clone())));
        let next = r.next_status;
        r.tick(next, &log);
        assert!(drain(&mut r, next, &log).contains(&("b".into(), status)));
    }

    #[test]
    fn timeline_buckets_bound_memory_and_overestimate_ages() {
        let mut t = Timeline::default();
        t.record(1, 0, 100);
        t.record(5, 50, 100); // same bucket as seq 1
        t.record(6, 150, 100);
        assert_eq!(t.learned_at(1), Some(0));
        assert_eq!(t.learned_at(5), Some(0));
        assert_eq!(t.learned_at(6), Some(150));
        assert_eq!(t.learned_at(7), None);
        t.prune(5);
        assert_eq!(t.learned_at(6), Some(150));
        for i in 0..(TIMELINE_CAP as u64 + 10) {
            t.record(100 + i, 1_000 + i * 100, 100);
        }
        assert_eq!(t.samples.len(), TIMELINE_CAP);
        assert_eq!(
            t.learned_at(100),
            Some(150),
            "merged buckets keep the oldest time"
        );
    }
}

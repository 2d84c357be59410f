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
/// snapshots and the `allocated` report; its `Hello` is not readable by version 1. Version 3
/// sends v3 log entries (with the write's intent, which events are made of), which a version 2
/// build cannot decode: it would quarantine them, so the two refuse each other at `Hello`.
pub const PROTOCOL_VERSION: u32 = 3;
/// The oldest protocol version this build still talks to.
pub const MIN_PROTOCOL_VERSION: u32 = 3;

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
}

mod receive;
mod send;
#[cfg(test)]
mod tests;

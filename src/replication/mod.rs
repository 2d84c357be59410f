//! Replication between regions: the pure protocol core, its QUIC transport (the only quinn
//! user) and the runtime that wires them to the store.
//!
//! - [`wire`]: versioned messages ([`Message::V1`]) and their length-prefixed, canonical binary
//!   frames; decoding untrusted bytes never panics.
//! - [`needs`]: pure decisions over plain maps: what a peer still needs, who forwards it.
//! - [`protocol`]: the sans-IO [`Replicator`] of one region (quinn-proto style: no sockets, no
//!   clock, time is a parameter), reading the log through the [`Log`] trait.
//! - [`quic`]: the QUIC transport with mutual TLS, and per-connection byte counters
//!   ([`quic::TrafficMeter`]); [`certs`]: the cluster CA and region certificates.
//! - [`store_log`]: the store seen as a [`Log`]; [`node`]: the runtime of one region (one task
//!   owning the replicator) and the per-peer status `/health` and `/metrics` show.
//! - [`pending`]: pure: which offboardings (the store's records at their log positions) some
//!   peer has not acknowledged yet, from the marks each peer last reported.
//! - [`discovery`]: peers from DNS SRV records (`replication.peers_srv`, hickory-resolver),
//!   fed to `node`'s dialling next to the static `peers`.
//!
//! # The protocol
//! Every region keeps a replication log: entry (origin region, sequence) holds the Automerge
//! change of one write made in `origin` (the `store::LogEntry` bytes). Entries received from
//! peers are stored under their *origin's* key, so every region holds the same entries under
//! the same keys, and any region can pass any origin's entries on. For each origin a region's
//! *high-water mark* (hwm) is the highest `s` such that it holds `1..=s` durably.
//!
//! On connect both sides send `Hello` with their marks. A side then sends, per origin, the
//! entries between the peer's mark and its own ([`needs::still_needed`]), in batches, within a
//! window of unacknowledged batches; new local commits are pushed at once. The receiver hands
//! consecutive entries to its store ([`Apply`]), and after its own durable commit sends `Ack`
//! with its new marks; the sender drops acknowledged batches and, if the oldest batch stays
//! unacknowledged past a timeout, resends from the peer's mark (with backoff). Entries beyond a
//! gap are held and asked for (`Need`). Every region advertises its marks and its connections
//! (`Status`) periodically; a region forwards another origin's entries to a peer that cannot
//! reach that origin (one designated forwarder at once, any other after a stall timeout), so a
//! region cut off from some peers catches up from whichever are up. `Digest` compares document
//! heads at equal marks to detect divergence ([`Event::Diverged`], and
//! [`Event::DigestMatched`] when they agree); `node` counts both per peer for `/health` and
//! `/metrics`, next to the bytes each peer's connections moved (from quinn's statistics).
//!
//! `Hello`, `Ack` and `Status` are *reports* of the sender's durable marks, stamped with its
//! *incarnation* (distinct for every start). Within one incarnation marks only rise, so reports
//! are lower bounds that may arrive in any order, twice or never; the first report of a new
//! incarnation is taken exactly, since the peer may have restarted with less data.
//!
//! # Invariants (and why they hold)
//! 1. **An entry never changes.** (origin, seq) is assigned once, by the origin, and the bytes
//!    are copied verbatim everywhere. Hence a duplicate is recognised by its key alone, and the
//!    marks of two regions say exactly which entries they share.
//! 2. **Marks are contiguous and durable.** A region advertises (Hello, Ack, Status) only
//!    marks its log holds durably with no hole below. So everything at or below a peer's mark
//!    is never needed by it again (no resend is ever required below an acknowledged mark), an
//!    `Ack` is a durability promise the sync-mode quorum can count, and marks only rise
//!    within an incarnation (a new incarnation with lower marks lost data:
//!    [`Event::PeerRegressed`]).
//! 3. **The store applies each origin's entries in sequence order, without holes.** An
//!    [`Apply`] always starts right after the log's mark and is consecutive; there is at most
//!    one outstanding per origin. So the log's mark is simply the last committed entry, and
//!    "what does the peer need" is one range per origin.
//! 4. **Convergence.** While a path of working connections exists, every entry eventually
//!    reaches every region: the origin pushes it, acknowledgements or timeouts make it resend,
//!    and forwarding covers regions that cannot reach the origin. Regions that hold the same
//!    entries hold the same Automerge changes, hence the same documents (Automerge merges are
//!    commutative, associative and idempotent): equal marks ⇒ equal documents, once neither
//!    region has own entries above its mark (a write committed while a lower sequence number
//!    is still committing is in the document before it is under the mark).
//! 5. **Bounded memory per peer.** Send windows, batch sizes, held bytes and the lag timeline
//!    are all bounded by [`Config`]; anything dropped for lack of room is resent.
//! 6. **Restart needs nothing but the log.** In-flight state is rebuilt from the log's marks
//!    and the peers' reports ([`Replicator::new`]); nothing protocol-specific is persisted.
//!
//! # Design decisions (refinements of the first sketch, and why)
//! - *Incarnations instead of "Hello first".* Taking `Hello` exactly and `Ack` as a lower bound
//!   needs `Hello` to be the first message processed on a connection; a multi-stream transport
//!   (or the simulation) reorders and duplicates, and a lost `Hello` stalled a connection for
//!   good. Stamping reports with the sender's incarnation makes every report order-free.
//! - *Fillers for holes.* Allocating sequence numbers before the commit (needed for group
//!   commit) makes holes possible; contiguous marks would stop at the first permanent one.
//! - *Forwarding is designated, with a stall fallback.* "Any peer can forward" done naively
//!   makes every region send every origin to every peer (N-fold traffic, worst when a new
//!   region bootstraps). The peer's `Status` says which origins it cannot reach; one forwarder
//!   per (origin, peer) is chosen by a hash everybody computes alike ([`needs`]); anyone else
//!   steps in only if the peer stalls for `forward_after`.
//! - *One outstanding `Apply` per origin.* Entries arriving while the store commits are held
//!   and go in the next batch (group commit), and the store never has to order two batches.
//! - *Logs are truncated, not kept whole.* Entries every known region holds are cut (beyond a
//!   keep window); a region behind the cut, or a new one, gets a snapshot of current state
//!   (`snapshot.rs`) instead of the history.
//!
//! # What the store must guarantee (the integrator's side)
//! - **No permanent holes in its own origin.** Sequence numbers are allocated before the write
//!   batch commits, so a write that fails after allocation, or a crash between allocation and
//!   commit, leaves a hole that would freeze the origin's mark — and the whole region's
//!   replication — forever. On open, and whenever a write fails after allocating, the store
//!   must write a *filler*: an empty entry at the hole (receivers log it and apply nothing).
//!   At runtime `Log::hwm` must report the contiguous mark, not the highest sequence: entries
//!   above a transient hole (a concurrent write still committing) wait for it.
//! - **Apply = log entry + document, in one batch, whatever the change says.** An entry that
//!   cannot be decoded (a newer format) or whose Automerge change fails must still be logged,
//!   so the mark advances and the entry is forwarded verbatim; report it instead.
//! - **Changes with missing dependencies.** Entries of different origins are independent
//!   streams, so a change of region C to a document can arrive before the change of region B
//!   it depends on. Automerge's `load_incremental` then *queues* it (`get_missing_deps`
//!   non-empty) and applies it when B's change arrives. The entry is logged (and forwarded)
//!   regardless; the queued change must stay durable too: automerge 0.12's `save()` keeps
//!   queued changes (`SaveOptions::retain_orphans` defaults to true) and `load` restores the
//!   queue — pinned by a test in `sim` — so the store must persist the document with `save()`
//!   after every apply, never drop or rebuild it from `save_after`/`load_incremental` chunks
//!   without its queue. While a change is queued the document's heads (and ETag) exclude it.
//! - **One actor per writer.** The Automerge actor and the log origin are the region name; two
//!   processes writing as one region would reuse (actor, seq) pairs. A region that lost its
//!   log must not take writes before it recovered its own entries ([`Event::OwnLogBehind`]).

pub mod certs;
pub mod discovery;
pub mod needs;
pub mod node;
pub mod pending;
pub mod protocol;
pub mod quic;
pub mod snapshot;
pub mod store_log;
pub mod wire;

#[cfg(test)]
mod sim;

pub use protocol::{
    Apply, Config, Event, Log, Millis, PeerStatus, ProtocolError, Replicator, PROTOCOL_VERSION,
};
pub use wire::{
    decode, decode_frame, encode, encode_frame, Entry, Hwm, Message, MessageV1, WireError,
};

//! The replication runtime of one region: one task owns the [`Replicator`] and feeds it from the
//! transport, the store and the clock. Wiring only; every decision lives in `protocol`.
//!
//! Connections: of two regions, the one whose name sorts first dials (with backoff) and the
//! other accepts, so each pair keeps one connection. Received entries are applied on the
//! blocking pool (one batch per origin at a time, as the replicator hands them out) and the
//! replicator hears `applied` after the store's synced commit, so acks follow durability.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::certs::{self, CertError, Identity};
use super::needs;
use super::protocol::{Config as ReplicatorConfig, Event, Millis, Replicator};
use super::quic::{PeerConnection, Traffic, TrafficMeter, Transport, TransportError};
use super::snapshot::{self, SnapshotStats};
use super::store_log::StoreLog;
use super::wire::{Message, MessageV1};
use crate::config::ReplicationConfig;
use crate::conflict::membership::Report;
use crate::store::Store;

/// Errors starting replication.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("certificates in {dir}: {source}")]
    Certs { dir: String, source: CertError },
    #[error(
        "replication.certs_dir {dir} lacks {missing}: a region never makes its own CA; create \
         the cluster's certificates with `geoscim certs --out {dir} --regions {region},<peers…>` \
         (or check the path)"
    )]
    NoCerts {
        dir: String,
        missing: String,
        region: String,
    },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("cannot read the bound QUIC address: {0}")]
    Addr(std::io::Error),
}

/// What the API asks of replication: write-quorum waits (sync mode, and offboarding in every
/// mode) and lookups at the peers before a 404.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Ev>,
    /// Every write waits (sync mode).
    pub all_writes: bool,
    /// Deactivations and deletes wait.
    pub offboarding: bool,
    /// Regions (this one included) that must hold a write.
    pub size: usize,
    /// How long to wait before answering 503.
    pub timeout: Duration,
    /// How long to wait for the peers' answers to a lookup.
    pub lookup_timeout: Duration,
}

impl Handle {
    /// Ask every connected peer for the document `key` names (a store `Lookup`); the first
    /// document found, or `None` when no peer has it or none answers within the lookup timeout.
    pub async fn fetch(&self, key: Vec<u8>) -> Option<Vec<u8>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Ev::Lookup(key, tx)).ok()?;
        tokio::time::timeout(self.lookup_timeout, rx)
            .await
            .ok()?
            .ok()?
    }

    /// Wait until every local write up to `target` is durable in `size` regions; `false` after
    /// the timeout (the writes stay and replicate later).
    pub async fn wait(&self, target: u64) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Ev::Wait(target, self.size, tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(self.timeout, rx).await, Ok(Ok(true)))
    }
}

/// A running replication node.
pub struct Node {
    /// The bound QUIC address.
    pub addr: SocketAddr,
    /// The latest replication status (JSON), for `/health`.
    pub status: Arc<Mutex<Value>>,
    /// What the API asks of replication.
    pub handle: Handle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Stop the node and wait for its task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// This region's identity and the cluster CA from `dir`, which must hold them: a region never
/// makes a CA of its own (a mistyped `certs_dir` would otherwise start a region that trusts
/// no peer and no peer trusts). `geoscim certs` makes them; `geoscim up` calls
/// [`load_or_create_identity`].
pub fn load_identity(dir: &Path, region: &str) -> Result<(Identity, String), NodeError> {
    let missing = [
        certs::ca_cert_path(dir),
        certs::region_cert_path(dir, region),
    ]
    .into_iter()
    .find(|p| !p.exists());
    if let Some(path) = missing {
        return Err(NodeError::NoCerts {
            dir: dir.display().to_string(),
            missing: path.display().to_string(),
            region: region.to_string(),
        });
    }
    let certs = |source| NodeError::Certs {
        dir: dir.display().to_string(),
        source,
    };
    Ok((
        certs::load_identity(dir, region).map_err(certs)?,
        certs::load_ca_cert(dir).map_err(certs)?,
    ))
}

/// This region's identity and the cluster CA from `dir`, creating what is missing: a folder
/// without a CA gets a new one, a region without a certificate gets one when the CA key is
/// there. Only for `geoscim up`, whose local cluster owns its folder.
pub fn load_or_create_identity(dir: &Path, region: &str) -> Result<(Identity, String), CertError> {
    std::fs::create_dir_all(dir).map_err(|e| CertError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    if !certs::ca_cert_path(dir).exists() {
        let ca = certs::generate_ca()?;
        certs::write_ca(dir, &ca, false)?;
    }
    if !certs::region_cert_path(dir, region).exists() {
        let ca = certs::load_ca(dir)?;
        certs::write_identity(dir, &ca.issue(region)?, false)?;
    }
    Ok((
        certs::load_identity(dir, region)?,
        certs::load_ca_cert(dir)?,
    ))
}

/// What the runtime observes of one peer beyond the protocol's counters ([`PeerStatus`]):
/// bytes on the wire, and the digest comparisons. Shown next to them in `/health` and
/// `/metrics`; all counts are since this process started.
///
/// [`PeerStatus`]: super::protocol::PeerStatus
#[derive(Default)]
struct PeerWatch {
    /// Final byte counts of the peer's connections that have closed: with the open ones', the
    /// totals across reconnections.
    closed: Traffic,
    /// The peer's connections not known to be closed: the live one, and a replaced or dropped
    /// one until quinn reports it closed (so the bytes it moved while closing still count).
    open: Vec<TrafficMeter>,
    /// Digests from the peer taken at the same marks as ours, so comparable.
    digests_compared: u64,
    /// Of those, the ones equal to ours.
    digests_matched: u64,
    /// Of those, the ones that differed ([`Event::Diverged`]).
    divergences: u64,
    /// The last comparison with this peer differed: set by [`Event::Diverged`], cleared by the
    /// next [`Event::DigestMatched`]. The alert to act on when it stays set.
    ///
    /// One known benign case: a document merged from a peer lookup (`Store::import`) can carry
    /// changes above the marks for a short while (until their log entries arrive), so a single
    /// transient mismatch can happen; the flag clears on the next match.
    diverged: bool,
    /// When a message from the peer last arrived (the dashboard's "last contact").
    last_contact: Option<Instant>,
}

impl PeerWatch {
    /// Bytes sent to and received from the peer so far, on all its connections. Folds the
    /// connections that closed into `closed`, so their meters (and quinn's connection state)
    /// are dropped. Never decreases.
    fn traffic(&mut self) -> Traffic {
        let mut live = Traffic::default();
        let closed = &mut self.closed;
        self.open.retain(|meter| {
            // Closed first, then read: counts read after the close are final (but for a close
            // frame repeated while the connection drains).
            let done = meter.is_closed();
            let t = meter.traffic();
            if done {
                *closed = *closed + t;
            } else {
                live = live + t;
            }
            !done
        });
        *closed + live
    }

    /// Count a protocol event about this peer's digests.
    fn digest_event(&mut self, event: &Event) {
        match event {
            Event::DigestMatched { peer } => {
                self.digests_compared += 1;
                self.digests_matched += 1;
                if self.diverged {
                    tracing::info!(peer = %peer, "document digests match the peer's again");
                }
                self.diverged = false;
            }
            Event::Diverged { peer, hwm } => {
                self.digests_compared += 1;
                self.divergences += 1;
                self.diverged = true;
                tracing::warn!(
                    peer = %peer, marks = ?hwm,
                    "document digests differ from the peer's at equal marks: the regions hold \
                     the same changes but different documents (once right after a peer lookup \
                     is benign; if it persists, investigate)"
                );
            }
            _ => {}
        }
    }
}

enum Ev {
    Local,
    /// Answer `true` once local entry `target` is durable in `quorum` regions.
    Wait(u64, usize, tokio::sync::oneshot::Sender<bool>),
    /// Ask the connected peers for a document.
    Lookup(Vec<u8>, tokio::sync::oneshot::Sender<Option<Vec<u8>>>),
    /// Our answer to a peer's `Fetch`, ready to send.
    Reply(String, u64, Vec<u8>),
    Conn(PeerConnection),
    Msg(String, u64, Message),
    Closed(String, u64),
    Applied(String),
    /// The snapshot (session id) received from this peer ended: applied (`true`), or broken.
    SnapshotDone(String, u64, bool),
    /// A peer found by DNS (`replication.peers_srv`, see `discovery`).
    Discovered(crate::config::PeerConfig),
}

/// The runtime's timers and limits (from [`ReplicationConfig`]).
struct Settings {
    /// Every region's name, this one included (collection needs every region's report).
    cluster: Vec<String>,
    tombstone_gc: Duration,
    membership_gc: Duration,
    truncate: Duration,
    log_keep_entries: u64,
    log_max_entries: u64,
    snapshot_chunk_bytes: usize,
    snapshot_window: u64,
    /// Refuse writes at start until a peer has reported (or this long has passed).
    start_hold: Duration,
}

/// Start replication for `store` (region `region`) as configured, on the bound UDP `socket`
/// (`cfg.listen` is not read: the caller bound it).
pub async fn start(
    store: Arc<Store>,
    region: &str,
    cfg: &ReplicationConfig,
    socket: std::net::UdpSocket,
) -> Result<Node, NodeError> {
    let (identity, ca_pem) = load_identity(&cfg.certs_dir, region)?;
    let transport = Arc::new(Transport::new(socket, &identity, &ca_pem)?);
    let addr = transport.local_addr().map_err(NodeError::Addr)?;
    let (tx, rx) = mpsc::unbounded_channel();
    {
        let tx = tx.clone();
        store.set_on_commit(Box::new(move || {
            let _ = tx.send(Ev::Local);
        }));
    }
    let (stop, stop_rx) = watch::channel(false);
    // Accept incoming peers.
    {
        let (transport, tx, mut stop_rx) = (transport.clone(), tx.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    next = transport.accept() => match next {
                        Some(Ok(conn)) => { let _ = tx.send(Ev::Conn(conn)); }
                        Some(Err(_)) => {} // logged by the transport
                        None => break,
                    },
                    _ = stop_rx.changed() => break,
                }
            }
        });
    }
    // Dial the peers whose names sort after ours; redial when the connection drops.
    let mut redial = HashMap::new();
    for peer in cfg.peers.iter().filter(|p| p.region.as_str() > region) {
        let (want_tx, want_rx) = watch::channel(0u64);
        redial.insert(peer.region.clone(), want_tx);
        tokio::spawn(dial_loop(
            transport.clone(),
            peer.region.clone(),
            peer.addr,
            tx.clone(),
            want_rx,
            stop_rx.clone(),
        ));
    }
    if let Some(name) = &cfg.peers_srv {
        let tx = tx.clone();
        super::discovery::spawn(
            name.clone(),
            cfg.peers_srv_servers.clone(),
            Duration::from_millis(cfg.peers_srv_refresh_ms),
            region.to_string(),
            move |peer| tx.send(Ev::Discovered(peer)).is_ok(),
        );
    }
    let status = Arc::new(Mutex::new(json!({"peers": []})));
    let peers: Vec<String> = cfg.peers.iter().map(|p| p.region.clone()).collect();
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let handle = Handle {
        tx: tx.clone(),
        all_writes: cfg.mode == crate::config::ReplicationMode::Sync,
        offboarding: cfg.offboarding_quorum,
        size: cfg.write_quorum,
        timeout: Duration::from_millis(cfg.quorum_timeout_ms),
        lookup_timeout: Duration::from_millis(cfg.lookup_timeout_ms),
    };
    let mut cluster = peers.clone();
    cluster.push(region.to_string());
    let settings = Settings {
        cluster,
        tombstone_gc: Duration::from_millis(cfg.tombstone_gc_interval_ms),
        membership_gc: Duration::from_millis(cfg.membership_gc_interval_ms),
        truncate: Duration::from_millis(cfg.truncate_interval_ms),
        log_keep_entries: cfg.log_keep_entries,
        log_max_entries: cfg.log_max_entries,
        snapshot_chunk_bytes: cfg.snapshot_chunk_bytes,
        snapshot_window: cfg.snapshot_window,
        start_hold: Duration::from_millis(cfg.start_hold_ms),
    };
    let mut replicator = ReplicatorConfig::new(region, peers, incarnation);
    replicator.digest_interval = cfg.digest_interval_ms;
    let task = tokio::spawn(run(
        store,
        replicator,
        tx,
        rx,
        redial,
        status.clone(),
        stop_rx,
        transport,
        settings,
    ));
    Ok(Node {
        addr,
        status,
        handle,
        stop,
        task,
    })
}

async fn dial_loop(
    transport: Arc<Transport>,
    peer: String,
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Ev>,
    mut want: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match transport.connect(addr, &peer).await {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                if tx.send(Ev::Conn(conn)).is_err() {
                    return;
                }
                // Wait until the main loop says this connection is gone.
                tokio::select! {
                    r = want.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
            }
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    store: Arc<Store>,
    config: ReplicatorConfig,
    tx: mpsc::UnboundedSender<Ev>,
    mut rx: mpsc::UnboundedReceiver<Ev>,
    mut redial: HashMap<String, watch::Sender<u64>>,
    status: Arc<Mutex<Value>>,
    mut stop: watch::Receiver<bool>,
    transport: Arc<Transport>,
    settings: Settings,
) {
    let start = Instant::now();
    let mut housekeeping = Housekeeping::new(&settings);
    let snapshot_stats = Arc::new(Mutex::new(SnapshotStats::default()));
    // Snapshots we send (by peer: session id, the receiver's acknowledged chunk) and receive.
    let mut outgoing: HashMap<String, (u64, watch::Sender<u64>)> = HashMap::new();
    let mut incoming: HashMap<String, snapshot::Incoming> = HashMap::new();
    let mut next_snapshot = 0u64;
    // Our own log is behind what a peer holds of it: writes stay refused until our mark
    // reaches this.
    let mut own_target = 0u64;
    let mut recoveries = 0u64;
    // Until every peer has said what it holds of this region, a write could reuse a sequence
    // number the cluster already has (a region restored from an old backup): hold writes
    // back at start, until all known peers reported or `start_hold` passed.
    let known = store.known_regions().unwrap_or_default();
    let mut waiting_for: std::collections::BTreeSet<String> = settings
        .cluster
        .iter()
        .chain(&known)
        .filter(|r| r.as_str() != store.region())
        .cloned()
        .collect();
    let mut starting = !settings.start_hold.is_zero() && !waiting_for.is_empty();
    if starting {
        store.hold_writes(
            Instant::now() + settings.start_hold,
            format!(
                "this region is starting: writes wait (at most {} ms) until its peers report \
                 what they hold of this region",
                settings.start_hold.as_millis()
            ),
        );
    }
    let now = || start.elapsed().as_millis() as Millis;
    let mut rep = Replicator::new(config, &StoreLog(&store), now());
    // peer → (connection id, outgoing queue)
    let mut links: HashMap<String, (u64, mpsc::UnboundedSender<Message>)> = HashMap::new();
    let mut next_conn = 0u64;
    let mut waiters: Vec<(u64, usize, tokio::sync::oneshot::Sender<bool>)> = Vec::new();
    // Lookups in flight: request → (peers yet to answer, the caller).
    type Pending = (usize, tokio::sync::oneshot::Sender<Option<Vec<u8>>>);
    let mut lookups: HashMap<u64, Pending> = HashMap::new();
    let mut next_request = 0u64;
    // Lookups that arrived while no peer was connected (a region just started): sent to the
    // first peer that connects, still bounded by the caller's timeout.
    let mut queued: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut observed: HashMap<String, PeerWatch> = HashMap::new();
    loop {
        let wake = rep
            .poll_timeout()
            .map(|t| Duration::from_millis(t.saturating_sub(now())))
            .unwrap_or(Duration::from_millis(500));
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                if let Ev::Msg(peer, ..) = &ev {
                    observed.entry(peer.clone()).or_default().last_contact = Some(Instant::now());
                }
                let log = StoreLog(&store);
                match ev {
                    Ev::Local => rep.local_committed(now(), &log),
                    Ev::Wait(target, size, reply) => {
                        rep.local_committed(now(), &log);
                        waiters.push((target, size, reply));
                    }
                    Ev::Lookup(key, reply) => {
                        next_request += 1;
                        if links.is_empty() {
                            queued.push((next_request, key));
                            lookups.insert(next_request, (1, reply));
                        } else {
                            for (_, out) in links.values() {
                                let _ = out.send(Message::V1(MessageV1::Fetch { request: next_request, key: key.clone() }));
                            }
                            lookups.insert(next_request, (links.len(), reply));
                        }
                    }
                    Ev::Reply(peer, request, doc) => {
                        if let Some((_, out)) = links.get(&peer) {
                            let _ = out.send(Message::V1(MessageV1::FetchReply { request, doc }));
                        }
                    }
                    Ev::Msg(peer, _, Message::V1(MessageV1::Fetch { request, key })) => {
                        let (store, events) = (store.clone(), tx.clone());
                        tokio::task::spawn_blocking(move || {
                            let doc = crate::store::Lookup::decode(&key)
                                .and_then(|l| store.export(&l).ok().flatten())
                                .unwrap_or_default();
                            let _ = events.send(Ev::Reply(peer, request, doc));
                        });
                    }
                    Ev::Msg(_, _, Message::V1(MessageV1::FetchReply { request, doc })) => {
                        if let Some((left, _)) = lookups.get_mut(&request) {
                            *left -= 1;
                            if !doc.is_empty() || *left == 0 {
                                let (_, reply) = lookups.remove(&request).expect("present");
                                let _ = reply.send((!doc.is_empty()).then_some(doc));
                            }
                        }
                    }
                    Ev::Applied(origin) => rep.applied(&origin, now(), &log),
                    // A session replaced by a newer one ends quietly.
                    Ev::SnapshotDone(peer, id, ok) if incoming.get(&peer).is_some_and(|s| s.id == id) => {
                        incoming.remove(&peer);
                        rep.snapshot_finished(&peer, now(), &log);
                        if ok {
                            tracing::info!(peer = %peer, marks = ?rep.hwm(), "caught up from a snapshot");
                        }
                    }
                    Ev::SnapshotDone(..) => {}
                    Ev::Msg(peer, id, Message::V1(MessageV1::SnapshotRequest { hwm })) => {
                        // A new request replaces a session still running: the receiver asks
                        // only when it gave up on the previous one.
                        if let Some((conn, out)) = links.get(&peer) {
                            if *conn == id {
                                next_snapshot += 1;
                                let (acked_tx, acked_rx) = watch::channel(0u64);
                                outgoing.insert(peer.clone(), (next_snapshot, acked_tx));
                                tracing::info!(peer = %peer, their_marks = ?hwm, "sending a snapshot");
                                let sending = snapshot::Sending {
                                    peer: peer.clone(),
                                    id: next_snapshot,
                                    out: out.clone(),
                                    acked: acked_rx,
                                };
                                snapshot::send(
                                    store.clone(), sending, settings.snapshot_chunk_bytes,
                                    settings.snapshot_window, snapshot_stats.clone(),
                                );
                            }
                        }
                    }
                    Ev::Msg(peer, _, Message::V1(MessageV1::SnapshotAck { id, n })) => {
                        if let Some((sid, acked)) = outgoing.get(&peer) {
                            if *sid == id {
                                acked.send_modify(|a| *a = (*a).max(n));
                            }
                        }
                    }
                    Ev::Msg(peer, conn, Message::V1(MessageV1::SnapshotBegin { id, hwm })) => {
                        let asked = rep.snapshot_in_progress().is_some_and(|(p, _)| *p == peer);
                        if let (true, Some((c, out))) = (asked, links.get(&peer)) {
                            if *c == conn {
                                let (events, who) = (tx.clone(), peer.clone());
                                let session = snapshot::receive(
                                    store.clone(), peer.clone(), id, hwm, out.clone(),
                                    snapshot_stats.clone(),
                                    move |ok| { let _ = events.send(Ev::SnapshotDone(who, id, ok)); },
                                );
                                incoming.insert(peer, session);
                            }
                        }
                    }
                    Ev::Msg(peer, _, msg @ Message::V1(MessageV1::SnapshotChunk { .. } | MessageV1::SnapshotEnd { .. })) => {
                        let Message::V1(MessageV1::SnapshotChunk { id, .. } | MessageV1::SnapshotEnd { id, .. }) = &msg else {
                            unreachable!("matched above");
                        };
                        if let Some(session) = incoming.get(&peer).filter(|s| s.id == *id) {
                            let _ = session.queue.send(msg);
                        }
                    }
                    // A new peer from DNS: dialled like a static one when its name sorts after
                    // ours (else it dials us). Known peers keep their dial loop.
                    Ev::Discovered(peer) => {
                        if peer.region.as_str() > rep.region() && !redial.contains_key(&peer.region) {
                            tracing::info!(peer = %peer.region, addr = %peer.addr, "replication peer found by DNS");
                            let (want_tx, want_rx) = watch::channel(0u64);
                            redial.insert(peer.region.clone(), want_tx);
                            tokio::spawn(dial_loop(
                                transport.clone(),
                                peer.region,
                                peer.addr,
                                tx.clone(),
                                want_rx,
                                stop.clone(),
                            ));
                        }
                    }
                    Ev::Conn(conn) => {
                        next_conn += 1;
                        let id = next_conn;
                        let peer = conn.region().to_string();
                        observed.entry(peer.clone()).or_default().open.push(conn.meter());
                        // Remembered for good: collection and truncation wait for every region
                        // ever seen, not only those connected now.
                        {
                            let (store, peer) = (store.clone(), peer.clone());
                            tokio::task::spawn_blocking(move || store.remember_region(&peer));
                        }
                        let (mut sender, mut receiver) = conn.split();
                        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
                        if let Some((_, old)) = links.insert(peer.clone(), (id, out_tx)) {
                            drop(old);
                            rep.disconnected(&peer, now());
                        }
                        tokio::spawn(async move {
                            while let Some(msg) = out_rx.recv().await {
                                if sender.send(&msg).await.is_err() {
                                    break;
                                }
                            }
                            sender.close();
                        });
                        let events = tx.clone();
                        let who = peer.clone();
                        tokio::spawn(async move {
                            while let Ok(Some(msg)) = receiver.recv().await {
                                if events.send(Ev::Msg(who.clone(), id, msg)).is_err() {
                                    return;
                                }
                            }
                            let _ = events.send(Ev::Closed(who, id));
                        });
                        tracing::info!(peer = %peer, "replication peer connected");
                        rep.connected(&peer, now());
                        if let Some((_, out)) = links.get(&peer) {
                            for (request, key) in queued.drain(..) {
                                let _ = out.send(Message::V1(MessageV1::Fetch { request, key }));
                            }
                        }
                    }
                    Ev::Msg(peer, id, msg) => {
                        if links.get(&peer).map(|l| l.0) == Some(id) {
                            if let Err(e) = rep.received(&peer, msg, now(), &log) {
                                tracing::warn!(peer = %peer, error = %e, "protocol error; dropping the connection");
                                links.remove(&peer);
                                outgoing.remove(&peer);
                                incoming.remove(&peer);
                                rep.disconnected(&peer, now());
                                if let Some(w) = redial.get(&peer) {
                                    w.send_modify(|n| *n += 1);
                                }
                            }
                        }
                    }
                    Ev::Closed(peer, id) => {
                        if links.get(&peer).map(|l| l.0) == Some(id) {
                            links.remove(&peer);
                            outgoing.remove(&peer);
                            incoming.remove(&peer);
                            tracing::info!(peer = %peer, "replication peer disconnected");
                            rep.disconnected(&peer, now());
                            if let Some(w) = redial.get(&peer) {
                                w.send_modify(|n| *n += 1);
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep(wake) => rep.tick(now(), &StoreLog(&store)),
            _ = stop.changed() => break,
        }
        let log = StoreLog(&store);
        while let Some((peer, msg)) = rep.poll_transmit(now(), &log) {
            if let Some((_, out)) = links.get(&peer) {
                let _ = out.send(msg);
            }
        }
        while let Some(apply) = rep.poll_apply() {
            let (store, events) = (store.clone(), tx.clone());
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.apply_remote(&apply.origin, &apply.entries) {
                    tracing::warn!(origin = %apply.origin, error = %e, "applying replicated entries failed; will retry");
                }
                let _ = events.send(Ev::Applied(apply.origin));
            });
        }
        while let Some(event) = rep.poll_event() {
            tracing::debug!(?event, "replication event");
            if let Event::OwnLogBehind { peer, ours, theirs } = &event {
                if own_target == 0 {
                    tracing::warn!(
                        peer = %peer, ours, theirs,
                        "this region's own log is behind what a peer holds of it (restored from \
                         an old backup?): refusing writes until it has caught up"
                    );
                }
                own_target = own_target.max(*theirs);
                rep.set_accept_own_entries(true);
                store.refuse_writes(format!(
                    "this region is recovering its own log (it holds its changes up to {ours}, \
                     region {peer} holds them up to {theirs}); writes are refused until it has \
                     caught up; retry, or write to another region"
                ));
            }
            if let Event::Diverged { peer, .. } | Event::DigestMatched { peer } = &event {
                observed
                    .entry(peer.clone())
                    .or_default()
                    .digest_event(&event);
            }
        }
        lookups.retain(|_, (_, reply)| !reply.is_closed());
        queued.retain(|(request, _)| lookups.contains_key(request));
        // Answer the quorum waits that are met; forget those whose caller gave up.
        let region = rep.region().to_string();
        let mut i = 0;
        while i < waiters.len() {
            let (target, size, reply) = &waiters[i];
            if rep.durable_count(&region, *target) >= *size {
                let (_, _, reply) = waiters.swap_remove(i);
                let _ = reply.send(true);
            } else if reply.is_closed() {
                waiters.swap_remove(i);
            } else {
                i += 1;
            }
        }
        let statuses = rep.peer_status(now());
        if own_target > 0 && rep.hwm().get(rep.region()).copied().unwrap_or(0) >= own_target {
            tracing::info!(
                mark = own_target,
                "own log recovered; writes are taken again"
            );
            own_target = 0;
            recoveries += 1;
            rep.set_accept_own_entries(false);
            if !starting {
                store.open_writes();
            }
        }
        for p in statuses.iter().filter(|p| p.greeted) {
            waiting_for.remove(&p.peer);
        }
        if starting && (waiting_for.is_empty() || start.elapsed() >= settings.start_hold) {
            if !waiting_for.is_empty() {
                tracing::warn!(
                    missing = ?waiting_for,
                    "start hold over without a report from every peer: taking writes"
                );
            }
            starting = false;
            if own_target == 0 {
                store.open_writes();
            }
        }
        let peers: Vec<Value> = statuses
            .iter()
            .map(|p| {
                let w = observed.entry(p.peer.clone()).or_default();
                let traffic = w.traffic();
                json!({
                    "peer": p.peer, "connected": p.connected, "has": p.has,
                    "behind_changes": p.behind_changes,
                    "oldest_unacked_ms": p.oldest_unacked_age, "in_flight": p.in_flight,
                    "sent_entries": p.sent_entries, "forwarded_entries": p.forwarded_entries,
                    "received_entries": p.received_entries,
                    "duplicate_entries": p.duplicate_entries, "retransmits": p.retransmits,
                    "bytes_sent": traffic.bytes_sent, "bytes_received": traffic.bytes_received,
                    "diverged": w.diverged, "digests_compared": w.digests_compared,
                    "digests_matched": w.digests_matched, "divergences": w.divergences,
                    "last_contact_ms": w.last_contact.map(|t| t.elapsed().as_millis() as u64),
                })
            })
            .collect();
        housekeeping.run(&store, &rep, &statuses, &settings, &tx);
        if let Ok(mut s) = status.lock() {
            *s = json!({
                "region": rep.region(), "hwm": rep.hwm(), "floor": store.log_floor(),
                "peers": peers,
                "snapshots": snapshot_stats.lock().map(|s| s.to_json()).unwrap_or_default(),
                "snapshot_in_progress": rep.snapshot_in_progress().map(|(p, since)| {
                    json!({"from": p, "for_ms": now().saturating_sub(*since)})
                }),
                "writes_refused": store.writes_refused(),
                "failed_connections": transport.failed_connections(),
                "own_log_recoveries": recoveries,
                "quarantined": store.quarantined_count(),
            });
        }
    }
    transport.close();
}

/// The periodic work of a region's store that depends on what the peers reported: collecting
/// tombstones and removed memberships every region has seen, and truncating the log. Each job
/// runs on the blocking pool, one at a time, and never blocks the replication loop.
struct Housekeeping {
    tombstones: Job,
    memberships: Job,
    truncation: Job,
}

/// One periodic job: when it runs next, and whether it is running.
struct Job {
    every: Duration,
    next: Instant,
    running: Arc<std::sync::atomic::AtomicBool>,
}

impl Job {
    fn new(every: Duration) -> Job {
        Job {
            every,
            next: Instant::now() + every,
            running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Is it time (and not already running)? Then it is marked running until `done` drops.
    fn due(&mut self) -> Option<RunningGuard> {
        use std::sync::atomic::Ordering;
        if self.every.is_zero()
            || Instant::now() < self.next
            || self.running.load(Ordering::Acquire)
        {
            return None;
        }
        self.next = Instant::now() + self.every;
        self.running.store(true, Ordering::Release);
        Some(RunningGuard(self.running.clone()))
    }
}

/// Clears a job's running flag when dropped (its task ended, successfully or not).
struct RunningGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl Housekeeping {
    fn new(s: &Settings) -> Housekeeping {
        Housekeeping {
            tombstones: Job::new(s.tombstone_gc),
            memberships: Job::new(s.membership_gc),
            truncation: Job::new(s.truncate),
        }
    }

    fn run(
        &mut self,
        store: &Arc<Store>,
        rep: &Replicator,
        statuses: &[crate::replication::protocol::PeerStatus],
        settings: &Settings,
        events: &mpsc::UnboundedSender<Ev>,
    ) {
        if let Some(guard) = self.tombstones.due() {
            let cluster = known_cluster(store, settings, statuses);
            let reported = |r: &String| {
                r == store.region() || statuses.iter().any(|p| p.peer == *r && !p.has.is_empty())
            };
            let complete = cluster.iter().all(reported);
            if let Some(seen) = seen_everywhere(rep.hwm(), statuses).filter(|_| complete) {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    let _guard = guard;
                    match store.collect_tombstones(&seen) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            collected = n,
                            "collected tombstones every region has seen"
                        ),
                        Err(e) => tracing::warn!(error = %e, "collecting tombstones failed"),
                    }
                    match store.collect_offboardings(&seen) {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(
                            collected = n,
                            "offboardings every region has seen are no longer pending"
                        ),
                        Err(e) => tracing::warn!(error = %e, "collecting offboardings failed"),
                    }
                });
            }
        }
        if let Some(guard) = self.memberships.due() {
            let reports: std::collections::BTreeMap<String, Report> = statuses
                .iter()
                .filter_map(|p| {
                    let (marks, allocated) = p.status.clone()?;
                    Some((p.peer.clone(), Report { marks, allocated }))
                })
                .collect();
            let cluster: Vec<String> = known_cluster(store, settings, statuses)
                .into_iter()
                .collect();
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let _guard = guard;
                let allocated = store.last_local_seq();
                match store.collect_memberships(allocated, &reports, &cluster) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(collected = n, "collected removed memberships"),
                    Err(e) => tracing::warn!(error = %e, "collecting removed memberships failed"),
                }
            });
        }
        if let Some(guard) = self.truncation.due() {
            // Every region ever known counts; one without a report holds the log back (up to
            // log_max_entries).
            let peers: Vec<Option<&crate::replication::wire::Hwm>> =
                known_cluster(store, settings, statuses)
                    .iter()
                    .filter(|r| r.as_str() != store.region())
                    .map(|r| {
                        statuses
                            .iter()
                            .find(|p| p.peer == *r && !p.has.is_empty())
                            .map(|p| &p.has)
                    })
                    .collect();
            let floors = needs::truncation(
                rep.hwm(),
                &store.log_floor(),
                &peers,
                settings.log_keep_entries,
                settings.log_max_entries,
            );
            if !floors.is_empty() {
                let (store, events) = (store.clone(), events.clone());
                tokio::task::spawn_blocking(move || {
                    let _guard = guard;
                    match store.truncate_log(&floors) {
                        Ok(n) if n > 0 => {
                            tracing::debug!(floors = ?floors, "truncated the replication log");
                            // The new floors go out with the next Status.
                            let _ = events.send(Ev::Local);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "truncating the log failed"),
                    }
                });
            }
        }
    }
}

/// Every region this one knows of: its own, the configured peers, every peer that ever
/// connected (kept in the store) and every origin its log has entries of.
fn known_cluster(
    store: &Store,
    settings: &Settings,
    statuses: &[crate::replication::protocol::PeerStatus],
) -> std::collections::BTreeSet<String> {
    let mut all: std::collections::BTreeSet<String> = settings.cluster.iter().cloned().collect();
    all.extend(store.known_regions().unwrap_or_default());
    all.extend(store.log_hwm().into_keys());
    all.extend(statuses.iter().map(|p| p.peer.clone()));
    all
}

/// Per origin, the lowest mark among this region and every peer it knows (the regions of its
/// config and any that connected): what every region has seen. `None` while some peer has not
/// told its marks yet (it may lack anything).
fn seen_everywhere(
    own: &crate::replication::wire::Hwm,
    peers: &[crate::replication::protocol::PeerStatus],
) -> Option<crate::replication::wire::Hwm> {
    if peers.iter().any(|p| p.has.is_empty()) {
        return None;
    }
    Some(
        own.iter()
            .map(|(origin, mark)| {
                let low = peers
                    .iter()
                    .map(|p| p.has.get(origin).copied().unwrap_or(0))
                    .fold(*mark, u64::min);
                (origin.clone(), low)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::protocol::PeerStatus;

    fn peer(name: &str, has: &[(&str, u64)]) -> PeerStatus {
        PeerStatus {
            peer: name.into(),
            connected: true,
            greeted: true,
            has: has.iter().map(|(o, s)| (o.to_string(), *s)).collect(),
            behind_changes: 0,
            oldest_unacked_age: None,
            in_flight: 0,
            sent_entries: 0,
            forwarded_entries: 0,
            received_entries: 0,
            duplicate_entries: 0,
            retransmits: 0,
            floor: Default::default(),
            status: None,
        }
    }

    #[test]
    fn what_every_region_has_seen_is_the_lowest_mark_and_unknown_until_every_peer_told() {
        let own: crate::replication::wire::Hwm =
            [("a".to_string(), 10), ("b".to_string(), 4)].into();
        let peers = [peer("b", &[("a", 7), ("b", 4)]), peer("c", &[("a", 9)])];
        let seen = seen_everywhere(&own, &peers).unwrap();
        assert_eq!(seen, [("a".to_string(), 7), ("b".to_string(), 0)].into());
        let silent = [peer("b", &[("a", 7)]), peer("c", &[])];
        assert_eq!(seen_everywhere(&own, &silent), None);
    }
}

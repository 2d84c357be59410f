//! Snapshot transfer between two regions' runtimes: the sender streams its store's state
//! ([`Store::snapshot`]) over the replication connection, the receiver merges it chunk by chunk
//! and raises its marks at the end. The protocol core decides *that* a snapshot is needed
//! ([`super::Event::SnapshotRequested`]); this module moves the bytes.
//!
//! Flow control: the sender keeps at most `window` chunks unacknowledged; the receiver
//! acknowledges a chunk once it is durably merged. Memory on both sides is therefore bounded
//! by `window × chunk_bytes`, whatever the size of the state. The producer reads one RocksDB
//! snapshot on a blocking thread and waits (a bounded channel) while the window is full.
//!
//! A connection that drops ends both sides' sessions; the receiver asks again later (what it
//! merged so far stays: merging it again is harmless).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::wire::{Message, MessageV1};
use crate::store::Store;

/// What the runtime shows of snapshots (in `/health` and `/metrics`).
#[derive(Debug, Default, Clone)]
pub struct SnapshotStats {
    /// Snapshots sent to peers, completely.
    pub sent: u64,
    /// Snapshots received and applied, completely.
    pub received: u64,
    /// Snapshots started (either way) that did not complete.
    pub abandoned: u64,
    /// The last completed snapshot received: items merged, bytes, milliseconds.
    pub last_received: Option<(u64, u64, u64)>,
    /// The last completed snapshot sent: items, bytes, milliseconds.
    pub last_sent: Option<(u64, u64, u64)>,
    /// The snapshot being received: chunks, items and bytes applied so far (progress of a
    /// bootstrap, which may take minutes).
    pub receiving: Option<(u64, u64, u64)>,
}

impl SnapshotStats {
    pub fn to_json(&self) -> Value {
        let last = |l: &Option<(u64, u64, u64)>| {
            l.map(|(items, bytes, ms)| json!({"items": items, "bytes": bytes, "ms": ms}))
        };
        json!({
            "sent": self.sent, "received": self.received, "abandoned": self.abandoned,
            "last_received": last(&self.last_received), "last_sent": last(&self.last_sent),
            "receiving": self.receiving.map(|(chunks, items, bytes)| {
                json!({"chunks": chunks, "items": items, "bytes": bytes})
            }),
        })
    }
}

/// One snapshot to send: to whom, its id, the peer's outgoing queue, and the highest chunk the
/// receiver acknowledged so far.
pub struct Sending {
    pub peer: String,
    pub id: u64,
    pub out: mpsc::UnboundedSender<Message>,
    pub acked: watch::Receiver<u64>,
}

/// Stream a snapshot of `store` (see [`Sending`]), `chunk_bytes` per chunk and at most
/// `window` chunks unacknowledged.
pub fn send(
    store: Arc<Store>,
    sending: Sending,
    chunk_bytes: usize,
    window: u64,
    stats: Arc<Mutex<SnapshotStats>>,
) {
    let Sending {
        peer,
        id,
        out,
        mut acked,
    } = sending;
    let (chunks_tx, mut chunks_rx) = mpsc::channel::<Message>(2);
    let started = Instant::now();
    tokio::task::spawn_blocking({
        let peer = peer.clone();
        move || {
            let mut n = 0u64;
            let begin_tx = chunks_tx.clone();
            let result = store.snapshot(
                chunk_bytes,
                |hwm| {
                    begin_tx
                        .blocking_send(MessageV1::SnapshotBegin { id, hwm }.into())
                        .is_ok()
                },
                |items| {
                    n += 1;
                    chunks_tx
                        .blocking_send(MessageV1::SnapshotChunk { id, n, items }.into())
                        .is_ok()
                },
            );
            match result {
                Ok(()) => {
                    let _ =
                        chunks_tx.blocking_send(MessageV1::SnapshotEnd { id, chunks: n }.into());
                }
                Err(e) => tracing::warn!(peer = %peer, error = %e, "reading the snapshot failed"),
            }
        }
    });
    tokio::spawn(async move {
        let (mut items, mut bytes) = (0u64, 0u64);
        while let Some(msg) = chunks_rx.recv().await {
            let Message::V1(m) = &msg;
            let (chunk, end) = match m {
                MessageV1::SnapshotChunk { n, items: it, .. } => {
                    items += it.len() as u64;
                    bytes += it
                        .iter()
                        .map(|(_, k, v)| (k.len() + v.len()) as u64)
                        .sum::<u64>();
                    (*n, false)
                }
                MessageV1::SnapshotEnd { .. } => (0, true),
                _ => (0, false),
            };
            // The window: chunk n waits until n - window is acknowledged (a receiver silent
            // for a minute has given up).
            while chunk > 0 && *acked.borrow() + window < chunk {
                if !matches!(
                    tokio::time::timeout(IDLE, acked.changed()).await,
                    Ok(Ok(()))
                ) {
                    tracing::info!(peer = %peer, "snapshot abandoned: the receiver went away");
                    stats.lock().unwrap_or_else(|p| p.into_inner()).abandoned += 1;
                    return;
                }
            }
            if out.send(msg).is_err() {
                stats.lock().unwrap_or_else(|p| p.into_inner()).abandoned += 1;
                return;
            }
            if end {
                let ms = started.elapsed().as_millis() as u64;
                tracing::info!(peer = %peer, items, bytes, ms, "snapshot sent");
                let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                s.sent += 1;
                s.last_sent = Some((items, bytes, ms));
                return;
            }
        }
    });
}

/// A snapshot being received from one peer: its messages go through `queue`, applied in
/// order by one task.
pub struct Incoming {
    pub id: u64,
    pub queue: mpsc::UnboundedSender<Message>,
}

/// A receiver that hears nothing of its snapshot for this long gives up (and asks again).
const IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Start receiving snapshot `id` standing for `hwm` from `peer`: chunks are merged in order,
/// each acknowledged through `out` once durable; `done(ok)` is called at the end (or when the
/// session breaks, or stays silent for a minute).
pub fn receive(
    store: Arc<Store>,
    peer: String,
    id: u64,
    hwm: BTreeMap<String, u64>,
    out: mpsc::UnboundedSender<Message>,
    stats: Arc<Mutex<SnapshotStats>>,
    done: impl FnOnce(bool) + Send + 'static,
) -> Incoming {
    let (queue, mut rx) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        let started = Instant::now();
        tracing::info!(peer = %peer, marks = ?hwm, "receiving a snapshot");
        let mut session = Some(store.begin_snapshot(hwm));
        let (mut applied, mut items, mut bytes) = (0u64, 0u64, 0u64);
        loop {
            let Ok(Some(Message::V1(m))) = tokio::time::timeout(IDLE, rx.recv()).await else {
                break;
            };
            let Some(mut state) = session.take() else {
                break;
            };
            match m {
                MessageV1::SnapshotChunk {
                    n, items: chunk, ..
                } if n == applied + 1 => {
                    items += chunk.len() as u64;
                    bytes += chunk
                        .iter()
                        .map(|(_, k, v)| (k.len() + v.len()) as u64)
                        .sum::<u64>();
                    let store = store.clone();
                    let r = tokio::task::spawn_blocking(move || {
                        let r = store.apply_snapshot(&mut state, &chunk);
                        (r, state)
                    })
                    .await;
                    match r {
                        Ok((Ok((_, skipped)), state)) => {
                            if skipped > 0 {
                                tracing::warn!(peer = %peer, skipped, "snapshot items this version cannot read");
                            }
                            session = Some(state);
                            applied = n;
                            stats.lock().unwrap_or_else(|p| p.into_inner()).receiving =
                                Some((applied, items, bytes));
                            let _ = out.send(MessageV1::SnapshotAck { id, n }.into());
                        }
                        Ok((Err(e), _)) => {
                            tracing::warn!(peer = %peer, error = %e, "applying a snapshot chunk failed");
                            break;
                        }
                        Err(_) => break,
                    }
                }
                MessageV1::SnapshotEnd { chunks, .. } if chunks == applied => {
                    let store = store.clone();
                    let r = tokio::task::spawn_blocking(move || store.finish_snapshot(state)).await;
                    if matches!(r, Ok(Ok(()))) {
                        let ms = started.elapsed().as_millis() as u64;
                        tracing::info!(peer = %peer, items, bytes, ms, "snapshot applied");
                        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                        s.received += 1;
                        s.last_received = Some((items, bytes, ms));
                        s.receiving = None;
                        drop(s);
                        done(true);
                        return;
                    }
                    break;
                }
                _ => break,
            }
        }
        tracing::warn!(peer = %peer, applied, "snapshot incomplete; it will be asked for again");
        {
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.abandoned += 1;
            s.receiving = None;
        }
        done(false);
    });
    Incoming { id, queue }
}

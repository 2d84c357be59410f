//! Receiving: messages from peers (hellos, reports, entries, needs), holding entries until
//! their predecessors are in, handing them to the store in order, and asking again for gaps.

use super::*;

impl Replicator {
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
    pub(super) fn report(&mut self, peer: &str, incarnation: u64, hwm: &Hwm, now: Millis) {
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

    pub(super) fn on_entries(
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

    pub(super) fn on_need(&mut self, peer: &str, origin: &str, from: u64) {
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
    pub(super) fn set_has(&mut self, peer: &str, hwm: &Hwm, exact: bool, now: Millis) {
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

    /// Learn the log's marks (they only rise) and floors.
    pub(super) fn refresh(&mut self, now: Millis, log: &dyn Log) {
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
    pub(super) fn release(&mut self, origin: &str) {
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
    pub(super) fn check_gap(&mut self, origin: &str, now: Millis) {
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

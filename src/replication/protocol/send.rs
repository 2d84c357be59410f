//! Sending: the timers (resends with backoff, status and digest adverts) and filling each
//! peer's window with the entries it lacks: its own origin's and, when the direct path fails,
//! forwarded ones.

use super::*;

impl Replicator {
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
    pub(super) fn fill(&mut self, now: Millis, log: &dyn Log) -> bool {
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
}

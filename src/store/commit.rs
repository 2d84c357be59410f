//! Local sequence numbers, log entries and the commit of a batch: the marks, the heads digest
//! and the fillers that keep a failed write from leaving a hole in this region's log.

use super::*;

impl Store {
    /// Hand out the next local sequence number. It must then reach [`Store::commit`] or
    /// [`Store::commit_staged`] (which writes a filler if the write fails), or the log keeps a
    /// hole until the next start.
    pub(super) fn alloc_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// [`Store::alloc_seq`] for a write that must not go on once writes are refused: a write
    /// that passed the gate just before it closed gives its number up (left as a hole, which
    /// recovery fills with the cluster's entry, or [`Store::open_writes`] with a filler).
    pub(super) fn alloc_checked(&self) -> Result<u64, StoreError> {
        let seq = self.alloc_seq();
        if let Some(reason) = self.writes_refused() {
            self.abandoned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(seq);
            return Err(StoreError::Scim(ScimError::Unavailable(reason)));
        }
        Ok(seq)
    }

    /// Stage log entry `seq` of this region.
    pub(super) fn put_log(
        &self,
        batch: &mut WriteBatch,
        seq: u64,
        entry: &LogEntry,
    ) -> Result<(), StoreError> {
        batch.put_cf(
            self.cf(CF_LOG),
            keys::log(&self.region, seq),
            entry.encode(),
        );
        let region = self.region.clone();
        self.stage_event(batch, &region, seq, entry)
    }

    /// Stage this write's replication log entry (a document change only, with what the write
    /// meant when an API request made it, at `at` milliseconds); returns its sequence number,
    /// which must then go through [`Store::commit`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_log(
        &self,
        batch: &mut WriteBatch,
        (tenant, kind, id): (&str, ResourceKind, &str),
        change: &[u8],
        intent: Option<crate::events::Intent>,
        at: i64,
    ) -> Result<u64, StoreError> {
        let seq = self.alloc_checked()?;
        let entry = LogEntry {
            tenant: tenant.into(),
            kind,
            id: id.into(),
            change: change.to_vec(),
            at: if intent.is_some() { at } else { 0 },
            intent,
            ..LogEntry::default()
        };
        if let Err(e) = self.put_log(batch, seq, &entry) {
            self.write_fillers(&[seq]);
            return Err(e);
        }
        Ok(seq)
    }

    /// Commit a batch staged for local entries `seqs`, or, when staging failed, write fillers
    /// in their place (so the log has no hole) and return the staging error.
    pub(super) fn commit_staged(
        &self,
        batch: WriteBatch,
        seqs: &[u64],
        staged: Result<(), StoreError>,
        delta: [u8; 32],
    ) -> Result<(), StoreError> {
        match staged {
            Ok(()) => self.commit(batch, seqs, None, delta),
            Err(e) => {
                self.write_fillers(seqs);
                Err(e)
            }
        }
    }

    /// Record this region's own contiguous mark once it has risen (after the commit that
    /// raised it: a batch cannot know it beforehand, while lower sequence numbers may still be
    /// committing). Not synced: a crash loses at most this hint, and start-up reads the few
    /// entries above the last persisted value. Snapshots and truncation read it, so it must
    /// not lag behind for long.
    pub(super) fn persist_own_mark(&self) {
        let own = self.marks.hwm().get(&self.region).copied().unwrap_or(0);
        if self.persisted_own.fetch_max(own, Ordering::AcqRel) < own {
            let mut batch = WriteBatch::default();
            batch.merge_cf(
                self.cf(CF_META),
                log::mark_key(&self.region),
                own.to_be_bytes(),
            );
            let _ = self.db.write_opt(batch, &WriteOptions::default());
        }
    }

    /// Empty entries for local sequence numbers that will never carry a write.
    pub(super) fn write_fillers(&self, seqs: &[u64]) {
        let mut filler = WriteBatch::default();
        for seq in seqs {
            filler.put_cf(self.cf(CF_LOG), keys::log(&self.region, *seq), b"");
        }
        if self.db.write_opt(filler, &self.write_opts).is_ok() {
            for seq in seqs {
                self.marks.committed(&self.region, *seq);
            }
            self.persist_own_mark();
        }
    }

    /// Stage a document's bytes (`bytes`, else the whole saved document) and its heads-digest
    /// delta from `before`; returns the delta, which [`Store::commit`] applies in memory.
    pub(super) fn stage_doc(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        before: [u8; 32],
        doc: &mut AutoCommit,
        bytes: Option<&[u8]>,
    ) -> [u8; 32] {
        match bytes {
            Some(b) => batch.put_cf(self.cf(CF_DOCS), key, b),
            None => batch.put_cf(self.cf(CF_DOCS), key, doc.save()),
        }
        let mut delta = before;
        xor_into(&mut delta, &heads_term(key, doc));
        batch.merge_cf(self.cf(CF_META), DIGEST_KEY, delta);
        delta
    }

    /// Write a batch holding the local log entries `local` and the remote entries `remote`
    /// (origin, sequence numbers), then move the marks and the in-memory heads digest together.
    /// On failure a local sequence number would be a hole that stops replication of this
    /// origin, so an empty filler entry takes its place (and `open` fills any hole a crash left).
    pub(super) fn commit(
        &self,
        mut batch: WriteBatch,
        local: &[u64],
        remote: Option<(&str, &[u64])>,
        delta: [u8; 32],
    ) -> Result<(), StoreError> {
        // The marks go into `meta` with the entries they count (a maximum, so batches that
        // commit out of order never lower them). For this region's own origin the value is a
        // lower bound (entries above it may be committing); start-up reads the few above.
        let meta = self.cf(CF_META);
        if let Some((origin, seqs)) = remote {
            if let Some(last) = seqs.iter().max() {
                batch.merge_cf(meta, log::mark_key(origin), last.to_be_bytes());
            }
        }
        if !local.is_empty() {
            let own = self.marks.hwm().get(&self.region).copied().unwrap_or(0);
            batch.merge_cf(meta, log::mark_key(&self.region), own.to_be_bytes());
        }
        match self.db.write_opt(batch, &self.write_opts) {
            Ok(()) => {
                {
                    let mut digest = self.digest.lock().unwrap_or_else(|p| p.into_inner());
                    xor_into(&mut digest, &delta);
                    for seq in local {
                        self.marks.committed(&self.region, *seq);
                    }
                    if let Some((origin, seqs)) = remote {
                        for seq in seqs {
                            self.marks.committed(origin, *seq);
                        }
                    }
                }
                if !local.is_empty() {
                    self.persist_own_mark();
                }
                self.announce_events();
                if !local.is_empty() {
                    if let Some(notify) = self.on_commit.get() {
                        notify();
                    }
                }
                Ok(())
            }
            Err(e) => {
                if !local.is_empty() {
                    self.write_fillers(local);
                }
                Err(e.into())
            }
        }
    }
}

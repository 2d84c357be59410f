//! Conflict records: indexed in the `conflicts` column family, counted, queried.

use super::*;

/// Conflict records the live feed keeps in memory. It only has to cover what a stream reads
/// between two looks (a fraction of a second), even when a healed partition indexes hundreds at
/// once; a stream that falls further behind is told to read the log again.
pub const FEED_CAPACITY: usize = 4096;

/// The last [`FEED_CAPACITY`] conflict records this process indexed, each with its position
/// (1, 2, …): the dashboard's live feed follows it without scanning the log.
#[derive(Default)]
pub(super) struct Feed {
    inner: std::sync::Mutex<(u64, std::collections::VecDeque<(u64, Conflict)>)>,
}

impl Feed {
    fn push(&self, records: &[Conflict]) {
        if records.is_empty() {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (last, items) = &mut *g;
        for r in records {
            *last += 1;
            items.push_back((*last, r.clone()));
            if items.len() > FEED_CAPACITY {
                items.pop_front();
            }
        }
    }

    fn after(&self, after: u64) -> (Option<Vec<Conflict>>, u64) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (last, items) = &*g;
        if after >= *last {
            return (Some(Vec::new()), *last);
        }
        let oldest = items.front().map_or(*last + 1, |(n, _)| *n);
        if after + 1 < oldest {
            return (None, *last);
        }
        let out = items
            .iter()
            .filter(|(n, _)| *n > after)
            .map(|(_, c)| c.clone())
            .collect();
        (Some(out), *last)
    }
}

impl Store {
    /// Stage the index entries of a conflict record this region does not hold yet; returns
    /// whether it was new.
    pub(super) fn stage_record(
        &self,
        batch: &mut WriteBatch,
        record: &Conflict,
    ) -> Result<bool, StoreError> {
        let by_id = keys::conflict_by_id(&record.id);
        if self
            .db
            .get_pinned_cf(self.cf(CF_CONFLICTS), &by_id)?
            .is_some()
        {
            return Ok(false);
        }
        let by_time = keys::conflict_by_time(&record.at, &record.id);
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.put_cf(self.cf(CF_CONFLICTS), &by_id, &by_time);
        batch.put_cf(self.cf(CF_CONFLICTS), &by_time, json);
        Ok(true)
    }

    /// [`Store::commit`] a batch that staged the conflict records `indexed`, then count and
    /// show the ones it was the first to index. Staging only sees what is already committed, so
    /// a record can be staged by two batches at once (two peers forwarding the same decision,
    /// or a decision this region finds while applying the entry that logs it); the check is
    /// repeated here under one lock with the write, so each record is counted once.
    pub(super) fn commit_indexing(
        &self,
        batch: WriteBatch,
        local: &[u64],
        remote: Option<(&str, &[u64])>,
        delta: [u8; 32],
        indexed: &mut Vec<Conflict>,
    ) -> Result<(), StoreError> {
        if indexed.is_empty() {
            return self.commit(batch, local, remote, delta);
        }
        let _g = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        let mut first = Vec::with_capacity(indexed.len());
        for record in indexed.drain(..) {
            if !seen.insert(record.id.clone()) {
                continue;
            }
            let by_id = keys::conflict_by_id(&record.id);
            if self
                .db
                .get_pinned_cf(self.cf(CF_CONFLICTS), &by_id)?
                .is_none()
            {
                first.push(record);
            }
        }
        *indexed = first;
        self.commit(batch, local, remote, delta)?;
        self.count_indexed(indexed);
        Ok(())
    }

    /// Count conflict records indexed by a committed batch, and show them in the live feed.
    fn count_indexed(&self, records: &[Conflict]) {
        for record in records {
            if let Some(i) = Rule::ALL.iter().position(|r| *r == record.rule) {
                self.conflicts_indexed[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.feed.push(records);
    }

    /// Conflict records indexed after feed position `after` (oldest first), and the position
    /// to ask from next. `None` when some of them already left the feed (the reader fell more
    /// than [`FEED_CAPACITY`] records behind): read the log again, from [`Store::conflicts`].
    pub fn conflicts_after(&self, after: u64) -> (Option<Vec<Conflict>>, u64) {
        self.feed.after(after)
    }

    /// The feed position of the last record indexed (0: none since this process started).
    pub fn feed_position(&self) -> u64 {
        self.feed.after(u64::MAX).1
    }

    /// Conflict records this process has indexed, per rule (for `/metrics`).
    pub fn conflicts_indexed(&self) -> Vec<(Rule, u64)> {
        Rule::ALL
            .iter()
            .zip(&self.conflicts_indexed)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Stored conflict records matching `q`, oldest first, and how many match in all.
    pub fn conflicts(&self, q: &ConflictQuery) -> Result<(usize, Vec<Conflict>), StoreError> {
        let mut total = 0;
        let mut page = Vec::new();
        let skip = q.start_index.max(1) - 1;
        let prefix = keys::CONFLICT_BY_TIME;
        for r in self.db.iterator_cf(
            self.cf(CF_CONFLICTS),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(prefix) {
                break;
            }
            let c: Conflict = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("conflict record: {e}")))?;
            let keep = q.tenant.as_ref().is_none_or(|t| *t == c.tenant)
                && q.rule.is_none_or(|r| r == c.rule)
                && q.resource_id.as_ref().is_none_or(|id| *id == c.resource_id)
                && q.since.as_ref().is_none_or(|s| c.at.as_str() >= s.as_str())
                && q.until.as_ref().is_none_or(|u| c.at.as_str() < u.as_str());
            if !keep {
                continue;
            }
            if total >= skip && page.len() < q.count {
                page.push(c);
            }
            total += 1;
        }
        Ok((total, page))
    }
}

#[cfg(test)]
mod feed_tests {
    use super::*;

    fn record(id: &str) -> Conflict {
        Conflict {
            id: id.into(),
            tenant: "t".into(),
            resource_type: "User".into(),
            resource_id: "u".into(),
            attribute: "active".into(),
            rule: Rule::StickyDeactivation,
            values: Vec::new(),
            outcome: Value::Bool(false),
            at: "2025-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn the_feed_hands_out_what_came_after_a_position_and_says_when_it_lost_some() {
        let feed = Feed::default();
        assert_eq!(feed.after(0), (Some(Vec::new()), 0));
        feed.push(&[record("a"), record("b")]);
        let (got, next) = feed.after(0);
        assert_eq!(got.unwrap().len(), 2);
        assert_eq!(next, 2);
        let (got, _) = feed.after(1);
        assert_eq!(got.unwrap()[0].id, "b");
        let many: Vec<Conflict> = (0..FEED_CAPACITY + 5)
            .map(|i| record(&i.to_string()))
            .collect();
        feed.push(&many);
        let (lost, next) = feed.after(2);
        assert_eq!(lost, None, "the reader fell too far behind");
        assert_eq!(next, 2 + many.len() as u64);
        let (recent, _) = feed.after(next - 3);
        assert_eq!(recent.unwrap().len(), 3);
    }
}

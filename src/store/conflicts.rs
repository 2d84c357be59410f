//! Conflict records: indexed in the `conflicts` column family, counted, queried.

use super::*;

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

    /// Count conflict records indexed by a committed batch.
    pub(super) fn count_indexed(&self, rules: &[Rule]) {
        for rule in rules {
            if let Some(i) = Rule::ALL.iter().position(|r| r == rule) {
                self.conflicts_indexed[i].fetch_add(1, Ordering::Relaxed);
            }
        }
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

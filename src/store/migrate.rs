//! Storage format migrations, run at open. Each step rewrites a folder of the previous format
//! in place and records the new format last, so a step interrupted by a crash simply runs
//! again at the next start.
//!
//! # Format 2 → 3
//! Format 2 kept a group's members inside its document (`a.members`, one remove-wins entry
//! per member) and in its materialised view; format 3 keeps one record per membership
//! (`store::members`), per-tenant counts, and the replication marks in `meta`.
//! 1. Derived state format 3 adds is cleared (the `members` and `counts` families, membership
//!    index entries), and the heads digest is restored from the copy the first attempt kept.
//! 2. Every group document's members map becomes records ([`doc::legacy_members`]), indexed,
//!    counted and added to the heads digest; its view is re-materialised without members.
//!    The documents themselves are not changed, so their versions (ETags) stay, and two
//!    regions that migrated at different points still merge (the records say what the merged
//!    members maps would have said).
//! 3. Resource counts are counted once from the views.
//! 4. The marks move to `meta`, and the log is truncated at them: its entries carry format-2
//!    member changes that format 3 does not replay. A region that needs older entries gets a
//!    snapshot instead.
//!
//! Upgrade a cluster by stopping every region, then starting each on the new build: the new
//! protocol version refuses to talk to old builds.

use super::*;

/// Where the heads digest of documents alone is kept while a migration runs.
const DIGEST_BEFORE: &[u8] = b"digest2";

impl Store {
    /// Migrate a format-2 folder (see the module docs).
    pub(super) fn migrate_from_2(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let meta = self.cf(CF_META);
        // 1. A clean slate for what format 3 derives.
        match self.db.get_cf(meta, DIGEST_BEFORE)? {
            Some(d) => self.db.put_cf(meta, DIGEST_KEY, d)?,
            None => {
                let d = self
                    .db
                    .get_cf(meta, DIGEST_KEY)?
                    .unwrap_or_else(|| vec![0; 32]);
                self.db.put_cf(meta, DIGEST_BEFORE, d)?;
            }
        }
        for cf in [CF_MEMBERS, CF_COUNTS] {
            self.db
                .delete_range_cf(self.cf(cf), b"".as_slice(), [0xffu8; 8].as_slice())?;
        }
        let mut stale = WriteBatch::default();
        for r in self.db.iterator_cf(self.cf(CF_INDEX), IteratorMode::Start) {
            let (k, _) = r?;
            let second = k.split(|b| *b == 0).nth(1);
            if matches!(second, Some(b"~member") | Some(b"~listed")) {
                stale.delete_cf(self.cf(CF_INDEX), &k);
            }
        }
        self.db.write_opt(stale, &self.write_opts)?;
        for r in self
            .db
            .iterator_cf(meta, IteratorMode::From(b"mgc\0", Direction::Forward))
        {
            let (k, _) = r?;
            if !k.starts_with(b"mgc\0") {
                break;
            }
            self.db.delete_cf(meta, &k)?;
        }

        // 2. Members maps become records; group views lose their members.
        let marks = self.marks.hwm();
        let mut groups = 0usize;
        let mut records = 0usize;
        let docs: Vec<(Vec<u8>, Vec<u8>)> = self
            .db
            .iterator_cf(self.cf(CF_DOCS), IteratorMode::Start)
            .filter_map(|r| match r {
                Ok((k, v)) if v.as_ref() != COLLECTED => {
                    let parts: Vec<&[u8]> = k.split(|b| *b == 0).collect();
                    (parts.len() == 3 && parts[1] == b"Group").then(|| (k.to_vec(), v.to_vec()))
                }
                _ => None,
            })
            .collect();
        for (key, bytes) in docs {
            let parts: Vec<String> = key
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let (tenant, id) = (&parts[0], &parts[2]);
            let mut doc = AutoCommit::load(&bytes)?;
            let legacy = doc::legacy_members(&mut doc)?;
            let mut batch = WriteBatch::default();
            let mut m = Merge::default();
            if self.get(tenant, ResourceKind::Group, id)?.is_some() && !doc::is_deleted(&doc) {
                let view = doc::materialize(&mut doc, ResourceKind::Group)?;
                batch.put_cf(
                    self.cf(CF_VIEWS),
                    keys::resource(tenant, ResourceKind::Group, id),
                    serde_json::to_vec(&view).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
            }
            for (member, record) in legacy {
                self.stage_membership(&mut batch, &mut m, tenant, id, &member, record, &marks)?;
                records += 1;
            }
            // Decisions visible in the members maps were recorded in the documents already.
            m.found.clear();
            self.db.write_opt(batch, &self.write_opts)?;
            groups += 1;
        }

        // 3. Counts, once.
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for r in self.db.iterator_cf(self.cf(CF_VIEWS), IteratorMode::Start) {
            let (k, _) = r?;
            let parts: Vec<&[u8]> = k.split(|b| *b == 0).collect();
            let kind = match parts.get(1) {
                Some(&b"User") => ResourceKind::User,
                Some(&b"Group") => ResourceKind::Group,
                _ => continue,
            };
            let (tenant, id) = (
                String::from_utf8_lossy(parts[0]).into_owned(),
                String::from_utf8_lossy(parts[2]).into_owned(),
            );
            let counts = self.cf(CF_COUNTS);
            batch.merge_cf(
                counts,
                keys::resource_count(&tenant, kind),
                1i64.to_le_bytes(),
            );
            batch.merge_cf(
                counts,
                keys::bucket_count(&tenant, kind, keys::bucket_of(&id)),
                1i64.to_le_bytes(),
            );
            n += 1;
            if n % 10_000 == 0 {
                self.db
                    .write_opt(std::mem::take(&mut batch), &self.write_opts)?;
            }
        }
        self.db.write_opt(batch, &self.write_opts)?;

        // 4. Marks into meta, the log truncated at them, and the new format last.
        let mut batch = WriteBatch::default();
        let log_cf = self.cf(CF_LOG);
        let mut floors = self.floors.lock().unwrap_or_else(|p| p.into_inner());
        for (origin, mark) in &marks {
            batch.put_cf(meta, log::mark_key(origin), mark.to_be_bytes());
            batch.put_cf(meta, log::floor_key(origin), (mark + 1).to_be_bytes());
            batch.delete_range_cf(log_cf, keys::log(origin, 0), keys::log(origin, mark + 1));
            floors.insert(origin.clone(), mark + 1);
        }
        batch.delete_cf(meta, DIGEST_BEFORE);
        batch.put_cf(meta, b"format", FORMAT_VERSION);
        self.db.write_opt(batch, &self.write_opts)?;
        drop(floors);
        if let Some(v) = self.db.get_cf(meta, DIGEST_KEY)? {
            if let Ok(d) = <[u8; 32]>::try_from(&v[..]) {
                *self.digest.lock().unwrap_or_else(|p| p.into_inner()) = d;
            }
        }
        tracing::info!(
            groups,
            records,
            resources = n,
            ms = started.elapsed().as_millis() as u64,
            "migrated storage format 2 to 3 (memberships as records, marks in meta)"
        );
        Ok(())
    }
}

//! Tombstones: deletes every region has seen are collected (their Automerge history dropped,
//! their key kept, so the id is never reused and late changes are dropped).

use super::*;

/// The meta key of a tombstone waiting to be collected.
pub(super) fn tomb_key(doc_key: &[u8]) -> Vec<u8> {
    let mut k = b"tomb\0".to_vec();
    k.extend_from_slice(doc_key);
    k
}

/// What a collected tombstone leaves in `docs`: an empty value. The key stays, so the id is
/// never reused and changes that still arrive for it are dropped (delete wins).
pub(super) const COLLECTED: &[u8] = b"";

/// A tombstone waiting for every region to see its delete.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Tomb {
    pub(super) tenant: String,
    pub(super) id: String,
    /// This region's marks when the delete took effect here: a region whose marks reach these
    /// holds every change this region had, the delete and its dependencies included.
    pub(super) marks: std::collections::BTreeMap<String, u64>,
}

impl Store {
    /// Is this document a collected tombstone?
    pub(super) fn is_collected(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_DOCS), key)?
            .is_some_and(|b| b.as_ref() == COLLECTED))
    }

    /// Remember a tombstone for collection (once: the first marks it was seen at are kept).
    pub(super) fn stage_tomb(
        &self,
        batch: &mut WriteBatch,
        key: &[u8],
        tenant: &str,
        id: &str,
        marks: &std::collections::BTreeMap<String, u64>,
    ) -> Result<(), StoreError> {
        let tk = tomb_key(key);
        if self.db.get_pinned_cf(self.cf(CF_META), &tk)?.is_some() {
            return Ok(());
        }
        let tomb = Tomb {
            tenant: tenant.into(),
            id: id.into(),
            marks: marks.clone(),
        };
        let json = serde_json::to_vec(&tomb).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        batch.put_cf(self.cf(CF_META), tk, json);
        Ok(())
    }

    /// Collect the tombstones every region has seen: `seen` is, per origin, the lowest mark
    /// among all regions of the cluster (this one included). A tombstone whose delete took
    /// effect here at marks that `seen` reaches is replaced by an empty value: its Automerge
    /// history goes, its key stays (the id is never reused, later changes for it are dropped,
    /// lookups answer nothing). The caller must pass marks of *every* region, or none: a region
    /// it does not know about may not have the delete. Returns how many were collected.
    pub fn collect_tombstones(
        &self,
        seen: &std::collections::BTreeMap<String, u64>,
    ) -> Result<usize, StoreError> {
        let prefix = b"tomb\0".to_vec();
        let mut ready = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            let tomb: Tomb = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("tombstone record: {e}")))?;
            let everywhere = tomb
                .marks
                .iter()
                .all(|(origin, mark)| seen.get(origin).is_some_and(|s| s >= mark));
            if everywhere {
                ready.push((k[prefix.len()..].to_vec(), k.to_vec(), tomb));
            }
        }
        let mut collected = 0;
        for (key, tk, tomb) in ready {
            let _g = lock(&self.id_locks[stripe((tomb.tenant.as_str(), tomb.id.as_str()))]);
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.cf(CF_META), &tk);
            match self.db.get_pinned_cf(self.cf(CF_DOCS), &key)? {
                Some(bytes) if bytes.as_ref() != COLLECTED => {
                    if !doc::is_deleted(&AutoCommit::load(&bytes)?) {
                        return Err(StoreError::Corrupt(
                            "a tombstone record for a live document".into(),
                        ));
                    }
                    batch.put_cf(self.cf(CF_DOCS), &key, COLLECTED);
                    collected += 1;
                }
                _ => {}
            }
            self.db.write_opt(batch, &self.write_opts)?;
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop(&key);
            if key == keys::resource(&tomb.tenant, ResourceKind::Group, &tomb.id) {
                // The group is gone everywhere: its memberships go with it.
                self.drop_group_memberships(&tomb.tenant, &tomb.id)?;
            }
        }
        Ok(collected)
    }
}

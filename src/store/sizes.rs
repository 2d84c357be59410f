//! What a data dir holds, per column family: for operators sizing a region and for the
//! benchmarks that divide disk bytes by users or memberships.
//!
//! A live data dir's size says little on its own: WAL files, superseded versions and
//! range-deleted log entries stay on disk until a compaction drops them. [`Store::compact`]
//! flushes and fully compacts every column family first, so its figures are the live data in
//! the format the server writes (the same options and merge operators as any other write).

use std::collections::BTreeMap;

use super::{Store, StoreError, ALL_CFS, CF_INDEX};

/// One column family after a full compaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CfSize {
    /// Bytes of its SST files (`rocksdb.total-sst-files-size`).
    pub sst_bytes: u64,
    /// RocksDB's estimate of its keys (`rocksdb.estimate-num-keys`).
    pub keys: u64,
}

impl Store {
    /// Flush and fully compact every column family (the bottommost level included), then read
    /// each one's size. Runs at full speed on the caller's thread and competes with requests
    /// for the disk: for a quiet region or a stopped data dir opened on its own.
    pub fn compact(&self) -> Result<BTreeMap<String, CfSize>, StoreError> {
        let mut out = BTreeMap::new();
        for name in ALL_CFS {
            let cf = self.cf(name);
            self.db.flush_cf(cf)?;
            let mut options = rocksdb::CompactOptions::default();
            options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            self.db
                .compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
            let int = |p: &str| self.db.property_int_value_cf(cf, p).ok().flatten();
            out.insert(
                name.to_string(),
                CfSize {
                    sst_bytes: int("rocksdb.total-sst-files-size").unwrap_or(0),
                    keys: int("rocksdb.estimate-num-keys").unwrap_or(0),
                },
            );
        }
        Ok(out)
    }

    /// Exact key counts and key + value bytes per column family; the index is split by kind of
    /// entry (`index User/userName`, `index ~member`, …: its key's second and third parts).
    /// Reads every key: for checks that two regions hold the same, not for monitoring.
    pub fn census(&self) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for name in ALL_CFS {
            for r in self
                .db
                .iterator_cf(self.cf(name), rocksdb::IteratorMode::Start)
            {
                let (k, v) = r?;
                let label = if *name == CF_INDEX {
                    let parts: Vec<&[u8]> = k.split(|b| *b == 0).collect();
                    let part =
                        |i: usize| String::from_utf8_lossy(parts.get(i).copied().unwrap_or(b""));
                    if part(1).starts_with('~') {
                        format!("index {}", part(1))
                    } else {
                        format!("index {}/{}", part(1), part(2))
                    }
                } else {
                    name.to_string()
                };
                let e = out.entry(label).or_default();
                e.0 += 1;
                e.1 += (k.len() + v.len()) as u64;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{open, user};

    #[test]
    fn compaction_reports_the_live_data_and_census_counts_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), "eu");
        let empty = store.compact().unwrap();
        assert_eq!(empty["docs"].sst_bytes, 0);
        for i in 0..20 {
            user(&store, &format!("u{i}@example.com"));
        }
        let sizes = store.compact().unwrap();
        assert!(sizes["docs"].sst_bytes > 0 && sizes["views"].sst_bytes > 0);
        let census = store.census().unwrap();
        assert_eq!(census["docs"].0, 20);
        assert_eq!(census["views"].0, 20);
        assert_eq!(census["index User/userName"].0, 20);
    }
}

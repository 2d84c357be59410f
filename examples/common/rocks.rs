//! Offline measurements of a stopped region's data dir: its size as `du -sb` counts it, and,
//! through the store's own `compact` and `census` (the server's options and merge operators),
//! the SST bytes and keys of each column family after a full compaction, so a figure per user
//! or per membership is the live data, not WAL files, superseded versions or range-deleted log
//! entries waiting for a compaction.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

pub use geoscim::store::CfSize;
use geoscim::store::{Store, StoreOptions};

fn open(dir: &Path, region: &str) -> anyhow::Result<Store> {
    Ok(Store::open(
        dir,
        StoreOptions {
            region: region.into(),
            sync_writes: false,
            doc_cache_size: 16,
            io_statistics: false,
            history_entries: 1000,
            tenants: Default::default(),
        },
    )?)
}

/// Flush and fully compact every column family of region `region`'s stopped store in `dir`,
/// then read each one's SST size and key estimate.
pub fn compact_and_measure(dir: &Path, region: &str) -> anyhow::Result<BTreeMap<String, CfSize>> {
    Ok(open(dir, region)?.compact()?)
}

/// Exact key counts and key + value bytes of a stopped store, per column family and, in the
/// index, per kind of entry. Reads everything: for checks, not for every measurement.
pub fn census(dir: &Path, region: &str) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    Ok(open(dir, region)?.census()?)
}

/// Apparent size of every file under `dir` (what `du -sb` prints).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Total SST bytes over all column families.
pub fn total(sizes: &BTreeMap<String, CfSize>) -> u64 {
    sizes.values().map(|s| s.sst_bytes).sum()
}

/// Per column family, `after − before` SST bytes (may be negative).
pub fn delta(
    before: &BTreeMap<String, CfSize>,
    after: &BTreeMap<String, CfSize>,
) -> BTreeMap<String, i64> {
    after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).map_or(0, |b| b.sst_bytes);
            (name.clone(), a.sst_bytes as i64 - b as i64)
        })
        .collect()
}

//! Offline measurements of a stopped region's RocksDB data dir: its size as `du -sb` counts it,
//! and, after flushing and fully compacting every column family, the SST bytes and estimated
//! keys of each one (so a figure per user or per membership is the live data, not WAL files,
//! superseded versions or range-deleted log entries waiting for a compaction).
//!
//! Compacting needs the merge operators the store registers (`meta` and `counts` hold merge
//! operands). They are copied here from `src/store` (`log::meta_merge`, `counts_merge`,
//! `digest::xor_merge`), which are private to the crate: keep them in step. The database is
//! opened with the options `Store::open` uses (LZ4 on the DB options, default options per
//! column family), so the compacted files are what the server itself would write.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, MergeOperands, Options, DB};

/// One column family after a full compaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct CfSize {
    /// `rocksdb.total-sst-files-size`.
    pub sst_bytes: u64,
    /// `rocksdb.estimate-num-keys`.
    pub keys: u64,
}

fn xor_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut acc = [0u8; 32];
    for part in existing.into_iter().chain(operands) {
        for (a, b) in acc.iter_mut().zip(part) {
            *a ^= b;
        }
    }
    Some(acc.to_vec())
}

fn meta_merge(key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    if key.starts_with(b"mark\0") {
        let max = existing
            .into_iter()
            .chain(operands)
            .filter_map(|v| <[u8; 8]>::try_from(v).ok().map(u64::from_be_bytes))
            .max()
            .unwrap_or(0);
        return Some(max.to_be_bytes().to_vec());
    }
    xor_merge(key, existing, operands)
}

fn counts_merge(key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    if matches!(key.first(), Some(b'x' | b'r')) {
        return xor_merge(key, existing, operands);
    }
    let mut sum = 0i64;
    for part in existing.into_iter().chain(operands) {
        if let Ok(b) = <[u8; 8]>::try_from(part) {
            sum = sum.wrapping_add(i64::from_le_bytes(b));
        }
    }
    Some(sum.to_le_bytes().to_vec())
}

/// Every column family as the store opens it (with its merge operator), LZ4 on each if `lz4`.
fn descriptors(names: &[String], lz4: bool) -> Vec<ColumnFamilyDescriptor> {
    names
        .iter()
        .map(|name| {
            let mut cf_opts = Options::default();
            if lz4 {
                cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            match name.as_str() {
                "meta" => cf_opts.set_merge_operator_associative("meta", meta_merge),
                "counts" => cf_opts.set_merge_operator_associative("counts", counts_merge),
                _ => {}
            }
            ColumnFamilyDescriptor::new(name, cf_opts)
        })
        .collect()
}

/// Flush and fully compact every column family of the (stopped) store in `dir`, then read
/// each one's SST size and key estimate. With `lz4`, every column family is compacted with LZ4
/// (a what-if: `Store::open` sets LZ4 on the DB options only, which no column family uses);
/// RocksDB records the compression per block, so the server reads such files either way.
pub fn compact_and_measure(dir: &Path, lz4: bool) -> anyhow::Result<BTreeMap<String, CfSize>> {
    let mut opts = Options::default();
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.increase_parallelism(2);
    let names = DB::list_cf(&opts, dir)?;
    let cfs = descriptors(&names, lz4);
    let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
    let mut out = BTreeMap::new();
    for name in &names {
        let cf = db.cf_handle(name).expect("listed column family");
        db.flush_cf(cf)?;
        // Everything above the bottommost level goes into it (dropping superseded versions
        // and range-deleted entries). With `lz4` the bottommost level is rewritten too, so
        // every file is in the new format.
        let mut copts = rocksdb::CompactOptions::default();
        if lz4 {
            copts.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        }
        db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &copts);
        let int = |p: &str| db.property_int_value_cf(cf, p).ok().flatten().unwrap_or(0);
        out.insert(
            name.clone(),
            CfSize {
                sst_bytes: int("rocksdb.total-sst-files-size"),
                keys: int("rocksdb.estimate-num-keys"),
            },
        );
    }
    Ok(out)
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

/// Exact key counts and key+value bytes of a (stopped) store, per column family and, in
/// `index`, per kind of entry (`User/userName`, `~member`, `~listed`, …: the key's second and
/// third parts). Reads everything: for checks, not for every measurement.
pub fn census(dir: &Path) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let opts = Options::default();
    let names = DB::list_cf(&opts, dir)?;
    let db = DB::open_cf_descriptors_read_only(&opts, dir, descriptors(&names, false), false)?;
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for name in &names {
        let cf = db.cf_handle(name).expect("listed column family");
        for r in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = r?;
            let label = if name == "index" {
                let parts: Vec<&[u8]> = k.split(|b| *b == 0).collect();
                let part = |i: usize| String::from_utf8_lossy(parts.get(i).copied().unwrap_or(b""));
                if part(1).starts_with('~') {
                    format!("index {}", part(1))
                } else {
                    format!("index {}/{}", part(1), part(2))
                }
            } else {
                name.clone()
            };
            let e = out.entry(label).or_default();
            e.0 += 1;
            e.1 += (k.len() + v.len()) as u64;
        }
    }
    Ok(out)
}

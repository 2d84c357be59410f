//! The heads digest: an XOR over every document of sha256(key, sorted heads), kept by a RocksDB
//! merge operator in the same batch as the documents and in memory next to the marks, so
//! replication can compare two regions' documents at equal marks in one 32-byte value.

use super::*;

/// The meta key of the persisted heads digest.
pub(super) const DIGEST_KEY: &[u8] = b"digest";

/// RocksDB merge operator for [`DIGEST_KEY`]: XOR of every operand into the existing value.
pub(super) fn xor_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc = [0u8; 32];
    for part in existing.into_iter().chain(operands) {
        for (a, b) in acc.iter_mut().zip(part) {
            *a ^= b;
        }
    }
    Some(acc.to_vec())
}

pub(super) fn xor_into(acc: &mut [u8; 32], delta: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(delta) {
        *a ^= b;
    }
}

/// A document's term in the heads digest: sha256(key, sorted heads); zero for no document.
/// A tombstone's term is sha256(key, "deleted") whatever its heads, so collecting it (see
/// [`Store::collect_tombstones`]) leaves the digest as it was, and regions that collected at
/// different times still compare equal.
pub(super) fn heads_term(key: &[u8], doc: &mut AutoCommit) -> [u8; 32] {
    let mut heads = doc.get_heads();
    if heads.is_empty() {
        return [0; 32];
    }
    if doc::is_deleted(doc) {
        return deleted_term(key);
    }
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, key);
    {
        heads.sort();
        for head in &heads {
            sha2::Digest::update(&mut h, head.0);
        }
    }
    sha2::Digest::finalize(h).into()
}

/// The digest term of a tombstone, collected or not: sha256(key, "deleted").
pub(super) fn deleted_term(key: &[u8]) -> [u8; 32] {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, key);
    sha2::Digest::update(&mut h, b"deleted");
    sha2::Digest::finalize(h).into()
}

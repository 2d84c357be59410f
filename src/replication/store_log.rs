//! The store's replication log seen through the protocol's [`Log`] trait.

use super::protocol::Log;
use super::wire::{Entry, Hwm};
use crate::store::Store;

/// Adapts a [`Store`] to [`Log`]. Read errors return fewer entries: the replicator asks again.
pub struct StoreLog<'a>(pub &'a Store);

impl Log for StoreLog<'_> {
    fn hwm(&self) -> Hwm {
        self.0.log_hwm()
    }

    fn read(&self, origin: &str, from: u64, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        match self.0.log_read(origin, from, max_entries, max_bytes) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(origin, from, error = %e, "cannot read the replication log");
                Vec::new()
            }
        }
    }

    /// The store's digest of every document's heads with the marks it was taken at (the
    /// store's marks map is the wire's [`Hwm`]); `None` while the store has no comparable
    /// snapshot, which only skips a comparison.
    fn digest(&self) -> Option<(Hwm, [u8; 32])> {
        self.0.digest()
    }

    fn floor(&self) -> Hwm {
        self.0.log_floor()
    }

    fn allocated(&self) -> u64 {
        self.0.last_local_seq()
    }
}

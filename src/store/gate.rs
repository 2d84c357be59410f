//! The write gate: whether local writes go on, wait (at start, until every peer has said what
//! it holds of this region) or are refused (this region's own log is behind what its peers
//! hold of it, e.g. restored from an old backup: new writes would reuse sequence numbers).

use super::*;

/// Whether local writes may go on (see `Store::write_gate`).
#[derive(Debug, Default)]
pub(super) enum WriteGate {
    #[default]
    Open,
    /// Writes wait until this instant (or until the gate changes).
    Holding {
        until: std::time::Instant,
        reason: String,
    },
    Refused(String),
}

impl Store {
    /// Hold local writes back until `until` (they wait, at most that long) while the region
    /// starts: `reason` says why, in `/health`.
    pub fn hold_writes(&self, until: std::time::Instant, reason: String) {
        self.set_gate(WriteGate::Holding { until, reason });
    }

    /// Refuse local writes (503 with `reason`) until [`Store::open_writes`].
    pub fn refuse_writes(&self, reason: String) {
        self.set_gate(WriteGate::Refused(reason));
    }

    /// Take local writes again. Sequence numbers given up while writes were refused and not
    /// filled by recovery become fillers, so the own log has no hole.
    pub fn open_writes(&self) {
        self.set_gate(WriteGate::Open);
        let abandoned =
            std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()));
        let missing: Vec<u64> = abandoned
            .into_iter()
            .filter(|seq| {
                !matches!(
                    self.db
                        .get_pinned_cf(self.cf(CF_LOG), keys::log(&self.region, *seq)),
                    Ok(Some(_))
                )
            })
            .collect();
        if !missing.is_empty() {
            self.write_fillers(&missing);
        }
    }

    pub(super) fn set_gate(&self, gate: WriteGate) {
        *self.write_gate.0.lock().unwrap_or_else(|p| p.into_inner()) = gate;
        self.write_gate.1.notify_all();
    }

    /// Why local writes are held back or refused, if they are.
    pub fn writes_refused(&self) -> Option<String> {
        match &*self.write_gate.0.lock().unwrap_or_else(|p| p.into_inner()) {
            WriteGate::Open => None,
            WriteGate::Holding { until, .. } if std::time::Instant::now() >= *until => None,
            WriteGate::Holding { reason, .. } | WriteGate::Refused(reason) => Some(reason.clone()),
        }
    }

    /// Why local writes are refused (503), if they are: not while they only wait at start.
    pub fn writes_blocked(&self) -> Option<String> {
        match &*self.write_gate.0.lock().unwrap_or_else(|p| p.into_inner()) {
            WriteGate::Refused(reason) => Some(reason.clone()),
            _ => None,
        }
    }

    /// May the store write entries of this region's own origin now (its own bookkeeping:
    /// conflict records, userName settlements)? Not while writes are held back or refused.
    pub(super) fn may_log(&self) -> bool {
        self.writes_refused().is_none()
    }

    /// Ok when local writes may go on: at once when open, after a wait while held back at
    /// start, Err (503 with the reason) while refused.
    pub(super) fn check_writable(&self) -> Result<(), StoreError> {
        let (lock, changed) = &*self.write_gate;
        let mut gate = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*gate {
                WriteGate::Open => return Ok(()),
                WriteGate::Refused(reason) => {
                    return Err(StoreError::Scim(ScimError::Unavailable(reason.clone())))
                }
                WriteGate::Holding { until, .. } => {
                    let now = std::time::Instant::now();
                    if now >= *until {
                        return Ok(());
                    }
                    let wait = *until - now;
                    gate = changed
                        .wait_timeout(gate, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

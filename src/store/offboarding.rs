//! Offboardings at their log positions: every deactivation and delete this region accepted or
//! applied, kept in `meta` under the (origin, sequence) of the log entry that carried it, until
//! every region has acknowledged that position.
//!
//! A region holds a write exactly when its mark for the write's origin has reached the write's
//! sequence (marks are contiguous), so comparing these positions with the marks each peer last
//! reported tells which offboardings some region has and another has not yet: the dashboard's
//! "pending offboardings" ([`crate::replication::pending`] decides; this module only keeps the
//! positions). A record is written in the same batch as the change it describes, and removed
//! by the replication housekeeping once every known region has seen it.
//!
//! Key: `offb\0` ‖ origin ‖ `\0` ‖ sequence (u64 big-endian); value: the JSON of [`Offboarding`]
//! (format 3 folders without such keys simply have none: nothing to migrate).

use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, CF_META};
use crate::conflict::sticky::StickySet;
use crate::scim::schema::ResourceKind;

const PREFIX: &[u8] = b"offb\0";

/// What the write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A user's `active` became false.
    Deactivate,
    /// A user or group was deleted.
    Delete,
}

/// One offboarding and the log position that carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offboarding {
    /// The region whose log holds the write, and its sequence number there.
    pub origin: String,
    pub seq: u64,
    pub tenant: String,
    /// `User` or `Group`.
    pub resource_type: String,
    pub id: String,
    pub action: Action,
    /// When the write was made, milliseconds since the epoch (the origin's clock).
    pub at_millis: i64,
}

fn key(origin: &str, seq: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(origin.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The origin and sequence of a key (`None`: not one of ours).
fn parse_key(k: &[u8]) -> Option<(String, u64)> {
    let rest = k.strip_prefix(PREFIX)?;
    let (origin, seq) = rest.split_at(rest.len().checked_sub(9)?);
    let seq = seq.strip_prefix(&[0u8])?;
    Some((
        String::from_utf8(origin.to_vec()).ok()?,
        u64::from_be_bytes(seq.try_into().ok()?),
    ))
}

/// The offboarding a view change makes: a user going from unrestricted to restricted
/// (`active` false, or a tenant's sticky attribute at a restrictive value, see
/// [`StickySet::restricts`]), or a live resource disappearing (deleted; a view that never
/// existed makes none).
pub(super) fn transition(
    kind: ResourceKind,
    sticky: &StickySet,
    old: Option<&serde_json::Value>,
    new: Option<&serde_json::Value>,
) -> Option<Action> {
    let inactive = |v: &serde_json::Value| sticky.restricts(v);
    match (old, new) {
        (Some(_), None) => Some(Action::Delete),
        (Some(o), Some(n)) if kind == ResourceKind::User && !inactive(o) && inactive(n) => {
            Some(Action::Deactivate)
        }
        _ => None,
    }
}

impl Store {
    /// Stage the records of the offboardings a batch makes at log position (`origin`, `seq`).
    pub(super) fn stage_offboardings(
        &self,
        batch: &mut WriteBatch,
        offboarded: &mut Vec<(String, ResourceKind, String, Action)>,
        origin: &str,
        seq: u64,
        at_millis: i64,
    ) -> Result<(), StoreError> {
        for (tenant, kind, id, action) in offboarded.drain(..) {
            let record = Offboarding {
                origin: origin.to_string(),
                seq,
                tenant,
                resource_type: kind.name().to_string(),
                id,
                action,
                at_millis,
            };
            let json =
                serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            batch.put_cf(self.cf(CF_META), key(origin, seq), json);
        }
        Ok(())
    }

    /// The offboardings this region keeps (not yet known to be everywhere), in key order, at
    /// most `limit`; the second value says whether more were left out.
    pub fn offboardings(&self, limit: usize) -> Result<(Vec<Offboarding>, bool), StoreError> {
        let mut out = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(PREFIX, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(PREFIX) {
                break;
            }
            if out.len() >= limit {
                return Ok((out, true));
            }
            let record: Offboarding = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("offboarding record: {e}")))?;
            out.push(record);
        }
        Ok((out, false))
    }

    /// Remove the records every region has seen: those at or below `seen` (per origin, the
    /// lowest mark among all regions). Returns how many were removed.
    pub fn collect_offboardings(
        &self,
        seen: &std::collections::BTreeMap<String, u64>,
    ) -> Result<usize, StoreError> {
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for r in self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(PREFIX, Direction::Forward),
        ) {
            let (k, _) = r?;
            if !k.starts_with(PREFIX) {
                break;
            }
            if let Some((origin, seq)) = parse_key(&k) {
                if seen.get(&origin).is_some_and(|m| *m >= seq) {
                    batch.delete_cf(self.cf(CF_META), &k);
                    n += 1;
                }
            }
        }
        if n > 0 {
            self.db.write_opt(batch, &self.write_opts)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::store::tests::{open, set, sync, user};

    #[test]
    fn local_and_replicated_offboardings_are_kept_at_their_log_positions() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
        let kept = user(&a, "kept");
        let gone = user(&a, "gone");
        let off = user(&a, "off");
        set(&a, &kept, "displayName", json!("K"), false);
        assert!(
            a.offboardings(10).unwrap().0.is_empty(),
            "no offboarding yet"
        );
        // b holds the users live before they go (a region that first hears of a user already
        // inactive saw no offboarding: its origin did).
        sync(&a, &b);
        set(&a, &off, "active", json!(false), true);
        a.delete("t", ResourceKind::User, &gone, None).unwrap();
        let (records, more) = a.offboardings(10).unwrap();
        assert!(!more);
        let got: Vec<(&str, Action, &str)> = records
            .iter()
            .map(|r| (r.id.as_str(), r.action, r.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (off.as_str(), Action::Deactivate, "a"),
                (gone.as_str(), Action::Delete, "a")
            ]
        );
        let a_mark = a.log_hwm()["a"];
        assert_eq!(records[1].seq, a_mark, "the delete is a's last entry");
        assert!(records[0].seq < records[1].seq);
        assert!(records.iter().all(|r| r.at_millis > 1_600_000_000_000));
        // b applies a's entries: the same offboardings, at the same positions.
        sync(&a, &b);
        let (at_b, _) = b.offboardings(10).unwrap();
        let pos = |l: &[Offboarding]| -> Vec<(String, u64, Action)> {
            l.iter()
                .map(|r| (r.origin.clone(), r.seq, r.action))
                .collect()
        };
        assert_eq!(pos(&at_b), pos(&records));
        // Collected once seen everywhere, and not before.
        let seen = [("a".to_string(), records[0].seq)].into();
        assert_eq!(a.collect_offboardings(&seen).unwrap(), 1);
        assert_eq!(a.offboardings(10).unwrap().0.len(), 1);
        assert_eq!(a.offboardings(0).unwrap(), (Vec::new(), true));
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(parse_key(&key("eu-west", 42)), Some(("eu-west".into(), 42)));
        assert_eq!(parse_key(b"offb\0x"), None);
        assert_eq!(parse_key(b"mark\0eu"), None);
    }

    #[test]
    fn deactivations_and_deletes_are_offboardings_and_nothing_else_is() {
        let (on, off) = (json!({"active": true}), json!({"active": false}));
        let u = ResourceKind::User;
        let none = StickySet::default();
        assert_eq!(
            transition(u, &none, Some(&on), Some(&off)),
            Some(Action::Deactivate)
        );
        assert_eq!(
            transition(u, &none, Some(&json!({})), Some(&off)),
            Some(Action::Deactivate)
        );
        assert_eq!(
            transition(u, &none, Some(&off), Some(&off)),
            None,
            "already inactive"
        );
        assert_eq!(
            transition(u, &none, Some(&off), Some(&on)),
            None,
            "a rehire"
        );
        assert_eq!(transition(u, &none, Some(&off), None), Some(Action::Delete));
        assert_eq!(
            transition(u, &none, None, Some(&off)),
            None,
            "created inactive"
        );
        assert_eq!(transition(u, &none, None, None), None);
        let g = ResourceKind::Group;
        assert_eq!(
            transition(g, &none, Some(&json!({})), None),
            Some(Action::Delete)
        );
        // A tenant's sticky attribute reaching a restrictive value is an offboarding too.
        let sticky = StickySet::new(vec![crate::conflict::sticky::StickyRule {
            key: "userType".into(),
            restrictive: vec![json!("Terminated")],
            case_exact: false,
        }]);
        let (hired, fired) = (
            json!({"userType": "Employee"}),
            json!({"userType": "Terminated"}),
        );
        assert_eq!(
            transition(u, &sticky, Some(&hired), Some(&fired)),
            Some(Action::Deactivate)
        );
        assert_eq!(transition(u, &none, Some(&hired), Some(&fired)), None);
        assert_eq!(
            transition(u, &sticky, Some(&fired), Some(&hired)),
            None,
            "a rehire"
        );
    }
}

//! Per-tenant event feeds: one record per write that carried an [`Intent`], staged in the batch
//! that commits the write's log entry (a local write, or a peer's entry this region applies),
//! so an acknowledged write's event survives every restart the write does.
//!
//! Column family `events`:
//! - `f` ‖ tenant ‖ `\0` ‖ position (u64 big-endian) → the JSON of [`Event`]: the feed, oldest
//!   first. Positions are this region's own order of commit; for one origin they follow its
//!   sequence numbers (a peer's entries are applied in order).
//! - `j` ‖ tenant ‖ `\0` ‖ jti → position: acknowledgements find their record by `jti`.
//!
//! `counts` holds `e` ‖ tenant: the records pending (summed like every count). Records leave
//! the feed when acknowledged (poll), delivered (push) or trimmed past the tenant's bound;
//! those removals run under one lock, so a record is counted out once.
//!
//! Which writes a region keeps events of is the tenant's [`FeedScope`]: every write in the
//! cluster (poll: a receiver may poll any region) or only those this region accepted (push:
//! each region pushes its own, so a receiver gets each once).

use std::sync::atomic::Ordering;

use rocksdb::{Direction, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use super::log::LogEntry;
use super::{Store, StoreError, CF_COUNTS};
use crate::events::Intent;

pub(super) const CF_EVENTS: &str = "events";

/// Which writes a tenant's feed holds at this region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedScope {
    /// No feed.
    #[default]
    None,
    /// Every write of the cluster: this region's and those it merged.
    All,
    /// Only the writes this region accepted.
    Own,
}

/// One event of a feed: which write, of what, meaning what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `origin.sequence`: the same for this write at every region.
    pub jti: String,
    pub origin: String,
    pub seq: u64,
    pub tenant: String,
    /// `User` or `Group`.
    pub resource_type: String,
    pub id: String,
    pub intent: Intent,
    /// When the write was made (the origin's clock), milliseconds since the epoch.
    pub at_millis: i64,
}

impl Event {
    /// The `jti` of the write at (`origin`, `seq`).
    pub fn jti_of(origin: &str, seq: u64) -> String {
        format!("{origin}.{seq}")
    }
}

fn feed_prefix(tenant: &str) -> Vec<u8> {
    let mut k = b"f".to_vec();
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k
}

fn feed_key(tenant: &str, pos: u64) -> Vec<u8> {
    let mut k = feed_prefix(tenant);
    k.extend_from_slice(&pos.to_be_bytes());
    k
}

fn jti_key(tenant: &str, jti: &str) -> Vec<u8> {
    let mut k = b"j".to_vec();
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(jti.as_bytes());
    k
}

fn count_key(tenant: &str) -> Vec<u8> {
    let mut k = b"e".to_vec();
    k.extend_from_slice(tenant.as_bytes());
    k
}

/// The position of a feed key.
fn pos_of(key: &[u8]) -> u64 {
    key.len()
        .checked_sub(8)
        .and_then(|at| key[at..].try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The highest position any of `tenants`' feeds holds (0: none), read at open.
pub(super) fn last_position(
    db: &rocksdb::DB,
    tenants: impl IntoIterator<Item = String>,
) -> Result<u64, StoreError> {
    let cf = db
        .cf_handle(CF_EVENTS)
        .ok_or_else(|| StoreError::Corrupt("no events column family".into()))?;
    let mut last = 0;
    for tenant in tenants {
        let mut upper = feed_prefix(&tenant);
        upper.extend_from_slice(&[0xff; 9]);
        if let Some(r) = db
            .iterator_cf(cf, IteratorMode::From(&upper, Direction::Reverse))
            .next()
        {
            let (k, _) = r?;
            if k.starts_with(&feed_prefix(&tenant)) {
                last = last.max(pos_of(&k));
            }
        }
    }
    Ok(last)
}

impl Store {
    /// Stage the event of the log entry (`origin`, `seq`) if it carries an intent and its
    /// tenant's feed keeps writes of `origin` here.
    pub(super) fn stage_event(
        &self,
        batch: &mut WriteBatch,
        origin: &str,
        seq: u64,
        entry: &LogEntry,
    ) -> Result<(), StoreError> {
        let Some(intent) = &entry.intent else {
            return Ok(());
        };
        let keep = match self.policy_ref(&entry.tenant).map(|p| p.events) {
            Some(FeedScope::All) => true,
            Some(FeedScope::Own) => origin == self.region,
            _ => false,
        };
        if !keep {
            return Ok(());
        }
        let jti = Event::jti_of(origin, seq);
        let event = Event {
            jti: jti.clone(),
            origin: origin.to_string(),
            seq,
            tenant: entry.tenant.clone(),
            resource_type: entry.kind.name().to_string(),
            id: entry.id.clone(),
            intent: intent.clone(),
            at_millis: entry.at,
        };
        let json = serde_json::to_vec(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let pos = self.event_pos.fetch_add(1, Ordering::AcqRel) + 1;
        let cf = self.cf(CF_EVENTS);
        batch.put_cf(cf, feed_key(&entry.tenant, pos), json);
        batch.put_cf(cf, jti_key(&entry.tenant, &jti), pos.to_be_bytes());
        batch.merge_cf(
            self.cf(CF_COUNTS),
            count_key(&entry.tenant),
            1i64.to_le_bytes(),
        );
        self.events_staged.store(true, Ordering::Release);
        Ok(())
    }

    /// After a commit: wake the pollers and pushers if events were staged.
    pub(super) fn announce_events(&self) {
        if self.events_staged.swap(false, Ordering::AcqRel) {
            self.events_changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A receiver that changes whenever new events commit (long polls and pushers wait on it).
    pub fn event_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_changed.subscribe()
    }

    /// The oldest pending events of `tenant`, at most `limit`; the second value says whether
    /// more are pending.
    pub fn pending_events(
        &self,
        tenant: &str,
        limit: usize,
    ) -> Result<(Vec<Event>, bool), StoreError> {
        let prefix = feed_prefix(tenant);
        let mut out = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_EVENTS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) {
                break;
            }
            if out.len() >= limit {
                return Ok((out, true));
            }
            out.push(
                serde_json::from_slice(&v)
                    .map_err(|e| StoreError::Corrupt(format!("event record: {e}")))?,
            );
        }
        Ok((out, false))
    }

    /// How many events of `tenant` are pending.
    pub fn pending_event_count(&self, tenant: &str) -> Result<u64, StoreError> {
        let v = self.db.get_cf(self.cf(CF_COUNTS), count_key(tenant))?;
        Ok(v.and_then(|v| v.as_slice().try_into().ok())
            .map_or(0, i64::from_le_bytes)
            .max(0) as u64)
    }

    /// Remove the events `jtis` of `tenant` from its feed (acknowledged, delivered, or refused
    /// by the receiver); returns how many were pending. Unknown jtis are ignored: an
    /// acknowledgement that arrives twice, or after the record was trimmed, changes nothing.
    pub fn ack_events(&self, tenant: &str, jtis: &[String]) -> Result<usize, StoreError> {
        let _gc = self.events_gc.lock().unwrap_or_else(|p| p.into_inner());
        let cf = self.cf(CF_EVENTS);
        let mut batch = WriteBatch::default();
        let mut n = 0i64;
        let mut seen = std::collections::BTreeSet::new();
        for jti in jtis {
            if !seen.insert(jti) {
                continue;
            }
            let jkey = jti_key(tenant, jti);
            let Some(pos) = self.db.get_cf(cf, &jkey)? else {
                continue;
            };
            let pos = pos.as_slice().try_into().map_or(0, u64::from_be_bytes);
            batch.delete_cf(cf, feed_key(tenant, pos));
            batch.delete_cf(cf, jkey);
            n += 1;
        }
        if n > 0 {
            batch.merge_cf(self.cf(CF_COUNTS), count_key(tenant), (-n).to_le_bytes());
            self.db.write_opt(batch, &self.write_opts)?;
        }
        Ok(n as usize)
    }

    /// Keep at most `max` events of `tenant` pending: drop the oldest beyond it, those that are
    /// not offboardings first (looking at most a few thousand records ahead), then the oldest
    /// of any kind. Returns the events dropped.
    pub fn trim_events(&self, tenant: &str, max: u64) -> Result<Vec<Event>, StoreError> {
        let _gc = self.events_gc.lock().unwrap_or_else(|p| p.into_inner());
        let count = self.pending_event_count(tenant)?;
        if count <= max {
            return Ok(Vec::new());
        }
        let excess = (count - max) as usize;
        const LOOK_AHEAD: usize = 4096;
        let prefix = feed_prefix(tenant);
        let mut scanned: Vec<(Vec<u8>, Event)> = Vec::new();
        for r in self.db.iterator_cf(
            self.cf(CF_EVENTS),
            IteratorMode::From(&prefix, Direction::Forward),
        ) {
            let (k, v) = r?;
            if !k.starts_with(&prefix) || scanned.len() >= excess + LOOK_AHEAD {
                break;
            }
            let event: Event = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Corrupt(format!("event record: {e}")))?;
            scanned.push((k.to_vec(), event));
        }
        // Non-offboardings first, then the oldest of the rest (a mark per record: linear).
        let mut chosen = vec![false; scanned.len()];
        let mut left = excess;
        for offboardings in [false, true] {
            for (i, (_, e)) in scanned.iter().enumerate() {
                if left > 0 && !chosen[i] && e.intent.is_offboarding() == offboardings {
                    chosen[i] = true;
                    left -= 1;
                }
            }
        }
        let drop: Vec<usize> = (0..scanned.len()).filter(|i| chosen[*i]).collect();
        let cf = self.cf(CF_EVENTS);
        let mut batch = WriteBatch::default();
        let mut dropped = Vec::with_capacity(drop.len());
        for i in drop {
            let (key, event) = &scanned[i];
            batch.delete_cf(cf, key);
            batch.delete_cf(cf, jti_key(tenant, &event.jti));
            dropped.push(event.clone());
        }
        if !dropped.is_empty() {
            let n = dropped.len() as i64;
            batch.merge_cf(self.cf(CF_COUNTS), count_key(tenant), (-n).to_le_bytes());
            self.db.write_opt(batch, &self.write_opts)?;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Access, Op};
    use crate::scim::schema::ResourceKind;
    use crate::store::tests::{set, sync, user};
    use crate::store::{StoreOptions, TenantPolicy};
    use serde_json::json;

    fn open(dir: &std::path::Path, region: &str, scope: FeedScope) -> Store {
        let policy = TenantPolicy {
            events: scope,
            ..TenantPolicy::default()
        };
        Store::open(
            dir,
            StoreOptions {
                region: region.into(),
                sync_writes: false,
                doc_cache_size: 100,
                io_statistics: false,
                history_entries: 100,
                tenants: [("t".to_string(), policy)].into(),
            },
        )
        .unwrap()
    }

    fn feed(store: &Store) -> Vec<(String, Option<Op>, Option<Access>)> {
        let (events, _) = store.pending_events("t", 1000).unwrap();
        events
            .into_iter()
            .map(|e| (e.jti, e.intent.op, e.intent.access))
            .collect()
    }

    #[test]
    fn every_write_of_the_cluster_lands_in_a_poll_feed_once_in_commit_order() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            open(da.path(), "a", FeedScope::All),
            open(db.path(), "b", FeedScope::All),
        );
        let u = user(&a, "ann");
        set(&a, &u, "active", json!(false), true);
        let v = user(&b, "bob");
        b.delete("t", ResourceKind::User, &v, None).unwrap();
        sync(&a, &b);
        sync(&b, &a);
        // Applying the same entries again (a resend) adds nothing.
        sync(&a, &b);
        let mine = [
            ("a.1", Some(Op::Create), None),
            ("a.2", Some(Op::Patch), Some(Access::Deactivate)),
        ];
        let theirs = [
            ("b.1", Some(Op::Create), None),
            ("b.2", Some(Op::Delete), None),
        ];
        let names = |l: &[(&str, Option<Op>, Option<Access>)]| -> Vec<(String, Option<Op>, Option<Access>)> {
            l.iter().map(|(j, o, x)| (j.to_string(), *o, *x)).collect()
        };
        assert_eq!(feed(&a), [names(&mine), names(&theirs)].concat());
        assert_eq!(feed(&b), [names(&theirs), names(&mine)].concat());
        let deactivation = a.pending_events("t", 10).unwrap().0[1].clone();
        assert!(deactivation.intent.is_offboarding());
        assert_eq!(deactivation.intent.attributes, vec!["active".to_string()]);
        assert_eq!((deactivation.origin.as_str(), deactivation.seq), ("a", 2));
        assert_eq!(a.pending_event_count("t").unwrap(), 4);
        // Acknowledged events leave; an unknown or repeated jti changes nothing.
        let acked = a
            .ack_events("t", &["a.1".into(), "a.1".into(), "zz.9".into()])
            .unwrap();
        assert_eq!(acked, 1);
        assert_eq!(a.ack_events("t", &["a.1".into()]).unwrap(), 0);
        assert_eq!(a.pending_event_count("t").unwrap(), 3);
        assert_eq!(feed(&a)[0].0, "a.2");
    }

    #[test]
    fn a_push_feed_keeps_only_this_regions_writes_and_other_tenants_keep_none() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            open(da.path(), "a", FeedScope::Own),
            open(db.path(), "b", FeedScope::Own),
        );
        user(&a, "ann");
        user(&b, "bob");
        sync(&a, &b);
        sync(&b, &a);
        assert_eq!(
            feed(&a).iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["a.1"]
        );
        assert_eq!(
            feed(&b).iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["b.1"]
        );
        a.create(
            "other",
            ResourceKind::User,
            crate::store::tests::attrs(json!({"userName": "x"})),
        )
        .unwrap();
        assert!(a.pending_events("other", 10).unwrap().0.is_empty());
    }

    #[test]
    fn the_feed_survives_a_restart_and_new_events_follow_the_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        {
            let a = open(dir.path(), "a", FeedScope::All);
            user(&a, "ann");
            user(&a, "bob");
            a.ack_events("t", &["a.1".into()]).unwrap();
        }
        let a = open(dir.path(), "a", FeedScope::All);
        user(&a, "cid");
        let jtis: Vec<String> = feed(&a).into_iter().map(|e| e.0).collect();
        assert_eq!(jtis, ["a.2", "a.3"]);
        assert_eq!(a.pending_event_count("t").unwrap(), 2);
    }

    #[test]
    fn trimming_drops_the_oldest_but_keeps_offboardings_while_others_can_go() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), "a", FeedScope::All);
        let u = user(&a, "ann"); // a.1 create
        set(&a, &u, "active", json!(false), true); // a.2 deactivate
        user(&a, "bob"); // a.3
        user(&a, "cid"); // a.4
        let dropped = a.trim_events("t", 2).unwrap();
        let gone: Vec<&str> = dropped.iter().map(|e| e.jti.as_str()).collect();
        assert_eq!(gone, ["a.1", "a.3"]);
        let kept: Vec<String> = feed(&a).into_iter().map(|e| e.0).collect();
        assert_eq!(kept, ["a.2", "a.4"]);
        // When only offboardings are left to drop, the oldest of them goes.
        assert_eq!(a.trim_events("t", 1).unwrap()[0].jti, "a.4");
        assert_eq!(a.trim_events("t", 0).unwrap()[0].jti, "a.2");
        assert_eq!(a.pending_event_count("t").unwrap(), 0);
    }
}

//! Store tests of memberships, truncation and snapshots: real RocksDB in temp dirs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::tests::{attrs, open, sync, user};
use super::*;
use crate::conflict::membership::Report;
use crate::scim::members::Touch;

fn open_counting(dir: &Path, region: &str) -> Store {
    open_counting_history(dir, region, 1000)
}

fn open_counting_history(dir: &Path, region: &str, history_entries: usize) -> Store {
    Store::open(
        dir,
        StoreOptions {
            region: region.into(),
            sync_writes: false,
            doc_cache_size: 100,
            io_statistics: true,
            history_entries,
            tenants: Default::default(),
        },
    )
    .unwrap()
}

fn group(store: &Store, name: &str, members: &[&str]) -> String {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    match store
        .create(
            "t",
            ResourceKind::Group,
            attrs(json!({"displayName": name, "members": members})),
        )
        .unwrap()
    {
        Created::New(s) => s.view["id"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    }
}

/// Add (`on`) or remove members the way a PATCH does: only the named records are touched.
fn change(store: &Store, g: &str, ids: &[String], on: bool) {
    let touch = Touch::Ids(ids.iter().cloned().collect());
    store
        .update_group("t", g, None, &touch, &|old| {
            let mut new = old.clone();
            let mut list: Vec<Value> = new
                .remove("members")
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            list.retain(|m| !ids.iter().any(|id| m["value"] == json!(id)));
            if on {
                list.extend(ids.iter().map(|id| json!({"value": id})));
            }
            if !list.is_empty() {
                new.insert("members".into(), Value::Array(list));
            }
            Ok((new, vec!["members".into()]))
        })
        .unwrap();
}

fn listed(store: &Store, g: &str) -> Vec<String> {
    store
        .member_page("t", g, None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect()
}

fn sync_all(from: &Store, to: &Store) {
    loop {
        let before = to.log_hwm();
        sync(from, to);
        if to.log_hwm() == before {
            return;
        }
    }
}

#[test]
fn adding_one_member_touches_as_many_keys_in_a_group_of_100k_as_in_one_of_1k() {
    let d = tempfile::tempdir().unwrap();
    let store = open_counting(d.path(), "eu");
    let small = group(&store, "small", &[]);
    let large = group(&store, "large", &[]);
    // Members need not exist to be recorded; these do not, so building stays quick. The
    // member added below is a live user, listed and counted like any.
    for (g, n) in [(&small, 1_000), (&large, 100_000)] {
        for batch in (0..n).collect::<Vec<_>>().chunks(1_000) {
            let ids: Vec<String> = batch.iter().map(|i| format!("{g}-m{i:06}")).collect();
            change(&store, g, &ids, true);
        }
    }
    let u = user(&store, "alice");
    let v = user(&store, "bob");
    let cost = |g: &str, m: &str| {
        let before = store.io_counts().unwrap();
        change(&store, g, &[m.to_string()], true);
        store.io_counts().unwrap() - before
    };
    // Warm both groups' documents alike, then measure.
    let (_, _) = (cost(&small, &v), cost(&large, &v));
    let (s, l) = (cost(&small, &u), cost(&large, &u));
    let keys = |c: IoCounts| (c.keys_read, c.keys_written, c.iterator_moves);
    assert_eq!(
        keys(s),
        keys(l),
        "one add costs the same whatever the group's size"
    );
    assert!(l.keys_written < 20 && l.keys_read < 40, "{l:?}");
    assert_eq!(store.member_total("t", &large).unwrap(), 2);
    assert!(listed(&store, &large).contains(&u));
}

/// Removed members leave deletions in the group's member range; a file dense with them is
/// compacted on its own, so a page of members soon stops stepping over them. Without the
/// index's deletion collector the flushed deletions wait in level 0 until enough other files
/// pile up there to trigger a compaction (this test would time out).
#[test]
fn a_page_of_members_stops_stepping_over_removed_members_once_their_deletions_are_flushed() {
    let d = tempfile::tempdir().unwrap();
    let store = open_counting(d.path(), "eu");
    let index = store.cf(CF_INDEX);
    let g = group(&store, "churn", &[]);
    let live: Vec<String> = (0..200)
        .map(|i| user(&store, &format!("live{i}")))
        .collect();
    change(&store, &g, &live, true);
    let gone: Vec<String> = (0..2_000)
        .map(|i| user(&store, &format!("gone{i}")))
        .collect();
    for batch in gone.chunks(500) {
        change(&store, &g, batch, true);
    }
    // The adds on disk first, so the deletions land in a file of their own above them (as in
    // any store with history); one file alone in level 0 is not compacted.
    store.db.flush_cf(index).unwrap();
    for batch in gone.chunks(500) {
        change(&store, &g, batch, false);
    }
    let skipped = || {
        let before = store.io_counts().unwrap();
        let page = store.member_page("t", &g, None, 1_000).unwrap();
        assert_eq!(page.len(), live.len());
        (store.io_counts().unwrap() - before).internal_keys_skipped
    };
    assert!(skipped() >= 2_000, "the deletions are there to step over");
    store.db.flush_cf(index).unwrap();
    let started = std::time::Instant::now();
    let mut last = skipped();
    while last >= 100 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "a page still steps over {last} dead entries 30 s after the flush"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        last = skipped();
    }
}

#[test]
fn a_group_at_its_history_bound_does_not_seek_past_the_entries_it_dropped() {
    let d = tempfile::tempdir().unwrap();
    let keep = 100;
    let store = open_counting_history(d.path(), "eu", keep);
    let g = group(&store, "busy", &[]);
    let m = vec![user(&store, "alice")];
    let change_skipping = |on: bool| {
        let before = store.io_counts().unwrap();
        change(&store, &g, &m, on);
        (store.io_counts().unwrap() - before).internal_keys_skipped
    };
    // Ten times the bound: every write past the first `keep` drops history. Dropping one
    // entry per write left a tombstone per write in the memtable for the next seek of the
    // oldest entry to step over (about 900 per write by the end).
    let skipped: Vec<u64> = (0..10 * keep)
        .map(|i| change_skipping(i % 2 == 0))
        .collect();
    let late = &skipped[9 * keep..];
    let mean = late.iter().sum::<u64>() as f64 / late.len() as f64;
    assert!(
        mean < (keep / 4) as f64,
        "a write at the bound skipped {mean} dead entries on average (last: {:?})",
        &late[late.len() - 5..]
    );
    let history = store.member_history("t", &g).unwrap();
    assert_eq!(history.len(), keep, "the newest `keep` are shown");
    let newest = history.last().unwrap().write.clone();
    change_skipping(true);
    let again = store.member_history("t", &g).unwrap();
    assert_eq!(again.len(), keep);
    assert_eq!(
        again[keep - 2].write,
        newest,
        "the newest entry moved back by one"
    );
}

#[test]
fn memberships_replicate_with_identical_pages_versions_and_digests() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let users: Vec<String> = (0..5).map(|i| user(&a, &format!("u{i}"))).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let g = group(&a, "G", &refs[..3]);
    sync_all(&a, &b);
    change(&b, &g, &users[3..4], true);
    change(&a, &g, &users[0..1], false);
    sync_all(&a, &b);
    sync_all(&b, &a);
    for s in [&a, &b] {
        assert_eq!(listed(s, &g), {
            let mut want: Vec<String> = users[1..4].to_vec();
            want.sort();
            want
        });
        assert_eq!(s.member_total("t", &g).unwrap(), 3);
        let groups = s.groups_of("t", &users[1], "").unwrap();
        assert_eq!(groups.len(), 1);
        assert!(s.groups_of("t", &users[0], "").unwrap().is_empty());
    }
    assert_eq!(
        a.member_digest("t", &g).unwrap(),
        b.member_digest("t", &g).unwrap()
    );
    assert_eq!(a.digest(), b.digest());
    // A deleted user leaves every group, everywhere.
    a.delete("t", ResourceKind::User, &users[1], None).unwrap();
    sync_all(&a, &b);
    for s in [&a, &b] {
        assert!(!listed(s, &g).contains(&users[1]));
        assert_eq!(s.member_total("t", &g).unwrap(), 2);
    }
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn a_member_that_arrives_after_its_membership_is_listed_when_it_arrives() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let g = group(&a, "G", &[]);
    sync_all(&a, &b);
    // b creates a user; a adds it to the group before b's user reaches a.
    let u = user(&b, "late");
    change(&a, &g, std::slice::from_ref(&u), true);
    assert!(listed(&a, &g).is_empty(), "not a live resource here yet");
    sync_all(&b, &a);
    assert_eq!(listed(&a, &g), vec![u.clone()]);
    assert_eq!(a.member_total("t", &g).unwrap(), 1);
    sync_all(&a, &b);
    assert_eq!(listed(&b, &g), vec![u]);
    assert_eq!(
        a.member_digest("t", &g).unwrap(),
        b.member_digest("t", &g).unwrap()
    );
}

#[test]
fn removed_memberships_are_collected_once_every_region_saw_them() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let u = user(&a, "u");
    let g = group(&a, "G", &[&u]);
    change(&a, &g, std::slice::from_ref(&u), false);
    assert_eq!(a.pending_memberships().unwrap(), 1);
    let cluster = vec!["a".to_string(), "b".to_string()];
    let report = |s: &Store| Report {
        marks: s.log_hwm(),
        allocated: s.last_local_seq(),
    };
    // b has not seen the removal: nothing is collected.
    let peers = BTreeMap::from([("b".to_string(), report(&b))]);
    assert_eq!(
        a.collect_memberships(a.last_local_seq(), &peers, &cluster)
            .unwrap(),
        0
    );
    sync_all(&a, &b);
    let peers = BTreeMap::from([("b".to_string(), report(&b))]);
    // Phase 1 (everyone holds the removal), then phase 2 (nothing concurrent can arrive).
    assert_eq!(
        a.collect_memberships(a.last_local_seq(), &peers, &cluster)
            .unwrap(),
        0
    );
    assert_eq!(
        a.collect_memberships(a.last_local_seq(), &peers, &cluster)
            .unwrap(),
        1
    );
    assert_eq!(a.pending_memberships().unwrap(), 0);
    // A re-add afterwards counts (it saw the removal), here and at b.
    change(&a, &g, std::slice::from_ref(&u), true);
    sync_all(&a, &b);
    assert_eq!(listed(&b, &g), vec![u]);
}

#[test]
fn a_truncated_log_serves_from_its_floor() {
    let d = tempfile::tempdir().unwrap();
    let a = open(d.path(), "a");
    for i in 0..10 {
        user(&a, &format!("u{i}"));
    }
    assert_eq!(
        a.truncate_log(&BTreeMap::from([("a".to_string(), 8)]))
            .unwrap(),
        1
    );
    assert_eq!(a.log_floor()["a"], 8);
    let entries = a.log_read("a", 1, 100, usize::MAX).unwrap();
    assert_eq!(
        entries.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    // Floors never go down, and never above the mark + 1.
    assert_eq!(
        a.truncate_log(&BTreeMap::from([("a".to_string(), 3)]))
            .unwrap(),
        0
    );
    a.truncate_log(&BTreeMap::from([("a".to_string(), 99)]))
        .unwrap();
    assert_eq!(a.log_floor()["a"], 11);
    drop(a);
    let a = open(d.path(), "a");
    assert_eq!(a.log_floor()["a"], 11);
    assert_eq!(a.log_hwm()["a"], 10);
    user(&a, "after");
    assert_eq!(
        a.log_hwm()["a"],
        11,
        "writes continue after the persisted mark"
    );
}

/// Move a snapshot of `from` into `to` the way the runtime does (chunks of `chunk_bytes`).
fn transfer(from: &Store, to: &Store, chunk_bytes: usize) -> BTreeMap<String, u64> {
    let mut marks = BTreeMap::new();
    let mut chunks = Vec::new();
    from.snapshot(
        chunk_bytes,
        |m| {
            marks = m;
            true
        },
        |items| {
            chunks.push(items);
            true
        },
    )
    .unwrap();
    let mut session = to.begin_snapshot(marks.clone());
    for c in &chunks {
        to.apply_snapshot(&mut session, c).unwrap();
    }
    to.finish_snapshot(session).unwrap();
    marks
}

#[test]
fn a_snapshot_brings_an_empty_region_to_the_same_state_and_replication_goes_on() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let users: Vec<String> = (0..30).map(|i| user(&a, &format!("u{i}"))).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let g = group(&a, "G", &refs[..20]);
    let nested = group(&a, "N", &[&g, refs[25]]);
    change(&a, &g, &users[0..2], false);
    a.delete("t", ResourceKind::User, &users[29], None).unwrap();
    // The log is cut: b cannot catch up entry by entry.
    a.truncate_log(
        &a.log_hwm()
            .iter()
            .map(|(o, m)| (o.clone(), m + 1))
            .collect(),
    )
    .unwrap();
    let marks = transfer(&a, &b, 4096);
    assert_eq!(b.log_hwm(), a.log_hwm());
    assert_eq!(marks, a.log_hwm());
    assert_eq!(b.log_floor()["a"], a.log_hwm()["a"] + 1);
    for id in &users[..29] {
        assert_eq!(
            a.get("t", ResourceKind::User, id).unwrap(),
            b.get("t", ResourceKind::User, id).unwrap()
        );
    }
    assert!(b
        .get("t", ResourceKind::User, &users[29])
        .unwrap()
        .is_none());
    for gid in [&g, &nested] {
        assert_eq!(listed(&a, gid), listed(&b, gid));
        assert_eq!(
            a.member_digest("t", gid).unwrap(),
            b.member_digest("t", gid).unwrap()
        );
        assert_eq!(
            a.member_total("t", gid).unwrap(),
            b.member_total("t", gid).unwrap()
        );
    }
    assert_eq!(b.count("t", ResourceKind::User).unwrap(), 29);
    assert_eq!(a.digest(), b.digest());
    // Replication continues from the snapshot's marks.
    change(&a, &g, &users[20..22], true);
    let v = user(&a, "after");
    sync_all(&a, &b);
    assert_eq!(listed(&a, &g), listed(&b, &g));
    assert!(b.get("t", ResourceKind::User, &v).unwrap().is_some());
    assert_eq!(a.digest(), b.digest());
    // b's own writes continue its own sequence.
    user(&b, "from-b");
    sync_all(&b, &a);
    assert_eq!(a.count("t", ResourceKind::User).unwrap(), 31);
}

#[test]
fn a_snapshot_that_covers_a_region_replaces_its_memberships() {
    // b is a restored backup: it lists a member that a removed and then collected (every
    // region had seen the removal before b was restored).
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let u = user(&a, "u");
    let g = group(&a, "G", &[&u]);
    sync_all(&a, &b);
    let backup = tempfile::tempdir().unwrap();
    drop(b);
    copy_dir(db.path(), backup.path());
    let b = open(db.path(), "b");
    change(&a, &g, std::slice::from_ref(&u), false);
    sync_all(&a, &b);
    let cluster = vec!["a".to_string(), "b".to_string()];
    let peers = BTreeMap::from([(
        "b".to_string(),
        Report {
            marks: b.log_hwm(),
            allocated: b.last_local_seq(),
        },
    )]);
    for _ in 0..2 {
        a.collect_memberships(a.last_local_seq(), &peers, &cluster)
            .unwrap();
    }
    assert_eq!(a.pending_memberships().unwrap(), 0, "collected at a");
    drop(b);
    let restored = open(backup.path(), "b");
    assert_eq!(
        listed(&restored, &g),
        vec![u.clone()],
        "the stale backup lists u"
    );
    transfer(&a, &restored, 1 << 20);
    assert!(listed(&restored, &g).is_empty());
    assert!(restored.groups_of("t", &u, "").unwrap().is_empty());
    assert_eq!(
        restored.member_digest("t", &g).unwrap(),
        a.member_digest("t", &g).unwrap()
    );
    let seen: BTreeSet<_> = restored.log_hwm().into_iter().collect();
    assert!(
        seen.contains(&("a".to_string(), a.log_hwm()["a"])),
        "{seen:?}"
    );
}

#[test]
fn a_snapshot_drops_a_stale_add_it_covers_even_when_the_receiver_is_ahead_elsewhere() {
    // c is restored from a backup that lists u in G; a removed u and collected the record.
    // Before asking a for a snapshot, c applied a newer entry of b that a does not have yet:
    // c's marks are not covered by the snapshot's, and the stale add must still go.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b) = (open(dirs[0].path(), "a"), open(dirs[1].path(), "b"));
    let c = open(dirs[2].path(), "c");
    let u = user(&a, "u");
    let g = group(&a, "G", &[&u]);
    sync_all(&a, &b);
    sync_all(&a, &c);
    drop(c);
    let backup = tempfile::tempdir().unwrap();
    copy_dir(dirs[2].path(), backup.path());
    let c = open(dirs[2].path(), "c");
    change(&a, &g, std::slice::from_ref(&u), false);
    sync_all(&a, &b);
    sync_all(&a, &c);
    let cluster = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let report = |s: &Store| Report {
        marks: s.log_hwm(),
        allocated: s.last_local_seq(),
    };
    let peers = BTreeMap::from([("b".to_string(), report(&b)), ("c".to_string(), report(&c))]);
    for _ in 0..2 {
        a.collect_memberships(a.last_local_seq(), &peers, &cluster)
            .unwrap();
    }
    assert_eq!(a.pending_memberships().unwrap(), 0, "collected at a");
    drop(c);
    let restored = open(backup.path(), "c");
    user(&b, "newer-at-b");
    // Only b's own newer entry (not a's removal, which b also holds).
    let have = restored.log_hwm().get("b").copied().unwrap_or(0);
    let entries = b.log_read("b", have + 1, 100, usize::MAX).unwrap();
    restored.apply_remote("b", &entries).unwrap();
    assert!(restored.log_hwm()["b"] > a.log_hwm().get("b").copied().unwrap_or(0));
    assert_eq!(
        listed(&restored, &g),
        vec![u.clone()],
        "the stale backup lists u"
    );
    transfer(&a, &restored, 1 << 20);
    assert!(listed(&restored, &g).is_empty());
    assert!(restored.groups_of("t", &u, "").unwrap().is_empty());
    assert_eq!(
        restored.member_digest("t", &g).unwrap(),
        a.member_digest("t", &g).unwrap()
    );
}

/// Every user's and group's view, the counts and each live group's listed members.
fn state(store: &Store, users: &[String], groups: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in users {
        out.push(json!(store
            .get("t", ResourceKind::User, id)
            .unwrap()
            .map(|s| s.view)));
    }
    for g in groups {
        let view = store
            .get("t", ResourceKind::Group, g)
            .unwrap()
            .map(|s| s.view);
        // A deleted group's members are not compared: its records go by collection.
        if view.is_some() {
            out.push(json!(listed(store, g)));
            out.push(json!(store.member_total("t", g).unwrap()));
        }
        out.push(json!(view));
    }
    out.push(json!(store.count("t", ResourceKind::User).unwrap()));
    out.push(json!(store.count("t", ResourceKind::Group).unwrap()));
    out
}

#[test]
fn a_snapshot_into_an_empty_region_and_into_one_holding_part_of_the_state_ends_the_same() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, empty, partial) = (
        open(dirs[0].path(), "a"),
        open(dirs[1].path(), "b"),
        open(dirs[2].path(), "c"),
    );
    // Enough documents per chunk that the fast path spreads over threads.
    let mut users: Vec<String> = (0..300).map(|i| user(&a, &format!("u{i}"))).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let g = group(&a, "G", &refs[..100]);
    let gone = group(&a, "gone", &refs[100..110]);
    // The partial region holds this much, and writes a user of its own.
    sync_all(&a, &partial);
    users.push(user(&partial, "from-c"));
    sync_all(&partial, &a);
    // Then a moves on: changed, new and deleted documents, and memberships.
    for id in &users[..50] {
        super::tests::set(&a, id, "title", json!("changed"), false);
    }
    users.extend((300..400).map(|i| user(&a, &format!("v{i}"))));
    change(&a, &g, &users[0..10], false);
    change(&a, &g, &users[300..320], true);
    a.delete("t", ResourceKind::User, &users[299], None)
        .unwrap();
    a.delete("t", ResourceKind::Group, &gone, None).unwrap();
    a.truncate_log(
        &a.log_hwm()
            .iter()
            .map(|(o, m)| (o.clone(), m + 1))
            .collect(),
    )
    .unwrap();
    let groups = [g.clone(), gone.clone()];
    transfer(&a, &empty, 1 << 20);
    transfer(&a, &partial, 1 << 20);
    let want = state(&a, &users, &groups);
    let same = |got: Vec<Value>, what: &str| {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "{what}: item {i}");
        }
    };
    same(
        state(&empty, &users, &groups),
        "the empty region (fast path)",
    );
    same(
        state(&partial, &users, &groups),
        "the partial region (merged)",
    );
    assert_eq!(want[299], json!(null), "the deleted user is gone");
    let digest = |s: &Store| s.digest().map(|(_, d)| d);
    assert_eq!(digest(&empty), digest(&a));
    assert_eq!(digest(&partial), digest(&a));
    // A restarted bootstrap applies the same chunks again: nothing changes.
    transfer(&a, &empty, 1 << 20);
    same(state(&empty, &users, &groups), "the empty region, again");
    assert_eq!(digest(&empty), digest(&a));
    // Replication goes on from the snapshot, into both.
    super::tests::set(&a, &users[5], "title", json!("after"), false);
    sync_all(&a, &empty);
    sync_all(&a, &partial);
    assert_eq!(state(&empty, &users, &groups), state(&a, &users, &groups));
    assert_eq!(digest(&partial), digest(&a));
}

#[test]
fn a_snapshot_document_that_does_not_load_is_skipped_and_counted() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let u = user(&a, "good");
    let mut chunks = Vec::new();
    a.snapshot(
        1 << 20,
        |_| true,
        |items| {
            chunks.push(items);
            true
        },
    )
    .unwrap();
    let bad = keys::resource(
        "t",
        ResourceKind::User,
        &crate::ids::user_id_candidate("t", "bad", 0),
    );
    chunks[0].push((
        super::snapshot::ITEM_DOC,
        bad,
        b"not an automerge document".to_vec(),
    ));
    let mut session = b.begin_snapshot(a.log_hwm());
    let (merged, skipped) = b.apply_snapshot(&mut session, &chunks[0]).unwrap();
    assert_eq!((merged, skipped), (1, 1));
    b.finish_snapshot(session).unwrap();
    assert!(b.get("t", ResourceKind::User, &u).unwrap().is_some());
    assert_eq!(b.count("t", ResourceKind::User).unwrap(), 1);
    assert_eq!(a.digest().map(|(_, d)| d), b.digest().map(|(_, d)| d));
}

#[test]
fn a_document_larger_than_a_chunk_travels_in_parts() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let u = user(&a, "big");
    for i in 0..50 {
        super::tests::set(
            &a,
            &u,
            "title",
            json!(format!("title {i} {}", "x".repeat(200))),
            false,
        );
    }
    transfer(&a, &b, 4096);
    assert_eq!(
        a.get("t", ResourceKind::User, &u).unwrap(),
        b.get("t", ResourceKind::User, &u).unwrap()
    );
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn a_removal_by_name_wins_over_an_add_that_had_not_arrived_yet() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let u = user(&a, "u");
    let g = group(&a, "G", &[]);
    sync_all(&a, &b);
    // The IdP adds u at a, then (failing over) removes it at b before the add replicates.
    change(&a, &g, std::slice::from_ref(&u), true);
    let named: BTreeSet<String> = [u.clone()].into();
    let touch = Touch::Ids(named.clone());
    b.update_group_removing("t", &g, None, &touch, &named, &|old| {
        let mut new = old.clone();
        new.remove("members");
        Ok((new, vec!["members".into()]))
    })
    .unwrap();
    sync_all(&a, &b);
    sync_all(&b, &a);
    for s in [&a, &b] {
        assert!(listed(s, &g).is_empty(), "removed everywhere");
    }
}

#[test]
fn a_change_of_many_members_spreads_over_entries_that_replicate() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let g = group(&a, "G", &[]);
    let before = a.log_hwm()["a"];
    let ids: Vec<String> = (0..25_000).map(|i| format!("m-{i:05}")).collect();
    change(&a, &g, &ids, true);
    assert_eq!(
        a.log_hwm()["a"],
        before + 3,
        "three entries of at most 10,000 writes"
    );
    sync_all(&a, &b);
    assert_eq!(b.all_present_members("t", &g).unwrap().len(), 25_000);
    assert_eq!(a.digest(), b.digest());
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Every region counts a membership decision once, however it learns it. Here c holds a's
/// removal when b's batch arrives with the concurrent add and b's record of the decision: c
/// decides it itself while applying the very entry that logs it.
#[test]
fn a_membership_decision_is_counted_once_where_it_is_found_and_received_at_once() {
    let (da, db, dc) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (a, b, c) = (
        open(da.path(), "a"),
        open(db.path(), "b"),
        open(dc.path(), "c"),
    );
    let g = group(&a, "g", &["m1"]);
    sync_all(&a, &b);
    sync_all(&a, &c);
    // Concurrent: a removes m1, b writes m1's membership again.
    change(&a, &g, &["m1".to_string()], false);
    let touch = Touch::Ids(["m1".to_string()].into_iter().collect());
    b.update_group("t", &g, None, &touch, &|old| {
        let mut new = old.clone();
        new.insert(
            "members".into(),
            json!([{"value": "m1", "display": "M One"}]),
        );
        Ok((new, vec!["members".into()]))
    })
    .unwrap();
    sync_all(&a, &c);
    sync_all(&a, &b);
    let counted = |s: &Store| {
        s.conflicts_indexed()
            .into_iter()
            .find(|(r, _)| *r == Rule::MembershipRemoveWins)
            .map_or(0, |(_, n)| n)
    };
    assert_eq!(counted(&b), 1, "b decided it");
    sync_all(&b, &c);
    assert_eq!(
        counted(&c),
        1,
        "c found it and received b's record in one batch"
    );
    let q = ConflictQuery {
        count: usize::MAX,
        ..Default::default()
    };
    assert_eq!(c.conflicts(&q).unwrap().0, 1);
    assert!(listed(&c, &g).is_empty(), "remove wins");
}

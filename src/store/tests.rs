//! Store unit tests: real RocksDB in temp dirs, two or three stores synced by hand.

use super::*;
use serde_json::json;

pub(super) fn open(dir: &Path, region: &str) -> Store {
    Store::open(
        dir,
        StoreOptions {
            region: region.into(),
            sync_writes: false,
            doc_cache_size: 100,
            io_statistics: false,
            history_entries: 1000,
            tenants: Default::default(),
        },
    )
    .unwrap()
}

pub(super) fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

pub(super) fn user(store: &Store, name: &str) -> String {
    match store
        .create(
            "t",
            ResourceKind::User,
            attrs(json!({"userName": name, "active": true})),
        )
        .unwrap()
    {
        Created::New(s) | Created::Replay(s) => s.view["id"].as_str().unwrap().to_string(),
    }
}

/// Ship everything `from` has of every origin to `to`.
pub(super) fn sync(from: &Store, to: &Store) {
    for (origin, _) in from.log_hwm() {
        let have = to.log_hwm().get(&origin).copied().unwrap_or(0);
        let entries = from
            .log_read(&origin, have + 1, 10_000, usize::MAX)
            .unwrap();
        to.apply_remote(&origin, &entries).unwrap();
    }
}

pub(super) fn set(store: &Store, id: &str, key: &str, value: Value, explicit: bool) {
    store
        .update("t", ResourceKind::User, id, None, &|old| {
            let mut new = old.clone();
            new.insert(key.to_string(), value.clone());
            let ex = if explicit {
                vec![key.to_string()]
            } else {
                vec![]
            };
            Ok((new, ex))
        })
        .unwrap();
}

fn all_conflicts(store: &Store) -> Vec<Conflict> {
    let q = ConflictQuery {
        count: usize::MAX,
        ..Default::default()
    };
    store.conflicts(&q).unwrap().1
}

#[test]
fn a_rename_onto_a_concurrently_created_name_keeps_one_holder() {
    let (de, du) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (eu, us) = (open(de.path(), "eu"), open(du.path(), "us"));
    let old = user(&eu, "old");
    sync(&eu, &us);
    // Partitioned: eu renames "old" to "bob" while us creates "bob".
    set(&eu, &old, "userName", json!("bob"), false);
    let bob = user(&us, "bob");
    assert_ne!(old, bob);
    for _ in 0..3 {
        sync(&eu, &us);
        sync(&us, &eu);
    }
    for store in [&eu, &us] {
        let holders = store
            .lookup("t", ResourceKind::User, "userName", "bob")
            .unwrap();
        assert_eq!(holders.len(), 1, "{holders:?}");
        let conflicts = all_conflicts(store);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].rule, Rule::UsernameMerge);
    }
    // The survivor is the earlier created user; the loser is renamed and deactivated.
    let loser = eu.get("t", ResourceKind::User, &bob).unwrap().unwrap();
    assert_eq!(loser.view["active"], json!(false));
    assert!(loser.view["userName"]
        .as_str()
        .unwrap()
        .starts_with("bob~conflict-"));
    assert_eq!(
        loser,
        us.get("t", ResourceKind::User, &bob).unwrap().unwrap()
    );
    assert_eq!(
        eu.get("t", ResourceKind::User, &old).unwrap(),
        us.get("t", ResourceKind::User, &old).unwrap()
    );
    assert_eq!(eu.digest().map(|d| d.1), us.digest().map(|d| d.1));
}

#[test]
fn tombstones_are_collected_once_every_region_saw_the_delete_and_stay_deleted() {
    let (de, du) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (eu, us) = (open(de.path(), "eu"), open(du.path(), "us"));
    let bob = user(&eu, "bob");
    sync(&eu, &us);
    // us updates bob concurrently with eu's delete; the update reaches eu only later.
    set(&us, &bob, "title", json!("late"), false);
    eu.delete("t", ResourceKind::User, &bob, None).unwrap();
    // Nothing is collected before every region's marks reach the delete (us has eu's
    // first entry only).
    let seen: std::collections::BTreeMap<String, u64> = us
        .log_hwm()
        .into_iter()
        .filter(|(o, _)| o == "eu")
        .collect();
    assert_eq!(seen.get("eu"), Some(&1));
    assert_eq!(eu.collect_tombstones(&seen).unwrap(), 0);
    assert!(eu
        .document("t", ResourceKind::User, &bob)
        .unwrap()
        .is_some());
    sync(&eu, &us);
    let seen = us
        .log_hwm()
        .into_iter()
        .filter(|(o, _)| o == "eu")
        .collect();
    assert_eq!(eu.collect_tombstones(&seen).unwrap(), 1);
    assert!(eu
        .document("t", ResourceKind::User, &bob)
        .unwrap()
        .is_none());
    assert_eq!(eu.collect_tombstones(&seen).unwrap(), 0);
    // The late concurrent update is dropped: still deleted, and a new POST gets a new id.
    sync(&us, &eu);
    assert!(eu.get("t", ResourceKind::User, &bob).unwrap().is_none());
    assert!(us.get("t", ResourceKind::User, &bob).unwrap().is_none());
    assert!(eu
        .export(&Lookup::Id {
            tenant: "t".into(),
            kind: ResourceKind::User,
            id: bob.clone()
        })
        .unwrap()
        .is_none());
    assert_ne!(user(&eu, "bob"), bob);
    // Collected here, not yet in us: the digests still agree.
    sync(&eu, &us);
    assert_eq!(eu.digest(), us.digest());
}

#[test]
fn the_heads_digest_matches_across_replicas_and_survives_a_restart() {
    let (de, du) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (eu, us) = (open(de.path(), "eu"), open(du.path(), "us"));
    let a = user(&eu, "a");
    user(&us, "b");
    set(&eu, &a, "active", json!(false), true);
    sync(&eu, &us);
    sync(&us, &eu);
    let (d_eu, d_us) = (eu.digest().unwrap(), us.digest().unwrap());
    assert_eq!(d_eu, d_us);
    assert_ne!(d_eu.1, [0; 32]);
    set(&us, &a, "title", json!("x"), false);
    assert_ne!(us.digest().unwrap().1, d_us.1);
    drop(us);
    let us = open(du.path(), "us");
    sync(&us, &eu);
    assert_eq!(eu.digest(), us.digest());
}

#[test]
fn a_replica_fed_the_log_serves_identical_views() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let alice = user(&a, "alice");
    let bob = user(&a, "bob");
    set(&a, &alice, "displayName", json!("Alice"), false);
    let group = match a
        .create(
            "t",
            ResourceKind::Group,
            attrs(json!({"displayName": "G", "members": [{"value": alice}]})),
        )
        .unwrap()
    {
        Created::New(s) => s.view["id"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    a.delete("t", ResourceKind::User, &bob, None).unwrap();

    sync(&a, &b);
    assert_eq!(a.log_hwm(), b.log_hwm());
    for (kind, id) in [(ResourceKind::User, &alice), (ResourceKind::Group, &group)] {
        let (va, vb) = (a.get("t", kind, id).unwrap(), b.get("t", kind, id).unwrap());
        assert!(va.is_some());
        assert_eq!(
            serde_json::to_vec(&va.unwrap().view).unwrap(),
            serde_json::to_vec(&vb.unwrap().view).unwrap()
        );
    }
    assert!(b.get("t", ResourceKind::User, &bob).unwrap().is_none());
    assert_eq!(
        b.lookup("t", ResourceKind::User, "userName", "ALICE")
            .unwrap(),
        vec![alice.clone()]
    );
    assert_eq!(b.groups_of("t", &alice, "http://x").unwrap().len(), 1);
    // Applying the same entries again changes nothing.
    let entries = a.log_read("a", 1, 10_000, usize::MAX).unwrap();
    assert_eq!(b.apply_remote("a", &entries).unwrap().applied, 0);
}

#[test]
fn concurrent_writes_in_two_regions_converge_and_deactivation_wins() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let id = user(&a, "carol");
    sync(&a, &b);
    set(&a, &id, "active", json!(false), true);
    for _ in 0..3 {
        set(&b, &id, "active", json!(true), true);
    }
    set(&b, &id, "title", json!("Boss"), false);
    sync(&a, &b);
    sync(&b, &a);
    let (va, vb) = (
        a.get("t", ResourceKind::User, &id).unwrap().unwrap(),
        b.get("t", ResourceKind::User, &id).unwrap().unwrap(),
    );
    assert_eq!(va, vb);
    assert_eq!(va.view["active"], json!(false));
    assert_eq!(va.view["title"], json!("Boss"));
    assert_eq!(a.log_hwm(), b.log_hwm());
}

#[test]
fn lookups_round_trip_and_export_import_carries_a_document() {
    for l in [
        Lookup::Id {
            tenant: "t".into(),
            kind: ResourceKind::Group,
            id: "g-1".into(),
        },
        Lookup::UserName {
            tenant: "t".into(),
            user_name: "Odd\0Name@x".into(),
        },
    ] {
        assert_eq!(Lookup::decode(&l.encode()), Some(l));
    }
    assert_eq!(Lookup::decode(b"i\0BAD TENANT\0User\0x"), None);
    assert_eq!(Lookup::decode(b"zz"), None);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(da.path(), "a"), open(db.path(), "b"));
    let id = user(&a, "dora");
    let doc = a
        .export(&Lookup::UserName {
            tenant: "t".into(),
            user_name: "DORA".into(),
        })
        .unwrap()
        .expect("a holds dora");
    assert_eq!(
        b.import("t", &doc).unwrap(),
        (ResourceKind::User, id.clone())
    );
    assert_eq!(
        a.get("t", ResourceKind::User, &id).unwrap(),
        b.get("t", ResourceKind::User, &id).unwrap()
    );
    assert!(b
        .export(&Lookup::UserName {
            tenant: "t".into(),
            user_name: "nobody".into()
        })
        .unwrap()
        .is_none());
}

#[test]
fn reopening_fills_holes_in_the_local_log() {
    let d = tempfile::tempdir().unwrap();
    {
        let a = open(d.path(), "a");
        user(&a, "x");
        // Simulate a sequence number allocated but never committed (a crash mid-write).
        a.next_seq.fetch_add(1, Ordering::Relaxed);
        user(&a, "y");
        assert_eq!(a.log_hwm()["a"], 1);
    }
    let a = open(d.path(), "a");
    assert_eq!(a.log_hwm()["a"], 3);
    let entries = a.log_read("a", 1, 10, usize::MAX).unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|(s, e)| (*s, e.is_empty()))
            .collect::<Vec<_>>(),
        vec![(1, false), (2, true), (3, false)]
    );
}

fn open_with(dir: &Path, tenants: &[(&str, TenantPolicy)]) -> Store {
    let mut options = StoreOptions {
        region: "eu".into(),
        sync_writes: false,
        doc_cache_size: 100,
        io_statistics: false,
        history_entries: 1000,
        tenants: Default::default(),
    };
    for (name, policy) in tenants {
        options.tenants.insert(name.to_string(), policy.clone());
    }
    Store::open(dir, options).unwrap()
}

fn is_uniqueness<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Scim(ScimError::Uniqueness(_))))
}

#[test]
fn a_taken_user_name_is_refused_unless_the_tenant_answers_replays() {
    let dir = tempfile::tempdir().unwrap();
    let replays = TenantPolicy {
        idempotent_create: true,
        ..TenantPolicy::default()
    };
    let store = open_with(dir.path(), &[("lenient", replays)]);
    let alice = attrs(json!({"userName": "alice", "active": true}));
    let first = match store
        .create("t", ResourceKind::User, alice.clone())
        .unwrap()
    {
        Created::New(s) => s,
        other => panic!("{other:?}"),
    };
    // The default: RFC 7644 §3.3, 409 for a taken userName, even with the same attributes.
    assert!(is_uniqueness(store.create(
        "t",
        ResourceKind::User,
        alice.clone()
    )));
    let other_case = attrs(json!({"userName": "ALICE", "active": true}));
    assert!(is_uniqueness(store.create(
        "t",
        ResourceKind::User,
        other_case.clone()
    )));
    // A tenant that opted in gets the existing user back for an identical POST only.
    let created = store.create("lenient", ResourceKind::User, alice.clone());
    let id = match created.unwrap() {
        Created::New(s) => s.view["id"].clone(),
        other => panic!("{other:?}"),
    };
    assert_ne!(id, first.view["id"], "ids are per tenant");
    match store.create("lenient", ResourceKind::User, alice).unwrap() {
        Created::Replay(s) => assert_eq!(s.view["id"], id),
        other => panic!("{other:?}"),
    }
    assert!(is_uniqueness(store.create(
        "lenient",
        ResourceKind::User,
        other_case
    )));
}

#[test]
fn group_display_names_are_unique_per_tenant_case_insensitively_unless_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let free = TenantPolicy {
        unique_group_names: false,
        ..TenantPolicy::default()
    };
    let store = open_with(dir.path(), &[("free", free)]);
    let group = |tenant: &str, name: &str| {
        store.create(
            tenant,
            ResourceKind::Group,
            attrs(json!({"displayName": name})),
        )
    };
    let admins = match group("t", "Admins").unwrap() {
        Created::New(s) => s.view["id"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    assert!(is_uniqueness(group("t", "admins")));
    assert!(group("u", "Admins").is_ok(), "names are per tenant");
    let ops = match group("t", "Ops").unwrap() {
        Created::New(s) => s.view["id"].as_str().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    // A rename to a taken name is refused; to a free one (or its own, in another case) is not.
    let rename = |id: &str, to: &str| {
        let to = to.to_string();
        store.update("t", ResourceKind::Group, id, None, &move |old: &Map<
            String,
            Value,
        >| {
            let mut new = old.clone();
            new.insert("displayName".into(), json!(to));
            Ok((new, vec!["displayName".into()]))
        })
    };
    assert!(is_uniqueness(rename(&ops, "ADMINS")));
    rename(&admins, "ADMINS").unwrap();
    rename(&ops, "Operations").unwrap();
    // Deleting a group frees its name.
    store
        .delete("t", ResourceKind::Group, &admins, None)
        .unwrap();
    assert!(group("t", "admins").is_ok());
    // A tenant that turned uniqueness off may have two groups of one name.
    assert!(group("free", "Admins").is_ok());
    assert!(group("free", "Admins").is_ok());
}

//! The cost of the conflict rules, in process (two real stores, RocksDB with synced writes):
//!
//! 1. apply throughput of replicated changes without conflicts (one attribute each) against
//!    changes that each conflict (a reactivation concurrent with a deactivation, so every merge
//!    runs the rules, finds a conflict and writes its record);
//! 2. merge time per conflicting document (load the change, detect, record), and detection alone;
//! 3. log and record size per conflict.
//!
//! `cargo run --release --example bench_conflicts -- [users]` (default 2000). Prints figures;
//! asserts only that the conflicts really happened.

use std::time::Instant;

use geoscim::conflict;
use geoscim::scim::schema::ResourceKind;
use geoscim::store::{Created, Store, StoreOptions};
use serde_json::{json, Map, Value};

const TENANT: &str = "bench";
const BATCH: usize = 256;

fn open(dir: &std::path::Path, region: &str) -> Store {
    Store::open(
        &dir.join(region),
        StoreOptions {
            region: region.into(),
            sync_writes: true,
            doc_cache_size: 100_000,
            io_statistics: false,
            history_entries: 1000,
            tenants: Default::default(),
        },
    )
    .expect("open store")
}

/// Ship `from`'s entries of its own origin after `after` to `to`, in replication-sized batches.
/// Returns (entries, bytes, seconds).
fn ship(from: &Store, to: &Store, after: u64) -> (usize, usize, f64) {
    let origin = from.region().to_string();
    let mut next = after + 1;
    let (mut n, mut bytes) = (0, 0);
    let started = Instant::now();
    loop {
        let entries = from
            .log_read(&origin, next, BATCH, 1 << 20)
            .expect("read log");
        if entries.is_empty() {
            break;
        }
        next = entries.last().expect("nonempty").0 + 1;
        n += entries.len();
        bytes += entries.iter().map(|(_, e)| e.len()).sum::<usize>();
        to.apply_remote(&origin, &entries).expect("apply");
    }
    (n, bytes, started.elapsed().as_secs_f64())
}

fn set(store: &Store, id: &str, attr: &str, value: Value) {
    let attr = attr.to_string();
    store
        .update(TENANT, ResourceKind::User, id, None, &move |old| {
            let mut new: Map<String, Value> = old.clone();
            new.insert(attr.clone(), value.clone());
            Ok((new, vec![attr.clone()]))
        })
        .expect("update");
}

fn main() {
    let users: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("temp dir");
    let (eu, us) = (open(dir.path(), "eu"), open(dir.path(), "us"));

    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let attrs = json!({"userName": format!("user{i}@example.com"), "active": true,
                           "displayName": format!("User {i}")});
        match eu
            .create(
                TENANT,
                ResourceKind::User,
                attrs.as_object().cloned().expect("object"),
            )
            .expect("create")
        {
            Created::New(s) | Created::Replay(s) => {
                ids.push(s.view["id"].as_str().expect("id").to_string())
            }
        }
    }
    ship(&eu, &us, 0);
    let eu_mark = eu.last_local_seq();

    // 1a. No conflicts: one displayName change per user in eu, applied in us.
    for (i, id) in ids.iter().enumerate() {
        set(&eu, id, "displayName", json!(format!("Renamed {i}")));
    }
    let (n_plain, bytes_plain, t_plain) = ship(&eu, &us, eu_mark);
    let eu_mark = eu.last_local_seq();

    // 1b. Conflicts: us deactivates every user while eu concurrently reactivates it.
    for id in &ids {
        set(&us, id, "active", json!(false));
    }
    for id in &ids {
        set(&eu, id, "active", json!(true));
    }
    let us_log_before = us.last_local_seq();
    let (n_conf, bytes_conf, t_conf) = ship(&eu, &us, eu_mark);
    let records_written = (us.last_local_seq() - us_log_before) as usize;
    let record_log_bytes: usize = us
        .log_read("us", us_log_before + 1, usize::MAX, usize::MAX)
        .expect("read")
        .iter()
        .map(|(_, e)| e.len())
        .sum();
    let (total, page) = us
        .conflicts(&conflict::ConflictQuery {
            count: usize::MAX,
            ..Default::default()
        })
        .expect("conflicts");
    assert_eq!(total, users, "one sticky-deactivation record per user");
    let record_json: usize = page
        .iter()
        .map(|c| serde_json::to_vec(c).expect("json").len())
        .sum();
    let inactive = ids
        .iter()
        .filter(|id| {
            us.get(TENANT, ResourceKind::User, id)
                .expect("get")
                .is_some_and(|s| s.view["active"] == json!(false))
        })
        .count();
    assert_eq!(inactive, users, "deactivation wins everywhere");

    // 2. Detection alone, on the merged documents (in memory).
    let mut docs: Vec<_> = ids
        .iter()
        .map(|id| {
            us.document(TENANT, ResourceKind::User, id)
                .expect("doc")
                .expect("exists")
        })
        .collect();
    let started = Instant::now();
    let mut found = 0;
    for (doc, id) in docs.iter_mut().zip(&ids) {
        let res = conflict::Resource {
            tenant: TENANT,
            kind: "User",
            id,
        };
        found += conflict::detect(doc, res).expect("detect").len();
    }
    let t_detect = started.elapsed().as_secs_f64();
    assert_eq!(found, users);

    println!("conflict rules, {users} users, synced RocksDB, batches of {BATCH}");
    println!("| case | changes | changes/s | µs/change | bytes/change on the log |");
    println!("|---|---:|---:|---:|---:|");
    for (name, n, bytes, t) in [
        ("apply, no conflict", n_plain, bytes_plain, t_plain),
        ("apply, each change conflicts", n_conf, bytes_conf, t_conf),
    ] {
        println!(
            "| {name} | {n} | {:.0} | {:.0} | {} |",
            n as f64 / t,
            t * 1e6 / n as f64,
            bytes / n.max(1)
        );
    }
    println!(
        "merge cost of a conflict: {:.0} µs per document more than a plain change",
        (t_conf / n_conf as f64 - t_plain / n_plain as f64) * 1e6
    );
    println!(
        "detection alone: {:.1} µs per conflicting document",
        t_detect * 1e6 / users as f64
    );
    println!(
        "per conflict: {} bytes of record change on the log ({} local entries), {} bytes of record JSON in the conflicts CF",
        record_log_bytes / records_written.max(1),
        records_written,
        record_json / page.len().max(1)
    );
}

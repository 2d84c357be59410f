//! Users and groups of the benchmark: their bodies, ids and the layout of disjoint groups;
//! the in-process build of the users.

use super::*;

pub(crate) fn user_name(i: usize) -> String {
    format!("user{i:08}@example.com")
}

pub(crate) fn user_id(i: usize) -> String {
    geoscim::ids::user_id_candidate(TENANT, &user_name(i), 0)
}

/// An ordinary user as an IdP provisions it: name, email, enterprise attributes.
pub(crate) fn user_body(i: usize) -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
        "userName": user_name(i),
        "externalId": format!("ext-{i:08}"),
        "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}"),
                 "formatted": format!("Given{i} Family{i}")},
        "displayName": format!("Given{i} Family{i}"),
        "title": "Engineer",
        "emails": [{"value": user_name(i), "type": "work", "primary": true}],
        "active": true,
        ENTERPRISE_USER_SCHEMA: {
            "employeeNumber": format!("{i}"),
            "department": format!("Department {}", i % 100),
            "costCenter": format!("CC-{}", i % 1000),
            "organization": "Example Corp",
            "division": format!("Division {}", i % 10),
        },
    })
}

/// The users of the benchmark: group `j` has users `offsets[j] .. offsets[j] + sizes[j]`, the
/// extra pool follows.
pub(crate) struct Layout {
    pub(crate) sizes: Vec<usize>,
    pub(crate) offsets: Vec<usize>,
    pub(crate) extra_start: usize,
    pub(crate) extra: usize,
}

impl Layout {
    pub(crate) fn new(a: &Args) -> Layout {
        let mut offsets = Vec::new();
        let mut at = 0;
        for s in &a.sizes {
            offsets.push(at);
            at += s;
        }
        Layout {
            sizes: a.sizes.clone(),
            offsets,
            extra_start: at,
            extra: (a.batches * BATCH).max(a.singles),
        }
    }
    pub(crate) fn users(&self) -> usize {
        self.extra_start + self.extra
    }
    pub(crate) fn extra_id(&self, k: usize) -> String {
        user_id(self.extra_start + k)
    }
    pub(crate) fn member_id(&self, j: usize, k: usize) -> String {
        user_id(self.offsets[j] + k)
    }
}

pub(crate) fn open_store(dir: &Path, sync: bool, io: bool) -> anyhow::Result<Store> {
    Ok(Store::open(
        dir,
        StoreOptions {
            region: "eu".into(),
            sync_writes: sync,
            doc_cache_size: 1000,
            io_statistics: io,
            history_entries: 1000,
            tenants: Default::default(),
        },
    )?)
}

/// Create users `0..n` in process, on two threads. Returns seconds.
pub(crate) fn build_users(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let store = Arc::new(open_store(dir, false, false)?);
    let started = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for i in (t..n).step_by(2) {
                    let normalized =
                        geoscim::scim::resource::normalize(ResourceKind::User, &user_body(i))?;
                    store.create(TENANT, ResourceKind::User, stored_attrs(normalized))?;
                    if t == 0 && i % 100_000 == 0 && i > 0 {
                        eprintln!(
                            "bench_scale: {i} users ({:.0} s)",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread")?;
    }
    Ok(started.elapsed().as_secs_f64())
}

pub(crate) fn stored_attrs(resource: Value) -> Map<String, Value> {
    match resource {
        Value::Object(mut m) => {
            for k in ["schemas", "id", "meta"] {
                m.remove(k);
            }
            m
        }
        _ => Map::new(),
    }
}

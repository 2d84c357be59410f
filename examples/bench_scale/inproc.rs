//! In process: the RocksDB keys one membership change touches, and the store's own latency.

use super::*;

pub(crate) fn as_resource(attrs: &Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([GROUP_SCHEMA]));
    m.extend(attrs.clone());
    Value::Object(m)
}

/// One PATCH applied as the API applies it (`touched` members only).
pub(crate) fn store_patch(store: &Store, group: &str, body: &Value) -> anyhow::Result<()> {
    let limits = FilterLimits {
        max_len: 4096,
        max_depth: 32,
    };
    let ops = geoscim::scim::patch::parse_request(body, 1000, &limits)?;
    let touch = geoscim::scim::members::touched(&ops);
    let apply = |old: &Map<String, Value>| {
        let mut resource = as_resource(old);
        let outcome = geoscim::scim::patch::apply(&mut resource, ResourceKind::Group, &ops)?;
        Ok((stored_attrs(resource), outcome.explicit))
    };
    store.update_group(TENANT, group, None, &touch, &apply)?;
    Ok(())
}

pub(crate) fn io_phase(
    dir: &Path,
    a: &Args,
    layout: &Layout,
    groups: &[String],
    report: &mut Report,
) -> anyhow::Result<()> {
    let store = open_store(dir, true, true)?;
    for (j, group) in groups.iter().enumerate() {
        let col = format!("1 region {}", human(layout.sizes[j]));
        let id = layout.extra_id(0);
        let before = store.io_counts().context("io statistics")?;
        store_patch(
            &store,
            group,
            &patch_body(vec![add_op(std::slice::from_ref(&id))]),
        )?;
        let mid = store.io_counts().context("io statistics")?;
        store_patch(&store, group, &patch_body(vec![remove_op(&id)]))?;
        let after = store.io_counts().context("io statistics")?;
        let (add, rem) = (mid - before, after - mid);
        report.groups.set(
            "in process: keys read / written / iterator moves, one add",
            &col,
            format!(
                "{} / {} / {}",
                add.keys_read, add.keys_written, add.iterator_moves
            ),
        );
        report.groups.set(
            "in process: keys read / written / iterator moves, one remove",
            &col,
            format!(
                "{} / {} / {}",
                rem.keys_read, rem.keys_written, rem.iterator_moves
            ),
        );
    }
    // The store's own latency of single adds (synced), interleaved across the groups.
    let mut add_ms = vec![Samples::default(); groups.len()];
    let n = a.singles.min(layout.extra);
    for k in 1..n {
        let body = patch_body(vec![add_op(&[layout.extra_id(k)])]);
        for (j, group) in groups.iter().enumerate() {
            let started = Instant::now();
            store_patch(&store, group, &body)?;
            add_ms[j].ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    for k in 1..n {
        let body = patch_body(vec![remove_op(&layout.extra_id(k))]);
        for group in groups {
            store_patch(&store, group, &body)?;
        }
    }
    for (j, s) in add_ms.iter().enumerate() {
        report.groups.set(
            "in process: Store::update_group single add (synced): p50 / p99 ms",
            &format!("1 region {}", human(layout.sizes[j])),
            s.cell(),
        );
    }
    Ok(())
}

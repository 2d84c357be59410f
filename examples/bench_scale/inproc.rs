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
    // The store's own latency of single adds and removes (synced), interleaved across the
    // groups, with the blocks each read past the block cache and the dead entries its seeks
    // stepped over: the same keys are touched at every size, so these say what else differs.
    let mut add_ms = vec![Samples::default(); groups.len()];
    let mut remove_ms = vec![Samples::default(); groups.len()];
    let mut add_io = vec![IoCounts::default(); groups.len()];
    let mut remove_io = vec![IoCounts::default(); groups.len()];
    let n = a.singles.min(layout.extra);
    let timed = |samples: &mut Samples,
                 io: &mut IoCounts,
                 group: &str,
                 body: &Value|
     -> anyhow::Result<()> {
        let before = store.io_counts().context("io statistics")?;
        let started = Instant::now();
        store_patch(&store, group, body)?;
        samples.ms.push(started.elapsed().as_secs_f64() * 1e3);
        *io += store.io_counts().context("io statistics")? - before;
        Ok(())
    };
    for k in 1..n {
        let body = patch_body(vec![add_op(&[layout.extra_id(k)])]);
        for (j, group) in groups.iter().enumerate() {
            timed(&mut add_ms[j], &mut add_io[j], group, &body)?;
        }
    }
    for k in 1..n {
        let body = patch_body(vec![remove_op(&layout.extra_id(k))]);
        for (j, group) in groups.iter().enumerate() {
            timed(&mut remove_ms[j], &mut remove_io[j], group, &body)?;
        }
    }
    let ops = n.saturating_sub(1).max(1) as f64;
    // The first page of 1,000 members as the API reads it (the page, then one seek past its
    // last member for `next`), with the dead entries the iterator steps over: after the
    // batches above, removed members' index entries are deletions until a compaction drops
    // them; then the same after `Store::compact`, side by side.
    let pages = (a.gets / 5).max(1);
    for compacted in [false, true] {
        if compacted {
            store.compact().context("compaction")?;
        }
        for (j, group) in groups.iter().enumerate() {
            let mut ms = Samples::default();
            let mut io = IoCounts::default();
            let mut shown = 0;
            for _ in 0..pages {
                let before = store.io_counts().context("io statistics")?;
                let started = Instant::now();
                let page = store.member_page(TENANT, group, None, 1000)?;
                if let Some(last) = page.last().and_then(|m| m["value"].as_str()) {
                    store.member_page(TENANT, group, Some(last), 1)?;
                }
                ms.ms.push(started.elapsed().as_secs_f64() * 1e3);
                io += store.io_counts().context("io statistics")? - before;
                shown = page.len();
            }
            let when = if compacted { "after" } else { "before" };
            report.groups.set(
                &format!(
                    "in process: first page of members ({pages}), {when} a compaction: p50 / p99 ms; dead entries skipped per page"
                ),
                &format!("1 region {}", human(layout.sizes[j])),
                format!(
                    "{}; {:.0} [{shown} shown]",
                    ms.cell(),
                    io.internal_keys_skipped as f64 / pages as f64
                ),
            );
        }
    }
    for j in 0..groups.len() {
        let col = format!("1 region {}", human(layout.sizes[j]));
        report.groups.set(
            "in process: Store::update_group single add (synced): p50 / p99 ms",
            &col,
            add_ms[j].cell(),
        );
        report.groups.set(
            "in process: Store::update_group single remove (synced): p50 / p99 ms",
            &col,
            remove_ms[j].cell(),
        );
        report.groups.set(
            "in process: block cache misses / dead entries skipped, per single add; per remove (mean)",
            &col,
            format!(
                "{:.1} / {:.1}; {:.1} / {:.1}",
                add_io[j].block_cache_misses as f64 / ops,
                add_io[j].internal_keys_skipped as f64 / ops,
                remove_io[j].block_cache_misses as f64 / ops,
                remove_io[j].internal_keys_skipped as f64 / ops
            ),
        );
    }
    Ok(())
}

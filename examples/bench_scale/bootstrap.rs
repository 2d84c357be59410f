//! `--only bootstrap`: just the snapshot bootstrap, quickly and comparably.
//!
//! 1. Users in process (as the full run), then each group created and filled in process
//!    (`Store::update_group` in batches of 1,000, unsynced: only to build faster).
//! 2. In process: `Store::snapshot` of eu's dir applied chunk by chunk into an empty store
//!    (the store's own cost, no network), timed, and the two stores' heads digests compared.
//! 3. eu serves its dir with the three-region `[replication]` table and truncates its log;
//!    then, one after the other, an empty region per binary of `--bootstrap-bins` (default:
//!    the main binary; us, then ap) starts and bootstraps from eu's snapshot, timed from
//!    process start to its mark of eu reaching eu's, with progress every 10 s. Passing an old
//!    and a new binary gives a before/after comparison from the same data in one run.

use super::*;

/// Create each group and fill it in process. Returns the group ids.
pub(crate) fn build_groups(dir: &Path, layout: &Layout) -> anyhow::Result<Vec<String>> {
    let store = open_store(dir, false, false)?;
    let mut groups = Vec::new();
    for (j, size) in layout.sizes.iter().enumerate() {
        let started = Instant::now();
        let mut attrs = Map::new();
        attrs.insert("displayName".into(), json!(format!("bench-{size}")));
        let group = match store.create(TENANT, ResourceKind::Group, attrs)? {
            geoscim::store::Created::New(s) | geoscim::store::Created::Replay(s) => {
                s.view["id"].as_str().unwrap_or_default().to_string()
            }
        };
        for b in 0..size.div_ceil(BATCH) {
            let ids: Vec<String> = (b * BATCH..((b + 1) * BATCH).min(*size))
                .map(|k| layout.member_id(j, k))
                .collect();
            store_patch(&store, &group, &patch_body(vec![add_op(&ids)]))?;
        }
        eprintln!(
            "bench_scale: group of {size} members built in process in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        groups.push(group);
    }
    Ok(groups)
}

/// CPU seconds this process used so far (user + system, every thread), from /proc.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) are space-separated.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// Snapshot `src` into an empty store at `dst`, in process: (items, seconds, CPU seconds,
/// digests equal).
pub(crate) fn inproc_snapshot(
    src: &Path,
    dst: &Path,
    chunk_bytes: usize,
) -> anyhow::Result<(u64, f64, f64, bool)> {
    let from = open_store(src, false, false)?;
    let to = Store::open(
        dst,
        StoreOptions {
            region: "us".into(),
            sync_writes: true,
            doc_cache_size: 1000,
            io_statistics: false,
            history_entries: 1000,
            tenants: Default::default(),
        },
    )?;
    let started = Instant::now();
    let cpu = cpu_s();
    let session = std::cell::RefCell::new(None);
    let mut items = 0u64;
    let mut failed = None;
    from.snapshot(
        chunk_bytes,
        |marks| {
            *session.borrow_mut() = Some(to.begin_snapshot(marks));
            true
        },
        |chunk| {
            items += chunk.len() as u64;
            let mut session = session.borrow_mut();
            let Some(s) = session.as_mut() else {
                return false;
            };
            match to.apply_snapshot(s, &chunk) {
                Ok(_) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    to.finish_snapshot(session.into_inner().context("no snapshot began")?)?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_s() - cpu;
    let same = from.digest().map(|(_, d)| d) == to.digest().map(|(_, d)| d);
    Ok((items, secs, cpu, same))
}

pub(crate) async fn run_only(a: &Args, report: &mut Report) -> anyhow::Result<()> {
    let layout = Layout::new(a);
    std::fs::create_dir_all(&a.work)?;
    anyhow::ensure!(
        std::fs::read_dir(&a.work)?.next().is_none(),
        "{} is not empty",
        a.work.display()
    );
    let work = a.work.canonicalize()?;
    let users = layout.users();
    let users_label = format!("{users} users");
    let eu_dir = work.join("eu");
    let build_s = build_users(&eu_dir, users)?;
    report.scale.set(
        "users created in process (2 threads, unsynced)",
        &users_label,
        format!("{build_s:.0} s ({:.0}/s)", users as f64 / build_s),
    );
    let started = Instant::now();
    build_groups(&eu_dir, &layout)?;
    report.scale.set(
        "groups built in process (unsynced)",
        &users_label,
        format!(
            "{:.0} s ({} memberships)",
            started.elapsed().as_secs_f64(),
            layout.sizes.iter().sum::<usize>()
        ),
    );

    // 2. In process.
    let inproc = work.join("inproc");
    let (items, secs, cpu, same) = inproc_snapshot(&eu_dir, &inproc, 1 << 20)?;
    report.scale.set(
        "in process: snapshot of eu applied into an empty store (1 MB chunks, synced)",
        &users_label,
        format!(
            "{secs:.1} s, {items} items, {:.0} items/s; CPU {cpu:.1} s ({:.0} µs per item); digests {}",
            items as f64 / secs,
            cpu * 1e6 / items.max(1) as f64,
            if same { "equal" } else { "DIFFER" }
        ),
    );
    eprintln!(
        "bench_scale: in process: {items} items in {secs:.1} s (CPU {cpu:.1} s), digests equal: {same}"
    );
    std::fs::remove_dir_all(&inproc)?;

    // 3. Real processes.
    let http = Http::new();
    let n: u32 = rand::random();
    let net = format!("127.{}.{}", 10 + n % 200, 1 + (n >> 8) % 250);
    let ip = |i: usize| format!("{net}.{}", i + 1);
    let http_port = region::free_port(&ip(0));
    let quic_port = region::free_port(&ip(0));
    let certs = work.join("certs");
    let status = std::process::Command::new(&a.bin)
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--regions", "eu,us,ap"])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "geoscim certs failed");
    let names = ["eu", "us", "ap"];
    let repl = |i: usize, extra: &str| {
        let mut t = format!(
            "[replication]\nlisten = \"{}:{quic_port}\"\ncerts_dir = \"{}\"\n{extra}",
            ip(i),
            certs.display()
        );
        for (k, p) in names.iter().enumerate().filter(|(k, _)| *k != i) {
            t += &format!(
                "[[replication.peers]]\nregion = \"{p}\"\naddr = \"{}:{quic_port}\"\n",
                ip(k)
            );
        }
        t
    };
    let wait = Duration::from_secs(600);
    let eu_spec = Spec {
        name: "eu".into(),
        ip: ip(0),
        http_port,
        data_dir: eu_dir.clone(),
        extra: repl(
            0,
            "truncate_interval_ms = 1000\nlog_keep_entries = 1000\nlog_max_entries = 2000\n",
        ),
    };
    let mut eu = Region::start(&a.bin, &work, eu_spec, &http.client, wait).await?;
    let started = Instant::now();
    while http.health(&eu.url()).await["replication"]["floor"]["eu"]
        .as_u64()
        .unwrap_or(1)
        <= 1
    {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "eu did not truncate its log within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let eu_mark = own_mark(&http, &eu.url(), "eu").await;
    let bins = if a.bootstrap_bins.is_empty() {
        vec![a.bin.clone()]
    } else {
        a.bootstrap_bins.clone()
    };
    anyhow::ensure!(bins.len() <= 2, "--bootstrap-bins: at most two binaries");
    for (i, bin) in bins.iter().enumerate() {
        let name = names[i + 1];
        let spec = Spec {
            name: name.to_string(),
            ip: ip(i + 1),
            http_port,
            data_dir: work.join(name),
            extra: repl(i + 1, ""),
        };
        let (mut r, took, snapshot) = bootstrap_one(&http, bin, &work, spec, eu_mark, a).await?;
        let rss = r.rss_kb().0 as f64 / 1024.0;
        r.stop();
        report.scale.set(
            &format!(
                "new empty region {name} ({}): process start → snapshot applied and eu's mark reached",
                bin.display()
            ),
            &users_label,
            format!(
                "{took:.1} s ({} items, {} MB, {:.1} s and {:.0} items/s as {name} counts it; RSS after {rss:.0} MB)",
                snapshot["items"],
                snapshot["bytes"].as_u64().unwrap_or(0) / 1_000_000,
                snapshot["ms"].as_u64().unwrap_or(0) as f64 / 1e3,
                snapshot["items"].as_u64().unwrap_or(0) as f64
                    / (snapshot["ms"].as_u64().unwrap_or(1).max(1) as f64 / 1e3),
            ),
        );
    }
    eu.stop();
    Ok(())
}

/// Start an empty region and wait until it bootstrapped from eu (at most `a.bootstrap_s`),
/// printing progress every 10 s. Returns (the region, seconds, the snapshot's `last_received`).
pub(crate) async fn bootstrap_one(
    http: &Http,
    bin: &Path,
    work: &Path,
    spec: Spec,
    eu_mark: u64,
    a: &Args,
) -> anyhow::Result<(Region, f64, Value)> {
    let name = spec.name.clone();
    let started = Instant::now();
    let r = Region::start(bin, work, spec, &http.client, Duration::from_secs(600)).await?;
    let mut said = Instant::now();
    let snapshot = loop {
        let h = http.health(&r.url()).await;
        let got = h["replication"]["hwm"]["eu"].as_u64().unwrap_or(0);
        if got >= eu_mark && h["replication"]["snapshots"]["received"].as_u64() >= Some(1) {
            break h["replication"]["snapshots"]["last_received"].clone();
        }
        if said.elapsed() >= Duration::from_secs(10) {
            said = Instant::now();
            eprintln!(
                "bench_scale: {name} bootstrapping, {:.0} s: {} applied {}",
                started.elapsed().as_secs_f64(),
                h["replication"]["snapshot_in_progress"],
                h["replication"]["snapshots"]["receiving"]
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(a.bootstrap_s),
            "{name} did not bootstrap within {} s",
            a.bootstrap_s
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok((r, started.elapsed().as_secs_f64(), snapshot))
}

//! The scale benchmark of issue 8: large groups and a million users, on one region and on
//! three regions on loopback (real `geoscim serve` processes, synced writes, default settings
//! unless a step says otherwise). `scripts/bench-scale` runs it; see `bench/README.md`.
//!
//! 1. **Users, in process.** `Store::create` of every user (name, emails, enterprise
//!    attributes: what an IdP provisions) straight into region eu's data dir, on two threads
//!    with unsynced writes (only to build faster; every measured write below is synced).
//!    Groups take disjoint ranges of users (each member is in exactly one group), and a pool
//!    of extra users belongs to no group. The dir is then compacted and measured: disk bytes
//!    per user, split by column family.
//! 2. **One region.** eu serves that dir without replication. Each group is created by POST
//!    and filled over HTTP in PATCH batches of 1,000 members (Okta's `add` of a `value` array),
//!    each batch timed; after each group the region is stopped, the dir compacted and measured
//!    (bytes per membership) and the region started again (each start-up timed: process start
//!    → first `/health` 200). Then, per group: single adds and removes of extra users (Okta's
//!    shapes), extra batches of 1,000 adds and 1,000 removes, `GET /Groups/{id}?
//!    excludedAttributes=members`, `GET /Users/{id}` of random members and `GET /Groups/{id}`
//!    (the first page of members); a baseline of single-attribute user PATCHes (a synced write
//!    that touches no group) and the RSS after a warm-up of reads.
//! 3. **In process, keys touched.** eu's store opened with `io_statistics`: RocksDB keys read
//!    and written by one member add and one remove at each group size, and the store's own
//!    latency of single adds (synced), without HTTP.
//! 4. **Three regions.** eu gets a `[replication]` table naming us and ap, with
//!    `truncate_interval_ms = 1000`, `log_keep_entries = 1000` and `log_max_entries = 2000`
//!    (defaults: 10 s, 10,000, 10,000,000), so it truncates its log while they do not exist
//!    yet; the log column family is measured before and after. Then us and ap start empty and bootstrap from a
//!    snapshot (timed: process start → its mark of eu reaches eu's), and the same
//!    measurements run against eu, with reads on eu and us, each batch's replication to both
//!    peers timed, and the `bytes_sent` of every link (per peer from eu, and all links summed)
//!    divided by the membership changes.
//!
//! usage: bench_scale GEOSCIM_BINARY WORKDIR [--sizes 1000,100000,1000000] [--batches 20]
//!        [--singles 500] [--gets 500] [--out FILE] [--bootstrap-s 3600]
//!        [--only bootstrap [--bootstrap-bins OLD,NEW]]
//!
//! `--bootstrap-s`: how long each new region may take to bootstrap (default an hour; progress
//! is printed every 10 s). `--only bootstrap`: see `bootstrap.rs`.
//! WORKDIR must not exist or be empty; it is left in place (the script removes it).

mod bootstrap;
mod data;
mod http;
mod inproc;
mod measure;
mod report;

#[path = "../common/cluster.rs"]
mod cluster;
#[path = "../common/region.rs"]
mod region;
#[path = "../common/rocks.rs"]
mod rocks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cluster::pct;
use geoscim::scim::filter::FilterLimits;
use geoscim::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA, PATCH_OP_SCHEMA};
use geoscim::store::{IoCounts, Store, StoreOptions};
use region::{Region, Spec, TENANT, TOKEN};
use rocks::CfSize;
use serde_json::{json, Map, Value};

use data::*;
use http::*;
use inproc::*;
use measure::*;
use report::*;

/// The allocator the server uses (src/main.rs), so the in-process build and the in-process
/// latencies are not a glibc malloc benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1000;
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

// ---------- arguments ----------

pub(crate) struct Args {
    pub(crate) bin: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) sizes: Vec<usize>,
    pub(crate) batches: usize,
    pub(crate) singles: usize,
    pub(crate) gets: usize,
    pub(crate) out: Option<PathBuf>,
    /// `users`: stop after building (and measuring) the users (for profiling the build).
    pub(crate) stop_after: Option<String>,
    /// `bootstrap`: only the snapshot bootstrap (see `bootstrap.rs`).
    pub(crate) only: Option<String>,
    /// With `--only bootstrap`: the binaries the new regions run, one region each (at most
    /// two: us, ap), e.g. an old and a new build compared on the same data.
    pub(crate) bootstrap_bins: Vec<PathBuf>,
    /// How long a new region may take to bootstrap before the run stops: s.
    pub(crate) bootstrap_s: u64,
}

pub(crate) fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let bin = PathBuf::from(
        it.next()
            .context("usage: bench_scale BIN WORKDIR [options]")?,
    );
    let work = PathBuf::from(
        it.next()
            .context("usage: bench_scale BIN WORKDIR [options]")?,
    );
    let mut a = Args {
        bin,
        work,
        sizes: vec![1_000, 100_000, 1_000_000],
        batches: 20,
        singles: 500,
        gets: 500,
        out: None,
        stop_after: None,
        only: None,
        bootstrap_bins: Vec::new(),
        bootstrap_s: 3600,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sizes" => {
                a.sizes = value
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse())
                    .collect::<Result<_, _>>()
                    .context("--sizes: comma-separated member counts")?
            }
            "--batches" => a.batches = value.parse()?,
            "--singles" => a.singles = value.parse()?,
            "--gets" => a.gets = value.parse()?,
            "--out" => a.out = Some(PathBuf::from(value)),
            "--stop-after" => a.stop_after = Some(value),
            "--only" => {
                anyhow::ensure!(value == "bootstrap", "--only: only `bootstrap` is known");
                a.only = Some(value)
            }
            "--bootstrap-bins" => {
                a.bootstrap_bins = value.split(',').map(PathBuf::from).collect();
                anyhow::ensure!(
                    (1..=2).contains(&a.bootstrap_bins.len()),
                    "--bootstrap-bins: one or two comma-separated binaries"
                );
            }
            "--bootstrap-s" => {
                a.bootstrap_s = value.parse().context("--bootstrap-s: seconds")?;
                anyhow::ensure!(a.bootstrap_s >= 1, "--bootstrap-s: at least 1");
            }
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(!a.sizes.is_empty(), "--sizes: at least one size");
    anyhow::ensure!(a.batches >= 1 && a.singles >= 1 && a.gets >= 1);
    Ok(a)
}

fn cf_line(sizes: &BTreeMap<String, CfSize>) -> String {
    sizes
        .iter()
        .filter(|(_, s)| s.sst_bytes > 0)
        .map(|(n, s)| format!("{n} {} ({} keys)", s.sst_bytes, s.keys))
        .collect::<Vec<_>>()
        .join(", ")
}

fn per(bytes: i64, n: usize) -> String {
    format!("{:.0}", bytes as f64 / n.max(1) as f64)
}

/// Compact and measure a stopped region's dir; logs and returns (du -sb, per-CF sizes).
fn measure_dir(
    dir: &Path,
    region: &str,
    what: &str,
) -> anyhow::Result<(u64, BTreeMap<String, CfSize>)> {
    let du = rocks::dir_bytes(dir);
    let started = Instant::now();
    let sizes = rocks::compact_and_measure(dir, region)?;
    eprintln!(
        "bench_scale: {what}: du -sb {du}, compacted SST {} in {:.1} s: {}",
        rocks::total(&sizes),
        started.elapsed().as_secs_f64(),
        cf_line(&sizes)
    );
    Ok((du, sizes))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut report = Report {
        groups: Table::default(),
        scale: Table::default(),
        notes: Vec::new(),
    };
    // On SIGTERM (the script's time bound) or Ctrl-C the run future is dropped, and with it
    // every running region (their handles kill them). Whatever was measured until then is
    // still written, with the reason the run stopped.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = async {
            if a.only.is_some() {
                bootstrap::run_only(&a, &mut report).await
            } else {
                run(&a, &mut report).await
            }
        } => r,
        _ = term.recv() => Err(anyhow::anyhow!("stopped by SIGTERM")),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("stopped by Ctrl-C")),
    };
    if let Err(e) = &result {
        report.note(format!("THE RUN STOPPED EARLY: {e:#}"));
    }
    write_report(&report, Layout::new(&a).users(), a.out.as_deref())?;
    result
}

/// Print the tables and notes, and write them to `out`.
fn write_report(report: &Report, users: usize, out_path: Option<&Path>) -> anyhow::Result<()> {
    let mut out = String::new();
    out += &format!(
        "### Groups (members are real users; each group's members are in no other group)\n\n{}\n",
        report.groups.markdown()
    );
    out += &format!(
        "### {users} users in one region\n\n{}\n",
        report.scale.markdown()
    );
    out += "### Notes\n\n";
    for n in &report.notes {
        out += &format!("- {n}\n");
    }
    println!("{out}");
    if let Some(path) = out_path {
        std::fs::write(path, &out)?;
    }
    Ok(())
}

async fn run(a: &Args, report: &mut Report) -> anyhow::Result<()> {
    let run_started = Instant::now();
    let layout = Layout::new(a);
    std::fs::create_dir_all(&a.work)?;
    anyhow::ensure!(
        std::fs::read_dir(&a.work)?.next().is_none(),
        "{} is not empty",
        a.work.display()
    );
    let work = a.work.canonicalize()?;
    let http = Http::new();
    let n: u32 = rand::random();
    let net = format!("127.{}.{}", 10 + n % 200, 1 + (n >> 8) % 250);
    let ip = |i: usize| format!("{net}.{}", i + 1);
    let http_port = region::free_port(&ip(0));
    let quic_port = region::free_port(&ip(0));
    let eu_dir = work.join("eu");
    let users = layout.users();
    eprintln!(
        "bench_scale: groups of {:?} members (disjoint), {} extra users, {users} users in all; work dir {}",
        layout.sizes,
        layout.extra,
        work.display()
    );

    // 1. Users, in process.
    let empty = work.join("empty");
    drop(open_store(&empty, true, false)?);
    let (_, base_sizes) = measure_dir(&empty, "eu", "an empty store")?;
    std::fs::remove_dir_all(&empty)?;
    let build_s = build_users(&eu_dir, users)?;
    let (du_users, users_sizes) = measure_dir(&eu_dir, "eu", "after the users")?;
    let users_delta = rocks::delta(&base_sizes, &users_sizes);
    let all: i64 = users_delta.values().sum();
    let log = users_delta.get("log").copied().unwrap_or(0);
    let users_label = format!("{users} users");
    report.scale.set(
        "users created in process (2 threads, unsynced)",
        &users_label,
        format!("{build_s:.0} s ({:.0}/s)", users as f64 / build_s),
    );
    report.scale.set(
        "disk per user, compacted SST, everything (log included): bytes",
        &users_label,
        per(all, users),
    );
    report.scale.set(
        "disk per user, compacted SST, without the log: bytes",
        &users_label,
        per(all - log, users),
    );
    report.scale.set(
        "disk per user, log entry (its creation): bytes",
        &users_label,
        per(log, users),
    );
    report.scale.set(
        "disk per user, du -sb of the data dir (not compacted before): bytes",
        &users_label,
        per(du_users as i64, users),
    );
    report.scale.set(
        "disk per user by column family (compacted)",
        &users_label,
        users_delta
            .iter()
            .filter(|(_, b)| **b > 1000)
            .map(|(cf, b)| format!("{cf} {}", per(*b, users)))
            .collect::<Vec<_>>()
            .join(", "),
    );

    if a.stop_after.as_deref() == Some("users") {
        println!("{}", report.scale.markdown());
        return Ok(());
    }

    // 2. One region: build the groups over HTTP, measure the disk after each.
    let eu_spec = Spec {
        name: "eu".into(),
        ip: ip(0),
        http_port,
        data_dir: eu_dir.clone(),
        extra: String::new(),
    };
    let wait = Duration::from_secs(600);
    let mut eu = Region::start(&a.bin, &work, eu_spec.clone(), &http.client, wait).await?;
    let mut startups = vec![eu.startup];
    let mut groups = Vec::new();
    let mut prev_sizes = users_sizes.clone();
    for (j, size) in layout.sizes.iter().enumerate() {
        let col = format!("1 region {}", human(*size));
        let created = http
            .send(
                reqwest::Method::POST,
                &format!("{}/Groups", scim(&eu.url())),
                Some(&json!({"schemas": [GROUP_SCHEMA], "displayName": format!("bench-{size}")})),
            )
            .await;
        anyhow::ensure!(created.status == 201, "group create: {}", created.status);
        let group = created.json()["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let gurl = format!("{}/Groups/{group}", scim(&eu.url()));
        let mut build = Samples::default();
        let started = Instant::now();
        for b in 0..size.div_ceil(BATCH) {
            let ids: Vec<String> = (b * BATCH..((b + 1) * BATCH).min(*size))
                .map(|k| layout.member_id(j, k))
                .collect();
            build.push(&http.patch(&gurl, &patch_body(vec![add_op(&ids)])).await);
            if b % 100 == 99 {
                eprintln!(
                    "bench_scale: group {size}: {} members ({:.0} s, last batch {:.0} ms)",
                    (b + 1) * BATCH,
                    started.elapsed().as_secs_f64(),
                    build.ms.last().copied().unwrap_or(0.0)
                );
            }
        }
        let listed = http
            .get(&format!("{gurl}?membersCount=1"))
            .await
            .members_total;
        report.groups.set(
            "members the group lists after the build (Geoscim-Members-Total)",
            &col,
            listed.map_or("?".into(), |n| n.to_string()),
        );
        let first = build.ms.first().copied().unwrap_or(f64::NAN);
        let last = build.ms.last().copied().unwrap_or(f64::NAN);
        report.groups.set(
            "building batches of 1,000 adds: p50 / p99 ms (all of them)",
            &col,
            build.cell(),
        );
        report.groups.set(
            "building batches: first / last / max ms",
            &col,
            format!("{} / {} / {}", ms(first), ms(last), ms(build.p(1.0))),
        );
        report.groups.set(
            "time to build the group over HTTP",
            &col,
            format!("{:.1} s", started.elapsed().as_secs_f64()),
        );
        groups.push(group);
        eu.stop();
        let (_, sizes) = measure_dir(&eu_dir, "eu", &format!("after the {size}-member group"))?;
        let d = rocks::delta(&prev_sizes, &sizes);
        let all: i64 = d.values().sum();
        let log = d.get("log").copied().unwrap_or(0);
        report.groups.set(
            "disk per membership, compacted SST, everything (log included): bytes",
            &col,
            per(all, *size),
        );
        report.groups.set(
            "disk per membership, compacted SST, without the log: bytes",
            &col,
            per(all - log, *size),
        );
        report.groups.set(
            "disk per membership by column family (compacted)",
            &col,
            d.iter()
                .filter(|(_, b)| b.unsigned_abs() as usize > *size / 10)
                .map(|(cf, b)| format!("{cf} {}", per(*b, *size)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        prev_sizes = sizes;
        eu = Region::start(&a.bin, &work, eu_spec.clone(), &http.client, wait).await?;
        startups.push(eu.startup);
    }
    let target = Target {
        write: eu.url(),
        reads: vec![("eu", eu.url())],
        peers: Vec::new(),
        data: work.clone(),
    };
    let cols: Vec<String> = layout
        .sizes
        .iter()
        .map(|n| format!("1 region {}", human(*n)))
        .collect();
    let p99s = measure_mode(&http, a, &layout, &groups, &target, report, &cols).await;
    ratio_rows(report, &cols, &p99s);
    // RSS after a warm-up of reads over every user.
    let mut rng = Lcg(99);
    for _ in 0..2000 {
        let i = rng.below(users);
        http.get(&format!("{}/Users/{}", scim(&eu.url()), user_id(i)))
            .await;
    }
    let (rss, hwm) = eu.rss_kb();
    report.scale.set(
        "RSS of the serving process after the reads (VmRSS): MB",
        &users_label,
        format!("{:.0}", rss as f64 / 1024.0),
    );
    report.scale.set(
        "peak RSS over its life (VmHWM): MB",
        &users_label,
        format!("{:.0}", hwm as f64 / 1024.0),
    );
    eu.stop();
    let s: Vec<String> = startups
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    report.scale.set(
        "start-up, process start → /health 200 (one region, each restart): s",
        &users_label,
        s.join(", "),
    );

    // 3. In process: keys touched by one add and one remove.
    io_phase(&eu_dir, a, &layout, &groups, report)?;

    // 4. Three regions.
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
    let eu_repl = Spec {
        extra: repl(
            0,
            "truncate_interval_ms = 1000\nlog_keep_entries = 1000\nlog_max_entries = 2000\n",
        ),
        ..eu_spec.clone()
    };
    let (_, before_trunc) = measure_dir(&eu_dir, "eu", "before truncation")?;
    let mut eu = Region::start(&a.bin, &work, eu_repl.clone(), &http.client, wait).await?;
    let started = Instant::now();
    let (floor, mark) = loop {
        let h = http.health(&eu.url()).await;
        let floor = h["replication"]["floor"]["eu"].as_u64().unwrap_or(1);
        let mark = h["replication"]["hwm"]["eu"].as_u64().unwrap_or(0);
        if floor > 1 {
            break (floor, mark);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "eu did not truncate its log within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    report.note(format!(
        "eu truncated its log {:.1} s after it became healthy: floor {floor}, mark {mark} ({} entries kept)",
        started.elapsed().as_secs_f64(),
        mark + 1 - floor
    ));
    eu.stop();
    let (_, after_trunc) = measure_dir(&eu_dir, "eu", "after truncation")?;
    let log_before = before_trunc.get("log").copied().unwrap_or_default();
    let log_after = after_trunc.get("log").copied().unwrap_or_default();
    report.scale.set(
        "log CF before truncation (compacted SST bytes, keys)",
        &users_label,
        format!("{} ({} keys)", log_before.sst_bytes, log_before.keys),
    );
    report.scale.set(
        "log CF after truncation (compacted SST bytes, keys)",
        &users_label,
        format!(
            "{} ({} keys; floor {floor}, mark {mark})",
            log_after.sst_bytes, log_after.keys
        ),
    );
    report.scale.set(
        "data dir, compacted SST, before → after truncation: bytes",
        &users_label,
        format!(
            "{} → {} (per user {} → {})",
            rocks::total(&before_trunc),
            rocks::total(&after_trunc),
            per(rocks::total(&before_trunc) as i64, users),
            per(rocks::total(&after_trunc) as i64, users)
        ),
    );
    let mut eu = Region::start(&a.bin, &work, eu_repl, &http.client, wait).await?;
    report.note(format!(
        "eu with [replication], peers absent: start-up {:.2} s (includes the start hold of `start_hold_ms`, 3 s, while no peer has reported)",
        eu.startup.as_secs_f64()
    ));
    let eu_mark = own_mark(&http, &eu.url(), "eu").await;
    let mut peers = Vec::new();
    for (i, name) in names.iter().enumerate().skip(1) {
        let spec = Spec {
            name: name.to_string(),
            ip: ip(i),
            http_port,
            data_dir: work.join(name),
            extra: repl(i, ""),
        };
        let (r, took, snapshot) =
            bootstrap::bootstrap_one(&http, &a.bin, &work, spec, eu_mark, a).await?;
        let (rss, _) = r.rss_kb();
        report.scale.set(
            &format!("new empty region {name}: process start → snapshot applied and eu's mark reached: s"),
            &users_label,
            format!(
                "{took:.1} (snapshot {} items, {} MB, {:.1} s as {name} counts it; RSS after {:.0} MB)",
                snapshot["items"],
                snapshot["bytes"].as_u64().unwrap_or(0) / 1_000_000,
                snapshot["ms"].as_u64().unwrap_or(0) as f64 / 1e3,
                rss as f64 / 1024.0
            ),
        );
        peers.push(r);
    }
    // Idle replication traffic (status, acks): what a phase's bytes include besides changes.
    let mut all_links = vec![eu.url()];
    all_links.extend(peers.iter().map(Region::url));
    let i0 = traffic(&http, &all_links).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let i1 = traffic(&http, &all_links).await;
    report.note(format!(
        "idle replication traffic from eu over 5 s (bytes/s per peer): {}",
        per_change(&i0, &i1, 5, "eu")
    ));
    let target = Target {
        write: eu.url(),
        reads: vec![("eu", eu.url()), ("us", peers[0].url())],
        peers: peers.iter().map(Region::url).collect(),
        data: work.clone(),
    };
    let cols: Vec<String> = layout
        .sizes
        .iter()
        .map(|n| format!("3 regions {}", human(*n)))
        .collect();
    let p99s = measure_mode(&http, a, &layout, &groups, &target, report, &cols).await;
    ratio_rows(report, &cols, &p99s);
    let h = http.health(&eu.url()).await;
    report.note(format!(
        "eu at the end: floor {}, marks {}",
        h["replication"]["floor"], h["replication"]["hwm"]
    ));
    let rss: Vec<String> = std::iter::once(&eu)
        .chain(&peers)
        .map(|r| format!("{} {:.0}", r.spec.name, r.rss_kb().0 as f64 / 1024.0))
        .collect();
    report.scale.set(
        "three regions at the end: RSS (VmRSS) MB",
        &users_label,
        rss.join(", "),
    );
    eu.stop();
    for p in &mut peers {
        p.stop();
    }
    // The replicas hold the same records (exact key counts; history and log differ by design:
    // a snapshot carries neither).
    let eu_census = rocks::census(&eu_dir, "eu")?;
    let us_census = rocks::census(&work.join("us"), "us")?;
    let differ: Vec<String> = eu_census
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "log" | "history" | "meta"))
        .filter(|(k, (n, _))| us_census.get(*k).map(|c| c.0) != Some(*n))
        .map(|(k, (n, _))| format!("{k}: eu {n}, us {:?}", us_census.get(k).map(|c| c.0)))
        .collect();
    report.note(format!(
        "eu and us at the end, exact key counts: {}; differences outside log/history/meta: {}",
        eu_census
            .iter()
            .map(|(k, (n, _))| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        if differ.is_empty() {
            "none".to_string()
        } else {
            differ.join("; ")
        }
    ));
    let (eu_du, eu_sizes) = measure_dir(&eu_dir, "eu", "eu at the end")?;
    let (us_du, us_sizes) = measure_dir(&work.join("us"), "us", "us at the end")?;
    report.scale.set(
        "eu / us at the end, compacted SST: bytes (du -sb before compaction)",
        &users_label,
        format!(
            "{} / {} ({eu_du} / {us_du})",
            rocks::total(&eu_sizes),
            rocks::total(&us_sizes)
        ),
    );
    let total = run_started.elapsed().as_secs_f64();
    report.note(format!("total run time {:.1} min", total / 60.0));

    Ok(())
}

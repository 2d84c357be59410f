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
//!        [--singles 500] [--gets 500] [--out FILE]
//! WORKDIR must not exist or be empty; it is left in place (the script removes it).

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/region.rs"]
mod region;
#[path = "common/rocks.rs"]
mod rocks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cluster::pct;
use geoscim::scim::filter::FilterLimits;
use geoscim::scim::schema::{ResourceKind, ENTERPRISE_USER_SCHEMA, PATCH_OP_SCHEMA};
use geoscim::store::{Store, StoreOptions};
use region::{Region, Spec, TENANT, TOKEN};
use rocks::CfSize;
use serde_json::{json, Map, Value};

/// The allocator the server uses (src/main.rs), so the in-process build and the in-process
/// latencies are not a glibc malloc benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1000;
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

// ---------- arguments ----------

struct Args {
    bin: PathBuf,
    work: PathBuf,
    sizes: Vec<usize>,
    batches: usize,
    singles: usize,
    gets: usize,
    out: Option<PathBuf>,
    /// `users`: stop after building (and measuring) the users (for profiling the build).
    stop_after: Option<String>,
}

fn args() -> anyhow::Result<Args> {
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
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    anyhow::ensure!(!a.sizes.is_empty(), "--sizes: at least one size");
    anyhow::ensure!(a.batches >= 1 && a.singles >= 1 && a.gets >= 1);
    Ok(a)
}

// ---------- users and groups ----------

fn user_name(i: usize) -> String {
    format!("user{i:08}@example.com")
}

fn user_id(i: usize) -> String {
    geoscim::ids::user_id_candidate(TENANT, &user_name(i), 0)
}

/// An ordinary user as an IdP provisions it: name, email, enterprise attributes.
fn user_body(i: usize) -> Value {
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
struct Layout {
    sizes: Vec<usize>,
    offsets: Vec<usize>,
    extra_start: usize,
    extra: usize,
}

impl Layout {
    fn new(a: &Args) -> Layout {
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
    fn users(&self) -> usize {
        self.extra_start + self.extra
    }
    fn extra_id(&self, k: usize) -> String {
        user_id(self.extra_start + k)
    }
    fn member_id(&self, j: usize, k: usize) -> String {
        user_id(self.offsets[j] + k)
    }
}

fn open_store(dir: &Path, sync: bool, io: bool) -> anyhow::Result<Store> {
    Ok(Store::open(
        dir,
        StoreOptions {
            region: "eu".into(),
            sync_writes: sync,
            doc_cache_size: 1000,
            io_statistics: io,
        },
    )?)
}

/// Create users `0..n` in process, on two threads. Returns seconds.
fn build_users(dir: &Path, n: usize) -> anyhow::Result<f64> {
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

fn stored_attrs(resource: Value) -> Map<String, Value> {
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

// ---------- HTTP ----------

struct Http {
    client: reqwest::Client,
}

/// One answer: status, body bytes, milliseconds from send to the last body byte, and the
/// `Geoscim-Members-Total` header of a group answer that shows members.
struct Answer {
    status: u16,
    body: Vec<u8>,
    ms: f64,
    members_total: Option<u64>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Http {
    fn new() -> Http {
        Http {
            client: reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(4)
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    async fn send(&self, method: reqwest::Method, url: &str, body: Option<&Value>) -> Answer {
        let mut rb = self
            .client
            .request(method, url)
            .header("Authorization", format!("Bearer {TOKEN}"));
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/scim+json")
                .body(serde_json::to_vec(b).expect("json"));
        }
        let started = Instant::now();
        let (status, body, members_total) = match rb.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let total = r
                    .headers()
                    .get("geoscim-members-total")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                (
                    status,
                    r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
                    total,
                )
            }
            Err(_) => (0, Vec::new(), None),
        };
        Answer {
            status,
            body,
            ms: started.elapsed().as_secs_f64() * 1e3,
            members_total,
        }
    }

    async fn get(&self, url: &str) -> Answer {
        self.send(reqwest::Method::GET, url, None).await
    }
    async fn patch(&self, url: &str, body: &Value) -> Answer {
        self.send(reqwest::Method::PATCH, url, Some(body)).await
    }

    async fn health(&self, base: &str) -> Value {
        match self
            .client
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

fn patch_body(ops: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops})
}

fn add_op(ids: &[String]) -> Value {
    let values: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    json!({"op": "add", "path": "members", "value": values})
}

fn remove_op(id: &str) -> Value {
    json!({"op": "remove", "path": format!("members[value eq \"{id}\"]")})
}

/// Latencies of one kind of request, with the count of non-2xx answers.
#[derive(Default, Clone)]
struct Samples {
    ms: Vec<f64>,
    errors: usize,
}

impl Samples {
    fn push(&mut self, a: &Answer) {
        self.ms.push(a.ms);
        if !a.ok() {
            self.errors += 1;
            if self.errors <= 3 {
                eprintln!(
                    "bench_scale: answer {}: {}",
                    a.status,
                    String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
                );
            }
        }
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn p(&self, q: f64) -> f64 {
        pct(&self.sorted(), q)
    }
    /// "p50 / p99" in ms, with the error count when there are errors.
    fn cell(&self) -> String {
        let e = if self.errors > 0 {
            format!(" ({} errors)", self.errors)
        } else {
            String::new()
        };
        format!("{} / {}{e}", ms(self.p(0.5)), ms(self.p(0.99)))
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

// ---------- the results table ----------

#[derive(Default)]
struct Table {
    columns: Vec<String>,
    rows: Vec<(String, BTreeMap<String, String>)>,
}

impl Table {
    fn set(&mut self, row: &str, col: &str, value: String) {
        if !self.columns.iter().any(|c| c == col) {
            self.columns.push(col.to_string());
        }
        match self.rows.iter_mut().find(|(r, _)| r == row) {
            Some((_, cells)) => {
                cells.insert(col.to_string(), value);
            }
            None => self
                .rows
                .push((row.to_string(), [(col.to_string(), value)].into())),
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!("| figure | {} |\n", self.columns.join(" | "));
        s += &format!("|---|{}\n", "---:|".repeat(self.columns.len()));
        for (row, cells) in &self.rows {
            let line: Vec<String> = self
                .columns
                .iter()
                .map(|c| cells.get(c).cloned().unwrap_or_else(|| "–".into()))
                .collect();
            s += &format!("| {row} | {} |\n", line.join(" | "));
        }
        s
    }
}

fn human(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

struct Report {
    groups: Table,
    scale: Table,
    notes: Vec<String>,
}

impl Report {
    fn note(&mut self, s: String) {
        eprintln!("bench_scale: {s}");
        self.notes.push(s);
    }
}

// ---------- one measured group ----------

/// What a phase measures against.
struct Target<'a> {
    /// Writes go here.
    write: String,
    /// Reads are measured here (label, base URL).
    reads: Vec<(&'a str, String)>,
    /// Replicating peers whose marks of `origin` are awaited after each batch.
    peers: Vec<String>,
    /// A folder on the data dirs' disk (for the fsync probe).
    data: PathBuf,
}

fn scim(base: &str) -> String {
    format!("{base}/scim/v2")
}

/// eu's own mark (`hwm.eu`) as its `/health` shows it.
async fn own_mark(http: &Http, base: &str, origin: &str) -> u64 {
    http.health(base).await["replication"]["hwm"][origin]
        .as_u64()
        .unwrap_or(0)
}

/// Wait until every peer holds `origin` up to `mark` (polled every 10 ms, at most 120 s).
async fn wait_replicated(http: &Http, peers: &[String], origin: &str, mark: u64) -> f64 {
    let started = Instant::now();
    for p in peers {
        while own_mark(http, p, origin).await < mark {
            if started.elapsed() > Duration::from_secs(120) {
                eprintln!("bench_scale: {p} did not reach {origin}:{mark} within 120 s");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    started.elapsed().as_secs_f64() * 1e3
}

/// `bytes_sent` of every replication link (`from→to`) of these regions, from their `/health`
/// (UDP payload bytes, QUIC packets and acks included, since each process started).
async fn traffic(http: &Http, regions: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for base in regions {
        let h = http.health(base).await;
        let from = h["region"].as_str().unwrap_or("?").to_string();
        for p in h["replication"]["peers"].as_array().into_iter().flatten() {
            out.insert(
                format!("{from}→{}", p["peer"].as_str().unwrap_or("?")),
                p["bytes_sent"].as_u64().unwrap_or(0),
            );
        }
    }
    out
}

/// Bytes per change: on each link out of `from`, and on all links together.
fn per_change(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    n: usize,
    from: &str,
) -> String {
    let d = |k: &String, a: &u64| a.saturating_sub(before.get(k).copied().unwrap_or(0));
    let mut parts: Vec<String> = after
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{from}→")))
        .map(|(k, a)| format!("{k} {:.0}", d(k, a) as f64 / n.max(1) as f64))
        .collect();
    let all: u64 = after.iter().map(|(k, a)| d(k, a)).sum();
    parts.push(format!("all links {:.0}", all as f64 / n.max(1) as f64));
    parts.join(", ")
}

/// A small deterministic generator (the same samples in every run).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Measure every group of one mode (one region, or three). The latency-sensitive requests
/// (single adds and removes, the baseline, the GETs) are interleaved across the groups — request
/// k goes to every group in turn — so each group's samples see the same machine (it is
/// shared, and its load drifts); the batches run group by group. Returns each group's single
/// add and remove p99.
async fn measure_mode(
    http: &Http,
    a: &Args,
    layout: &Layout,
    groups: &[String],
    t: &Target<'_>,
    report: &mut Report,
    cols: &[String],
) -> Vec<(f64, f64)> {
    let w = scim(&t.write);
    let gurl = |j: usize| format!("{w}/Groups/{}", groups[j]);
    let ng = groups.len();
    let replicated = !t.peers.is_empty();
    let mut links = vec![t.write.clone()];
    links.extend(t.peers.iter().cloned());
    eprintln!("bench_scale: [{}] measuring", cols.join(", "));
    let load = loadavg();
    let floor = fsync_probe(&t.data, 200).cell();
    for col in cols {
        report.groups.set(
            "load average at the start (1, 5, 15 min)",
            col,
            load.clone(),
        );
        report.groups.set(
            "disk floor: 4 KB write + fdatasync: p50 / p99 ms (200)",
            col,
            floor.clone(),
        );
    }
    // Warm-up (connections, caches).
    for j in 0..ng {
        for _ in 0..20 {
            http.get(&format!("{}?excludedAttributes=members", gurl(j)))
                .await;
        }
    }

    // Reads of the group before this phase's writes (the region has just started, or just
    // bootstrapped): against the same reads after them, this shows what the writes leave behind
    // for reads (see the notes on the `counts` merge operands in bench/README.md).
    let probes = a.gets.min(200);
    for (label, base) in &t.reads {
        let r = scim(base);
        let suffix = if t.reads.len() > 1 {
            format!(" [{label}]")
        } else {
            String::new()
        };
        let mut early = vec![Samples::default(); ng];
        for _ in 0..probes {
            for (j, s) in early.iter_mut().enumerate() {
                s.push(
                    &http
                        .get(&format!(
                            "{r}/Groups/{}?excludedAttributes=members",
                            groups[j]
                        ))
                        .await,
                );
            }
        }
        for (j, col) in cols.iter().enumerate() {
            report.groups.set(
                &format!(
                    "GET /Groups/{{id}}?excludedAttributes=members before the writes below: p50 / p99 ms ({probes}){suffix}"
                ),
                col,
                early[j].cell(),
            );
        }
    }

    // 1. Single adds, then single removes of the same users (Okta's shapes), interleaved with
    // a baseline: a PATCH of a user's displayName, a synced write that touches no group.
    let n = a.singles;
    let mut add = vec![Samples::default(); ng];
    let mut remove = vec![Samples::default(); ng];
    let mut base = Samples::default();
    let mut answer_bytes = vec![0; ng];
    for k in 0..n {
        let id = layout.extra_id(k);
        let body = patch_body(vec![json!({"op": "replace", "path": "displayName",
            "value": format!("Renamed {k} {}", rand::random::<u32>())})]);
        base.push(&http.patch(&format!("{w}/Users/{id}"), &body).await);
        for j in 0..ng {
            let r = http
                .patch(
                    &gurl(j),
                    &patch_body(vec![add_op(std::slice::from_ref(&id))]),
                )
                .await;
            answer_bytes[j] = answer_bytes[j].max(r.body.len());
            add[j].push(&r);
        }
    }
    for k in 0..n {
        let id = layout.extra_id(k);
        for (j, samples) in remove.iter_mut().enumerate() {
            samples.push(
                &http
                    .patch(&gurl(j), &patch_body(vec![remove_op(&id)]))
                    .await,
            );
        }
    }
    for (j, col) in cols.iter().enumerate() {
        report.groups.set(
            &format!("baseline: PATCH a user's displayName: p50 / p99 ms ({n})"),
            col,
            base.cell(),
        );
        report.groups.set(
            &format!("single add, PATCH 1 member: p50 / p99 ms ({n})"),
            col,
            add[j].cell(),
        );
        report.groups.set(
            &format!("single remove, PATCH `members[value eq]`: p50 / p99 ms ({n})"),
            col,
            remove[j].cell(),
        );
        report.groups.set(
            "largest answer of a single add (bytes)",
            col,
            answer_bytes[j].to_string(),
        );
    }

    // 2. Replication bytes of single changes, group by group (untimed): 100 adds + removes.
    if replicated {
        let m = n.min(100);
        for (j, col) in cols.iter().enumerate() {
            let mark = own_mark(http, &t.write, "eu").await;
            wait_replicated(http, &t.peers, "eu", mark).await;
            let b0 = traffic(http, &links).await;
            for k in 0..m {
                let id = layout.extra_id(k);
                http.patch(
                    &gurl(j),
                    &patch_body(vec![add_op(std::slice::from_ref(&id))]),
                )
                .await;
                http.patch(&gurl(j), &patch_body(vec![remove_op(&id)]))
                    .await;
            }
            let mark = own_mark(http, &t.write, "eu").await;
            wait_replicated(http, &t.peers, "eu", mark).await;
            let b1 = traffic(http, &links).await;
            report.groups.set(
                &format!(
                    "replication bytes per single change (UDP payload, from eu per peer; all links; {} changes)",
                    2 * m
                ),
                col,
                per_change(&b0, &b1, 2 * m, "eu"),
            );
        }
    }

    // 3. Batches of 1,000 adds, then 1,000 removes (one op each, Okta's remove shape), group by
    // group.
    let nb = a.batches;
    for (j, col) in cols.iter().enumerate() {
        let (mut badd, mut bremove) = (Samples::default(), Samples::default());
        let mut repl = Samples::default();
        let b2 = traffic(http, &links).await;
        for (phase, samples) in [("add", &mut badd), ("remove", &mut bremove)] {
            for b in 0..nb {
                let ids: Vec<String> = (b * BATCH..(b + 1) * BATCH)
                    .map(|k| layout.extra_id(k))
                    .collect();
                let body = if phase == "add" {
                    patch_body(vec![add_op(&ids)])
                } else {
                    patch_body(ids.iter().map(|id| remove_op(id)).collect())
                };
                samples.push(&http.patch(&gurl(j), &body).await);
                if replicated {
                    let mark = own_mark(http, &t.write, "eu").await;
                    repl.ms
                        .push(wait_replicated(http, &t.peers, "eu", mark).await);
                }
            }
        }
        let b3 = traffic(http, &links).await;
        report.groups.set(
            &format!("batch of 1,000 adds: p50 / p99 ms ({nb})"),
            col,
            badd.cell(),
        );
        report.groups.set(
            &format!("batch of 1,000 removes (1,000 ops): p50 / p99 ms ({nb})"),
            col,
            bremove.cell(),
        );
        if replicated {
            report.groups.set(
                "batch: 2xx → both peers hold it (polled every 10 ms): p50 / p99 ms",
                col,
                repl.cell(),
            );
            report.groups.set(
                "replication bytes per batched change (UDP payload, from eu per peer; all links)",
                col,
                per_change(&b2, &b3, 2 * nb * BATCH, "eu"),
            );
        }
    }

    // 4. Reads, interleaved across the groups, on each read region (after the writes above:
    // 2 × singles + 200 + 2 × batches × 1,000 membership changes per group).
    let mut rng = Lcg(7);
    for (label, base) in &t.reads {
        let r = scim(base);
        let suffix = if t.reads.len() > 1 {
            format!(" [{label}]")
        } else {
            String::new()
        };
        let mut gx = vec![Samples::default(); ng];
        let mut gu = vec![Samples::default(); ng];
        let mut gp = vec![Samples::default(); ng];
        let mut groups_shown = vec![0; ng];
        let mut page_len = vec![0; ng];
        for _ in 0..a.gets {
            for (j, s) in gx.iter_mut().enumerate() {
                s.push(
                    &http
                        .get(&format!(
                            "{r}/Groups/{}?excludedAttributes=members",
                            groups[j]
                        ))
                        .await,
                );
            }
        }
        for _ in 0..a.gets {
            for (j, s) in gu.iter_mut().enumerate() {
                let member = layout.member_id(j, rng.below(layout.sizes[j]));
                let ans = http.get(&format!("{r}/Users/{member}")).await;
                groups_shown[j] += ans.json()["groups"].as_array().map_or(0, Vec::len);
                s.push(&ans);
            }
        }
        let pages = (a.gets / 5).max(1);
        for _ in 0..pages {
            for (j, s) in gp.iter_mut().enumerate() {
                let ans = http.get(&format!("{r}/Groups/{}", groups[j])).await;
                page_len[j] = ans.json()["members"].as_array().map_or(0, Vec::len);
                s.push(&ans);
            }
        }
        for (j, col) in cols.iter().enumerate() {
            report.groups.set(
                &format!(
                    "GET /Groups/{{id}}?excludedAttributes=members: p50 / p99 ms ({}){suffix}",
                    a.gets
                ),
                col,
                gx[j].cell(),
            );
            report.groups.set(
                &format!(
                    "GET /Users/{{id}} of a member: p50 / p99 ms ({}){suffix}",
                    a.gets
                ),
                col,
                gu[j].cell(),
            );
            report.groups.set(
                &format!(
                    "GET /Groups/{{id}}, first page of members: p50 / p99 ms ({pages}){suffix}"
                ),
                col,
                format!("{} [{} shown]", gp[j].cell(), page_len[j]),
            );
            if groups_shown[j] != a.gets {
                report.note(format!(
                    "[{col}{suffix}] the sampled members showed {} groups in all, not {}",
                    groups_shown[j], a.gets
                ));
            }
        }
    }
    add.iter()
        .zip(&remove)
        .map(|(a, r)| (a.p(0.99), r.p(0.99)))
        .collect()
}

/// The p99 of each group's single adds and removes against the smallest group's (the aim:
/// at most 1.5).
fn ratio_rows(report: &mut Report, cols: &[String], p99s: &[(f64, f64)]) {
    let Some(first) = p99s.first().copied() else {
        return;
    };
    for (col, (add, remove)) in cols.iter().zip(p99s) {
        report.groups.set(
            "single add / remove p99 ÷ the smallest group's",
            col,
            format!("{:.2} / {:.2}", add / first.0, remove / first.1),
        );
    }
}

/// The disk's floor for a synced write: `n` times a 4 KB write + fdatasync of a file in `dir`
/// (what RocksDB's WAL sync costs before any work of geoscim's).
fn fsync_probe(dir: &Path, n: usize) -> Samples {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut s = Samples::default();
    if let Ok(mut f) = std::fs::File::create(&path) {
        let block = [7u8; 4096];
        for _ in 0..n {
            let started = Instant::now();
            if f.write_all(&block).and_then(|_| f.sync_data()).is_err() {
                s.errors += 1;
            }
            s.ms.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = std::fs::remove_file(&path);
    s
}

/// `/proc/loadavg`'s first three fields (the machine is shared: this says how busy it was).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------- in process: keys touched ----------

fn as_resource(attrs: &Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("schemas".into(), json!([GROUP_SCHEMA]));
    m.extend(attrs.clone());
    Value::Object(m)
}

/// One PATCH applied as the API applies it (`touched` members only).
fn store_patch(store: &Store, group: &str, body: &Value) -> anyhow::Result<()> {
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

fn io_phase(
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

// ---------- the run ----------

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
fn measure_dir(dir: &Path, what: &str) -> anyhow::Result<(u64, BTreeMap<String, CfSize>)> {
    let du = rocks::dir_bytes(dir);
    let started = Instant::now();
    let sizes = rocks::compact_and_measure(dir, false)?;
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
    // On SIGTERM (the script's time bound) or Ctrl-C the run future is dropped, and with it
    // every running region (their handles kill them).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = run(a) => r,
        _ = term.recv() => anyhow::bail!("stopped by SIGTERM"),
        _ = tokio::signal::ctrl_c() => anyhow::bail!("stopped by Ctrl-C"),
    }
}

async fn run(a: Args) -> anyhow::Result<()> {
    let run_started = Instant::now();
    let layout = Layout::new(&a);
    std::fs::create_dir_all(&a.work)?;
    anyhow::ensure!(
        std::fs::read_dir(&a.work)?.next().is_none(),
        "{} is not empty",
        a.work.display()
    );
    let work = a.work.canonicalize()?;
    let mut report = Report {
        groups: Table::default(),
        scale: Table::default(),
        notes: Vec::new(),
    };
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
    let (_, base_sizes) = measure_dir(&empty, "an empty store")?;
    std::fs::remove_dir_all(&empty)?;
    let build_s = build_users(&eu_dir, users)?;
    let (du_users, users_sizes) = measure_dir(&eu_dir, "after the users")?;
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
    // What LZ4 on every column family would make of the same data (on a copy).
    let copy = work.join("eu-lz4");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&eu_dir)
        .arg(&copy)
        .status()?;
    anyhow::ensure!(status.success(), "cp -a failed");
    let lz4_sizes = rocks::compact_and_measure(&copy, true)?;
    std::fs::remove_dir_all(&copy)?;
    let lz4_delta = rocks::delta(&base_sizes, &lz4_sizes);
    let lz4_all: i64 = lz4_delta.values().sum();
    let lz4_log = lz4_delta.get("log").copied().unwrap_or(0);
    report.scale.set(
        "what-if, every CF compacted with LZ4: per user everything / without the log: bytes",
        &users_label,
        format!(
            "{} / {}",
            per(lz4_all, users),
            per(lz4_all - lz4_log, users)
        ),
    );
    report.scale.set(
        "what-if LZ4, per user by column family",
        &users_label,
        lz4_delta
            .iter()
            .filter(|(_, b)| **b > 1000)
            .map(|(cf, b)| format!("{cf} {}", per(*b, users)))
            .collect::<Vec<_>>()
            .join(", "),
    );

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
        let (_, sizes) = measure_dir(&eu_dir, &format!("after the {size}-member group"))?;
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
    let p99s = measure_mode(&http, &a, &layout, &groups, &target, &mut report, &cols).await;
    ratio_rows(&mut report, &cols, &p99s);
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
    io_phase(&eu_dir, &a, &layout, &groups, &mut report)?;

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
    let (_, before_trunc) = measure_dir(&eu_dir, "before truncation")?;
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
    let (_, after_trunc) = measure_dir(&eu_dir, "after truncation")?;
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
        let started = Instant::now();
        let r = Region::start(&a.bin, &work, spec, &http.client, wait).await?;
        let snapshot = loop {
            let h = http.health(&r.url()).await;
            let got = h["replication"]["hwm"]["eu"].as_u64().unwrap_or(0);
            if got >= eu_mark && h["replication"]["snapshots"]["received"].as_u64() >= Some(1) {
                break h["replication"]["snapshots"]["last_received"].clone();
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(1800),
                "{name} did not bootstrap within 30 min"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let took = started.elapsed().as_secs_f64();
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
    let p99s = measure_mode(&http, &a, &layout, &groups, &target, &mut report, &cols).await;
    ratio_rows(&mut report, &cols, &p99s);
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
    let eu_census = rocks::census(&eu_dir)?;
    let us_census = rocks::census(&work.join("us"))?;
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
    let (eu_du, eu_sizes) = measure_dir(&eu_dir, "eu at the end")?;
    let (us_du, us_sizes) = measure_dir(&work.join("us"), "us at the end")?;
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
    if let Some(path) = &a.out {
        std::fs::write(path, &out)?;
    }
    Ok(())
}

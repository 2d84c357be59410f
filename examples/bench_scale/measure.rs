//! The measurements of one mode (one region or three) over every group.

use super::*;

/// What a phase measures against.
pub(crate) struct Target<'a> {
    /// Writes go here.
    pub(crate) write: String,
    /// Reads are measured here (label, base URL).
    pub(crate) reads: Vec<(&'a str, String)>,
    /// Replicating peers whose marks of `origin` are awaited after each batch.
    pub(crate) peers: Vec<String>,
    /// A folder on the data dirs' disk (for the fsync probe).
    pub(crate) data: PathBuf,
}

pub(crate) fn scim(base: &str) -> String {
    format!("{base}/scim/v2")
}

/// eu's own mark (`hwm.eu`) as its `/health` shows it.
pub(crate) async fn own_mark(http: &Http, base: &str, origin: &str) -> u64 {
    http.health(base).await["replication"]["hwm"][origin]
        .as_u64()
        .unwrap_or(0)
}

/// Wait until every peer holds `origin` up to `mark` (polled every 10 ms, at most 120 s).
pub(crate) async fn wait_replicated(http: &Http, peers: &[String], origin: &str, mark: u64) -> f64 {
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
pub(crate) async fn traffic(http: &Http, regions: &[String]) -> BTreeMap<String, u64> {
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
pub(crate) fn per_change(
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
pub(crate) struct Lcg(pub(crate) u64);
impl Lcg {
    pub(crate) fn below(&mut self, n: usize) -> usize {
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
pub(crate) async fn measure_mode(
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
pub(crate) fn ratio_rows(report: &mut Report, cols: &[String], p99s: &[(f64, f64)]) {
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
pub(crate) fn fsync_probe(dir: &Path, n: usize) -> Samples {
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
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

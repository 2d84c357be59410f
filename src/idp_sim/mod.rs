//! `geoscim idp-sim`: a provisioning client that behaves like an IdP connector and follows DNS.
//!
//! It resolves the service name (or a tenant name) at the given DNS servers ([`resolve`]),
//! honouring the TTL, and sends every request to the address DNS gave (with the name in
//! `Host`). The workload is bounded by `--users` and `--duration`; per user, one after the
//! other: a create (POST), an Okta-style profile update (PUT, full replace), an Entra-style
//! PATCH (capitalised ops), then membership batches (PATCH add of up to `--batch` members per
//! group, a few removes), deactivations (every third user Okta-style — a PATCH without a path —,
//! every third Entra-style — `"Replace"` with `"False"`) and deletes (every fifth user).
//!
//! Failures: a connection failure marks the address bad for the request, drops the cached
//! answer and resolves again; 429/503 wait for `Retry-After` (else exponential backoff up to
//! `--max-backoff-ms`); other 5xx back off and retry; 4xx are final. A write that never got a
//! 2xx makes its user uncertain (not judged). At the end every user is read from **every** region (`--regions`,
//! straight to each region's URL) until each agrees with what was acknowledged or
//! `--settle-secs` pass, and the [`Report`] counts what disagrees: acknowledged writes missing
//! or wrong, and acknowledged deactivations read active anywhere (both must be 0).

pub mod model;
pub mod resolve;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex as AsyncMutex;

use model::{judge, Expected, Gaps, Verdict};
use resolve::NameResolver;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The command line of `geoscim idp-sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The name to resolve: the service name or a tenant name.
    #[arg(long, default_value = "scim.geoscim.test")]
    pub name: String,
    /// DNS servers to ask (address:port), comma-separated, in order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub dns: Vec<SocketAddr>,
    /// Send this EDNS Client Subnet (e.g. 10.3.0.0/24) to pose as an IdP in that network.
    #[arg(long)]
    pub ecs: Option<IpNet>,
    /// The HTTP port of the regions (an A record carries none).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Speak HTTPS to the regions, trusting the CA certificates of this PEM file besides the
    /// system's roots (for `geoscim up`: its cluster CA, `build/local/certs/ca.pem`). The
    /// addresses DNS answers are then reached as `https://<address>:<port>`.
    #[arg(long)]
    pub cacert: Option<std::path::PathBuf>,
    /// A tenant bearer token (every region accepts it).
    #[arg(long, env = "GEOSCIM_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Every region's base URL (e.g. http://127.0.1.1:8080), comma-separated, for the final
    /// read-back; empty: the addresses DNS answered during the run.
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Users to provision.
    #[arg(long, default_value_t = 60)]
    pub users: usize,
    /// Groups their memberships go to.
    #[arg(long, default_value_t = 3)]
    pub groups: usize,
    /// Members per membership PATCH.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Users provisioned at once (one connector worker each).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Stop starting new operations after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Pause between two operations of one worker, milliseconds (a slower IdP).
    #[arg(long, default_value_t = 0)]
    pub pace_ms: u64,
    /// Attempts per request before giving up.
    #[arg(long, default_value_t = 20)]
    pub attempts: u32,
    /// Longest wait between two attempts, milliseconds (backoff doubles from 50 ms up to it;
    /// a `Retry-After` is honoured on top, up to 10 s). Short by default: a refused connection
    /// costs nothing, and DNS moves the name within about a second.
    #[arg(long, default_value_t = 250)]
    pub max_backoff_ms: u64,
    /// Time limit of one HTTP attempt, milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// How long the read-back waits for every region to agree, seconds.
    #[arg(long, default_value_t = 30)]
    pub settle_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A prefix for userNames and group names (default: a random run id).
    #[arg(long)]
    pub run_id: Option<String>,
}

impl Args {
    /// `https` with `--cacert`, else `http`.
    fn scheme(&self) -> &'static str {
        if self.cacert.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// What the run saw: the summary idp-sim prints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub name: String,
    pub duration_ms: u64,
    /// HTTP attempts sent (retries included) and those that got a 2xx.
    pub requests: u64,
    pub ok: u64,
    /// Failed attempts by HTTP status, or `connect` / `timeout` / `dns`.
    pub errors: BTreeMap<String, u64>,
    /// Writes that got a 2xx, and writes given up on (their users are not judged).
    pub acknowledged_writes: u64,
    pub unacknowledged_writes: u64,
    /// Times the address of successful requests changed.
    pub failovers: u64,
    /// The longest time without a successful request (ms), and when it ended (ms from start).
    pub longest_gap_ms: u64,
    pub longest_gap_ended_at_ms: u64,
    /// Every gap over 200 ms as [ended at, length] (ms): the outages seen.
    pub gaps_over_200ms: Vec<(u64, u64)>,
    /// Successful requests by address.
    pub addresses: BTreeMap<String, u64>,
    /// Answers dropped after a connection failure (re-resolutions).
    pub re_resolutions: u64,
    pub users: usize,
    pub users_judged: usize,
    pub regions_checked: Vec<String>,
    /// Users (per region) whose acknowledged create or delete is not visible: must be 0.
    pub acknowledged_missing: u64,
    /// Users (per region) with an acknowledged attribute read otherwise: must be 0.
    pub acknowledged_wrong: u64,
    /// Users (per region) with an acknowledged deactivation read active: must be 0.
    pub deactivated_active: u64,
    /// Up to 20 examples of disagreements.
    pub examples: Vec<String>,
    /// How long the read-back took until every region agreed (or gave up).
    pub settle_ms: u64,
}

impl Report {
    /// Did every acknowledged write hold everywhere?
    pub fn passed(&self) -> bool {
        self.acknowledged_missing == 0
            && self.acknowledged_wrong == 0
            && self.deactivated_active == 0
    }

    /// The readable summary.
    pub fn summary(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let addrs: Vec<String> = self
            .addresses
            .iter()
            .map(|(k, v)| format!("{k} ({v})"))
            .collect();
        let mut s = format!(
            "idp-sim {name}: {ms} ms, {req} requests ({ok} ok), errors: {errs}\n\
             acknowledged writes: {ack}, given up: {unack}, users: {users} ({judged} judged)\n\
             served by: {addrs}; failovers seen: {fo}; re-resolutions: {rr}\n\
             longest gap without a successful request: {gap} ms (ended at {gap_at} ms)\n\
             read back from {regions} region(s) in {settle} ms: acknowledged missing: {missing}, \
             wrong: {wrong}, deactivated users active: {active} => {verdict}\n",
            name = self.name,
            ms = self.duration_ms,
            req = self.requests,
            ok = self.ok,
            errs = if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            },
            ack = self.acknowledged_writes,
            unack = self.unacknowledged_writes,
            users = self.users,
            judged = self.users_judged,
            addrs = addrs.join(", "),
            fo = self.failovers,
            rr = self.re_resolutions,
            gap = self.longest_gap_ms,
            gap_at = self.longest_gap_ended_at_ms,
            regions = self.regions_checked.len(),
            settle = self.settle_ms,
            missing = self.acknowledged_missing,
            wrong = self.acknowledged_wrong,
            active = self.deactivated_active,
            verdict = if self.passed() { "PASS" } else { "FAIL" },
        );
        for e in &self.examples {
            s.push_str(&format!("  {e}\n"));
        }
        s
    }
}

/// Errors that stop the run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error("http client: {0}")]
    Http(String),
    #[error("setup request failed: {0}")]
    Setup(String),
}

/// The outcome of one request after its retries.
enum Outcome {
    /// 2xx: the body.
    Done(Value),
    /// A final 4xx.
    Rejected(StatusCode, Value),
    /// No final answer after every attempt.
    GaveUp(String),
}

/// The shared client state: resolver, counters, gaps.
struct Sim {
    args: Args,
    http: reqwest::Client,
    resolver: AsyncMutex<NameResolver>,
    start: Instant,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    acked: u64,
    unacked: u64,
    gaps: Gaps,
    addresses: BTreeMap<String, u64>,
    re_resolutions: u64,
}

impl Sim {
    fn stat(&self, f: impl FnOnce(&mut Stats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(&mut s);
        }
    }

    /// One SCIM request through DNS, with retries.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Outcome {
        let max_backoff = Duration::from_millis(self.args.max_backoff_ms.max(1));
        let mut backoff = Duration::from_millis(50).min(max_backoff);
        let mut bad: BTreeSet<IpAddr> = BTreeSet::new();
        let mut last = String::from("no attempt");
        for _ in 0..self.args.attempts.max(1) {
            let addrs = self.resolver.lock().await.resolve().await;
            let addrs = match addrs {
                Ok(a) => a,
                Err(e) => {
                    last = format!("dns: {e}");
                    self.stat(|s| *s.errors.entry("dns".into()).or_default() += 1);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            };
            // The first address of the answer not seen failing in this request.
            let addr = addrs
                .iter()
                .find(|a| !bad.contains(a))
                .copied()
                .unwrap_or(addrs[0]);
            let url = format!(
                "{}://{}/scim/v2{path}",
                self.args.scheme(),
                SocketAddr::new(addr, self.args.port)
            );
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.args.token)
                .header(
                    "host",
                    format!(
                        "{}:{}",
                        self.args.name.trim_end_matches('.'),
                        self.args.port
                    ),
                )
                .header("content-type", "application/scim+json");
            if let Some(b) = body {
                req = req.body(b.to_string());
            }
            self.stat(|s| s.requests += 1);
            let sent = req.send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    let kind = if e.is_timeout() { "timeout" } else { "connect" };
                    last = format!("{kind}: {addr}: {e}");
                    self.stat(|s| {
                        *s.errors.entry(kind.into()).or_default() += 1;
                        s.re_resolutions += 1;
                    });
                    // The region may be gone: ask DNS again and avoid this address.
                    bad.insert(addr);
                    self.resolver.lock().await.invalidate();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                    continue;
                }
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => {
                    // The answer was lost on the way: the write may have been applied.
                    last = format!("body: {e}");
                    self.stat(|s| *s.errors.entry("connect".into()).or_default() += 1);
                    bad.insert(addr);
                    self.resolver.lock().await.invalidate();
                    continue;
                }
            };
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status.is_success() {
                let now = self.start.elapsed().as_millis() as u64;
                self.stat(|s| {
                    s.ok += 1;
                    s.gaps.success(now, &addr.to_string());
                    *s.addresses.entry(addr.to_string()).or_default() += 1;
                });
                return Outcome::Done(json);
            }
            self.stat(|s| *s.errors.entry(status.as_u16().to_string()).or_default() += 1);
            last = format!("{status}: {text}");
            if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
            {
                let wait = retry_after
                    .map(|s| Duration::from_secs(s.min(10)))
                    .unwrap_or(backoff);
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
            if status.is_server_error() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
            return Outcome::Rejected(status, json);
        }
        Outcome::GaveUp(last)
    }

    /// A write: counts acknowledged / given up.
    async fn write(&self, method: Method, path: &str, body: Option<&Value>) -> Outcome {
        let out = self.send(method, path, body).await;
        match &out {
            Outcome::Done(..) => self.stat(|s| s.acked += 1),
            Outcome::GaveUp(_) => self.stat(|s| s.unacked += 1),
            Outcome::Rejected(..) => {}
        }
        out
    }

    fn over(&self) -> bool {
        self.start.elapsed() >= Duration::from_secs(self.args.duration)
    }

    async fn pace(&self) {
        if self.args.pace_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.args.pace_ms)).await;
        }
    }
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

/// Run the workload and the read-back.
pub async fn run(args: Args) -> Result<Report, SimError> {
    let resolver = NameResolver::new(&args.name, &args.dns, args.ecs)?;
    let roots = match &args.cacert {
        Some(path) => crate::tls::client::read_ca_file(path, "--cacert")
            .map_err(|e| SimError::Http(e.to_string()))?,
        None => Vec::new(),
    };
    let http = crate::tls::client::trusting(reqwest::Client::builder(), &roots)
        .no_proxy()
        .connect_timeout(Duration::from_millis(1000))
        .timeout(Duration::from_millis(args.request_timeout_ms))
        .build()
        .map_err(|e| SimError::Http(e.to_string()))?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("sim{:08x}", rand::random::<u32>()));
    let sim = Arc::new(Sim {
        args: args.clone(),
        http,
        resolver: AsyncMutex::new(resolver),
        start: Instant::now(),
        stats: Mutex::new(Stats::default()),
    });

    // Groups first (one connector creates them).
    let mut groups = Vec::new();
    for g in 0..args.groups {
        let body = json!({"schemas": [GROUP], "displayName": format!("{run_id}-group-{g}")});
        match sim.write(Method::POST, "/Groups", Some(&body)).await {
            Outcome::Done(v) => groups.push(v["id"].as_str().unwrap_or_default().to_string()),
            Outcome::Rejected(s, v) => {
                return Err(SimError::Setup(format!("POST /Groups: {s} {v}")))
            }
            Outcome::GaveUp(e) => return Err(SimError::Setup(format!("POST /Groups: {e}"))),
        }
    }

    let workers = args.concurrency.max(1);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (sim, groups, run_id) = (sim.clone(), groups.clone(), run_id.clone());
        tasks.push(tokio::spawn(async move {
            worker(&sim, w, workers, &groups, &run_id).await
        }));
    }
    let mut users: Vec<Expected> = Vec::new();
    for t in tasks {
        if let Ok(mut u) = t.await {
            users.append(&mut u);
        }
    }
    let duration_ms = sim.start.elapsed().as_millis() as u64;

    // Read back from every region.
    let mut regions = args.regions.clone();
    if regions.is_empty() {
        let seen = sim
            .stats
            .lock()
            .map(|s| s.addresses.keys().cloned().collect::<Vec<_>>());
        regions = seen
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                format!(
                    "{}://{}",
                    args.scheme(),
                    SocketAddr::new(a.parse().unwrap_or(IpAddr::from([127, 0, 0, 1])), args.port)
                )
            })
            .collect();
    }
    let judged: Vec<&Expected> = users
        .iter()
        .filter(|u| !u.uncertain && !u.id.is_empty())
        .collect();
    let settle_start = Instant::now();
    let mut report = Report {
        name: args.name.clone(),
        duration_ms,
        users: users.len(),
        users_judged: judged.len(),
        regions_checked: regions.clone(),
        ..Report::default()
    };
    let mut pending: Vec<(usize, usize)> = (0..regions.len())
        .flat_map(|r| (0..judged.len()).map(move |u| (r, u)))
        .collect();
    let deadline = settle_start + Duration::from_secs(args.settle_secs);
    let mut verdicts: BTreeMap<(usize, usize), Verdict> = BTreeMap::new();
    loop {
        let mut still = Vec::new();
        for (r, u) in pending {
            let read = read_user(&sim, &regions[r], &judged[u].id).await;
            let v = match read {
                Err(e) => Verdict::Wrong(format!("unreadable: {e}")),
                Ok(read) => judge(judged[u], read.as_ref()),
            };
            if v != Verdict::Ok {
                still.push((r, u));
            }
            verdicts.insert((r, u), v);
        }
        pending = still;
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.settle_ms = settle_start.elapsed().as_millis() as u64;
    for (r, u) in &pending {
        let v = &verdicts[&(*r, *u)];
        match v {
            Verdict::Ok => {}
            Verdict::Missing => report.acknowledged_missing += 1,
            Verdict::Wrong(_) => report.acknowledged_wrong += 1,
            Verdict::DeactivatedActive => report.deactivated_active += 1,
        }
        if report.examples.len() < 20 {
            report
                .examples
                .push(format!("{} user {}: {v:?}", regions[*r], judged[*u].id));
        }
    }
    if let Ok(s) = sim.stats.lock() {
        report.requests = s.requests;
        report.ok = s.ok;
        report.errors = s.errors.clone();
        report.acknowledged_writes = s.acked;
        report.unacknowledged_writes = s.unacked;
        report.failovers = s.gaps.failovers;
        report.longest_gap_ms = s.gaps.longest_ms;
        report.longest_gap_ended_at_ms = s.gaps.longest_ended_at_ms;
        report.gaps_over_200ms = s.gaps.long.clone();
        report.addresses = s.addresses.clone();
        report.re_resolutions = s.re_resolutions;
    }
    Ok(report)
}

/// GET a user straight from one region (no DNS): `None` on 404.
async fn read_user(sim: &Sim, region: &str, id: &str) -> Result<Option<Value>, String> {
    let r = sim
        .http
        .get(format!(
            "{}/scim/v2/Users/{id}",
            region.trim_end_matches('/')
        ))
        .bearer_auth(&sim.args.token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match r.status() {
        StatusCode::NOT_FOUND => Ok(None),
        s if s.is_success() => r.json().await.map(Some).map_err(|e| e.to_string()),
        s => Err(s.to_string()),
    }
}

/// One connector worker: users `w`, `w + workers`, …
async fn worker(
    sim: &Sim,
    w: usize,
    workers: usize,
    groups: &[String],
    run_id: &str,
) -> Vec<Expected> {
    let mut users: Vec<(usize, Expected)> = Vec::new();
    for i in (w..sim.args.users).step_by(workers) {
        if sim.over() {
            break;
        }
        let user_name = format!("{run_id}-user-{i}@example.com");
        let mut e = Expected {
            id: String::new(),
            user_name: user_name.clone(),
            display_name: format!("User {i}"),
            title: None,
            active: true,
            deactivated: false,
            deleted: false,
            groups: BTreeSet::new(),
            groups_uncertain: false,
            uncertain: false,
            acked: 0,
        };
        let create = json!({"schemas": [USER], "userName": user_name, "active": true,
            "displayName": e.display_name, "externalId": format!("ext-{run_id}-{i}"),
            "name": {"givenName": "User", "familyName": format!("{i}")},
            "emails": [{"value": user_name, "type": "work", "primary": true}]});
        match sim.write(Method::POST, "/Users", Some(&create)).await {
            Outcome::Done(v) => {
                e.id = v["id"].as_str().unwrap_or_default().to_string();
                e.acked += 1;
            }
            // A 409 after a lost answer: link like Okta (look it up by userName).
            Outcome::Rejected(StatusCode::CONFLICT, _) => {
                let path = format!(
                    "/Users?filter=userName%20eq%20%22{}%22",
                    user_name.replace('@', "%40")
                );
                match sim.send(Method::GET, &path, None).await {
                    Outcome::Done(v) => {
                        e.id = v["Resources"][0]["id"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        // Its attributes are those of the first attempt: unknown to us.
                        e.uncertain = true;
                    }
                    _ => e.uncertain = true,
                }
            }
            _ => e.uncertain = true,
        }
        if e.id.is_empty() {
            e.uncertain = true;
        }
        if !e.uncertain && !sim.over() {
            sim.pace().await;
            // Okta: PUT the whole profile.
            let title = format!("Engineer {i}");
            let name = format!("User {i} (okta)");
            let put = json!({"schemas": [USER], "userName": e.user_name, "active": true,
                "displayName": name, "title": title, "externalId": format!("ext-{run_id}-{i}"),
                "name": {"givenName": "User", "familyName": format!("{i}")},
                "emails": [{"value": e.user_name, "type": "work", "primary": true}]});
            match sim
                .write(Method::PUT, &format!("/Users/{}", e.id), Some(&put))
                .await
            {
                Outcome::Done(..) => {
                    e.display_name = name;
                    e.title = Some(title);
                    e.acked += 1;
                }
                _ => e.uncertain = true,
            }
        }
        if !e.uncertain && !sim.over() {
            sim.pace().await;
            // Entra: capitalised op names.
            let name = format!("User {i} (entra)");
            let body = patch(json!([{"op": "Replace", "path": "displayName", "value": name}]));
            match sim
                .write(Method::PATCH, &format!("/Users/{}", e.id), Some(&body))
                .await
            {
                Outcome::Done(..) => {
                    e.display_name = name;
                    e.acked += 1;
                }
                _ => e.uncertain = true,
            }
        }
        users.push((i, e));
    }

    // Membership batches: user i goes to group i % groups.
    if !groups.is_empty() {
        for (g, group) in groups.iter().enumerate() {
            let members: Vec<usize> = users
                .iter()
                .enumerate()
                .filter(|(_, (i, e))| i % groups.len() == g && !e.uncertain)
                .map(|(k, _)| k)
                .collect();
            for chunk in members.chunks(sim.args.batch.max(1)) {
                if sim.over() {
                    break;
                }
                sim.pace().await;
                let value: Vec<Value> = chunk
                    .iter()
                    .map(|k| json!({"value": users[*k].1.id}))
                    .collect();
                let body = patch(json!([{"op": "add", "path": "members", "value": value}]));
                let out = sim
                    .write(Method::PATCH, &format!("/Groups/{group}"), Some(&body))
                    .await;
                for k in chunk {
                    let e = &mut users[*k].1;
                    match &out {
                        Outcome::Done(..) => {
                            e.groups.insert(group.clone());
                        }
                        _ => e.groups_uncertain = true,
                    }
                }
            }
        }
        // Remove every seventh user from its group again (Entra's remove with a value filter).
        for (i, e) in users.iter_mut() {
            if *i % 7 != 3 || e.uncertain || e.groups.is_empty() || sim.over() {
                continue;
            }
            let group = groups[*i % groups.len()].clone();
            sim.pace().await;
            let body =
                patch(json!([{"op": "Remove", "path": format!("members[value eq \"{}\"]", e.id)}]));
            let out = sim
                .write(Method::PATCH, &format!("/Groups/{group}"), Some(&body))
                .await;
            match out {
                Outcome::Done(..) => {
                    e.groups.remove(&group);
                }
                _ => e.groups_uncertain = true,
            }
        }
    }

    // Offboarding: deactivations, then deletes.
    for (i, e) in users.iter_mut() {
        if e.uncertain || sim.over() || *i % 3 == 2 {
            continue;
        }
        sim.pace().await;
        let body = if *i % 3 == 0 {
            patch(json!([{"op": "replace", "value": {"active": false}}]))
        } else {
            patch(json!([{"op": "Replace", "path": "active", "value": "False"}]))
        };
        match sim
            .write(Method::PATCH, &format!("/Users/{}", e.id), Some(&body))
            .await
        {
            Outcome::Done(..) => {
                e.active = false;
                e.deactivated = true;
                e.acked += 1;
            }
            _ => e.uncertain = true,
        }
    }
    for (i, e) in users.iter_mut() {
        if e.uncertain || sim.over() || *i % 5 != 4 {
            continue;
        }
        sim.pace().await;
        match sim
            .write(Method::DELETE, &format!("/Users/{}", e.id), None)
            .await
        {
            Outcome::Done(..) => {
                e.deleted = true;
                e.acked += 1;
            }
            // A retried delete whose first attempt was applied finds the user gone.
            Outcome::Rejected(StatusCode::NOT_FOUND, _) => e.deleted = true,
            _ => e.uncertain = true,
        }
    }
    users.into_iter().map(|(_, e)| e).collect()
}

//! A real network partition: two regions, each in its own Linux network namespace, replicate over
//! a veth "wan" link between the namespaces. The test cuts that link, writes on both sides, heals
//! it and checks that both regions converge to identical documents.
//!
//! Each namespace also gets a private management veth to the root namespace, used only by the test
//! to reach the region's HTTP API. Only addresses inside these namespaces and on their own veths
//! are ever touched; everything is removed by a drop guard, also on failure.
//!
//! Needs root and `ip netns` (iproute2). Elsewhere the test prints `SKIPPED: ...` and passes,
//! except when `CI` is set: CI runs as root, so there a missing capability is a failure.
//!
//! The namespace plumbing ([`Netns`], [`spawn_in`], ...) is shared with other partition tests
//! (`conflicts`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{eventually, health_json, user_named_in, user_named_query};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// How long one `ip` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// The QUIC port of each region, on its wan address.
const QUIC_PORT: u16 = 7100;
/// The wan /30 between the two namespaces.
const WAN_IPS: [&str; 2] = ["10.214.0.1", "10.214.0.2"];

/// Run a command with a bounded wait; its stdout, or an error naming the command.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let line = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{line}` could not start: {e}"))?;
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{line}` did not finish within {CMD_TIMEOUT:?}"));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{line}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Like [`ip`], panicking on failure (setup and partition steps after the capability check).
pub(crate) fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Everything the test created outside its temp dir; dropping it removes all of it.
pub(crate) struct Netns {
    /// Names of the namespaces created so far.
    pub(crate) namespaces: Vec<String>,
    /// Root-side ends of the management veths created so far.
    pub(crate) root_links: Vec<String>,
    /// Region processes (running inside the namespaces).
    pub(crate) children: Vec<Child>,
}

impl Netns {
    pub(crate) fn new() -> Netns {
        Netns {
            namespaces: Vec::new(),
            root_links: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Add the namespace `name`. An error here means namespaces are unavailable.
    pub(crate) fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        Ok(())
    }

    /// Bring up `lo` in `ns` and give it a management veth (`root_if` in the root namespace,
    /// `ns_if` in `ns`) on the `i`-th /30 of `net` (three octets, e.g. `10.213.7`): the root end
    /// gets `.4i+1`, the namespace end `.4i+2`, which is returned.
    pub(crate) fn management_link(
        &mut self,
        ns: &str,
        (root_if, ns_if): (&str, &str),
        net: &str,
        i: usize,
    ) -> String {
        let (root_ip, ns_ip) = (
            format!("{net}.{}", 4 * i + 1),
            format!("{net}.{}", 4 * i + 2),
        );
        ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        ip_ok(&[
            "link", "add", root_if, "type", "veth", "peer", "name", ns_if, "netns", ns,
        ]);
        self.root_links.push(root_if.to_string());
        ip_ok(&["addr", "add", &format!("{root_ip}/30"), "dev", root_if]);
        ip_ok(&["link", "set", root_if, "up"]);
        ip_ok(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            ns_if,
        ]);
        ip_ok(&["-n", ns, "link", "set", ns_if, "up"]);
        ns_ip
    }
}

/// Regions in namespaces of their own on one bridge (a "wan" in a further namespace): each has
/// a management link to the root namespace (the test's HTTP) and a veth on the bridge
/// (replication), so one region's wan link can be cut at both ends. Dropping it removes all.
pub(crate) struct Bridged {
    pub(crate) net: Netns,
    /// Per region: its management address, reachable from the root namespace.
    pub(crate) mgmt: Vec<String>,
    /// Per region: (namespace, its wan veth, the bridge-side end).
    pub(crate) links: Vec<(String, String, String)>,
    bridge_ns: String,
}

impl Bridged {
    /// Namespaces for `names`, management /30s in `10.{mgmt_octet}.K` (K per run) and wan
    /// addresses `wan_ip(i)/24`. `None`, after saying why, when namespaces are unavailable.
    pub(crate) fn start(
        names: &[&str],
        mgmt_octet: u8,
        wan_ip: impl Fn(usize) -> String,
    ) -> Option<Bridged> {
        if !is_root() {
            unavailable("not running as root");
            return None;
        }
        let (tag, k) = run_tag();
        let mut net = Netns::new();
        let bridge_ns = format!("{tag}-w");
        if let Err(e) = net.add_namespace(&bridge_ns) {
            unavailable(&e);
            return None;
        }
        let bridge = format!("{tag}br");
        if let Err(e) = ip(&["-n", &bridge_ns, "link", "add", &bridge, "type", "bridge"]) {
            unavailable(&e);
            return None;
        }
        ip_ok(&["-n", &bridge_ns, "link", "set", &bridge, "up"]);
        let (mut mgmt, mut links) = (Vec::new(), Vec::new());
        for (i, r) in names.iter().enumerate() {
            let ns = format!("{tag}-{r}");
            net.add_namespace(&ns).unwrap_or_else(|e| panic!("{e}"));
            let (root_if, ns_if) = (format!("{tag}m{r}r"), format!("{tag}m{r}n"));
            let subnet = format!("10.{mgmt_octet}.{k}");
            mgmt.push(net.management_link(&ns, (&root_if, &ns_if), &subnet, i));
            let (wan_if, port_if) = (format!("{tag}w{r}"), format!("{tag}w{r}x"));
            ip_ok(&[
                "-n", &ns, "link", "add", &wan_if, "type", "veth", "peer", "name", &port_if,
                "netns", &bridge_ns,
            ]);
            ip_ok(&["-n", &bridge_ns, "link", "set", &port_if, "master", &bridge]);
            ip_ok(&["-n", &bridge_ns, "link", "set", &port_if, "up"]);
            let addr = format!("{}/24", wan_ip(i));
            ip_ok(&["-n", &ns, "addr", "add", &addr, "dev", &wan_if]);
            ip_ok(&["-n", &ns, "link", "set", &wan_if, "up"]);
            links.push((ns, wan_if, port_if));
        }
        Some(Bridged {
            net,
            mgmt,
            links,
            bridge_ns,
        })
    }

    /// Take region `i`'s wan link down (`up: false`) or up again, at both ends.
    pub(crate) fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        let (ns, wan_if, port_if) = &self.links[i];
        ip_ok(&["-n", ns, "link", "set", wan_if, state]);
        ip_ok(&["-n", &self.bridge_ns, "link", "set", port_if, state]);
    }
}

/// A tag unique per run for namespace and interface names (`gs` + 6 hex digits, so names stay
/// within Linux's 15 characters with up to 7 more), and a number in 1..=250 to pick /30s with.
pub(crate) fn run_tag() -> (String, u32) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tag = format!(
        "gs{:06x}",
        (std::process::id() ^ nanos.rotate_left(12)) & 0xff_ffff
    );
    (tag, 1 + (nanos % 250))
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace deletes the veths in it, and with them their peers.
        for ns in &self.namespaces {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("partition cleanup: {e}");
            }
        }
        for link in &self.root_links {
            if ip(&["link", "show", "dev", link]).is_ok() {
                // The namespace's deletion may take the link with it meanwhile.
                match ip(&["link", "del", "dev", link]) {
                    Err(e) if !e.contains("Cannot find device") => {
                        eprintln!("partition cleanup: {e}")
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A region process inside a namespace, reached over its management veth.
struct NsRegion {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl NsRegion {
    async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut b = self
            .client
            .request(method, format!("{}/scim/v2{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json");
        if let Some(body) = body {
            b = b.body(body.to_string());
        }
        let r = b.send().await.expect("request to a region");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    async fn create_user(&self, user_name: &str) -> Value {
        let (s, v) = self
            .req(
                Method::POST,
                "/Users",
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "active": true,
                })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    async fn replace(&self, id: &str, path: &str, value: Value) {
        let (s, v) = self
            .req(
                Method::PATCH,
                &format!("/Users/{id}"),
                Some(json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "path": path, "value": value}]
                })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// The user named `name` as this region holds it (see [`user_named_query`]).
    async fn user_named(&self, name: &str) -> Option<Value> {
        let (s, v) = self.req(Method::GET, &user_named_query(name), None).await;
        user_named_in(s, &v, name)
    }

    /// The user by id without `meta.location` (which names the region answering).
    async fn user(&self, id: &str) -> Option<Value> {
        let (s, mut v) = self.req(Method::GET, &format!("/Users/{id}"), None).await;
        if s != StatusCode::OK {
            return None;
        }
        v["meta"].as_object_mut()?.remove("location");
        Some(v)
    }

    async fn peer_connected(&self) -> bool {
        let h = health_json(&self.client, &self.url).await;
        h["replication"]["peers"][0]["connected"] == json!(true)
    }
}

/// Start `geoscim serve` inside `ns` accepting `token` for tenant `t1`, with extra environment
/// variables; returns the child and the printed HTTP base URL.
pub(crate) fn spawn_in(
    ns: &str,
    config: &Path,
    token: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_geoscim"), "serve"])
        .arg("--config")
        .arg(config)
        .env(
            "GEOSCIM_TOKENS",
            format!("[{{tenant=\"t1\", sha256=\"{hash}\"}}]"),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn geoscim in a namespace");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("geoscim: http listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => (child, url),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("region in {ns} did not print its listener within 60 s");
        }
    }
}

/// Fail under CI, else print why and skip.
pub(crate) fn unavailable(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("network namespaces unavailable under CI (CI runs as root): {reason}");
    }
    println!("SKIPPED: network namespaces unavailable: {reason}");
}

#[tokio::test]
async fn a_real_partition_between_namespaces_heals_and_both_sides_converge() {
    let started = Instant::now();
    if !is_root() {
        return unavailable("not running as root");
    }
    // Unique per run: interface names stay within 15 characters (`gs` + 6 hex + 3).
    // The management /30s: 10.213.K.0/30 for a, 10.213.K.4/30 for b.
    let (tag, k) = run_tag();
    let names = ["a", "b"];
    let mut net = Netns::new();
    for r in names {
        if let Err(e) = net.add_namespace(&format!("{tag}-{r}")) {
            return unavailable(&e);
        }
    }
    let ns = net.namespaces.clone();
    let mut http_ips = Vec::new();
    for (i, r) in names.iter().enumerate() {
        let (root_if, ns_if) = (format!("{tag}m{r}r"), format!("{tag}m{r}n"));
        http_ips.push(net.management_link(&ns[i], (&root_if, &ns_if), &format!("10.213.{k}"), i));
    }
    // The wan: one veth pair straight between the two namespaces.
    let wan = [format!("{tag}wa"), format!("{tag}wb")];
    ip_ok(&[
        "-n", &ns[0], "link", "add", &wan[0], "type", "veth", "peer", "name", &wan[1], "netns",
        &ns[1],
    ]);
    for i in 0..2 {
        ip_ok(&[
            "-n",
            &ns[i],
            "addr",
            "add",
            &format!("{}/30", WAN_IPS[i]),
            "dev",
            &wan[i],
        ]);
        ip_ok(&["-n", &ns[i], "link", "set", &wan[i], "up"]);
    }
    let set_wan = |state: &str| {
        for i in 0..2 {
            ip_ok(&["-n", &ns[i], "link", "set", &wan[i], state]);
        }
    };

    // Certificates and one config per region.
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    crate::harness::certs(&certs, &["a", "b"]);
    let token = "partition-test-token";
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut regions = Vec::new();
    for (i, r) in names.iter().enumerate() {
        let peer = 1 - i;
        let config = tmp.path().join(format!("{r}.toml"));
        std::fs::write(
            &config,
            format!(
                "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{}:0\"\n\
                 [replication]\nlisten = \"{}:{QUIC_PORT}\"\ncerts_dir = \"{}\"\n\
                 [[replication.peers]]\nregion = \"{}\"\naddr = \"{}:{QUIC_PORT}\"\n",
                tmp.path().join(r).display(),
                http_ips[i],
                WAN_IPS[i],
                certs.display(),
                names[peer],
                WAN_IPS[peer],
            ),
        )
        .unwrap();
        let (child, url) = spawn_in(&ns[i], &config, token, &[]);
        net.children.push(child);
        regions.push(NsRegion {
            url,
            token: token.to_string(),
            client: client.clone(),
        });
    }
    let (a, b) = (&regions[0], &regions[1]);

    // Connected: a write in a is read in b, with the same version.
    eventually(30, "both regions connected over the wan", || async {
        (a.peer_connected().await && b.peer_connected().await).then_some(())
    })
    .await;
    let shared = a.create_user("shared@example.com").await;
    let id = shared["id"].as_str().unwrap().to_string();
    let seen = eventually(20, "the shared user in b", || {
        b.user_named("shared@example.com")
    })
    .await;
    assert_eq!(seen["meta"]["version"], shared["meta"]["version"]);

    // Cut the wan and write on both sides.
    set_wan("down");
    let cut = Instant::now();
    a.create_user("only-in-a@example.com").await;
    b.create_user("only-in-b@example.com").await;
    a.replace(&id, "displayName", json!("Set In A")).await;
    b.replace(&id, "title", json!("Set In B")).await;
    // Absence means something only once each side has sent its two writes and waited out an
    // acknowledgement timeout for them: both hold changes the other has not acknowledged, and
    // both resent.
    let resent = |r: &NsRegion| {
        let (client, url) = (r.client.clone(), r.url.clone());
        async move {
            let h = health_json(&client, &url).await;
            let p = &h["replication"]["peers"][0];
            (
                p["behind_changes"].as_u64().unwrap_or(0),
                p["retransmits"].as_u64().unwrap_or(0),
            )
        }
    };
    let (ra, rb) = (resent(a).await.1, resent(b).await.1);
    eventually(30, "both sides resending across the cut", || async {
        let ((behind_a, ra1), (behind_b, rb1)) = (resent(a).await, resent(b).await);
        (behind_a >= 2 && behind_b >= 2 && ra1 > ra && rb1 > rb).then_some(())
    })
    .await;
    assert!(
        b.user_named("only-in-a@example.com").await.is_none(),
        "a's write crossed a cut link"
    );
    assert!(
        a.user_named("only-in-b@example.com").await.is_none(),
        "b's write crossed a cut link"
    );
    let (in_a, in_b) = (a.user(&id).await.unwrap(), b.user(&id).await.unwrap());
    assert!(in_a.get("title").is_none(), "{in_a}");
    assert!(in_b.get("displayName").is_none(), "{in_b}");
    println!("partition held for {:?}", cut.elapsed());

    // Heal: within 30 s both regions hold both users and identical shared JSON.
    set_wan("up");
    let healed = Instant::now();
    let views = eventually(30, "convergence after healing", || async {
        for r in [a, b] {
            r.user_named("only-in-a@example.com").await?;
            r.user_named("only-in-b@example.com").await?;
        }
        let (va, vb) = (a.user(&id).await?, b.user(&id).await?);
        (va == vb && va["displayName"] == json!("Set In A") && va["title"] == json!("Set In B"))
            .then_some((va, vb))
    })
    .await;
    assert_eq!(views.0["meta"]["version"], views.1["meta"]["version"]);
    assert_ne!(views.0["meta"]["version"], shared["meta"]["version"]);
    println!(
        "converged {:?} after healing; test took {:?}",
        healed.elapsed(),
        started.elapsed()
    );
}

//! Geo-DNS failover with real hosts: three regions and two clients, each in its own network
//! namespace on one bridged "wan" (a sixth namespace). The clients have their own addresses in
//! eu's and ap's `serves` networks and ask the responders themselves (`geoscim dns-query` run
//! inside their namespace). Each gets its region; kill -9 eu → within the RTO the eu client's
//! answers move to the next nearest (us) while the ap client keeps ap; restart eu → the answers
//! move back once the rise threshold has passed.
//!
//! Needs root and `ip netns` like [`crate::partition`]: skipped elsewhere, except under CI.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::partition::{ip, ip_ok, is_root, run, run_tag, spawn_in, unavailable, Netns};

/// Region wan addresses 10.218.0.{1,2,3}/16; clients 10.218.11.2 (eu's) and 10.218.13.2 (ap's).
fn region_ip(i: usize) -> String {
    format!("10.218.0.{}", i + 1)
}
const HTTP_PORT: u16 = 8080;
const DNS_PORT: u16 = 5300;
const NAMES: [&str; 3] = ["eu", "us", "ap"];

/// Ask `server` for the service name from inside namespace `ns`: the answered addresses, or
/// `None` when the query failed (a dead responder).
fn query_from(ns: &str, server: &str) -> Option<Vec<String>> {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_geoscim"),
            "dns-query",
            "--server",
            server,
            "--name",
            "scim.geoscim.test",
            "--json",
        ],
    )
    .ok()?;
    let v: Value = serde_json::from_str(out.trim()).ok()?;
    Some(
        v["addrs"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    )
}

/// Poll until `check` holds for the answer `ns` gets from `server`; how long it took.
async fn until(
    ns: &str,
    server: &str,
    secs: u64,
    what: &str,
    check: impl Fn(&[String]) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(secs) {
        let (ns2, server2) = (ns.to_string(), server.to_string());
        let got = tokio::task::spawn_blocking(move || query_from(&ns2, &server2))
            .await
            .unwrap();
        if let Some(a) = &got {
            if check(a) {
                return start.elapsed();
            }
        }
        last = got;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting for {what}; last answer {last:?}");
}

#[tokio::test]
async fn clients_get_their_region_and_follow_a_kill_and_a_restart() {
    if !is_root() {
        return unavailable("not running as root");
    }
    let (tag, _) = run_tag();
    let mut net = Netns::new();
    let wan_ns = format!("{tag}-w");
    if let Err(e) = net.add_namespace(&wan_ns) {
        return unavailable(&e);
    }
    let bridge = format!("{tag}br");
    if let Err(e) = ip(&["-n", &wan_ns, "link", "add", &bridge, "type", "bridge"]) {
        return unavailable(&e);
    }
    ip_ok(&["-n", &wan_ns, "link", "set", &bridge, "up"]);
    // Hosts on the bridge: the regions, then the clients.
    let hosts: Vec<(String, String)> = NAMES
        .iter()
        .enumerate()
        .map(|(i, r)| (r.to_string(), region_ip(i)))
        .chain([
            ("ceu".to_string(), "10.218.11.2".to_string()),
            ("cap".to_string(), "10.218.13.2".to_string()),
        ])
        .collect();
    for (h, addr) in &hosts {
        let ns = format!("{tag}-{h}");
        net.add_namespace(&ns).unwrap_or_else(|e| panic!("{e}"));
        ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
        let (host_if, port_if) = (format!("{tag}h{h}"), format!("{tag}h{h}x"));
        ip_ok(&[
            "-n", &ns, "link", "add", &host_if, "type", "veth", "peer", "name", &port_if, "netns",
            &wan_ns,
        ]);
        ip_ok(&["-n", &wan_ns, "link", "set", &port_if, "master", &bridge]);
        ip_ok(&["-n", &wan_ns, "link", "set", &port_if, "up"]);
        ip_ok(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/16"),
            "dev",
            &host_if,
        ]);
        ip_ok(&["-n", &ns, "link", "set", &host_if, "up"]);
    }

    // One config per region (no replication: DNS needs none), the same table in each.
    let tmp = tempfile::tempdir().unwrap();
    let mut table = String::new();
    for (i, (r, lat, lon)) in [("eu", 50.1, 8.7), ("us", 38.9, -77.4), ("ap", 1.35, 103.8)]
        .iter()
        .enumerate()
    {
        table += &format!(
            "[[dns.regions]]\nname = \"{r}\"\naddrs = [\"{ip}\"]\nlat = {lat}\nlon = {lon}\n\
             serves = [\"10.218.{}.0/24\"]\nhealth_url = \"http://{ip}:{HTTP_PORT}/health\"\n\
             ns = \"{ip}\"\n",
            11 + i,
            ip = region_ip(i)
        );
    }
    let mut configs = Vec::new();
    for (i, r) in NAMES.iter().enumerate() {
        let config = tmp.path().join(format!("{r}.toml"));
        std::fs::write(
            &config,
            format!(
                "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{ip}:{HTTP_PORT}\"\n\
                 [dns]\nlisten = \"{ip}:{DNS_PORT}\"\nzone = \"geoscim.test\"\n{table}",
                tmp.path().join(r).display(),
                ip = region_ip(i)
            ),
        )
        .unwrap();
        configs.push(config);
    }
    let mut children = Vec::new();
    for (i, r) in NAMES.iter().enumerate() {
        let (child, _) = spawn_in(&format!("{tag}-{r}"), &configs[i], "dns-netns-token", &[]);
        children.push(child);
    }
    let (ceu, cap) = (format!("{tag}-ceu"), format!("{tag}-cap"));
    let (eu_dns, us_dns, ap_dns) = (
        format!("{}:{DNS_PORT}", region_ip(0)),
        format!("{}:{DNS_PORT}", region_ip(1)),
        format!("{}:{DNS_PORT}", region_ip(2)),
    );
    let (eu_ip, us_ip, ap_ip) = (region_ip(0), region_ip(1), region_ip(2));

    // Each client gets its own region, from every responder alike.
    for server in [&eu_dns, &us_dns, &ap_dns] {
        until(&ceu, server, 30, "eu for the eu client", |a| {
            a == [eu_ip.clone()]
        })
        .await;
        until(&cap, server, 30, "ap for the ap client", |a| {
            a == [ap_ip.clone()]
        })
        .await;
    }

    // kill -9 eu: the eu client's answers (from us's and ap's responders) move to us.
    let mut eu = children.remove(0);
    let _ = eu.kill();
    let _ = eu.wait();
    let rto = until(
        &ceu,
        &us_dns,
        10,
        "us for the eu client after the kill",
        |a| a == [us_ip.clone()],
    )
    .await;
    println!("kill -9 eu -> answers without eu after {rto:?}");
    assert!(rto < Duration::from_secs(3), "RTO {rto:?} is over 3 s");
    until(&ceu, &ap_dns, 5, "the ap responder agrees", |a| {
        a == [us_ip.clone()]
    })
    .await;
    until(&cap, &us_dns, 5, "the ap client keeps ap", |a| {
        a == [ap_ip.clone()]
    })
    .await;

    // Restart eu: answers move back once eu has passed rise_after probes (3 × 500 ms).
    let restarted = Instant::now();
    let (child, _) = spawn_in(&format!("{tag}-eu"), &configs[0], "dns-netns-token", &[]);
    children.insert(0, child);
    let back = until(&ceu, &us_dns, 30, "eu again for the eu client", |a| {
        a == [eu_ip.clone()]
    })
    .await;
    let since_restart = restarted.elapsed();
    println!(
        "restart -> eu answered again {back:?} after polling started ({since_restart:?} after the restart)"
    );
    // Three good probes 500 ms apart take at least a second: not back at its first answer.
    assert!(
        since_restart >= Duration::from_millis(900),
        "eu answered again {since_restart:?} after its restart, before the rise threshold"
    );
    until(&ceu, &eu_dns, 10, "eu's own responder agrees", |a| {
        a == [eu_ip.clone()]
    })
    .await;
    net.children.extend(children);
}

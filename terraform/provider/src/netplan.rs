//! Pure: the network namespaces of a `geoscim_network` and the commands that build, cut, slow
//! and remove them. No processes, no files; `netcmd` runs what is planned here.
//!
//! The layout, for a network `name` on `10.N.0.0/16` and regions `r0, r1, …`:
//!
//! ```text
//!   root namespace            <name>-wan (router, forwards)         <name>-<r_i>
//!   <name>-h 10.N.0.2/24 ──── host 10.N.0.1/24
//!                             wan<i> 10.N.(i+1).1/24 ────────────── wan 10.N.(i+1).2/24
//! ```
//!
//! Every region has one address (its HTTP, QUIC and DNS listeners), reached from the root
//! namespace through the router (one route, `10.N.0.0/16 via 10.N.0.1`, on the root end of the
//! host link, gone with it) and from the other regions through the router too. So a partition
//! is policy rules in the router (`from <a's /24> to <b's /24> blackhole`, both ways: forwarded
//! packets are dropped without a word, as in a real partition) while every region stays
//! reachable from the root namespace, where Terraform, the data sources and idp-sim run. A
//! degraded link is `tc netem` on both ends of one region's link.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The default network: private, and far from the 10.1-10.3 networks the stacks' clients
/// pose as (ECS only, never routed).
pub const DEFAULT_CIDR: &str = "10.231.0.0/16";
/// Priority of the partition rules in the router (before `main`, 32766).
pub const RULE_PREF: &str = "100";
/// The interface of a region's own end of its link, inside its namespace.
pub const REGION_IF: &str = "wan";
/// The router's end of the host link.
pub const ROUTER_HOST_IF: &str = "host";

/// A setting that cannot work, naming the attribute and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{attribute}: {problem}")]
pub struct Invalid {
    pub attribute: String,
    pub problem: String,
}

fn invalid(attribute: impl Into<String>, problem: impl Into<String>) -> Invalid {
    Invalid {
        attribute: attribute.into(),
        problem: problem.into(),
    }
}

/// Networks in the record file as their text (`10.231.1.0/24`), through Display and FromStr
/// (ipnet's own serde support is a feature this package does not turn on).
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One command line (`program` is looked up by `netcmd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub(crate) fn new(program: &str, args: &[&str]) -> Cmd {
        Cmd {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// `ip -n <ns> …`.
    fn ip_in(ns: &str, args: &[&str]) -> Cmd {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        Cmd::new("ip", &all)
    }

    /// `ip netns exec <ns> <program> …`.
    fn exec_in(ns: &str, program: &str, args: &[&str]) -> Cmd {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        Cmd::new("ip", &all)
    }
}

impl std::fmt::Display for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.program, self.args.join(" "))
    }
}

/// One region's place in the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionLink {
    pub region: String,
    /// Its namespace (`<name>-<region>`): `geoscim_region.netns`.
    pub namespace: String,
    /// Its one address, `10.N.(i+1).2`.
    pub address: Ipv4Addr,
    /// The router's end, `10.N.(i+1).1`: its default route.
    pub gateway: Ipv4Addr,
    /// Its /24.
    #[serde(with = "as_text")]
    pub subnet: Ipv4Net,
    /// The router's end of its link (`wan<i>`, in the router namespace).
    pub router_if: String,
}

/// Everything a network is made of; written to its record file so faults can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub name: String,
    #[serde(with = "as_text")]
    pub cidr: Ipv4Net,
    /// The router's namespace (`<name>-wan`).
    pub router: String,
    /// The root namespace's end of the host link (`<name>-h`).
    pub host_if: String,
    pub host_address: Ipv4Addr,
    pub router_host_address: Ipv4Addr,
    pub regions: Vec<RegionLink>,
}

/// Names of networks: they prefix namespaces and the root end of the host link (15 characters
/// at most for an interface name, so the name is at most 10).
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = (1..=10).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!("{name:?} must be 1-10 characters of a-z and 0-9, starting with a letter (it prefixes namespaces and an interface name)"),
        ))
    }
}

/// The network's layout, or the attribute that is wrong.
pub fn layout(name: &str, cidr: &str, regions: &[String]) -> Result<Layout, Invalid> {
    check_name(name)?;
    let net: Ipv4Net = cidr.parse().map_err(|_| {
        invalid(
            "cidr",
            format!("{cidr:?} is not an IPv4 network (e.g. {DEFAULT_CIDR:?})"),
        )
    })?;
    let ten: Ipv4Net = "10.0.0.0/8".parse().expect("a network");
    if net.prefix_len() != 16 || !ten.contains(&net) || net.network() != net.addr() {
        return Err(invalid(
            "cidr",
            format!("{cidr:?} must be a 10.x.0.0/16 (one /24 per region inside it), e.g. {DEFAULT_CIDR:?}"),
        ));
    }
    if regions.is_empty() || regions.len() > 250 {
        return Err(invalid("regions", "list 1 to 250 regions"));
    }
    let [a, b, _, _] = net.network().octets();
    let mut links: Vec<RegionLink> = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        if !crate::regionconf::is_valid_name(r) {
            return Err(invalid(
                format!("regions[{i}]"),
                format!("{r:?} is not a region name (a-z 0-9 - _)"),
            ));
        }
        if links.iter().any(|l| &l.region == r) {
            return Err(invalid(
                format!("regions[{i}]"),
                format!("{r:?} is listed twice"),
            ));
        }
        let c = (i + 1) as u8;
        links.push(RegionLink {
            region: r.clone(),
            namespace: format!("{name}-{r}"),
            address: Ipv4Addr::new(a, b, c, 2),
            gateway: Ipv4Addr::new(a, b, c, 1),
            subnet: Ipv4Net::new(Ipv4Addr::new(a, b, c, 0), 24).expect("a /24"),
            router_if: format!("wan{i}"),
        });
    }
    Ok(Layout {
        name: name.into(),
        cidr: net,
        router: format!("{name}-wan"),
        host_if: format!("{name}-h"),
        host_address: Ipv4Addr::new(a, b, 0, 2),
        router_host_address: Ipv4Addr::new(a, b, 0, 1),
        regions: links,
    })
}

impl Layout {
    /// Every namespace of the network, the router's first.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.router.clone())
            .chain(self.regions.iter().map(|r| r.namespace.clone()))
            .collect()
    }

    pub fn region(&self, name: &str) -> Option<&RegionLink> {
        self.regions.iter().find(|r| r.region == name)
    }
}

/// The commands that build `l`, in order. A failure at any step is undone with
/// [`destroy_commands`] (each of which may find its object already gone).
pub fn create_commands(l: &Layout) -> Vec<Cmd> {
    let r = l.router.as_str();
    let host_net = |ip: Ipv4Addr| format!("{ip}/24");
    let mut c = vec![
        Cmd::new("ip", &["netns", "add", r]),
        Cmd::ip_in(r, &["link", "set", "lo", "up"]),
        // The router forwards between the links (its own namespace's setting only).
        Cmd::exec_in(r, "sh", &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]),
        Cmd::new(
            "ip",
            &[
                "link",
                "add",
                &l.host_if,
                "type",
                "veth",
                "peer",
                "name",
                ROUTER_HOST_IF,
                "netns",
                r,
            ],
        ),
        Cmd::ip_in(
            r,
            &[
                "addr",
                "add",
                &host_net(l.router_host_address),
                "dev",
                ROUTER_HOST_IF,
            ],
        ),
        Cmd::ip_in(r, &["link", "set", ROUTER_HOST_IF, "up"]),
        Cmd::new(
            "ip",
            &["addr", "add", &host_net(l.host_address), "dev", &l.host_if],
        ),
        Cmd::new("ip", &["link", "set", &l.host_if, "up"]),
        Cmd::new(
            "ip",
            &[
                "route",
                "add",
                &l.cidr.to_string(),
                "via",
                &l.router_host_address.to_string(),
                "dev",
                &l.host_if,
            ],
        ),
    ];
    for x in &l.regions {
        let ns = x.namespace.as_str();
        c.extend([
            Cmd::new("ip", &["netns", "add", ns]),
            Cmd::ip_in(ns, &["link", "set", "lo", "up"]),
            Cmd::ip_in(
                r,
                &[
                    "link",
                    "add",
                    &x.router_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    REGION_IF,
                    "netns",
                    ns,
                ],
            ),
            Cmd::ip_in(
                r,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", x.gateway),
                    "dev",
                    &x.router_if,
                ],
            ),
            Cmd::ip_in(r, &["link", "set", &x.router_if, "up"]),
            Cmd::ip_in(
                ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", x.address),
                    "dev",
                    REGION_IF,
                ],
            ),
            Cmd::ip_in(ns, &["link", "set", REGION_IF, "up"]),
            Cmd::ip_in(
                ns,
                &["route", "add", "default", "via", &x.gateway.to_string()],
            ),
        ]);
    }
    c
}

/// The commands that remove `l`: the host link (its route goes with it), then every
/// namespace (their veths go with them). Each may find its object gone already.
pub fn destroy_commands(l: &Layout) -> Vec<Cmd> {
    std::iter::once(Cmd::new("ip", &["link", "del", "dev", &l.host_if]))
        .chain(
            l.namespaces()
                .iter()
                .rev()
                .map(|ns| Cmd::new("ip", &["netns", "del", ns])),
        )
        .collect()
}

/// Whether an error of `ip`/`tc` says the object was not there (undo is then done).
pub fn is_absent(error: &str) -> bool {
    [
        "Cannot find device",
        "No such file or directory",
        "does not exist",
        "Cannot open network namespace",
        "No such process",
        "Invalid handle",
        "Cannot delete qdisc with handle of zero",
    ]
    .iter()
    .any(|s| error.contains(s))
}

/// The root namespace's routes (`ip -4 route show` output) that overlap `cidr` and are not
/// this network's own (on `host_if`): the network would shadow them or be shadowed.
pub fn overlapping_routes(routes: &str, cidr: Ipv4Net, host_if: &str) -> Vec<String> {
    routes
        .lines()
        .filter(|line| !line.split_whitespace().any(|w| w == host_if))
        .filter(|line| {
            let dest = line.split_whitespace().next().unwrap_or_default();
            let net: Option<Ipv4Net> = match dest {
                "default" => None,
                d if d.contains('/') => d.parse().ok(),
                d => d.parse::<Ipv4Addr>().ok().map(Ipv4Net::from),
            };
            net.is_some_and(|n| n.contains(&cidr) || cidr.contains(&n))
        })
        .map(str::to_string)
        .collect()
}

/// A partition rule in the router: packets from `from` to `to` are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    #[serde(with = "as_text")]
    pub from: Ipv4Net,
    #[serde(with = "as_text")]
    pub to: Ipv4Net,
}

/// Side `b` of a partition: as given, or every region of the network not in `a`.
pub fn other_side(l: &Layout, a: &[String]) -> Vec<String> {
    l.regions
        .iter()
        .map(|r| r.region.clone())
        .filter(|r| !a.contains(r))
        .collect()
}

/// The rules that cut every link between side `a` and side `b` (both ways), or the attribute
/// that is wrong. Links within a side stay.
pub fn partition_rules(l: &Layout, a: &[String], b: &[String]) -> Result<Vec<Rule>, Invalid> {
    let find = |attr: &str, side: &[String]| -> Result<Vec<Ipv4Net>, Invalid> {
        if side.is_empty() {
            return Err(invalid(attr, "name at least one region"));
        }
        side.iter()
            .enumerate()
            .map(|(i, r)| {
                l.region(r).map(|x| x.subnet).ok_or_else(|| {
                    invalid(
                        format!("{attr}[{i}]"),
                        format!(
                            "{r:?} is not a region of network {:?} (its regions: {})",
                            l.name,
                            l.regions
                                .iter()
                                .map(|r| r.region.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })
            })
            .collect()
    };
    let (na, nb) = (find("side_a", a)?, find("side_b", b)?);
    if let Some(r) = a.iter().find(|r| b.contains(r)) {
        return Err(invalid(
            "side_b",
            format!("{r:?} is on both sides; a region is on one side of a partition"),
        ));
    }
    let mut rules = Vec::new();
    for x in &na {
        for y in &nb {
            rules.push(Rule { from: *x, to: *y });
            rules.push(Rule { from: *y, to: *x });
        }
    }
    Ok(rules)
}

fn rule_cmd(l: &Layout, verb: &str, r: &Rule) -> Cmd {
    Cmd::ip_in(
        &l.router,
        &[
            "rule",
            verb,
            "pref",
            RULE_PREF,
            "from",
            &r.from.to_string(),
            "to",
            &r.to.to_string(),
            "blackhole",
        ],
    )
}

/// `ip -n <router> rule add pref 100 from A to B blackhole`.
pub fn rule_add(l: &Layout, r: &Rule) -> Cmd {
    rule_cmd(l, "add", r)
}

/// The same with `del`: the undo.
pub fn rule_del(l: &Layout, r: &Rule) -> Cmd {
    rule_cmd(l, "del", r)
}

/// `ip -n <router> rule show pref 100`: what [`rules_present`] reads.
pub fn rule_show(l: &Layout) -> Cmd {
    Cmd::ip_in(&l.router, &["rule", "show", "pref", RULE_PREF])
}

/// The rules of `want` found in `ip rule show` output
/// (`100:<tab>from 10.231.1.0/24 to 10.231.2.0/24 blackhole`).
pub fn rules_present(show: &str, want: &[Rule]) -> usize {
    let have: Vec<(String, String)> = show
        .lines()
        .filter(|l| l.contains("blackhole"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |k: &str| {
                w.iter()
                    .position(|x| *x == k)
                    .and_then(|i| w.get(i + 1))
                    .map(|s| s.to_string())
            };
            Some((at("from")?, at("to")?))
        })
        .collect();
    want.iter()
        .filter(|r| have.contains(&(r.from.to_string(), r.to.to_string())))
        .count()
}

/// How a degraded link behaves (`tc netem`), each direction.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Netem {
    pub delay_ms: i64,
    pub jitter_ms: i64,
    pub loss_percent: f64,
}

impl Netem {
    /// Check the figures, naming the attribute.
    pub fn check(&self) -> Result<(), Invalid> {
        if !(0..=60_000).contains(&self.delay_ms) {
            return Err(invalid(
                "delay_ms",
                "must be within 0..=60000 (milliseconds)",
            ));
        }
        if !(0..=self.delay_ms).contains(&self.jitter_ms) {
            return Err(invalid(
                "jitter_ms",
                format!(
                    "must be within 0..=delay_ms ({}); jitter varies the delay around it",
                    self.delay_ms
                ),
            ));
        }
        if !(0.0..=100.0).contains(&self.loss_percent) || self.loss_percent.is_nan() {
            return Err(invalid("loss_percent", "must be within 0..=100"));
        }
        if self.delay_ms == 0 && self.loss_percent == 0.0 {
            return Err(invalid(
                "delay_ms",
                "a degrade needs delay_ms or loss_percent above 0",
            ));
        }
        Ok(())
    }

    /// The netem part of a `tc qdisc add` line.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["netem".to_string()];
        if self.delay_ms > 0 {
            a.extend(["delay".into(), format!("{}ms", self.delay_ms)]);
            if self.jitter_ms > 0 {
                a.push(format!("{}ms", self.jitter_ms));
            }
        }
        if self.loss_percent > 0.0 {
            a.extend(["loss".into(), format!("{}%", self.loss_percent)]);
        }
        a
    }
}

/// Where a degraded region's link is shaped: (namespace, interface) of both its ends, so each
/// direction gets the delay and the loss.
pub fn degrade_targets(l: &Layout, regions: &[String]) -> Result<Vec<(String, String)>, Invalid> {
    if regions.is_empty() {
        return Err(invalid(
            "side_a",
            "name the region(s) whose link to degrade",
        ));
    }
    let mut t = Vec::new();
    for (i, r) in regions.iter().enumerate() {
        let x = l.region(r).ok_or_else(|| {
            invalid(
                format!("side_a[{i}]"),
                format!("{r:?} is not a region of network {:?}", l.name),
            )
        })?;
        t.push((x.namespace.clone(), REGION_IF.to_string()));
        t.push((l.router.clone(), x.router_if.clone()));
    }
    Ok(t)
}

/// `ip netns exec <ns> tc qdisc add dev <if> root netem …`.
pub fn netem_add(ns: &str, dev: &str, n: &Netem) -> Cmd {
    let mut c = Cmd::exec_in(ns, "tc", &["qdisc", "add", "dev", dev, "root"]);
    c.args.extend(n.args());
    c
}

/// `ip netns exec <ns> tc qdisc del dev <if> root`: the undo.
pub fn netem_del(ns: &str, dev: &str) -> Cmd {
    Cmd::exec_in(ns, "tc", &["qdisc", "del", "dev", dev, "root"])
}

/// `ip netns exec <ns> tc qdisc show dev <if>`: a degrade holds while it names netem.
pub fn qdisc_show(ns: &str, dev: &str) -> Cmd {
    Cmd::exec_in(ns, "tc", &["qdisc", "show", "dev", dev])
}

/// Whether this kernel has `sch_netem`, from what the machine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetemSupport {
    Yes,
    No(String),
    /// Nothing says either way: try, and let tc's error speak.
    Unknown,
}

/// Decide from: the module is loaded (`/sys/module/sch_netem`), its file is installed under
/// `/lib/modules/<release>`, and the kernel's config (`/proc/config.gz` or `/boot/config-*`).
pub fn netem_support(loaded: bool, module_file: bool, config: Option<&str>) -> NetemSupport {
    if loaded || module_file {
        return NetemSupport::Yes;
    }
    match config {
        Some(c) if c.lines().any(|l| l.trim() == "CONFIG_NET_SCH_NETEM=y") => NetemSupport::Yes,
        Some(c) if c.lines().any(|l| l.trim() == "CONFIG_NET_SCH_NETEM=m") => NetemSupport::No(
            "sch_netem is a module of this kernel but is not installed (no sch_netem.ko under /lib/modules)".into(),
        ),
        Some(_) => NetemSupport::No(
            "this kernel is built without sch_netem (CONFIG_NET_SCH_NETEM is not set)".into(),
        ),
        None => NetemSupport::Unknown,
    }
}

/// The effective uid from `/proc/self/status` text.
pub fn euid_of(status: &str) -> Option<u32> {
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<String> {
        ["eu", "us", "ap"].map(String::from).to_vec()
    }

    fn l() -> Layout {
        layout("gstf", DEFAULT_CIDR, &regions()).unwrap()
    }

    fn lines(c: &[Cmd]) -> Vec<String> {
        c.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn a_layout_gives_each_region_a_namespace_a_24_and_one_address() {
        let l = l();
        assert_eq!(l.router, "gstf-wan");
        assert_eq!(l.host_if, "gstf-h");
        assert_eq!(l.host_address.to_string(), "10.231.0.2");
        let us = l.region("us").unwrap();
        assert_eq!(us.namespace, "gstf-us");
        assert_eq!(us.address.to_string(), "10.231.2.2");
        assert_eq!(us.gateway.to_string(), "10.231.2.1");
        assert_eq!(us.subnet.to_string(), "10.231.2.0/24");
        assert_eq!(us.router_if, "wan1");
        assert_eq!(
            l.namespaces(),
            ["gstf-wan", "gstf-eu", "gstf-us", "gstf-ap"]
        );
    }

    #[test]
    fn bad_settings_name_their_attribute() {
        let e = layout("Gs", DEFAULT_CIDR, &regions()).unwrap_err();
        assert_eq!(e.attribute, "name");
        let e = layout("averylongname", DEFAULT_CIDR, &regions()).unwrap_err();
        assert_eq!(e.attribute, "name");
        for bad in [
            "192.168.0.0/16",
            "10.231.0.0/24",
            "10.231.4.0/16",
            "nope",
            "127.0.0.0/16",
        ] {
            let e = layout("gs", bad, &regions()).unwrap_err();
            assert_eq!(e.attribute, "cidr", "{bad}");
            assert!(e.problem.contains("10.231.0.0/16"), "{e}");
        }
        let e = layout("gs", DEFAULT_CIDR, &["eu".into(), "eu".into()]).unwrap_err();
        assert_eq!(e.attribute, "regions[1]");
        let e = layout("gs", DEFAULT_CIDR, &["EU".into()]).unwrap_err();
        assert_eq!(e.attribute, "regions[0]");
        assert_eq!(
            layout("gs", DEFAULT_CIDR, &[]).unwrap_err().attribute,
            "regions"
        );
    }

    #[test]
    fn creating_builds_the_router_the_host_link_and_one_link_per_region() {
        let c = lines(&create_commands(&l()));
        assert_eq!(c[0], "ip netns add gstf-wan");
        assert!(c.contains(
            &"ip netns exec gstf-wan sh -c echo 1 > /proc/sys/net/ipv4/ip_forward".into()
        ));
        assert!(c.contains(&"ip link add gstf-h type veth peer name host netns gstf-wan".into()));
        assert!(c.contains(&"ip route add 10.231.0.0/16 via 10.231.0.1 dev gstf-h".into()));
        assert!(c.contains(
            &"ip -n gstf-wan link add wan2 type veth peer name wan netns gstf-ap".into()
        ));
        assert!(c.contains(&"ip -n gstf-ap addr add 10.231.3.2/24 dev wan".into()));
        assert!(c.contains(&"ip -n gstf-ap route add default via 10.231.3.1".into()));
        // Nothing outside the network's own namespaces and host link is touched.
        for line in &c {
            assert!(line.contains("gstf-"), "{line} touches something not ours");
        }
        // A region's namespace exists before its link is moved into it.
        let ns = c.iter().position(|x| x == "ip netns add gstf-eu").unwrap();
        let link = c.iter().position(|x| x.contains("netns gstf-eu")).unwrap();
        assert!(ns < link);
    }

    #[test]
    fn destroying_removes_the_host_link_and_every_namespace() {
        let c = lines(&destroy_commands(&l()));
        assert_eq!(
            c,
            [
                "ip link del dev gstf-h",
                "ip netns del gstf-ap",
                "ip netns del gstf-us",
                "ip netns del gstf-eu",
                "ip netns del gstf-wan",
            ]
        );
        assert!(is_absent("Cannot find device \"gstf-h\""));
        assert!(is_absent(
            "Cannot remove namespace file \"/run/netns/x\": No such file or directory"
        ));
        assert!(!is_absent("Operation not permitted"));
    }

    #[test]
    fn a_route_of_the_machine_overlapping_the_network_is_found() {
        let routes = "default via 172.16.0.1 dev eth0\n10.0.0.0/8 via 172.16.0.1 dev eth1\n\
                      172.16.0.0/24 dev eth0 proto kernel scope link\n\
                      10.231.0.0/16 via 10.231.0.1 dev gstf-h\n";
        let net: Ipv4Net = DEFAULT_CIDR.parse().unwrap();
        assert_eq!(
            overlapping_routes(routes, net, "gstf-h"),
            ["10.0.0.0/8 via 172.16.0.1 dev eth1"]
        );
        assert!(overlapping_routes("10.5.0.0/16 dev x\n", net, "gstf-h").is_empty());
        assert_eq!(
            overlapping_routes("10.231.7.9 dev y\n", net, "gstf-h").len(),
            1
        );
    }

    #[test]
    fn a_partition_cuts_every_pair_across_both_ways_and_nothing_within_a_side() {
        let l = l();
        let a = vec!["eu".to_string()];
        let b = other_side(&l, &a);
        assert_eq!(b, ["us", "ap"]);
        let rules = partition_rules(&l, &a, &b).unwrap();
        assert_eq!(rules.len(), 4);
        let c = lines(&rules.iter().map(|r| rule_add(&l, r)).collect::<Vec<_>>());
        assert_eq!(
            c,
            [
                "ip -n gstf-wan rule add pref 100 from 10.231.1.0/24 to 10.231.2.0/24 blackhole",
                "ip -n gstf-wan rule add pref 100 from 10.231.2.0/24 to 10.231.1.0/24 blackhole",
                "ip -n gstf-wan rule add pref 100 from 10.231.1.0/24 to 10.231.3.0/24 blackhole",
                "ip -n gstf-wan rule add pref 100 from 10.231.3.0/24 to 10.231.1.0/24 blackhole",
            ]
        );
        assert_eq!(
            rule_del(&l, &rules[0]).to_string(),
            "ip -n gstf-wan rule del pref 100 from 10.231.1.0/24 to 10.231.2.0/24 blackhole"
        );
        // us and ap keep their link.
        let us_ap = Rule {
            from: "10.231.2.0/24".parse().unwrap(),
            to: "10.231.3.0/24".parse().unwrap(),
        };
        assert!(!rules.contains(&us_ap));

        assert_eq!(
            partition_rules(&l, &a, &["mars".into()])
                .unwrap_err()
                .attribute,
            "side_b[0]"
        );
        assert_eq!(
            partition_rules(&l, &[], &b).unwrap_err().attribute,
            "side_a"
        );
        assert_eq!(
            partition_rules(&l, &a, &["eu".into()])
                .unwrap_err()
                .attribute,
            "side_b"
        );
    }

    #[test]
    fn the_rules_in_force_are_read_back_from_ip_rule_show() {
        let l = l();
        let rules = partition_rules(&l, &["eu".into()], &["us".into()]).unwrap();
        let show = "100:\tfrom 10.231.1.0/24 to 10.231.2.0/24 blackhole\n";
        assert_eq!(rules_present(show, &rules), 1);
        let both = format!("{show}100:\tfrom 10.231.2.0/24 to 10.231.1.0/24 blackhole\n");
        assert_eq!(rules_present(&both, &rules), 2);
        assert_eq!(rules_present("", &rules), 0);
        assert_eq!(
            rule_show(&l).to_string(),
            "ip -n gstf-wan rule show pref 100"
        );
    }

    #[test]
    fn degrade_figures_are_checked_and_shape_both_ends_of_the_link() {
        let n = Netem {
            delay_ms: 200,
            jitter_ms: 20,
            loss_percent: 1.5,
        };
        assert!(n.check().is_ok());
        let t = degrade_targets(&l(), &["us".into()]).unwrap();
        assert_eq!(
            t,
            [
                ("gstf-us".to_string(), "wan".to_string()),
                ("gstf-wan".to_string(), "wan1".to_string())
            ]
        );
        assert_eq!(
            netem_add(&t[0].0, &t[0].1, &n).to_string(),
            "ip netns exec gstf-us tc qdisc add dev wan root netem delay 200ms 20ms loss 1.5%"
        );
        assert_eq!(
            netem_del(&t[1].0, &t[1].1).to_string(),
            "ip netns exec gstf-wan tc qdisc del dev wan1 root"
        );
        let delay_only = Netem {
            delay_ms: 200,
            ..Default::default()
        };
        assert_eq!(delay_only.args(), ["netem", "delay", "200ms"]);
        let loss_only = Netem {
            loss_percent: 10.0,
            ..Default::default()
        };
        assert_eq!(loss_only.args(), ["netem", "loss", "10%"]);

        let bad = |n: Netem| n.check().unwrap_err().attribute;
        assert_eq!(bad(Netem { delay_ms: -1, ..n }), "delay_ms");
        assert_eq!(
            bad(Netem {
                jitter_ms: 300,
                ..n
            }),
            "jitter_ms"
        );
        assert_eq!(
            bad(Netem {
                loss_percent: 101.0,
                ..n
            }),
            "loss_percent"
        );
        assert_eq!(bad(Netem::default()), "delay_ms");
        assert_eq!(
            degrade_targets(&l(), &["mars".into()])
                .unwrap_err()
                .attribute,
            "side_a[0]"
        );
    }

    #[test]
    fn netem_support_is_read_from_the_module_and_the_kernel_config() {
        assert_eq!(netem_support(true, false, None), NetemSupport::Yes);
        assert_eq!(netem_support(false, true, None), NetemSupport::Yes);
        assert_eq!(
            netem_support(false, false, Some("CONFIG_NET_SCH_NETEM=y\n")),
            NetemSupport::Yes
        );
        assert!(matches!(
            netem_support(false, false, Some("# CONFIG_NET_SCH_NETEM is not set\n")),
            NetemSupport::No(why) if why.contains("CONFIG_NET_SCH_NETEM")
        ));
        assert!(matches!(
            netem_support(false, false, Some("CONFIG_NET_SCH_NETEM=m\n")),
            NetemSupport::No(_)
        ));
        assert_eq!(netem_support(false, false, None), NetemSupport::Unknown);
    }

    #[test]
    fn the_effective_uid_is_the_third_field() {
        assert_eq!(euid_of("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(euid_of("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(euid_of(""), None);
    }
}

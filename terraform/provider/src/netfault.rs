//! The network kinds of `geoscim_fault`, on a `geoscim_network`:
//!
//! - `partition`: every link between `side_a` and `side_b` (default: the network's other
//!   regions) is cut in the router (blackhole rules both ways); links within a side stay, and
//!   every region stays reachable from the root namespace. Undone by deleting the rules.
//! - `degrade`: `tc netem` (delay, jitter, loss) on both ends of each `side_a` region's link.
//!   Undone by deleting the qdiscs.
//!
//! Both hold only what they added: a create that fails half-way removes its own rules or
//! qdiscs before it reports, so Terraform (which records nothing of a failed create) leaves
//! nothing behind.

use crate::netcmd;
use crate::netplan::{self, Invalid, Layout, Netem, Rule};

/// What a network fault does, resolved against the network's layout.
#[derive(Debug, Clone, PartialEq)]
pub enum NetFault {
    Partition(Vec<Rule>),
    /// (namespace, interface) of every end to shape, and how.
    Degrade(Vec<(String, String)>, Netem),
}

/// Resolve a fault's settings against `l`.
pub fn plan(
    l: &Layout,
    kind: &str,
    side_a: &[String],
    side_b: &[String],
    netem: Netem,
) -> Result<NetFault, Invalid> {
    match kind {
        "partition" => Ok(NetFault::Partition(netplan::partition_rules(
            l, side_a, side_b,
        )?)),
        _ => {
            netem.check()?;
            Ok(NetFault::Degrade(
                netplan::degrade_targets(l, side_a)?,
                netem,
            ))
        }
    }
}

/// The commands that inject and those that undo `f`, pairwise (undo[i] undoes add[i]).
pub fn commands(l: &Layout, f: &NetFault) -> (Vec<netplan::Cmd>, Vec<netplan::Cmd>) {
    match f {
        NetFault::Partition(rules) => (
            rules.iter().map(|r| netplan::rule_add(l, r)).collect(),
            rules.iter().map(|r| netplan::rule_del(l, r)).collect(),
        ),
        NetFault::Degrade(targets, n) => (
            targets
                .iter()
                .map(|(ns, dev)| netplan::netem_add(ns, dev, n))
                .collect(),
            targets
                .iter()
                .map(|(ns, dev)| netplan::netem_del(ns, dev))
                .collect(),
        ),
    }
}

/// Side regions whose namespace has no process: the region does not run inside the network
/// (it would not be cut), as (attribute, region).
pub fn regions_outside(l: &Layout, side: &str, regions: &[String]) -> Vec<(String, String)> {
    regions
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            let Some(x) = l.region(r) else { return false };
            let pids = netcmd::run(&netplan::Cmd {
                program: "ip".into(),
                args: vec!["netns".into(), "pids".into(), x.namespace.clone()],
            })
            .unwrap_or_default();
            pids.trim().is_empty()
        })
        .map(|(i, r)| (format!("{side}[{i}]"), r.clone()))
        .collect()
}

/// Inject `f`; on failure undo what was added and say why.
pub async fn inject(l: &Layout, f: &NetFault) -> Result<(), String> {
    let (add, undo) = commands(l, f);
    match netcmd::run_all(add).await {
        Ok(()) => Ok(()),
        Err((done, e)) => {
            let undo_err = netcmd::undo_all(undo[..done].to_vec()).await.err();
            let hint = if e.contains("qdisc kind is unknown") {
                " (this kernel has no sch_netem: degrade cannot run here; partition can)"
            } else if e.contains("File exists") || e.contains("Exclusivity flag on") {
                " (another fault already holds this link: one fault per link)"
            } else {
                ""
            };
            Err(format!(
                "{e}{hint}; the {done} step(s) already made were undone{}",
                undo_err
                    .map(|u| format!(" except: {u}"))
                    .unwrap_or_default()
            ))
        }
    }
}

/// Undo `f` (what is already gone counts as undone, also a network removed first).
pub async fn undo(l: &Layout, f: &NetFault) -> Result<(), String> {
    netcmd::undo_all(commands(l, f).1).await
}

/// Whether `f` holds entirely (a fault partly undone behind Terraform's back reads as gone).
pub fn holds(l: &Layout, f: &NetFault) -> bool {
    match f {
        NetFault::Partition(rules) => netcmd::run(&netplan::rule_show(l))
            .map(|show| netplan::rules_present(&show, rules) == rules.len())
            .unwrap_or(false),
        NetFault::Degrade(targets, _) => targets.iter().all(|(ns, dev)| {
            netcmd::run(&netplan::qdisc_show(ns, dev)).is_ok_and(|out| out.contains("netem"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use tf_provider::value::Value;
    use tf_provider::{Diagnostics, Resource};

    use super::*;
    use crate::fault::{FaultResource, FaultState};
    use crate::network::tests::test_network;
    use crate::network::{read_record, remains, NetworkResource};
    use crate::process::{self, Launch};
    use crate::region::tests::{processes_with, single};
    use crate::region::{MemberValue, RegionResource};
    use crate::region_state::s;

    /// Whether a TCP connection from inside `ns` to `addr` opens within a second.
    fn connects_from(ns: &str, addr: &str) -> bool {
        let (ip, port) = addr.split_once(':').unwrap();
        netcmd::run(&netplan::Cmd {
            program: "ip".into(),
            args: [
                "netns",
                "exec",
                ns,
                "timeout",
                "1",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{ip}/{port}"),
            ]
            .map(String::from)
            .to_vec(),
        })
        .is_ok()
    }

    /// A process that only holds a namespace (a region that needs no ports for the test),
    /// returned once it runs inside it (spawning returns before `ip netns exec` has entered).
    fn sleeper_in(dir: &Path, ns: &str) -> i32 {
        let pid = process::spawn(&Launch {
            binary: "/bin/sleep".into(),
            args: vec!["307.5".into()],
            env: vec![],
            log: dir.join("sleeper.log"),
            pid_file: dir.join("sleeper.pid"),
            netns: Some(ns.into()),
            marker: "307.5".into(),
        })
        .unwrap();
        let inside = || {
            netcmd::run(&netplan::Cmd {
                program: "ip".into(),
                args: vec!["netns".into(), "pids".into(), ns.into()],
            })
            .unwrap_or_default()
            .split_whitespace()
            .any(|p| p == pid.to_string())
        };
        let start = std::time::Instant::now();
        while !inside() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sleeper never entered {ns}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pid
    }

    #[tokio::test]
    async fn a_partition_cuts_across_only_keeps_the_root_namespace_and_a_failed_one_leaves_nothing()
    {
        let dir = tempfile::tempdir().unwrap();
        let Some(net) = test_network(dir.path(), "gstp", "10.233.0.0/16", &["eu", "us"]).await
        else {
            return;
        };
        let l = read_record(Path::new(&s(&net.record_file))).unwrap();
        let _guard = crate::network::tests::Guard(l.clone());
        let (eu, us) = (l.region("eu").unwrap(), l.region("us").unwrap());
        // A real region in us's namespace on us's address; eu's namespace holds a sleeper.
        let mut region = single(dir.path(), 8);
        let addr = format!("{}:18080", us.address);
        region.cluster = Value::Value(vec![MemberValue {
            http: Value::Value(addr.clone()),
            quic: Value::Value(format!("{}:17100", us.address)),
            dns: Value::Value(format!("{}:15300", us.address)),
            ..region.cluster.as_ref_option().unwrap()[0].clone()
        }]);
        region.netns = Value::Value(us.namespace.clone());
        region.apply_defaults();
        let mut d = Diagnostics::default();
        // Its create waits for /health from the root namespace, through the router.
        let (region, _) = RegionResource
            .create(
                &mut d,
                region,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("region create in a namespace failed: {d:?}"));
        let fault = FaultState {
            kind: Value::Value("partition".into()),
            network: net.record_file.clone(),
            side_a: Value::Value(vec!["eu".into()]),
            ..Default::default()
        };
        // Nothing runs in eu's namespace yet: cutting it off would cut nothing, so it is refused.
        let mut refused = Diagnostics::default();
        assert!(FaultResource
            .create(
                &mut refused,
                fault.clone(),
                Default::default(),
                Default::default(),
                Default::default()
            )
            .await
            .is_none());
        let text = format!("{refused:?}");
        assert!(
            text.contains("side_a") && text.contains("runs no process"),
            "{text}"
        );

        let sleeper = sleeper_in(dir.path(), &eu.namespace);
        assert!(
            connects_from(&eu.namespace, &addr),
            "eu reaches us before the cut"
        );
        assert!(
            FaultResource
                .validate(&mut d, fault.clone())
                .await
                .is_some(),
            "{d:?}"
        );
        let (planned, _) = FaultResource
            .plan_create(&mut d, fault, Default::default(), Default::default())
            .await
            .unwrap();
        assert_eq!(planned.side_b, Value::Value(vec!["us".to_string()]));
        let (held, _) = FaultResource
            .create(
                &mut d,
                planned.clone(),
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("partition failed: {d:?}"));
        assert!(
            !connects_from(&eu.namespace, &addr),
            "eu must not reach us across the cut"
        );
        assert!(
            crate::probe::health(
                &crate::probe::client(Duration::from_secs(2)),
                addr.parse().unwrap()
            )
            .await
            .is_some(),
            "the root namespace still reaches us"
        );
        assert!(FaultResource
            .read(&mut d, held.clone(), Default::default(), Default::default())
            .await
            .is_some());
        // A second partition of the same pair fails and takes nothing of the first with it.
        assert!(FaultResource
            .create(
                &mut d,
                planned.clone(),
                Default::default(),
                Default::default(),
                Default::default()
            )
            .await
            .is_none());
        assert!(format!("{d:?}").contains("one fault per link"), "{d:?}");
        assert!(FaultResource
            .read(&mut d, held.clone(), Default::default(), Default::default())
            .await
            .is_some());

        // Destroying the fault heals the link and leaves no rule.
        FaultResource
            .destroy(&mut d, held.clone(), Default::default(), Default::default())
            .await
            .unwrap();
        let show = netcmd::run(&netplan::rule_show(&l)).unwrap();
        assert!(!show.contains("blackhole"), "{show}");
        assert!(connects_from(&eu.namespace, &addr), "healed");
        assert!(FaultResource
            .read(&mut d, held, Default::default(), Default::default())
            .await
            .is_none());

        // A partition whose apply fails half-way (the second rule is in the way) removes the
        // rule it had added: only the obstacle is left.
        let NetFault::Partition(rules) = plan(
            &l,
            "partition",
            &["eu".into()],
            &["us".into()],
            Netem::default(),
        )
        .unwrap() else {
            unreachable!()
        };
        netcmd::run(&netplan::rule_add(&l, &rules[1])).unwrap();
        let mut failed = Diagnostics::default();
        assert!(FaultResource
            .create(
                &mut failed,
                planned,
                Default::default(),
                Default::default(),
                Default::default()
            )
            .await
            .is_none());
        let show = netcmd::run(&netplan::rule_show(&l)).unwrap();
        assert_eq!(netplan::rules_present(&show, &rules), 1, "{show}");
        assert_eq!(netplan::rules_present(&show, &rules[1..]), 1, "{show}");
        netcmd::run(&netplan::rule_del(&l, &rules[1])).unwrap();

        // The destroy after it (regions, then the network) leaves no process, no namespace, no
        // link; the sleeper was left on purpose: the network's destroy stops it.
        let marker = s(&region.config_file);
        RegionResource
            .destroy(&mut d, region, Default::default(), Default::default())
            .await
            .unwrap();
        NetworkResource
            .destroy(&mut d, net, Default::default(), Default::default())
            .await
            .unwrap_or_else(|| panic!("network destroy failed: {d:?}"));
        assert!(
            format!("{d:?}").contains(&format!("pid {sleeper}")),
            "{d:?}"
        );
        assert!(processes_with(&marker).is_empty());
        assert!(process::wait_dead(sleeper, "307.5", Duration::from_secs(5)));
        assert!(remains(&l).is_empty(), "{:?}", remains(&l));
    }

    #[tokio::test]
    async fn a_degrade_shapes_both_ends_or_is_refused_at_plan_where_netem_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let Some(net) = test_network(dir.path(), "gstd", "10.234.0.0/16", &["eu", "us"]).await
        else {
            return;
        };
        let l = read_record(Path::new(&s(&net.record_file))).unwrap();
        let _guard = crate::network::tests::Guard(l.clone());
        let fault = FaultState {
            kind: Value::Value("degrade".into()),
            network: net.record_file.clone(),
            side_a: Value::Value(vec!["eu".into()]),
            delay_ms: Value::Value(200),
            jitter_ms: Value::Value(20),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        if let Some(why) = netcmd::netem_unavailable() {
            // This machine's kernel has no sch_netem: the plan says so on `kind`.
            assert!(FaultResource.validate(&mut d, fault).await.is_none());
            let text = format!("{d:?}");
            assert!(text.contains("kind") && text.contains("netem"), "{text}");
            println!("degrade not run here: {why}");
        } else {
            let sleeper = sleeper_in(dir.path(), &l.region("eu").unwrap().namespace);
            let (planned, _) = FaultResource
                .plan_create(&mut d, fault, Default::default(), Default::default())
                .await
                .unwrap();
            let (held, _) = FaultResource
                .create(
                    &mut d,
                    planned,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                )
                .await
                .unwrap_or_else(|| panic!("degrade failed: {d:?}"));
            let show = netcmd::run(&netplan::qdisc_show(&l.router, "wan0")).unwrap();
            assert!(show.contains("netem") && show.contains("200"), "{show}");
            FaultResource
                .destroy(&mut d, held.clone(), Default::default(), Default::default())
                .await
                .unwrap();
            assert!(FaultResource
                .read(&mut d, held, Default::default(), Default::default())
                .await
                .is_none());
            process::signal(sleeper, nix::sys::signal::Signal::SIGKILL).unwrap();
        }
        NetworkResource
            .destroy(&mut d, net, Default::default(), Default::default())
            .await
            .unwrap();
        assert!(remains(&l).is_empty());
    }
}

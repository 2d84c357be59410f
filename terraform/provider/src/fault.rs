//! `geoscim_fault`: a fault that holds while the resource exists and is undone when it is
//! destroyed.
//!
//! - `kill`: SIGKILL to the region's process, kept down (the region resource reads "down: kill
//!   fault" instead of gone, so Terraform does not start it again); undone by starting it again
//!   from its launch record and waiting for `/health`.
//! - `stop`: SIGSTOP (a hung region: connections open, nothing answers); undone by SIGCONT.
//! - `partition`, `degrade`: cut or slow links between regions running in the namespaces of a
//!   `geoscim_network` (`netfault`). They need root and iproute2 (degrade also `sch_netem`):
//!   the plan says so, naming the attribute and the fix, when they cannot work.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::netfault::{self, NetFault};
use crate::netplan::{Invalid, Netem};
use crate::network::read_record;
use crate::process::{self, Liveness};
use crate::region::{wait_healthy, RegionFiles};
use crate::schema::{attr, error_at, schema, strings, Number};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FaultState {
    pub id: Value<String>,
    pub kind: Value<String>,
    pub region: Value<String>,
    pub http: Value<String>,
    pub restore_timeout_ms: Value<i64>,
    pub network: Value<String>,
    pub side_a: Value<Vec<String>>,
    pub side_b: Value<Vec<String>>,
    pub delay_ms: Value<i64>,
    pub jitter_ms: Value<i64>,
    pub loss_percent: Value<Number>,
    pub started_at_ms: Value<i64>,
}

fn list(v: &Value<Vec<String>>) -> Vec<String> {
    v.as_ref_option().cloned().unwrap_or_default()
}

impl FaultState {
    fn kind(&self) -> String {
        self.kind.as_ref_option().cloned().unwrap_or_default()
    }

    fn netem(&self) -> Netem {
        Netem {
            delay_ms: self.delay_ms.as_ref_option().copied().unwrap_or(0),
            jitter_ms: self.jitter_ms.as_ref_option().copied().unwrap_or(0),
            loss_percent: self.loss_percent.as_ref_option().map_or(0.0, |n| n.0),
        }
    }

    /// The network fault this state describes, resolved against its network's record.
    fn net_fault(&self) -> Result<(crate::netplan::Layout, NetFault), String> {
        let l = read_record(std::path::Path::new(
            &self.network.as_ref_option().cloned().unwrap_or_default(),
        ))?;
        let a = list(&self.side_a);
        let b = match &self.side_b {
            Value::Value(b) if !b.is_empty() => b.clone(),
            _ => crate::netplan::other_side(&l, &a),
        };
        let f =
            netfault::plan(&l, &self.kind(), &a, &b, self.netem()).map_err(|e| e.to_string())?;
        Ok((l, f))
    }
}

fn invalid(attribute: &str, problem: impl Into<String>) -> Invalid {
    Invalid {
        attribute: attribute.into(),
        problem: problem.into(),
    }
}

/// What the settings of a fault must be, per kind (pure; values unknown at plan pass).
pub fn check(c: &FaultState) -> Result<(), Invalid> {
    let kind = c.kind.as_ref_option().cloned().unwrap_or_default();
    match kind.as_str() {
        "kill" | "stop" => {
            if c.region.is_null() {
                return Err(invalid(
                    "region",
                    format!("kind = {kind:?} needs region = geoscim_region.<name>.launch_file"),
                ));
            }
        }
        "partition" | "degrade" => {
            if c.network.is_null() {
                return Err(invalid(
                    "network",
                    format!(
                        "kind = {kind:?} works on regions in network namespaces: create a geoscim_network, run each \
                         region with netns = geoscim_network.<n>.namespaces[\"<region>\"], and set network = \
                         geoscim_network.<n>.record_file"
                    ),
                ));
            }
            if matches!(&c.side_a, Value::Value(a) if a.is_empty()) || c.side_a.is_null() {
                return Err(invalid(
                    "side_a",
                    if kind == "partition" {
                        "name the regions on one side of the cut (side_b defaults to every other region)"
                    } else {
                        "name the region(s) whose link to degrade"
                    },
                ));
            }
            if kind == "degrade" {
                let known = !c.delay_ms.is_unknown()
                    && !c.jitter_ms.is_unknown()
                    && !c.loss_percent.is_unknown();
                if known {
                    c.netem().check()?;
                }
            } else if let Some(attr) = [
                ("delay_ms", c.delay_ms.is_null()),
                ("jitter_ms", c.jitter_ms.is_null()),
                ("loss_percent", c.loss_percent.is_null()),
            ]
            .iter()
            .find(|(_, null)| !null)
            {
                return Err(invalid(
                    attr.0,
                    "only a degrade has delay, jitter and loss; a partition drops everything",
                ));
            }
        }
        other => {
            return Err(invalid(
                "kind",
                format!("{other:?} is not a fault kind; use \"kill\", \"stop\", \"partition\" or \"degrade\""),
            ))
        }
    }
    Ok(())
}

/// Why `kind` cannot be made on this machine, if it cannot (I/O: reads /proc, finds tools).
fn unavailable(kind: &str) -> Option<String> {
    match kind {
        "partition" => crate::netcmd::namespaces_unavailable(),
        "degrade" => crate::netcmd::netem_unavailable(),
        _ => None,
    }
}

fn files_of(state: &FaultState) -> Result<RegionFiles, String> {
    let launch = PathBuf::from(state.region.as_ref_option().cloned().unwrap_or_default());
    RegionFiles::from_launch(&launch).ok_or_else(|| {
        format!(
            "{} is not a region's launch file: use geoscim_region.<name>.launch_file",
            launch.display()
        )
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Inject the fault. Errors are (attribute, detail).
async fn inject(state: &mut FaultState) -> Result<(), (&'static str, String)> {
    let kind = state.kind();
    check(state).map_err(|e| ("kind", e.to_string()))?;
    if let Some(why) = unavailable(&kind) {
        return Err(("kind", why));
    }
    match kind.as_str() {
        "kill" | "stop" => inject_process(state).await.map_err(|e| ("region", e)),
        _ => {
            let (l, f) = state.net_fault().map_err(|e| ("network", e))?;
            if state.side_b.is_null() || state.side_b.is_unknown() {
                state.side_b = Value::Value(if kind == "partition" {
                    crate::netplan::other_side(&l, &list(&state.side_a))
                } else {
                    vec![]
                });
            }
            let outside = netfault::regions_outside(&l, "side_a", &list(&state.side_a))
                .into_iter()
                .chain(netfault::regions_outside(
                    &l,
                    "side_b",
                    &list(&state.side_b),
                ));
            if let Some((attr, region)) = outside.into_iter().next() {
                return Err((
                    if attr.starts_with("side_a") { "side_a" } else { "side_b" },
                    format!(
                        "{attr}: region {region:?} runs no process in namespace {:?}: run it there (geoscim_region.netns = geoscim_network.<n>.namespaces[\"{region}\"]) and apply it first",
                        l.region(&region).map(|r| r.namespace.as_str()).unwrap_or_default()
                    ),
                ));
            }
            netfault::inject(&l, &f).await.map_err(|e| ("kind", e))
        }
    }
}

async fn inject_process(state: &FaultState) -> Result<(), String> {
    let kind = state.kind();
    let files = files_of(state)?;
    let launch = process::read_launch(&files.launch).map_err(|e| e.to_string())?;
    let pid = process::read_pid(&files.pid)
        .filter(|p| process::liveness(*p, &launch.marker) != Liveness::Dead)
        .ok_or_else(|| "the region is not running (apply the region first)".to_string())?;
    if files.fault.exists() {
        return Err(format!(
            "another fault already holds this region ({}); one fault per region",
            std::fs::read_to_string(&files.fault)
                .unwrap_or_default()
                .trim()
        ));
    }
    std::fs::write(&files.fault, &kind).map_err(|e| format!("{}: {e}", files.fault.display()))?;
    match kind.as_str() {
        "kill" => {
            process::signal(pid, Signal::SIGKILL).map_err(|e| e.to_string())?;
            let marker = launch.marker.clone();
            tokio::task::spawn_blocking(move || {
                process::wait_dead(pid, &marker, Duration::from_secs(10))
            })
            .await
            .map_err(|e| e.to_string())?
            .then_some(())
            .ok_or_else(|| format!("process {pid} survived SIGKILL for 10 s"))
        }
        "stop" => process::signal(pid, Signal::SIGSTOP).map_err(|e| e.to_string()),
        _ => unreachable!("checked above"),
    }
}

async fn undo(state: &FaultState) -> Result<(), String> {
    match state.kind().as_str() {
        "partition" | "degrade" => match state.net_fault() {
            Ok((l, f)) => netfault::undo(&l, &f).await,
            // The network's record is gone (the network was destroyed, and its rules and
            // qdiscs with its namespaces): nothing to undo.
            Err(_) => Ok(()),
        },
        _ => undo_process(state).await,
    }
}

async fn undo_process(state: &FaultState) -> Result<(), String> {
    let files = files_of(state)?;
    let kind = state.kind.as_ref_option().cloned().unwrap_or_default();
    let launch = match process::read_launch(&files.launch) {
        Ok(l) => l,
        // The region itself is gone (destroyed first): nothing to restore.
        Err(_) => {
            let _ = std::fs::remove_file(&files.fault);
            return Ok(());
        }
    };
    let pid = process::read_pid(&files.pid);
    let result = match kind.as_str() {
        "stop" => match pid {
            Some(p) => process::signal(p, Signal::SIGCONT).map_err(|e| e.to_string()),
            None => Ok(()),
        },
        "kill" => {
            let alive = pid.is_some_and(|p| process::liveness(p, &launch.marker) != Liveness::Dead);
            if alive {
                Ok(())
            } else {
                let pid = process::spawn(&launch).map_err(|e| e.to_string())?;
                let http = state.http.as_ref_option().cloned().unwrap_or_default();
                let timeout = Duration::from_millis(
                    state
                        .restore_timeout_ms
                        .as_ref_option()
                        .copied()
                        .unwrap_or(30_000) as u64,
                );
                if http.is_empty() {
                    Ok(())
                } else {
                    wait_healthy(&http, pid, &launch.marker, timeout)
                        .await
                        .map_err(|why| {
                            format!(
                                "the region did not come back: {why}. Last lines of {}:\n{}",
                                launch.log.display(),
                                crate::lifecycle::log_tail(&launch.log, 15)
                            )
                        })
                }
            }
        }
        _ => Ok(()),
    };
    let _ = std::fs::remove_file(&files.fault);
    result
}

#[derive(Debug, Default, Clone, Copy)]
pub struct FaultResource;

#[async_trait]
impl Resource for FaultResource {
    type State<'a> = FaultState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "A fault that holds while this resource exists and is undone when it is destroyed.",
            vec![
                (
                    "id",
                    attr(T::String, C::Computed, "<kind>:<region launch file>"),
                ),
                (
                    "kind",
                    attr(
                        T::String,
                        C::Required,
                        "kill, stop (a region), partition, degrade (links of a geoscim_network; need root)",
                    ),
                ),
                (
                    "region",
                    attr(
                        T::String,
                        C::Optional,
                        "kill and stop: the target, geoscim_region.<name>.launch_file",
                    ),
                ),
                (
                    "network",
                    attr(
                        T::String,
                        C::Optional,
                        "partition and degrade: geoscim_network.<name>.record_file",
                    ),
                ),
                (
                    "side_a",
                    attr(
                        strings(),
                        C::Optional,
                        "partition: the regions cut off from side_b; degrade: the regions whose link is slowed",
                    ),
                ),
                (
                    "side_b",
                    attr(
                        strings(),
                        C::OptionalComputed,
                        "partition: the other side (default: every other region of the network)",
                    ),
                ),
                (
                    "delay_ms",
                    attr(T::Number, C::Optional, "degrade: added delay each way (0..=60000)"),
                ),
                (
                    "jitter_ms",
                    attr(T::Number, C::Optional, "degrade: delay varies by up to this (0..=delay_ms)"),
                ),
                (
                    "loss_percent",
                    attr(T::Number, C::Optional, "degrade: packets lost each way (0..=100)"),
                ),
                (
                    "http",
                    attr(
                        T::String,
                        C::Optional,
                        "the region's HTTP ip:port: undoing a kill waits for its /health",
                    ),
                ),
                (
                    "restore_timeout_ms",
                    attr(
                        T::Number,
                        C::OptionalComputed,
                        "how long undoing waits for /health (default 30000)",
                    ),
                ),
                (
                    "started_at_ms",
                    attr(
                        T::Number,
                        C::Computed,
                        "when the fault was injected (Unix ms)",
                    ),
                ),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if config.kind.is_unknown() {
            return Some(());
        }
        if let Err(e) = check(&config) {
            error_at(diags, &e.attribute, "invalid fault", e.problem);
            return None;
        }
        if let Some(why) = unavailable(&config.kind()) {
            error_at(diags, "kind", "this fault cannot be made here", why);
            return None;
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        _diags: &mut Diagnostics,
        state: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // A fault someone undid behind Terraform's back reads as gone (the plan injects it again).
        if matches!(state.kind().as_str(), "partition" | "degrade") {
            let (l, f) = state.net_fault().ok()?;
            return netfault::holds(&l, &f).then_some((state, private));
        }
        let files = files_of(&state).ok()?;
        let launch = process::read_launch(&files.launch).ok()?;
        if !files.fault.exists() {
            return None;
        }
        let live = process::read_pid(&files.pid)
            .map_or(Liveness::Dead, |p| process::liveness(p, &launch.marker));
        let holds = match state.kind.as_ref_option().map(String::as_str) {
            Some("kill") => live == Liveness::Dead,
            Some("stop") => live == Liveness::Stopped,
            _ => false,
        };
        holds.then_some((state, private))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed;
        if state.restore_timeout_ms.is_null() {
            state.restore_timeout_ms = Value::Value(30_000);
        }
        if state.side_b.is_null() && state.kind() == "partition" {
            // Known now when the network exists already; else at apply.
            state.side_b = match state.net_fault() {
                Ok((l, _)) => Value::Value(crate::netplan::other_side(&l, &list(&state.side_a))),
                Err(_) => Value::Unknown,
            };
        }
        state.id = Value::Unknown;
        state.started_at_ms = Value::Unknown;
        Some((state, Default::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let mut state = proposed;
        if state.restore_timeout_ms.is_null() {
            state.restore_timeout_ms = Value::Value(30_000);
        }
        if state.side_b.is_null() && state.kind() == "partition" {
            state.side_b = prior.side_b.clone();
        }
        let mut replace = vec![];
        for (name, changed) in [
            ("kind", state.kind != prior.kind),
            ("region", state.region != prior.region),
            ("http", state.http != prior.http),
            ("network", state.network != prior.network),
            ("side_a", state.side_a != prior.side_a),
            ("side_b", state.side_b != prior.side_b),
            ("delay_ms", state.delay_ms != prior.delay_ms),
            ("jitter_ms", state.jitter_ms != prior.jitter_ms),
            ("loss_percent", state.loss_percent != prior.loss_percent),
        ] {
            if changed {
                replace.push(AttributePath::new(name));
            }
        }
        if replace.is_empty() {
            state.id = prior.id;
            state.started_at_ms = prior.started_at_ms;
        } else {
            state.id = Value::Unknown;
            state.started_at_ms = Value::Unknown;
        }
        Some((state, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<Self::PrivateState<'a>> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = planned;
        let started = now_ms();
        if let Err((attribute, e)) = inject(&mut state).await {
            error_at(diags, attribute, "cannot inject the fault", e);
            return None;
        }
        let target = match state.kind().as_str() {
            "kill" | "stop" => state.region.as_ref_option().cloned().unwrap_or_default(),
            _ => format!(
                "{}:{}",
                state.network.as_ref_option().cloned().unwrap_or_default(),
                list(&state.side_a).join(",")
            ),
        };
        state.id = Value::Value(format!("{}:{target}", state.kind()));
        state.started_at_ms = Value::Value(started);
        Some((state, private))
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        Some((planned, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        match undo(&state).await {
            Ok(()) => Some(()),
            Err(e) => {
                diags.root_error("cannot undo the fault", e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::tests::{processes_with, single};
    use crate::region::RegionResource;

    fn config(kind: &str) -> FaultState {
        FaultState {
            kind: Value::Value(kind.into()),
            ..Default::default()
        }
    }

    #[test]
    fn each_kind_asks_for_its_own_settings_naming_the_attribute() {
        let attr = |c: &FaultState| check(c).unwrap_err().attribute;
        assert_eq!(attr(&config("kill")), "region");
        let mut kill = config("kill");
        kill.region = Value::Value("/w/eu.launch.json".into());
        assert!(check(&kill).is_ok());
        assert_eq!(attr(&config("explode")), "kind");

        // Partition and degrade need a network, and say how to make one.
        let e = check(&config("partition")).unwrap_err();
        assert_eq!(e.attribute, "network");
        assert!(
            e.problem.contains("geoscim_network") && e.problem.contains("netns"),
            "{e}"
        );
        let mut p = config("partition");
        p.network = Value::Value("/w/gs.network.json".into());
        assert_eq!(attr(&p), "side_a");
        p.side_a = Value::Value(vec!["eu".into()]);
        assert!(check(&p).is_ok());
        p.delay_ms = Value::Value(10);
        assert_eq!(attr(&p), "delay_ms");

        let mut d = config("degrade");
        d.network = p.network.clone();
        d.side_a = Value::Value(vec!["eu".into()]);
        assert_eq!(attr(&d), "delay_ms", "a degrade without figures");
        d.delay_ms = Value::Value(200);
        d.jitter_ms = Value::Value(20);
        d.loss_percent = Value::Value(Number(0.5));
        assert!(check(&d).is_ok());
        d.jitter_ms = Value::Value(500);
        assert_eq!(attr(&d), "jitter_ms");
        d.jitter_ms = Value::Value(0);
        d.loss_percent = Value::Value(Number(150.0));
        assert_eq!(attr(&d), "loss_percent");
        // Figures known only at apply are checked then.
        d.loss_percent = Value::Unknown;
        assert!(check(&d).is_ok());
    }

    #[tokio::test]
    async fn a_partition_without_a_network_is_refused_at_plan_on_the_network_attribute() {
        let mut d = Diagnostics::default();
        assert!(FaultResource
            .validate(&mut d, config("partition"))
            .await
            .is_none());
        let text = format!("{d:?}");
        assert!(
            text.contains("network") && text.contains("record_file"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_kill_fault_keeps_the_region_down_until_it_is_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Diagnostics::default();
        let (region, _) = RegionResource
            .create(
                &mut d,
                single(dir.path(), 3),
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("create failed: {d:?}"));
        let fault = FaultState {
            kind: Value::Value("kill".into()),
            region: region.launch_file.clone(),
            http: Value::Value("127.0.9.3:18080".into()),
            restore_timeout_ms: Value::Value(20_000),
            ..Default::default()
        };
        let (fault, _) = FaultResource
            .create(
                &mut d,
                fault,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("inject failed: {d:?}"));
        let marker = region.config_file.as_ref_option().unwrap().clone();
        assert!(processes_with(&marker).is_empty(), "killed");
        // The region reads as present but down (no recreate while the fault holds)...
        let (held, _) = RegionResource
            .read(
                &mut d,
                region.clone(),
                Default::default(),
                Default::default(),
            )
            .await
            .expect("held down, not gone");
        assert_eq!(held.running, Value::Value(false));
        assert_eq!(held.status.as_ref_option().unwrap(), "down: kill fault");
        // ...and the fault reads as holding.
        assert!(FaultResource
            .read(
                &mut d,
                fault.clone(),
                Default::default(),
                Default::default()
            )
            .await
            .is_some());
        // Destroying the fault starts the region again and waits for /health.
        FaultResource
            .destroy(&mut d, fault, Default::default(), Default::default())
            .await
            .unwrap_or_else(|| panic!("undo failed: {d:?}"));
        let (back, _) = RegionResource
            .read(
                &mut d,
                region.clone(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(back.running, Value::Value(true));
        assert_eq!(back.status.as_ref_option().unwrap(), "ok");
        RegionResource
            .destroy(&mut d, back, Default::default(), Default::default())
            .await
            .unwrap();
        assert!(processes_with(&marker).is_empty());
    }
}

//! `geoscim_fault`: a fault that holds while the resource exists and is undone when it is
//! destroyed.
//!
//! - `kill`: SIGKILL to the region's process, kept down (the region resource reads "down: kill
//!   fault" instead of gone, so Terraform does not start it again); undone by starting it again
//!   from its launch record and waiting for `/health`.
//! - `stop`: SIGSTOP (a hung region: connections open, nothing answers); undone by SIGCONT.
//! - `partition`, `degrade`: cut or slow links between regions. They need regions in network
//!   namespaces; this provider refuses them with a diagnostic that says so (see the README).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::process::{self, Liveness};
use crate::region::{wait_healthy, RegionFiles};
use crate::schema::{attr, error_at, schema};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FaultState {
    pub id: Value<String>,
    pub kind: Value<String>,
    pub region: Value<String>,
    pub http: Value<String>,
    pub restore_timeout_ms: Value<i64>,
    pub started_at_ms: Value<i64>,
}

/// The fault kinds, and whether this provider can make them here.
pub fn kind_supported(kind: &str) -> Result<(), String> {
    match kind {
        "kill" | "stop" => Ok(()),
        "partition" | "degrade" => Err(format!(
            "kind = {kind:?} needs the regions in network namespaces (veth links to cut or shape with tc netem), \
             which this provider does not build yet; use \"kill\" or \"stop\" on loopback, or cut links by hand \
             as the runbook shows"
        )),
        other => Err(format!(
            "{other:?} is not a fault kind; use \"kill\", \"stop\", \"partition\" or \"degrade\""
        )),
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

async fn inject(state: &FaultState) -> Result<(), String> {
    let kind = state.kind.as_ref_option().cloned().unwrap_or_default();
    kind_supported(&kind)?;
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
                    wait_healthy(&http, pid, &launch.marker, timeout).await
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
                        "kill, stop (partition and degrade need network namespaces)",
                    ),
                ),
                (
                    "region",
                    attr(
                        T::String,
                        C::Required,
                        "the target: geoscim_region.<name>.launch_file",
                    ),
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
        if let Value::Value(kind) = &config.kind {
            if let Err(e) = kind_supported(kind) {
                error_at(diags, "kind", "fault not available", e);
                return None;
            }
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
        let mut replace = vec![];
        for (name, changed) in [
            ("kind", state.kind != prior.kind),
            ("region", state.region != prior.region),
            ("http", state.http != prior.http),
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
        if let Err(e) = inject(&state).await {
            error_at(diags, "region", "cannot inject the fault", e);
            return None;
        }
        state.id = Value::Value(format!(
            "{}:{}",
            state.kind.as_ref_option().cloned().unwrap_or_default(),
            state.region.as_ref_option().cloned().unwrap_or_default()
        ));
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

    #[test]
    fn partition_and_degrade_say_what_they_need() {
        assert!(kind_supported("kill").is_ok());
        let e = kind_supported("partition").unwrap_err();
        assert!(e.contains("network namespaces"), "{e}");
        assert!(kind_supported("explode")
            .unwrap_err()
            .contains("not a fault kind"));
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

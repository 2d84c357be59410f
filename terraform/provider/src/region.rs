//! `geoscim_region`: one region, run as a detached `geoscim serve` process.
//!
//! Files of region `<name>` live in `work_dir`: `<name>.toml` (the region file), `<name>.log`,
//! `<name>.pid`, `<name>.launch.json` (how to start it again, for faults) and
//! `<name>.resource.json` (the resource's attributes, for `terraform import`). A read finds the
//! process through the pid file; a dead or zombie process reads as gone (so the plan shows the
//! drift and apply starts it again), except while a `geoscim_fault` holds it down.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

pub use crate::lifecycle::{default_binary, wait_healthy, RegionFiles};
use crate::lifecycle::{log_tail, observe, stop_region, verdict};
use crate::process::{self, Liveness};
use crate::region_state::s;
pub use crate::region_state::{MemberValue, RegionState};
use crate::regionconf;
use crate::schema::{attr, error_at, schema, string_map, strings};

#[derive(Debug, Default, Clone, Copy)]
pub struct RegionResource;

#[async_trait]
impl Resource for RegionResource {
    type State<'a> = RegionState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        // Object types, not nested attributes: tf-provider 0.2.2 sends nested attributes with
        // both a type and a nested type, which Terraform rejects as an invalid schema.
        let member = T::Object(
            [
                ("name", T::String),
                ("http", T::String),
                ("quic", T::String),
                ("dns", T::String),
                ("lat", T::Number),
                ("lon", T::Number),
                ("serves", strings()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        let token = T::Object(
            [("tenant", T::String), ("sha256", T::String)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        );
        Some(schema(
            "One geoscim region: a detached `geoscim serve` process with a region file written from these settings. Changing any setting restarts (replaces) it.",
            vec![
                ("id", attr(T::String, C::Computed, "the region name")),
                ("name", attr(T::String, C::Required, "region name (a-z 0-9 - _); must be one of cluster")),
                ("cluster", attr(T::List(Box::new(member)), C::Required, "every region of the cluster, this one included; give each region the same list")),
                ("work_dir", attr(T::String, C::Required, "folder for the region file, log, pid and launch record")),
                ("certs_dir", attr(T::String, C::Required, "folder with ca.pem and <name>.pem/.key (geoscim_cluster_certs.dir)")),
                ("binary", attr(T::String, C::OptionalComputed, "the geoscim binary (default: next to the provider)")),
                ("data_dir", attr(T::String, C::OptionalComputed, "RocksDB folder (default: <work_dir>/<name>-data)")),
                ("zone", attr(T::String, C::OptionalComputed, "DNS zone (default geoscim.test)")),
                ("replication_mode", attr(T::String, C::OptionalComputed, "async (default) or sync")),
                ("write_quorum", attr(T::Number, C::OptionalComputed, "regions that must hold a quorum write (default 2, 1 alone)")),
                ("tokens", attr(T::List(Box::new(token)), C::Optional, "tenant tokens accepted: tenant + sha256 (geoscim_token.sha256); only hashes reach the region file")),
                ("admin_token_hashes", attr(strings(), C::Optional, "SHA-256 of admin tokens accepted")),
                ("tenant_homes", attr(string_map(), C::Optional, "tenant -> home region for <tenant>.<zone>")),
                ("env", attr(string_map(), C::Optional, "further GEOSCIM_* settings (README's configuration table), e.g. GEOSCIM_DNS__FALL_AFTER")),
                ("netns", attr(T::String, C::Optional, "run inside this network namespace (ip netns exec); needs root")),
                ("keep_data", attr(T::Bool, C::OptionalComputed, "keep data_dir when destroyed (default false)")),
                ("stop_timeout_ms", attr(T::Number, C::OptionalComputed, "SIGTERM, then SIGKILL after this (default 10000)")),
                ("start_timeout_ms", attr(T::Number, C::OptionalComputed, "how long create waits for /health 200 (default 30000)")),
                ("pid", attr(T::Number, C::Computed, "process id")),
                ("running", attr(T::Bool, C::Computed, "the process runs (false while a fault holds it)")),
                ("status", attr(T::String, C::Computed, "ok / unavailable / unreachable / down: <kind> fault / stopped")),
                ("http_url", attr(T::String, C::Computed, "http://<http>")),
                ("config_file", attr(T::String, C::Computed, "the region file written")),
                ("log_file", attr(T::String, C::Computed, "stdout and stderr of the region")),
                ("launch_file", attr(T::String, C::Computed, "launch record; geoscim_fault.region takes it")),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        // Values known only at apply (another resource's output) are checked at apply.
        if !config.fully_known() {
            return Some(());
        }
        let mut c = config;
        c.apply_defaults();
        if let Err(e) = c.settings() {
            error_at(diags, &e.attribute, "invalid region setting", e.to_string());
            return None;
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        private_state: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let files = state.files();
        let marker = files.config.display().to_string();
        let observed = observe(&files, &marker);
        let health = match (&observed.liveness, state.me()) {
            (Liveness::Running, Some(me)) => {
                let client = crate::probe::client(Duration::from_millis(1000));
                match s(&me.http).parse() {
                    Ok(addr) => crate::probe::health(&client, addr)
                        .await
                        .map(|(code, body)| {
                            body["status"]
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or(format!("http {code}"))
                        }),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let (running, status) = verdict(&observed, health.as_deref())?;
        let mut state = state;
        state.running = Value::Value(running);
        state.status = Value::Value(status);
        if let Some(pid) = observed.pid {
            state.pid = Value::Value(pid as i64);
        }
        let _ = diags;
        Some((state, private_state))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed;
        state.apply_defaults();
        state.pid = Value::Unknown;
        state.running = Value::Unknown;
        state.status = Value::Unknown;
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
        state.apply_defaults();
        let replace: Vec<AttributePath> =
            regionconf::restart_needed(&prior.restart_view(), &state.restart_view())
                .into_iter()
                .map(AttributePath::new)
                .collect();
        if replace.is_empty() {
            state.pid = prior.pid;
            state.running = prior.running;
            state.status = prior.status;
        } else {
            state.pid = Value::Unknown;
            state.running = Value::Unknown;
            state.status = Value::Unknown;
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
        state.apply_defaults();
        match start(&state).await {
            Ok(pid) => {
                state.pid = Value::Value(pid as i64);
                state.running = Value::Value(true);
                state.status = Value::Value("ok".into());
                Some((state, private))
            }
            Err((attribute, detail)) => {
                error_at(diags, attribute, "cannot start the region", detail);
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // Only settings that need no restart reach here (keep_data, the timeouts).
        let mut state = planned;
        state.pid = prior.pid;
        state.running = prior.running;
        state.status = prior.status;
        write_resource_record(&state);
        Some((state, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        let files = state.files();
        let timeout = Duration::from_millis(
            state
                .stop_timeout_ms
                .as_ref_option()
                .copied()
                .unwrap_or(10_000) as u64,
        );
        if let Err(e) = stop_region(&files, files.config.display().to_string(), timeout).await {
            diags.root_error("cannot stop the region", e);
            return None;
        }
        for f in [
            &files.pid,
            &files.launch,
            &files.fault,
            &files.resource,
            &files.config,
        ] {
            let _ = std::fs::remove_file(f);
        }
        if !state.keep_data.as_ref_option().copied().unwrap_or(false) {
            let data = s(&state.data_dir);
            if !data.is_empty() {
                if let Err(e) = std::fs::remove_dir_all(&data) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        diags.root_warning("data_dir not removed", format!("{data}: {e}"));
                    }
                }
            }
        }
        Some(())
    }

    async fn import<'a>(
        &self,
        diags: &mut Diagnostics,
        id: String,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        // The id is `<work_dir>/<name>`: the resource record written at create has every setting.
        let path = PathBuf::from(format!("{id}.resource.json"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.root_error(
                    "cannot import the region",
                    format!("{}: {e}; the import id is <work_dir>/<name> of a region this provider started", path.display()),
                );
                return None;
            }
        };
        match serde_json::from_str::<RegionState>(&text) {
            Ok(state) => Some((state, Default::default())),
            Err(e) => {
                diags.root_error(
                    "cannot import the region",
                    format!("{}: {e}", path.display()),
                );
                None
            }
        }
    }
}

/// The JSON of a state as plain values (no Terraform markers), for the resource record.
fn write_resource_record(state: &RegionState) {
    if let Ok(text) = serde_json::to_string_pretty(state) {
        let _ = std::fs::write(&state.files().resource, text);
    }
}

/// Write the region's files and start it; wait for `/health`. On failure nothing is left
/// running. Errors are (attribute, detail).
pub async fn start(state: &RegionState) -> Result<i32, (&'static str, String)> {
    let settings = state.settings().map_err(|e| ("cluster", e.to_string()))?;
    let files = state.files();
    std::fs::create_dir_all(&files.dir)
        .map_err(|e| ("work_dir", format!("{}: {e}", files.dir.display())))?;
    let marker = files.config.display().to_string();
    let seen = observe(&files, &marker);
    if seen.liveness != Liveness::Dead {
        return Err((
            "name",
            format!(
                "region {} already runs (pid {:?}) from {}: import it (terraform import <address> {}) or stop it",
                settings.name,
                seen.pid,
                files.config.display(),
                files.dir.join(&settings.name).display()
            ),
        ));
    }
    let binary = PathBuf::from(s(&state.binary));
    if !binary.is_file() {
        return Err((
            "binary",
            format!(
                "{} does not exist: build it (cargo build --release) or set binary",
                binary.display()
            ),
        ));
    }
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| ("data_dir", format!("{}: {e}", settings.data_dir)))?;
    std::fs::write(&files.config, regionconf::render(&settings))
        .map_err(|e| ("work_dir", format!("{}: {e}", files.config.display())))?;
    let launch = state.launch();
    process::write_launch(&files.launch, &launch).map_err(|e| ("work_dir", e.to_string()))?;
    let _ = std::fs::remove_file(&files.fault);
    let mut record = state.clone();
    record.pid = Value::Null;
    record.running = Value::Null;
    record.status = Value::Null;
    write_resource_record(&record);
    let pid = process::spawn(&launch).map_err(|e| ("binary", e.to_string()))?;
    let me = state.me().map(|m| s(&m.http)).unwrap_or_default();
    let timeout = Duration::from_millis(
        state
            .start_timeout_ms
            .as_ref_option()
            .copied()
            .unwrap_or(30_000) as u64,
    );
    if let Err(why) = wait_healthy(&me, pid, &marker, timeout).await {
        let _ = stop_region(&files, marker, Duration::from_secs(5)).await;
        let _ = std::fs::remove_file(&files.pid);
        return Err((
            "name",
            format!(
                "region {} did not come up: {why}. It was stopped. Last lines of {}:\n{}",
                settings.name,
                files.log.display(),
                log_tail(&files.log, 15)
            ),
        ));
    }
    Ok(pid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lifecycle::Observed;
    use crate::schema::Number;
    use std::path::Path;

    fn observed(l: Liveness, fault: Option<&str>) -> Observed {
        Observed {
            pid: Some(1),
            liveness: l,
            fault: fault.map(str::to_string),
        }
    }

    #[test]
    fn a_dead_region_reads_as_gone_unless_a_fault_holds_it() {
        assert_eq!(verdict(&observed(Liveness::Dead, None), None), None);
        assert_eq!(
            verdict(&observed(Liveness::Dead, Some("kill")), None),
            Some((false, "down: kill fault".into()))
        );
        assert_eq!(
            verdict(&observed(Liveness::Running, None), Some("ok")),
            Some((true, "ok".into()))
        );
        assert!(
            !verdict(&observed(Liveness::Stopped, Some("stop")), None)
                .unwrap()
                .0
        );
    }

    pub fn state(dir: &Path, name: &str) -> RegionState {
        let member = |n: &str, i: u8| MemberValue {
            name: Value::Value(n.into()),
            http: Value::Value(format!("127.0.9.{i}:18080")),
            quic: Value::Value(format!("127.0.9.{i}:17100")),
            dns: Value::Value(format!("127.0.9.{i}:15300")),
            lat: Value::Value(Number(1.0 * i as f64)),
            lon: Value::Value(Number(2.0)),
            serves: Value::Value(vec![]),
        };
        RegionState {
            name: Value::Value(name.into()),
            cluster: Value::Value(vec![member("eu", 1), member("us", 2)]),
            work_dir: Value::Value(dir.display().to_string()),
            certs_dir: Value::Value(dir.join("certs").display().to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_known_at_plan_time() {
        let mut st = state(Path::new("/tmp/w"), "eu");
        st.apply_defaults();
        assert_eq!(s(&st.data_dir), "/tmp/w/eu-data");
        assert_eq!(s(&st.zone), "geoscim.test");
        assert_eq!(st.write_quorum, Value::Value(2));
        assert_eq!(s(&st.http_url), "http://127.0.9.1:18080");
        assert_eq!(s(&st.launch_file), "/tmp/w/eu.launch.json");
        assert!(st.settings().is_ok());
    }

    #[tokio::test]
    async fn a_changed_setting_plans_a_replacement_naming_it_and_keep_data_does_not() {
        let mut prior = state(Path::new("/tmp/w"), "eu");
        prior.apply_defaults();
        prior.pid = Value::Value(42);
        let mut diags = Diagnostics::default();
        let mut proposed = prior.clone();
        proposed.replication_mode = Value::Value("sync".into());
        let (planned, _, replace) = RegionResource
            .plan_update(
                &mut diags,
                prior.clone(),
                proposed,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(replace, vec![AttributePath::new("replication_mode")]);
        assert!(planned.pid.is_unknown());

        let mut proposed = prior.clone();
        proposed.keep_data = Value::Value(true);
        let (planned, _, replace) = RegionResource
            .plan_update(
                &mut diags,
                prior.clone(),
                proposed,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        assert!(replace.is_empty());
        assert_eq!(planned.pid, Value::Value(42));
    }

    /// The `geoscim` binary cargo built next to this test (target/release/geoscim), or
    /// $GEOSCIM_BIN.
    pub fn geoscim_bin() -> PathBuf {
        if let Ok(p) = std::env::var("GEOSCIM_BIN") {
            return p.into();
        }
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().and_then(Path::parent).unwrap().join("geoscim");
        assert!(
            bin.is_file(),
            "{} missing: build it first (cargo build --release --bin geoscim; scripts/test does) or set GEOSCIM_BIN",
            bin.display()
        );
        bin
    }

    /// A one-region cluster on `127.0.9.<i>` in `dir`, ready to create.
    ///
    /// Its certificates are made in `dir/certs` (a region never makes its own CA; `geoscim
    /// certs` keeps what exists), here and not in [`state`], which plan-only tests use too.
    pub fn single(dir: &Path, i: u8) -> RegionState {
        let out = std::process::Command::new(geoscim_bin())
            .args(["certs", "--out"])
            .arg(dir.join("certs"))
            .args(["--regions", "solo"])
            .output()
            .expect("run geoscim certs");
        assert!(
            out.status.success(),
            "geoscim certs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut st = state(dir, "solo");
        st.cluster = Value::Value(vec![MemberValue {
            name: Value::Value("solo".into()),
            http: Value::Value(format!("127.0.9.{i}:18080")),
            quic: Value::Value(format!("127.0.9.{i}:17100")),
            dns: Value::Value(format!("127.0.9.{i}:15300")),
            lat: Value::Value(Number(1.0)),
            lon: Value::Value(Number(2.0)),
            serves: Value::Value(vec![]),
        }]);
        st.binary = Value::Value(geoscim_bin().display().to_string());
        st.start_timeout_ms = Value::Value(20_000);
        st.stop_timeout_ms = Value::Value(5_000);
        st.apply_defaults();
        st
    }

    /// Processes whose command line names `marker`, found by scanning /proc.
    pub fn processes_with(marker: &str) -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| process::liveness_now(*pid, marker).1 != Liveness::Dead)
            .collect()
    }

    #[tokio::test]
    async fn a_region_killed_behind_terraforms_back_reads_as_gone_and_destroy_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Diagnostics::default();
        let planned = single(dir.path(), 1);
        let (created, _) = RegionResource
            .create(
                &mut d,
                planned.clone(),
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("create failed: {d:?}"));
        let pid = *created.pid.as_ref_option().unwrap() as i32;
        let marker = s(&created.config_file);
        // Detached: its own session, its output in its own log.
        assert_eq!(
            nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))
                .unwrap()
                .as_raw(),
            pid
        );
        assert!(log_tail(Path::new(&s(&created.log_file)), 50).contains("http listening"));

        let (read, _) = RegionResource
            .read(
                &mut d,
                created.clone(),
                Default::default(),
                Default::default(),
            )
            .await
            .expect("a running region reads as present");
        assert_eq!(read.running, Value::Value(true));
        assert_eq!(s(&read.status), "ok");

        process::signal(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(process::wait_dead(pid, &marker, Duration::from_secs(5)));
        assert!(
            RegionResource
                .read(
                    &mut d,
                    created.clone(),
                    Default::default(),
                    Default::default()
                )
                .await
                .is_none(),
            "a killed region must read as gone, so the plan recreates it"
        );

        // Apply recreates it on the same data; destroy stops it and removes its files.
        let (again, _) = RegionResource
            .create(
                &mut d,
                planned,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("recreate failed: {d:?}"));
        assert_ne!(again.pid, created.pid);
        RegionResource
            .destroy(
                &mut d,
                again.clone(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        assert!(processes_with(&marker).is_empty());
        assert!(!Path::new(&s(&again.data_dir)).exists());
        assert!(!Path::new(&s(&again.config_file)).exists());
    }

    #[tokio::test]
    async fn a_running_region_can_be_imported_by_its_work_dir_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Diagnostics::default();
        let (created, _) = RegionResource
            .create(
                &mut d,
                single(dir.path(), 4),
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("create failed: {d:?}"));
        let id = dir.path().join("solo").display().to_string();
        let (imported, _) = RegionResource.import(&mut d, id).await.unwrap();
        assert_eq!(imported.cluster, created.cluster);
        assert_eq!(imported.data_dir, created.data_dir);
        let (read, _) = RegionResource
            .read(&mut d, imported, Default::default(), Default::default())
            .await
            .expect("the imported region runs");
        assert_eq!(read.pid, created.pid);
        let mut bad = Diagnostics::default();
        assert!(RegionResource
            .import(&mut bad, "/nowhere/x".into())
            .await
            .is_none());
        assert!(format!("{bad:?}").contains("<work_dir>/<name>"));
        RegionResource
            .destroy(&mut d, read, Default::default(), Default::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_create_leaves_nothing_running_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let planned = single(dir.path(), 2);
        // Something else holds the region's HTTP address: the region cannot start.
        let _squatter = std::net::TcpListener::bind("127.0.9.2:18080").unwrap();
        let mut d = Diagnostics::default();
        let created = RegionResource
            .create(
                &mut d,
                planned.clone(),
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await;
        assert!(created.is_none());
        let text = format!("{d:?}");
        assert!(text.contains("did not come up"), "{text}");
        assert!(processes_with(&s(&planned.config_file)).is_empty());
        // Destroying what a failed apply may have recorded is harmless and leaves nothing.
        RegionResource
            .destroy(
                &mut d,
                planned.clone(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        assert!(processes_with(&s(&planned.config_file)).is_empty());
    }

    #[tokio::test]
    async fn a_bad_address_is_an_error_on_its_attribute() {
        let mut st = state(Path::new("/tmp/w"), "eu");
        if let Value::Value(c) = &mut st.cluster {
            c[1].http = Value::Value("nowhere".into());
        }
        let mut diags = Diagnostics::default();
        assert!(RegionResource.validate(&mut diags, st).await.is_none());
        let text = format!("{diags:?}");
        assert!(text.contains("cluster[1].http"), "{text}");
    }
}

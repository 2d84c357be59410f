//! `geoscim_network`: network namespaces for the regions of a stack, so that faults can cut
//! (`partition`) and slow (`degrade`) the links between them: a router namespace, one
//! namespace per region with one link to the router, and a host link from the root namespace
//! (where Terraform, the data sources and idp-sim run) to the router. The layout and the
//! commands are `netplan`'s; this module runs them and keeps `<work_dir>/<name>.network.json`
//! (the layout) for `geoscim_fault.network`.
//!
//! Needs root and iproute2; the plan says so otherwise. A failed create removes what it made;
//! destroy removes the namespaces and the host link (and stops any process still inside a
//! namespace) and waits until the kernel has let them go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::netcmd;
use crate::netplan::{self, Cmd, Layout};
use crate::region_state::s;
use crate::schema::{attr, error_at, schema, string_map, strings};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetworkState {
    pub id: Value<String>,
    pub name: Value<String>,
    pub regions: Value<Vec<String>>,
    pub cidr: Value<String>,
    pub work_dir: Value<String>,
    pub router_namespace: Value<String>,
    pub host_interface: Value<String>,
    pub host_address: Value<String>,
    pub namespaces: Value<BTreeMap<String, String>>,
    pub addresses: Value<BTreeMap<String, String>>,
    pub record_file: Value<String>,
}

impl NetworkState {
    fn layout(&self) -> Result<Layout, netplan::Invalid> {
        let cidr = self
            .cidr
            .as_ref_option()
            .cloned()
            .unwrap_or_else(|| netplan::DEFAULT_CIDR.into());
        netplan::layout(
            &s(&self.name),
            &cidr,
            &self.regions.as_ref_option().cloned().unwrap_or_default(),
        )
    }

    fn record(&self) -> PathBuf {
        Path::new(&s(&self.work_dir)).join(format!("{}.network.json", s(&self.name)))
    }

    /// Fill the computed attributes from the layout (all known at plan time).
    fn fill(&mut self, l: &Layout) {
        self.id = Value::Value(l.name.clone());
        self.cidr = Value::Value(l.cidr.to_string());
        self.router_namespace = Value::Value(l.router.clone());
        self.host_interface = Value::Value(l.host_if.clone());
        self.host_address = Value::Value(l.host_address.to_string());
        self.namespaces = Value::Value(
            l.regions
                .iter()
                .map(|r| (r.region.clone(), r.namespace.clone()))
                .collect(),
        );
        self.addresses = Value::Value(
            l.regions
                .iter()
                .map(|r| (r.region.clone(), r.address.to_string()))
                .collect(),
        );
        if !self.work_dir.is_unknown() {
            self.record_file = Value::Value(self.record().display().to_string());
        }
    }

    fn known(&self) -> bool {
        !self.name.is_unknown() && !self.regions.is_unknown() && !self.cidr.is_unknown()
    }
}

/// The layout recorded in `path` (what faults read).
pub fn read_record(path: &Path) -> Result<Layout, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e}; network is geoscim_network.<name>.record_file of a network that exists",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Routes of the root namespace that would clash with the network.
fn route_clash(l: &Layout) -> Option<String> {
    let routes = netcmd::run(&Cmd {
        program: "ip".into(),
        args: vec!["-4".into(), "route".into(), "show".into()],
    })
    .ok()?;
    let clash = netplan::overlapping_routes(&routes, l.cidr, &l.host_if);
    (!clash.is_empty()).then(|| {
        format!(
            "{} overlaps this machine's route(s) {}; pick another 10.x.0.0/16",
            l.cidr,
            clash.join("; ")
        )
    })
}

/// What of `l` still exists: namespaces and the host link.
pub fn remains(l: &Layout) -> Vec<String> {
    let mut left: Vec<String> = l
        .namespaces()
        .into_iter()
        .filter(|ns| netcmd::namespace_exists(ns))
        .map(|ns| format!("namespace {ns}"))
        .collect();
    if netcmd::link_exists(&l.host_if) {
        left.push(format!("link {}", l.host_if));
    }
    left
}

/// Processes still inside the network's namespaces (`ip netns pids`).
fn processes_inside(l: &Layout) -> Vec<(String, i32)> {
    l.namespaces()
        .into_iter()
        .filter(|ns| netcmd::namespace_exists(ns))
        .flat_map(|ns| {
            let out = netcmd::run(&Cmd {
                program: "ip".into(),
                args: vec!["netns".into(), "pids".into(), ns.clone()],
            })
            .unwrap_or_default();
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .map(|p| (ns.clone(), p))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Remove everything of `l`: processes still inside its namespaces (SIGTERM, then SIGKILL),
/// the host link, the namespaces; then wait (bounded) until the kernel has let them go.
/// Returns what had to be stopped, for a warning.
pub async fn tear_down(l: &Layout) -> Result<Vec<String>, String> {
    let layout = l.clone();
    let stopped = tokio::task::spawn_blocking(move || {
        let inside = processes_inside(&layout);
        for (_, pid) in &inside {
            let _ = crate::process::signal(*pid, Signal::SIGTERM);
        }
        let start = Instant::now();
        while !processes_inside(&layout).is_empty() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (_, pid) in processes_inside(&layout) {
            let _ = crate::process::signal(pid, Signal::SIGKILL);
        }
        inside
            .into_iter()
            .map(|(ns, pid)| format!("pid {pid} in {ns}"))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())?;
    netcmd::undo_all(netplan::destroy_commands(l)).await?;
    // Namespaces and veths are released asynchronously by the kernel.
    let start = Instant::now();
    loop {
        let left = remains(l);
        if left.is_empty() {
            return Ok(stopped);
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "still there 10 s after removal: {}",
                left.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Build `l`; on failure nothing of it is left. Errors are (attribute, detail).
pub async fn build(l: &Layout) -> Result<(), (&'static str, String)> {
    if let Some(why) = netcmd::namespaces_unavailable() {
        return Err(("name", why));
    }
    let left = remains(l);
    if !left.is_empty() {
        return Err((
            "name",
            format!(
                "{} already exist(s) (left by an earlier run?): remove them (ip netns del <name>; ip link del <link>) or pick another name",
                left.join(", ")
            ),
        ));
    }
    if let Some(clash) = route_clash(l) {
        return Err(("cidr", clash));
    }
    if let Err((_, e)) = netcmd::run_all(netplan::create_commands(l)).await {
        let undo = tear_down(l).await.err().unwrap_or_default();
        return Err((
            "name",
            format!("cannot build the network: {e}. What was made is removed again. {undo}"),
        ));
    }
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkResource;

#[async_trait]
impl Resource for NetworkResource {
    type State<'a> = NetworkState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "Network namespaces for the regions of a stack (needs root): a router namespace, one namespace and link per region, a host link from the root namespace. geoscim_fault partition and degrade cut and slow these links.",
            vec![
                ("id", attr(T::String, C::Computed, "the name")),
                ("name", attr(T::String, C::Required, "1-10 of a-z 0-9: prefixes the namespaces (<name>-<region>, <name>-wan) and the root end of the host link (<name>-h)")),
                ("regions", attr(strings(), C::Required, "the regions that get a namespace")),
                ("cidr", attr(T::String, C::OptionalComputed, "a 10.x.0.0/16 for the links (default 10.231.0.0/16); region i gets 10.x.(i+1).2")),
                ("work_dir", attr(T::String, C::Required, "folder for the record file")),
                ("router_namespace", attr(T::String, C::Computed, "the router's namespace")),
                ("host_interface", attr(T::String, C::Computed, "the root namespace's end of the host link")),
                ("host_address", attr(T::String, C::Computed, "its address")),
                ("namespaces", attr(string_map(), C::Computed, "region -> namespace (geoscim_region.netns)")),
                ("addresses", attr(string_map(), C::Computed, "region -> its address (for its http, quic and dns)")),
                ("record_file", attr(T::String, C::Computed, "the layout; geoscim_fault.network takes it")),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if !config.known() {
            return Some(());
        }
        if let Err(e) = config.layout() {
            error_at(diags, &e.attribute, "invalid network setting", e.problem);
            return None;
        }
        if let Some(why) = netcmd::namespaces_unavailable() {
            diags.root_error("geoscim_network cannot be made here", why);
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
        // Gone when its record or any of its namespaces or the host link is (apply rebuilds it).
        let l = read_record(&state.record()).ok()?;
        let all_there = l.namespaces().iter().all(|ns| netcmd::namespace_exists(ns))
            && netcmd::link_exists(&l.host_if);
        all_there.then_some((state, private))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed;
        if state.cidr.is_null() {
            state.cidr = Value::Value(netplan::DEFAULT_CIDR.into());
        }
        match state.known().then(|| state.layout()) {
            Some(Ok(l)) => state.fill(&l),
            _ => {
                for v in [
                    &mut state.id,
                    &mut state.router_namespace,
                    &mut state.host_interface,
                    &mut state.host_address,
                    &mut state.record_file,
                ] {
                    *v = Value::Unknown;
                }
                state.namespaces = Value::Unknown;
                state.addresses = Value::Unknown;
            }
        }
        Some((state, Default::default()))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        proposed: Self::State<'a>,
        config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        let (state, _) = self.plan_create(diags, proposed, config, meta).await?;
        // Every setting shapes the namespaces: a change rebuilds the network.
        let replace = [
            ("name", state.name != prior.name),
            ("regions", state.regions != prior.regions),
            ("cidr", state.cidr != prior.cidr),
            ("work_dir", state.work_dir != prior.work_dir),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(k, _)| AttributePath::new(k))
        .collect();
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
        let l = match state.layout() {
            Ok(l) => l,
            Err(e) => {
                error_at(diags, &e.attribute, "invalid network setting", e.problem);
                return None;
            }
        };
        state.fill(&l);
        if let Err(e) = std::fs::create_dir_all(s(&state.work_dir)) {
            error_at(diags, "work_dir", "cannot make work_dir", e.to_string());
            return None;
        }
        if let Err((attribute, detail)) = build(&l).await {
            error_at(diags, attribute, "cannot build the network", detail);
            return None;
        }
        let text = serde_json::to_string_pretty(&l).expect("a layout serialises");
        if let Err(e) = std::fs::write(state.record(), text) {
            let _ = tear_down(&l).await;
            error_at(
                diags,
                "work_dir",
                "cannot write the record",
                format!("{}: {e}", state.record().display()),
            );
            return None;
        }
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
        let l = match read_record(&state.record())
            .or_else(|_| state.layout().map_err(|e| e.to_string()))
        {
            Ok(l) => l,
            Err(e) => {
                diags.root_error("cannot destroy the network", e);
                return None;
            }
        };
        match tear_down(&l).await {
            Ok(stopped) => {
                if !stopped.is_empty() {
                    diags.root_warning(
                        "processes were still running inside the network's namespaces",
                        format!("stopped: {}", stopped.join(", ")),
                    );
                }
                let _ = std::fs::remove_file(state.record());
                Some(())
            }
            Err(e) => {
                diags.root_error("cannot remove the network", e);
                None
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Removes a test's network when the test ends, also when it fails half-way (a network
    /// left behind would make the next run's create refuse its names).
    pub struct Guard(pub Layout);

    impl Drop for Guard {
        fn drop(&mut self) {
            for (_, pid) in processes_inside(&self.0) {
                let _ = crate::process::signal(pid, Signal::SIGKILL);
            }
            for c in netplan::destroy_commands(&self.0) {
                if let Err(e) = netcmd::run_undo(&c) {
                    eprintln!("test network cleanup: {e}");
                }
            }
        }
    }

    /// A network for a test, or `None` after saying why namespaces are unavailable (fails
    /// under CI, which runs as root).
    pub async fn test_network(
        dir: &Path,
        name: &str,
        cidr: &str,
        regions: &[&str],
    ) -> Option<NetworkState> {
        if let Some(why) = netcmd::namespaces_unavailable() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root: {why}");
            println!("SKIPPED: {why}");
            return None;
        }
        let planned = NetworkState {
            name: Value::Value(name.into()),
            regions: Value::Value(regions.iter().map(|r| r.to_string()).collect()),
            // One /16 per test, so tests in parallel do not share routes.
            cidr: Value::Value(cidr.into()),
            work_dir: Value::Value(dir.display().to_string()),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        let (planned, _) = NetworkResource
            .plan_create(&mut d, planned, Default::default(), Default::default())
            .await
            .unwrap();
        let (state, _) = NetworkResource
            .create(
                &mut d,
                planned,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap_or_else(|| panic!("network create failed: {d:?}"));
        Some(state)
    }

    #[tokio::test]
    async fn a_network_is_built_read_and_removed_without_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let Some(net) = test_network(dir.path(), "gstn", "10.232.0.0/16", &["eu", "us"]).await
        else {
            return;
        };
        let l = read_record(Path::new(&s(&net.record_file))).unwrap();
        let _guard = Guard(l.clone());
        assert_eq!(remains(&l).len(), 4, "router, two regions, the host link");
        let mut d = Diagnostics::default();
        assert!(NetworkResource
            .read(&mut d, net.clone(), Default::default(), Default::default())
            .await
            .is_some());
        // The root namespace reaches a region's address through the router.
        let eu = l.region("eu").unwrap();
        netcmd::run(&Cmd {
            program: "ip".into(),
            args: vec!["route".into(), "get".into(), eu.address.to_string()],
        })
        .map(|out| assert!(out.contains(&l.host_if), "{out}"))
        .unwrap();
        // Building it twice is refused, naming what is in the way.
        let err = build(&l).await.unwrap_err();
        assert_eq!(err.0, "name");
        assert!(err.1.contains("already exist"), "{}", err.1);

        NetworkResource
            .destroy(&mut d, net.clone(), Default::default(), Default::default())
            .await
            .unwrap_or_else(|| panic!("destroy failed: {d:?}"));
        assert!(remains(&l).is_empty(), "{:?}", remains(&l));
        assert!(NetworkResource
            .read(&mut d, net, Default::default(), Default::default())
            .await
            .is_none());
    }

    #[tokio::test]
    async fn bad_settings_are_refused_at_plan_naming_the_attribute() {
        let st = NetworkState {
            name: Value::Value("gs".into()),
            regions: Value::Value(vec!["eu".into()]),
            cidr: Value::Value("192.168.0.0/16".into()),
            work_dir: Value::Value("/tmp".into()),
            ..Default::default()
        };
        let mut d = Diagnostics::default();
        assert!(NetworkResource.validate(&mut d, st).await.is_none());
        let text = format!("{d:?}");
        assert!(
            text.contains("cidr") && text.contains("10.x.0.0/16"),
            "{text}"
        );
    }
}

//! `geoscim_cluster_certs`: the cluster CA and one certificate per region, made by
//! `geoscim certs --out <dir> --regions a,b,c` (the CA in the folder is reused, so adding a
//! region issues only its certificate, in place).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeConstraint as C, AttributeType as T, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::region::default_binary;
use crate::regionconf::is_valid_name;
use crate::schema::{attr, error_at, schema, strings};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CertsState {
    pub id: Value<String>,
    pub dir: Value<String>,
    pub regions: Value<Vec<String>>,
    pub binary: Value<String>,
    pub keep: Value<bool>,
    pub ca_pem: Value<String>,
}

fn dir_of(state: &CertsState) -> PathBuf {
    PathBuf::from(state.dir.as_ref_option().cloned().unwrap_or_default())
}

/// Every file the folder must hold for `regions`.
pub fn expected_files(dir: &Path, regions: &[String]) -> Vec<PathBuf> {
    let mut v = vec![dir.join("ca.pem"), dir.join("ca.key")];
    for r in regions {
        v.push(dir.join(format!("{r}.pem")));
        v.push(dir.join(format!("{r}.key")));
    }
    v
}

async fn issue(state: &CertsState) -> Result<String, String> {
    let dir = dir_of(state);
    let regions = state.regions.as_ref_option().cloned().unwrap_or_default();
    let binary = state.binary.as_ref_option().cloned().unwrap_or_default();
    let out = tokio::process::Command::new(&binary)
        .arg("certs")
        .arg("--out")
        .arg(&dir)
        .arg("--regions")
        .arg(regions.join(","))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {binary}: {e} (build it or set binary)"))?;
    if !out.status.success() {
        return Err(format!(
            "geoscim certs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::read_to_string(dir.join("ca.pem")).map_err(|e| format!("{}: {e}", dir.display()))
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CertsResource;

#[async_trait]
impl Resource for CertsResource {
    type State<'a> = CertsState;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(schema(
            "The cluster CA and a certificate per region for QUIC replication (geoscim certs).",
            vec![
                ("id", attr(T::String, C::Computed, "the folder")),
                (
                    "dir",
                    attr(
                        T::String,
                        C::Required,
                        "folder for ca.pem, ca.key, <region>.pem, <region>.key",
                    ),
                ),
                (
                    "regions",
                    attr(strings(), C::Required, "regions to issue certificates for"),
                ),
                (
                    "binary",
                    attr(
                        T::String,
                        C::OptionalComputed,
                        "the geoscim binary (default: next to the provider)",
                    ),
                ),
                (
                    "keep",
                    attr(
                        T::Bool,
                        C::OptionalComputed,
                        "keep the files when destroyed (default false)",
                    ),
                ),
                (
                    "ca_pem",
                    attr(T::String, C::Computed, "the CA certificate (PEM)"),
                ),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        if let Value::Value(regions) = &config.regions {
            for (i, r) in regions.iter().enumerate() {
                if !is_valid_name(r) {
                    error_at(
                        diags,
                        "regions",
                        "invalid region name",
                        format!("regions[{i}] = {r:?}: 1-63 characters of a-z, 0-9, '-' and '_'"),
                    );
                    return None;
                }
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
        // Files removed behind Terraform's back: gone, so the next apply issues them again.
        let regions = state.regions.as_ref_option().cloned().unwrap_or_default();
        if expected_files(&dir_of(&state), &regions)
            .iter()
            .any(|f| !f.is_file())
        {
            return None;
        }
        Some((state, private))
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: Self::State<'a>,
        _config: Self::State<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let mut state = proposed;
        if state.binary.is_null() {
            state.binary = Value::Value(default_binary().display().to_string());
        }
        if state.keep.is_null() {
            state.keep = Value::Value(false);
        }
        state.id = state.dir.clone();
        state.ca_pem = Value::Unknown;
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
        if state.binary.is_null() {
            state.binary = prior.binary.clone();
        }
        if state.keep.is_null() {
            state.keep = Value::Value(false);
        }
        state.id = state.dir.clone();
        let replace = if state.dir != prior.dir {
            state.ca_pem = Value::Unknown;
            vec![AttributePath::new("dir")]
        } else {
            // Same folder: the CA stays, new regions get certificates in place.
            state.ca_pem = prior.ca_pem;
            vec![]
        };
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
        match issue(&state).await {
            Ok(ca) => {
                state.ca_pem = Value::Value(ca);
                Some((state, private))
            }
            Err(e) => {
                error_at(diags, "dir", "cannot issue certificates", e);
                None
            }
        }
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        _prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        let state = planned;
        match issue(&state).await {
            Ok(_) => Some((state, private)),
            Err(e) => {
                error_at(diags, "regions", "cannot issue certificates", e);
                None
            }
        }
    }

    async fn destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        state: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<()> {
        if !state.keep.as_ref_option().copied().unwrap_or(false) {
            let regions = state.regions.as_ref_option().cloned().unwrap_or_default();
            for f in expected_files(&dir_of(&state), &regions) {
                let _ = std::fs::remove_file(f);
            }
            // Only if nothing else is left in it.
            let _ = std::fs::remove_dir(dir_of(&state));
        }
        Some(())
    }
}

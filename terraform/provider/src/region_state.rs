//! The attributes of `geoscim_region` and what they mean: defaults known at plan time, the
//! settings of the region file, the attributes whose change needs a restart, the launch record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tf_provider::value::Value;

use crate::lifecycle::{default_binary, RegionFiles};
use crate::process::Launch;
use crate::regionconf::{self, Member, Settings};
use crate::schema::Number;

/// One entry of `cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemberValue {
    pub name: Value<String>,
    pub http: Value<String>,
    pub quic: Value<String>,
    pub dns: Value<String>,
    pub lat: Value<Number>,
    pub lon: Value<Number>,
    pub serves: Value<Vec<String>>,
}

/// One entry of `tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TokenRef {
    pub tenant: Value<String>,
    pub sha256: Value<String>,
}

/// The attributes of a region (configuration and computed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RegionState {
    pub id: Value<String>,
    pub name: Value<String>,
    pub cluster: Value<Vec<MemberValue>>,
    pub work_dir: Value<String>,
    pub certs_dir: Value<String>,
    pub binary: Value<String>,
    pub data_dir: Value<String>,
    pub zone: Value<String>,
    pub replication_mode: Value<String>,
    pub write_quorum: Value<i64>,
    pub tokens: Value<Vec<TokenRef>>,
    pub admin_token_hashes: Value<Vec<Value<String>>>,
    pub tenant_homes: Value<BTreeMap<String, String>>,
    pub env: Value<BTreeMap<String, String>>,
    pub netns: Value<String>,
    pub keep_data: Value<bool>,
    pub stop_timeout_ms: Value<i64>,
    pub start_timeout_ms: Value<i64>,
    pub pid: Value<i64>,
    pub running: Value<bool>,
    pub status: Value<String>,
    pub http_url: Value<String>,
    pub config_file: Value<String>,
    pub log_file: Value<String>,
    pub launch_file: Value<String>,
}

/// Attributes whose change needs the region restarted (the region file is read at start): a
/// plan that changes one replaces the region and says which.
const RESTART_ATTRIBUTES: [&str; 14] = [
    "name",
    "cluster",
    "work_dir",
    "certs_dir",
    "binary",
    "data_dir",
    "zone",
    "replication_mode",
    "write_quorum",
    "tokens",
    "admin_token_hashes",
    "tenant_homes",
    "env",
    "netns",
];

pub fn s(v: &Value<String>) -> String {
    v.as_ref_option().cloned().unwrap_or_default()
}

impl RegionState {
    /// The restart-relevant attributes, each as comparable text.
    pub fn restart_view(&self) -> BTreeMap<&'static str, String> {
        let j = serde_json::to_value(self).unwrap_or_default();
        RESTART_ATTRIBUTES
            .iter()
            .map(|k| (*k, j[*k].to_string()))
            .collect()
    }

    pub fn files(&self) -> RegionFiles {
        RegionFiles::new(Path::new(&s(&self.work_dir)), &s(&self.name))
    }

    /// Optional attributes not set take their defaults (known at plan time).
    pub fn apply_defaults(&mut self) {
        let files = self.files();
        if self.binary.is_null() {
            self.binary = Value::Value(default_binary().display().to_string());
        }
        if self.data_dir.is_null() {
            self.data_dir = Value::Value(
                files
                    .dir
                    .join(format!("{}-data", s(&self.name)))
                    .display()
                    .to_string(),
            );
        }
        if self.zone.is_null() {
            self.zone = Value::Value("geoscim.test".into());
        }
        if self.replication_mode.is_null() {
            self.replication_mode = Value::Value("async".into());
        }
        if self.write_quorum.is_null() {
            let n = self.cluster.as_ref_option().map(|c| c.len()).unwrap_or(1);
            self.write_quorum = Value::Value(n.clamp(1, 2) as i64);
        }
        if self.keep_data.is_null() {
            self.keep_data = Value::Value(false);
        }
        if self.stop_timeout_ms.is_null() {
            self.stop_timeout_ms = Value::Value(10_000);
        }
        if self.start_timeout_ms.is_null() {
            self.start_timeout_ms = Value::Value(30_000);
        }
        self.id = self.name.clone();
        if !self.work_dir.is_unknown() && !self.name.is_unknown() {
            self.config_file = Value::Value(files.config.display().to_string());
            self.log_file = Value::Value(files.log.display().to_string());
            self.launch_file = Value::Value(files.launch.display().to_string());
        }
        if let Some(me) = self.me() {
            self.http_url = Value::Value(format!("http://{}", s(&me.http)));
        }
    }

    /// Every setting is known (none waits for another resource's apply).
    pub fn fully_known(&self) -> bool {
        let cluster = match &self.cluster {
            Value::Value(c) => c.iter().all(|m| {
                !m.name.is_unknown()
                    && !m.http.is_unknown()
                    && !m.quic.is_unknown()
                    && !m.dns.is_unknown()
                    && !m.lat.is_unknown()
                    && !m.lon.is_unknown()
                    && !m.serves.is_unknown()
            }),
            Value::Null => true,
            Value::Unknown => false,
        };
        let tokens = match &self.tokens {
            Value::Value(t) => t
                .iter()
                .all(|t| !t.tenant.is_unknown() && !t.sha256.is_unknown()),
            Value::Null => true,
            Value::Unknown => false,
        };
        cluster
            && tokens
            && [
                &self.name,
                &self.work_dir,
                &self.certs_dir,
                &self.binary,
                &self.data_dir,
            ]
            .iter()
            .all(|v| !v.is_unknown())
            && match &self.admin_token_hashes {
                Value::Value(v) => v.iter().all(|h| !h.is_unknown()),
                Value::Null => true,
                Value::Unknown => false,
            }
            && !self.write_quorum.is_unknown()
            && !self.env.is_unknown()
            && !self.tenant_homes.is_unknown()
    }

    pub fn me(&self) -> Option<&MemberValue> {
        let name = self.name.as_ref_option()?;
        self.cluster
            .as_ref_option()?
            .iter()
            .find(|m| m.name.as_ref_option() == Some(name))
    }

    /// The settings for the region file, or the attribute that is wrong.
    pub fn settings(&self) -> Result<Settings, regionconf::Invalid> {
        let cluster = self
            .cluster
            .as_ref_option()
            .map(|c| {
                c.iter()
                    .enumerate()
                    .map(|(i, m)| {
                        Ok(Member {
                            name: s(&m.name),
                            http: regionconf::parse_addr(
                                &format!("cluster[{i}].http"),
                                &s(&m.http),
                            )?,
                            quic: regionconf::parse_addr(
                                &format!("cluster[{i}].quic"),
                                &s(&m.quic),
                            )?,
                            dns: regionconf::parse_addr(&format!("cluster[{i}].dns"), &s(&m.dns))?,
                            lat: m.lat.as_ref_option().map_or(0.0, |n| n.0),
                            lon: m.lon.as_ref_option().map_or(0.0, |n| n.0),
                            serves: m.serves.as_ref_option().cloned().unwrap_or_default(),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let settings = Settings {
            name: s(&self.name),
            cluster,
            data_dir: s(&self.data_dir),
            certs_dir: s(&self.certs_dir),
            zone: s(&self.zone),
            mode: s(&self.replication_mode),
            write_quorum: self.write_quorum.as_ref_option().copied().unwrap_or(1),
            tokens: self
                .tokens
                .as_ref_option()
                .map(|t| t.iter().map(|t| (s(&t.tenant), s(&t.sha256))).collect())
                .unwrap_or_default(),
            admin_hashes: self
                .admin_token_hashes
                .as_ref_option()
                .map(|v| v.iter().map(s).collect())
                .unwrap_or_default(),
            tenants: self
                .tenant_homes
                .as_ref_option()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        };
        regionconf::check(&settings)?;
        for key in self.env.as_ref_option().into_iter().flat_map(|m| m.keys()) {
            if !key.starts_with("GEOSCIM_") {
                return Err(regionconf::Invalid {
                    attribute: "env".into(),
                    problem: format!(
                        "{key:?}: only GEOSCIM_* settings go here (see the README's configuration table)"
                    ),
                });
            }
        }
        Ok(settings)
    }

    pub fn launch(&self) -> Launch {
        let files = self.files();
        Launch {
            binary: PathBuf::from(s(&self.binary)),
            args: vec![
                "serve".into(),
                "--config".into(),
                files.config.display().to_string(),
            ],
            env: self
                .env
                .as_ref_option()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            log: files.log.clone(),
            pid_file: files.pid.clone(),
            netns: self
                .netns
                .as_ref_option()
                .cloned()
                .filter(|n| !n.is_empty()),
            marker: files.config.display().to_string(),
        }
    }
}

#[cfg(test)]
mod wire_tests {
    use super::*;
    use crate::region::tests;

    /// Terraform's MessagePack: a non-integer number that float64 cannot hold exactly comes
    /// as a decimal string; unknown values are extension 0, also inside lists and objects.
    #[test]
    fn a_plan_with_decimal_coordinates_and_unknown_hashes_decodes() {
        let mut st = tests::state(Path::new("/tmp/w"), "eu");
        st.tokens = Value::Value(vec![TokenRef {
            tenant: Value::Value("default".into()),
            sha256: Value::Unknown,
        }]);
        st.admin_token_hashes = Value::Value(vec![Value::Unknown]);
        let bytes = rmp_serde::to_vec_named(&st).unwrap();
        let back: RegionState = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, st);
        assert!(!back.fully_known());

        #[derive(Serialize)]
        struct Wire {
            lat: &'static str,
            lon: i64,
        }
        let bytes = rmp_serde::to_vec_named(&Wire {
            lat: "50.11",
            lon: 8,
        })
        .unwrap();
        #[derive(Deserialize)]
        struct Got {
            lat: Value<Number>,
            lon: Value<Number>,
        }
        let got: Got = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(got.lat, Value::Value(Number(50.11)));
        assert_eq!(got.lon, Value::Value(Number(8.0)));
    }
}

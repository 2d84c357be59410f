//! Start real regions (the `geoscim` binary) and talk HTTP to them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const SCIM_JSON: &str = "application/scim+json";

/// A running region process.
pub struct Region {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// Tokens by tenant, in the order given at start.
    pub tokens: Vec<(String, String)>,
    /// The data dir (kept across restarts).
    pub dir: PathBuf,
    /// The config file.
    pub config: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra_env: Vec<(String, String)>,
    pub client: reqwest::Client,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// `admin_tokens` for a config file or `GEOSCIM_ADMIN_TOKENS`: the one admin token `token`.
pub fn admin_tokens_toml(token: &str) -> String {
    format!("[{{sha256=\"{}\"}}]", sha256_hex(token))
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

impl Region {
    /// A fresh region with one tenant `t1`.
    pub fn start() -> Region {
        Region::start_with(&["t1"], &[])
    }

    /// A fresh region with a token per tenant and extra `GEOSCIM_*` env overrides.
    pub fn start_with(tenants: &[&str], env: &[(&str, &str)]) -> Region {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tokens = tenants
            .iter()
            .map(|t| (t.to_string(), format!("test-token-{t}-{}", rand_suffix())))
            .collect();
        let env = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut r = Region::spawn(
            repo_file("regions/single.toml"),
            tmp.path().join("data"),
            tokens,
            env,
        );
        r._tmp = Some(tmp);
        r
    }

    /// A region from its own config file, on `dir`, accepting `tokens` (tenant, token).
    pub fn start_config(config: PathBuf, dir: PathBuf, tokens: Vec<(String, String)>) -> Region {
        Region::spawn(config, dir, tokens, Vec::new())
    }

    fn spawn(
        config: PathBuf,
        dir: PathBuf,
        tokens: Vec<(String, String)>,
        extra_env: Vec<(String, String)>,
    ) -> Region {
        let token_toml = format!(
            "[{}]",
            tokens
                .iter()
                .map(|(t, tok)| format!("{{tenant=\"{t}\", sha256=\"{}\"}}", sha256_hex(tok)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_geoscim"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .env("GEOSCIM_DATA_DIR", &dir)
            .env("GEOSCIM_HTTP__LISTEN", "127.0.0.1:0")
            .env("GEOSCIM_TOKENS", token_toml)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn geoscim");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("geoscim: http listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("region did not print its listener within 60 s");
        Region {
            child,
            url,
            tokens,
            dir,
            config,
            _tmp: None,
            extra_env,
            client: reqwest::Client::new(),
        }
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9 the process (no shutdown path runs).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same data dir with the same tokens (new port).
    pub fn restart(mut self) -> Region {
        self.kill9();
        let tmp = self._tmp.take();
        let mut r = Region::spawn(
            self.config.clone(),
            self.dir.clone(),
            self.tokens.clone(),
            self.extra_env.clone(),
        );
        r._tmp = tmp;
        r
    }

    /// The token of the first tenant.
    pub fn token(&self) -> &str {
        &self.tokens[0].1
    }

    /// The SCIM base URL.
    pub fn scim(&self) -> String {
        format!("{}/scim/v2", self.url)
    }

    /// A SCIM request as the first tenant.
    pub async fn req(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.req_as(self.token(), method, path, body).await
    }

    /// A SCIM request with a given token; returns status and parsed body (Null when empty).
    pub async fn req_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = self.send(token, method, path, body, &[]).await;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// A raw SCIM request with extra headers.
    pub async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut b = self
            .client
            .request(method, format!("{}{}", self.scim(), path))
            .bearer_auth(token)
            .header("content-type", SCIM_JSON);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if let Some(body) = body {
            b = b.body(serde_json::to_vec(&body).unwrap());
        }
        b.send().await.expect("request")
    }

    /// PATCH a user with one operation; returns status and body.
    pub async fn patch_user(
        &self,
        id: &str,
        op: &str,
        path: &str,
        value: Value,
    ) -> (StatusCode, Value) {
        self.req(
            Method::PATCH,
            &format!("/Users/{id}"),
            Some(serde_json::json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": op, "path": path, "value": value}]
            })),
        )
        .await
    }

    /// This region's `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        metrics_text(&self.client, &self.url).await
    }

    /// POST a user with this userName; returns the created resource.
    pub async fn create_user(&self, user_name: &str) -> Value {
        let (s, v) = self
            .req(
                Method::POST,
                "/Users",
                Some(serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "active": true,
                })),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Wait until `/health` is 200 (bounded).
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(format!("{}/health", self.url)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("region not healthy within 30 s");
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The list request that finds the user named `name` as one region holds it: a `co` filter,
/// matched exactly by [`user_named_in`]. An `eq` filter that finds nothing asks the peers (no
/// false empty answers), which would hide a write that never replicated.
pub fn user_named_query(name: &str) -> String {
    format!("/Users?count=1000&filter=userName%20co%20%22{name}%22")
}

/// The user named exactly `name` in the answer to [`user_named_query`].
pub fn user_named_in(status: StatusCode, list: &Value, name: &str) -> Option<Value> {
    if status != StatusCode::OK {
        return None;
    }
    list["Resources"]
        .as_array()?
        .iter()
        .find(|u| u["userName"] == name)
        .cloned()
}

/// A region's `/metrics` exposition, as Prometheus scrapes it (panics when it cannot be read).
pub async fn metrics_text(client: &reqwest::Client, base_url: &str) -> String {
    let resp = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "/metrics: {}", resp.status());
    resp.text().await.unwrap()
}

/// The value of `series` (its name and labels exactly as exposed, e.g.
/// `geoscim_tls_reloads_total{result="ok"}`) in an exposition; `None` when it is absent.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series} {v}: {e}"))
        })
}

/// A region's `/health` JSON (`Null` when it cannot be read: down, unreachable, not JSON).
pub async fn health_json(client: &reqwest::Client, base_url: &str) -> Value {
    let h: Option<Value> = async {
        client
            .get(format!("{base_url}/health"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }
    .await;
    h.unwrap_or(Value::Null)
}

/// Poll `f` until it returns `Some`, for at most `secs` seconds (replication is asynchronous).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], for checks that say why they are not satisfied yet: polls `f` until it
/// returns `Ok`, for at most `secs` seconds, then fails with the last reason it gave.
pub async fn eventually_ok<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => {
                panic!("timed out after {secs} s waiting for {what}; last: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A cluster of regions described by config files in a temp dir.
pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub names: Vec<String>,
    pub token: (String, String),
}

/// A port free for UDP and TCP on 127.0.0.1 now; see [`free_port_on`].
pub fn free_udp_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free for both UDP and TCP on `ip` now, for a listener a config file names before
/// the process starts.
///
/// Ports come from below Linux's ephemeral range (32768-60999), one counter per test
/// process: asking the kernel for port 0 and releasing it hands out a number that any
/// outgoing QUIC or DNS socket of a concurrent test may take before the region binds it,
/// which made regions exit at start-up now and then. Numbers below the range are only ever
/// bound on purpose, and the counter keeps concurrent tests of this process apart.
pub fn free_port_on(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 7) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let free = std::net::UdpSocket::bind((ip, port)).is_ok()
            && std::net::TcpListener::bind((ip, port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port on {ip} in {LOW}..{}", LOW + SPAN)
}

pub fn certs(dir: &Path, regions: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_geoscim"))
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--regions", &regions.join(",")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Config files for `names`, all peers of each other, certificates from one CA.
    pub fn new(names: &[&str]) -> Cluster {
        Cluster::with(names, "")
    }

    /// Like [`Cluster::new`], with extra `[replication]` keys (TOML lines).
    pub fn with(names: &[&str], replication_keys: &str) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        certs(&tmp.path().join("certs"), names);
        let ports: Vec<u16> = names.iter().map(|_| free_udp_port()).collect();
        for (i, name) in names.iter().enumerate() {
            let mut text = format!(
                "region = \"{name}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
                 [replication]\nlisten = \"127.0.0.1:{}\"\ncerts_dir = \"{}\"\n{replication_keys}\n",
                tmp.path().join(name).display(),
                ports[i],
                tmp.path().join("certs").display()
            );
            for (j, peer) in names.iter().enumerate() {
                if i != j {
                    text += &format!(
                        "[[replication.peers]]\nregion = \"{peer}\"\naddr = \"127.0.0.1:{}\"\n",
                        ports[j]
                    );
                }
            }
            std::fs::write(tmp.path().join(format!("{name}.toml")), text).unwrap();
        }
        Cluster {
            tmp,
            names: names.iter().map(|s| s.to_string()).collect(),
            token: ("t1".into(), "cluster-test-token".into()),
        }
    }

    pub fn config(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!("{name}.toml"))
    }

    pub fn start(&self, name: &str) -> Region {
        let r = Region::start_config(
            self.config(name),
            self.tmp.path().join(name),
            vec![self.token.clone()],
        );
        r
    }

    pub fn start_all(&self) -> Vec<Region> {
        self.names.iter().map(|n| self.start(n)).collect()
    }
}

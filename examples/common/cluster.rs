//! A three-region cluster on loopback for the DNS benchmarks: real `geoscim serve` processes on
//! 127.X.Y.1-3 (random X, Y), the same HTTP, QUIC and DNS ports on each, replication over QUIC
//! and a responder per region. Everything is stopped on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const TOKEN: &str = "bench-dns-token";
pub const NAMES: [&str; 3] = ["eu", "us", "ap"];

pub struct Cluster {
    pub bin: PathBuf,
    pub net: String,
    pub http_port: u16,
    pub dns_port: u16,
    configs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
    _tmp: tempfile::TempDir,
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Cluster {
    /// Start the cluster; `mode` is `sync` or `async`.
    pub fn start(bin: &Path, mode: &str) -> anyhow::Result<Cluster> {
        let n: u32 = rand::random();
        let net = format!("127.{}.{}", 10 + n % 200, 1 + (n >> 8) % 250);
        let first = format!("{net}.1");
        let (http_port, quic_port, dns_port) =
            (free_port(&first), free_port(&first), free_port(&first));
        let tmp = tempfile::tempdir()?;
        let certs = tmp.path().join("certs");
        let status = Command::new(bin)
            .args(["certs", "--out"])
            .arg(&certs)
            .args(["--regions", "eu,us,ap"])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "geoscim certs failed");
        let mut table = String::new();
        for (i, (r, lat, lon)) in [("eu", 50.1, 8.7), ("us", 38.9, -77.4), ("ap", 1.35, 103.8)]
            .iter()
            .enumerate()
        {
            let ip = format!("{net}.{}", i + 1);
            table += &format!(
                "[[dns.regions]]\nname = \"{r}\"\naddrs = [\"{ip}\"]\nlat = {lat}\nlon = {lon}\n\
                 serves = [\"10.{}.0.0/16\"]\nhealth_url = \"http://{ip}:{http_port}/health\"\n\
                 ns = \"{ip}\"\nquic = \"{ip}:{quic_port}\"\n",
                i + 1
            );
        }
        let mut configs = Vec::new();
        for (i, r) in NAMES.iter().enumerate() {
            let ip = format!("{net}.{}", i + 1);
            let mut text = format!(
                "region = \"{r}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{ip}:{http_port}\"\n\
                 [replication]\nlisten = \"{ip}:{quic_port}\"\ncerts_dir = \"{}\"\nmode = \"{mode}\"\n",
                tmp.path().join(r).display(),
                certs.display()
            );
            for (j, p) in NAMES.iter().enumerate().filter(|(j, _)| *j != i) {
                text += &format!(
                    "[[replication.peers]]\nregion = \"{p}\"\naddr = \"{net}.{}:{quic_port}\"\n",
                    j + 1
                );
            }
            text += &format!(
                "[dns]\nlisten = \"{ip}:{dns_port}\"\nzone = \"geoscim.test\"\n\
                 rate_limit_qps = 1000000\nrate_limit_burst = 1000000\n{table}"
            );
            let config = tmp.path().join(format!("{r}.toml"));
            std::fs::write(&config, text)?;
            configs.push(config);
        }
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            net,
            http_port,
            dns_port,
            configs,
            children: Vec::new(),
            _tmp: tmp,
        };
        for i in 0..NAMES.len() {
            let child = c.spawn(i)?;
            c.children.push(Some(child));
        }
        Ok(c)
    }

    fn spawn(&self, i: usize) -> anyhow::Result<Child> {
        let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.configs[i])
            .env(
                "GEOSCIM_TOKENS",
                format!("[{{tenant=\"t1\", sha256=\"{hash}\"}}]"),
            )
            .env("GEOSCIM_LOG", "geoscim=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("geoscim: http listening on ") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow::anyhow!("region {} did not start", NAMES[i]))?;
        Ok(child)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.net, i + 1)
    }
    pub fn url(&self, i: usize) -> String {
        format!("http://{}:{}", self.ip(i), self.http_port)
    }
    pub fn dns(&self, i: usize) -> SocketAddr {
        format!("{}:{}", self.ip(i), self.dns_port)
            .parse()
            .expect("addr")
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill9(i);
        self.children[i] = Some(self.spawn(i)?);
        Ok(())
    }

    /// Wait until every region's peers are connected (bounded).
    pub async fn wait_connected(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..NAMES.len() {
            loop {
                let h: serde_json::Value =
                    match http.get(format!("{}/health", self.url(i))).send().await {
                        Ok(r) => r.json().await.unwrap_or_default(),
                        Err(_) => serde_json::Value::Null,
                    };
                let peers = h["replication"]["peers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if peers.len() == 2 && peers.iter().all(|p| p["connected"] == true) {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "peers not connected within 60 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill9(i);
        }
    }
}

/// p-th percentile (0..=1) of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

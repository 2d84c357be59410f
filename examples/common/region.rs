//! One `geoscim serve` region as a child process on its own data dir, for benchmarks that
//! start, stop and restart regions one by one (bench_scale): its config file, a bearer token
//! passed as `GEOSCIM_TOKENS` (only its SHA-256), start-up timed to the first `/health` 200,
//! RSS from `/proc`, and a graceful stop (SIGTERM, then SIGKILL after a bound). A region still
//! running when its handle drops is killed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const TOKEN: &str = "bench-scale-token";
pub const TENANT: &str = "t1";

/// A free TCP port on `ip` (for HTTP; QUIC uses UDP, where the same number is free in practice
/// on a fresh loopback address).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// How to start one region.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub ip: String,
    pub http_port: u16,
    pub data_dir: PathBuf,
    /// More TOML after `region`, `data_dir` and `[http]` (e.g. a `[replication]` table).
    pub extra: String,
}

impl Spec {
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.ip, self.http_port)
    }

    fn toml(&self) -> String {
        format!(
            "region = \"{}\"\ndata_dir = \"{}\"\n[http]\nlisten = \"{}:{}\"\n{}",
            self.name,
            self.data_dir.display(),
            self.ip,
            self.http_port,
            self.extra
        )
    }
}

/// A running region.
pub struct Region {
    pub spec: Spec,
    child: Option<Child>,
    pub pid: u32,
    /// Process start → first `/health` 200.
    pub startup: Duration,
}

/// `/proc/PID/status` VmRSS and VmHWM (peak), in kB.
pub fn rss_kb(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Region {
    /// Write `dir/<name>.toml`, start the region (stdout and stderr appended to
    /// `dir/<name>.log`) and wait until `/health` answers 200 (at most `wait`).
    pub async fn start(
        bin: &Path,
        dir: &Path,
        spec: Spec,
        http: &reqwest::Client,
        wait: Duration,
    ) -> anyhow::Result<Region> {
        let config = dir.join(format!("{}.toml", spec.name));
        std::fs::write(&config, spec.toml())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.log", spec.name)))?;
        let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
        let started = Instant::now();
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env(
                "GEOSCIM_TOKENS",
                format!("[{{tenant=\"{TENANT}\", sha256=\"{hash}\"}}]"),
            )
            .env("GEOSCIM_LOG", "geoscim=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        let mut region = Region {
            spec,
            child: Some(child),
            pid,
            startup: Duration::ZERO,
        };
        let health = format!("{}/health", region.spec.url());
        loop {
            if let Ok(r) = http
                .get(&health)
                .timeout(Duration::from_millis(500))
                .send()
                .await
            {
                if r.status() == 200 {
                    break;
                }
            }
            if let Some(Some(status)) = region.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                anyhow::bail!("region {} exited at start: {status}", region.spec.name);
            }
            anyhow::ensure!(
                started.elapsed() < wait,
                "region {} not healthy within {wait:?}",
                region.spec.name
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        region.startup = started.elapsed();
        Ok(region)
    }

    pub fn url(&self) -> String {
        self.spec.url()
    }

    pub fn rss_kb(&self) -> (u64, u64) {
        rss_kb(self.pid)
    }

    /// SIGTERM and wait (at most 60 s, then SIGKILL). Returns how long the stop took.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        started.elapsed()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

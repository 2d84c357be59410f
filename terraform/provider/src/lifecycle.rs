//! A region's files in its work dir and its process as a read sees it: found through the pid
//! file, judged (gone, held down by a fault, stopped, running), waited for and stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{self, Liveness};

/// The files of one region in its work dir.
#[derive(Debug, Clone)]
pub struct RegionFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
    pub launch: PathBuf,
    pub resource: PathBuf,
    /// Present while a `geoscim_fault` holds the region down (its kind inside).
    pub fault: PathBuf,
}

impl RegionFiles {
    pub fn new(dir: &Path, name: &str) -> RegionFiles {
        RegionFiles {
            dir: dir.to_path_buf(),
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
            pid: dir.join(format!("{name}.pid")),
            launch: dir.join(format!("{name}.launch.json")),
            resource: dir.join(format!("{name}.resource.json")),
            fault: dir.join(format!("{name}.fault")),
        }
    }

    /// The files of the region whose launch record is `launch_file`.
    pub fn from_launch(launch_file: &Path) -> Option<RegionFiles> {
        let name = launch_file
            .file_name()?
            .to_str()?
            .strip_suffix(".launch.json")?;
        Some(RegionFiles::new(launch_file.parent()?, name))
    }
}

/// The `geoscim` binary next to this provider (both are built into the same cargo folder).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("geoscim")))
        .unwrap_or_else(|| PathBuf::from("geoscim"))
}

/// What a read finds of a region's process.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub pid: Option<i32>,
    pub liveness: Liveness,
    /// The kind of fault holding it, if one does.
    pub fault: Option<String>,
}

/// Look at the region's process.
pub fn observe(files: &RegionFiles, marker: &str) -> Observed {
    let pid = process::read_pid(&files.pid);
    Observed {
        pid,
        liveness: pid.map_or(Liveness::Dead, |p| process::liveness(p, marker)),
        fault: std::fs::read_to_string(&files.fault)
            .ok()
            .map(|s| s.trim().to_string()),
    }
}

/// The read's verdict: `None` is "gone" (Terraform drops it from the state and plans to create
/// it again); otherwise whether it runs and what to show as its status.
pub fn verdict(o: &Observed, health: Option<&str>) -> Option<(bool, String)> {
    match (&o.liveness, &o.fault) {
        (Liveness::Dead, Some(kind)) => Some((false, format!("down: {kind} fault"))),
        (Liveness::Dead, None) => None,
        (Liveness::Stopped, _) => Some((false, "stopped (SIGSTOP)".into())),
        (Liveness::Running, _) => Some((true, health.unwrap_or("unreachable").to_string())),
    }
}

/// Wait until the region answers `/health` with 200, or the process dies, or `timeout`.
pub async fn wait_healthy(
    http: &str,
    pid: i32,
    marker: &str,
    timeout: Duration,
) -> Result<(), String> {
    let client = crate::probe::client(Duration::from_millis(500));
    let addr: std::net::SocketAddr = http.parse().map_err(|_| format!("bad address {http}"))?;
    let start = Instant::now();
    let mut last = "no answer".to_string();
    while start.elapsed() < timeout {
        if process::liveness(pid, marker) == Liveness::Dead {
            return Err("the process exited".into());
        }
        match crate::probe::health(&client, addr).await {
            Some((200, _)) => return Ok(()),
            Some((code, body)) => last = format!("/health answered {code}: {body}"),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "not healthy within {} ms ({last})",
        timeout.as_millis()
    ))
}

/// The last lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Stop a region's process (SIGTERM, SIGKILL after `timeout`), off the async runtime.
pub async fn stop_region(
    files: &RegionFiles,
    marker: String,
    timeout: Duration,
) -> Result<bool, String> {
    let Some(pid) = process::read_pid(&files.pid) else {
        return Ok(false);
    };
    tokio::task::spawn_blocking(move || process::stop(pid, &marker, timeout))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

//! Running what `netplan` plans: `ip` and `tc` with a bounded wait, and what this machine can
//! do (root, the tools, `sch_netem`), checked before anything is planned so that a plan says
//! "cannot here, because…" instead of an apply failing half-way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::netplan::{self, Cmd, NetemSupport};

/// How long one `ip`/`tc` command may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `program` is: on PATH, else in the sbin folders (Terraform may run the provider with a
/// PATH without them).
pub fn tool(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Run `cmd` (bounded); its stdout, or an error quoting the command line and its stderr.
pub fn run(cmd: &Cmd) -> Result<String, String> {
    let program = tool(&cmd.program).ok_or_else(|| {
        format!(
            "`{cmd}`: {} not found (install iproute2: apt-get install iproute2)",
            cmd.program
        )
    })?;
    let child = Command::new(&program)
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("`{cmd}` could not start: {e}"))?;
    // Output is read while the command runs (a full pipe would stall it); past the deadline
    // the command is killed.
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(CMD_TIMEOUT) {
        Ok(out) => out.map_err(|e| format!("`{cmd}`: {e}"))?,
        Err(_) => {
            let _ = crate::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
            return Err(format!("`{cmd}` did not finish within {CMD_TIMEOUT:?}"));
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `cmd`; an error saying the object is already gone counts as done (undo steps).
pub fn run_undo(cmd: &Cmd) -> Result<(), String> {
    match run(cmd) {
        Ok(_) => Ok(()),
        Err(e) if netplan::is_absent(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Run every command off the async runtime, stopping at the first failure; on failure the
/// commands that succeeded are returned with the error so the caller can undo them.
pub async fn run_all(cmds: Vec<Cmd>) -> Result<(), (usize, String)> {
    tokio::task::spawn_blocking(move || {
        for (i, c) in cmds.iter().enumerate() {
            run(c).map_err(|e| (i, e))?;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err((0, e.to_string())))
}

/// Run every undo command (all of them, even after a failure); the errors, joined.
pub async fn undo_all(cmds: Vec<Cmd>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        let errors: Vec<String> = cmds.iter().filter_map(|c| run_undo(c).err()).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()))
}

/// Whether the namespace `name` exists (`ip netns add` mounts it under /run/netns).
pub fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether the interface exists in this (the root) namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Why network namespaces cannot be made here, if they cannot: not root, or no `ip`. The
/// text says the fix.
pub fn namespaces_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if netplan::euid_of(&status) != Some(0) {
        return Some(
            "network namespaces need root: run terraform as root (CI does), or use the kill and stop faults, which need none"
                .into(),
        );
    }
    if tool("ip").is_none() {
        return Some("`ip` (iproute2) is not installed: apt-get install iproute2".into());
    }
    None
}

/// Why `tc netem` cannot shape links here, if it cannot.
pub fn netem_unavailable() -> Option<String> {
    if let Some(why) = namespaces_unavailable() {
        return Some(why);
    }
    if tool("tc").is_none() {
        return Some("`tc` (iproute2) is not installed: apt-get install iproute2".into());
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let modules = Path::new("/lib/modules")
        .join(&release)
        .join("kernel/net/sched");
    let module_file = std::fs::read_dir(&modules)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with("sch_netem.ko"))
        })
        .unwrap_or(false);
    let config = kernel_config(&release);
    match netplan::netem_support(
        Path::new("/sys/module/sch_netem").exists(),
        module_file,
        config.as_deref(),
    ) {
        NetemSupport::No(why) => Some(format!(
            "{why}: degrade needs tc netem; on this machine use partition (which needs none of it)"
        )),
        NetemSupport::Yes | NetemSupport::Unknown => None,
    }
}

/// The kernel's build configuration: `/boot/config-<release>`, or `/proc/config.gz` through
/// `gzip -dc` (bounded like every command).
fn kernel_config(release: &str) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    if !Path::new("/proc/config.gz").exists() {
        return None;
    }
    run(&Cmd {
        program: "gzip".into(),
        args: vec!["-dc".into(), "/proc/config.gz".into()],
    })
    .ok()
}

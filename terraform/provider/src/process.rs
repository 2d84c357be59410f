//! Region processes as the OS sees them: start one detached, tell whether it still runs, stop it.
//!
//! Terraform starts and stops the provider several times per command, so nothing is remembered
//! here: a region's process is found again through its pid file and checked against its command
//! line (a pid the kernel has reused for something else is not our region). A zombie counts as
//! dead: it answers `kill(pid, 0)` but will never serve again.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// What a region process is started with, written next to its config so a `kill` fault can
/// start it again exactly as the region resource did, without the resource's Terraform state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// The `geoscim` binary.
    pub binary: PathBuf,
    /// Its arguments (`serve --config <file>`; the config file path identifies the process).
    pub args: Vec<String>,
    /// Extra environment (`GEOSCIM_*` overrides of the region file).
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go (appended): never the provider's own stdout, which carries the
    /// plugin handshake.
    pub log: PathBuf,
    /// The pid file: the process is found again through it.
    pub pid_file: PathBuf,
    /// A network namespace to run in (`ip netns exec`), when the region has one.
    pub netns: Option<String>,
    /// The string that must appear in the process's command line for a pid to be this region.
    pub marker: String,
}

/// Errors of starting and stopping processes.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {binary}: {source}")]
    Spawn { binary: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not a launch record: {detail}")]
    Launch { path: String, detail: String },
    #[error("cannot signal process {pid}: {detail}")]
    Signal { pid: i32, detail: String },
}

/// How a process looks from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Running (or sleeping): it can serve.
    Running,
    /// Stopped by a signal (SIGSTOP): alive, but serves nothing until continued.
    Stopped,
    /// Gone, a zombie, or a pid now used by another program.
    Dead,
}

/// The state letter of `/proc/<pid>/stat` (the field after the parenthesised command name,
/// which may itself contain spaces and parentheses).
pub fn stat_state(stat: &str) -> Option<char> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Liveness from the state letter and whether the command line is the expected one.
pub fn liveness_of(state: Option<char>, cmdline_matches: bool) -> Liveness {
    match state {
        _ if !cmdline_matches => Liveness::Dead,
        Some('Z') | Some('X') | Some('x') | None => Liveness::Dead,
        Some('T') | Some('t') => Liveness::Stopped,
        Some(_) => Liveness::Running,
    }
}

/// How `pid` is doing, when it must be a process whose command line contains `marker`.
///
/// A live process whose command line does not match is read again a few times, 2 ms apart,
/// before it counts as a stranger: while a program execs (`ip netns exec` becoming the region,
/// right after `spawn` returned) the kernel shows a command line that is empty or half
/// written, which once made a region started in a namespace read as exited at once. A reused
/// pid stays a stranger, so only that path pays the ~10 ms.
pub fn liveness(pid: i32, marker: &str) -> Liveness {
    let mut attempts = 1;
    loop {
        let (state, seen) = liveness_now(pid, marker);
        let gone = matches!(state, None | Some('Z' | 'X' | 'x'));
        if seen != Liveness::Dead || gone || attempts == 5 {
            return seen;
        }
        attempts += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One reading of `pid`'s state letter and liveness, for scans of every process (where a
/// retry per stranger would cost seconds); see [`liveness`] for why one reading can be wrong.
pub fn liveness_now(pid: i32, marker: &str) -> (Option<char>, Liveness) {
    if pid <= 0 {
        return (None, Liveness::Dead);
    }
    let state = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(stat_state);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    let matches = !marker.is_empty() && cmdline.contains(marker);
    (state, liveness_of(state, matches))
}

/// The pid recorded in `pid_file`, if any.
pub fn read_pid(pid_file: &Path) -> Option<i32> {
    fs::read_to_string(pid_file).ok()?.trim().parse().ok()
}

/// The launch record in `path`.
pub fn read_launch(path: &Path) -> Result<Launch, ProcessError> {
    let text = fs::read_to_string(path).map_err(|source| ProcessError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ProcessError::Launch {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// Write the launch record to `path`.
pub fn write_launch(path: &Path, launch: &Launch) -> Result<(), ProcessError> {
    let text = serde_json::to_string_pretty(launch).expect("a launch record serialises");
    fs::write(path, text).map_err(|source| ProcessError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Start `launch` detached: its own session and process group (a Ctrl-C at the terminal or the
/// end of the provider process does not reach it), stdin from /dev/null, stdout and stderr
/// appended to its log. Writes the pid file and returns the pid.
pub fn spawn(launch: &Launch) -> Result<i32, ProcessError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(|source| ProcessError::Write {
            path: launch.log.display().to_string(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| ProcessError::Write {
        path: launch.log.display().to_string(),
        source,
    })?;
    let mut cmd = match &launch.netns {
        Some(ns) => {
            let mut c = Command::new(crate::netcmd::tool("ip").unwrap_or_else(|| "ip".into()));
            c.args(["netns", "exec", ns]).arg(&launch.binary);
            c
        }
        None => Command::new(&launch.binary),
    };
    cmd.args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it is the only
    // call made between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        binary: launch.binary.display().to_string(),
        source,
    })?;
    let pid = child.id() as i32;
    // Reap it if it exits while this provider process still runs (else it would linger as a
    // zombie until the provider exits); once the provider is gone, init reaps it.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    fs::write(&launch.pid_file, pid.to_string()).map_err(|source| ProcessError::Write {
        path: launch.pid_file.display().to_string(),
        source,
    })?;
    Ok(pid)
}

/// Send `signal` to `pid` (a process already gone is not an error).
pub fn signal(pid: i32, signal: Signal) -> Result<(), ProcessError> {
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(ProcessError::Signal {
            pid,
            detail: e.to_string(),
        }),
    }
}

/// Stop the process cleanly: SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then
/// SIGKILL once `timeout` has passed. Returns whether it had to be killed.
pub fn stop(pid: i32, marker: &str, timeout: Duration) -> Result<bool, ProcessError> {
    if liveness(pid, marker) == Liveness::Dead {
        return Ok(false);
    }
    signal(pid, Signal::SIGCONT)?;
    signal(pid, Signal::SIGTERM)?;
    if wait_dead(pid, marker, timeout) {
        return Ok(false);
    }
    signal(pid, Signal::SIGKILL)?;
    wait_dead(pid, marker, Duration::from_secs(5));
    Ok(true)
}

/// Whether `pid` is a zombie whose other threads are still exiting: the thread group leader
/// turns into a zombie (and so reads dead) while the process's other threads are still
/// releasing what it held, its sockets and file locks among them. A region started again
/// before they are gone finds its ports or its RocksDB lock still taken, and exits.
pub fn still_exiting(pid: i32) -> bool {
    let state = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_state(&s));
    let threads = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    exiting_of(state, threads)
}

/// [`still_exiting`] from the state letter and the number of threads left.
pub fn exiting_of(state: Option<char>, threads: usize) -> bool {
    matches!(state, Some('Z') | Some('X')) && threads > 1
}

/// Wait (bounded) until `pid` is no longer our live process and has entirely exited.
pub fn wait_dead(pid: i32, marker: &str, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if liveness(pid, marker) == Liveness::Dead && !still_exiting(pid) {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_letter_follows_the_last_parenthesis() {
        assert_eq!(stat_state("123 (geoscim) S 1 2 3"), Some('S'));
        assert_eq!(stat_state("123 (a) (b) Z 1 2 3"), Some('Z'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn zombies_and_strangers_are_dead_stopped_is_not() {
        assert_eq!(liveness_of(Some('S'), true), Liveness::Running);
        assert_eq!(liveness_of(Some('R'), true), Liveness::Running);
        assert_eq!(liveness_of(Some('Z'), true), Liveness::Dead);
        assert_eq!(liveness_of(Some('T'), true), Liveness::Stopped);
        assert_eq!(liveness_of(Some('S'), false), Liveness::Dead);
        assert_eq!(liveness_of(None, true), Liveness::Dead);
    }

    #[test]
    fn a_zombie_leader_with_threads_left_is_still_exiting() {
        assert!(exiting_of(Some('Z'), 3));
        assert!(!exiting_of(Some('Z'), 1));
        assert!(!exiting_of(Some('S'), 3));
        assert!(!exiting_of(None, 0));
    }

    fn sleeper(dir: &Path, secs: &str) -> Launch {
        Launch {
            binary: "/bin/sleep".into(),
            args: vec![secs.into()],
            env: vec![],
            log: dir.join("log"),
            pid_file: dir.join("pid"),
            netns: None,
            marker: secs.into(),
        }
    }

    /// `ip netns exec` execs the program after `spawn` returned; polling right then reads an
    /// empty command line, which must not count as the process having exited.
    #[test]
    fn a_process_started_in_a_namespace_never_reads_dead_while_it_execs() {
        if let Some(why) = crate::netcmd::namespaces_unavailable() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root: {why}");
            println!("SKIPPED: {why}");
            return;
        }
        use crate::{netcmd, netplan::Cmd};
        let ns = format!("gstx{}", std::process::id());
        netcmd::run(&Cmd::new("ip", &["netns", "add", &ns])).unwrap();
        struct Del(String);
        impl Drop for Del {
            fn drop(&mut self) {
                let _ = netcmd::run_undo(&Cmd::new("ip", &["netns", "del", &self.0]));
            }
        }
        let _del = Del(ns.clone());
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            let marker = format!("{}.{i}", 303 + i);
            let launch = Launch {
                netns: Some(ns.clone()),
                ..sleeper(dir.path(), &marker)
            };
            let pid = spawn(&launch).unwrap();
            // Poll as hard as we can until the exec is surely over (sleep is running).
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(30) {
                if liveness(pid, &marker) == Liveness::Dead {
                    let stat = fs::read_to_string(format!("/proc/{pid}/stat"));
                    panic!("start {i} read dead while alive: {stat:?}");
                }
            }
            assert!(!stop(pid, &marker, Duration::from_secs(5)).unwrap());
        }
    }

    #[test]
    fn a_spawned_process_is_detached_and_stops_on_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let launch = sleeper(dir.path(), "301.5");
        let pid = spawn(&launch).unwrap();
        assert_eq!(read_pid(&launch.pid_file), Some(pid));
        assert_eq!(liveness(pid, "301.5"), Liveness::Running);
        // Its own session: the session id is its own pid.
        let sid = nix::unistd::getsid(Some(Pid::from_raw(pid))).unwrap();
        assert_eq!(sid.as_raw(), pid);
        assert!(!stop(pid, "301.5", Duration::from_secs(5)).unwrap());
        assert_eq!(liveness(pid, "301.5"), Liveness::Dead);
    }

    #[test]
    fn a_killed_child_reads_dead_even_before_it_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let launch = sleeper(dir.path(), "302.5");
        let pid = spawn(&launch).unwrap();
        signal(pid, Signal::SIGKILL).unwrap();
        assert!(wait_dead(pid, "302.5", Duration::from_secs(5)));
    }

    #[test]
    fn a_stopped_process_reads_stopped_and_still_stops() {
        let dir = tempfile::tempdir().unwrap();
        let launch = sleeper(dir.path(), "303.5");
        let pid = spawn(&launch).unwrap();
        signal(pid, Signal::SIGSTOP).unwrap();
        let start = Instant::now();
        while liveness(pid, "303.5") != Liveness::Stopped && start.elapsed().as_secs() < 5 {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(liveness(pid, "303.5"), Liveness::Stopped);
        stop(pid, "303.5", Duration::from_secs(5)).unwrap();
        assert_eq!(liveness(pid, "303.5"), Liveness::Dead);
    }
}

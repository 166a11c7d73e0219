//! Guests without systemd (sysvinit, busybox init, OpenRC): what stands
//! in for systemd's unit states and timestamps, from /proc alone.
//! - the engine is "active" once its daemon process runs, since when is
//!   that process's start (`/proc/<pid>/stat`, clock ticks since boot);
//! - the system is "starting" while the init scripts run (`/etc/init.d/rc`,
//!   `rcS`, `openrc`), "running" afterwards;
//! - there are no stack units: the stack is its containers.

use std::path::Path;

use crate::systemd::UnitState;

/// Whether systemd is the init system (its own test: sd_booted(3)).
pub fn systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The init system's name, as the report says it.
pub fn name() -> String {
    if systemd() {
        return "systemd".into();
    }
    let exe = std::fs::read_link("/proc/1/exe").map(|p| p.display().to_string()).unwrap_or_default();
    let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default().trim().to_string();
    classify(&exe, &comm, Path::new("/etc/inittab").exists(), Path::new("/sbin/openrc").exists())
}

/// Which init: from PID 1's executable and name, and the files each keeps.
fn classify(exe: &str, comm: &str, inittab: bool, openrc: bool) -> String {
    if exe.ends_with("busybox") || comm == "busybox" {
        "busybox init".into()
    } else if exe.ends_with("openrc-init") || (openrc && !inittab) {
        "openrc".into()
    } else if inittab {
        "sysvinit".into()
    } else if comm.is_empty() {
        "unknown".into()
    } else {
        comm.to_string()
    }
}

/// Every process: (pid, its /proc/<pid>/stat text, its arguments).
fn processes() -> Vec<(u64, String, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: u64 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args = cmd
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, stat, args))
        })
        .collect()
}

/// A `/proc/<pid>/stat` line's command name and start (clock ticks since boot).
fn comm_and_start(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let start = stat.get(close + 1..)?.split_whitespace().nth(19)?.parse().ok()?;
    Some((comm, start))
}

/// The oldest process named `comm` among `procs`: (pid, start ticks).
fn oldest(procs: &[(u64, String, Vec<String>)], comm: &str) -> Option<(u64, u64)> {
    procs
        .iter()
        .filter_map(|(pid, stat, _)| comm_and_start(stat).filter(|(c, _)| *c == comm).map(|(_, s)| (*pid, s)))
        .min_by_key(|(_, s)| *s)
}

/// Whether boot scripts are still running.
fn scripts_running(procs: &[(u64, String, Vec<String>)]) -> bool {
    procs.iter().any(|(_, _, args)| {
        args.iter().take(3).any(|a| {
            matches!(a.as_str(), "/etc/init.d/rc" | "/etc/init.d/rcS" | "/etc/rc.d/rc" | "/etc/init.d/rcK")
                || a.ends_with("/openrc")
        })
    })
}

/// `starting` while boot scripts run, then `running`.
pub fn system_state() -> String {
    if scripts_running(&processes()) { "starting".into() } else { "running".into() }
}

/// The engine as a unit: named `unit`, active once `daemon` (a process
/// name: dockerd, containerd, podman) runs, since its start.
pub fn engine_unit(unit: &str, daemon: &str) -> UnitState {
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    engine_unit_from(&processes(), unit, daemon, hz)
}

fn engine_unit_from(procs: &[(u64, String, Vec<String>)], unit: &str, daemon: &str, hz: u64) -> UnitState {
    match oldest(procs, daemon) {
        Some((pid, ticks)) => {
            // Ticks since boot, in µs; the guest's CLOCK_MONOTONIC and
            // CLOCK_BOOTTIME agree while it has never been suspended.
            let us = ticks.saturating_mul(1_000_000) / hz;
            UnitState {
                id: unit.into(),
                active: "active".into(),
                sub: "running".into(),
                active_enter_us: us,
                inactive_exit_us: us,
                source: format!("{daemon} process start (pid {pid}, /proc/{pid}/stat; no systemd)"),
                ..Default::default()
            }
        }
        None => UnitState {
            id: unit.into(),
            active: "inactive".into(),
            sub: "dead".into(),
            source: format!("no {daemon} process (no systemd)"),
            ..Default::default()
        },
    }
}

/// The process name of each engine's daemon.
pub fn daemon(kind: crate::engine::Kind) -> &'static str {
    match kind {
        crate::engine::Kind::Docker => "dockerd",
        crate::engine::Kind::Podman => "podman",
        crate::engine::Kind::Containerd => "containerd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u64, comm: &str, start: u64, args: &[&str]) -> (u64, String, Vec<String>) {
        (
            pid,
            format!("{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 200 0 0 0 1 2 0 0 20 0 4 0 {start} 1000 50"),
            args.iter().map(|a| a.to_string()).collect(),
        )
    }

    #[test]
    fn the_engine_is_active_from_its_oldest_daemon_process() {
        let procs = vec![
            proc(1, "init", 1, &["init [2]"]),
            proc(420, "dockerd", 900, &["/usr/bin/dockerd", "-p", "/var/run/docker.pid"]),
            proc(300, "dockerd", 750, &["/usr/bin/dockerd"]),
            proc(500, "containerd", 800, &["containerd"]),
        ];
        let u = engine_unit_from(&procs, "docker.service", "dockerd", 100);
        assert_eq!((u.active.as_str(), u.active_enter_us), ("active", 7_500_000));
        assert!(u.source.contains("pid 300") && u.source.contains("no systemd"), "{}", u.source);
        assert_eq!(u.info().source, u.source);
        let none = engine_unit_from(&procs, "podman.socket", "podman", 100);
        assert_eq!((none.active.as_str(), none.active_enter_us), ("inactive", 0));
        // A command name with spaces and parentheses.
        assert_eq!(comm_and_start(&proc(9, "a (b) c", 42, &[]).1), Some(("a (b) c", 42)));
        assert_eq!(comm_and_start("garbage"), None);
    }

    #[test]
    fn boot_scripts_and_init_systems() {
        let rc = proc(200, "rc", 5, &["/bin/sh", "/etc/init.d/rc", "2"]);
        let sh = proc(201, "sh", 6, &["/bin/sh", "-c", "echo /etc/init.d/rc"]);
        assert!(scripts_running(&[rc]));
        assert!(!scripts_running(&[sh]), "only the scripts themselves, not a mention of them");
        assert!(scripts_running(&[proc(3, "openrc", 5, &["/sbin/openrc", "default"])]));
        assert_eq!(classify("/sbin/init", "init", true, false), "sysvinit");
        assert_eq!(classify("/bin/busybox", "init", true, false), "busybox init");
        assert_eq!(classify("/sbin/openrc-init", "openrc-init", false, true), "openrc");
        assert_eq!(classify("", "", false, false), "unknown");
    }
}

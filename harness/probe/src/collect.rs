//! Gathers a [`ProbeStatus`] inside the guest: systemd, the engine, clocks.

use std::collections::HashMap;
use std::time::Duration;

use airboot_proto::probe::{Clocks, ProbeStatus};
use airboot_proto::{EngineRecord, EngineState};

use crate::engine::{Engine, ImageCache, is_server_error};
use crate::status::{Config, judge};
use crate::systemd;

/// The guest's clocks now.
pub fn clocks() -> Clocks {
    fn get(id: libc::clockid_t) -> f64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        #[allow(unsafe_code)]
        // SAFETY: clock_gettime writes into the timespec we own.
        let rc = unsafe { libc::clock_gettime(id, &mut ts) };
        if rc != 0 {
            return 0.0;
        }
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    }
    Clocks {
        boottime_s: get(libc::CLOCK_BOOTTIME),
        monotonic_s: get(libc::CLOCK_MONOTONIC),
        realtime_s: get(libc::CLOCK_REALTIME),
    }
}

pub struct Collector {
    pub cfg: Config,
    image_cache: ImageCache,
    version: Option<String>,
    /// (data root, storage driver), asked once the engine answers.
    store: Option<(String, String)>,
    system_after_boot: Option<String>,
    /// Collections in a row in which the engine answered with a server error.
    failing_streak: u32,
    /// The guest's init system (asked once).
    init: String,
    /// A failed engine unit's own last error, from its journal (asked once).
    unit_error: Option<String>,
    /// Stack units' last errors, asked when a unit fails or restarts,
    /// kept while its state stays: (unit, state) → error.
    stack_errors: HashMap<(String, String), String>,
    /// When (boottime seconds) the engine unit was first seen failed, in
    /// the current run of failed statuses.
    engine_failed_since: Option<f64>,
}

impl Collector {
    pub fn new(cfg: Config) -> Self {
        Collector {
            cfg,
            image_cache: HashMap::new(),
            version: None,
            store: None,
            system_after_boot: None,
            failing_streak: 0,
            init: crate::init::name(),
            unit_error: None,
            stack_errors: HashMap::new(),
            engine_failed_since: None,
        }
    }

    /// The engine, each call bounded by `timeout`.
    pub fn engine(&self, timeout: Duration) -> Box<dyn Engine> {
        crate::engine::open(self.cfg.engine, &self.cfg.socket, self.cfg.namespace.as_deref(), timeout)
    }

    /// `with_events`: also fetch the engine's event log (for the host's
    /// timeline; the console does not need it).
    pub fn status(&mut self, with_events: bool) -> ProbeStatus {
        let systemd = crate::init::systemd();
        let (engine_unit, units, system, (userspace_us, finish_us)) = if systemd {
            let mut names = vec![self.cfg.engine_unit.clone()];
            names.extend(self.cfg.stack_units.iter().cloned());
            let mut units = systemd::show(&names);
            let engine_unit =
                units.iter().position(|u| u.id == self.cfg.engine_unit).map(|i| units.remove(i)).unwrap_or_default();
            let system = match &self.system_after_boot {
                Some(s) => s.clone(),
                None => {
                    let s = systemd::system_state();
                    if !matches!(s.as_str(), "initializing" | "starting" | "unknown" | "") {
                        self.system_after_boot = Some(s.clone());
                    }
                    s
                }
            };
            (engine_unit, units, system, systemd::manager_timestamps())
        } else {
            // No units to ask: the engine is its daemon process, the stack its containers.
            let unit = crate::init::engine_unit(&self.cfg.engine_unit, crate::init::daemon(self.cfg.engine));
            (unit, Vec::new(), crate::init::system_state(), (0, 0))
        };
        let mut s = ProbeStatus {
            init: self.init.clone(),
            system,
            userspace_us,
            finish_us,
            engine: EngineRecord {
                name: self.engine(Duration::from_secs(10)).name().into(),
                state: EngineState::Down,
                version: None,
                detail: None,
                ..Default::default()
            },
            units: std::iter::once(&engine_unit)
                .chain(units.iter())
                .filter(|u| !u.id.is_empty())
                .map(|u| {
                    let mut i = u.info();
                    // A stack unit that failed or is waiting to restart: why.
                    if systemd && u.id != self.cfg.engine_unit && (u.active == "failed" || u.sub == "auto-restart") {
                        let key = (u.id.clone(), format!("{}/{}", u.active, u.sub));
                        i.error = self
                            .stack_errors
                            .entry(key)
                            .or_insert_with(|| journal_error(&u.id).unwrap_or_default())
                            .clone();
                    }
                    i
                })
                .collect(),
            ..Default::default()
        };
        let mut error = None;
        let mut failing = false;
        // Ask the engine only once its unit is active: connecting to a
        // socket-activated engine earlier would start it out of order.
        if engine_unit.active == "active" {
            let d = self.engine(Duration::from_secs(10));
            let version = match self.version.clone() {
                Some(v) => Ok(v),
                None => d.version(),
            };
            match (version, d.image_infos(&mut self.image_cache), d.container_infos()) {
                (Ok(v), Ok(images), Ok(containers)) => {
                    self.version = Some(v.clone());
                    if self.store.is_none() {
                        self.store = d.store();
                    }
                    s.engine.state = EngineState::Up;
                    s.engine.version = Some(v);
                    if let Some((root, driver)) = &self.store {
                        s.engine.data_root = Some(root.clone());
                        s.engine.storage_driver = Some(driver.clone()).filter(|d| !d.is_empty());
                        s.engine.store_fs = fs_usage(root);
                        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
                            .map(|t| airboot_proto::mounts::parse(&t))
                            .unwrap_or_default();
                        s.engine.store_mount = airboot_proto::mounts::holding(&mounts, root).map(Box::new);
                        s.engine.root_mount = airboot_proto::mounts::holding(&mounts, "/").map(Box::new);
                    }
                    s.images = images;
                    s.containers = containers;
                    for c in
                        s.containers.iter_mut().filter(|c| matches!(c.state.as_str(), "exited" | "restarting" | "dead"))
                    {
                        c.log_tail =
                            d.container_logs(c.name.trim_start_matches('/')).map(|l| log_tail(&l)).unwrap_or_default();
                    }
                    if with_events {
                        let now = clocks().realtime_s as i64;
                        s.events = d.events(now).unwrap_or_default();
                    }
                }
                (Err(e), _, _) => error = Some(e),
                (Ok(v), Err(e), _) | (Ok(v), _, Err(e)) => {
                    // It answered /version, then failed: a server error
                    // means it runs and its API does not.
                    failing = is_server_error(&e);
                    s.engine.version = Some(v);
                    error = Some(e);
                }
            }
        }
        // A failed engine unit: quote the engine's own last error. The
        // error is asked again once the unit has been restarted.
        if engine_unit.active != "failed" {
            self.engine_failed_since = None;
            self.unit_error = None;
        }
        if error.is_none() && systemd && engine_unit.active == "failed" {
            if self.unit_error.is_none() {
                self.unit_error = journal_error(&self.cfg.engine_unit);
            }
            error = self.unit_error.clone();
        }
        if engine_unit.active == "failed" {
            error = with_unit_result(error, &self.cfg.engine_unit, &engine_unit.result, engine_unit.restarts);
        }
        self.failing_streak = if failing { self.failing_streak + 1 } else { 0 };
        // The engine unit is reported too, but settledness is about the stack's units.
        let stack_units: Vec<_> = s.units.iter().filter(|u| u.name != self.cfg.engine_unit).cloned().collect();
        let all_units = std::mem::replace(&mut s.units, stack_units);
        s.clocks = clocks();
        let engine_state = if engine_unit.active.is_empty() { "unknown" } else { &engine_unit.active };
        let now = s.clocks.boottime_s;
        let since = (engine_state == "failed").then(|| *self.engine_failed_since.get_or_insert(now));
        judge(
            &mut s,
            engine_state_for_judging(engine_state, &engine_unit.result, since, now),
            error.as_deref(),
            self.failing_streak,
            &self.cfg,
        );
        s.units = all_units;
        s
    }
}

/// The last error the unit's own processes logged in this boot (not
/// systemd's lines about the unit), bounded.
fn journal_error(unit: &str) -> Option<String> {
    let out = std::process::Command::new("journalctl")
        .args(["-b", "-o", "cat", "-n", "300", "--no-pager"])
        .arg(format!("_SYSTEMD_UNIT={unit}"))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    last_error_line(&String::from_utf8_lossy(&out.stdout))
}

/// Seconds a failed engine unit stays failed before it is taken as down for
/// good: a unit with `Restart=` can be seen `failed` for a moment between
/// a failed start and its restart (dockerd with a bad flag, measured).
pub const ENGINE_FAILED_FOR_S: f64 = 5.0;

/// The engine unit's state as the stack's judge should take it: `failed`
/// only once it hit its start limit or stayed failed for
/// [`ENGINE_FAILED_FOR_S`]; before that, still `activating`.
fn engine_state_for_judging<'a>(state: &'a str, result: &str, failed_since: Option<f64>, now: f64) -> &'a str {
    match failed_since {
        Some(t) if result != "start-limit-hit" && now - t < ENGINE_FAILED_FOR_S => "activating",
        _ => state,
    }
}

/// Why systemd stopped a failed unit, when that is more than "it failed":
/// a unit restarted again and again until its start limit crash-looped.
/// systemd keeps the first failure's `Result` (`exit-code`) when the start
/// limit then stops it, so `NRestarts` tells too.
fn with_unit_result(error: Option<String>, unit: &str, result: &str, restarts: u32) -> Option<String> {
    if result != "start-limit-hit" && restarts < 2 {
        return error;
    }
    let why = if result == "start-limit-hit" {
        format!("{unit} kept failing and hit its start limit (start-limit-hit)")
    } else {
        format!("{unit} kept failing: restarted {restarts} times, then stopped (its start limit)")
    };
    Some(match error {
        Some(e) => format!("{e}; {why}"),
        None => why,
    })
}

/// The engine's own error among its log lines: the last fatal one
/// (`failed to start daemon`, `level=fatal`), else the last `level=error`,
/// else the last plain line (a Go daemon's dying words carry no level:
/// `chmod /var/lib/docker: read-only file system`). Cut to 300 characters.
pub fn last_error_line(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let fatal = |l: &&&str| {
        let l = l.to_ascii_lowercase();
        l.contains("failed to start daemon") || l.contains("level=fatal") || l.contains("error starting daemon")
    };
    let error = |l: &&&str| l.contains("level=error") || l.to_ascii_lowercase().starts_with("error");
    // Not cobra's usage hint after the error ("See 'dockerd --help'.").
    let hint = |l: &str| l.starts_with("See '") && l.contains("--help'");
    let plain = |l: &&&str| !l.contains("level=") && !hint(l);
    let l = lines
        .iter()
        .rev()
        .find(fatal)
        .or_else(|| lines.iter().rev().find(error))
        .or_else(|| lines.iter().rev().find(plain))?;
    let msg = l.find("msg=").map(|i| &l[i + 4..]).unwrap_or(l).trim_matches('"');
    Some(msg.chars().take(300).collect())
}

/// The last lines of a container's log, each cut to 240 characters.
fn log_tail(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].iter().map(|l| l.chars().take(240).collect()).collect()
}

/// `statvfs` of the filesystem holding `path`.
fn fs_usage(path: &str) -> Option<airboot_proto::FsUsage> {
    let c = std::ffi::CString::new(path).ok()?;
    #[allow(unsafe_code)]
    // SAFETY: statvfs is plain old data; all-zero is a valid value, and
    // statvfs(3) fills the struct we own from a NUL-terminated path.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    let frag = st.f_frsize as u64;
    let size = st.f_blocks as u64 * frag;
    Some(airboot_proto::FsUsage { size_bytes: size, used_bytes: size.saturating_sub(st.f_bfree as u64 * frag) })
}

#[cfg(test)]
mod journal_tests {
    use super::{last_error_line, with_unit_result};

    #[test]
    fn a_moment_of_failed_between_restarts_is_not_down_for_good() {
        use super::{ENGINE_FAILED_FOR_S, engine_state_for_judging as j};
        assert_eq!(j("failed", "exit-code", Some(20.0), 20.0), "activating");
        assert_eq!(j("failed", "exit-code", Some(20.0), 20.0 + ENGINE_FAILED_FOR_S), "failed");
        assert_eq!(j("failed", "start-limit-hit", Some(20.0), 20.0), "failed", "the start limit is final at once");
        assert_eq!(j("active", "success", None, 20.0), "active");
    }

    #[test]
    fn cobras_usage_hint_is_not_the_error() {
        let log = "unknown flag: --no-such-flag\nSee 'dockerd --help'.\n";
        assert_eq!(last_error_line(log).as_deref(), Some("unknown flag: --no-such-flag"));
        let run = "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?.\nSee 'docker run --help'.\n";
        assert!(last_error_line(run).unwrap().starts_with("docker: Cannot connect"));
    }

    #[test]
    fn a_unit_that_hit_its_start_limit_says_so_after_its_error() {
        let e = with_unit_result(Some("boom".into()), "docker.service", "start-limit-hit", 0).unwrap();
        assert_eq!(e, "boom; docker.service kept failing and hit its start limit (start-limit-hit)");
        assert!(with_unit_result(None, "docker.service", "start-limit-hit", 0).unwrap().starts_with("docker.service"));
        assert_eq!(with_unit_result(Some("boom".into()), "docker.service", "exit-code", 1).as_deref(), Some("boom"));
        // What a dockerd with a bad flag leaves: exit-code, restarted twice.
        let e = with_unit_result(Some("boom".into()), "docker.service", "exit-code", 2).unwrap();
        assert_eq!(e, "boom; docker.service kept failing: restarted 2 times, then stopped (its start limit)");
        assert_eq!(with_unit_result(None, "docker.service", "success", 0), None);
    }

    #[test]
    fn the_engines_own_fatal_error_is_picked() {
        let log = "time=\"2026-11-26T04:20:01Z\" level=info msg=\"Starting up\"\n\
time=\"2026-11-26T04:20:01Z\" level=error msg=\"failed to mount overlay: no such device\" storage-driver=overlay2\n\
failed to start daemon: error initializing graphdriver: open /var/lib/docker/overlay2/.tmp: read-only file system\n\
docker.service: Main process exited, code=exited, status=1/FAILURE\n";
        let e = last_error_line(log).unwrap();
        assert!(e.starts_with("failed to start daemon") && e.contains("read-only file system"), "{e}");
        let only_error = "level=info msg=\"x\"\nlevel=error msg=\"loading cgroup: permission denied\"\n";
        assert_eq!(last_error_line(only_error).as_deref(), Some("loading cgroup: permission denied"));
        assert_eq!(last_error_line("level=info msg=\"fine\"\n"), None);
        let plain = "level=info msg=\"Starting up\"\nchmod /var/lib/docker: read-only file system\n";
        assert_eq!(last_error_line(plain).as_deref(), Some("chmod /var/lib/docker: read-only file system"));
        assert_eq!(last_error_line(""), None);
        assert_eq!(last_error_line(&format!("failed to start daemon: {}", "x".repeat(1000))).unwrap().len(), 300);
    }
}

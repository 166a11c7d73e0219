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
    system_after_boot: Option<String>,
    /// Collections in a row in which the engine answered with a server error.
    failing_streak: u32,
    /// The guest's init system (asked once).
    init: String,
}

impl Collector {
    pub fn new(cfg: Config) -> Self {
        Collector {
            cfg,
            image_cache: HashMap::new(),
            version: None,
            system_after_boot: None,
            failing_streak: 0,
            init: crate::init::name(),
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
            },
            units: std::iter::once(&engine_unit)
                .chain(units.iter())
                .filter(|u| !u.id.is_empty())
                .map(|u| u.info())
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
                    s.engine.state = EngineState::Up;
                    s.engine.version = Some(v);
                    s.images = images;
                    s.containers = containers;
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
        self.failing_streak = if failing { self.failing_streak + 1 } else { 0 };
        // The engine unit is reported too, but settledness is about the stack's units.
        let stack_units: Vec<_> = s.units.iter().filter(|u| u.name != self.cfg.engine_unit).cloned().collect();
        let all_units = std::mem::replace(&mut s.units, stack_units);
        s.clocks = clocks();
        judge(
            &mut s,
            if engine_unit.active.is_empty() { "unknown" } else { &engine_unit.active },
            error.as_deref(),
            self.failing_streak,
            &self.cfg,
        );
        s.units = all_units;
        s
    }
}

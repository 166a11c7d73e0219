//! The probe's judgement of the stack (engine state when it does not
//! answer, and whether everything has settled), and the console rendering
//! of a status (protocol v1 in `airboot_proto`). Pure.

use airboot_proto::probe::ProbeStatus;
use airboot_proto::{
    Begin, ContainerRecord, End, EngineState, ImageRecord, STATUS_MARKER, STATUS_VERSION, UnitRecord, posix_cksum,
};

/// `/etc/airboot/status.conf` (shell syntax: KEY="value").
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub stack_units: Vec<String>,
    pub stack_containers: Vec<String>,
    /// A compose project (`STACK_COMPOSE`): each container it labels is
    /// part of the stack too, whatever its name.
    pub stack_compose: Option<String>,
    pub interval_s: f64,
    pub settled_interval_s: f64,
    pub deadline_s: f64,
    /// The engine (`ENGINE`): docker (default), podman or containerd.
    pub engine: crate::engine::Kind,
    /// Its unit and API socket (`ENGINE_UNIT`, `ENGINE_SOCKET`; the
    /// engine's own by default).
    pub engine_unit: String,
    pub socket: String,
    /// containerd's namespace (`ENGINE_NAMESPACE`); unset: every namespace.
    pub namespace: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stack_units: Vec::new(),
            stack_containers: Vec::new(),
            stack_compose: None,
            interval_s: 2.0,
            settled_interval_s: 10.0,
            deadline_s: 900.0,
            engine: crate::engine::Kind::Docker,
            engine_unit: crate::engine::Kind::Docker.default_unit().into(),
            socket: crate::engine::Kind::Docker.default_socket().into(),
            namespace: None,
        }
    }
}

pub fn parse_config(text: &str) -> Config {
    let mut c = Config::default();
    let (mut unit, mut socket) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches('"').trim_matches('\'');
        let list = || v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        match k.trim() {
            "STACK_UNITS" => c.stack_units = list(),
            "STACK_CONTAINERS" => c.stack_containers = list(),
            "STACK_COMPOSE" => c.stack_compose = Some(v.to_string()).filter(|p| !p.is_empty()),
            "INTERVAL" => c.interval_s = v.parse().unwrap_or(c.interval_s),
            "SETTLED_INTERVAL" => c.settled_interval_s = v.parse().unwrap_or(c.settled_interval_s),
            "DEADLINE" => c.deadline_s = v.parse().unwrap_or(c.deadline_s),
            "ENGINE" => c.engine = crate::engine::Kind::parse(v).unwrap_or(c.engine),
            "ENGINE_UNIT" => unit = Some(v.to_string()),
            "ENGINE_SOCKET" => socket = Some(v.to_string()),
            "ENGINE_NAMESPACE" => c.namespace = Some(v.to_string()).filter(|n| !n.is_empty()),
            _ => {}
        }
    }
    c.engine_unit = unit.unwrap_or_else(|| c.engine.default_unit().into());
    c.socket = socket.unwrap_or_else(|| c.engine.default_socket().into());
    c
}

/// Whether a unit's name names a container: the container's name as a
/// whole word of the unit's (`container-redis.service`, `redis.service`,
/// `app@redis.service` for `redis`; not `redis-sentinel.service`).
fn names_container(unit: &str, container: &str) -> bool {
    let stem = unit.strip_suffix(".service").unwrap_or(unit);
    !container.is_empty()
        && stem.match_indices(container).any(|(i, _)| {
            let before = stem[..i].chars().next_back();
            let after = stem[i + container.len()..].chars().next();
            before.is_none_or(|c| matches!(c, '-' | '_' | '@' | '.'))
                && after.is_none_or(|c| matches!(c, '_' | '@' | '.'))
        })
}

/// Fill in the engine's state when it did not answer (`engine_unit` is the
/// unit's ActiveState, `error` why the API did not answer, `failing_streak`
/// how many collections in a row, this one included, the engine answered
/// with a server error) and decide whether the stack has settled.
pub fn judge(s: &mut ProbeStatus, engine_unit: &str, error: Option<&str>, failing_streak: u32, cfg: &Config) {
    let booting = matches!(s.system.as_str(), "initializing" | "starting");
    // Nothing in the stack runs or starts any more: every stack unit has
    // failed or ended (an active unit may still be creating a container:
    // `docker run` in a Type=simple unit is active before its container
    // exists). Without units to ask, never: the deadline decides.
    let stack_units: Vec<_> = s.units.iter().filter(|u| u.name != cfg.engine_unit).collect();
    let gave_up = !booting
        && !stack_units.is_empty()
        && stack_units.iter().all(|u| matches!(u.active.as_str(), "failed" | "inactive"));
    let mut settled = true;
    if s.engine.state == EngineState::Up {
        // A container's own unit (named after it: container-redis.service
        // for redis) has failed: that unit will not create it any more.
        let own_unit_failed =
            |want: &str| stack_units.iter().any(|u| u.active == "failed" && names_container(&u.name, want));
        let named = cfg
            .stack_containers
            .iter()
            .map(|want| (want.as_str(), s.containers.iter().find(|c| c.name.trim_start_matches('/') == want)));
        let composed = s
            .containers
            .iter()
            .filter(|c| {
                cfg.stack_compose.is_some() && c.compose.as_ref().map(|l| &l.project) == cfg.stack_compose.as_ref()
            })
            .map(|c| ("", Some(c)));
        for (want, found) in named.chain(composed) {
            settled &= match found {
                // Not there once the stack's units have given up, or its
                // own unit has: nothing is left to create it.
                None => gave_up || own_unit_failed(want),
                Some(c) => match c.state.as_str() {
                    "running" => c.health.as_deref() != Some("starting"),
                    // Podman says `stopped` once conmon has cleaned up.
                    "exited" | "dead" | "stopped" => true,
                    // Never started (a containerd container without a
                    // task): final once nothing is left to start it.
                    "created" => gave_up,
                    _ => false,
                },
            };
        }
    } else {
        s.engine.state = if engine_unit == "failed" {
            EngineState::Down
        } else if failing_streak > 0 {
            // It runs and answers, so it is not starting, and waiting will
            // not mend it; but one server error may be a passing one:
            // final only on the second in a row, once the boot is over.
            settled &= !booting && failing_streak >= 2;
            EngineState::Failing
        } else if booting || matches!(engine_unit, "active" | "activating" | "reloading" | "deactivating") {
            settled = false;
            EngineState::Starting
        } else {
            EngineState::Down
        };
        let why = error.map(|e| format!("{e}; ")).unwrap_or_default();
        s.engine.detail = Some(format!("{why}{} is {engine_unit}, system is {}", cfg.engine_unit, s.system));
    }
    for u in &s.units {
        match u.active.as_str() {
            "active" | "failed" => {}
            "inactive" if u.skipped || !booting => {}
            _ => settled = false,
        }
        if u.sub == "auto-restart" {
            settled = false;
        }
    }
    s.settled = settled || s.clocks.boottime_s >= cfg.deadline_s;
}

fn line<T: serde::Serialize>(kind: &str, v: &T) -> String {
    format!("{STATUS_MARKER} {STATUS_VERSION} {kind} {}\n", serde_json::to_string(v).expect("json"))
}

/// The console block for a status; its `final` is the status's `settled`.
pub fn block(seq: u64, s: &ProbeStatus) -> String {
    let mut records = line("engine", &s.engine);
    if s.engine.state == EngineState::Up {
        for i in &s.images {
            records += &line("image", &ImageRecord::from(i));
        }
        for c in &s.containers {
            records += &line("container", &ContainerRecord::from(c));
        }
    }
    for u in &s.units {
        records += &line("unit", &UnitRecord::from(u));
    }
    let n = records.lines().count();
    let mut out = line("begin", &Begin { seq, uptime_s: Some(s.clocks.boottime_s), is_final: s.settled });
    out += &records;
    out += &line("end", &End { seq, records: n, cksum: Some(posix_cksum(records.as_bytes())) });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_proto::EngineRecord;
    use airboot_proto::probe::{ContainerInfo, ImageInfo, UnitInfo};

    fn cfg() -> Config {
        parse_config("# c\nSTACK_UNITS=\"a.service b.service\"\nSTACK_CONTAINERS=\"redis\"\nINTERVAL=1\n")
    }

    fn unit(name: &str, active: &str) -> UnitInfo {
        UnitInfo { name: name.into(), active: active.into(), ..Default::default() }
    }

    fn status(health: Option<&str>, units: Vec<UnitInfo>) -> ProbeStatus {
        ProbeStatus {
            system: "running".into(),
            engine: EngineRecord {
                name: "docker".into(),
                state: EngineState::Up,
                version: Some("20.10".into()),
                detail: None,
                ..Default::default()
            },
            images: vec![ImageInfo {
                repository: "fixture/redis".into(),
                tag: "1".into(),
                id: "sha256:aa".into(),
                ..Default::default()
            }],
            containers: vec![ContainerInfo {
                name: "/redis".into(),
                image: "fixture/redis:1".into(),
                state: "running".into(),
                health: health.map(Into::into),
                ..Default::default()
            }],
            units,
            ..Default::default()
        }
    }

    #[test]
    fn config() {
        let c = cfg();
        assert_eq!(c.stack_units, ["a.service", "b.service"]);
        assert_eq!(c.interval_s, 1.0);
        assert_eq!(c.socket, "/var/run/docker.sock");
        // Another engine brings its own socket and unit, unless told.
        let p = parse_config("ENGINE=podman\n");
        assert_eq!(
            (p.engine, p.socket.as_str(), p.engine_unit.as_str()),
            (crate::engine::Kind::Podman, "/run/podman/podman.sock", "podman.socket")
        );
        let p = parse_config("ENGINE_SOCKET=/s.sock\nENGINE=\"podman\"\n");
        assert_eq!(p.socket, "/s.sock", "ENGINE_SOCKET wins, whatever the order");
        let c = parse_config("ENGINE=containerd\nENGINE_NAMESPACE=airboot\n");
        assert_eq!(
            (c.engine, c.socket.as_str(), c.engine_unit.as_str(), c.namespace.as_deref()),
            (crate::engine::Kind::Containerd, "/run/containerd/containerd.sock", "containerd.service", Some("airboot"))
        );
        assert_eq!(parse_config("ENGINE=containerd\n").namespace, None, "every namespace");
    }

    #[test]
    fn settled_only_when_units_and_containers_are() {
        let done = || vec![unit("a.service", "active"), unit("b.service", "active")];
        let judged = |mut s: ProbeStatus| {
            judge(&mut s, "active", None, 0, &cfg());
            s.settled
        };
        assert!(judged(status(Some("healthy"), done())));
        assert!(!judged(status(Some("starting"), done())));
        assert!(judged(status(None, done())));
        // A container that ran to its end is final, in Docker's words and Podman's.
        for state in ["exited", "stopped"] {
            let mut s = status(None, done());
            s.containers[0].state = state.into();
            assert!(judged(s), "{state}");
        }
        // One never started, or not there at all, is final only once the
        // stack's units have given up (an active unit may still create it).
        for absent in [false, true] {
            let mut s = status(None, done());
            s.containers[0].state = "created".into();
            if absent {
                s.containers.clear();
            }
            assert!(!judged(s.clone()), "units active: a unit may still create or start it");
            s.units[0].active = "failed".into();
            assert!(!judged(s.clone()), "one unit still active");
            s.units[1].active = "inactive".into();
            assert!(judged(s.clone()), "every unit failed or ended");
            s.system = "starting".into();
            assert!(!judged(s.clone()), "the boot is not over");
            s.system = "running".into();
            s.units.clear();
            assert!(!judged(s), "no units to ask: the deadline decides");
        }
        assert!(!judged(status(Some("healthy"), vec![unit("a.service", "activating"), unit("b.service", "active")])));
        let mut late = status(Some("starting"), done());
        late.clocks.boottime_s = 1000.0;
        assert!(judged(late), "the guest's deadline makes a status final whatever the state");
    }

    #[test]
    fn a_compose_projects_containers_are_the_stacks_whatever_their_names() {
        let c = parse_config("STACK_UNITS=\"compose-stack.service\"\nSTACK_COMPOSE=\"fixture\"\n");
        assert_eq!(c.stack_compose.as_deref(), Some("fixture"));
        let judged = |health: Option<&str>, project: &str| {
            let mut s = status(None, vec![unit("compose-stack.service", "active")]);
            let labels =
                |service: &str| Some(airboot_proto::ComposeLabels { project: project.into(), service: service.into() });
            s.containers[0].compose = labels("redis");
            s.containers.push(ContainerInfo {
                name: "/fixture_web_1".into(),
                state: "running".into(),
                health: health.map(Into::into),
                compose: labels("web"),
                ..Default::default()
            });
            judge(&mut s, "active", None, 0, &c);
            s.settled
        };
        assert!(judged(Some("healthy"), "fixture"));
        assert!(!judged(Some("starting"), "fixture"), "fixture_web_1 is the stack's: its health is not settled");
        assert!(judged(Some("starting"), "other"), "another project's container is not the stack's");
    }

    #[test]
    fn an_absent_container_whose_own_unit_failed_is_final_while_others_run() {
        assert!(names_container("container-redis.service", "redis"));
        assert!(names_container("redis.service", "redis"));
        assert!(names_container("app@redis.service", "redis"));
        assert!(!names_container("redis-sentinel.service", "redis"));
        assert!(!names_container("container-redisx.service", "redis"));
        assert!(!names_container("container-redis.service", ""));
        let c = parse_config(
            "STACK_UNITS=\"container-redis.service container-web.service\"\nSTACK_CONTAINERS=\"redis web\"\n",
        );
        let judged = |redis_unit: &str| {
            let mut s = status(
                None,
                vec![unit("container-redis.service", redis_unit), unit("container-web.service", "active")],
            );
            s.containers[0].name = "/web".into();
            judge(&mut s, "active", None, 0, &c);
            s.settled
        };
        assert!(judged("failed"), "redis's unit gave up: web running, redis will not come");
        assert!(!judged("activating"), "redis's unit is restarting: it may still come");
    }

    #[test]
    fn engine_states_while_booting_and_after() {
        let mut s = ProbeStatus { system: "starting".into(), ..Default::default() };
        judge(&mut s, "inactive", None, 0, &cfg());
        assert_eq!(s.engine.state, EngineState::Starting);
        assert!(!s.settled);
        let mut s = ProbeStatus { system: "degraded".into(), ..Default::default() };
        judge(&mut s, "failed", Some("/var/run/docker.sock absent"), 0, &cfg());
        assert_eq!(s.engine.state, EngineState::Down);
        assert!(s.engine.detail.as_deref().unwrap().contains("docker.sock absent"));
        assert!(s.settled);
    }

    #[test]
    fn an_engine_answering_with_server_errors_is_failing_and_final_on_the_second() {
        let e = "GET /images/sha256:e9/json: HTTP 500 {\"message\":\"readlink /var/lib/docker/overlay2: invalid argument\"}";
        let judged = |system: &str, engine: &str, streak: u32| {
            let mut s =
                ProbeStatus { system: system.into(), units: vec![unit("a.service", "active")], ..Default::default() };
            judge(&mut s, engine, Some(e), streak, &cfg());
            s
        };
        let s = judged("running", "active", 2);
        assert_eq!(s.engine.state, EngineState::Failing);
        assert!(s.engine.detail.as_deref().unwrap().contains("readlink"), "{:?}", s.engine.detail);
        assert!(s.settled, "a second server error in a row, boot over: nothing to wait for");
        assert!(!judged("running", "active", 1).settled, "one may be a passing error");
        assert!(!judged("starting", "active", 5).settled, "the boot is not over");
        assert_eq!(judged("starting", "active", 5).engine.state, EngineState::Failing);
        let s = judged("running", "active", 0);
        assert_eq!(s.engine.state, EngineState::Starting, "no server error: a slow answer is still starting");
        assert!(!s.settled);
        assert_eq!(judged("degraded", "failed", 3).engine.state, EngineState::Down, "a failed unit is down");
        let mut s = judged("running", "active", 2);
        s.units = vec![unit("a.service", "activating")];
        judge(&mut s, "active", Some(e), 2, &cfg());
        assert!(!s.settled, "the stack's own units still decide");
    }

    #[test]
    fn blocks_are_read_back_by_the_protocol_parser() {
        let mut s = status(Some("healthy"), vec![unit("a.service", "active")]);
        judge(&mut s, "active", None, 0, &cfg());
        let text = block(7, &s);
        let lines: Vec<_> = text.lines().map(|l| airboot_proto::parse_status_line(l).unwrap().unwrap()).collect();
        assert_eq!(lines.len(), 6);
        let airboot_proto::StatusLine::End(end) = lines.last().unwrap() else { panic!() };
        assert_eq!(end.records, 4);
        let body: String = text.lines().skip(1).take(4).map(|l| format!("{l}\n")).collect();
        assert_eq!(end.cksum.as_deref(), Some(posix_cksum(body.as_bytes()).as_str()));
        assert!(text.starts_with("AIRBOOT-STATUS v1 begin {\"seq\":7"));
        assert!(text.contains("\"final\":true"));
    }
}

//! Console status blocks (protocol v1, `airboot_proto`): what the engine
//! reports, and whether the stack has settled. Pure: fed a snapshot,
//! returns the text to print.

use airboot_proto::{
    Begin, ContainerRecord, End, EngineRecord, EngineState, ImageRecord, STATUS_MARKER,
    STATUS_VERSION, UnitRecord, posix_cksum,
};

use crate::systemd::UnitState;

/// `/etc/airboot/status.conf` (shell syntax: KEY="value").
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub stack_units: Vec<String>,
    pub stack_containers: Vec<String>,
    pub interval_s: f64,
    pub settled_interval_s: f64,
    pub deadline_s: f64,
    pub engine_unit: String,
    pub socket: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            stack_units: Vec::new(),
            stack_containers: Vec::new(),
            interval_s: 2.0,
            settled_interval_s: 10.0,
            deadline_s: 900.0,
            engine_unit: "docker.service".into(),
            socket: "/var/run/docker.sock".into(),
        }
    }
}

pub fn parse_config(text: &str) -> Config {
    let mut c = Config::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'');
        let list = || v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        match k.trim() {
            "STACK_UNITS" => c.stack_units = list(),
            "STACK_CONTAINERS" => c.stack_containers = list(),
            "INTERVAL" => c.interval_s = v.parse().unwrap_or(c.interval_s),
            "SETTLED_INTERVAL" => c.settled_interval_s = v.parse().unwrap_or(c.settled_interval_s),
            "DEADLINE" => c.deadline_s = v.parse().unwrap_or(c.deadline_s),
            "ENGINE_UNIT" => c.engine_unit = v.to_string(),
            "ENGINE_SOCKET" => c.socket = v.to_string(),
            _ => {}
        }
    }
    c
}

/// What the engine answered (or why it did not).
#[derive(Debug, Clone)]
pub enum EngineView {
    Up {
        version: String,
        images: Vec<ImageRecord>,
        containers: Vec<ContainerRecord>,
    },
    NotAsked,
    Error(String),
}

/// Everything one block is made from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime_s: f64,
    /// `systemctl is-system-running`.
    pub system: String,
    /// `ActiveState` of the engine unit.
    pub engine_unit: String,
    pub engine: EngineView,
    pub units: Vec<UnitState>,
}

fn line<T: serde::Serialize>(kind: &str, v: &T) -> String {
    format!(
        "{STATUS_MARKER} {STATUS_VERSION} {kind} {}\n",
        serde_json::to_string(v).expect("json")
    )
}

/// The block's text and whether it is final.
pub fn block(seq: u64, s: &Snapshot, cfg: &Config) -> (String, bool) {
    let booting = matches!(s.system.as_str(), "initializing" | "starting");
    let mut settled = true;
    let mut records = String::new();
    match &s.engine {
        EngineView::Up {
            version,
            images,
            containers,
        } => {
            records += &line(
                "engine",
                &EngineRecord {
                    name: "docker".into(),
                    state: EngineState::Up,
                    version: Some(version.clone()),
                    detail: None,
                },
            );
            for i in images {
                records += &line("image", i);
            }
            for c in containers {
                records += &line("container", c);
            }
            for want in &cfg.stack_containers {
                let found = containers
                    .iter()
                    .find(|c| c.name.trim_start_matches('/') == want);
                let ok = match found {
                    None => false,
                    Some(c) => match c.state.as_str() {
                        "running" => c.health.as_deref() != Some("starting"),
                        "exited" | "dead" => true,
                        _ => false,
                    },
                };
                settled &= ok;
            }
        }
        other => {
            let why = match other {
                EngineView::Error(e) => format!("{e}; "),
                _ => String::new(),
            };
            let state = if s.engine_unit == "failed" {
                EngineState::Down
            } else if booting
                || matches!(
                    s.engine_unit.as_str(),
                    "active" | "activating" | "reloading" | "deactivating"
                )
            {
                settled = false;
                EngineState::Starting
            } else {
                EngineState::Down
            };
            records += &line(
                "engine",
                &EngineRecord {
                    name: "docker".into(),
                    state,
                    version: None,
                    detail: Some(format!(
                        "{why}{} is {}, system is {}",
                        cfg.engine_unit, s.engine_unit, s.system
                    )),
                },
            );
        }
    }
    for u in &s.units {
        let state = if u.skipped() {
            "skipped".to_string()
        } else {
            u.active.clone()
        };
        match u.active.as_str() {
            "active" | "failed" => {}
            "inactive" if u.skipped() || !booting => {}
            _ => settled = false,
        }
        if u.sub == "auto-restart" {
            settled = false;
        }
        records += &line(
            "unit",
            &UnitRecord {
                name: u.id.clone(),
                state,
            },
        );
    }
    let is_final = settled || s.uptime_s >= cfg.deadline_s;
    let n = records.lines().count();
    let mut out = line(
        "begin",
        &Begin {
            seq,
            uptime_s: Some(s.uptime_s),
            is_final,
        },
    );
    out += &records;
    out += &line(
        "end",
        &End {
            seq,
            records: n,
            cksum: Some(posix_cksum(records.as_bytes())),
        },
    );
    (out, is_final)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        parse_config(
            "# c\nSTACK_UNITS=\"a.service b.service\"\nSTACK_CONTAINERS=\"redis\"\nINTERVAL=1\n",
        )
    }

    fn unit(id: &str, active: &str) -> UnitState {
        UnitState {
            id: id.into(),
            active: active.into(),
            sub: String::new(),
            condition_result: "yes".into(),
            condition_timestamp: 1,
        }
    }

    fn up(health: Option<&str>) -> EngineView {
        EngineView::Up {
            version: "20.10".into(),
            images: vec![ImageRecord {
                repository: "fixture/redis".into(),
                tag: "1".into(),
                id: "sha256:aa".into(),
            }],
            containers: vec![ContainerRecord {
                name: "/redis".into(),
                image: "fixture/redis:1".into(),
                image_id: None,
                state: "running".into(),
                health: health.map(Into::into),
                started_at: None,
                exit_code: None,
            }],
        }
    }

    #[test]
    fn config() {
        let c = cfg();
        assert_eq!(c.stack_units, ["a.service", "b.service"]);
        assert_eq!(c.interval_s, 1.0);
        assert_eq!(c.socket, "/var/run/docker.sock");
    }

    #[test]
    fn settled_only_when_units_and_containers_are() {
        let snap = |engine, units| Snapshot {
            uptime_s: 30.0,
            system: "running".into(),
            engine_unit: "active".into(),
            engine,
            units,
        };
        let done = vec![unit("a.service", "active"), unit("b.service", "active")];
        assert!(block(1, &snap(up(Some("healthy")), done.clone()), &cfg()).1);
        assert!(!block(1, &snap(up(Some("starting")), done.clone()), &cfg()).1);
        assert!(block(1, &snap(up(None), done.clone()), &cfg()).1);
        let pending = vec![unit("a.service", "activating"), unit("b.service", "active")];
        assert!(!block(1, &snap(up(Some("healthy")), pending), &cfg()).1);
        // The guest's own deadline makes a block final whatever the state.
        let mut late = snap(up(Some("starting")), done);
        late.uptime_s = 1000.0;
        assert!(block(1, &late, &cfg()).1);
    }

    #[test]
    fn engine_states_while_booting_and_after() {
        let snap = |system: &str, unit: &str| Snapshot {
            uptime_s: 5.0,
            system: system.into(),
            engine_unit: unit.into(),
            engine: EngineView::NotAsked,
            units: vec![],
        };
        let (text, fin) = block(1, &snap("starting", "inactive"), &cfg());
        assert!(text.contains("\"state\":\"starting\""), "{text}");
        assert!(!fin);
        let (text, fin) = block(1, &snap("degraded", "failed"), &cfg());
        assert!(text.contains("\"state\":\"down\""));
        assert!(fin);
    }

    #[test]
    fn blocks_are_read_back_by_the_protocol_parser() {
        let snap = Snapshot {
            uptime_s: 30.0,
            system: "running".into(),
            engine_unit: "active".into(),
            engine: up(Some("healthy")),
            units: vec![unit("a.service", "active")],
        };
        let (text, _) = block(7, &snap, &cfg());
        let lines: Vec<_> = text
            .lines()
            .map(|l| airboot_proto::parse_status_line(l).unwrap().unwrap())
            .collect();
        assert_eq!(lines.len(), 6);
        let airboot_proto::StatusLine::End(end) = lines.last().unwrap() else {
            panic!()
        };
        assert_eq!(end.records, 4);
        let body: String = text
            .lines()
            .skip(1)
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            end.cksum.as_deref(),
            Some(posix_cksum(body.as_bytes()).as_str())
        );
    }
}

//! Turning what the probe reports into host time.
//!
//! The guest's timestamps come from three clocks: systemd's unit
//! timestamps use CLOCK_MONOTONIC, Docker's StartedAt, health checks and
//! events use CLOCK_REALTIME. Each status answer carries the guest's
//! clocks at the moment it was made; the host notes when it asked and when
//! the answer came. The midpoint maps guest clocks onto host time since t0
//! (error ≤ half the round trip), and the realtime difference is the
//! guest's clock skew.

use std::collections::BTreeMap;

use airboot_proto::probe::{Clocks, ProbeStatus};
use airboot_proto::{ContainerRecord, ImageRecord, UnitRecord};

use crate::scenario::normalize_ref;
use crate::status::StatusBlock;

/// When the host asked and heard back, in host time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockSample {
    /// Seconds since t0 when the request was sent / the answer arrived.
    pub sent_s: f64,
    pub received_s: f64,
    /// Host CLOCK_REALTIME (Unix seconds) at the midpoint.
    pub host_realtime_s: f64,
}

impl ClockSample {
    pub fn midpoint(&self) -> f64 {
        (self.sent_s + self.received_s) / 2.0
    }
    pub fn rtt(&self) -> f64 {
        self.received_s - self.sent_s
    }
}

/// Offsets from guest clocks to host time since t0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockMap {
    /// host t = guest CLOCK_MONOTONIC + mono_offset
    pub mono_offset: f64,
    /// host t = guest CLOCK_REALTIME (Unix s) + real_offset
    pub real_offset: f64,
    /// guest realtime − host realtime, in ms (positive: guest ahead).
    pub skew_ms: f64,
    /// Half the round trip: the uncertainty of the mapping.
    pub error_s: f64,
}

pub fn clock_map(sample: &ClockSample, c: &Clocks) -> ClockMap {
    let mid = sample.midpoint();
    ClockMap {
        mono_offset: mid - c.monotonic_s,
        real_offset: mid - c.realtime_s,
        skew_ms: (c.realtime_s - sample.host_realtime_s) * 1000.0,
        error_s: sample.rtt() / 2.0,
    }
}

impl ClockMap {
    pub fn from_mono_us(&self, us: u64) -> Option<f64> {
        (us > 0).then(|| us as f64 / 1e6 + self.mono_offset)
    }
    pub fn from_real(&self, unix_s: f64) -> f64 {
        unix_s + self.real_offset
    }
}

/// Parse an RFC 3339 timestamp (as Docker writes them, with up to
/// nanoseconds) into Unix seconds. Docker's "zero time"
/// (0001-01-01T00:00:00Z) gives `None`.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if y <= 1 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (rest[1..3].parse::<i64>().ok()? * 3600 + rest[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let (y2, m2) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec - offset) as f64 + frac)
}

/// Docker's name for a guest's `uname -m`.
pub fn docker_arch(machine: &str) -> &str {
    match machine {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" => "arm64",
        "armv7l" | "armv6l" | "arm" => "arm",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The console-protocol view of a probe status (so both transports are
/// judged by the same code), received at host time `t`.
pub fn to_block(s: &ProbeStatus, t: f64, guest_machine: Option<&str>) -> StatusBlock {
    StatusBlock {
        seq: 0,
        t,
        uptime_s: Some(s.clocks.boottime_s),
        is_final: s.settled,
        engine: Some(s.engine.clone()),
        images: s.images.iter().map(ImageRecord::from).collect(),
        containers: s.containers.iter().map(ContainerRecord::from).collect(),
        units: s.units.iter().map(UnitRecord::from).collect(),
        platforms: s
            .images
            .iter()
            .map(|i| {
                let p = match &i.variant {
                    Some(v) if !v.is_empty() => format!("{}/{}/{v}", i.os, i.architecture),
                    _ => format!("{}/{}", i.os, i.architecture),
                };
                (i.id.clone(), p)
            })
            .collect(),
        guest_arch: guest_machine.map(|m| docker_arch(m).to_string()),
    }
}

/// When things happened, in host time, from the guest's own records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestTimes {
    /// systemd started userspace (init).
    pub init: Option<f64>,
    /// The engine's unit became active.
    pub engine: Option<f64>,
    /// Where that time comes from, when not from systemd (a guest
    /// without systemd: the engine daemon's process start).
    pub engine_source: Option<String>,
    /// Each image reference: when it was tagged/loaded (absent: it was
    /// there when the engine started).
    pub images: BTreeMap<String, f64>,
    /// Each container: when it started.
    pub running: BTreeMap<String, f64>,
    /// Each container: the first passing health check.
    pub healthy: BTreeMap<String, f64>,
    /// Each container that has exited: when (its first `die` event, or
    /// FinishedAt).
    pub exited: BTreeMap<String, f64>,
    /// Every image load the engine reported (`docker load`), in order:
    /// what it named and when.
    pub loads: Vec<(String, f64)>,
}

/// Extract the timeline from a status.
pub fn guest_times(s: &ProbeStatus, map: &ClockMap, engine_unit: &str) -> GuestTimes {
    let mut g = GuestTimes { init: map.from_mono_us(s.userspace_us), ..Default::default() };
    let unit = s.units.iter().find(|u| u.name == engine_unit);
    g.engine = unit.and_then(|u| map.from_mono_us(u.active_enter_us));
    g.engine_source = unit.map(|u| u.source.clone()).filter(|s| !s.is_empty());
    for e in &s.events {
        let t = map.from_real(e.time_nano as f64 / 1e9);
        match (e.kind.as_str(), e.action.as_str()) {
            ("image", a @ ("tag" | "load" | "pull")) => {
                if a == "load" {
                    g.loads.push((e.actor.clone(), t));
                }
                if let Ok(r) = normalize_ref(&e.actor) {
                    g.images.entry(r).or_insert(t);
                }
            }
            ("container", "start") => {
                g.running.entry(e.actor.trim_start_matches('/').to_string()).or_insert(t);
            }
            ("container", "die") => {
                g.exited.entry(e.actor.trim_start_matches('/').to_string()).or_insert(t);
            }
            ("container", a)
                if a.starts_with("health_status") && a.ends_with("healthy") && !a.ends_with("unhealthy") =>
            {
                g.healthy.entry(e.actor.trim_start_matches('/').to_string()).or_insert(t);
            }
            _ => {}
        }
    }
    for c in &s.containers {
        let name = c.name.trim_start_matches('/').to_string();
        // StartedAt is the latest start; an event (if remembered) is the first.
        if let Some(t) = c.started_at.as_deref().and_then(parse_rfc3339).map(|r| map.from_real(r)) {
            g.running.entry(name.clone()).or_insert(t);
        }
        if let Some(t) = c.finished_at.as_deref().and_then(parse_rfc3339).map(|r| map.from_real(r))
            && c.state != "running"
        {
            g.exited.entry(name.clone()).or_insert(t);
        }
        if let Some(t) = c.healthy_at.iter().filter_map(|h| parse_rfc3339(h)).map(|r| map.from_real(r)).reduce(f64::min)
        {
            let e = g.healthy.entry(name).or_insert(t);
            *e = e.min(t);
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_proto::probe::{ContainerInfo, EngineEvent, UnitInfo};

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(parse_rfc3339("2026-11-22T20:13:00Z"), Some(1_795_378_380.0));
        let t = parse_rfc3339("2026-11-22T20:13:00.250000000Z").unwrap();
        assert!((t - 1_795_378_380.25).abs() < 1e-6);
        assert_eq!(parse_rfc3339("2026-11-22T21:13:00+01:00"), Some(1_795_378_380.0));
        // An offset's minutes count, and a negative offset is behind UTC.
        assert_eq!(parse_rfc3339("2026-11-23T01:43:00+05:30"), Some(1_795_378_380.0));
        assert_eq!(parse_rfc3339("2026-11-22T16:43:00-03:30"), Some(1_795_378_380.0));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), None, "Docker's zero time");
        for bad in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-22 20:13", "2026-11-22T20:13:00"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // Each separator is checked on its own: one right does not excuse another wrong.
        for bad in ["2026-11-22X20:13:00Z", "2026/11-22T20:13:00Z", "2026-11/22T20:13:00Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn clocks_map_to_host_time_with_skew() {
        let sample = ClockSample { sent_s: 40.0, received_s: 40.2, host_realtime_s: 1000.1 };
        let clocks = Clocks { boottime_s: 33.1, monotonic_s: 33.0, realtime_s: 1000.6 };
        let m = clock_map(&sample, &clocks);
        assert!((m.mono_offset - 7.1).abs() < 1e-9);
        assert!((m.skew_ms - 500.0).abs() < 1e-6, "guest is half a second ahead");
        assert!((m.error_s - 0.1).abs() < 1e-9);
        assert_eq!(m.from_mono_us(0), None);
        assert!((m.from_mono_us(20_000_000).unwrap() - 27.1).abs() < 1e-9);
        assert!((m.from_real(995.6) - 35.1).abs() < 1e-9);
    }

    #[test]
    fn timeline_from_units_events_and_health() {
        let map = ClockMap { mono_offset: 7.0, real_offset: -1000.0, skew_ms: 0.0, error_s: 0.0 };
        let s = ProbeStatus {
            userspace_us: 6_000_000,
            units: vec![UnitInfo { name: "docker.service".into(), active_enter_us: 40_000_000, ..Default::default() }],
            events: vec![
                EngineEvent {
                    time_nano: 1_045_000_000_000,
                    kind: "image".into(),
                    action: "load".into(),
                    actor: "sha256:abc".into(),
                },
                EngineEvent {
                    time_nano: 1_050_000_000_000,
                    kind: "image".into(),
                    action: "tag".into(),
                    actor: "fixture/redis:1".into(),
                },
                EngineEvent {
                    time_nano: 1_060_000_000_000,
                    kind: "container".into(),
                    action: "start".into(),
                    actor: "redis".into(),
                },
                EngineEvent {
                    time_nano: 1_070_000_000_000,
                    kind: "container".into(),
                    action: "health_status: unhealthy".into(),
                    actor: "redis".into(),
                },
                EngineEvent {
                    time_nano: 1_080_000_000_000,
                    kind: "container".into(),
                    action: "health_status: healthy".into(),
                    actor: "redis".into(),
                },
            ],
            containers: vec![
                ContainerInfo {
                    name: "/redis".into(),
                    started_at: Some("1970-01-01T00:17:50Z".into()),
                    healthy_at: vec!["1970-01-01T00:18:05Z".into()],
                    ..Default::default()
                },
                ContainerInfo {
                    name: "/web".into(),
                    started_at: Some("1970-01-01T00:17:45Z".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let g = guest_times(&s, &map, "docker.service");
        assert_eq!(g.init, Some(13.0));
        assert_eq!(g.engine, Some(47.0));
        assert_eq!(g.images["fixture/redis:1"], 50.0);
        assert_eq!(g.loads, [("sha256:abc".to_string(), 45.0)], "loads only, in order");
        assert_eq!(g.running["redis"], 60.0, "the event, not the later StartedAt");
        assert_eq!(g.running["web"], 65.0, "StartedAt when no event is remembered");
        assert_eq!(g.healthy["redis"], 80.0, "the earliest of the healthy event and the passing checks");
        assert_eq!(g.engine_source, None, "systemd's own timestamp");

        // Without systemd: no userspace timestamp, the engine's time is its
        // daemon's process start, and the timeline says so.
        let sysv = ProbeStatus {
            init: "sysvinit".into(),
            units: vec![UnitInfo {
                name: "docker.service".into(),
                active_enter_us: 9_500_000,
                source: "dockerd process start (pid 300, /proc/300/stat; no systemd)".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let g = guest_times(&sysv, &map, "docker.service");
        assert_eq!((g.init, g.engine), (None, Some(16.5)));
        assert!(g.engine_source.unwrap().contains("/proc/300/stat"));
    }

    /// The protocol's new fields are optional both ways: an older probe's
    /// status still parses, and a unit from systemd carries no source.
    #[test]
    fn statuses_without_init_or_sources_still_parse() {
        let old = r#"{"clocks":{"boottime_s":1.0,"monotonic_s":1.0,"realtime_s":1.0},"system":"running","userspace_us":1,"finish_us":2,"engine":{"name":"docker","state":"up","version":null,"detail":null},"images":[],"containers":[],"units":[{"name":"docker.service","active":"active","sub":"running","result":"success","skipped":false,"active_enter_us":5,"inactive_exit_us":4}],"events":[],"settled":true}"#;
        let s: ProbeStatus = serde_json::from_str(old).unwrap();
        assert_eq!((s.init.as_str(), s.units[0].source.as_str()), ("", ""));
        let back = serde_json::to_string(&s.units[0]).unwrap();
        assert!(!back.contains("source"), "{back}");
    }

    #[test]
    fn arch_names() {
        assert_eq!(docker_arch("x86_64"), "amd64");
        assert_eq!(docker_arch("aarch64"), "arm64");
    }
}

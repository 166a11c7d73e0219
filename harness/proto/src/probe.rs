//! The host ↔ probe protocol (version 1): JSON lines over a byte stream
//! (vsock, vhost-user vsock through vhost-device-vsock, or a virtio-serial
//! port). The host sends a [`Request`], the probe answers one [`Response`]
//! with the same `id`. A session starts with `hello`, whose `nonce` the
//! probe echoes so the host can skip stale bytes left in a serial port by
//! an earlier session.

use serde::{Deserialize, Serialize};

pub const PROBE_PROTOCOL: u32 = 1;
/// The longest line the host reads from the probe: a status with hundreds
/// of images and containers is well under it. Longer lines are skipped
/// (never kept in memory) and counted.
pub const MAX_LINE: usize = 1 << 20;
/// vsock port the probe listens on.
pub const PROBE_VSOCK_PORT: u32 = 5253;
/// Name of the virtio-serial port the probe serves (`/sys/class/virtio-ports/*/name`).
pub const PROBE_SERIAL_NAME: &str = "org.airboot.probe";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Hello {
        version: u32,
        nonce: String,
    },
    /// The engine's view, systemd's timestamps, the clock.
    Status,
    /// Create and start a container of `reference` with no network and
    /// report whether it ran.
    RunImage {
        reference: String,
        timeout_s: u64,
    },
    /// Interfaces, routes, egress evidence.
    Airgap,
    /// Write the guest's dirty pages to its disk (`sync`), so that what
    /// the harness reads from the disk afterwards is what the guest sees.
    Sync,
    /// Run `command` with `sh -c` (stdout and stderr together), wait up
    /// to `timeout_s`, and answer its exit status and the end of its
    /// output (a scenario's `[[step]] run`).
    Exec {
        command: String,
        timeout_s: u64,
    },
    /// Write the disk (`sync`), answer, then reboot the guest through its
    /// init system (`systemctl reboot`, or `reboot`). QEMU runs with
    /// `-no-reboot`, so the reboot ends it.
    Reboot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Body {
    Hello(HelloReply),
    Status(Box<ProbeStatus>),
    RunImage(RunImageResult),
    Airgap(AirgapReport),
    Synced {
        seconds: f64,
    },
    Executed(ExecResult),
    /// The reboot was asked for, `how`.
    Rebooting {
        how: String,
    },
    Error {
        message: String,
    },
}

/// Most of a command's output an [`Op::Exec`] answer carries (its end).
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024;

/// What a command run by [`Op::Exec`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExecResult {
    /// Its exit status; `None` when it was killed (a signal, or the
    /// timeout).
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The end of its output (stdout and stderr together), at most
    /// [`EXEC_OUTPUT_CAP`] bytes.
    pub output: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HelloReply {
    pub version: u32,
    pub nonce: String,
    pub probe_version: String,
    /// `uname -m` of the guest.
    pub machine: String,
    pub transport: String,
}

/// The guest's clocks at the moment the answer was made.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Clocks {
    /// CLOCK_BOOTTIME, seconds.
    pub boottime_s: f64,
    /// CLOCK_MONOTONIC, seconds (systemd's `…Monotonic` timestamps use it).
    pub monotonic_s: f64,
    /// CLOCK_REALTIME, seconds since the Unix epoch.
    pub realtime_s: f64,
}

/// A systemd unit with its own timestamps (CLOCK_MONOTONIC, µs; 0 = never).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UnitInfo {
    pub name: String,
    pub active: String,
    pub sub: String,
    pub result: String,
    pub skipped: bool,
    pub active_enter_us: u64,
    pub inactive_exit_us: u64,
    /// Where its state and times come from when not from systemd (a
    /// guest without systemd: the engine daemon's process start).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// For a failed or restarting unit: the last error its journal holds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One image with what the engine knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageInfo {
    pub repository: String,
    pub tag: String,
    pub id: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os: String,
    pub diff_ids: Vec<String>,
}

/// One container with its state and health history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerInfo {
    pub name: String,
    /// The container's ID, its first 12 hex digits (as tools print it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its `com.docker.compose.project` and `com.docker.compose.service`
    /// labels, when compose made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<crate::ComposeLabels>,
    pub image: String,
    pub image_id: Option<String>,
    pub state: String,
    pub health: Option<String>,
    /// RFC 3339 (guest realtime).
    pub started_at: Option<String>,
    /// RFC 3339 (guest realtime); only meaningful once it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub exit_code: Option<i64>,
    pub pid: Option<u64>,
    /// Ends of health checks that passed, RFC 3339 (guest realtime).
    pub healthy_at: Vec<String>,
    /// Not running (exited, restarting, dead): the last lines of its log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// The last health check's output, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_output: Option<String>,
}

// The console status protocol carries the part of each record both sides
// need; the probe writes it and the harness reads the same view of a
// probe status, so one conversion serves both.
impl From<&ImageInfo> for crate::ImageRecord {
    fn from(i: &ImageInfo) -> Self {
        crate::ImageRecord { repository: i.repository.clone(), tag: i.tag.clone(), id: i.id.clone() }
    }
}

impl From<&ContainerInfo> for crate::ContainerRecord {
    fn from(c: &ContainerInfo) -> Self {
        crate::ContainerRecord {
            name: c.name.clone(),
            id: c.id.clone(),
            compose: c.compose.clone(),
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            state: c.state.clone(),
            health: c.health.clone(),
            started_at: c.started_at.clone(),
            exit_code: c.exit_code,
            log_tail: c.log_tail.clone(),
            health_output: c.health_output.clone(),
        }
    }
}

impl From<&UnitInfo> for crate::UnitRecord {
    /// A unit the probe skipped (not installed) reads as `skipped`.
    fn from(u: &UnitInfo) -> Self {
        crate::UnitRecord {
            name: u.name.clone(),
            state: if u.skipped { "skipped".into() } else { u.active.clone() },
            error: Some(u.error.clone()).filter(|e| !e.is_empty()),
        }
    }
}

/// A Docker event (`/events`), times in guest realtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EngineEvent {
    pub time_nano: i64,
    /// image, container, network, …
    pub kind: String,
    /// pull, load, tag, start, health_status: healthy, …
    pub action: String,
    /// Image reference or container name.
    pub actor: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProbeStatus {
    pub clocks: Clocks,
    /// The guest's init system: `systemd`, `sysvinit`, `busybox init`, `openrc`.
    #[serde(default)]
    pub init: String,
    /// `systemctl is-system-running` (without systemd: `starting` while
    /// the boot scripts run, then `running`).
    pub system: String,
    /// systemd's own boot timestamps (CLOCK_MONOTONIC µs): kernel → userspace → finish.
    pub userspace_us: u64,
    pub finish_us: u64,
    pub engine: crate::EngineRecord,
    pub images: Vec<ImageInfo>,
    pub containers: Vec<ContainerInfo>,
    pub units: Vec<UnitInfo>,
    pub events: Vec<EngineEvent>,
    /// The probe's own judgement that the stack has settled (as in the
    /// console protocol's `final`).
    pub settled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunImageResult {
    pub reference: String,
    pub ran: bool,
    /// How it ended: "running after Ns", "exited 0", or the engine's error.
    pub detail: String,
    pub exit_code: Option<i64>,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Interface {
    pub name: String,
    /// `loopback`, `physical` (backed by a device: a NIC), or `virtual`
    /// (bridge, veth, … created in the guest).
    pub kind: String,
    pub up: bool,
    pub carrier: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Route {
    pub family: String,
    pub destination: String,
    pub gateway: Option<String>,
    pub interface: String,
}

/// Packets that had nowhere to go, per network namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NoRouteCount {
    /// `host` or `container <name>`.
    pub netns: String,
    pub ipv4: u64,
    pub ipv6: u64,
}

/// A log line or event that shows something tried to reach the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EgressEvidence {
    /// `unit x.service`, `container redis (fixture/redis:1)`, `dockerd`, …
    pub who: String,
    /// Host name or address it tried, when the line says.
    pub destination: Option<String>,
    /// `journal`, `container-log`, `engine-event`.
    pub source: String,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AirgapReport {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    pub no_route: Vec<NoRouteCount>,
    pub evidence: Vec<EgressEvidence>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let r = Request { id: 3, op: Op::RunImage { reference: "a:1".into(), timeout_s: 20 } };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"id":3,"op":"run_image","reference":"a:1","timeout_s":20}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let hello = Request { id: 1, op: Op::Hello { version: PROBE_PROTOCOL, nonce: "n".into() } };
        assert!(serde_json::to_string(&hello).unwrap().contains(r#""op":"hello""#));
        let e = Response { id: 3, body: Body::Error { message: "docker.sock absent".into() } };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"id":3,"result":"error","message":"docker.sock absent"}"#);
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), e);
        let st = Response { id: 4, body: Body::Status(Box::default()) };
        let back: Response = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
    }
}

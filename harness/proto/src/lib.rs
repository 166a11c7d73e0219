//! Wire types shared by the airboot harness and the code that runs inside
//! the guest.
//!
//! Today this is the *console status protocol* (version 1): a guest that
//! carries no airboot probe can still tell the harness what its container
//! engine reports by printing framed lines on the serial console. The
//! reference implementation is the shell script the fixtures ship
//! (`images/rootfs/usr/local/sbin/airboot-status`); `scenarios/README.md`
//! documents the format for people adding it to their own images.
//!
//! ```text
//! AIRBOOT-STATUS v1 begin {"seq":3,"uptime_s":41.2,"final":false}
//! AIRBOOT-STATUS v1 engine {"name":"docker","state":"up","version":"20.10.24"}
//! AIRBOOT-STATUS v1 image {"repository":"fixture/redis","tag":"1","id":"sha256:…"}
//! AIRBOOT-STATUS v1 container {"name":"redis","image":"fixture/redis:1",…}
//! AIRBOOT-STATUS v1 end {"seq":3,"records":3}
//! ```
//!
//! Every line is independent and may be preceded on the same console line by
//! unrelated output (kernel messages interleave with userspace writes), so
//! the marker is searched anywhere in a line. A block counts only when its
//! `begin` and `end` carry the same `seq` and `end.records` equals the
//! number of records received in between.

pub mod http;
pub mod load;
pub mod mounts;
pub mod probe;
pub mod tar;
pub mod time;

/// The strings of a JSON array (`[]` for anything else): an image
/// config's `rootfs.diff_ids`, an engine's layer list.
pub fn json_strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

use serde::{Deserialize, Serialize};

/// The marker every status line carries.
pub const STATUS_MARKER: &str = "AIRBOOT-STATUS";
/// The protocol version this harness speaks.
pub const STATUS_VERSION: &str = "v1";

/// First line of a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Begin {
    pub seq: u64,
    /// The guest's CLOCK_BOOTTIME (`/proc/uptime`) when the block was taken.
    #[serde(default)]
    pub uptime_s: Option<f64>,
    /// True when the guest considers its stack settled: every stack unit is
    /// active and every container is running and healthy (or has no
    /// healthcheck), or something failed for good, or the guest's own
    /// deadline passed. The harness judges a final block at once.
    #[serde(rename = "final", default)]
    pub is_final: bool,
}

/// Last line of a block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct End {
    pub seq: u64,
    /// How many records (lines between `begin` and `end`) the block holds.
    pub records: usize,
    /// Optional POSIX `cksum` output ("CRC LENGTH") over the record lines,
    /// each taken from the marker to the end of the line plus a newline.
    /// It catches console output spliced into the middle of a JSON string,
    /// which the JSON parser alone cannot see.
    #[serde(default)]
    pub cksum: Option<String>,
}

/// POSIX `cksum`: CRC-32 (polynomial 0x04C11DB7, MSB first) over the data
/// and then its length, complemented. Returns the "CRC LENGTH" text the
/// `cksum` command prints.
pub fn posix_cksum(data: &[u8]) -> String {
    fn step(crc: u32, byte: u8) -> u32 {
        let mut c = crc ^ ((byte as u32) << 24);
        for _ in 0..8 {
            c = if c & 0x8000_0000 != 0 { (c << 1) ^ 0x04C1_1DB7 } else { c << 1 };
        }
        c
    }
    let mut crc = data.iter().fold(0u32, |c, &b| step(c, b));
    let mut len = data.len();
    while len > 0 {
        crc = step(crc, (len & 0xff) as u8);
        len >>= 8;
    }
    format!("{} {}", !crc, data.len())
}

/// The part of a console line a checksum covers: from the marker on.
pub fn status_text(line: &str) -> Option<&str> {
    line.find(STATUS_MARKER).map(|at| &line[at..])
}

/// State of the container engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineState {
    /// The engine answers on its API socket.
    Up,
    /// The engine's unit is still starting.
    Starting,
    /// The engine runs and answers, but its API fails (HTTP 5xx), e.g.
    /// `readlink /var/lib/docker/overlay2: invalid argument` from a
    /// damaged store. Waiting longer does not help.
    Failing,
    /// The engine is not running and is not about to.
    #[default]
    Down,
}

/// What the engine is and whether it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineRecord {
    /// "docker", "podman" or "containerd".
    pub name: String,
    pub state: EngineState,
    #[serde(default)]
    pub version: Option<String>,
    /// Free text explaining a non-`up` state, e.g. the unit's state.
    #[serde(default)]
    pub detail: Option<String>,
    /// Where the engine keeps its store (Docker's `DockerRootDir`,
    /// Podman's `graphRoot`), when it told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_root: Option<String>,
    /// Its storage driver (`overlay2`, `vfs`, …), when it told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_driver: Option<String>,
    /// The filesystem holding the data root (`statvfs`), when known: how
    /// big it is and how much is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_fs: Option<FsUsage>,
    /// The mount holding the data root (`/proc/self/mountinfo`), with an
    /// overlay's directories and the mount of its upper directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_mount: Option<Box<mounts::MountRecord>>,
    /// The mount of `/`: whether the root filesystem is read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_mount: Option<Box<mounts::MountRecord>>,
}

/// A filesystem's size and use, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FsUsage {
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// One line of `docker images`: one tag of one image (or an untagged image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub repository: String,
    pub tag: String,
    /// Full image ID, `sha256:<64 hex>`.
    pub id: String,
}

/// One container as the engine reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerRecord {
    pub name: String,
    /// The container's ID, its first 12 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The compose labels, when compose made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeLabels>,
    /// The image reference the container was created from.
    pub image: String,
    #[serde(default)]
    pub image_id: Option<String>,
    /// Docker's state: created, running, restarting, exited, paused, dead.
    pub state: String,
    /// healthy, unhealthy, starting; absent when the image has no healthcheck.
    #[serde(default)]
    pub health: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// A container that is not running: the last lines of its log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// The last health check's output, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_output: Option<String>,
}

/// What compose records on a container it made: its project and service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeLabels {
    pub project: String,
    pub service: String,
}

/// A systemd unit the guest considers part of its stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitRecord {
    pub name: String,
    /// `systemctl is-active`: active, activating, failed, inactive, …
    pub state: String,
    /// A failed or restarting unit's last error (its journal), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One record line of a block, tagged by its kind word.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Engine(EngineRecord),
    Image(ImageRecord),
    Container(Box<ContainerRecord>),
    Unit(UnitRecord),
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusLine {
    Begin(Begin),
    End(End),
    Record(Record),
}

/// Why a line carrying the marker could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The line speaks a protocol version this harness does not know.
    Version(String),
    /// Unknown kind word.
    Kind(String),
    /// The JSON payload did not parse (often: other console output was
    /// written into the middle of the line).
    Payload { kind: String, error: String },
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Version(v) => {
                write!(f, "status line speaks protocol {v:?}; this airboot understands {STATUS_VERSION}")
            }
            LineError::Kind(k) => write!(f, "unknown status record kind {k:?}"),
            LineError::Payload { kind, error } => {
                write!(f, "damaged {kind} status record: {error}")
            }
        }
    }
}

/// Find and parse a status line inside one console line. `None` when the
/// line carries no marker.
pub fn parse_status_line(line: &str) -> Option<Result<StatusLine, LineError>> {
    let at = line.find(STATUS_MARKER)?;
    let rest = line[at + STATUS_MARKER.len()..].trim_start();
    let (version, rest) = split_word(rest);
    if version != STATUS_VERSION {
        return Some(Err(LineError::Version(version.to_string())));
    }
    let (kind, payload) = split_word(rest);
    let payload = payload.trim();
    fn de<T: serde::de::DeserializeOwned>(kind: &str, p: &str) -> Result<T, LineError> {
        serde_json::from_str(p).map_err(|e| LineError::Payload { kind: kind.to_string(), error: e.to_string() })
    }
    Some(match kind {
        "begin" => de(kind, payload).map(StatusLine::Begin),
        "end" => de(kind, payload).map(StatusLine::End),
        "engine" => de(kind, payload).map(|r| StatusLine::Record(Record::Engine(r))),
        "image" => de(kind, payload).map(|r| StatusLine::Record(Record::Image(r))),
        "container" => de(kind, payload).map(|r| StatusLine::Record(Record::Container(Box::new(r)))),
        "unit" => de(kind, payload).map(|r| StatusLine::Record(Record::Unit(r))),
        other => Err(LineError::Kind(other.to_string())),
    })
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let b = parse_status_line(r#"AIRBOOT-STATUS v1 begin {"seq":2,"uptime_s":3.5,"final":true}"#).unwrap().unwrap();
        assert_eq!(b, StatusLine::Begin(Begin { seq: 2, uptime_s: Some(3.5), is_final: true }));
        let i = parse_status_line(r#"AIRBOOT-STATUS v1 image {"repository":"a/b","tag":"1","id":"sha256:00"}"#)
            .unwrap()
            .unwrap();
        assert!(matches!(i, StatusLine::Record(Record::Image(ref r)) if r.repository == "a/b"));
        let e = parse_status_line(r#"x AIRBOOT-STATUS v1 end {"seq":2,"records":1}"#).unwrap().unwrap();
        assert_eq!(e, StatusLine::End(End { seq: 2, records: 1, cksum: None }));
    }

    #[test]
    fn cksum_matches_the_posix_command() {
        // Values printed by coreutils `cksum`.
        assert_eq!(posix_cksum(b"abc"), "1219131554 3");
        assert_eq!(posix_cksum(b""), "4294967295 0");
        assert_eq!(posix_cksum(b"AIRBOOT-STATUS v1 engine {\"name\":\"docker\"}\n"), "3129715594 43");
    }

    #[test]
    fn marker_found_after_interleaved_kernel_text() {
        let l = r#"[   12.0] audit: type=1400 AIRBOOT-STATUS v1 unit {"name":"a.service","state":"active"}"#;
        assert!(matches!(parse_status_line(l), Some(Ok(StatusLine::Record(Record::Unit(_))))));
    }

    #[test]
    fn rejects_damage_and_unknowns() {
        assert_eq!(parse_status_line("plain console line"), None);
        assert_eq!(parse_status_line("AIRBOOT-STATUS v9 begin {}"), Some(Err(LineError::Version("v9".into()))));
        assert_eq!(parse_status_line("AIRBOOT-STATUS v1 gizmo {}"), Some(Err(LineError::Kind("gizmo".into()))));
        let damaged = r#"AIRBOOT-STATUS v1 image {"repository":"a[  3.1] veth0: renamed","tag""#;
        assert!(matches!(parse_status_line(damaged), Some(Err(LineError::Payload { .. }))));
        // Unknown fields are damage too: a strict reader catches spliced lines.
        assert!(matches!(
            parse_status_line(r#"AIRBOOT-STATUS v1 end {"seq":1,"records":0,"x":1}"#),
            Some(Err(LineError::Payload { .. }))
        ));
    }
}

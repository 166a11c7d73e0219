//! `expect.read_only_root`: a device whose root filesystem is read-only
//! and whose container store is an overlay (or another mount) on a
//! writable partition. Judged twice: in the guest, from the mounts the
//! probe reports; then offline, from the disk the boot left: nothing was
//! written into the root partition (so the store's lower directory is
//! as built), and the store's upper directory holds the engine's writes,
//! the running containers among them.

use airboot_model::{FailureCode, Problem};
use airboot_proto::EngineRecord;
use airboot_proto::mounts::MountRecord;
use serde::{Deserialize, Serialize};

fn problem(message: String) -> Problem {
    Problem { code: FailureCode::ReadOnlyRoot, message }
}

fn describe(m: &MountRecord) -> String {
    format!("{} on {} ({})", m.source, m.point, m.fstype)
}

/// The in-guest half: the root is mounted read-only and the store is on
/// a writable mount (for an overlay, its upper directory too).
pub fn in_guest(engine: &EngineRecord) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(root) = &engine.root_mount else {
        return vec![problem(
            "the guest did not report its mounts (airboot's probe reports them; a status reporter does not): the read-only root cannot be checked".into(),
        )];
    };
    if !root.read_only {
        out.push(problem(format!("the root filesystem is mounted read-write: {}", describe(root))));
    }
    let data_root = engine.data_root.as_deref().unwrap_or("the store");
    match &engine.store_mount {
        None => out.push(problem(format!("the guest did not say which mount holds {data_root}"))),
        Some(m) if m.read_only => out.push(problem(format!("{data_root} is on a read-only mount: {}", describe(m)))),
        Some(m) if m.point == "/" => out.push(problem(format!(
            "{data_root} is on the root filesystem itself ({}), not on a mount of its own",
            describe(m)
        ))),
        Some(m) if m.fstype == "overlay" => match (&m.upper, &m.upper_mount) {
            (None, _) => out.push(problem(format!("{data_root} is an overlay with no upper directory (read-only)"))),
            (Some(u), Some(um)) if um.read_only => out.push(problem(format!(
                "the upper directory {u} of {data_root} is on a read-only mount: {}",
                describe(um)
            ))),
            (Some(u), None) => {
                out.push(problem(format!("the guest did not say which mount holds the upper directory {u}")))
            }
            _ => {}
        },
        Some(_) => {}
    }
    out
}

/// What the offline half found on the disk the boot left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ReadOnlyRootCheck {
    /// The root partition (1-based; 0: the whole disk).
    pub root_partition: u32,
    /// Bytes the boot wrote into the root partition's range of the disk.
    pub root_written_bytes: u64,
    /// The store's upper directory as read offline, when it is an overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<UpperDir>,
    /// What could not be checked, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The store's upper directory, read from its partition after the boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UpperDir {
    /// As the guest named it.
    pub path: String,
    pub partition: u32,
    pub files: u64,
    pub bytes: u64,
    /// Its top-level entries.
    pub entries: Vec<String>,
    /// The expected containers whose ID names a folder in it (the
    /// engine's per-container state), and those whose ID does not.
    pub containers_found: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers_missing: Vec<String>,
}

/// The offline half's problems.
pub fn judge_offline(c: &ReadOnlyRootCheck) -> Vec<Problem> {
    let mut out = Vec::new();
    if c.root_written_bytes > 0 {
        let part = match c.root_partition {
            0 => "the whole disk".to_string(),
            n => format!("partition {n}"),
        };
        out.push(problem(format!(
            "the boot wrote {} KiB into the root filesystem ({part}), which must stay as built",
            c.root_written_bytes.div_ceil(1024),
        )));
    }
    if let Some(u) = &c.upper {
        if u.files == 0 {
            out.push(problem(format!(
                "the store's upper directory {} (partition {}) is empty after the boot: the engine's writes went elsewhere",
                u.path, u.partition
            )));
        }
        if !u.containers_missing.is_empty() {
            out.push(problem(format!(
                "the upper directory {} holds no state for container(s) {}: their writes did not land there",
                u.path,
                u.containers_missing.join(", ")
            )));
        }
    }
    out
}

/// One extent of `qemu-img map --output=json`.
#[derive(Deserialize)]
struct MapEntry {
    start: u64,
    length: u64,
    depth: u32,
    present: bool,
}

/// Bytes of `start..start+len` that the top layer of a disk chain holds
/// (`qemu-img map --output=json` of the overlay a boot wrote): what the
/// boot wrote there, zeroes and discards included.
pub fn written_in(map_json: &str, start: u64, len: u64) -> Result<u64, String> {
    let entries: Vec<MapEntry> =
        serde_json::from_str(map_json).map_err(|e| format!("qemu-img map printed no extent list: {e}"))?;
    let end = start.saturating_add(len);
    Ok(entries
        .iter()
        .filter(|e| e.depth == 0 && e.present)
        .map(|e| {
            let (a, b) = (e.start.max(start), e.start.saturating_add(e.length).min(end));
            b.saturating_sub(a)
        })
        .sum())
}

/// The partition number of a guest block device (`/dev/vda2` → 2,
/// `/dev/nvme0n1p3` → 3, `/dev/vda` → 0), for the first disk only.
pub fn partition_of(source: &str) -> Option<u32> {
    let dev = source.strip_prefix("/dev/")?;
    let rest = ["vda", "sda", "xvda", "nvme0n1p", "mmcblk0p"].iter().find_map(|p| dev.strip_prefix(p))?;
    if rest.is_empty() {
        return (!dev.ends_with('p')).then_some(0);
    }
    rest.parse().ok().filter(|n| *n > 0)
}

/// The path of `path` inside the filesystem mounted at `point`.
pub fn inside(point: &str, path: &str) -> Option<String> {
    if point == "/" {
        return Some(path.to_string());
    }
    let rest = path.strip_prefix(point)?;
    if rest.is_empty() { Some("/".into()) } else { rest.starts_with('/').then(|| rest.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(point: &str, fstype: &str, source: &str, ro: bool) -> MountRecord {
        MountRecord {
            point: point.into(),
            fstype: fstype.into(),
            source: source.into(),
            read_only: ro,
            lower: vec![],
            upper: None,
            upper_mount: None,
        }
    }

    fn engine(root: Option<MountRecord>, store: Option<MountRecord>) -> EngineRecord {
        EngineRecord {
            name: "docker".into(),
            data_root: Some("/var/lib/docker".into()),
            root_mount: root.map(Box::new),
            store_mount: store.map(Box::new),
            ..Default::default()
        }
    }

    fn overlay(upper_ro: Option<bool>) -> MountRecord {
        MountRecord {
            lower: vec!["/var/lib/docker".into()],
            upper: Some("/data/docker/upper".into()),
            upper_mount: upper_ro.map(|ro| Box::new(mount("/data", "ext4", "/dev/vda2", ro))),
            ..mount("/var/lib/docker", "overlay", "overlay", false)
        }
    }

    #[test]
    fn in_the_guest_each_way_the_layout_can_be_wrong_is_named() {
        let ro_root = || Some(mount("/", "ext4", "/dev/vda1", true));
        assert_eq!(in_guest(&engine(ro_root(), Some(overlay(Some(false))))), vec![]);
        let cases: Vec<(EngineRecord, &str)> = vec![
            (engine(None, None), "did not report its mounts"),
            (engine(Some(mount("/", "ext4", "/dev/vda1", false)), Some(overlay(Some(false)))), "mounted read-write"),
            (engine(ro_root(), None), "did not say which mount holds /var/lib/docker"),
            (engine(ro_root(), Some(mount("/", "ext4", "/dev/vda1", true))), "on a read-only mount"),
            (engine(ro_root(), Some(mount("/", "ext4", "/dev/vda1", false))), "on the root filesystem itself"),
            (
                engine(ro_root(), Some(overlay(Some(true)))),
                "upper directory /data/docker/upper of /var/lib/docker is on a read-only mount",
            ),
            (engine(ro_root(), Some(overlay(None))), "which mount holds the upper directory"),
            (engine(ro_root(), Some(MountRecord { upper: None, ..overlay(None) })), "overlay with no upper directory"),
        ];
        for (e, want) in cases {
            let p = in_guest(&e);
            assert_eq!(p.len(), 1, "{want}: {p:?}");
            assert_eq!(p[0].code, FailureCode::ReadOnlyRoot);
            assert!(p[0].message.contains(want), "{want}: {}", p[0].message);
        }
        // A bind mount from a writable partition is a store of its own.
        assert_eq!(in_guest(&engine(ro_root(), Some(mount("/var/lib/docker", "ext4", "/dev/vda2", false)))), vec![]);
    }

    #[test]
    fn writes_are_counted_in_the_top_layer_inside_the_range_only() {
        let map = r#"[
            {"start": 0, "length": 1048576, "depth": 1, "present": true, "zero": false, "data": true},
            {"start": 1048576, "length": 8192, "depth": 0, "present": true, "zero": false, "data": true},
            {"start": 1056768, "length": 4096, "depth": 0, "present": true, "zero": true, "data": false},
            {"start": 1060864, "length": 100000, "depth": 2, "present": false, "zero": true, "data": false},
            {"start": 9000000, "length": 4096, "depth": 0, "present": true, "zero": false, "data": true}
        ]"#;
        assert_eq!(written_in(map, 0, 1 << 20).unwrap(), 0, "below the range is the backing file's");
        assert_eq!(written_in(map, 1 << 20, 4 << 20).unwrap(), 8192 + 4096, "data and zeroes written count");
        assert_eq!(written_in(map, (1 << 20) + 4096, 4096).unwrap(), 4096, "an extent is clipped to the range");
        assert_eq!(written_in(map, 0, u64::MAX).unwrap(), 8192 + 4096 + 4096);
        assert!(written_in("qemu-img: error", 0, 1).unwrap_err().contains("no extent list"));
    }

    #[test]
    fn offline_findings_become_problems() {
        let good = ReadOnlyRootCheck {
            root_partition: 1,
            root_written_bytes: 0,
            upper: Some(UpperDir {
                path: "/data/docker/upper".into(),
                partition: 2,
                files: 120,
                bytes: 1 << 20,
                entries: vec!["containers".into(), "vfs".into()],
                containers_found: vec!["redis".into()],
                containers_missing: vec![],
            }),
            notes: vec![],
        };
        assert!(judge_offline(&good).is_empty());
        let written = ReadOnlyRootCheck { root_written_bytes: 5000, ..good.clone() };
        assert!(judge_offline(&written)[0].message.contains("wrote 5 KiB into the root filesystem (partition 1)"));
        let whole = ReadOnlyRootCheck { root_partition: 0, ..written };
        assert!(judge_offline(&whole)[0].message.contains("(the whole disk)"));
        let mut empty = good.clone();
        empty.upper.as_mut().unwrap().files = 0;
        assert!(judge_offline(&empty)[0].message.contains("is empty after the boot"));
        let mut missing = good;
        missing.upper.as_mut().unwrap().containers_missing = vec!["web".into()];
        assert!(judge_offline(&missing)[0].message.contains("no state for container(s) web"));
    }

    #[test]
    fn devices_and_paths_map_to_partitions() {
        assert_eq!(partition_of("/dev/vda2"), Some(2));
        assert_eq!(partition_of("/dev/vda"), Some(0));
        assert_eq!(partition_of("/dev/nvme0n1p3"), Some(3));
        assert_eq!(partition_of("/dev/mmcblk0p2"), Some(2));
        assert_eq!(partition_of("/dev/vdb1"), None, "another disk");
        assert_eq!(partition_of("/dev/vda0"), None);
        assert_eq!(partition_of("overlay"), None);
        assert_eq!(inside("/data", "/data/docker/upper").as_deref(), Some("/docker/upper"));
        assert_eq!(inside("/", "/var/x").as_deref(), Some("/var/x"));
        assert_eq!(inside("/data", "/data").as_deref(), Some("/"));
        assert_eq!(inside("/data", "/database/x"), None);
    }
}

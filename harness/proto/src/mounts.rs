//! The guest's mounts, from `/proc/self/mountinfo`: which mount holds a
//! path, whether it is read-only, and for an overlay its directories. The
//! probe reports the root's mount and the store's, so the harness can
//! tell a read-only root with a writable store overlay from a store that
//! landed on the read-only root.

use serde::{Deserialize, Serialize};

/// One mount as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountRecord {
    /// Where it is mounted.
    pub point: String,
    pub fstype: String,
    /// What is mounted (`/dev/vda2`, `overlay`, …).
    pub source: String,
    pub read_only: bool,
    /// An overlay's lower directories, top first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lower: Vec<String>,
    /// An overlay's upper directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<String>,
    /// The mount holding the upper directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_mount: Option<Box<MountRecord>>,
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every well-formed line of a mountinfo text, in mount order. Lines
/// that do not parse are skipped.
pub fn parse(text: &str) -> Vec<MountRecord> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountRecord> {
    // id parent major:minor root point options [optional…] - fstype source super
    let (head, tail) = line.split_once(" - ")?;
    let head: Vec<&str> = head.split(' ').collect();
    let tail: Vec<&str> = tail.splitn(3, ' ').collect();
    if head.len() < 6 || tail.len() < 2 {
        return None;
    }
    let point = unescape(head[4]);
    if !point.starts_with('/') {
        return None;
    }
    let read_only = head[5].split(',').any(|o| o == "ro");
    let supers = tail.get(2).copied().unwrap_or("");
    let mut lower = Vec::new();
    let mut upper = None;
    if tail[0] == "overlay" {
        for opt in supers.split(',') {
            if let Some(l) = opt.strip_prefix("lowerdir=") {
                lower = l.split(':').filter(|x| !x.is_empty()).map(unescape).collect();
            } else if let Some(u) = opt.strip_prefix("upperdir=") {
                upper = Some(unescape(u));
            }
        }
    }
    Some(MountRecord {
        point,
        fstype: tail[0].to_string(),
        source: unescape(tail[1]),
        read_only,
        lower,
        upper,
        upper_mount: None,
    })
}

/// Whether `point` is `path` or one of its parents.
fn holds(point: &str, path: &str) -> bool {
    point == "/" || path == point || path.strip_prefix(point).is_some_and(|rest| rest.starts_with('/'))
}

/// The mount that holds `path` (an absolute path, symlinks not
/// resolved): the one with the longest mount point above it, the last
/// mounted when several share it. For an overlay, the mount holding its
/// upper directory is filled in — found among the mounts made before
/// it, since the overlay may cover its own lower directory.
pub fn holding(mounts: &[MountRecord], path: &str) -> Option<MountRecord> {
    let (at, m) = best(mounts, path)?;
    let mut m = m.clone();
    if let Some(up) = &m.upper
        && let Some((_, u)) = best(&mounts[..at], up)
    {
        m.upper_mount = Some(Box::new(u.clone()));
    }
    Some(m)
}

fn best<'a>(mounts: &'a [MountRecord], path: &str) -> Option<(usize, &'a MountRecord)> {
    mounts.iter().enumerate().filter(|(_, m)| holds(&m.point, path)).max_by_key(|(i, m)| (m.point.len(), *i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VFS_RO: &str = "\
22 1 254:1 / / ro,relatime shared:1 - ext4 /dev/vda1 ro
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4k
30 22 254:2 / /data rw,relatime shared:9 - ext4 /dev/vda2 rw
31 22 0:27 / /var/lib/docker rw,relatime shared:10 - overlay overlay rw,lowerdir=/var/lib/docker,upperdir=/data/docker/upper,workdir=/data/docker/work
32 22 254:2 /containerd /var/lib/containerd rw,relatime shared:9 - ext4 /dev/vda2 rw
";

    #[test]
    fn an_overlay_store_on_a_read_only_root() {
        let m = parse(VFS_RO);
        assert_eq!(m.len(), 5);
        let root = holding(&m, "/").unwrap();
        assert!(root.read_only);
        assert_eq!((root.point.as_str(), root.source.as_str()), ("/", "/dev/vda1"));
        let store = holding(&m, "/var/lib/docker").unwrap();
        assert_eq!(store.fstype, "overlay");
        assert!(!store.read_only);
        assert_eq!(store.lower, vec!["/var/lib/docker".to_string()]);
        assert_eq!(store.upper.as_deref(), Some("/data/docker/upper"));
        let up = store.upper_mount.unwrap();
        assert_eq!((up.point.as_str(), up.source.as_str(), up.read_only), ("/data", "/dev/vda2", false));
        // A path under the store is held by the overlay; a sibling is not.
        assert_eq!(holding(&m, "/var/lib/docker/vfs/").unwrap().point, "/var/lib/docker");
        assert_eq!(holding(&m, "/var/lib/dockerd").unwrap().point, "/");
        assert_eq!(holding(&m, "/var/lib/containerd/x").unwrap().source, "/dev/vda2");
    }

    #[test]
    fn the_last_mount_on_a_point_wins_and_escapes_are_undone() {
        let text = "\
22 1 254:1 / / rw,relatime - ext4 /dev/vda rw
40 22 254:1 /var/lib/docker /var/lib/docker rw,relatime - ext4 /dev/vda rw
41 40 254:1 /var/lib/docker /var/lib/docker ro,relatime - ext4 /dev/vda rw
50 22 0:40 / /mnt/my\\040disk rw - tmpfs tmpfs rw
not a mountinfo line
51 22 0:41 / relative rw - tmpfs tmpfs rw
";
        let m = parse(text);
        assert_eq!(m.len(), 4, "the malformed and relative lines are skipped");
        let store = holding(&m, "/var/lib/docker").unwrap();
        assert!(store.read_only, "the bind remounted read-only is the one in effect");
        assert!(store.upper_mount.is_none());
        assert_eq!(holding(&m, "/mnt/my disk/a").unwrap().fstype, "tmpfs");
        assert!(!holding(&m, "/").unwrap().read_only);
        assert_eq!(holding(&[], "/"), None);
        // Lines with too few fields before or after the separator are skipped.
        assert!(parse("22 1 254:1 / / - ext4 /dev/vda rw\n").is_empty(), "five fields before the dash");
        assert!(parse("22 1 254:1 / / rw - ext4\n").is_empty(), "one field after it");
        assert_eq!(parse("22 1 254:1 / / rw - ext4 /dev/vda\n").len(), 1, "no super options is fine");
    }
}

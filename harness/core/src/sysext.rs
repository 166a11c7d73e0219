//! Injecting the probe into an image whose root is read-only, through its
//! writable data partition, as a systemd system extension: systemd-sysext
//! merges `/var/lib/extensions/*` over `/usr` before `sysinit.target`, and
//! an extension whose release file says `EXTENSION_RELOAD_MANAGER=1` makes
//! it reload the service manager (systemd ≥ 255), which then sees the
//! extension's units. The probe's unit is started by an `.upholds/` link of
//! `sysinit.target`: a `.wants/` link found after the boot's transaction
//! was built would start nothing. This is the layout of Avocado OS (a root
//! assembled from extensions, a writable `/var`).
//!
//! Pure: what the root shows (names listed, fstab text, superblocks) comes
//! in as bytes and strings; `airboot_session::inject` reads them.

use std::io;

use crate::disk::part::Partition;
use crate::inject::{Content, GuestInit, PROBE_PATH, Plan, PlannedFile, RootFs, Stack, status_conf};

/// The extension's name: its folder and its release file carry it.
pub const NAME: &str = "airboot-probe";
/// The folder systemd-sysext reads that can live on a data partition
/// (`/etc/extensions` is on the root, `/run/extensions` in memory).
pub const EXTENSIONS: &str = "/var/lib/extensions";
/// The GPT type of a `/var` partition (the Discoverable Partitions
/// Specification), for a root whose fstab does not mount `/var`.
pub const GPT_VAR: &str = "4D21B016-B534-45C2-A9FB-5C16E091FD2D";
/// The first systemd whose systemd-sysext reloads the manager.
pub const MIN_SYSTEMD: u32 = 255;
/// Where systemd-sysext.service is enabled, if it is.
pub const SYSEXT_LINKS: [&str; 2] = [
    "/etc/systemd/system/sysinit.target.wants/systemd-sysext.service",
    "/usr/lib/systemd/system/sysinit.target.wants/systemd-sysext.service",
];

/// systemd's version on `fs`: [`systemd_version`] over the folders that
/// can hold its shared library, `/usr/lib/systemd`, `/lib/systemd` and
/// (Debian from trixie on) `/usr/lib/<triplet>/systemd`.
pub fn installed_systemd(fs: &dyn RootFs) -> io::Result<Option<u32>> {
    let mut dirs = vec!["/usr/lib/systemd".to_string(), "/lib/systemd".to_string()];
    for n in fs.names("/usr/lib")?.unwrap_or_default().into_iter().filter(|n| n.contains("-linux-")) {
        dirs.push(format!("/usr/lib/{n}/systemd"));
    }
    let mut names = Vec::new();
    for d in &dirs {
        names.extend(fs.names(d)?.unwrap_or_default());
    }
    Ok(systemd_version(names.iter().map(String::as_str)))
}

/// systemd's version, from the names in the folders that hold its shared
/// library (`libsystemd-shared-257.so`, `libsystemd-shared-255.4-1.so`).
pub fn systemd_version<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<u32> {
    names
        .into_iter()
        .filter_map(|n| n.strip_prefix("libsystemd-shared-"))
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let after = &rest[digits.len()..];
            (after.starts_with('.') || after.starts_with('-')).then(|| digits.parse().ok()).flatten()
        })
        .max()
}

/// One line of `/etc/fstab`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: Vec<String>,
}

impl Mount {
    pub fn is_bind(&self) -> bool {
        self.options.iter().any(|o| o == "bind" || o == "rbind")
    }
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

fn unescape(field: &str) -> String {
    field.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
}

/// The entries of an fstab, comments and malformed lines left out.
pub fn fstab(text: &str) -> Vec<Mount> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| Mount {
                source: unescape(f[0]),
                target: match unescape(f[1]).trim_end_matches('/') {
                    "" => "/".to_string(),
                    t => t.to_string(),
                },
                fstype: f[2].to_string(),
                options: f.get(3).map(|o| o.split(',').map(String::from).collect()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Where guest `path` is stored: the mount it lives on (the innermost,
/// through bind mounts) and the path inside that mount's source. `None`
/// when it lives on the root filesystem. Bounded: 16 bind hops.
pub fn locate<'m>(path: &str, mounts: &'m [Mount]) -> Option<(&'m Mount, String)> {
    let mut path = path.trim_end_matches('/').to_string();
    for _ in 0..16 {
        // The root's own line never matches ("/" + "/"), nor swap's ("none").
        let m = mounts
            .iter()
            .filter(|m| path == m.target || path.starts_with(&format!("{}/", m.target)))
            .max_by_key(|m| m.target.len())?;
        let rest = &path[m.target.len()..];
        if m.is_bind() {
            path = format!("{}{rest}", m.source.trim_end_matches('/'));
            continue;
        }
        return Some((m, if rest.is_empty() { "/".into() } else { rest.to_string() }));
    }
    None
}

/// How an fstab source names a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// `/dev/vda3`, `/dev/sda3`, `/dev/mmcblk0p3`, `/dev/nvme0n1p3`.
    Number(u32),
    Label(String),
    Uuid(String),
    PartLabel(String),
}

pub fn device(source: &str) -> Option<Device> {
    if let Some(l) = source.strip_prefix("LABEL=") {
        return Some(Device::Label(l.trim_matches('"').to_string()));
    }
    if let Some(u) = source.strip_prefix("UUID=") {
        return Some(Device::Uuid(u.trim_matches('"').to_ascii_lowercase()));
    }
    if let Some(l) = source.strip_prefix("PARTLABEL=") {
        return Some(Device::PartLabel(l.trim_matches('"').to_string()));
    }
    for by in ["/dev/disk/by-label/", "/dev/disk/by-uuid/", "/dev/disk/by-partlabel/"] {
        if let Some(v) = source.strip_prefix(by) {
            return device(&format!(
                "{}={v}",
                match by {
                    "/dev/disk/by-label/" => "LABEL",
                    "/dev/disk/by-uuid/" => "UUID",
                    _ => "PARTLABEL",
                }
            ));
        }
    }
    let name = source.strip_prefix("/dev/")?;
    let disk_part = |prefix_ok: bool, s: &str| -> Option<u32> {
        let digits: String =
            s.chars().rev().take_while(|c| c.is_ascii_digit()).collect::<Vec<_>>().into_iter().rev().collect();
        (prefix_ok && !digits.is_empty()).then(|| digits.parse().ok()).flatten()
    };
    if name.starts_with("mmcblk") || name.starts_with("nvme") {
        let (_, p) = name.rsplit_once('p')?;
        return disk_part(p.chars().all(|c| c.is_ascii_digit()), p).map(Device::Number);
    }
    let letters = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let simple = ["vd", "sd", "hd", "xvd"].iter().any(|p| letters.strip_prefix(p).is_some_and(|d| d.len() == 1));
    disk_part(simple, name).map(Device::Number)
}

impl Device {
    /// Whether it names `p`, whose filesystem's (label, UUID) are `ids`
    /// ([`ext4_ids`]).
    pub fn names(&self, p: &Partition, ids: Option<&(String, String)>) -> bool {
        match self {
            Device::Number(n) => p.number == *n,
            Device::PartLabel(l) => &p.name == l,
            Device::Label(l) => ids.is_some_and(|(label, _)| label == l),
            Device::Uuid(u) => ids.is_some_and(|(_, uuid)| uuid == u),
        }
    }
}

/// An ext4 superblock's (label, UUID), the UUID in fstab's spelling.
pub fn ext4_ids(sb: &[u8]) -> Option<(String, String)> {
    if sb.len() < 0x88 || sb[0x38..0x3a] != [0x53, 0xEF] {
        return None;
    }
    let label = String::from_utf8_lossy(sb[0x78..0x88].split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
    let u = &sb[0x68..0x78];
    let hex: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        hex[0..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..16].concat()
    );
    Some((label, uuid))
}

/// The unit the extension carries: the probe reads the stack description
/// the extension carries too (`/etc` is on the read-only root).
pub fn unit() -> String {
    crate::inject::UNIT.replace(
        "ExecStart=/usr/local/sbin/airboot-probe serve",
        &format!("ExecStart={PROBE_PATH} serve --config {CONFIG}"),
    )
}

/// Where the extension puts the stack description (seen as this in the guest).
pub const CONFIG: &str = "/usr/lib/airboot/status.conf";

/// What to write into the data partition, `dir` being the extensions
/// folder's path inside it (`/lib/extensions` for a partition mounted on
/// `/var`).
pub fn plan(stack: &Stack, dir: &str) -> Plan {
    let ext = format!("{}/{NAME}", dir.trim_end_matches('/'));
    let file = |path: &str, mode: u32, content: Content| PlannedFile {
        path: format!("{ext}{path}"),
        mode,
        content,
        replaces: false,
    };
    let unit_dir = "/usr/lib/systemd/system";
    Plan {
        init: GuestInit::Systemd,
        files: vec![
            file(PROBE_PATH, 0o755, Content::Probe),
            file(CONFIG, 0o644, Content::Text(status_conf(stack))),
            file(
                &format!("/usr/lib/extension-release.d/extension-release.{NAME}"),
                0o644,
                Content::Text(
                    "# Written by airboot into the run's overlay (the image itself is unchanged).\nID=_any\nEXTENSION_RELOAD_MANAGER=1\n".into(),
                ),
            ),
            file(&format!("{unit_dir}/airboot-probe.service"), 0o644, Content::Text(unit())),
        ],
        symlinks: vec![(
            format!("{ext}{unit_dir}/sysinit.target.upholds/airboot-probe.service"),
            "../airboot-probe.service".into(),
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_model::Engine;

    #[test]
    fn systemd_s_version_comes_from_its_shared_library_s_name() {
        assert_eq!(systemd_version(["libsystemd-shared-257.so", "libsystemd-core-257.so"]), Some(257));
        assert_eq!(systemd_version(["libsystemd-shared-255.4-1.so"]), Some(255));
        assert_eq!(systemd_version(["libsystemd-shared-252.so", "systemd", "libsystemd-shared-256.so"]), Some(256));
        assert_eq!(systemd_version(["libsystemd-shared-.so", "libsystemd-shared-25x.so", "systemd"]), None);
        assert_eq!(systemd_version(["libsystemd-shared-99999999999.so"]), None, "not a u32");
    }

    /// Where Debian keeps the library: bookworm's `/usr/lib/systemd`,
    /// trixie's `/usr/lib/<triplet>/systemd`, on real erofs roots.
    #[test]
    fn the_installed_systemd_is_found_where_each_release_keeps_it() {
        let root = |lib: &'static str| {
            crate::disk::erofs::tests::mkfs(&[], move |t| {
                let p = t.join(lib);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, "elf").unwrap();
                std::fs::create_dir_all(t.join("usr/lib/other-dir")).unwrap();
            })
        };
        let version = |img: &Vec<u8>| installed_systemd(&crate::disk::erofs::Erofs::open(img).unwrap()).unwrap();
        assert_eq!(version(&root("usr/lib/systemd/libsystemd-shared-252.so")), Some(252));
        assert_eq!(version(&root("usr/lib/aarch64-linux-gnu/systemd/libsystemd-shared-257.so")), Some(257));
        assert_eq!(version(&root("usr/lib/other-dir/systemd/libsystemd-shared-257.so")), None, "not a triplet");
        assert_eq!(version(&root("etc/libsystemd-shared-257.so")), None);
    }

    #[test]
    fn fstab_lines_are_split_and_comments_dropped() {
        let m = fstab(
            "# comment\n/dev/vda2 / erofs ro 0 0\n\n/dev/vda3\t/data ext4 rw,errors=remount-ro 0 2 # tail\n/data/var /var none bind 0 0\nLABEL=my\\040disk /mnt/x/ ext4\nbroken line\n",
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].target, "/data");
        assert_eq!(m[1].options, ["rw", "errors=remount-ro"]);
        assert!(m[2].is_bind() && !m[1].is_bind());
        assert_eq!((m[3].source.as_str(), m[3].target.as_str()), ("LABEL=my disk", "/mnt/x"));
        assert!(m[0].read_only() && !m[1].read_only());
    }

    #[test]
    fn a_path_is_located_through_bind_mounts_on_its_partition() {
        let m = fstab("/dev/vda2 / erofs ro\n/dev/vda3 /data ext4 rw\n/data/var /var none bind\ntmpfs /tmp tmpfs rw\n");
        let (mnt, inner) = locate("/var/lib/extensions", &m).unwrap();
        assert_eq!((mnt.source.as_str(), inner.as_str()), ("/dev/vda3", "/var/lib/extensions"));
        let m = fstab("/dev/vda2 / erofs ro\nPARTLABEL=var /var ext4 rw\n/dev/vda4 /var/lib ext4 rw\n");
        let (mnt, inner) = locate("/var/lib/extensions", &m).unwrap();
        assert_eq!((mnt.source.as_str(), inner.as_str()), ("/dev/vda4", "/extensions"), "the innermost mount");
        let (mnt, inner) = locate("/var/log", &m).unwrap();
        assert_eq!((mnt.source.as_str(), inner.as_str()), ("PARTLABEL=var", "/log"));
        assert!(locate("/var/lib/extensions", &fstab("/dev/vda2 / ext4 rw\n/dev/vda3 /variable ext4 rw\n")).is_none());
        assert!(locate("/var/lib/extensions", &fstab("/dev/vda2 / ext4 rw\n/dev/vda3 none swap sw\n")).is_none());
        // A bind loop ends.
        assert!(locate("/a/x", &fstab("/b /a none bind\n/a /b none bind\n")).is_none());
    }

    #[test]
    fn fstab_sources_name_partitions() {
        assert_eq!(device("/dev/vda3"), Some(Device::Number(3)));
        assert_eq!(device("/dev/sdb12"), Some(Device::Number(12)));
        assert_eq!(device("/dev/mmcblk0p4"), Some(Device::Number(4)));
        assert_eq!(device("/dev/nvme0n1p2"), Some(Device::Number(2)));
        assert_eq!(device("LABEL=data"), Some(Device::Label("data".into())));
        assert_eq!(device("UUID=ABCD-ef"), Some(Device::Uuid("abcd-ef".into())));
        assert_eq!(device("/dev/disk/by-partlabel/var"), Some(Device::PartLabel("var".into())));
        assert_eq!(device("/dev/disk/by-label/data"), Some(Device::Label("data".into())));
        for none in [
            "/dev/vda",
            "/dev/mapper/var",
            "/dev/mmcblk0",
            "tmpfs",
            "/data/var",
            "/dev/loop0x",
            "/dev/loop0",
            "/dev/md0",
            "/dev/dm-1",
        ] {
            assert_eq!(device(none), None, "{none}");
        }
    }

    #[test]
    fn a_device_names_its_partition_by_number_label_uuid_or_partlabel() {
        let p =
            Partition { number: 3, start: 0, len: 1, kind: crate::disk::part::PartType::Mbr(0x83), name: "var".into() };
        let ids = ("data".to_string(), "0a-1b".to_string());
        assert!(Device::Number(3).names(&p, None) && !Device::Number(2).names(&p, Some(&ids)));
        assert!(
            Device::PartLabel("var".into()).names(&p, None) && !Device::PartLabel("data".into()).names(&p, Some(&ids))
        );
        assert!(Device::Label("data".into()).names(&p, Some(&ids)) && !Device::Label("data".into()).names(&p, None));
        assert!(
            Device::Uuid("0a-1b".into()).names(&p, Some(&ids)) && !Device::Uuid("var".into()).names(&p, Some(&ids))
        );
    }

    #[test]
    fn an_ext4_superblock_gives_its_label_and_uuid() {
        let mut sb = vec![0u8; 1024];
        sb[0x38] = 0x53;
        sb[0x39] = 0xEF;
        sb[0x68..0x78].copy_from_slice(&(0u8..16).collect::<Vec<_>>());
        sb[0x78..0x7c].copy_from_slice(b"data");
        assert_eq!(ext4_ids(&sb), Some(("data".into(), "00010203-0405-0607-0809-0a0b0c0d0e0f".into())));
        assert!(ext4_ids(&sb[..0x88]).is_some(), "the label's end is enough");
        assert!(ext4_ids(&sb[..0x87]).is_none());
        sb[0x38] = 0;
        assert_eq!(ext4_ids(&sb), None);
        assert_eq!(ext4_ids(&[0u8; 16]), None);
    }

    #[test]
    fn the_extension_holds_the_probe_its_description_release_and_an_upholds_link() {
        let containers = ["redis".to_string()];
        let stack = Stack { engine: Engine::Docker, containers: &containers, compose: None, units: &[] };
        let p = plan(&stack, "/var/lib/extensions/");
        let paths: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/var/lib/extensions/airboot-probe/usr/local/sbin/airboot-probe",
                "/var/lib/extensions/airboot-probe/usr/lib/airboot/status.conf",
                "/var/lib/extensions/airboot-probe/usr/lib/extension-release.d/extension-release.airboot-probe",
                "/var/lib/extensions/airboot-probe/usr/lib/systemd/system/airboot-probe.service",
            ]
        );
        let Content::Text(release) = &p.files[2].content else { panic!() };
        assert!(release.contains("\nID=_any\n") && release.contains("\nEXTENSION_RELOAD_MANAGER=1\n"), "{release}");
        let Content::Text(unit) = &p.files[3].content else { panic!() };
        assert!(
            unit.contains("ExecStart=/usr/local/sbin/airboot-probe serve --config /usr/lib/airboot/status.conf\n"),
            "{unit}"
        );
        let Content::Text(conf) = &p.files[1].content else { panic!() };
        assert!(conf.contains("STACK_CONTAINERS=\"redis\""), "{conf}");
        assert_eq!(
            p.symlinks,
            [(
                "/var/lib/extensions/airboot-probe/usr/lib/systemd/system/sysinit.target.upholds/airboot-probe.service"
                    .to_string(),
                "../airboot-probe.service".to_string()
            )]
        );
        assert_eq!(p.files[0].mode, 0o755);
        assert!(p.files.iter().all(|f| !f.replaces));
    }
}

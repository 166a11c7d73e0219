//! Injection into a read-only erofs root through its data partition, on
//! real disks (sfdisk, mkfs.erofs, mkfs.ext4; the write through debugfs and
//! qemu-nbd), no VM: which images take the probe as a system extension,
//! where it goes, and why the others do not. The boot that proves systemd
//! merges it is `a_read_only_root_takes_the_probe_as_a_system_extension…`
//! in `harness/cli/tests/own_image.rs` (suite full).

use std::path::{Path, PathBuf};
use std::process::Command;

use airboot_core::event::{EventSink, RunEvent};
use airboot_core::report::Report;
use airboot_model::{Arch, BootMode, DiskFormat};
use airboot_session::fixtures::ResolvedImage;
use airboot_session::inject::{Prepared, prepare};

struct Sink;
impl EventSink for Sink {
    fn event(&mut self, _: RunEvent) {}
}

fn sh(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A disk partitioned by `table` (sfdisk): partition 1 an erofs root made of `root` (path, text)
/// files and (link, target) symlinks, partition 2 an ext4 data partition
/// labelled `data` holding `var/lib/extensions/`.
fn disk(dir: &Path, files: &[(&str, &str)], links: &[(&str, &str)], table: &str) -> PathBuf {
    let tree = dir.join("root");
    for (p, text) in files {
        let p = tree.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    for (l, t) in links {
        let l = tree.join(l.trim_start_matches('/'));
        std::fs::create_dir_all(l.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(t, l).unwrap();
    }
    let erofs = dir.join("root.erofs");
    sh(Command::new("mkfs.erofs").arg("--quiet").arg(&erofs).arg(&tree));
    let data_tree = dir.join("data");
    std::fs::create_dir_all(data_tree.join("var/lib/extensions")).unwrap();
    let data = dir.join("data.ext4");
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-L", "data", "-U", DATA_UUID, "-d"])
        .arg(&data_tree)
        .arg(&data)
        .arg("16M"));
    let img = dir.join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(40 << 20).unwrap();
    let mut c = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(table.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
    for (f, seek) in [(&erofs, 1), (&data, 17)] {
        sh(Command::new("dd").arg(format!("if={}", f.display())).arg(format!("of={}", img.display())).args([
            "bs=1M",
            &format!("seek={seek}"),
            "conv=notrunc",
            "status=none",
        ]));
    }
    img
}

/// The data partition's filesystem UUID (mkfs.ext4 -U), as blkid prints it.
const DATA_UUID: &str = "0a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9";
const FSTAB: &str = "/dev/vda1 / erofs ro 0 0\nLABEL=data /data ext4 rw 0 2\n/data/var /var none bind 0 0\n";
const SYSEXT_LINK: (&str, &str) = (
    "/etc/systemd/system/sysinit.target.wants/systemd-sysext.service",
    "/usr/lib/systemd/system/systemd-sysext.service",
);
const UNIT: &str = "[Service]\nExecStart=/usr/bin/docker run --rm --name redis r:1\n";

fn root(version: &str, fstab: &str) -> Vec<(String, String)> {
    vec![
        ("/etc/fstab".into(), fstab.into()),
        (format!("/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-{version}.so"), "elf".into()),
        ("/usr/lib/systemd/system/systemd-sysext.service".into(), "[Unit]\n".into()),
        ("/etc/systemd/system/container-redis.service".into(), UNIT.into()),
    ]
}

/// `prepare` on the disk: what it did, and the report it wrote.
const MBR: &str = "label: dos\nstart=2048, size=32768, type=83\nstart=34816, size=32768, type=83\n";

fn prepare_on(files: &[(String, String)], links: &[(&str, &str)]) -> (Prepared, Report, tempfile::TempDir) {
    prepare_on_table(files, links, MBR)
}

fn prepare_on_table(
    files: &[(String, String)],
    links: &[(&str, &str)],
    table: &str,
) -> (Prepared, Report, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let img = disk(dir.path(), &files, links, table);
    let src = format!(
        "name = \"sysext\"\n[image]\npath = {:?}\nkernel = \"/vmlinuz\"\nappend = \"console=ttyS0 root=/dev/vda1 ro\"\n\
         [expect]\nimages = [\"r:1\"]\ncontainers = [{{ name = \"redis\" }}]\n",
        img.display().to_string()
    );
    let s = airboot_core::scenario::parse(&src, Path::new("sysext.toml"), &airboot_core::scenario::any_file).unwrap();
    let r = ResolvedImage {
        fixture: None,
        fixture_arch: None,
        boot: BootMode::Direct,
        disk: img,
        format: DiskFormat::Raw,
        kernel: Some("/vmlinuz".into()),
        initrd: None,
        append: Some("console=ttyS0 root=/dev/vda1 ro".into()),
        probe_kernel: None,
        known_ids: Default::default(),
        probe: false,
    };
    let mut report = Report::new("sysext", "sysext.toml", String::new());
    let p = prepare(&s, &r, Arch::X86_64, false, &mut report, &mut Sink);
    (p, report, dir)
}

#[test]
fn an_erofs_root_with_new_systemd_takes_the_probe_in_its_data_partition() {
    let wants = ("/etc/systemd/system/multi-user.target.wants/container-redis.service", "../container-redis.service");
    let (p, report, _dir) = prepare_on(&root("257", FSTAB), &[SYSEXT_LINK, wants]);
    let notes = report.notes.join("\n");
    assert!(matches!(p, Prepared::Injected(_)), "{notes}");
    assert_eq!(report.probe.origin.as_deref(), Some("injected"));
    let paths: Vec<&str> = report.probe.injected.iter().map(|f| f.path.as_str()).collect();
    // The partition is mounted on /data, its var/ bound on /var.
    assert!(paths.contains(&"/var/lib/extensions/airboot-probe/usr/local/sbin/airboot-probe"), "{paths:?}");
    assert!(
        paths.contains(
            &"/var/lib/extensions/airboot-probe/usr/lib/systemd/system/sysinit.target.upholds/airboot-probe.service"
        ),
        "{paths:?}"
    );
    assert!(notes.contains("system extension in partition 2 (LABEL=data on /data"), "{notes}");
    assert!(notes.contains("systemd 257") && notes.contains("container-redis.service"), "{notes}");
    let conf = report.probe.injected.iter().find(|f| f.path.ends_with("status.conf")).unwrap();
    assert_eq!(conf.sha256.len(), 64);
}

#[test]
fn fstab_s_uuid_names_the_data_partition_as_blkid_spells_it() {
    let fstab = format!("/dev/vda1 / erofs ro 0 0\nUUID={} /var ext4 defaults 0 2\n", DATA_UUID.to_uppercase());
    let (p, report, _dir) = prepare_on(&root("257", &fstab), &[SYSEXT_LINK]);
    assert!(matches!(p, Prepared::Injected(_)), "{:?}", report.notes);
    assert!(report.notes.join("\n").contains("partition 2 (UUID="), "{:?}", report.notes);
    let other = "/dev/vda1 / erofs ro 0 0\nUUID=0a1b2c3d-4e5f-4061-8273-94a5b6c7d8ea /var ext4 defaults 0 2\n";
    let (p, report, _dir) = prepare_on(&root("257", other), &[SYSEXT_LINK]);
    assert!(matches!(p, Prepared::None), "{:?}", report.notes);
}

#[test]
fn a_partition_mounted_on_var_takes_it_under_lib_extensions() {
    let fstab = "/dev/vda1 / erofs ro 0 0\n/dev/vda2 /var ext4 defaults 0 2\n";
    let (p, report, _dir) = prepare_on(&root("255", fstab), &[SYSEXT_LINK]);
    assert!(matches!(p, Prepared::Injected(_)), "{:?}", report.notes);
    assert!(
        report.probe.injected.iter().any(|f| f.path == "/lib/extensions/airboot-probe/usr/local/sbin/airboot-probe"),
        "{:?}",
        report.probe.injected
    );
}

/// No fstab line for /var: a GPT partition typed /var is where
/// systemd-gpt-auto-generator mounts it; with another type there is none.
#[test]
fn a_gpt_var_partition_takes_it_when_fstab_says_nothing() {
    let gpt = |var: &str| {
        format!(
            "label: gpt\nstart=2048, size=32768, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709\nstart=34816, size=32768, type={var}\n"
        )
    };
    let files = root("256", "/dev/vda1 / erofs ro 0 0\n");
    let (p, report, _dir) = prepare_on_table(&files, &[SYSEXT_LINK], &gpt("4D21B016-B534-45C2-A9FB-5C16E091FD2D"));
    let notes = report.notes.join("\n");
    assert!(matches!(p, Prepared::Injected(_)), "{notes}");
    assert!(notes.contains("partition 2 (typed GPT /var"), "{notes}");
    assert!(
        report.probe.injected.iter().any(|f| f.path == "/lib/extensions/airboot-probe/usr/local/sbin/airboot-probe"),
        "{:?}",
        report.probe.injected
    );
    let linux_data = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    let (p, report, _dir) = prepare_on_table(&files, &[SYSEXT_LINK], &gpt(linux_data));
    assert!(matches!(p, Prepared::None));
    assert!(report.notes.join("\n").contains("and the disk has no GPT /var partition"), "{:?}", report.notes);
}

/// Each reason an erofs root takes no extension, in the note, and the
/// run goes on without a probe.
#[test]
fn erofs_roots_that_cannot_load_an_extension_say_why() {
    type Case = (Vec<(String, String)>, Vec<(&'static str, &'static str)>, &'static str);
    let cases: Vec<Case> = vec![
        (root("252", FSTAB), vec![SYSEXT_LINK], "its systemd 252 cannot load units from a system extension"),
        (root("257", FSTAB), vec![], "systemd-sysext.service is not enabled"),
        (
            root("257", "/dev/vda1 / erofs ro 0 0\ntmpfs /tmp tmpfs rw 0 0\n"),
            vec![SYSEXT_LINK],
            "mounts no writable partition under /var/lib/extensions, and the disk has no GPT /var partition",
        ),
        (root("257", "/dev/vda2 /var ext4 ro 0 0\n"), vec![SYSEXT_LINK], "/var (/dev/vda2) is mounted read-only too"),
        (root("257", "/dev/vda7 /var ext4 rw 0 0\n"), vec![SYSEXT_LINK], "the disk has no partition /dev/vda7"),
        (
            root("257", "/dev/mapper/var /var ext4 rw 0 0\n"),
            vec![SYSEXT_LINK],
            "cannot tell which partition /dev/mapper/var",
        ),
        (vec![("/etc/fstab".into(), FSTAB.into())], vec![SYSEXT_LINK], "no libsystemd-shared-<version>.so"),
    ];
    for (files, links, why) in cases {
        let (p, report, _dir) = prepare_on(&files, &links);
        let notes = report.notes.join("\n");
        assert!(matches!(p, Prepared::None), "{why}: {notes}");
        assert!(notes.contains(why) && notes.contains("is erofs, read-only"), "want {why:?}: {notes}");
        assert!(notes.contains("login"), "the way forward: {notes}");
        assert!(report.probe.injected.is_empty());
    }
}

//! Bad inputs, one class per case: each ends with exit 2 and a message
//! naming the file, key or folder at fault, and none of them boots a VM
//! (the message comes before QEMU would start). Each case runs the real
//! binary on real files: empty, truncated, corrupt, chained qcow2 made by
//! qemu-img, a packed image that does not unpack, a host without QEMU or
//! vhost-device-vsock, a report folder that cannot be written, one that
//! fills up, and one another run holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn airboot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airboot"));
    c.current_dir(env!("CARGO_MANIFEST_DIR")).arg("run");
    c
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// What a run said: the terminal, and report.json's failures when it wrote one.
fn said(out: &Output, report_dir: &Path) -> String {
    let report = std::fs::read_to_string(report_dir.join("report.json")).unwrap_or_default();
    format!("{}\n{report}", text(out))
}

fn qemu_img(args: &[&str]) {
    let ok = Command::new("qemu-img").args(args).status().expect("qemu-img runs");
    assert!(ok.success(), "qemu-img {args:?}");
}

/// A folder with a scenario over `image` (a path relative to it) and
/// `extra` TOML lines under [image] and [machine].
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(image: &str, image_extra: &str, machine_extra: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "name = \"bad-input\"\n[image]\npath = \"{image}\"\n{image_extra}\n[machine]\narch = \"x86_64\"\n{machine_extra}\n\
             [expect]\nengine = \"docker\"\nimages = []\ntimeout = \"20s\"\n"
        );
        std::fs::write(dir.path().join("s.toml"), toml).unwrap();
        Case { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// `airboot run s.toml --report-dir <dir>/r`, with a cache of its own.
    fn run(&self, env: &[(&str, &str)]) -> (i32, String) {
        let r = self.path("r");
        let mut c = airboot();
        c.arg(self.path("s.toml")).arg("--report-dir").arg(&r).env("AIRBOOT_CACHE", self.path("cache"));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (out.status.code().unwrap_or(-1), said(&out, &r))
    }
}

fn assert_says(class: &str, (code, said): (i32, String), want: &[&str]) {
    assert_eq!(code, 2, "{class}: exit status\n{said}");
    for w in want {
        assert!(said.contains(w), "{class}: expected {w:?} in\n{said}");
    }
    assert!(!said.contains("panicked"), "{class}: a panic\n{said}");
}

/// A raw disk of zeros: nothing wrong with it as a file, so a run gets
/// as far as the host's tools with it.
fn zeros(c: &Case) {
    std::fs::write(c.path("disk.img"), vec![0u8; 1 << 20]).unwrap();
}

#[test]
fn scenario_files_that_are_wrong_name_the_file_and_key() {
    let c = Case::new("disk.img", "", "");
    zeros(&c);
    // 1. No such scenario file.
    let out = airboot().arg(c.path("nope.toml")).output().unwrap();
    assert_says("a missing scenario file", (out.status.code().unwrap(), text(&out)), &["nope.toml"]);
    // 2. Not TOML.
    std::fs::write(c.path("broken.toml"), "name = \"x\"\n[image\n").unwrap();
    let out = airboot().arg(c.path("broken.toml")).output().unwrap();
    assert_says("a scenario that is not TOML", (out.status.code().unwrap(), text(&out)), &["broken.toml:2"]);
    // 3. A key the format does not have.
    let s = std::fs::read_to_string(c.path("s.toml")).unwrap();
    std::fs::write(c.path("s.toml"), s.replace("[machine]", "[machine]\nmemmory = \"1G\"")).unwrap();
    assert_says("an unknown key", c.run(&[]), &["s.toml", "memmory"]);
    // 4. A regex built to explode: refused at its size limit, by key.
    std::fs::write(c.path("s.toml"), s + "[[milestone]]\nname = \"x\"\nconsole = \"((a{100}){100}){100}\"\n").unwrap();
    assert_says("a catastrophic regex", c.run(&[]), &["milestone.console", "size limit"]);
}

#[test]
fn images_that_cannot_be_booted_are_refused_naming_the_image() {
    // 5. No image at all.
    let c = Case::new("missing.img", "", "");
    assert_says("a missing image", c.run(&[]), &["image.path", "missing.img"]);
    // 6. A folder where the image should be.
    let c = Case::new("dir.img", "", "");
    std::fs::create_dir(c.path("dir.img")).unwrap();
    assert_says("an image that is a folder", c.run(&[]), &["dir.img", "not a file"]);
    // 7. Zero bytes (a build that died before writing).
    let c = Case::new("zero.img", "boot = \"uefi\"", "");
    std::fs::write(c.path("zero.img"), b"").unwrap();
    assert_says("a zero-byte image", c.run(&[]), &["image-unreadable", "zero.img is empty (0 bytes)"]);
    // 8. A qcow2 cut short after its header.
    let c = Case::new("trunc.qcow2", "boot = \"uefi\"", "");
    let good = c.path("good.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", good.to_str().unwrap(), "64M"]);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(c.path("trunc.qcow2"), &bytes[..300]).unwrap();
    assert_says("a truncated qcow2", c.run(&[]), &["trunc.qcow2 is not a readable qcow2", "qemu-img check"]);
    // 9. A qcow2 header that is garbage past its magic.
    let c = Case::new("corrupt.qcow2", "boot = \"uefi\"", "");
    let mut junk = b"QFI\xfb".to_vec();
    junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(c.path("corrupt.qcow2"), junk).unwrap();
    assert_says("a corrupt qcow2", c.run(&[]), &["corrupt.qcow2 is not a readable qcow2 (qcow2 version"]);
    // 10. A qcow2 overlay whose backing file is gone.
    let c = Case::new("overlay.qcow2", "boot = \"uefi\"", "");
    let o = c.path("overlay.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "base.raw", o.to_str().unwrap(), "64M"]);
    assert_says("a qcow2 whose backing file is missing", c.run(&[]), &["backing file base.raw is missing"]);
    // 11. A raw disk with no partition table and nothing said about booting it.
    let c = Case::new("disk.img", "", "");
    zeros(&c);
    assert_says("a raw image with no partition table", c.run(&[]), &["disk.img", "cannot tell how the disk boots"]);
    // 12. A packed image that does not unpack.
    let c = Case::new("disk.img.xz", "boot = \"uefi\"", "");
    let mut xz = b"\xfd7zXZ\x00".to_vec();
    xz.extend(std::iter::repeat_n(0x5a, 4096));
    std::fs::write(c.path("disk.img.xz"), xz).unwrap();
    assert_says("a compressed image that fails to decompress", c.run(&[]), &["cannot unpack", "disk.img.xz"]);
}

#[test]
fn a_host_without_its_tools_is_named_before_anything_boots() {
    // 13. No QEMU on the PATH.
    let c = Case::new("disk.img", "boot = \"uefi\"", "");
    zeros(&c);
    assert_says("missing QEMU", c.run(&[("PATH", "/nonexistent")]), &["qemu-missing", "qemu-system-x86_64"]);
    // 14. UEFI firmware files that are not there.
    let c = Case::new("disk.img", "boot = \"uefi\"", "firmware = \"/nope/CODE.fd\"\nfirmware_vars = \"/nope/VARS.fd\"");
    zeros(&c);
    assert_says("missing firmware", c.run(&[]), &["/nope/CODE.fd"]);
    // 15. vhost-device-vsock asked for and not there (no cached build, not
    // on the PATH, no AIRBOOT_VHOST_DEVICE_VSOCK).
    let c = Case::new("disk.img", "boot = \"uefi\"\nprobe = true", "transport = \"vhost-user-vsock\"");
    zeros(&c);
    let (code, said) = c.run(&[("PATH", "/usr/bin:/bin"), ("AIRBOOT_VHOST_DEVICE_VSOCK", "")]);
    if Path::new("/usr/bin/vhost-device-vsock").exists() {
        eprintln!("vhost-device-vsock is in /usr/bin here: case 15 not checked");
    } else {
        assert_says("missing vhost-device-vsock", (code, said), &["vhost-device-vsock"]);
    }
}

#[test]
fn report_folders_that_cannot_take_the_reports_are_named() {
    // 16. A report folder under a file.
    let c = Case::new("zero.img", "", "");
    std::fs::write(c.path("zero.img"), b"").unwrap();
    let out = airboot().arg(c.path("s.toml")).arg("--report-dir").arg(c.path("zero.img/r")).output().unwrap();
    assert_says("a report folder that cannot be made", (out.status.code().unwrap(), text(&out)), &["zero.img/r"]);
    // 17. A report folder another run is writing: refused, and left alone.
    let r = c.path("r");
    std::fs::create_dir(&r).unwrap();
    let lock = r.join(".airboot.lock");
    let mut holder = Command::new("flock").arg(&lock).args(["sleep", "30"]).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !lock.exists() && t0.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, said) = c.run(&[]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_says("two runs sharing a report folder", (code, said), &["being written by another airboot run"]);
    assert!(!r.join("report.json").exists(), "the other run's folder was written into");
    // 18. A report folder that fills up: a 8 KiB tmpfs (root, and a host
    // that lets it mount one: this one does; a locked-down container may not).
    let full = c.path("full");
    std::fs::create_dir(&full).unwrap();
    let mounted = is_root()
        && Command::new("mount").args(["-t", "tmpfs", "-o", "size=8k", "tmpfs"]).arg(&full).status().unwrap().success();
    if !mounted {
        eprintln!("cannot mount a tmpfs here: case 18 (a full report folder) not checked");
    } else {
        let _unmount = Unmount(full.clone());
        let out = airboot().arg(c.path("s.toml")).arg("--report-dir").arg(&full).output().unwrap();
        assert_says(
            "a report folder that fills up",
            (out.status.code().unwrap(), text(&out)),
            &["No space left on device", full.to_str().unwrap()],
        );
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

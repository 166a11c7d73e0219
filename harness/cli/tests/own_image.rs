//! Users' own images, booted as they were produced, through the real
//! `airboot` binary: disks that carry nothing of airboot's (UEFI with a
//! unified kernel image, BIOS with syslinux, compressed, built by mkosi,
//! a read-only erofs root, sysvinit), the probe injected or a console
//! login; and failing fast when nothing will ever answer. Helpers:
//! common/mod.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use airboot_model::FailureCode;
use serde_json::Value;

use common::*;

/// The probe-less root laid out as a whole device disk by
/// scripts/make-device-image.sh (`bios` or `uefi-uki`), and a scenario
/// for `input` (the disk, or what `pack` makes of it) with no `boot` and no
/// kernel: the disk boots with its own loader.
fn device_disk(layout: &str, pack: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let (dir, root, _) = probe_less_image("");
    let fixture = preseeded_fixture();
    let disk = dir.path().join("device.img");
    let o = Command::new("bash")
        .arg(repo().join("scripts/make-device-image.sh"))
        .arg(layout)
        .arg(&root)
        .arg(fixture.join("vmlinuz"))
        .arg(fixture.join("initrd.img"))
        .arg(&disk)
        .output()
        .unwrap();
    assert!(o.status.success(), "make-device-image.sh {layout}: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&root).unwrap();
    let input = match pack {
        Some(tool) => {
            let packed = dir.path().join(format!("device.img.{}", if tool == "zstd" { "zst" } else { "xz" }));
            let st = Command::new(tool)
                .args(["-q", "-T2", "-k", "-c"])
                .arg(&disk)
                .stdout(std::fs::File::create(&packed).unwrap())
                .status()
                .unwrap();
            assert!(st.success());
            packed
        }
        None => disk.clone(),
    };
    let scenario = dir.path().join("device.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"probe-less-{layout}\"\n[image]\npath = {:?}\n[expect]\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
             containers = [{{ name = \"redis\", image = \"fixture/redis:1\", healthy = true }}, {{ name = \"web\", image = \"fixture/busybox:1\" }}]\n\
             timeout = \"120s\"\n",
            input.display().to_string()
        ),
    )
    .unwrap();
    (dir, disk, input, scenario)
}

/// A passing run of a probe-less device disk: the full verdict with the
/// injected probe, the input untouched.
fn check_injected_pass(out: &Output, rdir: &Path, input: &Path) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", explain(out));
    let r = report(rdir);
    check_common(&r, rdir);
    check_probe(&r, &["vsock", "vhost-user-vsock", "virtio-serial"]);
    assert_eq!(r["verdict"], "pass");
    assert_eq!(r["image"]["path"], input.to_str().unwrap());
    let sha = Command::new("sha256sum").arg(input).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!(r["image"]["sha256_before"], sha.as_str(), "the hash is the input file's");
    assert_eq!(r["probe"]["origin"], "injected", "{}", r["probe"]);
    let files: Vec<&str> =
        r["probe"]["injected"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(files.contains(&"/usr/local/sbin/airboot-probe"), "{files:?}");
    assert!(files.contains(&"/etc/systemd/system/multi-user.target.wants/airboot-probe.service"), "{files:?}");
    for f in r["probe"]["injected"].as_array().unwrap() {
        assert_eq!(f["sha256"].as_str().unwrap().len(), 64, "{f}");
    }
    assert_redis_healthy(&r);
    assert!(notes(&r).contains("partition 2"), "injected into the root partition: {}", r["notes"]);
    assert_no_qemu_left("injected probe");
    r
}

/// UEFI with a unified kernel image (systemd's stub + kernel + initramfs +
/// command line) as the ESP's only loader, a GPT-typed root: OVMF boots
/// it, the probe goes into the typed root partition. Suite full: in CI the
/// mkosi-built image below covers UEFI + UKI + an injected probe.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_probe_less_uefi_uki_disk_boots_through_ovmf_and_gets_the_full_verdict() {
    let _g = vm_lock();
    let (_dir, _disk, input, scenario) = device_disk("uefi-uki", None);
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    let r = check_injected_pass(&out, rdir.path(), &input);
    assert_eq!(r["boot"]["mode"], "uefi", "{}", r["boot"]);
    assert!(r["boot"]["detected"].as_str().unwrap().contains("EFI/BOOT/BOOTX64.EFI"), "{}", r["boot"]);
    assert!(notes(&r).contains("GPT type of a Linux root"), "{}", r["notes"]);
    let ms: Vec<&str> = r["milestones"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    assert!(ms.contains(&"firmware") && ms.contains(&"loader"), "{ms:?}");
    assert!(r["image"]["unpacked"].is_null());
}

/// A device image `script` builds (its arguments: `args`, then the
/// output path), cached in ~/.cache/airboot/device-images/<name>-<key>/
/// as `file`, keyed by the script, the preseeded fixture's image IDs and
/// `extra` (older builds of it are removed).
fn cached_device(name: &str, script: &str, args: &[PathBuf], file: &str, extra: &[u8]) -> PathBuf {
    let fixture = preseeded_fixture();
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("fixture.json")).unwrap()).unwrap();
    let ids: Vec<&str> = fx["images"].as_array().unwrap().iter().filter_map(|i| i["id"].as_str()).collect();
    let script = repo().join(script);
    let mut key_input = std::fs::read(&script).unwrap();
    key_input.extend(ids.join(",").bytes());
    key_input.extend(extra);
    let mut sum = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut sum.stdin.take().unwrap(), &key_input).unwrap();
    let key = String::from_utf8(sum.wait_with_output().unwrap().stdout).unwrap()[..16].to_string();
    let root = airboot_images::cache_root().join("device-images");
    let dir = root.join(format!("{name}-{key}"));
    let image = dir.join(file);
    if image.exists() {
        return image;
    }
    for old in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if old.file_name().to_string_lossy().starts_with(&format!("{name}-")) {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    let tmp = root.join(format!(".{name}-{key}.{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let o = Command::new("bash").arg(&script).args(args).arg(tmp.join(file)).output().unwrap();
    assert!(o.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&o.stderr));
    std::fs::rename(&tmp, &dir).unwrap();
    image
}

/// A device image as a third-party builder makes it: mkosi 14 (Debian's
/// package) through scripts/make-mkosi-image.sh, GPT, systemd-boot and a
/// unified kernel image with a dracut initrd, root found by GPT
/// auto-discovery, docker.io with the preseeded fixture's store and its
/// container units. Cached (also keyed by mkosi's version).
fn mkosi_image() -> PathBuf {
    let version = Command::new("mkosi").arg("--version").output().expect("mkosi (scripts/setup.sh installs it)");
    let disk = preseeded_fixture().join("disk.qcow2");
    cached_device("mkosi-uefi-uki", "scripts/make-mkosi-image.sh", &[disk], "device.raw", &version.stdout)
}

/// The Avocado OS layout, with systemd new enough to load units from a
/// system extension: scripts/make-sysext-device.sh (Debian trixie by
/// mmdebstrap, an erofs root, `/var/lib/extensions` on the ext4 data
/// partition, the preseeded fixture's store, units and kernel). Cached
/// (also keyed by make-device-image.sh, which lays it out).
fn sysext_device() -> PathBuf {
    let layout = std::fs::read(repo().join("scripts/make-device-image.sh")).unwrap();
    cached_device("sysext-erofs", "scripts/make-sysext-device.sh", &[preseeded_fixture()], "device.img", &layout)
}

/// A read-only erofs root whose systemd (257) merges system extensions
/// from the writable data partition: airboot reads the erofs root, follows
/// its fstab to the partition under /var/lib/extensions, writes the probe
/// there as an extension (in the layer over the image), and the image gets
/// the full verdict with no login.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_read_only_root_takes_the_probe_as_a_system_extension_on_its_data_partition() {
    let _g = vm_lock();
    let input = sysext_device();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("sysext.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"sysext\"\n[image]\npath = {:?}\n[machine]\narch = \"x86_64\"\n\
             [expect]\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
             containers = [{{ name = \"redis\", image = \"fixture/redis:1\", healthy = true }}, {{ name = \"web\", image = \"fixture/busybox:1\" }}]\n\
             timeout = \"120s\"\n[[step]]\nrun = \"systemd-sysext status --no-pager\"\n",
            input.display().to_string()
        ),
    )
    .unwrap();
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let r = report(rdir.path());
    check_common(&r, rdir.path());
    check_probe(&r, &["vsock", "vhost-user-vsock", "virtio-serial"]);
    assert_eq!(r["probe"]["origin"], "injected", "{}", r["probe"]);
    let sha = Command::new("sha256sum").arg(&input).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout).split_whitespace().next().unwrap().to_string();
    assert_eq!((r["image"]["sha256_before"].as_str(), r["image"]["sha256_after"].as_str()), (Some(&*sha), Some(&*sha)));
    let files: Vec<&str> =
        r["probe"]["injected"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    let ext = "/var/lib/extensions/airboot-probe/usr";
    for want in [
        "/local/sbin/airboot-probe",
        "/lib/extension-release.d/extension-release.airboot-probe",
        "/lib/systemd/system/sysinit.target.upholds/airboot-probe.service",
    ] {
        assert!(files.contains(&format!("{ext}{want}").as_str()), "{files:?}");
    }
    let n = notes(&r);
    assert!(n.contains("is erofs, read-only; as a system extension in partition 3"), "{n}");
    assert!(n.contains("systemd 257") && n.contains("container-redis.service"), "{n}");
    assert_fixture_ids(&r, "debian-preseeded-x86_64");
    assert_redis_healthy(&r);
    let merged = r["steps"][0]["exec"]["output"].as_str().unwrap_or("");
    assert!(merged.lines().any(|l| l.starts_with("/usr") && l.contains("airboot-probe")), "not merged: {merged}");
    let loader = r["milestones"].as_array().unwrap().iter().find(|m| m["name"] == "loader").cloned();
    assert!(loader.is_some_and(|m| m["evidence"].as_str().unwrap_or("").contains("SYSLINUX")), "{}", r["milestones"]);
    assert_no_qemu_left("system extension");
}

/// MBR + GRUB (boot.img in the MBR, core.img in the gap before the first
/// partition, grub/grub.cfg on a /boot partition of its own), as
/// grub-install lays a BIOS disk out: airboot tells BIOS from GRUB's boot
/// code, finds the root from grub.cfg's `root=`, injects the probe, and
/// SeaBIOS boots it through GRUB.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_probe_less_bios_grub_disk_boots_through_grub_and_gets_the_full_verdict() {
    let _g = vm_lock();
    let (_dir, _disk, input, scenario) = device_disk("bios-grub", None);
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    let r = check_injected_pass(&out, rdir.path(), &input);
    assert_eq!(r["boot"]["mode"], "bios", "{}", r["boot"]);
    assert!(r["boot"]["detected"].as_str().unwrap().contains("GRUB"), "{}", r["boot"]);
    assert!(notes(&r).contains("grub/grub.cfg"), "the root from GRUB's configuration: {}", r["notes"]);
    let log = std::fs::read_to_string(rdir.path().join("console.log")).unwrap();
    assert!(log.contains("root=/dev/vda2"), "GRUB did not boot the kernel with its command line");
    let loader = r["milestones"].as_array().unwrap().iter().find(|m| m["name"] == "loader").cloned();
    assert!(loader.is_some_and(|m| m["evidence"].as_str().unwrap_or("").contains("Booting")), "{}", r["milestones"]);
}

/// The image mkosi built, as it left the build: no airboot inside, no
/// `boot`, no kernel in the scenario. airboot tells UEFI from its ESP,
/// boots it under OVMF, injects the probe into the GPT-discovered root
/// (over debugfs: only the directories it lacks are made) and gives the
/// full verdict; the cached image is never written.
#[test]
fn a_mkosi_built_uefi_uki_image_gets_the_full_verdict_with_the_probe_injected() {
    let _g = vm_lock();
    let input = mkosi_image();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("mkosi.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"mkosi-uefi-uki\"\n[image]\npath = {:?}\n[expect]\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
             containers = [{{ name = \"redis\", image = \"fixture/redis:1\", healthy = true }}, {{ name = \"web\", image = \"fixture/busybox:1\" }}]\n\
             timeout = \"180s\"\n",
            input.display().to_string()
        ),
    )
    .unwrap();
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    let r = check_injected_pass(&out, rdir.path(), &input);
    assert_eq!(r["boot"]["mode"], "uefi", "{}", r["boot"]);
    let log = std::fs::read_to_string(rdir.path().join("console.log")).unwrap();
    assert!(log.contains("EFI stub"), "the UKI's EFI stub did not start the kernel");
    let cmdline = log.lines().find(|l| l.contains("Kernel command line:")).expect("the kernel's command line");
    assert!(!cmdline.contains("root="), "mkosi's image names no root: GPT auto-discovery finds it ({cmdline})");
    let ms: Vec<&str> = r["milestones"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    assert!(ms.contains(&"firmware") && ms.contains(&"loader") && ms.contains(&"init"), "{ms:?}");
    assert!(r["diagnoses"].as_array().unwrap().is_empty());
}

/// The same third-party image, judged against a scenario that expects an
/// image its store does not hold: the run fails naming that image (and
/// only it), with everything else it holds still checked, the input
/// untouched.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_mkosi_image_lacking_an_expected_image_fails_naming_it() {
    let _g = vm_lock();
    let input = mkosi_image();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("mkosi-missing.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"mkosi-missing-image\"\n[image]\npath = {:?}\n[expect]\n\
             images = [\"fixture/busybox:1\", \"fixture/redis:1\", \"fixture/nginx:1\"]\n\
             containers = [{{ name = \"redis\", image = \"fixture/redis:1\", healthy = true }}]\ntimeout = \"180s\"\n",
            input.display().to_string()
        ),
    )
    .unwrap();
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let r = report(rdir.path());
    check_common(&r, rdir.path());
    assert_eq!(r["verdict"], "fail");
    assert_eq!(r["probe"]["origin"], "injected", "{}", r["probe"]);
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["code"], "image-missing", "{failures:?}");
    let m = failures[0]["message"].as_str().unwrap();
    assert!(m.contains("fixture/nginx:1") && !m.contains("fixture/redis:1 is not"), "{m}");
    // What the store does hold was checked, by ID.
    let present: Vec<(&str, bool)> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["ref"].as_str().unwrap(), i["present"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        present,
        [("fixture/busybox:1", true), ("fixture/redis:1", true), ("fixture/nginx:1", false)],
        "{}",
        r["images"]
    );
    assert_redis_healthy(&r);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fixture/nginx:1"));
    assert_no_qemu_left("missing image");
}

/// The third-party image with each fault of the catalogue injected (its
/// files written into a qcow2 layer over the cached image, the way airboot
/// injects its probe) gets the diagnosis the fixture controls get, for
/// every fault a file in the image can make: a data root elsewhere, the
/// store read-only, a configuration the engine refuses, overlayfs or
/// netfilter unavailable (modprobe.d where the fixtures use the command
/// line: a UKI's is sealed in), the engine masked, a unit that pulls, a
/// container that exits at once, the root filesystem full (a filler
/// leaving room for airboot's own files only), busybox zeroed in the
/// seeded layer; and, with a scenario key as the control has it, a
/// health check that reads the clock (`[machine] rtc` in 2001), a loader
/// with no once-only guard (a reboot `[[step]]`), the arm64 archives
/// loaded over the seeded tags. All 13 codes of the catalogue.
#[test]
#[ignore = "suite full: cargo test --test own_image -- --ignored"]
fn a_mkosi_image_with_each_fault_gets_the_same_diagnosis_as_the_fixtures() {
    use airboot_core::inject::{Content, GuestInit, Plan, PlannedFile};
    let _g = vm_lock();
    let input = mkosi_image();
    let view = airboot_qemu::disk::open_image(&input).unwrap();
    let root = airboot_core::disk::detect::root_partition(view.as_ref(), airboot_model::Arch::X86_64).unwrap();
    let unit = |rel: &str| std::fs::read_to_string(repo().join("images/overlay").join(rel)).unwrap();
    // What the image's root filesystem holds: its free space and the
    // seeded layers' busybox binaries.
    let part = airboot_core::disk::Slice { inner: view.as_ref(), start: root.start, len: root.len };
    let fs = airboot_core::disk::ext4::Ext4::open(&part).unwrap();
    let layers = fs.lookup("/var/lib/docker/overlay2", true).unwrap().expect("the mkosi image's seeded store");
    let mut busyboxes = Vec::new();
    for e in fs.list(&layers).unwrap() {
        let p = format!("/var/lib/docker/overlay2/{}/diff/bin/busybox", e.name);
        if let Some(ino) = fs.lookup(&p, false).unwrap().filter(|i| i.kind() == airboot_core::disk::ext4::Kind::File) {
            busyboxes.push((p, ino.size));
        }
    }
    assert!(!busyboxes.is_empty(), "no seeded layer has bin/busybox");
    // Full but for room for airboot's own files (the probe, its unit and
    // configuration) and a few blocks: nothing left for the engine.
    let probe = std::fs::metadata(repo().join("target/x86_64-unknown-linux-musl/release/airboot-probe"))
        .expect("the x86_64 probe (cargo build --release -p airboot-probe --target x86_64-unknown-linux-musl)")
        .len();
    let filler = fs.free_bytes() - probe.next_multiple_of(4096) - 48 * 4096;
    let text = |path: &'static str, t: String| (path.to_string(), Content::Text(t));
    // The archives the fixtures load, for each architecture (x86_64's
    // are the images the store holds), and the loader's list of them.
    let archives = |arch: airboot_model::Arch| {
        let dir = airboot_images::cache_root()
            .join("containers")
            .join(format!("{arch}-{}", airboot_images::containers_key(arch)));
        let json = std::fs::read_to_string(dir.join("images.json"))
            .unwrap_or_else(|e| panic!("{}/images.json (airboot images build makes it): {e}", dir.display()));
        let mut files = Vec::new();
        let mut list = String::new();
        for i in serde_json::from_str::<Value>(&json).unwrap().as_array().unwrap() {
            let name = i["archive"].as_str().unwrap();
            list += &format!("{name} {} {}\n", i["id"].as_str().unwrap(), i["ref"].as_str().unwrap());
            files.push((format!("/usr/share/airboot/images/{name}"), Content::Copy(dir.join(name))));
        }
        files.push(("/usr/share/airboot/images/images.list".to_string(), Content::Text(list)));
        files
    };
    let loader = |arch| {
        ["etc/systemd/system/airboot-load-images.service", "usr/local/sbin/airboot-load-images"]
            .iter()
            .map(|rel| (format!("/{rel}"), Content::Text(unit(&format!("load-every-boot/{rel}")))))
            .chain(archives(arch))
            .collect::<Vec<_>>()
    };
    let loader_enabled = vec![(
        "/etc/systemd/system/multi-user.target.wants/airboot-load-images.service",
        "/etc/systemd/system/airboot-load-images.service",
    )];
    // (name, files written, symlinks made, the diagnosis the fixture control gets)
    type Fault = (&'static str, Vec<(String, Content)>, Vec<(&'static str, &'static str)>, &'static str);
    let faults: Vec<Fault> = vec![
        (
            "data-root",
            vec![text("/etc/docker/daemon.json", "{ \"data-root\": \"/srv/docker\" }\n".into())],
            vec![],
            "data-root-mismatch",
        ),
        (
            "read-only",
            vec![text("/etc/fstab", "/var/lib/docker /var/lib/docker none bind,ro 0 0\n".into())],
            vec![],
            "store-read-only",
        ),
        (
            "crash-loop",
            vec![text("/etc/docker/daemon.json", "{ \"no-such-directive\": true }\n".into())],
            vec![],
            "engine-crash-loop",
        ),
        // What module_blacklist does on the fixtures' command line (a UKI's is sealed in).
        (
            "storage-driver",
            vec![text("/etc/modprobe.d/airboot-fault.conf", "install overlay /bin/false\n".into())],
            vec![],
            "storage-driver-mismatch",
        ),
        (
            "kernel-features",
            vec![text(
                "/etc/modprobe.d/airboot-fault.conf",
                ["nf_tables", "ip_tables", "iptable_nat", "iptable_filter"]
                    .map(|m| format!("install {m} /bin/false\n"))
                    .concat(),
            )],
            vec![],
            "kernel-missing-features",
        ),
        (
            "masked",
            vec![],
            vec![
                ("/etc/systemd/system/docker.service", "/dev/null"),
                ("/etc/systemd/system/docker.socket", "/dev/null"),
            ],
            "engine-not-started",
        ),
        (
            "egress",
            vec![text(
                "/etc/systemd/system/egress-pull.service",
                unit("egress/etc/systemd/system/egress-pull.service"),
            )],
            vec![(
                "/etc/systemd/system/multi-user.target.wants/egress-pull.service",
                "/etc/systemd/system/egress-pull.service",
            )],
            "network-dependent-start",
        ),
        (
            "container-crash",
            vec![text(
                "/etc/systemd/system/container-web.service",
                unit("container-crash/etc/systemd/system/container-web.service"),
            )],
            vec![],
            "container-crash-loop",
        ),
        // The fixture control leaves 40 MiB for a first-boot load; this
        // image has its store seeded, so the engine gets (almost) nothing.
        (
            "no-space",
            vec![("/var/tmp/airboot-filler".into(), Content::Fill { byte: 0xa5, len: filler })],
            vec![],
            "store-no-space",
        ),
        // The clock control's web container (its health check reads a
        // certificate issued at build time), on a machine whose clock
        // starts in 2001 (`[machine] rtc` below).
        (
            "clock",
            [
                "etc/systemd/system/container-web.service",
                "etc/airboot/app-cert.pem",
                "usr/local/share/airboot/cert-check",
            ]
            .iter()
            .map(|rel| (format!("/{rel}"), Content::Text(unit(&format!("clock-check/{rel}")))))
            .collect(),
            vec![],
            "clock-before-image",
        ),
        // The load-every-boot control's loader (no once-only guard) and
        // the archives it loads, booted twice (a reboot `[[step]]` below).
        ("load-every-boot", loader(airboot_model::Arch::X86_64), loader_enabled.clone(), "load-every-boot"),
        // The same loader with the arm64 archives: their tags now name
        // images this x86_64 device cannot run.
        ("image-arch", loader(airboot_model::Arch::Aarch64), loader_enabled, "image-arch-mismatch"),
        // The fixture control zeroes busybox's first 4 KiB in the layer.
        (
            "store-corrupt",
            busyboxes.iter().map(|(p, n)| (p.clone(), Content::Fill { byte: 0, len: *n })).collect(),
            vec![],
            "store-corrupt",
        ),
    ];
    // AIRBOOT_FAULTS=a,b runs only those (a quicker look at one).
    let only = std::env::var("AIRBOOT_FAULTS").ok();
    for (name, files, symlinks, code) in faults {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == name)) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join(format!("{name}.qcow2"));
        let st = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&input)
            .arg(&layer)
            .status()
            .unwrap();
        assert!(st.success());
        let plan = Plan {
            init: GuestInit::Systemd,
            files: files
                .into_iter()
                .map(|(path, content)| PlannedFile {
                    mode: if ["/busybox", "/cert-check", "/airboot-load-images"].iter().any(|x| path.ends_with(x)) {
                        0o755
                    } else {
                        0o644
                    },
                    path,
                    content,
                    replaces: false,
                })
                .collect(),
            symlinks: symlinks.into_iter().map(|(l, t)| (l.to_string(), t.to_string())).collect(),
        };
        let work = tempfile::tempdir().unwrap();
        airboot_qemu::inject::inject(&layer, root.start, root.len, &plan, Path::new("/nonexistent"), work.path())
            .unwrap_or_else(|e| panic!("{name}: writing the fault: {e}"));
        drop(work);
        // A device image is one file: the layer and what is under it, as one qcow2.
        let image = dir.path().join(format!("{name}-device.qcow2"));
        let st = Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&layer).arg(&image).status().unwrap();
        assert!(st.success());
        std::fs::remove_file(&layer).unwrap();
        let scenario = dir.path().join(format!("{name}.toml"));
        let (machine, web, steps) = match name {
            "clock" => ("[machine]\nrtc = \"2001-01-01\"\n", ", healthy = true", ""),
            "load-every-boot" => ("", "", "[[step]]\nname = \"second-boot\"\nreboot = true\n"),
            _ => ("", "", ""),
        };
        std::fs::write(
            &scenario,
            format!(
                "name = \"mkosi-{name}\"\n[image]\npath = {:?}\n{machine}[expect]\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
                 containers = [{{ name = \"redis\", healthy = true }}, {{ name = \"web\"{web} }}]\ntimeout = \"180s\"\n{steps}\
                 [outcome]\nverdict = \"fail\"\ndiagnoses = [\"{code}\"]\n",
                image.display().to_string()
            ),
        )
        .unwrap();
        let started = Instant::now();
        let (out, rdir) = run(&[scenario.to_str().unwrap(), "--check-outcomes"]);
        let r = report(rdir.path());
        eprintln!(
            "mkosi + {name}: {:?} in {:.0}s, failures {}, engine {}, diagnoses {}",
            out.status.code(),
            started.elapsed().as_secs_f64(),
            r["failures"],
            r["engine"],
            r["diagnoses"]
        );
        assert_eq!(out.status.code(), Some(0), "{name}: {}", explain(&out));
        assert_eq!(r["probe"]["origin"], "injected", "{name}");
        assert_fail_fast(&r);
    }
    assert_no_qemu_left("mkosi faults");
}

/// As an x86 appliance build leaves it: an MBR disk booted by SeaBIOS and
/// syslinux, zstd-compressed. The boot path is told from the MBR; the
/// input is unpacked once (cached by its sha256) and the copy booted.
#[test]
fn a_probe_less_compressed_bios_disk_is_unpacked_booted_by_syslinux_and_gets_the_full_verdict() {
    let _g = vm_lock();
    let (_dir, disk, input, scenario) = device_disk("bios", Some("zstd"));
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    let r = check_injected_pass(&out, rdir.path(), &input);
    let u = &r["image"]["unpacked"];
    assert_eq!(u["packing"], "zstd", "{u}");
    assert!(u["path"].as_str().unwrap().ends_with("/device.img"), "{u}");
    assert_eq!(u["size"].as_u64(), Some(std::fs::metadata(&disk).unwrap().len()), "{u}");
    assert_eq!(r["boot"]["mode"], "bios", "{}", r["boot"]);
    assert!(r["boot"]["detected"].as_str().unwrap().contains("syslinux"), "{}", r["boot"]);
    let log = std::fs::read_to_string(rdir.path().join("console.log")).unwrap();
    assert!(log.contains("SYSLINUX") && log.contains("root=/dev/vda2"), "syslinux did not boot the kernel");
    // The unpacked copy (1.8 GiB sparse) is this test's own: the raw disk
    // differs each time (debugfs times), so nothing would reuse it.
    let copy = Path::new(u["path"].as_str().unwrap()).parent().unwrap();
    assert!(copy.parent().unwrap().ends_with("inputs"), "{}", copy.display());
    std::fs::remove_dir_all(copy).unwrap();
}

/// Injection off (as for a read-only root): airboot logs in on the serial
/// getty and types the reference reporter into /run; its status blocks
/// give the verdict. A wrong password is `login-failed`, and no password
/// is ever written into the reports.
#[test]
fn a_console_login_judges_a_probe_less_image_and_a_wrong_password_is_login_failed() {
    let _g = vm_lock();
    let (_dir, _disk, scenario) = probe_less_image("inject = false\nlogin = { user = \"root\", password = \"\" }");
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let r = report(rdir.path());
    check_common(&r, rdir.path());
    assert_eq!((r["probe"]["origin"].as_str(), r["probe"]["transport"].as_str()), (Some("login"), Some("console")));
    assert!(notes(&r).contains("console login as \"root\""), "{}", r["notes"]);
    assert_redis_healthy(&r);
    let log = std::fs::read_to_string(rdir.path().join("console.log")).unwrap();
    assert!(log.contains("stty -echo") && log.contains("AIRBOOT-STATUS v1 begin"), "no login or no reporter");
    assert!(!log.contains("AIRBOOT_SCRIPT_END"), "the typed script was echoed onto the console");
    assert_no_qemu_left("console login");

    let text = std::fs::read_to_string(&scenario).unwrap();
    let wrong = text.replace("user = \"root\", password = \"\"", "user = \"nobody\", password = \"hunter2-secret\"");
    std::fs::write(&scenario, wrong).unwrap();
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let r = report(rdir.path());
    assert_eq!(r["failures"][0]["code"], FailureCode::LoginFailed.as_str(), "{}", r["failures"]);
    assert!(r["failures"][0]["message"].as_str().unwrap().contains("\"nobody\""), "{}", r["failures"]);
    for f in std::fs::read_dir(rdir.path()).unwrap().flatten() {
        let bytes = std::fs::read(f.path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("hunter2-secret"),
            "{} shows the password",
            f.path().display()
        );
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2-secret"));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2-secret"));
    assert_no_qemu_left("console login, wrong password");
}

/// `fixture`'s root without the probe, laid out read-only by
/// `make-device-image.sh bios-ro-erofs` with the fixture's kernel: the
/// folder (keep it alive) and the disk.
fn read_only_device(fixture: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, root, _) = probe_less_fixture(fixture, "");
    let fx = fixture_dir(fixture);
    let disk = dir.path().join("device.img");
    let o = Command::new("bash")
        .arg(repo().join("scripts/make-device-image.sh"))
        .arg("bios-ro-erofs")
        .arg(&root)
        .arg(fx.join("vmlinuz"))
        .arg(fx.join("initrd.img"))
        .arg(&disk)
        .output()
        .unwrap();
    assert!(o.status.success(), "make-device-image.sh: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&root).unwrap();
    (dir, disk)
}

/// Run `scenario` (in `dir`) that must pass through a console login: its
/// report, checked as every report is.
fn login_pass(dir: &Path, scenario: &str) -> Value {
    let file = dir.join("login.toml");
    std::fs::write(&file, scenario).unwrap();
    let (out, rdir) = run(&[file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let r = report(rdir.path());
    check_common(&r, rdir.path());
    assert_eq!(r["probe"]["origin"], "login", "{}", r["probe"]);
    r
}

/// A fixture without its probe, injection off, judged through a console
/// login against `expect` (an [expect] table): its report.
fn fixture_through_login(fixture: &str, expect: &str) -> Value {
    let login = "inject = false\nlogin = { user = \"root\", password = \"\" }";
    let (dir, _disk, scenario) = probe_less_fixture(fixture, login);
    let text = std::fs::read_to_string(&scenario).unwrap();
    let image = text.split("[expect]").next().unwrap();
    login_pass(dir.path(), &format!("{image}{expect}"))
}

/// Every image present, with the ID `fixture`'s build recorded.
fn assert_fixture_ids(r: &Value, fixture: &str) {
    let fx: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir(fixture).join("fixture.json")).unwrap()).unwrap();
    for i in r["images"].as_array().unwrap() {
        let want = fx["images"].as_array().unwrap().iter().find(|x| x["ref"] == i["ref"]).map(|x| &x["id"]);
        assert_eq!((i["present"].as_bool(), Some(&i["id"])), (Some(true), want), "the ID the build recorded: {i}");
    }
}

/// The read-only device layout (Avocado-style): an erofs root the probe
/// cannot be written into, the seeded store on a writable data partition.
/// airboot reads the root's name from syslinux.cfg, refuses to inject,
/// says why, and judges the image through a console login. Suite `full`:
/// `cargo test --test own_image -- --ignored`.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_read_only_erofs_root_is_judged_through_a_console_login() {
    let _g = vm_lock();
    let (dir, disk) = read_only_device("debian-preseeded-x86_64");
    let r = login_pass(
        dir.path(),
        &format!(
            "name = \"read-only-root\"\n[image]\npath = {:?}\nlogin = {{ user = \"root\", password = \"\" }}\n[machine]\narch = \"x86_64\"\n\
             [expect]\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
             containers = [{{ name = \"redis\", image = \"fixture/redis:1\", healthy = true }}, {{ name = \"web\", image = \"fixture/busybox:1\" }}]\n\
             timeout = \"120s\"\n",
            disk.display().to_string()
        ),
    );
    assert_eq!(r["boot"]["mode"], "bios");
    let n = notes(&r);
    assert!(n.contains("syslinux.cfg") && n.contains("erofs, read-only"), "why no injection: {n}");
    assert!(n.contains("its systemd 252 cannot load units from a system extension"), "why not as an extension: {n}");
    assert_redis_healthy(&r);
    assert_no_qemu_left("read-only root");
}

/// The read-only layout with Podman: the podman fixture's root as erofs,
/// its seeded containers-storage on the data partition. The console login
/// types the reference reporter told `ENGINE=podman`; its blocks give the
/// images by ID, the containers podman-restart.service started, and
/// redis's health, from Podman's own CLI.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_read_only_erofs_root_with_podman_is_judged_through_a_console_login() {
    let _g = vm_lock();
    let (dir, disk) = read_only_device("debian-podman-x86_64");
    let r = login_pass(
        dir.path(),
        &format!(
            "name = \"read-only-root-podman\"\n[image]\npath = {:?}\nlogin = {{ user = \"root\", password = \"\" }}\n[machine]\narch = \"x86_64\"\n\
             [expect]\nengine = \"podman\"\nimages = [\"localhost/fixture/busybox:1\", \"localhost/fixture/redis:1\"]\n\
             containers = [{{ name = \"redis\", image = \"localhost/fixture/redis:1\", healthy = true }}, {{ name = \"web\", image = \"localhost/fixture/busybox:1\" }}]\n\
             timeout = \"150s\"\n",
            disk.display().to_string()
        ),
    );
    assert_eq!(r["engine"]["name"], "podman", "{}", r["engine"]);
    assert!(notes(&r).contains("erofs, read-only"), "{}", r["notes"]);
    assert_fixture_ids(&r, "debian-podman-x86_64");
    assert_redis_healthy(&r);
    assert_no_qemu_left("read-only root, podman");
}

/// A docker-compose stack judged through a console login: the compose
/// fixture with its probe taken out and injection off. The reference
/// reporter prints compose's labels, and waits for each service (the
/// one-shot's exit included) before its final block.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_compose_stack_is_judged_through_a_console_login_by_its_labels() {
    let _g = vm_lock();
    let r = fixture_through_login(
        "debian-compose-x86_64",
        "[expect]\nengine = \"docker\"\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
         compose = { project = \"fixture\", services = [{ name = \"redis\", healthy = true }, \"web\", { name = \"seed\", oneshot = true }] }\n\
         timeout = \"150s\"\n",
    );
    let ms: Vec<&str> = r["milestones"].as_array().unwrap().iter().filter_map(|m| m["name"].as_str()).collect();
    for m in ["service:redis", "service:web", "service:seed", "stack"] {
        assert!(ms.contains(&m), "{m} missing from {ms:?}");
    }
    let redis = r["containers"].as_array().unwrap().iter().find(|c| c["name"] == "fixture_redis_1").cloned();
    assert_eq!(redis.map(|c| c["health"].clone()), Some(Value::from("healthy")), "{}", r["containers"]);
    assert_no_qemu_left("compose through a login");
}

/// containerd judged through a console login: the containerd fixture
/// (archives imported at first boot, containers started as tasks) with
/// its probe taken out and injection off. The reference reporter asks
/// `ctr` in every namespace: images by their config's digest, the tasks'
/// states.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_containerd_stack_is_judged_through_a_console_login_over_ctr() {
    let _g = vm_lock();
    let r = fixture_through_login(
        "debian-containerd-x86_64",
        "[expect]\nengine = \"containerd\"\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
         containers = [{ name = \"redis\", image = \"fixture/redis:1\" }, { name = \"web\", image = \"fixture/busybox:1\" }]\n\
         timeout = \"150s\"\n",
    );
    assert_eq!(r["engine"]["name"], "containerd", "{}", r["engine"]);
    assert_fixture_ids(&r, "debian-containerd-x86_64");
    let states: Vec<(&str, &str)> = r["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("redis", "running"), ("web", "running")], "{}", r["containers"]);
    assert_no_qemu_left("containerd through a login");
}

/// A store that is read-only at runtime (a bind mount in the image's
/// fstab): dockerd dies at start, and the failure quotes its own words,
/// found by the injected probe in the unit's journal.
#[test]
fn a_store_read_only_at_runtime_fails_quoting_the_engines_own_error() {
    let _g = vm_lock();
    let (dir, disk, scenario) = probe_less_image("");
    let fstab = dir.path().join("fstab");
    let o = Command::new("debugfs").args(["-R", "cat /etc/fstab"]).arg(&disk).output().unwrap();
    let mut text = String::from_utf8_lossy(&o.stdout).to_string();
    text.push_str("/var/lib/docker /var/lib/docker none bind,ro 0 0\n");
    std::fs::write(&fstab, text).unwrap();
    for cmd in ["rm /etc/fstab".to_string(), format!("write {} /etc/fstab", fstab.display())] {
        let o = Command::new("debugfs").args(["-w", "-R", &cmd]).arg(&disk).output().unwrap();
        assert!(o.status.success(), "debugfs {cmd}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let (r, took, rdir) = run_failing(&scenario);
    check_common(&r, rdir.path());
    assert_eq!(r["probe"]["origin"], "injected");
    let f = &r["failures"][0];
    assert_eq!(f["code"], FailureCode::EngineDown.as_str(), "{}", r["failures"]);
    let m = f["message"].as_str().unwrap();
    assert!(m.contains("/var/lib/docker") && m.contains("read-only file system"), "the engine's own error: {m}");
    assert!(took < r["timeouts"]["timeout_s"].as_f64().unwrap() / 2.0, "decided after {took:.0}s");
    // Why, named: the one diagnosis, quoting the engine's words.
    let d = r["diagnoses"].as_array().unwrap();
    let codes: Vec<&str> = d.iter().filter_map(|x| x["code"].as_str()).collect();
    assert_eq!(codes, ["store-read-only"], "{d:?}");
    assert!(d[0]["evidence"][0]["line"].as_str().unwrap().contains("read-only file system"), "{d:?}");
    assert_no_qemu_left("read-only store");
}

/// No systemd: the sysvinit fixture's disk with its probe taken out gets
/// one injected and started by a respawn line added to /etc/inittab (the
/// image's own status.conf kept). Suite `full`: the fixture is built by
/// `airboot images build --for scenarios/ --suite full`.
#[test]
#[ignore = "suite full (run with --ignored)"]
fn a_probe_less_sysvinit_image_gets_the_probe_started_from_inittab() {
    let _g = vm_lock();
    let strip = |disk: &Path| {
        let o =
            Command::new("debugfs").args(["-w", "-R", "rm /usr/local/sbin/airboot-probe"]).arg(disk).output().unwrap();
        assert!(o.status.success());
    };
    let (_dir, _disk, scenario) = edited_fixture("debian-sysvinit-x86_64", &strip, "probe-less-sysvinit", "", "");
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let r = report(rdir.path());
    check_common(&r, rdir.path());
    assert_eq!((r["probe"]["origin"].as_str(), r["probe"]["init"].as_str()), (Some("injected"), Some("sysvinit")));
    let files: Vec<&str> =
        r["probe"]["injected"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(files, ["/usr/local/sbin/airboot-probe", "/etc/inittab"], "the image's status.conf is kept");
    assert_redis_healthy(&r);
    assert_no_qemu_left("sysvinit injection");
}

#[test]
fn a_guest_nothing_reports_from_fails_fast_after_its_login_prompt() {
    let _g = vm_lock();
    let (_dir, _disk, scenario) = probe_less_image("inject = false");
    let started = Instant::now();
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(2), "airboot could not judge: {}", explain(&out));
    let r = report(rdir.path());
    check_common(&r, rdir.path());
    let f = &r["failures"][0];
    assert_eq!(f["code"], FailureCode::NoReporter.as_str(), "{}", r["failures"]);
    let m = f["message"].as_str().unwrap();
    assert!(m.contains("login prompt") && m.contains("inject"), "{m}");
    assert!(
        m.contains("Adding the probe") && m.contains("status reporter") && m.contains("log in on the console"),
        "{m}"
    );
    assert_eq!(r["probe"]["origin"], "none");
    let log = std::fs::read_to_string(rdir.path().join("console.log")).unwrap();
    assert!(log.contains("login:"), "the guest never showed a login prompt");
    // 30 s after the prompt, not the scenario's timeout (x10 under TCG).
    let timeout = r["timeouts"]["timeout_s"].as_f64().unwrap();
    assert!(took < timeout / 2.0, "ended after {took:.0}s; timeout {timeout:.0}s");
    assert_no_qemu_left("no reporter");
}

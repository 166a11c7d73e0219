//! What the VM tests share (tests/boot.rs, own_image.rs, hostile.rs):
//! running the real `airboot` binary, one VM at a time, reading its
//! reports, the checks every booted run must pass, and fixtures' disks
//! edited into other images.
//!
//! These need the fixtures (`airboot images build --for scenarios/ --suite ci`, done by
//! scripts/test.sh) and QEMU. VM tests run one at a time: this machine
//! has two cores and a TCG guest wants one of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

static VM: Mutex<()> = Mutex::new(());

pub fn vm_lock() -> MutexGuard<'static, ()> {
    VM.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn airboot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_airboot"));
    c.current_dir(repo());
    c
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// QEMU processes running right now (all of them: VM tests are serialised,
/// so any one found after a test is a leak of that test).
pub fn qemu_pids() -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let first = cmd.split(|b| *b == 0).next().unwrap_or_default();
        if String::from_utf8_lossy(first).contains("qemu-system") {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if !stat.contains(") Z") {
                out.push(pid);
            }
        }
    }
    out
}

pub fn assert_no_qemu_left(context: &str) {
    // The harness waits for its children; allow the kernel a moment to reap.
    let until = Instant::now() + Duration::from_secs(5);
    while !qemu_pids().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(qemu_pids().is_empty(), "{context}: QEMU processes left behind: {:?}", qemu_pids());
}

/// What a probe run must show: the transport, each image run, the air gap.
pub fn check_probe(r: &Value, transport: &[&str]) {
    let t = r["probe"]["transport"].as_str().unwrap_or("");
    assert!(transport.contains(&t), "transport {t:?}, expected one of {transport:?}");
    assert!(r["probe"]["transport_reason"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r["probe"]["connected_s"].as_f64().is_some(), "the probe never answered");
    assert_eq!(r["probe"]["guest_machine"], "x86_64");
    assert!(r["clock_skew_ms"].as_f64().is_some_and(|s| s.abs() < 5000.0), "skew {}", r["clock_skew_ms"]);
    let runs = r["image_runs"].as_array().unwrap();
    assert_eq!(runs.len(), r["images"].as_array().unwrap().iter().filter(|i| i["expected"] == true).count());
    for run in runs {
        assert_eq!(run["ran"], true, "{run}");
    }
    let a = &r["airgap"];
    assert_eq!(a["checked"], true);
    assert_eq!(a["nics"], 0);
    assert_eq!(a["default_route"], false);
    assert!(a["interfaces"].as_array().unwrap().iter().any(|i| i["name"] == "lo"));
    let ms = r["milestones"].as_array().unwrap();
    let stack = ms.iter().find(|m| m["name"] == "stack").unwrap();
    assert_eq!(stack["source"], "guest", "time to stack comes from the guest's own timestamps");
    assert!(r["time_to_stack_s"].as_f64().unwrap() <= r["stack_seen_s"].as_f64().unwrap());
    assert!(ms.iter().any(|m| m["name"] == "images-verified"));
}

pub fn run(args: &[&str]) -> (Output, tempfile::TempDir) {
    let mut dir = tempfile::tempdir().unwrap();
    // AIRBOOT_TEST_KEEP=1 keeps each run's reports (for a look after a failure).
    if std::env::var_os("AIRBOOT_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("reports kept in {}", dir.path().display());
    }
    let out = airboot().arg("run").args(args).arg("--report-dir").arg(dir.path()).arg("--no-build").output().unwrap();
    (out, dir)
}

pub fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json"))
        .unwrap_or_else(|e| panic!("{}/report.json: {e}", dir.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn explain(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The folder of the built preseeded fixture (disk, kernel, initrd, fixture.json).
pub fn preseeded_fixture() -> PathBuf {
    fixture_dir("debian-preseeded-x86_64")
}

pub fn fixture_dir(name: &str) -> PathBuf {
    let out = airboot().args(["images", "path", name]).output().unwrap();
    assert!(out.status.success(), "fixture {name} must be built: {}", explain(&out));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A raw copy of a fixture's disk at `to`, to edit with debugfs.
pub fn raw_copy(fixture: &Path, to: &Path) -> PathBuf {
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(fixture.join("disk.qcow2"))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "qemu-img convert of {}", fixture.display());
    to.to_path_buf()
}

/// Run a scenario file that must fail (exit 1): its report, how long the
/// run took in seconds, and the report folder.
pub fn run_failing(scenario: &Path) -> (Value, f64, tempfile::TempDir) {
    let started = Instant::now();
    let (out, rdir) = run(&[scenario.to_str().unwrap()]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    (report(rdir.path()), took, rdir)
}

/// What every booted run must show, whatever its verdict.
/// A cause that settles the run ended it within seconds of its evidence
/// (wall time).
pub fn assert_fail_fast(r: &Value) {
    let diags: Vec<airboot_model::Diagnosis> = serde_json::from_value(r["diagnoses"].clone()).unwrap();
    for d in diags.iter().filter(|d| d.code.settles_run()) {
        eprintln!("{}: the run ended {:?}s after its first evidence", d.code, d.ended_after_s);
    }
    let slow: Vec<String> = diags.iter().filter_map(airboot_core::diagnose::too_slow).collect();
    assert!(slow.is_empty(), "{slow:?}");
}

pub fn check_common(r: &Value, dir: &Path) {
    assert_eq!(r["schema"], "airboot.report/v1");
    assert_fail_fast(r);
    assert!(r["accel"] == "tcg" || r["accel"] == "kvm", "{}", r["accel"]);
    assert!(r["accel_reason"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(r["arch"], "x86_64");
    assert_eq!(r["network"]["nics"], 0);
    assert_eq!(r["network"]["qemu_network_args"].as_array().unwrap().len(), 0);
    assert_eq!(r["network"]["pci_checked"], true);
    let argv: Vec<&str> = r["qemu"]["argv"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for flag in ["-nodefaults", "-S", "-no-reboot"] {
        assert!(argv.contains(&flag), "{flag} missing from {argv:?}");
    }
    let before = r["image"]["sha256_before"].as_str().unwrap();
    assert_eq!(before.len(), 64);
    assert_eq!(r["image"]["sha256_after"], before, "the input image changed");
    assert_eq!(r["image"]["unchanged"], true);
    assert!(r["qemu"]["leftover_processes"].as_array().unwrap().is_empty());
    let log = std::fs::read_to_string(dir.join("console.log")).unwrap();
    assert!(log.contains("Linux version"), "console.log lacks the kernel banner");
    let first = r["milestones"][0]["name"].as_str().unwrap();
    // UEFI: OVMF's boot manager first; BIOS: the loader's banner (SeaBIOS
    // prints nothing on the serial port); direct: the kernel.
    let expected = match r["boot"]["mode"].as_str() {
        Some("uefi") => "firmware",
        Some("bios") => "loader",
        _ => "kernel",
    };
    assert_eq!(first, expected, "{}", r["milestones"]);
}

/// The fixture stack's health-checked container came up healthy.
pub fn assert_redis_healthy(r: &Value) {
    let containers = r["containers"].as_array().unwrap();
    assert!(containers.iter().any(|c| c["name"] == "redis" && c["health"] == "healthy"), "{containers:?}");
}

pub fn notes(r: &Value) -> String {
    r["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// A fixture's disk as a raw copy changed by `edit`, and a scenario
/// `name` that boots it with the fixture's kernel (`image_extra` added
/// under [image]), expects its stack, then has `tail` (e.g. an [outcome]).
/// Returns the folder (keep it alive), the disk and the scenario.
pub fn edited_fixture(
    fixture: &str,
    edit: &dyn Fn(&Path),
    name: &str,
    image_extra: &str,
    tail: &str,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let fixture = fixture_dir(fixture);
    let dir = tempfile::tempdir().unwrap();
    let disk = raw_copy(&fixture, &dir.path().join("device.raw"));
    edit(&disk);
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("fixture.json")).unwrap()).unwrap();
    let scenario = dir.path().join("device.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"{name}\"\n[image]\npath = {:?}\nkernel = {:?}\ninitrd = {:?}\nappend = {}\n{image_extra}\n\
             [expect]\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\n\
             containers = [{{ name = \"redis\", image = \"fixture/redis:1\", healthy = true }}, {{ name = \"web\", image = \"fixture/busybox:1\" }}]\n\
             timeout = \"120s\"\n{tail}",
            disk.display().to_string(),
            fixture.join("vmlinuz").display().to_string(),
            fixture.join("initrd.img").display().to_string(),
            fx["append"],
        ),
    )
    .unwrap();
    (dir, disk, scenario)
}

/// The preseeded fixture's disk as a user's image: raw, with airboot's
/// probe, unit and enablement link taken out. Returns the folder, the disk
/// and a scenario text (add `extra` under [image]).
pub fn probe_less_image(extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    probe_less_fixture("debian-preseeded-x86_64", extra)
}

/// As [`probe_less_image`], from any fixture.
pub fn probe_less_fixture(fixture: &str, extra: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let strip = |disk: &Path| {
        for path in [
            "/usr/local/sbin/airboot-probe",
            "/etc/systemd/system/airboot-probe.service",
            "/etc/systemd/system/multi-user.target.wants/airboot-probe.service",
        ] {
            let o = Command::new("debugfs").args(["-w", "-R"]).arg(format!("rm {path}")).arg(disk).output().unwrap();
            assert!(o.status.success(), "debugfs rm {path}: {}", String::from_utf8_lossy(&o.stderr));
            let o = Command::new("debugfs").args(["-R"]).arg(format!("stat {path}")).arg(disk).output().unwrap();
            assert!(String::from_utf8_lossy(&o.stderr).contains("File not found"), "{path} is still in the image");
        }
    };
    edited_fixture(fixture, &strip, "probe-less", extra, "")
}

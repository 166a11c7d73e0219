//! Real boots of the real fixtures, through the real `airboot` binary:
//! QEMU (TCG unless KVM demonstrably works), the Debian guests with
//! dockerd, containerd and runc, the probe. tests/scenarios.rs runs every
//! scenario file once (automatic transport, declared outcomes); this file
//! covers what no scenario file shows: forced transports, the full report
//! of a run, an engine failing on a damaged store, bad input, repeats.
//! Disks that carry nothing of airboot's are in own_image.rs; signals and
//! hostile guests in hostile.rs. Helpers: common/mod.rs.

mod common;

use std::process::Command;
use std::time::Instant;

use airboot_model::FailureCode;
use serde_json::Value;

use common::*;

#[test]
fn preseeded_fixture_passes_over_virtio_serial_with_the_full_report() {
    let _g = vm_lock();
    let (out, dir) = run(&["scenarios/preseeded-x86_64.toml", "--transport", "virtio-serial"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let r = report(dir.path());
    check_common(&r, dir.path());
    assert_eq!(r["verdict"], "pass");
    let tts = r["time_to_stack_s"].as_f64().expect("time_to_stack_s is a number");
    let ms: Vec<(&str, f64)> = r["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["t_s"].as_f64().unwrap()))
        .collect();
    let at = |n: &str| ms.iter().find(|m| m.0 == n).map(|m| m.1).unwrap_or_else(|| panic!("no milestone {n}: {ms:?}"));
    assert_eq!(at("stack"), tts);
    assert!(at("kernel") < at("init") && at("init") < at("engine") && at("engine") <= tts, "{ms:?}");
    assert!(at("healthy:redis") <= tts);
    let images: Vec<&str> = r["images"].as_array().unwrap().iter().map(|i| i["ref"].as_str().unwrap()).collect();
    assert_eq!(images, ["fixture/busybox:1", "fixture/redis:1"], "exactly the expected images");
    for i in r["images"].as_array().unwrap() {
        assert_eq!(i["present"], true);
        assert_eq!(i["id"], i["expected_id"], "IDs recorded by the fixture build");
    }
    let redis = r["containers"].as_array().unwrap().iter().find(|c| c["name"] == "redis").unwrap();
    assert_eq!((redis["state"].as_str(), redis["health"].as_str()), (Some("running"), Some("healthy")));
    assert!(r["status"]["blocks"].as_u64().unwrap() >= 1);
    // The automatic transport is covered by tests/scenarios.rs; here it is forced.
    check_probe(&r, &["virtio-serial"]);
    assert_eq!(r["probe"]["transport_reason"], "forced by --transport");
    assert!(r["airgap"]["egress_attempts"].as_array().unwrap().is_empty(), "{}", r["airgap"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("preseeded-x86_64 : PASS"));
    assert_no_qemu_left("virtio-serial");
}

#[test]
fn missing_image_fails_at_once_naming_the_image() {
    let _g = vm_lock();
    let started = Instant::now();
    // Over the console transport: this also exercises the console status
    // protocol that images without the probe rely on.
    let (out, dir) = run(&["scenarios/missing-image-x86_64.toml", "--transport", "console"]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let r = report(dir.path());
    check_common(&r, dir.path());
    assert_eq!(r["verdict"], "fail");
    assert_eq!(r["failures"][0]["code"], FailureCode::ImageMissing.as_str(), "{}", r["failures"]);
    assert!(r["failures"][0]["message"].as_str().unwrap().contains("fixture/nginx:1"));
    assert!(r["time_to_stack_s"].is_null());
    let timeout = r["timeouts"]["timeout_s"].as_f64().unwrap();
    assert!(took < timeout, "decided after {took:.0}s, not before the {timeout:.0}s timeout");
    assert!(String::from_utf8_lossy(&out.stdout).contains("fixture/nginx:1"));
    assert_eq!(r["probe"]["transport"], "console");
    assert!(r["status"]["blocks"].as_u64().unwrap() >= 1, "console status blocks were read");
    assert_no_qemu_left("missing-image");
}

/// A disk with no EFI loader (the direct-boot fixture's bare ext4) under
/// OVMF: the firmware drops to its shell, whose `Shell> ` prompt ends no
/// line. The run must end at that prompt as "no bootable loader found",
/// long before the timeout.
#[test]
fn a_disk_without_an_efi_loader_ends_at_the_uefi_shell() {
    let _g = vm_lock();
    let disk = preseeded_fixture().join("disk.qcow2");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("no-loader.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"no-loader\"\n[image]\npath = {:?}\nboot = \"uefi\"\n[expect]\nimages = [\"fixture/busybox:1\"]\ntimeout = \"30s\"\n",
            disk.display().to_string()
        ),
    )
    .unwrap();
    let (r, took, _rdir) = run_failing(&scenario);
    assert_eq!(r["boot"]["mode"], "uefi");
    assert!(r["boot"]["firmware"].as_str().is_some_and(|f| f.contains("OVMF")), "{}", r["boot"]);
    assert_eq!(r["arch"], "x86_64", "detected from the disk: {}", r["arch_detection"]);
    let f = &r["failures"][0];
    assert_eq!(f["code"], FailureCode::UefiShell.as_str(), "{}", r["failures"]);
    assert!(f["message"].as_str().unwrap().contains("no bootable loader found"), "{f}");
    assert!(f["evidence"].as_str().unwrap().contains("Shell>"), "{f}");
    let timeout = r["timeouts"]["timeout_s"].as_f64().unwrap();
    assert!(took < timeout / 2.0, "decided after {took:.0}s, not at the prompt (timeout {timeout:.0}s)");
    assert_eq!(r["image"]["unchanged"], true);
    assert_no_qemu_left("no-loader");
}

/// A store whose metadata lost its data in a power cut, as `airboot cut`
/// finds them: a layer's overlay2 `lower` file emptied. dockerd starts,
/// answers /version, and fails every inspect of that image with HTTP 500
/// ("readlink /var/lib/docker/overlay2: invalid argument"). The run must
/// say the engine runs and its API fails, once the boot is over, not wait
/// for the timeout calling it "still starting".
#[test]
fn an_engine_failing_on_a_damaged_store_is_an_engine_error_before_the_timeout() {
    let _g = vm_lock();
    let fixture = preseeded_fixture();
    let dir = tempfile::tempdir().unwrap();
    let disk = raw_copy(&fixture, &dir.path().join("root.raw"));
    let debugfs = |cmd: &str, write: bool| {
        let mut c = Command::new("debugfs");
        if write {
            c.arg("-w");
        }
        let o = c.arg("-R").arg(cmd).arg(&disk).output().unwrap();
        assert!(o.status.success(), "debugfs {cmd}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    // Every layer with parents (its `lower` names them) emptied, as a cut
    // leaves them. Only an image's top layer's `lower` is read (on inspect
    // and on mount each layer lists all its ancestors), so emptying just one
    // layer would break the store or not depending on which random cache-id
    // the listing gives first: a middle layer of redis is harmless.
    let layers: Vec<String> = debugfs("ls /var/lib/docker/overlay2", false)
        .split_whitespace()
        .filter(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|w| format!("/var/lib/docker/overlay2/{w}"))
        .filter(|d| debugfs(&format!("cat {d}/lower"), false).contains("l/"))
        .collect();
    assert!(layers.len() >= 2, "the preseeded store has layers with parents (busybox's and redis's top): {layers:?}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    for layer in &layers {
        debugfs(&format!("rm {layer}/lower"), true);
        debugfs(&format!("write {} {layer}/lower", empty.display()), true);
    }
    let scenario = dir.path().join("damaged.toml");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("fixture.json")).unwrap()).unwrap();
    std::fs::write(
        &scenario,
        format!(
            "name = \"damaged-store\"\n[image]\npath = {:?}\nkernel = {:?}\ninitrd = {:?}\nappend = {}\nprobe = true\n\
             [expect]\nimages = [\"fixture/busybox:1\", \"fixture/redis:1\"]\ntimeout = \"45s\"\n",
            disk.display().to_string(),
            fixture.join("vmlinuz").display().to_string(),
            fixture.join("initrd.img").display().to_string(),
            fx["append"],
        ),
    )
    .unwrap();
    let (r, took, rdir) = run_failing(&scenario);
    check_common(&r, rdir.path());
    let f = &r["failures"][0];
    assert_eq!(f["code"], FailureCode::EngineError.as_str(), "{}", r["failures"]);
    let m = f["message"].as_str().unwrap();
    assert!(m.contains("running but its API fails") && m.contains("HTTP 500") && m.contains("readlink"), "{m}");
    assert_eq!(r["engine"]["state"], "failing", "{}", r["engine"]);
    let timeout = r["timeouts"]["timeout_s"].as_f64().unwrap();
    assert!(took < timeout, "decided after {took:.0}s, not before the {timeout:.0}s timeout");
    assert_no_qemu_left("damaged-store");
}

#[test]
fn misspelt_key_exits_2_naming_line_and_key_before_booting() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("typo.toml");
    std::fs::write(
        &bad,
        "name = \"typo\"\n[image]\nfixture = \"debian-preseeded-x86_64\"\n[expect]\nimagez = [\"a:1\"]\n",
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let out = airboot().args(["run"]).arg(&bad).arg("--report-dir").arg(&reports).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.toml:5:1"), "{err}");
    assert!(err.contains("key `expect.imagez`"), "{err}");
    assert!(!reports.exists(), "nothing ran, so no report folder");
    let out = airboot().args(["check"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = airboot().args(["check", "scenarios"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
}

/// Seconds since midnight of an RFC 3339 time `…THH:MM:SSZ`.
fn seconds_of_day(t: &str) -> f64 {
    let hms: Vec<f64> = t[11..19].split(':').map(|x| x.parse().unwrap()).collect();
    hms[0] * 3600.0 + hms[1] * 60.0 + hms[2]
}

/// `--repeat` with `--jobs`: a guest whose root filesystem cannot be
/// mounted fails fast (the initramfs says so), as its declared outcome says;
/// four runs, two guests at once, give "0 of 4 failed" with a confidence
/// interval, every run has its own report in order, and the boots really
/// overlapped, each with its own QEMU overlay and sockets.
#[test]
fn repeat_reports_the_failure_rate_with_a_confidence_interval() {
    let _g = vm_lock();
    let f = preseeded_fixture();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad-root.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"bad-root\"\n[image]\npath = \"{d}/disk.qcow2\"\nkernel = \"{d}/vmlinuz\"\ninitrd = \"{d}/initrd.img\"\nappend = \"console=ttyS0 root=/dev/vda rootfstype=xfs\"\n[machine]\narch = \"x86_64\"\ncpus = 1\n[expect]\ntimeout = \"12s\"\n[[milestone]]\nname = \"never\"\nconsole = \"login:\"\n[outcome]\nfailures = [\"initramfs-shell\"]\n",
            d = f.display()
        ),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let out = airboot()
        .args(["run", "--repeat", "4", "--jobs", "2", "--check-outcomes", "--report-dir"])
        .arg(&reports)
        .arg(&scenario)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(stdout.contains("0 of 4 runs failed (0.0%, 95% CI 0.0–49.0%)"), "{stdout}");
    assert!(stderr.contains("[bad-root#3] "), "progress lines say whose they are: {stderr}");
    let mut spans = Vec::new();
    let mut overlays = std::collections::BTreeSet::new();
    for rep in 1..=4 {
        let r = report(&reports.join(format!("bad-root/run-{rep:03}")));
        assert_eq!(r["failures"][0]["code"], FailureCode::InitramfsShell.as_str(), "{}", r["failures"]);
        assert_eq!(r["machine"]["jobs"], 2, "each report says it shared the host");
        spans.push((seconds_of_day(r["started_at"].as_str().unwrap()), r["wall_s"].as_f64().unwrap()));
        let argv: Vec<&str> = r["qemu"]["argv"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
        overlays.insert(argv.iter().find(|a| a.contains("overlay.qcow2")).map(|a| a.to_string()).unwrap());
    }
    assert_eq!(overlays.len(), 4, "an overlay of its own per boot: {overlays:?}");
    // Runs 1 and 2 were on at once: the second began before the first ended
    // (by more than the second that `started_at` rounds to).
    assert!(spans[1].0 < spans[0].0 + spans[0].1 - 2.0, "the boots did not overlap: {spans:?}");
    let run: Value = serde_json::from_str(&std::fs::read_to_string(reports.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["jobs"], 2);
    let dirs: Vec<&str> = run["scenarios"].as_array().unwrap().iter().map(|e| e["dir"].as_str().unwrap()).collect();
    assert_eq!(dirs, ["bad-root/run-001", "bad-root/run-002", "bad-root/run-003", "bad-root/run-004"]);
    assert!(run["scenarios"].as_array().unwrap().iter().all(|e| e["as_declared"] == true));
    for f in ["junit.xml", "index.html", "summary.md"] {
        assert!(reports.join(f).exists(), "{f}");
    }
    assert!(std::fs::read_to_string(reports.join("summary.md")).unwrap().contains("0 of 4 runs failed"));
    assert_no_qemu_left("repeat");
}

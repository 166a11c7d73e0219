//! What is done to the harness, through the real `airboot` binary: Ctrl-C
//! and SIGKILL while a guest boots, and a guest whose "probe" speaks only
//! garbage. Helpers: common/mod.rs.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airboot_model::FailureCode;

use common::*;

/// Start a run and wait until the guest is booting (the console log has
/// the kernel banner). Its temporary files go under `dir/tmp`.
fn start_and_wait_for_kernel(dir: &Path) -> Child {
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let child = airboot()
        .args(["run", "scenarios/preseeded-x86_64.toml", "--no-build", "--report-dir"])
        .arg(dir)
        .env("TMPDIR", dir.join("tmp"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let log = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
        if log.contains("Linux version") {
            break;
        }
        assert!(Instant::now() < until, "the guest did not start within 120s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!qemu_pids().is_empty(), "QEMU should be running now");
    child
}

#[test]
fn ctrl_c_stops_qemu_and_still_writes_the_report() {
    let _g = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let child = start_and_wait_for_kernel(dir.path());
    let pid = child.id() as i32;
    let sent = Instant::now();
    // SAFETY (test): signal the harness like a terminal's Ctrl-C would.
    let rc = Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(rc.success());
    let out = child.wait_with_output().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(30), "took {:?} to stop", sent.elapsed());
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let r = report(dir.path());
    assert_eq!(r["verdict"], "error");
    assert_eq!(r["failures"][0]["code"], FailureCode::Interrupted.as_str(), "{}", r["failures"]);
    assert_eq!(r["image"]["unchanged"], true);
    assert_no_qemu_left("after Ctrl-C");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("tmp")).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "temporary files left after Ctrl-C: {left:?}");
}

#[test]
fn killing_the_harness_outright_takes_qemu_with_it() {
    let _g = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut child = start_and_wait_for_kernel(dir.path());
    child.kill().unwrap(); // SIGKILL: no handler runs, PDEATHSIG must do it
    let _ = child.wait();
    assert_no_qemu_left("after SIGKILL of airboot");
    // Its temporary folder cannot be removed by a process killed outright:
    // it was under this test's folder, which goes with the test.
}

/// A "probe" that speaks only garbage on the probe's port (virtio-serial):
/// a 20 MiB line, then malformed lines and answers to no request, for ever.
const HOSTILE_PROBE: &str = r#"#!/bin/sh
p=/dev/virtio-ports/org.airboot.probe
while [ ! -e "$p" ]; do sleep 1; done
exec 3>"$p"
head -c 20971520 /dev/zero | tr '\000' x >&3
echo >&3
while :; do
  echo 'not json at all' >&3
  echo '{"id":987654,"result":"error","message":"unsolicited"}' >&3
  sleep 0.5
done
"#;

/// Run `airboot run ARGS` to its end, sampling its peak resident memory
/// (VmHWM) meanwhile: its report folder, exit code, output and peak KiB.
fn run_sampling_rss(args: &[&str]) -> (tempfile::TempDir, Option<i32>, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("airboot.log");
    let mut child = airboot()
        .arg("run")
        .args(args)
        .arg("--report-dir")
        .arg(dir.path().join("r"))
        .arg("--no-build")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        let hwm =
            text.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().split(' ').next()?.parse().ok());
        peak = peak.max(hwm.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log).unwrap();
    (dir, code, out, peak)
}

/// The hostile guest of issue 21: its "probe" sends a 20 MiB line, then
/// only lines that are no answer. airboot's memory stays bounded, the
/// garbage is counted in `probe.protocol_errors`, and the run ends as
/// `probe-protocol` (an error) once the garbage has kept coming for 30 s,
/// long before its timeout, not as "the probe never answered".
#[test]
fn a_probe_speaking_only_garbage_is_probe_protocol_with_bounded_memory() {
    let _g = vm_lock();
    let replace = |disk: &Path| {
        let script = disk.with_file_name("hostile-probe");
        std::fs::write(&script, HOSTILE_PROBE).unwrap();
        let target = "/usr/local/sbin/airboot-probe";
        for cmd in [
            format!("rm {target}"),
            format!("write {} {target}", script.display()),
            format!("sif {target} mode 0100755"),
        ] {
            let o = Command::new("debugfs").args(["-w", "-R", &cmd]).arg(disk).output().unwrap();
            assert!(o.status.success(), "debugfs {cmd}: {}", String::from_utf8_lossy(&o.stderr));
        }
    };
    let (_keep, disk, scenario) = edited_fixture("debian-preseeded-x86_64", &replace, "hostile-probe", "", "");
    let started = Instant::now();
    let (dir, code, out, peak_kib) = run_sampling_rss(&[scenario.to_str().unwrap(), "--transport", "virtio-serial"]);
    let took = started.elapsed().as_secs_f64();
    eprintln!("hostile probe: ended after {took:.0}s, airboot's peak RSS {} KiB", peak_kib);
    assert_eq!(code, Some(2), "an error: the harness could not judge the guest\n{out}");
    let r = report(&dir.path().join("r"));
    let f = &r["failures"][0];
    assert_eq!(f["code"], FailureCode::ProbeProtocol.as_str(), "{}", r["failures"]);
    let m = f["message"].as_str().unwrap();
    assert!(m.contains("no probe answer") && m.contains("xxxx"), "names what came, with a sample: {m}");
    let e = &r["probe"]["protocol_errors"];
    assert!(e["too_long"].as_u64().unwrap() >= 1, "the 20 MiB line: {e}");
    assert!(e["malformed"].as_u64().unwrap() >= 3, "{e}");
    assert!(e["unsolicited"].as_u64().unwrap() >= 1, "{e}");
    let timeout = r["timeouts"]["timeout_s"].as_f64().unwrap();
    assert!(took < timeout, "decided after {took:.0}s, not at the {timeout:.0}s timeout");
    assert!(
        peak_kib > 0 && peak_kib <= 30 * 1024,
        "airboot's resident memory peaked at {peak_kib} KiB (goal ≤ 30 MiB)"
    );
    assert_eq!(r["image"]["unchanged"], true);
    let _ = disk;
    assert_no_qemu_left("hostile probe");
}

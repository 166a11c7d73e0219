//! `airboot cut` end to end on the real load-at-boot fixture: one recorded
//! boot (blklogwrites) up to the end of the first image's load, one cut
//! in the middle of that load (just before a flush with unflushed writes
//! before it), judged as a power cut (lose-unflushed) and as a crash (kill):
//! crash states built over the input image, checked offline (e2fsck, the
//! Docker store), powered on again. The full sweeps (8 cut points, plain
//! and crash-safe loader) run with `airboot cut scenarios/cut-*.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

const SCENARIO: &str = r#"
name = "cut-ci"
[image]
fixture = "debian-load-at-boot-x86_64"
[machine]
arch = "x86_64"
memory = "1G"
[expect]
engine = "docker"
images = ["fixture/busybox:1", "fixture/redis:1"]
containers = [
  { name = "redis", image = "fixture/redis:1", healthy = true },
  { name = "web", image = "fixture/busybox:1" },
]
# A passing first boot is ready in about 200 s under TCG; a damaged one
# would otherwise hold the test for the scenario's usual 550 s.
time_to_stack = "30s"
timeout = "30s"
[power_cut]
at = "airboot-load: loading"
until = "airboot-load: tagged"
points = 1
modes = ["lose-unflushed", "kill"]
seed = 3
"#;

#[test]
fn a_cut_during_the_first_boot_load_is_recorded_cut_and_judged() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("cut-ci.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let reports = dir.path().join("reports");
    let out = Command::new(env!("CARGO_BIN_EXE_airboot")).current_dir(repo()).args(["cut", "--no-such-flag"]).output();
    // Unknown flags are refused with a usage error, not a panic.
    assert_eq!(out.unwrap().status.code(), Some(2));

    let out = Command::new(env!("CARGO_BIN_EXE_airboot"))
        .current_dir(repo())
        .arg("cut")
        .arg(&scenario)
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(matches!(code, Some(0) | Some(1)), "exit {code:?}\n{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(reports.join("report.json")).unwrap()).unwrap();
    let cuts = r["power_cuts"].as_array().unwrap_or_else(|| panic!("no power_cuts\n{stdout}\n{stderr}"));
    assert_eq!(cuts.len(), 2, "{stdout}");
    let (lose, kill) = (&cuts[0], &cuts[1]);
    assert_eq!((lose["mode"].as_str(), lose["power_cut"].as_bool()), (Some("lose-unflushed"), Some(true)));
    assert_eq!((kill["mode"].as_str(), kill["power_cut"].as_bool()), (Some("kill"), Some(false)));
    // Both at the same place in the write stream, in the middle of the load.
    assert_eq!(lose["position"], kill["position"]);
    assert!(lose["position"]["writes"].as_u64().unwrap() > 0);
    assert!(lose["trigger"].as_str().unwrap().contains("sweep point 1 of 1"), "{lose}");
    assert!(lose["trigger"].as_str().unwrap().contains("airboot-load: loading"), "{lose}");
    assert_eq!(lose["seed"].as_u64(), Some(3));
    // A kill keeps every completed write; a power cut here loses some.
    assert_eq!(kill["lost_writes"].as_u64(), Some(0));
    assert!(lose["lost_writes"].as_u64().unwrap() > 0, "a sweep point with nothing to lose: {lose}");
    assert!(lose["lost_bytes"].as_u64().unwrap() >= 512);
    for c in cuts {
        let outcome = c["outcome"].as_str().unwrap_or_else(|| panic!("not judged: {c}"));
        assert!(
            ["INTACT-NEW", "INTACT-OLD", "SELF-HEALED", "CORRUPT-DETECTED", "CORRUPT-SILENT", "BRICKED"]
                .contains(&outcome)
        );
        assert!(c["filesystem"]["summary"].as_str().is_some(), "{c}");
        assert!(c["crash_store"]["verdict"].as_str().is_some(), "the offline store check did not run: {c}");
        assert!(c["evidence"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().starts_with("next boot:")));
        let bundle = PathBuf::from(c["bundle"].as_str().unwrap());
        assert!(bundle.join("crash.qcow2").is_file());
        let info: Value = serde_json::from_str(&std::fs::read_to_string(bundle.join("cut.json")).unwrap()).unwrap();
        assert_eq!(info["outcome"].as_str(), Some(outcome));
        assert!(bundle.join("reboot/report.json").is_file());
    }
    // Kill results are printed apart from power cuts.
    let pc = stdout.find("== power cuts").expect("a power-cut section");
    let crash = stdout.find("== crashes").expect("a crash section");
    assert!(pc < crash);
    assert_eq!(r["image"]["unchanged"].as_bool(), Some(true), "the input image changed");
}

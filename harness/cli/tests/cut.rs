//! `airboot cut` end to end on the real load-at-boot fixture: one recorded
//! boot (blklogwrites) up to the end of the first image's load, one cut
//! in the middle of that load (just before a flush with unflushed writes
//! before it), judged as a power cut (lose-unflushed) and as a crash (kill):
//! crash states built over the input image, checked offline (e2fsck, the
//! Docker store), powered on again. A second test is the loss model's
//! positive control: a guest workload that writes without a flush and
//! then says so must lose that data in a power cut and keep it in a
//! crash. A third cuts by the probe's load event and cuts again in the
//! boot that powers that crash state on. The full sweeps (8 cut points, plain
//! and crash-safe loader) run with `airboot cut scenarios/cut-*.toml`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use airboot_core::disk::ext4::Ext4;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// One VM at a time (the tests of a file run in parallel threads).
static VM: Mutex<()> = Mutex::new(());

fn vm_lock() -> MutexGuard<'static, ()> {
    VM.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `airboot cut` left: its exit status, its output, its report.
struct CutRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

/// `airboot cut` on a scenario text written into `dir`, with `args`, its
/// report in `dir/reports`.
fn run_cut(dir: &Path, scenario_text: &str, args: &[&str]) -> CutRun {
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, scenario_text).unwrap();
    let reports = dir.join("reports");
    let out = Command::new(env!("CARGO_BIN_EXE_airboot"))
        .current_dir(repo())
        .arg("cut")
        .arg(&scenario)
        .args(args)
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code();
    let report = std::fs::read_to_string(reports.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no readable report.json (exit {code:?})\n{stdout}\n{stderr}"));
    CutRun { code, stdout, stderr, report }
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
    let _g = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_airboot")).current_dir(repo()).args(["cut", "--no-such-flag"]).output();
    // Unknown flags are refused with a usage error, not a panic.
    assert_eq!(out.unwrap().status.code(), Some(2));

    let CutRun { code, stdout, stderr, report: r } = run_cut(dir.path(), SCENARIO, &[]);
    assert!(matches!(code, Some(0) | Some(1)), "exit {code:?}\n{stdout}\n{stderr}");
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
        assert_eq!((&info["lost_writes"], &info["position"]), (&c["lost_writes"], &c["position"]));
        assert!(bundle.join("reboot/report.json").is_file());
    }
    // Kill results are printed apart from power cuts.
    let pc = stdout.find("== power cuts").expect("a power-cut section");
    let crash = stdout.find("== crashes").expect("a crash section");
    assert!(pc < crash);
    assert_eq!(r["image"]["unchanged"].as_bool(), Some(true), "the input image changed");

    // The power cut's bundle boots again to the same verdict, from the
    // fixture build it was cut from, and is left as it was, after it
    // moved to another folder and its scenario file went away (the
    // bundle's copy of the scenario stands in).
    let cut_there = PathBuf::from(lose["bundle"].as_str().unwrap());
    let bundle = dir.path().join("moved").join(cut_there.file_name().unwrap());
    std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
    std::fs::rename(&cut_there, &bundle).unwrap();
    std::fs::remove_file(dir.path().join("scenario.toml")).unwrap();
    let state_sha = || airboot_qemu::disk::sha256_file(&bundle.join("crash.qcow2")).unwrap();
    let state = state_sha();
    let rdir = dir.path().join("repro");
    let out = Command::new(env!("CARGO_BIN_EXE_airboot"))
        .current_dir(repo())
        .arg("repro")
        .arg(&bundle)
        .arg("--report-dir")
        .arg(&rdir)
        .output()
        .unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let outcome = lose["outcome"].as_str().unwrap();
    let survived = ["INTACT-NEW", "INTACT-OLD", "SELF-HEALED"].contains(&outcome);
    assert_eq!(out.status.code(), Some(if survived { 0 } else { 1 }), "{said}");
    let rr: Value = serde_json::from_str(&std::fs::read_to_string(rdir.join("report.json")).unwrap()).unwrap();
    assert_eq!(rr["power_cuts"][0]["outcome"].as_str(), Some(outcome), "{said}");
    assert!(rr["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("same verdict")), "{said}");
    let info: Value = serde_json::from_str(&std::fs::read_to_string(bundle.join("cut.json")).unwrap()).unwrap();
    let build = Path::new(info["input"].as_str().unwrap()).parent().unwrap();
    let reboot: Value =
        serde_json::from_str(&std::fs::read_to_string(rdir.join("state/reboot/report.json")).unwrap()).unwrap();
    assert_eq!(reboot["boot"]["kernel"].as_str(), Some(build.join("vmlinuz").to_str().unwrap()), "{}", reboot["boot"]);
    assert_eq!(state_sha(), state, "repro changed the bundle's crash state");
}

const WITNESS: &str = r#"
name = "cut-witness"
[image]
fixture = "debian-load-at-boot-safe-x86_64"
[machine]
arch = "x86_64"
memory = "1G"
[expect]
engine = "docker"
images = ["fixture/busybox:1", "fixture/redis:1"]
timeout = "60s"
[power_cut]
at = "airboot-witness: written without a flush"
modes = ["lose-unflushed", "kill"]
seed = 5
"#;

/// `/var/lib/airboot/witness` in a bundle's crash state as the next mount
/// sees it: after journal replay (the fixture disk is a bare ext4: the root
/// filesystem is the whole disk). Without the replay the file's creation,
/// fsynced into the journal but not yet written to its home blocks, is
/// absent or present depending on when ext4 checkpointed it.
fn witness(bundle: &Path, input: &Path, scratch: &Path) -> Vec<u8> {
    let size = airboot_qemu::disk::open_image(input).unwrap().size();
    let raw = scratch.join("root.raw");
    airboot_qemu::crash::extract(&bundle.join("crash.qcow2"), 0, size, &raw).unwrap();
    let fs = airboot_qemu::crash::fsck(&raw).unwrap();
    assert!(fs.clean, "{}: {}", bundle.display(), fs.summary);
    let f = std::fs::File::open(&raw).unwrap();
    let e = Ext4::open(&f).unwrap();
    let ino = e.lookup("/var/lib/airboot/witness", true).unwrap().expect("the witness file is in the crash state");
    let data = e.read(&ino, 1 << 20).unwrap();
    let _ = std::fs::remove_file(&raw);
    data
}

#[test]
fn a_write_without_a_flush_is_lost_in_a_power_cut_and_kept_in_a_crash() {
    let _g = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let CutRun { code, stdout, stderr, report: r } = run_cut(dir.path(), WITNESS, &["--offline"]);
    // Cut before any image was loaded: both crash states hold a clean
    // filesystem and the old (empty) store.
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let cuts = r["power_cuts"].as_array().unwrap_or_else(|| panic!("no power_cuts\n{stdout}\n{stderr}"));
    assert_eq!(cuts.len(), 2, "{stdout}");
    let (lose, kill) = (&cuts[0], &cuts[1]);
    assert_eq!((lose["mode"].as_str(), kill["mode"].as_str()), (Some("lose-unflushed"), Some("kill")));
    assert_eq!(lose["position"], kill["position"]);
    // The workload's 256 KiB were written after the last flush.
    assert!(
        lose["lost_bytes"].as_u64().unwrap() >= 256 << 10,
        "a flush came between the witness's write and its console line: {lose}"
    );
    assert_eq!(kill["lost_bytes"].as_u64(), Some(0));
    for c in cuts {
        // Offline only: findings, no outcome, no power-on.
        assert!(c["outcome"].is_null(), "{c}");
        assert_eq!(c["filesystem"]["clean"].as_bool(), Some(true), "{c}");
        assert_eq!(c["crash_store"]["verdict"].as_str(), Some("old"), "{c}");
        assert!(c["evidence"].as_array().unwrap().iter().any(|e| e.as_str() == Some("not powered on (--offline)")));
        assert!(!PathBuf::from(c["bundle"].as_str().unwrap()).join("reboot").exists(), "{c}");
    }
    assert!(stdout.contains("STORE-OLD"), "{stdout}");

    let bundle = |c: &Value| PathBuf::from(c["bundle"].as_str().unwrap());
    let info: Value = serde_json::from_str(&std::fs::read_to_string(bundle(lose).join("cut.json")).unwrap()).unwrap();
    let input = PathBuf::from(info["input"].as_str().unwrap());
    let pattern: Vec<u8> = b"airboot-witness\n".iter().copied().cycle().take(256 << 10).collect();
    let lost = witness(&bundle(lose), &input, dir.path());
    let kept = witness(&bundle(kill), &input, dir.path());
    assert_eq!(kept.len(), 256 << 10);
    assert!(kept == pattern, "the crash (kill) lost the completed write: {:?}", String::from_utf8_lossy(&kept[..64]));
    assert_eq!(lost.len(), 256 << 10);
    assert!(
        lost.iter().all(|&b| b == 0),
        "the power cut kept data that was never flushed: {:?}",
        String::from_utf8_lossy(&lost[..64])
    );
    assert_eq!(r["image"]["unchanged"].as_bool(), Some(true), "the input image changed");
}

const RECOVERY: &str = r#"
name = "cut-recovery"
[image]
fixture = "debian-load-at-boot-x86_64"
[machine]
arch = "x86_64"
memory = "1G"
[expect]
engine = "docker"
images = ["fixture/busybox:1", "fixture/redis:1"]
timeout = "60s"
[power_cut]
load = "fixture-redis-1.tar"
layer = 2
modes = ["kill"]
seed = 9
[power_cut.recovery]
load = "fixture-redis-1.tar"
layer = 3
"#;

fn image_state<'a>(store: &'a Value, reference: &str) -> &'a str {
    store["images"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["reference"].as_str() == Some(reference)))
        .and_then(|i| i["state"].as_str())
        .unwrap_or_else(|| panic!("{reference} not in {store}"))
}

/// A cut placed by the probe's load event (layer 2 of the redis archive
/// being registered), and a second cut in the boot that powers that crash
/// state on again, placed by the same event for layer 3 while the loader
/// re-loads: the second crash state lies over the first.
#[test]
fn a_cut_by_probe_event_and_a_second_cut_during_recovery() {
    let _g = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let reports = dir.path().join("reports");
    let CutRun { code, stdout, stderr, report: r } = run_cut(dir.path(), RECOVERY, &["--offline"]);
    assert!(matches!(code, Some(0) | Some(1)), "exit {code:?}\n{stdout}\n{stderr}");
    let cuts = r["power_cuts"].as_array().unwrap_or_else(|| panic!("no power_cuts\n{stdout}\n{stderr}"));
    assert_eq!(cuts.len(), 2, "{stdout}\n{stderr}");
    let (first, second) = (&cuts[0], &cuts[1]);

    // The first cut fell on the probe's event, before redis was tagged.
    assert!(
        first["trigger"].as_str().unwrap().contains("probe event: layer 2 of fixture-redis-1.tar being loaded"),
        "{first}"
    );
    let record = std::fs::read_to_string(reports.join("record/console.log")).unwrap();
    let event = record
        .lines()
        .find(|l| {
            l.contains("AIRBOOT-EVENT v1 layer-load layer=2/3 state=loading")
                && l.contains("archive=fixture-redis-1.tar")
        })
        .unwrap_or_else(|| panic!("no loading event for layer 2 of the redis archive:\n{record}"));
    assert!(event.contains("diff_id=sha256:"), "{event}");
    assert!(record.contains("airboot-load: tagged fixture/busybox:1"), "the cut came before busybox was loaded");
    assert!(!record.contains("airboot-load: tagged fixture/redis:1"), "the recording went past the event");
    assert_ne!(image_state(&first["crash_store"], "fixture/redis:1"), "complete", "{first}");
    // With a second cut the first crash state is powered on even with --offline.
    assert!(first["outcome"].as_str().is_some(), "the first crash state was not powered on: {first}");
    assert!(PathBuf::from(first["bundle"].as_str().unwrap()).join("reboot/report.json").is_file());

    // The second cut: in that boot, during its re-load of redis.
    assert_eq!(second["during_recovery_of"], first["bundle"], "{second}");
    let t = second["trigger"].as_str().unwrap();
    assert!(t.starts_with("second cut") && t.contains("layer 3 of fixture-redis-1.tar"), "{t}");
    assert_eq!(second["mode"].as_str(), Some("kill"));
    assert!(second["position"]["writes"].as_u64().unwrap() > 0, "{second}");
    assert!(second["outcome"].is_null(), "the second state is judged offline only: {second}");
    // A kill keeps every completed write: the journal replays clean.
    assert_eq!(second["filesystem"]["clean"].as_bool(), Some(true), "{second}");
    assert_ne!(image_state(&second["crash_store"], "fixture/redis:1"), "complete", "{second}");
    let reboot_console = PathBuf::from(first["bundle"].as_str().unwrap()).join("reboot/console.log");
    let reboot_console = std::fs::read_to_string(reboot_console).unwrap();
    assert!(reboot_console.contains("layer=3/3 state=loading"), "the recovery boot re-loaded no layer 3");
    // Its crash state lies over the first one, which lies over the input.
    let b2 = PathBuf::from(second["bundle"].as_str().unwrap());
    let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(b2.join("crash.qcow2")).output().unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    let first_state = PathBuf::from(first["bundle"].as_str().unwrap()).join("crash.qcow2");
    assert_eq!(info["backing-filename"].as_str(), Some(first_state.to_str().unwrap()));
    let cut_json: Value = serde_json::from_str(&std::fs::read_to_string(b2.join("cut.json")).unwrap()).unwrap();
    // Within the bundle, the first cut is named relative to the second, so the folder can move.
    assert_eq!(cut_json["during_recovery_of"], "..");
    assert_eq!(cut_json["schema"], "airboot.bundle/v1");
    assert_eq!(
        b2.join("..").canonicalize().unwrap(),
        PathBuf::from(first["bundle"].as_str().unwrap()).canonicalize().unwrap()
    );
    assert_eq!(second["during_recovery_of"], first["bundle"], "the report names the first cut's bundle");
    assert_eq!(r["image"]["unchanged"].as_bool(), Some(true), "the input image changed");
}

/// An exploration of the load window on the real fixture, the way a
/// cluster runs it: record once (`--record-only`), judge the recording as
/// two shards and merge them (`airboot report --merge`), and judge it
/// unsharded: the merged report must be the unsharded one, state for
/// state. Offline (no power-on): the exploration's boots are the
/// `explore-*` scenarios' (suite full).
#[test]
fn an_exploration_judges_every_state_and_two_shards_merge_into_the_unsharded_run() {
    let _vm = vm_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = SCENARIO.split("[power_cut]").next().unwrap();
    let text = head.replace("name = \"cut-ci\"", "name = \"explore-ci\"")
        + "[power_cut]\nat = \"airboot-load: start\"\nuntil = \"airboot-load: done\"\npoints = \"all\"\nmodes = [\"lose-unflushed\", \"torn\"]\nstates_per_point = 2\nseed = 3\nmarkers = [\"/var/lib/airboot/images-loaded\"]\n";
    std::fs::create_dir_all(d.join("rec")).unwrap();
    let rec = run_cut(&d.join("rec"), &text, &["--record-only"]);
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    let recording = d.join("rec/reports/record");
    assert!(recording.join("recording.json").is_file() && recording.join("writes.log").is_file());
    let judge = |name: &str, extra: &[&str]| {
        std::fs::create_dir_all(d.join(name)).unwrap();
        let mut args = vec!["--offline", "--recording", recording.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_cut(&d.join(name), &text, &args)
    };
    let whole = judge("whole", &[]);
    let w = &whole.report["exploration"];
    let states = w["states"].as_array().unwrap_or_else(|| panic!("no exploration\n{}\n{}", whole.stdout, whole.stderr));
    let points = w["tally"]["points"].as_u64().unwrap() as usize;
    assert!(points > 10, "every flush of the load window is a point: {points}");
    assert_eq!(states.len(), points * 3, "one lose-unflushed and two torn states per point");
    assert_eq!(w["cross_checked"].as_u64(), Some(3));
    assert!(w["cross_check_mismatches"].is_null(), "{}", w["cross_check_mismatches"]);
    let classes = w["classes"].as_array().unwrap();
    assert!(classes.len() >= 3, "old, partly loaded and damaged stores at least: {classes:?}");
    // Before the load's first flush: nothing of it; the plain loader
    // leaves damaged layers somewhere in its window.
    assert_eq!(states[0]["store"].as_str(), Some("old"), "{}", states[0]);
    assert!(states.iter().any(|s| s["store"] == "corrupt"), "the plain loader's window has damaged states");
    assert!(whole.stdout.contains(&format!("{} states, {} classes", states.len(), classes.len())), "{}", whole.stdout);
    assert_eq!(whole.code, Some(1), "not every state is intact");
    // Two shards, merged.
    judge("s1", &["--shard", "1/2"]);
    judge("s2", &["--shard", "2/2"]);
    let out = Command::new(env!("CARGO_BIN_EXE_airboot"))
        .args(["report", "--merge"])
        .arg(d.join("s1/reports"))
        .arg(d.join("s2/reports"))
        .arg("--report-dir")
        .arg(d.join("merged"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let merged: Value = serde_json::from_str(&std::fs::read_to_string(d.join("merged/report.json")).unwrap()).unwrap();
    let view = |x: &Value| {
        let states: Vec<_> = x["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["index"].clone(),
                    s["key"].clone(),
                    s["same_as"].clone(),
                    s["fingerprint"].clone(),
                    s["class"].clone(),
                )
            })
            .collect();
        let classes: Vec<_> =
            x["classes"].as_array().unwrap().iter().map(|c| (c["fingerprint"].clone(), c["members"].clone())).collect();
        (states, classes, x["tally"].clone(), x["headline"].clone())
    };
    assert_eq!(view(&merged["exploration"]), view(w), "the merged shards are the unsharded run");
    assert!(std::fs::read_to_string(d.join("merged/index.html")).unwrap().contains("<svg"));
}

//! A whole campaign through a fake machine: nothing boots, but the crash
//! states are real. The fixture's disk is a small ext4 image; the fake's
//! "recorded boot" leaves a write log (two writes to free blocks, each
//! flushed) and prints the trigger before them; the campaign cuts there
//! with qemu-nbd, checks each crash state with e2fsck and the store
//! reader, "powers it on" (the fake plays a console), and judges.

use std::path::{Path, PathBuf};
use std::process::Command;

use airboot_campaign::bundle::BundleInfo;
use airboot_campaign::{CutOptions, cut};
use airboot_core::cut::CutOutcome;
use airboot_core::cut::writelog::{EntryKind, encode_log};
use airboot_core::event::RunEvent;
use airboot_model::{CutMode, Verdict};
use airboot_session::fake::{FakeFixtures, FakeMachine, Script};
use airboot_session::{BootOptions, Env};

const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
/// The two writes the recorded boot makes (free blocks near the end of
/// the 8 MiB disk), and what they write.
const FIRST: (u64, u8) = (16380, 0xAB);
const SECOND: (u64, u8) = (16370, 0xCD);

const SCENARIO: &str = r#"
name = "fake-cut"
[image]
fixture = "fake-x86_64"
[machine]
arch = "x86_64"
[expect]
images = ["fixture/redis:1"]
containers = [{ name = "redis", healthy = true }]
timeout = "60s"
[power_cut]
at = "airboot-load: loading"
writes = 2
modes = ["lose-unflushed", "kill"]
seed = 4
"#;

fn status(image: bool) -> Vec<String> {
    let mut v = vec![
        r#"AIRBOOT-STATUS v1 begin {"seq":1,"uptime_s":20.0,"final":true}"#.to_string(),
        r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"up"}"#.to_string(),
    ];
    if image {
        v.push(format!(r#"AIRBOOT-STATUS v1 image {{"repository":"fixture/redis","tag":"1","id":"{RID}"}}"#));
    }
    v.push(r#"AIRBOOT-STATUS v1 container {"name":"/redis","image":"fixture/redis:1","state":"running","health":"healthy"}"#.into());
    v.push(format!(r#"AIRBOOT-STATUS v1 end {{"seq":1,"records":{}}}"#, v.len() - 1));
    v
}

/// An 8 MiB ext4 disk with an x86_64 "dockerd" (so it is found as the
/// root filesystem), as a qcow2.
fn disk(dir: &Path) -> PathBuf {
    let root = dir.join("root/usr/sbin");
    std::fs::create_dir_all(&root).unwrap();
    let mut elf = vec![0u8; 64];
    elf[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    elf[16] = 2;
    elf[18] = 0x3e;
    std::fs::write(root.join("dockerd"), &elf).unwrap();
    let raw = dir.join("disk.raw");
    std::fs::File::create(&raw).unwrap().set_len(8 << 20).unwrap();
    let ok = Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-d"]).arg(dir.join("root")).arg(&raw).status();
    assert!(ok.expect("mkfs.ext4").success());
    let qcow = dir.join("disk.qcow2");
    let ok = Command::new("qemu-img").args(["convert", "-q", "-O", "qcow2"]).arg(&raw).arg(&qcow).status();
    assert!(ok.expect("qemu-img").success());
    qcow
}

/// The recorded boot: the trigger, then two writes each followed by a
/// flush, then a healthy stack.
fn recorded_boot() -> Script {
    let log = encode_log(
        &[
            (EntryKind::Write, false, FIRST.0, 1, FIRST.1),
            (EntryKind::Flush, false, 0, 0, 0),
            (EntryKind::Write, false, SECOND.0, 1, SECOND.1),
            (EntryKind::Flush, false, 0, 0, 0),
        ],
        0,
    );
    let mut lines =
        vec!["[    0.0] Linux version 6.1.0".to_string(), "airboot-load: loading".into(), "airboot-load: done".into()];
    lines.extend(status(true));
    Script { lines, log: vec![log[..512].to_vec(), Vec::new(), log[512..].to_vec()] }
}

/// The byte at the start of `sector` of a crash state.
fn byte_at(state: &Path, sector: u64, scratch: &Path) -> u8 {
    let raw = scratch.join("state.raw");
    airboot_qemu::crash::extract(state, 0, 8 << 20, &raw).unwrap();
    let v = std::fs::read(&raw).unwrap();
    v[(sector * 512) as usize]
}

struct Campaign {
    code: i32,
    report: airboot_core::report::Report,
    events: Vec<RunEvent>,
    dir: PathBuf,
}

fn campaign(tmp: &Path, reboot: Script, offline: bool) -> Campaign {
    let disk = disk(tmp);
    let fixtures = FakeFixtures::new(tmp, disk, &[("fixture/redis:1", RID)], false, true);
    let machine = FakeMachine::new(recorded_boot());
    machine.scripts.borrow_mut().push_back(reboot);
    let file = tmp.join("fake-cut.toml");
    std::fs::write(&file, SCENARIO).unwrap();
    let s = airboot_core::scenario::parse(SCENARIO, &file, &|p| p.is_file()).unwrap();
    let dir = tmp.join("reports");
    let opts = CutOptions {
        seed: None,
        modes: Vec::new(),
        report_dir: Some(dir.clone()),
        offline,
        boot: BootOptions::default(),
    };
    let mut events = Vec::new();
    let code = cut(&s, &opts, &Env { machine: &machine, fixtures: &fixtures }, &mut |e| events.push(e)).unwrap();
    let report = match events.last() {
        Some(RunEvent::CampaignFinished { report, .. }) => (**report).clone(),
        other => panic!("the campaign ended with {other:?}"),
    };
    Campaign { code, report, events, dir }
}

#[test]
fn a_campaign_cuts_judges_and_bundles_each_crash_state() {
    let tmp = tempfile::tempdir().unwrap();
    let healthy = Script { lines: status(true), log: Vec::new() };
    let c = campaign(tmp.path(), healthy, false);
    let cuts = &c.report.power_cuts;
    assert_eq!(cuts.len(), 2, "{:?}", c.report.failures);
    assert_eq!((cuts[0].mode, cuts[1].mode), (CutMode::LoseUnflushed, CutMode::Kill));
    // Placed by the trigger: two writes after it.
    assert_eq!((cuts[0].position.writes, cuts[0].position.flushes), (2, 1));
    assert!(cuts[0].trigger.starts_with("2 write(s) after match 1 of the console line"), "{}", cuts[0].trigger);
    // A power cut loses the unflushed second write; a kill keeps it.
    assert_eq!((cuts[0].lost_writes, cuts[1].lost_writes), (1, 0));
    let scratch = tmp.path();
    let lose = PathBuf::from(&cuts[0].bundle).join("crash.qcow2");
    let kill = PathBuf::from(&cuts[1].bundle).join("crash.qcow2");
    assert_eq!((byte_at(&lose, FIRST.0, scratch), byte_at(&lose, SECOND.0, scratch)), (FIRST.1, 0));
    assert_eq!((byte_at(&kill, FIRST.0, scratch), byte_at(&kill, SECOND.0, scratch)), (FIRST.1, SECOND.1));
    for cut in cuts {
        // Free blocks written: the filesystem is clean; no store: the old state; it ran.
        assert_eq!(cut.outcome, Some(CutOutcome::IntactOld), "{:?}", cut.evidence);
        assert!(cut.filesystem.as_ref().unwrap().clean);
        let bundle = PathBuf::from(&cut.bundle);
        let info = BundleInfo::read(&bundle).unwrap();
        assert_eq!((info.mode, info.outcome, info.seed), (cut.mode, cut.outcome, cut.seed));
        assert!(bundle.join("scenario.toml").is_file(), "the bundle carries its scenario");
    }
    assert_eq!(c.code, 0);
    assert_eq!(c.report.image.unchanged, Some(true));
    assert_eq!(c.report.verdict, Verdict::Pass, "the recorded boot, stopped for nothing, passed");
    // Three boots: the recording, then each crash state powered on over its own disk.
    let judged = c.events.iter().filter(|e| matches!(e, RunEvent::CutJudged { .. })).count();
    assert_eq!(judged, 2);
    let finished: Vec<_> = c
        .events
        .iter()
        .filter_map(|e| match e {
            RunEvent::BootFinished { dir, .. } => Some(dir.strip_prefix(&c.dir).unwrap().to_path_buf()),
            _ => None,
        })
        .collect();
    assert_eq!(finished, [PathBuf::from("record"), "cut-01-lose-unflushed/reboot".into(), "cut-02-kill/reboot".into()]);
}

#[test]
fn a_crash_state_whose_next_boot_fails_is_corrupt_detected() {
    let tmp = tempfile::tempdir().unwrap();
    // The next boot lists no redis image.
    let c = campaign(tmp.path(), Script { lines: status(false), log: Vec::new() }, false);
    assert!(
        c.report.power_cuts.iter().all(|c| c.outcome == Some(CutOutcome::CorruptDetected)),
        "{:?}",
        c.report.power_cuts
    );
    assert!(
        c.report.power_cuts[0].evidence.iter().any(|e| e.contains("image-missing")),
        "{:?}",
        c.report.power_cuts[0].evidence
    );
    assert_eq!(c.code, 1);
}

#[test]
fn offline_judges_without_powering_on() {
    let tmp = tempfile::tempdir().unwrap();
    let c = campaign(tmp.path(), Script::default(), true);
    for cut in &c.report.power_cuts {
        assert_eq!((cut.outcome, cut.finding().as_str()), (None, "STORE-OLD"));
        assert!(cut.evidence.iter().any(|e| e == "not powered on (--offline)"));
    }
    assert_eq!(c.code, 0, "clean filesystems and whole (old) stores");
    let boots = c.events.iter().filter(|e| matches!(e, RunEvent::BootFinished { .. })).count();
    assert_eq!(boots, 1, "only the recording");
}

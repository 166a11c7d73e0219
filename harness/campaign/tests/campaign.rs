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

/// Default options: reports in `dir`.
fn opts(dir: PathBuf, offline: bool) -> CutOptions {
    CutOptions {
        seed: None,
        modes: Vec::new(),
        report_dir: Some(dir),
        offline,
        jobs: None,
        recording: None,
        input: None,
        shard: None,
        record_only: false,
        boot: BootOptions::default(),
    }
}

/// `airboot cut` of the scenario `text` over `disk`, the fake playing
/// `boots` in order; report.json written as the report files would.
fn run(tmp: &Path, text: &str, disk: &Path, boots: Vec<Script>, opts: CutOptions) -> Campaign {
    let fixtures = FakeFixtures::new(tmp, disk.to_path_buf(), &[("fixture/redis:1", RID)], false, true);
    let mut boots = boots.into_iter();
    let machine = FakeMachine::new(boots.next().unwrap_or_default());
    machine.scripts.lock().unwrap().extend(boots);
    let file = tmp.join("fake-cut.toml");
    std::fs::write(&file, text).unwrap();
    let s = airboot_core::scenario::parse(text, &file, &|p| p.is_file()).unwrap();
    let mut events = Vec::new();
    let code = cut(&s, &opts, &Env { machine: &machine, fixtures: &fixtures }, &mut |e| events.push(e)).unwrap();
    let (report, dir) = match events.last() {
        Some(RunEvent::CampaignFinished { report, dir, .. }) => ((**report).clone(), dir.clone()),
        other => panic!("the campaign ended with {other:?}"),
    };
    std::fs::write(dir.join("report.json"), serde_json::to_string(&report).unwrap()).unwrap();
    Campaign { code, report, events, dir }
}

fn campaign(tmp: &Path, reboot: Script, offline: bool) -> Campaign {
    run(tmp, SCENARIO, &disk(tmp), vec![recorded_boot(), reboot], opts(tmp.join("reports"), offline))
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
    // An engine listing nothing at all while the image is expected: named
    // (a guess), and carried by each cut.
    let named = c.report.power_cuts.iter().map(|c| c.next_boot_diagnosis);
    assert!(named.into_iter().all(|d| d == Some(airboot_model::DiagnosisCode::StorageDriverMismatch)));
    assert_eq!(c.code, 1);
}

/// A next boot that fails for a cause airboot can name (its engine says
/// the store is read-only) gives each cut that diagnosis, as evidence and
/// as `next_boot_diagnosis`.
#[test]
fn a_failed_next_boot_gives_the_cut_its_diagnosis() {
    let tmp = tempfile::tempdir().unwrap();
    let mut lines = status(false);
    lines[1] = r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"failing","detail":"error initializing graphdriver: mkdir /var/lib/docker/overlay2: read-only file system"}"#.into();
    let c = campaign(tmp.path(), Script { lines, log: Vec::new() }, false);
    assert_eq!(c.report.power_cuts.len(), 2);
    for cut in &c.report.power_cuts {
        assert_eq!(cut.outcome, Some(CutOutcome::CorruptDetected), "{:?}", cut.evidence);
        assert_eq!(cut.next_boot_diagnosis, Some(airboot_model::DiagnosisCode::StoreReadOnly));
        let line = cut.evidence.iter().find(|e| e.starts_with("next boot: diagnosis store-read-only: "));
        assert!(line.is_some_and(|l| l.contains("read-only file system")), "{:?}", cut.evidence);
    }
    let json = std::fs::read_to_string(c.dir.join("report.json")).unwrap();
    assert!(json.contains("\"next_boot_diagnosis\":\"store-read-only\""), "{json}");
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

/// An exploration: both flushes of the window are cut points, under
/// lose-unflushed and kill. The second write smashes the superblock's
/// magic, so the kill just before the second flush leaves a damaged
/// filesystem; every other state is clean and without a store.
/// (The single cut's scenario with another [power_cut].)
fn explore_text() -> String {
    let head = SCENARIO.split("[power_cut]").next().unwrap().replace("fake-cut", "fake-explore");
    head + r#"[power_cut]
at = "airboot-load: loading"
until = "airboot-load: done"
points = "all"
modes = ["lose-unflushed", "kill"]
sample = 1
markers = ["/usr/sbin/dockerd", "/var/lib/airboot/images-loaded"]
seed = 4
"#
}

/// The exploration's recorded boot: the trigger, a write to a free block
/// and a flush, the superblock's magic smashed and a flush, the window's end.
fn explore_recorded() -> Script {
    let log = encode_log(
        &[
            (EntryKind::Write, false, FIRST.0, 1, FIRST.1),
            (EntryKind::Flush, false, 0, 0, 0),
            (EntryKind::Write, false, 2, 1, 0xCD),
            (EntryKind::Flush, false, 0, 0, 0),
        ],
        0,
    );
    let mut lines =
        vec!["[    0.0] Linux version 6.1.0".to_string(), "airboot-load: loading".into(), "airboot-load: done".into()];
    lines.extend(status(true));
    Script { lines, log: vec![log[..512].to_vec(), Vec::new(), log[512..].to_vec()] }
}

fn explore(tmp: &Path, offline: bool) -> Campaign {
    let mut boots = vec![explore_recorded()];
    boots.extend((0..3).map(|_| Script { lines: status(true), log: Vec::new() }));
    run(tmp, &explore_text(), &disk(tmp), boots, CutOptions { jobs: Some(2), ..opts(tmp.join("reports"), offline) })
}

#[test]
fn an_exploration_judges_every_state_in_place_and_powers_on_one_per_class() {
    let tmp = tempfile::tempdir().unwrap();
    let c = explore(tmp.path(), false);
    let x = c.report.exploration.as_ref().unwrap_or_else(|| panic!("no exploration: {:?}", c.report.failures));
    // Two flushes, two modes: four states; the kill before flush 1 and the
    // power cut before flush 2 keep the same write, so three distinct.
    assert_eq!((x.tally.points, x.tally.enumerated, x.tally.judged_offline), (2, 4, 3));
    let same: Vec<Option<usize>> = x.states.iter().map(|s| s.same_as).collect();
    assert_eq!(same, vec![None, None, Some(1), None]);
    assert_eq!(x.cross_checked, 3);
    assert!(x.cross_check_mismatches.is_empty(), "{:?}", x.cross_check_mismatches);
    // Classes: clean and storeless, or damaged (the kill before flush 2).
    assert_eq!(x.classes.len(), 2, "{:#?}", x.classes);
    assert!(x.classes[0].fingerprint.starts_with("fs=clean store=old"), "{}", x.classes[0].fingerprint);
    assert!(
        x.classes[0].fingerprint.ends_with("/usr/sbin/dockerd=present /var/lib/airboot/images-loaded=absent"),
        "{}",
        x.classes[0].fingerprint
    );
    assert!(x.classes[1].fingerprint.starts_with("fs=damaged"), "{}", x.classes[1].fingerprint);
    assert_eq!(x.classes[1].members, vec![3]);
    assert_eq!(x.states[3].point, "just before flush #2");
    // One boot per class, plus one sampled member of the class that has others.
    assert_eq!(c.report.power_cuts.len(), 3);
    assert_eq!(x.tally.sampled, 1);
    assert_eq!(x.tally.sample_mismatches, 0);
    // --jobs 2: two boots at once, each labelling its progress lines.
    assert_eq!((x.boot_jobs, x.boot_jobs_why.as_str()), (2, "2 at once (--jobs)"));
    let line = airboot_report::explore::boots_line(x);
    assert!(line.starts_with("3 state(s) powered on in ") && line.contains("s, 2 at once (--jobs): "), "{line}");
    let steps: Vec<&str> =
        c.events.iter().filter_map(|e| if let RunEvent::CutStep(s) = e { Some(s.as_str()) } else { None }).collect();
    assert!(steps.iter().any(|s| s.starts_with("[class-02] crash state: filesystem DAMAGED")), "{steps:#?}");
    assert!(!c.events.iter().any(|e| matches!(e, RunEvent::GuestStatus { .. })), "unlabelled lines are left out");
    let boots = c.events.iter().filter(|e| matches!(e, RunEvent::BootFinished { .. })).count();
    assert_eq!(boots, 4, "the recording and three power-ons, each writing its report");
    let cuts: Vec<&str> = c.report.power_cuts.iter().map(|p| p.bundle.rsplit('/').next().unwrap()).collect();
    assert_eq!(cuts[..2], ["class-01", "class-02"], "in boot order: {cuts:?}");
    assert!(c.report.power_cuts.iter().all(|p| p.outcome.is_some() && p.error.is_none()));
    assert!(x.states.iter().all(|s| s.outcome.is_some()), "every state has an outcome: {:#?}", x.states);
    assert_eq!(x.states.iter().filter(|s| s.inherited).count(), 1, "four states, three powered on");
    for k in ["class-01", "class-02"] {
        let info = BundleInfo::read(&c.dir.join(k)).unwrap();
        assert!(info.trigger.contains("representative"), "{}", info.trigger);
    }
    assert!(x.headline.starts_with("4 states, 2 classes"), "{}", x.headline);
    assert_eq!(c.report.image.unchanged, Some(true));
    let html = airboot_report::explore::section_html(x);
    assert!(html.contains("<svg") && html.contains("Exploration: 4 states"), "{html}");
    // One cell per state: the damaged one observed (the fake's next boot
    // is healthy: it healed), the one not powered on pale (inherited).
    assert_eq!(html.matches("<rect").count(), 4);
    assert!(html.contains("fill-opacity=\"1\"><title>state 3 — just before flush #2 kill #0: SELF-HEALED"), "{html}");
    assert!(
        html.contains("fill-opacity=\"0.45\"><title>state 1 — just before flush #1 kill #0: INTACT-OLD (inherited)")
    );
}

#[test]
fn an_offline_exploration_powers_nothing_on_and_fails_on_a_damaged_state() {
    let tmp = tempfile::tempdir().unwrap();
    let c = explore(tmp.path(), true);
    let x = c.report.exploration.as_ref().unwrap();
    assert_eq!(x.tally.powered_on, 0);
    assert!(c.report.power_cuts.is_empty());
    assert_eq!((x.tally.with_outcome, x.tally.survived), (4, 3));
    assert_eq!(x.tally.first_bad.as_deref(), Some("just before flush #2"));
    assert_eq!(c.code, 1, "a damaged state is not intact");
    let boots = c.events.iter().filter(|e| matches!(e, RunEvent::BootFinished { .. })).count();
    assert_eq!(boots, 1, "only the recording");
}

#[test]
fn a_recording_is_kept_and_two_shards_merged_equal_the_unsharded_exploration() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let disk = disk(t);
    // Record only: the log and recording.json kept, nothing judged.
    let rec_only = CutOptions { record_only: true, jobs: Some(1), ..opts(t.join("rec"), true) };
    let Campaign { code, report: r, .. } = run(t, &explore_text(), &disk, vec![explore_recorded()], rec_only);
    assert_eq!(code, 0, "{:?}", r.failures);
    assert!(r.exploration.is_none());
    let rec = t.join("rec/record");
    assert!(rec.join("writes.log").is_file() && rec.join("recording.json").is_file());
    // Unsharded, and two shards, from the recording: no boot at all.
    let judge_at = |dir: &str, shard, input: Option<PathBuf>| {
        let o = CutOptions { recording: Some(rec.clone()), shard, input, jobs: Some(1), ..opts(t.join(dir), true) };
        let c = run(t, &explore_text(), &disk, vec![], o);
        (c.code, c.report)
    };
    let judge = |dir: &str, shard| judge_at(dir, shard, None);
    let (whole_code, whole) = judge("whole", None);
    let (_, s1) = judge("s1", Some((1, 2)));
    // Shard 2 on "another machine": the image is elsewhere (--input).
    let moved = t.join("elsewhere.img");
    std::fs::copy(&disk, &moved).unwrap();
    let (_, s2) = judge_at("s2", Some((2, 2)), Some(moved.clone()));
    assert_eq!(s2.image.path.as_deref(), Some(moved.to_str().unwrap()));
    assert!(s2.notes.iter().any(|n| n.contains("is at") && n.contains("elsewhere.img")), "{:?}", s2.notes);
    assert_eq!(s2.image.unchanged, Some(true));
    let w = whole.exploration.as_ref().unwrap();
    assert_eq!(w.states.len(), 4);
    assert_eq!((s1.exploration.as_ref().unwrap().states.len(), s2.exploration.as_ref().unwrap().states.len()), (2, 2));
    assert_eq!(s2.exploration.as_ref().unwrap().shard, Some((2, 2)));
    assert!(w.recording.starts_with("sha256:"), "{}", w.recording);
    // Merged: the same states, classes and tally as the unsharded run.
    let mut events = Vec::new();
    let code =
        airboot_campaign::merge::merge(&[t.join("s2"), t.join("s1")], Some(&t.join("merged")), &mut |e| events.push(e));
    let Some(RunEvent::CampaignFinished { report: merged, .. }) = events.pop() else {
        panic!("no merged report: {code:?}; shard 1 {:?}, shard 2 {:?}", s1.failures, s2.failures)
    };
    let m = merged.exploration.as_ref().unwrap();
    assert_eq!(code.unwrap(), whole_code);
    let view = |x: &airboot_core::cut::explore::Exploration| {
        let states: Vec<_> =
            x.states.iter().map(|s| (s.index, s.key.clone(), s.same_as, s.fingerprint.clone(), s.class)).collect();
        let classes: Vec<_> = x.classes.iter().map(|c| (c.fingerprint.clone(), c.members.clone())).collect();
        (states, classes, x.tally.clone())
    };
    assert_eq!(view(m), view(w));
    // Shards of one exploration only: a missing shard is named.
    let mut ev = Vec::new();
    let e = airboot_campaign::merge::merge(&[t.join("s1")], Some(&t.join("m2")), &mut |e| ev.push(e)).unwrap_err();
    assert!(e.contains("2 state(s) missing"), "{e}");
    // Another image than the recording's is refused.
    std::fs::write(&moved, b"another image").unwrap();
    let (code, r) = judge_at("other", None, Some(moved));
    assert_eq!(code, 2);
    assert!(r.failures.iter().any(|f| f.message.contains("is not the image the recording")), "{:?}", r.failures);
    // A recording whose log was changed is refused.
    std::fs::write(rec.join("writes.log"), b"not the log").unwrap();
    let (code, r) = judge("bad", None);
    assert_eq!(code, 2);
    assert!(r.failures.iter().any(|f| f.message.contains("is not the write log")), "{:?}", r.failures);
}

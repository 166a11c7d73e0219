//! `airboot cut` and `airboot repro`: record the guest's write stream in
//! one boot, cut it at the scenario's cut points, and judge each crash
//! state offline (filesystem, container store) and by powering it on again.
//!
//! Record once, cut many: one boot with QEMU's `blklogwrites` between the
//! guest and its disk yields every crash state of that boot. A crash state
//! is the input image plus the writes a cut kept, written into a qcow2
//! over the input (the reproduction bundle's `crash.qcow2`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use airboot_core::cut::store::{StoreCheck, check_docker};
use airboot_core::cut::writelog::{Count, CrashState, WriteLog, crash_state, sweep_points};
use airboot_core::cut::{
    CutPosition, FsFindings, PowerCut, RebootFindings, StopRule, crash_evidence, judge, offline_intact,
};
use airboot_core::disk::ext4::Ext4;
use airboot_core::disk::{ReadAt, detect};
use airboot_core::report::Report;
use airboot_core::scenario::{CutAfter, CutTrigger, ImageSource, PowerCutSpec, Scenario};
use airboot_model::{Arch, CutMode, DiskFormat, FailureCode, Verdict};
use airboot_qemu::crash;
use airboot_qemu::disk::open_image;
use airboot_qemu::disk::sha256_file;
use airboot_qemu::process::interrupted;
use airboot_qemu::vm::{RecordSpec, Recorded};
use serde::{Deserialize, Serialize};

use crate::run::{Extra, Options as RunOptions, now_rfc3339, run_one_with, stamp};
use crate::scenarios;

pub struct CutOptions {
    pub scenario: PathBuf,
    pub seed: Option<u64>,
    pub modes: Vec<CutMode>,
    pub report_dir: Option<PathBuf>,
    /// Judge each crash state offline only (filesystem, store): no power-on.
    pub offline: bool,
    pub run: RunOptions,
}

/// What a bundle's `cut.json` holds: enough to boot and judge the same
/// state again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleInfo {
    pub scenario_file: String,
    pub input: String,
    pub input_sha256: Option<String>,
    pub arch: String,
    pub mode: String,
    pub trigger: String,
    pub position: CutPosition,
    pub seed: u64,
    /// What the cut lost (absent in bundles written before these were kept).
    #[serde(default)]
    pub lost_writes: u64,
    #[serde(default)]
    pub lost_bytes: u64,
    #[serde(default)]
    pub torn_writes: u64,
    pub record_argv: Vec<String>,
    pub outcome: Option<String>,
    /// A second cut: the first cut's bundle, whose `crash.qcow2` this
    /// bundle's `crash.qcow2` lies over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during_recovery_of: Option<String>,
}

fn load_one(path: &Path) -> Result<Scenario, i32> {
    match scenarios::load_all(&[path.to_path_buf()]) {
        Ok(mut l) if l.len() == 1 => Ok(l.remove(0)),
        Ok(l) => {
            eprintln!("error: {} holds {} scenarios: give one scenario file", path.display(), l.len());
            Err(2)
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            Err(2)
        }
    }
}

fn pos(log: &WriteLog, entry: usize) -> CutPosition {
    let (writes, flushes, bytes) = log.counts(entry);
    CutPosition { entry, writes, flushes, bytes_written: bytes }
}

/// Where to cut, from the recording: (entry index, what placed it).
fn cut_points(
    t: &CutTrigger,
    until: Option<&str>,
    points: usize,
    log: &WriteLog,
    recorded: &Recorded,
) -> Result<Vec<(usize, String)>, String> {
    let at = recorded.seen.iter().find(|m| m.mark == "at" && m.nth == t.matching).ok_or_else(|| {
        let hint = if t.probe_event {
            " (the probe prints an `AIRBOOT-EVENT v1 layer-load` line for each layer of a Docker load it sees; a layer \
             registered between two of its looks, 50 ms apart, shows as state=present and does not fire: see that \
             boot's console.log for the lines it printed)"
        } else {
            ""
        };
        format!("the console never showed match {} of the {}: nothing to cut{hint}", t.matching, t.what)
    })?;
    let from = log.entries_within(at.log_len);
    if let Some(until_re) = until {
        let until = recorded.seen.iter().find(|m| m.mark == "until" && m.t_s >= at.t_s).ok_or_else(|| {
            format!("the console never showed power_cut.until = {until_re:?} after `at`: the sweep has no end")
        })?;
        let to = log.entries_within(until.log_len);
        let points = sweep_points(log, from, to, points);
        if points.is_empty() {
            return Err(format!(
                "no flush with unflushed writes before it between `at` ({:.1}s) and `until` ({:.1}s): nothing a power cut could lose there",
                at.t_s, until.t_s
            ));
        }
        let n = points.len();
        return Ok(points
            .into_iter()
            .enumerate()
            .map(|(k, e)| {
                (
                    e,
                    format!(
                        "sweep point {} of {n}: just before flush #{} (between {:?} at {:.1}s and {:?} at {:.1}s)",
                        k + 1,
                        log.counts(e).1 + 1,
                        at.line,
                        at.t_s,
                        until.line,
                        until.t_s
                    ),
                )
            })
            .collect());
    }
    let counted = |what: Count, n: u64, unit: &str| -> Result<(usize, String), String> {
        let base = log.counts(from);
        let target = match what {
            Count::Flushes => base.1 + n,
            Count::Writes => base.0 + n,
            Count::Bytes => base.2 + n,
        };
        let e = log.position_after(what, target).ok_or_else(|| {
            format!("the recorded boot ended before {n} {unit} after {:?}: cut earlier or record longer", at.line)
        })?;
        Ok((e, format!("{n} {unit} after match {} of the {} ({:.1}s)", t.matching, t.what, at.t_s)))
    };
    let one = match t.after {
        CutAfter::Flushes(n) => counted(Count::Flushes, n, "flush(es)")?,
        CutAfter::Writes(n) => counted(Count::Writes, n, "write(s)")?,
        CutAfter::Bytes(n) => counted(Count::Bytes, n, "byte(s) written")?,
        CutAfter::Time(d) => {
            let (at_t, len) = recorded.stopped.ok_or("the recorded boot ended before the cut's time came")?;
            (
                log.entries_within(len),
                format!(
                    "{:.1}s after match {} of the {} (line at {:.1}s, cut at {at_t:.1}s)",
                    d.as_secs_f64(),
                    t.matching,
                    t.what,
                    at.t_s
                ),
            )
        }
    };
    Ok(vec![one])
}

/// What a recorded boot watches for: the trigger (and a sweep's end),
/// and when the cut's moment comes. `pause`: freeze the guest then (the
/// recorded boot ends at the cut) rather than note the position and go on.
fn record_spec(t: &CutTrigger, until: Option<&str>, pause: bool) -> RecordSpec {
    let re = |p: &str| regex::Regex::new(p).expect("checked when the scenario was read");
    let mut marks = vec![("at".to_string(), re(&t.at))];
    if let Some(u) = until {
        marks.push(("until".to_string(), re(u)));
    }
    // The recording ends at the sweep's end, at the timed cut, or (for
    // counted cuts) when the run ends by itself.
    let stop = if until.is_some() {
        Some(StopRule { mark: 1, nth: 1, delay_s: 0.5 })
    } else if let CutAfter::Time(d) = t.after {
        Some(StopRule { mark: 0, nth: t.matching, delay_s: d.as_secs_f64() })
    } else {
        None
    };
    RecordSpec { marks, stop, pause }
}

fn default_seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1) % 1_000_000
}

pub fn cut(opts: CutOptions) -> i32 {
    let s = match load_one(&opts.scenario) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let Some(mut pc) = s.power_cut.clone() else {
        eprintln!(
            "error: {} has no [power_cut] section: add one saying where to cut (`at = \"<console regex>\"`; see scenarios/README.md)",
            s.file.display()
        );
        return 2;
    };
    if !opts.modes.is_empty() {
        pc.modes = opts.modes.clone();
    }
    let has_probe = match s.image.source {
        ImageSource::Fixture(_) => s.image.probe != Some(false),
        _ => s.image.probe == Some(true),
    };
    let by_event = [Some(&pc.trigger), pc.recovery.as_ref()].into_iter().flatten().any(|t| t.probe_event);
    if by_event && !has_probe {
        eprintln!(
            "error: {}: power_cut `load` is the guest probe's event, and this image does not carry the probe: \
             set `probe = true` under [image] if it runs `airboot-probe serve`, or place the cut with `at = \"<console regex>\"`",
            s.file.display()
        );
        return 2;
    }
    let seed = opts.seed.or(pc.seed).unwrap_or_else(default_seed);
    let base =
        opts.report_dir.clone().unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-cut-{}", stamp(), s.name)));
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("error: cannot create the report folder {}: {e}", base.display());
        return 2;
    }
    let work = match tempfile::Builder::new().prefix("airboot-cut-").tempdir() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot create a temporary folder: {e}");
            return 2;
        }
    };
    let write_log = work.path().join("writes.log");
    if let Err(e) = std::fs::File::create(&write_log) {
        eprintln!("error: cannot create {}: {e}", write_log.display());
        return 2;
    }
    eprintln!("== {}: recording the write stream of one boot", s.name);
    let mut rec = Extra {
        write_log: Some(write_log.clone()),
        record: Some(record_spec(&pc.trigger, pc.until.as_deref(), true)),
        ..Default::default()
    };
    let rec_dir = base.join("record");
    let mut report = run_one_with(&s, &rec_dir, &opts.run, &mut rec);
    if let Err(e) = airboot_report::write_report(&rec_dir, &report) {
        eprintln!("error: cannot write {}/report.json: {e}", rec_dir.display());
    }
    report.notes.push(format!("the recorded boot's own report: {}/report.json", rec_dir.display()));
    if rec.recorded.as_ref().is_some_and(|r| r.stopped.is_some()) {
        // Stopped on purpose for the cut: what the run had not seen yet is no failure.
        for f in std::mem::take(&mut report.failures) {
            report.notes.push(format!("recorded boot (stopped for the cut): {}: {}", f.code, f.message));
        }
        report.verdict = Verdict::Pass;
    }
    if opts.offline {
        report.notes.push(
            "--offline: each crash state judged offline only (filesystem after journal replay, container store); \
             not powered on, so no outcome"
                .into(),
        );
    }
    if let Err(e) = cut_all(&s, &pc, seed, &base, work.path(), &write_log, &rec, &mut report, &opts) {
        eprintln!("error: {e}");
        report.error(FailureCode::PowerCut, e, None);
    }
    finish(&base, &mut report, &rec, opts.offline)
}

/// Write the cut report, print the summary, and say how it went. With
/// `offline`, a cut "survived" when its crash state holds a clean
/// filesystem and a whole (old or new) store.
fn finish(base: &Path, report: &mut Report, rec: &Extra, offline: bool) -> i32 {
    if let Some((input, _)) = &rec.input
        && let Some(before) = report.image.sha256_before.clone()
    {
        match sha256_file(input) {
            Ok(h) if h == before => report.image.unchanged = Some(true),
            Ok(_) => {
                report.image.unchanged = Some(false);
                report.error(FailureCode::InputModified, "the input image changed during the cuts".into(), None);
            }
            Err(e) => report.notes.push(format!("could not hash the input again: {e}")),
        }
    }
    if let Err(e) = airboot_report::write_report(base, report) {
        eprintln!("error: cannot write {}/report.json: {e}", base.display());
    }
    print_cuts(report);
    outln!("   report    {}", base.join("report.json").display());
    let errors = report.verdict == Verdict::Error
        || report.power_cuts.iter().any(|c| c.error.is_some() || (!offline && c.outcome.is_none()));
    let survived = |c: &PowerCut| match c.outcome {
        Some(o) => o.survived(),
        None => offline && c.filesystem.as_ref().is_some_and(|fs| offline_intact(fs, c.crash_store.as_ref())),
    };
    if errors {
        2
    } else if report.power_cuts.iter().all(survived) {
        0
    } else {
        1
    }
}

fn print_cuts(report: &Report) {
    for (title, power) in [("power cuts", true), ("crashes (QEMU killed: every completed write kept)", false)] {
        let cuts: Vec<&PowerCut> = report.power_cuts.iter().filter(|c| c.power_cut == power).collect();
        if cuts.is_empty() {
            continue;
        }
        outln!("== {title}");
        for c in cuts {
            let outcome = match (c.outcome, &c.filesystem, &c.crash_store) {
                (Some(o), _, _) => o.as_str().to_string(),
                (None, Some(fs), _) if !fs.clean => "FS-DAMAGED".into(),
                (None, Some(_), Some(st)) => format!("STORE-{}", st.verdict.as_str().to_uppercase()),
                _ => "NOT JUDGED".into(),
            };
            outln!(
                "   {outcome:<17} {:<15} write {} flush {} ({} lost, {} torn)  {}",
                c.mode,
                c.position.writes,
                c.position.flushes,
                c.lost_writes,
                c.torn_writes,
                c.trigger
            );
            if let Some(e) = &c.error {
                outln!("      error: {e}");
            }
            for e in c.evidence.iter().filter(|e| !e.contains("stack up as expected")).take(4) {
                outln!("      {e}");
            }
            outln!("      bundle {}", c.bundle);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn cut_all(
    s: &Scenario,
    pc: &PowerCutSpec,
    seed: u64,
    base: &Path,
    work: &Path,
    write_log: &Path,
    rec: &Extra,
    report: &mut Report,
    opts: &CutOptions,
) -> Result<(), String> {
    let (input, format) = rec.input.clone().ok_or("the recorded boot did not get as far as the image")?;
    let arch = rec.arch.ok_or("the recorded boot did not get as far as the architecture")?;
    let recorded = rec.recorded.clone().ok_or("the recorded boot ended before QEMU ran")?;
    let view = open_image(&input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let disk_size = view.size();
    let root = detect::root_partition(view.as_ref(), arch)
        .ok_or_else(|| format!("no root filesystem found in {}: cannot check its store", input.display()))?;
    drop(view);
    let log = read_write_log(write_log, disk_size, "the write log")?;
    let total = log.counts(log.entries.len());
    eprintln!(
        "   recorded {} requests: {} writes ({} MiB), {} flushes",
        log.entries.len(),
        total.0,
        total.2 >> 20,
        total.1
    );
    let points = cut_points(&pc.trigger, pc.until.as_deref(), pc.points, &log, &recorded)?;
    let expected: Vec<String> = s.expect.images.iter().map(|i| i.reference.clone()).collect();
    let n = points.len() * pc.modes.len();
    let mut k = 0;
    for (entry, trigger) in &points {
        for mode in &pc.modes {
            k += 1;
            if interrupted() {
                return Ok(());
            }
            let cut_seed = seed.wrapping_add(k as u64 - 1);
            let state = crash_state(&log, *entry, *mode, cut_seed);
            let bundle = base.join(format!("cut-{k:02}-{}", mode.as_str()));
            eprintln!("== cut {k} of {n}: {} at write {} ({trigger})", mode.as_str(), log.counts(*entry).0);
            let mut c =
                PowerCut::new(*mode, trigger.clone(), pos(&log, *entry), cut_seed, bundle.display().to_string());
            (c.lost_writes, c.lost_bytes, c.torn_writes) = (state.lost_writes, state.lost_bytes, state.torn_writes);
            let info = BundleInfo {
                scenario_file: std::path::absolute(&s.file).unwrap_or(s.file.clone()).display().to_string(),
                input: std::path::absolute(&input).unwrap_or(input.clone()).display().to_string(),
                input_sha256: report.image.sha256_before.clone(),
                arch: arch.to_string(),
                mode: mode.as_str().into(),
                trigger: trigger.clone(),
                position: c.position.clone(),
                seed: cut_seed,
                lost_writes: c.lost_writes,
                lost_bytes: c.lost_bytes,
                torn_writes: c.torn_writes,
                record_argv: report.qemu.argv.clone(),
                outcome: None,
                during_recovery_of: None,
            };
            // With a second cut, this crash state is powered on even with
            // --offline: that boot is where the second cut falls.
            let run = if opts.offline && pc.recovery.is_none() { None } else { Some(&opts.run) };
            let recovery = pc.recovery.as_ref().map(|t| (t, work.join("recovery.log")));
            let made = make_and_judge(
                s,
                &bundle,
                (&input, format),
                write_log,
                &state,
                &rec_console(base),
                (root.start, root.len),
                &expected,
                work,
                run,
                &mut c,
                &info,
                recovery.as_ref(),
            );
            let rboot = match made {
                Ok(r) => r,
                Err(e) => {
                    c.error = Some(e);
                    report.power_cuts.push(c);
                    continue;
                }
            };
            let second = match (&recovery, rboot) {
                (Some((t, rlog)), Some(rboot)) => {
                    let second =
                        SecondCut { first: &info, first_k: k, mode: *mode, seed: cut_seed.wrapping_add(1 << 32) };
                    let made = second_cut(
                        s,
                        t,
                        rlog,
                        &rboot,
                        &second,
                        &bundle,
                        disk_size,
                        (root.start, root.len),
                        &expected,
                        work,
                        opts,
                    );
                    let _ = std::fs::remove_file(rlog);
                    match made {
                        Ok(c2) => Some(c2),
                        Err(e) => {
                            eprintln!("   no second cut: {e}");
                            c.evidence.push(format!("no second cut in the recovery boot: {e}"));
                            None
                        }
                    }
                }
                (Some((_, rlog)), None) => {
                    let _ = std::fs::remove_file(rlog);
                    c.evidence.push("no second cut: the crash state's recovery boot did not run".into());
                    None
                }
                _ => None,
            };
            report.power_cuts.push(c);
            report.power_cuts.extend(second);
            // Keep the report current: a long sweep can be read (or stopped) part way.
            if let Err(e) = airboot_report::write_report(base, report) {
                eprintln!("error: cannot write {}/report.json: {e}", base.display());
            }
        }
    }
    Ok(())
}

/// The first cut a second cut follows.
struct SecondCut<'a> {
    first: &'a BundleInfo,
    first_k: usize,
    mode: CutMode,
    seed: u64,
}

/// The second cut: in the boot that powered the first cut's crash state
/// on (recorded into `rlog`), at the recovery trigger, with the same
/// mode; its crash state is a qcow2 over the first one, judged like any.
#[allow(clippy::too_many_arguments)]
fn second_cut(
    s: &Scenario,
    t: &CutTrigger,
    rlog: &Path,
    rboot: &RecoveryBoot,
    second: &SecondCut,
    first_bundle: &Path,
    disk_size: u64,
    root: (u64, u64),
    expected: &[String],
    work: &Path,
    opts: &CutOptions,
) -> Result<PowerCut, String> {
    let log = read_write_log(rlog, disk_size, "the recovery boot's write log")?;
    let (entry, placed) = cut_points(t, None, 1, &log, &rboot.recorded)?.remove(0);
    let state = crash_state(&log, entry, second.mode, second.seed);
    let bundle = first_bundle.join("recovery-cut");
    let trigger = format!(
        "second cut, in the boot powering cut {}'s crash state on: {placed} (power_cut.recovery)",
        second.first_k
    );
    eprintln!(
        "== second cut (recovery of cut {}): {} at write {} ({placed})",
        second.first_k,
        second.mode.as_str(),
        log.counts(entry).0
    );
    let mut c =
        PowerCut::new(second.mode, trigger.clone(), pos(&log, entry), second.seed, bundle.display().to_string());
    (c.lost_writes, c.lost_bytes, c.torn_writes) = (state.lost_writes, state.lost_bytes, state.torn_writes);
    c.during_recovery_of = Some(first_bundle.display().to_string());
    let info = BundleInfo {
        mode: second.mode.as_str().into(),
        trigger,
        position: c.position.clone(),
        seed: second.seed,
        lost_writes: c.lost_writes,
        lost_bytes: c.lost_bytes,
        torn_writes: c.torn_writes,
        record_argv: rboot.argv.clone(),
        outcome: None,
        during_recovery_of: Some(first_bundle.display().to_string()),
        ..second.first.clone()
    };
    let run = if opts.offline { None } else { Some(&opts.run) };
    make_and_judge(
        s,
        &bundle,
        (&first_bundle.join("crash.qcow2"), DiskFormat::Qcow2),
        rlog,
        &state,
        &first_bundle.join("reboot/console.log"),
        root,
        expected,
        work,
        run,
        &mut c,
        &info,
        None,
    )?;
    Ok(c)
}

fn read_write_log(path: &Path, disk_size: u64, what: &str) -> Result<WriteLog, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {what}: {e}"))?;
    let len = f.size();
    WriteLog::parse(&f, len, disk_size).map_err(|e| format!("{what}: {e}"))
}

/// One cut's bundle: the crash state (`from`, the disk the recorded boot
/// ran on, plus what `state` keeps of the writes in `log`) written into
/// `bundle/crash.qcow2`, the recorded boot's `console`, the judgement
/// (`judge_bundle`), and `cut.json` (`info` with the outcome). An error
/// when the crash state could not be built (nothing judged then).
#[allow(clippy::too_many_arguments)]
fn make_and_judge(
    s: &Scenario,
    bundle: &Path,
    from: (&Path, DiskFormat),
    log: &Path,
    state: &CrashState,
    console: &Path,
    root: (u64, u64),
    expected: &[String],
    work: &Path,
    run: Option<&RunOptions>,
    c: &mut PowerCut,
    info: &BundleInfo,
    recovery: Option<&(&CutTrigger, PathBuf)>,
) -> Result<Option<RecoveryBoot>, String> {
    std::fs::create_dir_all(bundle).map_err(|e| format!("cannot create {}: {e}", bundle.display()))?;
    crash::materialize(from.0, from.1, log, state, &bundle.join("crash.qcow2"))
        .map_err(|e| format!("building the crash state: {e}"))?;
    let _ = std::fs::copy(console, bundle.join("record-console.log"));
    let rboot = judge_bundle(s, bundle, root, expected, work, run, c, recovery);
    let info = BundleInfo { outcome: c.outcome.map(|o| o.as_str().to_string()), ..info.clone() };
    let _ = std::fs::write(bundle.join("cut.json"), serde_json::to_string_pretty(&info).unwrap_or_default());
    Ok(rboot)
}

/// The boot that powered a crash state on, recorded for a second cut.
struct RecoveryBoot {
    recorded: Recorded,
    argv: Vec<String>,
}

fn rec_console(base: &Path) -> PathBuf {
    base.join("record/console.log")
}

/// Check a root filesystem image offline: fsck a copy, then the store.
fn offline(
    disk: &Path,
    root: (u64, u64),
    expected: &[String],
    work: &Path,
    name: &str,
) -> Result<(FsFindings, StoreCheck), String> {
    let copy = crash::root_copy(work, name);
    crash::extract(disk, root.0, root.1, &copy).map_err(|e| e.to_string())?;
    let result = (|| {
        let fs = crash::fsck(&copy).map_err(|e| e.to_string())?;
        let f = std::fs::File::open(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        let ext4 = Ext4::open(&f).map_err(|e| format!("the root filesystem does not open: {e}"))?;
        let store = check_docker(&ext4, expected).map_err(|e| format!("reading the store: {e}"))?;
        Ok((fs, store))
    })();
    let _ = std::fs::remove_file(&copy);
    result
}

/// Judge the crash state in `bundle` (its `crash.qcow2`): offline, then
/// (unless `run` is `None`: offline only) by booting it, then offline
/// again on what that boot left. With `recovery` (a trigger and a write
/// log path), that boot's write stream is recorded for a second cut.
#[allow(clippy::too_many_arguments)]
fn judge_bundle(
    s: &Scenario,
    bundle: &Path,
    root: (u64, u64),
    expected: &[String],
    work: &Path,
    run: Option<&RunOptions>,
    c: &mut PowerCut,
    recovery: Option<&(&CutTrigger, PathBuf)>,
) -> Option<RecoveryBoot> {
    let crash_disk = bundle.join("crash.qcow2");
    let (fs, crash_store) = match offline(&crash_disk, root, expected, work, "crash") {
        Ok((fs, st)) => (fs, Some(st)),
        Err(e) => (FsFindings { clean: false, summary: e }, None),
    };
    eprintln!(
        "   crash state: filesystem {}, store {}",
        if fs.clean { "clean" } else { "DAMAGED" },
        crash_store.as_ref().map(|x| x.verdict.as_str()).unwrap_or("unreadable")
    );
    let Some(run) = run else {
        c.evidence = crash_evidence(&fs, crash_store.as_ref());
        c.evidence.push("not powered on (--offline)".into());
        c.filesystem = Some(fs);
        c.crash_store = crash_store;
        return None;
    };
    eprintln!("   powering the crash state on again");
    let after_disk = work.join("after.qcow2");
    let _ = std::fs::remove_file(&after_disk);
    let mut extra = Extra { disk: Some(crash_disk), keep_overlay: Some(after_disk.clone()), ..Default::default() };
    if let Some((t, rlog)) = recovery {
        match std::fs::File::create(rlog) {
            Ok(_) => {
                extra.write_log = Some(rlog.clone());
                extra.record = Some(record_spec(t, None, false));
            }
            Err(e) => c.evidence.push(format!("no second cut: cannot create {}: {e}", rlog.display())),
        }
    }
    let reboot = run_one_with(s, &bundle.join("reboot"), run, &mut extra);
    if let Err(e) = airboot_report::write_report(&bundle.join("reboot"), &reboot) {
        eprintln!("error: cannot write the reboot report: {e}");
    }
    let findings = RebootFindings::of(&reboot);
    if reboot.verdict == Verdict::Error && findings.failures.iter().any(|f| f.starts_with("interrupted")) {
        c.error = Some("interrupted while powering the crash state on".into());
        return None;
    }
    let after = if after_disk.exists() {
        match offline(&after_disk, root, expected, work, "after") {
            Ok((_, st)) => Some(st),
            Err(e) => {
                c.evidence.push(format!("after the next boot: could not check the store: {e}"));
                None
            }
        }
    } else {
        None
    };
    let _ = std::fs::remove_file(&after_disk);
    let j = judge(&fs, crash_store.as_ref(), &findings, after.as_ref());
    eprintln!("   => {}", j.outcome.as_str());
    c.outcome = Some(j.outcome);
    c.evidence.splice(0..0, j.evidence);
    c.filesystem = Some(fs);
    c.crash_store = crash_store;
    c.after_store = after;
    extra.recorded.map(|recorded| RecoveryBoot { recorded, argv: reboot.qemu.argv.clone() })
}

pub fn repro(bundle: &Path, report_dir: Option<PathBuf>, run: RunOptions) -> i32 {
    let info: BundleInfo = match std::fs::read_to_string(bundle.join("cut.json"))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "error: {}/cut.json: {e} (a bundle is a cut-NN-<mode> folder that `airboot cut` wrote)",
                bundle.display()
            );
            return 2;
        }
    };
    if !bundle.join("crash.qcow2").is_file() {
        eprintln!("error: {}/crash.qcow2 is missing: the bundle is incomplete", bundle.display());
        return 2;
    }
    let s = match load_one(Path::new(&info.scenario_file)) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let Some(arch) = Arch::parse(&info.arch) else {
        eprintln!("error: {}/cut.json: unknown arch {:?}", bundle.display(), info.arch);
        return 2;
    };
    let input = PathBuf::from(&info.input);
    if !input.exists() {
        eprintln!(
            "error: {} (the image this bundle was cut from) no longer exists: its crash.qcow2 is a delta over that exact image, so the bundle cannot be reproduced without it (an older fixture build is deleted by `airboot images clean`)",
            input.display()
        );
        return 2;
    }
    if let Some(want) = &info.input_sha256 {
        match sha256_file(&input) {
            Ok(h) if &h == want => {}
            Ok(_) => {
                eprintln!(
                    "error: {} is not the image this bundle was cut from (sha256 differs): its crash.qcow2 is a delta over that exact image",
                    input.display()
                );
                return 2;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    }
    let root = match open_image(&input).ok().and_then(|v| detect::root_partition(v.as_ref(), arch)) {
        Some(r) => (r.start, r.len),
        None => {
            eprintln!("error: no root filesystem found in {}", input.display());
            return 2;
        }
    };
    // A fixture is booted from the build the bundle was cut from (its
    // kernel and initramfs), not from today's build of that fixture.
    let mut run = run;
    if matches!(s.image.source, ImageSource::Fixture(_)) {
        run.fixture_build = input.parent().filter(|d| d.join("fixture.json").is_file()).map(Path::to_path_buf);
    }
    let base = report_dir.unwrap_or_else(|| bundle.join(format!("repro-{}", stamp())));
    let work = match tempfile::Builder::new().prefix("airboot-repro-").tempdir() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot create a temporary folder: {e}");
            return 2;
        }
    };
    // Judge a copy of the bundle's disk state, so the bundle stays as cut.
    let _ = std::fs::create_dir_all(&base);
    let expected: Vec<String> = s.expect.images.iter().map(|i| i.reference.clone()).collect();
    let Some(mode) = CutMode::parse(&info.mode) else {
        eprintln!("error: {}/cut.json: unknown mode {:?}", bundle.display(), info.mode);
        return 2;
    };
    let mut c =
        PowerCut::new(mode, info.trigger.clone(), info.position.clone(), info.seed, bundle.display().to_string());
    (c.lost_writes, c.lost_bytes, c.torn_writes) = (info.lost_writes, info.lost_bytes, info.torn_writes);
    let judged = base.join("state");
    let _ = std::fs::create_dir_all(&judged);
    if let Err(e) = std::fs::copy(bundle.join("crash.qcow2"), judged.join("crash.qcow2")) {
        eprintln!("error: cannot copy the crash state: {e}");
        return 2;
    }
    eprintln!("== repro {}: {} cut, {}", bundle.display(), info.mode, info.trigger);
    judge_bundle(&s, &judged, root, &expected, work.path(), Some(&run), &mut c, None);
    c.during_recovery_of = info.during_recovery_of.clone();
    let _ = std::fs::remove_file(judged.join("crash.qcow2"));
    let mut report = Report::new(&s.name, &s.file.display().to_string(), now_rfc3339());
    report.verdict = Verdict::Pass;
    // Checked against the bundle above; `finish` checks it again at the end.
    report.image.path = Some(input.display().to_string());
    report.image.sha256_before = info.input_sha256.clone();
    let now = c.outcome.map(|o| o.as_str()).unwrap_or("not judged");
    // A bundle cut with --offline has no outcome to compare with.
    let same = info.outcome.as_deref().is_none_or(|o| o == now);
    report.notes.push(match &info.outcome {
        Some(o) => format!(
            "reproduction of {}: recorded outcome {o}, now {now} ({})",
            bundle.display(),
            if same { "same verdict" } else { "DIFFERENT verdict" }
        ),
        None => format!("reproduction of {}: cut with --offline (no recorded outcome), now {now}", bundle.display()),
    });
    report.power_cuts.push(c);
    let rec = Extra { input: Some((input, DiskFormat::Qcow2)), ..Default::default() };
    let code = finish(&base, &mut report, &rec, false);
    outln!("   {}", report.notes.last().cloned().unwrap_or_default());
    if !same && code != 2 { 1 } else { code }
}

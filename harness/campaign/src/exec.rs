//! Running a campaign: record one boot's write stream, cut it at every
//! planned point in every mode, and judge each crash state; a second cut
//! falls in the boot that powers a crash state on. Progress and results go
//! out as events; the report is complete (and written) after each cut.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use airboot_core::cut::PowerCut;
use airboot_core::cut::writelog::{CrashState, WriteLog, crash_state};
use airboot_core::disk::{ReadAt, detect};
use airboot_core::event::{EventSink, RunEvent};
use airboot_core::report::Report;
use airboot_core::scenario::{CutTrigger, PowerCutSpec, Scenario};
use airboot_model::{Arch, CutMode, DiskFormat, FailureCode, Verdict};
use airboot_qemu::crash;
use airboot_qemu::disk::{open_image, sha256_file};
use airboot_qemu::process::interrupted;
use airboot_qemu::vm::Recorded;
use airboot_session::{BootOptions, Env, clock, run_boot};

use crate::CampaignError;
use crate::bundle::{BUNDLE_SCHEMA, BundleInfo, SCENARIO_COPY};
use crate::judge::{Judge, RecoveryBoot};
use crate::plan::{CutPoint, cut_points, position, record_spec};

pub struct CutOptions {
    /// Seed for every random choice (default: the scenario's, else chosen).
    pub seed: Option<u64>,
    /// Modes overriding `power_cut.modes`.
    pub modes: Vec<CutMode>,
    /// Default: `reports/<stamp>-cut-<name>`.
    pub report_dir: Option<PathBuf>,
    /// Judge crash states offline only (no power-on, no outcome).
    pub offline: bool,
    /// Workers judging an exploration's states offline (default: the
    /// host's cores).
    pub jobs: Option<usize>,
    /// An exploration: judge the states of this recording (a campaign's
    /// `record/` folder) instead of recording a boot.
    pub recording: Option<PathBuf>,
    /// With `recording`: its input image, when not where the recording
    /// says (the same sha256).
    pub input: Option<PathBuf>,
    /// An exploration: judge only slice `k` of `n` (from 1) of its states.
    pub shard: Option<(usize, usize)>,
    /// An exploration: record the boot and keep the recording, judge nothing.
    pub record_only: bool,
    pub boot: BootOptions,
}

fn default_seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1) % 1_000_000
}

/// Run the campaign of `s`'s `[power_cut]`. Returns the exit status: 0
/// every cut survived, 1 some did not, 2 could not judge. An `Err` is a
/// refusal before anything booted.
pub fn cut(s: &Scenario, opts: &CutOptions, env: &Env, sink: &mut dyn EventSink) -> Result<i32, CampaignError> {
    let Some(mut pc) = s.power_cut.clone() else {
        return Err(CampaignError::Refused(format!(
            "{} has no [power_cut] section: add one saying where to cut (`at = \"<console regex>\"`; see scenarios/README.md)",
            s.file.display()
        )));
    };
    if !opts.modes.is_empty() {
        pc.modes = opts.modes.clone();
    }
    let by_event = [Some(&pc.trigger), pc.recovery.as_ref()].into_iter().flatten().any(|t| t.probe_event);
    if by_event && !s.image.has_probe(None) {
        return Err(CampaignError::Refused(format!(
            "{}: power_cut `load` is the guest probe's event, and this image does not carry the probe: \
             set `probe = true` under [image] if it runs `airboot-probe serve`, or place the cut with `at = \"<console regex>\"`",
            s.file.display()
        )));
    }
    if (opts.recording.is_some() || opts.shard.is_some() || opts.record_only) && pc.explore.is_none() {
        return Err(CampaignError::Refused(format!(
            "{}: --recording, --shard and --record-only belong to an exploration: set `points = \"all\"` under [power_cut]",
            s.file.display()
        )));
    }
    if opts.input.is_some() && opts.recording.is_none() {
        return Err(CampaignError::Refused(
            "--input names the image under a recording: give it with --recording DIR".into(),
        ));
    }
    if opts.recording.is_some() && opts.record_only {
        return Err(CampaignError::Refused(
            "--record-only makes a recording and --recording judges one: give one of them".into(),
        ));
    }
    if let Some((k, n)) = opts.shard
        && (n == 0 || k == 0 || k > n)
    {
        return Err(CampaignError::Refused(format!("--shard {k}/{n}: give K/N with 1 <= K <= N")));
    }
    let seed = opts.seed.or(pc.seed).unwrap_or_else(default_seed);
    let base = opts
        .report_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-cut-{}", clock::stamp(), s.name)));
    std::fs::create_dir_all(&base).map_err(|source| CampaignError::ReportDir { path: base.clone(), source })?;
    let _claim = airboot_qemu::process::lock_dir(&base).map_err(CampaignError::Busy)?;
    let work = airboot_qemu::scratch::temp_dir("cut").map_err(CampaignError::Workdir)?;
    let write_log = work.path().join("writes.log");
    std::fs::File::create(&write_log).map_err(CampaignError::Workdir)?;

    sink.event(RunEvent::CampaignStarted { scenario: s.name.clone(), dir: base.clone() });
    let rec_dir = base.join("record");
    // What to cut: a recording made before, or a boot recorded now.
    let (mut report, source) = match &opts.recording {
        Some(rdir) => {
            let mut report = Report::new(&s.name, &s.file.display().to_string(), clock::now_rfc3339());
            report.verdict = Verdict::Pass;
            let source = crate::recording::open(s, rdir, opts.input.as_deref(), &mut report, sink);
            (report, source)
        }
        None => record(s, &pc, &rec_dir, &write_log, opts, env, sink),
    };
    let input = source.as_ref().ok().map(|src| src.input.0.clone());
    let outcome = source.and_then(|src| {
        if opts.record_only {
            let note = format!(
                "recorded only: judge it with `airboot cut {} --recording {} [--shard K/N]`",
                s.file.display(),
                rec_dir.display()
            );
            sink.event(RunEvent::CutStep(note.clone()));
            report.notes.push(note);
            return Ok(());
        }
        let mut c = Campaign {
            s,
            pc: &pc,
            seed,
            base: &base,
            work: work.path(),
            write_log: &src.log,
            input: src.input,
            arch: src.arch,
            opts,
            env,
            recording_id: src.recording_id,
        };
        c.cut_all(&src.recorded, &mut report, sink)
    });
    if let Err(e) = outcome {
        sink.event(RunEvent::CutStep(format!("error: {e}")));
        report.error(FailureCode::PowerCut, e, None);
    }
    let headline = report.exploration.as_ref().map(|x| x.headline.clone());
    Ok(finish(&base, &mut report, input.as_deref(), opts.offline, headline, sink))
}

/// What a campaign cuts: a write log, the input image it lies over, and
/// where the recorder saw its console lines in it.
pub(crate) struct Source {
    pub(crate) log: PathBuf,
    pub(crate) input: (PathBuf, DiskFormat),
    pub(crate) arch: Arch,
    pub(crate) recorded: Recorded,
    /// An exploration's recording (its write log's sha256).
    pub(crate) recording_id: Option<String>,
}

/// Record one boot's write stream into `write_log` (its report in
/// `rec_dir`); an exploration keeps it there as a recording.
fn record(
    s: &Scenario,
    pc: &PowerCutSpec,
    rec_dir: &Path,
    write_log: &Path,
    opts: &CutOptions,
    env: &Env,
    sink: &mut dyn EventSink,
) -> (Report, Result<Source, String>) {
    let rec_opts = BootOptions {
        write_log: Some(write_log.to_path_buf()),
        record: Some(record_spec(&pc.trigger, pc.until.as_deref(), true)),
        ..opts.boot.clone()
    };
    let rec = run_boot(s, rec_dir, &rec_opts, env, sink);
    let mut report = rec.report.clone();
    report.notes.push(format!("the recorded boot's own report: {}/report.json", rec_dir.display()));
    if rec.recorded.as_ref().is_some_and(|r| r.stopped.is_some()) {
        // Stopped on purpose for the cut: what the run had not seen yet is no failure.
        for f in std::mem::take(&mut report.failures) {
            report.notes.push(format!("recorded boot (stopped for the cut): {f}"));
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
    let source = match (rec.input, rec.arch, rec.recorded) {
        (Some(input), Some(arch), Some(recorded)) if pc.explore.is_some() => {
            // An exploration keeps its recording (shards judge it).
            crate::recording::keep(s, rec_dir, write_log, &input, arch, &recorded, &report).map(|id| Source {
                log: rec_dir.join(crate::recording::WRITE_LOG),
                input,
                arch,
                recorded,
                recording_id: Some(id),
            })
        }
        (Some(input), Some(arch), Some(recorded)) => {
            Ok(Source { log: write_log.to_path_buf(), input, arch, recorded, recording_id: None })
        }
        (None, _, _) => Err("the recorded boot did not get as far as the image".into()),
        (_, None, _) => Err("the recorded boot did not get as far as the architecture".into()),
        (_, _, None) => Err("the recorded boot ended before QEMU ran".into()),
    };
    (report, source)
}

/// Check the input is unchanged, decide the exit status, and say the
/// campaign is over. With `offline`, a cut "survived" when its crash
/// state holds a clean filesystem and a whole (old or new) store.
pub(crate) fn finish(
    base: &Path,
    report: &mut Report,
    input: Option<&Path>,
    offline: bool,
    headline: Option<String>,
    sink: &mut dyn EventSink,
) -> i32 {
    if let Some(input) = input
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
    let explored = report.exploration.as_ref().map(|x| &x.tally);
    let errors = report.verdict == Verdict::Error
        || report.power_cuts.iter().any(|c| c.error.is_some() || (!offline && c.outcome.is_none()))
        || report.exploration.as_ref().is_some_and(|x| x.states.iter().any(|s| s.error.is_some()));
    let exit_code = if errors {
        2
    } else if report.power_cuts.iter().all(|c| c.survived(offline))
        && explored.is_none_or(|t| t.survived == t.with_outcome)
    {
        0
    } else {
        1
    };
    sink.event(RunEvent::CampaignFinished {
        report: Box::new(report.clone()),
        dir: base.to_path_buf(),
        offline,
        exit_code,
        headline,
    });
    exit_code
}

/// A campaign under way, once its boot is recorded.
pub(crate) struct Campaign<'a> {
    pub(crate) s: &'a Scenario,
    pub(crate) pc: &'a PowerCutSpec,
    pub(crate) seed: u64,
    pub(crate) base: &'a Path,
    pub(crate) work: &'a Path,
    pub(crate) write_log: &'a Path,
    pub(crate) input: (PathBuf, DiskFormat),
    pub(crate) arch: Arch,
    pub(crate) opts: &'a CutOptions,
    pub(crate) env: &'a Env<'a>,
    /// An exploration's recording (its write log's sha256).
    pub(crate) recording_id: Option<String>,
}

/// A second cut: the first cut it follows, and the recorded boot that
/// powered the first cut's crash state on (its trigger and write log).
struct SecondCut<'a> {
    first: &'a BundleInfo,
    first_k: usize,
    mode: CutMode,
    seed: u64,
    trigger: &'a CutTrigger,
    pub(crate) log: &'a Path,
    boot: &'a RecoveryBoot,
}

/// One crash state to make and judge.
pub(crate) struct Job<'a> {
    /// Where its bundle goes.
    pub(crate) bundle: &'a Path,
    /// The disk the recorded boot ran on, and the writes the cut keeps
    /// of that boot's write log.
    pub(crate) from: (&'a Path, DiskFormat),
    pub(crate) log: &'a Path,
    pub(crate) state: &'a CrashState,
    /// The recorded boot's console.
    pub(crate) console: &'a Path,
    pub(crate) info: &'a BundleInfo,
    pub(crate) power_on: bool,
    pub(crate) recovery: Option<(&'a CutTrigger, PathBuf)>,
}

fn read_write_log(path: &Path, disk_size: u64, what: &str) -> Result<WriteLog, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open {what}: {e}"))?;
    let len = f.size();
    WriteLog::parse(&f, len, disk_size).map_err(|e| format!("{what}: {e}"))
}

impl Campaign<'_> {
    pub(crate) fn cut_all(
        &mut self,
        recorded: &Recorded,
        report: &mut Report,
        sink: &mut dyn EventSink,
    ) -> Result<(), String> {
        let (input, _) = &self.input;
        let view = open_image(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
        let disk_size = view.size();
        let root = detect::root_partition(view.as_ref(), self.arch)
            .ok_or_else(|| format!("no root filesystem found in {}: cannot check its store", input.display()))?;
        drop(view);
        let log = read_write_log(self.write_log, disk_size, "the write log")?;
        let total = log.counts(log.entries.len());
        sink.event(RunEvent::CutStep(format!(
            "recorded {} requests: {} writes ({} MiB), {} flushes",
            log.entries.len(),
            total.0,
            total.2 >> 20,
            total.1
        )));
        let judge = Judge {
            s: self.s,
            root: (root.start, root.len),
            expected: self.s.expect.images.iter().map(|i| i.reference.clone()).collect(),
            work: self.work,
            env: self.env,
            boot: &self.opts.boot,
        };
        if let Some(ex) = self.pc.explore {
            return self.explore(ex, recorded, &log, &judge, report, sink);
        }
        let points =
            cut_points(&self.pc.trigger, self.pc.until.as_deref(), self.pc.points, &log, recorded).map_err(|e| e.0)?;
        let n = points.len() * self.pc.modes.len();
        let mut k = 0;
        for CutPoint { entry, placed } in &points {
            for mode in &self.pc.modes {
                k += 1;
                if interrupted() {
                    return Ok(());
                }
                let cut_seed = self.seed.wrapping_add(k as u64 - 1);
                let state = crash_state(&log, *entry, *mode, cut_seed);
                let bundle = self.base.join(format!("cut-{k:02}-{}", mode.as_str()));
                sink.event(RunEvent::CutStarted {
                    k,
                    n,
                    mode: *mode,
                    write: log.counts(*entry).0,
                    trigger: placed.clone(),
                    second_of: None,
                });
                let (mut c, info) =
                    self.new_cut(*mode, placed, position(&log, *entry), cut_seed, &bundle, &state, report);
                // With a second cut, this crash state is powered on even with
                // --offline: that boot is where the second cut falls.
                let power_on = !self.opts.offline || self.pc.recovery.is_some();
                let recovery = self.pc.recovery.as_ref().map(|t| (t, self.work.join("recovery.log")));
                let console = self.base.join("record/console.log");
                let job = Job {
                    bundle: &bundle,
                    from: (input, self.input.1),
                    log: self.write_log,
                    state: &state,
                    console: &console,
                    info: &info,
                    power_on,
                    recovery: recovery.clone(),
                };
                let made = self.make_and_judge(&judge, job, &mut c, sink);
                let rboot = match made {
                    Ok(r) => r,
                    Err(e) => {
                        c.error = Some(e);
                        report.power_cuts.push(c);
                        continue;
                    }
                };
                let second = match (recovery, rboot) {
                    (Some((t, rlog)), Some(rboot)) => {
                        let second = SecondCut {
                            first: &info,
                            first_k: k,
                            mode: *mode,
                            seed: cut_seed.wrapping_add(1 << 32),
                            trigger: t,
                            log: &rlog,
                            boot: &rboot,
                        };
                        let made = self.second_cut(&judge, &second, &bundle, disk_size, sink);
                        let _ = std::fs::remove_file(rlog);
                        match made {
                            Ok(c2) => Some(c2),
                            Err(e) => {
                                sink.event(RunEvent::CutStep(format!("no second cut: {e}")));
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
                report.power_cuts.push(c.clone());
                // Keep the report current: a long sweep can be read (or stopped) part way.
                sink.event(RunEvent::CutJudged {
                    cut: Box::new(c),
                    report: Box::new(report.clone()),
                    dir: self.base.to_path_buf(),
                });
                if let Some(c2) = second {
                    report.power_cuts.push(c2.clone());
                    sink.event(RunEvent::CutJudged {
                        cut: Box::new(c2),
                        report: Box::new(report.clone()),
                        dir: self.base.to_path_buf(),
                    });
                }
            }
        }
        Ok(())
    }

    /// A cut not judged yet, and its bundle's info.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_cut(
        &self,
        mode: CutMode,
        placed: &str,
        position: airboot_core::cut::CutPosition,
        seed: u64,
        bundle: &Path,
        state: &CrashState,
        report: &Report,
    ) -> (PowerCut, BundleInfo) {
        let mut c = PowerCut::new(mode, placed.to_string(), position, seed, bundle.display().to_string());
        (c.lost_writes, c.lost_bytes, c.torn_writes) = (state.lost_writes, state.lost_bytes, state.torn_writes);
        let input = &self.input.0;
        let info = BundleInfo {
            schema: Some(BUNDLE_SCHEMA.into()),
            scenario_file: std::path::absolute(&self.s.file).unwrap_or(self.s.file.clone()).display().to_string(),
            scenario_copy: Some(SCENARIO_COPY.into()),
            input: std::path::absolute(input).unwrap_or(input.clone()).display().to_string(),
            input_sha256: report.image.sha256_before.clone(),
            arch: self.arch,
            mode,
            trigger: placed.to_string(),
            position: c.position.clone(),
            seed,
            lost_writes: c.lost_writes,
            lost_bytes: c.lost_bytes,
            torn_writes: c.torn_writes,
            record_argv: report.qemu.argv.clone(),
            outcome: None,
            during_recovery_of: None,
        };
        (c, info)
    }

    /// One cut's bundle: the crash state written into
    /// `bundle/crash.qcow2`, the recorded boot's console, the scenario's
    /// copy, the judgement, and `cut.json` (the job's info with the
    /// outcome). An error when the crash state could not be built.
    pub(crate) fn make_and_judge(
        &self,
        judge: &Judge,
        job: Job,
        c: &mut PowerCut,
        sink: &mut dyn EventSink,
    ) -> Result<Option<RecoveryBoot>, String> {
        let bundle = job.bundle;
        std::fs::create_dir_all(bundle).map_err(|e| format!("cannot create {}: {e}", bundle.display()))?;
        crash::materialize(job.from.0, job.from.1, job.log, job.state, &bundle.join("crash.qcow2"))
            .map_err(|e| format!("building the crash state: {e}"))?;
        let _ = std::fs::copy(job.console, bundle.join("record-console.log"));
        let _ = std::fs::copy(&self.s.file, bundle.join(SCENARIO_COPY));
        let rboot = judge.crash_state(bundle, c, job.power_on, job.recovery, sink);
        let info = BundleInfo { outcome: c.outcome, ..job.info.clone() };
        if let Err(e) = info.write(bundle) {
            c.evidence.push(format!("the bundle is incomplete: {e}"));
        }
        Ok(rboot)
    }

    /// The second cut: in the boot that powered the first cut's crash
    /// state on (recorded into `rlog`), at the recovery trigger, with the
    /// same mode; its crash state is a qcow2 over the first one, judged
    /// like any.
    fn second_cut(
        &self,
        judge: &Judge,
        second: &SecondCut,
        first_bundle: &Path,
        disk_size: u64,
        sink: &mut dyn EventSink,
    ) -> Result<PowerCut, String> {
        let log = read_write_log(second.log, disk_size, "the recovery boot's write log")?;
        let CutPoint { entry, placed } =
            cut_points(second.trigger, None, 1, &log, &second.boot.recorded).map_err(|e| e.0)?.remove(0);
        let state = crash_state(&log, entry, second.mode, second.seed);
        let bundle = first_bundle.join("recovery-cut");
        let trigger = format!(
            "second cut, in the boot powering cut {}'s crash state on: {placed} (power_cut.recovery)",
            second.first_k
        );
        sink.event(RunEvent::CutStarted {
            k: 1,
            n: 1,
            mode: second.mode,
            write: log.counts(entry).0,
            trigger: placed.clone(),
            second_of: Some(second.first_k),
        });
        let mut c = PowerCut::new(
            second.mode,
            trigger.clone(),
            position(&log, entry),
            second.seed,
            bundle.display().to_string(),
        );
        (c.lost_writes, c.lost_bytes, c.torn_writes) = (state.lost_writes, state.lost_bytes, state.torn_writes);
        c.during_recovery_of = Some(first_bundle.display().to_string());
        let info = BundleInfo {
            mode: second.mode,
            trigger,
            position: c.position.clone(),
            seed: second.seed,
            lost_writes: c.lost_writes,
            lost_bytes: c.lost_bytes,
            torn_writes: c.torn_writes,
            record_argv: second.boot.argv.clone(),
            outcome: None,
            during_recovery_of: Some("..".into()),
            ..second.first.clone()
        };
        let (from, console) = (first_bundle.join("crash.qcow2"), first_bundle.join("reboot/console.log"));
        let job = Job {
            bundle: &bundle,
            from: (&from, DiskFormat::Qcow2),
            log: second.log,
            state: &state,
            console: &console,
            info: &info,
            power_on: !self.opts.offline,
            recovery: None,
        };
        self.make_and_judge(judge, job, &mut c, sink)?;
        Ok(c)
    }
}

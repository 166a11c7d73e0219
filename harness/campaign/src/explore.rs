//! An exploration (`[power_cut] points = "all"`): every flush and FUA
//! write in the sweep's window is a cut point, every mode's states there
//! are judged offline in place (one working copy per worker, moved forward
//! along the log: `airboot_qemu::workspace`), states with the same bytes
//! are judged once, and the states are grouped by what decides their
//! fate (`core::cut::explore::fingerprint`). Then one representative of
//! each class, and a seeded sample of the other members, are powered on;
//! every other member inherits its representative's outcome.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use airboot_core::cut::explore::{self, Exploration, ExploredState, StateClass, StateSpec, fingerprint, state_key};
use airboot_core::cut::store::StoreCheck;
use airboot_core::cut::writelog::{CrashState, WriteLog, crash_state};
use airboot_core::cut::{FsFindings, PowerCut};
use airboot_core::disk::ext4::Ext4;
use airboot_core::event::{self, EventSink, RunEvent};
use airboot_core::report::Report;
use airboot_core::scenario::Explore;
use airboot_model::Engine;
use airboot_qemu::process::interrupted;
use airboot_qemu::vm::Recorded;
use airboot_qemu::workspace::{Workspace, scratch_dir};

use crate::bundle::BundleInfo;
use crate::exec::{Campaign, Job};
use crate::judge::Judge;
use crate::plan::{position, window};

/// States judged again from scratch in every exploration.
const CROSS_CHECKS: usize = 3;

/// What the offline checks found in one state.
struct Offline {
    fs: FsFindings,
    store: Option<StoreCheck>,
    markers: Vec<(String, bool)>,
}

/// Every state's spec and crash state; this run's slice starts at `base`.
struct Slice<'a> {
    specs: &'a [StateSpec],
    crash: &'a [CrashState],
    base: usize,
}

/// What a worker needs, shared.
struct Shared<'a> {
    log: &'a WriteLog,
    crash: &'a [CrashState],
    input: &'a Path,
    root: (u64, u64),
    log_path: &'a Path,
    engine: Engine,
    expected: &'a [String],
    markers: &'a [String],
}

/// Read the store and the markers of a judged filesystem.
fn read_state(f: &std::fs::File, fs: FsFindings, sh: &Shared) -> Offline {
    let ext4 = match Ext4::open(f) {
        Ok(e) => e,
        // As a single cut judges it: a filesystem the reader cannot open
        // is damaged, and its store unreadable.
        Err(e) => {
            let fs =
                FsFindings { clean: false, summary: format!("{}; the root filesystem does not open: {e}", fs.summary) };
            return Offline { fs, store: None, markers: sh.markers.iter().map(|m| (m.clone(), false)).collect() };
        }
    };
    let store = airboot_core::engine::model(sh.engine).check_store(&ext4, sh.expected).ok();
    let markers = sh.markers.iter().map(|m| (m.clone(), matches!(ext4.lookup(m, true), Ok(Some(_))))).collect();
    Offline { fs, store, markers }
}

/// Judge the states `chunk` (indices into `sh.crash`, in apply order) on
/// one working copy in `dir`, sending each result as it comes.
fn work(
    k: usize,
    chunk: &[usize],
    sh: &Shared,
    dir: &Path,
    tx: &mpsc::Sender<(usize, Result<Offline, String>)>,
) -> u64 {
    let mut ws: Option<Workspace> = None;
    let mut runs = 0;
    for &i in chunk {
        if interrupted() {
            break;
        }
        let st = &sh.crash[i];
        let result = (|| {
            if ws.as_ref().is_none_or(|w| w.spoilt().is_some() || w.applied() > st.durable_end) {
                if let Some(w) = ws.take() {
                    runs += w.fsck_runs;
                }
                ws = Some(
                    Workspace::create(sh.input, sh.root, sh.log_path, dir, &format!("root-{k}"))
                        .map_err(|e| format!("making the working copy: {e}"))?,
                );
            }
            let w = ws.as_mut().expect("made above");
            w.advance(sh.log, st.durable_end).map_err(|e| e.to_string())?;
            w.judge(&st.pieces[st.extras_from..], dir, |f, fs| read_state(f, fs, sh)).map_err(|e| e.to_string())
        })();
        if tx.send((i, result)).is_err() {
            break;
        }
    }
    runs + ws.map_or(0, |w| w.fsck_runs)
}

impl Campaign<'_> {
    /// Explore the window: judge every state offline, classify, power on
    /// the representatives (not with --offline), and report.
    pub(crate) fn explore(
        &self,
        ex: Explore,
        recorded: &Recorded,
        log: &WriteLog,
        judge: &Judge,
        report: &mut Report,
        sink: &mut dyn EventSink,
    ) -> Result<(), String> {
        let until = self.pc.until.as_deref().ok_or("an exploration needs power_cut.until")?;
        let w = window(&self.pc.trigger, until, log, recorded).map_err(|e| e.0)?;
        let (from, to, between) = (w.from, w.to, w.between());
        let points = explore::points(log, from, to);
        if points.is_empty() {
            return Err(format!("no flush or FUA write {between}: nothing a power cut could lose there"));
        }
        let specs = explore::states(&points, &self.pc.modes, ex.states_per_point, self.seed);
        let crash: Vec<CrashState> = specs.iter().map(|s| crash_state(log, s.entry, s.mode, s.seed)).collect();
        // This run's slice: all of them, or a shard's.
        let range = match self.opts.shard {
            Some((k, n)) => explore::shard_range(specs.len(), k, n),
            None => 0..specs.len(),
        };
        // The same bytes are judged once.
        let keys: Vec<u64> = crash.iter().map(state_key).collect();
        let mut first: HashMap<u64, usize> = HashMap::new();
        let same_as: Vec<Option<usize>> = (0..specs.len())
            .map(|i| {
                if !range.contains(&i) {
                    return None;
                }
                let f = *first.entry(keys[i]).or_insert(i);
                (f != i).then_some(f)
            })
            .collect();
        let mut distinct: Vec<usize> = range.clone().filter(|&i| same_as[i].is_none()).collect();
        distinct.sort_by_key(|&i| (crash[i].durable_end, i));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = self.opts.jobs.unwrap_or(cores).clamp(1, distinct.len().max(1));
        let scratch = scratch_dir(judge.root.1.saturating_mul(jobs as u64), self.work);
        let dir = airboot_qemu::scratch::temp_dir_in("explore", &scratch)
            .map_err(|e| format!("cannot make a working folder in {}: {e}", scratch.display()))?;
        let shard = self
            .opts
            .shard
            .map(|(k, n)| format!(" (shard {k}/{n}: states {} to {})", range.start, range.end.max(1) - 1))
            .unwrap_or_default();
        sink.event(RunEvent::CutStep(format!(
            "exploring {} state(s) at {} point(s) {between}{shard}: {} distinct, judged offline by {jobs} worker(s) in {}",
            range.len(),
            points.len(),
            distinct.len(),
            scratch.display()
        )));
        let expected = judge.expected.clone();
        let sh = Shared {
            log,
            crash: &crash,
            input: &self.input.0,
            root: judge.root,
            log_path: self.write_log,
            engine: self.s.expect.engine,
            expected: &expected,
            markers: &self.pc.markers,
        };
        let started = Instant::now();
        let mut found: Vec<Option<Result<Offline, String>>> = (0..specs.len()).map(|_| None).collect();
        let per = distinct.len().div_ceil(jobs);
        let fsck_runs = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            let handles: Vec<_> = distinct
                .chunks(per.max(1))
                .enumerate()
                .map(|(k, chunk)| {
                    let (tx, sh, dir) = (tx.clone(), &sh, dir.path());
                    scope.spawn(move || work(k, chunk, sh, dir, &tx))
                })
                .collect();
            drop(tx);
            let mut done = 0;
            let mut said = Instant::now();
            for (i, r) in rx {
                found[i] = Some(r);
                done += 1;
                if said.elapsed().as_secs_f64() >= 5.0 || done == distinct.len() {
                    said = Instant::now();
                    let t = started.elapsed().as_secs_f64();
                    sink.event(RunEvent::CutStep(format!(
                        "judged {done}/{} distinct state(s) offline in {t:.1}s ({:.1}/s)",
                        distinct.len(),
                        done as f64 / t.max(1e-9)
                    )));
                }
            }
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum::<u64>()
        });
        let judge_s = started.elapsed().as_secs_f64();
        // The working copies are gone with their workers; their folder too.
        drop(dir);
        let repeats = range.len() - distinct.len();
        if repeats > 0 {
            report.notes.push(format!(
                "exploration: {repeats} state(s) are the same bytes as an earlier one (`same_as`): judged once, \
                 journal replay and e2fsck not run again for them"
            ));
        }
        if interrupted() {
            return Err("interrupted while judging the states offline".into());
        }
        let cross = self.cross_check(&distinct, &crash, &found, judge, sink);
        let mut states: Vec<ExploredState> = range
            .clone()
            .map(|i| {
                let s = &specs[i];
                let judged = found[same_as[i].unwrap_or(i)].as_ref();
                explored(i, s, &points[s.point], &crash[i], keys[i], same_as[i], judged)
            })
            .collect();
        let mut classes = explore::classify(&mut states);
        sink.event(RunEvent::CutStep(format!(
            "{} class(es) of state by what decides their fate (filesystem, store per image and layer, markers)",
            classes.len()
        )));
        let mut boots = (0, String::new(), 0.0);
        if !self.opts.offline {
            let on = Slice { specs: &specs, crash: &crash, base: range.start };
            boots = self.power_on(&mut classes, &mut states, ex.sample, &on, log, judge, report, sink);
        }
        let t = explore::tally(points.len(), &states, &classes, self.opts.offline);
        let headline = t.headline(self.opts.offline);
        let judged = distinct.len();
        report.exploration = Some(Box::new(Exploration {
            recording: self.recording_id.clone().unwrap_or_default(),
            shard: self.opts.shard,
            total_states: specs.len(),
            offline: self.opts.offline,
            window: (from, to),
            placed: between,
            modes: self.pc.modes.clone(),
            states_per_point: ex.states_per_point,
            seed: self.seed,
            tally: t,
            headline,
            judge_s,
            states_per_s: judged as f64 / judge_s.max(1e-9),
            jobs,
            scratch: scratch.display().to_string(),
            fsck_runs,
            boot_jobs: boots.0,
            boot_jobs_why: boots.1,
            boot_s: boots.2,
            cross_checked: cross.0,
            cross_check_mismatches: cross.1.clone(),
            classes,
            states,
        }));
        if !cross.1.is_empty() {
            return Err(format!(
                "judging in place disagreed with judging from scratch in {} of {} state(s) checked: {}",
                cross.1.len(),
                cross.0,
                cross.1.join("; ")
            ));
        }
        Ok(())
    }

    /// Judge a few states again from scratch, the way a single cut is (the
    /// state written into a qcow2 over the input, its root filesystem
    /// copied out, fsck'd and read), and compare: judging in place must
    /// find the same. The states: the last one and seeded others.
    fn cross_check(
        &self,
        distinct: &[usize],
        crash: &[CrashState],
        found: &[Option<Result<Offline, String>>],
        judge: &Judge,
        sink: &mut dyn EventSink,
    ) -> (usize, Vec<String>) {
        let mut rest: Vec<usize> = distinct.to_vec();
        let mut picks: Vec<usize> = rest.pop().into_iter().collect();
        let mut rng = airboot_core::cut::writelog::Rng::new(self.seed ^ 0xc405);
        while picks.len() < CROSS_CHECKS && !rest.is_empty() {
            picks.push(rest.swap_remove(rng.below(rest.len() as u64) as usize));
        }
        let mut mismatches = Vec::new();
        let mut checked = 0;
        for i in picks {
            let Some(Ok(mine)) = &found[i] else { continue };
            let disk = self.work.join("cross-check.qcow2");
            let _ = std::fs::remove_file(&disk);
            let theirs =
                airboot_qemu::crash::materialize(&self.input.0, self.input.1, self.write_log, &crash[i], &disk)
                    .map_err(|e| e.to_string())
                    .and_then(|()| judge.offline(&disk, "cross-check"));
            let _ = std::fs::remove_file(&disk);
            checked += 1;
            let ours = fingerprint(&mine.fs, mine.store.as_ref(), &[]);
            match theirs {
                Ok((fs, store)) => {
                    let from_scratch = fingerprint(&fs, Some(&store), &[]);
                    if from_scratch != ours {
                        mismatches.push(format!("state {i}: in place \"{ours}\", from scratch \"{from_scratch}\""));
                    }
                }
                // The slow way gives up on a filesystem it cannot open:
                // damaged, store unreadable.
                Err(e) => {
                    let gave_up = fingerprint(&FsFindings { clean: false, summary: e.clone() }, None, &[]);
                    if gave_up != ours {
                        mismatches.push(format!("state {i}: in place \"{ours}\", from scratch: {e}"));
                    }
                }
            }
        }
        sink.event(RunEvent::CutStep(format!(
            "cross-checked {checked} state(s) from scratch: {}",
            if mismatches.is_empty() {
                "the same findings".to_string()
            } else {
                format!("{} differ", mismatches.len())
            }
        )));
        (checked, mismatches)
    }

    /// Power on each class's representative and its sampled members, up to
    /// `--jobs` at once (each boot on its own thread, in its own working
    /// folder); give every member its outcome (inherited unless it was
    /// powered on). Returns how many booted at once, why, and the wall time.
    #[allow(clippy::too_many_arguments)]
    fn power_on(
        &self,
        classes: &mut [StateClass],
        states: &mut [ExploredState],
        sample: usize,
        on: &Slice,
        log: &WriteLog,
        judge: &Judge,
        report: &mut Report,
        sink: &mut dyn EventSink,
    ) -> (usize, String, f64) {
        let mut boots: Vec<(usize, usize, bool)> =
            classes.iter().enumerate().map(|(k, c)| (k, c.representative, true)).collect();
        boots.extend(explore::sample(classes, sample, self.seed).into_iter().map(|(k, m)| (k, m, false)));
        let n = boots.len();
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let m = &self.s.machine;
        let (mut jobs, mut why) = explore::boot_jobs(self.opts.jobs, n, cores, m.cpus, m.memory_mib, available_mib());
        // A working folder per boot under way: the first is the campaign's.
        let mut wdirs = vec![judge.work.to_path_buf()];
        for w in 1..jobs {
            let d = judge.work.join(format!("boot-{w}"));
            if let Err(e) = std::fs::create_dir_all(&d) {
                why = format!("{} at once: cannot make a working folder {}: {e}", wdirs.len(), d.display());
                break;
            }
            wdirs.push(d);
        }
        jobs = wdirs.len();
        sink.event(RunEvent::CutStep(format!("powering {n} state(s) on, {why}")));
        // Everything a boot needs, made here: its cut, its bundle's info.
        let planned: Vec<Planned> = boots
            .iter()
            .enumerate()
            .map(|(j, &(k, i, rep))| {
                let spec = &on.specs[i];
                let placed = format!(
                    "exploration state {} ({} {}, draw {}), class {} {}",
                    i,
                    states[i - on.base].point,
                    spec.mode.as_str(),
                    spec.variant,
                    k + 1,
                    if rep { "representative" } else { "sampled member" }
                );
                let name = if rep { format!("class-{:02}", k + 1) } else { format!("class-{:02}-state-{i}", k + 1) };
                let bundle = self.base.join(&name);
                let (cut, info) = self.new_cut(
                    spec.mode,
                    &placed,
                    position(log, spec.entry),
                    spec.seed,
                    &bundle,
                    &on.crash[i],
                    report,
                );
                let started = RunEvent::CutStarted {
                    k: j + 1,
                    n,
                    mode: spec.mode,
                    write: log.counts(spec.entry).0,
                    trigger: placed,
                    second_of: None,
                };
                Planned { name, bundle, cut, info, started }
            })
            .collect();
        let console = self.base.join("record/console.log");
        let next = AtomicUsize::new(0);
        let t0 = Instant::now();
        let before = report.power_cuts.len();
        let mut done: Vec<Option<PowerCut>> = vec![None; n];
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<Msg>();
            for wdir in &wdirs {
                let (tx, next, planned, console, boots) = (tx.clone(), &next, &planned, &console, &boots);
                scope.spawn(move || {
                    let mine = Judge { work: wdir, ..judge.clone() };
                    loop {
                        let j = next.fetch_add(1, Ordering::SeqCst);
                        if j >= planned.len() || interrupted() {
                            break;
                        }
                        let p = &planned[j];
                        let mut out = Forward { tx: &tx, label: (jobs > 1).then(|| p.name.clone()) };
                        out.event(p.started.clone());
                        let i = boots[j].1;
                        let job = Job {
                            bundle: &p.bundle,
                            from: (&self.input.0, self.input.1),
                            log: self.write_log,
                            state: &on.crash[i],
                            console,
                            info: &p.info,
                            power_on: true,
                            recovery: None,
                        };
                        let mut c = p.cut.clone();
                        if let Err(e) = self.make_and_judge(&mine, job, &mut c, &mut out) {
                            c.error = Some(e);
                        }
                        if tx.send(Msg::Done(j, Box::new(c))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for msg in rx {
                let (j, c) = match msg {
                    Msg::Event(e) => {
                        sink.event(e);
                        continue;
                    }
                    Msg::Done(j, c) => (j, *c),
                };
                let (k, i, rep) = boots[j];
                let outcome = c.outcome;
                if rep {
                    classes[k].outcome = outcome;
                    classes[k].bundle = Some(planned[j].bundle.display().to_string());
                    classes[k].evidence = c.evidence.iter().take(8).cloned().collect();
                } else {
                    classes[k].sampled.push((i, outcome));
                }
                states[i - on.base].outcome = outcome;
                done[j] = Some(c.clone());
                // In boot order, whichever finished first.
                report.power_cuts.truncate(before);
                report.power_cuts.extend(done.iter().flatten().cloned());
                sink.event(RunEvent::CutJudged {
                    cut: Box::new(c),
                    report: Box::new(report.clone()),
                    dir: self.base.to_path_buf(),
                });
            }
        });
        for d in &wdirs[1..] {
            let _ = std::fs::remove_dir_all(d);
        }
        // The sampled members in boot order, however the boots finished.
        for c in classes.iter_mut() {
            c.sampled.clear();
        }
        for (j, &(k, i, rep)) in boots.iter().enumerate() {
            if let (false, Some(c)) = (rep, &done[j]) {
                classes[k].sampled.push((i, c.outcome));
            }
        }
        let observed: Vec<bool> = states.iter().map(|s| s.outcome.is_some()).collect();
        for (s, seen) in states.iter_mut().zip(observed) {
            if !seen && let Some(k) = s.class {
                s.outcome = classes[k].outcome;
                s.inherited = s.outcome.is_some();
            }
        }
        (jobs, why, t0.elapsed().as_secs_f64())
    }
}

/// One power-on, planned before any boots.
struct Planned {
    /// Its bundle's folder name (`class-NN`, `class-NN-state-I`): the
    /// label of its progress lines when several boot at once.
    name: String,
    bundle: PathBuf,
    cut: PowerCut,
    info: BundleInfo,
    started: RunEvent,
}

/// What a boot worker sends the campaign's thread.
enum Msg {
    Event(RunEvent),
    Done(usize, Box<PowerCut>),
}

/// A boot worker's events, sent to the campaign's thread; with several
/// boots at once, labelled with its bundle (`event::labelled`).
struct Forward<'a> {
    tx: &'a mpsc::Sender<Msg>,
    label: Option<String>,
}

impl EventSink for Forward<'_> {
    fn event(&mut self, e: RunEvent) {
        let e = match &self.label {
            None => Some(e),
            Some(l) => event::labelled(l, e, RunEvent::CutStep),
        };
        if let Some(e) = e {
            let _ = self.tx.send(Msg::Event(e));
        }
    }
}

/// The host's available memory in MiB (`MemAvailable`), if it says.
fn available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib / 1024)
}

/// One state as reported, from what judging its bytes found.
fn explored(
    index: usize,
    spec: &StateSpec,
    point: &explore::Point,
    st: &CrashState,
    key: u64,
    same_as: Option<usize>,
    found: Option<&Result<Offline, String>>,
) -> ExploredState {
    let mut s = ExploredState {
        index,
        entry: spec.entry,
        point: point.describe(),
        mode: spec.mode,
        variant: spec.variant,
        seed: spec.seed,
        lost_writes: st.lost_writes,
        torn_writes: st.torn_writes,
        key: format!("{key:016x}"),
        same_as,
        fs_clean: None,
        store: None,
        fingerprint: String::new(),
        class: None,
        outcome: None,
        inherited: false,
        error: None,
    };
    match found {
        None => s.error = Some("not judged (interrupted)".into()),
        Some(Err(e)) => s.error = Some(e.clone()),
        Some(Ok(o)) => {
            s.fs_clean = Some(o.fs.clean);
            s.store = Some(o.store.as_ref().map_or("unreadable", |x| x.verdict.as_str()).to_string());
            s.fingerprint = fingerprint(&o.fs, o.store.as_ref(), &o.markers);
        }
    }
    s
}

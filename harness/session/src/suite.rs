//! A suite: every scenario of an `airboot run`, each once or `--repeat`
//! times, judged against its declared outcome, with one run index. With
//! `--jobs N` up to N boots run at once, each on its own thread (its own
//! QEMU, overlay, sockets and vsock CID); reports and the index keep the
//! scenarios' order whatever order the boots finish in.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use airboot_core::event::{self, EventSink, RunEvent, ScenarioResult};
use airboot_core::history::RepeatStats;
use airboot_core::outcome;
use airboot_core::report::{self, RUN_SCHEMA, Report, RunEntry, RunIndex};
use airboot_core::scenario::Scenario;
use airboot_model::Verdict;
use airboot_qemu::process::{interrupt_reason, interrupted};

use crate::boot::{BootOptions, Env, run_boot};
use crate::{clock, load};

pub struct SuiteOptions {
    /// Where reports go (`None`: `reports/<run id>`).
    pub report_dir: Option<PathBuf>,
    pub repeat: u32,
    /// Exit status from each scenario's declared outcome, not its raw verdict.
    pub check_outcomes: bool,
    pub boot: BootOptions,
    /// Boots at once (`--jobs`; 1 when `None`), never more than there are.
    pub jobs: Option<usize>,
}

/// One boot of the suite: scenario `s` (its index), run `rep` of `repeat`.
struct Planned {
    s: usize,
    rep: u32,
    rel: String,
    dir: PathBuf,
}

/// The boots of a suite in order, and where each one's reports go.
fn plan(list: &[Scenario], repeat: u32, single: bool, base: &std::path::Path) -> Vec<Planned> {
    let mut out = Vec::new();
    for (s, sc) in list.iter().enumerate() {
        for rep in 1..=repeat {
            let rel = match (single, repeat) {
                (true, _) => ".".to_string(),
                (false, 1) => sc.name.clone(),
                (false, _) => format!("{}/run-{rep:03}", sc.name),
            };
            let dir = if single { base.to_path_buf() } else { base.join(&rel) };
            out.push(Planned { s, rep, rel, dir });
        }
    }
    out
}

/// Run every scenario in `list` (already loaded and filtered); the exit
/// status is in the returned index. An `Err` when the report folder
/// cannot be made (nothing booted).
pub fn run_suite(
    list: &[Scenario],
    opts: &SuiteOptions,
    env: &Env,
    sink: &mut dyn EventSink,
) -> Result<RunIndex, String> {
    let repeat = opts.repeat.max(1);
    let names: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
    let id = clock::run_id(&names);
    let default_dir = opts.report_dir.is_none();
    let base = opts.report_dir.clone().unwrap_or_else(|| PathBuf::from("reports").join(&id));
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create the report folder {}: {e}", base.display()))?;
    let _claim = airboot_qemu::process::lock_dir(&base)?;
    let started_at = clock::now_rfc3339();
    sink.event(RunEvent::RunStarted { run_id: id, dir: base.clone(), started_at: started_at.clone(), default_dir });
    let single = list.len() == 1 && repeat == 1;
    let planned = plan(list, repeat, single, &base);
    let jobs = opts.jobs.unwrap_or(1).clamp(1, planned.len().max(1));
    if jobs > 1 {
        sink.event(RunEvent::Note(format!(
            "{} boots, {jobs} at once (--jobs {jobs}): each guest shares the host's cores with the others, so its \
             times are slower than alone; history keys these runs apart",
            planned.len()
        )));
    }
    // Each boot's report, and whether it was as its scenario declares.
    let mut reports: Vec<Option<(Report, bool)>> = vec![None; planned.len()];
    let boot_one = |j: usize, out: &mut dyn EventSink| -> Option<(Report, bool)> {
        let p = &planned[j];
        let s = &list[p.s];
        if interrupted() {
            return None;
        }
        out.event(RunEvent::ScenarioStarted {
            index: p.s + 1,
            total: list.len(),
            test_name: load::test_name(s),
            file: s.file.clone(),
            repeat: (repeat > 1).then_some((p.rep, repeat)),
        });
        let mut o = opts.boot.clone();
        o.jobs = jobs;
        let report = run_boot(s, &p.dir, &o, env, out).report;
        let (done, as_declared) = finished(s, p, repeat, &report);
        out.event(done);
        Some((report, as_declared))
    };
    if jobs == 1 {
        for (j, r) in reports.iter_mut().enumerate() {
            *r = boot_one(j, sink);
            if r.is_none() {
                break;
            }
        }
    } else {
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel::<Msg>();
            for _ in 0..jobs {
                let (tx, next, planned, boot_one) = (tx.clone(), &next, &planned, &boot_one);
                scope.spawn(move || {
                    loop {
                        let j = next.fetch_add(1, Ordering::SeqCst);
                        if j >= planned.len() {
                            break;
                        }
                        let p = &planned[j];
                        let mut out = Labelled { tx: &tx, label: label(&list[p.s], p, repeat) };
                        let r = boot_one(j, &mut out);
                        let stop = r.is_none();
                        if tx.send(Msg::Done(j, r.map(Box::new))).is_err() || stop {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            for msg in rx {
                match msg {
                    Msg::Event(e) => sink.event(e),
                    Msg::Done(j, r) => reports[j] = r.map(|b| *b),
                }
            }
        });
    }
    let mut entries = Vec::new();
    let mut repeats: Vec<(usize, u64, u64)> = Vec::new();
    for (p, r) in planned.iter().zip(&reports) {
        let s = &list[p.s];
        let Some((report, as_declared)) = r else {
            entries.push(not_run(s, p));
            continue;
        };
        let as_declared = *as_declared;
        entries.push(RunEntry {
            scenario: s.name.clone(),
            test_name: load::test_name(s),
            verdict: report.verdict,
            dir: p.rel.clone(),
            time_to_stack_s: report.time_to_stack_s,
            failures: report.failures.iter().map(|f| f.to_string()).collect(),
            declared: s.outcome.describe(),
            as_declared,
        });
        match repeats.last_mut() {
            Some((k, failed, done)) if *k == p.s => {
                *failed += u64::from(!as_declared);
                *done += 1;
            }
            _ => repeats.push((p.s, u64::from(!as_declared), 1)),
        }
    }
    if repeat > 1 {
        for (k, failed, done) in repeats {
            sink.event(RunEvent::Repeats(RepeatStats::of(load::test_name(&list[k]), failed, done)));
        }
    }
    let mut index = index(started_at, entries, opts.check_outcomes);
    index.jobs = jobs;
    sink.event(RunEvent::RunFinished {
        index: index.clone(),
        dir: base,
        single,
        interrupted: interrupted().then(|| interrupt_reason().to_string()),
    });
    Ok(index)
}

/// The event that judges one boot against its scenario's declared
/// outcome, and whether it was as declared.
fn finished(s: &Scenario, p: &Planned, repeat: u32, report: &Report) -> (RunEvent, bool) {
    let tname = load::test_name(s);
    let as_declared = outcome::check(&s.outcome, report);
    let ok = as_declared.is_ok();
    let e = RunEvent::ScenarioFinished(Box::new(ScenarioResult {
        test_name: if repeat > 1 { format!("{tname}#{}", p.rep) } else { tname },
        dir: p.dir.clone(),
        rel_dir: p.rel.clone(),
        declared: s.outcome.describe(),
        declares: s.outcome != Default::default(),
        as_declared,
        report: report.clone(),
    }));
    (e, ok)
}

/// The index entry of a boot that never started (airboot was interrupted).
fn not_run(s: &Scenario, p: &Planned) -> RunEntry {
    RunEntry {
        scenario: s.name.clone(),
        test_name: load::test_name(s),
        verdict: Verdict::Error,
        dir: p.rel.clone(),
        time_to_stack_s: None,
        failures: vec!["not run: airboot was interrupted".into()],
        declared: s.outcome.describe(),
        as_declared: false,
    }
}

/// What a boot's progress lines are labelled with when several run at once.
fn label(s: &Scenario, p: &Planned, repeat: u32) -> String {
    if repeat > 1 { format!("{}#{}", s.name, p.rep) } else { s.name.clone() }
}

enum Msg {
    Event(RunEvent),
    Done(usize, Option<Box<(Report, bool)>>),
}

/// A boot's events, sent to the suite's thread, labelled with its
/// scenario (`event::labelled`: several boots run at once).
struct Labelled<'a> {
    tx: &'a mpsc::Sender<Msg>,
    label: String,
}

impl EventSink for Labelled<'_> {
    fn event(&mut self, e: RunEvent) {
        if let Some(e) = event::labelled(&self.label, e, RunEvent::Step) {
            let _ = self.tx.send(Msg::Event(e));
        }
    }
}

/// The run index and its exit status: by raw verdicts, or (with
/// `check_outcomes`) by declared outcomes, where a negative control that
/// failed as declared counts as passing.
pub fn index(started_at: String, entries: Vec<RunEntry>, check_outcomes: bool) -> RunIndex {
    let code = if check_outcomes {
        let errors = entries.iter().any(|e| !e.as_declared && e.verdict == Verdict::Error);
        let wrong = entries.iter().any(|e| !e.as_declared);
        if errors { 2 } else { i32::from(wrong) }
    } else {
        report::exit_code(entries.iter().map(|e| &e.verdict))
    };
    RunIndex {
        schema: RUN_SCHEMA.into(),
        started_at,
        verdict: match code {
            0 => Verdict::Pass,
            1 => Verdict::Fail,
            _ => Verdict::Error,
        },
        exit_code: code,
        jobs: 1,
        scenarios: entries,
    }
}

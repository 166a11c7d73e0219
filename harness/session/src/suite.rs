//! A suite: every scenario of an `airboot run`, each once or `--repeat`
//! times, judged against its declared outcome, with one run index.

use std::path::PathBuf;

use airboot_core::event::{EventSink, RunEvent, ScenarioResult};
use airboot_core::history::RepeatStats;
use airboot_core::outcome;
use airboot_core::report::{self, RUN_SCHEMA, RunEntry, RunIndex};
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
    let mut entries = Vec::new();
    'scenarios: for (i, s) in list.iter().enumerate() {
        let tname = load::test_name(s);
        let (mut failed_runs, mut done_runs) = (0u64, 0u64);
        for rep in 1..=repeat {
            let rel = match (single, repeat) {
                (true, _) => ".".to_string(),
                (false, 1) => s.name.clone(),
                (false, _) => format!("{}/run-{rep:03}", s.name),
            };
            let dir = if single { base.clone() } else { base.join(&rel) };
            if interrupted() {
                entries.push(RunEntry {
                    scenario: s.name.clone(),
                    test_name: tname.clone(),
                    verdict: Verdict::Error,
                    dir: rel,
                    time_to_stack_s: None,
                    failures: vec!["not run: airboot was interrupted".into()],
                    declared: s.outcome.describe(),
                    as_declared: false,
                });
                break 'scenarios;
            }
            sink.event(RunEvent::ScenarioStarted {
                index: i + 1,
                total: list.len(),
                test_name: tname.clone(),
                file: s.file.clone(),
                repeat: (repeat > 1).then_some((rep, repeat)),
            });
            let report = run_boot(s, &dir, &opts.boot, env, sink).report;
            let as_declared = outcome::check(&s.outcome, &report);
            done_runs += 1;
            failed_runs += u64::from(as_declared.is_err());
            entries.push(RunEntry {
                scenario: s.name.clone(),
                test_name: tname.clone(),
                verdict: report.verdict,
                dir: rel.clone(),
                time_to_stack_s: report.time_to_stack_s,
                failures: report.failures.iter().map(|f| f.to_string()).collect(),
                declared: s.outcome.describe(),
                as_declared: as_declared.is_ok(),
            });
            sink.event(RunEvent::ScenarioFinished(Box::new(ScenarioResult {
                test_name: if repeat > 1 { format!("{tname}#{rep}") } else { tname.clone() },
                dir,
                rel_dir: rel,
                declared: s.outcome.describe(),
                declares: s.outcome != Default::default(),
                as_declared,
                report,
            })));
        }
        if repeat > 1 && done_runs > 0 {
            sink.event(RunEvent::Repeats(RepeatStats::of(tname.clone(), failed_runs, done_runs)));
        }
    }
    let index = index(started_at, entries, opts.check_outcomes);
    sink.event(RunEvent::RunFinished {
        index: index.clone(),
        dir: base,
        single,
        interrupted: interrupted().then(|| interrupt_reason().to_string()),
    });
    Ok(index)
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
        scenarios: entries,
    }
}

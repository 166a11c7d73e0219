//! `[[step]]`s across boots. The machine carries out a boot's steps once
//! its run has decided (`BootPlan::after`); a reboot or a power cut ends
//! that boot with its overlay kept, and the same disk is booted again,
//! judged against the same `[expect]`, in a folder named after the step.
//! Its report is a full one; the first boot's report gets it in brief.

use std::path::Path;

use airboot_core::event::EventSink;
use airboot_core::report::{NextBoot, Report};
use airboot_core::scenario::{Scenario, StepAction, StepSpec};
use airboot_model::{Failure, FailureCode, Verdict};

use crate::boot::{Boot, BootOptions, Env, run_boot};

/// Failures for the steps of one boot: each that did not do what it
/// should, and each planned one that never ran (the boot ended first).
pub fn judge(report: &mut Report, planned: &[StepSpec]) {
    for rec in report.steps.clone() {
        if !rec.ok {
            let evidence = rec.exec.as_ref().map(|e| {
                let lines: Vec<&str> = e.output.lines().collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            });
            report.fail(Failure {
                code: FailureCode::StepFailed,
                message: format!("step {} ({}): {}", rec.name, rec.action, rec.detail),
                evidence: evidence.filter(|e| !e.is_empty()),
            });
        }
    }
    let missing: Vec<String> = planned
        .iter()
        .filter(|p| !report.steps.iter().any(|r| r.name == p.name))
        .map(|p| format!("{} ({})", p.name, p.action.describe()))
        .collect();
    if !missing.is_empty() {
        let message = format!("not carried out, the boot ended first: {}", missing.join(", "));
        if report.verdict == Verdict::Pass {
            report.fail(Failure { code: FailureCode::StepFailed, message, evidence: None });
        } else {
            report.notes.push(format!("steps {message}"));
        }
    }
}

/// The boot after `step` (a reboot or a power cut), on `disk`: the
/// overlay the boot before it left. Its brief goes into that step's
/// record in `boot`'s report; a failed one fails the scenario too.
#[allow(clippy::too_many_arguments)]
pub fn follow(
    s: &Scenario,
    step_index: usize,
    dir: &Path,
    disk: &Path,
    opts: &BootOptions,
    env: &Env,
    sink: &mut dyn EventSink,
    boot: &mut Boot,
) {
    let step = &s.steps[step_index];
    let mut next = s.clone();
    next.steps = s.steps[step_index + 1..].to_vec();
    let sub = BootOptions {
        disk: Some(disk.to_path_buf()),
        keep_overlay: None,
        build: false,
        // The disk carries whatever probe this boot had.
        carried_probe: match boot.report.probe.origin.as_deref() {
            Some("injected") => Some(true),
            Some("image") => Some(false),
            _ => None,
        },
        ..opts.clone()
    };
    sink.event(airboot_core::event::RunEvent::Step(format!(
        "after step {} ({}): booting the same disk again, its report in {}/",
        step.name,
        step.action.describe(),
        step.name
    )));
    let after = run_boot(&next, &dir.join(&step.name), &sub, env, sink).report;
    let brief = NextBoot::of(&step.name, &boot.report, &after);
    let mut failures = Vec::new();
    if after.verdict != Verdict::Pass {
        failures.push(format!(
            "the boot after it {}: {}",
            after.verdict,
            after.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")
        ));
    }
    if let StepAction::Reboot { allow_reload: false, .. } = step.action
        && let Some(d) = airboot_core::diagnose::load_every_boot(&step.name, &after, &brief)
    {
        failures.push(d.summary.clone());
        boot.report.diagnoses.push(d);
    }
    // The later boot's own diagnoses explain the scenario's failure too.
    for d in &after.diagnoses {
        if !boot.report.diagnoses.iter().any(|x| x.code == d.code) {
            let mut d = d.clone();
            d.summary = format!("after step {}: {}", step.name, d.summary);
            boot.report.diagnoses.push(d);
        }
    }
    if let Some(rec) = boot.report.steps.iter_mut().find(|r| r.name == step.name) {
        rec.next_boot = Some(brief);
        if !failures.is_empty() {
            rec.ok = false;
        }
    }
    for f in failures {
        boot.report.fail(Failure {
            code: FailureCode::StepFailed,
            message: format!("step {} ({}): {f}", step.name, step.action.describe()),
            evidence: None,
        });
    }
}

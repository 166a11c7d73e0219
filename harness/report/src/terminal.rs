//! The terminal: progress on stderr while a run goes, the summaries on
//! stdout. A closed stdout (`airboot run | head -3`) or stderr never ends
//! a run: what cannot be written is dropped, and the run goes on to stop
//! QEMU and write its reports.

use std::io::Write;

use airboot_core::cut::PowerCut;
use airboot_core::event::{EventSink, RunEvent};
use airboot_core::report::Report;
use airboot_model::Verdict;

/// Writes to stdout, ignoring a closed pipe.
pub fn out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Writes a line to stderr, ignoring a closed pipe.
pub fn err(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n { s.chars().take(n - 3).collect::<String>() + "..." } else { s.to_string() }
}

/// The terminal consumer of run events. A probe status is shown when it
/// says something new (not every two seconds).
#[derive(Debug, Default)]
pub struct Terminal {
    last_status: Option<String>,
}

impl EventSink for Terminal {
    fn event(&mut self, e: RunEvent) {
        match e {
            RunEvent::Arch { arch, evidence } => match evidence.first() {
                Some(first) => err(&format!("  arch {arch}: {}", short(first, 90))),
                None => err(&format!("  arch {arch}: as the scenario says (nothing in the image tells)")),
            },
            RunEvent::GuestStatus { engine, images, containers, running, settled } => {
                let s = format!(
                    "engine {}, {images} image(s), {running} of {containers} container(s) running{}",
                    match engine {
                        airboot_proto::EngineState::Up => "up",
                        airboot_proto::EngineState::Starting => "starting",
                        airboot_proto::EngineState::Failing => "failing",
                        airboot_proto::EngineState::Down => "down",
                    },
                    if settled { ", settled" } else { "" }
                );
                if self.last_status.as_ref() != Some(&s) {
                    err(&format!("  status: {s}"));
                    self.last_status = Some(s);
                }
            }
            RunEvent::RunStarted { .. } | RunEvent::BootFinished { .. } | RunEvent::CutJudged { .. } => {}
            RunEvent::ScenarioStarted { index, total, test_name, file, repeat } => {
                self.last_status = None;
                let what = repeat.map(|(r, n)| format!(" (run {r} of {n})")).unwrap_or_default();
                err(&format!("[{index}/{total}] {test_name}{what} ({})", file.display()));
            }
            RunEvent::Step(s) => err(&format!("  {s}")),
            RunEvent::Detail(s) => err(&format!("    {s}")),
            RunEvent::Transport { kind, reason } => err(&format!("  transport {kind}: {reason}")),
            RunEvent::Accel { accel, reason } => err(&format!("  accel {accel}: {reason}")),
            RunEvent::Booting { what, accel, timeout_s } => {
                err(&format!("  booting {what} ({accel}, timeout {timeout_s:.0}s)"))
            }
            RunEvent::GuestStarted { qemu_version } => {
                err(&format!("  t0: guest started (QEMU {})", qemu_version.as_deref().unwrap_or("?")))
            }
            RunEvent::Milestone(m) => err(&format!("  {:>7.1}s {:<18} {}", m.t_s, m.name, short(&m.evidence, 70))),
            RunEvent::Note(n) => err(&format!("  note: {n}")),
            RunEvent::Refused(f) => err(&format!("  {f}")),
            RunEvent::ScenarioFinished(r) => {
                out(&crate::summary(&r.report, &r.dir));
                if r.declares {
                    match &r.as_declared {
                        Ok(()) => out(&format!("   declared  {}: as declared\n", r.declared)),
                        Err(why) => out(&format!("   declared  {}: NOT as declared: {why}\n", r.declared)),
                    }
                }
            }
            RunEvent::Repeats(r) => out(&format!("== {}\n", r.sentence())),
            RunEvent::RunFinished { index, dir, single, interrupted } => {
                if !single {
                    let n = |v: Verdict| index.scenarios.iter().filter(|e| e.verdict == v).count();
                    out(&format!(
                        "== {} scenario run(s): {} passed, {} failed, {} errors\n",
                        index.scenarios.len(),
                        n(Verdict::Pass),
                        n(Verdict::Fail),
                        n(Verdict::Error)
                    ));
                }
                out(&format!("   reports in {} (run.json, junit.xml, index.html, summary.md)\n", dir.display()));
                if let Some(why) = interrupted {
                    err(&format!("airboot: {why}; reports written to {}", dir.display()));
                }
            }
            RunEvent::CampaignStarted { scenario, .. } => {
                err(&format!("== {scenario}: recording the write stream of one boot"))
            }
            RunEvent::CutStep(s) => err(&format!("   {s}")),
            RunEvent::CutStarted { k, n, mode, write, trigger, second_of } => match second_of {
                None => err(&format!("== cut {k} of {n}: {mode} at write {write} ({trigger})")),
                Some(first) => {
                    err(&format!("== second cut (recovery of cut {first}): {mode} at write {write} ({trigger})"))
                }
            },
            RunEvent::CampaignFinished { report, dir, headline, .. } => {
                out(&cuts(&report));
                out(&format!("   report    {}\n", dir.join("report.json").display()));
                if let Some(h) = headline {
                    out(&format!("   {h}\n"));
                }
                if let Some(x) = report.exploration.as_ref().filter(|x| x.boot_jobs > 0) {
                    out(&format!("   {}\n", crate::explore::boots_line(x)));
                }
            }
        }
    }
}

/// The cuts of a campaign, power cuts and crashes apart.
pub fn cuts(report: &Report) -> String {
    let mut s = String::new();
    for (title, power) in [("power cuts", true), ("crashes (QEMU killed: every completed write kept)", false)] {
        let cuts: Vec<&PowerCut> = report.power_cuts.iter().filter(|c| c.power_cut == power).collect();
        if cuts.is_empty() {
            continue;
        }
        s.push_str(&format!("== {title}\n"));
        for c in cuts {
            s.push_str(&format!(
                "   {:<17} {:<15} write {} flush {} ({} lost, {} torn)  {}\n",
                c.finding(),
                c.mode.as_str(),
                c.position.writes,
                c.position.flushes,
                c.lost_writes,
                c.torn_writes,
                c.trigger
            ));
            if let Some(e) = &c.error {
                s.push_str(&format!("      error: {e}\n"));
            }
            for e in c.evidence.iter().filter(|e| !e.contains("stack up as expected")).take(4) {
                s.push_str(&format!("      {e}\n"));
            }
            s.push_str(&format!("      bundle {}\n", c.bundle));
        }
    }
    s
}

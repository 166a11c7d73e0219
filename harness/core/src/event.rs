//! What a run tells the world while it goes: the only way out of a
//! session (one boot), a suite (many scenarios) or a campaign (power
//! cuts). Consumers (the terminal, report.json, JUnit, HTML, Markdown,
//! the timing history) each take what they need from the stream, so a
//! new output format is a new consumer and nothing in the run changes.

use std::path::PathBuf;

use airboot_model::{Accel, Failure, TransportKind};

use crate::cut::PowerCut;
use crate::history::RepeatStats;
use crate::report::{Milestone, Report, RunIndex};

/// One thing that happened.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// A run of one or more scenarios begins; reports go under `dir`.
    RunStarted {
        run_id: String,
        dir: PathBuf,
        started_at: String,
        default_dir: bool,
    },
    /// One scenario run begins (`repeat`: this run's number, of how many).
    ScenarioStarted {
        index: usize,
        total: usize,
        test_name: String,
        file: PathBuf,
        repeat: Option<(u32, u32)>,
    },
    /// A step of a boot's preparation (resolving, hashing, building).
    Step(String),
    /// A line of a long job's own progress (a fixture build's stages).
    Detail(String),
    /// The guest's architecture, as the image itself told it.
    Arch {
        arch: airboot_model::Arch,
        evidence: Vec<String>,
    },
    /// The transport to the probe, and why.
    Transport {
        kind: TransportKind,
        reason: String,
    },
    /// The accelerator, and why.
    Accel {
        accel: Accel,
        reason: String,
    },
    /// The VM is about to start.
    Booting {
        what: String,
        accel: Accel,
        timeout_s: f64,
    },
    /// t0: the guest's CPUs run.
    GuestStarted {
        qemu_version: Option<String>,
    },
    Milestone(Milestone),
    /// What the probe last reported: the engine's state and counts.
    GuestStatus {
        engine: airboot_proto::EngineState,
        images: usize,
        containers: usize,
        running: usize,
        settled: bool,
    },
    /// Worth knowing while it runs (also kept in the report where it matters).
    Note(String),
    /// The boot stopped before QEMU started, for this reason.
    Refused(Failure),
    /// A boot's report is complete (every boot: a scenario run, a cut
    /// campaign's recorded boot or a crash state powered on). Its
    /// `report.json` belongs in `dir`.
    BootFinished {
        report: Box<Report>,
        dir: PathBuf,
    },
    /// A scenario run is judged against its declared outcome.
    ScenarioFinished(Box<ScenarioResult>),
    /// Flake statistics of a scenario run several times.
    Repeats(RepeatStats),
    /// The run is over: its index and exit status.
    RunFinished {
        index: RunIndex,
        dir: PathBuf,
        single: bool,
        interrupted: Option<String>,
    },
    /// A power-cut campaign begins: one boot is recorded first.
    CampaignStarted {
        scenario: String,
        dir: PathBuf,
    },
    /// A step of a campaign (the recording's size, a crash state's checks).
    CutStep(String),
    /// A cut begins. `second_of`: a second cut, during the recovery of that cut.
    CutStarted {
        k: usize,
        n: usize,
        mode: airboot_model::CutMode,
        write: u64,
        trigger: String,
        second_of: Option<usize>,
    },
    /// A cut was judged; `report` is the campaign's report so far.
    CutJudged {
        cut: Box<PowerCut>,
        report: Box<Report>,
        dir: PathBuf,
    },
    /// The campaign (or a reproduction) is over (`offline`: no crash
    /// state was powered on); `headline` says what it came to, if a line can.
    CampaignFinished {
        report: Box<Report>,
        dir: PathBuf,
        offline: bool,
        exit_code: i32,
        headline: Option<String>,
    },
}

/// A scenario run as judged against what it declares.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub report: Report,
    /// `<arch>::<name>` (with `#N` for a repetition).
    pub test_name: String,
    /// Where its report.json is, and the same relative to the run folder.
    pub dir: PathBuf,
    pub rel_dir: String,
    /// The declared outcome ("pass", "fail (image-missing)") and whether
    /// the run matched it.
    pub declared: String,
    pub as_declared: Result<(), String>,
    /// Whether the scenario declares anything (a plain "pass" is not shown).
    pub declares: bool,
}

/// Takes the events of a run.
pub trait EventSink {
    fn event(&mut self, e: RunEvent);
}

impl<F: FnMut(RunEvent)> EventSink for F {
    fn event(&mut self, e: RunEvent) {
        self(e)
    }
}

/// One boot's event as shown while several boots run at once, each boot
/// labelled (a scenario, a crash state's bundle). Its progress lines
/// begin `[label]`: steps, milestones, refusals, the boot's start and t0
/// become lines made by `line` (a suite's steps, a campaign's), details
/// and notes stay what they are. What would not say whose it is (the
/// probe's passing status, the architecture, transport and accelerator
/// chosen again for each boot) is left out (`None`). Everything else,
/// what writes the reports, passes unchanged.
pub fn labelled(label: &str, e: RunEvent, line: fn(String) -> RunEvent) -> Option<RunEvent> {
    let l = label;
    Some(match e {
        RunEvent::Step(s) | RunEvent::CutStep(s) => line(format!("[{l}] {s}")),
        RunEvent::Detail(s) => RunEvent::Detail(format!("[{l}] {s}")),
        RunEvent::Note(s) => RunEvent::Note(format!("[{l}] {s}")),
        RunEvent::Milestone(m) => {
            line(format!("[{l}] {:>7.1}s {:<18} {}", m.t_s, m.name, m.evidence.chars().take(60).collect::<String>()))
        }
        RunEvent::Refused(f) => line(format!("[{l}] {f}")),
        RunEvent::Booting { what, accel, timeout_s } => {
            line(format!("[{l}] booting {what} ({accel}, timeout {timeout_s:.0}s)"))
        }
        RunEvent::GuestStarted { qemu_version } => {
            line(format!("[{l}] t0: guest started (QEMU {})", qemu_version.as_deref().unwrap_or("?")))
        }
        RunEvent::GuestStatus { .. } | RunEvent::Arch { .. } | RunEvent::Transport { .. } | RunEvent::Accel { .. } => {
            return None;
        }
        e => e,
    })
}

/// Several consumers, each given every event in order.
pub struct Fanout<'a>(pub Vec<&'a mut dyn EventSink>);

impl EventSink for Fanout<'_> {
    fn event(&mut self, e: RunEvent) {
        if let Some((last, rest)) = self.0.split_last_mut() {
            for s in rest {
                s.event(e.clone());
            }
            last.event(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_model::FailureCode;

    fn text(e: Option<RunEvent>) -> String {
        match e {
            Some(RunEvent::CutStep(s)) => format!("cut: {s}"),
            Some(RunEvent::Step(s)) => format!("step: {s}"),
            Some(RunEvent::Detail(s)) => format!("detail: {s}"),
            Some(RunEvent::Note(s)) => format!("note: {s}"),
            Some(e) => format!("unchanged: {e:?}"),
            None => "dropped".into(),
        }
    }

    #[test]
    fn labelled_events_say_whose_they_are_in_the_callers_own_lines() {
        let m = Milestone { name: "engine".into(), t_s: 12.34, source: "console".into(), evidence: "x".repeat(80) };
        let cases: Vec<(RunEvent, String)> = vec![
            (RunEvent::Step("hashing".into()), "cut: [a#2] hashing".into()),
            (RunEvent::CutStep("judging".into()), "cut: [a#2] judging".into()),
            (RunEvent::Detail("stage 3".into()), "detail: [a#2] stage 3".into()),
            (RunEvent::Note("slow".into()), "note: [a#2] slow".into()),
            (RunEvent::Milestone(m), format!("cut: [a#2]    12.3s engine             {}", "x".repeat(60))),
            (
                RunEvent::Refused(Failure::new(FailureCode::ImageMissing, "no image")),
                "cut: [a#2] image-missing: no image".into(),
            ),
            (
                RunEvent::Booting { what: "disk".into(), accel: Accel::Tcg, timeout_s: 299.6 },
                "cut: [a#2] booting disk (tcg, timeout 300s)".into(),
            ),
            (RunEvent::GuestStarted { qemu_version: None }, "cut: [a#2] t0: guest started (QEMU ?)".into()),
            (RunEvent::Accel { accel: Accel::Tcg, reason: "no kvm".into() }, "dropped".into()),
            (RunEvent::Transport { kind: TransportKind::VirtioSerial, reason: "r".into() }, "dropped".into()),
            (RunEvent::Arch { arch: airboot_model::Arch::X86_64, evidence: vec![] }, "dropped".into()),
            (
                RunEvent::GuestStatus {
                    engine: airboot_proto::EngineState::Up,
                    images: 1,
                    containers: 1,
                    running: 1,
                    settled: true,
                },
                "dropped".into(),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(text(labelled("a#2", e, RunEvent::CutStep)), want);
        }
        // A suite's lines are its steps; what writes reports passes as it was.
        assert_eq!(text(labelled("s", RunEvent::Step("x".into()), RunEvent::Step)), "step: [s] x");
        let kept = labelled("s", RunEvent::Repeats(RepeatStats::of("t".into(), 0, 1)), RunEvent::Step);
        assert!(matches!(kept, Some(RunEvent::Repeats(_))));
    }
}

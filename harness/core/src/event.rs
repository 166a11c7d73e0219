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

//! The files of a run: each boot's `report.json`, and when the run is
//! over `run.json`, `junit.xml`, `index.html` and `summary.md`; the
//! timing history gets a line per scenario run. A file that cannot be
//! written is said on stderr and remembered ([`ReportFiles::errors`]):
//! the run still goes on, and its exit status says so.

use std::path::{Path, PathBuf};

use airboot_core::event::{EventSink, RunEvent};
use airboot_core::history::{HistoryEntry, RepeatStats};
use airboot_core::report::Report;

use crate::terminal::err;
use crate::views::{RunView, ScenarioView};

/// The file consumer of run events.
#[derive(Debug, Default)]
pub struct ReportFiles {
    /// The timing history to append to (`None`: `reports/history.jsonl`
    /// when the report folder is the default one, else none).
    pub history: Option<PathBuf>,
    /// Files that could not be written.
    pub errors: Vec<String>,
    run_id: String,
    started_at: String,
    scenarios: Vec<ScenarioView>,
    repeats: Vec<RepeatStats>,
}

impl ReportFiles {
    pub fn new(history: Option<PathBuf>) -> ReportFiles {
        ReportFiles { history, ..Default::default() }
    }

    fn failed(&mut self, what: String) {
        err(&format!("error: {what}"));
        self.errors.push(what);
    }

    fn report(&mut self, dir: &Path, r: &Report) {
        if let Err(e) = crate::write_report(dir, r) {
            self.failed(format!("cannot write {}/report.json: {e}", dir.display()));
        }
    }

    fn run_files(&mut self, dir: &Path) {
        let view = RunView {
            run_id: std::mem::take(&mut self.run_id),
            started_at: std::mem::take(&mut self.started_at),
            scenarios: std::mem::take(&mut self.scenarios),
            repeats: std::mem::take(&mut self.repeats),
        };
        let hist = self
            .history
            .as_ref()
            .and_then(|h| std::fs::read_to_string(h).ok())
            .map(|t| airboot_core::history::parse(&t).0);
        if let Err(e) = crate::write_run_files(dir, &view, hist.as_deref()) {
            self.failed(format!("cannot write the run files in {}: {e}", dir.display()));
        }
    }
}

fn append_history(path: &Path, e: &HistoryEntry) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent()
        && !d.as_os_str().is_empty()
    {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut line = serde_json::to_string(e).map_err(std::io::Error::other)?;
    line.push('\n');
    f.write_all(line.as_bytes())
}

impl EventSink for ReportFiles {
    fn event(&mut self, e: RunEvent) {
        match e {
            RunEvent::RunStarted { run_id, dir, started_at, default_dir } => {
                if default_dir {
                    let latest = Path::new("reports/latest");
                    let _ = std::fs::remove_file(latest);
                    if let Some(name) = dir.file_name() {
                        let _ = std::os::unix::fs::symlink(name, latest);
                    }
                    if self.history.is_none() {
                        self.history = Some(PathBuf::from("reports/history.jsonl"));
                    }
                }
                self.run_id = run_id;
                self.started_at = started_at;
            }
            RunEvent::BootFinished { report, dir } | RunEvent::CutJudged { report, dir, .. } => {
                self.report(&dir, &report)
            }
            RunEvent::ScenarioFinished(r) => {
                if let Some(h) = &self.history
                    && !r.report.qemu.argv.is_empty()
                    && let Err(e) = append_history(h, &HistoryEntry::from_report(&r.report, &self.run_id))
                {
                    err(&format!("warning: cannot append to the history {}: {e}", h.display()));
                }
                self.scenarios.push(ScenarioView {
                    test_name: r.test_name,
                    dir: r.rel_dir,
                    declared: r.declared,
                    as_declared: r.as_declared,
                    report: r.report,
                });
            }
            RunEvent::Repeats(r) => self.repeats.push(r),
            RunEvent::RunFinished { index, dir, .. } => {
                if let Err(e) = crate::write_index(&dir, &index) {
                    self.failed(format!("cannot write {}/run.json: {e}", dir.display()));
                }
                self.run_files(&dir);
            }
            RunEvent::CampaignStarted { dir, .. } => {
                self.run_id = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            }
            RunEvent::CampaignFinished { report, dir, exit_code, .. } => {
                self.report(&dir, &report);
                let survived = report.power_cuts.iter().filter(|c| c.outcome.is_some_and(|o| o.survived())).count();
                let test_name = format!("{}::{}", report.arch.map_or("any", |a| a.as_str()), report.scenario);
                self.started_at = report.started_at.clone();
                self.scenarios.push(ScenarioView {
                    test_name,
                    dir: ".".into(),
                    declared: "every cut survives".into(),
                    as_declared: if exit_code == 0 {
                        Ok(())
                    } else {
                        Err(format!("{survived} of {} cut(s) survived (exit {exit_code})", report.power_cuts.len()))
                    },
                    report: *report,
                });
                self.run_files(&dir);
            }
            RunEvent::ScenarioStarted { .. }
            | RunEvent::Arch { .. }
            | RunEvent::GuestStatus { .. }
            | RunEvent::Step(_)
            | RunEvent::Detail(_)
            | RunEvent::Transport { .. }
            | RunEvent::Accel { .. }
            | RunEvent::Booting { .. }
            | RunEvent::GuestStarted { .. }
            | RunEvent::Milestone(_)
            | RunEvent::Note(_)
            | RunEvent::Refused(_)
            | RunEvent::CutStep(_)
            | RunEvent::CutStarted { .. } => {}
        }
    }
}

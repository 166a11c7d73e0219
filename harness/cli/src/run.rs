//! `airboot run` and `airboot check`: wiring only. The suite runs in
//! airboot-session; the terminal and the report files are its consumers.

use std::path::PathBuf;

use airboot_core::event::Fanout;
use airboot_core::scenario::{AccelChoice, Scenario};
use airboot_model::{FailureCode, TransportKind};
use airboot_report::{ReportFiles, Terminal};
use airboot_session::suite::{SuiteOptions, run_suite};
use airboot_session::{BootOptions, CachedFixtures, Env, LocalQemu, load};

use crate::exit;

pub struct Options {
    pub paths: Vec<PathBuf>,
    pub report_dir: Option<PathBuf>,
    pub accel: Option<AccelChoice>,
    /// `Some(None)`: `--transport auto` (overrides the scenario).
    pub transport: Option<Option<TransportKind>>,
    pub repeat: u32,
    pub history: Option<PathBuf>,
    pub check_outcomes: bool,
    pub filter: Option<String>,
    pub build: bool,
    pub jobs: Option<usize>,
}

/// Load (and filter) the scenarios, or say why not.
fn scenarios(paths: &[PathBuf], filter: Option<&str>) -> Result<Vec<Scenario>, i32> {
    let mut list = load::load_all(paths).map_err(|e| {
        for p in &e.problems {
            exit::say(&format!("error: {p}"));
        }
        exit::say("nothing was booted: fix the scenario files above (reference: scenarios/README.md)");
        exit::of(FailureCode::BadInput)
    })?;
    if let Some(f) = filter {
        list.retain(|s| load::test_name(s).contains(f));
        if list.is_empty() {
            exit::say(&format!(
                "error: no scenario matches {f:?} (names are <arch>::<name>, e.g. x86_64::preseeded-x86_64)"
            ));
            return Err(exit::of(FailureCode::BadInput));
        }
    }
    Ok(list)
}

pub fn run(o: Options) -> i32 {
    let list = match scenarios(&o.paths, o.filter.as_deref()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let (machine, fixtures) = (LocalQemu::new(), CachedFixtures::new());
    let env = Env { machine: &machine, fixtures: &fixtures };
    let opts = SuiteOptions {
        report_dir: o.report_dir,
        repeat: o.repeat,
        check_outcomes: o.check_outcomes,
        jobs: o.jobs,
        boot: BootOptions { accel: o.accel, transport: o.transport, build: o.build, ..Default::default() },
    };
    let (mut files, mut terminal) = (ReportFiles::new(o.history), Terminal::default());
    let result = run_suite(&list, &opts, &env, &mut Fanout(vec![&mut files, &mut terminal]));
    match result {
        Err(e) => exit::refused(&e, FailureCode::ReportDir),
        // A report that could not be written is a run that cannot be judged.
        Ok(_) if !files.errors.is_empty() => exit::of(FailureCode::ReportDir),
        Ok(index) => index.exit_code,
    }
}

/// `airboot check`.
pub fn check(paths: &[PathBuf]) -> i32 {
    match scenarios(paths, None) {
        Ok(list) => {
            for s in &list {
                println!("ok  {}  ({})", s.name, s.file.display());
            }
            0
        }
        Err(code) => code,
    }
}

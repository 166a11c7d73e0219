//! `airboot cut` and `airboot repro`: wiring only. Campaigns run in
//! airboot-campaign; the terminal and the report files are consumers.

use std::path::{Path, PathBuf};

use airboot_campaign::{CutOptions, ReproOptions};
use airboot_core::event::Fanout;
use airboot_report::{ReportFiles, Terminal};
use airboot_session::{BootOptions, CachedFixtures, Env, LocalQemu, load};

use crate::exit;

/// Run `f` with the local machine, the fixture cache and both consumers;
/// a refusal is said and mapped to its exit status.
fn with_env(f: impl FnOnce(&Env, &mut Fanout) -> Result<i32, airboot_campaign::CampaignError>) -> i32 {
    let (machine, fixtures) = (LocalQemu::new(), CachedFixtures::new());
    let env = Env { machine: &machine, fixtures: &fixtures };
    let (mut files, mut terminal) = (ReportFiles::new(None), Terminal::default());
    let result = f(&env, &mut Fanout(vec![&mut files, &mut terminal]));
    match result {
        Err(e) => exit::refused(&e, e.code()),
        Ok(_) if !files.errors.is_empty() => exit::of(airboot_model::FailureCode::ReportDir),
        Ok(code) => code,
    }
}

pub fn cut(scenario: &Path, opts: CutOptions) -> i32 {
    let s = match load::load_one(scenario) {
        Ok(s) => s,
        Err(e) => return exit::refused(&e, airboot_model::FailureCode::BadInput),
    };
    with_env(|env, sink| airboot_campaign::cut(&s, &opts, env, sink))
}

pub fn repro(bundle: &Path, report_dir: Option<PathBuf>, input: Option<PathBuf>, boot: BootOptions) -> i32 {
    let opts = ReproOptions { report_dir, input, boot };
    with_env(|env, sink| airboot_campaign::repro(bundle, &opts, env, sink))
}

/// `airboot report --merge DIR...`: shard reports joined into one.
pub fn merge(dirs: &[PathBuf], report_dir: Option<PathBuf>) -> i32 {
    let (mut files, mut terminal) = (ReportFiles::new(None), Terminal::default());
    match airboot_campaign::merge::merge(dirs, report_dir.as_deref(), &mut Fanout(vec![&mut files, &mut terminal])) {
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
        Ok(_) if !files.errors.is_empty() => exit::of(airboot_model::FailureCode::ReportDir),
        Ok(code) => code,
    }
}

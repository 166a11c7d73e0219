//! Power-cut campaigns: record one boot's write stream, cut it at the
//! scenario's points in each mode, and judge every crash state offline
//! and by powering it on again; and reproduce one cut from its bundle.
//!
//! - [`plan`]: where to cut (pure: trigger, write log, recorded marks);
//! - [`bundle`]: the format of a cut's folder (`cut.json`), movable;
//! - [`judge`]: one crash state, offline and powered on;
//! - [`exec`]: the campaign (`airboot cut`); [`repro`]: `airboot repro`.
//!
//! Boots go through `airboot-session` on whatever
//! [`airboot_session::Machine`] the caller gives; progress and results
//! leave as events.

pub mod bundle;
pub mod exec;
mod explore;
pub mod judge;
pub mod merge;
pub mod plan;
pub mod recording;
pub mod repro;

use std::path::PathBuf;

use airboot_model::FailureCode;

pub use exec::{CutOptions, cut};
pub use repro::{ReproOptions, repro};

/// Why a campaign or a reproduction was refused before anything booted.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Load(#[from] airboot_session::load::LoadError),
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error("{0}")]
    Refused(String),
    #[error("cannot create the report folder {}: {source}", .path.display())]
    ReportDir { path: PathBuf, source: std::io::Error },
    #[error("cannot create a temporary folder or file: {0}")]
    Workdir(std::io::Error),
    /// The report folder is another run's, or cannot be written.
    #[error("{0}")]
    Busy(String),
}

impl CampaignError {
    pub fn code(&self) -> FailureCode {
        match self {
            CampaignError::Load(_) | CampaignError::Bundle(_) | CampaignError::Refused(_) => FailureCode::BadInput,
            CampaignError::ReportDir { .. } | CampaignError::Busy(_) => FailureCode::ReportDir,
            CampaignError::Workdir(_) => FailureCode::Workdir,
        }
    }
}

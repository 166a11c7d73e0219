//! A cut's bundle: the folder `cut-NN-<mode>/` that `airboot cut` leaves
//! for each crash state, and `airboot repro` boots again.
//!
//! It holds `crash.qcow2` (the crash state, a qcow2 over the input image,
//! or over the first cut's for a second cut), `record-console.log`,
//! `reboot/` (the boot that powered it on), a copy of the scenario
//! (`scenario.toml`), and `cut.json` ([`BundleInfo`]). Paths inside the
//! bundle are relative to it, so a bundle (or a whole campaign folder) can
//! move: `repro` rebuilds the disk chain in its own folder, over the input
//! image it finds by path and checks by sha256.

use std::path::{Path, PathBuf};

use airboot_core::cut::{CutOutcome, CutPosition};
use airboot_model::{Arch, CutMode};
use serde::{Deserialize, Serialize};

/// The version of `cut.json` this airboot writes. Bundles without a
/// `schema` were written before it (absolute paths; still read).
pub const BUNDLE_SCHEMA: &str = "airboot.bundle/v1";

/// The scenario's copy in a bundle.
pub const SCENARIO_COPY: &str = "scenario.toml";

/// What a bundle's `cut.json` holds: enough to boot and judge the same
/// state again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The scenario file the cut was made from, where it was then.
    pub scenario_file: String,
    /// Its copy in the bundle (relative to it), used when the original
    /// has moved or is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_copy: Option<String>,
    /// The input image the crash state lies over, where it was then, and
    /// its sha256 (which any image standing in for it must have).
    pub input: String,
    pub input_sha256: Option<String>,
    pub arch: Arch,
    pub mode: CutMode,
    pub trigger: String,
    pub position: CutPosition,
    pub seed: u64,
    /// What the cut lost (absent in bundles written before these were kept).
    #[serde(default)]
    pub lost_writes: u64,
    #[serde(default)]
    pub lost_bytes: u64,
    #[serde(default)]
    pub torn_writes: u64,
    pub record_argv: Vec<String>,
    pub outcome: Option<CutOutcome>,
    /// A second cut: the first cut's bundle (relative to this one: `..`),
    /// whose `crash.qcow2` this bundle's `crash.qcow2` lies over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during_recovery_of: Option<String>,
}

/// Why a bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}/cut.json: {why} (a bundle is a cut-NN-<mode> folder that `airboot cut` wrote)", .bundle.display())]
    Unreadable { bundle: PathBuf, why: String },
    #[error("{}/crash.qcow2 is missing: the bundle is incomplete", .0.display())]
    Incomplete(PathBuf),
    #[error(
        "{} (the image this bundle was cut from) no longer exists: its crash.qcow2 is a delta over that exact image, so the bundle cannot be reproduced without it (give it with --input, or rebuild it: an older fixture build is deleted by `airboot images clean`)",
        .0.display()
    )]
    InputGone(PathBuf),
    #[error(
        "{} is not the image this bundle was cut from (sha256 differs): its crash.qcow2 is a delta over that exact image",
        .0.display()
    )]
    InputDiffers(PathBuf),
    #[error("{}: {why}", .path.display())]
    Io { path: PathBuf, why: String },
}

impl BundleInfo {
    /// Read `bundle/cut.json`, and check the crash state is there.
    pub fn read(bundle: &Path) -> Result<BundleInfo, BundleError> {
        let bad = |why: String| BundleError::Unreadable { bundle: bundle.to_path_buf(), why };
        let text = std::fs::read_to_string(bundle.join("cut.json")).map_err(|e| bad(e.to_string()))?;
        let info: BundleInfo = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if !bundle.join("crash.qcow2").is_file() {
            return Err(BundleError::Incomplete(bundle.to_path_buf()));
        }
        Ok(info)
    }

    /// Write `bundle/cut.json`.
    pub fn write(&self, bundle: &Path) -> Result<(), BundleError> {
        let path = bundle.join("cut.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| BundleError::Io { path: path.clone(), why: e.to_string() })?;
        std::fs::write(&path, text + "\n").map_err(|e| BundleError::Io { path, why: e.to_string() })
    }

    /// The scenario to judge with: the original file if it is still
    /// there, else the bundle's copy.
    pub fn scenario(&self, bundle: &Path) -> PathBuf {
        let original = PathBuf::from(&self.scenario_file);
        match &self.scenario_copy {
            Some(copy) if !original.is_file() => at(bundle, copy),
            _ => original,
        }
    }

    /// The bundle of the first cut, for a second cut.
    pub fn first_cut(&self, bundle: &Path) -> Option<PathBuf> {
        self.during_recovery_of.as_deref().map(|p| at(bundle, p))
    }
}

/// `p` as written in a bundle: relative to the bundle, or absolute (old bundles).
fn at(bundle: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { bundle.join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> BundleInfo {
        BundleInfo {
            schema: Some(BUNDLE_SCHEMA.into()),
            scenario_file: "/gone/cut.toml".into(),
            scenario_copy: Some(SCENARIO_COPY.into()),
            input: "/cache/disk.qcow2".into(),
            input_sha256: Some("ab".repeat(32)),
            arch: Arch::X86_64,
            mode: CutMode::Torn,
            trigger: "sweep point 2 of 8".into(),
            position: CutPosition { entry: 10, writes: 8, flushes: 2, bytes_written: 32768 },
            seed: 9,
            lost_writes: 3,
            lost_bytes: 12288,
            torn_writes: 1,
            record_argv: vec!["-S".into()],
            outcome: Some(CutOutcome::SelfHealed),
            during_recovery_of: Some("..".into()),
        }
    }

    #[test]
    fn a_bundle_round_trips_and_moves_with_its_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = tmp.path().join("campaign/cut-01-torn");
        let second = first.join("recovery-cut");
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(second.join("crash.qcow2"), b"q").unwrap();
        info().write(&second).unwrap();
        assert_eq!(BundleInfo::read(&second).unwrap(), info());
        // The campaign folder moves: the second cut still finds its first.
        let moved = tmp.path().join("elsewhere");
        std::fs::rename(tmp.path().join("campaign"), &moved).unwrap();
        let second = moved.join("cut-01-torn/recovery-cut");
        let i = BundleInfo::read(&second).unwrap();
        assert_eq!(i.first_cut(&second).unwrap(), second.join(".."));
        assert_eq!(i.scenario(&second), second.join(SCENARIO_COPY), "the original is gone: the copy");
        // Without its crash state the bundle is incomplete, said so.
        std::fs::remove_file(second.join("crash.qcow2")).unwrap();
        let e = BundleInfo::read(&second).unwrap_err().to_string();
        assert!(e.ends_with("crash.qcow2 is missing: the bundle is incomplete"), "{e}");
    }

    #[test]
    fn bundles_from_before_the_schema_still_read() {
        let v0 = include_str!("../tests/cut-v0.json");
        let i: BundleInfo = serde_json::from_str(v0).unwrap();
        assert_eq!((i.schema.as_deref(), i.mode, i.arch), (None, CutMode::LoseUnflushed, Arch::X86_64));
        assert_eq!(i.outcome, Some(CutOutcome::IntactOld));
        assert_eq!(i.scenario(Path::new("/b")), PathBuf::from("/work/main/scenarios/cut-load-at-boot-x86_64.toml"));
        assert_eq!(i.first_cut(Path::new("/b")), None);
        // An absolute first-cut path (as old second cuts wrote it) is kept.
        let old = BundleInfo { during_recovery_of: Some("/r/cut-01-kill".into()), ..i };
        assert_eq!(old.first_cut(Path::new("/b")), Some(PathBuf::from("/r/cut-01-kill")));
    }

    #[test]
    fn a_bad_cut_json_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = BundleInfo::read(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("cut.json") && e.contains("a bundle is a cut-NN-<mode> folder"), "{e}");
        std::fs::write(tmp.path().join("cut.json"), r#"{"mode": "zap"}"#).unwrap();
        let e = BundleInfo::read(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("cut.json"), "{e}");
    }
}

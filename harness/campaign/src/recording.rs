//! A recording, kept for an exploration: the folder `record/` of a cut
//! campaign holds the recorded boot's write log (`writes.log`) and
//! `recording.json`: where the input image was and its sha256, the log's
//! sha256, and the console lines the recorder placed in the log. Shards
//! (`airboot cut --recording DIR --shard K/N`) judge their slice of the
//! same states from it, on any machine that has the same input image.

use std::path::{Path, PathBuf};

use airboot_core::cut::MarkSeen;
use airboot_model::Arch;
use airboot_qemu::vm::Recorded;
use serde::{Deserialize, Serialize};

pub const RECORDING_SCHEMA: &str = "airboot.recording/v1";
pub const RECORDING_FILE: &str = "recording.json";
pub const WRITE_LOG: &str = "writes.log";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingInfo {
    pub schema: String,
    /// The scenario's name (a shard must explore the same scenario).
    pub scenario: String,
    pub input: String,
    pub input_sha256: String,
    /// `sha256:<hex>` of `writes.log`.
    pub write_log_sha256: String,
    pub arch: Arch,
    pub seen: Vec<MarkSeen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<(f64, u64)>,
    pub record_argv: Vec<String>,
}

impl RecordingInfo {
    pub fn recorded(&self) -> Recorded {
        Recorded { seen: self.seen.clone(), stopped: self.stopped }
    }

    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let path = dir.join(RECORDING_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Read `dir/recording.json` and check that `dir/writes.log` is the
    /// log it names.
    pub fn read(dir: &Path) -> Result<RecordingInfo, String> {
        let path = dir.join(RECORDING_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (a recording is the record/ folder of an exploration: `airboot cut SCENARIO --record-only`)",
                path.display()
            )
        })?;
        let info: RecordingInfo =
            serde_json::from_str(&text).map_err(|e| format!("{} is not a recording: {e}", path.display()))?;
        if info.schema != RECORDING_SCHEMA {
            return Err(format!("{}: schema {:?}, this airboot reads {RECORDING_SCHEMA}", path.display(), info.schema));
        }
        let log = dir.join(WRITE_LOG);
        let got = log_sha256(&log)?;
        if got != info.write_log_sha256 {
            return Err(format!(
                "{} is not the write log {} names (sha256 differs): copy the recording folder whole",
                log.display(),
                path.display()
            ));
        }
        Ok(info)
    }
}

pub fn log_sha256(log: &Path) -> Result<String, String> {
    airboot_qemu::disk::sha256_file(log)
        .map(|h| format!("sha256:{h}"))
        .map_err(|e| format!("cannot hash the write log {}: {e}", log.display()))
}

/// Keep a recorded boot's write log in its `record/` folder, with
/// `recording.json`. Returns the log's sha256.
pub(crate) fn keep(
    s: &airboot_core::scenario::Scenario,
    rec_dir: &Path,
    log: &Path,
    input: &(PathBuf, airboot_model::DiskFormat),
    arch: Arch,
    recorded: &Recorded,
    report: &airboot_core::report::Report,
) -> Result<String, String> {
    let kept = rec_dir.join(WRITE_LOG);
    if std::fs::rename(log, &kept).is_err() {
        // Another filesystem: copy, then drop the original.
        std::fs::copy(log, &kept).map_err(|e| format!("cannot keep the write log in {}: {e}", kept.display()))?;
        let _ = std::fs::remove_file(log);
    }
    let sha = log_sha256(&kept)?;
    let info = RecordingInfo {
        schema: RECORDING_SCHEMA.into(),
        scenario: s.name.clone(),
        input: std::path::absolute(&input.0).unwrap_or(input.0.clone()).display().to_string(),
        input_sha256: report.image.sha256_before.clone().ok_or("the input image was not hashed")?,
        write_log_sha256: sha.clone(),
        arch,
        seen: recorded.seen.clone(),
        stopped: recorded.stopped,
        record_argv: report.qemu.argv.clone(),
    };
    info.write(rec_dir)?;
    Ok(sha)
}

/// A recording made before (`--recording DIR`) as what a campaign cuts:
/// its log and marks checked, its input image found where it was (or at
/// `input`) and checked by sha256, and `report` told what it is.
pub(crate) fn open(
    s: &airboot_core::scenario::Scenario,
    rdir: &Path,
    input: Option<&Path>,
    report: &mut airboot_core::report::Report,
    sink: &mut dyn airboot_core::event::EventSink,
) -> Result<crate::exec::Source, String> {
    use airboot_core::event::RunEvent;
    sink.event(RunEvent::CutStep(format!("reading the recording {}", rdir.display())));
    let info = RecordingInfo::read(rdir)?;
    if info.scenario != s.name {
        return Err(format!("{} is a recording of scenario {:?}, not {:?}", rdir.display(), info.scenario, s.name));
    }
    let input = input.map_or_else(|| PathBuf::from(&info.input), Path::to_path_buf);
    sink.event(RunEvent::CutStep(format!("hashing {}", input.display())));
    let sha = airboot_qemu::disk::sha256_file(&input).map_err(|e| {
        format!(
            "the recording's input image {}: {e} (shards need the image the recording was made from: \
             give its path here with --input)",
            input.display()
        )
    })?;
    if sha != info.input_sha256 {
        return Err(format!(
            "{} is not the image the recording was made from (sha256 differs): a recording is a delta over that exact image",
            input.display()
        ));
    }
    report.arch = Some(info.arch);
    report.image.path = Some(input.display().to_string());
    report.image.sha256_before = Some(sha);
    report.qemu.argv = info.record_argv.clone();
    report.notes.push(format!("explored from the recording {}", rdir.display()));
    if input.as_os_str() != info.input.as_str() {
        report.notes.push(format!("its input image, recorded at {}, is at {} here", info.input, input.display()));
    }
    let format = airboot_qemu::disk::detect_format(&input).map_err(|e| e.to_string())?;
    Ok(crate::exec::Source {
        log: rdir.join(WRITE_LOG),
        input: (input, format),
        arch: info.arch,
        recorded: info.recorded(),
        recording_id: Some(info.write_log_sha256),
    })
}

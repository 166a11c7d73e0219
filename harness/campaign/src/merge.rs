//! `airboot report --merge`: shard reports of one exploration joined into
//! one report (`core::cut::explore::merge` does the states and classes).

use std::path::{Path, PathBuf};

use airboot_core::cut::explore;
use airboot_core::event::{EventSink, RunEvent};
use airboot_core::report::Report;
use airboot_model::Verdict;

/// Read each folder's report.json, join their explorations, and say the
/// merged campaign finished in `out` (default
/// `reports/<date>-<time>-merged-<scenario>`; the report files are the
/// sink's to write). Returns the exit status as `airboot cut` decides it
/// (0 every state survived, 1 some did not, 2 could not judge); an error
/// when the folders are not the shards of one exploration.
pub fn merge(dirs: &[PathBuf], out: Option<&Path>, sink: &mut dyn EventSink) -> Result<i32, String> {
    let mut reports = Vec::new();
    for d in dirs {
        let path = d.join("report.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let r: Report = serde_json::from_str(&text).map_err(|e| format!("{} is not a report: {e}", path.display()))?;
        if r.exploration.is_none() {
            return Err(format!(
                "{} holds no exploration: only the reports of `airboot cut` with points = \"all\" (its shards) merge",
                path.display()
            ));
        }
        reports.push(r);
    }
    let mut parts = Vec::new();
    let mut merged = reports.first().cloned().ok_or("give the shard report folders to merge")?;
    merged.power_cuts.clear();
    merged.failures.clear();
    merged.notes.clear();
    for (d, r) in dirs.iter().zip(reports) {
        if r.scenario != merged.scenario {
            return Err(format!("{} is a report of {:?}, not {:?}", d.display(), r.scenario, merged.scenario));
        }
        merged.notes.push(format!(
            "merged: {} ({})",
            d.display(),
            r.exploration.as_ref().and_then(|x| x.shard).map_or("unsharded".into(), |(k, n)| format!("shard {k}/{n}"))
        ));
        merged.power_cuts.extend(r.power_cuts);
        merged.failures.extend(r.failures);
        if r.verdict == Verdict::Error {
            merged.verdict = Verdict::Error;
        }
        parts.push(*r.exploration.expect("checked above"));
    }
    let x = explore::merge(parts)?;
    let (offline, headline) = (x.offline, x.headline.clone());
    merged.exploration = Some(Box::new(x));
    let out = out.map(Path::to_path_buf).unwrap_or_else(|| {
        PathBuf::from("reports").join(format!("{}-merged-{}", airboot_session::clock::stamp(), merged.scenario))
    });
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create the report folder {}: {e}", out.display()))?;
    sink.event(RunEvent::CampaignStarted { scenario: merged.scenario.clone(), dir: out.clone() });
    Ok(crate::exec::finish(&out, &mut merged, None, offline, Some(headline), sink))
}

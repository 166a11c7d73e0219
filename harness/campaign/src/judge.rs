//! Judging one crash state: offline (the root filesystem after journal
//! replay, the container store read from the disk), then powered on with
//! the scenario's expectations, then offline again on what that boot left.

use std::path::{Path, PathBuf};

use airboot_core::cut::store::StoreCheck;
use airboot_core::cut::{FsFindings, PowerCut, RebootFindings, crash_evidence, judge};
use airboot_core::event::{EventSink, RunEvent};
use airboot_core::scenario::{CutTrigger, Scenario};
use airboot_model::{FailureCode, Verdict};
use airboot_qemu::vm::Recorded;
use airboot_session::{BootOptions, Env, run_boot};

use crate::plan::record_spec;

/// What judging needs: the scenario, where the root filesystem is on the
/// disk, the images to look for, a scratch folder, and where to boot.
#[derive(Clone)]
pub struct Judge<'a> {
    pub s: &'a Scenario,
    /// Byte offset and length of the root filesystem on the virtual disk.
    pub root: (u64, u64),
    pub expected: Vec<String>,
    pub work: &'a Path,
    pub env: &'a Env<'a>,
    pub boot: &'a BootOptions,
}

/// The boot that powered a crash state on, recorded for a second cut.
pub struct RecoveryBoot {
    pub recorded: Recorded,
    pub argv: Vec<String>,
}

impl Judge<'_> {
    /// Check a disk offline: fsck a copy of its root filesystem, then the store.
    pub fn offline(&self, disk: &Path, name: &str) -> Result<(FsFindings, StoreCheck), String> {
        airboot_session::store::check_offline(disk, self.root, self.s.expect.engine, &self.expected, self.work, name)
            .map(|o| (o.fs, o.check))
    }

    /// Judge the crash state `dir/crash.qcow2`: offline, then (with
    /// `power_on`) by booting it (its report in `dir/reboot/`), then
    /// offline again on what that boot left. With `recovery` (a trigger
    /// and a write log path), that boot's write stream is recorded for a
    /// second cut.
    pub fn crash_state(
        &self,
        dir: &Path,
        c: &mut PowerCut,
        power_on: bool,
        recovery: Option<(&CutTrigger, PathBuf)>,
        sink: &mut dyn EventSink,
    ) -> Option<RecoveryBoot> {
        let crash_disk = dir.join("crash.qcow2");
        let (fs, crash_store) = match self.offline(&crash_disk, "crash") {
            Ok((fs, st)) => (fs, Some(st)),
            Err(e) => (FsFindings { clean: false, summary: e }, None),
        };
        sink.event(RunEvent::CutStep(format!(
            "crash state: filesystem {}, store {}",
            if fs.clean { "clean" } else { "DAMAGED" },
            crash_store.as_ref().map(|x| x.verdict.as_str()).unwrap_or("unreadable")
        )));
        if !power_on {
            c.evidence = crash_evidence(&fs, crash_store.as_ref());
            c.evidence.push("not powered on (--offline)".into());
            c.filesystem = Some(fs);
            c.crash_store = crash_store;
            return None;
        }
        sink.event(RunEvent::CutStep("powering the crash state on again".into()));
        let after_disk = self.work.join("after.qcow2");
        let _ = std::fs::remove_file(&after_disk);
        let mut opts = BootOptions {
            disk: Some(crash_disk),
            keep_overlay: Some(after_disk.clone()),
            write_log: None,
            record: None,
            ..self.boot.clone()
        };
        if let Some((t, rlog)) = recovery {
            match std::fs::File::create(&rlog) {
                Ok(_) => {
                    opts.write_log = Some(rlog);
                    opts.record = Some(record_spec(t, None, false));
                }
                Err(e) => c.evidence.push(format!("no second cut: cannot create {}: {e}", rlog.display())),
            }
        }
        let reboot = run_boot(self.s, &dir.join("reboot"), &opts, self.env, sink);
        let findings = RebootFindings::of(&reboot.report);
        if reboot.report.verdict == Verdict::Error
            && reboot.report.failures.iter().any(|f| f.code == FailureCode::Interrupted)
        {
            c.error = Some("interrupted while powering the crash state on".into());
            return None;
        }
        let after = if after_disk.exists() {
            match self.offline(&after_disk, "after") {
                Ok((_, st)) => Some(st),
                Err(e) => {
                    c.evidence.push(format!("after the next boot: could not check the store: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let _ = std::fs::remove_file(&after_disk);
        let j = judge(&fs, crash_store.as_ref(), &findings, after.as_ref());
        sink.event(RunEvent::CutStep(format!("=> {}", j.outcome.as_str())));
        c.outcome = Some(j.outcome);
        c.next_boot_diagnosis = findings.diagnosis.as_ref().map(|d| d.code);
        c.evidence.splice(0..0, j.evidence);
        c.filesystem = Some(fs);
        c.crash_store = crash_store;
        c.after_store = after;
        reboot.recorded.map(|recorded| RecoveryBoot { recorded, argv: reboot.report.qemu.argv.clone() })
    }
}

//! What a boot's outcome means for its report: the fields the machine
//! and the run state machine learnt, and the harness's own verdict rules
//! on top of the guest's. Pure.

use airboot_core::report::Report;
use airboot_model::{Failure, FailureCode, Verdict};
use airboot_qemu::argv::network_args;
use airboot_qemu::vm::VmOutcome;

use crate::machine::MachineError;

/// Copy what a boot learnt into the report, then apply the policy:
/// - a VM with a network device does not prove an offline start: the
///   run fails (`network-present`), whatever the guest showed;
/// - a QEMU or helper process that outlived the run is airboot's own
///   failure: the run is an error (`leftover-process`).
pub fn fill(report: &mut Report, o: VmOutcome) {
    let res = o.result;
    report.verdict = res.verdict;
    report.failures = res.failures;
    report.milestones = res.milestones;
    report.time_to_stack_s = res.time_to_stack_s;
    report.stack_seen_s = res.stack_seen_s;
    report.images = res.images;
    report.containers = res.containers;
    report.engine = res.engine;
    report.units = res.units;
    report.status.blocks = res.status_blocks;
    report.status.damaged = res.damaged_status_blocks;
    report.status.errors_first_seen_s = res.errors_first_seen;
    report.status.ended_s = o.ended_s;
    report.status.settled_at_s = res.settled_at_s;
    report.status.last_t_s = res.last_status_t;
    report.status.guest_uptime_s = res.guest_uptime_s;
    report.probe.connected_s = res.probe_connected_s;
    if !res.probe_errors.is_empty() && res.probe_connected_s.is_some() {
        report.notes.push(format!(
            "the probe's transport also carried {}: ignored (probe.protocol_errors)",
            res.probe_errors.describe()
        ));
    }
    report.probe.protocol_errors = res.probe_errors;
    report.probe.guest_machine = res.guest_machine;
    report.probe.init = res.guest_init;
    report.probe.version = o.probe_version;
    // The guest cannot tell kernel vsock from vhost-user vsock: compare families.
    let family = |t: &str| if t.contains("vsock") { "vsock" } else { "virtio-serial" };
    if let (Some(t), Some(chosen)) = (&o.probe_transport, report.probe.transport)
        && family(t) != family(chosen.as_str())
    {
        let n = format!("the probe says it answered over {t}");
        if !report.notes.contains(&n) {
            report.notes.push(n);
        }
    }
    report.clock_skew_ms = res.clock_skew_ms;
    report.image_runs = res.image_runs;
    report.image_loads = res.image_loads;
    report.steps = o.steps;
    if let Some(a) = res.airgap {
        report.airgap = a;
    }
    report.notes.extend(res.notes);
    report.machine.qemu_version = o.qemu_version;
    report.qemu.argv = o.argv;
    report.qemu.exit = o.exit;
    report.qemu.stderr_tail = o.stderr_tail;
    report.qemu.leftover_processes = o.leftover;
    report.qemu.helper_log_tail = o.helper_log_tail;
    report.network.qemu_network_args = o.network_args;
    report.network.pci_network_devices = o.pci_network_devices;
    report.network.pci_checked = o.pci_checked;
    report.network.nics = (report.network.qemu_network_args.len() + report.network.pci_network_devices.len()) as u32;
    report.console.lines = o.console_lines;
    report.console.bytes = o.console_bytes;
    report.console.truncated_lines = o.truncated_lines;
    report.console.log_capped = o.log_capped;
    report.console.tail = o.tail;
    if report.network.nics > 0 {
        report.verdict = Verdict::Fail;
        report.failures.push(
            Failure::new(
                FailureCode::NetworkPresent,
                "the VM had a network device: the run does not prove offline start",
            )
            .with_evidence(format!("{:?} {:?}", report.network.qemu_network_args, report.network.pci_network_devices)),
        );
    }
    if !report.qemu.leftover_processes.is_empty() {
        let msg = format!("processes survived the run: {:?}", report.qemu.leftover_processes);
        report.error(FailureCode::LeftoverProcess, msg, None);
    }
}

/// A boot the machine could not run: the error, and the command line it
/// would have run (its network arguments are evidence too).
pub fn machine_failed(report: &mut Report, e: &MachineError) {
    if !e.argv().is_empty() {
        report.qemu.argv = e.argv().to_vec();
        report.network.qemu_network_args = network_args(&report.qemu.argv);
    }
    report.error(e.code(), e.to_string(), None);
}

/// Whether the input image is as it was: `after` is its hash now.
/// The input was written during the run: its stamp (inode, size, change
/// time) moved from `was` to `now`. A hash read while the guest booted is
/// no hash "before", and the caller reports none.
pub fn input_written(report: &mut Report, after: Result<String, String>, was: &str, now: &str) {
    report.image.unchanged = Some(false);
    report.image.sha256_after = after.ok();
    report.error(
        FailureCode::InputModified,
        format!(
            "the input image was written during the run (its size or change time moved: {was} → {now}): something other than airboot wrote to it"
        ),
        None,
    );
}

pub fn input_check(report: &mut Report, after: Result<String, String>) {
    match after {
        Ok(h) => {
            let same = report.image.sha256_before.as_deref() == Some(h.as_str());
            report.image.unchanged = Some(same);
            report.image.sha256_after = Some(h);
            if !same {
                report.error(
                    FailureCode::InputModified,
                    "the input image changed during the run: something other than airboot wrote to it".into(),
                    None,
                );
            }
        }
        Err(e) => report.error(FailureCode::ImageUnreadable, format!("after the run: {e}"), None),
    }
}

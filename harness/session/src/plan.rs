//! Planning a boot: pure decisions from the scenario, the resolved image
//! and what the machine offers. Nothing here starts or opens anything.

use std::path::PathBuf;

use airboot_core::run::RunConfig;
use airboot_core::scenario::{AccelChoice, Scenario, StepAction, StepSpec};
use airboot_model::{Accel, Arch, Failure, FailureCode, TransportKind};
use airboot_qemu::accel::AccelDecision;
use airboot_qemu::firmware::Firmware;
use airboot_qemu::transport::{self, Choice};

use crate::boot::BootOptions;
use crate::fixtures::ResolvedImage;
use crate::machine::{BootPlan, HostCaps};

/// The transport to the probe: `--transport` over `machine.transport`,
/// else the best this host offers for an image with (or without) the
/// probe. A forced transport the host or image cannot serve is an error.
pub fn choose_transport(
    s: &Scenario,
    o: &BootOptions,
    has_probe: bool,
    caps: &transport::HostCaps,
) -> Result<Choice, Failure> {
    let (requested, by) = match o.transport {
        Some(t) => (t, "--transport"),
        None => (s.machine.transport, "machine.transport"),
    };
    transport::choose(requested, by, has_probe, caps).map_err(|e| Failure::new(FailureCode::Transport, e))
}

/// The accelerator asked for, and by whom: `--accel` over `machine.accel`.
pub fn accel_choice(s: &Scenario, o: &BootOptions) -> (AccelChoice, &'static str) {
    match o.accel {
        Some(c) => (c, "--accel"),
        None => (s.machine.accel, "machine.accel"),
    }
}

/// What budgets and timeouts (written for KVM) are multiplied by.
pub fn scale(s: &Scenario, accel: Accel) -> f64 {
    if accel == Accel::Tcg { s.machine.tcg_slowdown } else { 1.0 }
}

/// Notes on choices that will cost time.
pub fn notes(s: &Scenario, arch: Arch, accel: Accel) -> Vec<String> {
    let mut n = Vec::new();
    if arch == Arch::Aarch64 && accel == Accel::Tcg && s.machine.cpu.as_deref() == Some("max") {
        n.push(
            "machine.cpu = \"max\" under TCG emulates pointer authentication the slow way (2-3.5x slower boots); \"max,pauth-impdef=on\" or \"cortex-a72\" are the fast choices".into(),
        );
    }
    n
}

/// Everything decided about a boot.
pub struct Decided {
    pub arch: Arch,
    pub caps: HostCaps,
    pub accel: AccelDecision,
    pub transport: Choice,
    pub firmware: Option<Firmware>,
}

/// The plan: the VM, what it boots, how the run is judged.
pub fn boot_plan(s: &Scenario, image: &ResolvedImage, d: Decided, o: &BootOptions, console_log: PathBuf) -> BootPlan {
    let scale = scale(s, d.accel.accel);
    let run = RunConfig {
        expect: s.expect.clone(),
        known_ids: image.known_ids.clone(),
        milestones: s.milestones.clone(),
        scale,
        probe: d.transport.kind != TransportKind::Console,
        login: false,
        injected: false,
    };
    BootPlan {
        arch: d.arch,
        qemu: d.caps.qemu,
        accel: d.accel,
        transport: d.transport,
        scale,
        firmware: d.firmware,
        cpu: s.machine.cpu.clone(),
        memory_mib: s.machine.memory_mib,
        cpus: s.machine.cpus,
        rtc: s.machine.rtc.clone(),
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        append: image.append.clone(),
        disk: match &o.disk {
            Some(d) => (d.clone(), airboot_model::DiskFormat::Qcow2),
            None => (image.disk.clone(), image.format),
        },
        write_log: o.write_log.clone(),
        record: o.record.clone(),
        keep_overlay: o.keep_overlay.clone(),
        console_log,
        run,
        verify_images: s.expect.images.iter().map(|i| i.reference.clone()).collect(),
        login: None,
        after: steps_for_boot(&s.steps, scale),
    }
}

/// The steps one boot carries out: up to and including the first reboot
/// or power cut (the rest belong to the boot after it), their timeouts
/// and waits × `scale` like every budget.
pub fn steps_for_boot(steps: &[StepSpec], scale: f64) -> Vec<StepSpec> {
    let end = steps.iter().position(|s| s.action.boots_again()).map_or(steps.len(), |i| i + 1);
    steps[..end]
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.wait = s.wait.map(|w| w.mul_f64(scale));
            match &mut s.action {
                StepAction::Run { timeout, .. } | StepAction::Reboot { timeout, .. } => {
                    *timeout = timeout.mul_f64(scale)
                }
                StepAction::PowerCut => {}
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(extra: &str) -> Scenario {
        let src = format!("[image]\nfixture = \"debian-preseeded-x86_64\"\n{extra}");
        airboot_core::scenario::parse(&src, Path::new("s.toml"), &airboot_core::scenario::any_file).unwrap()
    }

    fn caps(kernel_vsock: bool, vdv: bool) -> transport::HostCaps {
        transport::HostCaps {
            kernel_vsock: if kernel_vsock { Ok(()) } else { Err("/dev/vhost-vsock does not exist".into()) },
            vhost_device_vsock: vdv.then(|| PathBuf::from("/opt/vdv")),
        }
    }

    #[test]
    fn the_command_line_overrides_the_scenario_and_the_host_decides_auto() {
        let s = scenario("[machine]\ntransport = \"virtio-serial\"\naccel = \"kvm\"\n");
        let none = BootOptions::default();
        let c = choose_transport(&s, &none, true, &caps(true, true)).unwrap();
        assert_eq!((c.kind, c.reason.as_str()), (TransportKind::VirtioSerial, "forced by machine.transport"));
        let forced = BootOptions { transport: Some(Some(TransportKind::Vsock)), accel: Some(AccelChoice::Tcg), ..none };
        let c = choose_transport(&s, &forced, true, &caps(true, true)).unwrap();
        assert_eq!((c.kind, c.reason.as_str()), (TransportKind::Vsock, "forced by --transport"));
        assert_eq!(accel_choice(&s, &forced), (AccelChoice::Tcg, "--accel"));
        assert_eq!(accel_choice(&s, &BootOptions::default()), (AccelChoice::Kvm, "machine.accel"));
        // `--transport auto` beats the scenario's forced one.
        let auto = BootOptions { transport: Some(None), ..BootOptions::default() };
        let c = choose_transport(&s, &auto, true, &caps(false, true)).unwrap();
        assert_eq!(c.kind, TransportKind::VhostUserVsock);
        // A forced kernel vsock this host lacks is an error naming the fix.
        let f = choose_transport(&s, &forced, true, &caps(false, true)).unwrap_err();
        assert_eq!(f.code, FailureCode::Transport);
        assert!(f.message.contains("vhost-user-vsock, virtio-serial or auto"), "{}", f.message);
        // No probe in the image: the console, whatever the host has.
        let c = choose_transport(&scenario(""), &BootOptions::default(), false, &caps(true, true)).unwrap();
        assert_eq!(c.kind, TransportKind::Console);
    }

    #[test]
    fn tcg_scales_budgets_and_slow_choices_are_noted() {
        let s = scenario("[machine]\ntcg_slowdown = 7\ncpu = \"max\"\n");
        assert_eq!(scale(&s, Accel::Tcg), 7.0);
        assert_eq!(scale(&s, Accel::Kvm), 1.0);
        assert_eq!(notes(&s, Arch::Aarch64, Accel::Tcg).len(), 1);
        assert!(notes(&s, Arch::X86_64, Accel::Tcg).is_empty());
        assert!(notes(&s, Arch::Aarch64, Accel::Kvm).is_empty());
    }
}

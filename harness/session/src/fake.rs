//! A machine and a fixture store for tests: nothing boots.
//!
//! [`FakeMachine`] plays console lines into the run state machine (one
//! script per boot, in order), appends the matching pieces of a write log
//! when the plan records one (so the recorder places console lines in the
//! stream as it would in a real recorded boot), keeps the overlay a plan
//! asks to keep (a real qcow2 over the plan's disk), and returns the
//! outcome it is told to: network devices, leftover processes, a failure
//! to start. [`FakeFixtures`] is one fixture, `fake-x86_64`, in a folder.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use airboot_core::console::TimedLine;
use airboot_core::cut::Recorder;
use airboot_core::run::{Decision, Run};
use airboot_core::scenario::AccelChoice;
use airboot_model::{Accel, Arch, BootMode};
use airboot_qemu::accel::AccelDecision;
use airboot_qemu::firmware::Firmware;
use airboot_qemu::transport;
use airboot_qemu::vm::{Recorded, VmError, VmEvent, VmOutcome};

use crate::fixtures::{BoardKernel, FixtureBuild, Fixtures};
use crate::machine::{BootPlan, Machine, MachineError};

/// One boot's console, and what each line's moment adds to the write log
/// (when the boot is recorded).
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub lines: Vec<String>,
    /// `log[i]` is appended to the write log just before line `i`.
    pub log: Vec<Vec<u8>>,
}

impl Script {
    pub fn lines(lines: &[&str]) -> Script {
        Script { lines: lines.iter().map(|l| l.to_string()).collect(), log: Vec::new() }
    }
}

/// A machine that boots nothing.
pub struct FakeMachine {
    pub qemu: Result<PathBuf, String>,
    pub caps: transport::HostCaps,
    pub accel: Accel,
    /// The console of each boot, in order; the last one repeats.
    pub scripts: Mutex<VecDeque<Script>>,
    pub nics: Vec<String>,
    pub leftover: Vec<String>,
    /// Written over during the boot (an input image, to be caught).
    pub scribble: Option<PathBuf>,
    /// Fail to start, having built this command line.
    pub fail: Option<Vec<String>>,
    /// What was asked: the accelerator (choice, by whom), each plan.
    pub asked_accel: Mutex<Option<(AccelChoice, String)>>,
    pub plans: Mutex<Vec<BootPlan>>,
    /// Each boot stays powered on this long after it started (so boots
    /// from several threads overlap); the most that were on at once.
    pub hold: std::time::Duration,
    pub on: AtomicUsize,
    pub most_on: AtomicUsize,
}

impl FakeMachine {
    /// A host with QEMU, vhost-device-vsock but no kernel vsock, no KVM,
    /// whose guests print `console`.
    pub fn new(console: Script) -> FakeMachine {
        FakeMachine {
            qemu: Ok("/usr/bin/qemu-system-x86_64".into()),
            caps: transport::HostCaps {
                kernel_vsock: Err("/dev/vhost-vsock does not exist".into()),
                vhost_device_vsock: Some("/opt/vhost-device-vsock".into()),
            },
            accel: Accel::Tcg,
            scripts: Mutex::new(VecDeque::from([console])),
            nics: Vec::new(),
            leftover: Vec::new(),
            scribble: None,
            fail: None,
            asked_accel: Mutex::new(None),
            plans: Mutex::new(Vec::new()),
            hold: std::time::Duration::ZERO,
            on: AtomicUsize::new(0),
            most_on: AtomicUsize::new(0),
        }
    }

    /// The plan of the last boot.
    pub fn last_plan(&self) -> Option<BootPlan> {
        self.plans.lock().unwrap().last().cloned()
    }

    fn next_script(&self) -> Script {
        let mut s = self.scripts.lock().unwrap();
        if s.len() > 1 { s.pop_front().unwrap_or_default() } else { s.front().cloned().unwrap_or_default() }
    }
}

impl Machine for FakeMachine {
    fn emulator(&self, _: Arch) -> Result<PathBuf, String> {
        self.qemu.clone()
    }

    fn transports(&self) -> transport::HostCaps {
        self.caps.clone()
    }

    fn accel(&self, choice: AccelChoice, by: &str, _: Arch, _: &Path, _: Option<&Path>) -> AccelDecision {
        *self.asked_accel.lock().unwrap() = Some((choice, by.to_string()));
        match self.accel {
            Accel::Kvm => AccelDecision::kvm("the fake has KVM"),
            Accel::Tcg => AccelDecision::tcg("the fake has no KVM"),
        }
    }

    fn firmware(&self, _: Arch, _: Option<&Path>, _: Option<&Path>) -> Result<Firmware, String> {
        Err("no firmware in the fake".into())
    }

    fn boot(&self, plan: &BootPlan, mut run: Run, events: &mut dyn FnMut(VmEvent)) -> Result<VmOutcome, MachineError> {
        self.plans.lock().unwrap().push(plan.clone());
        let script = self.next_script();
        if let Some(argv) = &self.fail {
            return Err(MachineError::Vm {
                error: VmError::EarlyExit { status: "exit status: 1".into(), stderr: "no such device".into() },
                argv: argv.clone(),
            });
        }
        events(VmEvent::Started { qemu_version: Some("9.9.9".into()) });
        let on = self.on.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_on.fetch_max(on, Ordering::SeqCst);
        std::thread::sleep(self.hold);
        self.on.fetch_sub(1, Ordering::SeqCst);
        if let Some(f) = &self.scribble {
            let _ = std::fs::write(f, b"written by something else");
        }
        let mut recorder = plan.record.as_ref().map(|r| Recorder::new(r.marks.clone(), r.stop));
        let log_len = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
        for (i, text) in script.lines.iter().enumerate() {
            if let (Some(log), Some(piece)) = (&plan.write_log, script.log.get(i)) {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(log)
                    .map_err(|e| MachineError::Workdir(format!("the fake cannot append to {}: {e}", log.display())))?;
                f.write_all(piece).map_err(|e| MachineError::Workdir(e.to_string()))?;
            }
            let t = 1.0 + i as f64;
            let line = TimedLine { t, text: text.clone(), truncated: false };
            let decision = run.on_line(&line);
            let cut = recorder.as_mut().is_some_and(|r| r.on_line(t, text, &mut || log_len(&plan.write_log)))
                && plan.record.as_ref().is_some_and(|r| r.pause);
            if decision == Decision::Stop || cut {
                break;
            }
        }
        if !run.is_done() {
            run.on_tick(run.deadline_s());
        }
        // A real overlay over a real disk; over the tests' stand-in files
        // (no image at all), a stand-in overlay.
        if let Some(keep) = &plan.keep_overlay
            && airboot_qemu::disk::create_overlay(&plan.disk.0, plan.disk.1, keep).is_err()
        {
            std::fs::write(keep, b"the fake's overlay").map_err(|e| MachineError::Overlay(e.to_string()))?;
        }
        // Steps: a `run` of `false` fails (exit 1), anything else works.
        let mut steps = Vec::new();
        if run.is_done() {
            for st in &plan.after {
                let fails =
                    matches!(&st.action, airboot_core::scenario::StepAction::Run { command, .. } if command == "false");
                steps.push(airboot_core::report::StepRecord {
                    name: st.name.clone(),
                    action: st.action.describe(),
                    ok: !fails,
                    detail: if fails { "exited 1, not 0".into() } else { "the fake did it".into() },
                    exec: fails.then(|| airboot_proto::probe::ExecResult { exit_code: Some(1), ..Default::default() }),
                    ..Default::default()
                });
                if st.action.boots_again() {
                    break;
                }
            }
        }
        Ok(VmOutcome {
            steps,
            ended_s: Some(1.0 + script.lines.len() as f64),
            result: run.finish(),
            network_args: Vec::new(),
            argv: vec!["-nodefaults".into(), "-S".into()],
            qemu_version: Some("9.9.9".into()),
            exit: Some("killed".into()),
            stderr_tail: Vec::new(),
            pci_network_devices: self.nics.clone(),
            pci_checked: true,
            console_lines: script.lines.len() as u64,
            console_bytes: script.lines.iter().map(|l| l.len() as u64 + 1).sum(),
            truncated_lines: 0,
            log_capped: false,
            tail: Vec::new(),
            leftover: self.leftover.clone(),
            probe_transport: None,
            probe_version: None,
            helper_log_tail: Vec::new(),
            recorded: recorder.map(|r| Recorded { seen: r.seen, stopped: r.fired }),
        })
    }
}

/// One fixture, `fake-x86_64`, whose disk is `disk` (built, or not yet).
pub struct FakeFixtures {
    pub build: FixtureBuild,
    pub built: Mutex<bool>,
    pub builds: Mutex<u32>,
}

impl FakeFixtures {
    /// `disk` is used as it is; `images` are the IDs the "build" recorded.
    pub fn new(dir: &Path, disk: PathBuf, images: &[(&str, &str)], probe: bool, built: bool) -> FakeFixtures {
        FakeFixtures {
            build: FixtureBuild {
                name: "fake-x86_64".into(),
                dir: dir.to_path_buf(),
                arch: Arch::X86_64,
                boot: BootMode::Direct,
                disk,
                kernel: dir.join("vmlinuz"),
                initrd: dir.join("initrd.img"),
                append: "console=ttyS0 root=/dev/vda".into(),
                images: images.iter().map(|(r, i)| (r.to_string(), i.to_string())).collect::<BTreeMap<_, _>>(),
                probe,
            },
            built: Mutex::new(built),
            builds: Mutex::new(0),
        }
    }
}

impl Fixtures for FakeFixtures {
    fn known(&self, name: &str) -> bool {
        name == self.build.name
    }
    fn current(&self, _: &str) -> Option<FixtureBuild> {
        self.built.lock().unwrap().then(|| self.build.clone())
    }
    fn open(&self, dir: &Path, _: &str) -> Option<FixtureBuild> {
        (dir == self.build.dir).then(|| self.build.clone())
    }
    fn build(&self, _: &str, progress: &mut dyn FnMut(&str)) -> Result<FixtureBuild, String> {
        progress("[1/1] pretending");
        *self.builds.lock().unwrap() += 1;
        *self.built.lock().unwrap() = true;
        Ok(self.build.clone())
    }
    fn board_kernel(&self, _: Arch, _: &mut dyn FnMut(&str)) -> Result<BoardKernel, String> {
        Err("no board kernel in the fake".into())
    }
}

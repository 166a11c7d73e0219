//! One boot of one scenario: resolve, plan, boot on a machine, judge.
//! Whatever happens, the result is a report (an aborted or refused boot
//! says why in it), announced with [`RunEvent::BootFinished`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use airboot_core::disk::{ReadAt, detect};
use airboot_core::event::{EventSink, RunEvent};
use airboot_core::report::{Report, UnpackedInfo};
use airboot_core::run::Run;
use airboot_core::scenario::{AccelChoice, ImageSource, Scenario};
use airboot_model::{Arch, BootMode, DiskFormat, Failure, FailureCode, TransportKind};
use airboot_qemu::argv::{default_append, default_cpu, machine};
use airboot_qemu::disk;
use airboot_qemu::vm::{RecordSpec, Recorded, VmEvent};

use crate::fixtures::{Fixtures, ResolvedImage, resolve};
use crate::machine::{HostCaps, Machine};
use crate::plan::{self, Decided};
use crate::{clock, policy};

/// How to boot a scenario beyond what its file says.
#[derive(Debug, Clone, Default)]
pub struct BootOptions {
    /// `--accel`, over `machine.accel`.
    pub accel: Option<AccelChoice>,
    /// `--transport`, over `machine.transport` (`Some(None)`: auto).
    pub transport: Option<Option<TransportKind>>,
    /// Build a fixture that is not built yet.
    pub build: bool,
    /// Boot this build folder of the scenario's fixture instead of the
    /// current one (`airboot repro`: the build a bundle was cut from, so
    /// its kernel and initramfs match the disk under the crash state).
    pub fixture_build: Option<PathBuf>,
    /// Boot this disk (a qcow2 over the input image: a crash state)
    /// instead of the input image itself.
    pub disk: Option<PathBuf>,
    /// Record the guest's disk requests into this (existing, empty) file,
    /// noting where `record`'s console lines fall in the stream.
    pub write_log: Option<PathBuf>,
    pub record: Option<RecordSpec>,
    /// Keep the run's overlay here afterwards, with what the guest wrote.
    pub keep_overlay: Option<PathBuf>,
    /// The disk (`disk`) already carries the probe: `Some(true)` injected
    /// by an earlier boot of this scenario, `Some(false)` the image's own
    /// (the boot after a `[[step]]`).
    pub carried_probe: Option<bool>,
    /// Boots the run has at once (`airboot run --jobs`; 0 and 1: alone),
    /// recorded as `machine.jobs`: the history keys such runs apart.
    pub jobs: usize,
}

/// Where boots run, and where fixtures come from.
pub struct Env<'a> {
    pub machine: &'a dyn Machine,
    pub fixtures: &'a dyn Fixtures,
}

/// What a boot hands back besides its report.
#[derive(Debug, Clone)]
pub struct Boot {
    pub report: Report,
    /// What the recorder saw (a recorded boot).
    pub recorded: Option<Recorded>,
    /// The input image and its format, once resolved.
    pub input: Option<(PathBuf, DiskFormat)>,
    /// The guest's architecture, once decided.
    pub arch: Option<Arch>,
    /// The layer with the injected probe, kept for the boots after steps.
    pub layer: Option<std::sync::Arc<crate::inject::Layer>>,
}

/// Boot `s` once, its console log and helper logs in `dir`.
pub fn run_boot(s: &Scenario, dir: &Path, opts: &BootOptions, env: &Env, sink: &mut dyn EventSink) -> Boot {
    let wall = Instant::now();
    let mut report = Report::new(&s.name, &s.file.display().to_string(), clock::now_rfc3339());
    report.description = s.description.clone();
    report.machine.memory_mib = s.machine.memory_mib;
    report.machine.cpus = s.machine.cpus;
    report.machine.jobs = opts.jobs.max(1);
    let mut boot = Boot { report, recorded: None, input: None, arch: None, layer: None };
    // Steps: this boot carries out those up to the first reboot or power
    // cut, whose overlay is kept for the boot after it.
    let here = crate::plan::steps_for_boot(&s.steps, 1.0);
    let reboots = here.last().is_some_and(|x| x.action.boots_again());
    // What the guest wrote is kept until the boot is judged: for the boot
    // after a step, and to read the store offline when the boot failed
    // on its images or containers (a campaign keeps its own).
    let kept = dir.join("disk-after-boot.qcow2");
    let mut own = opts.clone();
    let keep = opts.keep_overlay.is_none() && opts.write_log.is_none();
    if keep {
        own.keep_overlay = Some(kept.clone());
    }
    match std::fs::create_dir_all(dir) {
        Ok(()) => {
            if let Err(f) = session(s, dir, &own, env, sink, &mut boot) {
                sink.event(RunEvent::Refused(f.clone()));
                boot.report.error(f.code, f.message, f.evidence);
            }
        }
        Err(e) => boot.report.error(FailureCode::ReportDir, format!("cannot create {}: {e}", dir.display()), None),
    }
    if !s.steps.is_empty() && boot.report.verdict != airboot_model::Verdict::Error {
        crate::steps::judge(&mut boot.report, &here);
    }
    // Why it failed, from everything the run saw (console.log is bounded:
    // its writer caps it).
    let console: Vec<_> = std::fs::read(dir.join("console.log"))
        .map(|b| String::from_utf8_lossy(&b).lines().filter_map(airboot_core::console::parse_log_line).collect())
        .unwrap_or_default();
    if s.expect.read_only_root && boot.report.verdict != airboot_model::Verdict::Error {
        check_read_only_root(dir, if keep { Some(kept.as_path()) } else { None }, sink, &mut boot);
    }
    if keep && kept.is_file() && airboot_core::diagnose::wants_store_check(&boot.report) {
        check_store(s, dir, &kept, sink, &mut boot);
    }
    boot.report.diagnoses = airboot_core::diagnose::diagnose(&boot.report, &console);
    if reboots && keep {
        let i = here.len() - 1;
        if boot.report.steps.iter().any(|r| r.name == here[i].name) && kept.is_file() {
            crate::steps::follow(s, i, dir, &kept, opts, env, sink, &mut boot);
        }
    }
    // The kept overlay is as throwaway as any other.
    if keep {
        let _ = std::fs::remove_file(&kept);
    }
    boot.report.wall_s = wall.elapsed().as_secs_f64();
    sink.event(RunEvent::BootFinished { report: Box::new(boot.report.clone()), dir: dir.to_path_buf() });
    boot
}

/// `expect.read_only_root` offline: the root partition unwritten, the
/// store's writes in its upper directory.
fn check_read_only_root(dir: &Path, kept: Option<&Path>, sink: &mut dyn EventSink, boot: &mut Boot) {
    let (Some((input, _)), Some(arch), Some(kept)) = (&boot.input, boot.arch, kept.filter(|k| k.is_file())) else {
        boot.report.notes.push(
            "expect.read_only_root: the disk the boot left was not kept, so it was checked in the guest only".into(),
        );
        return;
    };
    sink.event(RunEvent::Step("expect.read_only_root: reading what the boot wrote, offline".into()));
    let c = crate::readonly::check(input, arch, kept, &boot.report, dir);
    sink.event(RunEvent::Detail(format!(
        "root partition {}: {} bytes written; upper directory: {}",
        c.root_partition,
        c.root_written_bytes,
        c.upper
            .as_ref()
            .map(|u| format!("{} files, {} bytes, containers {:?}", u.files, u.bytes, u.containers_found))
            .unwrap_or_else(|| "not read".into())
    )));
    for p in airboot_core::readonly::judge_offline(&c) {
        boot.report.fail(airboot_model::Failure { code: p.code, message: p.message, evidence: None });
    }
    boot.report.read_only_root = Some(c);
}

/// Read the store offline from the disk a failed boot left (`kept`, over
/// the input image), into the report.
fn check_store(s: &Scenario, dir: &Path, kept: &Path, sink: &mut dyn EventSink, boot: &mut Boot) {
    let (Some((input, _)), Some(arch)) = (&boot.input, boot.arch) else { return };
    let root = match disk::open_image(input) {
        Ok(view) => detect::root_partition(view.as_ref(), arch),
        Err(_) => None,
    };
    let Some(root) = root else {
        boot.report.notes.push("the store was not read offline: no root filesystem found in the image".into());
        return;
    };
    sink.event(RunEvent::Step(
        "the boot failed on its images or containers: reading the store offline from the disk it left".into(),
    ));
    let expected: Vec<String> = s.expect.images.iter().map(|i| i.reference.clone()).collect();
    let t = Instant::now();
    match crate::store::check_offline(kept, (root.start, root.len), s.expect.engine, &expected, dir, "store-check") {
        Ok(o) => {
            sink.event(RunEvent::Detail(format!(
                "store {} ({} of {} layers verified) in {:.1}s",
                o.check.verdict.as_str(),
                o.check.layers_verified,
                o.check.layers_registered,
                t.elapsed().as_secs_f64()
            )));
            boot.report.store_check = Some(o);
        }
        Err(e) => {
            boot.report.notes.push(format!("the store could not be read offline from the disk the boot left: {e}"))
        }
    }
}

/// The boot proper. An `Err` is a harness error before QEMU ran; failures
/// after that are in the report.
fn session(
    s: &Scenario,
    dir: &Path,
    opts: &BootOptions,
    env: &Env,
    sink: &mut dyn EventSink,
    out: &mut Boot,
) -> Result<(), Failure> {
    let report = &mut out.report;
    // A packed input is unpacked once (cached by its sha256) and the copy
    // booted; the input stays what is hashed before and after.
    let unpacked = unpack_input(s, sink)?;
    let with_copy;
    let s = match &unpacked {
        Some(u) => {
            let mut c = s.clone();
            c.image.source = ImageSource::Path(u.path.clone());
            with_copy = c;
            &with_copy
        }
        None => s,
    };
    let format = |p: &Path, said| disk::resolve_format(p, said).map_err(|e| e.to_string());
    let mut r = resolve(s, opts.fixture_build.as_deref(), opts.build, env.fixtures, &format, sink)?;
    let input = unpacked.as_ref().map(|u| u.input.clone()).unwrap_or_else(|| r.disk.clone());
    report.image.fixture = r.fixture.clone();
    report.image.path = Some(input.display().to_string());
    report.image.unpacked = unpacked.as_ref().map(|u| UnpackedInfo {
        packing: u.packing.clone(),
        path: u.path.display().to_string(),
        sha256: u.sha256.clone(),
        size: u.size,
        reused: u.reused,
    });
    report.image.format = Some(r.format);
    if r.fixture.is_none()
        && let Some(why) = disk::unusable(&r.disk, r.format)
    {
        return Err(Failure::new(FailureCode::ImageUnreadable, why));
    }
    // Read once: the architecture check and board mode both look inside.
    let image = disk::open_image(&r.disk);
    let arch = detect_arch(s, &r, &image, report)?;
    out.input = Some((r.disk.clone(), r.format));
    out.arch = Some(arch);
    sink.event(RunEvent::Arch { arch, evidence: report.arch_detection.evidence.clone() });
    if r.fixture.is_none() && s.image.boot.is_none() && r.kernel.is_none() {
        let (mode, why) = match &image {
            Ok(view) => detect::boot_path(view.as_ref(), arch),
            Err(e) => Err(format!("cannot read it: {e}")),
        }
        .map_err(|e| {
            Failure::new(
                FailureCode::BadInput,
                format!(
                    "{}: cannot tell how the disk boots ({e}): say `boot = \"uefi\"` or `\"bios\"` under [image], or give `kernel` (and `initrd`, `append`) for QEMU to load",
                    input.display()
                ),
            )
        })?;
        sink.event(RunEvent::Detail(format!("boot {mode}: {why}")));
        report.boot.detected = Some(why);
        r.boot = mode;
    }
    if r.boot == BootMode::Bios && arch != Arch::X86_64 {
        return Err(Failure::new(
            FailureCode::BadInput,
            format!("boot = \"bios\" is for x86_64 disks; this one is {arch}: use boot = \"uefi\" (or a kernel)"),
        ));
    }
    if r.boot == BootMode::Bios {
        report.boot.firmware = Some("SeaBIOS (qemu-system-x86_64's built-in firmware)".into());
        report.boot.firmware_source = Some("QEMU's default for -machine q35 with no pflash and no -bios".into());
    }
    if r.boot == BootMode::Direct && r.append.is_none() {
        r.append = Some(default_append(arch));
    }
    report.arch = Some(arch);
    report.boot.mode = Some(r.boot);
    if r.boot == BootMode::Board {
        board_boot(s, arch, &image, &mut r, env.fixtures, report, sink)?;
    }
    drop(image);
    report.boot.kernel = r.kernel.as_ref().map(|k| k.display().to_string());
    report.boot.initrd = r.initrd.as_ref().map(|k| k.display().to_string());
    report.boot.append = r.append.clone();
    report.machine.machine = Some(machine(arch).into());

    // An image without the probe gets one in a layer over it (the layer,
    // not the image, is what the throwaway overlay then goes over).
    let recording = opts.write_log.is_some() || opts.disk.is_some();
    let prepared = match opts.carried_probe {
        // The boot after a step: the disk is the last boot's, probe and all.
        Some(injected) => {
            report.probe.origin = Some(if injected { "injected" } else { "image" }.into());
            if injected {
                report
                    .notes
                    .push("the probe is the one injected for this scenario's first boot (it is in the disk)".into());
            }
            crate::inject::Prepared::InImage
        }
        None => crate::inject::prepare(s, &r, arch, recording, report, sink),
    };
    let layer = match prepared {
        crate::inject::Prepared::Injected(layer) => {
            r.probe = true;
            Some(layer)
        }
        crate::inject::Prepared::InImage => {
            r.probe = true;
            None
        }
        crate::inject::Prepared::None => None,
    };
    let qemu = env.machine.emulator(arch).map_err(|e| Failure::new(FailureCode::QemuMissing, e))?;
    report.machine.qemu = Some(qemu.display().to_string());
    let caps = HostCaps { qemu, transports: env.machine.transports() };
    let transport = plan::choose_transport(s, opts, r.probe, &caps.transports)?;
    sink.event(RunEvent::Transport { kind: transport.kind, reason: transport.reason.clone() });
    report.probe.transport = Some(transport.kind);
    report.probe.transport_reason = Some(transport.reason.clone());
    let (choice, by) = plan::accel_choice(s, opts);
    let accel = env.machine.accel(choice, by, arch, &caps.qemu, r.probe_kernel.as_deref());
    sink.event(RunEvent::Accel { accel: accel.accel, reason: accel.reason.clone() });
    report.accel = Some(accel.accel);
    report.accel_reason = Some(accel.reason.clone());
    let scale = plan::scale(s, accel.accel);
    report.timeouts.scale = scale;
    report.timeouts.timeout_s = s.expect.timeout.as_secs_f64() * scale;
    report.timeouts.time_to_stack_budget_s = s.expect.time_to_stack.map(|t| t.as_secs_f64() * scale);

    // The input's hash before the run: kept from an earlier run while the
    // file is untouched, else computed while the guest boots (QEMU never
    // writes the input, so the boot need not wait for it). The hash after
    // the run is always computed in full.
    let hashes = airboot_images::cache_root().join("hashes");
    let stamp = disk::file_stamp(&input)
        .map_err(|e| Failure::new(FailureCode::ImageUnreadable, format!("cannot read {}: {e}", input.display())))?;
    let before = match &unpacked {
        Some(u) => BeforeHash::Known(u.input_sha256.clone()),
        None => match disk::cached_sha256(&input, &hashes) {
            Some(h) => {
                sink.event(RunEvent::Detail(format!(
                    "{}: sha256 kept from an earlier run (same inode, size and change time); hashed again after the run",
                    input.display()
                )));
                BeforeHash::Known(h)
            }
            None => {
                sink.event(RunEvent::Step(format!("hashing {} while the guest boots", input.display())));
                let (path, cache, stamp) = (input.clone(), hashes.clone(), stamp.clone());
                BeforeHash::Pending(std::thread::spawn(move || {
                    let h = disk::sha256_file(&path).map_err(|e| e.to_string())?;
                    // Kept only if nothing wrote to the file since `stamp`.
                    disk::remember_sha256(&path, &stamp, &h, &cache);
                    Ok(h)
                }))
            }
        },
    };
    let firmware = match r.boot {
        BootMode::Uefi => Some(
            env.machine
                .firmware(arch, s.machine.firmware.as_deref(), s.machine.firmware_vars.as_deref())
                .map_err(|e| Failure::new(FailureCode::FirmwareMissing, e))?,
        ),
        _ => None,
    };
    if let Some(fw) = &firmware {
        report.boot.firmware = Some(fw.code.display().to_string());
        report.boot.firmware_source = Some(fw.source.clone());
    }
    report.notes.extend(plan::notes(s, arch, accel.accel));
    report.machine.cpu = Some(s.machine.cpu.clone().unwrap_or_else(|| default_cpu(arch, accel.accel).into()));
    let decided = Decided { arch, caps, accel, transport, firmware };
    let mut plan = plan::boot_plan(s, &r, decided, opts, dir.join("console.log"));
    if let Some(l) = &layer {
        plan.disk = (l.disk.clone(), DiskFormat::Qcow2);
    }
    // The injected-silent rules hold for a probe injected now or by the
    // scenario's first boot.
    plan.run.injected = layer.is_some() || opts.carried_probe == Some(true);
    out.layer = layer.map(std::sync::Arc::new);
    if !r.probe
        && let Some(login) = login_plan(s, scale)?
    {
        report.probe.origin = Some("login".into());
        sink.event(RunEvent::Detail(format!(
            "no probe in the guest: airboot will log in on the serial console as {:?} and start the reference status reporter",
            login.user
        )));
        plan.run.login = true;
        plan.login = Some(login);
    }
    let run = Run::new(plan.run.clone())
        .map_err(|e| Failure::new(FailureCode::BadInput, format!("a console pattern does not compile: {e}")))?;
    sink.event(RunEvent::Booting {
        what: r.fixture.clone().unwrap_or_else(|| "image".into()),
        accel: plan.accel.accel,
        timeout_s: report.timeouts.timeout_s,
    });
    let mut on_vm = |e: VmEvent| match e {
        VmEvent::Started { qemu_version } => sink.event(RunEvent::GuestStarted { qemu_version }),
        VmEvent::Milestone(m) => sink.event(RunEvent::Milestone(m)),
        VmEvent::Note(n) => sink.event(RunEvent::Note(n)),
        VmEvent::Status(s) => sink.event(RunEvent::GuestStatus {
            engine: s.engine,
            images: s.images,
            containers: s.containers,
            running: s.running,
            settled: s.settled,
        }),
    };
    match env.machine.boot(&plan, run, &mut on_vm) {
        Err(e) => policy::machine_failed(report, &e),
        Ok(mut o) => {
            out.recorded = o.recorded.take();
            policy::fill(report, o);
        }
    }
    // A hash known before the boot is a true "before"; one read while the
    // guest booted is not, if the file was written meanwhile.
    let known = matches!(before, BeforeHash::Known(_));
    let before = before.get();
    let after = disk::sha256_file(&input).map_err(|e| e.to_string());
    let stamp_after = disk::file_stamp(&input).map_err(|e| e.to_string());
    match (before, stamp_after) {
        // Written during the run (the change time moved): whatever the
        // hash read while the guest booted, the input did not stay put.
        (before, Ok(now)) if now != stamp => {
            report.image.sha256_before = before.ok().filter(|_| known);
            policy::input_written(report, after, &stamp, &now);
        }
        (Ok(h), _) => {
            if after.as_ref() == Ok(&h) {
                disk::remember_sha256(&input, &stamp, &h, &hashes);
            }
            report.image.sha256_before = Some(h);
            policy::input_check(report, after);
        }
        (Err(e), _) => {
            report.error(FailureCode::ImageUnreadable, format!("hashing the input before the run: {e}"), None)
        }
    }
    Ok(())
}

/// The input's hash before the run: known, or being computed.
enum BeforeHash {
    Known(String),
    Pending(std::thread::JoinHandle<Result<String, String>>),
}

impl BeforeHash {
    fn get(self) -> Result<String, String> {
        match self {
            BeforeHash::Known(h) => Ok(h),
            BeforeHash::Pending(t) => t.join().unwrap_or_else(|_| Err("the hashing thread panicked".into())),
        }
    }
}

/// The console login of `[image] login`: the password (read from its file
/// now), and the reference reporter's configuration for the stack.
fn login_plan(s: &Scenario, scale: f64) -> Result<Option<airboot_qemu::vm::LoginPlan>, Failure> {
    use airboot_core::scenario::Password;
    let Some(l) = &s.image.login else { return Ok(None) };
    let password = match &l.password {
        Password::Inline(p) => p.clone(),
        Password::File(f) => std::fs::read_to_string(f)
            .map_err(|e| {
                Failure::new(FailureCode::BadInput, format!("image.login.password_file {}: {e}", f.display()))
            })?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
    };
    let containers: Vec<&str> = s.expect.containers.iter().map(|c| c.name.as_str()).collect();
    let mut conf = format!("ENGINE={}\nSTACK_CONTAINERS=\"{}\"\n", s.expect.engine, containers.join(" "));
    if let Some(c) = &s.expect.compose {
        let services: Vec<&str> = c.services.iter().map(|v| v.name.as_str()).collect();
        conf += &format!("STACK_COMPOSE=\"{}\"\nSTACK_SERVICES=\"{}\"\n", c.project, services.join(" "));
    }
    Ok(Some(airboot_qemu::vm::LoginPlan { user: l.user.clone(), password, conf, scale }))
}

/// Unpack a packed `path` input (none for a fixture or a plain disk).
fn unpack_input(s: &Scenario, sink: &mut dyn EventSink) -> Result<Option<airboot_qemu::unpack::Unpacked>, Failure> {
    let ImageSource::Path(p) = &s.image.source else {
        return Ok(None);
    };
    if !p.is_file() {
        return Ok(None); // resolve says what is wrong with it
    }
    let cache = airboot_images::cache_root();
    let mut progress = |m: String| sink.event(RunEvent::Detail(m));
    airboot_qemu::unpack::unpack(p, &cache, &mut progress).map_err(|e| Failure::new(FailureCode::ImageUnreadable, e))
}

/// Board mode: find the image's root partition, take the generic kernel
/// and the board initramfs for `arch`, and say in the report that the
/// board's own kernel is not what booted.
fn board_boot(
    s: &Scenario,
    arch: Arch,
    image: &std::io::Result<Box<dyn ReadAt>>,
    r: &mut ResolvedImage,
    fixtures: &dyn Fixtures,
    report: &mut Report,
    sink: &mut dyn EventSink,
) -> Result<(), Failure> {
    let view = image.as_ref().map_err(|e| {
        Failure::new(FailureCode::BadInput, format!("cannot read {} to find its root partition: {e}", r.disk.display()))
    })?;
    let rootp = detect::root_partition(view.as_ref(), arch).ok_or_else(|| {
        Failure::new(
            FailureCode::NoRootPartition,
            format!(
                "board mode: no root filesystem found in {} (no GPT partition typed Linux root for {arch}, no ext4 partition with an init or a container engine)",
                r.disk.display()
            ),
        )
    })?;
    sink.event(RunEvent::Step(format!("board mode: the generic {arch} kernel and airboot's board initramfs")));
    let mut progress = |m: &str| sink.event(RunEvent::Detail(m.to_string()));
    let bk = fixtures
        .board_kernel(arch, &mut progress)
        .map_err(|e| Failure::new(FailureCode::BoardKernel, format!("board mode: {e}")))?;
    let dev = if rootp.number == 0 { "/dev/vda".to_string() } else { format!("/dev/vda{}", rootp.number) };
    let mut append = airboot_images::kernel_append(arch, &dev);
    if let Some(x) = &s.image.append_extra {
        append = format!("{append} {x}");
    }
    report.notes.push(format!(
        "board mode: the board's own kernel was NOT used. Its root filesystem ({}, booted as {dev}) ran under Debian's generic {arch} kernel {} with an airboot initramfs that loaded {} first; results say nothing about the board kernel's configuration or drivers",
        rootp.why,
        bk.version,
        if bk.engine_modules.is_empty() { "nothing (all built in)".to_string() } else { bk.engine_modules.join(", ") }
    ));
    r.kernel = Some(bk.kernel.clone());
    r.initrd = Some(bk.initrd);
    r.probe_kernel = Some(bk.kernel);
    r.append = Some(append);
    Ok(())
}

/// Tell the image's architecture from the image itself and check it
/// against what the scenario asks, before QEMU starts.
fn detect_arch(
    s: &Scenario,
    r: &ResolvedImage,
    image: &std::io::Result<Box<dyn ReadAt>>,
    report: &mut Report,
) -> Result<Arch, Failure> {
    let mut evidence = Vec::new();
    let mut unreadable = None;
    match image {
        Ok(view) => evidence.extend(detect::disk_evidence(view.as_ref())),
        Err(e) => {
            report.notes.push(format!("could not look inside {} to tell its architecture: {e}", r.disk.display()));
            unreadable = Some(e.to_string());
        }
    }
    if r.boot == BootMode::Direct
        && let Some(k) = &r.kernel
    {
        evidence.extend(disk::kernel_evidence(k));
    }
    report.arch_detection.evidence = evidence.iter().map(|e| e.what.clone()).collect();
    if let detect::Verdict::Known(a) = detect::judge(&evidence) {
        report.arch_detection.detected = Some(a.to_string());
    }
    detect::decide(s.machine.arch.or(r.fixture_arch), &evidence).map_err(|e| Failure {
        code: e.code,
        message: match &unreadable {
            // Why nothing was found comes first: airboot could not look.
            Some(why) => format!("{}: airboot cannot read inside it ({why}); {}", r.disk.display(), e.message),
            None => format!("{}: {}", r.disk.display(), e.message),
        },
        evidence: Some(e.evidence),
    })
}

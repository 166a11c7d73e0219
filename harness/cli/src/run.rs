//! `airboot run`: resolve each scenario's image, choose the accelerator,
//! boot through a throwaway overlay, judge, and write the report, whatever
//! happens along the way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use airboot_core::disk::{ReadAt, detect};
use airboot_core::history::{self, HistoryEntry};
use airboot_core::outcome;
use airboot_core::report::{self, Report, RunEntry, RunIndex};
use airboot_core::run::{Run, RunConfig};
use airboot_core::scenario::{AccelChoice, ImageSource, Scenario};
use airboot_model::Accel;
use airboot_model::{Arch, BootMode, DiskFormat, Failure, FailureCode, TransportKind, Verdict};
use airboot_qemu::accel::{self, AccelDecision};
use airboot_qemu::argv::{VmSpec, default_append, machine, network_args};
use airboot_qemu::disk::open_image;
use airboot_qemu::process::{interrupt_reason, interrupted};
use airboot_qemu::transport;
use airboot_qemu::vm::{RecordSpec, Recorded, VmEvent, VmRunner};
use airboot_qemu::{disk, firmware};
use airboot_report::views::{RepeatStats, RunView, ScenarioView};

use crate::scenarios;

pub struct Options {
    pub paths: Vec<PathBuf>,
    pub report_dir: Option<PathBuf>,
    pub accel: Option<AccelChoice>,
    /// `Some(None)`: `--transport auto` (overrides the scenario).
    pub transport: Option<Option<TransportKind>>,
    pub repeat: u32,
    pub history: Option<PathBuf>,
    /// Exit status from each scenario's declared outcome, not its raw verdict.
    pub check_outcomes: bool,
    pub filter: Option<String>,
    pub build: bool,
    /// Boot this build folder of the scenario's fixture instead of the
    /// current one (`airboot repro`: the build the bundle was cut from, so
    /// its kernel and initramfs match the disk under the crash state).
    pub fixture_build: Option<PathBuf>,
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The current time for folder names: `20261123-031316`.
pub fn stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string()
}

fn run_id(names: &[String]) -> String {
    let stamp = stamp();
    let what = match names {
        [one] => one.clone(),
        many => format!("{}-scenarios", many.len()),
    };
    format!("{stamp}-{what}")
}

/// The name tests and filters use for a scenario: `<arch>::<name>`.
pub fn test_name(s: &Scenario) -> String {
    let fixture_arch = match &s.image.source {
        ImageSource::Fixture(f) => airboot_images::find(f).map(|d| d.arch),
        ImageSource::Path(_) => None,
    };
    s.test_name(fixture_arch)
}

pub fn run(opts: Options) -> i32 {
    let mut list = match scenarios::load_all(&opts.paths) {
        Ok(l) => l,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            eprintln!("nothing was booted: fix the scenario files above (reference: scenarios/README.md)");
            return 2;
        }
    };
    if let Some(f) = &opts.filter {
        list.retain(|s| test_name(s).contains(f.as_str()));
        if list.is_empty() {
            eprintln!("error: no scenario matches {f:?} (names are <arch>::<name>, e.g. x86_64::preseeded-x86_64)");
            return 2;
        }
    }
    let repeat = opts.repeat.max(1);
    let names: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
    let id = run_id(&names);
    let default_dir = opts.report_dir.is_none();
    let base = opts.report_dir.clone().unwrap_or_else(|| PathBuf::from("reports").join(&id));
    if let Err(e) = std::fs::create_dir_all(&base) {
        eprintln!("error: cannot create the report folder {}: {e}", base.display());
        return 2;
    }
    if default_dir {
        let latest = Path::new("reports/latest");
        let _ = std::fs::remove_file(latest);
        if let Some(name) = base.file_name() {
            let _ = std::os::unix::fs::symlink(name, latest);
        }
    }
    // The timing history: as asked, or next to the default report folders.
    let history = opts.history.clone().or_else(|| default_dir.then(|| PathBuf::from("reports/history.jsonl")));
    let started_at = now_rfc3339();
    let single = list.len() == 1 && repeat == 1;
    let mut entries = Vec::new();
    let mut views: Vec<ScenarioView> = Vec::new();
    let mut repeats = Vec::new();
    'scenarios: for (i, s) in list.iter().enumerate() {
        let tname = test_name(s);
        let mut failed_runs = 0u64;
        let mut done_runs = 0u64;
        for rep in 1..=repeat {
            let rel = match (single, repeat) {
                (true, _) => ".".to_string(),
                (false, 1) => s.name.clone(),
                (false, _) => format!("{}/run-{rep:03}", s.name),
            };
            let dir = if single { base.clone() } else { base.join(&rel) };
            if interrupted() {
                entries.push(RunEntry {
                    scenario: s.name.clone(),
                    test_name: tname.clone(),
                    verdict: Verdict::Error,
                    dir: rel,
                    time_to_stack_s: None,
                    failures: vec!["not run: airboot was interrupted".into()],
                    declared: s.outcome.describe(),
                    as_declared: false,
                });
                break 'scenarios;
            }
            let what = if repeat > 1 { format!(" (run {rep} of {repeat})") } else { String::new() };
            eprintln!("[{}/{}] {tname}{what} ({})", i + 1, list.len(), s.file.display());
            let report = run_one(s, &dir, &opts);
            if let Err(e) = airboot_report::write_report(&dir, &report) {
                eprintln!("error: cannot write {}/report.json: {e}", dir.display());
            }
            out!("{}", airboot_report::summary(&report, &dir));
            let as_declared = outcome::check(&s.outcome, &report);
            if s.outcome != Default::default() {
                match &as_declared {
                    Ok(()) => outln!("   declared  {}: as declared", s.outcome.describe()),
                    Err(why) => outln!("   declared  {}: NOT as declared: {why}", s.outcome.describe()),
                }
            }
            if let Some(h) = &history
                && !report.qemu.argv.is_empty()
                && let Err(e) = append_history(h, &HistoryEntry::from_report(&report, &id))
            {
                eprintln!("warning: cannot append to the history {}: {e}", h.display());
            }
            done_runs += 1;
            failed_runs += u64::from(as_declared.is_err());
            entries.push(RunEntry {
                scenario: s.name.clone(),
                test_name: tname.clone(),
                verdict: report.verdict,
                dir: rel.clone(),
                time_to_stack_s: report.time_to_stack_s,
                failures: report.failures.iter().map(|f| format!("{}: {}", f.code, f.message)).collect(),
                declared: s.outcome.describe(),
                as_declared: as_declared.is_ok(),
            });
            views.push(ScenarioView {
                test_name: if repeat > 1 { format!("{tname}#{rep}") } else { tname.clone() },
                dir: rel,
                declared: s.outcome.describe(),
                as_declared,
                report,
            });
        }
        if repeat > 1 && done_runs > 0 {
            let (lo, hi) = history::wilson95(failed_runs, done_runs);
            let r = RepeatStats {
                scenario: tname.clone(),
                runs: done_runs,
                failures: failed_runs,
                ci_low: lo,
                ci_high: hi,
            };
            outln!("== {}", r.sentence());
            repeats.push(r);
        }
    }
    let verdicts: Vec<Verdict> = entries.iter().map(|e| e.verdict).collect();
    let code = if opts.check_outcomes {
        // Negative controls that failed as declared count as passing.
        let errors = entries.iter().any(|e| !e.as_declared && e.verdict == Verdict::Error);
        let wrong = entries.iter().any(|e| !e.as_declared);
        if errors { 2 } else { i32::from(wrong) }
    } else {
        report::exit_code(&verdicts)
    };
    let index = RunIndex {
        schema: report::RUN_SCHEMA.into(),
        started_at: started_at.clone(),
        verdict: match code {
            0 => Verdict::Pass,
            1 => Verdict::Fail,
            _ => Verdict::Error,
        },
        exit_code: code,
        scenarios: entries,
    };
    let view = RunView { run_id: id, started_at, scenarios: views, repeats };
    let hist =
        history.as_ref().and_then(|h| std::fs::read_to_string(h).ok()).map(|t| airboot_core::history::parse(&t).0);
    if let Err(e) = airboot_report::write_index(&base, &index)
        .and_then(|_| airboot_report::write_run_files(&base, &view, hist.as_deref()))
    {
        eprintln!("error: cannot write the run files in {}: {e}", base.display());
        return 2;
    }
    if !single {
        outln!(
            "== {} scenario run(s): {} passed, {} failed, {} errors",
            verdicts.len(),
            verdicts.iter().filter(|v| **v == Verdict::Pass).count(),
            verdicts.iter().filter(|v| **v == Verdict::Fail).count(),
            verdicts.iter().filter(|v| **v == Verdict::Error).count()
        );
    }
    outln!("   reports in {} (run.json, junit.xml, index.html, summary.md)", base.display());
    if interrupted() {
        eprintln!("airboot: {}; reports written to {}", interrupt_reason(), base.display());
    }
    code
}

fn append_history(path: &Path, e: &HistoryEntry) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(d) = path.parent()
        && !d.as_os_str().is_empty()
    {
        std::fs::create_dir_all(d)?;
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut line = serde_json::to_string(e).map_err(std::io::Error::other)?;
    line.push('\n');
    f.write_all(line.as_bytes())
}

/// Everything needed to boot a scenario's image.
struct Resolved {
    /// The architecture the fixture was built for (path images: none).
    fixture_arch: Option<Arch>,
    boot: BootMode,
    disk: PathBuf,
    format: DiskFormat,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    /// A kernel of the guest's architecture for the KVM probe boot.
    probe_kernel: Option<PathBuf>,
    fixture: Option<String>,
    known_ids: BTreeMap<String, String>,
    /// The image carries airboot-probe.
    probe: bool,
}

fn resolve(s: &Scenario, opts: &Options, report: &mut Report) -> Result<Resolved, Failure> {
    let with_extra = |append: String| match &s.image.append_extra {
        Some(x) => format!("{append} {x}"),
        None => append,
    };
    match &s.image.source {
        ImageSource::Fixture(name) => {
            let def = airboot_images::find(name).ok_or_else(|| Failure {
                code: FailureCode::BadInput,
                message: format!("unknown fixture {name:?}"),
                evidence: None,
            })?;
            let root = airboot_images::cache_root();
            let pinned = opts.fixture_build.as_deref().map(|dir| {
                airboot_images::open_build(dir).filter(|f| f.manifest.name == *name).ok_or_else(|| Failure {
                    code: FailureCode::BadInput,
                    message: format!(
                        "{} is not a complete build of fixture {name} (fixture.json, disk, kernel, initramfs)",
                        dir.display()
                    ),
                    evidence: None,
                })
            });
            let fixture = match pinned.transpose()?.or_else(|| airboot_images::lookup(&root, &def)) {
                Some(f) => f,
                None if !opts.build => {
                    return Err(Failure {
                        code: FailureCode::FixtureNotBuilt,
                        message: format!(
                            "fixture {name} is not built: run `airboot images build {name}` (or drop --no-build)"
                        ),
                        evidence: None,
                    });
                }
                None => {
                    eprintln!("  fixture {name} is not built yet: building it now (first time: a few minutes)");
                    let mut progress = |m: &str| eprintln!("    {m}");
                    airboot_images::build(&root, name, false, &mut progress).map_err(|e| Failure {
                        code: FailureCode::FixtureBuild,
                        message: format!("building fixture {name}: {e}"),
                        evidence: None,
                    })?
                }
            };
            report.image.fixture = Some(name.clone());
            let fixture_boot = if fixture.manifest.boot == "uefi" { BootMode::Uefi } else { BootMode::Direct };
            if let Some(b) = s.image.boot
                && b != fixture_boot
                && b != BootMode::Board
            {
                return Err(Failure {
                    code: FailureCode::BadInput,
                    message: format!(
                        "{}: image.boot = {:?}, but fixture {name} boots with {:?}: remove image.boot",
                        s.file.display(),
                        b.as_str(),
                        fixture.manifest.boot
                    ),
                    evidence: None,
                });
            }
            let boot = s.image.boot.unwrap_or(fixture_boot);
            // UEFI boots the disk's loader, board mode brings its own kernel.
            let direct = boot == BootMode::Direct;
            Ok(Resolved {
                fixture_arch: Some(fixture.arch().unwrap_or(def.arch)),
                boot,
                disk: fixture.disk(),
                format: DiskFormat::Qcow2,
                kernel: direct.then(|| fixture.kernel()),
                initrd: direct.then(|| fixture.initrd()),
                append: direct.then(|| with_extra(fixture.manifest.append.clone())),
                probe_kernel: Some(fixture.kernel()),
                fixture: Some(name.clone()),
                known_ids: fixture.manifest.images.iter().map(|i| (i.reference.clone(), i.id.clone())).collect(),
                probe: s.image.probe.unwrap_or(fixture.manifest.probe),
            })
        }
        ImageSource::Path(p) => {
            let format = disk::resolve_format(p, s.image.format).map_err(|e| Failure {
                code: FailureCode::BadInput,
                message: e.to_string(),
                evidence: None,
            })?;
            let boot = s.image.boot.unwrap_or(BootMode::Direct);
            let direct = boot == BootMode::Direct;
            Ok(Resolved {
                fixture_arch: None,
                boot,
                disk: p.clone(),
                format,
                kernel: s.image.kernel.clone(),
                initrd: s.image.initrd.clone(),
                // The default command line is filled in once the arch is known.
                append: direct.then(|| s.image.append.clone().map(with_extra)).flatten(),
                probe_kernel: s.image.kernel.clone(),
                fixture: None,
                known_ids: BTreeMap::new(),
                probe: s.image.probe.unwrap_or(false),
            })
        }
    }
}

/// Board mode: find the image's root partition, take the generic kernel
/// and the board initramfs for `arch`, and say in the report that the
/// board's own kernel is not what booted.
fn board_boot(
    s: &Scenario,
    arch: Arch,
    image: &std::io::Result<Box<dyn ReadAt>>,
    r: &mut Resolved,
    report: &mut Report,
) -> Result<(), Failure> {
    let fail = |code: FailureCode, message: String| Failure { code, message, evidence: None };
    let view = image.as_ref().map_err(|e| {
        fail(FailureCode::BadInput, format!("cannot read {} to find its root partition: {e}", r.disk.display()))
    })?;
    let rootp = detect::root_partition(view.as_ref(), arch).ok_or_else(|| {
        fail(
            FailureCode::NoRootPartition,
            format!(
                "board mode: no root filesystem found in {} (no GPT partition typed Linux root for {arch}, no ext4 partition with an init or a container engine)",
                r.disk.display()
            ),
        )
    })?;
    eprintln!("  board mode: the generic {arch} kernel and airboot's board initramfs");
    let mut progress = |m: &str| eprintln!("    {m}");
    let bk = airboot_images::board::board_kernel(&airboot_images::cache_root(), arch, &mut progress)
        .map_err(|e| fail(FailureCode::BoardKernel, format!("board mode: {e}")))?;
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
    r.initrd = Some(bk.initrd.clone());
    r.probe_kernel = Some(bk.kernel);
    r.append = Some(append);
    Ok(())
}

/// Tell the image's architecture from the image itself and check it
/// against what the scenario asks, before QEMU starts.
fn detect_arch(
    s: &Scenario,
    r: &Resolved,
    image: &std::io::Result<Box<dyn ReadAt>>,
    report: &mut Report,
) -> Result<Arch, Failure> {
    let mut evidence = Vec::new();
    match image {
        Ok(view) => evidence.extend(detect::disk_evidence(view.as_ref())),
        Err(e) => {
            report.notes.push(format!("could not look inside {} to tell its architecture: {e}", r.disk.display()))
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
        message: format!("{}: {}", r.disk.display(), e.message),
        evidence: Some(e.evidence),
    })
}

/// What a boot does beyond a plain run (`airboot cut` and `repro`), and
/// what it hands back.
#[derive(Default)]
pub struct Extra {
    /// Boot this disk (a qcow2 over the input image: a crash state)
    /// instead of the input image itself.
    pub disk: Option<PathBuf>,
    /// Record the guest's disk requests into this (existing, empty) file.
    pub write_log: Option<PathBuf>,
    pub record: Option<RecordSpec>,
    /// Keep the run's overlay here afterwards, with what the guest wrote.
    pub keep_overlay: Option<PathBuf>,
    /// Out: what the recorder saw.
    pub recorded: Option<Recorded>,
    /// Out: the input image, its format, and the guest's architecture.
    pub input: Option<(PathBuf, DiskFormat)>,
    pub arch: Option<Arch>,
}

fn run_one(s: &Scenario, dir: &Path, opts: &Options) -> Report {
    run_one_with(s, dir, opts, &mut Extra::default())
}

pub fn run_one_with(s: &Scenario, dir: &Path, opts: &Options, extra: &mut Extra) -> Report {
    let wall = Instant::now();
    let mut report = Report::new(&s.name, &s.file.display().to_string(), now_rfc3339());
    report.description = s.description.clone();
    report.machine.memory_mib = s.machine.memory_mib;
    report.machine.cpus = s.machine.cpus;
    if let Err(e) = std::fs::create_dir_all(dir) {
        report.error(FailureCode::ReportDir, format!("cannot create {}: {e}", dir.display()), None);
        return report;
    }
    boot(s, dir, opts, &mut report, extra);
    report.wall_s = wall.elapsed().as_secs_f64();
    report
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n { s.chars().take(n - 3).collect::<String>() + "..." } else { s.to_string() }
}

fn boot(s: &Scenario, dir: &Path, opts: &Options, report: &mut Report, extra: &mut Extra) {
    let r = match resolve(s, opts, report) {
        Ok(r) => r,
        Err(f) => return report.error(f.code, f.message, f.evidence),
    };
    report.image.path = Some(r.disk.display().to_string());
    report.image.format = Some(r.format);
    // Read once: the architecture check and board mode both look inside.
    let image = open_image(&r.disk);
    let arch = match detect_arch(s, &r, &image, report) {
        Ok(a) => a,
        Err(f) => {
            eprintln!("  {}: {}", f.code, f.message);
            return report.error(f.code, f.message, f.evidence);
        }
    };
    let mut r = r;
    extra.input = Some((r.disk.clone(), r.format));
    extra.arch = Some(arch);
    if r.boot == BootMode::Direct && r.append.is_none() {
        r.append = Some(default_append(arch));
    }
    report.arch = Some(arch);
    report.boot.mode = Some(r.boot);
    if r.boot == BootMode::Board
        && let Err(f) = board_boot(s, arch, &image, &mut r, report)
    {
        eprintln!("  {}: {}", f.code, f.message);
        return report.error(f.code, f.message, f.evidence);
    }
    drop(image);
    report.boot.kernel = r.kernel.as_ref().map(|k| k.display().to_string());
    report.boot.initrd = r.initrd.as_ref().map(|k| k.display().to_string());
    report.boot.append = r.append.clone();
    report.machine.machine = Some(machine(arch).into());

    let qemu = match accel::qemu_binary(arch) {
        Ok(q) => q,
        Err(e) => return report.error(FailureCode::QemuMissing, e.to_string(), None),
    };
    report.machine.qemu = Some(qemu.display().to_string());

    // Transport: how the host will talk to the probe.
    let cache = airboot_images::cache_root();
    let caps = transport::host_caps(&cache);
    let (requested, by) = match opts.transport {
        Some(t) => (t, "--transport"),
        None => (s.machine.transport, "machine.transport"),
    };
    let choice = match transport::choose(requested, by, r.probe, &caps) {
        Ok(c) => c,
        Err(e) => return report.error(FailureCode::Transport, e, None),
    };
    eprintln!("  transport {}: {}", choice.kind.as_str(), choice.reason);
    report.probe.transport = Some(choice.kind);
    report.probe.transport_reason = Some(choice.reason.clone());

    let (accel_choice, accel_by) = match opts.accel {
        Some(c) => (c, "--accel"),
        None => (s.machine.accel, "machine.accel"),
    };
    let decision: AccelDecision =
        accel::choose(accel_choice, accel_by, arch, &qemu, r.probe_kernel.as_deref(), Some(&cache));
    eprintln!("  accel {}: {}", decision.accel, decision.reason);
    report.accel = Some(decision.accel);
    report.accel_reason = Some(decision.reason.clone());
    let scale = if decision.accel == Accel::Tcg { s.machine.tcg_slowdown } else { 1.0 };
    report.timeouts.scale = scale;
    report.timeouts.timeout_s = s.expect.timeout.as_secs_f64() * scale;
    report.timeouts.time_to_stack_budget_s = s.expect.time_to_stack.map(|t| t.as_secs_f64() * scale);

    eprintln!("  hashing {}", r.disk.display());
    match disk::sha256_file(&r.disk) {
        Ok(h) => report.image.sha256_before = Some(h),
        Err(e) => return report.error(FailureCode::ImageUnreadable, e.to_string(), None),
    }
    let work = match tempfile::Builder::new().prefix("airboot-").tempdir() {
        Ok(w) => w,
        Err(e) => return report.error(FailureCode::Workdir, format!("cannot create a temporary folder: {e}"), None),
    };
    let overlay = work.path().join("overlay.qcow2");
    let (base, base_format) = match &extra.disk {
        Some(d) => (d.clone(), DiskFormat::Qcow2),
        None => (r.disk.clone(), r.format),
    };
    if let Err(e) = disk::create_overlay(&base, base_format, &overlay) {
        return report.error(FailureCode::Overlay, e.to_string(), None);
    }
    let seed = u64::from(std::process::id())
        ^ SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let plan = transport::plan(
        choice.kind,
        work.path(),
        s.machine.memory_mib,
        transport::pick_cid(seed),
        caps.vhost_device_vsock.as_deref(),
    );
    let firmware = if r.boot == BootMode::Uefi {
        let fw = match firmware::find(arch, s.machine.firmware.as_deref(), s.machine.firmware_vars.as_deref()) {
            Ok(f) => f,
            Err(e) => return report.error(FailureCode::FirmwareMissing, e, None),
        };
        let vars = work.path().join("efivars.fd");
        if let Err(e) = std::fs::copy(&fw.vars_template, &vars) {
            return report.error(
                FailureCode::Workdir,
                format!("cannot copy the UEFI variables template {}: {e}", fw.vars_template.display()),
                None,
            );
        }
        report.boot.firmware = Some(fw.code.display().to_string());
        report.boot.firmware_source = Some(fw.source.clone());
        Some((fw.code, vars))
    } else {
        None
    };
    if arch == Arch::Aarch64 && decision.accel == Accel::Tcg && s.machine.cpu.as_deref() == Some("max") {
        report.notes.push(
            "machine.cpu = \"max\" under TCG emulates pointer authentication the slow way (2-3.5x slower boots); \"max,pauth-impdef=on\" or \"cortex-a72\" are the fast choices".into(),
        );
    }
    let spec = VmSpec {
        arch,
        accel: decision.accel,
        cpu: s.machine.cpu.clone(),
        firmware,
        memory_mib: s.machine.memory_mib,
        cpus: s.machine.cpus,
        kernel: r.kernel.clone(),
        initrd: r.initrd.clone(),
        append: r.append.clone(),
        disk: overlay.clone(),
        write_log: extra.write_log.clone(),
        qmp_socket: work.path().join("qmp.sock"),
    };
    report.machine.cpu =
        Some(spec.cpu.clone().unwrap_or_else(|| airboot_qemu::argv::default_cpu(arch, spec.accel).into()));
    let config = RunConfig {
        expect: s.expect.clone(),
        known_ids: r.known_ids.clone(),
        milestones: s.milestones.clone(),
        scale,
        probe: choice.kind != TransportKind::Console,
        engine_unit: format!("{}.service", s.expect.engine.as_str()),
    };
    let run = match Run::new(config) {
        Ok(run) => run,
        Err(e) => return report.error(FailureCode::BadInput, format!("a console pattern does not compile: {e}"), None),
    };
    eprintln!(
        "  booting {} ({}, timeout {:.0}s)",
        r.fixture.as_deref().unwrap_or("image"),
        decision.accel,
        report.timeouts.timeout_s
    );
    let runner = VmRunner {
        qemu: qemu.clone(),
        spec,
        plan,
        console_log: dir.join("console.log"),
        verify_images: s.expect.images.iter().map(|i| i.reference.clone()).collect(),
        record: extra.record.clone(),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report.error(FailureCode::Runtime, e.to_string(), None),
    };
    let mut on_event = |e: VmEvent| match e {
        VmEvent::Started { qemu_version } => {
            eprintln!("  t0: guest started (QEMU {})", qemu_version.unwrap_or_else(|| "?".into()))
        }
        VmEvent::Milestone(m) => eprintln!("  {:>7.1}s {:<18} {}", m.t_s, m.name, short(&m.evidence, 70)),
        VmEvent::Note(n) => eprintln!("  note: {n}"),
    };
    let outcome = rt.block_on(runner.run(run, &mut on_event));
    drop(rt);
    match outcome {
        Err(e) => {
            let code = if matches!(e, airboot_qemu::vm::VmError::Interrupted(_)) {
                FailureCode::Interrupted
            } else {
                FailureCode::Qemu
            };
            report.qemu.argv = runner.argv();
            report.network.qemu_network_args = network_args(&report.qemu.argv);
            report.error(code, e.to_string(), None);
        }
        Ok(mut o) => {
            extra.recorded = o.recorded.take();
            fill(report, o)
        }
    }
    if let Some(keep) = &extra.keep_overlay
        && let Err(e) = std::fs::rename(&overlay, keep).or_else(|_| std::fs::copy(&overlay, keep).map(|_| ()))
    {
        report.notes.push(format!("could not keep the run's disk as {}: {e}", keep.display()));
    }
    drop(work);
    match disk::sha256_file(&r.disk) {
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

/// Copy what a run learnt into the report.
fn fill(report: &mut Report, o: airboot_qemu::vm::VmOutcome) {
    let res = o.result;
    report.verdict = res.verdict;
    report.failures = res.failures;
    report.milestones = res.milestones;
    report.time_to_stack_s = res.time_to_stack_s;
    report.stack_seen_s = res.stack_seen_s;
    report.images = res.images;
    report.containers = res.containers;
    report.engine = res.engine;
    report.status.blocks = res.status_blocks;
    report.status.damaged = res.damaged_status_blocks;
    report.status.last_t_s = res.last_status_t;
    report.status.guest_uptime_s = res.guest_uptime_s;
    report.probe.connected_s = res.probe_connected_s;
    report.probe.guest_machine = res.guest_machine;
    report.probe.version = o.probe_version;
    // The guest cannot tell kernel vsock from vhost-user vsock: compare families.
    let family = |t: &str| if t.contains("vsock") { "vsock" } else { "virtio-serial" };
    if let (Some(t), Some(chosen)) = (&o.probe_transport, report.probe.transport)
        && family(t) != family(chosen.as_str())
    {
        res_note(&mut report.notes, format!("the probe says it answered over {t}"));
    }
    report.clock_skew_ms = res.clock_skew_ms;
    report.image_runs = res.image_runs;
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
        report.failures.push(Failure {
            code: FailureCode::NetworkPresent,
            message: "the VM had a network device: the run does not prove offline start".into(),
            evidence: Some(format!("{:?} {:?}", report.network.qemu_network_args, report.network.pci_network_devices)),
        });
    }
    if !report.qemu.leftover_processes.is_empty() {
        let msg = format!("processes survived the run: {:?}", report.qemu.leftover_processes);
        report.error(FailureCode::LeftoverProcess, msg, None);
    }
}

fn res_note(notes: &mut Vec<String>, n: String) {
    if !notes.contains(&n) {
        notes.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(fixture_build: Option<PathBuf>) -> Options {
        Options { build: false, fixture_build, ..crate::boot_options(None) }
    }

    /// A build folder as the builder leaves it, with one file missing if asked.
    fn fake_build(root: &Path, name: &str, key: &str, without: Option<&str>) -> PathBuf {
        let dir = root.join(format!("{name}-{key}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["disk.qcow2", "vmlinuz", "initrd.img"] {
            if without != Some(f) {
                std::fs::write(dir.join(f), b"x").unwrap();
            }
        }
        let manifest = serde_json::json!({
            "schema": "airboot.fixture/v1", "name": name, "arch": "x86_64", "variant": "preseeded",
            "description": "d", "key": key, "boot": "direct", "disk": "disk.qcow2", "disk_format": "qcow2",
            "kernel": "vmlinuz", "initrd": "initrd.img", "append": "console=ttyS0 root=/dev/vda",
            "kernel_version": "6.1.0", "engine": "docker", "images": [], "packages": {},
            "built_at": "2026-11-23T00:00:00Z", "build_seconds": 1.0
        });
        std::fs::write(dir.join("fixture.json"), manifest.to_string()).unwrap();
        dir
    }

    /// `airboot repro` boots the build a bundle was cut from: its disk,
    /// kernel and initramfs, not those of today's build of the fixture.
    #[test]
    fn a_pinned_fixture_build_is_booted_and_a_wrong_one_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let s = airboot_core::scenario::parse(
            "name = \"s\"\n[image]\nfixture = \"debian-preseeded-x86_64\"\n",
            &tmp.path().join("s.toml"),
            &airboot_core::scenario::any_file,
        )
        .unwrap();
        let mut report = Report::new("s", "s.toml", now_rfc3339());
        let old = fake_build(tmp.path(), "debian-preseeded-x86_64", "00000000000000aa", None);
        let r = resolve(&s, &options(Some(old.clone())), &mut report).unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(r.disk, old.join("disk.qcow2"));
        assert_eq!(r.kernel.as_deref(), Some(old.join("vmlinuz").as_path()));
        assert_eq!(r.initrd.as_deref(), Some(old.join("initrd.img").as_path()));
        assert_eq!(r.probe_kernel.as_deref(), Some(old.join("vmlinuz").as_path()));
        assert!(r.append.unwrap().starts_with("console=ttyS0 root=/dev/vda"));

        // Another fixture's build, or one that lost its kernel, is refused
        // with the folder named: never silently today's build instead.
        for bad in [
            fake_build(tmp.path(), "debian-egress-x86_64", "00000000000000bb", None),
            fake_build(tmp.path(), "debian-preseeded-x86_64", "00000000000000cc", Some("vmlinuz")),
        ] {
            let f = match resolve(&s, &options(Some(bad.clone())), &mut report) {
                Ok(r) => panic!("{} was accepted: {:?}", bad.display(), r.disk),
                Err(f) => f,
            };
            assert_eq!(f.code, FailureCode::BadInput);
            assert!(f.message.contains(&bad.display().to_string()), "{}", f.message);
            assert!(f.message.contains("debian-preseeded-x86_64"), "{}", f.message);
        }
    }
}

//! The session driven through a fake machine and a fake fixture store: no
//! QEMU, no fixture cache. What is checked is the session's own logic:
//! which image it boots, which transport and accelerator it chooses (and
//! who asked), what it tells the machine, how it fills the report, and the
//! harness's verdict policy on top of the guest's (a network device, a
//! leftover process, an input image that changed).

use std::path::Path;

use airboot_core::event::RunEvent;
use airboot_core::scenario::{AccelChoice, Scenario};
use airboot_model::{Accel, Arch, FailureCode, TransportKind, Verdict};
use airboot_session::fake::{FakeFixtures, FakeMachine, Script};
use airboot_session::suite::{SuiteOptions, run_suite};
use airboot_session::{BootOptions, Env, run_boot};

const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// The console lines of a guest whose stack comes up healthy (a status
/// block, as the reference reporter prints it).
fn healthy_console() -> Vec<String> {
    vec![
        "[    0.000000] Linux version 6.1.0-28-amd64".into(),
        r#"AIRBOOT-STATUS v1 begin {"seq":1,"uptime_s":20.0,"final":true}"#.into(),
        r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"up"}"#.into(),
        format!(r#"AIRBOOT-STATUS v1 image {{"repository":"fixture/redis","tag":"1","id":"{RID}"}}"#),
        r#"AIRBOOT-STATUS v1 container {"name":"/redis","image":"fixture/redis:1","state":"running","health":"healthy"}"#
            .into(),
        r#"AIRBOOT-STATUS v1 end {"seq":1,"records":3}"#.into(),
    ]
}

fn machine() -> FakeMachine {
    FakeMachine::new(Script { lines: healthy_console(), log: Vec::new() })
}

/// The fixture `fake-x86_64` in `dir`, its disk a small file.
fn fixtures(dir: &Path, probe: bool, built: bool) -> FakeFixtures {
    let disk = dir.join("disk.qcow2");
    std::fs::write(&disk, b"not really a disk").unwrap();
    FakeFixtures::new(dir, disk, &[("fixture/redis:1", RID)], probe, built)
}

fn scenario(extra: &str) -> Scenario {
    let src = format!(
        "name = \"fake\"\n[image]\nfixture = \"fake-x86_64\"\n[expect]\nimages = [\"fixture/redis:1\"]\n\
         containers = [{{ name = \"redis\", healthy = true }}]\ntime_to_stack = \"30s\"\ntimeout = \"60s\"\n{extra}"
    );
    airboot_core::scenario::parse(&src, Path::new("fake.toml"), &airboot_core::scenario::any_file).unwrap()
}

/// Boot `s` on `m` with `f`; the report and every event.
fn boot(
    s: &Scenario,
    m: &FakeMachine,
    f: &FakeFixtures,
    o: &BootOptions,
) -> (airboot_core::report::Report, Vec<RunEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let env = Env { machine: m, fixtures: f };
    let mut events = Vec::new();
    let b = run_boot(s, dir.path(), o, &env, &mut |e| events.push(e));
    (b.report, events)
}

fn codes(r: &airboot_core::report::Report) -> Vec<FailureCode> {
    r.failures.iter().map(|f| f.code).collect()
}

#[test]
fn a_healthy_stack_passes_with_the_machines_choices_in_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, f) = (machine(), fixtures(tmp.path(), false, true));
    let (r, events) = boot(&scenario(""), &m, &f, &BootOptions::default());
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    // No probe in the image: the console transport, whatever the host has.
    assert_eq!(r.probe.transport, Some(TransportKind::Console));
    assert_eq!((r.accel, r.arch), (Some(Accel::Tcg), Some(Arch::X86_64)));
    assert_eq!(*m.asked_accel.lock().unwrap(), Some((AccelChoice::Auto, "machine.accel".to_string())));
    // TCG: the budgets are scaled by the default slowdown.
    assert_eq!((r.timeouts.scale, r.timeouts.timeout_s, r.timeouts.time_to_stack_budget_s), (10.0, 600.0, Some(300.0)));
    assert_eq!(r.image.fixture.as_deref(), Some("fake-x86_64"));
    assert_eq!(r.image.unchanged, Some(true));
    assert!(r.time_to_stack_s.is_some());
    assert!(r.notes.iter().any(|n| n.contains("console transport")), "{:?}", r.notes);
    // The machine was told to boot the fixture's disk, its kernel, and
    // to judge with the fixture's image IDs.
    let plan = m.last_plan().unwrap();
    assert_eq!(plan.disk.0, f.build.disk);
    assert_eq!(plan.kernel.as_deref(), Some(f.build.kernel.as_path()));
    assert_eq!(plan.run.known_ids.get("fixture/redis:1").map(String::as_str), Some(RID));
    assert!(!plan.run.probe);
    assert_eq!(plan.run.expect.engine, airboot_model::Engine::Docker);
    // What was decided went out as events, and the boot ended with its report.
    assert!(events.iter().any(|e| matches!(e, RunEvent::Transport { kind: TransportKind::Console, .. })));
    assert!(events.iter().any(|e| matches!(e, RunEvent::Accel { accel: Accel::Tcg, .. })));
    assert!(events.iter().any(|e| matches!(e, RunEvent::GuestStarted { .. })));
    match events.last() {
        Some(RunEvent::BootFinished { report, .. }) => assert_eq!(report.verdict, Verdict::Pass),
        other => panic!("the last event is {other:?}"),
    }
}

#[test]
fn the_command_line_is_asked_for_over_the_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = machine();
    m.accel = Accel::Kvm;
    let f = fixtures(tmp.path(), true, true);
    let s = scenario("[machine]\naccel = \"tcg\"\n");
    let (r, _) = boot(&s, &m, &f, &BootOptions { accel: Some(AccelChoice::Kvm), ..Default::default() });
    assert_eq!(*m.asked_accel.lock().unwrap(), Some((AccelChoice::Kvm, "--accel".to_string())));
    assert_eq!((r.accel, r.timeouts.scale), (Some(Accel::Kvm), 1.0), "KVM: budgets as written");
    // The image carries the probe: the best transport this host serves.
    assert_eq!(r.probe.transport, Some(TransportKind::VhostUserVsock));
    assert!(m.last_plan().unwrap().run.probe);
    // A forced transport the host lacks stops the boot before the machine.
    let m = machine();
    let forced = BootOptions { transport: Some(Some(TransportKind::Vsock)), ..Default::default() };
    let (r, events) = boot(&s, &m, &f, &forced);
    assert_eq!((r.verdict, codes(&r)), (Verdict::Error, vec![FailureCode::Transport]));
    assert!(m.last_plan().is_none(), "nothing booted");
    assert!(events.iter().any(|e| matches!(e, RunEvent::Refused(f) if f.code == FailureCode::Transport)));
}

#[test]
fn a_network_device_fails_the_run_whatever_the_guest_says() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = machine();
    m.nics = vec!["Ethernet controller e1000 at 00:02.0".into()];
    let (r, _) = boot(&scenario(""), &m, &fixtures(tmp.path(), false, true), &BootOptions::default());
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(codes(&r), [FailureCode::NetworkPresent]);
    assert_eq!(r.network.nics, 1);
    assert!(r.failures[0].evidence.as_deref().unwrap().contains("e1000"));
}

#[test]
fn a_process_outliving_the_run_is_the_harness_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = machine();
    m.leftover = vec!["qemu group 4242".into()];
    let (r, _) = boot(&scenario(""), &m, &fixtures(tmp.path(), false, true), &BootOptions::default());
    assert_eq!(r.verdict, Verdict::Error, "the guest passed; the harness did not clean up");
    assert_eq!(codes(&r), [FailureCode::LeftoverProcess]);
    assert!(r.failures[0].message.contains("qemu group 4242"));
}

#[test]
fn an_input_image_that_changes_during_the_run_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures(tmp.path(), false, true);
    let mut m = machine();
    m.scribble = Some(f.build.disk.clone());
    let (r, _) = boot(&scenario(""), &m, &f, &BootOptions::default());
    assert_eq!(r.verdict, Verdict::Error);
    assert_eq!(codes(&r), [FailureCode::InputModified]);
    assert_eq!(r.image.unchanged, Some(false));
    assert_ne!(r.image.sha256_before, r.image.sha256_after);
    assert!(r.failures[0].message.contains("written during the run"), "{}", r.failures[0].message);
}

/// The input is hashed while the guest boots, the first time; a second
/// run of the untouched file takes the hash kept by the first, and still
/// hashes it in full after the run.
#[test]
fn an_untouched_input_is_hashed_once_before_and_always_after() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures(tmp.path(), false, true);
    // A file of its own, so no earlier test run kept its hash.
    std::fs::write(&f.build.disk, format!("disk {:?}", std::time::SystemTime::now())).unwrap();
    let said = |events: &[RunEvent], what: &str| {
        events.iter().any(|e| matches!(e, RunEvent::Step(s) | RunEvent::Detail(s) if s.contains(what)))
    };
    let (first, events) = boot(&scenario(""), &machine(), &f, &BootOptions::default());
    assert_eq!(first.verdict, Verdict::Pass, "{:?}", first.failures);
    assert!(said(&events, "while the guest boots"), "{events:?}");
    let (second, events) = boot(&scenario(""), &machine(), &f, &BootOptions::default());
    assert_eq!(second.verdict, Verdict::Pass, "{:?}", second.failures);
    assert!(said(&events, "kept from an earlier run"), "{events:?}");
    assert!(!said(&events, "while the guest boots"));
    assert_eq!(second.image.sha256_before, first.image.sha256_before);
    assert_eq!(second.image.sha256_after, second.image.sha256_before);
    assert_eq!(second.image.unchanged, Some(true));
}

#[test]
fn a_machine_without_the_emulator_boots_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = machine();
    m.qemu = Err("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)".into());
    let (r, _) = boot(&scenario(""), &m, &fixtures(tmp.path(), false, true), &BootOptions::default());
    assert_eq!((r.verdict, codes(&r)), (Verdict::Error, vec![FailureCode::QemuMissing]));
    assert!(r.failures[0].message.contains("qemu-system-x86"));
    assert!(m.last_plan().is_none() && r.image.sha256_before.is_none(), "stopped before hashing and booting");
}

#[test]
fn qemu_that_fails_to_start_leaves_its_command_line_as_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = machine();
    m.fail = Some(vec!["-nodefaults".into(), "-netdev".into(), "user,id=n0".into()]);
    let (r, _) = boot(&scenario(""), &m, &fixtures(tmp.path(), false, true), &BootOptions::default());
    assert_eq!((r.verdict, codes(&r)), (Verdict::Error, vec![FailureCode::Qemu]));
    assert!(r.failures[0].message.contains("QEMU exited before the guest started"), "{}", r.failures[0].message);
    assert_eq!(r.network.qemu_network_args, ["-netdev user,id=n0"]);
    assert_eq!(r.image.unchanged, Some(true), "the input is checked whatever happened");
}

#[test]
fn a_missing_fixture_is_built_only_when_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, f) = (machine(), fixtures(tmp.path(), false, false));
    let (r, _) = boot(&scenario(""), &m, &f, &BootOptions::default());
    assert_eq!(codes(&r), [FailureCode::FixtureNotBuilt]);
    assert_eq!(*f.builds.lock().unwrap(), 0);
    let (r, events) = boot(&scenario(""), &m, &f, &BootOptions { build: true, ..Default::default() });
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    assert_eq!(*f.builds.lock().unwrap(), 1);
    assert!(
        events.iter().any(|e| matches!(e, RunEvent::Detail(d) if d == "[1/1] pretending")),
        "build progress is shown"
    );
}

#[test]
fn a_suite_judges_each_scenario_by_its_declared_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, f) = (machine(), fixtures(tmp.path(), false, true));
    let pass = scenario("[machine]\narch = \"x86_64\"\n");
    // A negative control: expects an image the device does not have.
    let mut missing = scenario("[machine]\narch = \"x86_64\"\n[outcome]\nfailures = [\"image-missing\"]\n");
    missing.name = "missing".into();
    missing.expect.images.push(airboot_core::scenario::ImageExpect { reference: "fixture/nginx:1".into(), id: None });
    let env = Env { machine: &m, fixtures: &f };
    let opts = |check| SuiteOptions {
        report_dir: Some(tmp.path().join("reports")),
        repeat: 1,
        check_outcomes: check,
        boot: BootOptions::default(),
        jobs: None,
    };
    let mut events = Vec::new();
    let index = run_suite(&[pass.clone(), missing.clone()], &opts(false), &env, &mut |e| events.push(e)).unwrap();
    assert_eq!(index.exit_code, 1, "raw verdicts: one failed");
    assert_eq!(index.scenarios.iter().map(|e| e.as_declared).collect::<Vec<_>>(), [true, true]);
    assert_eq!(index.scenarios[1].dir, "missing");
    let index = run_suite(&[pass, missing], &opts(true), &env, &mut |_| {}).unwrap();
    assert_eq!(index.exit_code, 0, "by declared outcomes: both as declared");
    // The events of a suite, in order.
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::RunStarted { .. } => Some("run"),
            RunEvent::ScenarioStarted { .. } => Some("start"),
            RunEvent::BootFinished { .. } => Some("boot"),
            RunEvent::ScenarioFinished(_) => Some("judged"),
            RunEvent::RunFinished { .. } => Some("end"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["run", "start", "boot", "judged", "start", "boot", "judged", "end"]);
}

#[test]
fn a_suite_with_jobs_boots_at_once_and_keeps_the_scenarios_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut m, f) = (machine(), fixtures_with_a_disk(tmp.path()));
    m.hold = std::time::Duration::from_millis(300);
    let mut list = Vec::new();
    for (i, name) in ["first", "second", "third"].iter().enumerate() {
        let mut s = scenario("[machine]\narch = \"x86_64\"\n");
        s.name = (*name).into();
        if i == 1 {
            s.expect.images.push(airboot_core::scenario::ImageExpect { reference: "fixture/nginx:1".into(), id: None });
        }
        list.push(s);
    }
    let env = Env { machine: &m, fixtures: &f };
    let reports = tmp.path().join("reports");
    let opts = SuiteOptions {
        report_dir: Some(reports.clone()),
        repeat: 2,
        check_outcomes: false,
        boot: BootOptions::default(),
        jobs: Some(2),
    };
    let events = std::sync::Mutex::new(Vec::new());
    let index = run_suite(&list, &opts, &env, &mut |e| events.lock().unwrap().push(e)).unwrap();
    assert_eq!(m.plans.lock().unwrap().len(), 6, "3 scenarios × 2 runs");
    assert_eq!(m.most_on.load(std::sync::atomic::Ordering::SeqCst), 2, "two guests were on at once, never more");
    assert_eq!(index.jobs, 2);
    assert_eq!(index.exit_code, 1, "second misses an image");
    let order: Vec<(&str, &str)> = index.scenarios.iter().map(|e| (e.scenario.as_str(), e.dir.as_str())).collect();
    assert_eq!(
        order,
        [
            ("first", "first/run-001"),
            ("first", "first/run-002"),
            ("second", "second/run-001"),
            ("second", "second/run-002"),
            ("third", "third/run-001"),
            ("third", "third/run-002"),
        ]
    );
    let verdicts: Vec<Verdict> = index.scenarios.iter().map(|e| e.verdict).collect();
    assert_eq!(verdicts, [Verdict::Pass, Verdict::Pass, Verdict::Fail, Verdict::Fail, Verdict::Pass, Verdict::Pass]);
    let events = events.into_inner().unwrap();
    // Every boot's report, each saying it shared the host.
    let finished: Vec<&airboot_core::report::Report> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::BootFinished { report, .. } => Some(&**report),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 6);
    assert!(finished.iter().all(|r| r.machine.jobs == 2));
    // Progress lines say whose they are; the probe's status does not pass.
    assert!(events.iter().any(|e| matches!(e, RunEvent::Step(s) if s.starts_with("[second#2] "))), "labelled steps");
    assert!(!events.iter().any(|e| matches!(e, RunEvent::GuestStatus { .. })));
    // t0 of each boot says whose it is too (an unlabelled one would not).
    assert!(!events.iter().any(|e| matches!(e, RunEvent::GuestStarted { .. })));
    let t0s = events.iter().filter(|e| matches!(e, RunEvent::Step(s) if s.contains("] t0: guest started"))).count();
    assert_eq!(t0s, 6, "one labelled t0 line per boot");
    assert!(events.iter().any(|e| matches!(e, RunEvent::Note(n) if n.contains("6 boots, 2 at once"))));
    // Flake statistics per scenario, in order, after the boots.
    let repeats: Vec<(String, u64)> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Repeats(r) => Some((r.scenario.clone(), r.failures)),
            _ => None,
        })
        .collect();
    assert_eq!(repeats.len(), 3);
    assert_eq!(repeats.iter().map(|r| r.1).collect::<Vec<_>>(), [0, 2, 0]);
}

/// The fake fixture with a real (empty) qcow2 disk, so the fake machine
/// can keep an overlay over it.
fn fixtures_with_a_disk(dir: &Path) -> FakeFixtures {
    let f = fixtures(dir, false, true);
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(dir.join("disk.qcow2"))
        .arg("1M")
        .status()
        .unwrap();
    assert!(st.success());
    f
}

#[test]
fn a_reboot_step_boots_the_kept_disk_again_and_its_failures_fail_the_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, f) = (machine(), fixtures_with_a_disk(tmp.path()));
    let s = scenario(
        "[[step]]\nrun = \"true\"\ntimeout = \"10s\"\n[[step]]\nname = \"again\"\nreboot = true\n[[step]]\nrun = \"false\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let env = Env { machine: &m, fixtures: &f };
    let mut events = Vec::new();
    let r = run_boot(&s, dir.path(), &BootOptions::default(), &env, &mut |e| events.push(e)).report;
    let plans = m.plans.lock().unwrap();
    assert_eq!(plans.len(), 2, "two boots");
    // The first boot carries out the steps up to the reboot, scaled, and
    // keeps its overlay; the second boots that overlay and runs the rest.
    assert_eq!(plans[0].after.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["step-1", "again"]);
    let scaled = match &plans[0].after[0].action {
        airboot_core::scenario::StepAction::Run { timeout, .. } => *timeout,
        other => panic!("{other:?}"),
    };
    assert!(scaled > std::time::Duration::from_secs(10), "TCG scales step timeouts: {scaled:?}");
    let kept = dir.path().join("disk-after-boot.qcow2");
    assert_eq!(plans[0].keep_overlay.as_deref(), Some(kept.as_path()));
    assert_eq!(plans[1].disk.0, kept);
    assert_eq!(plans[1].after.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["step-3"]);
    // Each boot keeps what its guest wrote until it is judged, then drops it.
    let kept2 = dir.path().join("again/disk-after-boot.qcow2");
    assert_eq!(plans[1].keep_overlay.as_deref(), Some(kept2.as_path()));
    assert!(!kept.exists() && !kept2.exists(), "the kept overlays are removed at the end");
    // Each boot's report is announced, the later one in its step's folder.
    let dirs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::BootFinished { dir, .. } => Some(dir.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(dirs, [dir.path().join("again"), dir.path().to_path_buf()]);
    // The scenario fails: the boot after the reboot failed its step.
    assert_eq!(r.verdict, Verdict::Fail, "{:?}", r.failures);
    assert_eq!(codes(&r), [FailureCode::StepFailed]);
    assert!(r.failures[0].message.contains("step again (reboot): the boot after it fail"), "{:?}", r.failures);
    assert!(r.failures[0].message.contains("step step-3 (run `false`)"), "{:?}", r.failures);
    assert_eq!(r.steps.len(), 2);
    let next = r.steps[1].next_boot.as_ref().expect("the boot after the reboot");
    assert_eq!((next.dir.as_str(), next.verdict), ("again", Verdict::Fail));
    assert!(!r.steps[1].ok);
}

#[test]
fn steps_that_pass_leave_a_passing_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let (m, f) = (machine(), fixtures_with_a_disk(tmp.path()));
    let (r, _) = boot(&scenario("[[step]]\npower_cut = true\n"), &m, &f, &BootOptions::default());
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    assert_eq!(m.plans.lock().unwrap().len(), 2);
    assert_eq!(r.steps[0].next_boot.as_ref().map(|n| n.verdict), Some(Verdict::Pass));
}

/// `[image] login` tells the reference reporter which engine's CLI to
/// ask: Docker's, Podman's or containerd's `ctr`.
#[test]
fn a_console_login_tells_the_reporter_its_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures(tmp.path(), false, true);
    let login = "[image]\nfixture = \"fake-x86_64\"\ninject = false\nlogin = { user = \"root\", password = \"\" }\n";
    let with = |engine: &str| {
        let src = format!(
            "name = \"fake\"\n{login}[expect]\nengine = \"{engine}\"\nimages = [\"fixture/redis:1\"]\n\
             containers = [{{ name = \"redis\" }}]\ntimeout = \"60s\"\n"
        );
        airboot_core::scenario::parse(&src, Path::new("fake.toml"), &airboot_core::scenario::any_file).unwrap()
    };
    for engine in ["docker", "podman", "containerd"] {
        let m = machine();
        let (r, _) = boot(&with(engine), &m, &f, &BootOptions::default());
        assert_eq!(r.probe.origin.as_deref(), Some("login"), "{engine}: {:?}", r.failures);
        let plans = m.plans.lock().unwrap();
        let conf = &plans[0].login.as_ref().expect("a login plan").conf;
        assert!(conf.contains(&format!("ENGINE={engine}\n")) && conf.contains("STACK_CONTAINERS=\"redis\""), "{conf}");
        assert!(!conf.contains("STACK_COMPOSE"), "{conf}");
    }
}

//! The run state machine, fed by hand: no VM.

use super::*;
use crate::scenario::{ContainerExpect, ExtraImages, ImageExpect};
use airboot_model::Engine;
use std::time::Duration;

mod milestones;

mod clocks;

const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn cfg() -> RunConfig {
    RunConfig {
        expect: Expect {
            engine: Engine::Docker,
            images: vec![ImageExpect { reference: "fixture/redis:1".into(), id: None }],
            extra_images: ExtraImages::Fail,
            containers: vec![ContainerExpect { name: "redis".into(), image: None, healthy: None }],
            compose: None,
            time_to_stack: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(20),
            fail_on: vec!["BOOM".into()],
            default_fail_on: true,
            read_only_root: false,
        },
        known_ids: BTreeMap::new(),
        milestones: vec![],
        scale: 2.0,
        probe: false,
        login: false,
        injected: false,
    }
}

fn line(t: f64, s: &str) -> TimedLine {
    TimedLine { t, text: s.into(), truncated: false }
}

fn block(seq: u64, is_final: bool, health: &str) -> Vec<String> {
    vec![
        format!(r#"AIRBOOT-STATUS v1 begin {{"seq":{seq},"uptime_s":{seq}.0,"final":{is_final}}}"#),
        r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"up"}"#.into(),
        format!(r#"AIRBOOT-STATUS v1 image {{"repository":"fixture/redis","tag":"1","id":"{RID}"}}"#),
        format!(
            r#"AIRBOOT-STATUS v1 container {{"name":"/redis","image":"fixture/redis:1","state":"running","health":"{health}"}}"#
        ),
        format!(r#"AIRBOOT-STATUS v1 end {{"seq":{seq},"records":3}}"#),
    ]
}

fn feed(run: &mut Run, t: f64, lines: &[String]) -> Decision {
    let mut d = Decision::Continue;
    for l in lines {
        d = run.on_line(&line(t, l));
        if d == Decision::Stop {
            break;
        }
    }
    d
}

#[test]
fn passes_when_the_stack_is_healthy_and_records_milestones() {
    let mut run = Run::new(cfg()).unwrap();
    assert_eq!(run.on_line(&line(0.5, "[    0.0] Linux version 6.1.0")), Decision::Continue);
    assert_eq!(run.on_line(&line(3.0, "[  OK  ] Started docker.service - Docker")), Decision::Continue);
    assert_eq!(feed(&mut run, 5.0, &block(1, false, "starting")), Decision::Continue);
    assert_eq!(feed(&mut run, 7.0, &block(2, false, "healthy")), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    assert_eq!(r.time_to_stack_s, Some(7.0));
    let names: Vec<_> = r.milestones.iter().map(|m| (m.name.as_str(), m.t_s)).collect();
    assert_eq!(
        names,
        [
            ("kernel", 0.5),
            ("engine", 3.0),
            ("images", 5.0),
            ("container:redis", 5.0),
            ("healthy:redis", 7.0),
            ("stack", 7.0)
        ]
    );
    assert_eq!(r.status_blocks, 2);
}

#[test]
fn final_unsatisfied_block_fails_at_once_naming_the_problem() {
    let mut c = cfg();
    c.expect.images.push(ImageExpect { reference: "fixture/nginx:1".into(), id: None });
    let mut run = Run::new(c).unwrap();
    assert_eq!(feed(&mut run, 5.0, &block(1, false, "healthy")), Decision::Continue);
    assert_eq!(feed(&mut run, 6.0, &block(2, true, "healthy")), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.failures[0].code, FailureCode::ImageMissing);
    assert!(r.failures[0].message.contains("fixture/nginx:1"));
    assert_eq!(r.time_to_stack_s, None);
}

#[test]
fn fail_patterns_stop_at_once_with_the_line() {
    let mut run = Run::new(cfg()).unwrap();
    assert_eq!(run.on_line(&line(1.0, "[ 1.0] Kernel panic - not syncing: VFS")), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.failures[0].code, FailureCode::KernelPanic);
    assert_eq!(r.failures[0].evidence.as_deref(), Some("[ 1.0] Kernel panic - not syncing: VFS"));

    let mut run = Run::new(cfg()).unwrap();
    assert_eq!(run.on_line(&line(1.0, "app says BOOM")), Decision::Stop);
    assert_eq!(run.finish().failures[0].code, FailureCode::FailPattern);
}

#[test]
fn over_budget_fails_with_the_measured_time() {
    let mut run = Run::new(cfg()).unwrap();
    // budget 10s × 2 = 20s; deadline 20s × 2 = 40s
    assert_eq!(feed(&mut run, 25.0, &block(1, false, "healthy")), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.failures[0].code, FailureCode::OverBudget);
    assert_eq!(r.time_to_stack_s, Some(25.0));
}

#[test]
fn timeout_says_what_was_still_missing() {
    let mut run = Run::new(cfg()).unwrap();
    assert_eq!(run.on_tick(39.9), Decision::Continue);
    assert_eq!(run.on_tick(40.0), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::Timeout);
    assert!(r.failures[0].message.contains("no AIRBOOT-STATUS block"), "{}", r.failures[0].message);

    let mut run = Run::new(cfg()).unwrap();
    feed(&mut run, 5.0, &block(1, false, "starting"));
    assert_eq!(run.on_tick(41.0), Decision::Stop);
    let r = run.finish();
    assert!(r.failures[0].message.contains("redis is starting"), "{}", r.failures[0].message);
    assert!(r.failures[0].evidence.is_some());
}

/// No probe, no status line: a login prompt, or silence after init,
/// ends the run 30 s (wall, unscaled) later as `no-reporter`.
#[test]
fn a_guest_nothing_reports_from_ends_30_s_after_its_login_prompt() {
    let cfg = || {
        let mut c = cfg();
        c.expect.timeout = Duration::from_secs(300);
        c.expect.time_to_stack = None;
        c
    };
    let mut run = Run::new(cfg()).unwrap();
    run.on_line(&line(5.0, "Welcome to Debian GNU/Linux 12 (bookworm)!"));
    run.on_line(&line(20.0, "device login: "));
    assert_eq!(run.on_tick(49.9), Decision::Continue);
    assert_eq!(run.on_tick(50.1), Decision::Stop, "30 s after the prompt, not at the 600 s scaled timeout");
    let r = run.finish();
    assert_eq!((r.verdict, r.failures[0].code), (Verdict::Error, FailureCode::NoReporter));
    assert!(r.failures[0].message.contains("login prompt at 20.0s") && r.failures[0].message.contains("inject"));

    // Silence after init counts from the last line.
    let mut run = Run::new(cfg()).unwrap();
    run.on_line(&line(5.0, "Welcome to Debian GNU/Linux 12 (bookworm)!"));
    run.on_line(&line(9.0, "[  OK  ] Started something."));
    assert_eq!(run.on_tick(38.9), Decision::Continue);
    assert_eq!(run.on_tick(39.1), Decision::Stop);
    assert_eq!(run.finish().failures[0].code, FailureCode::NoReporter);

    // Not before init; not once a status line was seen; never with a probe.
    let mut run = Run::new(cfg()).unwrap();
    run.on_line(&line(1.0, "Linux version 6.1"));
    assert_eq!(run.on_tick(35.0), Decision::Continue, "the kernel may be slow: the timeout decides");
    let mut run = Run::new(cfg()).unwrap();
    run.on_line(&line(5.0, "Welcome to Debian GNU/Linux 12 (bookworm)!"));
    run.on_line(&line(6.0, r#"AIRBOOT-STATUS v1 begin {"seq":1,"uptime_s":1.0,"final":false}"#));
    run.on_line(&line(7.0, "device login:"));
    assert_eq!(run.on_tick(39.0), Decision::Continue, "a reporter is there");
    let mut c = cfg();
    c.probe = true;
    let mut run = Run::new(c).unwrap();
    run.on_line(&line(5.0, "Welcome to Debian GNU/Linux 12 (bookworm)!"));
    run.on_line(&line(7.0, "device login:"));
    assert_eq!(run.on_tick(39.0), Decision::Continue, "the probe will answer");
}

/// With a console login, the prompt is expected: the clock starts when
/// the reporter was typed in, and allows it LOGIN_REPORTER_S.
#[test]
fn a_console_login_waits_for_the_reporter_it_started_not_for_the_prompt() {
    let mut c = cfg();
    c.expect.timeout = Duration::from_secs(600);
    c.expect.time_to_stack = None;
    c.login = true;
    let mut run = Run::new(c.clone()).unwrap();
    run.on_line(&line(5.0, "Welcome to Debian GNU/Linux 12 (bookworm)!"));
    run.on_line(&line(20.0, "device login: "));
    assert_eq!(run.on_tick(200.0), Decision::Continue, "no reporter started yet: the timeout decides");
    run.on_login_started(210.0, "root");
    assert_eq!(run.on_tick(299.0), Decision::Continue);
    assert_eq!(run.on_tick(300.5), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::NoReporter);
    assert!(
        r.failures[0].message.contains("logged in") && r.failures[0].message.contains("210.0s"),
        "{}",
        r.failures[0].message
    );
    assert!(r.notes.iter().any(|n| n.contains("console login as \"root\"") && n.contains("coarse")), "{:?}", r.notes);
    // A whole block from the reporter: it is there, the run goes on.
    let mut run = Run::new(c.clone()).unwrap();
    run.on_login_started(30.0, "root");
    run.on_line(&line(40.0, r#"AIRBOOT-STATUS v1 begin {"seq":1,"uptime_s":40.0,"final":false}"#));
    run.on_line(&line(40.1, r#"AIRBOOT-STATUS v1 end {"seq":1,"records":0}"#));
    assert_eq!(run.on_tick(200.0), Decision::Continue);
    // The marker in an echoed script is not a reporter.
    let mut run = Run::new(c).unwrap();
    run.on_login_started(30.0, "root");
    run.on_line(&line(
        31.0,
        r#"        printf 'AIRBOOT-STATUS v1 begin {"seq":%d,"uptime_s":%s,"final":%s}\n' "$seq" "$up" "$final""#,
    ));
    assert_eq!(run.on_tick(121.0), Decision::Stop);
}

/// An injected probe that never answers (written into a filesystem the
/// guest does not run) ends the run a minute after the login prompt; one
/// that answered, or a probe the image carries, is left to the timeout.
#[test]
fn an_injected_probe_that_never_answers_ends_the_run_after_the_login_prompt() {
    let mut c = probe_cfg();
    c.expect.timeout = Duration::from_secs(600);
    c.expect.time_to_stack = None;
    c.injected = true;
    let mut run = Run::new(c.clone()).unwrap();
    run.on_line(&line(5.0, "Welcome to Debian GNU/Linux 12 (bookworm)!"));
    run.on_line(&line(20.0, "device login: "));
    assert_eq!(run.on_tick(79.9), Decision::Continue);
    assert_eq!(run.on_tick(80.1), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::NoReporter);
    assert!(r.failures[0].message.contains("injected never answered"), "{}", r.failures[0].message);
    let mut run = Run::new(c.clone()).unwrap();
    run.on_probe_hello(10.0, "x86_64");
    run.on_line(&line(20.0, "device login: "));
    assert_eq!(run.on_tick(200.0), Decision::Continue, "it answered");
    c.injected = false;
    let mut run = Run::new(c).unwrap();
    run.on_line(&line(20.0, "device login: "));
    assert_eq!(run.on_tick(200.0), Decision::Continue, "the image's own probe: the timeout decides");
}

#[test]
fn login_prompts_are_known_with_or_without_a_kernel_message_after_them() {
    use super::is_login_prompt;
    for yes in ["login:", "device login:", "device login: ", "airboot-fixture login: [   16.694514] Initializing XFRM"]
    {
        assert!(is_login_prompt(yes), "{yes:?}");
    }
    for no in ["", "Last login: Tue", "[  OK  ] Started getty: login: prompts", "sshd: login: failed", "password:"] {
        assert!(!is_login_prompt(no), "{no:?}");
    }
}

#[test]
fn exit_and_abort() {
    let mut run = Run::new(cfg()).unwrap();
    run.on_line(&line(1.0, "reboot: Power down"));
    assert_eq!(run.on_exit(1.2, "exit status 0"), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.failures[0].code, FailureCode::VmExited);
    assert!(r.failures[0].evidence.as_deref().unwrap().contains("Power down"));

    let mut run = Run::new(cfg()).unwrap();
    assert_eq!(run.on_abort(3.0, FailureCode::Interrupted, "interrupted by SIGINT"), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Error);
}

#[test]
fn damaged_blocks_are_counted_and_skipped() {
    let mut run = Run::new(cfg()).unwrap();
    let mut b = block(1, true, "healthy");
    b[2] = b[2].replace("fixture/redis", "fixture/re[ 9.9] veth: up\"dis");
    assert_eq!(feed(&mut run, 5.0, &b), Decision::Continue);
    assert_eq!(feed(&mut run, 6.0, &block(2, true, "healthy")), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.damaged_status_blocks, 2);
}

// ------------------------------------------------------------ probe path

use crate::guest::ClockSample;
use airboot_proto::probe::{
    AirgapReport, ContainerInfo, EgressEvidence, EngineEvent, ImageInfo, ProbeStatus, RunImageResult, UnitInfo,
};
use airboot_proto::{EngineRecord, EngineState};

fn probe_cfg() -> RunConfig {
    let mut c = cfg();
    c.probe = true;
    c
}

/// A status as the probe would send it; guest clocks equal host time
/// since t0 (mono) and 1000 + that (realtime).
fn pstatus(health: &str, guest_now: f64) -> (ProbeStatus, ClockSample) {
    let s = ProbeStatus {
        clocks: airboot_proto::probe::Clocks {
            boottime_s: guest_now,
            monotonic_s: guest_now,
            realtime_s: 1000.0 + guest_now,
        },
        system: "running".into(),
        userspace_us: 2_000_000,
        engine: EngineRecord {
            name: "docker".into(),
            state: EngineState::Up,
            version: Some("20.10".into()),
            detail: None,
            ..Default::default()
        },
        images: vec![ImageInfo {
            repository: "fixture/redis".into(),
            tag: "1".into(),
            id: RID.into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Default::default()
        }],
        containers: vec![ContainerInfo {
            name: "/redis".into(),
            image: "fixture/redis:1".into(),
            state: "running".into(),
            health: Some(health.into()),
            started_at: Some("1970-01-01T00:16:50Z".into()), // realtime 1010 → host 10
            healthy_at: if health == "healthy" { vec!["1970-01-01T00:16:55Z".into()] } else { vec![] }, // → 15
            pid: Some(7),
            ..Default::default()
        }],
        units: vec![UnitInfo {
            name: "docker.service".into(),
            active: "active".into(),
            active_enter_us: 6_000_000,
            ..Default::default()
        }],
        events: vec![EngineEvent {
            time_nano: 1_009_000_000_000,
            kind: "container".into(),
            action: "start".into(),
            actor: "redis".into(),
        }],
        settled: health == "healthy",
        ..Default::default()
    };
    let sample =
        ClockSample { sent_s: guest_now - 0.1, received_s: guest_now + 0.1, host_realtime_s: 1000.0 + guest_now };
    (s, sample)
}

fn clean_airgap() -> AirgapReport {
    AirgapReport {
        interfaces: vec![airboot_proto::probe::Interface {
            name: "lo".into(),
            kind: "loopback".into(),
            up: true,
            carrier: true,
        }],
        ..Default::default()
    }
}

fn ran(r: &str) -> RunImageResult {
    RunImageResult {
        reference: r.into(),
        ran: true,
        detail: "running after 3.0s".into(),
        exit_code: None,
        duration_s: 4.0,
    }
}

#[test]
fn probe_path_times_the_stack_from_guest_evidence_then_verifies() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (s, smp) = pstatus("starting", 12.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Continue);
    let (s, smp) = pstatus("healthy", 18.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    // While verifying, statuses and ticks do not decide.
    let (s, smp) = pstatus("healthy", 20.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Continue);
    assert_eq!(run.on_tick(21.0), Decision::Continue);
    assert_eq!(run.on_verification(25.0, vec![ran("fixture/redis:1")], Some(&clean_airgap())), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    // Stack = the latest of engine (6), container start event (9), first passing check (15).
    assert_eq!(r.time_to_stack_s, Some(15.0));
    assert_eq!(r.stack_seen_s, Some(18.1));
    let m: BTreeMap<&str, (f64, &str)> =
        r.milestones.iter().map(|m| (m.name.as_str(), (m.t_s, m.source.as_str()))).collect();
    assert_eq!(m["init"], (2.0, "guest"));
    assert_eq!(m["engine"], (6.0, "guest"));
    assert_eq!(m["container:redis"], (9.0, "guest"));
    assert_eq!(m["healthy:redis"], (15.0, "guest"));
    assert_eq!(m["images-verified"], (25.0, "probe"));
    assert_eq!(r.clock_skew_ms, Some(0.0));
    assert_eq!(r.image_runs.len(), 1);
    assert!(r.airgap.unwrap().checked);
    assert!(r.notes.is_empty(), "{:?}", r.notes);
}

/// The engine keeps its events from its start, so each answer has every
/// load so far: the image loads are the latest answer's, unless it has
/// fewer (an answer cut short), which replaces nothing.
#[test]
fn image_loads_are_the_fullest_answers() {
    let load = |actor: &str, t: f64| EngineEvent {
        time_nano: ((1000.0 + t) * 1e9) as i64,
        kind: "image".into(),
        action: "load".into(),
        actor: actor.into(),
    };
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(3.0, "x86_64");
    let (mut s, smp) = pstatus("starting", 8.0);
    s.events.push(load("sha256:aaa", 7.0));
    run.on_probe_status(&s, smp);
    let (mut s, smp) = pstatus("starting", 10.0);
    s.events.extend([load("sha256:aaa", 7.0), load("sha256:bbb", 9.0)]);
    run.on_probe_status(&s, smp);
    let (mut s, smp) = pstatus("starting", 12.0);
    s.events.push(load("sha256:bbb", 9.0));
    run.on_probe_status(&s, smp);
    run.on_abort(13.0, FailureCode::Interrupted, "stop");
    let loads: Vec<(String, f64)> =
        run.finish().image_loads.into_iter().map(|l| (l.image, (l.t_s * 10.0).round() / 10.0)).collect();
    assert_eq!(loads, [("sha256:aaa".to_string(), 7.0), ("sha256:bbb".to_string(), 9.0)]);
}

#[test]
fn a_container_that_exits_after_the_stack_was_seen_fails_the_run_as_it_is_now() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (s, smp) = pstatus("healthy", 18.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    // Caught running between restarts: at the end of the verification it
    // has exited, with its log.
    let (mut s, smp) = pstatus("healthy", 24.0);
    s.containers[0].state = "exited".into();
    s.containers[0].health = None;
    s.containers[0].exit_code = Some(3);
    s.containers[0].log_tail = vec!["redis: cannot open /dev/ttyUSB0".into()];
    assert_eq!(run.on_probe_status(&s, smp), Decision::Continue);
    assert_eq!(run.on_verification(25.0, vec![ran("fixture/redis:1")], Some(&clean_airgap())), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert_eq!(r.failures[0].code, FailureCode::ContainerNotRunning);
    let ev = r.failures[0].evidence.as_deref().unwrap();
    assert!(ev.contains("after the stack was first seen at 15.0s: it did not stay up"), "{ev}");
    assert_eq!(r.time_to_stack_s, Some(15.0), "the stack was seen; it did not stay");
    let c = &r.containers[0];
    assert_eq!((c.state.as_str(), c.exit_code), ("exited", Some(3)));
    assert_eq!(c.log_tail, ["redis: cannot open /dev/ttyUSB0"]);
    assert_eq!(r.last_status_t, Some(24.1), "the status that showed it");
}

#[test]
fn an_image_that_does_not_run_fails_the_run() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (s, smp) = pstatus("healthy", 18.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    let bad = RunImageResult {
        reference: "fixture/redis:1".into(),
        ran: false,
        detail: "exited 127 (last output: exec /usr/bin/redis-server: no such file or directory)".into(),
        exit_code: Some(127),
        duration_s: 2.0,
    };
    assert_eq!(run.on_verification(25.0, vec![bad], Some(&clean_airgap())), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.failures[0].code, FailureCode::ImageRunFailed);
    assert!(r.failures[0].message.contains("no such file"));
}

#[test]
fn an_egress_attempt_fails_naming_who_and_where() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (s, smp) = pstatus("healthy", 18.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    let mut a = clean_airgap();
    a.evidence.push(EgressEvidence {
        who: "unit egress-pull.service (docker)".into(),
        destination: Some("registry.example.com".into()),
        source: "journal".into(),
        line: "Error response from daemon: Get \"https://registry.example.com/v2/\": dial tcp: lookup registry.example.com".into(),
    });
    assert_eq!(run.on_verification(25.0, vec![ran("fixture/redis:1")], Some(&a)), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.failures[0].code, FailureCode::EgressAttempt);
    assert!(
        r.failures[0].message.contains("egress-pull.service") && r.failures[0].message.contains("registry.example.com")
    );
    assert_eq!(r.airgap.unwrap().egress_attempts.len(), 1);
}

#[test]
fn an_engine_that_never_comes_up_fails_when_the_guest_settles() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (mut s, smp) = pstatus("healthy", 30.0);
    s.engine = EngineRecord {
        name: "docker".into(),
        state: EngineState::Down,
        version: None,
        detail: Some("docker.service is inactive, system is degraded".into()),
        ..Default::default()
    };
    s.images.clear();
    s.containers.clear();
    s.settled = true;
    assert_eq!(run.on_probe_status(&s, smp), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::EngineDown);
    assert!(r.failures[0].message.contains("docker.service is inactive"));
}

#[test]
fn wrong_architecture_is_a_failure_not_a_wait() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "aarch64");
    let (mut s, smp) = pstatus("healthy", 18.0);
    s.settled = false; // its containers restart for ever: never settles
    assert_eq!(run.on_probe_status(&s, smp), Decision::Stop, "wrong platform: decided at once");
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::ImageArchMismatch);
    assert!(r.failures[0].message.contains("arm64"), "{}", r.failures[0].message);
}

#[test]
fn console_blocks_are_ignored_once_the_probe_answers_and_verification_can_time_out() {
    let mut run = Run::new(probe_cfg()).unwrap();
    // Before the probe: a console block with a satisfied stack is not
    // enough in probe mode (no verification possible from it).
    assert_eq!(feed(&mut run, 5.0, &block(1, true, "healthy")), Decision::Continue);
    run.on_probe_hello(8.0, "x86_64");
    let (s, smp) = pstatus("healthy", 18.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    assert_eq!(run.on_tick(41.0), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::Timeout);
    assert!(r.failures[0].message.contains("did not finish"), "{}", r.failures[0].message);
}

#[test]
fn a_probe_that_never_answers_is_named_at_the_timeout() {
    let mut run = Run::new(probe_cfg()).unwrap();
    assert_eq!(run.on_tick(41.0), Decision::Stop);
    assert!(run.finish().failures[0].message.contains("the probe never answered"));
}

#[test]
fn console_mode_notes_what_it_cannot_check() {
    let mut run = Run::new(cfg()).unwrap();
    feed(&mut run, 7.0, &block(2, false, "healthy"));
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass);
    assert!(r.notes[0].contains("console transport"));
}

/// A probe that prints console status blocks (so it runs) but that the
/// host never reaches over vsock: after PROBE_UNREACHED_S the stack is
/// judged from those blocks, saying what that costs, instead of waiting
/// for the timeout.
#[test]
fn a_probe_the_host_cannot_reach_is_judged_from_its_console_blocks() {
    let mut c = probe_cfg();
    c.expect.timeout = Duration::from_secs(600);
    c.expect.time_to_stack = None;
    c.injected = true;
    let mut run = Run::new(c.clone()).unwrap();
    assert_eq!(feed(&mut run, 10.0, &block(1, false, "starting")), Decision::Continue);
    run.on_line(&line(20.0, "device login: "));
    assert_eq!(feed(&mut run, 30.0, &block(2, false, "healthy")), Decision::Continue);
    assert_eq!(run.on_tick(54.9), Decision::Continue, "45 s from the first block not yet over");
    assert_eq!(run.on_tick(90.0), Decision::Stop, "an injected probe printing blocks is not 'never answered'");
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    assert!(r.notes.iter().any(|n| n.contains("could not reach it")), "{:?}", r.notes);
    assert!(r.stack_seen_s.is_some());

    // The guest's last block says its stack settled without the engine:
    // that is the verdict, not a timeout.
    let mut run = Run::new(c).unwrap();
    let mut down = block(1, true, "healthy");
    down[1] = r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"down"}"#.into();
    down.retain(|l| !l.contains(" image ") && !l.contains(" container "));
    *down.last_mut().unwrap() = r#"AIRBOOT-STATUS v1 end {"seq":1,"records":1}"#.into();
    assert_eq!(feed(&mut run, 12.0, &down), Decision::Continue);
    assert_eq!(run.on_tick(57.5), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    assert!(
        r.failures.iter().all(|f| f.code != FailureCode::Timeout && f.code != FailureCode::NoReporter),
        "{:?}",
        r.failures
    );
}

/// Garbage on the probe's transport and never an answer: the verdict names
/// the protocol, with the sample, not "is the probe in the image?".
#[test]
fn a_transport_carrying_only_garbage_is_probe_protocol_not_never_answered() {
    let mut run = Run::new(probe_cfg()).unwrap();
    let mut errors = crate::report::ProtocolErrors::default();
    errors.malformed_line(&[b'x'; 100], true);
    errors.malformed_line(b"{}", false);
    run.on_probe_errors(3.0, errors.clone());
    assert_eq!(run.on_tick(41.0), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::ProbeProtocol);
    assert!(r.failures[0].message.contains("over the 1 MiB limit"), "{}", r.failures[0].message);
    // Once it answered, garbage earlier is no verdict.
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_errors(3.0, errors.clone());
    run.on_probe_hello(5.0, "x86_64");
    run.on_tick(41.0);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::Timeout);
    assert_eq!(r.probe_errors, errors, "still counted for the report");
    // Only unsolicited answers, never ours: that too is the protocol.
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_errors(3.0, crate::report::ProtocolErrors { unsolicited: 4, ..Default::default() });
    run.on_tick(41.0);
    let r = run.finish();
    assert_eq!(r.failures[0].code, FailureCode::ProbeProtocol);
    assert!(r.failures[0].message.contains("4 answer(s) to no request"), "{}", r.failures[0].message);
}

/// Garbage that keeps coming for 30 s of wall time with never an answer
/// ends the run then, as an error; a burst of stale lines does not.
#[test]
fn a_transport_that_keeps_carrying_garbage_ends_the_run_early_a_burst_does_not() {
    let grow =
        |n: u64| crate::report::ProtocolErrors { malformed: n, sample: Some("noise".into()), ..Default::default() };
    let mut run = Run::new(probe_cfg()).unwrap();
    for (i, t) in [3.0, 14.0, 25.0].into_iter().enumerate() {
        run.on_probe_errors(t, grow(i as u64 + 1));
        assert_eq!(run.on_tick(t + 0.5), Decision::Continue, "at {t}s");
    }
    // The same total again is no new garbage.
    run.on_probe_errors(32.5, grow(3));
    assert_eq!(run.on_tick(33.0), Decision::Continue);
    run.on_probe_errors(33.5, grow(4));
    assert_eq!(run.on_tick(33.6), Decision::Stop, "30.5s of garbage");
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Error);
    assert_eq!(r.failures[0].code, FailureCode::ProbeProtocol);
    let m = &r.failures[0].message;
    assert!(m.contains("from 3.0s to 33.5s") && m.contains("4 line(s)") && m.contains("\"noise\""), "{m}");
    // A burst at the start, then quiet: the run goes on to its deadline.
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_errors(3.0, grow(5));
    run.on_probe_errors(3.5, grow(9));
    assert_eq!(run.on_tick(35.0), Decision::Continue);
    // An answer at last: garbage no longer ends it.
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_errors(3.0, grow(1));
    run.on_probe_hello(10.0, "x86_64");
    run.on_probe_errors(34.0, grow(2));
    assert_eq!(run.on_tick(34.5), Decision::Continue);
}

#[test]
fn an_error_is_timed_from_the_first_status_that_reported_it_whatever_the_state_after_it() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    for (t, state) in [(12.0, "activating"), (16.0, "failed")] {
        let (mut s, smp) = pstatus("starting", t);
        s.engine.state = EngineState::Down;
        s.engine.detail = Some(format!("Status: unknown flag: --x; docker.service is {state}, system is running"));
        run.on_probe_status(&s, smp);
    }
    let r = run.finish();
    assert_eq!(r.errors_first_seen.get("Status: unknown flag: --x"), Some(&12.1));
    assert_eq!(r.errors_first_seen.len(), 1, "{:?}", r.errors_first_seen);
}

#[test]
fn evidence_that_settles_the_run_decides_it_after_a_short_grace_not_at_the_timeout() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (s, smp) = pstatus("starting", 9.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Continue);
    let l = line(10.0, "airboot-load-images[412]: write /var/lib/docker/tmp/x: no space left on device");
    assert_eq!(run.on_line(&l), Decision::Continue);
    assert_eq!(run.on_tick(12.9), Decision::Continue, "the grace: one more status");
    assert_eq!(run.on_tick(13.1), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Fail);
    let ev = r.failures[0].evidence.as_deref().unwrap();
    assert!(ev.contains("no space left on device") && ev.contains("nothing after it can make the stack run"), "{ev}");
    assert_eq!(r.settled_at_s, Some(10.0));
    // Before the engine runs, a full disk may cost only a machine-id...
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_line(&line(2.9, "systemd[1]: Failed to write /etc/machine-id: No space left on device"));
    assert_eq!(run.on_tick(10.0), Decision::Continue);
    run.on_probe_hello(11.0, "x86_64");
    let (mut s, smp) = pstatus("healthy", 12.0);
    s.engine.state = EngineState::Starting;
    s.settled = false;
    assert_eq!(run.on_probe_status(&s, smp), Decision::Continue, "the engine is still starting");
    // ...but when the engine then goes down, that is the end, at once
    // (the guest itself has not given up: its unit may restart).
    let (mut s, smp) = pstatus("healthy", 20.0);
    s.engine.state = EngineState::Down;
    s.engine.detail = Some("docker.service is activating, system is starting".into());
    s.containers.clear();
    s.settled = false;
    assert_eq!(run.on_probe_status(&s, smp), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.settled_at_s, Some(20.1));
    let ev = r.failures[0].evidence.as_deref().unwrap();
    assert!(ev.contains("machine-id: No space left") && ev.contains("(at 2.9s), then docker went down"), "{ev}");
    assert!(ev.contains("decided at once"), "{ev}");
    // Once the stack ran, the same words settle nothing.
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (s, smp) = pstatus("healthy", 18.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    run.on_line(&line(19.0, "no space left on device"));
    assert_eq!(run.on_tick(30.0), Decision::Continue);
}

fn compose_cfg() -> RunConfig {
    use crate::scenario::{ComposeExpect, ServiceExpect};
    let mut c = probe_cfg();
    c.expect.containers.clear();
    let svc = |name: &str, oneshot| ServiceExpect { name: name.into(), oneshot, healthy: None };
    c.expect.compose = Some(ComposeExpect {
        project: "fixture".into(),
        services: vec![svc("redis", false), svc("web", false), svc("seed", true)],
    });
    c
}

fn composed(name: &str, service: &str, state: &str, health: Option<&str>) -> ContainerInfo {
    ContainerInfo {
        name: format!("/{name}"),
        id: Some(format!("{:0<12}", &service[..2]).replace(|c: char| !c.is_ascii_hexdigit(), "0")),
        image: "fixture/busybox:1".into(),
        state: state.into(),
        health: health.map(Into::into),
        compose: Some(airboot_proto::ComposeLabels { project: "fixture".into(), service: service.into() }),
        ..Default::default()
    }
}

#[test]
fn a_compose_stack_gets_service_milestones_from_the_guests_clocks() {
    let mut run = Run::new(compose_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (mut s, smp) = pstatus("healthy", 30.0);
    let redis = ContainerInfo {
        started_at: Some("1970-01-01T00:16:50Z".into()),
        healthy_at: vec!["1970-01-01T00:16:58Z".into()], // → 18
        ..composed("fixture_redis_1", "redis", "running", Some("healthy"))
    };
    let web = ContainerInfo {
        started_at: Some("1970-01-01T00:17:00Z".into()), // → 20
        ..composed("fixture_web_1", "web", "running", None)
    };
    let seed = ContainerInfo {
        exit_code: Some(0),
        started_at: Some("1970-01-01T00:16:51Z".into()),
        finished_at: Some("1970-01-01T00:16:52Z".into()), // → 12
        ..composed("fixture_seed_1", "seed", "exited", None)
    };
    s.containers = vec![redis, web, seed];
    s.events.clear();
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    run.on_verification(31.0, vec![], None);
    let r = run.finish();
    let at = |n: &str| r.milestones.iter().find(|m| m.name == n).map(|m| (m.t_s, m.source.as_str()));
    assert_eq!(at("service:redis"), Some((18.0, "guest")), "its first passing health check");
    assert_eq!(at("service:web"), Some((20.0, "guest")), "started, no healthcheck");
    assert_eq!(at("service:seed"), Some((12.0, "guest")), "a one-shot: when it exited");
    assert_eq!(r.time_to_stack_s, Some(20.0));
}

#[test]
fn a_service_compose_held_back_names_the_dependency_that_never_became_healthy() {
    let mut run = Run::new(compose_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let redis = composed("fixture_redis_1", "redis", "running", Some("unhealthy"));
    let redis_id = redis.id.clone().unwrap();
    run.on_line(&line(25.0, &format!("docker-compose[480]: ERROR: for web  Container \"{redis_id}\" is unhealthy.")));
    let (mut s, smp) = pstatus("healthy", 30.0);
    s.containers =
        vec![redis, ContainerInfo { exit_code: Some(0), ..composed("fixture_seed_1", "seed", "exited", None) }];
    s.settled = true;
    assert_eq!(run.on_probe_status(&s, smp), Decision::Stop);
    let r = run.finish();
    let msgs: Vec<(FailureCode, &str)> = r.failures.iter().map(|f| (f.code, f.message.as_str())).collect();
    assert_eq!(
        msgs[0],
        (
            FailureCode::ContainerUnhealthy,
            "compose service redis (project fixture): container fixture_redis_1 is unhealthy"
        )
    );
    assert_eq!(msgs[1].0, FailureCode::ContainerMissing);
    assert!(
        msgs[1].1.starts_with(
            "compose service web (project fixture) has no container: docker-compose held it back, waiting for service redis (container fixture_redis_1), which never became healthy"
        ),
        "{}",
        msgs[1].1
    );
    assert!(msgs[1].1.contains("ERROR: for web"), "compose's own words: {}", msgs[1].1);
    // Without compose's words, the failure says only what is missing.
    let mut run = Run::new(compose_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    s.settled = true;
    run.on_probe_status(&s, smp);
    let r = run.finish();
    assert!(
        r.failures[1].message.ends_with("has no container (none carries its compose labels)"),
        "{}",
        r.failures[1].message
    );
}

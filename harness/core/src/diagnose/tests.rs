//! The diagnoses, each from the real evidence lines that name it.

use super::*;
use airboot_model::Failure;
use airboot_proto::{EngineRecord, EngineState};

use crate::verify::{ContainerRow, ImageRow};

fn failed(codes: &[FailureCode]) -> Report {
    let mut r = Report::new("s", "s.toml", "now".into());
    for c in codes {
        r.failures.push(Failure::new(*c, "m"));
    }
    r
}

fn engine(state: EngineState, detail: &str) -> Option<EngineRecord> {
    Some(EngineRecord { name: "docker".into(), state, detail: Some(detail.into()), ..Default::default() })
}

fn line(t: f64, s: &str) -> TimedLine {
    TimedLine { t, text: s.into(), truncated: false }
}

fn codes(d: &[Diagnosis]) -> Vec<DiagnosisCode> {
    d.iter().map(|x| x.code).collect()
}

fn image(reference: &str, present: bool, expected: bool) -> ImageRow {
    ImageRow { reference: reference.into(), id: None, present, expected, expected_id: None }
}

#[test]
fn a_run_that_passed_gets_none_whatever_the_console_says() {
    let mut r = failed(&[]);
    r.engine = engine(EngineState::Down, "chmod /var/lib/docker: read-only file system");
    let console = [line(3.0, "write /var/lib/docker/tmp/x: no space left on device"), line(4.0, "exec format error")];
    assert!(diagnose(&r, &console).is_empty());
}

/// The words the probe quoted from dockerd's journal in the
/// read-only-store boot test (tests/own_image.rs).
#[test]
fn a_read_only_store_is_named_from_the_engines_own_error() {
    let mut r = failed(&[FailureCode::EngineDown]);
    r.engine = engine(
        EngineState::Down,
        "chmod /var/lib/docker: read-only file system; docker.service is failed, system is running",
    );
    let d =
        diagnose(&r, &[line(9.0, "[FAILED] Failed to start docker.service - Docker Application Container Engine.")]);
    assert_eq!(codes(&d), [DiagnosisCode::StoreReadOnly], "{d:?}");
    assert_eq!(d[0].evidence[0].source, "engine");
    assert!(d[0].summary.contains("chmod /var/lib/docker: read-only"), "{}", d[0].summary);
    assert_eq!(d[0].fix, DiagnosisCode::StoreReadOnly.fix());
    // dockerd's graphdriver failing on a read-only store, having crash-
    // looped: the store's filesystem is the cause, not the driver, and
    // the loop is its symptom.
    r.engine = engine(
        EngineState::Down,
        "failed to start daemon: error initializing graphdriver: open /var/lib/docker/overlay2/.tmp: read-only file system; docker.service kept failing and hit its start limit (start-limit-hit); docker.service is failed, system is running",
    );
    assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::StoreReadOnly]);
    // A read-only path outside the store is not the store's.
    r.engine = engine(EngineState::Down, "open /etc/docker/key.json: read-only file system; docker.service is failed");
    assert!(!codes(&diagnose(&r, &[])).contains(&DiagnosisCode::StoreReadOnly));
}

#[test]
fn no_space_during_a_load_is_named_with_the_console_line_and_its_time() {
    let mut r = failed(&[FailureCode::Timeout]);
    r.engine = engine(EngineState::Up, "");
    let d = diagnose(
        &r,
        &[
            line(1.0, "Welcome"),
            line(41.5, "Error processing tar file(exit status 1): write /usr/lib/x: no space left on device"),
        ],
    );
    assert_eq!(codes(&d), [DiagnosisCode::StoreNoSpace]);
    assert_eq!(d[0].evidence[0].t_s, Some(41.5));
    // With the store's filesystem known, its size and use are evidence, in MiB.
    let mut r = with_store((1 << 30) - (3 << 19));
    r.failures = failed(&[FailureCode::Timeout]).failures;
    r.engine.as_mut().unwrap().data_root = Some("/var/lib/docker".into());
    let d = diagnose(&r, &[line(41.5, "write /usr/lib/x: no space left on device")]);
    assert_eq!(
        d[0].evidence.last().map(|e| e.line.as_str()),
        Some("the store's filesystem (/var/lib/docker): 1024 MiB, 1022 MiB used, 2 MiB free")
    );
}

#[test]
fn an_empty_image_list_is_a_driver_guess_not_image_missing_alone() {
    let mut r = failed(&[FailureCode::ImageMissing, FailureCode::ImageMissing]);
    r.engine = engine(EngineState::Up, "");
    r.images = vec![image("fixture/redis:1", false, true), image("fixture/busybox:1", false, true)];
    let d = diagnose(&r, &[]);
    assert_eq!(codes(&d), [DiagnosisCode::StorageDriverMismatch]);
    assert_eq!(d[0].confidence, Confidence::Guess);
    assert!(d[0].evidence[0].line.contains("0 image(s) listed"), "{:?}", d[0].evidence);
    // The engine's own words make it certain.
    let d = diagnose(
        &r,
        &[line(20.0, r#"level=error msg="[graphdriver] prior storage driver overlay2 failed: driver not supported""#)],
    );
    assert_eq!(d[0].confidence, Confidence::Certain);
    // The engine says where it looks: not where stores are seeded.
    r.engine.as_mut().unwrap().data_root = Some("/srv/docker".into());
    let d = diagnose(&r, &[]);
    assert_eq!(codes(&d), [DiagnosisCode::DataRootMismatch]);
    assert!(d[0].summary.contains("/srv/docker, not /var/lib/docker"), "{}", d[0].summary);
    assert_eq!(d[0].evidence.len(), 1, "no offline read, no word on the seeded store");
    // The disk read offline shows the seeded images where it did not look.
    r.store_check = Some(crate::report::OfflineStore {
        fs: crate::cut::FsFindings { clean: true, summary: "clean".into() },
        check: crate::cut::store::StoreCheck {
            verdict: crate::cut::store::StoreVerdict::New,
            images: vec![crate::cut::store::ImageCheck {
                reference: "fixture/redis:1".into(),
                id: None,
                state: crate::cut::store::ImageState::Complete,
            }],
            layers_registered: 2,
            layers_verified: 2,
            problems: Vec::new(),
        },
    });
    let d = diagnose(&r, &[]);
    assert_eq!(d[0].evidence[1].line, "read offline, /var/lib/docker holds 1 complete: fixture/redis:1");
    r.store_check = None;
    r.engine.as_mut().unwrap().data_root = Some("/var/lib/docker/".into());
    assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::StorageDriverMismatch]);
    // One image present: the store is there, one image is missing from it.
    r.images[1].present = true;
    assert!(diagnose(&r, &[]).is_empty());
}

/// A first-boot loader that ran out of space: its unit's error, as the
/// probe quotes it from the unit's journal, names the cause.
#[test]
fn a_failed_units_error_is_evidence() {
    let mut r = failed(&[FailureCode::ImageMissing]);
    r.engine = engine(EngineState::Up, "");
    r.images = vec![image("fixture/redis:1", false, true), image("fixture/busybox:1", true, true)];
    r.units.push(airboot_proto::UnitRecord {
        name: "airboot-load-images.service".into(),
        state: "failed".into(),
        error: Some(
            "Error processing tar file(exit status 1): write /usr/bin/redis-server: no space left on device".into(),
        ),
    });
    let d = diagnose(&r, &[]);
    assert_eq!(codes(&d), [DiagnosisCode::StoreNoSpace]);
    assert_eq!(d[0].evidence[0].source, "unit airboot-load-images.service");
}

#[test]
fn a_kernel_without_netfilter_is_named() {
    let mut r = failed(&[FailureCode::EngineDown]);
    r.engine = engine(
        EngineState::Down,
        "failed to start daemon: Error initializing network controller: iptables failed; docker.service is failed, system is running",
    );
    assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::KernelMissingFeatures]);
}

#[test]
fn a_masked_engine_never_started_and_a_start_limit_is_a_crash_loop() {
    let mut r = failed(&[FailureCode::EngineDown]);
    r.engine = engine(EngineState::Down, "docker.service is inactive, system is running");
    assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::EngineNotStarted]);
    r.engine = engine(EngineState::Down, "boom; docker.service is failed, system is running");
    assert!(diagnose(&r, &[]).is_empty(), "an error nothing names is no diagnosis");
    let d = diagnose(&r, &[line(30.0, "docker.service: Failed with result 'start-limit-hit'.")]);
    assert_eq!(codes(&d), [DiagnosisCode::EngineCrashLoop]);
    assert!(d[0].summary.contains("boom"), "{}", d[0].summary);
    // As the probe says it (the unit's Result).
    r.engine = engine(
        EngineState::Down,
        "boom; docker.service kept failing and hit its start limit (start-limit-hit); docker.service is failed, system is running",
    );
    assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::EngineCrashLoop]);
    r.engine = engine(
        EngineState::Down,
        "unknown flag: --no-such-flag; docker.service kept failing: restarted 2 times, then stopped (its start limit); docker.service is failed, system is running",
    );
    assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::EngineCrashLoop]);
}

#[test]
fn egress_names_who_and_where() {
    let mut r = failed(&[FailureCode::EgressAttempt]);
    r.airgap.egress_attempts.push(crate::airgap::EgressAttempt {
        who: "pull-app.service".into(),
        destination: Some("registry-1.docker.io".into()),
        source: "journal".into(),
        evidence: "dial tcp: lookup registry-1.docker.io".into(),
    });
    let d = diagnose(&r, &[]);
    assert_eq!(codes(&d), [DiagnosisCode::NetworkDependentStart]);
    assert!(d[0].summary.contains("pull-app.service"), "{}", d[0].summary);
    assert!(d[0].evidence[0].line.contains("registry-1.docker.io"));
}

#[test]
fn arch_mismatch_and_a_crashing_container() {
    let mut r = failed(&[FailureCode::ImageArchMismatch]);
    r.failures[0].message = "image fixture/redis:1 is linux/arm64, the guest is amd64".into();
    assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::ImageArchMismatch]);
    let mut r = failed(&[FailureCode::ContainerNotRunning]);
    r.containers.push(ContainerRow {
        name: "redis".into(),
        image: Some("fixture/redis:1".into()),
        state: "restarting".into(),
        health: None,
        expected: true,
        exit_code: Some(3),
        log_tail: vec!["redis: cannot open /dev/ttyUSB0".into()],
        ..Default::default()
    });
    let d = diagnose(&r, &[]);
    assert_eq!(codes(&d), [DiagnosisCode::ContainerCrashLoop]);
    assert_eq!(
        d[0].summary,
        "an expected container is not staying up: container redis (fixture/redis:1) is restarting, last exit code 3"
    );
    assert_eq!(
        (d[0].evidence[1].source.as_str(), d[0].evidence[1].line.as_str()),
        ("container redis log", "redis: cannot open /dev/ttyUSB0")
    );
    r.containers[0].expected = false;
    assert!(diagnose(&r, &[]).is_empty(), "a container nobody expects is not the cause");
}

fn with_store(used: u64) -> Report {
    let mut r = failed(&[]);
    r.engine = Some(EngineRecord {
        name: "docker".into(),
        state: EngineState::Up,
        store_fs: Some(airboot_proto::FsUsage { size_bytes: 1 << 30, used_bytes: used }),
        ..Default::default()
    });
    r
}

#[test]
fn a_boot_after_a_reboot_that_loads_again_is_load_every_boot_with_its_time_and_growth() {
    let first = with_store(100 << 20);
    let mut next = with_store((100 << 20) + (3 << 19));
    next.image_loads = vec![
        crate::run::ImageLoad { image: "sha256:aaa".into(), t_s: 10.5 },
        crate::run::ImageLoad { image: "sha256:bbb".into(), t_s: 18.0 },
    ];
    let brief = crate::report::NextBoot::of("again", &first, &next);
    assert_eq!(brief.image_loads, 2);
    assert_eq!(brief.load_s, Some(7.5));
    assert_eq!(brief.store_growth_bytes, Some(3 << 19));
    let d = load_every_boot("again", &next, &brief).expect("diagnosed");
    assert_eq!(d.code, DiagnosisCode::LoadEveryBoot);
    assert_eq!(
        d.summary,
        "after the again step's reboot, docker loaded 2 images again (aaa, bbb) over 7.5 s; the store's filesystem changed by +1.5 MiB"
    );
    assert_eq!(d.evidence.len(), 2);
    assert_eq!((d.evidence[0].source.as_str(), d.evidence[0].t_s), ("again/status", Some(10.5)));
    // A second boot that loads nothing: no diagnosis, no load time.
    let quiet = with_store(100 << 20);
    let brief = crate::report::NextBoot::of("again", &first, &quiet);
    assert_eq!((brief.image_loads, brief.load_s, brief.store_growth_bytes), (0, None, Some(0)));
    assert!(load_every_boot("again", &quiet, &brief).is_none());
}

#[test]
fn a_damaged_layer_read_offline_is_store_corrupt_and_its_symptoms_are_not_named() {
    use crate::cut::store::{ImageCheck, ImageState, StoreCheck, StoreVerdict};
    let mut r = failed(&[FailureCode::ImageRunFailed, FailureCode::ContainerNotRunning]);
    r.containers = vec![ContainerRow {
        name: "web".into(),
        image: Some("fixture/busybox:1".into()),
        state: "exited".into(),
        health: None,
        expected: true,
        ..Default::default()
    }];
    let console = [line(30.0, "exec /bin/httpd: exec format error")];
    // Without the offline read: the symptoms are what shows.
    assert_eq!(codes(&diagnose(&r, &console)), [DiagnosisCode::ImageArchMismatch, DiagnosisCode::ContainerCrashLoop]);
    let damaged = "layer 1 (chain cb3178004ce4) is damaged: its files do not hash to its diff_id";
    r.store_check = Some(crate::report::OfflineStore {
        fs: crate::cut::FsFindings { clean: true, summary: "clean".into() },
        check: StoreCheck {
            verdict: StoreVerdict::Corrupt,
            images: vec![ImageCheck {
                reference: "fixture/busybox:1".into(),
                id: Some("sha256:e1".into()),
                state: ImageState::Corrupt(damaged.into()),
            }],
            layers_registered: 4,
            layers_verified: 3,
            // As the checker gives them: the image's line again, and the layer's.
            problems: vec![format!("fixture/busybox:1: {damaged}"), "layer cb3178004ce4: damaged".into()],
        },
    });
    let d = diagnose(&r, &console);
    assert_eq!(codes(&d), [DiagnosisCode::StoreCorrupt]);
    assert!(d[0].summary.contains("(3 of 4 layers verified)"), "{}", d[0].summary);
    let lines: Vec<&str> = d[0].evidence.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(lines, [format!("fixture/busybox:1: {damaged}").as_str(), "layer cb3178004ce4: damaged"]);
    assert_eq!(d[0].evidence[0].source, "store");
    // A store read offline and found whole explains nothing.
    r.store_check.as_mut().unwrap().check.verdict = StoreVerdict::New;
    assert!(!codes(&diagnose(&r, &console)).contains(&DiagnosisCode::StoreCorrupt));
    // Which failures make the store worth reading at all.
    assert!(wants_store_check(&{
        let mut x = failed(&[FailureCode::ImageRunFailed]);
        x.verdict = airboot_model::Verdict::Fail;
        x
    }));
    assert!(!wants_store_check(&{
        let mut x = failed(&[FailureCode::AirgapRoute]);
        x.verdict = airboot_model::Verdict::Fail;
        x
    }));
}

#[test]
fn an_engine_error_is_timed_when_first_seen_and_the_run_end_is_measured_from_it() {
    let mut r = failed(&[FailureCode::EngineDown]);
    let e = "chmod /var/lib/docker: read-only file system; docker.service is failed";
    r.engine = engine(EngineState::Down, e);
    r.status.errors_first_seen_s.insert("chmod /var/lib/docker: read-only file system".into(), 21.5);
    r.status.ended_s = Some(24.0);
    let d = diagnose(&r, &[line(30.0, "unrelated")]);
    assert_eq!(codes(&d), [DiagnosisCode::StoreReadOnly]);
    assert_eq!(d[0].evidence[0].t_s, Some(21.5));
    assert_eq!(d[0].ended_after_s, Some(2.5));
    assert!(d[0].code.settles_run());
    assert_eq!(too_slow(&d[0]), None);
    r.status.ended_s = Some(40.0);
    let late = diagnose(&r, &[]);
    assert!(too_slow(&late[0]).unwrap().contains("ended 18.5s after"), "{:?}", too_slow(&late[0]));
    // Untimed evidence: nothing to measure from.
    r.status.errors_first_seen_s.clear();
    let d = diagnose(&r, &[]);
    assert_eq!(d[0].ended_after_s, None);
    assert!(too_slow(&d[0]).unwrap().contains("none of its evidence is timed"));
}

#[test]
fn a_clock_behind_is_named_only_when_a_health_check_breaks_on_it() {
    let mut r = failed(&[FailureCode::ContainerUnhealthy]);
    let out = "app-cert.pem: certificate is not yet valid (notBefore 2026-11-26T09:00:00Z, device clock 2026-04-28T00:00:09Z)";
    r.containers.push(ContainerRow {
        name: "web".into(),
        state: "running".into(),
        health: Some("unhealthy".into()),
        expected: true,
        health_output: Some(out.into()),
        ..Default::default()
    });
    r.clock_skew_ms = Some(-18_368_384_747.0);
    let d = diagnose(&r, &[]);
    assert_eq!(codes(&d), [DiagnosisCode::ClockBeforeImage]);
    assert_eq!(d[0].confidence, Confidence::Certain);
    assert_eq!(d[0].summary, "the device's clock is 212.6 days behind, and the health check of web fails");
    assert_eq!(d[0].evidence[0].line, out);
    // Either piece alone is a guess.
    r.clock_skew_ms = Some(120.0);
    assert_eq!(diagnose(&r, &[])[0].confidence, Confidence::Guess);
    // A failing check that says nothing of time, on a clock that is right: not this.
    r.containers[0].health_output = Some("redis: connection refused".into());
    assert!(diagnose(&r, &[]).is_empty());
    // A clock far behind with every check passing: nothing to say.
    r.clock_skew_ms = Some(-18_368_384_747.0);
    r.containers[0].health = Some("healthy".into());
    r.failures.clear();
    assert!(diagnose(&r, &[]).is_empty());
}

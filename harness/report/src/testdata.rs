//! Synthetic runs for the renderers' tests.

use airboot_core::report::{Milestone, Report};
use airboot_model::{Accel, Arch, Failure, FailureCode, TransportKind, Verdict};

use crate::views::{RepeatStats, RunView, ScenarioView};

fn m(name: &str, t: f64, source: &str) -> Milestone {
    Milestone { name: name.into(), t_s: t, source: source.into(), evidence: format!("{name} <evidence> & more") }
}

pub fn run() -> RunView {
    let mut pass = Report::new("preseeded-x86_64", "scenarios/preseeded-x86_64.toml", "2026-11-22T20:00:00Z".into());
    pass.verdict = Verdict::Pass;
    pass.arch = Some(Arch::X86_64);
    pass.accel = Some(Accel::Tcg);
    pass.probe.transport = Some(TransportKind::VhostUserVsock);
    pass.time_to_stack_s = Some(132.4);
    pass.wall_s = 180.0;
    pass.milestones = vec![
        m("kernel", 6.7, "console"),
        m("init", 12.0, "guest"),
        m("engine", 84.2, "guest"),
        m("images", 84.2, "guest"),
        m("container:redis", 124.3, "guest"),
        m("healthy:redis", 132.4, "guest"),
        m("stack", 132.4, "guest"),
        m("images-verified", 173.8, "probe"),
    ];
    pass.console.tail = vec!["[+1.0s] Linux version 6.1".into(), "[+2.0s] <tag> & entity".into()];
    let mut fail =
        Report::new("missing-image-x86_64", "scenarios/missing-image-x86_64.toml", "2026-11-22T20:03:00Z".into());
    fail.verdict = Verdict::Fail;
    fail.arch = Some(Arch::X86_64);
    fail.milestones = vec![m("kernel", 7.0, "console"), m("engine", 90.0, "status")];
    fail.failures = vec![Failure {
        code: FailureCode::ImageMissing,
        message: "image fixture/nginx:1 is not in `docker images`".into(),
        evidence: Some("status block 9 at 140.0s".into()),
    }];
    let mut broken = fail.clone();
    broken.scenario = "egress-x86_64".into();
    broken.failures[0].code = FailureCode::Timeout;
    broken.diagnoses = vec![airboot_model::Diagnosis {
        code: airboot_model::DiagnosisCode::NetworkDependentStart,
        summary: "pull-app.service tried to reach a network at boot".into(),
        evidence: vec![airboot_model::DiagEvidence {
            source: "console".into(),
            t_s: Some(61.5),
            line: "dial tcp: lookup registry-1.docker.io <no network>".into(),
        }],
        fix: airboot_model::DiagnosisCode::NetworkDependentStart.fix().into(),
        confidence: airboot_model::Confidence::Certain,
        ended_after_s: None,
    }];
    RunView {
        run_id: "20261122-200000-3-scenarios".into(),
        started_at: "2026-11-22T20:00:00Z".into(),
        scenarios: vec![
            ScenarioView {
                report: pass,
                test_name: "x86_64::preseeded-x86_64".into(),
                dir: "preseeded-x86_64".into(),
                declared: "pass".into(),
                as_declared: Ok(()),
            },
            ScenarioView {
                report: fail,
                test_name: "x86_64::missing-image-x86_64".into(),
                dir: "missing-image-x86_64".into(),
                declared: "fail (image-missing)".into(),
                as_declared: Ok(()),
            },
            ScenarioView {
                report: broken,
                test_name: "x86_64::egress-x86_64".into(),
                dir: "egress-x86_64".into(),
                declared: "fail (egress-attempt)".into(),
                as_declared: Err("no egress-attempt failure".into()),
            },
        ],
        repeats: vec![RepeatStats {
            scenario: "x86_64::preseeded-x86_64".into(),
            runs: 40,
            failures: 0,
            ci_low: 0.0,
            ci_high: 0.0876,
        }],
    }
}

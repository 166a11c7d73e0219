//! Renders reports: `report.json`, `run.json`, the one-screen human
//! summary printed at the end of a run, and the run-level `junit.xml`,
//! `index.html` and `summary.md`.

pub mod explore;
pub mod files;
pub mod gate;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod terminal;
#[doc(hidden)]
pub mod testdata;
pub mod views;

pub use files::ReportFiles;
pub use terminal::Terminal;

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use airboot_core::report::{Report, RunIndex};
use airboot_model::{BootMode, Verdict};

/// Write `report.json` into `dir` (atomically: a reader never sees half).
pub fn write_report(dir: &Path, report: &Report) -> io::Result<()> {
    write_json(&dir.join("report.json"), report)
}

pub fn write_index(dir: &Path, index: &RunIndex) -> io::Result<()> {
    write_json(&dir.join("run.json"), index)
}

/// `junit.xml`, `summary.md` and `index.html` of a run.
pub fn write_run_files(
    dir: &Path,
    run: &views::RunView,
    history: Option<&[airboot_core::history::HistoryEntry]>,
) -> io::Result<()> {
    write_atomic(&dir.join("junit.xml"), &junit::junit(run))?;
    write_atomic(&dir.join("summary.md"), &markdown::summary_md(run))?;
    write_atomic(&dir.join("index.html"), &html::index_html(run, history.map(|h| (h, false))))
}

fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(v).map_err(io::Error::other)?;
    text.push('\n');
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Error => "ERROR",
    }
}

/// ` (a guess)` for a diagnosis the evidence fits but does not name.
pub fn guess(d: &airboot_model::Diagnosis) -> &'static str {
    if d.confidence == airboot_model::Confidence::Guess { " (a guess)" } else { "" }
}

fn short_id(id: &str) -> String {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.chars().take(12).collect()
}

/// The human summary of one scenario, at most about a screen.
pub fn summary(r: &Report, report_dir: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== {} : {}", r.scenario, verdict_word(r.verdict));
    if let Some(d) = &r.description {
        let _ = writeln!(s, "   {d}");
    }
    if let Some(p) = &r.image.path {
        let hash = match (&r.image.sha256_before, r.image.unchanged) {
            (Some(h), Some(true)) => format!("sha256 {}… unchanged", &h[..12.min(h.len())]),
            (Some(h), Some(false)) => format!("sha256 {}… CHANGED", &h[..12.min(h.len())]),
            (Some(h), None) => format!("sha256 {}…", &h[..12.min(h.len())]),
            _ => String::new(),
        };
        let name = r.image.fixture.clone().map(|f| format!("{f} ")).unwrap_or_default();
        let _ = writeln!(s, "   image     {name}{p} {hash}");
        if let Some(u) = &r.image.unpacked {
            let _ = writeln!(
                s,
                "             {}-packed: booted {} (sha256 {}…{})",
                u.packing,
                u.path,
                &u.sha256[..12.min(u.sha256.len())],
                if u.reused { ", unpacked by an earlier run" } else { "" }
            );
        }
    }
    if let Some(o) = r.probe.origin.as_deref().filter(|o| *o == "injected") {
        let _ = writeln!(
            s,
            "   probe     {o}: {} file(s) in a layer over the image (report.json: probe.injected)",
            r.probe.injected.len()
        );
    }
    if let Some(first) = r.arch_detection.evidence.first() {
        let more = r.arch_detection.evidence.len() - 1;
        let _ = writeln!(
            s,
            "   arch      {} from the image: {first}{}",
            r.arch_detection.detected.as_deref().unwrap_or("not told"),
            if more > 0 { format!(" (+{more} more in report.json)") } else { String::new() }
        );
    }
    if let Some(m) = r.boot.mode
        && m != BootMode::Direct
    {
        let detail = match m {
            BootMode::Uefi | BootMode::Bios => format!("firmware {}", r.boot.firmware.as_deref().unwrap_or("?")),
            _ => format!("generic kernel {}", r.boot.kernel.as_deref().unwrap_or("?")),
        };
        let _ = writeln!(s, "   boot      {m}: {detail}");
        if let Some(why) = &r.boot.detected {
            let _ = writeln!(s, "             (told from the disk: {why})");
        }
    }
    if let Some(a) = &r.accel {
        let _ = writeln!(
            s,
            "   machine   {} {}, {} MiB, {} vCPU{}, accel {}",
            r.arch.map_or("?", |a| a.as_str()),
            r.machine.machine.as_deref().unwrap_or("?"),
            r.machine.memory_mib,
            r.machine.cpus,
            r.machine.qemu_version.as_ref().map(|v| format!(", QEMU {v}")).unwrap_or_default(),
            a
        );
        if let Some(why) = &r.accel_reason {
            let _ = writeln!(s, "             ({why})");
        }
    }
    if r.qemu.argv.is_empty() {
        // never booted
    } else {
        let n = &r.network;
        let _ = writeln!(
            s,
            "   network   {} NIC(s): {} network argument(s) to QEMU, {} network PCI device(s){}",
            n.nics,
            n.qemu_network_args.len(),
            n.pci_network_devices.len(),
            if n.pci_checked { "" } else { " (QMP device list not checked)" }
        );
    }
    if !r.milestones.is_empty() {
        let _ = writeln!(s, "   timeline  (seconds since QMP cont)");
        for m in &r.milestones {
            let mut ev = m.evidence.clone();
            if ev.chars().count() > 60 {
                ev = ev.chars().take(57).collect::<String>() + "...";
            }
            let _ = writeln!(s, "   {:>8.1}  {:<18} {ev}", m.t_s, m.name);
        }
    }
    match r.time_to_stack_s {
        Some(t) => {
            let budget = r
                .timeouts
                .time_to_stack_budget_s
                .map(|b| format!(" (budget {b:.1}s, scale x{})", r.timeouts.scale))
                .unwrap_or_default();
            let _ = writeln!(s, "   time to running stack: {t:.1}s{budget}");
        }
        None if !r.qemu.argv.is_empty() => {
            let _ = writeln!(s, "   time to running stack: never reached");
        }
        None => {}
    }
    if !r.images.is_empty() {
        let _ = writeln!(s, "   images");
        for i in &r.images {
            let mark = if i.expected && i.present {
                "ok"
            } else if i.expected {
                "!!"
            } else {
                "??"
            };
            let _ = writeln!(
                s,
                "     [{mark}] {:<28} {}{}",
                i.reference,
                i.id.as_deref().map(short_id).unwrap_or_else(|| "absent".into()),
                if i.expected { "" } else { "  (not expected)" }
            );
        }
    }
    if !r.containers.is_empty() {
        let _ = writeln!(s, "   containers");
        for c in &r.containers {
            // A compose service's container that exited 0 is a one-shot's
            // success (a long-running service's exit is a failure listed above).
            let ok = (c.state == "running" && c.health.as_deref().is_none_or(|h| h == "healthy"))
                || (c.service.is_some() && c.state == "exited" && c.exit_code == Some(0));
            let mark = if !c.expected {
                "??"
            } else if ok {
                "ok"
            } else {
                "!!"
            };
            let _ = writeln!(
                s,
                "     [{mark}] {:<12} {}{}{}",
                c.name,
                c.state,
                c.health.as_ref().map(|h| format!(" ({h})")).unwrap_or_default(),
                c.service.as_ref().map(|v| format!("  [compose service {v}]")).unwrap_or_default()
            );
        }
    }
    if !r.steps.is_empty() {
        let _ = writeln!(s, "   steps");
        for st in &r.steps {
            let _ = writeln!(s, "     {}", views::step_line(st));
        }
    }
    for u in r.units.iter().filter(|u| u.error.is_some()) {
        let e: String = u.error.as_deref().unwrap_or("").chars().take(160).collect();
        let _ = writeln!(s, "   unit      {} {}: {e}", u.name, u.state);
    }
    if !r.failures.is_empty() {
        let _ = writeln!(s, "   failures");
        for f in &r.failures {
            let _ = writeln!(s, "     {}: {}", f.code, f.message);
            if let Some(e) = &f.evidence {
                let mut e = e.clone();
                if e.chars().count() > 200 {
                    e = e.chars().take(197).collect::<String>() + "...";
                }
                let _ = writeln!(s, "       evidence: {}", e.replace('\n', "\n                 "));
            }
        }
    }
    for d in &r.diagnoses {
        let _ = writeln!(s, "   diagnosis {}{}: {}", d.code, guess(d), d.summary);
        if let Some(a) = d.ended_after_s.filter(|_| d.code.settles_run()) {
            let _ = writeln!(s, "       the run ended {a:.1}s after its first evidence");
        }
        for e in d.evidence.iter().take(2) {
            let at = e.t_s.map(|t| format!(" at {t:.1}s")).unwrap_or_default();
            let line: String = e.line.chars().take(160).collect();
            let _ = writeln!(s, "       {}{at}: {line}", e.source);
        }
        let _ = writeln!(s, "       fix: {}  (airboot explain {})", d.fix, d.code);
    }
    let _ = writeln!(s, "   report    {}", report_dir.join("report.json").display());
    if r.console.lines > 0 || report_dir.join("console.log").exists() {
        let _ = writeln!(s, "   console   {}", report_dir.join(&r.console.file).display());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_core::report::Milestone;
    use airboot_model::{Accel, Failure, FailureCode};

    #[test]
    fn summary_shows_verdict_timeline_and_failures() {
        let mut r = Report::new("demo", "demo.toml", "2026-01-01T00:00:00Z".into());
        r.verdict = Verdict::Fail;
        r.accel = Some(Accel::Tcg);
        r.accel_reason = Some("no /dev/kvm".into());
        r.qemu.argv = vec!["-S".into()];
        r.milestones.push(Milestone {
            name: "kernel".into(),
            t_s: 1.25,
            source: "console".into(),
            evidence: "Linux version 6.1".into(),
        });
        r.failures.push(Failure {
            code: FailureCode::ImageMissing,
            message: "image x:1 is not in `docker images`".into(),
            evidence: Some("status block 3".into()),
        });
        let s = summary(&r, Path::new("reports/x"));
        assert!(s.starts_with("== demo : FAIL"), "{s}");
        assert!(s.contains("     1.2  kernel"), "{s}");
        assert!(s.contains("image-missing: image x:1"), "{s}");
        assert!(s.contains("time to running stack: never reached"));
        assert!(s.contains("reports/x/report.json"));
        assert!(s.lines().count() < 40);
    }

    #[test]
    fn junit_reads_back_with_a_junit_parser() {
        let run = testdata::run();
        let xml = junit::junit(&run);
        let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        let suite = &parsed.test_suites[0];
        assert_eq!(suite.test_cases.len(), 3);
        let names: Vec<&str> = suite.test_cases.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["x86_64::preseeded-x86_64", "x86_64::missing-image-x86_64", "x86_64::egress-x86_64"]);
        // Passing, failing as declared, and not as declared.
        assert!(matches!(suite.test_cases[0].status, quick_junit::TestCaseStatus::Success { .. }));
        assert!(matches!(suite.test_cases[1].status, quick_junit::TestCaseStatus::Success { .. }));
        assert!(matches!(suite.test_cases[2].status, quick_junit::TestCaseStatus::NonSuccess { .. }));
        let props: Vec<(&str, &str)> =
            suite.test_cases[0].properties.iter().map(|p| (p.name.as_str(), p.value.as_str())).collect();
        assert!(props.contains(&("milestone.stack", "132.400")), "{props:?}");
        assert!(props.contains(&("time_to_stack_s", "132.400")));
        assert!(suite.test_cases[0].system_out.as_ref().unwrap().as_str().contains("<tag> & entity"));
        assert_eq!(suite.failures, 1);
    }

    #[test]
    fn markdown_is_short_and_names_each_outcome() {
        let md = markdown::summary_md(&testdata::run());
        assert!(md.lines().count() < 15, "{md}");
        assert!(md.contains("✅ pass") && md.contains("✅ failed as declared") && md.contains("❌ fail"), "{md}");
        assert!(md.contains("0 of 40 runs failed"), "{md}");
        assert!(md.contains("diagnosis `network-dependent-start`"), "{md}");
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let page = html::index_html(&testdata::run(), None);
        assert!(page.starts_with("<!doctype html>"));
        // The SVG namespace is a name, not something fetched.
        let fetchable = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for forbidden in ["<script", "http://", "https://", "<link", "@import", "src="] {
            assert!(!fetchable.contains(forbidden), "{forbidden} in a self-contained page");
        }
        assert_eq!(page.matches("<svg class=\"timeline\"").count(), 3);
        assert!(page.contains("&lt;evidence&gt; &amp; more"), "milestone evidence is escaped");
        assert!(!page.contains("<evidence>"));
        assert!(page.contains("href=\"preseeded-x86_64/console.log\""));
        assert!(page.contains("diagnosis <code>network-dependent-start</code>"), "diagnoses are shown");
        assert!(page.contains("lookup registry-1.docker.io &lt;no network&gt;"), "diagnosis evidence is escaped");
    }

    #[test]
    fn a_diagnosis_shows_its_evidence_and_fix_in_the_summary_and_junit() {
        let run = testdata::run();
        let r = &run.scenarios[2].report;
        let s = summary(r, Path::new("reports/x"));
        assert!(s.contains("diagnosis network-dependent-start: pull-app.service"), "{s}");
        assert!(s.contains("console at 61.5s: dial tcp"), "{s}");
        assert!(s.contains("(airboot explain network-dependent-start)"), "{s}");
        let xml = junit::junit(&run);
        assert!(xml.contains("diagnosis network-dependent-start"), "{xml}");
    }

    /// A cut campaign's report: each cut is a test case, a row, a line.
    #[test]
    fn a_campaigns_cuts_are_test_cases_table_rows_and_summary_lines() {
        use airboot_core::cut::{CutOutcome, CutPosition, PowerCut};
        let pos = CutPosition { entry: 400, writes: 363, flushes: 92, bytes_written: 1 << 20 };
        let mut ok = PowerCut::new(
            airboot_model::CutMode::LoseUnflushed,
            "sweep point 1 of 2".into(),
            pos.clone(),
            7,
            "r/cut-01-lose-unflushed".into(),
        );
        ok.outcome = Some(CutOutcome::IntactOld);
        let mut bad =
            PowerCut::new(airboot_model::CutMode::Torn, "sweep point 2 of 2".into(), pos, 8, "r/cut-02-torn".into());
        bad.outcome = Some(CutOutcome::CorruptDetected);
        bad.evidence = vec!["crash state: store corrupt <layer 7e3f>".into()];
        let mut second = bad.clone();
        bad.next_boot_diagnosis = Some(airboot_model::DiagnosisCode::StoreCorrupt);
        second.bundle = "r/cut-02-torn/recovery-cut".into();
        second.during_recovery_of = Some("r/cut-02-torn".into());
        let mut r = Report::new("cut-x", "cut-x.toml", "2026-01-01T00:00:00Z".into());
        r.verdict = Verdict::Pass;
        r.power_cuts = vec![ok, bad, second];
        let run = views::RunView {
            run_id: "cut".into(),
            started_at: "now".into(),
            scenarios: vec![views::ScenarioView {
                report: r,
                test_name: "x86_64::cut-x".into(),
                dir: ".".into(),
                declared: "every cut survives".into(),
                as_declared: Err("1 of 3 cut(s) survived".into()),
            }],
            repeats: vec![],
        };
        let parsed = quick_junit::Report::deserialize_from_str(&junit::junit(&run)).unwrap();
        let cases = &parsed.test_suites[0].test_cases;
        let names: Vec<&str> = cases.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "x86_64::cut-x",
                "x86_64::cut-x/cut-01-lose-unflushed",
                "x86_64::cut-x/cut-02-torn",
                "x86_64::cut-x/cut-02-torn/recovery-cut"
            ]
        );
        assert!(matches!(cases[1].status, quick_junit::TestCaseStatus::Success { .. }));
        match &cases[2].status {
            quick_junit::TestCaseStatus::NonSuccess { message, .. } => {
                assert!(message.as_ref().unwrap().as_str().starts_with("CORRUPT-DETECTED"), "{message:?}")
            }
            other => panic!("a corrupt cut passed: {other:?}"),
        }
        let page = html::index_html(&run, None);
        assert!(
            page.contains("<td class=\"fail\">CORRUPT-DETECTED</td>")
                && page.contains("<td class=\"pass\">INTACT-OLD</td>")
        );
        assert!(page.contains("store corrupt &lt;layer 7e3f&gt;"), "evidence is escaped");
        let md = markdown::summary_md(&run);
        assert!(md.contains("- `cut-02-torn/recovery-cut` torn at write 363: **CORRUPT-DETECTED**\n"), "{md}");
        assert!(
            md.contains("- `cut-02-torn` torn at write 363: **CORRUPT-DETECTED** (next boot: `store-corrupt`)\n"),
            "{md}"
        );
        assert!(md.contains("| ❌ cuts not as declared | every cut survives |"), "not a bare 'pass': {md}");
    }

    #[test]
    fn writes_json_atomically() {
        // Removed when dropped, even when an assertion below fails.
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let r = Report::new("demo", "demo.toml", "2026-01-01T00:00:00Z".into());
        write_report(d, &r).unwrap();
        let back: Report = serde_json::from_str(&std::fs::read_to_string(d.join("report.json")).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(!d.join("report.json.tmp").exists());
    }
}

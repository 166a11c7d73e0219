//! `junit.xml`: one test case per scenario run, milestones as properties,
//! the console tail in system-out, failures with their evidence.

use std::time::Duration;

use airboot_model::Verdict;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::views::RunView;

pub fn junit(run: &RunView) -> String {
    let mut report = Report::new("airboot");
    let mut suite = TestSuite::new("airboot.scenarios");
    suite.add_property(Property::new("run_id", run.run_id.as_str()));
    suite.add_property(Property::new("started_at", run.started_at.as_str()));
    for s in &run.scenarios {
        let r = &s.report;
        let status = match (&s.as_declared, r.verdict) {
            (Ok(()), _) => TestCaseStatus::success(),
            (Err(why), v) => {
                let kind = if v == Verdict::Error { NonSuccessKind::Error } else { NonSuccessKind::Failure };
                let mut st = TestCaseStatus::non_success(kind);
                let first = r.failures.first();
                st.set_message(first.map(|f| format!("{}: {}", f.code, f.message)).unwrap_or_else(|| why.clone()));
                st.set_type(first.map_or("outcome", |f| f.code.as_str()));
                let mut desc = format!("declared outcome: {}\n{why}\n", s.declared);
                for f in &r.failures {
                    desc.push_str(&format!("\n{}: {}", f.code, f.message));
                    if let Some(e) = &f.evidence {
                        desc.push_str(&format!("\n  evidence: {e}"));
                    }
                }
                for d in &r.diagnoses {
                    desc.push_str(&format!(
                        "\ndiagnosis {}{}: {}\n  fix: {}",
                        d.code,
                        crate::guess(d),
                        d.summary,
                        d.fix
                    ));
                }
                st.set_description(desc);
                st
            }
        };
        let mut tc = TestCase::new(s.test_name.as_str(), status);
        tc.set_classname(format!("airboot.{}", r.arch.map_or("any", |a| a.as_str())));
        tc.set_time(Duration::from_secs_f64(r.wall_s.max(0.0)));
        tc.add_property(Property::new("verdict", r.verdict.as_str()));
        tc.add_property(Property::new("declared", s.declared.as_str()));
        if let Some(t) = r.time_to_stack_s {
            tc.add_property(Property::new("time_to_stack_s", format!("{t:.3}")));
        }
        if let Some(a) = &r.accel {
            tc.add_property(Property::new("accel", a.as_str()));
        }
        if let Some(t) = &r.probe.transport {
            tc.add_property(Property::new("transport", t.as_str()));
        }
        for m in &r.milestones {
            tc.add_property(Property::new(format!("milestone.{}", m.name), format!("{:.3}", m.t_s)));
        }
        tc.add_property(Property::new("report", format!("{}/report.json", s.dir)));
        if !r.console.tail.is_empty() {
            tc.set_system_out_lossy(r.console.tail.join("\n"));
        }
        suite.add_test_case(tc);
        // A campaign's cuts, each a test case: survived, or why not.
        for c in &r.power_cuts {
            let offline = c.outcome.is_none();
            let status = if c.survived(offline) && c.error.is_none() {
                TestCaseStatus::success()
            } else {
                let kind = if c.error.is_some() { NonSuccessKind::Error } else { NonSuccessKind::Failure };
                let mut st = TestCaseStatus::non_success(kind);
                st.set_message(format!("{}: {}", c.finding(), c.error.as_deref().unwrap_or(&c.trigger)));
                st.set_type(c.finding());
                st.set_description(c.evidence.join("\n"));
                st
            };
            let mut tc = TestCase::new(format!("{}/{}", s.test_name, crate::views::cut_name(c)), status);
            tc.set_classname(format!("airboot.{}.cuts", r.arch.map_or("any", |a| a.as_str())));
            tc.add_property(Property::new("mode", c.mode.as_str()));
            tc.add_property(Property::new("finding", c.finding()));
            tc.add_property(Property::new("write", c.position.writes.to_string()));
            tc.add_property(Property::new("flush", c.position.flushes.to_string()));
            tc.add_property(Property::new("bundle", c.bundle.as_str()));
            suite.add_test_case(tc);
        }
    }
    report.add_test_suite(suite);
    report.to_string().unwrap_or_else(|e| format!("<!-- junit serialisation failed: {e} -->"))
}

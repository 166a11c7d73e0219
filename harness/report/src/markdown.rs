//! `summary.md`: short enough for a CI step summary ($GITHUB_STEP_SUMMARY).

use std::fmt::Write as _;

use airboot_model::Verdict;

use crate::views::RunView;

pub fn summary_md(run: &RunView) -> String {
    let mut s = String::new();
    let n = run.scenarios.len();
    let matched = run.scenarios.iter().filter(|x| x.as_declared.is_ok()).count();
    let _ = writeln!(
        s,
        "### airboot: {n} scenario run(s): {} passed, {} failed, {} errors ({matched} as declared)\n",
        run.count(Verdict::Pass),
        run.count(Verdict::Fail),
        run.count(Verdict::Error)
    );
    let _ = writeln!(s, "| scenario | verdict | declared | time to stack | accel | transport | first failure |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for x in &run.scenarios {
        let r = &x.report;
        let mark = match (x.as_declared.is_ok(), r.verdict) {
            (true, Verdict::Pass) => "✅ pass",
            (true, _) => "✅ failed as declared",
            // A campaign's verdict is its recording boot's; its cuts are
            // what the declaration is about.
            (false, Verdict::Pass) if !r.power_cuts.is_empty() => "❌ cuts not as declared",
            (false, Verdict::Pass) => "❌ pass (not declared)",
            (false, Verdict::Fail) => "❌ fail",
            (false, Verdict::Error) => "⚠️ error",
        };
        let first = r
            .failures
            .first()
            .map(|f| {
                let m: String = f.message.chars().take(90).collect();
                format!("`{}` {}", f.code, m.replace('|', "\\|"))
            })
            .unwrap_or_default();
        let first = match r.diagnoses.first() {
            Some(d) => format!("{first} — diagnosis `{}`{}", d.code, crate::guess(d)),
            None => first,
        };
        let _ = writeln!(
            s,
            "| `{}` | {mark} | {} | {} | {} | {} | {first} |",
            x.test_name,
            x.declared,
            r.time_to_stack_s.map(|t| format!("{t:.1} s")).unwrap_or_else(|| "—".into()),
            r.accel.map_or("—", |a| a.as_str()),
            r.probe.transport.map_or("—", |t| t.as_str()),
        );
    }
    for x in run.scenarios.iter().filter(|x| !x.report.power_cuts.is_empty()) {
        let _ = writeln!(s, "\n**Cuts of `{}`**\n", x.test_name);
        for c in &x.report.power_cuts {
            let why = c.next_boot_diagnosis.map(|d| format!(" (next boot: `{d}`)")).unwrap_or_default();
            let _ = writeln!(
                s,
                "- `{}` {} at write {}: **{}**{why}",
                crate::views::cut_name(c),
                c.mode,
                c.position.writes,
                c.finding()
            );
        }
    }
    for x in run.scenarios.iter().filter_map(|x| x.report.exploration.as_deref()) {
        s.push_str(&crate::explore::section_md(x));
    }
    if !run.repeats.is_empty() {
        let _ = writeln!(s, "\n**Repeats**\n");
        for r in &run.repeats {
            let _ = writeln!(s, "- {}", r.sentence());
        }
    }
    s
}

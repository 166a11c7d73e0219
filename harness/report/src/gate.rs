//! `airboot report`'s outputs: the regression table of the timing
//! history, and its HTML page.

use std::fmt::Write as _;

use airboot_core::history::{FigureVerdict, GateConfig, GateReport, HistoryEntry};

fn secs(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}s")).unwrap_or_else(|| "—".into())
}

/// The table: a block per key, a row per figure (before, after, change,
/// verdict and why), and the totals.
pub fn table(g: &GateReport, cfg: &GateConfig, runs: usize, history: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{runs} run(s) in {history}; baseline: median of the last {} passing run(s), at least {} needed; a regression is slower by > max({:.0}%, {:.1}s, {} × spread)",
        cfg.baseline_runs,
        cfg.min_samples,
        cfg.max_rel * 100.0,
        cfg.max_abs_s,
        cfg.noise_mads
    );
    let mut last_key = String::new();
    for r in &g.rows {
        if r.key != last_key {
            let _ = writeln!(s, "\n{}", r.key);
            let _ = writeln!(
                s,
                "  {:<22} {:>18} {:>9} {:>16}  verdict",
                "figure", "before (n, ±spread)", "after", "change"
            );
            last_key = r.key.clone();
        }
        let before = match (r.before_median, r.before_mad) {
            (Some(m), Some(d)) => format!("{m:.1}s ±{d:.1} (n={})", r.samples),
            _ => format!("— (n={})", r.samples),
        };
        let change = match (r.change_s, r.change_rel) {
            (Some(c), Some(p)) => format!("{c:+.1}s {:+.0}%", p * 100.0),
            (Some(c), None) => format!("{c:+.1}s"),
            _ => "—".into(),
        };
        let verdict = match r.verdict {
            FigureVerdict::Ok => "ok",
            FigureVerdict::Regressed => "REGRESSED",
            FigureVerdict::Improved => "improved",
            FigureVerdict::Missing => "MISSING",
            FigureVerdict::CannotJudge => "cannot judge",
        };
        let _ =
            writeln!(s, "  {:<22} {:>18} {:>9} {:>16}  {verdict}: {}", r.figure, before, secs(r.after), change, r.why);
    }
    let _ = writeln!(s, "\n{} regression(s), {} missing, {} cannot judge", g.regressions, g.missing, g.cannot_judge);
    s
}

/// A self-contained page with the history plot and the gate as JSON.
pub fn page(g: &GateReport, entries: &[HistoryEntry], ignore_image: bool) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>airboot history</title></head><body style=\"font:14px system-ui,sans-serif;margin:24px\"><h1 style=\"font-size:20px\">Time to running stack</h1>{}<pre>{}</pre></body></html>\n",
        crate::html::history_svg(entries, ignore_image),
        crate::views::esc(&serde_json::to_string_pretty(g).unwrap_or_default())
    )
}

//! `airboot report`: the timing history as a table, and the regression gate.

use std::path::PathBuf;

use airboot_core::history::{self, FigureVerdict, GateConfig};
use airboot_core::units::parse_duration;

pub struct Options {
    pub history: PathBuf,
    pub gate: bool,
    pub baseline_runs: usize,
    pub min_samples: usize,
    pub max_rel: f64,
    pub max_abs: String,
    pub noise_mads: f64,
    pub ignore_image: bool,
    pub html: Option<PathBuf>,
    pub json: bool,
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}s")).unwrap_or_else(|| "—".into())
}

pub fn report(o: Options) -> i32 {
    let text = match std::fs::read_to_string(&o.history) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read the history {}: {e} (`airboot run` appends to reports/history.jsonl by default, or to --history FILE)",
                o.history.display()
            );
            return 2;
        }
    };
    let max_abs = match parse_duration(&o.max_abs) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => {
            eprintln!("error: --max-abs: {e}");
            return 2;
        }
    };
    if o.min_samples == 0 || o.baseline_runs < o.min_samples || !(0.0..=10.0).contains(&o.max_rel) || o.noise_mads < 0.0
    {
        eprintln!("error: need 1 ≤ --min-samples ≤ --baseline-runs, 0 ≤ --max-rel ≤ 10, --noise-mads ≥ 0");
        return 2;
    }
    let (entries, errors) = history::parse(&text);
    for e in &errors {
        eprintln!("warning: {}: {e} (skipped)", o.history.display());
    }
    if entries.is_empty() {
        eprintln!("error: {} has no runs", o.history.display());
        return 2;
    }
    let cfg = GateConfig {
        baseline_runs: o.baseline_runs,
        min_samples: o.min_samples,
        max_rel: o.max_rel,
        max_abs_s: max_abs,
        noise_mads: o.noise_mads,
        ignore_image: o.ignore_image,
    };
    let g = history::gate(&entries, &cfg);
    if o.json {
        outln!("{}", serde_json::to_string_pretty(&g).unwrap_or_default());
    } else {
        outln!(
            "{} run(s) in {}; baseline: median of the last {} passing run(s), at least {} needed; a regression is slower by > max({:.0}%, {:.1}s, {} × spread)",
            entries.len(),
            o.history.display(),
            cfg.baseline_runs,
            cfg.min_samples,
            cfg.max_rel * 100.0,
            cfg.max_abs_s,
            cfg.noise_mads
        );
        let mut last_key = String::new();
        for r in &g.rows {
            if r.key != last_key {
                outln!("\n{}", r.key);
                outln!("  {:<22} {:>18} {:>9} {:>16}  verdict", "figure", "before (n, ±spread)", "after", "change");
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
            outln!("  {:<22} {:>18} {:>9} {:>16}  {verdict}: {}", r.figure, before, fmt(r.after), change, r.why);
        }
        outln!("\n{} regression(s), {} missing, {} cannot judge", g.regressions, g.missing, g.cannot_judge);
    }
    if let Some(p) = &o.html {
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>airboot history</title></head><body style=\"font:14px system-ui,sans-serif;margin:24px\"><h1 style=\"font-size:20px\">Time to running stack</h1>{}<pre>{}</pre></body></html>\n",
            airboot_report::html::history_svg(&entries, o.ignore_image),
            airboot_report::views::esc(&serde_json::to_string_pretty(&g).unwrap_or_default())
        );
        if let Err(e) = std::fs::write(p, page) {
            eprintln!("error: cannot write {}: {e}", p.display());
            return 2;
        }
    }
    if o.gate { g.exit_code() } else { 0 }
}

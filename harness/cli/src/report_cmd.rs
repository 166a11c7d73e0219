//! `airboot report`: the timing history as a table, and the regression gate.

use std::path::PathBuf;

use airboot_core::history::{self, GateConfig};
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
        airboot_report::terminal::out(&airboot_report::gate::table(
            &g,
            &cfg,
            entries.len(),
            &o.history.display().to_string(),
        ));
    }
    if let Some(p) = &o.html
        && let Err(e) = std::fs::write(p, airboot_report::gate::page(&g, &entries, o.ignore_image))
    {
        eprintln!("error: cannot write {}: {e}", p.display());
        return 2;
    }
    if o.gate { g.exit_code() } else { 0 }
}

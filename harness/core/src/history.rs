//! Timing history and the regression gate.
//!
//! Every run appends one line per scenario to a history file (JSON lines).
//! `airboot report --history FILE --gate` compares the newest run of each
//! key (scenario × image digest × arch × accel) with a baseline: the median
//! of the last N passing runs of the same key before it. A figure regresses
//! when it is slower than the baseline by more than all of: a relative
//! threshold, an absolute one, and the baseline's own noise (a multiple of
//! its median absolute deviation). With fewer than k baseline samples the
//! gate says it cannot judge instead of guessing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::{Report, Verdict};

pub const HISTORY_SCHEMA: &str = "airboot.history/v1";

/// One scenario run, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub schema: String,
    pub run_id: String,
    pub started_at: String,
    pub scenario: String,
    pub image_sha256: Option<String>,
    pub arch: Option<airboot_model::Arch>,
    pub accel: Option<airboot_model::Accel>,
    pub verdict: Verdict,
    pub time_to_stack_s: Option<f64>,
    /// Milestone name → seconds since t0.
    pub milestones: BTreeMap<String, f64>,
    pub airboot_version: String,
    /// Guests booted at once by that run (`airboot run --jobs`). Runs that
    /// shared the host are compared only with runs that shared it alike.
    #[serde(default, skip_serializing_if = "alone")]
    pub jobs: usize,
}

fn alone(n: &usize) -> bool {
    *n <= 1
}

impl HistoryEntry {
    pub fn from_report(r: &Report, run_id: &str) -> HistoryEntry {
        HistoryEntry {
            schema: HISTORY_SCHEMA.into(),
            run_id: run_id.into(),
            started_at: r.started_at.clone(),
            scenario: r.scenario.clone(),
            image_sha256: r.image.sha256_before.clone(),
            arch: r.arch,
            accel: r.accel,
            verdict: r.verdict,
            time_to_stack_s: r.time_to_stack_s,
            milestones: r.milestones.iter().map(|m| (m.name.clone(), m.t_s)).collect(),
            airboot_version: r.airboot_version.clone(),
            jobs: r.machine.jobs,
        }
    }

    /// The key runs are compared under. `ignore_image` drops the image
    /// digest, to compare successive builds of a device image.
    pub fn key(&self, ignore_image: bool) -> String {
        let digest = if ignore_image {
            "*".to_string()
        } else {
            self.image_sha256.as_deref().map(|d| d.chars().take(12).collect()).unwrap_or_else(|| "?".into())
        };
        let shared = if alone(&self.jobs) { String::new() } else { format!(" · {} at once", self.jobs) };
        format!(
            "{} · image {digest} · {} · {}{shared}",
            self.scenario,
            self.arch.map_or("?", |a| a.as_str()),
            self.accel.map_or("?", |a| a.as_str())
        )
    }
}

/// Parse a history file; bad lines are reported, not fatal.
pub fn parse(text: &str) -> (Vec<HistoryEntry>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<HistoryEntry>(l) {
            Ok(e) => out.push(e),
            Err(e) => errors.push(format!("line {}: {e}", i + 1)),
        }
    }
    (out, errors)
}

#[derive(Debug, Clone, PartialEq)]
pub struct GateConfig {
    /// Baseline: the median of this many last passing runs.
    pub baseline_runs: usize,
    /// Fewer baseline samples than this: cannot judge.
    pub min_samples: usize,
    /// A regression must exceed the baseline by this fraction…
    pub max_rel: f64,
    /// …and by this many seconds…
    pub max_abs_s: f64,
    /// …and by this many (scaled) median absolute deviations.
    pub noise_mads: f64,
    pub ignore_image: bool,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            baseline_runs: 10,
            min_samples: 5,
            max_rel: 0.15,
            max_abs_s: 5.0,
            noise_mads: 3.0,
            ignore_image: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FigureVerdict {
    Ok,
    Regressed,
    Improved,
    /// The newest run never reached this figure (the run failed).
    Missing,
    CannotJudge,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureRow {
    pub key: String,
    /// `time_to_stack` or a milestone name.
    pub figure: String,
    pub samples: usize,
    pub before_median: Option<f64>,
    /// Median absolute deviation of the baseline (spread).
    pub before_mad: Option<f64>,
    pub after: Option<f64>,
    pub change_s: Option<f64>,
    pub change_rel: Option<f64>,
    /// How much slower it may be before it counts as a regression.
    pub threshold_s: Option<f64>,
    pub verdict: FigureVerdict,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    pub rows: Vec<FigureRow>,
    pub regressions: usize,
    pub missing: usize,
    pub cannot_judge: usize,
}

impl GateReport {
    /// 1 when any figure regressed or went missing, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.regressions + self.missing > 0)
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 })
}

/// Median absolute deviation.
pub fn mad(v: &[f64]) -> Option<f64> {
    let m = median(v)?;
    median(&v.iter().map(|x| (x - m).abs()).collect::<Vec<_>>())
}

/// Judge the newest run of every key against its baseline.
pub fn gate(entries: &[HistoryEntry], cfg: &GateConfig) -> GateReport {
    let mut keys: Vec<String> = Vec::new();
    for e in entries {
        let k = e.key(cfg.ignore_image);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut rows = Vec::new();
    for key in keys {
        let runs: Vec<&HistoryEntry> = entries.iter().filter(|e| e.key(cfg.ignore_image) == key).collect();
        let (newest, earlier) = runs.split_last().expect("a key has runs");
        let baseline: Vec<&HistoryEntry> =
            earlier.iter().rev().filter(|e| e.verdict == Verdict::Pass).take(cfg.baseline_runs).copied().collect();
        let mut figures: Vec<(String, Option<f64>)> = vec![("time_to_stack".into(), newest.time_to_stack_s)];
        let mut names: Vec<&String> = baseline.iter().flat_map(|e| e.milestones.keys()).collect();
        names.extend(newest.milestones.keys());
        names.sort();
        names.dedup();
        for n in names {
            figures.push((n.clone(), newest.milestones.get(n).copied()));
        }
        for (figure, after) in figures {
            let samples: Vec<f64> = baseline
                .iter()
                .filter_map(|e| {
                    if figure == "time_to_stack" { e.time_to_stack_s } else { e.milestones.get(&figure).copied() }
                })
                .collect();
            rows.push(judge_figure(&key, &figure, &samples, after, newest.verdict, cfg));
        }
    }
    let count = |v: FigureVerdict| rows.iter().filter(|r| r.verdict == v).count();
    GateReport {
        regressions: count(FigureVerdict::Regressed),
        missing: count(FigureVerdict::Missing),
        cannot_judge: count(FigureVerdict::CannotJudge),
        rows,
    }
}

fn judge_figure(
    key: &str,
    figure: &str,
    samples: &[f64],
    after: Option<f64>,
    newest: Verdict,
    cfg: &GateConfig,
) -> FigureRow {
    let mut row = FigureRow {
        key: key.into(),
        figure: figure.into(),
        samples: samples.len(),
        before_median: median(samples),
        before_mad: mad(samples),
        after,
        change_s: None,
        change_rel: None,
        threshold_s: None,
        verdict: FigureVerdict::CannotJudge,
        why: String::new(),
    };
    let Some(after) = after else {
        if figure == "time_to_stack" {
            row.verdict = FigureVerdict::Missing;
            row.why = format!("the newest run never reached a running stack (verdict {})", newest.as_str());
        } else {
            row.why = "not reached in the newest run".into();
        }
        return row;
    };
    if samples.len() < cfg.min_samples {
        row.why = format!("not enough samples: {} passing run(s) before, {} needed", samples.len(), cfg.min_samples);
        return row;
    }
    let base = row.before_median.expect("samples are not empty");
    // 1.4826 × MAD estimates the standard deviation of normal noise.
    let noise = cfg.noise_mads * 1.4826 * row.before_mad.unwrap_or(0.0);
    let threshold = (cfg.max_rel * base).max(cfg.max_abs_s).max(noise);
    let change = after - base;
    row.change_s = Some(change);
    row.change_rel = (base > 0.0).then(|| change / base);
    row.threshold_s = Some(threshold);
    if change > threshold {
        row.verdict = FigureVerdict::Regressed;
        row.why = format!("{change:+.1}s is beyond the allowed {threshold:.1}s");
    } else if -change > threshold {
        row.verdict = FigureVerdict::Improved;
        row.why = format!("{change:+.1}s, faster by more than {threshold:.1}s");
    } else {
        row.verdict = FigureVerdict::Ok;
        row.why = format!("{change:+.1}s is within ±{threshold:.1}s");
    }
    row
}

/// Flake statistics of a scenario run `--repeat N` times.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatStats {
    pub scenario: String,
    pub runs: u64,
    /// Runs that did not end as declared.
    pub failures: u64,
    /// 95% Wilson interval of the failure rate.
    pub ci_low: f64,
    pub ci_high: f64,
}

impl RepeatStats {
    /// The statistics of `failures` bad runs out of `runs`.
    pub fn of(scenario: String, failures: u64, runs: u64) -> RepeatStats {
        let (ci_low, ci_high) = wilson95(failures, runs);
        RepeatStats { scenario, runs, failures, ci_low, ci_high }
    }

    pub fn sentence(&self) -> String {
        format!(
            "{}: {} of {} runs failed ({:.1}%, 95% CI {:.1}–{:.1}%)",
            self.scenario,
            self.failures,
            self.runs,
            100.0 * self.failures as f64 / self.runs.max(1) as f64,
            100.0 * self.ci_low,
            100.0 * self.ci_high
        )
    }
}

/// Wilson score interval (95%) for `failures` out of `runs`: the flake
/// rate's plausible range, also meaningful at 0 of N.
pub fn wilson95(failures: u64, runs: u64) -> (f64, f64) {
    if runs == 0 {
        return (0.0, 1.0);
    }
    let n = runs as f64;
    let p = failures as f64 / n;
    let z = 1.959_963_984_540_054_f64;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize, tts: Option<f64>, verdict: Verdict) -> HistoryEntry {
        let mut m = BTreeMap::new();
        if let Some(t) = tts {
            m.insert("engine".to_string(), t * 0.6);
            m.insert("stack".to_string(), t);
        }
        HistoryEntry {
            schema: HISTORY_SCHEMA.into(),
            run_id: format!("run-{i}"),
            started_at: format!("2026-11-{:02}T03:00:00Z", i % 28 + 1),
            scenario: "preseeded-x86_64".into(),
            image_sha256: Some("ab".repeat(32)),
            arch: Some(airboot_model::Arch::X86_64),
            accel: Some(airboot_model::Accel::Tcg),
            verdict,
            time_to_stack_s: tts,
            milestones: m,
            airboot_version: "0.1.0".into(),
            jobs: 0,
        }
    }

    /// A noisy but unchanged history: ±8% around 130s.
    fn noisy() -> Vec<HistoryEntry> {
        let noise = [0.0, 6.0, -9.0, 4.0, -3.0, 10.0, -7.0, 2.0, 8.0, -5.0, 1.0];
        noise.iter().enumerate().map(|(i, n)| entry(i, Some(130.0 + n), Verdict::Pass)).collect()
    }

    #[test]
    fn a_repeat_says_its_failures_with_their_interval() {
        let s = RepeatStats::of("x86_64::bad-root".into(), 0, 4).sentence();
        assert_eq!(s, "x86_64::bad-root: 0 of 4 runs failed (0.0%, 95% CI 0.0–49.0%)");
        assert!(RepeatStats::of("t".into(), 3, 10).sentence().starts_with("t: 3 of 10 runs failed (30.0%, 95% CI "));
    }

    #[test]
    fn unchanged_noisy_history_passes() {
        let g = gate(&noisy(), &GateConfig::default());
        assert_eq!(g.exit_code(), 0, "{:#?}", g.rows);
        assert_eq!(g.regressions, 0);
        let tts = g.rows.iter().find(|r| r.figure == "time_to_stack").unwrap();
        assert_eq!(tts.verdict, FigureVerdict::Ok);
        assert_eq!(tts.samples, 10);
        assert!(tts.before_mad.unwrap() > 0.0, "the spread is reported");
    }

    #[test]
    fn a_clearly_slower_newest_run_fails_the_gate() {
        let mut h = noisy();
        h.push(entry(99, Some(190.0), Verdict::Pass));
        let g = gate(&h, &GateConfig::default());
        assert_eq!(g.exit_code(), 1);
        let tts = g.rows.iter().find(|r| r.figure == "time_to_stack").unwrap();
        assert_eq!(tts.verdict, FigureVerdict::Regressed, "{tts:?}");
        assert!(tts.change_s.unwrap() > 50.0);
        // The milestone that moved is named too.
        assert!(g.rows.iter().any(|r| r.figure == "engine" && r.verdict == FigureVerdict::Regressed));
        // Faster is reported, never failed.
        let mut h = noisy();
        h.push(entry(99, Some(80.0), Verdict::Pass));
        let g = gate(&h, &GateConfig::default());
        assert_eq!(g.exit_code(), 0);
        assert!(g.rows.iter().any(|r| r.verdict == FigureVerdict::Improved));
    }

    #[test]
    fn too_few_samples_cannot_be_judged() {
        let h: Vec<_> = (0..4)
            .map(|i| entry(i, Some(130.0), Verdict::Pass))
            .chain([entry(9, Some(400.0), Verdict::Pass)])
            .collect();
        let g = gate(&h, &GateConfig::default());
        assert_eq!(g.exit_code(), 0);
        let tts = g.rows.iter().find(|r| r.figure == "time_to_stack").unwrap();
        assert_eq!(tts.verdict, FigureVerdict::CannotJudge);
        assert!(tts.why.contains("not enough samples: 4"), "{}", tts.why);
    }

    #[test]
    fn failed_runs_are_not_baseline_and_a_failed_newest_run_is_flagged() {
        let mut h = noisy();
        // A failed run in the middle with a wild time does not move the baseline.
        h.insert(5, entry(50, Some(999.0), Verdict::Fail));
        assert_eq!(gate(&h, &GateConfig::default()).exit_code(), 0);
        h.push(entry(100, None, Verdict::Fail));
        let g = gate(&h, &GateConfig::default());
        assert_eq!(g.missing, 1);
        assert_eq!(g.exit_code(), 1);
    }

    #[test]
    fn runs_that_shared_the_host_are_judged_apart_from_runs_alone() {
        let mut h = noisy();
        // A slow run that booted beside another guest: not a regression of
        // the runs alone, and no history of its own yet.
        let mut shared = entry(100, Some(200.0), Verdict::Pass);
        shared.jobs = 2;
        assert!(shared.key(false).ends_with(" · 2 at once"), "{}", shared.key(false));
        h.push(shared);
        let g = gate(&h, &GateConfig::default());
        assert_eq!(g.exit_code(), 0);
        assert!(g.rows.iter().any(|r| r.verdict == FigureVerdict::CannotJudge));
        // The same slow run alone regresses.
        h.last_mut().unwrap().jobs = 1;
        assert_eq!(gate(&h, &GateConfig::default()).exit_code(), 1);
        // Old history lines, without the field, read as alone; alone is not written.
        let line = serde_json::to_string(&h[0]).unwrap();
        assert!(!line.contains("jobs"), "{line}");
        let back: HistoryEntry = serde_json::from_str(&line).unwrap();
        assert_eq!(back.key(false), h[0].key(false));
    }

    #[test]
    fn keys_separate_images_unless_told_not_to() {
        let mut h = noisy();
        let mut other = entry(100, Some(200.0), Verdict::Pass);
        other.image_sha256 = Some("cd".repeat(32));
        h.push(other);
        // Keyed by digest: the new image has no history of its own.
        let g = gate(&h, &GateConfig::default());
        assert_eq!(g.exit_code(), 0);
        assert!(g.rows.iter().any(|r| r.verdict == FigureVerdict::CannotJudge));
        // Comparing builds: the new image is judged against the old ones.
        let g = gate(&h, &GateConfig { ignore_image: true, ..Default::default() });
        assert_eq!(g.exit_code(), 1);
    }

    #[test]
    fn history_lines_round_trip_and_bad_lines_are_named() {
        let e = entry(1, Some(1.0), Verdict::Pass);
        let text = format!("{}\nnot json\n\n", serde_json::to_string(&e).unwrap());
        let (v, errors) = parse(&text);
        assert_eq!(v, [e]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("line 2"));
    }

    #[test]
    fn medians_and_wilson() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(mad(&[1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]), Some(1.0));
        let (lo, hi) = wilson95(0, 40);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.0876).abs() < 0.001, "{hi}");
        let (lo, hi) = wilson95(5, 10);
        assert!((lo - 0.237).abs() < 0.001 && (hi - 0.763).abs() < 0.001, "{lo} {hi}");
        assert_eq!(wilson95(0, 0), (0.0, 1.0));
    }
}

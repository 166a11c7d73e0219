//! `index.html`: a self-contained page (no network fetches: inline CSS and
//! SVG only) with the verdict table, an SVG timeline of each scenario's
//! milestones, power-cut outcomes when there are any, links to the console
//! logs, and the timing history when one is given.

use std::fmt::Write as _;

use airboot_core::history::HistoryEntry;
use airboot_core::report::Report;
use airboot_model::Verdict;

use crate::views::{RunView, esc};

const CSS: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2329;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 6px} .muted{color:#667}
table{border-collapse:collapse;margin:8px 0} td,th{border-bottom:1px solid #dde;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f4f6f8} .pass{color:#0a7d32;font-weight:600} .fail{color:#b3261e;font-weight:600} .error{color:#9a6700;font-weight:600}
.box{border:1px solid #dde;border-radius:6px;padding:10px 14px;margin:10px 0} code{background:#f4f6f8;padding:0 3px;border-radius:3px}
svg text{font:11px system-ui,sans-serif;fill:#1d2329} .ev{color:#556;font-size:12px}
";

/// Phases of a boot, in order, with their colours: the band between two
/// known milestones is coloured by the later one.
const PHASES: &[(&str, &str, &str)] = &[
    ("firmware", "#e2e2e2", "power-on → UEFI firmware starts the loader"),
    ("loader", "#d6dce6", "boot loader → kernel EFI stub"),
    ("kernel", "#c9d6ea", "→ kernel banner (firmware / loader when not shown apart)"),
    ("init", "#9fb8dd", "kernel"),
    ("engine", "#7fa7d8", "init → engine"),
    ("images", "#f0c987", "engine → images"),
    ("stack", "#8fd19e", "containers → stack ready"),
];

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Error => "error",
    }
}

/// The SVG timeline of one report: a phase band on top, then one row per
/// milestone with its time.
pub fn timeline_svg(r: &Report) -> String {
    let ms = &r.milestones;
    let end = ms.iter().map(|m| m.t_s).fold(r.time_to_stack_s.unwrap_or(0.0), f64::max).max(1.0) * 1.05;
    let (left, width, row) = (170.0, 640.0, 18.0);
    let x = |t: f64| left + width * (t / end).clamp(0.0, 1.0);
    let height = 60.0 + row * ms.len() as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="timeline of {name}">"##,
        w = left + width + 60.0,
        name = esc(&r.scenario)
    );
    // Phase band.
    let mut prev = 0.0;
    for (name, colour, label) in PHASES {
        if let Some(m) = ms.iter().find(|m| m.name == *name) {
            let (x0, x1) = (x(prev), x(m.t_s.max(prev)));
            let _ = write!(
                s,
                r##"<rect x="{x0:.1}" y="8" width="{:.1}" height="16" fill="{colour}"><title>{label}: {prev:.1}s → {:.1}s</title></rect>"##,
                (x1 - x0).max(0.5),
                m.t_s
            );
            prev = m.t_s.max(prev);
        }
    }
    let _ = write!(s, r##"<text x="4" y="20">phases</text>"##);
    // Axis.
    let _ = write!(s, r##"<line x1="{left}" y1="34" x2="{}" y2="34" stroke="#889"/>"##, left + width);
    let step =
        [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0].into_iter().find(|st| end / st <= 10.0).unwrap_or(600.0);
    let mut t = 0.0;
    while t <= end {
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" y1="31" x2="{0:.1}" y2="37" stroke="#889"/><text x="{0:.1}" y="48" text-anchor="middle">{t:.0}s</text>"##,
            x(t)
        );
        t += step;
    }
    // One row per milestone.
    for (i, m) in ms.iter().enumerate() {
        let y = 62.0 + row * i as f64;
        let colour = if m.source == "guest" {
            "#2b6cb0"
        } else if m.source == "console" {
            "#444"
        } else {
            "#7b3fa0"
        };
        let _ = write!(
            s,
            r##"<text x="4" y="{ty:.1}">{name}</text><line x1="{left}" y1="{y:.1}" x2="{xm:.1}" y2="{y:.1}" stroke="#dde"/><circle cx="{xm:.1}" cy="{y:.1}" r="4" fill="{colour}"><title>{name} at {t:.1}s ({src}): {ev}</title></circle><text x="{tx:.1}" y="{ty:.1}">{t:.1}s</text>"##,
            ty = y + 4.0,
            name = esc(&m.name),
            xm = x(m.t_s),
            t = m.t_s,
            src = esc(&m.source),
            ev = esc(&m.evidence),
            tx = x(m.t_s) + 8.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// A line chart of time-to-stack over the history, one line per key.
pub fn history_svg(entries: &[HistoryEntry], ignore_image: bool) -> String {
    let mut keys: Vec<String> = Vec::new();
    for e in entries {
        let k = e.key(ignore_image);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let max = entries.iter().filter_map(|e| e.time_to_stack_s).fold(1.0, f64::max) * 1.1;
    let n = entries.len().max(2) as f64;
    let (left, width, top, height) = (50.0, 700.0, 10.0, 180.0);
    let x = |i: usize| left + width * i as f64 / (n - 1.0);
    let y = |t: f64| top + height * (1.0 - t / max);
    let palette = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b"];
    let mut s = String::new();
    let legend_h = 16.0 * keys.len() as f64;
    let _ = write!(
        s,
        r##"<svg class="history" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="time to stack history">"##,
        w = left + width + 20.0,
        h = top + height + 30.0 + legend_h
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#889"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#889"/>"##,
        b = top + height,
        r = left + width
    );
    for frac in [0.0, 0.5, 1.0] {
        let t = max * frac;
        let _ = write!(s, r##"<text x="{}" y="{:.1}" text-anchor="end">{t:.0}s</text>"##, left - 4.0, y(t) + 4.0);
    }
    for (ki, key) in keys.iter().enumerate() {
        let colour = palette[ki % palette.len()];
        let pts: Vec<(usize, &HistoryEntry)> =
            entries.iter().enumerate().filter(|(_, e)| &e.key(ignore_image) == key).collect();
        let line: Vec<String> =
            pts.iter().filter_map(|(i, e)| e.time_to_stack_s.map(|t| format!("{:.1},{:.1}", x(*i), y(t)))).collect();
        if line.len() > 1 {
            let _ = write!(
                s,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"##,
                line.join(" ")
            );
        }
        for (i, e) in &pts {
            let (cy, fill) = match e.time_to_stack_s {
                Some(t) if e.verdict == Verdict::Pass => (y(t), colour),
                Some(t) => (y(t), "#b3261e"),
                None => (top + height, "#b3261e"),
            };
            let _ = write!(
                s,
                r##"<circle cx="{:.1}" cy="{cy:.1}" r="3" fill="{fill}"><title>{} {}: {} ({})</title></circle>"##,
                x(*i),
                esc(&e.started_at),
                esc(&e.scenario),
                e.time_to_stack_s.map(|t| format!("{t:.1}s")).unwrap_or_else(|| "no stack".into()),
                e.verdict.as_str()
            );
        }
        let ly = top + height + 26.0 + 16.0 * ki as f64;
        let _ = write!(
            s,
            r##"<rect x="{left}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{}" y="{ly:.1}">{}</text>"##,
            ly - 9.0,
            left + 16.0,
            esc(key)
        );
    }
    s.push_str("</svg>");
    s
}

pub fn index_html(run: &RunView, history: Option<(&[HistoryEntry], bool)>) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>airboot {id}</title><style>{CSS}</style></head><body>",
        id = esc(&run.run_id)
    );
    let _ = write!(
        s,
        "<h1>airboot run {}</h1><div class=\"muted\">started {} · {} scenario run(s): {} passed, {} failed, {} errors</div>",
        esc(&run.run_id),
        esc(&run.started_at),
        run.scenarios.len(),
        run.count(Verdict::Pass),
        run.count(Verdict::Fail),
        run.count(Verdict::Error)
    );
    s.push_str("<table class=\"verdicts\"><tr><th>scenario</th><th>verdict</th><th>declared</th><th>time to stack</th><th>accel</th><th>transport</th><th>first failure</th><th>logs</th></tr>");
    for (i, x) in run.scenarios.iter().enumerate() {
        let r = &x.report;
        let first = r
            .failures
            .first()
            .map(|f| format!("<code>{}</code> {}", esc(&f.code), esc(&f.message)))
            .unwrap_or_default();
        let _ = write!(
            s,
            "<tr><td><a href=\"#s{i}\">{}</a></td><td class=\"{}\">{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{first}</td><td><a href=\"{dir}/report.json\">report.json</a> · <a href=\"{dir}/console.log\">console.log</a></td></tr>",
            esc(&x.test_name),
            verdict_class(r.verdict),
            r.verdict.as_str(),
            esc(&x.declared),
            if x.as_declared.is_ok() { " ✓" } else { " ✗" },
            r.time_to_stack_s.map(|t| format!("{t:.1} s")).unwrap_or_else(|| "—".into()),
            esc(r.accel.map_or("—", |a| a.as_str())),
            esc(r.probe.transport.map_or("—", |t| t.as_str())),
            dir = esc(&x.dir),
        );
    }
    s.push_str("</table>");
    if !run.repeats.is_empty() {
        s.push_str("<h2>Repeats</h2><ul>");
        for r in &run.repeats {
            let _ = write!(s, "<li>{}</li>", esc(&r.sentence()));
        }
        s.push_str("</ul>");
    }
    for (i, x) in run.scenarios.iter().enumerate() {
        let r = &x.report;
        let mut sub: Vec<String> = Vec::new();
        if let Some(d) = r.description.as_deref().filter(|d| !d.is_empty()) {
            sub.push(esc(d));
        }
        if let Some(a) = &r.accel {
            match r.accel_reason.as_deref().filter(|x| !x.is_empty()) {
                Some(why) => sub.push(format!("accel {} ({})", esc(a), esc(why))),
                None => sub.push(format!("accel {}", esc(a))),
            }
        }
        if let Some(t) = &r.probe.transport {
            sub.push(format!("transport {}", esc(t)));
        }
        let _ = write!(
            s,
            "<h2 id=\"s{i}\">{} <span class=\"{}\">{}</span></h2><div class=\"muted\">{}</div>",
            esc(&x.test_name),
            verdict_class(r.verdict),
            r.verdict.as_str(),
            sub.join(" · ")
        );
        s.push_str("<div class=\"box\">");
        s.push_str(&timeline_svg(r));
        s.push_str("</div>");
        if !r.failures.is_empty() {
            s.push_str("<ul>");
            for f in &r.failures {
                let _ = write!(
                    s,
                    "<li><code>{}</code> {}{}</li>",
                    esc(&f.code),
                    esc(&f.message),
                    f.evidence.as_ref().map(|e| format!("<div class=\"ev\">{}</div>", esc(e))).unwrap_or_default()
                );
            }
            s.push_str("</ul>");
        }
        if !r.steps.is_empty() {
            s.push_str("<p>steps</p><ul>");
            for st in &r.steps {
                let _ = write!(s, "<li>{}</li>", esc(&crate::views::step_line(st)));
            }
            s.push_str("</ul>");
        }
        for d in &r.diagnoses {
            let ev: Vec<String> = d
                .evidence
                .iter()
                .map(|e| {
                    format!("{}{}: {}", e.source, e.t_s.map(|t| format!(" at {t:.1}s")).unwrap_or_default(), e.line)
                })
                .collect();
            let _ = write!(
                s,
                "<p><b>diagnosis <code>{}</code>{}</b>: {}<div class=\"ev\">{}</div><div>fix: {}</div></p>",
                esc(d.code.as_str()),
                esc(crate::guess(d)),
                esc(&d.summary),
                esc(&ev.join("\n")),
                esc(&d.fix)
            );
        }
        if !r.power_cuts.is_empty() {
            s.push_str("<table><tr><th>cut</th><th>mode</th><th>write / flush</th><th>lost</th><th>finding</th><th>evidence</th></tr>");
            for c in &r.power_cuts {
                let class = if c.survived(c.outcome.is_none()) { "pass" } else { "fail" };
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{} / {}</td><td>{} write(s), {} torn</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
                    esc(&crate::views::cut_name(c)),
                    esc(&c.mode),
                    c.position.writes,
                    c.position.flushes,
                    c.lost_writes,
                    c.torn_writes,
                    esc(&c.finding()),
                    esc(&c.evidence.first().cloned().or_else(|| c.error.clone()).unwrap_or_default()),
                );
            }
            s.push_str("</table>");
        }
        if let Some(x) = &r.exploration {
            s.push_str(&crate::explore::section_html(x));
        }
        if !r.image_runs.is_empty() || r.airgap.checked {
            s.push_str("<table><tr><th>check</th><th>result</th></tr>");
            for run in &r.image_runs {
                let _ = write!(
                    s,
                    "<tr><td>run {} with no network</td><td class=\"{}\">{}</td></tr>",
                    esc(&run.reference),
                    if run.ran { "pass" } else { "fail" },
                    esc(&run.detail)
                );
            }
            if r.airgap.checked {
                let _ = write!(
                    s,
                    "<tr><td>air gap (guest)</td><td>{} NIC(s), {} route(s), default route: {}, {} egress attempt(s)</td></tr>",
                    r.airgap.nics,
                    r.airgap.routes.len(),
                    r.airgap.default_route,
                    r.airgap.egress_attempts.len()
                );
            }
            s.push_str("</table>");
        }
    }
    if let Some((entries, ignore_image)) = history
        && !entries.is_empty()
    {
        s.push_str("<h2>Time to running stack, history</h2><div class=\"box\">");
        s.push_str(&history_svg(entries, ignore_image));
        s.push_str("</div>");
    }
    s.push_str("</body></html>\n");
    s
}

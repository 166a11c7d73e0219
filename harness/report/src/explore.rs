//! An exploration (`points = "all"`) rendered: the state map (cut point
//! against mode and draw, coloured by outcome) and the class table, for
//! index.html; a short section for summary.md.

use std::fmt::Write;

use airboot_core::cut::explore::{Exploration, ExploredState};

use crate::views::esc;

/// Did the state survive: `Some(true/false)` from its outcome (or, with
/// none, from its offline findings), `None` when it was not judged.
fn survived(s: &ExploredState) -> Option<bool> {
    match s.outcome {
        Some(o) => Some(o.survived()),
        None => s.fs_clean.map(|c| c && matches!(s.store.as_deref(), Some("new" | "old"))),
    }
}

/// The state map: one column per cut point (log order), one row per mode
/// and draw; green survived, red did not, paler when inherited from the
/// class's representative, grey not judged. Each cell's tooltip names the
/// state, its class and its fingerprint.
pub fn state_map_svg(x: &Exploration) -> String {
    let mut points: Vec<usize> = x.states.iter().map(|s| s.entry).collect();
    points.sort_unstable();
    points.dedup();
    let mut rows: Vec<(String, usize)> = x.states.iter().map(|s| (s.mode.as_str().to_string(), s.variant)).collect();
    rows.sort();
    rows.dedup();
    let (cw, ch, left, top) = (8usize, 10usize, 150usize, 20usize);
    let w = left + cw * points.len().max(1) + 10;
    let h = top + ch * rows.len().max(1) + 24;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"10\">"
    );
    let _ = write!(s, "<text x=\"{left}\" y=\"12\">cut point (log order) →</text>");
    for (r, (mode, draw)) in rows.iter().enumerate() {
        let _ = write!(s, "<text x=\"4\" y=\"{}\">{mode} #{draw}</text>", top + r * ch + 8);
    }
    for st in &x.states {
        let (Ok(c), Ok(r)) =
            (points.binary_search(&st.entry), rows.binary_search(&(st.mode.as_str().to_string(), st.variant)))
        else {
            continue;
        };
        let (fill, opacity) = match survived(st) {
            None => ("#bbb", 1.0),
            Some(true) => ("#2a2", if st.inherited { 0.45 } else { 1.0 }),
            Some(false) => ("#d22", if st.inherited { 0.45 } else { 1.0 }),
        };
        let what = st.outcome.map(|o| o.as_str().to_string()).unwrap_or_else(|| {
            st.error.clone().unwrap_or_else(|| format!("offline: store {}", st.store.as_deref().unwrap_or("?")))
        });
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" fill-opacity=\"{opacity}\"><title>state {} — {} {} #{}: {}{}{}\n{}</title></rect>",
            left + c * cw,
            top + r * ch,
            cw - 1,
            ch - 1,
            st.index,
            esc(&st.point),
            st.mode.as_str(),
            st.variant,
            esc(&what),
            if st.inherited { " (inherited)" } else { "" },
            st.class.map(|k| format!(", class {}", k + 1)).unwrap_or_default(),
            esc(&st.fingerprint),
        );
    }
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{}\">green survived, red did not, pale: inherited from its class, grey: not judged</text></svg>",
        h - 6
    );
    s
}

/// The exploration's section of index.html.
pub fn section_html(x: &Exploration) -> String {
    let mut s = format!(
        "<h3>Exploration: {}</h3><p>{} point(s) {}; {} distinct state(s) judged offline in {:.1}s ({:.1}/s, {} worker(s), working copies in {}); {} cross-checked from scratch{}.</p><div class=\"box\">",
        esc(&x.headline),
        x.tally.points,
        esc(&x.placed),
        x.tally.judged_offline,
        x.judge_s,
        x.states_per_s,
        x.jobs,
        esc(&x.scratch),
        x.cross_checked,
        if x.cross_check_mismatches.is_empty() {
            ", all agreeing".to_string()
        } else {
            format!(", {} DIFFERED", x.cross_check_mismatches.len())
        },
    );
    if x.boot_jobs > 0 {
        s.push_str(&format!("<p>{}.</p>", esc(&boots_line(x))));
    }
    s.push_str(&state_map_svg(x));
    s.push_str("</div><table><tr><th>class</th><th>states</th><th>fingerprint</th><th>representative</th><th>outcome</th><th>sampled</th></tr>");
    for (k, c) in x.classes.iter().enumerate() {
        let sampled: Vec<String> =
            c.sampled.iter().map(|(i, o)| format!("state {i}: {}", o.map_or("—", |o| o.as_str()))).collect();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>state {}{}</td><td>{}</td><td>{}</td></tr>",
            k + 1,
            c.members.len(),
            esc(&c.fingerprint),
            c.representative,
            c.bundle.as_deref().map(|b| format!(" ({})", esc(b))).unwrap_or_default(),
            c.outcome.map_or("—", |o| o.as_str()),
            esc(&sampled.join(", ")),
        );
    }
    s.push_str("</table>");
    s
}

/// How the states were powered on: how many, how long, how many at once.
pub fn boots_line(x: &Exploration) -> String {
    // The reason starts with the number (merged shards have none).
    let at_once = if x.boot_jobs_why.is_empty() { format!("{} at once", x.boot_jobs) } else { x.boot_jobs_why.clone() };
    format!(
        "{} state(s) powered on in {:.0}s, {at_once}: {:.0} boots per hour",
        x.tally.powered_on,
        x.boot_s,
        x.tally.powered_on as f64 * 3600.0 / x.boot_s.max(1e-9)
    )
}

/// The exploration's lines in summary.md.
pub fn section_md(x: &Exploration) -> String {
    let mut s = format!("\n**Exploration**: {}\n\n", x.headline);
    if x.boot_jobs > 0 {
        let _ = writeln!(s, "{}.\n", boots_line(x));
    }
    for (k, c) in x.classes.iter().enumerate() {
        let _ = writeln!(
            s,
            "- class {}: {} state(s), {}: `{}`",
            k + 1,
            c.members.len(),
            c.outcome.map_or("not powered on", |o| o.as_str()),
            c.fingerprint
        );
    }
    if x.tally.sampled > 0 {
        let _ = writeln!(
            s,
            "- sampled members: {} of {} differed from their representative",
            x.tally.sample_mismatches, x.tally.sampled
        );
    }
    s
}

//! What the run-level renderers (JUnit, HTML, Markdown) are given.

pub use airboot_core::history::RepeatStats;
use airboot_core::report::Report;
use airboot_model::Verdict;

/// One scenario run in a run folder.
#[derive(Debug, Clone)]
pub struct ScenarioView {
    pub report: Report,
    /// `<arch>::<name>` (with `#N` for a repetition).
    pub test_name: String,
    /// Folder of its report.json, relative to the run folder.
    pub dir: String,
    /// The scenario's declared outcome ("pass", "fail (image-missing)") and
    /// whether the run matched it.
    pub declared: String,
    pub as_declared: Result<(), String>,
}

/// A whole `airboot run`.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run_id: String,
    pub started_at: String,
    pub scenarios: Vec<ScenarioView>,
    pub repeats: Vec<RepeatStats>,
}

impl RunView {
    pub fn count(&self, v: Verdict) -> usize {
        self.scenarios.iter().filter(|s| s.report.verdict == v).count()
    }
}

/// A cut's short name: its bundle's folder (`cut-03-lose-unflushed`, or
/// `cut-03-lose-unflushed/recovery-cut` for a second cut).
pub fn cut_name(c: &airboot_core::cut::PowerCut) -> String {
    let p = std::path::Path::new(&c.bundle);
    let last = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match &c.during_recovery_of {
        Some(first) => format!("{}/{}", last(std::path::Path::new(first)), last(p)),
        None => last(p),
    }
}

/// Escape text for XML/HTML.
pub fn esc(s: &(impl AsRef<str> + ?Sized)) -> String {
    let s = s.as_ref();
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

/// One `[[step]]` in a line: what, whether it worked, and the boot after
/// it in brief.
pub fn step_line(r: &airboot_core::report::StepRecord) -> String {
    let mut s = format!("{} ({}): {} — {}", r.name, r.action, if r.ok { "ok" } else { "FAILED" }, r.detail);
    if let Some(n) = &r.next_boot {
        s.push_str(&format!("; the boot after it: {}", n.verdict.as_str().to_uppercase()));
        if let Some(t) = n.time_to_stack_s {
            s.push_str(&format!(", stack in {t:.1}s"));
        }
        s.push_str(&format!(", {} image load(s)", n.image_loads));
        if let Some(l) = n.load_s {
            s.push_str(&format!(" over {l:.1}s"));
        }
        if let Some(g) = n.store_growth_bytes {
            s.push_str(&format!(", store {}", airboot_core::units::signed_bytes(g)));
        }
        s.push_str(&format!(" (report in {}/)", n.dir));
    }
    s
}

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

//! Serial console handling: bytes → bounded lines → milestone and
//! fail-fast matches.
//!
//! Memory stays bounded whatever the guest prints: a line longer than the
//! splitter's limit is cut (the rest up to the newline is dropped and the
//! line is flagged), and the tail of recent lines kept for evidence is a
//! ring of fixed size.

use std::collections::VecDeque;

use airboot_model::FailureCode;
use regex::{Regex, RegexSet};

/// One console line, stamped with host time since t0 (the QMP `cont`).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedLine {
    pub t: f64,
    /// The line with ANSI escape sequences and control characters removed.
    pub text: String,
    /// The guest printed more than the splitter keeps per line.
    pub truncated: bool,
}

/// Splits a byte stream into lines of at most `max` bytes. `\n`, `\r\n`
/// and a lone `\r` all end a line (progress bars redraw with `\r`).
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    dropping: bool,
    last_cr: bool,
}

/// A line as split, before cleaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        assert!(max > 0);
        LineSplitter { buf: Vec::new(), max, dropping: false, last_cr: false }
    }

    /// Feed bytes; complete lines are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<RawLine>) {
        for &b in bytes {
            match b {
                // "\r\n" (and the "\r\r\n" a tty makes of it): the "\r" ended the line.
                b'\n' if self.last_cr => {
                    self.last_cr = false;
                    continue;
                }
                b'\n' | b'\r' => {
                    // A "\r" with nothing before it starts no empty line.
                    if b == b'\n' || !self.buf.is_empty() || self.dropping {
                        out.push(RawLine { bytes: std::mem::take(&mut self.buf), truncated: self.dropping });
                        self.dropping = false;
                    }
                    self.last_cr = b == b'\r';
                    continue;
                }
                _ => self.last_cr = false,
            }
            if self.buf.len() >= self.max {
                self.dropping = true;
                continue;
            }
            self.buf.push(b);
        }
    }

    /// The unterminated last line, if any (at end of stream).
    pub fn finish(&mut self) -> Option<RawLine> {
        if self.buf.is_empty() && !self.dropping {
            return None;
        }
        let l = RawLine { bytes: std::mem::take(&mut self.buf), truncated: self.dropping };
        self.dropping = false;
        Some(l)
    }

    /// The unfinished line so far, left in place. A prompt (`Shell> `, a
    /// login prompt) never ends its line: callers scan this once the guest
    /// has gone quiet.
    pub fn peek(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes currently held for an unfinished line (never above `max`).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Remove ANSI escape sequences (CSI, the strings OSC, DCS, SOS, PM and
/// APC up to their BEL or ST terminator, two-byte ESC sequences) and
/// control characters except tab, the C1 controls of the decoded text
/// among them (U+0080–U+009F: `\u{9b}` is an 8-bit CSI a terminal
/// obeys); decode as UTF-8 with replacement.
pub fn clean_line(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == 0x1b {
            i += 1;
            match bytes.get(i) {
                Some(b'[') => {
                    i += 1;
                    while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                        i += 1;
                    }
                    i += 1;
                }
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ESC \.
                Some(b']' | b'P' | b'X' | b'^' | b'_') => {
                    i += 1;
                    while i < bytes.len() {
                        if bytes[i] == 0x07 {
                            i += 1;
                            break;
                        }
                        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'\\') {
                            i += 2;
                            break;
                        }
                        i += 1;
                    }
                }
                Some(_) => i += 1,
                None => {}
            }
            continue;
        }
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            i += 1;
            continue;
        }
        out.push(b);
        i += 1;
    }
    let text = String::from_utf8_lossy(&out);
    if text.chars().any(|c| c.is_control() && c != '\t') {
        text.chars().filter(|c| !c.is_control() || *c == '\t').collect()
    } else {
        text.into_owned()
    }
}

/// A fail-fast pattern: a console line that means the run cannot succeed.
#[derive(Debug, Clone)]
pub struct FailPattern {
    /// Failure code in the report.
    pub code: FailureCode,
    pub regex: String,
    /// What the match means, for the report.
    pub meaning: String,
}

/// Fail-fast patterns every run checks unless the scenario turns them off.
pub fn default_fail_patterns() -> Vec<FailPattern> {
    let p = |code: FailureCode, regex: &str, meaning: &str| FailPattern {
        code,
        regex: regex.into(),
        meaning: meaning.into(),
    };
    vec![
        p(FailureCode::KernelPanic, r"Kernel panic - not syncing", "the guest kernel panicked"),
        p(
            FailureCode::EmergencyMode,
            r"You are in emergency mode|Entering emergency mode|Give root password for maintenance",
            "systemd dropped to emergency mode (often: a filesystem in fstab failed to mount)",
        ),
        p(
            FailureCode::UefiShell,
            r"^\s*Shell> ?$",
            "no bootable loader found: the firmware dropped to the UEFI shell (no EFI/BOOT/BOOT<ARCH>.EFI for this architecture on an EFI system partition, or the loader failed)",
        ),
        p(
            FailureCode::InitramfsShell,
            r"Dropping to a shell|airboot-initramfs: FATAL|Unable to mount root fs",
            "the initramfs could not mount the root filesystem",
        ),
        p(FailureCode::Oom, r"Out of memory: Killed process", "the guest ran out of memory"),
    ]
}

/// Compiled console rules: milestone regexes and fail-fast regexes.
#[derive(Debug, Clone)]
pub struct ConsoleRules {
    milestone_names: Vec<String>,
    milestones: RegexSet,
    fails: Vec<FailPattern>,
    fail_set: RegexSet,
}

/// What one line matched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LineMatches {
    /// Indexes into the milestone list.
    pub milestones: Vec<usize>,
    /// The first fail pattern that matched.
    pub fail: Option<usize>,
}

impl ConsoleRules {
    /// `milestones` are (name, regex) pairs; regexes must already be valid
    /// (scenario parsing checks them).
    pub fn new(milestones: &[(String, String)], fails: Vec<FailPattern>) -> Result<Self, regex::Error> {
        Ok(ConsoleRules {
            milestone_names: milestones.iter().map(|(n, _)| n.clone()).collect(),
            milestones: RegexSet::new(milestones.iter().map(|(_, r)| r.as_str()))?,
            fail_set: RegexSet::new(fails.iter().map(|f| f.regex.as_str()))?,
            fails,
        })
    }

    pub fn scan(&self, line: &str) -> LineMatches {
        LineMatches {
            milestones: self.milestones.matches(line).into_iter().collect(),
            fail: self.fail_set.matches(line).into_iter().next(),
        }
    }

    pub fn milestone_name(&self, i: usize) -> &str {
        &self.milestone_names[i]
    }

    pub fn fail_pattern(&self, i: usize) -> &FailPattern {
        &self.fails[i]
    }

    /// Check a regex compiles (for callers building rules from user input).
    pub fn check(regex: &str) -> Result<(), regex::Error> {
        Regex::new(regex).map(|_| ())
    }
}

/// The last `cap` lines, for evidence and the report's console tail.
#[derive(Debug)]
pub struct Tail {
    lines: VecDeque<TimedLine>,
    cap: usize,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail { lines: VecDeque::with_capacity(cap.min(1024)), cap }
    }
    pub fn push(&mut self, l: TimedLine) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(l);
    }
    pub fn last(&self, n: usize) -> Vec<TimedLine> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
    pub fn len(&self) -> usize {
        self.lines.len()
    }
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Format a line the way `console.log` stores it: `[+  12.345s] text`.
pub fn format_log_line(l: &TimedLine) -> String {
    format!("[+{:>8.3}s] {}{}\n", l.t, l.text, if l.truncated { " [airboot: line truncated]" } else { "" })
}

/// Read back a line [`format_log_line`] wrote; `None` for anything else.
pub fn parse_log_line(s: &str) -> Option<TimedLine> {
    let rest = s.strip_prefix("[+")?;
    let (t, text) = rest.split_once("s] ")?;
    let t: f64 = t.trim().parse().ok()?;
    let (text, truncated) = match text.strip_suffix(" [airboot: line truncated]") {
        Some(x) => (x, true),
        None => (text, false),
    };
    Some(TimedLine { t, text: text.to_string(), truncated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_read_back_as_written() {
        for l in [
            TimedLine { t: 1.5, text: "hi s] there".into(), truncated: true },
            TimedLine { t: 1234.25, text: String::new(), truncated: false },
        ] {
            let f = format_log_line(&l);
            assert_eq!(parse_log_line(f.trim_end_matches('\n')), Some(l));
        }
        assert_eq!(parse_log_line("random text"), None);
        assert_eq!(parse_log_line("[+ x.0s] a"), None);
    }

    fn split_all(chunks: &[&[u8]], max: usize) -> Vec<RawLine> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn splits_on_every_line_ending_across_chunks() {
        let lines = split_all(&[b"a\r", b"\nb\n", b"c\rd", b"\r\n", b"tail"], 100);
        let texts: Vec<_> = lines.iter().map(|l| String::from_utf8(l.bytes.clone()).unwrap()).collect();
        assert_eq!(texts, ["a", "b", "c", "d", "tail"]);
    }

    #[test]
    fn tty_line_endings_make_no_empty_lines() {
        let lines = split_all(&[b"[  OK  ] Started x\r\r\n", b"next\r\r", b"\nblank follows\n\nend\n"], 100);
        let texts: Vec<_> = lines.iter().map(|l| String::from_utf8(l.bytes.clone()).unwrap()).collect();
        assert_eq!(texts, ["[  OK  ] Started x", "next", "blank follows", "", "end"]);
    }

    #[test]
    fn chunking_never_changes_the_lines() {
        let data = b"Linux version 6.1\r\n\x1b[0;32m  OK  \x1b[0m] Started x\nprogress 1\rprogress 2\r\nend";
        let whole = split_all(&[data], 16);
        for size in 1..data.len() {
            let chunks: Vec<&[u8]> = data.chunks(size).collect();
            assert_eq!(split_all(&chunks, 16), whole, "chunk size {size}");
        }
    }

    #[test]
    fn long_lines_are_cut_and_memory_stays_bounded() {
        let mut s = LineSplitter::new(8);
        let mut out = Vec::new();
        let big = vec![b'x'; 1 << 20];
        s.push(&big, &mut out);
        assert!(out.is_empty());
        assert!(s.pending() <= 8);
        s.push(b"\nok\n", &mut out);
        assert_eq!(out[0], RawLine { bytes: b"xxxxxxxx".to_vec(), truncated: true });
        assert_eq!(out[1], RawLine { bytes: b"ok".to_vec(), truncated: false });
    }

    #[test]
    fn cleans_escapes_and_controls() {
        assert_eq!(
            clean_line(b"[\x1b[0;32m  OK  \x1b[0m] Started \x1b]0;title\x07docker.service\x00\x08"),
            "[  OK  ] Started docker.service"
        );
        assert_eq!(clean_line(b"tab\there \xff"), "tab\there \u{fffd}");
        assert_eq!(clean_line(b"trailing esc \x1b"), "trailing esc ");
        // An 8-bit CSI (U+009B in UTF-8) and other C1 controls go too.
        assert_eq!(clean_line("a\u{9b}31mred\u{85}b é".as_bytes()), "a31mredb é");
    }

    /// Each boundary of the escape and control rules, one case each.
    #[test]
    fn escape_sequences_end_exactly_where_the_standard_says() {
        // CSI: parameters and intermediates (0x20–0x3f) run on, a final
        // byte 0x40–0x7e ends it, both ends of the range included.
        assert_eq!(clean_line(b"a\x1b[?25;1 @b"), "ab");
        assert_eq!(clean_line(b"a\x1b[2~b"), "ab");
        assert_eq!(clean_line(b"a\x1b[1;3?\x7fbc"), "ac", "0x7f is no final byte; b is");
        assert_eq!(clean_line(b"\x1b[31"), "", "an unfinished CSI at the end");
        // OSC, DCS, SOS, PM, APC: a string ended by BEL or by ESC \.
        for intro in [b']', b'P', b'X', b'^', b'_'] {
            let mut bel = b"a\x1b".to_vec();
            bel.push(intro);
            bel.extend_from_slice(b"1;x y\x07b");
            assert_eq!(clean_line(&bel), "ab", "{}", intro as char);
            let mut st = b"a\x1b".to_vec();
            st.push(intro);
            st.extend_from_slice(b"1$r0m\x1b\\b");
            assert_eq!(clean_line(&st), "ab", "{}", intro as char);
        }
        assert_eq!(clean_line(b"a\x1b]0;never ends"), "a", "an unterminated string swallows the rest");
        assert_eq!(clean_line(b"a\x1b]x\x1bzb\x07c"), "ac", "an ESC not followed by \\ does not end it");
        // Two-byte sequences drop the byte after ESC only.
        assert_eq!(clean_line(b"a\x1b7bc\x1b=d"), "abcd");
        // Controls: below 0x20 and 0x7f go, tab and space stay.
        assert_eq!(clean_line(b"\x01a\x1fb \x7fc\td\r"), "ab c\td");
        assert_eq!(clean_line(b"~ } \x20"), "~ }  ");
    }

    #[test]
    fn rules_report_milestones_and_first_fail() {
        let rules = ConsoleRules::new(
            &[("kernel".into(), r"Linux version \d".into()), ("any".into(), "version".into())],
            default_fail_patterns(),
        )
        .unwrap();
        let m = rules.scan("[    0.000000] Linux version 6.1.0-56-amd64");
        assert_eq!(m.milestones, vec![0, 1]);
        assert_eq!(m.fail, None);
        let m = rules.scan("[    2.8] Kernel panic - not syncing: VFS: Unable to mount root fs");
        assert_eq!(rules.fail_pattern(m.fail.unwrap()).code, FailureCode::KernelPanic);
        assert_eq!(rules.fail_pattern(rules.scan("Shell> ").fail.unwrap()).code, FailureCode::UefiShell);
        assert_eq!(rules.scan("echo Shell> foo").fail, None);
        assert!(rules.scan("You are in emergency mode. After logging in").fail.is_some());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Tail::new(3);
        for i in 0..10 {
            t.push(TimedLine { t: i as f64, text: i.to_string(), truncated: false });
        }
        assert_eq!(t.len(), 3);
        let last: Vec<_> = t.last(2).into_iter().map(|l| l.text).collect();
        assert_eq!(last, ["8", "9"]);
    }

    #[test]
    fn log_line_format() {
        let l = TimedLine { t: 1.5, text: "hi".into(), truncated: true };
        assert_eq!(format_log_line(&l), "[+   1.500s] hi [airboot: line truncated]\n");
    }
}

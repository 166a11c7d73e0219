//! Power cuts: the guest's write stream, the crash states a cut leaves,
//! an offline check of the container store in a crash state, and the
//! verdict once the device has been powered on again.

pub mod explore;
pub mod store;
pub mod writelog;

use serde::{Deserialize, Serialize};

use store::{StoreCheck, StoreVerdict};

/// What a cut did to the device, worst last but one (CORRUPT-SILENT is
/// the worst: the device says all is well).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum CutOutcome {
    /// The crash state already held the complete new store, and the stack ran.
    IntactNew,
    /// The crash state held the complete old store (nothing of the load),
    /// and the next boot brought the stack up.
    IntactOld,
    /// The crash state was damaged or half-done, and the next boot
    /// repaired it: the stack ran and the store checks clean afterwards.
    SelfHealed,
    /// The damage shows: an image missing, a container not running, the
    /// engine complaining.
    CorruptDetected,
    /// The stack reports healthy, but the store is damaged.
    CorruptSilent,
    /// The device does not come back: no engine.
    Bricked,
}

impl CutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CutOutcome::IntactNew => "INTACT-NEW",
            CutOutcome::IntactOld => "INTACT-OLD",
            CutOutcome::SelfHealed => "SELF-HEALED",
            CutOutcome::CorruptDetected => "CORRUPT-DETECTED",
            CutOutcome::CorruptSilent => "CORRUPT-SILENT",
            CutOutcome::Bricked => "BRICKED",
        }
    }

    /// INTACT-* and SELF-HEALED: the device survived the cut.
    pub fn survived(self) -> bool {
        matches!(self, CutOutcome::IntactNew | CutOutcome::IntactOld | CutOutcome::SelfHealed)
    }
}

/// The filesystem of a crash state after journal replay (e2fsck on a copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsFindings {
    /// Clean once the journal was replayed.
    pub clean: bool,
    /// What e2fsck said, in short.
    pub summary: String,
}

/// The next power-on of the crash state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RebootFindings {
    pub passed: bool,
    /// The engine reached "active" (the device is not bricked).
    pub engine_up: bool,
    /// `code: message` of each failure.
    pub failures: Vec<String>,
    /// Why it failed: its first diagnosis, if airboot could name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<airboot_model::Diagnosis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judgement {
    pub outcome: CutOutcome,
    pub evidence: Vec<String>,
}

fn describe_store(s: &StoreCheck) -> String {
    let complete = s.images.iter().filter(|i| i.state == store::ImageState::Complete).count();
    format!(
        "store {}: {complete} of {} expected image(s) complete, {} of {} registered layer(s) verified",
        s.verdict.as_str(),
        s.images.len(),
        s.layers_verified,
        s.layers_registered
    )
}

/// What the offline checks found in a crash state (`crash`: `None` when
/// the store could not be read at all), as evidence lines.
pub fn crash_evidence(fs: &FsFindings, crash: Option<&StoreCheck>) -> Vec<String> {
    let mut evidence = vec![format!(
        "crash state: filesystem {} ({})",
        if fs.clean { "clean after journal replay" } else { "damaged" },
        fs.summary
    )];
    match crash {
        Some(s) => {
            evidence.push(format!("crash state: {}", describe_store(s)));
            evidence.extend(s.problems.iter().take(5).map(|p| format!("crash state: {p}")));
        }
        None => evidence.push("crash state: the store could not be read".into()),
    }
    evidence
}

/// Whether a crash state, judged offline only, holds a clean filesystem
/// and a complete store (old or new): what `airboot cut --offline` can say
/// without powering it on.
pub fn offline_intact(fs: &FsFindings, crash: Option<&StoreCheck>) -> bool {
    fs.clean && crash.is_some_and(|s| matches!(s.verdict, StoreVerdict::New | StoreVerdict::Old))
}

/// Judge a cut from the crash state (`fs`, `crash`: `None` when the
/// store could not be read at all), the next boot, and the store as that
/// boot left it (`after`).
pub fn judge(
    fs: &FsFindings,
    crash: Option<&StoreCheck>,
    reboot: &RebootFindings,
    after: Option<&StoreCheck>,
) -> Judgement {
    let mut evidence = crash_evidence(fs, crash);
    evidence.push(format!(
        "next boot: {}{}",
        if reboot.passed { "stack up as expected" } else { "FAILED" },
        if reboot.engine_up { "" } else { ", the engine never became active" }
    ));
    evidence.extend(reboot.failures.iter().take(5).map(|f| format!("next boot: {f}")));
    if let Some(d) = &reboot.diagnosis {
        evidence.push(format!("next boot: diagnosis {}: {}", d.code, d.summary));
    }
    if let Some(a) = after {
        evidence.push(format!("after the next boot: {}", describe_store(a)));
        evidence.extend(a.problems.iter().take(5).map(|p| format!("after the next boot: {p}")));
    }
    let crash_verdict = crash.map(|s| s.verdict);
    let damaged = !fs.clean || crash_verdict.is_none_or(|v| v == StoreVerdict::Corrupt);
    let still_damaged = after.is_some_and(|a| a.verdict == StoreVerdict::Corrupt);
    let outcome = if !reboot.engine_up {
        CutOutcome::Bricked
    } else if !reboot.passed {
        CutOutcome::CorruptDetected
    } else if still_damaged {
        CutOutcome::CorruptSilent
    } else if damaged || crash_verdict == Some(StoreVerdict::Between) {
        CutOutcome::SelfHealed
    } else if crash_verdict == Some(StoreVerdict::New) {
        CutOutcome::IntactNew
    } else {
        CutOutcome::IntactOld
    };
    Judgement { outcome, evidence }
}

/// Where in the write stream a cut fell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutPosition {
    /// Requests (writes and flushes) completed before the cut.
    pub entry: usize,
    pub writes: u64,
    pub flushes: u64,
    pub bytes_written: u64,
}

/// One cut, as the report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerCut {
    pub mode: airboot_model::CutMode,
    /// False for `kill` (a crash or watchdog reset, not a power cut).
    pub power_cut: bool,
    /// What placed the cut.
    pub trigger: String,
    pub position: CutPosition,
    pub seed: u64,
    /// Completed writes the cut lost (whole, and torn).
    pub lost_writes: u64,
    pub lost_bytes: u64,
    pub torn_writes: u64,
    pub outcome: Option<CutOutcome>,
    pub evidence: Vec<String>,
    /// The reproduction bundle (crash disk state, cut.json, logs).
    pub bundle: String,
    pub filesystem: Option<FsFindings>,
    pub crash_store: Option<StoreCheck>,
    pub after_store: Option<StoreCheck>,
    /// Set when the cut could not be judged (the outcome is then absent).
    pub error: Option<String>,
    /// A second cut: the bundle of the first cut whose recovery boot
    /// (powering that crash state on again) this one cut into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub during_recovery_of: Option<String>,
    /// Why the next boot failed, when airboot could name the cause
    /// (docs/diagnoses.md; the whole diagnosis is in the bundle's
    /// reboot/report.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_boot_diagnosis: Option<airboot_model::DiagnosisCode>,
}

impl PowerCut {
    /// A cut not judged yet, losing nothing until told otherwise.
    pub fn new(
        mode: airboot_model::CutMode,
        trigger: String,
        position: CutPosition,
        seed: u64,
        bundle: String,
    ) -> PowerCut {
        PowerCut {
            mode,
            power_cut: mode.is_power_cut(),
            trigger,
            position,
            seed,
            lost_writes: 0,
            lost_bytes: 0,
            torn_writes: 0,
            outcome: None,
            evidence: Vec::new(),
            bundle,
            filesystem: None,
            crash_store: None,
            after_store: None,
            error: None,
            during_recovery_of: None,
            next_boot_diagnosis: None,
        }
    }
}

impl PowerCut {
    /// What the cut came to, in one word: its outcome, or (judged
    /// offline) `FS-DAMAGED` or `STORE-<NEW|OLD|BETWEEN|CORRUPT>`.
    pub fn finding(&self) -> String {
        match (self.outcome, &self.filesystem, &self.crash_store) {
            (Some(o), _, _) => o.as_str().to_string(),
            (None, Some(fs), _) if !fs.clean => "FS-DAMAGED".into(),
            (None, Some(_), Some(st)) => format!("STORE-{}", st.verdict.as_str().to_uppercase()),
            _ => "NOT JUDGED".into(),
        }
    }

    /// Whether the device survived the cut: INTACT-* or SELF-HEALED; with
    /// no outcome and `offline`, a clean filesystem and a whole store.
    pub fn survived(&self, offline: bool) -> bool {
        match self.outcome {
            Some(o) => o.survived(),
            None => offline && self.filesystem.as_ref().is_some_and(|fs| offline_intact(fs, self.crash_store.as_ref())),
        }
    }
}

/// A console line a recorded boot watches for: when it was seen, and how
/// long the write log was then (its position in the write stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkSeen {
    pub mark: String,
    /// 1-based: the how-many-th match of this mark.
    pub nth: usize,
    pub t_s: f64,
    pub line: String,
    pub log_len: u64,
}

/// When a recorded boot ends: `delay_s` after the `nth` match of mark
/// `mark` (an index into the marks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopRule {
    pub mark: usize,
    pub nth: usize,
    pub delay_s: f64,
}

/// Watches the console of a recorded boot. Pure: the caller says what
/// the log length is when asked.
#[derive(Debug)]
pub struct Recorder {
    marks: Vec<(String, regex::Regex)>,
    stop: Option<StopRule>,
    counts: Vec<usize>,
    pub seen: Vec<MarkSeen>,
    stop_at: Option<f64>,
    /// When the stop time came, and the write log's length then (noted
    /// once, before the caller pauses the guest, if it does: pausing
    /// makes QEMU flush, and that flush is not the guest's).
    pub fired: Option<(f64, u64)>,
}

impl Recorder {
    pub fn new(marks: Vec<(String, regex::Regex)>, stop: Option<StopRule>) -> Recorder {
        let counts = vec![0; marks.len()];
        Recorder { marks, stop, counts, seen: Vec::new(), stop_at: None, fired: None }
    }

    /// A console line. True when the boot should stop now.
    pub fn on_line(&mut self, t: f64, line: &str, log_len: &mut dyn FnMut() -> u64) -> bool {
        for (i, (name, re)) in self.marks.iter().enumerate() {
            if re.is_match(line) {
                self.counts[i] += 1;
                let nth = self.counts[i];
                self.seen.push(MarkSeen {
                    mark: name.clone(),
                    nth,
                    t_s: t,
                    line: line.to_string(),
                    log_len: log_len(),
                });
                if let Some(st) = self.stop
                    && i == st.mark
                    && nth == st.nth
                    && self.stop_at.is_none()
                {
                    self.stop_at = Some(t + st.delay_s);
                }
            }
        }
        self.on_tick(t, log_len)
    }

    /// Time passes. True when the boot should stop now (the first time,
    /// the position is noted in `fired`).
    pub fn on_tick(&mut self, t: f64, log_len: &mut dyn FnMut() -> u64) -> bool {
        let due = self.stop_at.is_some_and(|s| t >= s);
        if due && self.fired.is_none() {
            self.fired = Some((t, log_len()));
        }
        due
    }

    /// The stop mark has matched (the boot reached what it was recording).
    pub fn reached(&self) -> bool {
        self.stop_at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::store::{ImageCheck, ImageState};
    use super::*;

    fn st(v: StoreVerdict) -> StoreCheck {
        let state = match v {
            StoreVerdict::New => ImageState::Complete,
            StoreVerdict::Corrupt => ImageState::Corrupt("layer 1 damaged".into()),
            _ => ImageState::Absent,
        };
        StoreCheck {
            verdict: v,
            images: vec![ImageCheck { reference: "a:1".into(), id: None, state }],
            layers_registered: 1,
            layers_verified: 1,
            problems: if v == StoreVerdict::Corrupt { vec!["layer x: emptied".into()] } else { vec![] },
        }
    }
    fn clean() -> FsFindings {
        FsFindings { clean: true, summary: "clean".into() }
    }
    fn up() -> RebootFindings {
        RebootFindings { passed: true, engine_up: true, ..Default::default() }
    }

    #[test]
    fn every_outcome_is_reachable_and_the_worst_wins() {
        use CutOutcome::*;
        use StoreVerdict::*;
        let j = |fs: &FsFindings, c: Option<StoreVerdict>, r: &RebootFindings, a: Option<StoreVerdict>| {
            judge(fs, c.map(st).as_ref(), r, a.map(st).as_ref()).outcome
        };
        assert_eq!(j(&clean(), Some(New), &up(), Some(New)), IntactNew);
        assert_eq!(j(&clean(), Some(Old), &up(), Some(New)), IntactOld);
        assert_eq!(j(&clean(), Some(Between), &up(), Some(New)), SelfHealed);
        assert_eq!(j(&clean(), Some(Corrupt), &up(), Some(New)), SelfHealed);
        let dirty = FsFindings { clean: false, summary: "fixed errors".into() };
        assert_eq!(j(&dirty, Some(New), &up(), Some(New)), SelfHealed);
        assert_eq!(j(&clean(), None, &up(), Some(New)), SelfHealed);
        assert_eq!(j(&clean(), Some(Corrupt), &up(), Some(Corrupt)), CorruptSilent);
        let failed = RebootFindings {
            passed: false,
            engine_up: true,
            failures: vec!["image-missing: a:1".into()],
            diagnosis: None,
        };
        assert_eq!(j(&clean(), Some(Corrupt), &failed, Some(Corrupt)), CorruptDetected);
        let dead =
            RebootFindings { passed: false, engine_up: false, failures: vec!["timeout".into()], diagnosis: None };
        assert_eq!(j(&clean(), Some(New), &dead, None), Bricked);
        let e = judge(&clean(), Some(&st(Corrupt)), &up(), Some(&st(Corrupt))).evidence.join("\n");
        assert!(e.contains("emptied") && e.contains("after the next boot"), "{e}");
        assert!(SelfHealed.survived() && !CorruptSilent.survived());
        assert_eq!(serde_json::to_string(&CorruptSilent).unwrap(), "\"CORRUPT-SILENT\"");
    }

    /// The next boot's named cause is evidence of the cut, after its
    /// failures; a boot with none adds no such line.
    #[test]
    fn the_next_boots_diagnosis_is_in_the_cuts_evidence() {
        use airboot_model::{Diagnosis, DiagnosisCode};
        let d = Diagnosis {
            code: DiagnosisCode::StoreCorrupt,
            summary: "layer 3 of a:1 does not hash to its diff_id".into(),
            evidence: vec![],
            fix: "f".into(),
            confidence: Default::default(),
            ended_after_s: None,
        };
        let failures = vec!["image-missing: a:1".into()];
        let r = RebootFindings { passed: false, engine_up: true, failures, diagnosis: Some(d) };
        let e = judge(&clean(), Some(&st(StoreVerdict::Corrupt)), &r, None).evidence;
        let at = |needle: &str| e.iter().position(|l| l.contains(needle));
        assert_eq!(
            e.iter().find(|l| l.contains("diagnosis")).map(String::as_str),
            Some("next boot: diagnosis store-corrupt: layer 3 of a:1 does not hash to its diff_id"),
            "{e:?}"
        );
        assert!(at("image-missing") < at("diagnosis"), "{e:?}");
        let quiet = judge(&clean(), Some(&st(StoreVerdict::New)), &up(), None).evidence;
        assert!(!quiet.iter().any(|l| l.contains("diagnosis")), "{quiet:?}");
    }

    #[test]
    fn offline_only_a_clean_filesystem_with_a_whole_store_is_intact() {
        use StoreVerdict::*;
        let dirty = FsFindings { clean: false, summary: "fixed errors".into() };
        assert!(offline_intact(&clean(), Some(&st(New))));
        assert!(offline_intact(&clean(), Some(&st(Old))));
        assert!(!offline_intact(&clean(), Some(&st(Between))));
        assert!(!offline_intact(&clean(), Some(&st(Corrupt))));
        assert!(!offline_intact(&clean(), None));
        assert!(!offline_intact(&dirty, Some(&st(New))));
        let e = crash_evidence(&dirty, None).join("\n");
        assert!(e.contains("damaged (fixed errors)") && e.contains("could not be read"), "{e}");
    }

    /// The evidence lines say exactly how much of the store held: images
    /// complete of expected, layers verified of registered, and at most
    /// five problems.
    #[test]
    fn crash_evidence_counts_complete_images_and_verified_layers() {
        use store::{ImageCheck, ImageState};
        let image = |r: &str, state| ImageCheck { reference: r.into(), id: None, state };
        let s = StoreCheck {
            verdict: StoreVerdict::Between,
            images: vec![
                image("a:1", ImageState::Complete),
                image("b:1", ImageState::Absent),
                image("c:1", ImageState::Complete),
            ],
            layers_registered: 7,
            layers_verified: 4,
            problems: (1..=7).map(|i| format!("problem {i}")).collect(),
        };
        let e = crash_evidence(&clean(), Some(&s));
        assert_eq!(e[0], "crash state: filesystem clean after journal replay (clean)");
        assert_eq!(
            e[1],
            format!(
                "crash state: store {}: 2 of 3 expected image(s) complete, 4 of 7 registered layer(s) verified",
                StoreVerdict::Between.as_str()
            )
        );
        assert_eq!(
            &e[2..],
            [
                "crash state: problem 1",
                "crash state: problem 2",
                "crash state: problem 3",
                "crash state: problem 4",
                "crash state: problem 5"
            ]
        );
    }

    #[test]
    fn the_recorder_notes_positions_and_stops_after_the_nth_match_and_delay() {
        let re = |s: &str| regex::Regex::new(s).unwrap();
        let marks = vec![("start".to_string(), re("load: start")), ("layer".to_string(), re("loading"))];
        let mut r = Recorder::new(marks, Some(StopRule { mark: 1, nth: 2, delay_s: 1.5 }));
        let mut len = 1000u64;
        let mut at = || {
            len += 512;
            len
        };
        assert!(!r.on_line(1.0, "load: start", &mut at));
        assert!(!r.on_line(2.0, "loading a.tar", &mut at));
        assert!(!r.on_line(3.0, "unrelated", &mut at));
        assert!(!r.reached(), "one match of the two the stop waits for");
        assert!(!r.on_line(4.0, "loading b.tar", &mut at));
        assert!(r.reached());
        assert!(!r.on_tick(5.0, &mut || 9999));
        assert_eq!(r.fired, None);
        assert!(r.on_tick(5.5, &mut || 4096));
        assert_eq!(r.fired, Some((5.5, 4096)), "the position when the stop came");
        assert_eq!(r.seen.len(), 3);
        assert_eq!((r.seen[2].mark.as_str(), r.seen[2].nth, r.seen[2].log_len), ("layer", 2, 2536));
        // A later match does not move the stop, nor the noted position.
        assert!(r.on_line(6.0, "loading c.tar", &mut || 0));
        assert_eq!(r.fired, Some((5.5, 4096)));
    }
}

//! Crash-state exploration (`[power_cut] points = "all"`): every place a
//! power cut can fall in a window of the write stream, the states each
//! mode leaves there, which of them are the same bytes, and the classes of
//! states whose offline findings agree, so that one representative of
//! each class is powered on and the others inherit its outcome.
//!
//! Pure: the campaign applies the states to a disk and runs the tools.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use airboot_model::CutMode;
use serde::{Deserialize, Serialize};

use super::store::{ImageState, StoreCheck};
use super::writelog::{CrashState, EntryKind, Rng, WriteLog};
use super::{CutOutcome, FsFindings};

/// Where a cut falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PointKind {
    /// Just before the `flush`th flush of the log (1-based) completes:
    /// what was written since the flush before it may be lost.
    BeforeFlush { flush: u64 },
    /// Just after the `write`th write (1-based), a FUA write, completed:
    /// durable at once, flush or not.
    AfterFua { write: u64 },
}

/// A place to cut: after `entry` completed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub entry: usize,
    #[serde(flatten)]
    pub kind: PointKind,
}

impl Point {
    pub fn describe(&self) -> String {
        match self.kind {
            PointKind::BeforeFlush { flush } => format!("just before flush #{flush}"),
            PointKind::AfterFua { write } => format!("just after FUA write #{write}"),
        }
    }
}

/// Every persistence point in the entries `from..to` of `log`: each flush
/// (the state just before it completes) and each FUA write (just after
/// it), in log order.
pub fn points(log: &WriteLog, from: usize, to: usize) -> Vec<Point> {
    let to = to.min(log.entries.len());
    let (mut writes, mut flushes) = (0u64, 0u64);
    let mut out = Vec::new();
    for (i, e) in log.entries.iter().enumerate().take(to) {
        match e.kind {
            EntryKind::Flush => {
                flushes += 1;
                if i >= from {
                    out.push(Point { entry: i, kind: PointKind::BeforeFlush { flush: flushes } });
                }
            }
            EntryKind::Write => {
                writes += 1;
                if e.fua && i >= from {
                    out.push(Point { entry: i + 1, kind: PointKind::AfterFua { write: writes } });
                }
            }
            EntryKind::Discard => {}
        }
    }
    out
}

/// One crash state to judge: the cut at `points[point]` in `mode`; for
/// modes with a random choice, `variant` numbers the seeded draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSpec {
    pub point: usize,
    pub entry: usize,
    pub mode: CutMode,
    pub variant: usize,
    pub seed: u64,
}

/// Draws per point a mode makes: one for the modes without a random
/// choice, `per_point` for torn and flush-ignored.
pub fn draws(mode: CutMode, per_point: usize) -> usize {
    match mode {
        CutMode::Kill | CutMode::LoseUnflushed => 1,
        CutMode::Torn | CutMode::FlushIgnored => per_point.max(1),
    }
}

/// Every state of every point under every mode, each with its own seed
/// (derived from `seed`, the point's entry, the mode and the draw, so a
/// state is the same whichever shard or order judges it).
pub fn states(points: &[Point], modes: &[CutMode], per_point: usize, seed: u64) -> Vec<StateSpec> {
    let mut out = Vec::new();
    for (k, p) in points.iter().enumerate() {
        for (m, &mode) in modes.iter().enumerate() {
            for variant in 0..draws(mode, per_point) {
                let mut rng = Rng::new(seed ^ (p.entry as u64).rotate_left(20) ^ ((m as u64) << 56) ^ variant as u64);
                out.push(StateSpec { point: k, entry: p.entry, mode, variant, seed: rng.next_u64() });
            }
        }
    }
    out
}

/// Identifies a crash state's bytes: how many whole pieces of the log's
/// prefix it holds and what it kept after them. Equal keys are the same
/// disk; two different keys may still be (a flush with nothing before it).
pub fn state_key(st: &CrashState) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    st.extras_from.hash(&mut h);
    for p in &st.pieces[st.extras_from..] {
        (p.offset, p.len, p.data_at).hash(&mut h);
    }
    h.finish()
}

/// What decides a state's fate, as one line: the filesystem check, the
/// store's verdict, each expected image, each damaged layer (or other
/// thing named wrong, without the details), and the loader's marker files.
pub fn fingerprint(fs: &FsFindings, store: Option<&StoreCheck>, markers: &[(String, bool)]) -> String {
    let mut f = vec![format!("fs={}", if fs.clean { "clean" } else { "damaged" })];
    match store {
        None => f.push("store=unreadable".into()),
        Some(s) => {
            f.push(format!("store={}", s.verdict.as_str()));
            for i in &s.images {
                let st = match &i.state {
                    ImageState::Complete => "complete",
                    ImageState::Absent => "absent",
                    ImageState::Corrupt(_) => "corrupt",
                };
                f.push(format!("{}={st}", i.reference));
            }
            let mut damaged: Vec<&str> = s.problems.iter().map(|p| subject(p)).collect();
            damaged.sort_unstable();
            damaged.dedup();
            if !damaged.is_empty() {
                f.push(format!("damaged=[{}]", damaged.join(", ")));
            }
        }
    }
    for (path, present) in markers {
        f.push(format!("{path}={}", if *present { "present" } else { "absent" }));
    }
    f.join(" ")
}

/// What a problem line is about: the text before its first ": " (a store
/// problem names its layer or file first).
fn subject(problem: &str) -> &str {
    problem.split(": ").next().unwrap_or(problem)
}

/// A judged state, as the exploration reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExploredState {
    /// Its place in the enumeration (0-based), the same in every shard.
    pub index: usize,
    pub entry: usize,
    pub point: String,
    pub mode: CutMode,
    pub variant: usize,
    pub seed: u64,
    /// Writes lost and torn (against a kill at the same point).
    pub lost_writes: u64,
    pub torn_writes: u64,
    /// `state_key` in hex: equal keys are the same bytes (also across shards).
    #[serde(default)]
    pub key: String,
    /// The same bytes as an earlier state (its index): judged once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_clean: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
    /// Its fingerprint class (index into `classes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CutOutcome>,
    /// The outcome is the class representative's, not observed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inherited: bool,
    /// Why it could not be judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// States whose fingerprints agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateClass {
    pub fingerprint: String,
    /// Indices of its states, in enumeration order.
    pub members: Vec<usize>,
    /// The member powered on for the class (the first), and its bundle.
    pub representative: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CutOutcome>,
    /// Other members powered on to test the class, with their outcomes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sampled: Vec<(usize, Option<CutOutcome>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// Group judged states by fingerprint (states with an error stay out),
/// classes in order of their first member; sets each state's `class`.
pub fn classify(states: &mut [ExploredState]) -> Vec<StateClass> {
    let mut by_fp: BTreeMap<String, usize> = BTreeMap::new();
    let mut classes: Vec<StateClass> = Vec::new();
    for s in states.iter_mut() {
        if s.error.is_some() || s.fingerprint.is_empty() {
            continue;
        }
        let k = *by_fp.entry(s.fingerprint.clone()).or_insert_with(|| {
            classes.push(StateClass {
                fingerprint: s.fingerprint.clone(),
                members: Vec::new(),
                representative: s.index,
                bundle: None,
                outcome: None,
                sampled: Vec::new(),
                evidence: Vec::new(),
            });
            classes.len() - 1
        });
        classes[k].members.push(s.index);
        s.class = Some(k);
    }
    classes
}

/// Up to `n` members of each class besides its representative, chosen by
/// `seed`: powered on to test that the class predicts their outcome.
pub fn sample(classes: &[StateClass], n: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut rng = Rng::new(seed ^ 0x5a5a_5a5a);
    let mut out = Vec::new();
    for (k, c) in classes.iter().enumerate() {
        let mut rest: Vec<usize> = c.members.iter().copied().filter(|&m| m != c.representative).collect();
        for _ in 0..n.min(rest.len()) {
            let i = rng.below(rest.len() as u64) as usize;
            out.push((k, rest.swap_remove(i)));
        }
    }
    out
}

/// The exploration in numbers, and its one-line headline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tally {
    pub points: usize,
    pub enumerated: usize,
    /// Distinct states, each judged offline once.
    pub judged_offline: usize,
    pub powered_on: usize,
    pub classes: usize,
    /// States with an outcome (observed or inherited) that survived.
    pub survived: usize,
    pub with_outcome: usize,
    /// Sampled members whose outcome differed from their representative's.
    pub sample_mismatches: usize,
    pub sampled: usize,
    /// The first point (in log order) with a state that did not survive,
    /// or (offline) whose state is not intact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad: Option<String>,
}

impl Tally {
    pub fn headline(&self, offline: bool) -> String {
        let pct = |n: usize, of: usize| if of == 0 { 0.0 } else { 100.0 * n as f64 / of as f64 };
        let what = if offline { "intact offline" } else { "survive" };
        let mut h = format!(
            "{} states, {} classes, {:.1}% {what}",
            self.enumerated,
            self.classes,
            pct(self.survived, self.with_outcome)
        );
        if let Some(f) = &self.first_bad {
            h.push_str(&format!(", first non-surviving: {f}"));
        }
        h
    }
}

/// An exploration, as report.json holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exploration {
    /// The write log explored (its sha256) and the input image's: shards
    /// merge only when both agree.
    #[serde(default)]
    pub recording: String,
    /// This report's slice of the states (`k` of `n`, from 1), and how
    /// many states the whole exploration has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<(usize, usize)>,
    #[serde(default)]
    pub total_states: usize,
    /// Judged offline only (no power-on).
    #[serde(default)]
    pub offline: bool,
    /// The window: entries `from..to` of the write log, and the lines
    /// that placed it.
    pub window: (usize, usize),
    pub placed: String,
    pub modes: Vec<CutMode>,
    pub states_per_point: usize,
    pub seed: u64,
    pub tally: Tally,
    pub headline: String,
    /// Offline judging: wall seconds, states judged per second, the
    /// workers, and where the working copies were.
    pub judge_s: f64,
    pub states_per_s: f64,
    pub jobs: usize,
    pub scratch: String,
    /// e2fsck runs in all.
    pub fsck_runs: u64,
    /// Powering states on: how many booted at once, and why that many;
    /// wall seconds for all of them.
    #[serde(default)]
    pub boot_jobs: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub boot_jobs_why: String,
    #[serde(default)]
    pub boot_s: f64,
    /// States judged again from scratch (a qcow2, a full copy, e2fsck, the
    /// store read), and where that disagreed with judging in place.
    #[serde(default)]
    pub cross_checked: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cross_check_mismatches: Vec<String>,
    pub classes: Vec<StateClass>,
    pub states: Vec<ExploredState>,
}

/// QEMU's own memory beside a guest's RAM, allowed per parallel boot.
pub const BOOT_OVERHEAD_MIB: u64 = 512;

/// How many crash states to boot at once, and why: `asked` (`--jobs`)
/// when given, else as many as the host's `cores` (each guest's `vcpus`
/// busy one core each under TCG) and `available_mib` of memory (each
/// guest's `memory_mib` plus [`BOOT_OVERHEAD_MIB`]) allow; never more
/// than there are `boots`, never fewer than one.
pub fn boot_jobs(
    asked: Option<usize>,
    boots: usize,
    cores: usize,
    vcpus: u32,
    memory_mib: u64,
    available_mib: Option<u64>,
) -> (usize, String) {
    let most = boots.max(1);
    if let Some(n) = asked {
        let n = n.clamp(1, most);
        return (n, format!("{n} at once (--jobs)"));
    }
    let by_cores = (cores / (vcpus.max(1) as usize)).max(1);
    let per = memory_mib.saturating_add(BOOT_OVERHEAD_MIB);
    let by_memory = available_mib.map(|a| ((a / per.max(1)) as usize).max(1));
    let n = by_cores.min(by_memory.unwrap_or(usize::MAX)).min(most);
    let memory = match (available_mib, by_memory) {
        (Some(a), Some(m)) => {
            format!("{a} MiB available fits {m} guest(s) of {memory_mib} MiB + {BOOT_OVERHEAD_MIB} MiB for QEMU")
        }
        _ => "available memory unknown".to_string(),
    };
    (
        n,
        format!(
            "{n} at once: {cores} core(s) fit {by_cores} guest(s) of {} vCPU(s); {memory}; {boots} boot(s) to do (--jobs to choose)",
            vcpus.max(1)
        ),
    )
}

/// The contiguous slice of `total` states shard `k` of `n` (from 1) judges.
pub fn shard_range(total: usize, k: usize, n: usize) -> std::ops::Range<usize> {
    let n = n.max(1);
    let k = k.clamp(1, n);
    (k - 1) * total / n..k * total / n
}

/// Join shard explorations of one recording into one: every state once,
/// the same bytes judged once (by key, across shards), classes formed
/// again over all states. A class's representative is its first member
/// that was powered on; its other powered-on members count as sampled;
/// the rest inherit. An error names what does not fit.
pub fn merge(mut parts: Vec<Exploration>) -> Result<Exploration, String> {
    let first = parts.first().ok_or("nothing to merge")?.clone();
    for (i, p) in parts.iter().enumerate() {
        let same = p.recording == first.recording
            && p.window == first.window
            && p.modes == first.modes
            && p.states_per_point == first.states_per_point
            && p.seed == first.seed
            && p.total_states == first.total_states;
        if !same {
            return Err(format!(
                "part {} is not a shard of the same exploration as part 1 (recording, window, modes, states_per_point, seed and the number of states must agree)",
                i + 1
            ));
        }
    }
    let total = first.total_states;
    let mut states: Vec<ExploredState> = parts.iter_mut().flat_map(|p| std::mem::take(&mut p.states)).collect();
    states.sort_by_key(|s| s.index);
    let mut seen = vec![0usize; total];
    for s in &states {
        match seen.get_mut(s.index) {
            Some(n) => *n += 1,
            None => return Err(format!("state {} is past the exploration's {total} states", s.index)),
        }
    }
    let twice: Vec<usize> = (0..total).filter(|&i| seen[i] > 1).collect();
    let missing: Vec<usize> = (0..total).filter(|&i| seen[i] == 0).collect();
    if !twice.is_empty() || !missing.is_empty() {
        return Err(format!(
            "every state must be in exactly one part: {} state(s) missing (first {:?}), {} in more than one (first {:?})",
            missing.len(),
            missing.first(),
            twice.len(),
            twice.first()
        ));
    }
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for s in &mut states {
        let f = *by_key.entry(s.key.clone()).or_insert(s.index);
        s.same_as = (f != s.index).then_some(f);
        s.class = None;
        if s.inherited {
            s.outcome = None;
            s.inherited = false;
        }
    }
    let old: Vec<StateClass> = parts.iter().flat_map(|p| p.classes.iter().cloned()).collect();
    let mut classes = classify(&mut states);
    for c in &mut classes {
        let observed: Vec<usize> = c.members.iter().copied().filter(|&m| states[m].outcome.is_some()).collect();
        if let Some((&rep, rest)) = observed.split_first() {
            c.representative = rep;
            c.outcome = states[rep].outcome;
            c.sampled = rest.iter().map(|&m| (m, states[m].outcome)).collect();
            if let Some(o) = old.iter().find(|o| o.representative == rep && o.bundle.is_some()) {
                c.bundle = o.bundle.clone();
                c.evidence = o.evidence.clone();
            } else if let Some(o) = old.iter().find(|o| o.sampled.iter().any(|(m, _)| *m == rep)) {
                c.evidence = o.evidence.clone();
            }
        }
    }
    for s in &mut states {
        if s.outcome.is_none()
            && let Some(k) = s.class
        {
            s.outcome = classes[k].outcome;
            s.inherited = s.outcome.is_some();
        }
    }
    let offline = parts.iter().all(|p| p.offline);
    let tally = tally(first.tally.points, &states, &classes, offline);
    let judge_s: f64 = parts.iter().map(|p| p.judge_s).sum();
    let mut scratch: Vec<String> = parts.iter().map(|p| p.scratch.clone()).collect();
    scratch.dedup();
    Ok(Exploration {
        shard: None,
        offline,
        headline: tally.headline(offline),
        tally,
        states_per_s: parts.iter().map(|p| p.states_per_s).sum(),
        judge_s,
        jobs: parts.iter().map(|p| p.jobs).sum(),
        scratch: scratch.join(", "),
        fsck_runs: parts.iter().map(|p| p.fsck_runs).sum(),
        boot_jobs: parts.iter().map(|p| p.boot_jobs).sum(),
        boot_jobs_why: String::new(),
        boot_s: parts.iter().map(|p| p.boot_s).sum(),
        cross_checked: parts.iter().map(|p| p.cross_checked).sum(),
        cross_check_mismatches: parts.iter().flat_map(|p| p.cross_check_mismatches.iter().cloned()).collect(),
        classes,
        states,
        ..first
    })
}

/// Count what an exploration did. `offline`: survival is "clean
/// filesystem, whole old or new store" (no outcome); else the outcome.
pub fn tally(points: usize, states: &[ExploredState], classes: &[StateClass], offline: bool) -> Tally {
    let mut t = Tally {
        points,
        enumerated: states.len(),
        judged_offline: states.iter().filter(|s| s.same_as.is_none() && s.fs_clean.is_some()).count(),
        powered_on: classes.iter().map(|c| usize::from(c.outcome.is_some()) + c.sampled.len()).sum(),
        classes: classes.len(),
        ..Tally::default()
    };
    for c in classes {
        for (_, got) in &c.sampled {
            t.sampled += 1;
            if *got != c.outcome {
                t.sample_mismatches += 1;
            }
        }
    }
    let mut first: Option<(usize, String)> = None;
    for s in states {
        let survived = if offline {
            s.fs_clean.map(|c| c && matches!(s.store.as_deref(), Some("new" | "old")))
        } else {
            s.outcome.map(CutOutcome::survived)
        };
        let Some(ok) = survived else { continue };
        t.with_outcome += 1;
        if ok {
            t.survived += 1;
        } else if first.as_ref().is_none_or(|(e, _)| s.entry < *e) {
            first = Some((s.entry, s.point.clone()));
        }
    }
    t.first_bad = first.map(|(_, p)| p);
    t
}

#[cfg(test)]
mod tests;

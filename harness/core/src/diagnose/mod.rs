//! Diagnoses: from what a failed run saw (the console, the engine's own
//! error, its status, the air-gap evidence, the failures) to named causes
//! with evidence and a fix (`airboot_model::DiagnosisCode` holds the
//! catalogue). Pure: the caller reads console.log.
//!
//! A run that passed gets no diagnosis: every rule explains a failure.

use std::sync::LazyLock;

use airboot_model::{Confidence, DiagEvidence, Diagnosis, DiagnosisCode, FailureCode};
use regex::Regex;

use crate::console::TimedLine;
use crate::report::Report;

/// At most this many evidence lines per diagnosis (the rest are in
/// console.log).
const MAX_EVIDENCE: usize = 4;

fn re(s: &str) -> Regex {
    Regex::new(s).expect("diagnosis pattern")
}

static READ_ONLY: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)/var/lib/(?:docker|containers|containerd)\S*: read-only file system"));
static NO_SPACE: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)no space left on device"));
static DRIVER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)error initializing graphdriver|graphdriver.*(?:not supported|failed)|prior storage driver \S+ failed|driver not supported|overlay\S*: unknown filesystem|unknown filesystem type '?overlay",
    )
});
static KERNEL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)your kernel does not support|modprobe: FATAL: Module \S+ not found|Table does not exist \(do you need to insmod\?\)|failed to create NAT chain|Error initializing network controller|cgroup(?:s|2)? (?:is |are )?not (?:mounted|supported)|missing (?:required )?cgroup",
    )
});
static START_LIMIT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?:docker|podman|containerd)\.(?:service|socket).*(?:start-limit-hit|Start request repeated too quickly|kept failing)",
    )
});
static CLOCKISH: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)not yet valid|not valid (?:before|until)|certificate (?:has )?expired|expired certificate|clock|in the future|time is (?:wrong|before)",
    )
});
static EXEC_FORMAT: LazyLock<Regex> = LazyLock::new(|| re(r"exec format error"));
static NET_LOOKUP: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)dial tcp: lookup \S+|registry-1\.docker\.io|Temporary failure in name resolution|network is unreachable")
});

/// Whether a line (console, the engine's error, a unit's) is evidence of
/// a cause that settles the run (`DiagnosisCode::settles_run`): the store
/// read-only, the engine's unit at its start limit, or, once the engine
/// runs, a write out of space (before it, a full disk may only cost a
/// machine-id: the engine and the loader may still manage).
pub fn settling_evidence(text: &str, engine_up: bool) -> bool {
    READ_ONLY.is_match(text) || START_LIMIT.is_match(text) || (engine_up && NO_SPACE.is_match(text))
}

/// Whether a line says a write ran out of space (before the engine runs,
/// it settles the run only once the engine goes down too).
pub fn out_of_space(text: &str) -> bool {
    NO_SPACE.is_match(text)
}

/// Where a run's words come from, flattened: console lines (timed) and the
/// engine's own error (untimed).
struct Sources<'a> {
    console: &'a [TimedLine],
    engine: Option<&'a str>,
    /// (unit, its last error) for the stack's failed or restarting units.
    units: Vec<(&'a str, &'a str)>,
    /// When the guest first reported each error.
    seen: &'a std::collections::BTreeMap<String, f64>,
}

impl Sources<'_> {
    /// The engine's error first (it names the cause best), then console lines.
    fn find(&self, pattern: &Regex) -> Vec<DiagEvidence> {
        self.find_unless(pattern, &[])
    }

    /// As `find`, leaving out lines a more specific cause explains
    /// (`error initializing graphdriver: …: read-only file system` is the
    /// store's filesystem, not its driver).
    fn find_unless(&self, pattern: &Regex, explained: &[&Regex]) -> Vec<DiagEvidence> {
        let hit = |s: &str| pattern.is_match(s) && !explained.iter().any(|x| x.is_match(s));
        let mut out = Vec::new();
        if let Some(e) = self.engine.filter(|e| hit(e)) {
            let t_s = self.seen.get(crate::report::error_key(e)).copied();
            out.push(DiagEvidence { source: "engine".into(), t_s, line: e.to_string() });
        }
        for (unit, e) in self.units.iter().filter(|(_, e)| hit(e)) {
            let t_s = self.seen.get(crate::report::error_key(e)).copied();
            out.push(DiagEvidence { source: format!("unit {unit}"), t_s, line: e.to_string() });
        }
        for l in self.console.iter().filter(|l| hit(&l.text)) {
            if out.len() >= MAX_EVIDENCE {
                break;
            }
            out.push(DiagEvidence { source: "console".into(), t_s: Some(l.t), line: l.text.clone() });
        }
        out
    }
}

fn diag(code: DiagnosisCode, summary: String, evidence: Vec<DiagEvidence>, confidence: Confidence) -> Diagnosis {
    Diagnosis { code, summary, evidence, fix: code.fix().into(), confidence, ended_after_s: None }
}

/// A cause that settles the run but did not end it within
/// [`airboot_model::FAIL_FAST_S`] of its first timed evidence (or has no
/// timed evidence to tell): what is wrong, for a test to fail on.
pub fn too_slow(d: &Diagnosis) -> Option<String> {
    if !d.code.settles_run() {
        return None;
    }
    match d.ended_after_s {
        Some(a) if a <= airboot_model::FAIL_FAST_S => None,
        Some(a) => Some(format!(
            "{} settles the run, which ended {a:.1}s after its first evidence (limit {}s)",
            d.code,
            airboot_model::FAIL_FAST_S
        )),
        None => Some(format!("{} settles the run, but none of its evidence is timed", d.code)),
    }
}

/// Whether a finished boot's failures are ones a damaged store explains
/// (an image missing or not running, a container down or unhealthy, the
/// engine's API failing): then the store is worth reading offline.
pub fn wants_store_check(r: &Report) -> bool {
    r.verdict == airboot_model::Verdict::Fail
        && r.failures.iter().any(|f| {
            matches!(
                f.code,
                FailureCode::ImageMissing
                    | FailureCode::ImageIdMismatch
                    | FailureCode::ImageRunFailed
                    | FailureCode::UntaggedImage
                    | FailureCode::ContainerNotRunning
                    | FailureCode::ContainerUnhealthy
                    | FailureCode::EngineError
            )
        })
}

/// A boot that followed a clean reboot (step `step`, report folder
/// `dir`) and loaded images again: the first-boot loader runs on every
/// boot. `summary` is that boot in brief (load time, store growth).
pub fn load_every_boot(step: &str, next: &Report, summary: &crate::report::NextBoot) -> Option<Diagnosis> {
    if next.image_loads.is_empty() {
        return None;
    }
    let engine = next.engine.as_ref().map(|e| e.name.as_str()).unwrap_or("the engine");
    let images: Vec<String> = dedup(next.image_loads.iter().map(|l| l.image.as_str()).collect())
        .into_iter()
        .map(|i| if i.starts_with("sha256:") { crate::units::short_id(i) } else { i.to_string() })
        .collect();
    let span = summary.load_s.map(|s| format!(" over {s:.1} s")).unwrap_or_default();
    let growth = match summary.store_growth_bytes {
        Some(g) => format!("; the store's filesystem changed by {}", crate::units::signed_bytes(g)),
        None => String::new(),
    };
    let evidence = next
        .image_loads
        .iter()
        .map(|l| DiagEvidence {
            source: format!("{}/status", summary.dir),
            t_s: Some(l.t_s),
            line: format!("{engine} event: image load {}", l.image),
        })
        .collect();
    Some(diag(
        DiagnosisCode::LoadEveryBoot,
        format!(
            "after the {step} step's reboot, {engine} loaded {} image{} again ({}){span}{growth}",
            images.len(),
            if images.len() == 1 { "" } else { "s" },
            images.join(", ")
        ),
        evidence,
        Confidence::Certain,
    ))
}

/// The named causes of `r`'s failures, most specific first. Empty when the
/// run passed or nothing names a cause.
pub fn diagnose(r: &Report, console: &[TimedLine]) -> Vec<Diagnosis> {
    let mut out = causes(r, console);
    // How soon the run ended after each cause showed: for a cause that
    // settles the run, after the evidence that settled it when it did.
    if let Some(end) = r.status.ended_s {
        for d in &mut out {
            let first = d.evidence.iter().filter_map(|e| e.t_s).reduce(f64::min);
            let from = if d.code.settles_run() { r.status.settled_at_s.or(first) } else { first };
            d.ended_after_s = from.map(|f| (end - f).max(0.0));
        }
    }
    out
}

fn causes(r: &Report, console: &[TimedLine]) -> Vec<Diagnosis> {
    if r.failures.is_empty() {
        return Vec::new();
    }
    let has = |c: FailureCode| r.failures.iter().any(|f| f.code == c);
    let engine_detail = r.engine.as_ref().and_then(|e| e.detail.as_deref());
    let units = r.units.iter().filter_map(|u| u.error.as_deref().map(|e| (u.name.as_str(), e))).collect();
    let src = Sources { console, engine: engine_detail, units, seen: &r.status.errors_first_seen_s };
    let engine_name = r.engine.as_ref().map(|e| e.name.as_str()).unwrap_or("the engine");
    let mut out = Vec::new();

    // A damaged layer is a cause: what cannot run from it is its symptom.
    let corrupt = r.store_check.as_ref().filter(|s| s.check.verdict == crate::cut::store::StoreVerdict::Corrupt);
    if let Some(sc) = corrupt {
        let mut ev: Vec<DiagEvidence> = sc
            .check
            .images
            .iter()
            .filter_map(|i| match &i.state {
                crate::cut::store::ImageState::Corrupt(why) => Some(format!("{}: {why}", i.reference)),
                _ => None,
            })
            .chain(sc.check.problems.iter().cloned())
            // The problems repeat the images' lines: each line once.
            .scan(std::collections::BTreeSet::new(), |seen, line| Some(seen.insert(line.clone()).then_some(line)))
            .flatten()
            .map(|line| DiagEvidence { source: "store".into(), t_s: None, line })
            .take(MAX_EVIDENCE)
            .collect();
        if !sc.fs.clean {
            ev.push(DiagEvidence { source: "store".into(), t_s: None, line: format!("filesystem: {}", sc.fs.summary) });
        }
        out.push(diag(
            DiagnosisCode::StoreCorrupt,
            format!(
                "{engine_name}'s store has damaged content ({} of {} layers verified): {}",
                sc.check.layers_verified,
                sc.check.layers_registered,
                ev.first().map(|e| e.line.as_str()).unwrap_or("see the store check")
            ),
            ev,
            Confidence::Certain,
        ));
    }
    let ev = src.find(&READ_ONLY);
    if !ev.is_empty() {
        out.push(diag(
            DiagnosisCode::StoreReadOnly,
            format!("{engine_name}'s store is on a read-only filesystem: {}", ev[0].line),
            ev,
            Confidence::Certain,
        ));
    }
    let mut ev = src.find(&NO_SPACE);
    if !ev.is_empty() {
        if let Some(fs) = r.engine.as_ref().and_then(|e| e.store_fs) {
            let mib = |b: u64| b as f64 / 1048576.0;
            ev.push(DiagEvidence {
                source: "probe".into(),
                t_s: r.status.last_t_s,
                line: format!(
                    "the store's filesystem ({}): {:.0} MiB, {:.0} MiB used, {:.0} MiB free",
                    r.engine.as_ref().and_then(|e| e.data_root.as_deref()).unwrap_or("its data root"),
                    mib(fs.size_bytes),
                    mib(fs.used_bytes),
                    mib(fs.size_bytes.saturating_sub(fs.used_bytes))
                ),
            });
        }
        out.push(diag(
            DiagnosisCode::StoreNoSpace,
            format!("a filesystem ran out of space: {}", ev[0].line),
            ev,
            Confidence::Certain,
        ));
    }
    let ev = src.find_unless(&DRIVER, &[&READ_ONLY, &NO_SPACE]);
    let images_missing = has(FailureCode::ImageMissing);
    let engine_up = r.engine.as_ref().is_some_and(|e| e.state == airboot_proto::EngineState::Up);
    let store_empty = images_missing && engine_up && !r.images.iter().any(|i| i.present);
    let moved_root = r
        .engine
        .as_ref()
        .and_then(|e| e.data_root.as_deref().map(|d| (d, default_root(&e.name))))
        .filter(|(d, default)| default.is_some_and(|x| d.trim_end_matches('/') != x));
    if let (true, Some((root, default))) = (store_empty && ev.is_empty(), moved_root) {
        out.push(diag(
            DiagnosisCode::DataRootMismatch,
            format!(
                "{engine_name} keeps its store in {root}, not {}, and lists no image: the seeded images are not where it looks",
                default.unwrap_or("?")
            ),
            vec![DiagEvidence {
                source: "engine".into(),
                t_s: r.status.last_t_s,
                line: format!(
                    "data root {root}{}; 0 image(s) listed; expected: {}",
                    r.engine.as_ref().and_then(|e| e.storage_driver.as_deref()).map(|d| format!(", driver {d}")).unwrap_or_default(),
                    expected_refs(r)
                ),
            }]
            .into_iter()
            .chain(seeded_store_evidence(r, default.unwrap_or("the default data root")))
            .collect(),
            Confidence::Certain,
        ));
    } else if !ev.is_empty() {
        out.push(diag(
            DiagnosisCode::StorageDriverMismatch,
            format!(
                "{engine_name} could not use the store's storage driver{}: {}",
                if images_missing { ", so the seeded images look missing" } else { "" },
                ev[0].line
            ),
            ev,
            Confidence::Certain,
        ));
    } else if store_empty {
        // Every expected image missing and nothing listed at all: the
        // engine is looking at an empty store, not a store missing one.
        out.push(diag(
            DiagnosisCode::StorageDriverMismatch,
            format!(
                "{engine_name} runs but lists no image at all while every expected image is missing: it is likely looking at an empty store (another storage driver or data root than the one seeded)"
            ),
            vec![DiagEvidence {
                source: "status".into(),
                t_s: r.status.last_t_s,
                line: format!(
                    "0 image(s) listed{}; expected: {}",
                    r.engine
                        .as_ref()
                        .and_then(|e| e.storage_driver.as_deref())
                        .map(|d| format!(" (driver {d})"))
                        .unwrap_or_default(),
                    expected_refs(r)
                ),
            }],
            Confidence::Guess,
        ));
    }
    let ev = src.find_unless(&KERNEL, &[&READ_ONLY, &NO_SPACE]);
    if !ev.is_empty() {
        out.push(diag(
            DiagnosisCode::KernelMissingFeatures,
            format!("the device kernel lacks something {engine_name} needs: {}", ev[0].line),
            ev,
            Confidence::Certain,
        ));
    }
    // A crash loop a cause above explains is that cause's symptom.
    let mut ev = src.find(&START_LIMIT);
    if !ev.is_empty() && out.is_empty() {
        let last = engine_detail.map(|d| format!("; its last error: {d}")).unwrap_or_default();
        if let Some(d) = engine_detail
            && !ev.iter().any(|e| e.line == d)
        {
            ev.push(DiagEvidence { source: "engine".into(), t_s: None, line: d.to_string() });
        }
        out.push(diag(
            DiagnosisCode::EngineCrashLoop,
            format!("{engine_name}'s unit failed until systemd gave up restarting it{last}"),
            ev,
            Confidence::Certain,
        ));
    }
    if has(FailureCode::EngineDown) && out.is_empty() {
        let d = engine_detail.unwrap_or("");
        // "<unit> is inactive, system is running" with no error before it.
        if !d.contains("; ") && (d.contains("masked") || d.contains(" is inactive")) {
            out.push(diag(
                DiagnosisCode::EngineNotStarted,
                format!("{engine_name} never started: {d}"),
                vec![DiagEvidence { source: "engine".into(), t_s: r.status.last_t_s, line: d.to_string() }],
                Confidence::Certain,
            ));
        }
    }
    let arch: Vec<DiagEvidence> = r
        .failures
        .iter()
        .filter(|f| f.code == FailureCode::ImageArchMismatch)
        .map(|f| DiagEvidence { source: "status".into(), t_s: None, line: f.message.clone() })
        .chain(if corrupt.is_some() { Vec::new() } else { src.find(&EXEC_FORMAT) })
        .take(MAX_EVIDENCE)
        .collect();
    if !arch.is_empty() {
        out.push(diag(
            DiagnosisCode::ImageArchMismatch,
            format!("an expected image cannot run on this device's platform: {}", arch[0].line),
            arch,
            Confidence::Certain,
        ));
    }
    let mut net: Vec<DiagEvidence> = r
        .airgap
        .egress_attempts
        .iter()
        .map(|a| DiagEvidence {
            source: "airgap".into(),
            t_s: None,
            line: format!("{} → {} ({}: {})", a.who, a.destination.as_deref().unwrap_or("?"), a.source, a.evidence),
        })
        .take(MAX_EVIDENCE)
        .collect();
    if net.is_empty() {
        net = src.find(&NET_LOOKUP);
    }
    if !net.is_empty() {
        let who: Vec<&str> = r.airgap.egress_attempts.iter().map(|a| a.who.as_str()).collect();
        out.push(diag(
            DiagnosisCode::NetworkDependentStart,
            if who.is_empty() {
                format!("the boot tried to reach a network: {}", net[0].line)
            } else {
                format!("{} tried to reach a network at boot", dedup(who).join(", "))
            },
            net,
            Confidence::Certain,
        ));
    }
    // The clock: only when it breaks a health check.
    let sick: Vec<&crate::verify::ContainerRow> = r
        .containers
        .iter()
        .filter(|c| c.expected && c.state == "running" && c.health.as_deref().is_some_and(|h| h != "healthy"))
        .collect();
    let behind_days = r.clock_skew_ms.filter(|ms| *ms < -86_400_000.0).map(|ms| -ms / 86_400_000.0);
    let said: Vec<DiagEvidence> = sick
        .iter()
        .filter_map(|c| {
            let o = c.health_output.as_deref().filter(|o| CLOCKISH.is_match(o))?;
            Some(DiagEvidence {
                source: format!("container {} health check", c.name),
                t_s: r.status.last_t_s,
                line: o.to_string(),
            })
        })
        .collect();
    if !sick.is_empty() && (!said.is_empty() || behind_days.is_some()) && has(FailureCode::ContainerUnhealthy) {
        let mut ev = said.clone();
        if let Some(d) = behind_days {
            ev.push(DiagEvidence {
                source: "probe".into(),
                t_s: None,
                line: format!(
                    "the device's clock was {d:.1} days behind the host's (clock_skew_ms {:.0})",
                    r.clock_skew_ms.unwrap_or(0.0)
                ),
            });
        }
        let names: Vec<&str> = sick.iter().map(|c| c.name.as_str()).collect();
        out.push(diag(
            DiagnosisCode::ClockBeforeImage,
            match behind_days {
                Some(d) => format!(
                    "the device's clock is {d:.1} days behind, and the health check of {} fails",
                    names.join(", ")
                ),
                None => format!("the health check of {} fails on the device's clock", names.join(", ")),
            },
            ev.into_iter().take(MAX_EVIDENCE).collect(),
            if !said.is_empty() && behind_days.is_some() { Confidence::Certain } else { Confidence::Guess },
        ));
    }
    let crashing: Vec<DiagEvidence> = r
        .containers
        .iter()
        .filter(|c| c.expected && (c.state == "restarting" || c.state == "exited" || c.state == "dead"))
        .flat_map(|c| {
            let exit = c.exit_code.map(|x| format!(", last exit code {x}")).unwrap_or_default();
            std::iter::once(DiagEvidence {
                source: "status".into(),
                t_s: r.status.last_t_s,
                line: format!("container {} ({}) is {}{exit}", c.name, c.image.as_deref().unwrap_or("?"), c.state),
            })
            .chain(c.log_tail.iter().map(|l| DiagEvidence {
                source: format!("container {} log", c.name),
                t_s: None,
                line: l.clone(),
            }))
        })
        .take(MAX_EVIDENCE)
        .collect();
    if !crashing.is_empty() && corrupt.is_none() && (has(FailureCode::ContainerNotRunning) || has(FailureCode::Timeout))
    {
        out.push(diag(
            DiagnosisCode::ContainerCrashLoop,
            format!("an expected container is not staying up: {}", crashing[0].line),
            crashing,
            Confidence::Certain,
        ));
    }
    out
}

/// What the offline read of the disk found at the default data root:
/// the seeded images, whole, where the engine did not look.
fn seeded_store_evidence(r: &Report, root: &str) -> Option<DiagEvidence> {
    let sc = r.store_check.as_ref()?;
    let whole: Vec<&str> = sc
        .check
        .images
        .iter()
        .filter(|i| i.state == crate::cut::store::ImageState::Complete)
        .map(|i| i.reference.as_str())
        .collect();
    (!whole.is_empty()).then(|| DiagEvidence {
        source: "store".into(),
        t_s: None,
        line: format!("read offline, {root} holds {} complete: {}", whole.len(), whole.join(", ")),
    })
}

/// Where an engine keeps its store unless configured otherwise.
fn default_root(engine: &str) -> Option<&'static str> {
    match engine {
        "docker" => Some("/var/lib/docker"),
        "podman" => Some("/var/lib/containers/storage"),
        _ => None,
    }
}

fn expected_refs(r: &Report) -> String {
    let refs: Vec<&str> = r.images.iter().filter(|i| i.expected).map(|i| i.reference.as_str()).collect();
    refs.join(", ")
}

fn dedup(v: Vec<&str>) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests;

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
mod tests {
    use super::*;
    use airboot_model::Failure;
    use airboot_proto::{EngineRecord, EngineState};

    use crate::verify::{ContainerRow, ImageRow};

    fn failed(codes: &[FailureCode]) -> Report {
        let mut r = Report::new("s", "s.toml", "now".into());
        for c in codes {
            r.failures.push(Failure::new(*c, "m"));
        }
        r
    }

    fn engine(state: EngineState, detail: &str) -> Option<EngineRecord> {
        Some(EngineRecord { name: "docker".into(), state, detail: Some(detail.into()), ..Default::default() })
    }

    fn line(t: f64, s: &str) -> TimedLine {
        TimedLine { t, text: s.into(), truncated: false }
    }

    fn codes(d: &[Diagnosis]) -> Vec<DiagnosisCode> {
        d.iter().map(|x| x.code).collect()
    }

    fn image(reference: &str, present: bool, expected: bool) -> ImageRow {
        ImageRow { reference: reference.into(), id: None, present, expected, expected_id: None }
    }

    #[test]
    fn a_run_that_passed_gets_none_whatever_the_console_says() {
        let mut r = failed(&[]);
        r.engine = engine(EngineState::Down, "chmod /var/lib/docker: read-only file system");
        let console =
            [line(3.0, "write /var/lib/docker/tmp/x: no space left on device"), line(4.0, "exec format error")];
        assert!(diagnose(&r, &console).is_empty());
    }

    /// The words the probe quoted from dockerd's journal in the
    /// read-only-store boot test (tests/boot.rs).
    #[test]
    fn a_read_only_store_is_named_from_the_engines_own_error() {
        let mut r = failed(&[FailureCode::EngineDown]);
        r.engine = engine(
            EngineState::Down,
            "chmod /var/lib/docker: read-only file system; docker.service is failed, system is running",
        );
        let d = diagnose(
            &r,
            &[line(9.0, "[FAILED] Failed to start docker.service - Docker Application Container Engine.")],
        );
        assert_eq!(codes(&d), [DiagnosisCode::StoreReadOnly], "{d:?}");
        assert_eq!(d[0].evidence[0].source, "engine");
        assert!(d[0].summary.contains("chmod /var/lib/docker: read-only"), "{}", d[0].summary);
        assert_eq!(d[0].fix, DiagnosisCode::StoreReadOnly.fix());
        // dockerd's graphdriver failing on a read-only store, having crash-
        // looped: the store's filesystem is the cause, not the driver, and
        // the loop is its symptom.
        r.engine = engine(
            EngineState::Down,
            "failed to start daemon: error initializing graphdriver: open /var/lib/docker/overlay2/.tmp: read-only file system; docker.service kept failing and hit its start limit (start-limit-hit); docker.service is failed, system is running",
        );
        assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::StoreReadOnly]);
        // A read-only path outside the store is not the store's.
        r.engine =
            engine(EngineState::Down, "open /etc/docker/key.json: read-only file system; docker.service is failed");
        assert!(!codes(&diagnose(&r, &[])).contains(&DiagnosisCode::StoreReadOnly));
    }

    #[test]
    fn no_space_during_a_load_is_named_with_the_console_line_and_its_time() {
        let mut r = failed(&[FailureCode::Timeout]);
        r.engine = engine(EngineState::Up, "");
        let d = diagnose(
            &r,
            &[
                line(1.0, "Welcome"),
                line(41.5, "Error processing tar file(exit status 1): write /usr/lib/x: no space left on device"),
            ],
        );
        assert_eq!(codes(&d), [DiagnosisCode::StoreNoSpace]);
        assert_eq!(d[0].evidence[0].t_s, Some(41.5));
    }

    #[test]
    fn an_empty_image_list_is_a_driver_guess_not_image_missing_alone() {
        let mut r = failed(&[FailureCode::ImageMissing, FailureCode::ImageMissing]);
        r.engine = engine(EngineState::Up, "");
        r.images = vec![image("fixture/redis:1", false, true), image("fixture/busybox:1", false, true)];
        let d = diagnose(&r, &[]);
        assert_eq!(codes(&d), [DiagnosisCode::StorageDriverMismatch]);
        assert_eq!(d[0].confidence, Confidence::Guess);
        assert!(d[0].evidence[0].line.contains("0 image(s) listed"), "{:?}", d[0].evidence);
        // The engine's own words make it certain.
        let d = diagnose(
            &r,
            &[line(
                20.0,
                r#"level=error msg="[graphdriver] prior storage driver overlay2 failed: driver not supported""#,
            )],
        );
        assert_eq!(d[0].confidence, Confidence::Certain);
        // The engine says where it looks: not where stores are seeded.
        r.engine.as_mut().unwrap().data_root = Some("/srv/docker".into());
        let d = diagnose(&r, &[]);
        assert_eq!(codes(&d), [DiagnosisCode::DataRootMismatch]);
        assert!(d[0].summary.contains("/srv/docker, not /var/lib/docker"), "{}", d[0].summary);
        assert_eq!(d[0].evidence.len(), 1, "no offline read, no word on the seeded store");
        // The disk read offline shows the seeded images where it did not look.
        r.store_check = Some(crate::report::OfflineStore {
            fs: crate::cut::FsFindings { clean: true, summary: "clean".into() },
            check: crate::cut::store::StoreCheck {
                verdict: crate::cut::store::StoreVerdict::New,
                images: vec![crate::cut::store::ImageCheck {
                    reference: "fixture/redis:1".into(),
                    id: None,
                    state: crate::cut::store::ImageState::Complete,
                }],
                layers_registered: 2,
                layers_verified: 2,
                problems: Vec::new(),
            },
        });
        let d = diagnose(&r, &[]);
        assert_eq!(d[0].evidence[1].line, "read offline, /var/lib/docker holds 1 complete: fixture/redis:1");
        r.store_check = None;
        r.engine.as_mut().unwrap().data_root = Some("/var/lib/docker/".into());
        assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::StorageDriverMismatch]);
        // One image present: the store is there, one image is missing from it.
        r.images[1].present = true;
        assert!(diagnose(&r, &[]).is_empty());
    }

    /// A first-boot loader that ran out of space: its unit's error, as the
    /// probe quotes it from the unit's journal, names the cause.
    #[test]
    fn a_failed_units_error_is_evidence() {
        let mut r = failed(&[FailureCode::ImageMissing]);
        r.engine = engine(EngineState::Up, "");
        r.images = vec![image("fixture/redis:1", false, true), image("fixture/busybox:1", true, true)];
        r.units.push(airboot_proto::UnitRecord {
            name: "airboot-load-images.service".into(),
            state: "failed".into(),
            error: Some(
                "Error processing tar file(exit status 1): write /usr/bin/redis-server: no space left on device".into(),
            ),
        });
        let d = diagnose(&r, &[]);
        assert_eq!(codes(&d), [DiagnosisCode::StoreNoSpace]);
        assert_eq!(d[0].evidence[0].source, "unit airboot-load-images.service");
    }

    #[test]
    fn a_kernel_without_netfilter_is_named() {
        let mut r = failed(&[FailureCode::EngineDown]);
        r.engine = engine(
            EngineState::Down,
            "failed to start daemon: Error initializing network controller: iptables failed; docker.service is failed, system is running",
        );
        assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::KernelMissingFeatures]);
    }

    #[test]
    fn a_masked_engine_never_started_and_a_start_limit_is_a_crash_loop() {
        let mut r = failed(&[FailureCode::EngineDown]);
        r.engine = engine(EngineState::Down, "docker.service is inactive, system is running");
        assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::EngineNotStarted]);
        r.engine = engine(EngineState::Down, "boom; docker.service is failed, system is running");
        assert!(diagnose(&r, &[]).is_empty(), "an error nothing names is no diagnosis");
        let d = diagnose(&r, &[line(30.0, "docker.service: Failed with result 'start-limit-hit'.")]);
        assert_eq!(codes(&d), [DiagnosisCode::EngineCrashLoop]);
        assert!(d[0].summary.contains("boom"), "{}", d[0].summary);
        // As the probe says it (the unit's Result).
        r.engine = engine(
            EngineState::Down,
            "boom; docker.service kept failing and hit its start limit (start-limit-hit); docker.service is failed, system is running",
        );
        assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::EngineCrashLoop]);
        r.engine = engine(
            EngineState::Down,
            "unknown flag: --no-such-flag; docker.service kept failing: restarted 2 times, then stopped (its start limit); docker.service is failed, system is running",
        );
        assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::EngineCrashLoop]);
    }

    #[test]
    fn egress_names_who_and_where() {
        let mut r = failed(&[FailureCode::EgressAttempt]);
        r.airgap.egress_attempts.push(crate::airgap::EgressAttempt {
            who: "pull-app.service".into(),
            destination: Some("registry-1.docker.io".into()),
            source: "journal".into(),
            evidence: "dial tcp: lookup registry-1.docker.io".into(),
        });
        let d = diagnose(&r, &[]);
        assert_eq!(codes(&d), [DiagnosisCode::NetworkDependentStart]);
        assert!(d[0].summary.contains("pull-app.service"), "{}", d[0].summary);
        assert!(d[0].evidence[0].line.contains("registry-1.docker.io"));
    }

    #[test]
    fn arch_mismatch_and_a_crashing_container() {
        let mut r = failed(&[FailureCode::ImageArchMismatch]);
        r.failures[0].message = "image fixture/redis:1 is linux/arm64, the guest is amd64".into();
        assert_eq!(codes(&diagnose(&r, &[])), [DiagnosisCode::ImageArchMismatch]);
        let mut r = failed(&[FailureCode::ContainerNotRunning]);
        r.containers.push(ContainerRow {
            name: "redis".into(),
            image: Some("fixture/redis:1".into()),
            state: "restarting".into(),
            health: None,
            expected: true,
            exit_code: Some(3),
            log_tail: vec!["redis: cannot open /dev/ttyUSB0".into()],
            health_output: None,
        });
        let d = diagnose(&r, &[]);
        assert_eq!(codes(&d), [DiagnosisCode::ContainerCrashLoop]);
        assert_eq!(
            d[0].summary,
            "an expected container is not staying up: container redis (fixture/redis:1) is restarting, last exit code 3"
        );
        assert_eq!(
            (d[0].evidence[1].source.as_str(), d[0].evidence[1].line.as_str()),
            ("container redis log", "redis: cannot open /dev/ttyUSB0")
        );
        r.containers[0].expected = false;
        assert!(diagnose(&r, &[]).is_empty(), "a container nobody expects is not the cause");
    }

    fn with_store(used: u64) -> Report {
        let mut r = failed(&[]);
        r.engine = Some(EngineRecord {
            name: "docker".into(),
            state: EngineState::Up,
            store_fs: Some(airboot_proto::FsUsage { size_bytes: 1 << 30, used_bytes: used }),
            ..Default::default()
        });
        r
    }

    #[test]
    fn a_boot_after_a_reboot_that_loads_again_is_load_every_boot_with_its_time_and_growth() {
        let first = with_store(100 << 20);
        let mut next = with_store((100 << 20) + (3 << 19));
        next.image_loads = vec![
            crate::run::ImageLoad { image: "sha256:aaa".into(), t_s: 10.5 },
            crate::run::ImageLoad { image: "sha256:bbb".into(), t_s: 18.0 },
        ];
        let brief = crate::report::NextBoot::of("again", &first, &next);
        assert_eq!(brief.image_loads, 2);
        assert_eq!(brief.load_s, Some(7.5));
        assert_eq!(brief.store_growth_bytes, Some(3 << 19));
        let d = load_every_boot("again", &next, &brief).expect("diagnosed");
        assert_eq!(d.code, DiagnosisCode::LoadEveryBoot);
        assert_eq!(
            d.summary,
            "after the again step's reboot, docker loaded 2 images again (aaa, bbb) over 7.5 s; the store's filesystem changed by +1.5 MiB"
        );
        assert_eq!(d.evidence.len(), 2);
        assert_eq!((d.evidence[0].source.as_str(), d.evidence[0].t_s), ("again/status", Some(10.5)));
        // A second boot that loads nothing: no diagnosis, no load time.
        let quiet = with_store(100 << 20);
        let brief = crate::report::NextBoot::of("again", &first, &quiet);
        assert_eq!((brief.image_loads, brief.load_s, brief.store_growth_bytes), (0, None, Some(0)));
        assert!(load_every_boot("again", &quiet, &brief).is_none());
    }

    #[test]
    fn a_damaged_layer_read_offline_is_store_corrupt_and_its_symptoms_are_not_named() {
        use crate::cut::store::{ImageCheck, ImageState, StoreCheck, StoreVerdict};
        let mut r = failed(&[FailureCode::ImageRunFailed, FailureCode::ContainerNotRunning]);
        r.containers = vec![ContainerRow {
            name: "web".into(),
            image: Some("fixture/busybox:1".into()),
            state: "exited".into(),
            health: None,
            expected: true,
            ..Default::default()
        }];
        let console = [line(30.0, "exec /bin/httpd: exec format error")];
        // Without the offline read: the symptoms are what shows.
        assert_eq!(
            codes(&diagnose(&r, &console)),
            [DiagnosisCode::ImageArchMismatch, DiagnosisCode::ContainerCrashLoop]
        );
        let damaged = "layer 1 (chain cb3178004ce4) is damaged: its files do not hash to its diff_id";
        r.store_check = Some(crate::report::OfflineStore {
            fs: crate::cut::FsFindings { clean: true, summary: "clean".into() },
            check: StoreCheck {
                verdict: StoreVerdict::Corrupt,
                images: vec![ImageCheck {
                    reference: "fixture/busybox:1".into(),
                    id: Some("sha256:e1".into()),
                    state: ImageState::Corrupt(damaged.into()),
                }],
                layers_registered: 4,
                layers_verified: 3,
                problems: Vec::new(),
            },
        });
        let d = diagnose(&r, &console);
        assert_eq!(codes(&d), [DiagnosisCode::StoreCorrupt]);
        assert!(d[0].summary.contains("(3 of 4 layers verified)"), "{}", d[0].summary);
        assert_eq!(d[0].evidence[0].line, format!("fixture/busybox:1: {damaged}"));
        assert_eq!(d[0].evidence[0].source, "store");
        // A store read offline and found whole explains nothing.
        r.store_check.as_mut().unwrap().check.verdict = StoreVerdict::New;
        assert!(!codes(&diagnose(&r, &console)).contains(&DiagnosisCode::StoreCorrupt));
        // Which failures make the store worth reading at all.
        assert!(wants_store_check(&{
            let mut x = failed(&[FailureCode::ImageRunFailed]);
            x.verdict = airboot_model::Verdict::Fail;
            x
        }));
        assert!(!wants_store_check(&{
            let mut x = failed(&[FailureCode::AirgapRoute]);
            x.verdict = airboot_model::Verdict::Fail;
            x
        }));
    }

    #[test]
    fn an_engine_error_is_timed_when_first_seen_and_the_run_end_is_measured_from_it() {
        let mut r = failed(&[FailureCode::EngineDown]);
        let e = "chmod /var/lib/docker: read-only file system; docker.service is failed";
        r.engine = engine(EngineState::Down, e);
        r.status.errors_first_seen_s.insert("chmod /var/lib/docker: read-only file system".into(), 21.5);
        r.status.ended_s = Some(24.0);
        let d = diagnose(&r, &[line(30.0, "unrelated")]);
        assert_eq!(codes(&d), [DiagnosisCode::StoreReadOnly]);
        assert_eq!(d[0].evidence[0].t_s, Some(21.5));
        assert_eq!(d[0].ended_after_s, Some(2.5));
        assert!(d[0].code.settles_run());
        assert_eq!(too_slow(&d[0]), None);
        r.status.ended_s = Some(40.0);
        let late = diagnose(&r, &[]);
        assert!(too_slow(&late[0]).unwrap().contains("ended 18.5s after"), "{:?}", too_slow(&late[0]));
        // Untimed evidence: nothing to measure from.
        r.status.errors_first_seen_s.clear();
        let d = diagnose(&r, &[]);
        assert_eq!(d[0].ended_after_s, None);
        assert!(too_slow(&d[0]).unwrap().contains("none of its evidence is timed"));
    }

    #[test]
    fn a_clock_behind_is_named_only_when_a_health_check_breaks_on_it() {
        let mut r = failed(&[FailureCode::ContainerUnhealthy]);
        let out = "app-cert.pem: certificate is not yet valid (notBefore 2026-11-26T09:00:00Z, device clock 2026-04-28T00:00:09Z)";
        r.containers.push(ContainerRow {
            name: "web".into(),
            state: "running".into(),
            health: Some("unhealthy".into()),
            expected: true,
            health_output: Some(out.into()),
            ..Default::default()
        });
        r.clock_skew_ms = Some(-18_368_384_747.0);
        let d = diagnose(&r, &[]);
        assert_eq!(codes(&d), [DiagnosisCode::ClockBeforeImage]);
        assert_eq!(d[0].confidence, Confidence::Certain);
        assert_eq!(d[0].summary, "the device's clock is 212.6 days behind, and the health check of web fails");
        assert_eq!(d[0].evidence[0].line, out);
        // Either piece alone is a guess.
        r.clock_skew_ms = Some(120.0);
        assert_eq!(diagnose(&r, &[])[0].confidence, Confidence::Guess);
        // A failing check that says nothing of time, on a clock that is right: not this.
        r.containers[0].health_output = Some("redis: connection refused".into());
        assert!(diagnose(&r, &[]).is_empty());
        // A clock far behind with every check passing: nothing to say.
        r.clock_skew_ms = Some(-18_368_384_747.0);
        r.containers[0].health = Some("healthy".into());
        r.failures.clear();
        assert!(diagnose(&r, &[]).is_empty());
    }
}

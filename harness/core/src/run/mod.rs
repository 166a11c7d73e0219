//! The run state machine: fed console lines, probe answers, ticks and
//! process events with host timestamps (seconds since t0 = the QMP
//! `cont`), it decides when a run has passed, failed, or must go on. It
//! never waits or reads a clock itself, so every path is testable without
//! a VM.
//!
//! With a probe, a run goes booting → stack ready → verified: once every
//! expectation holds, the caller is asked (`Decision::Verify`) to have the
//! probe run each expected image with no network and collect the air-gap
//! evidence, and to feed the results back with [`Run::on_verification`].
//!
//! `mod.rs` holds the state and what the console and the probe feed it;
//! `stack.rs` judges what the guest reports against the expectations;
//! `end.rs` decides when the run is over and what it came to.

mod end;
mod stack;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use airboot_proto::probe::{ProbeStatus, RunImageResult};

use crate::airgap::Airgap;
use crate::console::{ConsoleRules, FailPattern, TimedLine, default_fail_patterns};
use crate::guest::{ClockMap, ClockSample, clock_map, guest_times, to_block};
use airboot_model::{Engine, Failure, FailureCode, Verdict};

use crate::report::Milestone;
use crate::scenario::{Expect, MilestoneSpec};
use crate::status::{Assembled, Assembler, StatusBlock};
use crate::verify::{ContainerRow, Evaluation, ImageRow};

/// Everything a run needs to judge the guest.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub expect: Expect,
    /// Image IDs from the image's build record (fixture manifest).
    pub known_ids: BTreeMap<String, String>,
    /// The scenario's own milestones.
    pub milestones: Vec<MilestoneSpec>,
    /// 1.0 under KVM; the scenario's TCG slowdown under TCG.
    pub scale: f64,
    /// A probe answers over a transport: verify images and the air gap
    /// before passing.
    pub probe: bool,
    /// No probe: airboot logs in on the console and starts the reference
    /// reporter (`[image] login`).
    pub login: bool,
    /// The probe was injected by airboot (not in the image): if it never
    /// answers, the run ends soon after the login prompt.
    pub injected: bool,
}

/// Milestones every run watches for on the console. None is required: a
/// quiet kernel or another init prints different lines. The `engine`
/// milestone is the expected engine's own start line.
pub fn builtin_milestones(engine: Engine) -> Vec<MilestoneSpec> {
    let m = |name: &str, console: &str| MilestoneSpec {
        name: name.into(),
        console: console.into(),
        required: false,
        within: None,
    };
    vec![
        // UEFI boots: the firmware's boot manager starting the loader, then
        // the kernel's EFI stub (never seen on direct boots). BIOS boots:
        // SeaBIOS prints nothing on the serial port, so no `firmware`; the
        // loader's banner (syslinux and its kin) or GRUB's "Booting `…'".
        m("firmware", r"BdsDxe: (loading|starting) Boot"),
        m("loader", r"EFI stub: |^(?:SYS|EXT|ISO|PXE)LINUX \d+\.\d+ |^\s*Booting `[^']*'"),
        m("kernel", r"Linux version \d"),
        // The real root's init: systemd's welcome (not an initramfs's
        // "Welcome to … (Initramfs)!", nor its systemd's start line, which
        // a dracut initramfs prints too), the kernel starting /sbin/init,
        // or sysvinit's banner.
        m(
            "init",
            r"Welcome to (?:[^(!]|\((?:[^I)]|I[^n])[^)]*\))*!|Run /s?bin/init as init process|INIT: version \S+ booting",
        ),
        m("engine", crate::engine::model(engine).started()),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    /// Have the probe run the images and collect the air-gap evidence,
    /// then call [`Run::on_verification`].
    Verify,
    /// The run is decided: stop the VM and call [`Run::finish`].
    Stop,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub verdict: Verdict,
    pub failures: Vec<Failure>,
    pub milestones: Vec<Milestone>,
    pub time_to_stack_s: Option<f64>,
    /// When the host first saw the stack ready (≥ time_to_stack_s, which
    /// comes from the guest's own timestamps when a probe is used).
    pub stack_seen_s: Option<f64>,
    pub images: Vec<ImageRow>,
    pub containers: Vec<ContainerRow>,
    pub engine: Option<airboot_proto::EngineRecord>,
    /// The stack's units as last reported (with a failed unit's error).
    pub units: Vec<airboot_proto::UnitRecord>,
    pub status_blocks: u64,
    pub damaged_status_blocks: u64,
    /// Each error the guest reported (the engine's, a unit's), and when it
    /// was first seen.
    pub errors_first_seen: std::collections::BTreeMap<String, f64>,
    /// When the evidence that settled the run showed, if it did.
    pub settled_at_s: Option<f64>,
    pub last_status_t: Option<f64>,
    pub guest_uptime_s: Option<f64>,
    pub guest_machine: Option<String>,
    /// The guest's init system, as the probe saw it.
    pub guest_init: Option<String>,
    pub probe_connected_s: Option<f64>,
    /// What came over the probe's transport that was no answer.
    pub probe_errors: crate::report::ProtocolErrors,
    pub clock_skew_ms: Option<f64>,
    pub image_runs: Vec<RunImageResult>,
    pub airgap: Option<Airgap>,
    /// Every image load the engine reported during the boot.
    pub image_loads: Vec<ImageLoad>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
}

/// An image the engine loaded (`docker load`) during the boot: what its
/// event named, and when (seconds from t0, from the guest's clock).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageLoad {
    pub image: String,
    pub t_s: f64,
}

#[derive(Debug)]
pub struct Run {
    cfg: RunConfig,
    rules: ConsoleRules,
    specs: Vec<MilestoneSpec>,
    hits: Vec<Option<Milestone>>,
    status_hits: Vec<Milestone>,
    assembler: Assembler,
    last_block: Option<StatusBlock>,
    last_eval: Option<Evaluation>,
    stack_t: Option<f64>,
    stack_seen_t: Option<f64>,
    failures: Vec<Failure>,
    error: bool,
    done: bool,
    last_line: Option<TimedLine>,
    /// When the console last showed a login prompt.
    login_t: Option<f64>,
    /// Whether anything in the guest printed a status line.
    reporter_seen: bool,
    /// When a console login started the reporter.
    reporter_started_t: Option<f64>,
    /// A whole, valid status block arrived (not just the marker: a script
    /// echoed onto the console carries it too).
    block_seen: bool,
    /// With a probe: when its first whole console status block arrived
    /// while the host had not reached it, and the latest such block.
    probe_block_t: Option<f64>,
    probe_block: Option<StatusBlock>,
    /// What the probe's transport carried instead of answers, if so.
    probe_errors: crate::report::ProtocolErrors,
    /// When the probe's transport first, and last, carried a line that
    /// was no answer.
    probe_errors_t: Option<(f64, f64)>,
    guest_machine: Option<String>,
    guest_init: Option<String>,
    probe_connected_t: Option<f64>,
    statuses: u64,
    skews: Vec<f64>,
    /// The clock mapping with the smallest round trip so far: all guest
    /// timestamps are converted with it, so they stay consistent.
    best_map: Option<ClockMap>,
    verifying: bool,
    verified: bool,
    /// The last status taken after the stack was first seen (at the end
    /// of the verification): did the containers stay up?
    after_stack: Option<(crate::status::StatusBlock, crate::verify::Evaluation)>,
    errors_first_seen: std::collections::BTreeMap<String, f64>,
    image_runs: Vec<RunImageResult>,
    image_loads: Vec<ImageLoad>,
    airgap: Option<Airgap>,
    notes: Vec<String>,
    /// Evidence of a cause that settles the run: when it showed, and what.
    settle: Option<(f64, String)>,
    /// The run was decided by that evidence.
    settled: bool,
    /// A write out of space before the engine ran: it settles the run if
    /// the engine then goes down.
    early_full_disk: Option<(f64, String)>,
    /// docker-compose's words about services it did not start.
    compose_waits: Vec<crate::compose::DependencyFailure>,
}

/// How long after evidence that settles the run the run is decided
/// (wall seconds, not scaled): time for one more probe status, so the
/// report shows the state the cause left.
pub const SETTLE_GRACE_S: f64 = 3.0;

impl Run {
    pub fn new(cfg: RunConfig) -> Result<Run, regex::Error> {
        let mut specs = builtin_milestones(cfg.expect.engine);
        for m in &cfg.milestones {
            match specs.iter_mut().find(|s| s.name == m.name) {
                Some(s) => *s = m.clone(),
                None => specs.push(m.clone()),
            }
        }
        let mut fails: Vec<FailPattern> = if cfg.expect.default_fail_on { default_fail_patterns() } else { Vec::new() };
        fails.extend(cfg.expect.fail_on.iter().map(|r| FailPattern {
            code: FailureCode::FailPattern,
            regex: r.clone(),
            meaning: format!("the console matched the scenario's fail_on pattern {r:?}"),
        }));
        let pairs: Vec<(String, String)> = specs.iter().map(|s| (s.name.clone(), s.console.clone())).collect();
        let rules = ConsoleRules::new(&pairs, fails)?;
        Ok(Run {
            hits: vec![None; specs.len()],
            specs,
            rules,
            cfg,
            status_hits: Vec::new(),
            assembler: Assembler::new(),
            last_block: None,
            last_eval: None,
            stack_t: None,
            stack_seen_t: None,
            failures: Vec::new(),
            error: false,
            done: false,
            last_line: None,
            login_t: None,
            reporter_seen: false,
            reporter_started_t: None,
            block_seen: false,
            probe_block_t: None,
            probe_block: None,
            probe_errors: Default::default(),
            probe_errors_t: None,
            guest_machine: None,
            guest_init: None,
            probe_connected_t: None,
            statuses: 0,
            skews: Vec::new(),
            best_map: None,
            verifying: false,
            verified: false,
            image_runs: Vec::new(),
            image_loads: Vec::new(),
            after_stack: None,
            errors_first_seen: Default::default(),
            settle: None,
            settled: false,
            early_full_disk: None,
            compose_waits: Vec::new(),
            airgap: None,
            notes: Vec::new(),
        })
    }

    /// The overall deadline in seconds since t0 (the scaled timeout).
    pub fn deadline_s(&self) -> f64 {
        self.cfg.expect.timeout.as_secs_f64() * self.cfg.scale
    }

    /// The scaled time-to-stack budget, if any.
    pub fn budget_s(&self) -> Option<f64> {
        self.cfg.expect.time_to_stack.map(|d| d.as_secs_f64() * self.cfg.scale)
    }

    /// Whether the scenario expects a container stack (else it is judged on
    /// milestones alone).
    fn wants_stack(&self) -> bool {
        !self.cfg.expect.images.is_empty()
            || !self.cfg.expect.containers.is_empty()
            || self.cfg.expect.compose.is_some()
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How many milestones have been seen so far.
    pub fn seen(&self) -> usize {
        self.hits.iter().flatten().count() + self.status_hits.len()
    }

    /// Milestones seen so far, by time.
    pub fn milestones(&self) -> Vec<Milestone> {
        let mut m: Vec<Milestone> =
            self.hits.iter().flatten().cloned().chain(self.status_hits.iter().cloned()).collect();
        m.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        m
    }

    /// Add a note for the report (not a failure).
    /// A console login started the reference reporter at `t` (as `user`).
    pub fn on_login_started(&mut self, t: f64, user: &str) {
        self.reporter_started_t = Some(t);
        self.note(format!(
            "status came from a console login as {user:?}: airboot typed the reference reporter (images/reference/airboot-status) into the guest's /run and started it at {t:.1}s. Its timeline is coarse: each round asks the engine's CLI (seconds under TCG), and no image test runs or air-gap proof are possible without the probe"
        ));
    }

    pub fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    fn stop_fail(&mut self, f: Failure) -> Decision {
        self.failures.push(f);
        self.done = true;
        Decision::Stop
    }

    /// Whether the milestone `name` has been reached.
    fn reached(&self, name: &str) -> bool {
        self.hits.iter().flatten().chain(&self.status_hits).any(|m| m.name == name)
    }

    /// Record a milestone the first time it is seen.
    fn hit(&mut self, name: &str, t: f64, source: &str, evidence: String) {
        if let Some(i) = self.specs.iter().position(|s| s.name == name) {
            if self.hits[i].is_none() {
                self.hits[i] = Some(Milestone { name: name.into(), t_s: t, source: source.into(), evidence });
            }
        } else if !self.status_hits.iter().any(|m| m.name == name) {
            self.status_hits.push(Milestone { name: name.into(), t_s: t, source: source.into(), evidence });
        }
    }

    /// Record a milestone from the guest's own timestamps: more exact than
    /// when the host happened to notice, so it replaces an earlier entry.
    fn hit_guest(&mut self, name: &str, t: f64, evidence: String) {
        let m = Milestone { name: name.into(), t_s: t, source: "guest".into(), evidence };
        if let Some(i) = self.specs.iter().position(|s| s.name == name) {
            self.hits[i] = Some(m);
        } else if let Some(e) = self.status_hits.iter_mut().find(|x| x.name == name) {
            *e = m;
        } else {
            self.status_hits.push(m);
        }
    }

    /// A console line. Lines must arrive in time order.
    pub fn on_line(&mut self, line: &TimedLine) -> Decision {
        if self.done {
            return Decision::Stop;
        }
        self.last_line = Some(line.clone());
        if is_login_prompt(&line.text) {
            self.login_t = Some(line.t);
        }
        if line.text.contains(airboot_proto::STATUS_MARKER) {
            self.reporter_seen = true;
        }
        let m = self.rules.scan(&line.text);
        for i in m.milestones {
            if self.hits[i].is_none() {
                let name = self.rules.milestone_name(i).to_string();
                self.hit(&name, line.t, "console", line.text.clone());
            }
        }
        self.note_settling(line.t, &line.text);
        self.note_compose(&line.text);
        if let Some(f) = m.fail {
            let p = self.rules.fail_pattern(f).clone();
            return self.stop_fail(Failure {
                code: p.code,
                message: format!("{} (at {:.1}s)", p.meaning, line.t),
                evidence: Some(line.text.clone()),
            });
        }
        // With a probe, console status blocks (printed until the host says
        // hello) are not needed; without one they are the only source.
        if self.probe_connected_t.is_none() {
            match self.assembler.push(line.t, &line.text) {
                Assembled::Nothing | Assembled::Damaged(_) => {}
                Assembled::Unsupported(why) => {
                    self.error = true;
                    return self.stop_fail(Failure {
                        code: FailureCode::StatusProtocol,
                        message: format!("{why}: upgrade airboot or the image's status reporter"),
                        evidence: Some(line.text.clone()),
                    });
                }
                Assembled::Block(b) if !self.cfg.probe => {
                    self.block_seen = true;
                    return self.on_block(*b, None);
                }
                Assembled::Block(b) => {
                    // The probe runs (it prints these until the host says
                    // hello); kept in case the host never reaches it.
                    self.probe_block_t.get_or_insert(line.t);
                    self.probe_block = Some(*b);
                }
            }
        }
        self.check_progress(line.t)
    }

    /// What came over the probe's transport that was no answer (malformed,
    /// over-long, unsolicited), counted over the run: reported, and the
    /// verdict if the probe never answers.
    pub fn on_probe_errors(&mut self, t: f64, total: crate::report::ProtocolErrors) {
        if total != self.probe_errors {
            let first = self.probe_errors_t.map_or(t, |(first, _)| first);
            self.probe_errors_t = Some((first, t));
        }
        self.probe_errors = total;
    }

    /// The probe answered the handshake.
    pub fn on_probe_hello(&mut self, t: f64, machine: &str) {
        if self.probe_connected_t.is_none() {
            self.probe_connected_t = Some(t);
            self.guest_machine = Some(machine.to_string());
            self.hit("probe", t, "probe", format!("probe answered (guest {machine})"));
        }
    }

    /// A status from the probe, with when it was asked for and received.
    pub fn on_probe_status(&mut self, s: &ProbeStatus, sample: ClockSample) -> Decision {
        if self.done {
            return Decision::Stop;
        }
        self.statuses += 1;
        let sample_map = clock_map(&sample, &s.clocks);
        self.skews.push(sample_map.skew_ms);
        if self.best_map.is_none_or(|b| sample_map.error_s < b.error_s) {
            self.best_map = Some(sample_map);
        }
        let map = self.best_map.unwrap_or(sample_map);
        let times = guest_times(s, &map, crate::engine::model(self.cfg.expect.engine).unit());
        // The engine keeps its events from its start: each answer has them all.
        if times.loads.len() >= self.image_loads.len() {
            self.image_loads =
                times.loads.iter().map(|(image, t)| ImageLoad { image: image.clone(), t_s: *t }).collect();
        }
        if self.verifying || self.verified {
            if self.verifying && self.wants_stack() {
                let block = to_block(s, sample.received_s, self.guest_machine.as_deref());
                let ev = crate::verify::evaluate(&self.cfg.expect, &self.cfg.known_ids, &block);
                self.after_stack = Some((block, ev));
            }
            return self.check_progress(sample.received_s);
        }
        if self.guest_init.is_none() && !s.init.is_empty() {
            self.guest_init = Some(s.init.clone());
            if s.init != "systemd" {
                self.note(format!(
                    "the guest runs {}, not systemd: its init time is the console's, the engine's is its daemon's process start (/proc), and the stack is judged by its containers (no units)",
                    s.init
                ));
            }
        }
        if let Some(t) = times.init {
            self.hit_guest("init", t, format!("systemd UserspaceTimestampMonotonic {}µs", s.userspace_us));
        }
        let block = to_block(s, sample.received_s, self.guest_machine.as_deref());
        self.on_block(block, Some(times))
    }
}

/// A getty's prompt: `login:` alone, or `<host> login:` at the start of
/// the line; kernel messages often finish the prompt's line
/// (`device login: [   16.69] Initializing XFRM netlink socket`).
pub fn is_login_prompt(text: &str) -> bool {
    let t = text.trim();
    if t == "login:" {
        return true;
    }
    match t.split_once(' ') {
        Some((host, rest)) => {
            // "Last login: Tue …" is the message after a login, not a prompt.
            !host.is_empty()
                && host != "Last"
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                && (rest == "login:" || rest.starts_with("login: "))
        }
        None => false,
    }
}

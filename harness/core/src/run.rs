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

use std::collections::BTreeMap;

use airboot_proto::probe::{AirgapReport, ProbeStatus, RunImageResult};

use crate::airgap::{self, Airgap};
use crate::console::{ConsoleRules, FailPattern, TimedLine, default_fail_patterns};
use crate::guest::{ClockMap, ClockSample, GuestTimes, clock_map, guest_times, to_block};
use airboot_model::{Failure, FailureCode, Verdict};

use crate::report::Milestone;
use crate::scenario::{Expect, MilestoneSpec};
use crate::status::{Assembled, Assembler, StatusBlock};
use crate::verify::{ContainerRow, Evaluation, ImageRow, evaluate};

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
    /// The engine's systemd unit (for its activation time).
    pub engine_unit: String,
}

/// Milestones every run watches for on the console. None is required: a
/// quiet kernel or another init prints different lines.
pub fn builtin_milestones() -> Vec<MilestoneSpec> {
    let m = |name: &str, console: &str| MilestoneSpec {
        name: name.into(),
        console: console.into(),
        required: false,
        within: None,
    };
    vec![
        // UEFI boots: the firmware's boot manager starting the loader, then
        // the kernel's EFI stub (never seen on direct boots).
        m("firmware", r"BdsDxe: (loading|starting) Boot"),
        m("loader", r"EFI stub: "),
        m("kernel", r"Linux version \d"),
        m("init", r"Welcome to .*!|systemd\[1\]: systemd \d+ running|Run /s?bin/init as init process"),
        m(
            "engine",
            r"Started (docker|containerd|podman)\.service|Started .*(Docker Application Container Engine|containerd container runtime)",
        ),
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
    pub status_blocks: u64,
    pub damaged_status_blocks: u64,
    pub last_status_t: Option<f64>,
    pub guest_uptime_s: Option<f64>,
    pub guest_machine: Option<String>,
    pub probe_connected_s: Option<f64>,
    pub clock_skew_ms: Option<f64>,
    pub image_runs: Vec<RunImageResult>,
    pub airgap: Option<Airgap>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
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
    guest_machine: Option<String>,
    probe_connected_t: Option<f64>,
    statuses: u64,
    skews: Vec<f64>,
    /// The clock mapping with the smallest round trip so far: all guest
    /// timestamps are converted with it, so they stay consistent.
    best_map: Option<ClockMap>,
    verifying: bool,
    verified: bool,
    image_runs: Vec<RunImageResult>,
    airgap: Option<Airgap>,
    notes: Vec<String>,
}

impl Run {
    pub fn new(cfg: RunConfig) -> Result<Run, regex::Error> {
        let mut specs = builtin_milestones();
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
            guest_machine: None,
            probe_connected_t: None,
            statuses: 0,
            skews: Vec::new(),
            best_map: None,
            verifying: false,
            verified: false,
            image_runs: Vec::new(),
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
        !self.cfg.expect.images.is_empty() || !self.cfg.expect.containers.is_empty()
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
        let m = self.rules.scan(&line.text);
        for i in m.milestones {
            if self.hits[i].is_none() {
                let name = self.rules.milestone_name(i).to_string();
                self.hit(&name, line.t, "console", line.text.clone());
            }
        }
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
                Assembled::Block(b) if !self.cfg.probe => return self.on_block(*b, None),
                Assembled::Block(_) => {}
            }
        }
        self.check_progress(line.t)
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
        if self.verifying || self.verified {
            return self.check_progress(sample.received_s);
        }
        let times = guest_times(s, &map, &self.cfg.engine_unit);
        if let Some(t) = times.init {
            self.hit_guest("init", t, format!("systemd UserspaceTimestampMonotonic {}µs", s.userspace_us));
        }
        let block = to_block(s, sample.received_s, self.guest_machine.as_deref());
        self.on_block(block, Some(times))
    }

    fn on_block(&mut self, b: StatusBlock, times: Option<GuestTimes>) -> Decision {
        let t = b.t;
        let ev = evaluate(&self.cfg.expect, &self.cfg.known_ids, &b);
        let evidence = if times.is_some() {
            format!("probe status at {t:.1}s")
        } else {
            format!("status block {} at {:.1}s", b.seq, t)
        };
        let g = times.unwrap_or_default();
        if ev.engine_up {
            match g.engine {
                Some(te) => {
                    self.hit_guest("engine", te.min(t), format!("{} ActiveEnterTimestamp", self.cfg.engine_unit))
                }
                None => self.hit("engine", t, "status", evidence.clone()),
            }
        }
        // When each expectation came true, from the guest's records where
        // it has them (else: when the host saw it).
        let engine_t = g.engine.unwrap_or(t).min(t);
        let image_t = |r: &str| g.images.get(r).copied().unwrap_or(engine_t).min(t);
        let mut ready_times = vec![engine_t];
        if ev.images_ok && !self.cfg.expect.images.is_empty() {
            let ti = self.cfg.expect.images.iter().map(|e| image_t(&e.reference)).fold(engine_t, f64::max);
            ready_times.push(ti);
            if g.engine.is_some() {
                self.hit_guest("images", ti, "image tag/load events (or present when the engine started)".into());
            } else {
                self.hit("images", t, "status", evidence.clone());
            }
        }
        for n in &ev.running {
            match g.running.get(n) {
                Some(tr) => {
                    ready_times.push(tr.min(t));
                    self.hit_guest(&format!("container:{n}"), tr.min(t), format!("{n} StartedAt / start event"));
                }
                None => {
                    ready_times.push(t);
                    self.hit(&format!("container:{n}"), t, "status", evidence.clone());
                }
            }
        }
        let healthy: Vec<String> = ev
            .ready
            .iter()
            .filter(|n| b.containers.iter().any(|x| x.name.trim_start_matches('/') == n.as_str() && x.health.is_some()))
            .cloned()
            .collect();
        for n in healthy {
            match g.healthy.get(&n) {
                Some(th) => {
                    ready_times.push(th.min(t));
                    self.hit_guest(&format!("healthy:{n}"), th.min(t), format!("{n}: first passing health check"));
                }
                None => {
                    ready_times.push(t);
                    self.hit(&format!("healthy:{n}"), t, "status", evidence.clone());
                }
            }
        }
        let satisfied = ev.satisfied() && self.wants_stack();
        let is_final = b.is_final;
        let problems = ev.problems.clone();
        self.last_eval = Some(ev);
        self.last_block = Some(b);
        if satisfied && self.stack_t.is_none() {
            let ts = ready_times.into_iter().fold(0.0, f64::max).min(t);
            self.stack_t = Some(ts);
            self.stack_seen_t = Some(t);
            let how = if g.engine.is_some() { "guest" } else { "status" };
            if how == "guest" {
                self.hit_guest("stack", ts, format!("every expectation held (seen by the host at {t:.1}s)"));
            } else {
                self.hit("stack", ts, "status", evidence.clone());
            }
            if let Some(budget) = self.budget_s()
                && ts > budget
            {
                return self.stop_fail(Failure {
                    code: FailureCode::OverBudget,
                    message: format!(
                        "time to running stack {ts:.1}s is over the budget of {budget:.1}s ({}s × {} for this accelerator)",
                        self.cfg.expect.time_to_stack.unwrap_or_default().as_secs_f64(),
                        self.cfg.scale
                    ),
                    evidence: Some(evidence),
                });
            }
            if self.cfg.probe {
                self.verifying = true;
                return Decision::Verify;
            }
        }
        // An image built for another platform can never run here: waiting
        // for the stack to settle would only wait for the timeout (its
        // containers fail and restart for ever).
        if !satisfied && self.wants_stack() && problems.iter().any(|p| p.code == FailureCode::ImageArchMismatch) {
            self.failures.extend(problems.into_iter().filter(|p| p.code == FailureCode::ImageArchMismatch).map(|p| {
                Failure {
                    code: p.code,
                    message: p.message,
                    evidence: Some(format!(
                        "{evidence} (decided at once: the engine lists the image, and no retry can run it)"
                    )),
                }
            }));
            self.done = true;
            return Decision::Stop;
        }
        if !satisfied && is_final && self.wants_stack() {
            self.failures.extend(problems.into_iter().map(|p| Failure {
                code: p.code,
                message: p.message,
                evidence: Some(format!("{evidence} (the guest says its stack has settled)")),
            }));
            if self.failures.is_empty() {
                self.failures.push(Failure {
                    code: FailureCode::StackNotReady,
                    message: "the guest's stack settled without meeting the expectations".into(),
                    evidence: Some(evidence),
                });
            }
            self.done = true;
            return Decision::Stop;
        }
        self.check_progress(t)
    }

    /// What the probe found when asked to verify: each image run with no
    /// network, and the air-gap evidence.
    pub fn on_verification(&mut self, t: f64, runs: Vec<RunImageResult>, report: Option<&AirgapReport>) -> Decision {
        if self.done {
            return Decision::Stop;
        }
        self.verifying = false;
        self.verified = true;
        for r in &runs {
            if !r.ran {
                self.failures.push(Failure {
                    code: FailureCode::ImageRunFailed,
                    message: format!(
                        "image {} is listed but does not run (with --network none): {}",
                        r.reference, r.detail
                    ),
                    evidence: Some(format!("probe run_image after {:.1}s", r.duration_s)),
                });
            }
        }
        self.image_runs = runs;
        match report {
            Some(rep) => {
                let (a, problems) = airgap::judge(rep);
                for p in problems {
                    let evidence =
                        a.egress_attempts.iter().map(|e| e.evidence.clone()).take(3).collect::<Vec<_>>().join(" | ");
                    self.failures.push(Failure {
                        code: p.code,
                        message: p.message,
                        evidence: (!evidence.is_empty()).then_some(evidence),
                    });
                }
                self.airgap = Some(a);
            }
            None => self.note("the guest's air-gap evidence could not be collected"),
        }
        self.hit("images-verified", t, "probe", "each expected image ran with no network; air gap checked".into());
        if !self.failures.is_empty() {
            self.done = true;
            return Decision::Stop;
        }
        self.check_progress(t)
    }

    /// Decide whether everything has been seen; also enforce per-milestone
    /// budgets.
    fn check_progress(&mut self, t: f64) -> Decision {
        for (i, s) in self.specs.iter().enumerate() {
            let Some(within) = s.within else { continue };
            let limit = within.as_secs_f64() * self.cfg.scale;
            match &self.hits[i] {
                Some(h) if h.t_s > limit => {
                    let f = Failure {
                        code: FailureCode::MilestoneLate,
                        message: format!("milestone {} came at {:.1}s, after its budget of {limit:.1}s", s.name, h.t_s),
                        evidence: Some(h.evidence.clone()),
                    };
                    return self.stop_fail(f);
                }
                None if t > limit => {
                    let f = Failure {
                        code: FailureCode::MilestoneLate,
                        message: format!("milestone {} not seen within its budget of {limit:.1}s", s.name),
                        evidence: self.last_line.as_ref().map(|l| l.text.clone()),
                    };
                    return self.stop_fail(f);
                }
                _ => {}
            }
        }
        if self.verifying {
            return Decision::Continue;
        }
        let required_done = self.specs.iter().zip(&self.hits).all(|(s, h)| !s.required || h.is_some());
        let stack_done = !self.wants_stack() || (self.stack_t.is_some() && (!self.cfg.probe || self.verified));
        let any_required = self.specs.iter().any(|s| s.required);
        if required_done && stack_done && (self.wants_stack() || any_required) {
            self.done = true;
            return Decision::Stop;
        }
        Decision::Continue
    }

    /// Time passes; enforces the deadline and milestone budgets.
    pub fn on_tick(&mut self, t: f64) -> Decision {
        if self.done {
            return Decision::Stop;
        }
        if let Decision::Stop = self.check_progress(t) {
            return Decision::Stop;
        }
        if t >= self.deadline_s() {
            let mut message = format!(
                "timed out after {:.1}s ({}s × {} for this accelerator)",
                self.deadline_s(),
                self.cfg.expect.timeout.as_secs_f64(),
                self.cfg.scale
            );
            if self.wants_stack() {
                match (&self.last_eval, self.stack_t) {
                    (None, _) if self.cfg.probe && self.probe_connected_t.is_none() => message.push_str(
                        ": the probe never answered (is airboot-probe in the image and its unit enabled? see README: adding the probe)",
                    ),
                    (None, _) => message.push_str(
                        ": the guest printed no AIRBOOT-STATUS block (does the image run the status reporter? see scenarios/README.md)",
                    ),
                    (Some(ev), None) => {
                        let still: Vec<String> = ev.problems.iter().map(|p| p.message.clone()).collect();
                        message.push_str(&format!(": the stack never became ready; last status: {}", still.join("; ")));
                    }
                    (Some(_), Some(_)) if self.verifying => {
                        message.push_str(": the stack was ready but the probe's image runs / air-gap check did not finish")
                    }
                    (Some(_), Some(_)) => {}
                }
            }
            let missing: Vec<&str> = self
                .specs
                .iter()
                .zip(&self.hits)
                .filter(|(s, h)| s.required && h.is_none())
                .map(|(s, _)| s.name.as_str())
                .collect();
            if !missing.is_empty() {
                message.push_str(&format!("; required milestones never seen: {}", missing.join(", ")));
            }
            let f = Failure {
                code: FailureCode::Timeout,
                message,
                evidence: self.last_line.as_ref().map(|l| format!("last console line at {:.1}s: {}", l.t, l.text)),
            };
            return self.stop_fail(f);
        }
        Decision::Continue
    }

    /// QEMU exited on its own.
    pub fn on_exit(&mut self, t: f64, status: &str) -> Decision {
        if self.done {
            return Decision::Stop;
        }
        self.stop_fail(Failure {
            code: FailureCode::VmExited,
            message: format!(
                "QEMU exited ({status}) at {t:.1}s before the run was decided: the guest powered off or rebooted (airboot runs QEMU with -no-reboot), or QEMU failed"
            ),
            evidence: self.last_line.as_ref().map(|l| format!("last console line at {:.1}s: {}", l.t, l.text)),
        })
    }

    /// The harness was told to stop (Ctrl-C, SIGTERM) or failed itself.
    pub fn on_abort(&mut self, t: f64, code: FailureCode, why: &str) -> Decision {
        if self.done {
            return Decision::Stop;
        }
        self.error = true;
        self.stop_fail(Failure { code, message: format!("{why} at {t:.1}s"), evidence: None })
    }

    pub fn finish(mut self) -> RunResult {
        let passed = self.done && self.failures.is_empty() && !self.error;
        let verdict = if self.error {
            Verdict::Error
        } else if passed {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        if !self.done {
            self.failures.push(Failure {
                code: FailureCode::Undecided,
                message: "the run ended before it was decided".into(),
                evidence: None,
            });
        }
        if !self.cfg.probe && self.wants_stack() {
            self.note("console transport: the images were not test-run and the guest's air gap was not checked (both need the probe)");
        }
        let mut milestones: Vec<Milestone> = self.hits.into_iter().flatten().chain(self.status_hits).collect();
        milestones.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let (images, containers) = match self.last_eval {
            Some(ev) => (ev.images, ev.containers),
            None => (
                self.cfg
                    .expect
                    .images
                    .iter()
                    .map(|e| ImageRow {
                        reference: e.reference.clone(),
                        id: None,
                        present: false,
                        expected: true,
                        expected_id: e.id.clone().or_else(|| self.cfg.known_ids.get(&e.reference).cloned()),
                    })
                    .collect(),
                self.cfg
                    .expect
                    .containers
                    .iter()
                    .map(|c| ContainerRow {
                        name: c.name.clone(),
                        image: c.image.clone(),
                        state: "unknown".into(),
                        health: None,
                        expected: true,
                    })
                    .collect(),
            ),
        };
        let engine = self.last_block.as_ref().and_then(|b| b.engine.clone());
        let clock_skew_ms = if self.skews.is_empty() {
            None
        } else {
            let mut s = self.skews.clone();
            s.sort_by(f64::total_cmp);
            Some(s[s.len() / 2])
        };
        RunResult {
            verdict,
            failures: self.failures,
            milestones,
            time_to_stack_s: self.stack_t,
            stack_seen_s: self.stack_seen_t,
            images,
            containers,
            engine,
            status_blocks: self.assembler.complete + self.statuses,
            damaged_status_blocks: self.assembler.damaged,
            last_status_t: self.last_block.as_ref().map(|b| b.t),
            guest_uptime_s: self.last_block.as_ref().and_then(|b| b.uptime_s),
            guest_machine: self.guest_machine,
            probe_connected_s: self.probe_connected_t,
            clock_skew_ms,
            image_runs: self.image_runs,
            airgap: self.airgap,
            notes: self.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{ContainerExpect, ExtraImages, ImageExpect};
    use airboot_model::Engine;
    use std::time::Duration;

    const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn cfg() -> RunConfig {
        RunConfig {
            expect: Expect {
                engine: Engine::Docker,
                images: vec![ImageExpect { reference: "fixture/redis:1".into(), id: None }],
                extra_images: ExtraImages::Fail,
                containers: vec![ContainerExpect { name: "redis".into(), image: None, healthy: None }],
                time_to_stack: Some(Duration::from_secs(10)),
                timeout: Duration::from_secs(20),
                fail_on: vec!["BOOM".into()],
                default_fail_on: true,
            },
            known_ids: BTreeMap::new(),
            milestones: vec![],
            scale: 2.0,
            probe: false,
            engine_unit: "docker.service".into(),
        }
    }

    fn line(t: f64, s: &str) -> TimedLine {
        TimedLine { t, text: s.into(), truncated: false }
    }

    fn block(seq: u64, is_final: bool, health: &str) -> Vec<String> {
        vec![
            format!(r#"AIRBOOT-STATUS v1 begin {{"seq":{seq},"uptime_s":{seq}.0,"final":{is_final}}}"#),
            r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"up"}"#.into(),
            format!(r#"AIRBOOT-STATUS v1 image {{"repository":"fixture/redis","tag":"1","id":"{RID}"}}"#),
            format!(
                r#"AIRBOOT-STATUS v1 container {{"name":"/redis","image":"fixture/redis:1","state":"running","health":"{health}"}}"#
            ),
            format!(r#"AIRBOOT-STATUS v1 end {{"seq":{seq},"records":3}}"#),
        ]
    }

    fn feed(run: &mut Run, t: f64, lines: &[String]) -> Decision {
        let mut d = Decision::Continue;
        for l in lines {
            d = run.on_line(&line(t, l));
            if d == Decision::Stop {
                break;
            }
        }
        d
    }

    #[test]
    fn passes_when_the_stack_is_healthy_and_records_milestones() {
        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(run.on_line(&line(0.5, "[    0.0] Linux version 6.1.0")), Decision::Continue);
        assert_eq!(run.on_line(&line(3.0, "[  OK  ] Started docker.service - Docker")), Decision::Continue);
        assert_eq!(feed(&mut run, 5.0, &block(1, false, "starting")), Decision::Continue);
        assert_eq!(feed(&mut run, 7.0, &block(2, false, "healthy")), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
        assert_eq!(r.time_to_stack_s, Some(7.0));
        let names: Vec<_> = r.milestones.iter().map(|m| (m.name.as_str(), m.t_s)).collect();
        assert_eq!(
            names,
            [
                ("kernel", 0.5),
                ("engine", 3.0),
                ("images", 5.0),
                ("container:redis", 5.0),
                ("healthy:redis", 7.0),
                ("stack", 7.0)
            ]
        );
        assert_eq!(r.status_blocks, 2);
    }

    #[test]
    fn final_unsatisfied_block_fails_at_once_naming_the_problem() {
        let mut c = cfg();
        c.expect.images.push(ImageExpect { reference: "fixture/nginx:1".into(), id: None });
        let mut run = Run::new(c).unwrap();
        assert_eq!(feed(&mut run, 5.0, &block(1, false, "healthy")), Decision::Continue);
        assert_eq!(feed(&mut run, 6.0, &block(2, true, "healthy")), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, FailureCode::ImageMissing);
        assert!(r.failures[0].message.contains("fixture/nginx:1"));
        assert_eq!(r.time_to_stack_s, None);
    }

    #[test]
    fn fail_patterns_stop_at_once_with_the_line() {
        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(run.on_line(&line(1.0, "[ 1.0] Kernel panic - not syncing: VFS")), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, FailureCode::KernelPanic);
        assert_eq!(r.failures[0].evidence.as_deref(), Some("[ 1.0] Kernel panic - not syncing: VFS"));

        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(run.on_line(&line(1.0, "app says BOOM")), Decision::Stop);
        assert_eq!(run.finish().failures[0].code, FailureCode::FailPattern);
    }

    #[test]
    fn over_budget_fails_with_the_measured_time() {
        let mut run = Run::new(cfg()).unwrap();
        // budget 10s × 2 = 20s; deadline 20s × 2 = 40s
        assert_eq!(feed(&mut run, 25.0, &block(1, false, "healthy")), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, FailureCode::OverBudget);
        assert_eq!(r.time_to_stack_s, Some(25.0));
    }

    #[test]
    fn timeout_says_what_was_still_missing() {
        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(run.on_tick(39.9), Decision::Continue);
        assert_eq!(run.on_tick(40.0), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.failures[0].code, FailureCode::Timeout);
        assert!(r.failures[0].message.contains("no AIRBOOT-STATUS block"), "{}", r.failures[0].message);

        let mut run = Run::new(cfg()).unwrap();
        feed(&mut run, 5.0, &block(1, false, "starting"));
        assert_eq!(run.on_tick(41.0), Decision::Stop);
        let r = run.finish();
        assert!(r.failures[0].message.contains("redis is starting"), "{}", r.failures[0].message);
        assert!(r.failures[0].evidence.is_some());
    }

    #[test]
    fn required_milestones_gate_the_pass_and_budgets_fail_fast() {
        let mut c = cfg();
        c.milestones = vec![MilestoneSpec {
            name: "loaded".into(),
            console: "load: done".into(),
            required: true,
            within: Some(Duration::from_secs(5)),
        }];
        let mut run = Run::new(c.clone()).unwrap();
        assert_eq!(run.on_line(&line(2.0, "load: done")), Decision::Continue);
        assert_eq!(feed(&mut run, 8.0, &block(1, false, "healthy")), Decision::Stop);
        assert_eq!(run.finish().verdict, Verdict::Pass);

        // Never seen: the budget (5s × 2) ends the run at 10s, not at 40s.
        let mut run = Run::new(c.clone()).unwrap();
        assert_eq!(run.on_tick(9.0), Decision::Continue);
        assert_eq!(run.on_tick(10.5), Decision::Stop);
        assert_eq!(run.finish().failures[0].code, FailureCode::MilestoneLate);

        // Stack ready but required milestone missing: keep waiting.
        c.milestones[0].within = None;
        let mut run = Run::new(c).unwrap();
        assert_eq!(feed(&mut run, 8.0, &block(1, false, "healthy")), Decision::Continue);
        assert_eq!(run.on_line(&line(9.0, "load: done")), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.time_to_stack_s, Some(8.0));
    }

    #[test]
    fn milestone_only_scenarios() {
        let mut c = cfg();
        c.expect.images.clear();
        c.expect.containers.clear();
        c.milestones =
            vec![MilestoneSpec { name: "up".into(), console: "login:".into(), required: true, within: None }];
        let mut run = Run::new(c).unwrap();
        assert_eq!(run.on_line(&line(1.0, "Linux version 6")), Decision::Continue);
        assert_eq!(run.on_line(&line(4.0, "debian login:")), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.time_to_stack_s, None);
    }

    #[test]
    fn exit_and_abort() {
        let mut run = Run::new(cfg()).unwrap();
        run.on_line(&line(1.0, "reboot: Power down"));
        assert_eq!(run.on_exit(1.2, "exit status 0"), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, FailureCode::VmExited);
        assert!(r.failures[0].evidence.as_deref().unwrap().contains("Power down"));

        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(run.on_abort(3.0, FailureCode::Interrupted, "interrupted by SIGINT"), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Error);
    }

    #[test]
    fn damaged_blocks_are_counted_and_skipped() {
        let mut run = Run::new(cfg()).unwrap();
        let mut b = block(1, true, "healthy");
        b[2] = b[2].replace("fixture/redis", "fixture/re[ 9.9] veth: up\"dis");
        assert_eq!(feed(&mut run, 5.0, &b), Decision::Continue);
        assert_eq!(feed(&mut run, 6.0, &block(2, true, "healthy")), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.damaged_status_blocks, 2);
    }

    // ------------------------------------------------------------ probe path

    use crate::guest::ClockSample;
    use airboot_proto::probe::{
        AirgapReport, ContainerInfo, EgressEvidence, EngineEvent, ImageInfo, ProbeStatus, RunImageResult, UnitInfo,
    };
    use airboot_proto::{EngineRecord, EngineState};

    fn probe_cfg() -> RunConfig {
        let mut c = cfg();
        c.probe = true;
        c
    }

    /// A status as the probe would send it; guest clocks equal host time
    /// since t0 (mono) and 1000 + that (realtime).
    fn pstatus(health: &str, guest_now: f64) -> (ProbeStatus, ClockSample) {
        let s = ProbeStatus {
            clocks: airboot_proto::probe::Clocks {
                boottime_s: guest_now,
                monotonic_s: guest_now,
                realtime_s: 1000.0 + guest_now,
            },
            system: "running".into(),
            userspace_us: 2_000_000,
            engine: EngineRecord {
                name: "docker".into(),
                state: EngineState::Up,
                version: Some("20.10".into()),
                detail: None,
            },
            images: vec![ImageInfo {
                repository: "fixture/redis".into(),
                tag: "1".into(),
                id: RID.into(),
                architecture: "amd64".into(),
                os: "linux".into(),
                ..Default::default()
            }],
            containers: vec![ContainerInfo {
                name: "/redis".into(),
                image: "fixture/redis:1".into(),
                state: "running".into(),
                health: Some(health.into()),
                started_at: Some("1970-01-01T00:16:50Z".into()), // realtime 1010 → host 10
                healthy_at: if health == "healthy" { vec!["1970-01-01T00:16:55Z".into()] } else { vec![] }, // → 15
                pid: Some(7),
                ..Default::default()
            }],
            units: vec![UnitInfo {
                name: "docker.service".into(),
                active: "active".into(),
                active_enter_us: 6_000_000,
                ..Default::default()
            }],
            events: vec![EngineEvent {
                time_nano: 1_009_000_000_000,
                kind: "container".into(),
                action: "start".into(),
                actor: "redis".into(),
            }],
            settled: health == "healthy",
            ..Default::default()
        };
        let sample =
            ClockSample { sent_s: guest_now - 0.1, received_s: guest_now + 0.1, host_realtime_s: 1000.0 + guest_now };
        (s, sample)
    }

    fn clean_airgap() -> AirgapReport {
        AirgapReport {
            interfaces: vec![airboot_proto::probe::Interface {
                name: "lo".into(),
                kind: "loopback".into(),
                up: true,
                carrier: true,
            }],
            ..Default::default()
        }
    }

    fn ran(r: &str) -> RunImageResult {
        RunImageResult {
            reference: r.into(),
            ran: true,
            detail: "running after 3.0s".into(),
            exit_code: None,
            duration_s: 4.0,
        }
    }

    #[test]
    fn probe_path_times_the_stack_from_guest_evidence_then_verifies() {
        let mut run = Run::new(probe_cfg()).unwrap();
        run.on_probe_hello(8.0, "x86_64");
        let (s, smp) = pstatus("starting", 12.0);
        assert_eq!(run.on_probe_status(&s, smp), Decision::Continue);
        let (s, smp) = pstatus("healthy", 18.0);
        assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
        // While verifying, statuses and ticks do not decide.
        let (s, smp) = pstatus("healthy", 20.0);
        assert_eq!(run.on_probe_status(&s, smp), Decision::Continue);
        assert_eq!(run.on_tick(21.0), Decision::Continue);
        assert_eq!(run.on_verification(25.0, vec![ran("fixture/redis:1")], Some(&clean_airgap())), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
        // Stack = the latest of engine (6), container start event (9), first passing check (15).
        assert_eq!(r.time_to_stack_s, Some(15.0));
        assert_eq!(r.stack_seen_s, Some(18.1));
        let m: BTreeMap<&str, (f64, &str)> =
            r.milestones.iter().map(|m| (m.name.as_str(), (m.t_s, m.source.as_str()))).collect();
        assert_eq!(m["init"], (2.0, "guest"));
        assert_eq!(m["engine"], (6.0, "guest"));
        assert_eq!(m["container:redis"], (9.0, "guest"));
        assert_eq!(m["healthy:redis"], (15.0, "guest"));
        assert_eq!(m["images-verified"], (25.0, "probe"));
        assert_eq!(r.clock_skew_ms, Some(0.0));
        assert_eq!(r.image_runs.len(), 1);
        assert!(r.airgap.unwrap().checked);
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn an_image_that_does_not_run_fails_the_run() {
        let mut run = Run::new(probe_cfg()).unwrap();
        run.on_probe_hello(8.0, "x86_64");
        let (s, smp) = pstatus("healthy", 18.0);
        assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
        let bad = RunImageResult {
            reference: "fixture/redis:1".into(),
            ran: false,
            detail: "exited 127 (last output: exec /usr/bin/redis-server: no such file or directory)".into(),
            exit_code: Some(127),
            duration_s: 2.0,
        };
        assert_eq!(run.on_verification(25.0, vec![bad], Some(&clean_airgap())), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, FailureCode::ImageRunFailed);
        assert!(r.failures[0].message.contains("no such file"));
    }

    #[test]
    fn an_egress_attempt_fails_naming_who_and_where() {
        let mut run = Run::new(probe_cfg()).unwrap();
        run.on_probe_hello(8.0, "x86_64");
        let (s, smp) = pstatus("healthy", 18.0);
        assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
        let mut a = clean_airgap();
        a.evidence.push(EgressEvidence {
            who: "unit egress-pull.service (docker)".into(),
            destination: Some("registry.example.com".into()),
            source: "journal".into(),
            line: "Error response from daemon: Get \"https://registry.example.com/v2/\": dial tcp: lookup registry.example.com".into(),
        });
        assert_eq!(run.on_verification(25.0, vec![ran("fixture/redis:1")], Some(&a)), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, FailureCode::EgressAttempt);
        assert!(
            r.failures[0].message.contains("egress-pull.service")
                && r.failures[0].message.contains("registry.example.com")
        );
        assert_eq!(r.airgap.unwrap().egress_attempts.len(), 1);
    }

    #[test]
    fn an_engine_that_never_comes_up_fails_when_the_guest_settles() {
        let mut run = Run::new(probe_cfg()).unwrap();
        run.on_probe_hello(8.0, "x86_64");
        let (mut s, smp) = pstatus("healthy", 30.0);
        s.engine = EngineRecord {
            name: "docker".into(),
            state: EngineState::Down,
            version: None,
            detail: Some("docker.service is inactive, system is degraded".into()),
        };
        s.images.clear();
        s.containers.clear();
        s.settled = true;
        assert_eq!(run.on_probe_status(&s, smp), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.failures[0].code, FailureCode::EngineDown);
        assert!(r.failures[0].message.contains("docker.service is inactive"));
    }

    #[test]
    fn wrong_architecture_is_a_failure_not_a_wait() {
        let mut run = Run::new(probe_cfg()).unwrap();
        run.on_probe_hello(8.0, "aarch64");
        let (mut s, smp) = pstatus("healthy", 18.0);
        s.settled = false; // its containers restart for ever: never settles
        assert_eq!(run.on_probe_status(&s, smp), Decision::Stop, "wrong platform: decided at once");
        let r = run.finish();
        assert_eq!(r.failures[0].code, FailureCode::ImageArchMismatch);
        assert!(r.failures[0].message.contains("arm64"), "{}", r.failures[0].message);
    }

    #[test]
    fn console_blocks_are_ignored_once_the_probe_answers_and_verification_can_time_out() {
        let mut run = Run::new(probe_cfg()).unwrap();
        // Before the probe: a console block with a satisfied stack is not
        // enough in probe mode (no verification possible from it).
        assert_eq!(feed(&mut run, 5.0, &block(1, true, "healthy")), Decision::Continue);
        run.on_probe_hello(8.0, "x86_64");
        let (s, smp) = pstatus("healthy", 18.0);
        assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
        assert_eq!(run.on_tick(41.0), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.failures[0].code, FailureCode::Timeout);
        assert!(r.failures[0].message.contains("did not finish"), "{}", r.failures[0].message);
    }

    #[test]
    fn a_probe_that_never_answers_is_named_at_the_timeout() {
        let mut run = Run::new(probe_cfg()).unwrap();
        assert_eq!(run.on_tick(41.0), Decision::Stop);
        assert!(run.finish().failures[0].message.contains("the probe never answered"));
    }

    #[test]
    fn console_mode_notes_what_it_cannot_check() {
        let mut run = Run::new(cfg()).unwrap();
        feed(&mut run, 7.0, &block(2, false, "healthy"));
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.notes[0].contains("console transport"));
    }
}

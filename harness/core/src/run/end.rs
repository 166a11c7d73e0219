//! When a run is over (every expectation held, a budget or the deadline
//! passed, QEMU exited, airboot was told to stop), and what it came to.

use airboot_model::{Failure, FailureCode, Verdict};

use super::{Decision, Run, RunResult};

/// Wall seconds (never scaled for TCG) a guest with nothing reporting is
/// watched after its login prompt, or after it went quiet, before the run
/// ends as `no-reporter`.
pub const NO_REPORTER_S: f64 = 30.0;
/// Wall seconds from a console login starting the reference reporter to
/// its first status block (its first round runs a few CLI calls).
pub const LOGIN_REPORTER_S: f64 = 90.0;
/// Wall seconds from the login prompt to giving up on an injected probe
/// that never answered.
pub const INJECTED_SILENT_S: f64 = 60.0;
/// Wall seconds from the probe's first console status block to judging
/// the run from those blocks when the host still has not reached it
/// (the transport failed, not the guest).
pub const PROBE_UNREACHED_S: f64 = 45.0;
/// Wall seconds over which the probe's transport has kept carrying lines
/// that are no answer, with never an answer, before the run ends as
/// `probe-protocol` (a burst of stale lines is over within seconds).
pub const PROBE_GARBAGE_S: f64 = 30.0;
use crate::report::Milestone;
use crate::verify::{ContainerRow, ImageRow};

impl Run {
    /// Decide whether everything has been seen; also enforce per-milestone
    /// budgets.
    pub(super) fn check_progress(&mut self, t: f64) -> Decision {
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
        if let Some(d) = self.settle_now(t) {
            return d;
        }
        if let Some(d) = self.fall_back_to_console(t) {
            return d;
        }
        if let Some(f) = self.nobody_reports(t) {
            self.error = true;
            return self.stop_fail(f);
        }
        if let Some((first, last)) = self.probe_errors_t
            && self.cfg.probe
            && self.probe_connected_t.is_none()
            && last - first >= PROBE_GARBAGE_S
        {
            let f = self.probe_protocol_failure(&format!("from {first:.1}s to {last:.1}s"));
            return self.stop_fail(f);
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
            if self.cfg.probe && self.probe_connected_t.is_none() && !self.probe_errors.is_empty() {
                let f = self.probe_protocol_failure(&format!("within {:.1}s", self.deadline_s()));
                return self.stop_fail(f);
            }
            let f = Failure { code: FailureCode::Timeout, message, evidence: self.last_line_evidence() };
            return self.stop_fail(f);
        }
        Decision::Continue
    }

    /// Something talked on the probe's transport, never with the protocol:
    /// not "is the probe in the image?". An error (the harness could not
    /// judge the guest), ended `when`.
    fn probe_protocol_failure(&mut self, when: &str) -> Failure {
        self.error = true;
        Failure {
            code: FailureCode::ProbeProtocol,
            message: format!(
                "nothing answered the probe protocol {when}, but its transport carried {}: is something else listening on the probe's port, or is the probe in the image from another airboot?",
                self.probe_errors.describe()
            ),
            evidence: self.last_line_evidence(),
        }
    }

    /// A guest nothing in which will ever report its stack (no probe, no
    /// status line so far) that has reached a login prompt, or gone
    /// quiet after its init started, for [`NO_REPORTER_S`] of wall time:
    /// waiting for the timeout would tell nothing more.
    fn last_line_evidence(&self) -> Option<String> {
        self.last_line.as_ref().map(|l| format!("last console line at {:.1}s: {}", l.t, l.text))
    }

    /// The probe prints console status blocks, so it runs, but the host has
    /// not reached it over its transport for [`PROBE_UNREACHED_S`]: judge
    /// the stack from those blocks (as without a probe) instead of waiting
    /// for the timeout, and say what that costs.
    fn fall_back_to_console(&mut self, t: f64) -> Option<Decision> {
        if !self.cfg.probe || self.probe_connected_t.is_some() {
            return None;
        }
        let first = self.probe_block_t?;
        if t - first < PROBE_UNREACHED_S {
            return None;
        }
        self.cfg.probe = false;
        self.note(format!(
            "the probe printed console status blocks from {first:.1}s, but the host could not reach it over its transport (vsock) for {PROBE_UNREACHED_S:.0}s: the stack was judged from those blocks, with the host's timeline and no image test runs or air-gap proof (under vhost-device-vsock its log, vhost-device-vsock.log, is next to console.log)"
        ));
        let block = self.probe_block.take()?;
        self.block_seen = true;
        Some(self.on_block(block, None))
    }

    fn nobody_reports(&self, t: f64) -> Option<Failure> {
        if self.cfg.probe && self.cfg.injected && self.probe_connected_t.is_none() && self.probe_block_t.is_none() {
            // The injected probe starts with multi-user.target, well before
            // the getty's prompt: silent long after it, it is not running.
            let lt = self.login_t?;
            return (t - lt >= INJECTED_SILENT_S).then(|| Failure {
                code: FailureCode::NoReporter,
                message: format!(
                    "the probe airboot injected never answered, {INJECTED_SILENT_S:.0}s after the login prompt at {lt:.1}s: the filesystem it was written into (report notes) is not what the guest runs, or its unit did not start. Say which partition is the root (`root=` in the boot loader's configuration), set `inject = false` and judge it through a console login (`login` under [image]), or add the probe to the image"
                ),
                evidence: self.last_line_evidence(),
            });
        }
        if self.cfg.login && !self.cfg.probe {
            if self.block_seen || !self.wants_stack() {
                return None;
            }
            // The login prompt is expected: what counts is the reporter
            // airboot started from the shell, which prints within seconds.
            let started = self.reporter_started_t?;
            return (t - started >= LOGIN_REPORTER_S).then(|| Failure {
                code: FailureCode::NoReporter,
                message: format!(
                    "airboot logged in on the console and started the status reporter at {started:.1}s, but no status block came in {LOGIN_REPORTER_S:.0}s: the shell may lack sh, docker, systemctl or /run (see console.log)"
                ),
                evidence: self.last_line_evidence(),
            });
        }
        if self.cfg.probe || self.reporter_seen || !self.wants_stack() {
            return None;
        }
        let init_t = self
            .specs
            .iter()
            .zip(&self.hits)
            .find(|(s, _)| s.name == "init")
            .and_then(|(_, h)| h.as_ref())
            .map(|h| h.t_s);
        let (since, what) = match (self.login_t, init_t, &self.last_line) {
            (Some(lt), _, _) => (lt, format!("the console showed a login prompt at {lt:.1}s")),
            (None, Some(it), Some(last)) if last.t >= it => {
                (last.t, format!("the console has been quiet since {:.1}s, after userspace started", last.t))
            }
            _ => return None,
        };
        (t - since >= NO_REPORTER_S).then(|| Failure {
            code: FailureCode::NoReporter,
            message: format!(
                "{what}, and nothing in the guest reports its stack: no probe, no AIRBOOT-STATUS line. Ways forward: let airboot inject its probe (the default for an image whose root is ext4: the report's notes say why it could not), let it log in on the console (`login = {{ user = \"root\", password = \"\" }}` under [image]), add the probe to the image (README: \"Adding the probe to your image\"), or add the status reporter (scenarios/README.md)"
            ),
            evidence: self.last_line_evidence(),
        })
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
            evidence: self.last_line_evidence(),
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
                        ..Default::default()
                    })
                    .chain(self.cfg.expect.compose.iter().flat_map(|c| &c.services).map(|s| ContainerRow {
                        name: s.name.clone(),
                        state: "unknown".into(),
                        expected: true,
                        service: Some(s.name.clone()),
                        ..Default::default()
                    }))
                    .collect(),
            ),
        };
        let engine = self.last_block.as_ref().and_then(|b| b.engine.clone());
        let units = self.last_block.as_ref().map(|b| b.units.clone()).unwrap_or_default();
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
            units,
            status_blocks: self.assembler.complete + self.statuses,
            damaged_status_blocks: self.assembler.damaged,
            errors_first_seen: self.errors_first_seen,
            settled_at_s: self.settle.as_ref().map(|(t, _)| *t).filter(|_| self.settled),
            last_status_t: self.last_block.as_ref().map(|b| b.t),
            guest_uptime_s: self.last_block.as_ref().and_then(|b| b.uptime_s),
            guest_machine: self.guest_machine,
            guest_init: self.guest_init,
            probe_connected_s: self.probe_connected_t,
            probe_errors: self.probe_errors,
            clock_skew_ms,
            image_runs: self.image_runs,
            image_loads: self.image_loads,
            airgap: self.airgap,
            notes: self.notes,
        }
    }
}

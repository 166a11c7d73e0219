//! Judging a status (from the probe or a console status block) against
//! the expectations, and the probe's verification (image runs, air gap).

use airboot_model::{Failure, FailureCode};
use airboot_proto::probe::{AirgapReport, RunImageResult};

use super::{Decision, Run};
use crate::airgap;
use crate::guest::GuestTimes;
use crate::status::StatusBlock;
use crate::verify::evaluate;

impl Run {
    pub(super) fn on_block(&mut self, b: StatusBlock, times: Option<GuestTimes>) -> Decision {
        let t = b.t;
        let errors =
            b.engine.iter().filter_map(|e| e.detail.clone()).chain(b.units.iter().filter_map(|u| u.error.clone()));
        for e in errors {
            self.note_settling(t, &e);
            self.note_compose(&e);
            self.errors_first_seen.entry(crate::report::error_key(&e).to_string()).or_insert(t);
        }
        let mut ev = evaluate(&self.cfg.expect, &self.cfg.known_ids, &b);
        self.explain_compose_waits(&mut ev, &b);
        if let Some(d) = self.settle_on_a_full_disk(t, &b, &ev.problems) {
            return d;
        }
        let evidence = if times.is_some() {
            format!("probe status at {t:.1}s")
        } else {
            format!("status block {} at {:.1}s", b.seq, t)
        };
        let g = times.unwrap_or_default();
        if ev.engine_up {
            match g.engine {
                Some(te) => self.hit_guest(
                    "engine",
                    te.min(t),
                    g.engine_source.clone().unwrap_or_else(|| {
                        format!("{} ActiveEnterTimestamp", crate::engine::model(self.cfg.expect.engine).unit())
                    }),
                ),
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
        // A compose service is ready when its last container is: healthy
        // (with a healthcheck), started (without), exited (a one-shot).
        let oneshots: Vec<String> = self
            .cfg
            .expect
            .compose
            .iter()
            .flat_map(|c| c.services.iter().filter(|s| s.oneshot).map(|s| s.name.clone()))
            .collect();
        let oneshot = |svc: &str| oneshots.iter().any(|o| o == svc);
        for (svc, names) in &ev.services {
            let guest: Option<Vec<f64>> = names
                .iter()
                .map(|n| {
                    let has_health =
                        b.containers.iter().any(|x| x.name.trim_start_matches('/') == n && x.health.is_some());
                    if oneshot(svc) {
                        g.exited.get(n)
                    } else if has_health {
                        g.healthy.get(n)
                    } else {
                        g.running.get(n)
                    }
                    .copied()
                })
                .collect();
            let name = format!("service:{svc}");
            match guest.and_then(|ts| ts.into_iter().reduce(f64::max)) {
                Some(ts) => {
                    ready_times.push(ts.min(t));
                    let what = if oneshot(svc) { "exited 0" } else { "ready" };
                    self.hit_guest(&name, ts.min(t), format!("its containers {what}: {}", names.join(", ")));
                }
                None => {
                    ready_times.push(t);
                    self.hit(&name, t, "status", evidence.clone());
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
            self.fail_unmet(
                problems,
                format!("{evidence} (the guest says its stack has settled)"),
                "the guest's stack settled without meeting the expectations",
                evidence,
            );
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
        self.stayed_up();
        if !self.failures.is_empty() {
            self.done = true;
            return Decision::Stop;
        }
        self.check_progress(t)
    }

    /// The containers must still be up after the verification: one that
    /// ran for a moment when the stack was first seen and has exited
    /// since (a crash loop caught between restarts) fails the run, and
    /// the report shows the containers as they are now.
    fn stayed_up(&mut self) {
        let Some((b, ev)) = self.after_stack.take() else { return };
        let t = b.t;
        let since = self.stack_t.map(|s| format!(", after the stack was first seen at {s:.1}s")).unwrap_or_default();
        let fell: Vec<Failure> = ev
            .problems
            .iter()
            .filter(|p| {
                matches!(
                    p.code,
                    FailureCode::ContainerNotRunning | FailureCode::ContainerMissing | FailureCode::ContainerUnhealthy
                )
            })
            .map(|p| Failure {
                code: p.code,
                message: p.message.clone(),
                evidence: Some(format!("probe status at {t:.1}s{since}: it did not stay up")),
            })
            .collect();
        if !fell.is_empty() {
            self.failures.extend(fell);
            self.last_eval = Some(ev);
            self.last_block = Some(b);
        }
    }

    /// Evidence of a cause that settles the run (a read-only or full
    /// store, the engine at its start limit) seen before the stack ran:
    /// the run is decided [`super::SETTLE_GRACE_S`] later, not at the
    /// timeout.
    pub(super) fn note_settling(&mut self, t: f64, text: &str) {
        if self.settle.is_some() || self.done || self.stack_t.is_some() || !self.wants_stack() {
            return;
        }
        let line = || text.chars().take(300).collect::<String>();
        if crate::diagnose::settling_evidence(text, self.reached("engine")) {
            self.settle = Some((t, line()));
        } else if self.early_full_disk.is_none() && crate::diagnose::out_of_space(text) {
            self.early_full_disk = Some((t, line()));
        }
    }

    /// docker-compose saying it did not start a service (the console, or
    /// a failed unit's last error).
    pub(super) fn note_compose(&mut self, text: &str) {
        if self.cfg.expect.compose.is_none() || self.compose_waits.len() >= 16 {
            return;
        }
        if let Some(d) = crate::compose::dependency_failure(text)
            && !self.compose_waits.iter().any(|w| w.waiter == d.waiter && w.container == d.container)
        {
            self.compose_waits.push(d);
        }
    }

    /// A compose service with no container that compose said it held back
    /// for a dependency: the failure names the dependency and why.
    fn explain_compose_waits(&self, ev: &mut crate::verify::Evaluation, b: &crate::status::StatusBlock) {
        let Some(compose) = &self.cfg.expect.compose else { return };
        for p in ev.problems.iter_mut().filter(|p| p.code == FailureCode::ContainerMissing) {
            let Some(svc) =
                compose.services.iter().find(|s| p.message.starts_with(&format!("compose service {} ", s.name)))
            else {
                continue;
            };
            // v1 names the waiter; v2 only the dependency (then every
            // service left without a container waited on it).
            let Some(w) = self.compose_waits.iter().find(|w| w.waiter.as_deref().is_none_or(|x| x == svc.name)) else {
                continue;
            };
            let dep = b.containers.iter().find(|c| {
                c.name.trim_start_matches('/') == w.container
                    || c.id.as_deref().is_some_and(|id| id.starts_with(&w.container) || w.container.starts_with(id))
            });
            let dep_name = match dep {
                Some(c) => match &c.compose {
                    Some(l) => format!("service {} (container {})", l.service, c.name.trim_start_matches('/')),
                    None => format!("container {}", c.name.trim_start_matches('/')),
                },
                None => format!("container {}", w.container),
            };
            p.message = format!(
                "compose service {} (project {}) has no container: docker-compose held it back, waiting for {dep_name}, which {} (docker-compose: {:?})",
                svc.name,
                compose.project,
                if w.why == "unhealthy" { "never became healthy".to_string() } else { w.why.clone() },
                w.line
            );
        }
    }

    /// A disk that was full before the engine ran, and now the engine is
    /// down for good (the guest says so): that settles the run at once.
    fn settle_on_a_full_disk(
        &mut self,
        t: f64,
        b: &crate::status::StatusBlock,
        problems: &[airboot_model::Problem],
    ) -> Option<Decision> {
        let engine = b.engine.as_ref()?;
        if !matches!(engine.state, airboot_proto::EngineState::Down | airboot_proto::EngineState::Failing)
            || self.settle.is_some()
            || self.done
            || self.stack_t.is_some()
            || self.verifying
            || !self.wants_stack()
        {
            return None;
        }
        let (at, full) = self.early_full_disk.clone()?;
        let line = format!(
            "{full} (at {at:.1}s), then {} went down: {}",
            engine.name,
            engine.detail.as_deref().unwrap_or("not running")
        );
        self.settle = Some((t, line.clone()));
        Some(self.decide_settled(
            problems.to_vec(),
            format!("{line} (decided at once: nothing after it can make the stack run)"),
        ))
    }

    /// [`super::SETTLE_GRACE_S`] after evidence that settles the run:
    /// decide, with what the last status showed.
    pub(super) fn settle_now(&mut self, t: f64) -> Option<Decision> {
        let (at, line) = self.settle.clone()?;
        if t < at + super::SETTLE_GRACE_S || self.done || self.stack_t.is_some() || self.verifying {
            return None;
        }
        let problems = self.last_eval.as_ref().map(|e| e.problems.clone()).unwrap_or_default();
        Some(self.decide_settled(
            problems,
            format!("{line} (decided {:.1}s after this: nothing after it can make the stack run)", t - at),
        ))
    }

    fn decide_settled(&mut self, problems: Vec<airboot_model::Problem>, why: String) -> Decision {
        self.fail_unmet(problems, why.clone(), "the guest hit a cause that settles the run before its stack ran", why);
        self.settled = true;
        Decision::Stop
    }

    /// End the run on expectations that will not be met: a failure for
    /// each unmet one (`evidence` for all), or, when nothing failed,
    /// `stack-not-ready` saying `otherwise` (with `otherwise_evidence`).
    fn fail_unmet(
        &mut self,
        problems: Vec<airboot_model::Problem>,
        evidence: String,
        otherwise: &str,
        otherwise_evidence: String,
    ) {
        self.failures.extend(problems.into_iter().map(|p| Failure {
            code: p.code,
            message: p.message,
            evidence: Some(evidence.clone()),
        }));
        if self.failures.is_empty() {
            self.failures.push(Failure {
                code: FailureCode::StackNotReady,
                message: otherwise.into(),
                evidence: Some(otherwise_evidence),
            });
        }
        self.done = true;
    }
}

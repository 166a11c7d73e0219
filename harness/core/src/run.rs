//! The run state machine: fed console lines, ticks and process events with
//! host timestamps (seconds since t0 = the QMP `cont`), it decides when a
//! run has passed, failed, or must go on. It never waits or reads a clock
//! itself, so every path is testable without a VM.

use std::collections::BTreeMap;

use crate::console::{ConsoleRules, FailPattern, TimedLine, default_fail_patterns};
use crate::report::{Failure, Milestone, Verdict};
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
        m("kernel", r"Linux version \d"),
        m(
            "init",
            r"Welcome to .*!|systemd\[1\]: systemd \d+ running|Run /s?bin/init as init process",
        ),
        m(
            "engine",
            r"Started (docker|containerd|podman)\.service|Started .*(Docker Application Container Engine|containerd container runtime)",
        ),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
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
    pub images: Vec<ImageRow>,
    pub containers: Vec<ContainerRow>,
    pub engine: Option<airboot_proto::EngineRecord>,
    pub status_blocks: u64,
    pub damaged_status_blocks: u64,
    pub last_status_t: Option<f64>,
    pub guest_uptime_s: Option<f64>,
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
    failures: Vec<Failure>,
    error: bool,
    done: bool,
    last_line: Option<TimedLine>,
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
        let mut fails: Vec<FailPattern> = if cfg.expect.default_fail_on {
            default_fail_patterns()
        } else {
            Vec::new()
        };
        fails.extend(cfg.expect.fail_on.iter().map(|r| FailPattern {
            code: "fail-pattern".into(),
            regex: r.clone(),
            meaning: format!("the console matched the scenario's fail_on pattern {r:?}"),
        }));
        let pairs: Vec<(String, String)> = specs
            .iter()
            .map(|s| (s.name.clone(), s.console.clone()))
            .collect();
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
            failures: Vec::new(),
            error: false,
            done: false,
            last_line: None,
        })
    }

    /// The overall deadline in seconds since t0 (the scaled timeout).
    pub fn deadline_s(&self) -> f64 {
        self.cfg.expect.timeout.as_secs_f64() * self.cfg.scale
    }

    /// The scaled time-to-stack budget, if any.
    pub fn budget_s(&self) -> Option<f64> {
        self.cfg
            .expect
            .time_to_stack
            .map(|d| d.as_secs_f64() * self.cfg.scale)
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

    /// Milestones seen so far, in the order they were seen.
    pub fn milestones(&self) -> Vec<Milestone> {
        let mut m: Vec<Milestone> = self
            .hits
            .iter()
            .flatten()
            .cloned()
            .chain(self.status_hits.iter().cloned())
            .collect();
        m.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        m
    }

    fn stop_fail(&mut self, f: Failure) -> Decision {
        self.failures.push(f);
        self.done = true;
        Decision::Stop
    }

    fn hit(&mut self, name: &str, t: f64, source: &str, evidence: String) {
        if let Some(i) = self.specs.iter().position(|s| s.name == name) {
            if self.hits[i].is_none() {
                self.hits[i] = Some(Milestone {
                    name: name.into(),
                    t_s: t,
                    source: source.into(),
                    evidence,
                });
            }
        } else if !self.status_hits.iter().any(|m| m.name == name) {
            self.status_hits.push(Milestone {
                name: name.into(),
                t_s: t,
                source: source.into(),
                evidence,
            });
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
        match self.assembler.push(line.t, &line.text) {
            Assembled::Nothing | Assembled::Damaged(_) => {}
            Assembled::Unsupported(why) => {
                self.error = true;
                return self.stop_fail(Failure {
                    code: "status-protocol".into(),
                    message: format!("{why}: upgrade airboot or the image's status reporter"),
                    evidence: Some(line.text.clone()),
                });
            }
            Assembled::Block(b) => return self.on_block(b),
        }
        self.check_progress(line.t)
    }

    fn on_block(&mut self, b: StatusBlock) -> Decision {
        let t = b.t;
        let ev = evaluate(&self.cfg.expect, &self.cfg.known_ids, &b);
        let evidence = format!("status block {} at {:.1}s", b.seq, t);
        if ev.engine_up {
            self.hit("engine", t, "status", evidence.clone());
        }
        if ev.images_ok && !self.cfg.expect.images.is_empty() {
            self.hit("images", t, "status", evidence.clone());
        }
        for n in &ev.running {
            self.hit(&format!("container:{n}"), t, "status", evidence.clone());
        }
        let healthy: Vec<String> = ev
            .ready
            .iter()
            .filter(|n| {
                b.containers
                    .iter()
                    .any(|x| x.name.trim_start_matches('/') == n.as_str() && x.health.is_some())
            })
            .cloned()
            .collect();
        for n in healthy {
            self.hit(&format!("healthy:{n}"), t, "status", evidence.clone());
        }
        let satisfied = ev.satisfied() && self.wants_stack();
        let is_final = b.is_final;
        let problems = ev.problems.clone();
        self.last_eval = Some(ev);
        self.last_block = Some(b);
        if satisfied && self.stack_t.is_none() {
            self.stack_t = Some(t);
            self.hit("stack", t, "status", evidence.clone());
            if let Some(budget) = self.budget_s()
                && t > budget
            {
                return self.stop_fail(Failure {
                    code: "over-budget".into(),
                    message: format!(
                        "time to running stack {t:.1}s is over the budget of {budget:.1}s ({}s × {} for this accelerator)",
                        self.cfg.expect.time_to_stack.unwrap_or_default().as_secs_f64(),
                        self.cfg.scale
                    ),
                    evidence: Some(evidence),
                });
            }
        }
        if !satisfied && is_final && self.wants_stack() {
            self.failures.extend(problems.into_iter().map(|p| Failure {
                code: p.code.into(),
                message: p.message,
                evidence: Some(format!(
                    "{evidence} (the guest marked it final: its stack has settled)"
                )),
            }));
            if self.failures.is_empty() {
                self.failures.push(Failure {
                    code: "stack-not-ready".into(),
                    message: "the guest's stack settled without meeting the expectations".into(),
                    evidence: Some(evidence),
                });
            }
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
                        code: "milestone-late".into(),
                        message: format!(
                            "milestone {} came at {:.1}s, after its budget of {limit:.1}s",
                            s.name, h.t_s
                        ),
                        evidence: Some(h.evidence.clone()),
                    };
                    return self.stop_fail(f);
                }
                None if t > limit => {
                    let f = Failure {
                        code: "milestone-late".into(),
                        message: format!(
                            "milestone {} not seen within its budget of {limit:.1}s",
                            s.name
                        ),
                        evidence: self.last_line.as_ref().map(|l| l.text.clone()),
                    };
                    return self.stop_fail(f);
                }
                _ => {}
            }
        }
        let required_done = self
            .specs
            .iter()
            .zip(&self.hits)
            .all(|(s, h)| !s.required || h.is_some());
        let stack_done = !self.wants_stack() || self.stack_t.is_some();
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
                    (None, _) => message.push_str(
                        ": the guest printed no AIRBOOT-STATUS block (does the image run the status reporter? see scenarios/README.md)",
                    ),
                    (Some(ev), None) => {
                        let still: Vec<String> = ev.problems.iter().map(|p| p.message.clone()).collect();
                        message.push_str(&format!(": the stack never became ready; last status: {}", still.join("; ")));
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
                message.push_str(&format!(
                    "; required milestones never seen: {}",
                    missing.join(", ")
                ));
            }
            let f = Failure {
                code: "timeout".into(),
                message,
                evidence: self
                    .last_line
                    .as_ref()
                    .map(|l| format!("last console line at {:.1}s: {}", l.t, l.text)),
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
            code: "vm-exited".into(),
            message: format!(
                "QEMU exited ({status}) at {t:.1}s before the run was decided: the guest powered off or rebooted (airboot runs QEMU with -no-reboot), or QEMU failed"
            ),
            evidence: self.last_line.as_ref().map(|l| format!("last console line at {:.1}s: {}", l.t, l.text)),
        })
    }

    /// The harness was told to stop (Ctrl-C, SIGTERM) or failed itself.
    pub fn on_abort(&mut self, t: f64, code: &str, why: &str) -> Decision {
        if self.done {
            return Decision::Stop;
        }
        self.error = true;
        self.stop_fail(Failure {
            code: code.into(),
            message: format!("{why} at {t:.1}s"),
            evidence: None,
        })
    }

    pub fn finish(self) -> RunResult {
        let passed = self.done && self.failures.is_empty() && !self.error;
        let verdict = if self.error {
            Verdict::Error
        } else if passed {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let mut failures = self.failures;
        if !self.done {
            failures.push(Failure {
                code: "undecided".into(),
                message: "the run ended before it was decided".into(),
                evidence: None,
            });
        }
        let mut milestones: Vec<Milestone> = self
            .hits
            .into_iter()
            .flatten()
            .chain(self.status_hits)
            .collect();
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
                        expected_id: e
                            .id
                            .clone()
                            .or_else(|| self.cfg.known_ids.get(&e.reference).cloned()),
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
        RunResult {
            verdict,
            failures,
            milestones,
            time_to_stack_s: self.stack_t,
            images,
            containers,
            engine,
            status_blocks: self.assembler.complete,
            damaged_status_blocks: self.assembler.damaged,
            last_status_t: self.last_block.as_ref().map(|b| b.t),
            guest_uptime_s: self.last_block.as_ref().and_then(|b| b.uptime_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{ContainerExpect, Engine, ExtraImages, ImageExpect};
    use std::time::Duration;

    const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn cfg() -> RunConfig {
        RunConfig {
            expect: Expect {
                engine: Engine::Docker,
                images: vec![ImageExpect {
                    reference: "fixture/redis:1".into(),
                    id: None,
                }],
                extra_images: ExtraImages::Fail,
                containers: vec![ContainerExpect {
                    name: "redis".into(),
                    image: None,
                    healthy: None,
                }],
                time_to_stack: Some(Duration::from_secs(10)),
                timeout: Duration::from_secs(20),
                fail_on: vec!["BOOM".into()],
                default_fail_on: true,
            },
            known_ids: BTreeMap::new(),
            milestones: vec![],
            scale: 2.0,
        }
    }

    fn line(t: f64, s: &str) -> TimedLine {
        TimedLine {
            t,
            text: s.into(),
            truncated: false,
        }
    }

    fn block(seq: u64, is_final: bool, health: &str) -> Vec<String> {
        vec![
            format!(
                r#"AIRBOOT-STATUS v1 begin {{"seq":{seq},"uptime_s":{seq}.0,"final":{is_final}}}"#
            ),
            r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"up"}"#.into(),
            format!(
                r#"AIRBOOT-STATUS v1 image {{"repository":"fixture/redis","tag":"1","id":"{RID}"}}"#
            ),
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
        assert_eq!(
            run.on_line(&line(0.5, "[    0.0] Linux version 6.1.0")),
            Decision::Continue
        );
        assert_eq!(
            run.on_line(&line(3.0, "[  OK  ] Started docker.service - Docker")),
            Decision::Continue
        );
        assert_eq!(
            feed(&mut run, 5.0, &block(1, false, "starting")),
            Decision::Continue
        );
        assert_eq!(
            feed(&mut run, 7.0, &block(2, false, "healthy")),
            Decision::Stop
        );
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
        assert_eq!(r.time_to_stack_s, Some(7.0));
        let names: Vec<_> = r
            .milestones
            .iter()
            .map(|m| (m.name.as_str(), m.t_s))
            .collect();
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
        c.expect.images.push(ImageExpect {
            reference: "fixture/nginx:1".into(),
            id: None,
        });
        let mut run = Run::new(c).unwrap();
        assert_eq!(
            feed(&mut run, 5.0, &block(1, false, "healthy")),
            Decision::Continue
        );
        assert_eq!(
            feed(&mut run, 6.0, &block(2, true, "healthy")),
            Decision::Stop
        );
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, "image-missing");
        assert!(r.failures[0].message.contains("fixture/nginx:1"));
        assert_eq!(r.time_to_stack_s, None);
    }

    #[test]
    fn fail_patterns_stop_at_once_with_the_line() {
        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(
            run.on_line(&line(1.0, "[ 1.0] Kernel panic - not syncing: VFS")),
            Decision::Stop
        );
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, "kernel-panic");
        assert_eq!(
            r.failures[0].evidence.as_deref(),
            Some("[ 1.0] Kernel panic - not syncing: VFS")
        );

        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(run.on_line(&line(1.0, "app says BOOM")), Decision::Stop);
        assert_eq!(run.finish().failures[0].code, "fail-pattern");
    }

    #[test]
    fn over_budget_fails_with_the_measured_time() {
        let mut run = Run::new(cfg()).unwrap();
        // budget 10s × 2 = 20s; deadline 20s × 2 = 40s
        assert_eq!(
            feed(&mut run, 25.0, &block(1, false, "healthy")),
            Decision::Stop
        );
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.failures[0].code, "over-budget");
        assert_eq!(r.time_to_stack_s, Some(25.0));
    }

    #[test]
    fn timeout_says_what_was_still_missing() {
        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(run.on_tick(39.9), Decision::Continue);
        assert_eq!(run.on_tick(40.0), Decision::Stop);
        let r = run.finish();
        assert_eq!(r.failures[0].code, "timeout");
        assert!(
            r.failures[0].message.contains("no AIRBOOT-STATUS block"),
            "{}",
            r.failures[0].message
        );

        let mut run = Run::new(cfg()).unwrap();
        feed(&mut run, 5.0, &block(1, false, "starting"));
        assert_eq!(run.on_tick(41.0), Decision::Stop);
        let r = run.finish();
        assert!(
            r.failures[0].message.contains("redis is starting"),
            "{}",
            r.failures[0].message
        );
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
        assert_eq!(
            feed(&mut run, 8.0, &block(1, false, "healthy")),
            Decision::Stop
        );
        assert_eq!(run.finish().verdict, Verdict::Pass);

        // Never seen: the budget (5s × 2) ends the run at 10s, not at 40s.
        let mut run = Run::new(c.clone()).unwrap();
        assert_eq!(run.on_tick(9.0), Decision::Continue);
        assert_eq!(run.on_tick(10.5), Decision::Stop);
        assert_eq!(run.finish().failures[0].code, "milestone-late");

        // Stack ready but required milestone missing: keep waiting.
        c.milestones[0].within = None;
        let mut run = Run::new(c).unwrap();
        assert_eq!(
            feed(&mut run, 8.0, &block(1, false, "healthy")),
            Decision::Continue
        );
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
        c.milestones = vec![MilestoneSpec {
            name: "up".into(),
            console: "login:".into(),
            required: true,
            within: None,
        }];
        let mut run = Run::new(c).unwrap();
        assert_eq!(
            run.on_line(&line(1.0, "Linux version 6")),
            Decision::Continue
        );
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
        assert_eq!(r.failures[0].code, "vm-exited");
        assert!(
            r.failures[0]
                .evidence
                .as_deref()
                .unwrap()
                .contains("Power down")
        );

        let mut run = Run::new(cfg()).unwrap();
        assert_eq!(
            run.on_abort(3.0, "interrupted", "interrupted by SIGINT"),
            Decision::Stop
        );
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Error);
    }

    #[test]
    fn damaged_blocks_are_counted_and_skipped() {
        let mut run = Run::new(cfg()).unwrap();
        let mut b = block(1, true, "healthy");
        b[2] = b[2].replace("fixture/redis", "fixture/re[ 9.9] veth: up\"dis");
        assert_eq!(feed(&mut run, 5.0, &b), Decision::Continue);
        assert_eq!(
            feed(&mut run, 6.0, &block(2, true, "healthy")),
            Decision::Stop
        );
        let r = run.finish();
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.damaged_status_blocks, 2);
    }
}

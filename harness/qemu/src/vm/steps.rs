//! `[[step]]` actions, carried out once the run has decided and while the
//! guest still runs: a command through the probe, the guest's own reboot
//! (QEMU's `-no-reboot` makes it end QEMU), or a power cut (QEMU quits at
//! once). The console keeps being read and logged meanwhile.

use std::time::{Duration, Instant};

use airboot_core::report::StepRecord;
use airboot_core::scenario::{StepAction, StepSpec};
use airboot_proto::probe::{Body, Op};

use super::{Console, Launched, VmEvent};
use crate::probe_session::{ProbeEvent, Session};
use crate::process::interrupted;

/// What woke a wait during a step.
enum Wake {
    Answer(Result<Body, String>),
    /// QEMU exited, with its status.
    Exited(String),
    Deadline,
    Interrupted,
}

/// The guest side of the steps: the probe session and its events.
pub(super) struct Steps<'a> {
    pub session: Option<&'a Session>,
    pub events: &'a mut tokio::sync::mpsc::UnboundedReceiver<ProbeEvent>,
    pub t0: Instant,
}

impl Steps<'_> {
    /// Carry out `steps` in order (timeouts already scaled). Returns what
    /// each did and, when QEMU ended during them, its exit status.
    pub async fn carry_out(
        &mut self,
        vm: &mut Launched,
        console: &mut Console,
        steps: &[StepSpec],
        on_event: &mut dyn FnMut(VmEvent),
    ) -> (Vec<StepRecord>, Option<String>) {
        let mut done = Vec::new();
        for step in steps {
            let start_s = self.t0.elapsed().as_secs_f64();
            on_event(VmEvent::Note(format!("step {}: {}", step.name, step.action.describe())));
            let mut rec =
                StepRecord { name: step.name.clone(), action: step.action.describe(), start_s, ..Default::default() };
            if let Some(w) = step.wait {
                match self.wait(vm, console, Instant::now() + w, false).await {
                    Wake::Exited(st) => {
                        rec.detail = format!("QEMU exited ({st}) during the step's wait");
                        rec.end_s = self.t0.elapsed().as_secs_f64();
                        done.push(rec);
                        return (done, Some(st));
                    }
                    Wake::Interrupted => {
                        rec.detail = "airboot was interrupted".into();
                        done.push(rec);
                        return (done, None);
                    }
                    _ => {}
                }
            }
            let exited = match &step.action {
                StepAction::Run { command, timeout, exit } => {
                    self.run(vm, console, &mut rec, command, *timeout, *exit).await
                }
                StepAction::Reboot { timeout, .. } => self.reboot(vm, console, &mut rec, *timeout).await,
                StepAction::PowerCut => {
                    // The teardown's QMP `quit` is the cut: QEMU stops at
                    // once, the guest's unwritten pages are gone.
                    rec.ok = true;
                    rec.detail =
                        "the power was cut (QEMU quit at once; nothing the guest had not written survives)".into();
                    None
                }
            };
            rec.end_s = self.t0.elapsed().as_secs_f64();
            let stop = exited.is_some() || step.action.boots_again() || interrupted();
            done.push(rec);
            if stop {
                return (done, exited);
            }
        }
        (done, None)
    }

    async fn run(
        &mut self,
        vm: &mut Launched,
        console: &mut Console,
        rec: &mut StepRecord,
        command: &str,
        timeout: Duration,
        want: i32,
    ) -> Option<String> {
        let Some(session) = self.session else {
            rec.detail = "a `run` step needs the probe, and this boot has none (console only)".into();
            return None;
        };
        session.ask(
            Op::Exec { command: command.to_string(), timeout_s: timeout.as_secs().max(1) },
            timeout + Duration::from_secs(30),
        );
        // The session answers after its current status poll, and may have
        // to connect first.
        let deadline = Instant::now() + timeout + Duration::from_secs(60);
        match self.wait(vm, console, deadline, true).await {
            Wake::Answer(Ok(Body::Executed(r))) => {
                rec.ok = !r.timed_out && r.exit_code == Some(want);
                rec.detail = if r.timed_out {
                    format!("did not end within {:.0}s (killed)", timeout.as_secs_f64())
                } else {
                    match r.exit_code {
                        Some(c) if c == want => format!("exited {c} after {:.1}s", r.seconds),
                        Some(c) => format!("exited {c}, not {want}, after {:.1}s", r.seconds),
                        None => format!("killed by a signal after {:.1}s", r.seconds),
                    }
                };
                rec.exec = Some(r);
                None
            }
            Wake::Answer(Ok(other)) => {
                rec.detail = format!("the probe answered {other:?}");
                None
            }
            Wake::Answer(Err(e)) => {
                rec.detail = format!("the probe could not run it: {e}");
                None
            }
            Wake::Exited(st) => {
                rec.detail = format!("QEMU exited ({st}) while the command ran");
                Some(st)
            }
            Wake::Deadline => {
                rec.detail = format!(
                    "no answer from the probe within {:.0}s",
                    (timeout + Duration::from_secs(60)).as_secs_f64()
                );
                None
            }
            Wake::Interrupted => {
                rec.detail = "airboot was interrupted".into();
                None
            }
        }
    }

    async fn reboot(
        &mut self,
        vm: &mut Launched,
        console: &mut Console,
        rec: &mut StepRecord,
        timeout: Duration,
    ) -> Option<String> {
        let asked = Instant::now();
        let how = match self.session {
            Some(session) => {
                session.ask(Op::Reboot, Duration::from_secs(30));
                match self.wait(vm, console, Instant::now() + Duration::from_secs(60), true).await {
                    Wake::Answer(Ok(Body::Rebooting { how })) => format!("the probe ran `{how}`"),
                    Wake::Exited(st) => {
                        rec.ok = true;
                        rec.detail = format!("the guest rebooted (QEMU ended: {st})");
                        return Some(st);
                    }
                    Wake::Interrupted => {
                        rec.detail = "airboot was interrupted".into();
                        return None;
                    }
                    other => {
                        let why = match other {
                            Wake::Answer(Ok(b)) => format!("answered {b:?}"),
                            Wake::Answer(Err(e)) => e,
                            _ => "did not answer".into(),
                        };
                        rec.detail = format!("the probe could not reboot the guest ({why}); the power was cut instead");
                        return None;
                    }
                }
            }
            None => match vm.qmp.execute_within(qapi::qmp::system_powerdown {}, Duration::from_secs(10)).await {
                Ok(_) => "no probe: QEMU pressed the ACPI power button".to_string(),
                Err(e) => {
                    rec.detail =
                        format!("no probe, and QEMU could not press the power button ({e}): the power was cut instead");
                    return None;
                }
            },
        };
        match self.wait(vm, console, asked + timeout, false).await {
            Wake::Exited(st) => {
                rec.ok = true;
                rec.detail = format!("{how}; the guest shut down in {:.1}s", asked.elapsed().as_secs_f64());
                Some(st)
            }
            Wake::Interrupted => {
                rec.detail = "airboot was interrupted".into();
                None
            }
            _ => {
                let hint = if self.session.is_none() {
                    " (a guest without acpid, or without a power-button driver, ignores the button: give it the probe, injected or built in, for a clean reboot, or say `power_cut = true`)"
                } else {
                    ""
                };
                rec.detail = format!(
                    "{how}, and the guest did not shut down within {:.0}s: the power was cut instead{hint}",
                    timeout.as_secs_f64()
                );
                None
            }
        }
    }

    /// Keep the console flowing into its log until the probe answers
    /// (`answer`), QEMU exits, the deadline passes or airboot is interrupted.
    async fn wait(&mut self, vm: &mut Launched, console: &mut Console, deadline: Instant, answer: bool) -> Wake {
        let mut stdout_open = true;
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                bytes = vm.console.next(), if stdout_open => {
                    let t = self.t0.elapsed().as_secs_f64();
                    let lines = match bytes {
                        Some(b) => console.push(&b, t),
                        None => {
                            stdout_open = false;
                            console.finish(t)
                        }
                    };
                    for line in lines {
                        if console.record(line).is_err() {
                            break;
                        }
                    }
                }
                Some(ev) = self.events.recv() => {
                    if let ProbeEvent::Answer(a) = ev && answer {
                        return Wake::Answer(a);
                    }
                }
                status = vm.child.wait() => {
                    let t = self.t0.elapsed().as_secs_f64();
                    let rest = vm.console.rest(Duration::from_millis(500)).await;
                    let mut lines = console.push(&rest, t);
                    lines.extend(console.finish(t));
                    for line in lines {
                        console.last_words(line);
                    }
                    return Wake::Exited(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
                }
                _ = tokio::time::sleep_until(deadline.into()) => return Wake::Deadline,
                _ = ticker.tick() => {
                    if interrupted() {
                        return Wake::Interrupted;
                    }
                }
            }
        }
    }
}

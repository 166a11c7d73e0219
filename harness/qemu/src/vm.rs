//! Runs one VM and feeds what it prints, and what its probe answers, to
//! the pure run state machine.
//!
//! Order of a run: start the transport's helper (vhost-device-vsock) if
//! any; spawn QEMU paused (`-S`) with its serial console on a pipe; attach
//! QMP; check QMP's device list for network devices; `cont` (t0); then
//! read the console and the probe until the state machine decides, the
//! deadline passes, QEMU exits, or airboot is interrupted. QEMU and the
//! helper are then stopped, whatever happened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airboot_core::console::{LineSplitter, Tail, TimedLine, clean_line, format_log_line};
use airboot_core::cut::{MarkSeen, Recorder, StopRule};
use airboot_core::report::Milestone;
use airboot_core::run::{Decision, Run, RunResult};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::argv::{VmSpec, network_args, qemu_args};
use crate::probe_session::{self, ProbeEvent};
use crate::process::{GroupGuard, harden_tokio, interrupt_reason, interrupted};
use crate::qmp::Qmp;
use crate::transport::{Endpoint, Plan};

mod feed;
mod steps;

use feed::ConsoleFeed;

/// Longest console line kept; longer lines are cut (and flagged).
pub const MAX_LINE: usize = 4096;
/// console.log stops growing here; the report says so.
pub const CONSOLE_LOG_CAP: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited before the guest started ({status}): {stderr}")]
    EarlyExit { status: String, stderr: String },
    #[error("{helper} did not start: {why}")]
    Helper { helper: String, why: String },
    #[error("QMP: {0}")]
    Qmp(#[from] crate::qmp::QmpError),
    #[error("cannot write {path}: {source}")]
    Log {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Interrupted(String),
}

/// Live progress, for the terminal.
#[derive(Debug, Clone)]
pub enum VmEvent {
    Started {
        qemu_version: Option<String>,
    },
    Milestone(Milestone),
    Note(String),
    /// What the probe reported, in short (every status it sends).
    Status(GuestStatus),
}

/// A probe status in short, for progress while a guest boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestStatus {
    pub engine: airboot_proto::EngineState,
    pub images: usize,
    pub containers: usize,
    pub running: usize,
    pub settled: bool,
}

/// Everything a run learnt, for the report.
#[derive(Debug)]
pub struct VmOutcome {
    pub result: RunResult,
    pub argv: Vec<String>,
    pub qemu_version: Option<String>,
    pub exit: Option<String>,
    pub stderr_tail: Vec<String>,
    pub network_args: Vec<String>,
    pub pci_network_devices: Vec<String>,
    pub pci_checked: bool,
    pub console_lines: u64,
    pub console_bytes: u64,
    pub truncated_lines: u64,
    pub log_capped: bool,
    pub tail: Vec<String>,
    pub leftover: Vec<String>,
    pub probe_transport: Option<String>,
    pub probe_version: Option<String>,
    pub helper_log_tail: Vec<String>,
    pub recorded: Option<Recorded>,
    /// `[[step]]` actions carried out after the verdict.
    pub steps: Vec<airboot_core::report::StepRecord>,
    /// When the run was decided (or QEMU ended), seconds from t0.
    pub ended_s: Option<f64>,
}

pub struct VmRunner {
    pub qemu: PathBuf,
    pub spec: VmSpec,
    pub plan: Plan,
    pub console_log: PathBuf,
    /// Images the probe runs once the stack is ready.
    pub verify_images: Vec<String>,
    /// A recorded boot (the spec's `write_log`): the console marks to
    /// note positions at, and when to stop.
    pub record: Option<RecordSpec>,
    /// No probe: log in on the serial console and start the reference
    /// reporter (`airboot_core::login`).
    pub login: Option<LoginPlan>,
    /// `[[step]]` actions to carry out once the run has decided, up to
    /// and including the first that ends the boot (timeouts scaled).
    pub after: Vec<airboot_core::scenario::StepSpec>,
}

/// Credentials and the reporter's configuration for a console login. The
/// password is never shown (`Debug` hides it).
#[derive(Clone)]
pub struct LoginPlan {
    pub user: String,
    pub password: String,
    pub conf: String,
    /// The run's slowdown factor: the wait for a prompt is scaled by it.
    pub scale: f64,
}

impl std::fmt::Debug for LoginPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LoginPlan {{ user: {:?}, password: (not shown), conf: {:?}, scale: {} }}",
            self.user, self.conf, self.scale
        )
    }
}

#[derive(Debug, Clone)]
pub struct RecordSpec {
    pub marks: Vec<(String, regex::Regex)>,
    /// `None`: the boot runs to its own end.
    pub stop: Option<StopRule>,
    /// Pause the guest when the stop rule fires (a cut ends the recorded
    /// boot). False: only note the write log's length then and let the
    /// boot go on (a boot that is judged and also cut in, for a second
    /// cut during recovery).
    pub pause: bool,
}

/// What a recorded boot saw.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub seen: Vec<MarkSeen>,
    /// When the stop rule fired (seconds after t0), and how long the
    /// write log was then (before the pause, whose own flush is not the
    /// guest's; without `pause`, while the boot went on); `None` when it
    /// never fired.
    pub stopped: Option<(f64, u64)>,
}

/// The last `n` lines a process wrote to stderr.
type StderrTail = Arc<Mutex<VecDeque<String>>>;

fn tail_of(t: &StderrTail) -> Vec<String> {
    t.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
}

fn file_tail(p: &std::path::Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// A started QEMU (and its helper), paused at t0-to-be, with QMP attached.
struct Launched {
    child: tokio::process::Child,
    guard: GroupGuard,
    helper: Option<(GroupGuard, tokio::process::Child)>,
    qmp: Qmp,
    /// The serial console, read on a thread of its own.
    console: ConsoleFeed,
    /// Kept open: an EOF on the console input is not something the guest
    /// should ever see. Written only by a console login.
    stdin: Option<tokio::process::ChildStdin>,
    stderr_tail: StderrTail,
    qemu_version: Option<String>,
    pci_network_devices: Vec<String>,
    pci_checked: bool,
}

/// The serial console as it arrives: split into lines (cut at
/// [`MAX_LINE`]), logged with host time (capped at [`CONSOLE_LOG_CAP`]),
/// the last lines kept, everything counted.
struct Console {
    splitter: LineSplitter,
    raw: Vec<airboot_core::console::RawLine>,
    tail: Tail,
    log: BufWriter<File>,
    path: PathBuf,
    logged: u64,
    log_capped: bool,
    lines: u64,
    bytes: u64,
    truncated: u64,
}

impl Console {
    fn new(path: &std::path::Path) -> Result<Console, VmError> {
        let log = File::create(path).map_err(|source| VmError::Log { path: path.display().to_string(), source })?;
        Ok(Console {
            splitter: LineSplitter::new(MAX_LINE),
            raw: Vec::new(),
            tail: Tail::new(200),
            log: BufWriter::new(log),
            path: path.to_path_buf(),
            logged: 0,
            log_capped: false,
            lines: 0,
            bytes: 0,
            truncated: 0,
        })
    }

    /// Bytes from the guest; the complete lines they end, stamped `t`.
    fn push(&mut self, bytes: &[u8], t: f64) -> Vec<TimedLine> {
        self.bytes += bytes.len() as u64;
        self.splitter.push(bytes, &mut self.raw);
        self.take(t)
    }

    /// The console closed: whatever is left is a line.
    fn finish(&mut self, t: f64) -> Vec<TimedLine> {
        self.raw.extend(self.splitter.finish());
        self.take(t)
    }

    fn take(&mut self, t: f64) -> Vec<TimedLine> {
        self.raw.drain(..).map(|r| TimedLine { t, text: clean_line(&r.bytes), truncated: r.truncated }).collect()
    }

    /// The unfinished line so far (a prompt ends no line), stamped `t`.
    fn pending(&self, t: f64) -> Option<TimedLine> {
        (self.splitter.pending() > 0).then(|| TimedLine { t, text: clean_line(self.splitter.peek()), truncated: false })
    }

    /// Count a line, log it (until the cap), keep it in the tail.
    fn record(&mut self, line: TimedLine) -> Result<(), VmError> {
        self.lines += 1;
        self.truncated += u64::from(line.truncated);
        if !self.log_capped {
            let s = format_log_line(&line);
            if self.logged + s.len() as u64 > CONSOLE_LOG_CAP {
                self.log_capped = true;
                let _ = self.log.write_all(b"[airboot: console.log capped here; the guest printed more]\n");
            } else {
                self.logged += s.len() as u64;
                self.log
                    .write_all(s.as_bytes())
                    .map_err(|source| VmError::Log { path: self.path.display().to_string(), source })?;
            }
        }
        self.tail.push(line);
        Ok(())
    }

    /// The run is over: the unfinished line, if any, is its last words.
    fn close(&mut self, t: f64) {
        for line in self.finish(t) {
            self.last_words(line);
        }
    }

    /// A line at the very end (evidence of why the run stopped): counted,
    /// logged past the cap and any error, kept in the tail.
    fn last_words(&mut self, line: TimedLine) {
        self.lines += 1;
        let _ = self.log.write_all(format_log_line(&line).as_bytes());
        self.tail.push(line);
    }
}

/// Hands new milestones of the run to the caller, each once (the run
/// may later replace one with a more exact time from the guest's records;
/// that is not a new milestone).
struct Milestones {
    seen: std::collections::BTreeSet<String>,
}

impl Milestones {
    fn report(&mut self, run: &Run, on_event: &mut dyn FnMut(VmEvent)) {
        if run.seen() > self.seen.len() {
            for m in run.milestones() {
                if self.seen.insert(m.name.clone()) {
                    on_event(VmEvent::Milestone(m));
                }
            }
        }
    }
}

/// How the pumping of a running guest ended.
struct Pumped {
    /// QEMU's own exit, when it exited by itself.
    exit: Option<String>,
    /// The recorded boot reached its cut: freeze the guest.
    cut_now: bool,
    recorded: Option<Recorded>,
    probe_transport: Option<String>,
    probe_version: Option<String>,
}

impl VmRunner {
    /// The full QEMU argument list (machine + transport).
    pub fn argv(&self) -> Vec<String> {
        let mut a = qemu_args(&self.spec);
        a.extend(self.plan.qemu_args.iter().cloned());
        a
    }

    pub async fn run(&self, mut run: Run, on_event: &mut dyn FnMut(VmEvent)) -> Result<VmOutcome, VmError> {
        let helper_log = self.console_log.with_file_name("vhost-device-vsock.log");
        let argv = self.argv();
        let mut vm = self.launch(&argv, &helper_log).await?;
        let mut console = Console::new(&self.console_log)?;
        vm.qmp.execute_within(qapi::qmp::cont {}, Duration::from_secs(10)).await?;
        let t0 = Instant::now();
        on_event(VmEvent::Started { qemu_version: vm.qemu_version.clone() });
        let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<ProbeEvent>();
        let session = match &self.plan.endpoint {
            Endpoint::None => None,
            e => Some(probe_session::start(e.clone(), t0, ptx)),
        };
        let mut pumped = self.pump(&mut vm, &mut console, &mut run, session.as_ref(), &mut prx, t0, on_event).await?;
        let ended_s = Some(t0.elapsed().as_secs_f64());
        let mut steps = Vec::new();
        if !self.after.is_empty() && pumped.exit.is_none() && !pumped.cut_now && run.is_done() && !interrupted() {
            let mut s = steps::Steps { session: session.as_ref(), events: &mut prx, t0 };
            let (done, exit) = s.carry_out(&mut vm, &mut console, &self.after, on_event).await;
            steps = done;
            pumped.exit = exit;
        }
        drop(session);
        // An unfinished line (a login prompt, a shell's) is often why the
        // run ended: log it whatever ended the run.
        console.close(t0.elapsed().as_secs_f64());
        let _ = console.log.flush();
        // A cut: freeze the guest. The recorder noted how far the write
        // log got when the cut's moment came, before this pause, because
        // pausing makes QEMU flush every disk (`bdrv_flush_all`), and
        // blklogwrites logs that flush like the guest's own: counted in, it
        // would make every write before it durable and a power cut here
        // would lose nothing. Requests still in flight at that instant had
        // not completed: they are lost too.
        if pumped.cut_now
            && let Err(e) = vm.qmp.execute_within(qapi::qmp::stop {}, Duration::from_secs(10)).await
        {
            on_event(VmEvent::Note(format!("could not pause the guest for the cut: {e}")));
        }
        let (exit, leftover) = Self::teardown(&mut vm, pumped.exit).await;
        Ok(VmOutcome {
            result: run.finish(),
            network_args: network_args(&argv),
            argv,
            qemu_version: vm.qemu_version,
            exit: Some(exit),
            stderr_tail: tail_of(&vm.stderr_tail),
            pci_network_devices: vm.pci_network_devices,
            pci_checked: vm.pci_checked,
            console_lines: console.lines,
            console_bytes: console.bytes,
            truncated_lines: console.truncated,
            log_capped: console.log_capped,
            tail: console.tail.last(40).into_iter().map(|l| format!("[+{:.3}s] {}", l.t, l.text)).collect(),
            leftover,
            probe_transport: pumped.probe_transport,
            probe_version: pumped.probe_version,
            recorded: pumped.recorded,
            helper_log_tail: if self.plan.helper.is_some() { file_tail(&helper_log, 10) } else { Vec::new() },
            steps,
            ended_s,
        })
    }

    /// Start the transport's helper (QEMU connects to its socket), then
    /// QEMU paused, attach QMP (racing QEMU's own failure to start), and
    /// list its PCI network devices.
    async fn launch(&self, argv: &[String], helper_log: &std::path::Path) -> Result<Launched, VmError> {
        let mut helper = None;
        if let Some(h) = &self.plan.helper {
            let log_err = |source| VmError::Log { path: helper_log.display().to_string(), source };
            let log = File::create(helper_log).map_err(log_err)?;
            let log2 = log.try_clone().map_err(log_err)?;
            let mut cmd = tokio::process::Command::new(&h.program);
            cmd.args(&h.args).stdin(Stdio::null()).stdout(log).stderr(log2);
            harden_tokio(&mut cmd);
            let mut child =
                cmd.spawn().map_err(|source| VmError::Spawn { program: h.program.display().to_string(), source })?;
            let guard = GroupGuard::new(child.id().unwrap_or(0), "vhost-device-vsock");
            let until = Instant::now() + Duration::from_secs(10);
            while !h.socket.exists() {
                if let Ok(Some(st)) = child.try_wait() {
                    return Err(VmError::Helper {
                        helper: h.program.display().to_string(),
                        why: format!("exited ({st}): {}", file_tail(helper_log, 5).join(" | ")),
                    });
                }
                if Instant::now() > until {
                    return Err(VmError::Helper {
                        helper: h.program.display().to_string(),
                        why: format!("no socket {} after 10s", h.socket.display()),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            helper = Some((guard, child));
        }

        let mut cmd = tokio::process::Command::new(&self.qemu);
        cmd.args(argv).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        harden_tokio(&mut cmd);
        let mut child =
            cmd.spawn().map_err(|source| VmError::Spawn { program: self.qemu.display().to_string(), source })?;
        let guard = GroupGuard::new(child.id().unwrap_or(0), "qemu");
        let stdin = child.stdin.take();
        let console = ConsoleFeed::start(child.stdout.take().expect("piped stdout"))
            .map_err(|source| VmError::Spawn { program: "the console reader".into(), source })?;
        let stderr_tail: StderrTail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == 50 {
                        t.pop_front();
                    }
                    t.push_back(l);
                }
            });
        }
        let connect = Qmp::connect(&self.spec.qmp_socket, Duration::from_secs(20));
        let mut qmp = tokio::select! {
            q = connect => match q {
                Ok(q) => q,
                Err(e) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(VmError::EarlyExit { status: status.to_string(), stderr: tail_of(&stderr_tail).join(" | ") });
                    }
                    return Err(e.into());
                }
            },
            status = child.wait() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(VmError::EarlyExit { status, stderr: tail_of(&stderr_tail).join(" | ") });
            }
        };
        let qemu_version = qmp.version.clone();
        let (pci_network_devices, pci_checked) = match qmp.pci_network_devices().await {
            Ok(d) => (d, true),
            Err(_) => (Vec::new(), false),
        };
        if interrupted() {
            return Err(VmError::Interrupted(interrupt_reason().into()));
        }
        Ok(Launched {
            child,
            guard,
            helper,
            qmp,
            console,
            stdin,
            stderr_tail,
            qemu_version,
            pci_network_devices,
            pci_checked,
        })
    }

    /// From t0: feed the console and the probe to the run state machine
    /// (and the recorder, for a recorded boot) until the run decides, the
    /// cut's moment comes, QEMU exits, or airboot is interrupted.
    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        vm: &mut Launched,
        console: &mut Console,
        run: &mut Run,
        session: Option<&probe_session::Session>,
        prx: &mut tokio::sync::mpsc::UnboundedReceiver<ProbeEvent>,
        t0: Instant,
        on_event: &mut dyn FnMut(VmEvent),
    ) -> Result<Pumped, VmError> {
        let write_log = self.spec.write_log.clone();
        let log_len = move || write_log.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
        let mut recorder = self.record.as_ref().map(|r| Recorder::new(r.marks.clone(), r.stop));
        let pause = self.record.as_ref().is_some_and(|r| r.pause);
        let mut out = Pumped { exit: None, cut_now: false, recorded: None, probe_transport: None, probe_version: None };

        let mut milestones = Milestones { seen: Default::default() };
        // A recording reads the console at once (see ConsoleFeed::pace).
        vm.console.pace(recorder.is_none());
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut stdout_open = true;
        // When the console last delivered bytes, and whether the unfinished
        // line since then has been scanned (prompts end no line).
        let mut last_read = Instant::now();
        let mut stall_scanned = false;
        let mut login =
            self.login.as_ref().map(|l| airboot_core::login::Login::new(&l.user, &l.password, l.conf.clone(), l.scale));

        'run: loop {
            tokio::select! {
                bytes = vm.console.next(), if stdout_open => {
                    let t = t0.elapsed().as_secs_f64();
                    let lines = match bytes {
                        None => {
                            stdout_open = false;
                            console.finish(t)
                        }
                        Some(b) => {
                            last_read = Instant::now();
                            stall_scanned = false;
                            console.push(&b, t)
                        }
                    };
                    for line in lines {
                        let mut decision = run.on_line(&line);
                        if let Some(l) = login.as_mut() {
                            let action = l.on_line(&line);
                            if Self::act(vm, run, l, action, line.t).await == Decision::Stop {
                                decision = Decision::Stop;
                            }
                        }
                        if let Some(r) = recorder.as_mut() {
                            out.cut_now |= r.on_line(line.t, &line.text, &mut || log_len()) && pause;
                        }
                        console.record(line)?;
                        milestones.report(run, on_event);
                        if decision == Decision::Stop || out.cut_now {
                            break 'run;
                        }
                    }
                }
                Some(ev) = prx.recv() => {
                    let decision = match ev {
                        ProbeEvent::Hello { t, hello } => {
                            out.probe_transport = Some(hello.transport.clone());
                            out.probe_version = Some(hello.probe_version.clone());
                            run.on_probe_hello(t, &hello.machine);
                            Decision::Continue
                        }
                        ProbeEvent::Status { status, sample } => {
                            on_event(VmEvent::Status(GuestStatus {
                                engine: status.engine.state,
                                images: status.images.len(),
                                containers: status.containers.len(),
                                running: status.containers.iter().filter(|c| c.state == "running").count(),
                                settled: status.settled,
                            }));
                            run.on_probe_status(&status, sample)
                        }
                        ProbeEvent::Verified { t, runs, airgap } => run.on_verification(t, runs, airgap.as_ref()),
                        ProbeEvent::Trouble(m) => {
                            on_event(VmEvent::Note(m.clone()));
                            run.note(m);
                            Decision::Continue
                        }
                        ProbeEvent::Errors { t, total } => {
                            run.on_probe_errors(t, total);
                            Decision::Continue
                        }
                        ProbeEvent::Answer(_) => Decision::Continue,
                    };
                    milestones.report(run, on_event);
                    match decision {
                        Decision::Stop => break 'run,
                        Decision::Verify => {
                            on_event(VmEvent::Note(format!("stack ready: test-running {} image(s) with no network and checking the air gap", self.verify_images.len())));
                            if let Some(s) = session {
                                s.verify(self.verify_images.clone());
                            }
                        }
                        Decision::Continue => {}
                    }
                }
                status = vm.child.wait() => {
                    // Let the console drain: the last lines often say why.
                    let t = t0.elapsed().as_secs_f64();
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    let rest = vm.console.rest(Duration::from_millis(500)).await;
                    let mut lines = console.push(&rest, t);
                    lines.extend(console.finish(t));
                    out.exit = Some(status.clone());
                    for line in lines {
                        let d = run.on_line(&line);
                        console.last_words(line);
                        if d == Decision::Stop {
                            break 'run;
                        }
                    }
                    run.on_exit(t, &status);
                    break 'run;
                }
                _ = ticker.tick() => {
                    let t = t0.elapsed().as_secs_f64();
                    if interrupted() {
                        run.on_abort(t, airboot_model::FailureCode::Interrupted, interrupt_reason());
                        break 'run;
                    }
                    if !stall_scanned && last_read.elapsed() > Duration::from_millis(1500)
                        && let Some(line) = console.pending(t)
                    {
                        stall_scanned = true;
                        let mut decision = run.on_line(&line);
                        if let Some(l) = login.as_mut() {
                            let action = l.on_line(&line);
                            if Self::act(vm, run, l, action, t).await == Decision::Stop {
                                decision = Decision::Stop;
                            }
                        }
                        milestones.report(run, on_event);
                        if decision == Decision::Stop {
                            // The prompt is the evidence: `run` logs it.
                            break 'run;
                        }
                    }
                    if recorder.as_mut().is_some_and(|r| r.on_tick(t, &mut || log_len())) && pause {
                        out.cut_now = true;
                        break 'run;
                    }
                    if let Some(l) = login.as_mut() {
                        let action = l.on_tick(t);
                        if Self::act(vm, run, l, action, t).await == Decision::Stop {
                            break 'run;
                        }
                    }
                    if run.on_tick(t) == Decision::Stop {
                        milestones.report(run, on_event);
                        break 'run;
                    }
                }
            }
        }
        out.recorded = recorder.map(|r| Recorded { seen: r.seen, stopped: r.fired });
        Ok(out)
    }

    /// Carry out what the console login asks: type on the serial console,
    /// or end the run when logging in failed.
    async fn act(
        vm: &mut Launched,
        run: &mut Run,
        login: &airboot_core::login::Login,
        action: airboot_core::login::Action,
        t: f64,
    ) -> Decision {
        use airboot_core::login::Action;
        use tokio::io::AsyncWriteExt;
        let starts = matches!(action, Action::Start(_));
        match action {
            Action::Nothing => Decision::Continue,
            Action::Fail(why) => run.on_abort(t, airboot_model::FailureCode::LoginFailed, &why),
            Action::Type(bytes) | Action::Start(bytes) => {
                let Some(stdin) = vm.stdin.as_mut() else {
                    return run.on_abort(t, airboot_model::FailureCode::LoginFailed, "the console input is closed");
                };
                if let Err(e) = async {
                    stdin.write_all(&bytes).await?;
                    stdin.flush().await
                }
                .await
                {
                    return run.on_abort(
                        t,
                        airboot_model::FailureCode::LoginFailed,
                        &format!("cannot type on the serial console: {e}"),
                    );
                }
                if starts {
                    run.on_login_started(t, login.user());
                }
                Decision::Continue
            }
        }
    }

    /// Stop the VM, politely then for sure, then the helper; say how QEMU
    /// ended and which process groups outlived it (none, or a bug).
    async fn teardown(vm: &mut Launched, exit: Option<String>) -> (String, Vec<String>) {
        let exit = match exit {
            Some(e) => e,
            None => {
                let _ = vm.qmp.quit(Duration::from_secs(3)).await;
                match tokio::time::timeout(Duration::from_secs(5), vm.child.wait()).await {
                    Ok(Ok(s)) => format!("{s} (after quit)"),
                    _ => "killed".into(),
                }
            }
        };
        vm.guard.kill();
        let _ = vm.child.wait().await;
        let mut leftover = Vec::new();
        if crate::process::group_alive(vm.guard.pgid()) {
            leftover.push(format!("qemu group {}", vm.guard.pgid()));
        }
        if let Some((g, c)) = vm.helper.as_mut() {
            g.kill();
            let _ = c.wait().await;
            if crate::process::group_alive(g.pgid()) {
                leftover.push(format!("vhost-device-vsock group {}", g.pgid()));
            }
        }
        (exit, leftover)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prompt ends no line; the run's end still logs it, once.
    #[test]
    fn the_unfinished_line_at_the_end_is_logged_once() {
        let path = std::env::temp_dir().join(format!("airboot-console-close-{}.log", std::process::id()));
        let mut c = Console::new(&path).unwrap();
        for line in c.push(b"Debian GNU/Linux 12 ttyS0\n\ndebian login: ", 1.0) {
            c.record(line).unwrap();
        }
        assert_eq!(c.pending(2.0).map(|l| l.text), Some("debian login: ".to_string()));
        c.close(3.0);
        c.close(4.0);
        c.log.flush().unwrap();
        let log = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(log.matches("debian login:").count(), 1, "{log}");
        assert_eq!(c.lines, 3);
        assert_eq!(c.tail.last(1)[0].text, "debian login: ");
    }
}

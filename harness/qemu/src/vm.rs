//! Runs one VM and feeds what it prints to the pure run state machine.
//!
//! Order of a run: spawn QEMU paused (`-S`) with its serial console on a
//! pipe, attach QMP, check QMP's device list for network devices, `cont`
//! (t0), then read the console until the state machine decides, the
//! deadline passes, QEMU exits, or airboot is interrupted. QEMU is then
//! asked to quit and its process group is killed whatever happened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airboot_core::console::{LineSplitter, Tail, TimedLine, clean_line, format_log_line};
use airboot_core::report::Milestone;
use airboot_core::run::{Decision, Run, RunResult};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::argv::{VmSpec, network_args, qemu_args};
use crate::process::{GroupGuard, harden_tokio, interrupt_reason, interrupted};
use crate::qmp::Qmp;

/// Longest console line kept; longer lines are cut (and flagged).
pub const MAX_LINE: usize = 4096;
/// console.log stops growing here; the report says so.
pub const CONSOLE_LOG_CAP: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("could not start {qemu}: {source}")]
    Spawn {
        qemu: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited before the guest started ({status}): {stderr}")]
    EarlyExit { status: String, stderr: String },
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
    Started { qemu_version: Option<String> },
    Milestone(Milestone),
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
}

pub struct VmRunner {
    pub qemu: PathBuf,
    pub spec: VmSpec,
    pub console_log: PathBuf,
}

/// The last `n` lines QEMU wrote to stderr.
type StderrTail = Arc<Mutex<VecDeque<String>>>;

impl VmRunner {
    pub async fn run(
        &self,
        mut run: Run,
        on_event: &mut dyn FnMut(VmEvent),
    ) -> Result<VmOutcome, VmError> {
        let argv = qemu_args(&self.spec);
        let mut cmd = tokio::process::Command::new(&self.qemu);
        cmd.args(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        harden_tokio(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| VmError::Spawn {
            qemu: self.qemu.display().to_string(),
            source,
        })?;
        let mut guard = GroupGuard::new(child.id().unwrap_or(0), "qemu");
        // Keep stdin open (never written): an EOF on the console input is
        // not something the guest should ever see.
        let _stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("piped stdout");
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
        let stderr_text = |t: &StderrTail| -> Vec<String> {
            t.lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect()
        };

        // QMP, racing QEMU's own failure to start.
        let connect = Qmp::connect(&self.spec.qmp_socket, Duration::from_secs(20));
        let mut qmp = tokio::select! {
            q = connect => match q {
                Ok(q) => q,
                Err(e) => {
                    // QEMU may have died: prefer its own words.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(VmError::EarlyExit { status: status.to_string(), stderr: stderr_text(&stderr_tail).join(" | ") });
                    }
                    return Err(e.into());
                }
            },
            status = child.wait() => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(VmError::EarlyExit { status, stderr: stderr_text(&stderr_tail).join(" | ") });
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

        let log = File::create(&self.console_log).map_err(|source| VmError::Log {
            path: self.console_log.display().to_string(),
            source,
        })?;
        let mut log = BufWriter::new(log);
        let mut logged: u64 = 0;
        let mut log_capped = false;

        qmp.execute_within(qapi::qmp::cont {}, Duration::from_secs(10))
            .await?;
        let t0 = Instant::now();
        on_event(VmEvent::Started {
            qemu_version: qemu_version.clone(),
        });

        let mut splitter = LineSplitter::new(MAX_LINE);
        let mut tail = Tail::new(200);
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut console_lines = 0u64;
        let mut console_bytes = 0u64;
        let mut truncated_lines = 0u64;
        let mut seen = 0usize;
        let mut exit: Option<String> = None;
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut stdout_open = true;

        'run: loop {
            tokio::select! {
                n = stdout.read(&mut buf), if stdout_open => {
                    let n = n.unwrap_or(0);
                    let t = t0.elapsed().as_secs_f64();
                    if n == 0 {
                        stdout_open = false;
                        raw.extend(splitter.finish());
                    } else {
                        console_bytes += n as u64;
                        splitter.push(&buf[..n], &mut raw);
                    }
                    for r in raw.drain(..) {
                        let line = TimedLine { t, text: clean_line(&r.bytes), truncated: r.truncated };
                        console_lines += 1;
                        truncated_lines += u64::from(line.truncated);
                        if !log_capped {
                            let s = format_log_line(&line);
                            if logged + s.len() as u64 > CONSOLE_LOG_CAP {
                                log_capped = true;
                                let _ = log.write_all(b"[airboot: console.log capped here; the guest printed more]\n");
                            } else {
                                logged += s.len() as u64;
                                log.write_all(s.as_bytes()).map_err(|source| VmError::Log { path: self.console_log.display().to_string(), source })?;
                            }
                        }
                        let decision = run.on_line(&line);
                        tail.push(line);
                        if run.seen() > seen {
                            for m in run.milestones().into_iter().skip(seen) {
                                on_event(VmEvent::Milestone(m));
                            }
                            seen = run.seen();
                        }
                        if decision == Decision::Stop {
                            break 'run;
                        }
                    }
                }
                status = child.wait() => {
                    // Let the console drain: the last lines often say why.
                    let t = t0.elapsed().as_secs_f64();
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    let mut rest = Vec::new();
                    let _ = tokio::time::timeout(Duration::from_millis(500), stdout.read_to_end(&mut rest)).await;
                    splitter.push(&rest, &mut raw);
                    raw.extend(splitter.finish());
                    for r in raw.drain(..) {
                        let line = TimedLine { t, text: clean_line(&r.bytes), truncated: r.truncated };
                        let _ = log.write_all(format_log_line(&line).as_bytes());
                        console_lines += 1;
                        if run.on_line(&line) == Decision::Stop {
                            tail.push(line);
                            exit = Some(status.clone());
                            break 'run;
                        }
                        tail.push(line);
                    }
                    exit = Some(status.clone());
                    run.on_exit(t, &status);
                    break 'run;
                }
                _ = ticker.tick() => {
                    let t = t0.elapsed().as_secs_f64();
                    if interrupted() {
                        run.on_abort(t, "interrupted", interrupt_reason());
                        break 'run;
                    }
                    if run.on_tick(t) == Decision::Stop {
                        if run.seen() > seen {
                            for m in run.milestones().into_iter().skip(seen) {
                                on_event(VmEvent::Milestone(m));
                            }
                        }
                        break 'run;
                    }
                }
            }
        }
        let _ = log.flush();

        // Stop the VM: politely, then for sure.
        if exit.is_none() {
            let _ = qmp.quit(Duration::from_secs(3)).await;
            match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(Ok(s)) => exit = Some(format!("{s} (after quit)")),
                _ => exit = Some("killed".into()),
            }
        }
        guard.kill();
        let _ = child.wait().await;
        let leftover = if crate::process::group_alive(guard.pgid()) {
            vec![format!("qemu group {}", guard.pgid())]
        } else {
            vec![]
        };

        let stderr_tail = stderr_text(&stderr_tail);
        Ok(VmOutcome {
            result: run.finish(),
            network_args: network_args(&argv),
            argv,
            qemu_version,
            exit,
            stderr_tail,
            pci_network_devices,
            pci_checked,
            console_lines,
            console_bytes,
            truncated_lines,
            log_capped,
            tail: tail
                .last(40)
                .into_iter()
                .map(|l| format!("[+{:.3}s] {}", l.t, l.text))
                .collect(),
            leftover,
        })
    }
}

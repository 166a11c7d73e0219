//! Commands the host asks for (`[[step]] run`), and the guest's reboot.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airboot_proto::probe::{EXEC_OUTPUT_CAP, ExecResult};

/// Keep the last `cap` bytes of what is appended.
#[derive(Debug, Default)]
struct TailBuf {
    bytes: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl TailBuf {
    fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
        if self.bytes.len() > self.cap {
            let cut = self.bytes.len() - self.cap;
            self.bytes.drain(..cut);
            self.dropped += cut as u64;
        }
    }

    fn text(&self) -> String {
        let body = String::from_utf8_lossy(&self.bytes);
        if self.dropped > 0 { format!("[{} earlier bytes not kept]\n{body}", self.dropped) } else { body.into_owned() }
    }
}

/// Run `command` with `sh -c`, stdout and stderr together, for at most
/// `timeout` (then it and its children are killed).
pub fn run(command: &str, timeout: Duration) -> ExecResult {
    let start = Instant::now();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(format!("exec 2>&1\n{command}")).stdin(Stdio::null()).stdout(Stdio::piped());
    // Its own process group, so a timeout kills what it started too.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ExecResult { output: format!("cannot start /bin/sh: {e}"), ..Default::default() };
        }
    };
    let tail = Arc::new(Mutex::new(TailBuf { cap: EXEC_OUTPUT_CAP, ..Default::default() }));
    let reader = child.stdout.take().map(|mut out| {
        let tail = tail.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
            }
        })
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() >= timeout => {
                timed_out = true;
                #[allow(unsafe_code)]
                // SAFETY: kill(2) on the process group we created; no memory involved.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    if let Some(r) = reader {
        // A background child may hold the pipe open: do not wait for it.
        let until = Instant::now() + Duration::from_secs(2);
        while !r.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let output = tail.lock().unwrap_or_else(|e| e.into_inner()).text();
    ExecResult { exit_code: status.and_then(|s| s.code()), timed_out, output, seconds: start.elapsed().as_secs_f64() }
}

/// How this guest reboots: through systemd when it runs, else `reboot`.
pub fn reboot_command() -> Vec<&'static str> {
    if std::path::Path::new("/run/systemd/system").is_dir() { vec!["systemctl", "reboot"] } else { vec!["reboot"] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_end_and_counts_what_it_dropped() {
        let mut t = TailBuf { cap: 4, ..Default::default() };
        t.push(b"abc");
        t.push(b"defg");
        assert_eq!(t.text(), "[3 earlier bytes not kept]\ndefg");
    }

    #[test]
    fn a_command_answers_its_exit_status_and_its_output_with_stderr() {
        let r = run("echo out; echo err >&2; exit 3", Duration::from_secs(10));
        assert_eq!(r.exit_code, Some(3));
        assert!(!r.timed_out);
        assert_eq!(r.output, "out\nerr\n");
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        let r = run("echo before; sleep 30 & sleep 30", Duration::from_millis(300));
        assert!(r.timed_out);
        assert_eq!(r.exit_code, None);
        assert_eq!(r.output, "before\n");
        assert!(r.seconds < 10.0, "{r:?}");
    }
}

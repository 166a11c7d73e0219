//! The guest's serial console (QEMU's stdout), read on a thread of its
//! own and handed to the run's loop in chunks.
//!
//! QEMU writes what the guest sends its serial port a byte, or a FIFO's
//! worth, at a time. Read from the async loop, every one of those writes
//! woke it (an edge-triggered epoll wakes on each write, even while the
//! loop waits for something else): a 20 MiB flood cost about 1.5 s of CPU
//! per MiB (`scripts/bench-console.sh`). A blocking read on a thread
//! instead sleeps [`CONSOLE_PACE`] after a short read, and reads what
//! piled up meanwhile in one go: at most about 20 wakeups a second
//! whatever the guest writes. A fast console (a read that fills half the
//! buffer) is read back to back.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long the reader waits after a short read. A console line is stamped
/// when the loop receives it, so at most this late (the timeline is quoted
/// to 0.1 s).
pub const CONSOLE_PACE: Duration = Duration::from_millis(50);

const CHUNK: usize = 64 * 1024;

/// Chunks kept between the reader and the loop (at most 1 MiB): beyond,
/// the reader waits, and so does QEMU's serial port, so a stalled loop
/// never makes memory grow.
const QUEUED: usize = 16;

pub struct ConsoleFeed {
    rx: mpsc::Receiver<Vec<u8>>,
    pace: Arc<AtomicBool>,
}

impl ConsoleFeed {
    /// Start reading QEMU's stdout. The thread ends at the console's end
    /// (QEMU gone) or once the feed is dropped and its next read returns.
    pub fn start(stdout: tokio::process::ChildStdout) -> std::io::Result<ConsoleFeed> {
        let mut file = std::fs::File::from(stdout.into_owned_fd()?);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(QUEUED);
        let pace = Arc::new(AtomicBool::new(true));
        let paced = pace.clone();
        std::thread::Builder::new().name("airboot-console".into()).spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
                if n < CHUNK / 2 && paced.load(Ordering::Relaxed) {
                    std::thread::sleep(CONSOLE_PACE);
                }
            }
        })?;
        Ok(ConsoleFeed { rx, pace })
    }

    /// Read at once after every read (`false`), or paced (the default).
    /// A power-cut recording reads at once: a mark taken at a console line
    /// holds the write log's length when the line arrived.
    pub fn pace(&self, on: bool) {
        self.pace.store(on, Ordering::Relaxed);
    }

    /// The next bytes; `None` once the console has ended.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }

    /// Whatever is still coming after QEMU exited: until the console ends,
    /// for at most `within`.
    pub async fn rest(&mut self, within: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(within, async {
            while let Some(b) = self.rx.recv().await {
                out.extend_from_slice(&b);
            }
        })
        .await;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that sends a byte at a time is read in a few large chunks,
    /// every byte in order; the end of the output ends the feed.
    #[tokio::test]
    async fn a_trickle_is_read_in_chunks_and_the_end_ends_the_feed() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200 ]; do printf x; i=$((i+1)); done; printf '\\nend\\n'"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut feed = ConsoleFeed::start(child.stdout.take().unwrap()).unwrap();
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(b) = feed.next().await {
            got.extend_from_slice(&b);
            chunks += 1;
        }
        assert_eq!(got, [vec![b'x'; 200], b"\nend\n".to_vec()].concat());
        assert!(chunks < 200, "{chunks} chunks for 205 single-byte writes");
        let _ = child.wait().await;
    }

    /// After the writer is gone, `rest` returns what was left at once, not
    /// after its whole allowance.
    #[tokio::test]
    async fn the_rest_ends_with_the_console() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "echo last words"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut feed = ConsoleFeed::start(child.stdout.take().unwrap()).unwrap();
        let _ = child.wait().await;
        let t = std::time::Instant::now();
        assert_eq!(feed.rest(Duration::from_secs(20)).await, b"last words\n");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}

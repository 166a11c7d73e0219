//! A thread that keeps a session with the guest probe: connect (retrying
//! until the guest's probe listens), handshake, poll the status every
//! couple of seconds, and on request run the images and collect the
//! air-gap evidence. It reports to the run loop through a channel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use airboot_core::guest::ClockSample;
use airboot_proto::probe::{AirgapReport, Body, HelloReply, Op, ProbeStatus, RunImageResult};

use crate::probe_client::{ProbeClient, ProbeError, ProtocolErrors, open};
use crate::transport::Endpoint;

#[derive(Debug)]
pub enum ProbeEvent {
    Hello {
        t: f64,
        hello: HelloReply,
    },
    Status {
        status: Box<ProbeStatus>,
        sample: ClockSample,
    },
    Verified {
        t: f64,
        runs: Vec<RunImageResult>,
        airgap: Option<AirgapReport>,
    },
    /// The answer to a [`Session::ask`].
    Answer(Result<Body, String>),
    /// A problem worth a note in the report (reported once per kind).
    Trouble(String),
    /// What came over the transport that was no answer, counted over the
    /// whole run (sent whenever it grows).
    Errors {
        t: f64,
        total: ProtocolErrors,
    },
}

pub struct Session {
    stop: Arc<AtomicBool>,
    verify: mpsc::Sender<Vec<String>>,
    ask: mpsc::Sender<(Op, Duration)>,
}

impl Session {
    /// Ask the probe to run these images and check the air gap.
    pub fn verify(&self, images: Vec<String>) {
        let _ = self.verify.send(images);
    }

    /// Send `op` (waiting up to `within` for its answer, connecting first
    /// if need be); the answer comes back as [`ProbeEvent::Answer`].
    pub fn ask(&self, op: Op, within: Duration) {
        let _ = self.ask.send((op, within));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How often the status is asked for.
pub const POLL: Duration = Duration::from_secs(2);

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub fn start(endpoint: Endpoint, t0: Instant, tx: tokio::sync::mpsc::UnboundedSender<ProbeEvent>) -> Session {
    let stop = Arc::new(AtomicBool::new(false));
    let (vtx, vrx) = mpsc::channel::<Vec<String>>();
    let (atx, arx) = mpsc::channel::<(Op, Duration)>();
    let stop2 = stop.clone();
    std::thread::Builder::new()
        .name("airboot-probe-session".into())
        .spawn(move || run(endpoint, t0, tx, vrx, arx, stop2))
        .expect("spawn the probe session thread");
    Session { stop, verify: vtx, ask: atx }
}

fn run(
    endpoint: Endpoint,
    t0: Instant,
    tx: tokio::sync::mpsc::UnboundedSender<ProbeEvent>,
    verify: mpsc::Receiver<Vec<String>>,
    ask: mpsc::Receiver<(Op, Duration)>,
    stop: Arc<AtomicBool>,
) {
    let mut client: Option<ProbeClient> = None;
    // Protocol errors of the sessions that ended, and the total last sent.
    let mut ended = ProtocolErrors::default();
    let mut sent = ProtocolErrors::default();
    let mut told: Vec<String> = Vec::new();
    let mut trouble = |tx: &tokio::sync::mpsc::UnboundedSender<ProbeEvent>, kind: &str, msg: String| {
        if !told.iter().any(|k| k == kind) {
            told.push(kind.to_string());
            let _ = tx.send(ProbeEvent::Trouble(msg));
        }
    };
    let nonce = format!("{:x}-{}", std::process::id(), t0.elapsed().as_nanos());
    while !stop.load(Ordering::Relaxed) {
        let total = ended.plus(client.as_ref().map(|c| &c.errors).unwrap_or(&ProtocolErrors::default()));
        if total != sent {
            let _ = tx.send(ProbeEvent::Errors { t: t0.elapsed().as_secs_f64(), total: total.clone() });
            sent = total;
        }
        let Some(c) = client.as_mut() else {
            match open(&endpoint, Duration::from_secs(5))
                .and_then(|s| ProbeClient::handshake(s, &nonce, Duration::from_secs(10)))
            {
                Ok(c) => {
                    let _ = tx.send(ProbeEvent::Hello { t: t0.elapsed().as_secs_f64(), hello: c.hello.clone() });
                    client = Some(c);
                }
                Err(ProbeError::Remote(m)) => trouble(&tx, "remote", format!("the probe refused the session: {m}")),
                Err(ProbeError::Garbage(e)) => {
                    ended = ended.plus(&e);
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
            continue;
        };
        if let Ok((op, within)) = ask.try_recv() {
            let answer = c.request(op, within).map_err(|e| e.to_string());
            if answer.is_err() {
                ended = ended.plus(&client.take().map(|c| c.errors).unwrap_or_default());
            }
            let _ = tx.send(ProbeEvent::Answer(answer));
            continue;
        }
        if let Ok(images) = verify.try_recv() {
            let mut runs = Vec::new();
            for r in images {
                match c.request(Op::RunImage { reference: r.clone(), timeout_s: 120 }, Duration::from_secs(240)) {
                    Ok(Body::RunImage(res)) => runs.push(res),
                    Ok(other) => runs.push(RunImageResult {
                        reference: r,
                        detail: format!("unexpected answer {other:?}"),
                        ..Default::default()
                    }),
                    Err(e) => runs.push(RunImageResult {
                        reference: r,
                        detail: format!("the probe could not run it: {e}"),
                        ..Default::default()
                    }),
                }
            }
            let airgap = match c.request(Op::Airgap, Duration::from_secs(120)) {
                Ok(Body::Airgap(a)) => Some(a),
                _ => None,
            };
            // The run ends after this: leave the guest's writes on its
            // disk, so the disk read afterwards is what the guest saw.
            match c.request(Op::Sync, Duration::from_secs(120)) {
                Ok(Body::Synced { .. }) => {}
                Ok(other) => trouble(&tx, "sync", format!("the probe could not sync the guest's disk: {other:?}")),
                Err(e) => trouble(&tx, "sync", format!("the probe could not sync the guest's disk: {e}")),
            }
            // One more status, judged before the verification's result:
            // did the containers stay up meanwhile?
            if let Ok(Ok(ev)) = ask_status(c, t0) {
                let _ = tx.send(ev);
            }
            let _ = tx.send(ProbeEvent::Verified { t: t0.elapsed().as_secs_f64(), runs, airgap });
            continue;
        }
        match ask_status(c, t0) {
            Ok(Ok(ev)) => {
                if tx.send(ev).is_err() {
                    return;
                }
            }
            Ok(Err(other)) => trouble(&tx, "answer", format!("the probe answered a status request with {other:?}")),
            Err(e) => {
                trouble(&tx, "lost", format!("the probe session broke ({e}); reconnecting"));
                ended = ended.plus(&client.take().map(|c| c.errors).unwrap_or_default());
                continue;
            }
        }
        let until = Instant::now() + POLL;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Ask for a status: the event, with the clock sample of the exchange, or
/// the answer that was not a status.
fn ask_status(c: &mut ProbeClient, t0: Instant) -> Result<Result<ProbeEvent, Body>, ProbeError> {
    let sent = t0.elapsed().as_secs_f64();
    let real_before = unix_now();
    Ok(match c.request(Op::Status, Duration::from_secs(60))? {
        Body::Status(status) => {
            let sample = ClockSample {
                sent_s: sent,
                received_s: t0.elapsed().as_secs_f64(),
                host_realtime_s: (real_before + unix_now()) / 2.0,
            };
            Ok(ProbeEvent::Status { status, sample })
        }
        other => Err(other),
    })
}

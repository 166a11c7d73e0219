//! The host side of the probe protocol (`airboot_proto::probe`): connect
//! over the chosen transport, handshake, send requests, read answers. Sync
//! (each call has a deadline); the run loop drives it from a thread.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use airboot_proto::probe::{Body, HelloReply, Op, PROBE_PROTOCOL, Request, Response};

use crate::transport::Endpoint;
pub use airboot_core::report::ProtocolErrors;

/// A connected byte stream with read deadlines.
pub trait Stream: Read + Write + Send {
    fn set_timeout(&self, d: Duration) -> io::Result<()>;
}

impl Stream for UnixStream {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

impl Stream for vsock::VsockStream {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach the probe: {0}")]
    Connect(String),
    #[error("probe I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the probe did not answer within {0:.0}s")]
    Timeout(f64),
    #[error("the probe answered: {0}")]
    Remote(String),
    #[error("unexpected answer from the probe: {0}")]
    Protocol(String),
    #[error("the probe's transport carried {}", .0.describe())]
    Garbage(ProtocolErrors),
}

pub use airboot_proto::probe::MAX_LINE;

pub struct ProbeClient {
    reader: BufReader<Box<dyn Stream>>,
    next_id: u64,
    pub hello: HelloReply,
    /// Lines that were no answer to a request of this session: malformed,
    /// over-long, or answers to no request (stale output of an earlier
    /// session).
    pub errors: ProtocolErrors,
    /// This session's nonce: a late answer to a repeated hello is expected.
    nonce: String,
    /// A line read in part when a read timed out.
    partial: Vec<u8>,
    partial_long: bool,
}

/// One line read with a cap into `line` (without the newline): `true` when
/// it is complete, `false` at end of stream. A line's bytes past `max` are
/// consumed but not kept, and `skipped` says so. A read error (a timeout)
/// leaves what was read in `line` and `skipped`, to go on from.
fn read_capped_line(r: &mut impl BufRead, max: usize, line: &mut Vec<u8>, skipped: &mut bool) -> io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        *skipped |= chunk.len() > room;
        let n = done.unwrap_or(buf.len());
        r.consume(n);
        if done.is_some() {
            return Ok(true);
        }
    }
}

/// Open a stream to the probe (no handshake yet).
pub fn open(endpoint: &Endpoint, timeout: Duration) -> Result<Box<dyn Stream>, ProbeError> {
    match endpoint {
        Endpoint::Vsock { cid, port } => {
            let s = vsock::VsockStream::connect_with_cid_port(*cid, *port)
                .map_err(|e| ProbeError::Connect(format!("vsock {cid}:{port}: {e}")))?;
            s.set_timeout(timeout)?;
            Ok(Box::new(s))
        }
        Endpoint::VhostUser { uds, port } => {
            let mut s = UnixStream::connect(uds).map_err(|e| ProbeError::Connect(format!("{}: {e}", uds.display())))?;
            s.set_timeout(timeout)?;
            s.write_all(format!("CONNECT {port}\n").as_bytes())?;
            // vhost-device-vsock answers "OK <host port>\n", or closes the
            // connection when nothing in the guest listens on `port` yet.
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while line.len() < 64 {
                match s.read(&mut b) {
                    Ok(0) => {
                        return Err(ProbeError::Connect(format!("nothing listens on guest vsock port {port} yet")));
                    }
                    Ok(_) if b[0] == b'\n' => break,
                    Ok(_) => line.push(b[0]),
                    Err(e) => return Err(ProbeError::Connect(format!("vhost-device-vsock handshake: {e}"))),
                }
            }
            let text = String::from_utf8_lossy(&line);
            if !text.starts_with("OK ") {
                return Err(ProbeError::Connect(format!("vhost-device-vsock said {text:?}")));
            }
            Ok(Box::new(s))
        }
        Endpoint::Unix { path } => {
            let s = UnixStream::connect(path).map_err(|e| ProbeError::Connect(format!("{}: {e}", path.display())))?;
            s.set_timeout(timeout)?;
            Ok(Box::new(s))
        }
        Endpoint::None => Err(ProbeError::Connect("the console transport has no probe".into())),
    }
}

impl ProbeClient {
    /// Handshake on an open stream. Lines that are not the answer to this
    /// hello (stale output of an earlier session on a serial port) are
    /// skipped. The hello is repeated while nothing answers: on a serial
    /// port, bytes sent before the guest opened it are lost.
    pub fn handshake(stream: Box<dyn Stream>, nonce: &str, within: Duration) -> Result<ProbeClient, ProbeError> {
        let mut c = ProbeClient {
            reader: BufReader::new(stream),
            next_id: 1,
            hello: HelloReply::default(),
            errors: ProtocolErrors::default(),
            nonce: nonce.to_string(),
            partial: Vec::new(),
            partial_long: false,
        };
        let deadline = Instant::now() + within;
        loop {
            let id = c.send(Op::Hello { version: PROBE_PROTOCOL, nonce: nonce.to_string() })?;
            let resend = Instant::now() + Duration::from_secs(2);
            loop {
                match c.read_response(resend.min(deadline)) {
                    // The nonce is this session's: an answer to an earlier
                    // hello of it (resent while the guest was slow) counts.
                    Ok(Response { body: Body::Hello(h), .. }) if h.nonce == nonce => {
                        c.hello = h;
                        return Ok(c);
                    }
                    Ok(Response { id: rid, body: Body::Error { message } }) if rid == id => {
                        return Err(ProbeError::Remote(message));
                    }
                    Ok(_) => c.errors.unsolicited += 1,
                    Err(ProbeError::Timeout(_)) if Instant::now() < deadline => break,
                    // Something talked, but never the probe's answer.
                    Err(ProbeError::Timeout(_)) if !c.errors.is_empty() => {
                        return Err(ProbeError::Garbage(c.errors.clone()));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    fn send(&mut self, op: Op) -> Result<u64, ProbeError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut text = serde_json::to_string(&Request { id, op }).expect("json");
        text.push('\n');
        let s = self.reader.get_mut();
        s.write_all(text.as_bytes())?;
        s.flush()?;
        Ok(id)
    }

    fn read_response(&mut self, deadline: Instant) -> Result<Response, ProbeError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProbeError::Timeout(0.0));
            }
            self.reader.get_ref().set_timeout(left.max(Duration::from_millis(10)))?;
            let (line, too_long) =
                match read_capped_line(&mut self.reader, MAX_LINE, &mut self.partial, &mut self.partial_long) {
                    Ok(false) => {
                        return Err(ProbeError::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the probe closed the connection",
                        )));
                    }
                    Ok(true) => (std::mem::take(&mut self.partial), std::mem::take(&mut self.partial_long)),
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        return Err(ProbeError::Timeout(0.0));
                    }
                    Err(e) => return Err(e.into()),
                };
            if !too_long && let Ok(r) = serde_json::from_slice::<Response>(line.trim_ascii()) {
                return Ok(r);
            }
            // Not a response (noise from an earlier session, or a guest
            // that misbehaves): counted, and read on.
            if !line.trim_ascii().is_empty() || too_long {
                self.errors.malformed_line(&line, too_long);
            }
        }
    }

    /// Send one request and wait for its answer.
    pub fn request(&mut self, op: Op, within: Duration) -> Result<Body, ProbeError> {
        let id = self.send(op)?;
        let deadline = Instant::now() + within;
        loop {
            match self.read_response(deadline) {
                Ok(r) if r.id == id => {
                    return match r.body {
                        Body::Error { message } => Err(ProbeError::Remote(message)),
                        b => Ok(b),
                    };
                }
                // The answer to a hello repeated while the guest was slow.
                Ok(Response { body: Body::Hello(h), .. }) if h.nonce == self.nonce => {}
                Ok(_) => self.errors.unsolicited += 1,
                Err(ProbeError::Timeout(_)) => return Err(ProbeError::Timeout(within.as_secs_f64())),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_proto::probe::ProbeStatus;
    use std::os::unix::net::UnixListener;

    /// A fake probe: `serve` runs on its own thread with the listening
    /// socket; returns the folder (keep it), the socket and the thread.
    fn fake_probe(
        serve: impl FnOnce(UnixListener) + Send + 'static,
    ) -> (tempfile::TempDir, std::path::PathBuf, std::thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.sock");
        let l = UnixListener::bind(&path).unwrap();
        (dir, path, std::thread::spawn(move || serve(l)))
    }

    /// A fake probe on a unix socket: stale noise first, then real answers.
    #[test]
    fn handshake_skips_stale_lines_then_requests_are_matched_by_id() {
        let (_dir, path, t) = fake_probe(move |l| {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"{\"id\":1,\"result\":\"hello\",\"version\":1,\"nonce\":\"OLD\",\"probe_version\":\"0\",\"machine\":\"x86_64\",\"transport\":\"t\"}\ngarbage\n").unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            let Op::Hello { nonce, .. } = req.op else { panic!() };
            let hello = Response {
                id: req.id,
                body: Body::Hello(HelloReply {
                    version: 1,
                    nonce,
                    probe_version: "0.1.0".into(),
                    machine: "x86_64".into(),
                    transport: "virtio-serial".into(),
                }),
            };
            w.write_all(format!("{}\n", serde_json::to_string(&hello).unwrap()).as_bytes()).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            assert_eq!(req.op, Op::Status);
            // A late answer to the hello (expected, not counted), an answer
            // to some other id (counted), then ours.
            w.write_all(format!("{}\n", serde_json::to_string(&hello).unwrap()).as_bytes()).unwrap();
            let other = Response { id: 99, body: Body::Error { message: "x".into() } };
            let ours = Response {
                id: req.id,
                body: Body::Status(Box::new(ProbeStatus { system: "running".into(), ..Default::default() })),
            };
            for r in [other, ours] {
                w.write_all(format!("{}\n", serde_json::to_string(&r).unwrap()).as_bytes()).unwrap();
            }
            line.clear();
            r.read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            let err = Response { id: req.id, body: Body::Error { message: "docker.sock absent".into() } };
            w.write_all(format!("{}\n", serde_json::to_string(&err).unwrap()).as_bytes()).unwrap();
            // then silence
            std::thread::sleep(Duration::from_secs(2));
        });
        let s = open(&Endpoint::Unix { path }, Duration::from_secs(5)).unwrap();
        let mut c = ProbeClient::handshake(s, "NEW", Duration::from_secs(5)).unwrap();
        assert_eq!(c.hello.transport, "virtio-serial");
        assert_eq!((c.errors.malformed, c.errors.unsolicited), (1, 1), "the stale hello and the noise: {:?}", c.errors);
        match c.request(Op::Status, Duration::from_secs(5)).unwrap() {
            Body::Status(s) => assert_eq!(s.system, "running"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.errors.unsolicited, 2, "the answer to id 99 was ignored and counted");
        let e = c.request(Op::Airgap, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.to_string(), "the probe answered: docker.sock absent");
        let started = Instant::now();
        let e = c.request(Op::Status, Duration::from_millis(500)).unwrap_err();
        assert!(matches!(e, ProbeError::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    /// A hostile "probe": a 3 MiB line, then a line split by a pause
    /// longer than a read timeout, then only garbage. Memory stays at the
    /// cap, the split answer is still read whole, and a handshake that only
    /// ever saw garbage says so with a sample instead of timing out.
    #[test]
    fn over_long_and_malformed_lines_are_capped_counted_and_named() {
        let (_dir, path, t) = fake_probe(move |l| {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let req: Request = serde_json::from_str(&line).unwrap();
            let Op::Hello { nonce, .. } = req.op else { panic!() };
            let mut huge = vec![b'x'; 3 << 20];
            huge.push(b'\n');
            w.write_all(&huge).unwrap();
            w.write_all(b"{not json}\n").unwrap();
            let hello =
                Response { id: req.id, body: Body::Hello(HelloReply { version: 1, nonce, ..Default::default() }) };
            let text = format!("{}\n", serde_json::to_string(&hello).unwrap());
            let (a, b) = text.split_at(10);
            w.write_all(a.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(2500));
            w.write_all(b.as_bytes()).unwrap();
            // A second session: garbage only.
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            for _ in 0..30 {
                if w.write_all(b"\x1b[0mnoise\n").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let s = open(&Endpoint::Unix { path: path.clone() }, Duration::from_secs(5)).unwrap();
        let c = ProbeClient::handshake(s, "N", Duration::from_secs(10)).unwrap();
        assert_eq!((c.errors.malformed, c.errors.too_long), (2, 1), "{:?}", c.errors);
        assert!(c.errors.sample.as_deref().unwrap().starts_with("xxxx"));
        assert!(c.partial.capacity() <= 2 * MAX_LINE, "the buffer grew to {}", c.partial.capacity());
        let s = open(&Endpoint::Unix { path }, Duration::from_secs(5)).unwrap();
        let e = ProbeClient::handshake(s, "N", Duration::from_secs(2)).err().unwrap();
        assert!(matches!(e, ProbeError::Garbage(_)), "{e}");
        assert!(e.to_string().contains("noise"), "{e}");
        t.join().unwrap();
    }

    #[test]
    fn unreachable_endpoints_say_where() {
        let e = open(&Endpoint::Unix { path: "/nonexistent/probe.sock".into() }, Duration::from_secs(1)).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/probe.sock"), "{e}");
        assert!(open(&Endpoint::None, Duration::from_secs(1)).is_err());
    }
}

//! The host side of the probe protocol (`airboot_proto::probe`): connect
//! over the chosen transport, handshake, send requests, read answers. Sync
//! (each call has a deadline); the run loop drives it from a thread.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use airboot_proto::probe::{Body, HelloReply, Op, PROBE_PROTOCOL, Request, Response};

use crate::transport::Endpoint;

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
}

pub struct ProbeClient {
    reader: BufReader<Box<dyn Stream>>,
    next_id: u64,
    pub hello: HelloReply,
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
        let mut c = ProbeClient { reader: BufReader::new(stream), next_id: 1, hello: HelloReply::default() };
        let deadline = Instant::now() + within;
        loop {
            let id = c.send(Op::Hello { version: PROBE_PROTOCOL, nonce: nonce.to_string() })?;
            let resend = Instant::now() + Duration::from_secs(2);
            loop {
                match c.read_response(resend.min(deadline)) {
                    Ok(Response { id: rid, body: Body::Hello(h) }) if rid == id && h.nonce == nonce => {
                        c.hello = h;
                        return Ok(c);
                    }
                    Ok(Response { id: rid, body: Body::Error { message } }) if rid == id => {
                        return Err(ProbeError::Remote(message));
                    }
                    Ok(_) => continue,
                    Err(ProbeError::Timeout(_)) if Instant::now() < deadline => break,
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
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProbeError::Timeout(0.0));
            }
            self.reader.get_ref().set_timeout(left.max(Duration::from_millis(10)))?;
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => {
                    return Err(ProbeError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the probe closed the connection",
                    )));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(ProbeError::Timeout(0.0));
                }
                Err(e) => return Err(e.into()),
            }
            if let Ok(r) = serde_json::from_str::<Response>(line.trim()) {
                return Ok(r);
            }
            // Not a response (noise from an earlier session): keep reading.
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
                Ok(_) => continue,
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

    /// A fake probe on a unix socket: stale noise first, then real answers.
    #[test]
    fn handshake_skips_stale_lines_then_requests_are_matched_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probe.sock");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
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
            // An answer to some other id first, then ours.
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
        match c.request(Op::Status, Duration::from_secs(5)).unwrap() {
            Body::Status(s) => assert_eq!(s.system, "running"),
            other => panic!("{other:?}"),
        }
        let e = c.request(Op::Airgap, Duration::from_secs(5)).unwrap_err();
        assert_eq!(e.to_string(), "the probe answered: docker.sock absent");
        let started = Instant::now();
        let e = c.request(Op::Status, Duration::from_millis(500)).unwrap_err();
        assert!(matches!(e, ProbeError::Timeout(_)), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        t.join().unwrap();
    }

    #[test]
    fn unreachable_endpoints_say_where() {
        let e = open(&Endpoint::Unix { path: "/nonexistent/probe.sock".into() }, Duration::from_secs(1)).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/probe.sock"), "{e}");
        assert!(open(&Endpoint::None, Duration::from_secs(1)).is_err());
    }
}

//! gRPC over HTTP/2 cleartext (h2c, prior knowledge) on a unix socket:
//! the least of HTTP/2 a client needs for unary and server-streaming
//! calls, one connection and one stream per call. Written by hand so the
//! static probe stays small and needs no async runtime or protoc
//! (measured: +70 KB, against ≈590 KB for a tonic-based client).
//!
//! The client opens its windows to the maximum at once, so it never has
//! flow control to do; it answers SETTINGS and PING, reassembles
//! length-prefixed messages across DATA frames, and reads `grpc-status`
//! from the trailers. Every size it accepts is bounded.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::hpack::{Decoder, encode_literal};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The largest frame a server may send us (we never raise HTTP/2's
/// default SETTINGS_MAX_FRAME_SIZE), and the largest header block.
const MAX_FRAME: usize = 16_384;
const MAX_HEADER_BLOCK: usize = 256 << 10;

/// How a call ended: gRPC's status code (0 is OK) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

impl Status {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    /// gRPC's name for the code.
    pub fn name(&self) -> &'static str {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        NAMES.get(self.code as usize).copied().unwrap_or("UNKNOWN")
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.name())
    }
}

fn bad(m: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m.into())
}

fn frame(w: &mut impl Write, ty: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
    let n = payload.len() as u32;
    let mut h = [0u8; 9];
    h[0..3].copy_from_slice(&n.to_be_bytes()[1..]);
    h[3] = ty;
    h[4] = flags;
    h[5..9].copy_from_slice(&stream.to_be_bytes());
    w.write_all(&h)?;
    w.write_all(payload)
}

fn read_frame(r: &mut impl Read) -> io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut h = [0u8; 9];
    r.read_exact(&mut h)?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("the server sent a {len}-byte frame, above the {MAX_FRAME} allowed")));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p)?;
    Ok((h[3], h[4], u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff, p))
}

/// A frame's payload without its padding (and HEADERS' priority fields).
fn unpad(flags: u8, ty: u8, p: &[u8]) -> io::Result<&[u8]> {
    let mut p = p;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        pad = *p.first().ok_or_else(|| bad("an empty padded frame"))? as usize;
        p = &p[1..];
    }
    if ty == HEADERS && flags & PRIORITY != 0 {
        p = p.get(5..).ok_or_else(|| bad("a short priority block"))?;
    }
    let end = p.len().checked_sub(pad).ok_or_else(|| bad("padding longer than its frame"))?;
    Ok(&p[..end])
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client's opening and the one request: preface, SETTINGS (no push,
/// the largest stream window), the connection window opened, HEADERS
/// (`path` plus `metadata`), and the request message with END_STREAM.
pub fn request_bytes(path: &str, metadata: &[(&str, &str)], req: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(PREFACE);
    let mut settings = Vec::new();
    settings.extend_from_slice(&[0, 2, 0, 0, 0, 0]);
    settings.extend_from_slice(&[0, 4, 0x7f, 0xff, 0xff, 0xff]);
    // Writing to a Vec cannot fail.
    let _ = frame(&mut out, SETTINGS, 0, 0, &settings);
    let _ = frame(&mut out, WINDOW_UPDATE, 0, 0, &(0x7fff_ffffu32 - 65_535).to_be_bytes());
    let mut hb = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .into_iter()
    .chain(metadata.iter().copied())
    {
        encode_literal(&mut hb, n, v);
    }
    let _ = frame(&mut out, HEADERS, END_HEADERS, 1, &hb);
    let mut msg = vec![0u8];
    msg.extend_from_slice(&(req.len() as u32).to_be_bytes());
    msg.extend_from_slice(req);
    let _ = frame(&mut out, DATA, END_STREAM, 1, &msg);
    out
}

/// One call on an open connection `s`: each response message goes to
/// `on_msg`, which returns false to stop reading (a stream the caller is
/// done with). Messages above `max_message` bytes are an error.
pub fn call_on<S: Read + Write>(
    mut s: S,
    path: &str,
    metadata: &[(&str, &str)],
    req: &[u8],
    max_message: usize,
    mut on_msg: impl FnMut(&[u8]) -> bool,
) -> io::Result<Status> {
    s.write_all(&request_bytes(path, metadata, req))?;
    let mut dec = Decoder::new();
    let mut block = Vec::new();
    let mut block_ends_stream = false;
    let mut data: Vec<u8> = Vec::new();
    let mut status: Option<Status> = None;
    let mut http_status = String::new();
    loop {
        let (ty, flags, sid, p) = read_frame(&mut s)?;
        match ty {
            // An acknowledgement that cannot be written (the server is
            // already gone) leaves what is still to read.
            SETTINGS if flags & ACK == 0 => {
                let _ = frame(&mut s, SETTINGS, ACK, 0, &[]);
            }
            PING if flags & ACK == 0 => {
                let _ = frame(&mut s, PING, ACK, 0, &p);
            }
            GOAWAY if status.is_none() => {
                let why = String::from_utf8_lossy(p.get(8..).unwrap_or(&[])).into_owned();
                return Err(bad(format!("the server closed the connection (GOAWAY {why})")));
            }
            RST_STREAM if sid == 1 => {
                let code = p.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(0);
                return Err(bad(format!("the server reset the call (RST_STREAM {code})")));
            }
            HEADERS | CONTINUATION if sid == 1 => {
                if ty == HEADERS {
                    block_ends_stream = flags & END_STREAM != 0;
                }
                block.extend_from_slice(unpad(flags, ty, &p)?);
                if block.len() > MAX_HEADER_BLOCK {
                    return Err(bad("a header block above 256 KiB"));
                }
                if flags & END_HEADERS != 0 {
                    let fields = dec.decode(&block).map_err(bad)?;
                    block.clear();
                    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                    if let Some(v) = get(":status") {
                        http_status = v;
                    }
                    if let Some(code) = get("grpc-status") {
                        status = Some(Status {
                            code: code.trim().parse().unwrap_or(2),
                            message: percent_decode(&get("grpc-message").unwrap_or_default()),
                        });
                    }
                    if block_ends_stream {
                        break;
                    }
                }
            }
            DATA if sid == 1 => {
                data.extend_from_slice(unpad(flags, ty, &p)?);
                while data.len() >= 5 {
                    if data[0] != 0 {
                        return Err(bad("a compressed gRPC message (not asked for)"));
                    }
                    let n = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
                    if n > max_message {
                        return Err(bad(format!("a {n}-byte gRPC message, above the {max_message} allowed")));
                    }
                    if data.len() < 5 + n {
                        break;
                    }
                    let keep = on_msg(&data[5..5 + n]);
                    data.drain(..5 + n);
                    if !keep {
                        return Ok(Status { code: 0, message: "stopped by the caller".into() });
                    }
                }
                if flags & END_STREAM != 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    status.ok_or_else(|| bad(format!("the call ended without a grpc-status (HTTP {http_status})")))
}

/// One call to the server at `socket`, each read and write bounded by
/// `timeout` (`None`: wait for ever, for an event stream).
pub fn call(
    socket: &Path,
    path: &str,
    metadata: &[(&str, &str)],
    req: &[u8],
    timeout: Option<Duration>,
    max_message: usize,
    on_msg: impl FnMut(&[u8]) -> bool,
) -> io::Result<Status> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(timeout)?;
    s.set_write_timeout(timeout)?;
    call_on(s, path, metadata, req, max_message, on_msg)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A server's side of one call: reads the client's request (checking
    /// its shape) and answers with `frames`.
    pub fn serve(mut s: UnixStream, frames: Vec<(u8, u8, Vec<u8>)>) -> Vec<(String, String)> {
        let mut pre = [0u8; 24];
        s.read_exact(&mut pre).unwrap();
        assert_eq!(&pre[..], PREFACE);
        let mut headers = Vec::new();
        let mut dec = Decoder::new();
        loop {
            let (ty, flags, _, p) = read_frame(&mut s).unwrap();
            if ty == HEADERS {
                headers = dec.decode(&p).unwrap();
            }
            if ty == DATA && flags & END_STREAM != 0 {
                break;
            }
        }
        for (ty, flags, p) in frames {
            let _ = frame(&mut s, ty, flags, if ty == SETTINGS || ty == PING { 0 } else { 1 }, &p);
        }
        headers
    }

    pub fn literal_block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in fields {
            encode_literal(&mut b, n, v);
        }
        b
    }

    pub fn message(body: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(body.len() as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    pub fn unary_answer(bodies: &[&[u8]], code: u32, msg: &str) -> Vec<(u8, u8, Vec<u8>)> {
        let mut f = vec![
            (SETTINGS, 0, vec![]),
            (HEADERS, END_HEADERS, literal_block(&[(":status", "200"), ("content-type", "application/grpc")])),
        ];
        for b in bodies {
            f.push((DATA, 0, message(b)));
        }
        let code = code.to_string();
        f.push((HEADERS, END_HEADERS | END_STREAM, literal_block(&[("grpc-status", &code), ("grpc-message", msg)])));
        f
    }

    #[test]
    fn a_unary_call_sends_its_metadata_and_reads_messages_and_status() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || serve(b, unary_answer(&[b"one", b"two"], 0, "")));
        let mut got = Vec::new();
        let st = call_on(a, "/svc/M", &[("containerd-namespace", "airboot")], b"req", 1 << 20, |m| {
            got.push(m.to_vec());
            true
        })
        .unwrap();
        assert!(st.ok(), "{st:?}");
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
        let asked = server.join().unwrap();
        assert!(asked.contains(&(":path".into(), "/svc/M".into())), "{asked:?}");
        assert!(asked.contains(&("containerd-namespace".into(), "airboot".into())), "{asked:?}");
    }

    #[test]
    fn errors_split_messages_padding_and_bounds() {
        // An error status with a percent-encoded message, in a trailers-only answer.
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            serve(
                b,
                vec![(
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    literal_block(&[
                        (":status", "200"),
                        ("grpc-status", "5"),
                        ("grpc-message", "image%20%22x%22 not found"),
                    ]),
                )],
            )
        });
        let st = call_on(a, "/x", &[], &[], 1 << 20, |_| true).unwrap();
        t.join().unwrap();
        assert_eq!((st.code, st.message.as_str(), st.name()), (5, "image \"x\" not found", "NOT_FOUND"));

        // One message split over two DATA frames, the second padded, and a PING to answer.
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let m = message(b"hello world");
            let mut padded = vec![3u8];
            padded.extend_from_slice(&m[6..]);
            padded.extend_from_slice(&[0, 0, 0]);
            let mut f = vec![(PING, 0, vec![1; 8]), (DATA, 0, m[..6].to_vec()), (DATA, PADDED, padded)];
            f.push((HEADERS, END_HEADERS | END_STREAM, literal_block(&[("grpc-status", "0")])));
            serve(b, f)
        });
        let mut got = Vec::new();
        let st = call_on(a, "/x", &[], &[], 1 << 20, |m| {
            got.push(m.to_vec());
            true
        })
        .unwrap();
        t.join().unwrap();
        assert!(st.ok());
        assert_eq!(got, [b"hello world".to_vec()]);

        // A message larger than allowed is refused before it is buffered.
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(b, unary_answer(&[&[7u8; 100]], 0, "")));
        let e = call_on(a, "/x", &[], &[], 50, |_| true).unwrap_err();
        assert!(e.to_string().contains("above the 50 allowed"), "{e}");
        t.join().unwrap();

        // A reset and a stream that ends without a status.
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(b, vec![(RST_STREAM, 0, vec![0, 0, 0, 8])]));
        assert!(call_on(a, "/x", &[], &[], 50, |_| true).unwrap_err().to_string().contains("RST_STREAM 8"));
        t.join().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(b, vec![(DATA, END_STREAM, vec![])]));
        assert!(call_on(a, "/x", &[], &[], 50, |_| true).unwrap_err().to_string().contains("without a grpc-status"));
        t.join().unwrap();
    }

    #[test]
    fn a_stream_can_be_left_early_and_a_hung_server_times_out() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(b, unary_answer(&[b"1", b"2", b"3"], 0, "")));
        let mut n = 0;
        let st = call_on(a, "/x", &[], &[], 10, |_| {
            n += 1;
            n < 2
        })
        .unwrap();
        assert!(st.ok() && n == 2);
        t.join().unwrap();

        let dir = std::env::temp_dir().join(format!("airboot-grpc-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("c.sock");
        let _ = std::fs::remove_file(&sock);
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (_s, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_secs(2));
        });
        let e = call(&sock, "/x", &[], &[], Some(Duration::from_millis(300)), 10, |_| true).unwrap_err();
        assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{e}");
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

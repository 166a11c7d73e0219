//! A minimal HTTP/1.1 client for container engine API sockets (Docker's
//! `/var/run/docker.sock`, Podman's compatible socket). Standard library
//! only, so it also fits the static guest probe. One request per
//! connection (`Connection: close`); bodies may be chunked.

use std::io::{self, BufRead, BufReader, Read, Write};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Send one request on `stream` and read the whole response. `body` is
/// sent with a Content-Length when given.
pub fn request<S: Read + Write>(
    stream: S,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<(&mut dyn Read, u64)>,
    max_body: usize,
) -> io::Result<Response> {
    let mut stream = stream;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: airboot\r\nConnection: close\r\n");
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    match &body {
        Some((_, len)) => head.push_str(&format!("Content-Length: {len}\r\n")),
        None if method != "GET" && method != "HEAD" => head.push_str("Content-Length: 0\r\n"),
        None => {}
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if let Some((reader, len)) = body {
        let copied = io::copy(&mut reader.take(len), &mut stream)?;
        if copied != len {
            return Err(bad(format!("request body ended after {copied} of {len} bytes")));
        }
    }
    stream.flush()?;
    read_response(BufReader::new(stream), max_body)
}

/// The longest status, header, chunk-size or trailer line read.
pub const MAX_LINE: usize = 64 << 10;
/// The most header (or trailer) lines read.
pub const MAX_HEADERS: usize = 256;

/// Read one line of at most [`MAX_LINE`] bytes into `line` (cleared
/// first); returns its length, 0 at EOF.
fn read_line_capped<R: BufRead>(r: &mut R, line: &mut String) -> io::Result<usize> {
    line.clear();
    let n = r.by_ref().take(MAX_LINE as u64 + 1).read_line(line)?;
    if n > MAX_LINE {
        return Err(bad(format!("an HTTP line of over {MAX_LINE} bytes (read {n} with no end)")));
    }
    Ok(n)
}

/// Parse a response (status line, headers, body by length, chunks or EOF).
/// Every line is capped at [`MAX_LINE`] bytes, the headers at
/// [`MAX_HEADERS`] lines and the body at `max_body` bytes.
pub fn read_response<R: BufRead>(mut r: R, max_body: usize) -> io::Result<Response> {
    let mut line = String::new();
    read_line_capped(&mut r, &mut line)?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP response: {:?}", line.trim_end())));
    }
    let status: u16 = parts.next().unwrap_or("").parse().map_err(|_| bad(format!("bad status line {line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        if read_line_capped(&mut r, &mut line)? == 0 {
            return Err(bad("connection closed inside the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if headers.len() >= MAX_HEADERS {
            return Err(bad(format!("over {MAX_HEADERS} header lines")));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if get("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            read_line_capped(&mut r, &mut line)?;
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
            if size == 0 {
                // trailers until an empty line (or EOF)
                for _ in 0..MAX_HEADERS {
                    if read_line_capped(&mut r, &mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if size > max_body - body.len() {
                return Err(bad(format!("response body over {max_body} bytes")));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line_capped(&mut r, &mut line)?;
        }
    } else if let Some(len) = get("Content-Length") {
        let len: usize = len.parse().map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        if len > max_body {
            return Err(bad(format!("response body of {len} bytes is over {max_body}")));
        }
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.take(max_body as u64 + 1).read_to_end(&mut body)?;
        if body.len() > max_body {
            return Err(bad(format!("response body over {max_body} bytes")));
        }
    }
    Ok(Response { status, reason, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that answers `reply` and keeps what was written to it.
    struct Fake {
        reply: io::Cursor<Vec<u8>>,
        sent: Vec<u8>,
    }
    impl Read for Fake {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.reply.read(b)
        }
    }
    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sent_head(method: &str, body: Option<&[u8]>) -> String {
        let mut f = Fake { reply: io::Cursor::new(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()), sent: Vec::new() };
        let mut src = body.map(|b| io::Cursor::new(b.to_vec()));
        let len = body.map(|b| b.len() as u64).unwrap_or(0);
        let body = src.as_mut().map(|c| (c as &mut dyn Read, len));
        request(&mut f, method, "/x", None, body, 16).unwrap();
        String::from_utf8(f.sent).unwrap()
    }

    #[test]
    fn a_request_says_its_length_unless_it_is_a_bodiless_get_or_head() {
        assert!(!sent_head("GET", None).contains("Content-Length"));
        assert!(!sent_head("HEAD", None).contains("Content-Length"));
        assert!(sent_head("POST", None).contains("Content-Length: 0\r\n"));
        assert!(sent_head("DELETE", None).contains("Content-Length: 0\r\n"));
        let with = sent_head("POST", Some(b"abc"));
        assert!(with.contains("Content-Length: 3\r\n") && with.ends_with("\r\n\r\nabc"), "{with:?}");
    }

    #[test]
    fn bounds_are_inclusive_at_the_cap_and_refuse_one_byte_over() {
        // A line of exactly MAX_LINE bytes (its CRLF included) is read.
        let pad = "a".repeat(MAX_LINE - "X-Pad: \r\n".len());
        let ok = format!("HTTP/1.1 200 OK\r\nX-Pad: {pad}\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(read_response(ok.as_bytes(), 4).unwrap().header("X-Pad").map(str::len), Some(pad.len()));
        let over = format!("HTTP/1.1 200 OK\r\nX-Pad: {pad}a\r\nContent-Length: 0\r\n\r\n");
        assert!(read_response(over.as_bytes(), 4).is_err());
        // Bodies of exactly max_body bytes, by length, by chunks and to EOF.
        let sized = |n: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{}", "b".repeat(n));
        assert_eq!(read_response(sized(4).as_bytes(), 4).unwrap().body.len(), 4);
        assert!(read_response(sized(5).as_bytes(), 4).is_err());
        let chunked = |a: usize, b: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{a:x}\r\n{}\r\n{b:x}\r\n{}\r\n0\r\n\r\n",
                "c".repeat(a),
                "d".repeat(b)
            )
        };
        assert_eq!(read_response(chunked(3, 1).as_bytes(), 4).unwrap().text(), "cccd");
        assert!(read_response(chunked(3, 2).as_bytes(), 4).unwrap_err().to_string().contains("over 4"));
        let eof = |n: usize| format!("HTTP/1.1 200 OK\r\n\r\n{}", "e".repeat(n));
        assert_eq!(read_response(eof(4).as_bytes(), 4).unwrap().body.len(), 4);
        assert!(read_response(eof(5).as_bytes(), 4).is_err());
        // Exactly MAX_HEADERS header lines are read; one more is refused.
        let headers = |n: usize| {
            let mut h = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..n {
                h.push_str(&format!("X-{i}: y\r\n"));
            }
            h + "\r\n"
        };
        assert_eq!(read_response(headers(MAX_HEADERS).as_bytes(), 4).unwrap().headers.len(), MAX_HEADERS);
        let e = read_response(headers(MAX_HEADERS + 1).as_bytes(), 4).unwrap_err().to_string();
        assert!(e.contains("over 256 header lines"), "{e}");
    }

    #[test]
    fn a_chunked_response_is_read_to_the_end_of_its_trailers_and_no_further() {
        let text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\nNEXT";
        let mut r = io::Cursor::new(&text[..]);
        assert_eq!(read_response(&mut r, 16).unwrap().text(), "hi");
        assert_eq!(&text[r.position() as usize..], b"NEXT");
    }

    #[test]
    fn reads_chunked_and_sized_bodies() {
        let chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3;ext\r\n 1}\r\n0\r\n\r\n";
        let r = read_response(&chunked[..], 1024).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "{\"a\": 1}");
        assert_eq!(r.header("content-type"), Some("application/json"));

        let sized = b"HTTP/1.0 404 Not Found\r\nContent-Length: 4\r\n\r\nnopeEXTRA";
        let r = read_response(&sized[..], 1024).unwrap();
        assert_eq!((r.status, r.reason.as_str(), r.text().as_str()), (404, "Not Found", "nope"));

        let eof = b"HTTP/1.1 200 OK\r\n\r\nuntil close";
        assert_eq!(read_response(&eof[..], 1024).unwrap().text(), "until close");
    }

    #[test]
    fn rejects_garbage_and_oversize() {
        assert!(read_response(&b"SSH-2.0-OpenSSH\r\n"[..], 10).is_err());
        assert!(read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"[..], 10).is_err());
        assert!(read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"[..], 10).is_err());
        assert!(read_response(&b"HTTP/1.1 200 OK\r\n\r\n0123456789ABC"[..], 10).is_err());
    }

    #[test]
    fn writes_a_request_with_a_body() {
        struct Duplex {
            sent: Vec<u8>,
            reply: io::Cursor<Vec<u8>>,
        }
        impl Read for Duplex {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                self.reply.read(b)
            }
        }
        impl Write for Duplex {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.sent.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut d = Duplex {
            sent: Vec::new(),
            reply: io::Cursor::new(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()),
        };
        let mut body: &[u8] = b"tarball";
        let r = request(&mut d, "POST", "/images/load?quiet=1", Some("application/x-tar"), Some((&mut body, 7)), 100)
            .unwrap();
        assert_eq!(r.text(), "ok");
        let sent = String::from_utf8(d.sent).unwrap();
        assert!(sent.starts_with("POST /images/load?quiet=1 HTTP/1.1\r\n"));
        assert!(sent.contains("Content-Length: 7\r\n"));
        assert!(sent.ends_with("\r\n\r\ntarball"));
    }
}

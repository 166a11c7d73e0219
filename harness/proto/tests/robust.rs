//! Property tests over proto's parsers of untrusted text (stable, run in
//! CI): the HTTP reader the probe points at an engine's socket, the
//! guest's mountinfo, and the docker-load archive manifest. No panic, and
//! the bounds hold: a body never over its cap, a line never read past
//! its cap.

use airboot_proto::{http, load, mounts};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn http_responses_never_panic_and_keep_the_body_cap(
        head in "HTTP/1\\.[01] [0-9]{1,5}[ -~]{0,12}\r\n((Content-Length|Transfer-Encoding|X-[a-z]{1,4}): ([0-9a-f]{1,20}|chunked|[ -~]{0,10})\r\n){0,4}\r\n",
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 0usize..1024,
    ) {
        let mut input = head.into_bytes();
        input.extend_from_slice(&body);
        if let Ok(r) = http::read_response(&input[..], max) {
            prop_assert!(r.body.len() <= max, "a body of {} bytes over its cap {max}", r.body.len());
        }
    }

    #[test]
    fn random_bytes_are_no_http_response(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = http::read_response(&data[..], 1024);
    }

    #[test]
    fn chunk_sizes_of_any_size_are_refused_not_overflowed(size in "[0-9a-fA-F]{1,20}") {
        // After a first chunk, so the running length plus the size can overflow.
        let input = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n{size}\r\nabc\r\n0\r\n\r\n");
        let _ = http::read_response(input.as_bytes(), 16);
    }

    #[test]
    fn mountinfo_never_panics(text in "([0-9]{1,3} [0-9]{1,3} [0-9]{1,3}:[0-9]{1,3} [ -~]{0,12} (/[a-z\\\\0-7]{0,10}){1,3} (ro|rw)[ -~]{0,10}( shared:[0-9])? - [a-z]{0,8} [ -~]{0,10} [ -~]{0,40}\n|[ -~]{0,60}\n){0,12}", path in "/[a-z/]{0,20}") {
        let m = mounts::parse(&text);
        let _ = mounts::holding(&m, &path);
        let _ = mounts::holding(&m, "/");
    }

    #[test]
    fn archive_manifests_never_panic(manifest in "[\\[\\]{}\",:a-zA-Z0-9/._ -]{0,200}") {
        let _ = load::archive_images(&manifest, &|_| Some("{\"rootfs\":{\"diff_ids\":[]}}".to_string()));
        let _ = load::archive_images(&manifest, &|_| None);
    }
}

/// A status line with no end is refused at the line cap, not read whole.
#[test]
fn an_endless_status_line_is_refused_at_the_cap() {
    let mut input = b"HTTP/1.1 200 ".to_vec();
    input.resize(4 * http::MAX_LINE, b'x');
    let e = http::read_response(&input[..], 1024).unwrap_err().to_string();
    assert!(e.contains("over 65536 bytes"), "{e}");
    let mut headers = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=http::MAX_HEADERS {
        headers.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    headers.extend_from_slice(b"\r\n");
    let e = http::read_response(&headers[..], 1024).unwrap_err().to_string();
    assert!(e.contains("over 256 header lines"), "{e}");
}

//! HPACK (RFC 7541), the header compression of HTTP/2: the decoder a
//! gRPC client needs (servers index and Huffman-code their headers), and
//! the one encoding it sends (literal, never indexed, no Huffman). Pure:
//! bytes in, header fields out, every length bounded.

use std::collections::VecDeque;

/// The dynamic table size we allow (HTTP/2's default
/// SETTINGS_HEADER_TABLE_SIZE, which the client never raises).
pub const TABLE_MAX: usize = 4096;

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The Huffman code's length for each byte (RFC 7541 Appendix B; EOS is
/// 30 bits of ones). The code is canonical, so the lengths define it.
const LENS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26,
];

/// A canonical Huffman decoder: per length, the first code, how many
/// codes, and where their symbols start in `syms`.
struct Huffman {
    first: [u32; 31],
    count: [u32; 31],
    offset: [u32; 31],
    syms: [u8; 256],
}

impl Huffman {
    fn new() -> Huffman {
        let mut order: Vec<u8> = (0..=255u8).collect();
        order.sort_by_key(|&s| (LENS[s as usize], s));
        let mut syms = [0u8; 256];
        syms.copy_from_slice(&order);
        let mut h = Huffman { first: [0; 31], count: [0; 31], offset: [0; 31], syms };
        for &l in LENS.iter() {
            h.count[l as usize] += 1;
        }
        let (mut code, mut off) = (0u32, 0u32);
        for l in 1..31 {
            h.first[l] = code;
            h.offset[l] = off;
            code = (code + h.count[l]) << 1;
            off += h.count[l];
        }
        h
    }

    fn decode(&self, src: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(src.len() * 8 / 5 + 1);
        let (mut code, mut len) = (0u32, 0usize);
        for &b in src {
            for i in (0..8).rev() {
                code = (code << 1) | u32::from((b >> i) & 1);
                len += 1;
                if code.wrapping_sub(self.first[len]) < self.count[len] {
                    out.push(self.syms[(self.offset[len] + code - self.first[len]) as usize]);
                    code = 0;
                    len = 0;
                } else if len >= 30 {
                    return Err("bad Huffman code (EOS or longer) in a header".into());
                }
            }
        }
        // What is left is padding: fewer than 8 bits, all ones (the EOS prefix).
        if len > 7 || code != (1 << len) - 1 {
            return Err("bad Huffman padding in a header".into());
        }
        Ok(out)
    }
}

/// Appends an integer with an `n`-bit prefix (RFC 7541 5.1).
fn put_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2).
pub fn encode_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    put_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    put_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// One connection's decoding state (its dynamic table).
pub struct Decoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max: usize,
    huffman: Huffman,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { table: VecDeque::new(), size: 0, max: TABLE_MAX, huffman: Huffman::new() }
    }

    fn int(b: &[u8], i: &mut usize, n: u8) -> Result<usize, String> {
        let short = || "a header block ends inside an integer".to_string();
        let max = (1usize << n) - 1;
        let mut v = (*b.get(*i).ok_or_else(short)? as usize) & max;
        *i += 1;
        if v < max {
            return Ok(v);
        }
        let mut shift = 0;
        loop {
            let c = *b.get(*i).ok_or_else(short)?;
            *i += 1;
            v += ((c & 0x7f) as usize) << shift;
            if c & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 21 {
                return Err("a header integer is too large".into());
            }
        }
    }

    fn string(&self, b: &[u8], i: &mut usize) -> Result<String, String> {
        let huffman = b.get(*i).ok_or("a header block ends before a string")? & 0x80 != 0;
        let n = Self::int(b, i, 7)?;
        let raw = b.get(*i..i.saturating_add(n)).ok_or("a header string runs past its block")?;
        *i += n;
        let bytes = if huffman { self.huffman.decode(raw)? } else { raw.to_vec() };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn get(&self, idx: usize) -> Result<(String, String), String> {
        match idx {
            1..=61 => Ok((STATIC[idx - 1].0.into(), STATIC[idx - 1].1.into())),
            _ => self
                .table
                .get(idx.wrapping_sub(62))
                .cloned()
                .ok_or_else(|| format!("header index {idx} is not in the table")),
        }
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= 32 + n.len() + v.len(),
                None => self.size = 0,
            }
        }
    }

    /// The fields of one complete header block, in order.
    pub fn decode(&mut self, b: &[u8]) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c & 0x80 != 0 {
                // Indexed field (6.1).
                let idx = Self::int(b, &mut i, 7)?;
                out.push(self.get(idx)?);
            } else if c & 0xe0 == 0x20 {
                // Dynamic table size update (6.3), within what we allow.
                let max = Self::int(b, &mut i, 5)?;
                if max > TABLE_MAX {
                    return Err(format!("header table size {max} above the {TABLE_MAX} allowed"));
                }
                self.max = max;
                self.evict();
            } else {
                // Literal with incremental indexing (6.2.1), else without
                // or never indexed (6.2.2, 6.2.3).
                let (n, index) = if c & 0xc0 == 0x40 { (6, true) } else { (4, false) };
                let idx = Self::int(b, &mut i, n)?;
                let name = if idx == 0 { self.string(b, &mut i)? } else { self.get(idx)?.0 };
                let value = self.string(b, &mut i)?;
                if index {
                    self.size += 32 + name.len() + value.len();
                    self.table.push_front((name.clone(), value.clone()));
                    self.evict();
                }
                out.push((name, value));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// Canonical codes from the lengths, to encode in tests.
    fn encode_huffman(s: &[u8]) -> Vec<u8> {
        let mut order: Vec<usize> = (0..256).collect();
        order.sort_by_key(|&s| (LENS[s], s));
        let mut codes = [0u32; 256];
        let (mut code, mut prev) = (0u32, LENS[order[0]]);
        for (k, &sym) in order.iter().enumerate() {
            if k > 0 {
                code = (code + 1) << (LENS[sym] - prev);
            }
            prev = LENS[sym];
            codes[sym] = code;
        }
        let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0u32);
        for &b in s {
            acc = (acc << LENS[b as usize]) | u64::from(codes[b as usize]);
            bits += u32::from(LENS[b as usize]);
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
        }
        out
    }

    /// RFC 7541 C.4: three requests with Huffman, sharing one table.
    #[test]
    fn rfc7541_requests_with_huffman() {
        let mut d = Decoder::new();
        assert_eq!(
            d.decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap(),
            pairs(&[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
        );
        assert_eq!(
            d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(
            d.decode(&hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.size, 164, "the table's size after C.4.3");
    }

    /// RFC 7541 C.6: responses with Huffman in a 256-byte table, which
    /// evicts as it goes.
    #[test]
    fn rfc7541_responses_with_eviction() {
        let mut d = Decoder::new();
        d.decode(&[0x3f, 0xe1, 0x01]).unwrap(); // size update to 256
        assert_eq!(d.max, 256);
        let first = d
            .decode(&hex("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3"))
            .unwrap();
        assert_eq!(
            first,
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com")
            ])
        );
        assert_eq!(d.size, 222);
        let second = d.decode(&hex("4883 640e ff c1 c0 bf")).unwrap();
        assert_eq!(second[0], (":status".into(), "307".into()));
        assert_eq!(second[1..], first[1..]);
        assert_eq!(d.size, 222, ":status 302 was evicted for 307");
        let third = d
            .decode(&hex("88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07"))
            .unwrap();
        assert_eq!(
            third,
            pairs(&[
                (":status", "200"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
                ("location", "https://www.example.com"),
                ("content-encoding", "gzip"),
                ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
            ])
        );
        assert_eq!(d.size, 215);
        assert_eq!(d.table.len(), 3);
    }

    #[test]
    fn every_byte_round_trips_through_huffman() {
        let h = Huffman::new();
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        assert_eq!(h.decode(&encode_huffman(&all)).unwrap(), all);
        for b in 0..=255u8 {
            assert_eq!(h.decode(&encode_huffman(&[b])).unwrap(), [b], "{b}");
        }
        assert_eq!(encode_huffman(b"www.example.com"), hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        let mut d = Decoder::new();
        assert!(d.decode(&[0xbe]).unwrap_err().contains("index 62"), "an empty dynamic table");
        assert!(d.decode(&[0x80]).is_err(), "index 0");
        assert!(d.decode(&[0x3f, 0xe1, 0x1f]).is_ok(), "4096 is allowed");
        assert!(d.decode(&[0x3f, 0xe2, 0x1f]).unwrap_err().contains("above"), "a table larger than allowed");
        assert!(d.decode(&[0x00, 0x05, b'a']).is_err(), "a string past the end");
        assert!(d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err(), "an endless integer");
        // Padding that is not ones, and padding of 8 bits or more.
        assert!(Huffman::new().decode(&[0x00]).is_err());
        assert!(Huffman::new().decode(&[0x1f, 0xff]).is_err());
        // The literal we send decodes as itself.
        let mut b = Vec::new();
        encode_literal(&mut b, "containerd-namespace", &"n".repeat(200));
        assert_eq!(d.decode(&b).unwrap(), pairs(&[("containerd-namespace", &"n".repeat(200))]));
        assert!(d.table.is_empty(), "a literal without indexing is not added");
    }
}

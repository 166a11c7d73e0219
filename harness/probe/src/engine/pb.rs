//! The few protocol-buffer encodings containerd's API needs, by hand:
//! reading a message as (field number, value) pairs and writing one
//! field at a time. No schema, no code generation: each call site names
//! the fields it reads (numbers from containerd's `api/services/*.proto`).

/// One field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// 32- or 64-bit fixed: none of the fields read here use them.
    Fixed,
}

impl<'a> Val<'a> {
    pub fn str(&self) -> String {
        match self {
            Val::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        }
    }
    pub fn u64(&self) -> u64 {
        match self {
            Val::Varint(x) => *x,
            _ => 0,
        }
    }
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            Val::Bytes(b) => b,
            _ => &[],
        }
    }
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let c = *b.get(*i)?;
        *i += 1;
        v |= u64::from(c & 0x7f) << shift;
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The (field number, value) pairs of one message, in order; stops at
/// the first malformed byte (a truncated message yields what came before).
pub fn fields(b: &[u8]) -> impl Iterator<Item = (u64, Val<'_>)> {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= b.len() {
            return None;
        }
        let key = varint(b, &mut i)?;
        let v = match key & 7 {
            0 => Val::Varint(varint(b, &mut i)?),
            2 => {
                let n = usize::try_from(varint(b, &mut i)?).ok()?;
                let s = b.get(i..i.checked_add(n)?)?;
                i += n;
                Val::Bytes(s)
            }
            1 => {
                i = i.checked_add(8).filter(|e| *e <= b.len())?;
                Val::Fixed
            }
            5 => {
                i = i.checked_add(4).filter(|e| *e <= b.len())?;
                Val::Fixed
            }
            _ => return None,
        };
        Some((key >> 3, v))
    })
}

/// The last value of field `n` (protobuf's rule for a repeated scalar read once).
pub fn field(b: &[u8], n: u64) -> Option<Val<'_>> {
    fields(b).filter(|(f, _)| *f == n).map(|(_, v)| v).last()
}

/// Every value of a repeated field `n`.
pub fn repeated(b: &[u8], n: u64) -> impl Iterator<Item = Val<'_>> {
    fields(b).filter(move |(f, _)| *f == n).map(|(_, v)| v)
}

/// A `map<string, string>` entry.
pub fn map_entry(b: &[u8]) -> (String, String) {
    (field(b, 1).map(|v| v.str()).unwrap_or_default(), field(b, 2).map(|v| v.str()).unwrap_or_default())
}

/// A `google.protobuf.Timestamp`: (seconds, nanoseconds).
pub fn timestamp(b: &[u8]) -> (i64, u32) {
    let secs = field(b, 1).map(|v| v.u64() as i64).unwrap_or(0);
    let nanos = field(b, 2).map(|v| v.u64() as u32).unwrap_or(0);
    (secs, nanos)
}

/// A message being written, field by field.
#[derive(Debug, Default, Clone)]
pub struct Msg(pub Vec<u8>);

impl Msg {
    pub fn new() -> Msg {
        Msg::default()
    }
    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub fn varint(mut self, n: u64, v: u64) -> Msg {
        if v != 0 {
            self.put_varint(n << 3);
            self.put_varint(v);
        }
        self
    }
    pub fn bytes(mut self, n: u64, v: &[u8]) -> Msg {
        self.put_varint((n << 3) | 2);
        self.put_varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    /// A string field; empty strings are left out, as proto3 does.
    pub fn string(self, n: u64, v: &str) -> Msg {
        if v.is_empty() { self } else { self.bytes(n, v.as_bytes()) }
    }
    pub fn msg(self, n: u64, m: &Msg) -> Msg {
        self.bytes(n, &m.0)
    }
    pub fn map_entry(self, n: u64, k: &str, v: &str) -> Msg {
        self.msg(n, &Msg::new().string(1, k).string(2, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_it_reads() {
        let inner = Msg::new().string(1, "sha256:aa").varint(3, 300);
        let m = Msg::new().string(1, "fixture/redis:1").map_entry(2, "k", "v").msg(3, &inner).varint(4, 0);
        let got: Vec<(u64, Val)> = fields(&m.0).collect();
        assert_eq!(got.len(), 3, "a zero varint is left out: {got:?}");
        assert_eq!(got[0], (1, Val::Bytes(b"fixture/redis:1")));
        assert_eq!(map_entry(got[1].1.bytes()), ("k".into(), "v".into()));
        let target = field(&m.0, 3).unwrap().bytes();
        assert_eq!(field(target, 3).unwrap().u64(), 300);
        assert_eq!(field(target, 1).unwrap().str(), "sha256:aa");
        // 300 is the protobuf documentation's example varint: ac 02.
        assert_eq!(Msg::new().varint(1, 300).0, [0x08, 0xac, 0x02]);
    }

    #[test]
    fn malformed_input_stops_without_panicking() {
        // A length running past the end, a varint that never ends, a
        // fixed64 cut short, and an unknown wire type.
        for bad in [&[0x0a, 0x05, b'a'][..], &[0x08, 0xff, 0xff], &[0x09, 1, 2, 3], &[0x0f, 0]] {
            assert_eq!(fields(bad).count(), 0, "{bad:?}");
        }
        let mut ok = Msg::new().string(1, "a").0;
        ok.extend_from_slice(&[0x12, 0x10]);
        assert_eq!(fields(&ok).count(), 1, "what came before the damage is read");
        assert_eq!(timestamp(&Msg::new().varint(1, 1_700_000_000).varint(2, 5).0), (1_700_000_000, 5));
        assert_eq!(repeated(&Msg::new().string(1, "a").string(1, "b").0, 1).count(), 2);
    }
}

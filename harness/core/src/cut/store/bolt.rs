//! A read-only reader of bbolt databases (containerd's `meta.db` and its
//! snapshotter's `metadata.db`), over the file's bytes as read from the
//! device's filesystem: no mmap, no lock, nothing written.
//!
//! The format (go.etcd.io/bbolt, little-endian as on every device airboot
//! boots): two meta pages at pages 0 and 1, each naming the root bucket's
//! page and a transaction id, checked by an FNV-1a checksum; the valid one
//! with the higher transaction id is current (a power cut can leave the
//! other half-written). Every page has a 16-byte header (id, flags, element
//! count, overflow pages). Branch pages list (key, child page); leaf pages
//! list (flags, key, value), a value flagged as a bucket being the bucket's
//! root page and sequence, followed by an inline page when the root is 0.
//! A damaged database is an error naming what is wrong, never a panic.

use std::fmt;

const MAGIC: u32 = 0xED0C_DAED;
const HEADER: usize = 16;
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const META: u16 = 0x04;
const BUCKET: u32 = 0x01;
/// Deeper than any real tree: a loop in damaged pages stops here.
const MAX_DEPTH: usize = 64;

/// What is wrong with a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoltError(pub String);

impl fmt::Display for BoltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError(m.into()))
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h = (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// An open database.
#[derive(Debug, Clone, Copy)]
pub struct Bolt<'a> {
    data: &'a [u8],
    page_size: usize,
    root: u64,
    /// The current meta page's transaction id.
    pub txid: u64,
}

/// A bucket: on its own page, or inline in its parent's value.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    db: Bolt<'a>,
    at: Place<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Place<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

/// A key's value: a nested bucket or bytes.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Bucket(Bucket<'a>),
    Data(&'a [u8]),
}

impl<'a> Bolt<'a> {
    /// Open `data` (a whole database file).
    pub fn open(data: &'a [u8]) -> Result<Bolt<'a>, BoltError> {
        let meta = |off: usize| -> Option<(usize, u64, u64)> {
            let flags = u16_at(data, off + 8)?;
            let m = data.get(off + HEADER..off + HEADER + 64)?;
            let ok = flags & META != 0
                && u32_at(m, 0)? == MAGIC
                && u32_at(m, 4)? == 2
                && fnv1a64(&m[..56]) == u64_at(m, 56)?;
            ok.then(|| (u32_at(m, 8).unwrap_or(0) as usize, u64_at(m, 16).unwrap_or(0), u64_at(m, 48).unwrap_or(0)))
        };
        let first = meta(0);
        // The second meta page sits one page in; the first gives the size
        // unless it is the damaged one (then try bbolt's usual sizes).
        let second = match first {
            Some((ps, _, _)) => meta(ps),
            None => [4096usize, 16384, 65536, 8192].into_iter().find_map(meta),
        };
        let best = match (first, second) {
            (Some(a), Some(b)) => {
                if b.2 > a.2 {
                    b
                } else {
                    a
                }
            }
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => {
                return err(if data.len() < 2 * HEADER + 64 {
                    format!("{} bytes: too short to be a bbolt database", data.len())
                } else {
                    "neither meta page is valid (bad magic, version or checksum)".to_string()
                });
            }
        };
        let (page_size, root, txid) = best;
        if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
            return err(format!("page size {page_size} is not plausible"));
        }
        Ok(Bolt { data, page_size, root, txid })
    }

    /// The top-level bucket holding every named bucket.
    pub fn root(&self) -> Bucket<'a> {
        Bucket { db: *self, at: Place::Page(self.root) }
    }

    /// The bucket at `path` (names from the top), if every step exists.
    pub fn bucket(&self, path: &[&[u8]]) -> Result<Option<Bucket<'a>>, BoltError> {
        let mut b = self.root();
        for name in path {
            match b.get(name)? {
                Some(Value::Bucket(next)) => b = next,
                _ => return Ok(None),
            }
        }
        Ok(Some(b))
    }

    fn page(&self, id: u64) -> Result<&'a [u8], BoltError> {
        let start = usize::try_from(id).ok().and_then(|i| i.checked_mul(self.page_size));
        let Some(start) = start.filter(|s| *s + HEADER <= self.data.len()) else {
            return err(format!("page {id} is past the end of the file ({} bytes)", self.data.len()));
        };
        let overflow = u32_at(self.data, start + 12).unwrap_or(0) as usize;
        let end = start.saturating_add((overflow + 1).saturating_mul(self.page_size)).min(self.data.len());
        Ok(&self.data[start..end])
    }
}

impl<'a> Bucket<'a> {
    /// Every (key, value) in key order.
    pub fn entries(&self) -> Result<Vec<(&'a [u8], Value<'a>)>, BoltError> {
        let mut out = Vec::new();
        match self.at {
            Place::Page(id) => self.walk(self.db.page(id)?, 0, &mut out)?,
            Place::Inline(p) => self.walk(p, 0, &mut out)?,
        }
        Ok(out)
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value<'a>>, BoltError> {
        Ok(self.entries()?.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v))
    }

    /// The bytes under `key` (`None`: absent, or a bucket).
    pub fn data(&self, key: &[u8]) -> Result<Option<&'a [u8]>, BoltError> {
        Ok(match self.get(key)? {
            Some(Value::Data(d)) => Some(d),
            _ => None,
        })
    }

    /// The nested bucket `key`.
    pub fn bucket(&self, key: &[u8]) -> Result<Option<Bucket<'a>>, BoltError> {
        Ok(match self.get(key)? {
            Some(Value::Bucket(b)) => Some(b),
            _ => None,
        })
    }

    fn walk(&self, page: &'a [u8], depth: usize, out: &mut Vec<(&'a [u8], Value<'a>)>) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return err("the page tree is deeper than 64 levels (a loop in damaged pages)");
        }
        let id = u64_at(page, 0).unwrap_or(0);
        let (Some(flags), Some(count)) = (u16_at(page, 8), u16_at(page, 10)) else {
            return err(format!("page {id} is cut short"));
        };
        for i in 0..count as usize {
            let e = HEADER + i * 16;
            let short = || BoltError(format!("page {id}: element {i} runs past the page"));
            if flags & BRANCH != 0 {
                let child = u64_at(page, e + 8).ok_or_else(short)?;
                self.walk(self.db.page(child)?, depth + 1, out)?;
            } else if flags & LEAF != 0 {
                let (Some(f), Some(pos), Some(ks), Some(vs)) =
                    (u32_at(page, e), u32_at(page, e + 4), u32_at(page, e + 8), u32_at(page, e + 12))
                else {
                    return Err(short());
                };
                let k0 = e + pos as usize;
                let key = page.get(k0..k0 + ks as usize).ok_or_else(short)?;
                let val = page.get(k0 + ks as usize..k0 + ks as usize + vs as usize).ok_or_else(short)?;
                let v = if f & BUCKET != 0 {
                    let root = u64_at(val, 0).ok_or_else(short)?;
                    let at = if root == 0 { Place::Inline(&val[16.min(val.len())..]) } else { Place::Page(root) };
                    Value::Bucket(Bucket { db: self.db, at })
                } else {
                    Value::Data(val)
                };
                out.push((key, v));
            } else {
                return err(format!("page {id} is neither a branch nor a leaf (flags {flags:#x})"));
            }
        }
        Ok(())
    }
}

/// A Go `time.Time` as `MarshalBinary` writes it (version 1: seconds since
/// year 1, nanoseconds, zone offset): Unix seconds.
pub fn go_time(b: &[u8]) -> Option<f64> {
    if b.first() != Some(&1) || b.len() < 15 {
        return None;
    }
    let secs = i64::from_be_bytes(b[1..9].try_into().ok()?);
    let nanos = u32::from_be_bytes(b[9..13].try_into().ok()?);
    // Seconds from 0001-01-01 to 1970-01-01.
    Some((secs - 62_135_596_800) as f64 + f64::from(nanos) / 1e9)
}

/// A Go `binary.PutVarint` (zig-zag) value.
pub fn go_varint(b: &[u8]) -> Option<i64> {
    let mut u = 0u64;
    for (i, c) in b.iter().enumerate().take(10) {
        u |= u64::from(c & 0x7f) << (7 * i);
        if c & 0x80 == 0 {
            let v = (u >> 1) as i64;
            return Some(if u & 1 != 0 { !v } else { v });
        }
    }
    None
}

/// A Go `binary.PutUvarint` value.
pub fn go_uvarint(b: &[u8]) -> Option<u64> {
    let mut u = 0u64;
    for (i, c) in b.iter().enumerate().take(10) {
        u |= u64::from(c & 0x7f) << (7 * i);
        if c & 0x80 == 0 {
            return Some(u);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by bbolt itself: containerd 1.6.20's meta.db
    /// after `ctr images import` of the fixture's two archives and a
    /// `ctr run -d` (namespace `airboot`).
    fn real() -> Vec<u8> {
        let gz = include_bytes!("testdata/containerd-meta.db.gz");
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        out
    }

    #[test]
    fn reads_containerds_metadata_as_bbolt_wrote_it() {
        let data = real();
        let db = Bolt::open(&data).unwrap();
        let v = db.bucket(&[b"v1"]).unwrap().unwrap().data(b"version").unwrap().unwrap();
        assert_eq!(go_varint(v), Some(3), "schema version 3 (containerd 1.6 writes varint 3)");
        let images = db.bucket(&[b"v1", b"airboot", b"images"]).unwrap().unwrap();
        let names: Vec<String> =
            images.entries().unwrap().iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect();
        assert!(names.contains(&"fixture/busybox:1".to_string()), "{names:?}");
        let target = images.bucket(b"fixture/busybox:1").unwrap().unwrap().bucket(b"target").unwrap().unwrap();
        let digest = target.data(b"digest").unwrap().unwrap();
        assert!(digest.starts_with(b"sha256:") && digest.len() == 71);
        assert!(go_varint(target.data(b"size").unwrap().unwrap()).unwrap() > 0);
        let created = images.bucket(b"fixture/busybox:1").unwrap().unwrap().data(b"createdat").unwrap().unwrap();
        assert!(go_time(created).unwrap() > 1.7e9, "a 2020s date");
        let blobs = db.bucket(&[b"v1", b"airboot", b"content", b"blob"]).unwrap().unwrap();
        assert!(blobs.entries().unwrap().len() >= 5, "manifests, configs and layers");
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        let data = real();
        assert!(Bolt::open(&data[..50]).unwrap_err().0.contains("too short"));
        let head = Bolt::open(&data[..100]).unwrap();
        assert!(head.bucket(&[b"v1"]).unwrap_err().0.contains("past the end"));
        // Both meta pages' checksums broken.
        let mut bad = data.clone();
        bad[16 + 20] ^= 0xff;
        let ps = 4096;
        bad[ps + 16 + 20] ^= 0xff;
        assert!(Bolt::open(&bad).unwrap_err().0.contains("neither meta page"));
        // One meta page broken: the other one serves.
        let mut half = data.clone();
        half[16 + 20] ^= 0xff;
        let db = Bolt::open(&half).unwrap();
        assert!(db.bucket(&[b"v1"]).unwrap().is_some());
        // Truncated after the metas: pages past the end are named.
        let cut = &data[..2 * ps + 10];
        let db = Bolt::open(cut).unwrap();
        let e = db.bucket(&[b"v1", b"airboot", b"images"]).unwrap_err();
        assert!(e.0.contains("past the end") || e.0.contains("cut short"), "{e}");
        // Every byte of every page flipped in turn: errors or data, never a panic.
        for i in (2 * ps..data.len()).step_by(97) {
            let mut d = data.clone();
            d[i] = d[i].wrapping_add(0x5a);
            if let Ok(db) = Bolt::open(&d) {
                let _ = db.bucket(&[b"v1", b"airboot", b"images"]).map(|b| b.map(|b| b.entries()));
            }
        }
    }

    #[test]
    fn go_encodings() {
        assert_eq!(go_varint(&[0x06]), Some(3));
        assert_eq!(go_varint(&[0x05]), Some(-3));
        assert_eq!(go_varint(&[0xac, 0x02]), Some(150));
        assert_eq!(go_uvarint(&[0xac, 0x02]), Some(300));
        assert_eq!(go_varint(&[0x80]), None);
        // 1970-01-01T00:00:01.5Z, UTC (zone -1).
        let mut t = vec![1];
        t.extend_from_slice(&62_135_596_801i64.to_be_bytes());
        t.extend_from_slice(&500_000_000u32.to_be_bytes());
        t.extend_from_slice(&(-1i16).to_be_bytes());
        assert_eq!(go_time(&t), Some(1.5));
        assert_eq!(go_time(&[2, 0]), None);
    }
}

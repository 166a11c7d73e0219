//! Reading the small members of a tar archive (`manifest.json` and image
//! configs of a `docker save` archive) without reading its layers: each
//! header says how long its member is, and the large ones are skipped.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() { Some(0) } else { u64::from_str_radix(s, 8).ok() }
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Every regular member whose name `want`s it and whose size is at most
/// `max` bytes, by name (`./` dropped). Stops at the end marker, at a
/// header that is not one, or after `limit` members: a damaged or hostile
/// archive gives what was read, never a panic or an endless loop.
pub fn small_members<R: Read + Seek>(
    r: &mut R,
    want: &dyn Fn(&str) -> bool,
    max: u64,
    limit: usize,
) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut h = [0u8; 512];
    let mut long_name: Option<String> = None;
    for _ in 0..limit {
        if r.read_exact(&mut h).is_err() || h.iter().all(|b| *b == 0) {
            break;
        }
        let Some(size) = octal(&h[124..136]) else { break };
        let kind = h[156];
        let mut name = long_name.take().unwrap_or_else(|| {
            let prefix = if &h[257..262] == b"ustar" { text(&h[345..500]) } else { String::new() };
            let base = text(&h[0..100]);
            if prefix.is_empty() { base } else { format!("{prefix}/{base}") }
        });
        name = name.trim_start_matches("./").to_string();
        let padded = size.div_ceil(512) * 512;
        if kind == b'L' && size <= 4096 {
            let mut n = vec![0u8; padded as usize];
            if r.read_exact(&mut n).is_err() {
                break;
            }
            long_name = Some(text(&n[..size as usize]));
            continue;
        }
        if matches!(kind, b'0' | 0) && size <= max && want(&name) {
            let mut data = vec![0u8; padded as usize];
            if r.read_exact(&mut data).is_err() {
                break;
            }
            data.truncate(size as usize);
            out.insert(name, data);
        } else {
            r.seek(SeekFrom::Current(i64::try_from(padded).unwrap_or(i64::MAX)))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h
    }

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v = header(name, data.len(), b'0');
        v.extend_from_slice(data);
        v.resize(v.len().div_ceil(512) * 512, 0);
        v
    }

    #[test]
    fn reads_the_small_members_and_skips_the_rest() {
        let long = format!("{}/json", "d".repeat(120));
        let mut t = Vec::new();
        t.extend(member("./manifest.json", b"[{}]"));
        t.extend(member("abc/layer.tar", &vec![7u8; 3000]));
        let mut l = header("././@LongLink", long.len(), b'L');
        l.extend_from_slice(long.as_bytes());
        l.resize(l.len().div_ceil(512) * 512, 0);
        t.extend(l);
        t.extend(member("ignored-name", b"{\"a\":1}"));
        t.extend(vec![0u8; 1024]);
        let got = small_members(&mut io::Cursor::new(&t), &|n: &str| n.ends_with("json"), 1 << 20, 100).unwrap();
        assert_eq!(got.get("manifest.json").map(Vec::as_slice), Some(&b"[{}]"[..]));
        assert_eq!(got.get(&long).map(Vec::as_slice), Some(&b"{\"a\":1}"[..]), "a GNU long name names the next member");
        assert!(!got.contains_key("abc/layer.tar"));
        // Truncated, garbage, or too many members: what was read, no panic.
        let got = small_members(&mut io::Cursor::new(&t[..1300]), &|_: &str| true, 1 << 20, 100).unwrap();
        assert!(got.contains_key("manifest.json"));
        assert!(
            small_members(&mut io::Cursor::new(vec![b'x'; 2048]), &|_: &str| true, 1 << 20, 100).unwrap().is_empty()
        );
        assert!(small_members(&mut io::Cursor::new(&t), &|_: &str| true, 1 << 20, 1).unwrap().len() == 1);
    }
}

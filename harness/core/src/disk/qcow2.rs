//! A read-only qcow2 reader (versions 2 and 3): the virtual disk through
//! the L1/L2 tables, zero and unallocated clusters as zeros, zlib
//! compressed clusters inflated. Backing files, encryption, external data
//! files, extended L2 entries and zstd compression are refused with a
//! reason.

use std::io::{self, Read};

use super::{ReadAt, bad, be32, be64};

pub struct Qcow2<R: ReadAt> {
    inner: R,
    cluster_bits: u32,
    size: u64,
    l1: Vec<u64>,
}

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The backing file a qcow2 names in its header (as written: often
/// relative to the image's folder), if it has one.
pub fn backing_file<R: ReadAt>(inner: &R) -> io::Result<Option<String>> {
    let h = inner.read_vec(0, 20.min(inner.size() as usize))?;
    if h.len() < 20 || &h[0..4] != b"QFI\xfb" {
        return Err(bad("not a qcow2 image"));
    }
    let (off, len) = (be64(&h, 8), be32(&h, 16) as usize);
    if off == 0 {
        return Ok(None);
    }
    if len == 0 || len > 1023 {
        return Err(bad(format!("qcow2 backing file name of {len} bytes (at most 1023)")));
    }
    let name = inner.read_vec(off, len)?;
    Ok(Some(String::from_utf8_lossy(&name).into_owned()))
}

impl<R: ReadAt> Qcow2<R> {
    pub fn open(inner: R) -> io::Result<Self> {
        let h = inner.read_vec(0, 104.min(inner.size() as usize))?;
        if h.len() < 72 || &h[0..4] != b"QFI\xfb" {
            return Err(bad("not a qcow2 image"));
        }
        let version = be32(&h, 4);
        if !(2..=3).contains(&version) {
            return Err(bad(format!("qcow2 version {version} is not supported")));
        }
        if be64(&h, 8) != 0 {
            return Err(bad(
                "the qcow2 image has a backing file: point airboot at the base image, or convert it (qemu-img convert)",
            ));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(bad(format!("qcow2 cluster_bits {cluster_bits} out of range")));
        }
        if be32(&h, 32) != 0 {
            return Err(bad("encrypted qcow2 images are not supported"));
        }
        if version == 3 && h.len() >= 80 {
            let incompat = be64(&h, 72);
            if incompat & 0b11100 != 0 {
                return Err(bad(format!(
                    "qcow2 features this reader does not support (incompatible bits {incompat:#x}: external data file, zstd compression or extended L2); convert with qemu-img"
                )));
            }
        }
        let size = be64(&h, 24);
        let l1_size = be32(&h, 36) as usize;
        let l1_off = be64(&h, 40);
        if l1_size > 1 << 24 {
            return Err(bad("qcow2 L1 table implausibly large"));
        }
        let raw = inner.read_vec(l1_off, l1_size * 8)?;
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        Ok(Qcow2 { inner, cluster_bits, size, l1 })
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Read from within one cluster.
    fn read_in_cluster(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let cs = self.cluster_size();
        let l2_entries = cs / 8;
        let cluster = offset / cs;
        let within = offset % cs;
        let l1_index = (cluster / l2_entries) as usize;
        let l2_index = cluster % l2_entries;
        let l1e = *self.l1.get(l1_index).ok_or_else(|| bad("qcow2 read past the L1 table"))?;
        let l2_off = l1e & OFFSET_MASK;
        if l2_off == 0 {
            buf.fill(0);
            return Ok(());
        }
        let mut e = [0u8; 8];
        self.inner.read_at(l2_off + l2_index * 8, &mut e)?;
        let entry = u64::from_be_bytes(e);
        if entry & (1 << 62) != 0 {
            // Compressed: offset and sector count packed by cluster_bits.
            let x = 62 - (self.cluster_bits - 8);
            let host = entry & ((1u64 << x) - 1);
            let sectors = ((entry >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            let len = (sectors * 512 - (host & 511)) as usize;
            let comp =
                self.inner.read_vec(host, len.min((self.inner.size() - host.min(self.inner.size())) as usize))?;
            let mut out = Vec::with_capacity(cs as usize);
            flate2::read::DeflateDecoder::new(&comp[..]).take(cs).read_to_end(&mut out)?;
            out.resize(cs as usize, 0);
            buf.copy_from_slice(&out[within as usize..within as usize + buf.len()]);
            return Ok(());
        }
        let host = entry & OFFSET_MASK;
        if host == 0 || entry & 1 != 0 {
            buf.fill(0);
            return Ok(());
        }
        self.inner.read_at(host + within, buf)
    }
}

impl<R: ReadAt> ReadAt for Qcow2<R> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(|| bad("read overflows"))?;
        if end > self.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read past the end of the virtual disk ({})", self.size),
            ));
        }
        let cs = self.cluster_size();
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let n = ((cs - off % cs) as usize).min(buf.len() - done);
            self.read_in_cluster(off, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A header cut short is refused, never read past its end.
    #[test]
    fn a_truncated_header_names_no_backing_file() {
        for cut in [0usize, 3, 4, 10, 19] {
            let mut h = b"QFI\xfb".to_vec();
            h.resize(cut.max(4), 0);
            h.truncate(cut);
            assert!(backing_file(&h).is_err(), "{cut} bytes");
        }
    }

    /// A raw file with a pattern, converted by the real qemu-img (plain
    /// and compressed); both must read back byte for byte.
    #[test]
    fn reads_what_qemu_img_wrote() {
        if Command::new("qemu-img").arg("--version").output().is_err() {
            panic!("qemu-img is needed (Debian package qemu-utils)");
        }
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("a.raw");
        let mut data = vec![0u8; 3 << 20];
        for (i, b) in data.iter_mut().enumerate().skip(70_000).take(1_200_000) {
            *b = (i % 251) as u8;
        }
        std::fs::write(&raw, &data).unwrap();
        for (name, extra) in [("plain.qcow2", vec![]), ("comp.qcow2", vec!["-c"])] {
            let q = d.path().join(name);
            let ok = Command::new("qemu-img")
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536"])
                .args(&extra)
                .arg(&raw)
                .arg(&q)
                .status()
                .unwrap();
            assert!(ok.success());
            let img = Qcow2::open(std::fs::File::open(&q).unwrap()).unwrap();
            assert_eq!(img.size(), data.len() as u64);
            for (off, len) in
                [(0usize, 512usize), (69_900, 300), (65_530, 70_000), (1_000_000, 4096), (3 * 1024 * 1024 - 10, 10)]
            {
                assert_eq!(img.read_vec(off as u64, len).unwrap(), data[off..off + len], "{name} at {off}");
            }
            assert!(img.read_vec(data.len() as u64 - 1, 2).is_err());
        }
        // An overlay has a backing file: refused with the reason.
        let o = d.path().join("o.qcow2");
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&raw)
            .arg(&o)
            .status()
            .unwrap();
        let e = Qcow2::open(std::fs::File::open(&o).unwrap()).err().unwrap();
        assert!(e.to_string().contains("backing file"), "{e}");
        let f = std::fs::File::open(&o).unwrap();
        assert_eq!(backing_file(&f).unwrap().as_deref(), Some(raw.to_str().unwrap()));
        let plain = std::fs::File::open(d.path().join("plain.qcow2")).unwrap();
        assert_eq!(backing_file(&plain).unwrap(), None);
        assert!(Qcow2::open(vec![0u8; 200]).is_err());
        assert!(backing_file(&vec![0u8; 200]).is_err(), "not a qcow2");
        // A header naming a backing file past the end, or of no length.
        let mut h = b"QFI\xfb".to_vec();
        h.extend([0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 9]);
        assert!(backing_file(&h).is_err(), "name past the end");
        h[19] = 0;
        assert!(backing_file(&h).unwrap_err().to_string().contains("0 bytes"));
        // Truncated after the header: the L1 table is not there.
        let bytes = std::fs::read(d.path().join("plain.qcow2")).unwrap();
        assert!(Qcow2::open(bytes[..300].to_vec()).is_err(), "truncated");
    }
}

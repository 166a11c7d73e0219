//! Read-only views of disk images, for looking inside an image without
//! mounting it or booting it: qcow2 and raw containers, MBR and GPT
//! partition tables, FAT and ext4 filesystems, executable headers.
//!
//! Everything works over [`ReadAt`] and bounds-checks what it reads: an
//! image may be damaged (a power cut's crash state is exactly that), and a
//! damaged image is an error with a reason, never a panic.

pub mod detect;
pub mod erofs;
pub mod exe;
pub mod ext4;
pub mod fat;
pub mod packed;
pub mod part;
pub mod qcow2;

use std::io;

/// A file's type, from its mode (ext4 and erofs share the Unix bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

impl Kind {
    pub fn of_mode(mode: u16) -> Kind {
        match mode & 0o170000 {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            _ => Kind::Other,
        }
    }
}

/// Random-access reads of a byte range.
pub trait ReadAt {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn size(&self) -> u64;

    /// `len` bytes at `offset`. A range past the end is refused before
    /// anything is allocated: a header's size field can say anything.
    fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let size = self.size();
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(out_of_range(offset, len, size));
        }
        let mut v = vec![0; len];
        self.read_at(offset, &mut v)?;
        Ok(v)
    }
}

pub(crate) fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn out_of_range(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("read of {len} bytes at {offset} is past the end ({size})"))
}

impl ReadAt for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end =
            offset.checked_add(buf.len() as u64).ok_or_else(|| out_of_range(offset, buf.len(), self.len() as u64))?;
        if end > self.len() as u64 {
            return Err(out_of_range(offset, buf.len(), self.len() as u64));
        }
        buf.copy_from_slice(&self[offset as usize..end as usize]);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
    fn size(&self) -> u64 {
        self.len() as u64
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof { out_of_range(offset, buf.len(), self.size()) } else { e }
        })
    }
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

/// A window onto part of another view (a partition).
pub struct Slice<'a> {
    pub inner: &'a dyn ReadAt,
    pub start: u64,
    pub len: u64,
}

impl ReadAt for Slice<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(|| out_of_range(offset, buf.len(), self.len))?;
        if end > self.len {
            return Err(out_of_range(offset, buf.len(), self.len));
        }
        self.inner.read_at(self.start + offset, buf)
    }
    fn size(&self) -> u64 {
        self.len
    }
}

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

/// A view of the virtual disk in an image: through qcow2 when it is one,
/// else the bytes as they are (raw).
pub fn disk_view<R: ReadAt + 'static>(image: R) -> io::Result<Box<dyn ReadAt>> {
    let mut magic = [0u8; 4];
    if image.size() >= 4 {
        image.read_at(0, &mut magic)?;
    }
    if &magic == b"QFI\xfb" { Ok(Box::new(qcow2::Qcow2::open(image)?)) } else { Ok(Box::new(image)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_bounds() {
        let v: Vec<u8> = (0..100).collect();
        let s = Slice { inner: &v, start: 10, len: 20 };
        assert_eq!(s.read_vec(0, 3).unwrap(), [10, 11, 12]);
        assert!(s.read_vec(18, 3).is_err(), "past the slice");
        assert!(v.read_vec(99, 2).is_err());
        assert!(v.read_vec(u64::MAX, 2).is_err(), "no overflow panic");
        // A bare slice and a Vec say their own size; a Slice its window's.
        assert_eq!(ReadAt::size(&v[..]), 100);
        assert_eq!(ReadAt::size(&v[5..]), 95);
        assert_eq!(v.size(), 100);
        assert_eq!(s.size(), 20);
    }
}

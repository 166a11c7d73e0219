//! A writer for the "newc" cpio format the kernel unpacks as initramfs.
//! Entries carry fixed owners and mtimes, and device nodes can be written
//! without root (the kernel creates them while unpacking).

use std::collections::BTreeSet;
use std::io::{self, Write};

pub struct Cpio<W: Write> {
    w: W,
    ino: u32,
    written: u64,
    /// Folders written so far, so `file_in` adds each only once.
    dirs: BTreeSet<String>,
}

impl<W: Write> Cpio<W> {
    pub fn new(w: W) -> Self {
        Cpio { w, ino: 1, written: 0, dirs: BTreeSet::new() }
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8], rmajor: u32, rminor: u32) -> io::Result<()> {
        let ino = self.ino;
        self.ino += 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{:08x}{:08x}{:08x}{rmajor:08x}{rminor:08x}{:08x}{:08x}",
            0,
            0,
            crate::archive::EPOCH as u32,
            data.len(),
            0,
            0,
            name.len() + 1,
            0
        );
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.dirs.insert(name.to_string());
        self.entry(name, 0o040000 | perm, 2, &[], 0, 0)
    }

    /// A file, preceded by whichever of its folders (0755) this archive
    /// does not hold yet, outermost first.
    pub fn file_in(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let mut end = 0;
        while let Some(i) = name[end..].find('/') {
            end += i;
            let d = &name[..end];
            if !self.dirs.contains(d) {
                self.dir(d, 0o755)?;
            }
            end += 1;
        }
        self.file(name, perm, data)
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, 0o100000 | perm, 1, data, 0, 0)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, 0o120777, 1, target.as_bytes(), 0, 0)
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, 0o020000 | perm, 1, &[], major, minor)
    }

    /// Write the trailer and pad to 512 bytes; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, &[], 0, 0)?;
        let pad = (512 - (self.written % 512) as usize) % 512;
        self.put(&vec![0u8; pad])?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::new(Vec::new());
        c.dir("bin", 0o755).unwrap();
        c.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        c.char_dev("dev/console", 0o600, 5, 1).unwrap();
        c.symlink("bin/sh", "busybox").unwrap();
        let out = c.finish().unwrap();
        assert_eq!(out.len() % 512, 0);
        // First header: magic, ino 1, directory mode.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(&out[6..14], b"00000001");
        assert_eq!(&out[14..22], b"000041ed");
        // name "bin\0" right after the 110-byte header, padded to 4.
        assert_eq!(&out[110..114], b"bin\0");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("init\0"));
        assert!(text.contains("#!/bin/sh\n"));
        assert!(text.contains("TRAILER!!!\0"));
        // The device entry carries major 5, minor 1 in rdevmajor/rdevminor.
        let dev = text.find("dev/console").unwrap() - 110;
        assert_eq!(&out[dev + 78..dev + 94], b"0000000500000001");
    }

    /// Names of the entries in an archive, in order.
    fn names(out: &[u8]) -> Vec<String> {
        let mut v = Vec::new();
        let mut at = 0;
        while at + 110 <= out.len() && &out[at..at + 6] == b"070701" {
            let hex =
                |o: usize| usize::from_str_radix(std::str::from_utf8(&out[at + o..at + o + 8]).unwrap(), 16).unwrap();
            let (size, namesize) = (hex(54), hex(94));
            let name = String::from_utf8_lossy(&out[at + 110..at + 110 + namesize - 1]).into_owned();
            let data = (at + 110 + namesize).div_ceil(4) * 4;
            at = (data + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                break;
            }
            v.push(name);
        }
        v
    }

    #[test]
    fn file_in_writes_each_missing_folder_once_outermost_first() {
        let mut c = Cpio::new(Vec::new());
        c.dir("lib", 0o755).unwrap();
        c.file_in("lib/modules/6.1/kernel/fs/ext4.ko", 0o644, b"x").unwrap();
        c.file_in("lib/modules/6.1/kernel/fs/jbd2.ko", 0o644, b"y").unwrap();
        c.file_in("top", 0o644, b"z").unwrap();
        let out = c.finish().unwrap();
        assert_eq!(
            names(&out),
            [
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/fs",
                "lib/modules/6.1/kernel/fs/ext4.ko",
                "lib/modules/6.1/kernel/fs/jbd2.ko",
                "top",
            ]
        );
    }
}

//! Just enough of EROFS (the read-only root of Avocado OS and of Android)
//! to look inside a root airboot cannot write to: list a folder, follow a
//! path, read a small uncompressed file. Compact and extended inodes, the
//! flat layouts (plain and with an inline tail). Compressed and chunked
//! files are refused with an error: folders and the small text files read
//! here are flat in what `mkfs.erofs` writes. Every size and offset read
//! from the image is checked against the image before it is used.

use std::io;

use super::ReadAt;

const MAGIC: u32 = 0xE0F5_E1E2;
const SUPER_OFFSET: u64 = 1024;
const DIRENT: usize = 12;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("erofs: {}", what.into()))
}

pub struct Erofs<'a> {
    disk: &'a dyn ReadAt,
    block: u64,
    meta: u64,
    root: u64,
}

pub use super::Kind;

#[derive(Debug, Clone)]
pub struct Inode {
    pub nid: u64,
    pub mode: u16,
    pub size: u64,
    layout: u8,
    blkaddr: u64,
    /// Where the inline tail starts (after the inode and its xattrs).
    inline_at: u64,
}

impl Inode {
    pub fn kind(&self) -> Kind {
        Kind::of_mode(self.mode)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub nid: u64,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as u64
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl<'a> Erofs<'a> {
    pub fn open(disk: &'a dyn ReadAt) -> io::Result<Self> {
        let sb = disk.read_vec(SUPER_OFFSET, 128)?;
        if le32(&sb, 0) != MAGIC as u64 {
            return Err(bad("no EROFS superblock"));
        }
        let bits = sb[12];
        if !(9..=16).contains(&bits) {
            return Err(bad(format!("block size 2^{bits} is not one EROFS uses")));
        }
        let block = 1u64 << bits;
        Ok(Erofs { disk, block, meta: le32(&sb, 40) * block, root: le16(&sb, 14) })
    }

    pub fn root(&self) -> io::Result<Inode> {
        self.inode(self.root)
    }

    pub fn inode(&self, nid: u64) -> io::Result<Inode> {
        let at = nid.checked_mul(32).and_then(|o| o.checked_add(self.meta)).ok_or_else(|| bad("inode past the end"))?;
        let head = self.disk.read_vec(at, 32)?;
        let format = le16(&head, 0);
        let extended = format & 1 == 1;
        let layout = ((format >> 1) & 7) as u8;
        let xattrs = match le16(&head, 2) {
            0 => 0,
            n => 12 + (n - 1) * 4,
        };
        let (size, len) = if extended { (le64(&self.disk.read_vec(at, 64)?, 8), 64) } else { (le32(&head, 8), 32) };
        Ok(Inode {
            nid,
            mode: le16(&head, 4) as u16,
            size,
            layout,
            blkaddr: le32(&head, 16),
            inline_at: at + len + xattrs,
        })
    }

    /// Up to `limit` bytes of `ino`'s data.
    pub fn read(&self, ino: &Inode, limit: u64) -> io::Result<Vec<u8>> {
        let len = ino.size.min(limit);
        let full = match ino.layout {
            0 => ino.size,
            2 => ino.size / self.block * self.block,
            1 | 3 => return Err(bad(format!("inode {} is compressed: not read here", ino.nid))),
            l => return Err(bad(format!("inode {} has data layout {l}, not read here", ino.nid))),
        };
        let start = ino.blkaddr * self.block;
        // A folder or file smaller than a block is all tail: its block
        // address means nothing.
        let mut out = match full.min(len) {
            0 => Vec::new(),
            n => self.disk.read_vec(start, n as usize)?,
        };
        if len > full {
            out.extend(self.disk.read_vec(ino.inline_at, (len - full) as usize)?);
        }
        Ok(out)
    }

    pub fn list(&self, dir: &Inode) -> io::Result<Vec<DirEntry>> {
        if dir.kind() != Kind::Dir {
            return Err(bad(format!("inode {} is not a folder", dir.nid)));
        }
        // Bounded: a folder the size of the image is read once at most.
        let data = self.read(dir, 64 << 20)?;
        let mut out = Vec::new();
        for chunk in data.chunks(self.block as usize) {
            if chunk.len() < DIRENT {
                return Err(bad(format!("folder {} has a short block", dir.nid)));
            }
            let count = le16(chunk, 8) as usize / DIRENT;
            if count == 0 || count * DIRENT > chunk.len() {
                return Err(bad(format!("folder {} has a bad first name offset", dir.nid)));
            }
            for i in 0..count {
                let e = i * DIRENT;
                let from = le16(chunk, e + 8) as usize;
                let to = if i + 1 < count { le16(chunk, e + DIRENT + 8) as usize } else { chunk.len() };
                if from > to || to > chunk.len() {
                    return Err(bad(format!("folder {} has a name out of its block", dir.nid)));
                }
                let raw = &chunk[from..to];
                let name = raw.split(|&b| b == 0).next().unwrap_or(raw);
                out.push(DirEntry { name: String::from_utf8_lossy(name).into_owned(), nid: le64(chunk, e) });
            }
        }
        Ok(out)
    }

    /// The inode at absolute `path`, following symlinks (the last one too
    /// if `follow_last`), relative to this filesystem's root. At most 40
    /// links, as Linux allows.
    pub fn lookup(&self, path: &str, follow_last: bool) -> io::Result<Option<Inode>> {
        let mut todo: Vec<String> = path.split('/').filter(|p| !p.is_empty()).rev().map(String::from).collect();
        let mut stack = vec![self.root()?];
        let mut links = 0;
        while let Some(part) = todo.pop() {
            let cur = stack.last().cloned().ok_or_else(|| bad("path escapes the root"))?;
            match part.as_str() {
                "." => continue,
                ".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            if cur.kind() != Kind::Dir {
                return Ok(None);
            }
            let Some(e) = self.list(&cur)?.into_iter().find(|e| e.name == part) else { return Ok(None) };
            let ino = self.inode(e.nid)?;
            if ino.kind() == Kind::Symlink && (follow_last || !todo.is_empty()) {
                links += 1;
                if links > 40 {
                    return Err(bad(format!("too many symbolic links in {path}")));
                }
                let target = String::from_utf8_lossy(&self.read(&ino, 4096)?).into_owned();
                if target.starts_with('/') {
                    stack.truncate(1);
                }
                todo.extend(target.split('/').filter(|p| !p.is_empty()).rev().map(String::from));
                continue;
            }
            stack.push(ino);
        }
        Ok(stack.pop())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    /// An EROFS image of a tree `fill` makes, by mkfs.erofs (erofs-utils)
    /// with `opts`.
    pub(crate) fn mkfs(opts: &[&str], fill: impl FnOnce(&std::path::Path)) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        fill(&tree);
        let img = d.path().join("fs.erofs");
        let o = Command::new("mkfs.erofs")
            .arg("--quiet")
            .args(opts)
            .arg(&img)
            .arg(&tree)
            .output()
            .expect("mkfs.erofs (erofs-utils)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(img).unwrap()
    }

    fn tree(t: &std::path::Path) {
        let w = |p: &str, b: &[u8]| {
            let p = t.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b).unwrap();
        };
        w("etc/fstab", b"/dev/vda3 /data ext4 rw 0 2\n");
        // A tail after whole blocks: inline after the inode.
        w("usr/lib/big", &(0..10_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        // Enough names for a folder of several blocks.
        for i in 0..400 {
            w(&format!("usr/lib/systemd/unit-with-a-long-name-{i:04}.service"), b"x");
        }
        w("usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-257.so", b"elf");
        symlink("usr/lib", t.join("lib")).unwrap();
        symlink("/usr/lib/x86_64-linux-gnu/systemd", t.join("usr/lib/shared")).unwrap();
        symlink("../../etc/fstab", t.join("usr/lib/fstab-link")).unwrap();
        symlink("loop", t.join("loop")).unwrap();
    }

    #[test]
    fn folders_files_and_links_read_as_mkfs_erofs_wrote_them() {
        for opts in [&[][..], &["-Eforce-inode-extended"][..]] {
            let img = mkfs(opts, tree);
            let fs = Erofs::open(&img).unwrap();
            let fstab = fs.lookup("/etc/fstab", true).unwrap().unwrap();
            assert_eq!(fs.read(&fstab, 1 << 20).unwrap(), b"/dev/vda3 /data ext4 rw 0 2\n", "{opts:?}");
            assert_eq!(fs.read(&fstab, 4).unwrap(), b"/dev");
            let big = fs.lookup("/lib/big", true).unwrap().unwrap();
            let want: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
            assert_eq!(fs.read(&big, 1 << 20).unwrap(), want, "{opts:?}");
            let units = fs.list(&fs.lookup("/usr/lib/systemd", true).unwrap().unwrap()).unwrap();
            let names: Vec<&str> = units.iter().map(|e| e.name.as_str()).filter(|n| n.ends_with(".service")).collect();
            assert_eq!(names.len(), 400, "every name of a folder of several blocks");
            assert!(
                names.contains(&"unit-with-a-long-name-0399.service")
                    && names.contains(&"unit-with-a-long-name-0000.service")
            );
            assert!(units.iter().any(|e| e.name == ".") && units.iter().any(|e| e.name == ".."));
            // Links: relative, absolute, through a folder, and the last one not followed.
            let shared = fs.lookup("/lib/shared", true).unwrap().unwrap();
            assert_eq!(shared.kind(), Kind::Dir);
            assert_eq!(fs.list(&shared).unwrap().iter().filter(|e| e.name.starts_with("libsystemd-shared")).count(), 1);
            assert_eq!(fs.read(&fs.lookup("/usr/lib/fstab-link", true).unwrap().unwrap(), 64).unwrap().len(), 28);
            assert_eq!(fs.lookup("/usr/lib/fstab-link", false).unwrap().unwrap().kind(), Kind::Symlink);
            assert!(fs.lookup("/usr/lib/none", true).unwrap().is_none());
            assert!(fs.lookup("/etc/fstab/below-a-file", true).unwrap().is_none());
            assert!(fs.lookup("/loop", true).is_err(), "a link to itself ends in an error");
            assert_eq!(fs.lookup("/../etc/./fstab", true).unwrap().unwrap().nid, fstab.nid);
        }
    }

    /// Linux follows at most 40 links in one lookup: a chain of 40 reads,
    /// one of 41 is an error.
    #[test]
    fn forty_links_are_followed_and_not_one_more() {
        let img = mkfs(&[], |t| {
            std::fs::write(t.join("end"), "x").unwrap();
            symlink("end", t.join("l0")).unwrap();
            for i in 1..=40 {
                symlink(format!("l{}", i - 1), t.join(format!("l{i}"))).unwrap();
            }
        });
        let fs = Erofs::open(&img).unwrap();
        assert_eq!(fs.read(&fs.lookup("/l39", true).unwrap().unwrap(), 8).unwrap(), b"x", "40 links");
        assert!(fs.lookup("/l40", true).is_err(), "41 links");
        assert_eq!(fs.lookup("/l40", false).unwrap().unwrap().kind(), Kind::Symlink, "the last one not followed");
    }

    #[test]
    fn compressed_files_are_refused_but_their_folders_list() {
        let img = mkfs(&["-zlz4hc"], |t| {
            std::fs::create_dir(t.join("etc")).unwrap();
            std::fs::write(t.join("etc/os-release"), "ID=debian\n".repeat(2000)).unwrap();
        });
        let fs = Erofs::open(&img).unwrap();
        let f = fs.lookup("/etc/os-release", true).unwrap().unwrap();
        assert!(fs.read(&f, 100).unwrap_err().to_string().contains("compressed"));
        assert_eq!(fs.list(&fs.lookup("/etc", true).unwrap().unwrap()).unwrap().len(), 3);
    }

    /// A compact inode: `layout`, `xattrs` (the icount field), `mode`,
    /// `size`, then its inline bytes.
    fn compact(layout: u16, xattrs: u16, mode: u16, size: u32, inline: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 32];
        b[0..2].copy_from_slice(&(layout << 1).to_le_bytes());
        b[2..4].copy_from_slice(&xattrs.to_le_bytes());
        b[4..6].copy_from_slice(&mode.to_le_bytes());
        b[8..12].copy_from_slice(&size.to_le_bytes());
        b[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // no block: all inline
        b.extend(std::iter::repeat_n(0xAA, if xattrs == 0 { 0 } else { 12 + (xattrs as usize - 1) * 4 }));
        b.extend(inline);
        b
    }

    /// A folder's bytes: (name, nid) entries, names after the table.
    fn dir_bytes(entries: &[(&str, u64)]) -> Vec<u8> {
        let mut table = Vec::new();
        let mut names: Vec<u8> = Vec::new();
        for (name, nid) in entries {
            table.extend(nid.to_le_bytes());
            table.extend(((entries.len() * DIRENT + names.len()) as u16).to_le_bytes());
            table.extend([2u8, 0]);
            names.extend(name.as_bytes());
        }
        table.extend(names);
        table
    }

    /// An image as mkfs.erofs never lays one out: 4 KiB blocks, the
    /// inodes from block `meta` on, `inodes` as (nid, bytes).
    fn handmade(meta: u32, inodes: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut img = vec![0u8; 4096 * (meta as usize + 2)];
        img[1024..1028].copy_from_slice(&MAGIC.to_le_bytes());
        img[1024 + 12] = 12;
        img[1024 + 40..1024 + 44].copy_from_slice(&meta.to_le_bytes());
        for (nid, bytes) in inodes {
            let at = meta as usize * 4096 + *nid as usize * 32;
            img[at..at + bytes.len()].copy_from_slice(bytes);
        }
        img
    }

    /// The metadata's start block and an inode's xattrs move everything
    /// after them: a folder whose root sits in block 1 behind two xattr
    /// slots, and a file behind it.
    #[test]
    fn inodes_are_found_from_the_metadata_block_past_their_xattrs() {
        let root = dir_bytes(&[(".", 0), ("..", 0), ("hello", 4)]);
        let img = handmade(
            1,
            &[(0, compact(2, 2, 0o040755, root.len() as u32, &root)), (4, compact(2, 0, 0o100644, 5, b"world"))],
        );
        let fs = Erofs::open(&img).unwrap();
        let f = fs.lookup("/hello", true).unwrap().expect("the file behind the root's xattrs");
        assert_eq!(fs.read(&f, 64).unwrap(), b"world");
    }

    /// A folder's block: too short for one entry, a first name offset of
    /// 0 or past the block, or a table that fills the block exactly (each
    /// name empty): errors, never a panic, and the last one reads.
    #[test]
    fn folder_blocks_are_checked_before_they_are_read() {
        let with_root = |bytes: Vec<u8>, size: u32| handmade(0, &[(0, compact(2, 0, 0o040755, size, &bytes))]);
        let list = |img: &Vec<u8>| {
            let fs = Erofs::open(img).unwrap();
            fs.list(&fs.root().unwrap())
        };
        assert!(list(&with_root(vec![1, 2, 3, 4, 5], 5)).is_err(), "shorter than one entry");
        let mut zero = dir_bytes(&[(".", 0)]);
        zero[8] = 0;
        zero[9] = 0;
        assert!(list(&with_root(zero.clone(), zero.len() as u32)).is_err(), "no entries");
        let mut past = dir_bytes(&[(".", 0), ("..", 0)]);
        past[8..10].copy_from_slice(&600u16.to_le_bytes());
        assert!(list(&with_root(past.clone(), past.len() as u32)).is_err(), "a table past the block");
        let mut two = dir_bytes(&[("ab", 0)]);
        two[8..10].copy_from_slice(&(2 * DIRENT as u16).to_le_bytes());
        assert!(list(&with_root(two.clone(), two.len() as u32)).is_err(), "a second entry past a 14-byte block");
        let mut backwards = dir_bytes(&[("aa", 0), ("b", 0)]);
        backwards[DIRENT + 8..DIRENT + 10].copy_from_slice(&(2 * DIRENT as u16 - 1).to_le_bytes());
        assert!(list(&with_root(backwards.clone(), backwards.len() as u32)).is_err(), "a name ending before it starts");
        let empty = dir_bytes(&[("", 0), ("", 0)]);
        let names = list(&with_root(empty, 2 * DIRENT as u32)).unwrap();
        assert_eq!(names.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["", ""]);
        let one = dir_bytes(&[("", 0)]);
        assert_eq!(list(&with_root(one, DIRENT as u32)).unwrap().len(), 1, "one entry fills a block of its size");
    }

    #[test]
    fn damaged_images_are_errors_not_panics() {
        let img = mkfs(&[], tree);
        let short = img[..1200].to_vec();
        assert!(Erofs::open(&short).unwrap().lookup("/etc/fstab", true).is_err(), "cut short");
        assert!(Erofs::open(&vec![0u8; 4096]).is_err(), "no magic");
        let mut bad = img.clone();
        bad[1024 + 12] = 40;
        assert!(Erofs::open(&bad).is_err(), "block size");
        // Every byte of the metadata's start, flipped: any result but a panic.
        let fs = Erofs::open(&img).unwrap();
        let root = fs.root().unwrap();
        let start = (fs.meta + root.nid * 32) as usize;
        for i in start..start + 4096 {
            let mut b = img.clone();
            b[i] ^= 0xff;
            if let Ok(fs) = Erofs::open(&b) {
                let _ = fs.lookup("/usr/lib/systemd/unit-with-a-long-name-0100.service", true);
                let _ = fs.lookup("/usr/lib/big", true).map(|i| i.map(|i| fs.read(&i, 1 << 16)));
            }
        }
    }
}

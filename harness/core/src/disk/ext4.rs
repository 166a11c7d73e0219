//! A read-only ext2/3/4 reader: superblock, group descriptors, inodes,
//! extent trees and block maps, directories (linear and hashed), symlinks.
//! Enough to find a file by path and read it inside an image that is not
//! mounted (and may be damaged: every inconsistency is an error, never a
//! panic). The journal is not replayed: callers that need a consistent
//! view of a crash state replay it first (e2fsck) on a copy.

use std::io;

use super::{ReadAt, bad, le16, le32};

pub const ROOT_INODE: u32 = 2;

/// The most bytes of one directory read (a directory of some 300000
/// entries): a corrupt size field costs no more memory than this.
const MAX_DIR: u64 = 16 << 20;

pub struct Ext4<'a> {
    disk: &'a dyn ReadAt,
    block_size: u64,
    inodes_per_group: u32,
    inode_size: u64,
    desc_size: u64,
    first_data_block: u64,
    groups: u64,
    inodes_count: u32,
    blocks_count: u64,
    free_blocks: u64,
}

pub use super::Kind;

#[derive(Debug, Clone)]
pub struct Inode {
    pub number: u32,
    pub mode: u16,
    pub size: u64,
    pub uid: u32,
    pub links: u16,
    flags: u32,
    block: [u8; 60],
}

impl Inode {
    pub fn kind(&self) -> Kind {
        Kind::of_mode(self.mode)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub inode: u32,
}

const EXTENTS_FL: u32 = 0x80000;

/// `n * size + plus`, a byte offset from on-disk numbers: an overflow is
/// a damaged filesystem, not a panic (or a wrapped offset in a release
/// build).
fn offset(n: u64, size: u64, plus: u64) -> io::Result<u64> {
    n.checked_mul(size)
        .and_then(|o| o.checked_add(plus))
        .ok_or_else(|| bad(format!("block {n} of {size} bytes is past any disk")))
}
const INLINE_DATA_FL: u32 = 0x1000_0000;

impl<'a> Ext4<'a> {
    pub fn open(disk: &'a dyn ReadAt) -> io::Result<Self> {
        let sb = disk.read_vec(1024, 1024)?;
        if le16(&sb, 56) != 0xEF53 {
            return Err(bad("no ext2/3/4 superblock (magic 0xEF53 missing)"));
        }
        let log = le32(&sb, 24);
        if log > 6 {
            return Err(bad("implausible ext4 block size"));
        }
        let block_size = 1024u64 << log;
        let inodes_per_group = le32(&sb, 40);
        let blocks_per_group = le32(&sb, 32) as u64;
        let rev = le32(&sb, 76);
        let inode_size = if rev == 0 { 128 } else { le16(&sb, 88) as u64 };
        let incompat = le32(&sb, 96);
        let is64 = incompat & 0x80 != 0;
        let desc_size = if is64 { (le16(&sb, 254) as u64).max(32) } else { 32 };
        let mut blocks_count = le32(&sb, 4) as u64;
        if is64 {
            blocks_count |= (le32(&sb, 0x150) as u64) << 32;
        }
        let mut free_blocks = le32(&sb, 12) as u64;
        if is64 {
            free_blocks |= (le32(&sb, 0x158) as u64) << 32;
        }
        let first_data_block = le32(&sb, 20) as u64;
        if inodes_per_group == 0 || blocks_per_group == 0 || !(128..=4096).contains(&inode_size) {
            return Err(bad("implausible ext4 geometry"));
        }
        let groups = (blocks_count - first_data_block.min(blocks_count)).div_ceil(blocks_per_group);
        Ok(Ext4 {
            disk,
            block_size,
            inodes_per_group,
            inode_size,
            desc_size,
            first_data_block,
            groups,
            inodes_count: le32(&sb, 0),
            blocks_count,
            free_blocks: free_blocks.min(blocks_count),
        })
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Free space as the superblock counts it (the blocks reserved for
    /// root included). Exact for a filesystem that was cleanly unmounted
    /// or made by mkfs; the kernel updates it lazily while mounted.
    pub fn free_bytes(&self) -> u64 {
        self.free_blocks.saturating_mul(self.block_size)
    }

    fn read_block(&self, block: u64) -> io::Result<Vec<u8>> {
        if block >= self.blocks_count {
            return Err(bad(format!("block {block} is past the end of the filesystem ({})", self.blocks_count)));
        }
        self.disk.read_vec(offset(block, self.block_size, 0)?, self.block_size as usize)
    }

    pub fn inode(&self, n: u32) -> io::Result<Inode> {
        if n == 0 || n > self.inodes_count {
            return Err(bad(format!("inode {n} out of range")));
        }
        let group = ((n - 1) / self.inodes_per_group) as u64;
        let index = ((n - 1) % self.inodes_per_group) as u64;
        if group >= self.groups {
            return Err(bad(format!("inode {n} is in a group past the end")));
        }
        let desc_off = offset(self.first_data_block + 1, self.block_size, offset(group, self.desc_size, 0)?)?;
        let d = self.disk.read_vec(desc_off, self.desc_size as usize)?;
        let mut table = le32(&d, 8) as u64;
        if self.desc_size >= 64 {
            table |= (le32(&d, 0x28) as u64) << 32;
        }
        let at = offset(table, self.block_size, index * self.inode_size)?;
        let raw = self.disk.read_vec(at, 160.min(self.inode_size as usize))?;
        let mut block = [0u8; 60];
        block.copy_from_slice(&raw[40..100]);
        let size = le32(&raw, 4) as u64 | ((le32(&raw, 108) as u64) << 32);
        Ok(Inode {
            number: n,
            mode: le16(&raw, 0),
            size,
            uid: le16(&raw, 2) as u32 | ((le16(&raw, 120) as u32) << 16),
            links: le16(&raw, 26),
            flags: le32(&raw, 32),
            block,
        })
    }

    /// Physical blocks of a file's logical blocks `0..count`, in order
    /// (0 for a hole or an unwritten extent).
    fn block_list(&self, ino: &Inode, count: u64) -> io::Result<Vec<u64>> {
        let mut out = vec![0u64; count as usize];
        if ino.flags & EXTENTS_FL != 0 {
            self.walk_extents(&ino.block, &mut out, 0)?;
        } else {
            let ptrs: Vec<u64> = ino.block.chunks_exact(4).map(|c| le32(c, 0) as u64).collect();
            for (i, p) in ptrs[..12].iter().enumerate() {
                if (i as u64) < count {
                    out[i] = *p;
                }
            }
            let per = self.block_size / 4;
            let mut next = 12u64;
            for (level, p) in ptrs[12..15].iter().enumerate() {
                self.walk_indirect(*p, level as u32, &mut next, &mut out)?;
                let _ = per;
            }
        }
        Ok(out)
    }

    fn walk_indirect(&self, block: u64, level: u32, next: &mut u64, out: &mut [u64]) -> io::Result<()> {
        let per = self.block_size / 4;
        let span = per.pow(level + 1);
        if *next >= out.len() as u64 {
            return Ok(());
        }
        if block == 0 {
            *next += span;
            return Ok(());
        }
        let b = self.read_block(block)?;
        for c in b.chunks_exact(4) {
            if *next >= out.len() as u64 {
                break;
            }
            let p = le32(c, 0) as u64;
            if level == 0 {
                out[*next as usize] = p;
                *next += 1;
            } else {
                self.walk_indirect(p, level - 1, next, out)?;
            }
        }
        Ok(())
    }

    fn walk_extents(&self, node: &[u8], out: &mut [u64], depth_guard: u32) -> io::Result<()> {
        if depth_guard > 8 || node.len() < 12 || le16(node, 0) != 0xF30A {
            return Err(bad("corrupt extent tree"));
        }
        let entries = le16(node, 2) as usize;
        let depth = le16(node, 6);
        if 12 + entries * 12 > node.len() {
            return Err(bad("extent node overflows its block"));
        }
        for i in 0..entries {
            let e = &node[12 + i * 12..24 + i * 12];
            if depth == 0 {
                let logical = le32(e, 0) as u64;
                let mut len = le16(e, 4) as u64;
                let unwritten = len > 32768;
                if unwritten {
                    len -= 32768;
                }
                let start = ((le16(e, 6) as u64) << 32) | le32(e, 8) as u64;
                for k in 0..len {
                    let l = logical + k;
                    if l < out.len() as u64 {
                        out[l as usize] = if unwritten { 0 } else { start + k };
                    }
                }
            } else {
                let leaf = ((le16(e, 8) as u64) << 32) | le32(e, 4) as u64;
                let child = self.read_block(leaf)?;
                self.walk_extents(&child, out, depth_guard + 1)?;
            }
        }
        Ok(())
    }

    /// The first `limit` bytes of a file or directory.
    pub fn read(&self, ino: &Inode, limit: u64) -> io::Result<Vec<u8>> {
        let want = ino.size.min(limit);
        if ino.flags & INLINE_DATA_FL != 0 {
            if ino.size > 60 {
                return Err(bad("inline data beyond the inode is not supported"));
            }
            return Ok(ino.block[..want as usize].to_vec());
        }
        if ino.kind() == Kind::Symlink && ino.size < 60 && ino.flags & EXTENTS_FL == 0 {
            return Ok(ino.block[..want as usize].to_vec());
        }
        let nblocks = want.div_ceil(self.block_size);
        if nblocks > 1 << 24 {
            return Err(bad("file too large to read here"));
        }
        let blocks = self.block_list(ino, nblocks)?;
        // Grown as read: the size field can say anything.
        let mut out = Vec::with_capacity(want.min(1 << 20) as usize);
        for b in blocks {
            if b == 0 {
                out.resize(out.len() + self.block_size as usize, 0);
            } else {
                out.extend(self.read_block(b)?);
            }
        }
        out.truncate(want as usize);
        Ok(out)
    }

    /// A file's content as a stream, one block at a time (for files too
    /// large to hold in memory: layer blobs, image files).
    pub fn reader<'f>(&'f self, ino: &Inode) -> io::Result<FileReader<'f, 'a>> {
        let inline = ino.flags & INLINE_DATA_FL != 0
            || (ino.kind() == Kind::Symlink && ino.size < 60 && ino.flags & EXTENTS_FL == 0);
        if inline {
            return Ok(FileReader { fs: self, blocks: Vec::new(), next: 0, left: 0, buf: self.read(ino, 60)?, pos: 0 });
        }
        let nblocks = ino.size.div_ceil(self.block_size);
        if nblocks > 1 << 24 {
            return Err(bad("file too large to read here"));
        }
        let blocks = self.block_list(ino, nblocks)?;
        Ok(FileReader { fs: self, blocks, next: 0, left: ino.size, buf: Vec::new(), pos: 0 })
    }

    pub fn list(&self, dir: &Inode) -> io::Result<Vec<DirEntry>> {
        if dir.kind() != Kind::Dir {
            return Err(bad(format!("inode {} is not a directory", dir.number)));
        }
        let data = self.read(dir, MAX_DIR)?;
        let mut out = Vec::new();
        for block in data.chunks(self.block_size as usize) {
            let mut off = 0usize;
            while off + 8 <= block.len() {
                let inode = le32(block, off);
                let rec_len = le16(block, off + 4) as usize;
                let name_len = block[off + 6] as usize;
                if rec_len < 8 || off + rec_len > block.len() {
                    break; // corrupt entry: stop in this block
                }
                if inode != 0 && name_len > 0 && off + 8 + name_len <= block.len() {
                    let name = String::from_utf8_lossy(&block[off + 8..off + 8 + name_len]).into_owned();
                    if name != "." && name != ".." {
                        out.push(DirEntry { name, inode });
                    }
                }
                off += rec_len;
            }
        }
        Ok(out)
    }

    /// Resolve a path (absolute), following symlinks (also relative ones
    /// and a final one unless `follow_last` is false).
    pub fn lookup(&self, path: &str, follow_last: bool) -> io::Result<Option<Inode>> {
        let mut hops = 0;
        self.resolve(path, ROOT_INODE, follow_last, &mut hops)
    }

    fn resolve(&self, path: &str, start: u32, follow_last: bool, hops: &mut u32) -> io::Result<Option<Inode>> {
        let mut stack: Vec<u32> = vec![ROOT_INODE];
        if !path.starts_with('/') && start != ROOT_INODE {
            stack.push(start);
        }
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if *part == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let dir = self.inode(*stack.last().unwrap())?;
            let Some(e) = self.list(&dir)?.into_iter().find(|e| e.name == *part) else { return Ok(None) };
            let ino = self.inode(e.inode)?;
            if ino.kind() == Kind::Symlink && (!last || follow_last) {
                *hops += 1;
                if *hops > 40 {
                    return Err(bad(format!("too many symlinks resolving {path}")));
                }
                let target = String::from_utf8_lossy(&self.read(&ino, 4096)?).into_owned();
                let rest: Vec<&str> = parts[i + 1..].to_vec();
                let base = if target.starts_with('/') {
                    target.clone()
                } else {
                    // Relative to the folder holding the link.
                    let prefix = self.path_of(&stack)?;
                    format!("{prefix}/{target}")
                };
                let full = if rest.is_empty() { base } else { format!("{base}/{}", rest.join("/")) };
                return self.resolve(&full, ROOT_INODE, follow_last, hops);
            }
            if last {
                return Ok(Some(ino));
            }
            if ino.kind() != Kind::Dir {
                return Ok(None);
            }
            stack.push(e.inode);
        }
        Ok(Some(self.inode(*stack.last().unwrap())?))
    }

    /// Path of the folder at the top of a resolution stack (by searching
    /// each parent for its child: folders form a tree).
    fn path_of(&self, stack: &[u32]) -> io::Result<String> {
        let mut parts = Vec::new();
        for w in stack.windows(2) {
            let parent = self.inode(w[0])?;
            let name = self
                .list(&parent)?
                .into_iter()
                .find(|e| e.inode == w[1])
                .map(|e| e.name)
                .ok_or_else(|| bad("folder not found in its parent"))?;
            parts.push(name);
        }
        Ok(format!("/{}", parts.join("/")))
    }
}

/// A file being read block by block ([`Ext4::reader`]).
pub struct FileReader<'f, 'a> {
    fs: &'f Ext4<'a>,
    blocks: Vec<u64>,
    next: usize,
    /// Bytes of the file not yet taken into `buf`.
    left: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl io::Read for FileReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.left == 0 || self.next >= self.blocks.len() {
                return Ok(0);
            }
            let b = self.blocks[self.next];
            self.next += 1;
            let take = self.left.min(self.fs.block_size) as usize;
            self.buf = if b == 0 { vec![0; take] } else { self.fs.read_block(b)? };
            self.buf.truncate(take);
            self.left -= take as u64;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A tree in a real ext4 image made by mkfs.ext4 -d, as the fixture
    /// builder makes them: files of several sizes, a big folder (hashed
    /// directory), absolute and relative symlinks, merged-/usr style.
    #[test]
    fn reads_what_mkfs_wrote() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::create_dir_all(root.join("big")).unwrap();
        let exe: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(root.join("usr/bin/dockerd"), &exe).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), b"\x7fELF-ish").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        for i in 0..600 {
            std::fs::write(root.join(format!("big/file-{i:04}")), format!("{i}")).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/systemd", root.join("sbin/init")).unwrap();
        std::os::unix::fs::symlink("../usr/bin/dockerd", root.join("sbin/dockerd")).unwrap();
        // Over 60 bytes, so the target lives in a data block, not the inode.
        let long = "./".repeat(50);
        std::os::unix::fs::symlink(format!("/usr/{long}bin/../bin/dockerd"), root.join("longlink")).unwrap();
        // Exactly 60 bytes: no longer fits the inode (fast symlinks are < 60).
        let sixty = format!("/usr/bin/{}dockerd", "./".repeat(22));
        assert_eq!(sixty.len(), 60);
        std::os::unix::fs::symlink(&sixty, root.join("link60")).unwrap();
        // `root` made into a 32 MiB ext4 image named `name`, with `features`.
        let mkfs = |name: &str, features: &[&str]| {
            let img = d.path().join(name);
            std::fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
            let ok = Command::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "4096"])
                .args(features)
                .arg("-d")
                .arg(&root)
                .arg(&img)
                .status()
                .expect("mkfs.ext4");
            assert!(ok.success());
            img
        };
        let img = mkfs("fs.img", &[]);
        let f = std::fs::File::open(&img).unwrap();
        let fs = Ext4::open(&f).unwrap();
        assert_eq!(fs.block_size(), 4096, "mkfs -b 4096");
        // As dumpe2fs counts it.
        let o = Command::new("dumpe2fs").arg("-h").arg(&img).output().expect("dumpe2fs");
        let text = String::from_utf8_lossy(&o.stdout);
        let free: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("Free blocks:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("dumpe2fs -h shows Free blocks");
        assert_eq!(fs.free_bytes(), free * 4096);
        assert!(fs.free_bytes() > 0 && fs.free_bytes() < 32 << 20);
        let ino = fs.lookup("/usr/bin/dockerd", true).unwrap().unwrap();
        assert_eq!(ino.size, 300_000);
        assert_eq!(fs.read(&ino, u64::MAX).unwrap(), exe);
        assert_eq!(fs.read(&ino, 10).unwrap(), exe[..10]);
        // Streamed in odd-sized reads, the same bytes.
        let mut streamed = Vec::new();
        let mut r = fs.reader(&ino).unwrap();
        let mut chunk = [0u8; 1000];
        loop {
            let n = std::io::Read::read(&mut r, &mut chunk).unwrap();
            if n == 0 {
                break;
            }
            streamed.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(streamed, exe);
        // Without the extents feature (as ext2/ext3-era tools leave a
        // file), the blocks are mapped directly and through an indirect
        // block: the same bytes.
        let old = mkfs("old.img", &["-O", "^extent,^64bit"]);
        let f2 = std::fs::File::open(&old).unwrap();
        let fs2 = Ext4::open(&f2).unwrap();
        let ino2 = fs2.lookup("/usr/bin/dockerd", true).unwrap().unwrap();
        assert_eq!(ino2.flags & EXTENTS_FL, 0, "a block-mapped file");
        assert_eq!(fs2.read(&ino2, u64::MAX).unwrap(), exe);
        // A 60-byte symlink keeps its target in a (block-mapped) block.
        let l60 = fs2.lookup("/link60", false).unwrap().unwrap();
        assert_eq!((l60.kind(), l60.flags & EXTENTS_FL), (Kind::Symlink, 0));
        assert_eq!(fs2.read(&l60, 100).unwrap(), sixty.as_bytes());
        assert_eq!(fs2.lookup("/link60", true).unwrap().unwrap().number, ino2.number);
        // Through symlinks: relative, absolute, chained.
        assert_eq!(fs.lookup("/bin/dockerd", true).unwrap().unwrap().number, ino.number);
        assert_eq!(fs.lookup("/sbin/dockerd", true).unwrap().unwrap().number, ino.number);
        let init = fs.lookup("/sbin/init", true).unwrap().unwrap();
        assert_eq!(fs.read(&init, 100).unwrap(), b"\x7fELF-ish");
        let mut small = Vec::new();
        std::io::Read::read_to_end(&mut fs.reader(&init).unwrap(), &mut small).unwrap();
        assert_eq!(small, b"\x7fELF-ish");
        assert_eq!(fs.lookup("/sbin/init", false).unwrap().unwrap().kind(), Kind::Symlink);
        assert_eq!(fs.lookup("/longlink", true).unwrap().unwrap().number, ino.number, "slow symlink in a data block");
        // A hashed directory lists every entry.
        let big = fs.lookup("/big", true).unwrap().unwrap();
        let names = fs.list(&big).unwrap();
        assert_eq!(names.len(), 600);
        let f123 = fs.lookup("/big/file-0123", true).unwrap().unwrap();
        assert_eq!(fs.read(&f123, 100).unwrap(), b"123");
        assert_eq!(fs.read(&fs.lookup("/empty", true).unwrap().unwrap(), 100).unwrap(), b"");
        assert!(fs.lookup("/nope/x", true).unwrap().is_none());
        assert!(fs.lookup("/usr/bin/dockerd/x", true).unwrap().is_none(), "a file is not a folder");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Ext4::open(&vec![0u8; 8192]).is_err());
        let mut junk = vec![0xA5u8; 1 << 16];
        junk[1024 + 56] = 0x53;
        junk[1024 + 57] = 0xEF;
        // A superblock magic on garbage: whatever happens, no panic.
        if let Ok(fs) = Ext4::open(&junk) {
            let _ = fs.lookup("/usr/bin/dockerd", true);
            let _ = fs.inode(2).and_then(|i| fs.read(&i, 1 << 20));
        }
    }
}

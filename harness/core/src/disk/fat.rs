//! A read-only FAT12/16/32 reader: enough to list a folder and read a file
//! of an EFI system partition or a Raspberry Pi boot partition. Names match
//! case-insensitively (long names and 8.3 names).

use std::io;

use super::{ReadAt, bad, le16, le32};

/// The most bytes of one directory read: 131072 entries, far beyond any
/// ESP or boot partition.
const MAX_DIR: u64 = 4 << 20;

pub struct Fat<'a> {
    disk: &'a dyn ReadAt,
    bytes_per_sector: u64,
    cluster_bytes: u64,
    fat_offset: u64,
    data_offset: u64,
    root_dir_offset: u64,
    root_dir_len: u64,
    root_cluster: u32,
    kind: u8, // 12, 16 or 32
    clusters: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub size: u32,
    first_cluster: u32,
}

impl<'a> Fat<'a> {
    pub fn open(disk: &'a dyn ReadAt) -> io::Result<Self> {
        let b = disk.read_vec(0, 512)?;
        if b[510] != 0x55 || b[511] != 0xAA {
            return Err(bad("no FAT boot sector signature"));
        }
        let bps = le16(&b, 11) as u64;
        let spc = b[13] as u64;
        let reserved = le16(&b, 14) as u64;
        let fats = b[16] as u64;
        let root_entries = le16(&b, 17) as u64;
        let total = match le16(&b, 19) {
            0 => le32(&b, 32) as u64,
            n => n as u64,
        };
        let fat_sectors = match le16(&b, 22) {
            0 => le32(&b, 36) as u64,
            n => n as u64,
        };
        if !matches!(bps, 512 | 1024 | 2048 | 4096)
            || spc == 0
            || !spc.is_power_of_two()
            || fats == 0
            || fat_sectors == 0
        {
            return Err(bad("not a FAT filesystem (implausible boot sector)"));
        }
        let root_dir_sectors = (root_entries * 32).div_ceil(bps);
        let data_start = reserved + fats * fat_sectors + root_dir_sectors;
        if total <= data_start {
            return Err(bad("FAT filesystem smaller than its metadata"));
        }
        let clusters = ((total - data_start) / spc) as u32;
        let kind = if clusters < 4085 {
            12
        } else if clusters < 65525 {
            16
        } else {
            32
        };
        Ok(Fat {
            disk,
            bytes_per_sector: bps,
            cluster_bytes: bps * spc,
            fat_offset: reserved * bps,
            data_offset: data_start * bps,
            root_dir_offset: (reserved + fats * fat_sectors) * bps,
            root_dir_len: root_dir_sectors * bps,
            root_cluster: if kind == 32 { le32(&b, 44) } else { 0 },
            kind,
            clusters,
        })
    }

    fn next_cluster(&self, c: u32) -> io::Result<Option<u32>> {
        let (v, end) = match self.kind {
            12 => {
                let off = self.fat_offset + (c as u64 * 3) / 2;
                let b = self.disk.read_vec(off, 2)?;
                let v = u16::from_le_bytes([b[0], b[1]]);
                ((if c & 1 == 1 { v >> 4 } else { v & 0xfff }) as u32, 0xff8)
            }
            16 => (le16(&self.disk.read_vec(self.fat_offset + c as u64 * 2, 2)?, 0) as u32, 0xfff8),
            _ => (le32(&self.disk.read_vec(self.fat_offset + c as u64 * 4, 4)?, 0) & 0x0fff_ffff, 0x0fff_fff8),
        };
        Ok(if v >= end || v < 2 { None } else { Some(v) })
    }

    /// The clusters of a chain from `first`, at most `max` of them.
    fn chain(&self, first: u32, max: usize) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut c = first;
        while c >= 2 && c < self.clusters + 2 && out.len() < max {
            out.push(c);
            if out.len() > self.clusters as usize {
                return Err(bad("FAT cluster chain loops"));
            }
            match self.next_cluster(c)? {
                Some(n) => c = n,
                None => break,
            }
        }
        Ok(out)
    }

    fn read_chain(&self, first: u32, limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let max = usize::try_from(limit.div_ceil(self.cluster_bytes.max(1))).unwrap_or(usize::MAX);
        for c in self.chain(first, max)? {
            let off = self.data_offset + (c as u64 - 2) * self.cluster_bytes;
            out.extend(self.disk.read_vec(off, self.cluster_bytes as usize)?);
        }
        Ok(out)
    }

    fn dir_bytes(&self, dir: Option<&Entry>) -> io::Result<Vec<u8>> {
        match dir {
            None if self.kind != 32 => self.disk.read_vec(self.root_dir_offset, self.root_dir_len as usize),
            None => self.read_chain(self.root_cluster, MAX_DIR),
            Some(e) => self.read_chain(e.first_cluster, MAX_DIR),
        }
    }

    /// The entries of a folder (`None`: the root).
    pub fn list(&self, dir: Option<&Entry>) -> io::Result<Vec<Entry>> {
        let bytes = self.dir_bytes(dir)?;
        let mut out = Vec::new();
        let mut lfn: Vec<(u8, Vec<u16>)> = Vec::new();
        for e in bytes.chunks_exact(32) {
            match e[0] {
                0 => break,
                0xE5 => {
                    lfn.clear();
                    continue;
                }
                _ => {}
            }
            let attr = e[11];
            if attr == 0x0F {
                let mut part = Vec::new();
                for range in [1..11, 14..26, 28..32] {
                    part.extend(e[range].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])));
                }
                lfn.push((e[0] & 0x1f, part));
                continue;
            }
            if attr & 0x08 != 0 {
                lfn.clear();
                continue; // volume label
            }
            let short = {
                let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_string();
                let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
                if ext.is_empty() { base } else { format!("{base}.{ext}") }
            };
            let name = if lfn.is_empty() {
                short
            } else {
                lfn.sort_by_key(|(seq, _)| *seq);
                let units: Vec<u16> =
                    lfn.iter().flat_map(|(_, p)| p.iter().copied()).take_while(|u| *u != 0 && *u != 0xffff).collect();
                String::from_utf16_lossy(&units)
            };
            lfn.clear();
            if name == "." || name == ".." {
                continue;
            }
            let hi = if self.kind == 32 { le16(e, 20) as u32 } else { 0 };
            out.push(Entry {
                name,
                is_dir: attr & 0x10 != 0,
                size: le32(e, 28),
                first_cluster: (hi << 16) | le16(e, 26) as u32,
            });
        }
        Ok(out)
    }

    /// Find an entry by path (`EFI/BOOT/BOOTX64.EFI`), case-insensitively.
    pub fn find(&self, path: &str) -> io::Result<Option<Entry>> {
        let mut cur: Option<Entry> = None;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if cur.as_ref().is_some_and(|c| !c.is_dir) {
                return Ok(None);
            }
            match self.list(cur.as_ref())?.into_iter().find(|e| e.name.eq_ignore_ascii_case(part)) {
                Some(e) => cur = Some(e),
                None => return Ok(None),
            }
        }
        Ok(cur)
    }

    /// The first `limit` bytes of a file.
    pub fn read(&self, e: &Entry, limit: usize) -> io::Result<Vec<u8>> {
        let mut v = self.read_chain(e.first_cluster, limit as u64)?;
        v.truncate((e.size as usize).min(limit));
        Ok(v)
    }

    pub fn sector_size(&self) -> u64 {
        self.bytes_per_sector
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A FAT image made by mkfs.vfat and filled by mtools, as the fixture
    /// builder does.
    #[test]
    fn reads_what_mtools_wrote() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("esp.img");
        for (fat, size_k) in [("12", "4096"), ("16", "32768"), ("32", "65536")] {
            let _ = std::fs::remove_file(&img);
            assert!(
                Command::new("mkfs.vfat")
                    .args(["-C", "-F", fat, "-n", "ESP"])
                    .arg(&img)
                    .arg(size_k)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("mkfs.vfat (dosfstools)")
                    .success()
            );
            let payload: Vec<u8> = (0..5000u32).map(|i| (i % 199) as u8).collect();
            let src = d.path().join("BootLoader Long Name.efi");
            std::fs::write(&src, &payload).unwrap();
            let i = format!("{}", img.display());
            for dir in ["::/EFI", "::/EFI/BOOT"] {
                assert!(Command::new("mmd").args(["-i", &i, dir]).status().expect("mtools").success());
            }
            assert!(
                Command::new("mcopy")
                    .args(["-i", &i])
                    .arg(&src)
                    .arg("::/EFI/BOOT/BOOTAA64.EFI")
                    .status()
                    .unwrap()
                    .success()
            );
            assert!(
                Command::new("mcopy")
                    .args(["-i", &i])
                    .arg(&src)
                    .arg("::/EFI/BOOT/Long File Name.bin")
                    .status()
                    .unwrap()
                    .success()
            );
            // Four long-name entries: their parts must go back in order.
            let long = "A name longer than three long-name entries.conf";
            assert!(
                Command::new("mcopy")
                    .args(["-i", &i])
                    .arg(&src)
                    .arg(format!("::/EFI/BOOT/{long}"))
                    .status()
                    .unwrap()
                    .success()
            );
            let disk = std::fs::read(&img).unwrap();
            let fs = Fat::open(&disk).unwrap();
            assert_eq!(fs.kind.to_string(), fat);
            let e = fs.find("efi/boot/bootaa64.efi").unwrap().expect("found case-insensitively");
            assert_eq!(e.size, 5000);
            assert_eq!(fs.read(&e, 1 << 20).unwrap(), payload);
            assert_eq!(fs.read(&e, 100).unwrap(), payload[..100]);
            let names: Vec<String> =
                fs.list(fs.find("EFI/BOOT").unwrap().as_ref()).unwrap().into_iter().map(|e| e.name).collect();
            assert!(names.contains(&"Long File Name.bin".to_string()), "{names:?}");
            assert!(names.contains(&long.to_string()), "{names:?}");
            assert!(fs.find("EFI/nope").unwrap().is_none());
        }
        assert!(Fat::open(&vec![0u8; 4096]).is_err());
    }
}

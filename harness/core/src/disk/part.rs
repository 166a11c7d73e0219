//! MBR and GPT partition tables.

use std::io;

use super::{ReadAt, le32, le64};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartType {
    /// GPT type GUID, canonical text form (uppercase).
    Gpt(String),
    /// MBR partition type byte.
    Mbr(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as Linux numbers them (vda1, vda2, …).
    pub number: u32,
    pub start: u64,
    pub len: u64,
    pub kind: PartType,
    pub name: String,
}

pub const GPT_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const GPT_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
pub const GPT_ROOT_AARCH64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";
pub const GPT_ROOT_ARM: &str = "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3";
pub const GPT_ROOT_X86: &str = "44479540-F297-41B2-9AF7-D131D5F0458A";
pub const GPT_ROOT_RISCV64: &str = "72EC70A6-CF74-40E6-BD49-4BDA08E8F224";
pub const GPT_LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// GUID bytes as GPT stores them (first three fields little-endian).
pub fn guid_text(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// The partitions of a disk: GPT if present (protective MBR), else MBR
/// primaries; an empty list for a bare filesystem.
pub fn partitions(disk: &dyn ReadAt) -> io::Result<Vec<Partition>> {
    if disk.size() < 1024 {
        return Ok(Vec::new());
    }
    let mbr = disk.read_vec(0, 512)?;
    if mbr[510] != 0x55 || mbr[511] != 0xAA {
        return Ok(Vec::new());
    }
    let gpt = disk.read_vec(512, 92)?;
    if &gpt[0..8] == b"EFI PART" {
        let entries_lba = le64(&gpt, 72);
        let count = le32(&gpt, 80).min(1024) as usize;
        let size = le32(&gpt, 84) as usize;
        if !(128..=4096).contains(&size) {
            return Err(super::bad(format!("GPT entry size {size} is implausible")));
        }
        let table = disk.read_vec(entries_lba * 512, count * size)?;
        let mut out = Vec::new();
        for (i, e) in table.chunks_exact(size).enumerate() {
            if e[..16].iter().all(|b| *b == 0) {
                continue;
            }
            let first = le64(e, 32);
            let last = le64(e, 40);
            if last < first {
                continue;
            }
            let name: Vec<u16> =
                e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|c| *c != 0).collect();
            out.push(Partition {
                number: i as u32 + 1,
                start: first * 512,
                len: (last - first + 1) * 512,
                kind: PartType::Gpt(guid_text(&e[0..16])),
                name: String::from_utf16_lossy(&name),
            });
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for i in 0..4 {
        let e = &mbr[446 + i * 16..446 + (i + 1) * 16];
        let kind = e[4];
        let start = le32(e, 8) as u64;
        let sectors = le32(e, 12) as u64;
        // A partition table inside a boot sector of a bare FAT filesystem
        // would be nonsense: require sane, in-range entries.
        if kind == 0 || sectors == 0 || start == 0 || (start + sectors) * 512 > disk.size() {
            continue;
        }
        out.push(Partition {
            number: i as u32 + 1,
            start: start * 512,
            len: sectors * 512,
            kind: PartType::Mbr(kind),
            name: String::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// A 64 MiB disk of zeros partitioned by sfdisk from `script`.
    pub(crate) fn sfdisk(script: &str) -> Vec<u8> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.raw");
        std::fs::File::create(&p).unwrap().set_len(64 << 20).unwrap();
        let mut c = Command::new("sfdisk")
            .arg("--quiet")
            .arg(&p)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sfdisk (Debian package fdisk)");
        use std::io::Write;
        c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success());
        std::fs::read(&p).unwrap()
    }

    #[test]
    fn gpt_as_sfdisk_writes_it() {
        let disk = sfdisk(&format!(
            "label: gpt\nstart=2048, size=16384, type={GPT_ESP}, name=\"ESP\"\nstart=18432, type={GPT_ROOT_AARCH64}, name=\"root\"\n"
        ));
        let p = partitions(&disk).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0],
            Partition {
                number: 1,
                start: 2048 * 512,
                len: 16384 * 512,
                kind: PartType::Gpt(GPT_ESP.into()),
                name: "ESP".into()
            }
        );
        assert_eq!(p[1].kind, PartType::Gpt(GPT_ROOT_AARCH64.into()));
        assert_eq!(p[1].number, 2);
    }

    #[test]
    fn mbr_as_sfdisk_writes_it() {
        let disk = sfdisk("label: dos\nstart=2048, size=8192, type=c\nstart=10240, type=83\n");
        let p = partitions(&disk).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].kind.clone(), p[0].start), (PartType::Mbr(0x0c), 2048 * 512));
        assert_eq!(p[1].kind, PartType::Mbr(0x83));
    }

    #[test]
    fn bare_filesystems_and_garbage_have_no_partitions() {
        assert!(partitions(&vec![0u8; 4096]).unwrap().is_empty());
        assert!(partitions(&vec![0xffu8; 100]).unwrap().is_empty());
    }
}

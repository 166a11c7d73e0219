//! The architecture an executable or a kernel image is for, from its
//! header: ELF `e_machine`, PE `Machine`, x86 bzImage setup header, arm64
//! Image magic, arm64 EFI zboot, gzip-compressed Image.

use std::io::Read;

use airboot_model::Arch;

/// What a header says, in words for evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `None`: a known format for an architecture airboot cannot run.
    pub arch: Option<Arch>,
    pub what: String,
}

fn machine_name(arch: Option<Arch>, raw: &str) -> String {
    match arch {
        Some(a) => a.to_string(),
        None => raw.to_string(),
    }
}

pub fn elf(b: &[u8]) -> Option<Found> {
    if b.len() < 20 || &b[0..4] != b"\x7fELF" {
        return None;
    }
    let m = if b[5] == 2 { u16::from_be_bytes([b[18], b[19]]) } else { u16::from_le_bytes([b[18], b[19]]) };
    let (arch, raw) = match m {
        0x3E => (Some(Arch::X86_64), "x86_64"),
        0xB7 => (Some(Arch::Aarch64), "aarch64"),
        0x03 => (None, "i386"),
        0x28 => (None, "32-bit arm"),
        0xF3 => (None, "riscv"),
        _ => (None, "an unknown machine"),
    };
    Some(Found { arch, what: format!("ELF e_machine {m:#x} ({})", machine_name(arch, raw)) })
}

pub fn pe(b: &[u8]) -> Option<Found> {
    if b.len() < 0x40 || &b[0..2] != b"MZ" {
        return None;
    }
    let off = u32::from_le_bytes([b[0x3C], b[0x3D], b[0x3E], b[0x3F]]) as usize;
    if off + 6 > b.len() || &b[off..off + 4] != b"PE\0\0" {
        return None;
    }
    let m = u16::from_le_bytes([b[off + 4], b[off + 5]]);
    let (arch, raw) = match m {
        0x8664 => (Some(Arch::X86_64), "x86_64"),
        0xAA64 => (Some(Arch::Aarch64), "aarch64"),
        0x014C => (None, "i386"),
        0x01C4 => (None, "32-bit arm"),
        0x5064 => (None, "riscv64"),
        _ => (None, "an unknown machine"),
    };
    Some(Found { arch, what: format!("PE Machine {m:#06x} ({})", machine_name(arch, raw)) })
}

/// A Linux kernel image as QEMU's `-kernel` or a boot loader takes it.
pub fn kernel(b: &[u8]) -> Option<Found> {
    if b.len() >= 0x240 && &b[0x202..0x206] == b"HdrS" {
        return Some(Found { arch: Some(Arch::X86_64), what: "x86 bzImage setup header (HdrS)".into() });
    }
    if b.len() >= 0x40 && &b[0x38..0x3C] == b"ARM\x64" {
        return Some(Found { arch: Some(Arch::Aarch64), what: "arm64 Image header (magic ARM\\x64)".into() });
    }
    if b.len() >= 0x40 && &b[0..2] == b"MZ" && &b[4..8] == b"zimg" {
        return Some(Found { arch: Some(Arch::Aarch64), what: "arm64 EFI zboot image (compressed Image)".into() });
    }
    if b.len() > 2 && b[0] == 0x1f && b[1] == 0x8b {
        let mut head = Vec::new();
        let _ = flate2::read::GzDecoder::new(b).take(0x40).read_to_end(&mut head);
        if head.len() >= 0x40 && &head[0x38..0x3C] == b"ARM\x64" {
            return Some(Found { arch: Some(Arch::Aarch64), what: "gzip-compressed arm64 Image".into() });
        }
        return None;
    }
    pe(b).or_else(|| elf(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[5] = 1;
        e[18] = 0xB7;
        assert_eq!(elf(&e).unwrap().arch, Some(Arch::Aarch64));
        e[18] = 0x3E;
        assert_eq!(elf(&e).unwrap().arch, Some(Arch::X86_64));
        e[18] = 0x28;
        let f = elf(&e).unwrap();
        assert_eq!(f.arch, None);
        assert!(f.what.contains("32-bit arm"));
        // Each machine a user may build for by mistake is named.
        for (m, name) in [(0x03u8, "i386"), (0xF3, "riscv"), (0x99, "an unknown machine")] {
            e[18] = m;
            let f = elf(&e).unwrap();
            assert_eq!(f.arch, None);
            assert!(f.what.contains(name), "{m:#x}: {}", f.what);
        }

        let mut p = vec![0u8; 0x100];
        p[..2].copy_from_slice(b"MZ");
        p[0x3C] = 0x80;
        p[0x80..0x84].copy_from_slice(b"PE\0\0");
        p[0x84..0x86].copy_from_slice(&0xAA64u16.to_le_bytes());
        assert_eq!(pe(&p).unwrap().arch, Some(Arch::Aarch64));
        assert_eq!(kernel(&p).unwrap().arch, Some(Arch::Aarch64));
        let mut z = p.clone();
        z[4..8].copy_from_slice(b"zimg");
        assert!(kernel(&z).unwrap().what.contains("zboot"));

        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(kernel(&bz).unwrap().arch, Some(Arch::X86_64));

        let mut img = vec![0u8; 0x80];
        img[0x38..0x3C].copy_from_slice(b"ARM\x64");
        assert_eq!(kernel(&img).unwrap().arch, Some(Arch::Aarch64));
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            enc.write_all(&img).unwrap();
        }
        assert!(kernel(&gz).unwrap().what.contains("gzip"));
        assert_eq!(kernel(b"plain text"), None);
    }

    /// The host's own programs are ELF for the host's architecture.
    #[test]
    fn the_host_shell() {
        let b = std::fs::read("/bin/sh").unwrap();
        let b = b[..64.min(b.len())].to_vec();
        assert_eq!(elf(&b).unwrap().arch, Arch::host());
    }
}

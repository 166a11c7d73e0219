//! Images as they leave a build: compressed (`.gz`, `.xz`, `.zst`, `.bz2`)
//! or in a format airboot does not read itself (`.vmdk`). Told by their
//! first bytes, never by their name alone; unpacked once by a kept tool
//! (`airboot_qemu::unpack`) into a cache keyed by the input's sha256.

/// How an input image is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    /// A VMware sparse disk: converted to qcow2 with `qemu-img convert`.
    Vmdk,
}

impl Packing {
    pub fn as_str(self) -> &'static str {
        match self {
            Packing::Gzip => "gzip",
            Packing::Xz => "xz",
            Packing::Zstd => "zstd",
            Packing::Bzip2 => "bzip2",
            Packing::Vmdk => "vmdk",
        }
    }

    /// The program that unpacks it, its arguments (input on stdin, output
    /// on stdout for the compressors), and the Debian package it is in.
    pub fn tool(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Packing::Gzip => ("gzip", &["-dc"], "gzip"),
            Packing::Xz => ("xz", &["-dc"], "xz-utils"),
            Packing::Zstd => ("zstd", &["-dc"], "zstd"),
            Packing::Bzip2 => ("bzip2", &["-dc"], "bzip2"),
            Packing::Vmdk => ("qemu-img", &["convert", "-O", "qcow2"], "qemu-utils"),
        }
    }

    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Packing::Gzip => &[".gz", ".gzip"],
            Packing::Xz => &[".xz"],
            Packing::Zstd => &[".zst", ".zstd"],
            Packing::Bzip2 => &[".bz2"],
            Packing::Vmdk => &[".vmdk"],
        }
    }
}

/// The packing of a file from its first bytes (at least 6 are needed);
/// `None` for a raw or qcow2 disk, which airboot boots as it is.
pub fn detect(head: &[u8]) -> Option<Packing> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Packing::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Packing::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Packing::Zstd)
    } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        Some(Packing::Bzip2)
    } else if head.starts_with(b"KDMV") {
        Some(Packing::Vmdk)
    } else {
        None
    }
}

/// The unpacked file's name: `core-image.wic.zst` → `core-image.wic`,
/// `disk.vmdk` → `disk.qcow2`; a name without the suffix gets `.raw`.
pub fn unpacked_name(file_name: &str, p: Packing) -> String {
    let lower = file_name.to_ascii_lowercase();
    let stem = p
        .suffixes()
        .iter()
        .find(|s| lower.ends_with(*s) && lower.len() > s.len())
        .map(|s| &file_name[..file_name.len() - s.len()]);
    match (p, stem) {
        (Packing::Vmdk, Some(stem)) => format!("{stem}.qcow2"),
        (Packing::Vmdk, None) => format!("{file_name}.qcow2"),
        (_, Some(stem)) => stem.to_string(),
        (_, None) => format!("{file_name}.raw"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packings_are_told_by_their_magic() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0, 0, 0]), Some(Packing::Gzip));
        assert_eq!(detect(b"\xfd7zXZ\0\0\x04"), Some(Packing::Xz));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0x24, 0]), Some(Packing::Zstd));
        assert_eq!(detect(b"BZh91AY&SY"), Some(Packing::Bzip2));
        assert_eq!(detect(b"KDMV\x01\0\0\0"), Some(Packing::Vmdk));
        // Disks airboot reads itself, and near misses.
        assert_eq!(detect(b"QFI\xfb\0\0\0\x03"), None);
        assert_eq!(detect(&[0u8; 512]), None);
        assert_eq!(detect(b"BZhX"), None);
        assert_eq!(detect(&[0x1f]), None);
        assert_eq!(detect(b""), None);
    }

    /// Each compressor's tool, run as airboot runs it (input on stdin,
    /// output on stdout), gives back what the compressor packed; the
    /// package named is the one the tool is in.
    #[test]
    fn each_tool_unpacks_its_own_packing() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let text = b"airboot unpacks what the build left\n".repeat(100);
        for p in [Packing::Gzip, Packing::Xz, Packing::Zstd, Packing::Bzip2] {
            let (tool, args, package) = p.tool();
            let packed = {
                let mut c = Command::new(tool).arg("-c").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
                c.stdin.take().unwrap().write_all(&text).unwrap();
                c.wait_with_output().unwrap().stdout
            };
            assert_eq!(detect(&packed), Some(p), "{tool} -c makes {p:?}");
            let mut c = Command::new(tool)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{tool} (Debian package {package}): {e}"));
            c.stdin.take().unwrap().write_all(&packed).unwrap();
            assert_eq!(c.wait_with_output().unwrap().stdout, text, "{tool} {args:?}");
            let dpkg = Command::new("dpkg").args(["-S", &format!("bin/{tool}")]).output().unwrap();
            assert!(String::from_utf8_lossy(&dpkg.stdout).contains(&format!("{package}:")), "{tool} is in {package}");
        }
        assert_eq!(Packing::Vmdk.tool().0, "qemu-img");
    }

    #[test]
    fn unpacked_names_drop_the_suffix() {
        assert_eq!(unpacked_name("core-image.wic.zst", Packing::Zstd), "core-image.wic");
        assert_eq!(unpacked_name("sdcard.img.XZ", Packing::Xz), "sdcard.img");
        assert_eq!(unpacked_name("disk.raw.gz", Packing::Gzip), "disk.raw");
        assert_eq!(unpacked_name("appliance.vmdk", Packing::Vmdk), "appliance.qcow2");
        assert_eq!(unpacked_name("download", Packing::Bzip2), "download.raw");
        assert_eq!(unpacked_name(".gz", Packing::Gzip), ".gz.raw");
    }
}

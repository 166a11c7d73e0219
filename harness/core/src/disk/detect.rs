//! Telling an image's architecture before QEMU starts, without mounting
//! it: from the GPT root partition type, the PE machine of the EFI loader
//! at the removable-media path, a Raspberry Pi-style boot partition, the
//! ELF machine of the engine or init in a root filesystem, and the kernel
//! image for direct boot. Wrong-architecture boots are silent or
//! misleading (an x86 kernel under qemu-system-aarch64 prints nothing; an
//! arm64 disk under OVMF drops to `Shell>`), so airboot refuses them up
//! front with the evidence.

use std::path::Path;

use super::ext4::{Ext4, Kind};
use super::fat::Fat;
use super::part::{self, PartType, Partition};
use super::{ReadAt, Slice, exe};
use crate::scenario::Arch;

/// One thing that says what architecture the image is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub arch: Option<Arch>,
    pub what: String,
}

/// Executables whose ELF header tells the root filesystem's architecture.
const PROBES: &[&str] = &[
    "/usr/bin/dockerd",
    "/usr/sbin/dockerd",
    "/usr/bin/containerd",
    "/usr/lib/systemd/systemd",
    "/sbin/init",
    "/bin/busybox",
    "/bin/sh",
];

fn in_ext4(fs_view: &dyn ReadAt, label: &str) -> Option<Evidence> {
    let fs = Ext4::open(fs_view).ok()?;
    for p in PROBES {
        if let Ok(Some(ino)) = fs.lookup(p, true)
            && ino.kind() == Kind::File
            && let Ok(head) = fs.read(&ino, 64)
            && let Some(f) = exe::elf(&head)
        {
            return Some(Evidence { arch: f.arch, what: format!("{p} in {label} is {}", f.what) });
        }
    }
    None
}

fn in_esp(view: &dyn ReadAt, label: &str) -> Vec<Evidence> {
    let Ok(fat) = Fat::open(view) else { return Vec::new() };
    let mut out = Vec::new();
    for name in [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/BOOT/BOOTAA64.EFI",
        "EFI/BOOT/BOOTIA32.EFI",
        "EFI/BOOT/BOOTARM.EFI",
        "EFI/BOOT/BOOTRISCV64.EFI",
    ] {
        if let Ok(Some(e)) = fat.find(name)
            && let Ok(head) = fat.read(&e, 4096)
        {
            match exe::pe(&head) {
                Some(f) => out.push(Evidence { arch: f.arch, what: format!("{name} in {label} is {}", f.what) }),
                None => out.push(Evidence { arch: None, what: format!("{name} in {label} is not a PE executable") }),
            }
        }
    }
    // Raspberry Pi-style boot partitions name their kernel by architecture.
    for (name, arch) in [
        ("kernel_2712.img", Some(Arch::Aarch64)),
        ("kernel8.img", Some(Arch::Aarch64)),
        ("kernel7l.img", None),
        ("kernel7.img", None),
    ] {
        if let Ok(Some(_)) = fat.find(name) {
            let what = match arch {
                Some(a) => format!("{label} is a Raspberry Pi boot partition with {name} ({a})"),
                None => format!("{label} is a Raspberry Pi boot partition with {name} (32-bit arm)"),
            };
            out.push(Evidence { arch, what });
        }
    }
    out
}

/// Everything the disk says about its architecture.
pub fn disk_evidence(disk: &dyn ReadAt) -> Vec<Evidence> {
    let mut out = Vec::new();
    let parts: Vec<Partition> = part::partitions(disk).unwrap_or_default();
    if parts.is_empty() {
        if let Some(e) = in_ext4(disk, "the root filesystem") {
            out.push(e);
        }
        out.extend(in_esp(disk, "the FAT filesystem"));
        return out;
    }
    for p in &parts {
        let label = format!("partition {}", p.number);
        let view = Slice { inner: disk, start: p.start, len: p.len };
        if let PartType::Gpt(g) = &p.kind {
            let arch = match g.as_str() {
                part::GPT_ROOT_X86_64 => Some(Some(Arch::X86_64)),
                part::GPT_ROOT_AARCH64 => Some(Some(Arch::Aarch64)),
                part::GPT_ROOT_ARM | part::GPT_ROOT_X86 | part::GPT_ROOT_RISCV64 => Some(None),
                _ => None,
            };
            if let Some(a) = arch {
                let name = match a {
                    Some(a) => format!("Linux root ({a})"),
                    None => "Linux root for an architecture airboot cannot run".to_string(),
                };
                out.push(Evidence { arch: a, what: format!("GPT type of {label} is {g} ({name})") });
            }
        }
        out.extend(in_esp(&view, &label));
        if let Some(e) = in_ext4(&view, &label) {
            out.push(e);
        }
    }
    out
}

/// What a direct-boot kernel file says.
pub fn kernel_evidence(path: &Path) -> Option<Evidence> {
    let f = std::fs::File::open(path).ok()?;
    let head = f.read_vec(0, 4096.min(f.size() as usize)).ok()?;
    // A gzip-compressed Image needs more than its first 4 KiB to inflate the header.
    let head = if head.first() == Some(&0x1f) { f.read_vec(0, (1 << 16).min(f.size() as usize)).ok()? } else { head };
    exe::kernel(&head).map(|k| Evidence { arch: k.arch, what: format!("the kernel {} is {}", path.display(), k.what) })
}

/// The verdict: one architecture all evidence agrees on, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Known(Arch),
    Unknown,
    /// Evidence names an architecture airboot has no emulator for.
    Unsupported(String),
    Conflict(String),
}

pub fn judge(evidence: &[Evidence]) -> Verdict {
    if let Some(e) = evidence.iter().find(|e| e.arch.is_none()) {
        return Verdict::Unsupported(e.what.clone());
    }
    let mut archs: Vec<Arch> = evidence.iter().filter_map(|e| e.arch).collect();
    archs.sort();
    archs.dedup();
    match archs.as_slice() {
        [] => Verdict::Unknown,
        [a] => Verdict::Known(*a),
        _ => Verdict::Conflict(evidence.iter().map(|e| e.what.clone()).collect::<Vec<_>>().join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(arch: Option<Arch>, what: &str) -> Evidence {
        Evidence { arch, what: what.into() }
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(&[]), Verdict::Unknown);
        assert_eq!(judge(&[ev(Some(Arch::Aarch64), "a"), ev(Some(Arch::Aarch64), "b")]), Verdict::Known(Arch::Aarch64));
        assert!(
            matches!(judge(&[ev(Some(Arch::Aarch64), "a"), ev(Some(Arch::X86_64), "b")]), Verdict::Conflict(w) if w.contains("a; b"))
        );
        assert!(
            matches!(judge(&[ev(None, "riscv"), ev(Some(Arch::X86_64), "b")]), Verdict::Unsupported(w) if w == "riscv")
        );
    }

    /// A whole ext4 disk whose /usr/bin/dockerd is this host's own shell:
    /// the detector must call it this host's architecture.
    #[test]
    fn a_bare_root_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::copy("/bin/sh", root.join("usr/bin/dockerd")).unwrap();
        let img = d.path().join("disk.raw");
        std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
        assert!(
            std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(&root)
                .arg(&img)
                .status()
                .unwrap()
                .success()
        );
        let f = std::fs::File::open(&img).unwrap();
        let e = disk_evidence(&f);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].what.starts_with("/usr/bin/dockerd in the root filesystem is ELF"), "{}", e[0].what);
        assert_eq!(judge(&e), Verdict::Known(Arch::host().unwrap()));
        assert_eq!(judge(&disk_evidence(&vec![0u8; 1 << 20])), Verdict::Unknown);
    }
}

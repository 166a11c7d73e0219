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
use airboot_model::{Arch, BootMode, FailureCode};

use crate::platform::qemu_system;

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
    "/usr/bin/podman",
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

/// How firmware would boot a whole disk, for a scenario that does not
/// say: an EFI system partition with a loader means `uefi`, x86 boot code
/// in the MBR means `bios` (x86_64 only). `Err` says what was looked for.
pub fn boot_path(disk: &dyn ReadAt, arch: Arch) -> Result<(BootMode, String), String> {
    let parts: Vec<Partition> = part::partitions(disk).unwrap_or_default();
    for p in &parts {
        let view = Slice { inner: disk, start: p.start, len: p.len };
        if let Some(e) =
            in_esp(&view, &format!("partition {}", p.number)).into_iter().find(|e| e.what.contains("EFI/BOOT/"))
        {
            return Ok((BootMode::Uefi, format!("{} (an EFI system partition with a loader)", e.what)));
        }
    }
    let mbr = disk.read_vec(0, 512.min(disk.size() as usize)).unwrap_or_default();
    if mbr.len() == 512 && mbr[510] == 0x55 && mbr[511] == 0xAA && mbr[..440].iter().any(|b| *b != 0) {
        if arch != Arch::X86_64 {
            return Err(format!(
                "the disk has x86 BIOS boot code in its MBR, but it is for {arch}: BIOS boot is x86_64 only"
            ));
        }
        let code = &mbr[..440];
        let has = |s: &[u8]| code.windows(s.len()).any(|w| w == s);
        let loader = if has(b"GRUB") {
            "GRUB's boot.img"
        } else if has(b"Missing operating system") || has(b"SYSLINUX") || has(b"Operating system load") {
            "syslinux's mbr.bin (syslinux/extlinux)"
        } else {
            "boot code"
        };
        return Ok((
            BootMode::Bios,
            format!("the MBR holds {loader} (boot signature 55 AA, no EFI loader on the disk)"),
        ));
    }
    Err("no EFI system partition with a loader at EFI/BOOT/ and no boot code in the MBR".into())
}

/// Loader configurations a device image's boot partition carries, with
/// the lines that hold the kernel command line.
/// (`grub/grub.cfg`: GRUB's on a `/boot` partition of its own.)
const LOADER_CONFIGS: [&str; 7] = [
    "syslinux.cfg",
    "syslinux/syslinux.cfg",
    "extlinux.conf",
    "extlinux/extlinux.conf",
    "boot/extlinux/extlinux.conf",
    "boot/grub/grub.cfg",
    "grub/grub.cfg",
];

/// The partition number a `root=` argument names (`/dev/vda2`,
/// `/dev/sda2`, `/dev/nvme0n1p2`, `/dev/mmcblk0p2`); `None` for a
/// whole disk, a UUID or label, or no `root=`.
pub fn root_arg_partition(cmdline: &str) -> Option<u32> {
    let dev = cmdline.split_whitespace().rev().find_map(|a| a.strip_prefix("root="))?;
    let name = dev.strip_prefix("/dev/")?;
    let num = if name.starts_with("nvme") || name.starts_with("mmcblk") {
        name.rsplit_once('p')?.1
    } else {
        let i = name.find(|c: char| c.is_ascii_digit())?;
        let (base, n) = name.split_at(i);
        if base.is_empty() {
            return None;
        }
        n
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse().ok()
}

/// The root partition the image's own boot loader names: `root=` in a
/// syslinux/extlinux/GRUB configuration found on a FAT or ext4 partition.
/// The number, and where it was said.
pub fn loader_root(disk: &dyn ReadAt) -> Option<(u32, String)> {
    let parts: Vec<Partition> = part::partitions(disk).unwrap_or_default();
    for p in &parts {
        let view = Slice { inner: disk, start: p.start, len: p.len };
        let mut texts: Vec<(String, Vec<u8>)> = Vec::new();
        if let Ok(fat) = Fat::open(&view) {
            for name in LOADER_CONFIGS {
                if let Ok(Some(e)) = fat.find(name)
                    && let Ok(b) = fat.read(&e, 1 << 16)
                {
                    texts.push((name.to_string(), b));
                }
            }
        } else if let Ok(fs) = Ext4::open(&view) {
            for name in LOADER_CONFIGS {
                if let Ok(Some(ino)) = fs.lookup(&format!("/{name}"), true)
                    && ino.kind() == Kind::File
                    && let Ok(b) = fs.read(&ino, 1 << 16)
                {
                    texts.push((name.to_string(), b));
                }
            }
        }
        for (name, b) in texts {
            let text = String::from_utf8_lossy(&b);
            for line in text.lines() {
                if line.contains("root=")
                    && let Some(n) = root_arg_partition(line)
                {
                    return Some((n, format!("root= in {name} on partition {}", p.number)));
                }
            }
        }
    }
    None
}

/// What kind of filesystem starts at the view, for a partition airboot
/// cannot write into: `erofs`, `squashfs`, or `None`.
pub fn read_only_fs(view: &dyn ReadAt) -> Option<&'static str> {
    let sb = view.read_vec(0, 1028.min(view.size() as usize)).ok()?;
    if sb.len() >= 4 && &sb[..4] == b"hsqs" {
        return Some("squashfs");
    }
    if sb.len() >= 1028 && sb[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
        return Some("erofs");
    }
    None
}

/// The partition holding the root filesystem, for booting a board image's
/// userspace with another kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPartition {
    /// 1-based, as Linux numbers it (`/dev/vda<number>`); 0 for a disk that
    /// is a filesystem with no partition table.
    pub number: u32,
    /// Where it is on the disk, in bytes.
    pub start: u64,
    pub len: u64,
    pub why: String,
}

/// Find the root filesystem: a GPT partition typed as Linux root for
/// `arch` if there is one, else the largest ext4 partition holding an init
/// or a container engine (a Raspberry Pi image's second partition).
pub fn root_partition(disk: &dyn ReadAt, arch: Arch) -> Option<RootPartition> {
    let parts: Vec<Partition> = part::partitions(disk).unwrap_or_default();
    if parts.is_empty() {
        return in_ext4(disk, "the disk").map(|e| RootPartition {
            number: 0,
            start: 0,
            len: disk.size(),
            why: format!("the whole disk, an ext4 filesystem with no partition table ({})", e.what),
        });
    }
    let wanted = match arch {
        Arch::X86_64 => part::GPT_ROOT_X86_64,
        Arch::Aarch64 => part::GPT_ROOT_AARCH64,
    };
    if let Some(p) = parts.iter().find(|p| matches!(&p.kind, PartType::Gpt(g) if g.as_str() == wanted)) {
        return Some(RootPartition {
            number: p.number,
            start: p.start,
            len: p.len,
            why: format!("partition {} has the GPT type of a Linux root for {arch}", p.number),
        });
    }
    let mut best: Option<(u64, RootPartition)> = None;
    for p in &parts {
        let view = Slice { inner: disk, start: p.start, len: p.len };
        if let Some(e) = in_ext4(&view, &format!("partition {}", p.number))
            && best.as_ref().is_none_or(|(len, _)| p.len > *len)
        {
            best = Some((
                p.len,
                RootPartition {
                    number: p.number,
                    start: p.start,
                    len: p.len,
                    why: format!("{} (an ext4 root filesystem)", e.what),
                },
            ));
        }
    }
    best.map(|b| b.1)
}

/// What a direct-boot kernel (`path`, read through `f`) says.
pub fn kernel_evidence(path: &Path, f: &dyn ReadAt) -> Option<Evidence> {
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

/// Why a scenario's image cannot be booted as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchError {
    /// `wrong-arch` (the image is for another architecture than asked),
    /// `unknown-arch` (nothing tells, and the scenario does not say),
    /// `conflicting-arch` or `unsupported-arch`.
    pub code: FailureCode,
    pub message: String,
    /// The evidence, one item per line.
    pub evidence: String,
}

fn evidence_text(evidence: &[Evidence]) -> String {
    if evidence.is_empty() {
        return "nothing in the image names an architecture".into();
    }
    evidence.iter().map(|e| e.what.as_str()).collect::<Vec<_>>().join("\n")
}

/// The architecture to boot: what the scenario asks (`requested`, from
/// `machine.arch`) checked against what the image says. Asking for an
/// emulator the image was not built for is an error naming the detected
/// architecture, its evidence, and the emulator to use; an image nothing
/// in which names an architecture is accepted only when the scenario says.
pub fn decide(requested: Option<Arch>, evidence: &[Evidence]) -> Result<Arch, ArchError> {
    let text = evidence_text(evidence);
    match (judge(evidence), requested) {
        (Verdict::Known(found), Some(asked)) if found != asked => Err(ArchError {
            code: FailureCode::WrongArch,
            message: format!(
                "the image is for {found}, but the scenario asks for {asked} ({}): booting it would hang silently or fail misleadingly. Use {} (set `arch = \"{found}\"` under [machine], or remove `arch` to use the detected one)",
                qemu_system(asked),
                qemu_system(found)
            ),
            evidence: text,
        }),
        (Verdict::Known(found), _) => Ok(found),
        (Verdict::Unknown, Some(asked)) => Ok(asked),
        (Verdict::Unknown, None) => Err(ArchError {
            code: FailureCode::UnknownArch,
            message: "cannot tell the image's architecture (no GPT root partition type, no EFI loader at EFI/BOOT/, no ELF engine or init in an ext4 root filesystem, no kernel that says): set `arch = \"x86_64\"` or `arch = \"aarch64\"` under [machine]".into(),
            evidence: text,
        }),
        (Verdict::Unsupported(what), _) => Err(ArchError {
            code: FailureCode::UnsupportedArch,
            message: format!(
                "the image is for an architecture airboot cannot emulate ({what}): airboot runs x86_64 (qemu-system-x86_64) and aarch64 (qemu-system-aarch64) images"
            ),
            evidence: text,
        }),
        (Verdict::Conflict(_), Some(asked)) if evidence.iter().any(|e| e.arch == Some(asked)) => Ok(asked),
        (Verdict::Conflict(_), _) => Err(ArchError {
            code: FailureCode::ConflictingArch,
            message: "the image's parts name different architectures (see the evidence): set `arch` under [machine] to the one the device boots".into(),
            evidence: text,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_name_the_detected_arch_its_evidence_and_the_emulator() {
        let arm = [ev(Some(Arch::Aarch64), "/usr/bin/dockerd in partition 2 is ELF aarch64")];
        assert_eq!(decide(None, &arm), Ok(Arch::Aarch64));
        assert_eq!(decide(Some(Arch::Aarch64), &arm), Ok(Arch::Aarch64));
        let e = decide(Some(Arch::X86_64), &arm).unwrap_err();
        assert_eq!(e.code, FailureCode::WrongArch);
        assert!(e.message.contains("the image is for aarch64"), "{}", e.message);
        assert!(e.message.contains("Use qemu-system-aarch64"), "{}", e.message);
        assert!(e.message.contains("asks for x86_64 (qemu-system-x86_64)"), "{}", e.message);
        assert_eq!(e.evidence, "/usr/bin/dockerd in partition 2 is ELF aarch64");
        assert_eq!(decide(Some(Arch::X86_64), &[]), Ok(Arch::X86_64), "nothing says otherwise");
        let e = decide(None, &[]).unwrap_err();
        assert_eq!(e.code, FailureCode::UnknownArch);
        assert!(e.message.contains("[machine]"));
        let mixed = [ev(Some(Arch::Aarch64), "a"), ev(Some(Arch::X86_64), "b")];
        assert_eq!(decide(None, &mixed).unwrap_err().code, FailureCode::ConflictingArch);
        assert_eq!(decide(Some(Arch::X86_64), &mixed), Ok(Arch::X86_64), "the user settles a conflict");
        assert_eq!(
            decide(Some(Arch::X86_64), &[ev(None, "riscv64 root")]).unwrap_err().code,
            FailureCode::UnsupportedArch
        );
    }

    #[test]
    fn root_arguments_name_partitions() {
        for (cmdline, want) in [
            ("console=ttyS0 root=/dev/vda2 ro", Some(2)),
            ("root=/dev/sda1", Some(1)),
            ("root=/dev/nvme0n1p3 rw", Some(3)),
            ("root=/dev/mmcblk0p2 rootwait", Some(2)),
            ("root=/dev/vda", None),
            ("root=/dev/nvme0n1", None),
            ("root=PARTUUID=1234-02", None),
            ("root=LABEL=root", None),
            ("quiet splash", None),
            ("root=/dev/vda1 root=/dev/vda3", Some(3)),
        ] {
            assert_eq!(root_arg_partition(cmdline), want, "{cmdline}");
        }
    }

    #[test]
    fn read_only_filesystems_are_told_by_their_magic() {
        let mut sq = vec![0u8; 4096];
        sq[..4].copy_from_slice(b"hsqs");
        assert_eq!(read_only_fs(&sq), Some("squashfs"));
        let mut e = vec![0u8; 4096];
        e[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(read_only_fs(&e), Some("erofs"));
        assert_eq!(read_only_fs(&vec![0u8; 4096]), None);
    }

    /// A disk of one partition holding `files` in `fs` (`vfat` or `ext4`),
    /// built with sfdisk, mkfs and mtools as the device builders do.
    fn one_partition_disk(dir: &std::path::Path, fs: &str, files: &[(&str, &str)]) -> Vec<u8> {
        use std::process::Command;
        let tree = dir.join("tree");
        for (name, text) in files {
            std::fs::create_dir_all(tree.join(name).parent().unwrap()).unwrap();
            std::fs::write(tree.join(name), text).unwrap();
        }
        let part = dir.join("part.img");
        let ok = if fs == "vfat" {
            let mut ok =
                Command::new("mkfs.vfat").args(["-C"]).arg(&part).arg("8192").output().unwrap().status.success();
            // Each file's folders, outermost first.
            let mut dirs: Vec<String> = Vec::new();
            for (name, _) in files {
                let parts: Vec<&str> = name.split('/').collect();
                for i in 1..parts.len() {
                    let d = parts[..i].join("/");
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
            for d in &dirs {
                ok &= Command::new("mmd").arg("-i").arg(&part).arg(format!("::/{d}")).status().unwrap().success();
            }
            for (name, _) in files {
                let st =
                    Command::new("mcopy").arg("-i").arg(&part).arg(tree.join(name)).arg(format!("::/{name}")).status();
                ok &= st.unwrap().success();
            }
            ok
        } else {
            std::fs::File::create(&part).unwrap().set_len(8 << 20).unwrap();
            Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&tree).arg(&part).status().unwrap().success()
        };
        assert!(ok, "making the {fs} partition");
        let mut bytes = part::tests::sfdisk("label: dos\nstart=2048, size=16384, type=83\n");
        let p = std::fs::read(&part).unwrap();
        bytes[1 << 20..(1 << 20) + p.len()].copy_from_slice(&p);
        bytes
    }

    /// The root partition comes from `root=` in whichever loader
    /// configuration the boot partition holds (FAT or ext4), GRUB's on a
    /// `/boot` partition of its own among them; none, or no `root=`: none.
    #[test]
    fn the_loaders_root_is_read_from_each_configuration_it_may_keep() {
        let grub = "serial --unit=0\nmenuentry 'linux' {\n  linux /vmlinuz console=ttyS0 root=/dev/vda3 rw\n}\n";
        for (fs, name, text, want) in [
            ("vfat", "grub/grub.cfg", grub, Some(3)),
            ("ext4", "grub/grub.cfg", grub, Some(3)),
            ("ext4", "boot/grub/grub.cfg", grub, Some(3)),
            ("vfat", "syslinux.cfg", "LABEL l\n  APPEND console=ttyS0 root=/dev/sda2\n", Some(2)),
            ("ext4", "extlinux/extlinux.conf", "label l\n  append root=/dev/mmcblk0p5 rw\n", Some(5)),
            ("vfat", "grub/grub.cfg", "menuentry 'l' {\n  linux /vmlinuz root=UUID=1234\n}\n", None),
            ("vfat", "loader/entries/a.conf", "options root=/dev/vda2\n", None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let disk = one_partition_disk(dir.path(), fs, &[(name, text)]);
            let got = loader_root(&disk);
            assert_eq!(got.as_ref().map(|g| g.0), want, "{fs} {name}: {got:?}");
            if let Some((_, why)) = got {
                assert_eq!(why, format!("root= in {name} on partition 1"));
            }
        }
    }

    /// A GPT root partition's type names its architecture: x86-64 and
    /// arm64 roots are evidence for them, another Linux root is evidence
    /// of an architecture airboot cannot run, a data partition of none.
    #[test]
    fn gpt_root_types_are_architecture_evidence() {
        for (ty, want) in [
            (part::GPT_ROOT_X86_64, Some(Some(Arch::X86_64))),
            (part::GPT_ROOT_AARCH64, Some(Some(Arch::Aarch64))),
            (part::GPT_ROOT_RISCV64, Some(None)),
            ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", None),
        ] {
            let disk = part::tests::sfdisk(&format!("label: gpt\nstart=2048, size=4096, type={ty}\n"));
            let typed: Vec<Evidence> =
                disk_evidence(&disk).into_iter().filter(|e| e.what.contains("GPT type")).collect();
            assert_eq!(typed.first().map(|e| e.arch), want, "{ty}: {typed:?}");
            if let Some(Some(a)) = want {
                assert!(typed[0].what.contains(&format!("Linux root ({a})")), "{typed:?}");
            }
        }
    }

    /// BIOS boot code in the MBR means `bios`, and only for x86_64; a
    /// blank or unsigned MBR and no ESP is neither, with what was looked for.
    #[test]
    fn the_boot_path_comes_from_the_mbr_or_an_esp() {
        let mut disk = vec![0u8; 1 << 20];
        let e = boot_path(&disk, Arch::X86_64).unwrap_err();
        assert!(e.contains("EFI/BOOT/") && e.contains("MBR"), "{e}");
        disk[510] = 0x55;
        disk[511] = 0xAA;
        assert!(boot_path(&disk, Arch::X86_64).is_err(), "a signature with no code (a protective MBR) boots nothing");
        disk[..4].copy_from_slice(&[0xfa, 0x31, 0xc0, 0x8e]);
        disk[300..325].copy_from_slice(b"Missing operating system.");
        let (mode, why) = boot_path(&disk, Arch::X86_64).unwrap();
        assert_eq!(mode, BootMode::Bios);
        assert!(why.contains("syslinux"), "{why}");
        disk[300..325].fill(0);
        disk[100..104].copy_from_slice(b"GRUB");
        assert!(boot_path(&disk, Arch::X86_64).unwrap().1.contains("GRUB"));
        let e = boot_path(&disk, Arch::Aarch64).unwrap_err();
        assert!(e.contains("x86_64 only"), "{e}");
        disk[511] = 0;
        assert!(boot_path(&disk, Arch::X86_64).is_err(), "no boot signature");
    }

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

    /// A Raspberry Pi-style MBR image (boot partition, then root) and a GPT
    /// disk whose root is typed: the root partition is found either way.
    #[test]
    fn finds_the_root_partition() {
        use std::process::{Command, Stdio};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
        std::fs::copy("/bin/sh", root.join("usr/sbin/dockerd")).unwrap();
        let arch = Arch::host().unwrap();
        for (label, script, expect) in [
            (
                "mbr",
                "label: dos\nstart=2048, size=16384, type=c\nstart=18432, size=40960, type=83\n",
                "an ext4 root filesystem",
            ),
            (
                "gpt",
                &*format!(
                    "label: gpt\nstart=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=18432, size=40960, type={}\n",
                    match arch {
                        Arch::X86_64 => part::GPT_ROOT_X86_64,
                        Arch::Aarch64 => part::GPT_ROOT_AARCH64,
                    }
                ),
                "GPT type of a Linux root",
            ),
        ] {
            let img = d.path().join(format!("{label}.img"));
            std::fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
            let mut c = Command::new("sfdisk")
                .args(["-q", "--no-reread", "--no-tell-kernel"])
                .arg(&img)
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
            assert!(c.wait().unwrap().success());
            let ok = Command::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "4096", "-E", &format!("offset={}", 18432 * 512), "-d"])
                .arg(&root)
                .arg(&img)
                .arg((40960 * 512 / 4096).to_string())
                .status()
                .unwrap();
            assert!(ok.success());
            let f = std::fs::File::open(&img).unwrap();
            let r = root_partition(&f, arch).unwrap_or_else(|| panic!("{label}: no root found"));
            assert_eq!(r.number, 2, "{label}: {r:?}");
            assert!(r.why.contains(expect), "{label}: {}", r.why);
            assert_eq!(judge(&disk_evidence(&f)), Verdict::Known(arch), "{label}");
        }
        assert_eq!(root_partition(&vec![0u8; 1 << 20], arch), None);
    }

    /// A Raspberry Pi-style boot partition (a FAT filesystem with
    /// kernel8.img / kernel_2712.img) says arm64; kernel7l.img says 32-bit.
    #[test]
    fn raspberry_pi_boot_files() {
        use std::process::Command;
        let d = tempfile::tempdir().unwrap();
        for (name, want) in [("kernel_2712.img", Some(Arch::Aarch64)), ("kernel7l.img", None)] {
            let img = d.path().join(format!("{name}.fat"));
            let _ = std::fs::remove_file(&img);
            assert!(Command::new("mkfs.vfat").args(["-C"]).arg(&img).arg("8192").output().unwrap().status.success());
            let src = d.path().join(name);
            std::fs::write(&src, b"not a real kernel").unwrap();
            let ok = Command::new("mcopy").arg("-i").arg(&img).arg(&src).arg(format!("::/{name}")).status().unwrap();
            assert!(ok.success());
            let f = std::fs::File::open(&img).unwrap();
            let ev = disk_evidence(&f);
            assert_eq!(ev.len(), 1, "{ev:?}");
            assert_eq!(ev[0].arch, want, "{ev:?}");
            assert!(ev[0].what.contains("Raspberry Pi boot partition") && ev[0].what.contains(name), "{ev:?}");
        }
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

//! The closed sets of words airboot's files and reports use.

words! {
    /// How a run ended.
    #[derive(Default)]
    pub enum Verdict {
        /// Every expectation held.
        #[default]
        Pass = "pass",
        /// The image is wrong: an expectation did not hold.
        Fail = "fail",
        /// The harness could not judge: bad input, missing tool, interrupted.
        Error = "error",
    }
}
deserialize_words!(Verdict, "verdict");

impl Verdict {
    /// The exit status that stands for this verdict: 0, 1 or 2.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Error => 2,
        }
    }

    /// The worse of two verdicts (error over fail over pass).
    pub fn worst(self, other: Verdict) -> Verdict {
        self.max(other)
    }
}

words! {
    /// How the guest starts.
    pub enum BootMode {
        /// QEMU loads a kernel (and initrd) itself: `-kernel`/`-initrd`/`-append`.
        Direct = "direct",
        /// Firmware boots the disk (whole-disk images with an EFI partition).
        Uefi = "uefi",
        /// SeaBIOS boots the disk's MBR boot code (GRUB, syslinux, extlinux):
        /// x86_64 only.
        Bios = "bios",
        /// Board mode: the image's root partition booted with airboot's generic
        /// kernel and an initramfs that loads what the engine needs, for boards
        /// QEMU has no machine for. The board's own kernel is not used.
        Board = "board",
    }
}
deserialize_words!(BootMode, "boot mode");

words! {
    /// The format of a disk image file.
    pub enum DiskFormat {
        Raw = "raw",
        Qcow2 = "qcow2",
    }
}
deserialize_words!(DiskFormat, "disk format");

words! {
    /// The accelerator a guest ran under.
    pub enum Accel {
        Kvm = "kvm",
        /// Software emulation: budgets and timeouts are scaled.
        Tcg = "tcg",
    }
}
deserialize_words!(Accel, "accelerator");

words! {
    /// How the host talks to the probe in the guest.
    pub enum TransportKind {
        /// Kernel vsock (`/dev/vhost-vsock`).
        Vsock = "vsock",
        /// The same guest device served in user space by vhost-device-vsock.
        VhostUserVsock = "vhost-user-vsock",
        /// A named virtio-serial port.
        VirtioSerial = "virtio-serial",
        /// No probe: the guest prints status blocks on the serial console.
        Console = "console",
    }
}
deserialize_words!(TransportKind, "transport");

words! {
    /// The container engine a device runs.
    pub enum Engine {
        Docker = "docker",
        Podman = "podman",
        Containerd = "containerd",
    }
}
deserialize_words!(Engine, "engine");

words! {
    /// How the power went, in a cut.
    pub enum CutMode {
        /// QEMU killed: every completed write survives (a crash or watchdog
        /// reset, not a power cut).
        Kill = "kill",
        /// Exactly the writes up to the last completed flush (and FUA writes) survive.
        LoseUnflushed = "lose-unflushed",
        /// The flushed writes, plus a seeded subset of the later ones, each
        /// kept whole, dropped, or torn at a sector boundary.
        Torn = "torn",
        /// The device ignored flushes: of the writes still in its volatile
        /// cache, a seeded subset survives.
        FlushIgnored = "flush-ignored",
    }
}
deserialize_words!(CutMode, "cut mode");

impl CutMode {
    /// A power cut, as opposed to a crash of the machine.
    pub fn is_power_cut(self) -> bool {
        self != CutMode::Kill
    }
}

/// A CPU architecture airboot can boot images of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: &'static [Arch] = &[Arch::X86_64, Arch::Aarch64];

    /// The kernel's name (`uname -m`), used in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The OCI/Docker `architecture` value of container images for it.
    pub fn oci(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// From the kernel's name or the OCI one (`amd64`, `arm64`).
    pub fn parse(s: &str) -> Option<Arch> {
        Arch::ALL.iter().copied().find(|a| a.as_str() == s || a.oci() == s)
    }

    /// The architecture this program was built for.
    pub fn host() -> Option<Arch> {
        Arch::parse(std::env::consts::ARCH)
    }
}

impl AsRef<str> for Arch {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Arch::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown architecture {s:?}: use \"x86_64\" (alias \"amd64\") or \"aarch64\" (alias \"arm64\")"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_reads_back_as_itself_and_nothing_else_reads() {
        for v in TransportKind::ALL {
            assert_eq!(TransportKind::parse(v.as_str()), Some(*v));
            assert_eq!(serde_json::to_string(v).unwrap(), format!("{:?}", v.as_str()));
            assert_eq!(serde_json::from_str::<TransportKind>(&format!("{:?}", v.as_str())).unwrap(), *v);
        }
        assert_eq!(TransportKind::parse("auto"), None);
        let e = serde_json::from_str::<CutMode>("\"torm\"").unwrap_err().to_string();
        assert!(
            e.contains("unknown cut mode \"torm\": use \"kill\", \"lose-unflushed\", \"torn\" or \"flush-ignored\""),
            "{e}"
        );
        assert_eq!(serde_json::to_string(&CutMode::FlushIgnored).unwrap(), "\"flush-ignored\"");
        assert_eq!(serde_json::to_string(&BootMode::Uefi).unwrap(), "\"uefi\"");
        assert_eq!(Accel::choices(), "\"kvm\" or \"tcg\"");
    }

    #[test]
    fn architectures_take_both_names_and_write_the_kernels() {
        assert_eq!(Arch::parse("amd64"), Some(Arch::X86_64));
        assert_eq!(Arch::parse("aarch64"), Some(Arch::Aarch64));
        assert_eq!(Arch::parse("riscv64"), None);
        assert_eq!(serde_json::to_string(&Arch::Aarch64).unwrap(), "\"aarch64\"");
        assert_eq!(serde_json::from_str::<Arch>("\"arm64\"").unwrap(), Arch::Aarch64);
        assert!(serde_json::from_str::<Arch>("\"mips\"").unwrap_err().to_string().contains("alias \"arm64\""));
    }

    #[test]
    fn verdicts_order_and_exit() {
        assert_eq!(Verdict::Pass.worst(Verdict::Fail), Verdict::Fail);
        assert_eq!(Verdict::Error.worst(Verdict::Fail), Verdict::Error);
        assert_eq!([Verdict::Pass, Verdict::Fail, Verdict::Error].map(Verdict::exit_code), [0, 1, 2]);
    }
}

//! How each architecture is emulated, as plain facts: the QEMU system
//! emulator's name and the serial console the guest kernel writes to on
//! airboot's machine types. Messages name the emulator (a wrong-arch error
//! says which one to use); the qemu crate finds and starts it, the fixture
//! builder points the kernel's console at it.

use airboot_model::Arch;

/// The QEMU system emulator for `arch`.
pub fn qemu_system(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-system-x86_64",
        Arch::Aarch64 => "qemu-system-aarch64",
    }
}

/// The serial console device the guest kernel uses (`q35`: a 16550,
/// `virt`: a PL011).
pub fn console_tty(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "ttyS0",
        Arch::Aarch64 => "ttyAMA0",
    }
}

//! QEMU command lines, built by pure functions so they are unit-tested.
//!
//! Every VM airboot starts has:
//! - `-nodefaults -no-user-config`: no default devices, in particular **no
//!   network device**; nothing here adds one, and [`network_args`] proves it
//!   for the report;
//! - `-S`: CPUs stopped until the harness has the console and QMP attached
//!   and sends `cont`, which is t0 of every timing;
//! - `-no-reboot`: a guest reboot ends QEMU (the harness decides what is
//!   next);
//! - the disk through a qcow2 overlay the harness throws away.

use std::path::PathBuf;

use airboot_model::{Accel, Arch};

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub arch: Arch,
    pub accel: Accel,
    /// CPU model; `None` picks the default for arch and accelerator.
    pub cpu: Option<String>,
    pub memory_mib: u64,
    pub cpus: u32,
    /// `-rtc base=` (UTC); `None`: the host's time.
    pub rtc: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// The overlay (qcow2) the guest writes to.
    pub disk: PathBuf,
    /// Record every request the guest's disk completes (writes, flushes)
    /// in this file, through QEMU's `blklogwrites` driver: the write
    /// stream power cuts are cut from.
    pub write_log: Option<PathBuf>,
    pub qmp_socket: PathBuf,
    /// UEFI: the firmware code (read-only) and this run's own copy of the
    /// variables store, as pflash units 0 and 1.
    pub firmware: Option<(PathBuf, PathBuf)>,
}

/// The QEMU machine type airboot uses for an architecture.
pub fn machine(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "q35",
        Arch::Aarch64 => "virt",
    }
}

/// Default CPU model. Under TCG on aarch64, plain `max` is 2–3.5× slower
/// than `max,pauth-impdef=on` (pointer authentication emulated cheaply),
/// and no named model (cortex-a72, neoverse-n1, cortex-a57) was faster
/// beyond the noise, while `max` runs code built for any Arm core.
/// On x86_64, QEMU's own `qemu64` reached the fixtures' stack sooner than
/// `max` in every measurement (`scripts/bench-cpu-model.sh`, README).
pub fn default_cpu(arch: Arch, accel: Accel) -> &'static str {
    match (arch, accel) {
        (_, Accel::Kvm) => "host",
        (Arch::X86_64, Accel::Tcg) => "qemu64",
        (Arch::Aarch64, Accel::Tcg) => "max,pauth-impdef=on",
    }
}

/// The full argument list (without the program name).
pub fn qemu_args(s: &VmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-nodefaults", "-no-user-config", "-display", "none", "-S", "-no-reboot"]);
    push(&["-machine", machine(s.arch), "-accel", s.accel.as_str()]);
    let cpu = s.cpu.clone().unwrap_or_else(|| default_cpu(s.arch, s.accel).to_string());
    push(&["-cpu", &cpu]);
    push(&["-m", &s.memory_mib.to_string(), "-smp", &s.cpus.to_string()]);
    let rtc = s.rtc.as_deref().map(|r| format!("base={r}")).unwrap_or_else(|| "base=utc".into());
    push(&["-rtc", &rtc]);
    // The serial console on QEMU's stdout: a pipe never drops bytes (a
    // socket chardev with wait=off lost output in 3 of 10 runs).
    push(&["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]);
    let qmp = format!("unix:{},server=on,wait=off", s.qmp_socket.display());
    push(&["-qmp", &qmp]);
    match &s.write_log {
        None => {
            let drive =
                format!("file={},format=qcow2,if=none,id=disk0,cache=writeback,discard=unmap", s.disk.display());
            push(&["-drive", &drive, "-device", "virtio-blk-pci,drive=disk0"]);
        }
        Some(log) => {
            // The same disk under a write logger: the device keeps its
            // volatile write cache (the guest flushes), and sends neither
            // write-zeroes nor discards, so every request is a plain
            // write or a flush in the log.
            let ovl = format!("driver=qcow2,node-name=ovl,file.driver=file,file.filename={}", s.disk.display());
            let wlog = format!("driver=file,node-name=wlog,filename={}", log.display());
            let w = "driver=blklogwrites,node-name=disk0,file=ovl,log=wlog,log-sector-size=512,log-append=off";
            push(&["-blockdev", &ovl, "-blockdev", &wlog, "-blockdev", w]);
            push(&["-device", "virtio-blk-pci,drive=disk0,write-cache=on,write-zeroes=off,discard=off"]);
        }
    }
    // Entropy for early boot (dockerd and friends block on getrandom).
    push(&["-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0"]);
    if let Some((code, vars)) = &s.firmware {
        let code = format!("if=pflash,format=raw,unit=0,readonly=on,file={}", code.display());
        let vars = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
        push(&["-drive", &code, "-drive", &vars]);
    }
    if let Some(k) = &s.kernel {
        a.push("-kernel".into());
        a.push(k.display().to_string());
    }
    if let Some(i) = &s.initrd {
        a.push("-initrd".into());
        a.push(i.display().to_string());
    }
    if let Some(ap) = &s.append {
        a.push("-append".into());
        a.push(ap.clone());
    }
    a
}

/// NIC models QEMU knows, as `-device` driver names (prefixes).
const NIC_DRIVERS: &[&str] = &[
    "virtio-net",
    "e1000",
    "e1000e",
    "igb",
    "rtl8139",
    "ne2k",
    "pcnet",
    "vmxnet3",
    "i82",
    "usb-net",
    "tulip",
    "sungem",
    "xen-net",
    "spapr-vlan",
    "imx.enet",
    "lan9118",
    "smc91c111",
    "cadence_gem",
    "ftgmac100",
];

/// Arguments that would give the VM a network: `-netdev`, `-nic`, `-net`,
/// or a `-device` that is a NIC. Empty for every command line airboot
/// builds; reported as evidence of the air gap.
pub fn network_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let flag = a.trim_start_matches('-');
        let value = args.get(i + 1).map(String::as_str).unwrap_or("");
        let is_net = match flag {
            "netdev" | "nic" | "net" => true,
            "device" => {
                let driver = value.split(',').next().unwrap_or("");
                NIC_DRIVERS.iter().any(|n| driver.starts_with(n))
            }
            _ => false,
        };
        if is_net {
            out.push(format!("{a} {value}"));
        }
        i += 1;
    }
    out
}

/// Kernel command line default for a `path` image with direct boot.
pub fn default_append(arch: Arch) -> String {
    format!("console={} root=/dev/vda rw", airboot_core::platform::console_tty(arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arch: Arch, accel: Accel) -> VmSpec {
        VmSpec {
            arch,
            accel,
            cpu: None,
            memory_mib: 1024,
            cpus: 1,
            rtc: None,
            kernel: Some("/k/vmlinuz".into()),
            initrd: Some("/k/initrd.img".into()),
            append: Some("console=ttyS0 root=/dev/vda rw".into()),
            disk: "/tmp/run/overlay.qcow2".into(),
            write_log: None,
            qmp_socket: "/tmp/run/qmp.sock".into(),
            firmware: None,
        }
    }

    fn has_pair(a: &[String], flag: &str, value: &str) -> bool {
        a.windows(2).any(|w| w[0] == flag && w[1] == value)
    }

    #[test]
    fn x86_tcg_command_line() {
        let a = qemu_args(&spec(Arch::X86_64, Accel::Tcg));
        for f in ["-nodefaults", "-no-user-config", "-S", "-no-reboot"] {
            assert!(a.iter().any(|x| x == f), "missing {f}");
        }
        assert!(has_pair(&a, "-machine", "q35"));
        assert!(has_pair(&a, "-accel", "tcg"));
        assert!(has_pair(&a, "-cpu", "qemu64"));
        assert!(has_pair(&a, "-m", "1024"));
        assert!(has_pair(&a, "-kernel", "/k/vmlinuz"));
        assert!(has_pair(&a, "-qmp", "unix:/tmp/run/qmp.sock,server=on,wait=off"));
        assert!(a.iter().any(|x| x.starts_with("file=/tmp/run/overlay.qcow2,format=qcow2")));
        assert!(network_args(&a).is_empty(), "{:?}", network_args(&a));
        assert!(!a.iter().any(|x| x.contains("blklogwrites")));
    }

    #[test]
    fn a_recorded_boot_logs_the_disk_s_writes() {
        let mut sp = spec(Arch::X86_64, Accel::Tcg);
        sp.write_log = Some("/tmp/run/writes.log".into());
        let a = qemu_args(&sp);
        assert!(has_pair(
            &a,
            "-blockdev",
            "driver=qcow2,node-name=ovl,file.driver=file,file.filename=/tmp/run/overlay.qcow2"
        ));
        assert!(has_pair(&a, "-blockdev", "driver=file,node-name=wlog,filename=/tmp/run/writes.log"));
        assert!(a.iter().any(|x| x.starts_with("driver=blklogwrites,node-name=disk0,file=ovl,log=wlog")));
        assert!(has_pair(&a, "-device", "virtio-blk-pci,drive=disk0,write-cache=on,write-zeroes=off,discard=off"));
        assert!(!a.iter().any(|x| x == "-drive"));
    }

    #[test]
    fn aarch64_uses_a_fast_cpu_under_tcg() {
        let a = qemu_args(&spec(Arch::Aarch64, Accel::Tcg));
        assert!(has_pair(&a, "-machine", "virt"));
        assert!(has_pair(&a, "-cpu", "max,pauth-impdef=on"));
        let k = qemu_args(&spec(Arch::Aarch64, Accel::Kvm));
        assert!(has_pair(&k, "-cpu", "host"));
    }

    #[test]
    fn uefi_boots_from_pflash_with_a_private_varstore() {
        let mut sp = spec(Arch::Aarch64, Accel::Tcg);
        sp.kernel = None;
        sp.initrd = None;
        sp.append = None;
        sp.firmware = Some(("/usr/share/AAVMF/AAVMF_CODE.fd".into(), "/tmp/run/vars.fd".into()));
        let a = qemu_args(&sp);
        assert!(has_pair(&a, "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd"));
        assert!(has_pair(&a, "-drive", "if=pflash,format=raw,unit=1,file=/tmp/run/vars.fd"));
        assert!(!a.iter().any(|x| x == "-kernel" || x == "-append"));
        assert!(network_args(&a).is_empty());
    }

    #[test]
    fn network_arguments_are_found() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(network_args(&v(&["-netdev", "user,id=n0"])), ["-netdev user,id=n0"]);
        assert_eq!(network_args(&v(&["-nic", "none"])).len(), 1);
        assert_eq!(network_args(&v(&["-device", "virtio-net-pci,netdev=n0"])).len(), 1);
        assert_eq!(network_args(&v(&["-device", "e1000,netdev=n0"])).len(), 1);
        assert!(network_args(&v(&["-device", "virtio-blk-pci,drive=d"])).is_empty());
        assert!(network_args(&v(&["-append", "net.ifnames=0"])).is_empty());
    }
}

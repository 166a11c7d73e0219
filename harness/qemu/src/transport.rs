//! How the host talks to the probe in the guest.
//!
//! - `vsock`: kernel vsock, when `/dev/vhost-vsock` can be opened
//!   (`-device vhost-vsock-pci,guest-cid=N`, N ≥ 1000, unique per run);
//! - `vhost-user-vsock`: the same guest device served by
//!   `vhost-device-vsock` in user space, when the kernel module is missing
//!   (as on many CI machines). Needs guest memory shared with the helper;
//!   stops working after a guest reset, so QEMU runs with `-no-reboot`;
//! - `virtio-serial`: a named port, works everywhere;
//! - `console`: no probe; the guest prints status blocks on the console.
//!
//! Choosing is pure (given what the host has), so it is unit-tested.

use std::path::{Path, PathBuf};

use airboot_proto::probe::{PROBE_SERIAL_NAME, PROBE_VSOCK_PORT};

use airboot_model::TransportKind;

/// What this host offers.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCaps {
    /// `Ok` when /dev/vhost-vsock opens, else why not.
    pub kernel_vsock: Result<(), String>,
    /// The vhost-device-vsock program, if found.
    pub vhost_device_vsock: Option<PathBuf>,
}

/// Version of vhost-device-vsock scripts/setup.sh installs.
pub const VHOST_DEVICE_VSOCK_VERSION: &str = "0.3.0";

/// Where setup.sh installs vhost-device-vsock.
pub fn vhost_device_vsock_install_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("tools").join(format!("vhost-device-vsock-{VHOST_DEVICE_VSOCK_VERSION}"))
}

pub fn host_caps(cache_root: &Path) -> HostCaps {
    let kernel_vsock = match std::fs::OpenOptions::new().read(true).write(true).open("/dev/vhost-vsock") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("/dev/vhost-vsock does not exist (the vhost_vsock module is not loaded or not available)".into())
        }
        Err(e) => Err(format!("/dev/vhost-vsock cannot be opened: {e}")),
    };
    let vhost_device_vsock = std::env::var_os("AIRBOOT_VHOST_DEVICE_VSOCK")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            let p = vhost_device_vsock_install_dir(cache_root).join("bin/vhost-device-vsock");
            p.is_file().then_some(p)
        })
        .or_else(|| crate::process::which("vhost-device-vsock"));
    HostCaps { kernel_vsock, vhost_device_vsock }
}

/// The chosen transport and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub kind: TransportKind,
    pub reason: String,
}

/// Pick the transport. `requested` is `None` for auto; `forced_by` names
/// what forced it (for messages). An impossible forced choice is an error.
pub fn choose(
    requested: Option<TransportKind>,
    forced_by: &str,
    image_has_probe: bool,
    caps: &HostCaps,
) -> Result<Choice, String> {
    let vdv_missing = "vhost-device-vsock is not installed (scripts/setup.sh installs it with `cargo install vhost-device-vsock`, or set AIRBOOT_VHOST_DEVICE_VSOCK)";
    match requested {
        Some(k) => {
            match k {
                TransportKind::Vsock => {
                    if let Err(why) = &caps.kernel_vsock {
                        return Err(format!(
                            "transport vsock ({forced_by}) is not available here: {why}; use vhost-user-vsock, virtio-serial or auto"
                        ));
                    }
                }
                TransportKind::VhostUserVsock if caps.vhost_device_vsock.is_none() => {
                    return Err(format!(
                        "transport vhost-user-vsock ({forced_by}) is not available here: {vdv_missing}"
                    ));
                }
                _ => {}
            }
            if k != TransportKind::Console && !image_has_probe {
                return Err(format!(
                    "transport {} ({forced_by}) needs airboot-probe in the image, and this image declares none (set [image] probe = true if it has one)",
                    k.as_str()
                ));
            }
            Ok(Choice { kind: k, reason: format!("forced by {forced_by}") })
        }
        None if !image_has_probe => Ok(Choice {
            kind: TransportKind::Console,
            reason: "the image carries no airboot probe: status comes from console status blocks".into(),
        }),
        None => match (&caps.kernel_vsock, &caps.vhost_device_vsock) {
            (Ok(()), _) => Ok(Choice { kind: TransportKind::Vsock, reason: "/dev/vhost-vsock is usable".into() }),
            (Err(why), Some(p)) => Ok(Choice {
                kind: TransportKind::VhostUserVsock,
                reason: format!("{why}; serving the guest's vsock device with {}", p.display()),
            }),
            (Err(why), None) => Ok(Choice {
                kind: TransportKind::VirtioSerial,
                reason: format!("{why}, and {vdv_missing}: using a virtio-serial port"),
            }),
        },
    }
}

/// Where the host connects to reach the probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// Kernel vsock: AF_VSOCK to (cid, port).
    Vsock {
        cid: u32,
        port: u32,
    },
    /// vhost-device-vsock's host socket: connect, send `CONNECT <port>`.
    VhostUser {
        uds: PathBuf,
        port: u32,
    },
    /// QEMU's chardev socket of the virtio-serial port.
    Unix {
        path: PathBuf,
    },
    None,
}

/// A helper process the transport needs (started before QEMU).
#[derive(Debug, Clone, PartialEq)]
pub struct Helper {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The socket it creates; QEMU connects to it.
    pub socket: PathBuf,
}

/// Everything a transport adds to a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub kind: TransportKind,
    pub qemu_args: Vec<String>,
    pub helper: Option<Helper>,
    pub endpoint: Endpoint,
}

/// The QEMU arguments, helper and endpoint of a transport. Pure.
pub fn plan(kind: TransportKind, work: &Path, memory_mib: u64, cid: u32, vhost_device_vsock: Option<&Path>) -> Plan {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match kind {
        TransportKind::Vsock => Plan {
            kind,
            qemu_args: s(&["-device", &format!("vhost-vsock-pci,guest-cid={cid}")]),
            helper: None,
            endpoint: Endpoint::Vsock { cid, port: PROBE_VSOCK_PORT },
        },
        TransportKind::VhostUserVsock => {
            let vhost = work.join("vhost-vsock.sock");
            let uds = work.join("vsock.sock");
            Plan {
                kind,
                qemu_args: s(&[
                    "-object",
                    &format!("memory-backend-memfd,id=mem0,size={memory_mib}M,share=on"),
                    "-numa",
                    "node,memdev=mem0",
                    "-chardev",
                    &format!("socket,id=vvu0,path={}", vhost.display()),
                    "-device",
                    "vhost-user-vsock-pci,chardev=vvu0",
                ]),
                helper: Some(Helper {
                    program: vhost_device_vsock.map(Path::to_path_buf).unwrap_or_else(|| "vhost-device-vsock".into()),
                    args: vec![
                        format!("--guest-cid={cid}"),
                        format!("--socket={}", vhost.display()),
                        format!("--uds-path={}", uds.display()),
                    ],
                    socket: vhost,
                }),
                endpoint: Endpoint::VhostUser { uds, port: PROBE_VSOCK_PORT },
            }
        }
        TransportKind::VirtioSerial => {
            let path = work.join("probe.sock");
            Plan {
                kind,
                qemu_args: s(&[
                    "-device",
                    "virtio-serial-pci,id=vser0",
                    "-chardev",
                    &format!("socket,id=probe0,path={},server=on,wait=off", path.display()),
                    "-device",
                    &format!("virtserialport,bus=vser0.0,chardev=probe0,name={PROBE_SERIAL_NAME}"),
                ]),
                helper: None,
                endpoint: Endpoint::Unix { path },
            }
        }
        TransportKind::Console => Plan { kind, qemu_args: Vec::new(), helper: None, endpoint: Endpoint::None },
    }
}

/// A guest CID for kernel vsock: ≥ 1000 (this host's own CID can be
/// small), different for concurrent runs.
pub fn pick_cid(seed: u64) -> u32 {
    1000 + (seed % 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(kernel: bool, vdv: bool) -> HostCaps {
        HostCaps {
            kernel_vsock: if kernel { Ok(()) } else { Err("/dev/vhost-vsock does not exist".into()) },
            vhost_device_vsock: vdv.then(|| PathBuf::from("/opt/vhost-device-vsock")),
        }
    }

    #[test]
    fn auto_prefers_kernel_vsock_then_vhost_user_then_serial() {
        assert_eq!(choose(None, "auto", true, &caps(true, true)).unwrap().kind, TransportKind::Vsock);
        let c = choose(None, "auto", true, &caps(false, true)).unwrap();
        assert_eq!(c.kind, TransportKind::VhostUserVsock);
        assert!(c.reason.contains("/dev/vhost-vsock does not exist"), "{}", c.reason);
        let c = choose(None, "auto", true, &caps(false, false)).unwrap();
        assert_eq!(c.kind, TransportKind::VirtioSerial);
        assert!(c.reason.contains("vhost-device-vsock is not installed"));
        assert_eq!(choose(None, "auto", false, &caps(true, true)).unwrap().kind, TransportKind::Console);
    }

    #[test]
    fn impossible_forced_choices_say_why() {
        let e = choose(Some(TransportKind::Vsock), "--transport", true, &caps(false, true)).unwrap_err();
        assert!(e.contains("/dev/vhost-vsock") && e.contains("--transport"), "{e}");
        let e =
            choose(Some(TransportKind::VhostUserVsock), "machine.transport", true, &caps(false, false)).unwrap_err();
        assert!(e.contains("cargo install vhost-device-vsock"), "{e}");
        let e = choose(Some(TransportKind::VirtioSerial), "--transport", false, &caps(true, true)).unwrap_err();
        assert!(e.contains("probe = true"), "{e}");
        let ok = choose(Some(TransportKind::VirtioSerial), "--transport", true, &caps(false, false)).unwrap();
        assert_eq!(ok.reason, "forced by --transport");
        assert_eq!(
            choose(Some(TransportKind::Console), "x", false, &caps(false, false)).unwrap().kind,
            TransportKind::Console
        );
        assert!(airboot_core::scenario::parse_transport("udp").unwrap_err().contains("\"virtio-serial\""));
        assert_eq!(airboot_core::scenario::parse_transport("auto"), Ok(None));
    }

    #[test]
    fn plans() {
        let w = Path::new("/tmp/run");
        let p = plan(TransportKind::VhostUserVsock, w, 1024, 1234, Some(Path::new("/opt/vdv")));
        assert!(p.qemu_args.contains(&"memory-backend-memfd,id=mem0,size=1024M,share=on".to_string()));
        assert!(p.qemu_args.contains(&"vhost-user-vsock-pci,chardev=vvu0".to_string()));
        let h = p.helper.unwrap();
        assert_eq!(h.program, PathBuf::from("/opt/vdv"));
        assert!(h.args.contains(&"--guest-cid=1234".to_string()));
        assert_eq!(p.endpoint, Endpoint::VhostUser { uds: w.join("vsock.sock"), port: PROBE_VSOCK_PORT });
        let p = plan(TransportKind::VirtioSerial, w, 1024, 0, None);
        assert!(p.qemu_args.iter().any(|a| a.ends_with("name=org.airboot.probe")));
        assert_eq!(p.endpoint, Endpoint::Unix { path: w.join("probe.sock") });
        let p = plan(TransportKind::Vsock, w, 1024, 4321, None);
        assert_eq!(p.qemu_args, ["-device", "vhost-vsock-pci,guest-cid=4321"]);
        assert!(plan(TransportKind::Console, w, 1, 0, None).qemu_args.is_empty());
        assert!(pick_cid(0) >= 1000 && pick_cid(u64::MAX) >= 1000);
        // No transport adds a network device.
        for k in [TransportKind::Vsock, TransportKind::VhostUserVsock, TransportKind::VirtioSerial] {
            assert!(crate::argv::network_args(&plan(k, w, 512, 2000, None).qemu_args).is_empty());
        }
    }
}

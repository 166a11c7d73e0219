//! UEFI firmware for pflash boots: OVMF on x86_64, AAVMF on aarch64.
//!
//! Found through the distribution's QEMU firmware descriptors
//! (`/usr/share/qemu/firmware/*.json`, the files libvirt uses), skipping
//! Secure Boot builds (they refuse unsigned loaders and need SMM), with
//! Debian's well-known paths as a fallback. A scenario may name its own
//! (`machine.firmware`, `machine.firmware_vars`). The variables store is
//! always a fresh copy of the template per run: a run never sees another
//! run's boot entries, and the template is never written.

use std::path::{Path, PathBuf};

use airboot_model::Arch;
use serde_json::Value;

/// Firmware code and the variables template to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars_template: PathBuf,
    /// Where it was found (a descriptor file, the scenario, a default path).
    pub source: String,
}

/// The descriptor directories QEMU's firmware interop specification names,
/// lowest priority last.
pub const DESCRIPTOR_DIRS: &[&str] = &["/etc/qemu/firmware", "/usr/share/qemu/firmware"];

/// Pick firmware for `arch` from descriptors given as (file name, text),
/// in priority order. Pure: the caller reads the files and checks that the
/// chosen paths exist.
pub fn choose(arch: Arch, descriptors: &[(String, String)]) -> Option<Firmware> {
    let mut sorted: Vec<&(String, String)> = descriptors.iter().collect();
    // The specification orders by file name across directories.
    sorted.sort_by(|a, b| file_name(&a.0).cmp(file_name(&b.0)));
    for (name, text) in sorted {
        let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
        let uefi = v["interface-types"].as_array().is_some_and(|t| t.iter().any(|x| x == "uefi"));
        let flash = v["mapping"]["device"] == "flash";
        let for_arch = v["targets"]
            .as_array()
            .is_some_and(|t| t.iter().any(|x| x["architecture"].as_str() == Some(arch.as_str())));
        let secure = v["features"].as_array().is_some_and(|f| {
            f.iter().any(|x| matches!(x.as_str(), Some("secure-boot" | "enrolled-keys" | "requires-smm")))
        });
        let raw = v["mapping"]["executable"]["format"].as_str().is_none_or(|f| f == "raw");
        if !(uefi && flash && for_arch && raw) || secure {
            continue;
        }
        let code = v["mapping"]["executable"]["filename"].as_str();
        let vars = v["mapping"]["nvram-template"]["filename"].as_str();
        if let (Some(code), Some(vars)) = (code, vars) {
            return Some(Firmware {
                code: code.into(),
                vars_template: vars.into(),
                source: format!("firmware descriptor {name}"),
            });
        }
    }
    None
}

fn file_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Debian's paths (packages `ovmf` and `qemu-efi-aarch64`).
pub fn debian_default(arch: Arch) -> Firmware {
    let (code, vars) = match arch {
        Arch::X86_64 => ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        Arch::Aarch64 => ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
    };
    Firmware { code: code.into(), vars_template: vars.into(), source: "Debian's default path".into() }
}

/// The Debian package that ships the firmware for `arch`.
pub fn package(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "ovmf",
        Arch::Aarch64 => "qemu-efi-aarch64",
    }
}

/// Find firmware on this host (or take the scenario's), and check both
/// files are there.
pub fn find(arch: Arch, code: Option<&Path>, vars: Option<&Path>) -> Result<Firmware, String> {
    let fw = match (code, vars) {
        (Some(c), Some(v)) => {
            Firmware { code: c.into(), vars_template: v.into(), source: "machine.firmware in the scenario".into() }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(
                "give both machine.firmware (the code) and machine.firmware_vars (the variables template)".into()
            );
        }
        (None, None) => {
            let mut descriptors = Vec::new();
            for dir in DESCRIPTOR_DIRS {
                let Ok(rd) = std::fs::read_dir(dir) else { continue };
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "json")
                        && let Ok(text) = std::fs::read_to_string(&p)
                    {
                        descriptors.push((p.display().to_string(), text));
                    }
                }
            }
            match choose(arch, &descriptors) {
                Some(f) if f.code.is_file() && f.vars_template.is_file() => f,
                _ => debian_default(arch),
            }
        }
    };
    for p in [&fw.code, &fw.vars_template] {
        if !p.is_file() {
            return Err(format!(
                "UEFI firmware for {arch} not found: {} is missing (from {}). Install the Debian package `{}`, or set machine.firmware and machine.firmware_vars",
                p.display(),
                fw.source,
                package(arch)
            ));
        }
    }
    Ok(fw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, code: &str, features: &[&str]) -> String {
        serde_json::json!({
            "interface-types": ["uefi"],
            "mapping": {
                "device": "flash",
                "executable": {"filename": code, "format": "raw"},
                "nvram-template": {"filename": format!("{code}.vars"), "format": "raw"}
            },
            "targets": [{"architecture": arch, "machines": ["virt-*", "pc-q35-*"]}],
            "features": features,
        })
        .to_string()
    }

    #[test]
    fn picks_the_first_plain_uefi_build_for_the_arch() {
        let d = vec![
            ("/usr/share/qemu/firmware/60-edk2-x86_64.json".to_string(), desc("x86_64", "/ovmf", &["acpi-s3"])),
            (
                "/usr/share/qemu/firmware/50-edk2-x86_64-secure.json".to_string(),
                desc("x86_64", "/ovmf-sb", &["secure-boot", "requires-smm"]),
            ),
            ("/usr/share/qemu/firmware/60-edk2-aarch64.json".to_string(), desc("aarch64", "/aavmf", &[])),
            ("/etc/qemu/firmware/10-broken.json".to_string(), "{ not json".to_string()),
        ];
        let x = choose(Arch::X86_64, &d).unwrap();
        assert_eq!(x.code, PathBuf::from("/ovmf"), "secure boot builds are skipped");
        assert_eq!(x.vars_template, PathBuf::from("/ovmf.vars"));
        assert!(x.source.contains("60-edk2-x86_64.json"));
        assert_eq!(choose(Arch::Aarch64, &d).unwrap().code, PathBuf::from("/aavmf"));
        // A lower file name wins, whatever its directory.
        let mut d2 = d.clone();
        d2.push(("/etc/qemu/firmware/20-local.json".to_string(), desc("aarch64", "/local", &[])));
        assert_eq!(choose(Arch::Aarch64, &d2).unwrap().code, PathBuf::from("/local"));
        assert_eq!(choose(Arch::Aarch64, &d[..2]), None);
    }

    #[test]
    fn missing_firmware_names_the_package() {
        let e = find(Arch::Aarch64, Some(Path::new("/nonexistent/CODE.fd")), Some(Path::new("/nonexistent/VARS.fd")))
            .unwrap_err();
        assert!(e.contains("/nonexistent/CODE.fd") && e.contains("qemu-efi-aarch64"), "{e}");
        assert!(find(Arch::X86_64, Some(Path::new("/x")), None).unwrap_err().contains("both"));
    }
}

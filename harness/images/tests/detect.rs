//! airboot's architecture detector on every fixture built on this machine:
//! each must read back as the architecture it was built for, from evidence
//! of the kinds its boot mode implies (a UEFI disk: GPT root type, the PE
//! loader and the ELF engine; a direct-boot disk: the ELF engine, and the
//! kernel file). Fixtures not built here are listed and skipped.

use airboot_core::disk::detect::{self, Verdict};
use airboot_images::{FixtureBoot, cache_root, catalog, lookup};
use airboot_qemu::disk::open_image;

#[test]
fn every_built_fixture_reads_back_as_its_architecture() {
    let root = cache_root();
    let mut checked = 0;
    for def in catalog() {
        let Some(f) = lookup(&root, &def) else {
            eprintln!("skipping {}: not built", def.name);
            continue;
        };
        let disk = open_image(&f.disk()).unwrap_or_else(|e| panic!("{}: {e}", f.disk().display()));
        let ev = detect::disk_evidence(disk.as_ref());
        let text: Vec<&str> = ev.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(detect::judge(&ev), Verdict::Known(def.arch), "{}: {text:?}", def.name);
        // The engine's own binary says it (containerd's for Docker's too).
        let engine_bin = match def.engine {
            airboot_model::Engine::Docker => "dockerd",
            airboot_model::Engine::Podman => "podman",
            airboot_model::Engine::Containerd => "containerd",
        };
        assert!(text.iter().any(|t| t.contains(engine_bin) && t.contains("ELF")), "{}: {text:?}", def.name);
        match def.boot {
            FixtureBoot::Uefi => {
                assert!(text.iter().any(|t| t.starts_with("GPT type of partition 2")), "{}: {text:?}", def.name);
                assert!(text.iter().any(|t| t.contains("EFI/BOOT/BOOT") && t.contains("PE")), "{}: {text:?}", def.name);
            }
            FixtureBoot::Direct => {
                let k = airboot_qemu::disk::kernel_evidence(&f.kernel()).expect("the kernel says its architecture");
                assert_eq!(k.arch, Some(def.arch), "{}: {}", def.name, k.what);
            }
        }
        checked += 1;
    }
    eprintln!("checked {checked} built fixture(s)");
}

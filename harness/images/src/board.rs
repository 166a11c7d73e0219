//! Board mode: boot the root filesystem of an image made for a board QEMU
//! has no model of (Raspberry Pi 5, Jetson) with a generic Debian kernel.
//!
//! The board's own kernel and device tree cannot run under `-M virt`, and
//! its root filesystem's `/lib/modules` belongs to that kernel, so nothing
//! the engine needs could be loaded from it. The initramfs airboot builds
//! here is the fixtures' one plus the modules a container engine needs
//! (overlay, bridge, br_netfilter, veth, nf_tables and what they depend
//! on), loaded before `switch_root`: Docker then finds them already in the
//! kernel. It is appended to the fixture initramfs as a second cpio archive
//! (the kernel unpacks both; later files replace earlier ones).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use airboot_model::Arch;

use crate::stages::{KernelInfo, build_kernel};
use crate::util::{BuildError, Ctx, Progress, io_err, is_root, lock, read_json, stage_dir, write};
use crate::{kernel_key, modules};

/// What a container engine needs from the kernel, loaded by the board
/// initramfs (each skipped when the kernel has it built in).
pub const ENGINE_MODULES: &[&str] = &[
    "overlay",
    "bridge",
    "br_netfilter",
    "veth",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nf_nat",
    "nf_conntrack",
    "xt_addrtype",
    "xt_conntrack",
    "xt_MASQUERADE",
    "ip_tables",
    "iptable_filter",
    "iptable_nat",
];

/// A generic kernel and the board initramfs for one architecture.
#[derive(Debug, Clone)]
pub struct BoardKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// `uname -r` of the generic kernel.
    pub version: String,
    /// Modules the initramfs loads for the engine (built-in ones omitted).
    pub engine_modules: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct BoardInfo {
    version: String,
    engine_modules: Vec<String>,
}

/// The generic kernel and board initramfs for `arch`, built (and cached
/// under `<cache>/board/`) unless already there. Building the kernel stage
/// needs root, like every fixture build.
pub fn board_kernel(root: &Path, arch: Arch, progress: Progress) -> Result<BoardKernel, BuildError> {
    let kernel_dir = stage_dir(root, "kernel", arch, &kernel_key(arch));
    let dir = root.join("board").join(format!("{arch}-{}", kernel_key(arch)));
    let done = |dir: &Path| -> Option<BoardKernel> {
        let info: BoardInfo = read_json(&dir.join("board.json")).ok()?;
        let k = BoardKernel {
            kernel: kernel_dir.join("vmlinuz"),
            initrd: dir.join("initrd-board.img"),
            version: info.version,
            engine_modules: info.engine_modules,
        };
        (k.kernel.is_file() && k.initrd.is_file()).then_some(k)
    };
    if let Some(k) = done(&dir) {
        return Ok(k);
    }
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let _l = lock(root, &format!("board-{arch}"))?;
    if let Some(k) = done(&dir) {
        return Ok(k);
    }
    if !kernel_dir.join("done").exists() {
        if !is_root() {
            return Err(BuildError::Step {
                step: "board mode".into(),
                message: format!(
                    "the generic {arch} kernel is not built and building it needs root: run `sudo airboot images build debian-preseeded-{arch}` once"
                ),
                log: None,
            });
        }
        let mut ctx = Ctx {
            root: root.to_path_buf(),
            log: dir.join("build.log"),
            progress,
            step: 0,
            steps: 1,
            scratch: airboot_qemu::scratch::temp_dir("build").ok(),
        };
        build_kernel(&mut ctx, arch, &kernel_dir, false)?;
    }
    let info: KernelInfo = read_json(&kernel_dir.join("kernel.json"))?;
    let mod_root = kernel_dir.join("modules/lib/modules").join(&info.version);
    let dep = modules::parse_modules_dep(
        &fs::read_to_string(mod_root.join("modules.dep"))
            .map_err(io_err(format!("reading {}", mod_root.join("modules.dep").display())))?,
    );
    let builtin = fs::read_to_string(mod_root.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(modules::module_name).collect();
    let wanted: Vec<&str> =
        ENGINE_MODULES.iter().copied().filter(|m| !builtin.iter().any(|b| b == &m.replace('-', "_"))).collect();
    let order = modules::load_order(&dep, &wanted).map_err(|m| BuildError::Step {
        step: "board initramfs".into(),
        message: m,
        log: None,
    })?;

    // The fixture initramfs lists its modules in etc/modules.order; the
    // appended archive replaces that list with the longer one.
    let base = fs::read(kernel_dir.join("initrd.img")).map_err(io_err("reading the kernel stage's initrd.img"))?;
    let mut list: Vec<String> = info
        .initramfs_modules
        .iter()
        .filter_map(|n| dep.keys().find(|p| modules::module_name(p) == *n))
        .map(|p| format!("{}/{p}", info.version))
        .collect();
    for m in &order {
        let line = format!("{}/{m}", info.version);
        if !list.contains(&line) {
            list.push(line);
        }
    }
    let mut extra = crate::cpio::Cpio::new(Vec::new());
    (|| -> io::Result<()> {
        for m in &order {
            extra.file_in(&format!("lib/modules/{}/{m}", info.version), 0o644, &fs::read(mod_root.join(m))?)?;
        }
        extra.file("etc/modules.order", 0o644, format!("{}\n", list.join("\n")).as_bytes())?;
        Ok(())
    })()
    .map_err(io_err("writing the board initramfs"))?;
    let extra = extra.finish().map_err(io_err("writing the board initramfs"))?;
    let out = dir.join("initrd-board.img");
    let tmp = dir.join("initrd-board.img.tmp");
    (|| -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&base)?;
        // Each cpio archive in an initramfs starts 4-byte aligned.
        f.write_all(&vec![0u8; (4 - base.len() % 4) % 4])?;
        f.write_all(&extra)?;
        f.sync_all()
    })()
    .map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, &out).map_err(io_err(format!("writing {}", out.display())))?;
    let engine_modules: Vec<String> = order.iter().map(|m| modules::module_name(m)).collect();
    let board = BoardInfo { version: info.version.clone(), engine_modules };
    write(&dir.join("board.json"), serde_json::to_string_pretty(&board).expect("json").as_bytes(), 0o644)?;
    done(&dir).ok_or_else(|| BuildError::Step {
        step: "board initramfs".into(),
        message: format!("the board kernel in {} is incomplete", dir.display()),
        log: None,
    })
}

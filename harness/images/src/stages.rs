//! The cached stages every fixture of an architecture shares: the Debian
//! rootfs, the kernel with its pruned modules and initramfs, and the
//! container images. Their cache keys hash this file (and the helpers it
//! uses), not the fixture assembly, so changing how a disk is laid out
//! does not re-run mmdebstrap.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airboot_model::{Arch, Engine};

use crate::debian_arch;

use crate::archive::{self, Entry, EntryKind, ImageConfig, Layer};
use crate::modules;
use crate::util::{BuildError, Ctx, TmpDir, io_err, lock, mmdebstrap, mmdebstrap_sources, read_json, write};
use crate::{FixtureImage, SUITE, recipe_file};

pub(crate) fn build_rootfs(
    ctx: &mut Ctx,
    arch: Arch,
    engine: Engine,
    init: crate::Init,
    dir: &Path,
    force: bool,
) -> Result<(), BuildError> {
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    let _l = lock(&ctx.root, &format!("{}-{arch}", crate::rootfs_stage(engine, init)))?;
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    let eta =
        if Arch::host() == Some(arch) { "1–3 min" } else { "5–10 min: its maintainer scripts run under qemu-user" };
    let what = match engine {
        Engine::Docker => "docker.io",
        Engine::Podman => "podman",
        Engine::Containerd => "containerd",
    };
    ctx.say(&format!(
        "mmdebstrap: Debian {SUITE} {} rootfs with {} and {what} ({eta})",
        debian_arch(arch),
        init.as_str()
    ));
    let tmp = TmpDir::new(dir)?;
    let packages: Vec<String> =
        String::from_utf8_lossy(recipe_file(crate::rootfs_packages(engine, init)).map(|f| f.0).unwrap_or_default())
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    let mut cmd = mmdebstrap();
    cmd.args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--architectures={}", debian_arch(arch)))
        .arg(format!("--include={}", packages.join(",")))
        .arg("--aptopt=APT::Install-Recommends \"false\"");
    for opt in [
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/lintian/*",
    ] {
        cmd.arg(format!("--dpkgopt={opt}"));
    }
    cmd.arg(SUITE).arg(tmp.path.join("root")).args(mmdebstrap_sources());
    ctx.run("mmdebstrap (rootfs)", &mut cmd, Duration::from_secs(3600))?;
    write(&tmp.path.join("done"), b"", 0o644)?;
    tmp.commit(dir, &[])
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct KernelInfo {
    pub(crate) version: String,
    pub(crate) modules_total: usize,
    pub(crate) modules_kept: usize,
    pub(crate) initramfs_modules: Vec<String>,
}

pub(crate) fn build_kernel(ctx: &mut Ctx, arch: Arch, dir: &Path, force: bool) -> Result<(), BuildError> {
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    let _l = lock(&ctx.root, &format!("kernel-{arch}"))?;
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    ctx.say(&format!(
        "kernel: extracting linux-image-{} and busybox-static, pruning modules, building the initramfs",
        debian_arch(arch)
    ));
    let tmp = TmpDir::new(dir)?;
    let extract = tmp.path.join("extract");
    let mut cmd = mmdebstrap();
    cmd.args(["--mode=root", "--variant=extract", "--format=directory"])
        .arg(format!("--architectures={}", debian_arch(arch)))
        .arg(format!("--include=linux-image-{},busybox-static,systemd-boot-efi", debian_arch(arch)))
        .arg(SUITE)
        .arg(&extract)
        .args(mmdebstrap_sources());
    ctx.run("mmdebstrap (kernel extract)", &mut cmd, Duration::from_secs(1800))?;

    let boot = extract.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .map_err(io_err(format!("reading {}", boot.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| BuildError::Step {
            step: "kernel".into(),
            message: "no boot/vmlinuz-* in the kernel package".into(),
            log: None,
        })?;
    let version = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    let moddir_rel =
        ["lib/modules", "usr/lib/modules"].into_iter().find(|d| extract.join(d).join(&version).is_dir()).ok_or_else(
            || BuildError::Step { step: "kernel".into(), message: format!("no modules for {version}"), log: None },
        )?;
    // depmod wants <base>/lib/modules.
    let base = if moddir_rel == "lib/modules" { extract.clone() } else { extract.join("usr") };
    let mut dm = Command::new("depmod");
    dm.arg("-b").arg(&base).arg(&version);
    ctx.run("depmod (all modules)", &mut dm, Duration::from_secs(300))?;
    let src_mod = base.join("lib/modules").join(&version);
    let dep = modules::parse_modules_dep(
        &fs::read_to_string(src_mod.join("modules.dep")).map_err(io_err("reading modules.dep"))?,
    );
    let keep = modules::keep_set(&dep);

    let out_mod = tmp.path.join("modules/lib/modules").join(&version);
    for m in &keep {
        let dst = out_mod.join(m);
        fs::create_dir_all(dst.parent().unwrap()).map_err(io_err("creating module folders"))?;
        fs::copy(src_mod.join(m), &dst).map_err(io_err(format!("copying module {m}")))?;
    }
    for f in ["modules.order", "modules.builtin", "modules.builtin.modinfo"] {
        if src_mod.join(f).exists() {
            fs::copy(src_mod.join(f), out_mod.join(f)).map_err(io_err(format!("copying {f}")))?;
        }
    }
    let mut dm = Command::new("depmod");
    dm.arg("-b").arg(tmp.path.join("modules")).arg(&version);
    ctx.run("depmod (kept modules)", &mut dm, Duration::from_secs(300))?;

    // The initramfs: busybox + the modules to reach the root disk.
    let mut wanted = vec!["virtio_pci", "virtio_blk", "crc32c_generic", "ext4"];
    if arch == Arch::Aarch64 {
        wanted.insert(0, "virtio_mmio");
    }
    // Some kernels build these in (Debian's arm64 builds virtio in): skip those.
    let builtin = fs::read_to_string(src_mod.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(modules::module_name).collect();
    wanted.retain(|w| !builtin.iter().any(|b| b == w));
    let order = modules::load_order(&dep, &wanted).map_err(|m| BuildError::Step {
        step: "initramfs".into(),
        message: m,
        log: None,
    })?;
    let busybox =
        ["bin/busybox", "usr/bin/busybox"].into_iter().map(|p| extract.join(p)).find(|p| p.is_file()).ok_or_else(
            || BuildError::Step {
                step: "initramfs".into(),
                message: "busybox-static has no bin/busybox".into(),
                log: None,
            },
        )?;
    let init = recipe_file("initramfs/init").expect("embedded initramfs/init").0;
    let f = File::create(tmp.path.join("initrd.img")).map_err(io_err("creating initrd.img"))?;
    let mut c = crate::cpio::Cpio::new(io::BufWriter::new(f));
    let cpio_err = io_err("writing initrd.img");
    (|| -> io::Result<()> {
        for d in
            ["bin", "dev", "etc", "lib", "lib/modules", "newroot", "proc", "sys", "sbin", "usr", "usr/bin", "usr/sbin"]
        {
            c.dir(d, 0o755)?;
        }
        c.char_dev("dev/console", 0o600, 5, 1)?;
        c.char_dev("dev/null", 0o666, 1, 3)?;
        c.file("init", 0o755, init)?;
        c.file("bin/busybox", 0o755, &fs::read(&busybox)?)?;
        c.symlink("bin/sh", "busybox")?;
        let mut list = String::new();
        for m in &order {
            c.file_in(&format!("lib/modules/{version}/{m}"), 0o644, &fs::read(src_mod.join(m))?)?;
            list.push_str(&format!("{version}/{m}\n"));
        }
        c.file("etc/modules.order", 0o644, list.as_bytes())?;
        c.finish()?.flush()
    })()
    .map_err(cpio_err)?;
    fs::copy(&vmlinuz, tmp.path.join("vmlinuz")).map_err(io_err("copying vmlinuz"))?;
    // For UEFI disks: the kernel as an EFI executable (Debian's arm64
    // vmlinuz is a gzip-compressed Image, which firmware cannot start) and
    // systemd-boot as the loader at the removable-media path.
    let raw = fs::read(&vmlinuz).map_err(io_err("reading vmlinuz"))?;
    let efi_kernel = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
            .map_err(io_err("decompressing vmlinuz"))?;
        out
    } else {
        raw
    };
    if !efi_kernel.starts_with(b"MZ") {
        return Err(BuildError::Step {
            step: "kernel".into(),
            message: format!("{} is not an EFI executable (no MZ header): cannot build UEFI disks", vmlinuz.display()),
            log: None,
        });
    }
    write(&tmp.path.join("kernel.efi"), &efi_kernel, 0o644)?;
    let sdboot = extract.join(format!("usr/lib/systemd/boot/efi/systemd-boot{}.efi", efi_suffix(arch)));
    fs::copy(&sdboot, tmp.path.join("systemd-boot.efi")).map_err(io_err(format!("copying {}", sdboot.display())))?;
    let info = KernelInfo {
        version,
        modules_total: dep.len(),
        modules_kept: keep.len(),
        initramfs_modules: order.iter().map(|m| modules::module_name(m)).collect(),
    };
    write(&tmp.path.join("kernel.json"), serde_json::to_string_pretty(&info).expect("json").as_bytes(), 0o644)?;
    write(&tmp.path.join("done"), b"", 0o644)?;
    tmp.commit(dir, &["extract"])
}

/// Applets linked in the busybox base layer.
pub(crate) const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "cp", "date", "echo", "env", "false", "grep", "head", "hostname", "httpd", "id", "kill", "ls",
    "mkdir", "mv", "nc", "ps", "pwd", "rm", "sed", "sleep", "sort", "tail", "tee", "test", "touch", "true", "uname",
    "wc", "wget", "which",
];

pub(crate) fn build_containers(
    ctx: &mut Ctx,
    arch: Arch,
    dir: &Path,
    force: bool,
) -> Result<Vec<FixtureImage>, BuildError> {
    if force || !dir.join("done").exists() {
        let _l = lock(&ctx.root, &format!("containers-{arch}"))?;
        if force || !dir.join("done").exists() {
            ctx.say("container images: fixture/busybox:1 and fixture/redis:1 from Debian packages, no registry");
            make_containers(ctx, arch, dir)?;
        }
    }
    read_json(&dir.join("images.json"))
}

pub(crate) fn make_containers(ctx: &mut Ctx, arch: Arch, dir: &Path) -> Result<(), BuildError> {
    let tmp = TmpDir::new(dir)?;
    let tree = tmp.path.join("tree");
    let mut cmd = mmdebstrap();
    cmd.args(["--mode=root", "--variant=extract", "--format=directory"])
        .arg(format!("--architectures={}", debian_arch(arch)))
        .arg("--include=redis-tools,busybox-static")
        .arg(SUITE)
        .arg(&tree)
        .args(mmdebstrap_sources());
    ctx.run("mmdebstrap (container packages)", &mut cmd, Duration::from_secs(1800))?;
    let err = |what: &str| io_err(format!("building the {what} layer"));

    // Base layer shared by both images: busybox and a minimal /etc.
    let busybox = tree.join("bin/busybox");
    let mut base = vec![
        Entry { path: "bin".into(), mode: 0o755, kind: EntryKind::Dir },
        Entry { path: "bin/busybox".into(), mode: 0o755, kind: EntryKind::File(busybox) },
        Entry { path: "etc".into(), mode: 0o755, kind: EntryKind::Dir },
        Entry {
            path: "etc/passwd".into(),
            mode: 0o644,
            kind: EntryKind::Data(
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
            ),
        },
        Entry {
            path: "etc/group".into(),
            mode: 0o644,
            kind: EntryKind::Data(b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
        },
        Entry { path: "root".into(), mode: 0o700, kind: EntryKind::Dir },
        Entry { path: "tmp".into(), mode: 0o1777, kind: EntryKind::Dir },
    ];
    for a in APPLETS {
        base.push(Entry { path: format!("bin/{a}"), mode: 0o777, kind: EntryKind::Symlink("busybox".into()) });
    }
    let layer = |name: &str, entries: Vec<Entry>| -> Result<Layer, BuildError> {
        let tar = tmp.path.join(format!("layer-{name}.tar"));
        let (diff_id, size) = archive::write_layer(entries, &tar).map_err(err(name))?;
        Ok(Layer { name: name.into(), diff_id, size, tar })
    };
    let l_base = layer("busybox", base)?;
    let l_web = layer(
        "web",
        vec![
            Entry { path: "www".into(), mode: 0o755, kind: EntryKind::Dir },
            Entry {
                path: "www/index.html".into(),
                mode: 0o644,
                kind: EntryKind::Data(b"airboot fixture web: ok\n".to_vec()),
            },
        ],
    )?;
    let drop_prefixes = [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
        "usr/share/bug",
        "var",
        "dev",
        "tmp",
        "proc",
        "sys",
        "run",
        "bin/busybox",
        "usr/share/doc-base",
    ];
    let is_redis = |p: &str| p.starts_with("usr/bin/redis-");
    let libs_select =
        |p: &str| !is_redis(p) && !drop_prefixes.iter().any(|d| p == *d || p.starts_with(&format!("{d}/")));
    let l_libs = layer("libs", archive::collect(&tree, &libs_select).map_err(err("libs"))?)?;
    let mut redis =
        archive::collect(&tree, &|p: &str| is_redis(p) || p == "usr" || p == "usr/bin").map_err(err("redis"))?;
    // Debian's redis-server package only adds this link to the server binary.
    redis.push(Entry {
        path: "usr/bin/redis-server".into(),
        mode: 0o777,
        kind: EntryKind::Symlink("redis-check-rdb".into()),
    });
    let l_redis = layer("redis", redis)?;

    let path_env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string();
    let variant = (arch == Arch::Aarch64).then_some("v8");
    let defs: Vec<(&str, &str, Vec<Layer>, ImageConfig)> = vec![
        (
            "fixture/busybox:1",
            "fixture-busybox-1.tar",
            vec![l_base.clone(), l_web],
            ImageConfig {
                cmd: ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"].map(String::from).to_vec(),
                env: vec![path_env.clone()],
                working_dir: None,
                healthcheck: None,
            },
        ),
        (
            "fixture/redis:1",
            "fixture-redis-1.tar",
            vec![l_base, l_libs, l_redis],
            ImageConfig {
                cmd: [
                    "redis-server",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                    "--protected-mode",
                    "no",
                ]
                .map(String::from)
                .to_vec(),
                env: vec![path_env],
                working_dir: Some("/data".into()),
                // A generous timeout: under TCG a `docker exec` alone can take seconds.
                healthcheck: Some((
                    ["CMD", "redis-cli", "-h", "127.0.0.1", "ping"].map(String::from).to_vec(),
                    5,
                    30,
                    10,
                )),
            },
        ),
    ];
    let mut images = Vec::new();
    for (reference, file, layers, cfg) in defs {
        let config = archive::config_json(arch.oci(), variant, &layers, &cfg);
        let id = archive::write_docker_archive(&tmp.path.join(file), &config, &layers, None).map_err(err(reference))?;
        let size = fs::metadata(tmp.path.join(file)).map(|m| m.len()).unwrap_or(0);
        images.push(FixtureImage {
            reference: reference.into(),
            id,
            archive: file.into(),
            layers: layers.iter().map(|l| l.diff_id.clone()).collect(),
            size,
        });
    }
    for l in fs::read_dir(&tmp.path).map_err(io_err("listing layers"))?.flatten() {
        if l.file_name().to_string_lossy().starts_with("layer-") {
            let _ = fs::remove_file(l.path());
        }
    }
    write(&tmp.path.join("images.json"), serde_json::to_string_pretty(&images).expect("json").as_bytes(), 0o644)?;
    write(&tmp.path.join("done"), b"", 0o644)?;
    tmp.commit(dir, &["tree"])
}

/// The suffix UEFI uses for an architecture (`BOOTX64.EFI`, `systemd-bootaa64.efi`).
pub(crate) fn efi_suffix(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x64",
        Arch::Aarch64 => "aa64",
    }
}

//! Assembling a fixture from the cached stages: the device's root
//! filesystem (overlay, units, probe, pre-seeded store or archives), then
//! the disk: a bare ext4 for direct boot, or a GPT whole disk with an EFI
//! system partition for UEFI.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airboot_model::{Arch, Engine};
use airboot_qemu::process::require;

use crate::stages::efi_suffix;
use crate::stages::{KernelInfo, build_containers, build_kernel, build_rootfs};
use crate::util::{
    BuildError, Ctx, Progress, TmpDir, check_foreign, io_err, is_root, lock, read_json, stage_dir, write,
};
use crate::{
    Fixture, FixtureBoot, FixtureImage, FixtureManifest, containers_key, fixture_dir, fixture_key, kernel_append,
    kernel_key, recipe_tree, rootfs_key,
};

/// Build a fixture (and whatever stages it needs) unless it is cached.
pub fn build(root: &Path, name: &str, force: bool, progress: Progress) -> Result<Fixture, BuildError> {
    let def = crate::find(name).ok_or_else(|| BuildError::Unknown(name.to_string()))?;
    if !force && let Some(f) = crate::lookup(root, &def) {
        return Ok(f);
    }
    if !is_root() {
        return Err(BuildError::NotRoot(name.to_string()));
    }
    for tool in ["mmdebstrap", "unshare", "mkfs.ext4", "qemu-img", "depmod", "dpkg-query"] {
        require(tool)?;
    }
    if def.variant.preseeds() {
        match def.engine {
            Engine::Docker => require("dockerd").map(|_| ())?,
            _ => require("podman").and_then(|_| require("unshare")).map(|_| ())?,
        }
    }
    check_foreign(def.arch)?;
    let probe = crate::probe_binary(def.arch).map_err(|message| BuildError::Step {
        step: "guest probe".into(),
        message,
        log: None,
    })?;
    let probe_hash = crate::file_hash(&probe).map_err(|message| BuildError::Step {
        step: "guest probe".into(),
        message,
        log: None,
    })?;
    fs::create_dir_all(root).map_err(io_err(format!("creating the cache {}", root.display())))?;
    let _lock = lock(root, name)?;
    if !force && let Some(f) = crate::lookup(root, &def) {
        return Ok(f); // built by someone else while we waited
    }
    let started = Instant::now();
    let final_dir = fixture_dir(root, &def, &probe_hash);
    fs::create_dir_all(final_dir.parent().unwrap()).map_err(io_err("creating the fixtures folder"))?;
    let tmp = TmpDir::new(&final_dir)?;
    let mut ctx = Ctx {
        root: root.to_path_buf(),
        log: tmp.path.join("build.log"),
        progress,
        step: 0,
        steps: 0,
        scratch: airboot_qemu::scratch::temp_dir("build").ok(),
    };

    let rootfs_dir = stage_dir(
        root,
        &crate::rootfs_stage(def.engine, def.init),
        def.arch,
        &rootfs_key(def.arch, def.engine, def.init),
    );
    let kernel_dir = stage_dir(root, "kernel", def.arch, &kernel_key(def.arch));
    let containers_dir = stage_dir(root, "containers", def.containers, &containers_key(def.containers));
    ctx.steps = 3
        + usize::from(def.variant == crate::Variant::StoreCorrupt)
        + usize::from(force || !rootfs_dir.join("done").exists())
        + usize::from(force || !kernel_dir.join("done").exists())
        + usize::from(force || !containers_dir.join("done").exists());

    build_rootfs(&mut ctx, def.arch, def.engine, def.init, &rootfs_dir, force)?;
    build_kernel(&mut ctx, def.arch, &kernel_dir, force)?;
    let images = build_containers(&mut ctx, def.containers, &containers_dir, force)?;
    let kernel: KernelInfo = read_json(&kernel_dir.join("kernel.json"))?;

    // Assemble the device's root filesystem.
    ctx.say(&format!("assembling the {} root filesystem", def.variant.as_str()));
    let staging = tmp.path.join("rootfs");
    let mut cp = Command::new("cp");
    cp.arg("-a").arg("--reflink=auto").arg(rootfs_dir.join("root")).arg(&staging);
    ctx.run("copying the base rootfs", &mut cp, Duration::from_secs(600))?;
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(kernel_dir.join("modules/lib/modules")).arg(staging.join("usr/lib/"));
    ctx.run("installing kernel modules", &mut cp, Duration::from_secs(300))?;
    // Files of every fixture, then the engine's, then the variant's (which
    // may replace some of them), then the init system's.
    let mut units = Vec::new();
    for dir in overlays(def.engine, def.variant, def.init) {
        units.extend(install_overlay(&staging, &dir)?);
    }
    if def.variant.own_stack() {
        let sys = staging.join("etc/systemd/system");
        for u in units.iter().filter(|u| u.starts_with("container-")) {
            fs::remove_file(sys.join(u)).map_err(io_err(format!("leaving out {u}")))?;
        }
        units.retain(|u| !u.starts_with("container-"));
    }
    if def.variant.read_only_root() {
        // Mount points for the data partition and containerd's state.
        for d in ["data", "var/lib/containerd"] {
            fs::create_dir_all(staging.join(d)).map_err(io_err(format!("creating {d}")))?;
        }
    }
    if def.init == crate::Init::Sysvinit {
        enable_init_scripts(&ctx, &staging)?;
    }
    units.sort();
    units.dedup();
    let probe_data = fs::read(&probe).map_err(io_err(format!("reading {}", probe.display())))?;
    write(&staging.join("usr/local/sbin/airboot-probe"), &probe_data, 0o755)?;
    configure_systemd(&staging, &units)?;
    if def.boot == FixtureBoot::Uefi {
        let fstab = "# The root filesystem is partition 2 of a GPT disk (partition 1 is the EFI system partition).\n/dev/vda2\t/\text4\trw,errors=remount-ro\t0\t1\n/dev/vda1\t/boot/efi\tvfat\tumask=0077,nofail\t0\t2\n";
        write(&staging.join("etc/fstab"), fstab.as_bytes(), 0o644)?;
        fs::create_dir_all(staging.join("boot/efi")).map_err(io_err("creating boot/efi"))?;
    }
    // An empty root password: a developer reproducing a failure can log in
    // on the console. Fixtures are test images, never shipped.
    edit_root_password(&staging)?;
    write(&staging.join("etc/machine-id"), b"", 0o444)?;

    let mut fixture_images = Vec::new();
    let mut images = match def.engine {
        // Podman names a local image localhost/<name>.
        Engine::Podman => {
            images.into_iter().map(|i| FixtureImage { reference: format!("localhost/{}", i.reference), ..i }).collect()
        }
        _ => images,
    };
    match def.variant {
        v if v.preseeds() && def.engine == Engine::Podman => {
            ctx.say("pre-seeding /var/lib/containers/storage with podman --root on the build host");
            crate::seed::podman(&ctx, &staging.join("var/lib/containers/storage"), &containers_dir, &images)?;
        }
        v if v.preseeds() => {
            ctx.say("pre-seeding /var/lib/docker with a private dockerd on the build host");
            let driver = v.storage_driver();
            crate::seed::docker(&ctx, &staging.join("var/lib/docker"), &containers_dir, &images, driver)?;
            if v == crate::Variant::StoreCorrupt {
                let f = crate::seed::corrupt_a_layer(&staging.join("var/lib/docker"))?;
                ctx.say(&format!("zeroed the first 4 KiB of {} (the store-corrupt control)", f.display()));
            }
        }
        crate::Variant::Restorable => {
            ctx.say("writing the apps' OCI layout with the rootfs's own skopeo (/usr/share/apps-reset)");
            // skopeo rewrites each config for OCI: dockerd gets the
            // layout's config, so that is the image ID the device has.
            images = crate::seed::oci_layout(&ctx, &staging, &containers_dir, &images)?;
        }
        _ => {
            ctx.say("adding the image archives and the first-boot loader");
            let dir = staging.join("usr/share/airboot/images");
            fs::create_dir_all(&dir).map_err(io_err("creating usr/share/airboot/images"))?;
            let mut list = String::from("# archive  image-id  reference (read by airboot-load-images)\n");
            for i in &images {
                fs::copy(containers_dir.join(&i.archive), dir.join(&i.archive))
                    .map_err(io_err(format!("copying {}", i.archive)))?;
                list.push_str(&format!("{} {} {}\n", i.archive, i.id, i.reference));
            }
            write(&dir.join("images.list"), list.as_bytes(), 0o644)?;
        }
    }
    fixture_images.extend(images.iter().cloned());

    let packages = package_versions(&staging);

    let used = du(&staging).map_err(io_err("measuring the rootfs"))?;
    let root_size = ((used as f64 * 1.25) as u64 + (1 << 30)).div_ceil(64 << 20) * (64 << 20);
    let raw = tmp.path.join("disk.raw");
    let append = match def.boot {
        FixtureBoot::Direct if def.variant.read_only_root() => {
            ctx.say("writing the GPT disk: ext4 root (mounted read-only) and ext4 data partition, then qcow2");
            write_data_disk(&ctx, def.arch, &staging, &raw, root_size)?;
            // The initramfs mounts the root as the kernel line says.
            kernel_append(def.arch, "/dev/vda1").replace(" rw ", " ro ")
        }
        FixtureBoot::Direct => {
            ctx.say("writing the ext4 disk (mkfs.ext4 -d) and converting it to qcow2");
            File::create(&raw).and_then(|f| f.set_len(root_size)).map_err(io_err("creating disk.raw"))?;
            mkfs_root(&ctx, &staging, &raw, None, ROOT_LABEL)?;
            if def.variant == crate::Variant::NoSpace {
                leave_free(&ctx, &raw, 40 * MIB)?;
            }
            kernel_append(def.arch, "/dev/vda")
        }
        FixtureBoot::Uefi => {
            ctx.say("writing the GPT disk: EFI system partition (systemd-boot) and ext4 root, then qcow2");
            let append = kernel_append(def.arch, "/dev/vda2");
            write_uefi_disk(&ctx, def.arch, &staging, &kernel_dir, &raw, root_size, &append)?;
            append
        }
    };
    let mut conv = Command::new("qemu-img");
    conv.args(["convert", "-q", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(tmp.path.join("disk.qcow2"));
    ctx.run("qemu-img convert", &mut conv, Duration::from_secs(900))?;
    fs::remove_file(&raw).map_err(io_err("removing disk.raw"))?;
    fs::remove_dir_all(&staging).map_err(io_err("removing the staging rootfs"))?;
    fs::copy(kernel_dir.join("vmlinuz"), tmp.path.join("vmlinuz")).map_err(io_err("copying the kernel"))?;
    fs::copy(kernel_dir.join("initrd.img"), tmp.path.join("initrd.img")).map_err(io_err("copying the initramfs"))?;

    let manifest = FixtureManifest {
        schema: "airboot.fixture/v1".into(),
        name: def.name.into(),
        arch: def.arch.as_str().into(),
        variant: def.variant,
        containers_arch: def.containers.as_str().into(),
        description: def.description.into(),
        key: fixture_key(&def, &probe_hash),
        boot: def.boot.as_str().into(),
        disk: "disk.qcow2".into(),
        disk_format: "qcow2".into(),
        kernel: "vmlinuz".into(),
        initrd: "initrd.img".into(),
        append,
        kernel_version: kernel.version.clone(),
        engine: def.engine.as_str().into(),
        probe: true,
        images: fixture_images,
        packages,
        built_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        build_seconds: started.elapsed().as_secs_f64(),
    };
    write(&tmp.path.join("fixture.json"), serde_json::to_string_pretty(&manifest).expect("json").as_bytes(), 0o644)?;
    tmp.commit(&final_dir, &[])?;
    crate::lookup(root, &def).ok_or_else(|| BuildError::Step {
        step: "finishing".into(),
        message: format!("the build in {} is incomplete", final_dir.display()),
        log: None,
    })
}

// ------------------------------------------------------------- the rootfs

/// The overlay folders of a fixture, in the order they are copied: every
/// fixture's files (`base`), the engine's, then the variant's.
fn overlays(engine: Engine, variant: crate::Variant, init: crate::Init) -> Vec<String> {
    let variant_def = variant;
    let variant = match engine {
        Engine::Docker => variant.as_str().to_string(),
        e => format!("{e}-{}", variant.as_str()),
    };
    let mut dirs = vec!["overlay/base".into(), format!("overlay/{engine}")];
    if let Some(base) = variant_def.builds_on() {
        dirs.push(format!("overlay/{}", base.as_str()));
    }
    dirs.push(format!("overlay/{variant}"));
    if init != crate::Init::Systemd {
        dirs.push(format!("overlay/{}", init.as_str()));
    }
    dirs
}

/// Enable the init scripts the sysvinit overlay brings (their LSB
/// headers order them), with the rootfs's own update-rc.d.
fn enable_init_scripts(ctx: &Ctx, root: &Path) -> Result<(), BuildError> {
    for (rel, _, _) in recipe_tree("overlay/sysvinit") {
        let Some(name) = rel.strip_prefix("etc/init.d/") else { continue };
        let mut cmd = Command::new("chroot");
        cmd.arg(root).args(["/usr/sbin/update-rc.d", name, "defaults"]);
        ctx.run(&format!("update-rc.d {name} defaults"), &mut cmd, Duration::from_secs(120))?;
    }
    Ok(())
}

/// Copy an embedded overlay into the rootfs; returns the unit files it
/// holds that want to be enabled.
fn install_overlay(root: &Path, prefix: &str) -> Result<Vec<String>, BuildError> {
    let mut units = Vec::new();
    for (rel, data, mode) in recipe_tree(prefix) {
        write(&root.join(rel), data, mode)?;
        if rel.starts_with("etc/systemd/system/")
            && rel.ends_with(".service")
            && String::from_utf8_lossy(data).lines().any(|l| l.trim() == "WantedBy=multi-user.target")
        {
            units.push(rel.rsplit('/').next().unwrap().to_string());
        }
    }
    Ok(units)
}

/// Units that only cost boot time or fail without hardware in a VM.
const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
];

fn configure_systemd(root: &Path, units: &[String]) -> Result<(), BuildError> {
    let sys = root.join("etc/systemd/system");
    let wants = sys.join("multi-user.target.wants");
    fs::create_dir_all(&wants).map_err(io_err("creating multi-user.target.wants"))?;
    for u in units {
        let link = wants.join(u);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{u}"), &link)
            .map_err(io_err(format!("enabling {u}")))?;
    }
    for m in MASKED {
        let link = sys.join(m);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).map_err(io_err(format!("masking {m}")))?;
    }
    Ok(())
}

fn edit_root_password(root: &Path) -> Result<(), BuildError> {
    let p = root.join("etc/shadow");
    let text = fs::read_to_string(&p).map_err(io_err("reading etc/shadow"))?;
    let out: String = text
        .lines()
        .map(|l| match l.strip_prefix("root:") {
            Some(rest) => format!("root::{}\n", rest.split_once(':').map(|x| x.1).unwrap_or("")),
            None => format!("{l}\n"),
        })
        .collect();
    write(&p, out.as_bytes(), 0o640)
}

fn package_versions(root: &Path) -> BTreeMap<String, String> {
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={}", root.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Package} ${Version}\n", "docker.io", "containerd", "runc", "podman", "crun", "conmon"])
        .args(["systemd", "linux-base"])
        .output();
    let mut m = BTreeMap::new();
    if let Ok(o) = out {
        for l in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some((p, v)) = l.split_once(' ')
                && !v.is_empty()
            {
                m.insert(p.to_string(), v.to_string());
            }
        }
    }
    m
}

/// Disk usage in bytes (allocated blocks, symlinks not followed).
pub fn du(p: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(p)?;
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        for e in fs::read_dir(p)? {
            total += du(&e?.path())?;
        }
    }
    Ok(total)
}

// ------------------------------------------------------------- the disks

/// `mkfs.ext4 -d`: the staging tree as an ext4 filesystem, either the whole
/// file or `(offset, size)` bytes inside it (a partition), without loop
/// mounts.
fn mkfs_root(ctx: &Ctx, staging: &Path, file: &Path, at: Option<(u64, u64)>, label: &str) -> Result<(), BuildError> {
    let mut ext = String::from("lazy_itable_init=0,lazy_journal_init=0,nodiscard");
    if let Some((offset, _)) = at {
        ext.push_str(&format!(",offset={offset}"));
    }
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", label, "-b", "4096", "-E", &ext, "-d"]).arg(staging).arg(file);
    if let Some((_, size)) = at {
        // With -b, a size without suffix counts blocks.
        mkfs.arg((size / 4096).to_string());
    }
    ctx.run("mkfs.ext4", &mut mkfs, Duration::from_secs(900))
}

/// Shrink the ext4 filesystem `fs` to its contents (resize2fs -M) and
/// fill it with a file until `free` bytes are left (the no-space control).
fn leave_free(ctx: &Ctx, fs: &Path, free: u64) -> Result<(), BuildError> {
    // resize2fs wants a freshly checked filesystem (a new one is clean).
    ctx.run("e2fsck", Command::new("e2fsck").args(["-fy"]).arg(fs), Duration::from_secs(300))?;
    ctx.run("resize2fs -M", Command::new("resize2fs").arg("-M").arg(fs), Duration::from_secs(600))?;
    let out = Command::new("dumpe2fs").arg("-h").arg(fs).output().map_err(io_err("running dumpe2fs"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| -> u64 {
        text.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let now_free = field("Free blocks:") * field("Block size:");
    if now_free <= free {
        return Ok(());
    }
    let filler = fs.with_file_name("filler");
    // Not zeros: debugfs writes a file's zero blocks as holes.
    std::fs::write(&filler, vec![0xa5u8; (now_free - free) as usize]).map_err(io_err("writing the filler"))?;
    let r = ctx.run(
        "debugfs write /filler",
        Command::new("debugfs").args(["-w", "-R"]).arg(format!("write {} /filler", filler.display())).arg(fs),
        Duration::from_secs(600),
    );
    let _ = std::fs::remove_file(&filler);
    r
}

const MIB: u64 = 1 << 20;
const ROOT_LABEL: &str = "airboot-root";
/// The read-only-root fixtures' data partition: the store's upper
/// directory and containerd's state (vfs copies each container's image).
const DATA_SIZE: u64 = 2048 * MIB;
/// The Discoverable Partitions Specification's type for `/var`.
const GPT_VAR: &str = "4D21B016-B534-45C2-A9FB-5C16E091FD2D";

/// A GPT disk for direct boot with a read-only root: partition 1 the ext4
/// root, typed for `arch`; partition 2 an ext4 data partition (typed as
/// `/var`) holding the folders the image's /etc/fstab mounts from
/// (`docker/upper`, `docker/work`, `containerd`).
fn write_data_disk(ctx: &Ctx, arch: Arch, staging: &Path, raw: &Path, root_size: u64) -> Result<(), BuildError> {
    require("sfdisk")?;
    let root_start = MIB;
    let data_start = root_start + root_size;
    let total = data_start + DATA_SIZE + MIB;
    File::create(raw).and_then(|f| f.set_len(total)).map_err(io_err("creating disk.raw"))?;
    let script = format!(
        "label: gpt\nfirst-lba: 2048\nstart={}, size={}, type={}, name=\"root\"\nstart={}, size={}, type={GPT_VAR}, name=\"data\"\n",
        root_start / 512,
        root_size / 512,
        root_type(arch),
        data_start / 512,
        DATA_SIZE / 512,
    );
    sfdisk(ctx, raw, &script)?;
    mkfs_root(ctx, staging, raw, Some((root_start, root_size)), ROOT_LABEL)?;
    let data = raw.with_file_name("data");
    for d in ["docker/upper", "docker/work", "containerd"] {
        fs::create_dir_all(data.join(d)).map_err(io_err(format!("creating data/{d}")))?;
    }
    let r = mkfs_root(ctx, &data, raw, Some((data_start, DATA_SIZE)), "airboot-data");
    let _ = fs::remove_dir_all(&data);
    r
}

/// Write the partition table `script` (sfdisk's input) into `raw`.
fn sfdisk(ctx: &Ctx, raw: &Path, script: &str) -> Result<(), BuildError> {
    let script_file = raw.with_file_name("sfdisk.script");
    write(&script_file, script.as_bytes(), 0o644)?;
    let mut sf = Command::new("sh");
    sf.arg("-c").arg("sfdisk --no-reread --no-tell-kernel -q \"$1\" < \"$2\"").arg("sh").arg(raw).arg(&script_file);
    let r = ctx.run("sfdisk (GPT)", &mut sf, Duration::from_secs(60));
    let _ = fs::remove_file(&script_file);
    r
}
/// The EFI system partition: systemd-boot, the kernel and the initramfs.
const ESP_SIZE: u64 = 128 * MIB;

/// The GPT partition type of a Linux root partition for `arch`
/// (Discoverable Partitions Specification).
fn root_type(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        Arch::Aarch64 => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
    }
}

/// A GPT whole disk: partition 1 the EFI system partition (FAT, made with
/// mkfs.vfat and mtools), partition 2 the ext4 root. The firmware finds
/// systemd-boot at `EFI/BOOT/BOOT<ARCH>.EFI` (no NVRAM entry needed), and
/// systemd-boot the one loader entry.
fn write_uefi_disk(
    ctx: &Ctx,
    arch: Arch,
    staging: &Path,
    kernel_dir: &Path,
    raw: &Path,
    root_size: u64,
    append: &str,
) -> Result<(), BuildError> {
    for tool in ["sfdisk", "mkfs.vfat", "mcopy", "mmd"] {
        require(tool)?;
    }
    let esp_start = MIB;
    let root_start = esp_start + ESP_SIZE;
    // 1 MiB at the end for the backup GPT.
    let total = root_start + root_size + MIB;
    File::create(raw).and_then(|f| f.set_len(total)).map_err(io_err("creating disk.raw"))?;
    let script = format!(
        "label: gpt\nfirst-lba: 2048\nstart={}, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"\nstart={}, size={}, type={}, name=\"root\"\n",
        esp_start / 512,
        ESP_SIZE / 512,
        root_start / 512,
        root_size / 512,
        root_type(arch)
    );
    sfdisk(ctx, raw, &script)?;
    mkfs_root(ctx, staging, raw, Some((root_start, root_size)), ROOT_LABEL)?;

    // The ESP as its own file, then copied into place.
    let esp = raw.with_file_name("esp.img");
    let _ = fs::remove_file(&esp);
    let mut mk = Command::new("mkfs.vfat");
    mk.args(["-F", "32", "-n", "ESP", "-C"]).arg(&esp).arg((ESP_SIZE / 1024).to_string());
    ctx.run("mkfs.vfat (ESP)", &mut mk, Duration::from_secs(60))?;
    let mut mmd = Command::new("mmd");
    mmd.arg("-i").arg(&esp).args(["::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"]);
    ctx.run("mmd (ESP folders)", &mut mmd, Duration::from_secs(60))?;
    let loader_conf = "timeout 0\ndefault airboot.conf\neditor no\nconsole-mode keep\n";
    let entry = format!("title airboot fixture\nlinux /vmlinuz.efi\ninitrd /initrd.img\noptions {append}\n");
    write(&raw.with_file_name("loader.conf"), loader_conf.as_bytes(), 0o644)?;
    write(&raw.with_file_name("airboot.conf"), entry.as_bytes(), 0o644)?;
    let loader = format!("::/EFI/BOOT/BOOT{}.EFI", efi_suffix(arch).to_uppercase());
    let copies: [(PathBuf, &str); 5] = [
        (kernel_dir.join("systemd-boot.efi"), loader.as_str()),
        (kernel_dir.join("kernel.efi"), "::/vmlinuz.efi"),
        (kernel_dir.join("initrd.img"), "::/initrd.img"),
        (raw.with_file_name("loader.conf"), "::/loader/loader.conf"),
        (raw.with_file_name("airboot.conf"), "::/loader/entries/airboot.conf"),
    ];
    for (from, to) in &copies {
        let mut mc = Command::new("mcopy");
        mc.arg("-i").arg(&esp).arg(from).arg(to);
        ctx.run("mcopy (ESP)", &mut mc, Duration::from_secs(60))?;
    }
    let data = fs::read(&esp).map_err(io_err("reading esp.img"))?;
    {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(raw).map_err(io_err("opening disk.raw"))?;
        f.write_all_at(&data, esp_start).map_err(io_err("writing the ESP into disk.raw"))?;
    }
    for f in [esp, raw.with_file_name("loader.conf"), raw.with_file_name("airboot.conf")] {
        let _ = fs::remove_file(f);
    }
    // Read the result back with airboot's own readers: the partitions are
    // where the table says, and each holds what it should.
    let disk = File::open(raw).map_err(io_err("opening disk.raw"))?;
    let evidence = airboot_core::disk::detect::disk_evidence(&disk);
    match airboot_core::disk::detect::judge(&evidence) {
        airboot_core::disk::detect::Verdict::Known(a) if a == arch && evidence.len() >= 3 => Ok(()),
        v => Err(BuildError::Step {
            step: "checking the UEFI disk".into(),
            message: format!("the disk does not read back as an {arch} UEFI disk: {v:?} from {evidence:?}"),
            log: None,
        }),
    }
}

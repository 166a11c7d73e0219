//! The build pipeline. Every stage builds into a temporary folder next to
//! its final place and renames it when complete, so a cache entry is either
//! whole or absent; a lock file serialises concurrent builds of a stage.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airboot_core::scenario::Arch;
use airboot_proto::http;
use airboot_qemu::process::{self, GroupGuard, RunError, harden, interrupted, require, run_supervised};

use crate::archive::{self, Entry, EntryKind, ImageConfig, Layer};
use crate::modules;
use crate::{
    Fixture, FixtureImage, FixtureManifest, SUITE, containers_key, fixture_dir, fixture_key, kernel_key, mirrors,
    recipe_file, recipe_tree, rootfs_key,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("unknown fixture {0:?}: `airboot images list` shows the fixtures that can be built")]
    Unknown(String),
    #[error(
        "building fixtures needs root (mmdebstrap --mode=root, a private dockerd, files owned by other users): run `sudo airboot images build {0}`"
    )]
    NotRoot(String),
    #[error("{0}")]
    Tool(#[from] RunError),
    #[error("{step}: {message}{}", log.as_ref().map(|l| format!("\n  full log: {}", l.display())).unwrap_or_default())]
    Step { step: String, message: String, log: Option<PathBuf> },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Progress messages go here (the CLI prints them).
pub type Progress<'a> = &'a mut dyn FnMut(&str);

struct Ctx<'a> {
    root: PathBuf,
    log: PathBuf,
    progress: Progress<'a>,
    step: usize,
    steps: usize,
}

impl Ctx<'_> {
    fn say(&mut self, msg: &str) {
        self.step += 1;
        let line = format!("[{}/{}] {msg}", self.step, self.steps);
        (self.progress)(&line);
        let _ = self.append_log(&format!("\n=== {line}\n"));
    }

    fn append_log(&self, s: &str) -> io::Result<()> {
        OpenOptions::new().create(true).append(true).open(&self.log)?.write_all(s.as_bytes())
    }

    /// Run a command with its output in the build log; on failure the
    /// error carries the log's last lines.
    fn run(&self, step: &str, cmd: &mut Command, timeout: Duration) -> Result<(), BuildError> {
        let _ = self.append_log(&format!("$ {cmd:?}\n"));
        let log =
            OpenOptions::new().create(true).append(true).open(&self.log).map_err(io_err("opening the build log"))?;
        let log2 = log.try_clone().map_err(io_err("opening the build log"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        match run_supervised(cmd, Some(timeout)) {
            Ok(_) => Ok(()),
            Err(RunError::Missing { program, package }) => {
                Err(BuildError::Tool(RunError::Missing { program, package }))
            }
            Err(e) => Err(BuildError::Step {
                step: step.to_string(),
                message: format!("{e}\n{}", tail(&self.log, 15)),
                log: Some(self.log.clone()),
            }),
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// Holds a stage's lock file.
struct Lock(File);

fn lock(root: &Path, name: &str) -> Result<Lock, BuildError> {
    let dir = root.join("locks");
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let f = File::create(dir.join(format!("{name}.lock"))).map_err(io_err("creating a lock file"))?;
    f.lock().map_err(io_err("locking the build cache"))?;
    Ok(Lock(f))
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// A temporary build folder, removed unless it was committed.
struct TmpDir {
    path: PathBuf,
    keep: bool,
}

impl TmpDir {
    fn new(final_path: &Path) -> Result<TmpDir, BuildError> {
        let path = PathBuf::from(format!("{}.tmp-{}", final_path.display(), std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).map_err(io_err(format!("removing {}", path.display())))?;
        }
        fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(TmpDir { path, keep: false })
    }
    fn commit(mut self, final_path: &Path, drop_inside: &[&str]) -> Result<(), BuildError> {
        for d in drop_inside {
            let p = self.path.join(d);
            if p.exists() {
                fs::remove_dir_all(&p).map_err(io_err(format!("removing {}", p.display())))?;
            }
        }
        if final_path.exists() {
            fs::remove_dir_all(final_path).map_err(io_err(format!("replacing {}", final_path.display())))?;
        }
        fs::rename(&self.path, final_path).map_err(io_err(format!("moving the build to {}", final_path.display())))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !self.keep && std::env::var_os("AIRBOOT_KEEP_FAILED_BUILD").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn is_root() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    uid == 0
}

fn mmdebstrap_sources() -> Vec<String> {
    let (m, s) = mirrors();
    vec![
        format!("deb {m} {SUITE} main"),
        format!("deb {m} {SUITE}-updates main"),
        format!("deb {s} {SUITE}-security main"),
    ]
}

/// Building a foreign-architecture rootfs runs its maintainer scripts
/// through qemu-user: check binfmt is there before starting.
fn check_foreign(arch: Arch) -> Result<(), BuildError> {
    if Arch::host() == Some(arch) {
        return Ok(());
    }
    let name = match arch {
        Arch::Aarch64 => "qemu-aarch64",
        Arch::X86_64 => "qemu-x86_64",
    };
    if Path::new("/proc/sys/fs/binfmt_misc").join(name).exists() {
        return Ok(());
    }
    Err(BuildError::Step {
        step: format!("{arch} rootfs"),
        message: format!(
            "building an {arch} rootfs on this {} host needs qemu-user binfmt: install `qemu-user-static binfmt-support` and run `mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc` (scripts/setup.sh does both)",
            std::env::consts::ARCH
        ),
        log: None,
    })
}

/// Build a fixture (and whatever stages it needs) unless it is cached.
pub fn build(root: &Path, name: &str, force: bool, progress: Progress) -> Result<Fixture, BuildError> {
    let def = crate::find(name).ok_or_else(|| BuildError::Unknown(name.to_string()))?;
    if !force && let Some(f) = crate::lookup(root, &def) {
        return Ok(f);
    }
    if !is_root() {
        return Err(BuildError::NotRoot(name.to_string()));
    }
    for tool in ["mmdebstrap", "mkfs.ext4", "qemu-img", "depmod", "dpkg-query"] {
        require(tool)?;
    }
    if def.variant.preseeds() {
        require("dockerd")?;
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
    let mut ctx = Ctx { root: root.to_path_buf(), log: tmp.path.join("build.log"), progress, step: 0, steps: 0 };

    let rootfs_dir = stage_dir(root, "rootfs", def.arch, &rootfs_key(def.arch));
    let kernel_dir = stage_dir(root, "kernel", def.arch, &kernel_key(def.arch));
    let containers_dir = stage_dir(root, "containers", def.arch, &containers_key(def.arch));
    ctx.steps = 3
        + usize::from(force || !rootfs_dir.join("done").exists())
        + usize::from(force || !kernel_dir.join("done").exists())
        + usize::from(force || !containers_dir.join("done").exists());

    build_rootfs(&mut ctx, def.arch, &rootfs_dir, force)?;
    build_kernel(&mut ctx, def.arch, &kernel_dir, force)?;
    let images = build_containers(&mut ctx, def.arch, &containers_dir, force)?;
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
    // Common files, then the variant's (which may replace some of them).
    let mut units = install_overlay(&staging, "overlay/common")?;
    units.extend(install_overlay(&staging, &format!("overlay/{}", def.variant.as_str()))?);
    units.sort();
    units.dedup();
    let probe_data = fs::read(&probe).map_err(io_err(format!("reading {}", probe.display())))?;
    write(&staging.join("usr/local/sbin/airboot-probe"), &probe_data, 0o755)?;
    configure_systemd(&staging, &units)?;
    // An empty root password: a developer reproducing a failure can log in
    // on the console. Fixtures are test images, never shipped.
    edit_root_password(&staging)?;
    write(&staging.join("etc/machine-id"), b"", 0o444)?;

    let mut fixture_images = Vec::new();
    match def.variant {
        v if v.preseeds() => {
            ctx.say("pre-seeding /var/lib/docker with a private dockerd on the build host");
            preseed(&ctx, &staging.join("var/lib/docker"), &containers_dir, &images)?;
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

    ctx.say("writing the ext4 disk (mkfs.ext4 -d) and converting it to qcow2");
    let used = du(&staging).map_err(io_err("measuring the rootfs"))?;
    let size = ((used as f64 * 1.25) as u64 + (1 << 30)).div_ceil(64 << 20) * (64 << 20);
    let raw = tmp.path.join("disk.raw");
    File::create(&raw).and_then(|f| f.set_len(size)).map_err(io_err("creating disk.raw"))?;
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-L", "airboot-root", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d"])
        .arg(&staging)
        .arg(&raw);
    ctx.run("mkfs.ext4", &mut mkfs, Duration::from_secs(900))?;
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
        description: def.description.into(),
        key: fixture_key(&def, &probe_hash),
        boot: "direct".into(),
        disk: "disk.qcow2".into(),
        disk_format: "qcow2".into(),
        kernel: "vmlinuz".into(),
        initrd: "initrd.img".into(),
        append: format!(
            "console={},115200 root=/dev/vda rw rootfstype=ext4 net.ifnames=0 audit=0",
            def.arch.console_tty()
        ),
        kernel_version: kernel.version.clone(),
        engine: "docker".into(),
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

fn stage_dir(root: &Path, stage: &str, arch: Arch, key: &str) -> PathBuf {
    root.join(stage).join(format!("{arch}-{key}"))
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, BuildError> {
    let text = fs::read_to_string(p).map_err(io_err(format!("reading {}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| BuildError::Step {
        step: "reading the cache".into(),
        message: format!("{}: {e} (delete the folder to rebuild it)", p.display()),
        log: None,
    })
}

fn write(p: &Path, data: &[u8], mode: u32) -> Result<(), BuildError> {
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
    }
    // Replace rather than write through an existing symlink.
    if fs::symlink_metadata(p).is_ok() {
        fs::remove_file(p).map_err(io_err(format!("replacing {}", p.display())))?;
    }
    fs::write(p, data).map_err(io_err(format!("writing {}", p.display())))?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(io_err(format!("chmod {}", p.display())))
}

// ------------------------------------------------------------------ stages

fn build_rootfs(ctx: &mut Ctx, arch: Arch, dir: &Path, force: bool) -> Result<(), BuildError> {
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    let _l = lock(&ctx.root, &format!("rootfs-{arch}"))?;
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    ctx.say(&format!("mmdebstrap: Debian {SUITE} {} rootfs with systemd and docker.io (1–3 min)", arch.debian()));
    let tmp = TmpDir::new(dir)?;
    let packages: Vec<String> =
        String::from_utf8_lossy(recipe_file("rootfs-packages.txt").map(|f| f.0).unwrap_or_default())
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=minbase", "--format=directory"])
        .arg(format!("--architectures={}", arch.debian()))
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
struct KernelInfo {
    version: String,
    modules_total: usize,
    modules_kept: usize,
    initramfs_modules: Vec<String>,
}

fn build_kernel(ctx: &mut Ctx, arch: Arch, dir: &Path, force: bool) -> Result<(), BuildError> {
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    let _l = lock(&ctx.root, &format!("kernel-{arch}"))?;
    if !force && dir.join("done").exists() {
        return Ok(());
    }
    ctx.say(&format!(
        "kernel: extracting linux-image-{} and busybox-static, pruning modules, building the initramfs",
        arch.debian()
    ));
    let tmp = TmpDir::new(dir)?;
    let extract = tmp.path.join("extract");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=extract", "--format=directory"])
        .arg(format!("--architectures={}", arch.debian()))
        .arg(format!("--include=linux-image-{},busybox-static", arch.debian()))
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
        let mut dirs = std::collections::BTreeSet::new();
        let mut list = String::new();
        for m in &order {
            let rel = format!("lib/modules/{version}/{m}");
            let mut p = Path::new(&rel).parent();
            let mut chain = Vec::new();
            while let Some(d) = p {
                if d.as_os_str().is_empty() || d == Path::new("lib/modules") || d == Path::new("lib") {
                    break;
                }
                chain.push(d.to_string_lossy().into_owned());
                p = d.parent();
            }
            for d in chain.into_iter().rev() {
                if dirs.insert(d.clone()) {
                    c.dir(&d, 0o755)?;
                }
            }
            c.file(&rel, 0o644, &fs::read(src_mod.join(m))?)?;
            list.push_str(&format!("{version}/{m}\n"));
        }
        c.file("etc/modules.order", 0o644, list.as_bytes())?;
        c.finish()?.flush()
    })()
    .map_err(cpio_err)?;
    fs::copy(&vmlinuz, tmp.path.join("vmlinuz")).map_err(io_err("copying vmlinuz"))?;
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
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "cp", "date", "echo", "env", "false", "grep", "head", "hostname", "httpd", "id", "kill", "ls",
    "mkdir", "mv", "nc", "ps", "pwd", "rm", "sed", "sleep", "sort", "tail", "tee", "test", "touch", "true", "uname",
    "wc", "wget", "which",
];

fn build_containers(ctx: &mut Ctx, arch: Arch, dir: &Path, force: bool) -> Result<Vec<FixtureImage>, BuildError> {
    if force || !dir.join("done").exists() {
        let _l = lock(&ctx.root, &format!("containers-{arch}"))?;
        if force || !dir.join("done").exists() {
            ctx.say("container images: fixture/busybox:1 and fixture/redis:1 from Debian packages, no registry");
            make_containers(ctx, arch, dir)?;
        }
    }
    read_json(&dir.join("images.json"))
}

fn make_containers(ctx: &mut Ctx, arch: Arch, dir: &Path) -> Result<(), BuildError> {
    let tmp = TmpDir::new(dir)?;
    let tree = tmp.path.join("tree");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=extract", "--format=directory"])
        .arg(format!("--architectures={}", arch.debian()))
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

// ------------------------------------------------------------- the rootfs

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
        .args(["-W", "-f", "${Package} ${Version}\n", "docker.io", "containerd", "runc", "systemd", "linux-base"])
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
fn du(p: &Path) -> io::Result<u64> {
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

// ------------------------------------------------------------- preseeding

/// Load the image archives into `data_root` with a private dockerd on the
/// build host (the approach of seeding the writable partition at build
/// time), tag them, and strip what the device's dockerd must create itself.
fn preseed(ctx: &Ctx, data_root: &Path, containers_dir: &Path, images: &[FixtureImage]) -> Result<(), BuildError> {
    let dockerd = require("dockerd")?;
    // Unix socket paths are limited to 108 bytes: keep the runtime state short.
    let run = tempfile::Builder::new()
        .prefix("airboot-dk")
        .tempdir_in("/tmp")
        .map_err(io_err("creating a dockerd run folder"))?;
    let sock = run.path().join("docker.sock");
    fs::create_dir_all(data_root).map_err(io_err("creating var/lib/docker"))?;
    let log = OpenOptions::new().create(true).append(true).open(&ctx.log).map_err(io_err("opening the build log"))?;
    let log2 = log.try_clone().map_err(io_err("opening the build log"))?;
    let mut cmd = Command::new(&dockerd);
    cmd.arg("--data-root")
        .arg(data_root)
        .arg("--exec-root")
        .arg(run.path().join("exec"))
        .arg("--pidfile")
        .arg(run.path().join("docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=overlay2",
            "--log-level=warn",
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    harden(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| BuildError::Step {
        step: "starting dockerd".into(),
        message: e.to_string(),
        log: None,
    })?;
    let mut guard = GroupGuard::new(child.id(), "dockerd");
    let fail = |message: String| BuildError::Step {
        step: "pre-seeding /var/lib/docker".into(),
        message,
        log: Some(ctx.log.clone()),
    };

    // Wait for the API.
    let start = Instant::now();
    loop {
        if let Ok(s) = UnixStream::connect(&sock)
            && let Ok(r) = http::request(s, "GET", "/_ping", None, None, 1 << 10)
            && r.status == 200
        {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(fail(format!("dockerd exited ({st}) before answering:\n{}", tail(&ctx.log, 15))));
        }
        if interrupted() {
            return Err(BuildError::Tool(RunError::Interrupted { program: "dockerd".into() }));
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(fail(format!(
                "dockerd did not answer on {} within 60s:\n{}",
                sock.display(),
                tail(&ctx.log, 15)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let api = |method: &str, path: &str, body: Option<&Path>| -> Result<http::Response, BuildError> {
        let s = UnixStream::connect(&sock).map_err(|e| fail(format!("connecting to dockerd: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(300))).ok();
        let r = match body {
            Some(p) => {
                let mut f = File::open(p).map_err(io_err(format!("opening {}", p.display())))?;
                let len = f.metadata().map_err(io_err("stat"))?.len();
                http::request(s, method, path, Some("application/x-tar"), Some((&mut f, len)), 16 << 20)
            }
            None => http::request(s, method, path, None, None, 16 << 20),
        };
        r.map_err(|e| fail(format!("{method} {path}: {e}")))
    };
    for img in images {
        let r = api("POST", "/images/load?quiet=1", Some(&containers_dir.join(&img.archive)))?;
        let text = r.text();
        if r.status != 200 || text.contains("errorDetail") {
            return Err(fail(format!("loading {}: HTTP {} {}", img.archive, r.status, text.trim())));
        }
        let (repo, tag) = img.reference.rsplit_once(':').unwrap_or((&img.reference, "latest"));
        let r = api("POST", &format!("/images/{}/tag?repo={repo}&tag={tag}", img.id), None)?;
        if r.status != 201 {
            return Err(fail(format!(
                "tagging {} as {}: HTTP {} {}",
                img.id,
                img.reference,
                r.status,
                r.text().trim()
            )));
        }
    }
    let r = api("GET", "/images/json", None)?;
    let listed: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| fail(format!("reading the image list: {e}")))?;
    for img in images {
        let ok = listed.as_array().into_iter().flatten().any(|i| {
            i["Id"] == img.id.as_str()
                && i["RepoTags"].as_array().is_some_and(|t| t.iter().any(|t| t == img.reference.as_str()))
        });
        if !ok {
            return Err(fail(format!("after loading, dockerd does not list {} as {}", img.reference, img.id)));
        }
    }
    // Stop dockerd cleanly so its metadata is flushed.
    process::signal_group(child.id(), libc::SIGTERM);
    let stop = Instant::now();
    while child.try_wait().ok().flatten().is_none() && stop.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    guard.kill();
    let _ = child.wait();
    for d in ["network", "containerd", "tmp", "runtimes", "buildkit", "plugins", "swarm", "trust"] {
        let p = data_root.join(d);
        if p.exists() {
            fs::remove_dir_all(&p).map_err(io_err(format!("removing {}", p.display())))?;
        }
    }
    Ok(())
}

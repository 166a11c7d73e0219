//! airboot's fixture images: Debian guests with a container engine and a
//! small stack, built offline from Debian packages only, cached under
//! `~/.cache/airboot` and keyed by a hash of everything that shapes them.
//!
//! Build stages (each cached on its own, so editing a unit file does not
//! re-run debootstrap):
//! 1. `rootfs`: `mmdebstrap --variant=minbase` with systemd and docker.io;
//! 2. `kernel`: the Debian kernel package extracted (never installed in the
//!    target), modules pruned to what a virtio container host needs, and a
//!    busybox initramfs built on the host;
//! 3. `containers`: two container images made without a registry, as
//!    deterministic `docker save` archives;
//! 4. the fixture: rootfs + modules + recipe overlay + either a pre-seeded
//!    `/var/lib/docker` (a private dockerd on the build host loads the
//!    archives into the staging rootfs) or the archives with a first-boot
//!    loader, written into an ext4 filesystem without loop mounts.

pub mod archive;
pub mod board;
pub mod builder;
pub mod cpio;
pub mod modules;
mod seed;
mod stages;
mod util;

use std::path::{Path, PathBuf};

use airboot_model::{Arch, Engine};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod recipes {
    include!(concat!(env!("OUT_DIR"), "/recipes.rs"));
}

pub use builder::build;
pub use util::{BuildError, sweep_stale_builds};

/// The Debian release fixtures are built from.
pub const SUITE: &str = "bookworm";

/// How the fixture gets its container images onto the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// `/var/lib/docker` populated at build time: nothing to load on boot.
    Preseeded,
    /// `docker save` archives plus a first-boot unit that loads and tags them.
    LoadAtBoot,
    /// The same archives, loaded by a crash-safe first-boot unit: each
    /// image verified (`docker save` checks every layer against its
    /// diff_id) before it is tagged, the set reloaded when one fails.
    LoadAtBootSafe,
    /// The same archives, loaded by a unit with no once-only guard: it
    /// loads them again on every boot (the `load-every-boot` control).
    LoadEveryBoot,
    /// Preseeded, then one file of a seeded layer overwritten (same size):
    /// the store lists its images, a layer no longer matches its diff_id
    /// (the `store-corrupt` control).
    StoreCorrupt,
    /// Preseeded, with the web container run by dockerd with a restart
    /// policy and an entrypoint that fails at once (the
    /// `container-crash-loop` control).
    ContainerCrash,
    /// Preseeded, with a health check on the web container that fails
    /// while the device's clock is before the fixture's build (the
    /// `clock-before-image` control, booted with `[machine] rtc`).
    ClockCheck,
    /// Preseeded, with the store bound read-only by /etc/fstab (the
    /// `store-read-only` control).
    StoreReadOnly,
    /// Load-at-boot on a root filesystem shrunk to its contents and
    /// filled to 40 MiB from full: the system and the engine start, the
    /// first-boot load of the larger image runs out of space (the
    /// `store-no-space` control).
    NoSpace,
    /// Preseeded, plus a first-boot unit that pulls from a registry: an
    /// air-gap violation airboot must catch and name.
    Egress,
    /// Preseeded, the stack a docker-compose 1.29 project started by a
    /// unit at boot (a healthy service, one that waits for it, a
    /// one-shot), in place of the engine's container units.
    Compose,
    /// The compose stack with a dependency that never becomes healthy:
    /// compose never creates the service that waits for it.
    ComposeUnhealthy,
    /// Restorable apps (Foundries LmP): the images kept as an OCI layout
    /// written by skopeo at build time, copied into dockerd by skopeo at
    /// first boot and by an `apps-reset` unit that wipes the store.
    Restorable,
    /// Savoir-faire's third approach: the store built with the vfs driver
    /// at build time on a root filesystem mounted read-only, and
    /// `/var/lib/docker` an overlay whose upper directory is on a
    /// writable data partition (the disk is GPT: root, then data).
    VfsReadOnly,
    /// The vfs fixture with the overlay mount left out of /etc/fstab:
    /// dockerd meets its store on the read-only root (the
    /// `store-read-only` control for this layout).
    VfsNoOverlay,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Preseeded => "preseeded",
            Variant::LoadAtBoot => "load-at-boot",
            Variant::LoadAtBootSafe => "load-at-boot-safe",
            Variant::LoadEveryBoot => "load-every-boot",
            Variant::StoreCorrupt => "store-corrupt",
            Variant::ContainerCrash => "container-crash",
            Variant::ClockCheck => "clock-check",
            Variant::StoreReadOnly => "store-read-only",
            Variant::NoSpace => "no-space",
            Variant::Egress => "egress",
            Variant::Compose => "compose",
            Variant::ComposeUnhealthy => "compose-unhealthy",
            Variant::Restorable => "restorable",
            Variant::VfsReadOnly => "vfs-ro",
            Variant::VfsNoOverlay => "vfs-ro-no-overlay",
        }
    }
    /// The variant brings its own stack: the engine overlay's
    /// `container-*.service` units are left out.
    pub fn own_stack(self) -> bool {
        matches!(self, Variant::Compose | Variant::ComposeUnhealthy)
    }
    /// The variant whose files this one builds on (its overlay is copied
    /// first).
    pub fn builds_on(self) -> Option<Variant> {
        match self {
            Variant::NoSpace => Some(Variant::LoadAtBoot),
            Variant::ComposeUnhealthy => Some(Variant::Compose),
            Variant::VfsNoOverlay => Some(Variant::VfsReadOnly),
            _ => None,
        }
    }
    /// Whether /var/lib/docker is populated at build time.
    pub fn preseeds(self) -> bool {
        matches!(
            self,
            Variant::Preseeded
                | Variant::Egress
                | Variant::StoreCorrupt
                | Variant::ContainerCrash
                | Variant::ClockCheck
                | Variant::StoreReadOnly
                | Variant::Compose
                | Variant::ComposeUnhealthy
                | Variant::VfsReadOnly
                | Variant::VfsNoOverlay
        )
    }
    /// The storage driver the store is built with.
    pub fn storage_driver(self) -> &'static str {
        if self.read_only_root() { "vfs" } else { "overlay2" }
    }
    /// The root filesystem is mounted read-only and the disk has a
    /// writable data partition after it.
    pub fn read_only_root(self) -> bool {
        matches!(self, Variant::VfsReadOnly | Variant::VfsNoOverlay)
    }
}

/// The device's init system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    Systemd,
    /// Debian's sysvinit-core: init scripts in /etc/init.d, no units.
    Sysvinit,
}

impl Init {
    pub fn as_str(self) -> &'static str {
        match self {
            Init::Systemd => "systemd",
            Init::Sysvinit => "sysvinit",
        }
    }
}

/// How a fixture's disk boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixtureBoot {
    /// A bare ext4 disk; QEMU loads the kernel and initramfs (`-kernel`).
    Direct,
    /// A GPT whole disk: a FAT EFI system partition with systemd-boot at the
    /// removable-media path, the kernel and initramfs, and an ext4 root
    /// partition typed for its architecture. Firmware boots it.
    Uefi,
}

impl FixtureBoot {
    pub fn as_str(self) -> &'static str {
        match self {
            FixtureBoot::Direct => "direct",
            FixtureBoot::Uefi => "uefi",
        }
    }
}

/// A fixture airboot knows how to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureDef {
    pub name: &'static str,
    /// The container engine the device runs.
    pub engine: Engine,
    /// The device's architecture.
    pub arch: Arch,
    /// The architecture its container images are built for (the device's,
    /// except in the wrong-platform negative control).
    pub containers: Arch,
    pub variant: Variant,
    pub boot: FixtureBoot,
    pub init: Init,
    pub description: &'static str,
}

/// Every fixture that can be built.
pub fn catalog() -> Vec<FixtureDef> {
    use FixtureBoot::{Direct, Uefi};
    use Variant::{
        ClockCheck, Compose, ComposeUnhealthy, ContainerCrash, Egress, LoadAtBoot, LoadAtBootSafe, LoadEveryBoot,
        NoSpace, Preseeded, Restorable, StoreCorrupt, StoreReadOnly, VfsNoOverlay, VfsReadOnly,
    };
    let def = |name, arch, containers, variant, boot, description| FixtureDef {
        name,
        engine: Engine::Docker,
        arch,
        containers,
        variant,
        boot,
        init: Init::Systemd,
        description,
    };
    let podman = |name, variant, description| FixtureDef {
        engine: Engine::Podman,
        ..def(name, Arch::X86_64, Arch::X86_64, variant, Direct, description)
    };
    let containerd = |name, variant, description| FixtureDef {
        engine: Engine::Containerd,
        ..def(name, Arch::X86_64, Arch::X86_64, variant, Direct, description)
    };
    let (x86, arm) = (Arch::X86_64, Arch::Aarch64);
    vec![
        def(
            "debian-preseeded-x86_64",
            x86,
            x86,
            Preseeded,
            Direct,
            "Debian bookworm + docker.io, /var/lib/docker seeded at build time (fixture/busybox:1, fixture/redis:1)",
        ),
        def(
            "debian-load-at-boot-x86_64",
            x86,
            x86,
            LoadAtBoot,
            Direct,
            "Debian bookworm + docker.io, images shipped as `docker save` archives and loaded by a first-boot unit",
        ),
        def(
            "debian-load-at-boot-safe-x86_64",
            x86,
            x86,
            LoadAtBootSafe,
            Direct,
            "the load-at-boot fixture with a crash-safe loader: verify each image (docker save) before tagging, reload the set when one fails",
        ),
        def(
            "debian-load-every-boot-x86_64",
            x86,
            x86,
            LoadEveryBoot,
            Direct,
            "the load-at-boot fixture whose loader has no once-only guard: it loads the archives again on every boot (negative control for load-every-boot)",
        ),
        def(
            "debian-store-corrupt-x86_64",
            x86,
            x86,
            StoreCorrupt,
            Direct,
            "the preseeded fixture with its busybox binary zeroed (same size) in the seeded layer: the store lists every image, the layer no longer matches its diff_id (negative control for store-corrupt)",
        ),
        def(
            "debian-container-crash-x86_64",
            x86,
            x86,
            ContainerCrash,
            Direct,
            "the preseeded fixture whose web container fails at once (a missing serial device) under dockerd's restart policy on-failure:3 (negative control for container-crash-loop)",
        ),
        def(
            "debian-clock-check-x86_64",
            x86,
            x86,
            ClockCheck,
            Direct,
            "the preseeded fixture whose web container is healthy only once the device's clock has reached the fixture's build time (a certificate's notBefore): negative control for clock-before-image with `[machine] rtc`",
        ),
        def(
            "debian-store-read-only-x86_64",
            x86,
            x86,
            StoreReadOnly,
            Direct,
            "the preseeded fixture with /var/lib/docker bound read-only by /etc/fstab: dockerd cannot start on its store (negative control for store-read-only)",
        ),
        def(
            "debian-no-space-x86_64",
            x86,
            x86,
            NoSpace,
            Direct,
            "the load-at-boot fixture on a root filesystem shrunk to its contents and filled to 40 MiB from full: busybox loads, redis runs out of space (negative control for store-no-space)",
        ),
        def(
            "debian-egress-x86_64",
            x86,
            x86,
            Egress,
            Direct,
            "the preseeded fixture plus a first-boot unit that pulls registry.example.com/fixture/app:1 (must fail the air-gap check)",
        ),
        def(
            "debian-compose-x86_64",
            x86,
            x86,
            Compose,
            Direct,
            "the preseeded fixture whose stack is a docker-compose 1.29 project started at boot: redis (healthy), web (waits for redis to be healthy), seed (a one-shot that exits 0)",
        ),
        def(
            "debian-compose-unhealthy-x86_64",
            x86,
            x86,
            ComposeUnhealthy,
            Direct,
            "the compose fixture whose redis health check always fails: compose never creates web, which waits for it (negative control)",
        ),
        def(
            "debian-restorable-x86_64",
            x86,
            x86,
            Restorable,
            Direct,
            "restorable apps: the images kept as an OCI layout in /usr/share/apps-reset (skopeo 1.9, at build time), copied into dockerd by skopeo at first boot, and again by `systemctl start apps-reset` after it wipes /var/lib/docker, all offline",
        ),
        def(
            "debian-vfs-ro-x86_64",
            x86,
            x86,
            VfsReadOnly,
            Direct,
            "a read-only root (GPT: ext4 root mounted ro, ext4 data partition): the store built with the vfs driver at build time, /var/lib/docker an overlay whose upper directory is on the data partition",
        ),
        def(
            "debian-vfs-ro-no-overlay-x86_64",
            x86,
            x86,
            VfsNoOverlay,
            Direct,
            "the vfs read-only-root fixture with the /var/lib/docker overlay left out of /etc/fstab: dockerd meets its store read-only (negative control for store-read-only)",
        ),
        def(
            "debian-preseeded-aarch64",
            arm,
            arm,
            Preseeded,
            Direct,
            "the preseeded fixture for arm64 (qemu-system-aarch64 -M virt, direct kernel boot)",
        ),
        def(
            "debian-uefi-x86_64",
            x86,
            x86,
            Preseeded,
            Uefi,
            "the preseeded fixture as a GPT whole disk: EFI system partition with systemd-boot, ext4 root partition (OVMF)",
        ),
        def(
            "debian-uefi-aarch64",
            arm,
            arm,
            Preseeded,
            Uefi,
            "the preseeded arm64 fixture as a GPT whole disk: EFI system partition with systemd-boot, ext4 root partition (AAVMF)",
        ),
        podman(
            "debian-podman-x86_64",
            Preseeded,
            "Debian bookworm + podman 4.3, /var/lib/containers/storage seeded at build time with `podman --root`, the stack's containers created with --restart=always and started at boot by podman-restart.service",
        ),
        FixtureDef {
            arch: arm,
            containers: arm,
            ..podman(
                "debian-podman-aarch64",
                Preseeded,
                "the preseeded Podman device for arm64 (qemu-system-aarch64 -M virt, direct kernel boot; rootfs built through qemu-user)",
            )
        },
        podman(
            "debian-podman-load-at-boot-x86_64",
            LoadAtBoot,
            "Debian bookworm + podman 4.3, images shipped as archives that a first-boot unit loads (`podman load`) before running the stack with --restart=always",
        ),
        containerd(
            "debian-containerd-x86_64",
            LoadAtBoot,
            "Debian bookworm + containerd 1.6 (no Docker, no CNI), archives imported at first boot with `ctr images import` (namespace airboot), the stack's containers started as tasks on every boot by a unit",
        ),
        FixtureDef {
            init: Init::Sysvinit,
            ..def(
                "debian-sysvinit-x86_64",
                x86,
                x86,
                Preseeded,
                Direct,
                "Debian bookworm with sysvinit-core instead of systemd: docker.io started by its init script, /var/lib/docker seeded at build time, the stack's containers run by an init script, the probe by another",
            )
        },
        def(
            "debian-wrong-platform-aarch64",
            arm,
            x86,
            Preseeded,
            Direct,
            "an arm64 device whose store holds amd64 container images (negative control: the stack cannot run)",
        ),
    ]
}

pub fn find(name: &str) -> Option<FixtureDef> {
    catalog().into_iter().find(|f| f.name == name)
}

/// The kernel command line airboot boots its Debian root filesystems with
/// (fixtures and board mode): serial console, root device, no
/// interface renaming, no audit noise on the console.
pub fn kernel_append(arch: Arch, root: &str) -> String {
    format!(
        "console={},115200 root={root} rw rootfstype=ext4 net.ifnames=0 audit=0",
        airboot_core::platform::console_tty(arch)
    )
}

/// Debian's name for an architecture (`dpkg --print-architecture`).
pub fn debian_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Aarch64 => "arm64",
    }
}

/// Where built things are kept: `$AIRBOOT_CACHE`, else
/// `$XDG_CACHE_HOME/airboot`, else `~/.cache/airboot`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("AIRBOOT_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("airboot");
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache/airboot"),
        None => PathBuf::from("/var/cache/airboot"),
    }
}

/// The Debian mirrors (overridable for local mirrors).
pub fn mirrors() -> (String, String) {
    let main = std::env::var("AIRBOOT_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let sec = std::env::var("AIRBOOT_DEBIAN_SECURITY_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian-security".into());
    (main, sec)
}

/// A recipe file embedded from `images/`.
pub fn recipe_file(rel: &str) -> Option<(&'static [u8], u32)> {
    recipes::FILES.iter().find(|(p, _, _)| *p == rel).map(|(_, d, m)| (*d, *m))
}

/// Embedded recipe files under a folder, as (path below it, data, mode).
pub fn recipe_tree(prefix: &str) -> Vec<(&'static str, &'static [u8], u32)> {
    let prefix = format!("{}/", prefix.trim_end_matches('/'));
    recipes::FILES.iter().filter_map(|(p, d, m)| p.strip_prefix(prefix.as_str()).map(|rest| (rest, *d, *m))).collect()
}

fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn recipe_text(rel: &str) -> String {
    recipe_file(rel).map(|(d, _)| String::from_utf8_lossy(d).into_owned()).unwrap_or_default()
}

/// The recipe listing the Debian packages of a root filesystem for
/// `engine` under `init`.
pub fn rootfs_packages(engine: Engine, init: Init) -> &'static str {
    match (engine, init) {
        (Engine::Docker, Init::Systemd) => "rootfs-packages.txt",
        (Engine::Docker, Init::Sysvinit) => "rootfs-packages-sysvinit.txt",
        (Engine::Podman, _) => "rootfs-packages-podman.txt",
        (Engine::Containerd, _) => "rootfs-packages-containerd.txt",
    }
}

/// The cached rootfs stage's name: `rootfs-<engine>[-<init>]`.
pub fn rootfs_stage(engine: Engine, init: Init) -> String {
    match init {
        Init::Systemd => format!("rootfs-{engine}"),
        other => format!("rootfs-{engine}-{}", other.as_str()),
    }
}

/// Cache keys of each stage: pure functions of their inputs.
pub fn rootfs_key(arch: Arch, engine: Engine, init: Init) -> String {
    let (m, s) = mirrors();
    key(&["rootfs", arch.as_str(), SUITE, &m, &s, &recipe_text(rootfs_packages(engine, init)), recipes::STAGES_HASH])
}

pub fn kernel_key(arch: Arch) -> String {
    let (m, s) = mirrors();
    key(&["kernel", arch.as_str(), SUITE, &m, &s, &recipe_text("initramfs/init"), recipes::STAGES_HASH])
}

pub fn containers_key(arch: Arch) -> String {
    let (m, s) = mirrors();
    key(&["containers", arch.as_str(), SUITE, &m, &s, recipes::STAGES_HASH])
}

/// The fixture's key also covers the guest probe binary it carries.
pub fn fixture_key(def: &FixtureDef, probe_hash: &str) -> String {
    key(&[
        "fixture",
        def.name,
        def.variant.as_str(),
        &rootfs_key(def.arch, def.engine, def.init),
        &kernel_key(def.arch),
        &containers_key(def.containers),
        def.boot.as_str(),
        probe_hash,
        recipes::RECIPE_HASH,
        recipes::BUILDER_HASH,
    ])
}

/// Where a built fixture lives.
pub fn fixture_dir(root: &Path, def: &FixtureDef, probe_hash: &str) -> PathBuf {
    root.join("fixtures").join(format!("{}-{}", def.name, fixture_key(def, probe_hash)))
}

/// The Rust target the guest probe is built for.
pub fn probe_target(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "x86_64-unknown-linux-musl",
        Arch::Aarch64 => "aarch64-unknown-linux-musl",
    }
}

/// The static guest probe for an architecture: `$AIRBOOT_PROBE_<ARCH>`,
/// else `airboot-probe-<arch>` next to the running program, else the
/// workspace's `target/<musl triple>/release/airboot-probe`.
pub fn probe_binary(arch: Arch) -> Result<PathBuf, String> {
    let var = format!("AIRBOOT_PROBE_{}", arch.as_str().to_uppercase());
    if let Some(p) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(format!("{var}={} is not a file", p.display())) };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate airboot itself: {e}"))?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join(format!("airboot-probe-{arch}")));
    }
    for dir in exe.ancestors().skip(1).take(4) {
        candidates.push(dir.join(probe_target(arch)).join("release/airboot-probe"));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "the guest probe for {arch} is not built: run `cargo build --release -p airboot-probe --target {}` (scripts/setup.sh does it), or set {var}",
            probe_target(arch)
        )
    })
}

/// sha256 (hex) of a file, for cache keys.
pub fn file_hash(p: &Path) -> Result<String, String> {
    let data = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect())
}

/// One container image a fixture carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureImage {
    #[serde(rename = "ref")]
    pub reference: String,
    pub id: String,
    pub archive: String,
    pub layers: Vec<String>,
    pub size: u64,
}

/// `fixture.json`: what was built and how to boot it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureManifest {
    pub schema: String,
    pub name: String,
    pub arch: String,
    pub variant: Variant,
    /// The architecture of the container images it carries.
    #[serde(default)]
    pub containers_arch: String,
    pub description: String,
    pub key: String,
    pub boot: String,
    pub disk: String,
    pub disk_format: String,
    pub kernel: String,
    pub initrd: String,
    pub append: String,
    pub kernel_version: String,
    pub engine: String,
    /// The image carries airboot-probe (serving vsock and virtio-serial).
    #[serde(default = "yes")]
    pub probe: bool,
    pub images: Vec<FixtureImage>,
    /// Versions of the packages that matter (docker.io, containerd, runc, systemd).
    pub packages: std::collections::BTreeMap<String, String>,
    pub built_at: String,
    pub build_seconds: f64,
}

fn yes() -> bool {
    true
}

/// A built fixture.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub dir: PathBuf,
    pub manifest: FixtureManifest,
}

impl Fixture {
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(&self.manifest.kernel)
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(&self.manifest.initrd)
    }
    pub fn arch(&self) -> Option<Arch> {
        Arch::parse(&self.manifest.arch)
    }
}

/// The fixture as currently built, if its inputs (the probe binary
/// included) have not changed since.
pub fn lookup(root: &Path, def: &FixtureDef) -> Option<Fixture> {
    open_build(&current_dir(root, def).ok()?)
}

/// The build in `dir` (a `<name>-<key>` folder) whatever its key, if it is
/// complete (fixture.json, disk, kernel, initrd): the build a power-cut
/// bundle was cut from, which `airboot repro` must boot again even after
/// the fixture's inputs have changed.
pub fn open_build(dir: &Path) -> Option<Fixture> {
    let text = std::fs::read_to_string(dir.join("fixture.json")).ok()?;
    let manifest: FixtureManifest = serde_json::from_str(&text).ok()?;
    let complete = dir.join(&manifest.disk).is_file()
        && dir.join(&manifest.kernel).is_file()
        && dir.join(&manifest.initrd).is_file();
    complete.then(|| Fixture { dir: dir.to_path_buf(), manifest })
}

/// Builds of a fixture whose inputs have changed since (kept until
/// removed by hand or `airboot images clean`). An error when the current
/// build's key cannot be computed (the guest probe is not built): then no
/// build can be told old.
pub fn stale_builds(root: &Path, def: &FixtureDef) -> Result<Vec<PathBuf>, String> {
    Ok(older_builds(root, def.name, &current_dir(root, def)?))
}

/// Where the fixture built from today's inputs lives (built or not); an
/// error when the probe it would carry is not built.
fn current_dir(root: &Path, def: &FixtureDef) -> Result<PathBuf, String> {
    Ok(fixture_dir(root, def, &file_hash(&probe_binary(def.arch)?)?))
}

/// Folders `<name>-<16 hex key>` under `root/fixtures` other than `current`
/// (unfinished `.tmp` builds are not included).
fn older_builds(root: &Path, name: &str, current: &Path) -> Vec<PathBuf> {
    let prefix = format!("{name}-");
    let Ok(rd) = std::fs::read_dir(root.join("fixtures")) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.strip_prefix(&prefix).is_some_and(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
                && p != current
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_are_unique_and_match_arch() {
        let c = catalog();
        for f in &c {
            assert!(f.name.ends_with(f.arch.as_str()), "{}", f.name);
            assert_eq!(c.iter().filter(|g| g.name == f.name).count(), 1);
        }
        assert!(find("debian-preseeded-x86_64").is_some());
        assert!(find("nope").is_none());
    }

    #[test]
    fn older_builds_are_the_other_keys_of_that_fixture_only() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("fixtures");
        for d in [
            "debian-load-at-boot-x86_64-0123456789abcdef",
            "debian-load-at-boot-x86_64-fedcba9876543210",
            "debian-load-at-boot-x86_64-fedcba9876543210.tmp1234",
            "debian-load-at-boot-safe-x86_64-0123456789abcdef",
            "debian-load-at-boot-x86_64-notakey-notakey!",
        ] {
            std::fs::create_dir_all(f.join(d)).unwrap();
        }
        let current = f.join("debian-load-at-boot-x86_64-0123456789abcdef");
        let old = older_builds(root.path(), "debian-load-at-boot-x86_64", &current);
        assert_eq!(old, [f.join("debian-load-at-boot-x86_64-fedcba9876543210")]);
        assert!(older_builds(root.path(), "debian-preseeded-x86_64", &current).is_empty());
        assert!(older_builds(&root.path().join("none"), "x", &current).is_empty());
    }

    #[test]
    fn recipes_are_embedded() {
        assert!(recipe_file("initramfs/init").is_some());
        assert!(recipe_file("overlay/load-at-boot/usr/local/sbin/airboot-load-images").unwrap().1 & 0o111 != 0);
        assert!(recipe_file("reference/airboot-status").is_none(), "reference material is not part of a fixture");
        let docker = recipe_tree("overlay/docker");
        assert!(docker.iter().any(|(p, _, _)| *p == "etc/systemd/system/container-redis.service"));
        assert!(recipe_tree("overlay/base").iter().any(|(p, _, _)| *p == "etc/systemd/system/airboot-probe.service"));
        assert!(recipe_file("overlay/podman-load-at-boot/usr/local/sbin/airboot-load-images").unwrap().1 & 0o111 != 0);
        for f in catalog() {
            assert!(recipe_file(rootfs_packages(f.engine, f.init)).is_some(), "{}: no package list", f.name);
        }
        assert!(recipe_file("overlay/containerd-load-at-boot/usr/local/sbin/airboot-stack").unwrap().1 & 0o111 != 0);
        // Every fixture's engine overlay exists, and a loading variant's
        // overlay brings the unit that loads.
        for f in catalog() {
            assert!(!recipe_tree(&format!("overlay/{}", f.engine)).is_empty(), "{}: no engine overlay", f.name);
            let engine = if f.engine == Engine::Docker { String::new() } else { format!("{}-", f.engine) };
            let loads = f.variant.builds_on().unwrap_or(f.variant);
            let variant = format!("overlay/{engine}{}", loads.as_str());
            if !f.variant.preseeds() {
                assert!(
                    recipe_tree(&variant).iter().any(|(p, _, _)| p.starts_with("etc/systemd/system/")),
                    "{}: no unit in {variant}",
                    f.name
                );
            }
        }
        assert!(recipe_tree("overlay/load-at-boot").iter().any(|(p, _, _)| p.ends_with("airboot-load-images")));
    }

    #[test]
    fn keys_differ_by_what_shapes_the_result() {
        let p = find("debian-preseeded-x86_64").unwrap();
        let l = find("debian-load-at-boot-x86_64").unwrap();
        assert_ne!(fixture_key(&p, "x"), fixture_key(&l, "x"));
        assert_eq!(fixture_key(&p, "x"), fixture_key(&p, "x"));
        assert_ne!(fixture_key(&p, "x"), fixture_key(&p, "y"), "a new probe rebuilds the fixture");
        assert_eq!(fixture_key(&p, "x").len(), 16);
        let key = |a, e| rootfs_key(a, e, Init::Systemd);
        assert_ne!(key(Arch::X86_64, Engine::Docker), key(Arch::Aarch64, Engine::Docker));
        assert_ne!(key(Arch::X86_64, Engine::Docker), key(Arch::X86_64, Engine::Podman));
        assert_ne!(key(Arch::X86_64, Engine::Docker), rootfs_key(Arch::X86_64, Engine::Docker, Init::Sysvinit));
        assert_eq!(rootfs_stage(Engine::Docker, Init::Systemd), "rootfs-docker", "existing caches keep their names");
        assert_eq!(rootfs_stage(Engine::Docker, Init::Sysvinit), "rootfs-docker-sysvinit");
        let pm = find("debian-podman-x86_64").unwrap();
        assert_eq!((pm.engine, pm.variant), (Engine::Podman, Variant::Preseeded));
    }
}

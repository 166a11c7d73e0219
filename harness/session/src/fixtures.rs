//! Where a scenario's image comes from: a fixture build, or the user's
//! own disk. [`resolve`] is the rule; [`Fixtures`] is the store it asks
//! (the fixture cache on this host, [`CachedFixtures`], or a fake in
//! tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airboot_core::event::{EventSink, RunEvent};
use airboot_core::scenario::{ImageSource, Scenario};
use airboot_model::{Arch, BootMode, DiskFormat, Failure, FailureCode};

/// A fixture build, as a boot needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureBuild {
    pub name: String,
    /// The build folder (`<name>-<key>`).
    pub dir: PathBuf,
    pub arch: Arch,
    pub boot: BootMode,
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The kernel command line it was built for.
    pub append: String,
    /// `repository:tag` → image ID, as the build recorded them.
    pub images: BTreeMap<String, String>,
    /// It carries airboot-probe.
    pub probe: bool,
}

/// The generic kernel and initramfs of board mode.
#[derive(Debug, Clone, PartialEq)]
pub struct BoardKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub version: String,
    /// Modules its initramfs loads for the engine.
    pub engine_modules: Vec<String>,
}

/// The fixtures a host has, and what it can build.
pub trait Fixtures: Sync {
    /// Whether the catalogue knows `name`.
    fn known(&self, name: &str) -> bool;
    /// The current build of `name`, if built.
    fn current(&self, name: &str) -> Option<FixtureBuild>;
    /// The build in `dir`, if it is a complete build of `name`.
    fn open(&self, dir: &Path, name: &str) -> Option<FixtureBuild>;
    /// Build `name` now (needs root and the Debian mirror).
    fn build(&self, name: &str, progress: &mut dyn FnMut(&str)) -> Result<FixtureBuild, String>;
    /// Board mode's generic kernel for `arch` (built once).
    fn board_kernel(&self, arch: Arch, progress: &mut dyn FnMut(&str)) -> Result<BoardKernel, String>;
}

/// The fixture cache of this host (`~/.cache/airboot`, or `$AIRBOOT_CACHE`).
#[derive(Debug, Clone)]
pub struct CachedFixtures {
    pub root: PathBuf,
}

impl CachedFixtures {
    pub fn new() -> CachedFixtures {
        CachedFixtures { root: airboot_images::cache_root() }
    }
}

impl Default for CachedFixtures {
    fn default() -> Self {
        Self::new()
    }
}

fn from_images(f: airboot_images::Fixture, def_arch: Arch) -> FixtureBuild {
    FixtureBuild {
        name: f.manifest.name.clone(),
        arch: f.arch().unwrap_or(def_arch),
        boot: if f.manifest.boot == "uefi" { BootMode::Uefi } else { BootMode::Direct },
        disk: f.disk(),
        kernel: f.kernel(),
        initrd: f.initrd(),
        append: f.manifest.append.clone(),
        images: f.manifest.images.iter().map(|i| (i.reference.clone(), i.id.clone())).collect(),
        probe: f.manifest.probe,
        dir: f.dir,
    }
}

impl Fixtures for CachedFixtures {
    fn known(&self, name: &str) -> bool {
        airboot_images::find(name).is_some()
    }
    fn current(&self, name: &str) -> Option<FixtureBuild> {
        let def = airboot_images::find(name)?;
        airboot_images::lookup(&self.root, &def).map(|f| from_images(f, def.arch))
    }
    fn open(&self, dir: &Path, name: &str) -> Option<FixtureBuild> {
        let def = airboot_images::find(name)?;
        airboot_images::open_build(dir).filter(|f| f.manifest.name == name).map(|f| from_images(f, def.arch))
    }
    fn build(&self, name: &str, progress: &mut dyn FnMut(&str)) -> Result<FixtureBuild, String> {
        let def = airboot_images::find(name).ok_or_else(|| format!("unknown fixture {name:?}"))?;
        airboot_images::build(&self.root, name, false, progress)
            .map(|f| from_images(f, def.arch))
            .map_err(|e| e.to_string())
    }
    fn board_kernel(&self, arch: Arch, progress: &mut dyn FnMut(&str)) -> Result<BoardKernel, String> {
        airboot_images::board::board_kernel(&self.root, arch, progress)
            .map(|b| BoardKernel {
                kernel: b.kernel,
                initrd: b.initrd,
                version: b.version,
                engine_modules: b.engine_modules,
            })
            .map_err(|e| e.to_string())
    }
}

/// Everything needed to boot a scenario's image.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    /// The fixture's name, and the architecture it was built for.
    pub fixture: Option<String>,
    pub fixture_arch: Option<Arch>,
    pub boot: BootMode,
    pub disk: PathBuf,
    pub format: DiskFormat,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// A kernel of the guest's architecture for the KVM probe boot.
    pub probe_kernel: Option<PathBuf>,
    /// Image IDs from the fixture build.
    pub known_ids: BTreeMap<String, String>,
    /// The image carries airboot-probe.
    pub probe: bool,
}

/// Tells a user's disk image format: from the file, unless the scenario
/// says (and then checks it agrees).
pub type FormatOf<'a> = &'a dyn Fn(&Path, Option<DiskFormat>) -> Result<DiskFormat, String>;

/// Where to find the scenario's image: for a fixture, the build in
/// `pinned` if given (it must be a complete build of that fixture), else
/// the current one, built now when `build` allows. `format` tells a
/// user's disk format (from the file when the scenario does not say).
pub fn resolve(
    s: &Scenario,
    pinned: Option<&Path>,
    build: bool,
    fixtures: &dyn Fixtures,
    format: FormatOf,
    sink: &mut dyn EventSink,
) -> Result<ResolvedImage, Failure> {
    let with_extra = |append: String| match &s.image.append_extra {
        Some(x) => format!("{append} {x}"),
        None => append,
    };
    let bad = |m: String| Failure::new(FailureCode::BadInput, m);
    match &s.image.source {
        ImageSource::Fixture(name) => {
            if !fixtures.known(name) {
                return Err(bad(format!("unknown fixture {name:?}")));
            }
            let fixture = match pinned {
                Some(dir) => fixtures.open(dir, name).ok_or_else(|| {
                    bad(format!(
                        "{} is not a complete build of fixture {name} (fixture.json, disk, kernel, initramfs)",
                        dir.display()
                    ))
                })?,
                None => match fixtures.current(name) {
                    Some(f) => f,
                    None if !build => {
                        return Err(Failure::new(
                            FailureCode::FixtureNotBuilt,
                            format!(
                                "fixture {name} is not built: run `airboot images build {name}` (or drop --no-build)"
                            ),
                        ));
                    }
                    None => {
                        sink.event(RunEvent::Step(format!(
                            "fixture {name} is not built yet: building it now (first time: a few minutes)"
                        )));
                        let mut progress = |m: &str| sink.event(RunEvent::Detail(m.to_string()));
                        fixtures.build(name, &mut progress).map_err(|e| {
                            Failure::new(FailureCode::FixtureBuild, format!("building fixture {name}: {e}"))
                        })?
                    }
                },
            };
            if let Some(b) = s.image.boot
                && b != fixture.boot
                && b != BootMode::Board
            {
                return Err(bad(format!(
                    "{}: image.boot = {:?}, but fixture {name} boots with {:?}: remove image.boot",
                    s.file.display(),
                    b.as_str(),
                    fixture.boot.as_str()
                )));
            }
            let boot = s.image.boot.unwrap_or(fixture.boot);
            // UEFI boots the disk's loader, board mode brings its own kernel.
            let direct = boot == BootMode::Direct;
            Ok(ResolvedImage {
                fixture: Some(name.clone()),
                fixture_arch: Some(fixture.arch),
                boot,
                disk: fixture.disk,
                format: DiskFormat::Qcow2,
                kernel: direct.then(|| fixture.kernel.clone()),
                initrd: direct.then(|| fixture.initrd.clone()),
                append: direct.then(|| with_extra(fixture.append.clone())),
                probe_kernel: Some(fixture.kernel),
                known_ids: fixture.images,
                probe: s.image.has_probe(Some(fixture.probe)),
            })
        }
        ImageSource::Path(p) => {
            let format = format(p, s.image.format).map_err(bad)?;
            // No `boot` and no `kernel`: the disk boots itself; how (uefi or
            // bios) is told from the disk once it is open (`boot::detect_boot`).
            let boot = s.image.boot.unwrap_or(if s.image.kernel.is_some() { BootMode::Direct } else { BootMode::Uefi });
            let direct = boot == BootMode::Direct;
            Ok(ResolvedImage {
                fixture: None,
                fixture_arch: None,
                boot,
                disk: p.clone(),
                format,
                kernel: s.image.kernel.clone(),
                initrd: s.image.initrd.clone(),
                // The default command line is filled in once the arch is known.
                append: direct.then(|| s.image.append.clone().map(with_extra)).flatten(),
                probe_kernel: s.image.kernel.clone(),
                known_ids: BTreeMap::new(),
                probe: s.image.has_probe(None),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A build folder as the builder leaves it, with one file missing if asked.
    fn fake_build(root: &Path, name: &str, key: &str, without: Option<&str>) -> PathBuf {
        let dir = root.join(format!("{name}-{key}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["disk.qcow2", "vmlinuz", "initrd.img"] {
            if without != Some(f) {
                std::fs::write(dir.join(f), b"x").unwrap();
            }
        }
        let manifest = format!(
            r#"{{"schema": "airboot.fixture/v1", "name": "{name}", "arch": "x86_64", "variant": "preseeded",
            "description": "d", "key": "{key}", "boot": "direct", "disk": "disk.qcow2", "disk_format": "qcow2",
            "kernel": "vmlinuz", "initrd": "initrd.img", "append": "console=ttyS0 root=/dev/vda",
            "kernel_version": "6.1.0", "engine": "docker", "images": [], "packages": {{}},
            "built_at": "2026-11-23T00:00:00Z", "build_seconds": 1.0}}"#
        );
        std::fs::write(dir.join("fixture.json"), manifest).unwrap();
        dir
    }

    fn no_format(_: &Path, _: Option<DiskFormat>) -> Result<DiskFormat, String> {
        unreachable!("fixtures are qcow2")
    }

    /// `airboot repro` boots the build a bundle was cut from: its disk,
    /// kernel and initramfs, not those of today's build of the fixture.
    #[test]
    fn a_pinned_fixture_build_is_booted_and_a_wrong_one_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let s = airboot_core::scenario::parse(
            "name = \"s\"\n[image]\nfixture = \"debian-preseeded-x86_64\"\n",
            &tmp.path().join("s.toml"),
            &airboot_core::scenario::any_file,
        )
        .unwrap();
        let store = CachedFixtures { root: tmp.path().join("cache") };
        let mut quiet = |_: RunEvent| {};
        let old = fake_build(tmp.path(), "debian-preseeded-x86_64", "00000000000000aa", None);
        let r = resolve(&s, Some(&old), false, &store, &no_format, &mut quiet).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(r.disk, old.join("disk.qcow2"));
        assert_eq!(r.kernel.as_deref(), Some(old.join("vmlinuz").as_path()));
        assert_eq!(r.initrd.as_deref(), Some(old.join("initrd.img").as_path()));
        assert_eq!(r.probe_kernel.as_deref(), Some(old.join("vmlinuz").as_path()));
        assert!(r.append.unwrap().starts_with("console=ttyS0 root=/dev/vda"));
        assert!(r.probe, "fixtures carry the probe unless fixture.json says otherwise");

        // Another fixture's build, or one that lost its kernel, is refused
        // with the folder named: never silently today's build instead.
        for bad in [
            fake_build(tmp.path(), "debian-egress-x86_64", "00000000000000bb", None),
            fake_build(tmp.path(), "debian-preseeded-x86_64", "00000000000000cc", Some("vmlinuz")),
        ] {
            let f = match resolve(&s, Some(&bad), false, &store, &no_format, &mut quiet) {
                Ok(r) => panic!("{} was accepted: {:?}", bad.display(), r.disk),
                Err(f) => f,
            };
            assert_eq!(f.code, FailureCode::BadInput);
            assert!(f.message.contains(&bad.display().to_string()), "{}", f.message);
            assert!(f.message.contains("debian-preseeded-x86_64"), "{}", f.message);
        }
        // Nothing built, and building not allowed.
        let f = resolve(&s, None, false, &store, &no_format, &mut quiet).unwrap_err();
        assert_eq!(f.code, FailureCode::FixtureNotBuilt);
        assert!(f.message.contains("airboot images build debian-preseeded-x86_64"), "{}", f.message);
    }
}

//! A probe for an image that carries none: written into a qcow2 layer
//! over the input image (kept for the boot), so the image gets the full
//! verdict a fixture gets. The decision and what to write are
//! `airboot_core::inject`; the writing is `airboot_qemu::inject`.

use std::path::PathBuf;

use airboot_core::disk::ext4::Ext4;
use airboot_core::disk::{Slice, detect};
use airboot_core::event::{EventSink, RunEvent};
use airboot_core::inject::{self, GuestInit};
use airboot_core::report::Report;
use airboot_core::scenario::Scenario;
use airboot_core::sysext;
use airboot_model::Arch;

use crate::fixtures::ResolvedImage;

/// The layer holding the injected probe, alive as long as this is.
#[derive(Debug)]
pub struct Layer {
    pub disk: PathBuf,
    _dir: tempfile::TempDir,
}

/// What [`prepare`] found or did.
pub enum Prepared {
    /// The image carries the probe (said by the scenario or found in it).
    InImage,
    /// Written into this layer: boot it instead of the image.
    Injected(Layer),
    /// No probe for this run (said in a note): status comes from the console.
    None,
}

/// Inject the probe when the image has none and the scenario allows it.
/// What could not be done is said in a note: the run goes on without a
/// probe.
pub fn prepare(
    s: &Scenario,
    r: &ResolvedImage,
    arch: Arch,
    recording: bool,
    report: &mut Report,
    sink: &mut dyn EventSink,
) -> Prepared {
    if r.probe {
        report.probe.origin = Some("image".into());
        return Prepared::InImage;
    }
    report.probe.origin = Some("none".into());
    if s.image.inject == Some(false) {
        report
            .notes
            .push("the image has no probe and `[image] inject = false`: status comes from the console only".into());
        return Prepared::None;
    }
    if recording {
        report.notes.push(
            "power-cut campaigns do not inject the probe (the crash states are cut over the input image itself): status comes from the console only".into(),
        );
        return Prepared::None;
    }
    sink.event(RunEvent::Step(
        "the image has no probe: writing it into a layer over the image (the image is not touched)".into(),
    ));
    match write(s, r, arch) {
        Ok(Written::Present(path)) => {
            report.probe.origin = Some("image".into());
            report.notes.push(format!(
                "the image carries the probe at {path}: not injecting one (`probe = true` under [image] says so without the look)"
            ));
            Prepared::InImage
        }
        Ok(Written::Layer(layer, files, why)) => {
            report.probe.origin = Some("injected".into());
            report.notes.push(format!(
                "probe injected into a layer over the image ({why}): {}",
                files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ")
            ));
            report.probe.injected = files;
            Prepared::Injected(layer)
        }
        Err(why) => {
            sink.event(RunEvent::Note(format!("could not inject the probe: {why}")));
            report.notes.push(format!(
                "could not inject the probe ({why}): status comes from the console only; add the probe to the image (README: \"Adding the probe to your image\") or a login"
            ));
            Prepared::None
        }
    }
}

/// The root the boot names: `root=` in the scenario's `append` (direct
/// boot) or in the image's own loader configuration.
fn named_root(
    r: &ResolvedImage,
    disk: &dyn airboot_core::disk::ReadAt,
) -> Result<Option<detect::RootPartition>, String> {
    let named = match (&r.kernel, &r.append) {
        (Some(_), Some(a)) => {
            detect::root_arg_partition(a).map(|n| (n, "root= in the kernel command line".to_string()))
        }
        _ => detect::loader_root(disk),
    };
    let Some((n, said)) = named else { return Ok(None) };
    let parts = airboot_core::disk::part::partitions(disk).unwrap_or_default();
    let Some(p) = parts.iter().find(|p| p.number == n) else {
        return Err(format!("{said} names partition {n}, which the disk does not have"));
    };
    Ok(Some(detect::RootPartition {
        number: n,
        start: p.start,
        len: p.len,
        why: format!("partition {n}, named by {said}"),
    }))
}

/// Why a read-only root takes no probe, and the way forward.
fn read_only(rootp: &detect::RootPartition, kind: &str, why: &str) -> String {
    format!(
        "the root filesystem ({}) is {kind}, read-only: nothing can be written into it, and {why}. Judge the image through a console login (`login = {{ user = \"root\", password = \"\" }}` under [image])",
        rootp.why
    )
}

/// The probe as a system extension on the data partition that holds
/// `/var/lib/extensions`, for an erofs root whose systemd merges
/// extensions and reloads for them (`airboot_core::sysext`).
fn through_data_partition(
    s: &Scenario,
    r: &ResolvedImage,
    arch: Arch,
    disk: &dyn airboot_core::disk::ReadAt,
    rootp: &detect::RootPartition,
) -> Result<Written, String> {
    use airboot_core::disk::erofs::Erofs;
    let ro = |why: &str| read_only(rootp, "erofs", why);
    let part = Slice { inner: disk, start: rootp.start, len: rootp.len };
    let fs = Erofs::open(&part).map_err(|e| ro(&format!("airboot cannot read it ({e})")))?;
    let io = |e: std::io::Error| ro(&format!("reading it failed ({e})"));
    for path in inject::PROBE_PATHS {
        if fs.lookup(path, true).map_err(io)?.is_some() {
            return Ok(Written::Present(path.to_string()));
        }
    }
    let version = sysext::installed_systemd(&fs)
        .map_err(io)?
        .ok_or_else(|| ro("it has no systemd (no libsystemd-shared-<version>.so) to merge a system extension"))?;
    if version < sysext::MIN_SYSTEMD {
        return Err(ro(&format!(
            "its systemd {version} cannot load units from a system extension on the data partition (systemd-sysext reloads the service manager for one from {} on)",
            sysext::MIN_SYSTEMD
        )));
    }
    let mut enabled = None;
    for l in sysext::SYSEXT_LINKS {
        if fs.lookup(l, false).map_err(io)?.is_some() {
            enabled = Some(l);
            break;
        }
    }
    let enabled = enabled.ok_or_else(|| {
        ro("systemd-sysext.service is not enabled (no sysinit.target.wants link): it reads no system extensions")
    })?;
    let fstab = inject::RootFs::file(&fs, "/etc/fstab", 1 << 20).map_err(io)?.unwrap_or_default();
    let fstab = String::from_utf8_lossy(&fstab);
    let mounts = sysext::fstab(&fstab);
    let parts = airboot_core::disk::part::partitions(disk).unwrap_or_default();
    let (data, place, inner) = match sysext::locate(sysext::EXTENSIONS, &mounts) {
        Some((mount, inner)) => {
            if mount.read_only() {
                return Err(ro(&format!("{} ({}) is mounted read-only too", mount.target, mount.source)));
            }
            let dev = sysext::device(&mount.source).ok_or_else(|| {
                ro(&format!("airboot cannot tell which partition {} (mounted on {}) is", mount.source, mount.target))
            })?;
            let data = parts
                .iter()
                .find(|p| {
                    let ids = disk.read_vec(p.start + 1024, 1024).ok().and_then(|sb| sysext::ext4_ids(&sb));
                    dev.names(p, ids.as_ref())
                })
                .ok_or_else(|| {
                    ro(&format!("the disk has no partition {} (mounted on {})", mount.source, mount.target))
                })?;
            (data, format!("{} on {}", mount.source, mount.target), inner)
        }
        None => {
            let var = airboot_core::disk::part::PartType::Gpt(sysext::GPT_VAR.into());
            let data = parts.iter().find(|p| p.kind == var).ok_or_else(|| {
                ro(&format!(
                    "its /etc/fstab mounts no writable partition under {}, and the disk has no GPT /var partition",
                    sysext::EXTENSIONS
                ))
            })?;
            let place = "typed GPT /var: systemd-gpt-auto-generator mounts it on /var when its partition UUID matches the machine ID".to_string();
            (data, place, "/lib/extensions".to_string())
        }
    };
    let view = Slice { inner: disk, start: data.start, len: data.len };
    Ext4::open(&view).map_err(|e| ro(&format!("its data partition {} is not ext4 ({e})", data.number)))?;
    let containers: Vec<String> = s.expect.containers.iter().map(|c| c.name.clone()).collect();
    let units = inject::stack_units(&fs).map_err(|e| ro(&format!("reading its units failed ({e})")))?;
    let stack = inject::Stack {
        engine: s.expect.engine,
        containers: &containers,
        compose: s.expect.compose.as_ref().map(|c| c.project.as_str()),
        units: &units,
    };
    let plan = sysext::plan(&stack, &inner);
    let units_note = if units.is_empty() { "none found".to_string() } else { units.join(", ") };
    let why = format!(
        "the root filesystem ({}) is erofs, read-only; as a system extension in partition {} ({place}, which holds {}): systemd {version} merges it ({enabled}); units that start its containers: {units_note}",
        rootp.why,
        data.number,
        sysext::EXTENSIONS
    );
    layer(r, arch, &plan, data.start, data.len, why)
}

/// A layer over the image with `plan` written into the ext4 filesystem at
/// `start..start+len`.
fn layer(
    r: &ResolvedImage,
    arch: Arch,
    plan: &inject::Plan,
    start: u64,
    len: u64,
    why: String,
) -> Result<Written, String> {
    let probe = airboot_images::probe_binary(arch)?;
    let dir =
        airboot_qemu::scratch::temp_dir("inject").map_err(|e| format!("cannot create a temporary folder: {e}"))?;
    let disk = dir.path().join("probe-layer.qcow2");
    airboot_qemu::disk::create_overlay(&r.disk, r.format, &disk).map_err(|e| e.to_string())?;
    let files = airboot_qemu::inject::inject(&disk, start, len, plan, &probe, dir.path())?;
    Ok(Written::Layer(Layer { disk, _dir: dir }, files, why))
}

enum Written {
    /// The image has a probe already, here.
    Present(String),
    Layer(Layer, Vec<airboot_core::inject::Injected>, String),
}

fn write(s: &Scenario, r: &ResolvedImage, arch: Arch) -> Result<Written, String> {
    let view = airboot_qemu::disk::open_image(&r.disk).map_err(|e| format!("cannot read {}: {e}", r.disk.display()))?;
    let rootp = match named_root(r, view.as_ref())? {
        Some(p) => p,
        None => detect::root_partition(view.as_ref(), arch).ok_or_else(|| {
            "no ext4 root filesystem found (no GPT root partition, no ext4 partition with an init)".to_string()
        })?,
    };
    let part = Slice { inner: view.as_ref(), start: rootp.start, len: rootp.len };
    match detect::read_only_fs(&part) {
        Some("erofs") => return through_data_partition(s, r, arch, view.as_ref(), &rootp),
        Some(kind) => return Err(read_only(&rootp, kind, "airboot writes only into an erofs root's data partition")),
        None => {}
    }
    let fs = Ext4::open(&part).map_err(|e| format!("the root filesystem ({}) is not ext4: {e}", rootp.why))?;
    for path in inject::PROBE_PATHS {
        if fs.lookup(path, true).map_err(|e| e.to_string())?.is_some() {
            return Ok(Written::Present(path.to_string()));
        }
    }
    let (init, init_why) = inject::detect_init(&fs)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "cannot tell the image's init system (no systemd, no /etc/inittab)".to_string())?;
    let inittab = match init {
        GuestInit::Systemd => None,
        _ => match fs.lookup(inject::INITTAB, true).map_err(|e| e.to_string())? {
            Some(i) => Some(String::from_utf8_lossy(&fs.read(&i, 1 << 20).map_err(|e| e.to_string())?).into_owned()),
            None => None,
        },
    };
    let has_config = fs.lookup(inject::CONFIG_PATH, true).map_err(|e| e.to_string())?.is_some();
    let containers: Vec<String> = s.expect.containers.iter().map(|c| c.name.clone()).collect();
    let units = match init {
        GuestInit::Systemd => inject::stack_units(&fs).map_err(|e| format!("reading the image's units: {e}"))?,
        _ => Vec::new(),
    };
    let stack = inject::Stack {
        engine: s.expect.engine,
        containers: &containers,
        compose: s.expect.compose.as_ref().map(|c| c.project.as_str()),
        units: &units,
    };
    let plan = inject::plan(init, &stack, inittab.as_deref(), has_config)?;
    drop(view);
    let why = format!(
        "root filesystem: {}; init: {init_why}; units that start its containers: {}",
        rootp.why,
        if units.is_empty() {
            "none found (the probe's deadline ends a stack that never comes)".into()
        } else {
            units.join(", ")
        }
    );
    layer(r, arch, &plan, rootp.start, rootp.len, why)
}

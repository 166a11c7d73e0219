//! Watches the engine load archives into its store and prints a console
//! line per step (`airboot_proto::load`): which layer of which image is
//! being registered, which image is whole. The harness places power cuts
//! by these lines. Only reads:
//! - Docker: `<data-root>/tmp/docker-import-*/` (the unpacked archive)
//!   and `<data-root>/image/overlay2/layerdb/`;
//! - Podman: the archive a running `podman load` reads (its manifest and
//!   configs, from the tar) and `overlay-layers/layers.json` (each layer,
//!   flagged `incomplete` while it is written);
//! - containerd: the archive a running `ctr images import` reads, and
//!   containerd's snapshots (through its API: unpacking, and committed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airboot_proto::load::{LoadImage, LoadTracker, archive_images, chain_ids, podman_layer_ids};

use crate::engine::Kind;
use crate::engine::containerd::{self, Containerd};
use crate::status::Config;

/// How often to look while an archive is being loaded, and otherwise.
const BUSY: Duration = Duration::from_millis(50);
const IDLE: Duration = Duration::from_millis(250);

/// Docker's data root: `data-root` in /etc/docker/daemon.json, else /var/lib/docker.
fn data_root() -> PathBuf {
    std::fs::read_to_string("/etc/docker/daemon.json")
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("data-root").and_then(|r| r.as_str()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/lib/docker"))
}

/// The archives being loaded now, each with its images.
fn archives(root: &Path) -> Vec<(PathBuf, Option<Vec<LoadImage>>)> {
    let Ok(dir) = std::fs::read_dir(root.join("tmp")) else { return Vec::new() };
    let mut out: Vec<(PathBuf, Option<Vec<LoadImage>>)> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("docker-import-"))
        .map(|e| {
            let d = e.path();
            let images = std::fs::read_to_string(d.join("manifest.json")).ok().and_then(|m| {
                archive_images(&m, &|name: &str| {
                    // Only files inside the archive's folder.
                    if name.contains("..") || name.starts_with('/') {
                        return None;
                    }
                    std::fs::read_to_string(d.join(name)).ok()
                })
            });
            (d, images)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every process: its /proc folder and its arguments.
fn processes() -> Vec<(PathBuf, Vec<String>)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args = cmd
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((e.path(), args))
        })
        .collect()
}

/// The file `FILE` names for process `proc` (`-`: its standard input);
/// a relative path is the process's own working directory's.
fn opened(proc: &Path, file: Option<String>) -> Option<PathBuf> {
    let file = file.filter(|f| f != "-").or_else(|| {
        std::fs::read_link(proc.join("fd/0"))
            .ok()
            .map(|p| p.display().to_string())
            .filter(|p| p.starts_with('/') && !p.starts_with("/dev/"))
    })?;
    let p = PathBuf::from(&file);
    Some(if p.is_absolute() { p } else { proc.join("cwd").join(p) })
}

/// The one file matching processes read (`None`: none, or more than one).
fn only(found: Vec<PathBuf>) -> Option<PathBuf> {
    if found.len() == 1 { found.into_iter().next() } else { None }
}

/// The file a running `<program> load` reads (`-i FILE`, `--input FILE`,
/// or a file on its standard input).
fn loading_archive(program: &str) -> Option<PathBuf> {
    let mut found = Vec::new();
    for (proc, args) in processes() {
        let is_it = args.first().is_some_and(|a| a.rsplit('/').next() == Some(program));
        let load = args.iter().position(|a| a == "load");
        let (true, Some(load)) = (is_it, load) else { continue };
        let rest = &args[load + 1..];
        let mut file = None;
        for (i, a) in rest.iter().enumerate() {
            if a == "-i" || a == "--input" {
                file = rest.get(i + 1).cloned();
            } else if let Some(f) = a.strip_prefix("--input=").or_else(|| a.strip_prefix("-i")) {
                file = Some(f.to_string());
            }
        }
        found.extend(opened(&proc, file));
    }
    only(found)
}

/// The archive a running `ctr [images] import [flags] FILE` reads (its
/// last argument; `-`: its standard input).
fn importing_archive() -> Option<PathBuf> {
    let mut found = Vec::new();
    for (proc, args) in processes() {
        let is_ctr = args.first().is_some_and(|a| a.rsplit('/').next() == Some("ctr"));
        if !is_ctr || !args.iter().any(|a| a == "import") {
            continue;
        }
        found.extend(opened(&proc, args.last().cloned()));
    }
    only(found)
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn registering(layerdb: &Path) -> bool {
    std::fs::read_dir(layerdb.join("tmp"))
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("write-set-")))
        .unwrap_or(false)
}

fn present(layerdb: &Path, chain: &str) -> bool {
    match chain.split_once(':') {
        Some((algo, hex)) if !hex.contains('/') && !algo.contains('/') => layerdb.join(algo).join(hex).is_dir(),
        _ => false,
    }
}

fn say(device: &Path, events: &[airboot_proto::load::LoadEvent]) {
    if events.is_empty() {
        return;
    }
    let text: String = events.iter().map(|e| format!("{}\n", e.line())).collect();
    match std::fs::OpenOptions::new().append(true).open(device) {
        Ok(mut f) => {
            let _ = f.write_all(text.as_bytes());
        }
        Err(e) => eprintln!("airboot-probe: {}: {e}", device.display()),
    }
}

/// Runs for ever, printing the engine's load events to `device`.
pub fn watch(device: &Path, cfg: &Config) {
    match cfg.engine {
        Kind::Docker => watch_docker(device),
        Kind::Podman => watch_podman(device, Path::new(PODMAN_ROOT)),
        Kind::Containerd => watch_containerd(
            device,
            &Containerd {
                socket: cfg.socket.clone().into(),
                timeout: Duration::from_secs(5),
                namespace: cfg.namespace.clone(),
            },
        ),
    }
}

fn watch_docker(device: &Path) {
    let root = data_root();
    let layerdb = root.join("image/overlay2/layerdb");
    // One tracker per archive folder (with the archive's file name, asked
    // once), dropped when the folder goes.
    let mut trackers: Vec<(PathBuf, LoadTracker, Option<String>)> = Vec::new();
    loop {
        let now = archives(&root);
        trackers.retain(|(d, _, _)| now.iter().any(|(n, _)| n == d));
        for (dir, images) in &now {
            if !trackers.iter().any(|(d, _, _)| d == dir) {
                trackers.push((
                    dir.clone(),
                    LoadTracker::new(),
                    loading_archive("docker").as_deref().and_then(file_name),
                ));
            }
            let Some(images) = images else { continue };
            let Some((_, t, archive)) = trackers.iter_mut().find(|(d, _, _)| d == dir) else { continue };
            let images: Vec<LoadImage> =
                images.iter().map(|i| LoadImage { archive: archive.clone(), ..i.clone() }).collect();
            let events = t.observe(&images, registering(&layerdb), &chain_ids, &|c: &str| present(&layerdb, c));
            say(device, &events);
        }
        std::thread::sleep(if now.is_empty() { IDLE } else { BUSY });
    }
}

/// Podman's store, unless /etc/containers/storage.conf moves it.
const PODMAN_ROOT: &str = "/var/lib/containers/storage";

/// The images of a `docker save`/`podman save` archive, read from the tar.
fn tar_images(archive: &Path) -> Option<Vec<LoadImage>> {
    let mut f = std::fs::File::open(archive).ok()?;
    let json = |n: &str| n.ends_with(".json") || n.ends_with("/json");
    let files = airboot_proto::tar::small_members(&mut f, &json, 4 << 20, 100_000).ok()?;
    let text = |n: &str| files.get(n).map(|d| String::from_utf8_lossy(d).into_owned());
    let mut images = archive_images(&text("manifest.json")?, &text)?;
    for i in &mut images {
        i.archive = file_name(archive);
    }
    Some(images)
}

/// Each layer in layers.json: its ID, and whether it is still being written.
fn podman_layers(root: &Path) -> Vec<(String, bool)> {
    let Ok(text) = std::fs::read_to_string(root.join("overlay-layers/layers.json")) else { return Vec::new() };
    let Ok(serde_json::Value::Array(layers)) = serde_json::from_str(&text) else { return Vec::new() };
    layers
        .iter()
        .filter_map(|l| {
            let id = l["id"].as_str()?.to_string();
            Some((id, l["flags"]["incomplete"].as_bool() == Some(true)))
        })
        .collect()
}

fn watch_podman(device: &Path, root: &Path) {
    // The archive being loaded, its images, and its tracker.
    let mut current: Option<(PathBuf, Option<Vec<LoadImage>>, LoadTracker)> = None;
    loop {
        let archive = loading_archive("podman");
        if current.as_ref().map(|c| &c.0) != archive.as_ref() {
            current = archive.map(|a| (a.clone(), tar_images(&a), LoadTracker::new()));
        }
        if let Some((_, Some(images), t)) = current.as_mut() {
            let layers = podman_layers(root);
            let writing = layers.iter().any(|(_, incomplete)| *incomplete);
            let present = |k: &str| layers.iter().any(|(id, incomplete)| id == k && !*incomplete);
            say(device, &t.observe(images, writing, &podman_layer_ids, &present));
        }
        std::thread::sleep(if current.is_some() { BUSY } else { IDLE });
    }
}

/// `ctr images import`: the archive's blobs go into the content store
/// first, then each image is unpacked layer by layer: a layer is being
/// written while an active `extract-…` snapshot exists, and it is in the
/// store once a committed snapshot is named by its chain ID (asked
/// through containerd's snapshots API).
fn watch_containerd(device: &Path, c: &Containerd) {
    let mut current: Option<(PathBuf, Option<Vec<LoadImage>>, LoadTracker)> = None;
    loop {
        let archive = importing_archive();
        if current.as_ref().map(|c| &c.0) != archive.as_ref() {
            current = archive.map(|a| (a.clone(), tar_images(&a), LoadTracker::new()));
        }
        if let Some((_, Some(images), t)) = current.as_mut() {
            let namespaces = containerd::watch_namespaces(c);
            let writing = namespaces.iter().any(|ns| containerd::extracting(c, ns));
            let present = |k: &str| namespaces.iter().any(|ns| containerd::snapshot_committed(c, ns, k));
            say(device, &t.observe(images, writing, &chain_ids, &present));
        }
        std::thread::sleep(if current.is_some() { BUSY * 2 } else { IDLE });
    }
}

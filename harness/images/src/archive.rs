//! Container images without a registry: deterministic layer tarballs and
//! `docker save`-format archives (manifest.json, config with
//! `rootfs.diff_ids`, `<diff_id>/layer.tar`).
//!
//! Entries are sorted, owned by root, stamped with a fixed mtime, so the
//! same files always give the same diff_ids and image IDs.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Every entry's mtime (2023-11-14T22:13:20Z).
pub const EPOCH: u64 = 1_700_000_000;
pub const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";

/// Writes into an inner writer and hashes what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of bytes, as `sha256:<hex>`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// What kind of filesystem object a layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(PathBuf),
    Symlink(PathBuf),
    /// File content given inline.
    Data(Vec<u8>),
}

/// One entry of a layer, with its path inside the image (relative, no
/// leading slash) and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub kind: EntryKind,
}

/// Collect the entries under `root` whose relative path `select` accepts,
/// plus the directories leading to them. Hard links become plain files;
/// sockets, fifos and devices are skipped.
pub fn collect(root: &Path, select: &dyn Fn(&str) -> bool) -> io::Result<Vec<Entry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut dirs = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        for e in std::fs::read_dir(&abs)? {
            let e = e?;
            let rel_child = rel.join(e.file_name());
            let rel_s = rel_child.to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(e.path())?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if select(&rel_s) {
                    dirs.insert(rel_s.clone());
                }
                stack.push(rel_child);
                continue;
            }
            if !select(&rel_s) {
                continue;
            }
            let kind = if ft.is_symlink() {
                EntryKind::Symlink(std::fs::read_link(e.path())?)
            } else if ft.is_file() {
                EntryKind::File(e.path())
            } else {
                continue;
            };
            out.push(Entry { path: rel_s, mode: meta.permissions().mode() & 0o7777, kind });
        }
    }
    // Parent directories of everything selected, with their real modes.
    let mut parents = BTreeSet::new();
    for e in &out {
        let mut p = Path::new(&e.path).parent();
        while let Some(d) = p {
            if d.as_os_str().is_empty() {
                break;
            }
            parents.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    for d in dirs.into_iter().chain(parents) {
        if out.iter().any(|e| e.path == d) {
            continue;
        }
        let mode = std::fs::metadata(root.join(&d)).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o755);
        out.push(Entry { path: d, mode, kind: EntryKind::Dir });
    }
    Ok(out)
}

/// Write a deterministic tar of `entries` to `out`; returns the diff_id
/// (`sha256:` of the tar) and its size.
pub fn write_layer(mut entries: Vec<Entry>, out: &Path) -> io::Result<(String, u64)> {
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|a, b| a.path == b.path);
    let f = BufWriter::new(File::create(out)?);
    let hw = HashingWriter { inner: f, hash: Sha256::new(), len: 0 };
    let mut tb = tar::Builder::new(hw);
    tb.mode(tar::HeaderMode::Deterministic);
    for e in &entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(EPOCH);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(e.mode);
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tb.append_data(&mut h, format!("{}/", e.path), io::empty())?;
            }
            EntryKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tb.append_link(&mut h, &e.path, target)?;
            }
            EntryKind::File(p) => {
                let f = File::open(p)?;
                let len = f.metadata()?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                tb.append_data(&mut h, &e.path, f.take(len))?;
            }
            EntryKind::Data(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                tb.append_data(&mut h, &e.path, &d[..])?;
            }
        }
    }
    let mut hw = tb.into_inner()?;
    hw.flush()?;
    Ok((format!("sha256:{}", hex(&hw.hash.finalize())), hw.len))
}

/// A built layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    pub name: String,
    pub diff_id: String,
    pub size: u64,
    pub tar: PathBuf,
}

/// Runtime settings of an image.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// Healthcheck test (e.g. `["CMD", "redis-cli", "ping"]`) and interval/
    /// timeout in seconds, retries.
    pub healthcheck: Option<(Vec<String>, u64, u64, u32)>,
}

/// The config JSON of an image: its bytes define the image ID.
pub fn config_json(arch: &str, variant: Option<&str>, layers: &[Layer], c: &ImageConfig) -> Vec<u8> {
    let mut config = json!({
        "Cmd": c.cmd,
        "Env": c.env,
        "Labels": { "org.airboot.fixture": "1" },
    });
    if let Some(w) = &c.working_dir {
        config["WorkingDir"] = json!(w);
    }
    if let Some((test, interval, timeout, retries)) = &c.healthcheck {
        config["Healthcheck"] = json!({
            "Test": test,
            "Interval": interval * 1_000_000_000,
            "Timeout": timeout * 1_000_000_000,
            "StartPeriod": 0,
            "Retries": retries,
        });
    }
    let mut v = json!({
        "architecture": arch,
        "os": "linux",
        "created": EPOCH_RFC3339,
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>() },
        "history": layers.iter().map(|l| json!({ "created": EPOCH_RFC3339, "created_by": format!("airboot fixture layer: {}", l.name) })).collect::<Vec<Value>>(),
    });
    if let Some(var) = variant {
        v["variant"] = json!(var);
    }
    serde_json::to_vec(&v).expect("json")
}

/// Write a `docker save`-format archive holding one image. With `tag`
/// `None` the manifest carries no RepoTags: `docker load` then prints the
/// ID and the image must be tagged afterwards.
pub fn write_docker_archive(out: &Path, config: &[u8], layers: &[Layer], tag: Option<&str>) -> io::Result<String> {
    let id = digest(config);
    let id_hex = id.trim_start_matches("sha256:").to_string();
    let manifest = json!([{
        "Config": format!("{id_hex}.json"),
        "RepoTags": tag.map(|t| vec![t]),
        "Layers": layers.iter().map(|l| format!("{}/layer.tar", l.diff_id.trim_start_matches("sha256:"))).collect::<Vec<_>>(),
    }]);
    let mut entries = vec![
        Entry { path: format!("{id_hex}.json"), mode: 0o644, kind: EntryKind::Data(config.to_vec()) },
        Entry { path: "manifest.json".into(), mode: 0o644, kind: EntryKind::Data(serde_json::to_vec(&manifest)?) },
    ];
    for l in layers {
        let dir = l.diff_id.trim_start_matches("sha256:").to_string();
        entries.push(Entry { path: dir.clone(), mode: 0o755, kind: EntryKind::Dir });
        entries.push(Entry { path: format!("{dir}/layer.tar"), mode: 0o644, kind: EntryKind::File(l.tar.clone()) });
    }
    write_layer(entries, out)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) {
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::create_dir_all(dir.join("usr/share/doc/x")).unwrap();
        std::fs::write(dir.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(dir.join("usr/share/doc/x/README"), b"docs").unwrap();
        std::os::unix::fs::symlink("tool", dir.join("usr/bin/alias")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("usr/bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn list(tar_path: &Path) -> Vec<(String, tar::EntryType, u64, u32)> {
        let mut a = tar::Archive::new(File::open(tar_path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mtime().unwrap(),
                    h.uid().unwrap() as u32,
                )
            })
            .collect()
    }

    #[test]
    fn layers_are_deterministic_and_selective() {
        let d = tempfile::tempdir().unwrap();
        tree(&d.path().join("a"));
        let select = |p: &str| !p.starts_with("usr/share/doc");
        let e1 = collect(&d.path().join("a"), &select).unwrap();
        let (id1, _) = write_layer(e1, &d.path().join("1.tar")).unwrap();
        // Same content in another place, created in another order: same tar.
        std::thread::sleep(std::time::Duration::from_millis(20));
        tree(&d.path().join("b"));
        let e2 = collect(&d.path().join("b"), &select).unwrap();
        let (id2, _) = write_layer(e2, &d.path().join("2.tar")).unwrap();
        assert_eq!(id1, id2);
        assert_eq!(std::fs::read(d.path().join("1.tar")).unwrap(), std::fs::read(d.path().join("2.tar")).unwrap());
        let names: Vec<_> = list(&d.path().join("1.tar")).into_iter().map(|e| e.0).collect();
        // usr/share is selected (only usr/share/doc is not), so it stays as an empty folder.
        assert_eq!(names, ["usr/", "usr/bin/", "usr/bin/alias", "usr/bin/tool", "usr/share/"]);
        assert!(list(&d.path().join("1.tar")).iter().all(|e| e.2 == EPOCH && e.3 == 0));
        // The diff_id is the sha256 of the tar file.
        assert_eq!(id1, digest(&std::fs::read(d.path().join("1.tar")).unwrap()));
    }

    #[test]
    fn archive_has_the_docker_save_shape() {
        let d = tempfile::tempdir().unwrap();
        tree(&d.path().join("a"));
        let (diff_id, size) =
            write_layer(collect(&d.path().join("a"), &|_| true).unwrap(), &d.path().join("l.tar")).unwrap();
        let layer = Layer { name: "l".into(), diff_id: diff_id.clone(), size, tar: d.path().join("l.tar") };
        let c = ImageConfig {
            cmd: vec!["tool".into()],
            env: vec!["PATH=/usr/bin".into()],
            working_dir: None,
            healthcheck: Some((vec!["CMD".into(), "tool".into()], 3, 2, 3)),
        };
        let config = config_json("amd64", None, std::slice::from_ref(&layer), &c);
        let id = write_docker_archive(&d.path().join("img.tar"), &config, &[layer], Some("fixture/x:1")).unwrap();
        assert_eq!(id, digest(&config));
        let v: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"][0], diff_id.as_str());
        assert_eq!(v["config"]["Healthcheck"]["Interval"], 3_000_000_000u64);
        let mut a = tar::Archive::new(File::open(d.path().join("img.tar")).unwrap());
        let mut manifest = None;
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "manifest.json" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                manifest = Some(serde_json::from_str::<Value>(&s).unwrap());
            }
            names.push(p);
        }
        let m = manifest.unwrap();
        assert_eq!(m[0]["RepoTags"][0], "fixture/x:1");
        let hex = diff_id.trim_start_matches("sha256:");
        assert!(names.contains(&format!("{hex}/layer.tar")));
        assert_eq!(m[0]["Layers"][0], format!("{hex}/layer.tar"));
        // Untagged archives say so explicitly.
        let d2 = d.path().join("untagged.tar");
        let layer = Layer { name: "l".into(), diff_id, size, tar: d.path().join("l.tar") };
        write_docker_archive(&d2, &config, &[layer], None).unwrap();
        let mut a = tar::Archive::new(File::open(&d2).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == "manifest.json" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert!(s.contains("\"RepoTags\":null"), "{s}");
            }
        }
    }
}

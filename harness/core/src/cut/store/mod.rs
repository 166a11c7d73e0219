//! An offline check of a Docker image store (overlay2 graph driver) inside
//! an ext4 filesystem, without booting it: what a power cut left behind.
//!
//! The chain Docker trusts, checked link by link:
//! - `image/overlay2/repositories.json` maps each tag to an image ID;
//! - `image/overlay2/imagedb/content/sha256/<id>` is the image config, and
//!   its sha256 must be `<id>`; its `rootfs.diff_ids` name the layers;
//! - `image/overlay2/layerdb/sha256/<chain id>/` registers each layer:
//!   `diff` (its diff_id), `cache-id` (the overlay2 folder), `parent`,
//!   `tar-split.json.gz` (how to rebuild the layer's tar from the files);
//! - `overlay2/<cache-id>/diff/` holds the files.
//!
//! A layer's content is checked the way `docker save` would rebuild it:
//! the tar is reassembled from tar-split's raw segments and the files on
//! disk, and its sha256 must be the diff_id. A layer registered with
//! emptied files (the classic power-cut failure: metadata durable, data
//! not) fails that check even though the filesystem is clean.

use std::collections::BTreeMap;
use std::io::{self, Read};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::ext4::{Ext4, Inode, Kind};

pub const DOCKER_ROOT: &str = "/var/lib/docker";

pub mod bolt;
mod containerd;
mod docker;
mod podman;
#[cfg(test)]
mod testfs;

pub use containerd::{CONTAINERD_ROOT, check_containerd};
pub use docker::check_docker;
pub use podman::{PODMAN_ROOT, check_podman};

/// The state one expected image is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "why")]
pub enum ImageState {
    /// Tagged, config and every layer verified.
    Complete,
    /// Not tagged (never loaded, or the load's tag was lost).
    Absent,
    /// Tagged but something in its chain is missing or wrong.
    Corrupt(String),
}

/// The store as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreVerdict {
    /// Every expected image complete, nothing damaged.
    New,
    /// No expected image present, nothing damaged.
    Old,
    /// Some expected images complete, the others absent, nothing damaged.
    Between,
    /// Something registered is damaged.
    Corrupt,
}

impl StoreVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreVerdict::New => "new",
            StoreVerdict::Old => "old",
            StoreVerdict::Between => "between",
            StoreVerdict::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageCheck {
    pub reference: String,
    pub id: Option<String>,
    #[serde(flatten)]
    pub state: ImageState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCheck {
    pub verdict: StoreVerdict,
    pub images: Vec<ImageCheck>,
    /// Layers registered in layerdb, and how many verified.
    pub layers_registered: usize,
    pub layers_verified: usize,
    /// Everything found wrong, each naming the file.
    pub problems: Vec<String>,
}

impl StoreCheck {
    /// No store, or none that can be read: every expected image absent,
    /// with what was found wrong.
    pub fn absent(expected: &[String], problems: Vec<String>) -> StoreCheck {
        StoreCheck {
            verdict: verdict(&[], &problems),
            images: expected
                .iter()
                .map(|r| ImageCheck { reference: r.clone(), id: None, state: ImageState::Absent })
                .collect(),
            layers_registered: 0,
            layers_verified: 0,
            problems,
        }
    }
}

/// A layer's problem, keyed by chain id.
type LayerProblems = BTreeMap<String, String>;

/// Where a layer's files are under the data root, from its cache-id.
pub(crate) type LayerFiles = fn(&str) -> String;

/// The graph drivers whose stores the checker reads: the name Docker
/// files its image database under (`image/<driver>`), and where a
/// layer's files are under the data root, by cache-id. A vfs layer's
/// folder holds the whole tree up to it; tar-split names only the
/// layer's own files, so the same rebuild applies.
pub(crate) const DOCKER_DRIVERS: [(&str, LayerFiles); 2] =
    [("overlay2", |c| format!("overlay2/{c}/diff")), ("vfs", |c| format!("vfs/dir/{c}"))];

fn verdict(images: &[ImageCheck], problems: &[String]) -> StoreVerdict {
    let complete = images.iter().filter(|i| i.state == ImageState::Complete).count();
    if !problems.is_empty() || images.iter().any(|i| matches!(i.state, ImageState::Corrupt(_))) {
        StoreVerdict::Corrupt
    } else if complete == images.len() && !images.is_empty() {
        StoreVerdict::New
    } else if complete == 0 {
        StoreVerdict::Old
    } else {
        StoreVerdict::Between
    }
}

/// `busybox` → `docker.io/library/busybox:latest` is Docker's own
/// normalisation; airboot's references are written in full or as
/// `name:tag`, which repositories.json keeps as given for local names.
fn normalise(r: &str) -> String {
    let has_tag = r.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@'));
    if has_tag { r.to_string() } else { format!("{r}:latest") }
}

fn short(id: &str) -> String {
    let hex = id.trim_start_matches("sha256:");
    hex.chars().take(12).collect()
}

fn child(fs: &Ext4, dir: &Inode, name: &str) -> io::Result<Option<Inode>> {
    if dir.kind() != Kind::Dir {
        return Ok(None);
    }
    match fs.list(dir)?.into_iter().find(|e| e.name == name) {
        Some(e) => Ok(Some(fs.inode(e.inode)?)),
        None => Ok(None),
    }
}

/// Walk `rel` below `dir` without following symlinks.
fn walk(fs: &Ext4, dir: &Inode, rel: &str) -> io::Result<Option<Inode>> {
    let mut cur = dir.clone();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != ".") {
        match child(fs, &cur, part)? {
            Some(i) => cur = i,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

fn read_small(fs: &Ext4, ino: &Inode) -> io::Result<Vec<u8>> {
    fs.read(ino, 64 << 20)
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}
#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub use airboot_proto::load::chain_ids;

fn text_file(fs: &Ext4, dir: &Inode, name: &str) -> io::Result<Option<String>> {
    match child(fs, dir, name)? {
        Some(i) if i.kind() == Kind::File => Ok(Some(String::from_utf8_lossy(&read_small(fs, &i)?).trim().to_string())),
        _ => Ok(None),
    }
}

/// Whether the layer's files (`files`) rebuild, with its tar-split
/// (`tar_split_gz`, named `what` in messages), into a tar whose sha256 is
/// `diff` (`sha256:<hex>`): the content proof both Docker and Podman keep.
fn files_match(
    fs: &Ext4,
    files: &Inode,
    tar_split_gz: &[u8],
    what: &str,
    diff: &str,
) -> io::Result<Result<(), String>> {
    let mut json = Vec::new();
    if let Err(e) = flate2::read::GzDecoder::new(tar_split_gz).read_to_end(&mut json) {
        return Ok(Err(format!("its {what} is damaged ({} bytes: {e})", tar_split_gz.len())));
    }
    match reassemble(fs, files, &json)? {
        Ok((digest, _)) if format!("sha256:{digest}") == diff => Ok(Ok(())),
        Ok((digest, short_files)) => {
            let mut why = format!("its files do not hash to its diff_id (got {})", &digest[..12]);
            if !short_files.is_empty() {
                why.push_str(&format!(
                    "; {} file(s) shorter on disk than in the layer, e.g. {}",
                    short_files.len(),
                    short_files.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            Ok(Err(why))
        }
        Err(why) => Ok(Err(why)),
    }
}

#[derive(Deserialize)]
struct TsEntry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: String,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    payload: Option<String>,
}

/// Rebuild the layer tar from tar-split and the files: (sha256 hex,
/// files that are shorter on disk than the layer says, as "name (have/want)").
fn reassemble(fs: &Ext4, files: &Inode, json: &[u8]) -> io::Result<Result<(String, Vec<String>), String>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut h = Sha256::new();
    let mut short_files = Vec::new();
    for (n, line) in json.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let e: TsEntry = match serde_json::from_slice(line) {
            Ok(e) => e,
            Err(err) => return Ok(Err(format!("tar-split line {} is damaged: {err}", n + 1))),
        };
        match e.kind {
            2 => {
                let raw = e.payload.as_deref().unwrap_or("");
                match b64.decode(raw) {
                    Ok(bytes) => h.update(&bytes),
                    Err(err) => return Ok(Err(format!("tar-split line {} has a bad payload: {err}", n + 1))),
                }
            }
            1 if e.size > 0 => {
                let name = match &e.name_raw {
                    Some(r) => String::from_utf8_lossy(&b64.decode(r).unwrap_or_default()).into_owned(),
                    None => e.name.clone(),
                };
                let data = match walk(fs, files, &name)? {
                    Some(i) if i.kind() == Kind::File => fs.read(&i, e.size)?,
                    _ => {
                        short_files.push(format!("{name} (missing)"));
                        Vec::new()
                    }
                };
                if (data.len() as u64) < e.size && !short_files.iter().any(|s| s.starts_with(&format!("{name} "))) {
                    short_files.push(format!("{name} ({}/{} bytes)", data.len(), e.size));
                }
                h.update(&data);
            }
            _ => {}
        }
    }
    Ok(Ok((hex(&h.finalize()), short_files)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_docker() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], format!("sha256:{}", sha256_hex(format!("{a} {b}").as_bytes())));
        assert!(chain_ids(&[]).is_empty());
    }

    /// A layer rebuilt from its tar-split and the files of a real ext4
    /// (mkfs.ext4 -d): whole files hash with the tar's own bytes, a short
    /// or a missing file is named, and a whole file is never called short.
    #[test]
    fn a_layer_is_rebuilt_from_tar_split_and_the_files_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("diff/etc")).unwrap();
        std::fs::write(root.join("diff/etc/app.conf"), b"port=80\n").unwrap();
        std::fs::write(root.join("diff/short"), b"abc").unwrap();
        let img = testfs::mkfs(d.path(), &root);
        let f = std::fs::File::open(&img).unwrap();
        let fs = Ext4::open(&f).unwrap();
        let files = fs.lookup("/diff", true).unwrap().expect("/diff");
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let seg = |b: &[u8]| format!("{{\"type\":2,\"payload\":\"{}\"}}\n", b64(b));
        let file = |name: &str, size: u64| format!("{{\"type\":1,\"name\":\"{name}\",\"size\":{size}}}\n");

        let whole = format!("{}{}{}", seg(b"HEADER"), file("etc/app.conf", 8), seg(b"PAD"));
        let (hash, short) = reassemble(&fs, &files, whole.as_bytes()).unwrap().unwrap();
        assert_eq!(hash, sha256_hex(b"HEADERport=80\nPAD"), "the tar's bytes, in order");
        assert!(short.is_empty(), "{short:?}");
        // Tar names may start with "./" or hold "//": the same file.
        let dotted = format!("{}{}", seg(b"HEADER"), file(".//etc/./app.conf", 8));
        let (hash, short) = reassemble(&fs, &files, dotted.as_bytes()).unwrap().unwrap();
        assert_eq!(hash, sha256_hex(b"HEADERport=80\n"));
        assert!(short.is_empty(), "{short:?}");

        let cut = format!("{}{}", file("short", 10), file("gone/file", 4));
        let (hash, short) = reassemble(&fs, &files, cut.as_bytes()).unwrap().unwrap();
        assert_eq!(hash, sha256_hex(b"abc"));
        assert_eq!(short, ["short (3/10 bytes)", "gone/file (missing)"]);

        let damaged = format!("{}not json\n", seg(b"x"));
        let why = reassemble(&fs, &files, damaged.as_bytes()).unwrap().unwrap_err();
        assert!(why.contains("tar-split line 2 is damaged"), "{why}");
    }

    #[test]
    fn references_and_verdicts() {
        assert_eq!(normalise("fixture/redis:1"), "fixture/redis:1");
        assert_eq!(normalise("localhost:5000/app"), "localhost:5000/app:latest");
        let img = |state| ImageCheck { reference: "a:1".into(), id: None, state };
        assert_eq!(verdict(&[img(ImageState::Complete)], &[]), StoreVerdict::New);
        assert_eq!(verdict(&[img(ImageState::Absent)], &[]), StoreVerdict::Old);
        assert_eq!(verdict(&[img(ImageState::Complete), img(ImageState::Absent)], &[]), StoreVerdict::Between);
        assert_eq!(verdict(&[img(ImageState::Complete)], &["x".into()]), StoreVerdict::Corrupt);
        assert_eq!(verdict(&[img(ImageState::Corrupt("y".into()))], &[]), StoreVerdict::Corrupt);
    }
}

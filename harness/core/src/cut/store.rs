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

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::disk::ext4::{Ext4, Inode, Kind};

pub const DOCKER_ROOT: &str = "/var/lib/docker";

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

/// A layer's problem, keyed by chain id.
type LayerProblems = BTreeMap<String, String>;

const IMAGE_DIR: &str = "/var/lib/docker/image/overlay2";

/// Check the store for `expected` references (e.g. `fixture/redis:1`).
/// An unreadable filesystem is an `Err`; everything else is a finding.
pub fn check_docker(fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck> {
    let mut problems = Vec::new();
    let Some(image_dir) = fs.lookup(IMAGE_DIR, true)? else {
        // No store at all: the old (empty) state.
        let images =
            expected.iter().map(|r| ImageCheck { reference: r.clone(), id: None, state: ImageState::Absent }).collect();
        return Ok(StoreCheck {
            verdict: verdict(&[], &problems),
            images,
            layers_registered: 0,
            layers_verified: 0,
            problems,
        });
    };
    let tags = read_tags(fs, &image_dir, &mut problems)?;
    let (layers, layer_problems, registered) = check_layers(fs, &image_dir)?;
    for (chain, p) in &layer_problems {
        problems.push(format!("layer {}: {p}", short(chain)));
    }
    let mut images = Vec::new();
    for r in expected {
        let id = tags.get(&normalise(r)).cloned();
        let state = match &id {
            None => ImageState::Absent,
            Some(id) => match check_image(fs, &image_dir, id, &layers, &layer_problems)? {
                Ok(()) => ImageState::Complete,
                Err(why) => {
                    problems.push(format!("{r}: {why}"));
                    ImageState::Corrupt(why)
                }
            },
        };
        images.push(ImageCheck { reference: r.clone(), id, state });
    }
    // Other tags must resolve too (a dangling tag breaks `docker images`).
    for (r, id) in &tags {
        if !expected.iter().any(|e| normalise(e) == *r) && config_path(fs, &image_dir, id)?.is_none() {
            problems.push(format!("tag {r} points at image {} whose config is missing", short(id)));
        }
    }
    let verified = registered - layer_problems.len();
    Ok(StoreCheck {
        verdict: verdict(&images, &problems),
        images,
        layers_registered: registered,
        layers_verified: verified,
        problems,
    })
}

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
struct Repositories {
    #[serde(rename = "Repositories", default)]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

fn read_tags(fs: &Ext4, image_dir: &Inode, problems: &mut Vec<String>) -> io::Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    let Some(f) = child(fs, image_dir, "repositories.json")? else {
        return Ok(tags);
    };
    let data = read_small(fs, &f)?;
    match serde_json::from_slice::<Repositories>(&data) {
        Ok(r) => {
            for (_, refs) in r.repositories {
                tags.extend(refs);
            }
        }
        Err(e) => problems.push(format!(
            "{IMAGE_DIR}/repositories.json is damaged ({} bytes: {e}): the engine cannot read its tags",
            data.len()
        )),
    }
    Ok(tags)
}

fn config_path(fs: &Ext4, image_dir: &Inode, id: &str) -> io::Result<Option<Inode>> {
    let hex = id.trim_start_matches("sha256:");
    walk(fs, image_dir, &format!("imagedb/content/sha256/{hex}"))
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

fn check_image(
    fs: &Ext4,
    image_dir: &Inode,
    id: &str,
    layers: &BTreeSet<String>,
    layer_problems: &LayerProblems,
) -> io::Result<Result<(), String>> {
    let Some(cfg) = config_path(fs, image_dir, id)? else {
        return Ok(Err(format!("the tag points at image {} whose config is missing", short(id))));
    };
    let data = read_small(fs, &cfg)?;
    let hash = sha256_hex(&data);
    if hash != id.trim_start_matches("sha256:") {
        return Ok(Err(format!(
            "config {} does not match its name ({} bytes hash to {})",
            short(id),
            data.len(),
            &hash[..12]
        )));
    }
    let config: Config = match serde_json::from_slice(&data) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("config {} is not an image config: {e}", short(id)))),
    };
    for (n, chain) in chain_ids(&config.rootfs.diff_ids).iter().enumerate() {
        if !layers.contains(chain) {
            return Ok(Err(format!("layer {} of {} (chain {}) is not registered", n + 1, short(id), short(chain))));
        }
        if let Some(p) = layer_problems.get(chain) {
            return Ok(Err(format!("layer {} (chain {}) is damaged: {p}", n + 1, short(chain))));
        }
    }
    Ok(Ok(()))
}

/// Every registered layer (chain ids), the damaged ones with why, and how many there are.
fn check_layers(fs: &Ext4, image_dir: &Inode) -> io::Result<(BTreeSet<String>, LayerProblems, usize)> {
    let mut all = BTreeSet::new();
    let mut problems = LayerProblems::new();
    let Some(db) = walk(fs, image_dir, "layerdb/sha256")? else {
        return Ok((all, problems, 0));
    };
    let overlay = fs.lookup(&format!("{DOCKER_ROOT}/overlay2"), true)?;
    for e in fs.list(&db)? {
        if e.name.len() != 64 || !e.name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let chain = format!("sha256:{}", e.name);
        all.insert(chain.clone());
        let dir = fs.inode(e.inode)?;
        if let Err(why) = check_layer(fs, &dir, &chain, overlay.as_ref())? {
            problems.insert(chain, why);
        }
    }
    let n = all.len();
    Ok((all, problems, n))
}

fn text_file(fs: &Ext4, dir: &Inode, name: &str) -> io::Result<Option<String>> {
    match child(fs, dir, name)? {
        Some(i) if i.kind() == Kind::File => Ok(Some(String::from_utf8_lossy(&read_small(fs, &i)?).trim().to_string())),
        _ => Ok(None),
    }
}

fn check_layer(fs: &Ext4, dir: &Inode, chain: &str, overlay: Option<&Inode>) -> io::Result<Result<(), String>> {
    let diff = match text_file(fs, dir, "diff")? {
        Some(d) if d.starts_with("sha256:") && d.len() == 71 => d,
        Some(d) if d.is_empty() => return Ok(Err("its diff file is empty".into())),
        Some(d) => return Ok(Err(format!("its diff file holds {:?}", short(&d)))),
        None => return Ok(Err("its diff file is missing".into())),
    };
    let expected_chain = match text_file(fs, dir, "parent")? {
        Some(p) if !p.is_empty() => format!("sha256:{}", sha256_hex(format!("{p} {diff}").as_bytes())),
        _ => diff.clone(),
    };
    if expected_chain != chain {
        return Ok(Err(format!("its diff/parent files give chain {}, not its folder name", short(&expected_chain))));
    }
    let cache_id = match text_file(fs, dir, "cache-id")? {
        Some(c) if !c.is_empty() => c,
        Some(_) => return Ok(Err("its cache-id file is empty".into())),
        None => return Ok(Err("its cache-id file is missing".into())),
    };
    let Some(files) = overlay.map(|o| walk(fs, o, &format!("{cache_id}/diff"))).transpose()?.flatten() else {
        return Ok(Err(format!("its folder overlay2/{cache_id}/diff is missing")));
    };
    let Some(ts) = child(fs, dir, "tar-split.json.gz")? else {
        return Ok(Err("its tar-split.json.gz is missing".into()));
    };
    let ts = read_small(fs, &ts)?;
    let mut json = Vec::new();
    if let Err(e) = flate2::read::GzDecoder::new(&ts[..]).read_to_end(&mut json) {
        return Ok(Err(format!("its tar-split.json.gz is damaged ({} bytes: {e})", ts.len())));
    }
    match reassemble(fs, &files, &json)? {
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

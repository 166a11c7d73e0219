//! Podman's containers-storage (overlay driver) on the device's root
//! filesystem: images in overlay-images/images.json (names, top layer,
//! the config kept as a big-data file), layers in
//! overlay-layers/layers.json (parent, diff-digest, the `incomplete` flag
//! a layer carries until it is fully written), each layer's files in
//! overlay/<id>/diff and its tar-split in overlay-layers/<id>.tar-split.gz.
//! The content proof is Docker's: the files, rebuilt into the layer tar
//! with its tar-split, must hash to its diff-digest.

use std::collections::BTreeMap;
use std::io;

use base64::Engine as _;
use serde::Deserialize;

use super::*;
use crate::disk::ext4::{Ext4, Inode};

/// Where Podman keeps its store.
pub const PODMAN_ROOT: &str = "/var/lib/containers/storage";

#[derive(Deserialize)]
struct PImage {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    layer: String,
}

#[derive(Deserialize)]
struct PLayer {
    id: String,
    #[serde(default)]
    parent: String,
    #[serde(rename = "diff-digest", default)]
    diff_digest: String,
    #[serde(default)]
    flags: BTreeMap<String, serde_json::Value>,
}

/// A JSON array file of the store (`None` when absent), or why it cannot be read.
fn read_list<T: serde::de::DeserializeOwned>(
    fs: &Ext4,
    root: &Inode,
    rel: &str,
) -> io::Result<Option<Result<Vec<T>, String>>> {
    let Some(f) = walk(fs, root, rel)? else { return Ok(None) };
    let data = read_small(fs, &f)?;
    Ok(Some(
        serde_json::from_slice(&data)
            .map_err(|e| format!("{PODMAN_ROOT}/{rel} is damaged ({} bytes: {e}): podman cannot read it", data.len())),
    ))
}

/// Check the store for `expected` references (`localhost/fixture/redis:1`).
pub fn check_podman(fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck> {
    let mut problems = Vec::new();
    let absent = |problems| StoreCheck::absent(expected, problems);
    let Some(root) = fs.lookup(PODMAN_ROOT, true)? else { return Ok(absent(problems)) };
    let images: Vec<PImage> = match read_list(fs, &root, "overlay-images/images.json")? {
        None => Vec::new(),
        Some(Ok(i)) => i,
        Some(Err(why)) => {
            problems.push(why);
            Vec::new()
        }
    };
    let layers: Vec<PLayer> = match read_list(fs, &root, "overlay-layers/layers.json")? {
        None => Vec::new(),
        Some(Ok(l)) => l,
        Some(Err(why)) => {
            problems.push(why);
            Vec::new()
        }
    };
    // Image layers (with a diff digest; a container's writable layer has
    // none) and what is wrong with each.
    let by_id: BTreeMap<&str, &PLayer> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut layer_problems = LayerProblems::new();
    let mut registered = 0;
    for l in layers.iter().filter(|l| !l.diff_digest.is_empty()) {
        registered += 1;
        if let Err(why) = check_layer(fs, &root, l)? {
            problems.push(format!("layer {}: {why}", short(&l.id)));
            layer_problems.insert(l.id.clone(), why);
        }
    }
    let mut checks = Vec::new();
    for r in expected {
        let want = normalise(r);
        let Some(img) = images.iter().find(|i| i.names.iter().any(|n| normalise(n) == want)) else {
            checks.push(ImageCheck { reference: r.clone(), id: None, state: ImageState::Absent });
            continue;
        };
        let id = format!("sha256:{}", img.id);
        let state = match check_image(fs, &root, img, &by_id, &layer_problems)? {
            Ok(()) => ImageState::Complete,
            Err(why) => {
                problems.push(format!("{r}: {why}"));
                ImageState::Corrupt(why)
            }
        };
        checks.push(ImageCheck { reference: r.clone(), id: Some(id), state });
    }
    Ok(StoreCheck {
        verdict: verdict(&checks, &problems),
        images: checks,
        layers_registered: registered,
        layers_verified: registered - layer_problems.len(),
        problems,
    })
}

fn check_layer(fs: &Ext4, root: &Inode, l: &PLayer) -> io::Result<Result<(), String>> {
    if l.flags.get("incomplete").and_then(|v| v.as_bool()) == Some(true) {
        return Ok(Err("it is marked incomplete (its writing never finished)".into()));
    }
    let Some(files) = walk(fs, root, &format!("overlay/{}/diff", l.id))? else {
        return Ok(Err(format!("its folder overlay/{}/diff is missing", l.id)));
    };
    let name = format!("{}.tar-split.gz", l.id);
    let Some(ts) = walk(fs, root, &format!("overlay-layers/{name}"))? else {
        return Ok(Err(format!("its {name} is missing")));
    };
    files_match(fs, &files, &read_small(fs, &ts)?, &name, &l.diff_digest)
}

/// An image: its config (kept under the name "sha256:<id>") matches its
/// ID, and its layer chain, from the top layer down through the parents,
/// is the config's diff_ids, each registered and sound.
fn check_image(
    fs: &Ext4,
    root: &Inode,
    img: &PImage,
    layers: &BTreeMap<&str, &PLayer>,
    layer_problems: &LayerProblems,
) -> io::Result<Result<(), String>> {
    let key = format!("sha256:{}", img.id);
    let file = format!("={}", base64::engine::general_purpose::STANDARD.encode(key.as_bytes()));
    let Some(cfg) = walk(fs, root, &format!("overlay-images/{}/{file}", img.id))? else {
        return Ok(Err(format!("image {} has no config", short(&img.id))));
    };
    let data = read_small(fs, &cfg)?;
    let hash = sha256_hex(&data);
    if hash != img.id {
        return Ok(Err(format!(
            "config {} does not match its name ({} bytes hash to {})",
            short(&img.id),
            data.len(),
            &hash[..12]
        )));
    }
    let config: Config = match serde_json::from_slice(&data) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("config {} is not an image config: {e}", short(&img.id)))),
    };
    // The chain, top first.
    let mut chain = Vec::new();
    let mut next = img.layer.as_str();
    while !next.is_empty() && chain.len() <= config.rootfs.diff_ids.len() {
        let Some(l) = layers.get(next) else {
            return Ok(Err(format!(
                "layer {} (layer {} of its chain from the top) is not registered",
                short(next),
                chain.len() + 1
            )));
        };
        chain.push(*l);
        next = l.parent.as_str();
    }
    chain.reverse();
    let diffs: Vec<&str> = chain.iter().map(|l| l.diff_digest.as_str()).collect();
    if diffs != config.rootfs.diff_ids.iter().map(String::as_str).collect::<Vec<_>>() {
        return Ok(Err(format!(
            "its layer chain ({} layers) is not its config's diff_ids ({} layers)",
            diffs.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    for (n, l) in chain.iter().enumerate() {
        if let Some(p) = layer_problems.get(&l.id) {
            return Ok(Err(format!("layer {} ({}) is damaged: {p}", n + 1, short(&l.id))));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::super::testfs;
    use super::*;
    use std::path::Path;

    /// One image of one layer, as `podman load` leaves it, written into a
    /// real ext4. `spoil` changes the tree (and may rewrite layers.json)
    /// before the filesystem is made.
    fn check(spoil: impl FnOnce(&Path, &str, &str)) -> StoreCheck {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let store = root.join("var/lib/containers/storage");
        let lid = "1a".repeat(32);
        let (diff, split) = testfs::layer(&store.join(format!("overlay/{lid}/diff")));
        std::fs::create_dir_all(store.join("overlay-layers")).unwrap();
        std::fs::write(store.join(format!("overlay-layers/{lid}.tar-split.gz")), split).unwrap();
        std::fs::write(
            store.join("overlay-layers/layers.json"),
            format!("[{{\"id\":\"{lid}\",\"parent\":\"\",\"diff-digest\":\"{diff}\"}}]"),
        )
        .unwrap();
        let (config, id) = testfs::config(&[&diff]);
        let key = base64::engine::general_purpose::STANDARD.encode(format!("sha256:{id}"));
        std::fs::create_dir_all(store.join(format!("overlay-images/{id}"))).unwrap();
        std::fs::write(store.join(format!("overlay-images/{id}/={key}")), &config).unwrap();
        std::fs::write(
            store.join("overlay-images/images.json"),
            format!("[{{\"id\":\"{id}\",\"names\":[\"localhost/fixture/app:1\"],\"layer\":\"{lid}\"}}]"),
        )
        .unwrap();
        spoil(&store, &lid, &diff);
        let img = testfs::mkfs(d.path(), &root);
        let f = std::fs::File::open(&img).unwrap();
        check_podman(&Ext4::open(&f).unwrap(), &["localhost/fixture/app:1".into()]).unwrap()
    }

    #[test]
    fn a_whole_image_is_new_and_each_broken_rule_is_named() {
        let c = check(|_, _, _| {});
        assert_eq!(c.verdict, StoreVerdict::New, "{:?}", c.problems);
        assert_eq!((c.layers_registered, c.layers_verified), (1, 1));

        // The layer still carries the flag podman clears once it is written.
        let c = check(|s, lid, diff| {
            let layers = format!(
                "[{{\"id\":\"{lid}\",\"parent\":\"\",\"diff-digest\":\"{diff}\",\"flags\":{{\"incomplete\":true}}}}]"
            );
            std::fs::write(s.join("overlay-layers/layers.json"), layers).unwrap();
        });
        assert_eq!(c.verdict, StoreVerdict::Corrupt);
        assert!(c.problems.iter().any(|p| p.contains("marked incomplete")), "{:?}", c.problems);

        // The image's top layer names a parent that is not registered.
        let c = check(|s, lid, diff| {
            let layers =
                format!("[{{\"id\":\"{lid}\",\"parent\":\"{}\",\"diff-digest\":\"{diff}\"}}]", "9f".repeat(32));
            std::fs::write(s.join("overlay-layers/layers.json"), layers).unwrap();
        });
        assert_eq!(c.verdict, StoreVerdict::Corrupt);
        assert!(c.problems.iter().any(|p| p.contains("is not registered")), "{:?}", c.problems);

        // A file of the layer changed: its files no longer hash to its diff-digest.
        let c = check(|s, lid, _| {
            std::fs::write(s.join(format!("overlay/{lid}/diff/etc/app.conf")), b"port=81\n").unwrap()
        });
        assert_eq!(c.verdict, StoreVerdict::Corrupt);
        assert!(c.problems.iter().any(|p| p.contains("do not hash to its diff_id")), "{:?}", c.problems);
    }
}

//! Docker's store on the device's root filesystem (overlay2 or vfs graph
//! driver): tags in repositories.json, configs in imagedb, layers in
//! layerdb (chain ids, diff, parent, cache-id, tar-split) with their files
//! in `overlay2/<cache-id>/diff` or `vfs/dir/<cache-id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use serde::Deserialize;

use super::*;
use crate::disk::ext4::{Ext4, Inode};

/// Check the store for `expected` references (e.g. `fixture/redis:1`).
/// An unreadable filesystem is an `Err`; everything else is a finding.
pub fn check_docker(fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck> {
    let mut problems = Vec::new();
    let mut found = None;
    for (driver, files) in DOCKER_DRIVERS {
        if let Some(dir) = fs.lookup(&format!("{DOCKER_ROOT}/image/{driver}"), true)? {
            found = Some((driver, files, dir));
            break;
        }
    }
    let Some((driver, layer_files, image_dir)) = found else {
        // No store at all: the old (empty) state.
        return Ok(StoreCheck::absent(expected, problems));
    };
    let tags = read_tags(fs, &image_dir, driver, &mut problems)?;
    let (layers, layer_problems, registered) = check_layers(fs, &image_dir, layer_files)?;
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

#[derive(Deserialize)]
struct Repositories {
    #[serde(rename = "Repositories", default)]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

fn read_tags(
    fs: &Ext4,
    image_dir: &Inode,
    driver: &str,
    problems: &mut Vec<String>,
) -> io::Result<BTreeMap<String, String>> {
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
            "{DOCKER_ROOT}/image/{driver}/repositories.json is damaged ({} bytes: {e}): the engine cannot read its tags",
            data.len()
        )),
    }
    Ok(tags)
}

fn config_path(fs: &Ext4, image_dir: &Inode, id: &str) -> io::Result<Option<Inode>> {
    let hex = id.trim_start_matches("sha256:");
    walk(fs, image_dir, &format!("imagedb/content/sha256/{hex}"))
}

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
fn check_layers(
    fs: &Ext4,
    image_dir: &Inode,
    layer_files: LayerFiles,
) -> io::Result<(BTreeSet<String>, LayerProblems, usize)> {
    let mut all = BTreeSet::new();
    let mut problems = LayerProblems::new();
    let Some(db) = walk(fs, image_dir, "layerdb/sha256")? else {
        return Ok((all, problems, 0));
    };
    let root = fs.lookup(DOCKER_ROOT, true)?;
    for e in fs.list(&db)? {
        if e.name.len() != 64 || !e.name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let chain = format!("sha256:{}", e.name);
        all.insert(chain.clone());
        let dir = fs.inode(e.inode)?;
        if let Err(why) = check_layer(fs, &dir, &chain, root.as_ref(), layer_files)? {
            problems.insert(chain, why);
        }
    }
    let n = all.len();
    Ok((all, problems, n))
}

fn check_layer(
    fs: &Ext4,
    dir: &Inode,
    chain: &str,
    root: Option<&Inode>,
    layer_files: LayerFiles,
) -> io::Result<Result<(), String>> {
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
    let folder = layer_files(&cache_id);
    let Some(files) = root.map(|o| walk(fs, o, &folder)).transpose()?.flatten() else {
        return Ok(Err(format!("its folder {folder} is missing")));
    };
    let Some(ts) = child(fs, dir, "tar-split.json.gz")? else {
        return Ok(Err("its tar-split.json.gz is missing".into()));
    };
    files_match(fs, &files, &read_small(fs, &ts)?, "tar-split.json.gz", &diff)
}

#[cfg(test)]
mod tests {
    use super::super::testfs;
    use super::*;
    use std::path::Path;

    /// One image of one layer, as `docker load` leaves it on overlay2,
    /// written into a real ext4. `spoil` changes the tree before the
    /// filesystem is made.
    fn check(spoil: impl FnOnce(&Path, &str)) -> StoreCheck {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let docker = root.join("var/lib/docker");
        let (diff, split) = testfs::layer(&docker.join("overlay2/c4c4e1/diff"));
        let layer = docker.join("image/overlay2/layerdb/sha256").join(diff.trim_start_matches("sha256:"));
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::write(layer.join("diff"), &diff).unwrap();
        std::fs::write(layer.join("cache-id"), "c4c4e1").unwrap();
        std::fs::write(layer.join("tar-split.json.gz"), split).unwrap();
        let (config, id) = testfs::config(&[&diff]);
        let imagedb = docker.join("image/overlay2/imagedb/content/sha256");
        std::fs::create_dir_all(&imagedb).unwrap();
        std::fs::write(imagedb.join(&id), &config).unwrap();
        std::fs::write(
            docker.join("image/overlay2/repositories.json"),
            format!("{{\"Repositories\":{{\"fixture/app\":{{\"fixture/app:1\":\"sha256:{id}\"}}}}}}"),
        )
        .unwrap();
        spoil(&docker, &id);
        let img = testfs::mkfs(d.path(), &root);
        let f = std::fs::File::open(&img).unwrap();
        check_docker(&Ext4::open(&f).unwrap(), &["fixture/app:1".into()]).unwrap()
    }
    #[test]
    fn a_whole_image_is_new_and_each_broken_rule_is_named() {
        let c = check(|_, _| {});
        assert_eq!(c.verdict, StoreVerdict::New, "{:?}", c.problems);
        assert_eq!((c.layers_registered, c.layers_verified), (1, 1));
        assert!(matches!(c.images[0].state, ImageState::Complete));

        // The config's bytes no longer hash to its name.
        let c = check(|d, id| {
            std::fs::write(d.join("image/overlay2/imagedb/content/sha256").join(id), b"{\"rootfs\":{}}").unwrap()
        });
        assert_eq!(c.verdict, StoreVerdict::Corrupt);
        assert!(c.problems[0].contains("does not match its name"), "{:?}", c.problems);

        // A file of the layer changed on disk: its files no longer hash to the diff_id.
        let c = check(|d, _| std::fs::write(d.join("overlay2/c4c4e1/diff/etc/app.conf"), b"port=81\n").unwrap());
        assert_eq!(c.verdict, StoreVerdict::Corrupt);
        assert_eq!(c.layers_verified, 0);
        assert!(c.problems.iter().any(|p| p.contains("do not hash to its diff_id")), "{:?}", c.problems);

        // The tag is gone: the image is absent, the store is the old one.
        let c = check(|d, _| std::fs::write(d.join("image/overlay2/repositories.json"), "{}").unwrap());
        assert_eq!(c.verdict, StoreVerdict::Old);
        assert!(matches!(c.images[0].state, ImageState::Absent));
    }
}

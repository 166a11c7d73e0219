//! Positive controls for the offline store checkers, on real stores: the
//! preseeded fixture's `/var/lib/docker` (written by a real dockerd at
//! build time) and the Podman fixture's `/var/lib/containers/storage`
//! (written by a real podman). The intact store must check complete; each
//! state damaged on purpose (with debugfs, on a copy) must be classified
//! as damaged, naming what is wrong. A checker that never finds anything
//! fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

use airboot_core::cut::store::{ImageState, StoreCheck, StoreVerdict, chain_ids, check_docker, check_podman};
use airboot_core::disk::ext4::Ext4;
use airboot_images::{cache_root, find, lookup};
use base64::Engine as _;

const FIXTURE: &str = "debian-preseeded-x86_64";
const IMAGES: [&str; 2] = ["fixture/busybox:1", "fixture/redis:1"];

fn expected() -> Vec<String> {
    IMAGES.iter().map(|s| s.to_string()).collect()
}

/// The fixture's root filesystem as a raw file (the fixture disk is a bare ext4).
fn root_fs(dir: &Path) -> PathBuf {
    root_fs_of(FIXTURE, dir)
}

fn root_fs_of(fixture: &str, dir: &Path) -> PathBuf {
    let def = find(fixture).unwrap();
    let f = lookup(&cache_root(), &def)
        .unwrap_or_else(|| panic!("fixture {fixture} is not built: run `airboot images build {fixture}`"));
    let out = dir.join("root.raw");
    let size = airboot_qemu::disk::open_image(&f.disk()).unwrap().size();
    airboot_qemu::crash::extract(&f.disk(), 0, size, &out).unwrap();
    out
}

fn check(fs: &Path) -> StoreCheck {
    let f = std::fs::File::open(fs).unwrap();
    let e = Ext4::open(&f).unwrap();
    check_docker(&e, &expected()).unwrap()
}

fn read(fs: &Path, path: &str) -> String {
    let f = std::fs::File::open(fs).unwrap();
    let e = Ext4::open(&f).unwrap();
    let ino = e.lookup(path, true).unwrap().unwrap_or_else(|| panic!("{path} not in the fixture"));
    String::from_utf8_lossy(&e.read(&ino, 1 << 20).unwrap()).trim().to_string()
}

/// A copy of `fs` changed by debugfs commands.
fn damaged(fs: &Path, name: &str, cmds: &[String]) -> PathBuf {
    let out = fs.with_file_name(format!("{name}.raw"));
    let st = Command::new("cp").args(["--sparse=always"]).arg(fs).arg(&out).status().unwrap();
    assert!(st.success());
    let script = fs.with_file_name(format!("{name}.debugfs"));
    std::fs::write(&script, cmds.join("\n") + "\n").unwrap();
    let o = Command::new("debugfs").arg("-w").arg("-f").arg(&script).arg(&out).output().unwrap();
    assert!(o.status.success(), "debugfs: {}", String::from_utf8_lossy(&o.stderr));
    out
}

struct Ids {
    redis_id: String,
    redis_top_cache: String,
}

fn ids(fs: &Path) -> Ids {
    let repos: serde_json::Value =
        serde_json::from_str(&read(fs, "/var/lib/docker/image/overlay2/repositories.json")).unwrap();
    let redis_id = repos["Repositories"]["fixture/redis"]["fixture/redis:1"].as_str().unwrap().to_string();
    let hex = redis_id.trim_start_matches("sha256:");
    let cfg: serde_json::Value =
        serde_json::from_str(&read(fs, &format!("/var/lib/docker/image/overlay2/imagedb/content/sha256/{hex}")))
            .unwrap();
    let diffs: Vec<String> =
        cfg["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    let top = chain_ids(&diffs).pop().unwrap();
    let cache = read(
        fs,
        &format!("/var/lib/docker/image/overlay2/layerdb/sha256/{}/cache-id", top.trim_start_matches("sha256:")),
    );
    Ids { redis_id, redis_top_cache: cache }
}

fn state_of(c: &StoreCheck, r: &str) -> ImageState {
    c.images.iter().find(|i| i.reference == r).unwrap().state.clone()
}

#[test]
fn the_store_checker_finds_what_was_damaged_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let fs = root_fs(dir.path());

    // Intact: both images complete, every layer's content matches its diff_id.
    let ok = check(&fs);
    assert_eq!(ok.verdict, StoreVerdict::New, "{ok:#?}");
    assert!(ok.layers_registered >= 2 && ok.layers_verified == ok.layers_registered, "{ok:#?}");
    let ids = ids(&fs);
    let diff = format!("/var/lib/docker/overlay2/{}/diff", ids.redis_top_cache);

    // 1. A layer registered, its files emptied (metadata durable, data not).
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let emptied = damaged(
        &fs,
        "emptied",
        &[
            format!("cd {diff}/usr/bin"),
            "rm redis-check-rdb".into(),
            format!("write {} redis-check-rdb", empty.display()),
        ],
    );
    let c = check(&emptied);
    assert_eq!(c.verdict, StoreVerdict::Corrupt, "{c:#?}");
    assert!(
        matches!(state_of(&c, "fixture/redis:1"), ImageState::Corrupt(w) if w.contains("redis-check-rdb")),
        "{c:#?}"
    );
    assert_eq!(state_of(&c, "fixture/busybox:1"), ImageState::Complete, "only the redis layer was touched");

    // 2. repositories.json cut short.
    let repos = read(&fs, "/var/lib/docker/image/overlay2/repositories.json");
    let short = dir.path().join("repos-short");
    std::fs::write(&short, &repos.as_bytes()[..repos.len() / 3]).unwrap();
    let t = damaged(
        &fs,
        "repos",
        &[
            "cd /var/lib/docker/image/overlay2".into(),
            "rm repositories.json".into(),
            format!("write {} repositories.json", short.display()),
        ],
    );
    let c = check(&t);
    assert_eq!(c.verdict, StoreVerdict::Corrupt, "{c:#?}");
    assert!(c.problems.iter().any(|p| p.contains("repositories.json is damaged")), "{c:#?}");

    // 3. A layer's folder missing.
    let t = damaged(&fs, "nolayer", &[format!("unlink /var/lib/docker/overlay2/{}", ids.redis_top_cache)]);
    let c = check(&t);
    assert!(matches!(state_of(&c, "fixture/redis:1"), ImageState::Corrupt(w) if w.contains("missing")), "{c:#?}");
    // ... which fsck also notices (the folder's inodes are orphaned).
    let fsck = airboot_qemu::crash::fsck(&t).unwrap();
    assert!(!fsck.clean, "{fsck:?}");

    // 4. A tag pointing at a config that is not there.
    let hex = ids.redis_id.trim_start_matches("sha256:");
    let t = damaged(&fs, "nocfg", &[format!("unlink /var/lib/docker/image/overlay2/imagedb/content/sha256/{hex}")]);
    let c = check(&t);
    assert!(
        matches!(state_of(&c, "fixture/redis:1"), ImageState::Corrupt(w) if w.contains("config is missing")),
        "{c:#?}"
    );

    // 5. A config whose bytes no longer match its name.
    let cfg = read(&fs, &format!("/var/lib/docker/image/overlay2/imagedb/content/sha256/{hex}"));
    let edited = dir.path().join("cfg");
    std::fs::write(&edited, cfg.replace("\"architecture\"", "\"Architecture\"")).unwrap();
    let t = damaged(
        &fs,
        "badcfg",
        &[
            "cd /var/lib/docker/image/overlay2/imagedb/content/sha256".into(),
            format!("rm {hex}"),
            format!("write {} {hex}", edited.display()),
        ],
    );
    let c = check(&t);
    assert!(
        matches!(state_of(&c, "fixture/redis:1"), ImageState::Corrupt(w) if w.contains("does not match its name")),
        "{c:#?}"
    );

    // The intact copy is still clean for fsck, and unchanged by all this.
    assert!(airboot_qemu::crash::fsck(&fs).unwrap().clean);
    assert_eq!(check(&fs).verdict, StoreVerdict::New);
}

const PODMAN: &str = "debian-podman-x86_64";
const PODMAN_IMAGES: [&str; 2] = ["localhost/fixture/busybox:1", "localhost/fixture/redis:1"];
const STORE: &str = "/var/lib/containers/storage";

fn check_pm(fs: &Path) -> StoreCheck {
    let f = std::fs::File::open(fs).unwrap();
    let e = Ext4::open(&f).unwrap();
    check_podman(&e, &PODMAN_IMAGES.map(String::from)).unwrap()
}

/// A copy of `fs` whose store file `rel` holds `text` instead.
fn replaced(fs: &Path, name: &str, rel: &str, text: &str) -> PathBuf {
    let (dir, file) = rel.rsplit_once('/').unwrap();
    let new = fs.with_file_name(format!("{name}.new"));
    std::fs::write(&new, text).unwrap();
    damaged(fs, name, &[format!("cd {STORE}/{dir}"), format!("rm {file}"), format!("write {} {file}", new.display())])
}

#[test]
fn the_podman_store_checker_finds_what_was_damaged_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let fs = root_fs_of(PODMAN, dir.path());
    let ok = check_pm(&fs);
    assert_eq!(ok.verdict, StoreVerdict::New, "{ok:#?}");
    // busybox's two layers and redis's three share the base: four image layers.
    assert_eq!((ok.layers_registered, ok.layers_verified), (4, 4), "{ok:#?}");
    let images: serde_json::Value =
        serde_json::from_str(&read(&fs, &format!("{STORE}/overlay-images/images.json"))).unwrap();
    let redis = images.as_array().unwrap().iter().find(|i| i["names"][0] == PODMAN_IMAGES[1]).unwrap();
    let (redis_id, top) = (redis["id"].as_str().unwrap().to_string(), redis["layer"].as_str().unwrap().to_string());
    let layers_text = read(&fs, &format!("{STORE}/overlay-layers/layers.json"));

    // 1. A file of redis's top layer emptied (the metadata says complete).
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let t = damaged(
        &fs,
        "pm-emptied",
        &[
            format!("cd {STORE}/overlay/{top}/diff/usr/bin"),
            "rm redis-check-rdb".into(),
            format!("write {} redis-check-rdb", empty.display()),
        ],
    );
    let c = check_pm(&t);
    assert!(
        matches!(state_of(&c, PODMAN_IMAGES[1]), ImageState::Corrupt(w) if w.contains("redis-check-rdb")),
        "{c:#?}"
    );
    assert_eq!(state_of(&c, PODMAN_IMAGES[0]), ImageState::Complete, "only the redis layer was touched");

    // 2. A layer record still flagged incomplete (containers/storage#1136).
    let mut layers: serde_json::Value = serde_json::from_str(&layers_text).unwrap();
    let l = layers.as_array_mut().unwrap().iter_mut().find(|l| l["id"] == top.as_str()).unwrap();
    l["flags"] = serde_json::json!({ "incomplete": true });
    let c = check_pm(&replaced(&fs, "pm-incomplete", "overlay-layers/layers.json", &layers.to_string()));
    assert!(
        matches!(state_of(&c, PODMAN_IMAGES[1]), ImageState::Corrupt(w) if w.contains("marked incomplete")),
        "{c:#?}"
    );

    // 3. The top layer's record lost: the image's chain is broken.
    let mut layers: serde_json::Value = serde_json::from_str(&layers_text).unwrap();
    layers.as_array_mut().unwrap().retain(|l| l["id"] != top.as_str());
    let c = check_pm(&replaced(&fs, "pm-norecord", "overlay-layers/layers.json", &layers.to_string()));
    assert!(
        matches!(state_of(&c, PODMAN_IMAGES[1]), ImageState::Corrupt(w) if w.contains("is not registered")),
        "{c:#?}"
    );

    // 4. images.json cut short.
    let text = read(&fs, &format!("{STORE}/overlay-images/images.json"));
    let c = check_pm(&replaced(&fs, "pm-short", "overlay-images/images.json", &text[..text.len() / 3]));
    assert_eq!(c.verdict, StoreVerdict::Corrupt, "{c:#?}");
    assert!(c.problems.iter().any(|p| p.contains("images.json is damaged")), "{c:#?}");

    // 5. The config no longer matches the image's ID.
    // containers-storage names a big-data file "=" + base64(key).
    let key = format!("={}", base64::engine::general_purpose::STANDARD.encode(format!("sha256:{redis_id}")));
    let cfg = read(&fs, &format!("{STORE}/overlay-images/{redis_id}/{key}"));
    let c = check_pm(&replaced(
        &fs,
        "pm-cfg",
        &format!("overlay-images/{redis_id}/{key}"),
        &cfg.replace("\"architecture\"", "\"Architecture\""),
    ));
    assert!(
        matches!(state_of(&c, PODMAN_IMAGES[1]), ImageState::Corrupt(w) if w.contains("does not match its name")),
        "{c:#?}"
    );

    assert_eq!(check_pm(&fs).verdict, StoreVerdict::New, "the intact copy is unchanged");
}

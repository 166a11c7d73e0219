//! Positive controls for the offline store checker, on a real Docker store:
//! the preseeded fixture's `/var/lib/docker` (written by a real dockerd at
//! build time). The intact store must check complete; each state damaged
//! on purpose (with debugfs, on a copy) must be classified as damaged,
//! naming what is wrong. A checker that never finds anything fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

use airboot_core::cut::store::{ImageState, StoreCheck, StoreVerdict, chain_ids, check_docker};
use airboot_core::disk::ext4::Ext4;
use airboot_images::{cache_root, find, lookup};

const FIXTURE: &str = "debian-preseeded-x86_64";
const IMAGES: [&str; 2] = ["fixture/busybox:1", "fixture/redis:1"];

fn expected() -> Vec<String> {
    IMAGES.iter().map(|s| s.to_string()).collect()
}

/// The fixture's root filesystem as a raw file (the fixture disk is a bare ext4).
fn root_fs(dir: &Path) -> PathBuf {
    let def = find(FIXTURE).unwrap();
    let f = lookup(&cache_root(), &def)
        .unwrap_or_else(|| panic!("fixture {FIXTURE} is not built: run `airboot images build {FIXTURE}`"));
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

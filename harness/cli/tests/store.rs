//! Positive controls for the offline store checkers, on real stores: the
//! preseeded fixture's `/var/lib/docker` (written by a real dockerd at
//! build time), the Podman fixture's `/var/lib/containers/storage`
//! (written by a real podman) and a `/var/lib/containerd` written by a
//! real containerd importing the containerd fixture's archives. The
//! intact store must check complete; each state damaged on purpose (with
//! debugfs, on a copy) must be classified as damaged, naming what is
//! wrong. A checker that never finds anything fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

use airboot_core::cut::store::{
    ImageState, StoreCheck, StoreVerdict, chain_ids, check_containerd, check_docker, check_podman,
};
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

const CONTAINERD: &str = "debian-containerd-x86_64";
const CTRD_IMAGES: [&str; 2] = ["fixture/busybox:1", "fixture/redis:1"];

/// A private containerd (the build host's: Debian's containerd, the
/// version the fixture runs) importing the containerd fixture's archives
/// the way its first boot does: `root/var/lib/containerd` under `dir`.
fn containerd_store(dir: &Path) -> PathBuf {
    let fs = root_fs_of(CONTAINERD, dir);
    let f = std::fs::File::open(&fs).unwrap();
    let e = Ext4::open(&f).unwrap();
    let list = read(&fs, "/usr/share/airboot/images/images.list");
    let mut archives = Vec::new();
    for line in list.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let mut w = line.split_whitespace();
        let (archive, _id, reference) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
        let ino = e.lookup(&format!("/usr/share/airboot/images/{archive}"), true).unwrap().unwrap();
        let out = dir.join(archive);
        std::io::copy(&mut e.reader(&ino).unwrap(), &mut std::fs::File::create(&out).unwrap()).unwrap();
        archives.push((out, reference.to_string()));
    }
    let root = dir.join("tree/var/lib/containerd");
    std::fs::create_dir_all(&root).unwrap();
    let sock = dir.join("c.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
            root.display().to_string(),
            dir.join("state").display().to_string(),
            sock.display().to_string(),
            dir.join("c.sock.ttrpc").display().to_string()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let mut daemon = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed().as_secs() < 30, "containerd did not start: see {}", dir.join("containerd.log").display());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for (archive, reference) in &archives {
        let o = Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["--namespace", "airboot", "images", "import", "--index-name", reference])
            .arg(archive)
            .output()
            .unwrap();
        assert!(o.status.success(), "ctr images import: {}", String::from_utf8_lossy(&o.stderr));
    }
    // A clean stop: bbolt's last transaction is on disk.
    let _ = Command::new("kill").arg("-TERM").arg(daemon.id().to_string()).status();
    daemon.wait().unwrap();
    dir.join("tree")
}

/// An ext4 image of `tree` (as the device's root filesystem would hold it).
fn ext4_of(tree: &Path, name: &str) -> PathBuf {
    let img = tree.with_file_name(format!("{name}.raw"));
    std::fs::File::create(&img).unwrap().set_len(1 << 30).unwrap();
    let o = Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(tree).arg(&img).output().unwrap();
    assert!(o.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&o.stderr));
    img
}

fn check_ctrd(img: &Path) -> StoreCheck {
    let f = std::fs::File::open(img).unwrap();
    let e = Ext4::open(&f).unwrap();
    check_containerd(&e, &CTRD_IMAGES.map(String::from)).unwrap()
}

/// A copy of the store tree, changed by `damage`, as an ext4 image.
fn damaged_tree(tree: &Path, name: &str, damage: impl FnOnce(&Path)) -> PathBuf {
    let copy = tree.with_file_name(format!("{name}-tree"));
    let st = Command::new("cp").arg("-a").arg(tree).arg(&copy).status().unwrap();
    assert!(st.success());
    damage(&copy.join("var/lib/containerd"));
    let img = ext4_of(&copy, name);
    std::fs::remove_dir_all(&copy).unwrap();
    img
}

#[test]
fn the_containerd_store_checker_finds_what_was_damaged_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let tree = containerd_store(dir.path());
    let ok = check_ctrd(&ext4_of(&tree, "intact"));
    assert_eq!(ok.verdict, StoreVerdict::New, "{ok:#?}");
    // busybox's two layers and redis's three share the base: four layers.
    assert_eq!((ok.layers_registered, ok.layers_verified), (4, 4), "{ok:#?}");
    let redis_cfg = ok.images[1].id.clone().unwrap();
    let root = tree.join("var/lib/containerd");
    let blobs = root.join("io.containerd.content.v1.content/blobs/sha256");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(redis_cfg.trim_start_matches("sha256:"))).unwrap()).unwrap();
    let diffs: Vec<String> =
        cfg["rootfs"]["diff_ids"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    // Docker-save archives carry uncompressed layers: blob digest = diff_id.
    let top = diffs.last().unwrap().trim_start_matches("sha256:").to_string();
    // The snapshot holding redis's top layer: the one whose fs has redis-check-rdb.
    let snaps = root.join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let snap = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("fs/usr/bin/redis-check-rdb").exists())
        .expect("an unpacked redis layer");

    // 1. A layer blob emptied in place (zero-length blob).
    let c = check_ctrd(&damaged_tree(&tree, "zero-blob", |r| {
        std::fs::write(r.join("io.containerd.content.v1.content/blobs/sha256").join(&top), b"").unwrap();
    }));
    assert!(matches!(state_of(&c, CTRD_IMAGES[1]), ImageState::Corrupt(w) if w.contains("meta.db says")), "{c:#?}");
    assert_eq!(state_of(&c, CTRD_IMAGES[0]), ImageState::Complete, "only redis's layer was touched");

    // 2. A recorded blob missing, its data still in ingest/ (containerd#10457).
    let c = check_ctrd(&damaged_tree(&tree, "lost-rename", |r| {
        let content = r.join("io.containerd.content.v1.content");
        let ingest = content.join("ingest/0123abcd");
        std::fs::create_dir_all(&ingest).unwrap();
        std::fs::rename(content.join("blobs/sha256").join(&top), ingest.join("data")).unwrap();
    }));
    assert!(
        matches!(state_of(&c, CTRD_IMAGES[1]), ImageState::Corrupt(w) if w.contains("missing") && w.contains("ingest")),
        "{c:#?}"
    );

    // 3. An unpacked file emptied in a committed snapshot (containerd#5854).
    let rel = snap.strip_prefix(&root).unwrap().to_path_buf();
    let c = check_ctrd(&damaged_tree(&tree, "empty-file", |r| {
        std::fs::write(r.join(&rel).join("fs/usr/bin/redis-check-rdb"), b"").unwrap();
    }));
    assert!(matches!(state_of(&c, CTRD_IMAGES[1]), ImageState::Corrupt(w) if w.contains("redis-check-rdb")), "{c:#?}");

    // 4. The snapshotter's records lost (its metadata.db gone).
    let c = check_ctrd(&damaged_tree(&tree, "no-snap-db", |r| {
        std::fs::remove_file(r.join("io.containerd.snapshotter.v1.overlayfs/metadata.db")).unwrap();
    }));
    assert!(
        matches!(state_of(&c, CTRD_IMAGES[0]), ImageState::Corrupt(w) if w.contains("metadata.db is missing")),
        "{c:#?}"
    );

    // 5. meta.db's both meta pages torn.
    let c = check_ctrd(&damaged_tree(&tree, "torn-meta", |r| {
        let p = r.join("io.containerd.metadata.v1.bolt/meta.db");
        let mut d = std::fs::read(&p).unwrap();
        d[36] ^= 0xff;
        d[4096 + 36] ^= 0xff;
        std::fs::write(&p, d).unwrap();
    }));
    assert_eq!(c.verdict, StoreVerdict::Corrupt, "{c:#?}");
    assert!(c.problems.iter().any(|p| p.contains("meta.db is damaged")), "{c:#?}");

    assert_eq!(check_ctrd(&ext4_of(&tree, "again")).verdict, StoreVerdict::New, "the intact tree is unchanged");
}

/// The vfs graph driver (the read-only-root fixture's store, seeded by a
/// real dockerd with `--storage-driver=vfs` on the root partition of a GPT
/// disk): read and verified like overlay2, each layer's files from
/// `vfs/dir/<cache-id>`; a layer folder gone is named.
#[test]
#[ignore = "needs debian-vfs-ro-x86_64 (suite full): airboot images build debian-vfs-ro-x86_64"]
fn the_store_checker_reads_a_vfs_store() {
    let dir = tempfile::tempdir().unwrap();
    let def = find("debian-vfs-ro-x86_64").unwrap();
    let f = lookup(&cache_root(), &def).expect("debian-vfs-ro-x86_64 is not built");
    let view = airboot_qemu::disk::open_image(&f.disk()).unwrap();
    let root = airboot_core::disk::detect::root_partition(view.as_ref(), airboot_model::Arch::X86_64).unwrap();
    assert_eq!(root.number, 1, "{root:?}");
    let fs = dir.path().join("root.raw");
    airboot_qemu::crash::extract(&f.disk(), root.start, root.len, &fs).unwrap();

    let ok = check(&fs);
    assert_eq!(ok.verdict, StoreVerdict::New, "{ok:#?}");
    assert!(ok.layers_registered >= 2 && ok.layers_verified == ok.layers_registered, "{ok:#?}");
    assert!(read(&fs, "/var/lib/docker/image/vfs/repositories.json").contains("fixture/redis:1"));

    // Every layer's folder under vfs/dir: unlink one, and its layer (and
    // the image on it) is damaged, by name.
    let layer = {
        let file = std::fs::File::open(&fs).unwrap();
        let e = Ext4::open(&file).unwrap();
        let db = e.lookup("/var/lib/docker/image/vfs/layerdb/sha256", true).unwrap().unwrap();
        let chain = e.list(&db).unwrap().into_iter().map(|d| d.name).find(|n| n.len() == 64).unwrap();
        read(&fs, &format!("/var/lib/docker/image/vfs/layerdb/sha256/{chain}/cache-id"))
    };
    let gone = damaged(&fs, "vfs-gone", &[format!("unlink /var/lib/docker/vfs/dir/{layer}")]);
    let c = check(&gone);
    assert_eq!(c.verdict, StoreVerdict::Corrupt, "{c:#?}");
    assert!(c.problems.iter().any(|p| p.contains(&format!("its folder vfs/dir/{layer} is missing"))), "{c:#?}");
}

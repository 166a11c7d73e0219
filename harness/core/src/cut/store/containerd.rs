//! containerd's store (1.6, overlayfs snapshotter) on the device's root
//! filesystem, read offline:
//! - `io.containerd.metadata.v1.bolt/meta.db` (bbolt): per namespace, each
//!   image's target descriptor, each content blob's record, each
//!   snapshot's name in the snapshotter;
//! - `io.containerd.content.v1.content/blobs/sha256/<hex>`: the content,
//!   which must hash to its name (manifests, configs, layer tars);
//! - `io.containerd.snapshotter.v1.overlayfs/metadata.db` (bbolt) and
//!   `snapshots/<id>/fs`: each unpacked layer's files.
//!
//! containerd fsyncs a blob before renaming it into place and commits its
//! metadata in fsynced bbolt transactions, but writes unpacked files with
//! no sync, and the rename itself is not made durable: what a power cut
//! leaves is a registered blob missing from `blobs/` (its data still in
//! `ingest/`, containerd#10457, #12302), or a committed snapshot whose
//! files are empty (containerd#5854). Each unpacked layer's files are
//! compared with the layer's own tar; a layer that is not unpacked is
//! not an error (`ctr run` unpacks it on demand).

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::bolt::{Bolt, go_uvarint, go_varint};
use super::*;
use crate::disk::ext4::{Ext4, Inode, Kind};

/// Where containerd keeps its store.
pub const CONTAINERD_ROOT: &str = "/var/lib/containerd";
const META_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";
const BLOBS: &str = "io.containerd.content.v1.content/blobs/sha256";
const INGEST: &str = "io.containerd.content.v1.content/ingest";
const SNAPSHOTTER: &str = "overlayfs";
const SNAP_DIR: &str = "io.containerd.snapshotter.v1.overlayfs";
/// bbolt files are read whole; manifests and configs are small.
const MAX_DB: u64 = 512 << 20;
const MAX_JSON: u64 = 4 << 20;

/// One image record of meta.db.
struct CImage {
    namespace: String,
    name: String,
    target: String,
}

/// An image's config digest when sound; else what is wrong (with the
/// config digest when it got that far).
type ImageResult = Result<String, (Option<String>, String)>;

/// What the check found about one blob, by digest.
type BlobProblems = BTreeMap<String, Option<String>>;

struct Store<'f, 'a> {
    fs: &'f Ext4<'a>,
    root: Inode,
    snap: Option<Vec<u8>>,
    /// Unfinished ingests (`ingest/<ref hash>/`): evidence for a missing blob.
    ingests: usize,
    blobs: BlobProblems,
}

/// Check the store for `expected` references (`fixture/redis:1`), in
/// every namespace.
pub fn check_containerd(fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck> {
    let absent = |problems| StoreCheck::absent(expected, problems);
    let Some(root) = fs.lookup(CONTAINERD_ROOT, true)? else { return Ok(absent(Vec::new())) };
    let Some(meta_ino) = walk(fs, &root, META_DB)? else { return Ok(absent(Vec::new())) };
    let meta = fs.read(&meta_ino, MAX_DB)?;
    let snap = match walk(fs, &root, &format!("{SNAP_DIR}/metadata.db"))? {
        Some(i) => Some(fs.read(&i, MAX_DB)?),
        None => None,
    };
    let ingests = match walk(fs, &root, INGEST)? {
        Some(d) if d.kind() == Kind::Dir => fs.list(&d)?.iter().filter(|e| e.name != "." && e.name != "..").count(),
        _ => 0,
    };
    let mut st = Store { fs, root, snap, ingests, blobs: BTreeMap::new() };
    let db = match Bolt::open(&meta) {
        Ok(db) => db,
        Err(e) => return Ok(absent(vec![format!("{CONTAINERD_ROOT}/{META_DB} is damaged: {e}")])),
    };
    let mut problems = Vec::new();
    let images = match images(&db) {
        Ok(i) => i,
        Err(e) => return Ok(absent(vec![format!("{CONTAINERD_ROOT}/{META_DB} is damaged: {e}")])),
    };
    // Every image is checked (damage anywhere breaks `ctr images ls`
    // users); layers are counted once each.
    let mut results: Vec<(usize, ImageResult)> = Vec::new();
    let mut layers: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (n, img) in images.iter().enumerate() {
        let r = st.check_image(&db, img, &mut layers)?;
        results.push((n, r));
    }
    for (layer, p) in &layers {
        if let Some(p) = p {
            problems.push(format!("layer {}: {p}", short(layer)));
        }
    }
    let mut checks = Vec::new();
    for r in expected {
        let want = normalise(r);
        let found = images.iter().position(|i| normalise(&i.name) == want);
        let Some(n) = found else {
            checks.push(ImageCheck { reference: r.clone(), id: None, state: ImageState::Absent });
            continue;
        };
        let (id, state) = match &results[n].1 {
            Ok(config) => (Some(config.clone()), ImageState::Complete),
            Err((config, why)) => {
                problems.push(format!("{r}: {why}"));
                (config.clone(), ImageState::Corrupt(why.clone()))
            }
        };
        checks.push(ImageCheck { reference: r.clone(), id, state });
    }
    for (n, r) in &results {
        let img = &images[*n];
        if let Err((_, why)) = r
            && !expected.iter().any(|e| normalise(e) == normalise(&img.name))
        {
            problems.push(format!("image {} (namespace {}): {why}", img.name, img.namespace));
        }
    }
    let registered = layers.len();
    let verified = layers.values().filter(|p| p.is_none()).count();
    Ok(StoreCheck {
        verdict: verdict(&checks, &problems),
        images: checks,
        layers_registered: registered,
        layers_verified: verified,
        problems,
    })
}

/// Every image record of every namespace.
fn images(db: &Bolt) -> Result<Vec<CImage>, super::bolt::BoltError> {
    let mut out = Vec::new();
    let Some(v1) = db.bucket(&[b"v1"])? else { return Ok(out) };
    for (ns, v) in v1.entries()? {
        let super::bolt::Value::Bucket(nsb) = v else { continue };
        let Some(imgs) = nsb.bucket(b"images")? else { continue };
        for (name, v) in imgs.entries()? {
            let super::bolt::Value::Bucket(ib) = v else { continue };
            let target = match ib.bucket(b"target")? {
                Some(t) => t.data(b"digest")?.map(|d| String::from_utf8_lossy(d).into_owned()).unwrap_or_default(),
                None => String::new(),
            };
            out.push(CImage {
                namespace: String::from_utf8_lossy(ns).into_owned(),
                name: String::from_utf8_lossy(name).into_owned(),
                target,
            });
        }
    }
    Ok(out)
}

fn is_digest(d: &str) -> Option<&str> {
    let hex = d.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())).then_some(hex)
}

fn hash_stream(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

impl Store<'_, '_> {
    /// A blob is registered in meta.db (namespace `ns`), present in
    /// `blobs/`, as long as registered, and hashes to its name.
    fn blob(&mut self, db: &Bolt, ns: &str, digest: &str) -> io::Result<Result<(), String>> {
        if let Some(p) = self.blobs.get(digest) {
            return Ok(p.clone().map_or(Ok(()), Err));
        }
        let r = self.blob_uncached(db, ns, digest)?;
        self.blobs.insert(digest.to_string(), r.clone().err());
        Ok(r)
    }

    fn blob_uncached(&self, db: &Bolt, ns: &str, digest: &str) -> io::Result<Result<(), String>> {
        let Some(hex) = is_digest(digest) else { return Ok(Err(format!("{digest:?} is not a sha256 digest"))) };
        let rec = db.bucket(&[b"v1", ns.as_bytes(), b"content", b"blob", digest.as_bytes()]).ok().flatten();
        let size = rec.and_then(|r| r.data(b"size").ok().flatten().and_then(go_varint));
        let Some(file) = walk(self.fs, &self.root, &format!("{BLOBS}/{hex}"))? else {
            let mut why = format!("blob {} is missing from content/blobs", short(digest));
            if rec.is_some() {
                why.push_str(" though meta.db records it");
            }
            if self.ingests > 0 {
                why.push_str(&format!(
                    " ({} unfinished ingest(s) in content/ingest: its rename into place was lost)",
                    self.ingests
                ));
            }
            return Ok(Err(why));
        };
        if rec.is_none() {
            return Ok(Err(format!("blob {} is not recorded in meta.db (containerd will not see it)", short(digest))));
        }
        if file.kind() != Kind::File {
            return Ok(Err(format!("blob {} is not a regular file", short(digest))));
        }
        if let Some(want) = size
            && want != file.size as i64
        {
            return Ok(Err(format!("blob {} is {} bytes, meta.db says {want}", short(digest), file.size)));
        }
        let (got, _) = hash_stream(self.fs.reader(&file)?)?;
        if got != hex {
            return Ok(Err(format!("blob {} does not hash to its name (got {})", short(digest), &got[..12])));
        }
        Ok(Ok(()))
    }

    fn json(&mut self, db: &Bolt, ns: &str, digest: &str) -> io::Result<Result<Value, String>> {
        if let Err(why) = self.blob(db, ns, digest)? {
            return Ok(Err(why));
        }
        let Some(file) = walk(self.fs, &self.root, &format!("{BLOBS}/{}", digest.trim_start_matches("sha256:")))?
        else {
            return Ok(Err(format!("blob {} is missing", short(digest))));
        };
        let data = self.fs.read(&file, MAX_JSON)?;
        Ok(serde_json::from_slice(&data).map_err(|e| format!("blob {} is not JSON: {e}", short(digest))))
    }

    /// An image: target → (index →) manifest → config and layers, each
    /// blob sound, each unpacked layer's files its tar's. `Ok(config
    /// digest)` when sound. Layer findings go into `layers` (by diff_id).
    fn check_image(
        &mut self,
        db: &Bolt,
        img: &CImage,
        layers: &mut BTreeMap<String, Option<String>>,
    ) -> io::Result<ImageResult> {
        let ns = img.namespace.as_str();
        let mut manifest = match self.json(db, ns, &img.target)? {
            Ok(v) => v,
            Err(why) => return Ok(Err((None, format!("its target: {why}")))),
        };
        for _ in 0..4 {
            let Some(list) = manifest["manifests"].as_array() else { break };
            // The manifest this device has (a single-platform import keeps only its own).
            let digests: Vec<String> = list.iter().filter_map(|m| m["digest"].as_str().map(str::to_string)).collect();
            let Some(pick) = digests
                .iter()
                .find(|d| {
                    is_digest(d)
                        .is_some_and(|h| walk(self.fs, &self.root, &format!("{BLOBS}/{h}")).ok().flatten().is_some())
                })
                .or_else(|| digests.first())
                .cloned()
            else {
                return Ok(Err((None, format!("its index {} lists no manifest", short(&img.target)))));
            };
            manifest = match self.json(db, ns, &pick)? {
                Ok(v) => v,
                Err(why) => return Ok(Err((None, format!("its manifest: {why}")))),
            };
        }
        let Some(config) = manifest["config"]["digest"].as_str().map(str::to_string) else {
            return Ok(Err((None, "its manifest names no config".into())));
        };
        let cfg = match self.json(db, ns, &config)? {
            Ok(v) => v,
            Err(why) => return Ok(Err((Some(config), format!("its config: {why}")))),
        };
        let diff_ids = airboot_proto::json_strings(&cfg["rootfs"]["diff_ids"]);
        let descs: Vec<(String, String)> = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                (l["digest"].as_str().unwrap_or("").to_string(), l["mediaType"].as_str().unwrap_or("").to_string())
            })
            .collect();
        if descs.len() != diff_ids.len() {
            return Ok(Err((
                Some(config),
                format!("its manifest lists {} layers, its config {} diff_ids", descs.len(), diff_ids.len()),
            )));
        }
        let chains = chain_ids(&diff_ids);
        let mut first_bad = None;
        for (i, ((blob, media), chain)) in descs.iter().zip(&chains).enumerate() {
            if !layers.contains_key(&diff_ids[i]) {
                let finding = self.check_layer(db, ns, blob, media, chain)?.err();
                layers.insert(diff_ids[i].clone(), finding);
            }
            if first_bad.is_none()
                && let Some(Some(p)) = layers.get(&diff_ids[i])
            {
                first_bad = Some(format!("layer {} ({}) is damaged: {p}", i + 1, short(&diff_ids[i])));
            }
        }
        Ok(match first_bad {
            Some(why) => Err((Some(config), why)),
            None => Ok(config),
        })
    }

    /// A layer: its blob, and its snapshot when unpacked (keyed by chain ID).
    fn check_layer(
        &mut self,
        db: &Bolt,
        ns: &str,
        blob: &str,
        media: &str,
        chain: &str,
    ) -> io::Result<Result<(), String>> {
        if let Err(why) = self.blob(db, ns, blob)? {
            return Ok(Err(why));
        }
        let snap =
            db.bucket(&[b"v1", ns.as_bytes(), b"snapshots", SNAPSHOTTER.as_bytes(), chain.as_bytes()]).ok().flatten();
        let Some(snap) = snap else { return Ok(Ok(())) }; // not unpacked
        let Some(name) = snap.data(b"name").ok().flatten().map(|n| String::from_utf8_lossy(n).into_owned()) else {
            return Ok(Err(format!("its snapshot {} has no name in meta.db", short(chain))));
        };
        let Some(sdb) = self.snap.as_deref() else {
            return Ok(Err(format!("its snapshot is recorded, but {SNAP_DIR}/metadata.db is missing")));
        };
        let sdb = match Bolt::open(sdb) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("{SNAP_DIR}/metadata.db is damaged: {e}"))),
        };
        let Some(info) = sdb.bucket(&[b"v1", b"snapshots", name.as_bytes()]).ok().flatten() else {
            return Ok(Err(format!("its snapshot {name} is not in the snapshotter's metadata.db")));
        };
        let kind = info.data(b"kind").ok().flatten().and_then(|k| k.first().copied());
        if kind != Some(3) {
            return Ok(Err(format!("its snapshot {name} is not committed (kind {kind:?})")));
        }
        let Some(id) = info.data(b"id").ok().flatten().and_then(go_uvarint) else {
            return Ok(Err(format!("its snapshot {name} has no id")));
        };
        let Some(files) = walk(self.fs, &self.root, &format!("{SNAP_DIR}/snapshots/{id}/fs"))? else {
            return Ok(Err(format!("its unpacked files ({SNAP_DIR}/snapshots/{id}/fs) are missing")));
        };
        let hex = blob.trim_start_matches("sha256:");
        let Some(file) = walk(self.fs, &self.root, &format!("{BLOBS}/{hex}"))? else {
            return Ok(Err(format!("blob {} is missing", short(blob))));
        };
        let raw = self.fs.reader(&file)?;
        let diffs = if media.ends_with("gzip") {
            compare_tar(self.fs, &files, flate2::read::GzDecoder::new(raw))?
        } else if media.ends_with("zstd") {
            return Ok(Ok(())); // the blob is verified; its files cannot be compared here
        } else {
            compare_tar(self.fs, &files, raw)?
        };
        Ok(match diffs {
            Ok(bad) if bad.is_empty() => Ok(()),
            Ok(bad) => Err(format!(
                "{} unpacked file(s) in snapshots/{id}/fs differ from the layer, e.g. {}",
                bad.len(),
                bad.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )),
            Err(why) => Err(why),
        })
    }
}

/// Each regular file of the layer tar against the unpacked copy in
/// `files`: the files that differ, as "name (have/want bytes)" or
/// "name (content differs)" or "name (missing)".
fn compare_tar(fs: &Ext4, files: &Inode, layer: impl Read) -> io::Result<Result<Vec<String>, String>> {
    let mut bad = Vec::new();
    let mut ar = tar::Archive::new(layer);
    let entries = match ar.entries() {
        Ok(e) => e,
        Err(e) => return Ok(Err(format!("its layer is not a readable tar: {e}"))),
    };
    for entry in entries {
        let mut e = match entry {
            Ok(e) => e,
            Err(err) => return Ok(Err(format!("its layer is not a readable tar: {err}"))),
        };
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name =
            String::from_utf8_lossy(&e.path_bytes()).trim_start_matches("./").trim_start_matches('/').to_string();
        if name.rsplit('/').next().is_some_and(|b| b.starts_with(".wh.")) {
            continue;
        }
        let want_size = e.size();
        let (want, _) = hash_stream(&mut e)?;
        match walk(fs, files, &name)? {
            Some(f) if f.kind() == Kind::File => {
                if f.size != want_size {
                    bad.push(format!("{name} ({}/{want_size} bytes)", f.size));
                } else if hash_stream(fs.reader(&f)?)?.0 != want {
                    bad.push(format!("{name} (content differs)"));
                }
            }
            _ => bad.push(format!("{name} (missing)")),
        }
    }
    Ok(Ok(bad))
}

//! Stores written into a real ext4 for the store checkers' own tests:
//! a layer of one file with its tar-split, and mkfs.ext4 -d over a tree.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::sha256_hex;

/// A layer of one file (`etc/app.conf`) written under `files`: its
/// diff_id and its tar-split, gzipped, as the engines keep them.
pub fn layer(files: &Path) -> (String, Vec<u8>) {
    std::fs::create_dir_all(files.join("etc")).unwrap();
    std::fs::write(files.join("etc/app.conf"), b"port=80\n").unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let split = format!(
        "{{\"type\":2,\"payload\":\"{}\"}}\n{{\"type\":1,\"name\":\"etc/app.conf\",\"size\":8}}\n{{\"type\":2,\"payload\":\"{}\"}}\n",
        b64(b"HEADER"),
        b64(b"PAD")
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(split.as_bytes()).unwrap();
    (format!("sha256:{}", sha256_hex(b"HEADERport=80\nPAD")), gz.finish().unwrap())
}

/// An image config of those layers, and its ID (the hash of its bytes).
pub fn config(diff_ids: &[&str]) -> (String, String) {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    let config = format!("{{\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}", ids.join(","));
    let id = sha256_hex(config.as_bytes());
    (config, id)
}

/// `root` made into an ext4 image (mkfs.ext4 -d) in `dir`.
pub fn mkfs(dir: &Path, root: &Path) -> PathBuf {
    let img = dir.join("fs.img");
    std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    let ok = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(root)
        .arg(&img)
        .status()
        .expect("mkfs.ext4");
    assert!(ok.success());
    img
}

//! Embeds the fixture recipes (`images/` at the workspace root) into the
//! crate and derives a hash of everything that shapes a fixture: the recipe
//! files and this crate's own source. Caches are keyed by it, so editing a
//! unit file or the builder rebuilds exactly what it affects.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let recipes = manifest.join("../../images").canonicalize().expect("images/ at the workspace root");
    let src = manifest.join("src");
    println!("cargo:rerun-if-changed={}", recipes.display());
    println!("cargo:rerun-if-changed={}", src.display());

    let mut files = Vec::new();
    walk(&recipes, &mut files);
    let mut table = String::from("pub static FILES: &[(&str, &[u8], u32)] = &[\n");
    let mut recipe_hash = Sha256::new();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&recipes).unwrap().to_string_lossy().replace('\\', "/");
        // Documentation and reference material do not shape a fixture.
        if rel == "README.md" || rel.starts_with("reference/") {
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        let mode: u32 = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
        let data = std::fs::read(f).unwrap();
        recipe_hash.update(rel.as_bytes());
        recipe_hash.update([0]);
        recipe_hash.update(mode.to_le_bytes());
        recipe_hash.update(&data);
        writeln!(table, "    ({rel:?}, include_bytes!({:?}), 0o{mode:o}),", f.display().to_string()).unwrap();
    }
    table.push_str("];\n");

    let mut code = Vec::new();
    walk(&src, &mut code);
    // The shared stages (rootfs, kernel, containers) are keyed by the
    // files that build them only, so a change to how fixtures are
    // assembled does not re-run mmdebstrap.
    const STAGE_FILES: &[&str] = &["stages.rs", "util.rs", "archive.rs", "cpio.rs", "modules.rs"];
    let mut source_hash = Sha256::new();
    let mut stages_hash = Sha256::new();
    for f in &code {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        // Unit tests do not shape a fixture: hash each file up to its test module.
        let text = std::fs::read_to_string(f).unwrap();
        let shaping = text.split("\n#[cfg(test)]").next().unwrap_or("");
        for h in
            std::iter::once(&mut source_hash).chain(STAGE_FILES.contains(&rel.as_str()).then_some(&mut stages_hash))
        {
            h.update(rel.as_bytes());
            h.update(shaping.as_bytes());
        }
    }
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    writeln!(table, "pub const BUILDER_HASH: &str = {:?};", hex(&source_hash.finalize())).unwrap();
    writeln!(table, "pub const STAGES_HASH: &str = {:?};", hex(&stages_hash.finalize())).unwrap();
    writeln!(table, "pub const RECIPE_HASH: &str = {:?};", hex(&recipe_hash.finalize())).unwrap();
    std::fs::write(PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("recipes.rs"), table).unwrap();
}

//! `expect.read_only_root`, offline: on the disk a boot left, what the
//! boot wrote into the root partition (`qemu-img map` of its overlay), and
//! the store's upper directory read from the partition that holds it
//! (journal replayed on a copy). The judgement is core's
//! (`airboot_core::readonly`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use airboot_core::disk::ext4::{Ext4, Kind};
use airboot_core::disk::{detect, part};
use airboot_core::readonly::{self, ReadOnlyRootCheck, UpperDir};
use airboot_core::report::Report;
use airboot_qemu::disk;
use airboot_qemu::process::{require, run_supervised};

/// At most this many entries are walked in the upper directory.
const MAX_ENTRIES: u64 = 200_000;

/// Check the disk `kept` (the boot's overlay over `input`) against the
/// report's last engine record.
pub fn check(input: &Path, arch: airboot_model::Arch, kept: &Path, report: &Report, work: &Path) -> ReadOnlyRootCheck {
    let mut out = ReadOnlyRootCheck::default();
    let view = match disk::open_image(input) {
        Ok(v) => v,
        Err(e) => {
            out.notes.push(format!("the input image could not be read: {e}"));
            return out;
        }
    };
    let Some(root) = detect::root_partition(view.as_ref(), arch) else {
        out.notes.push("no root filesystem was found in the image".into());
        return out;
    };
    out.root_partition = root.number;
    match top_layer_map(kept, work).and_then(|m| readonly::written_in(&m, root.start, root.len)) {
        Ok(n) => out.root_written_bytes = n,
        Err(e) => out.notes.push(format!("what the boot wrote could not be mapped: {e}")),
    }
    let store = report.engine.as_ref().and_then(|e| e.store_mount.as_ref());
    let (Some(upper), Some(um)) = (store.and_then(|m| m.upper.as_ref()), store.and_then(|m| m.upper_mount.as_deref()))
    else {
        out.notes.push("the store is no overlay with an upper directory: only the root partition was checked".into());
        return out;
    };
    let Some(number) = readonly::partition_of(&um.source).filter(|n| *n > 0) else {
        out.notes.push(format!("the upper directory is on {}, which is no partition of the first disk", um.source));
        return out;
    };
    let parts = part::partitions(view.as_ref()).unwrap_or_default();
    let Some(p) = parts.iter().find(|p| p.number == number) else {
        out.notes.push(format!("the image has no partition {number} ({})", um.source));
        return out;
    };
    let Some(rel) = readonly::inside(&um.point, upper) else {
        out.notes.push(format!("{upper} is not under {}", um.point));
        return out;
    };
    let what = format!("partition {number} (ext4)");
    let r = crate::store::with_fs_copy(kept, (p.start, p.len), work, "upper-partition", &what, |fs, _| {
        read_upper(fs, &rel, upper, number, report)
    });
    match r {
        Ok(u) => out.upper = Some(u),
        Err(e) => out.notes.push(format!("the upper directory could not be read: {e}")),
    }
    out
}

/// `qemu-img map --output=json` of the overlay (its extents, with the
/// depth in the backing chain that holds each).
fn top_layer_map(kept: &Path, work: &Path) -> Result<String, String> {
    let bin = require("qemu-img").map_err(|e| e.to_string())?;
    let file = work.join("qemu-img-map.json");
    let out = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(["map", "-U", "--output=json"]).arg(kept).stdin(Stdio::null()).stdout(out);
    let r = run_supervised(&mut cmd, Some(Duration::from_secs(120)));
    let text = std::fs::read_to_string(&file);
    let _ = std::fs::remove_file(&file);
    match r {
        Ok(st) if st.success() => text.map_err(|e| e.to_string()),
        Ok(st) => Err(format!("qemu-img map {} exited {st}", kept.display())),
        Err(e) => Err(e.to_string()),
    }
}

fn read_upper(fs: &Ext4, rel: &str, path: &str, partition: u32, report: &Report) -> Result<UpperDir, String> {
    let io = |e: std::io::Error| e.to_string();
    let Some(top) = fs.lookup(rel, true).map_err(io)? else {
        return Err(format!("{rel} does not exist on partition {partition}"));
    };
    let mut u = UpperDir { path: path.to_string(), partition, ..Default::default() };
    u.entries = fs.list(&top).map_err(io)?.into_iter().map(|e| e.name).filter(|n| n != "." && n != "..").collect();
    // Every folder name at depth 2 (`containers/<id>`, `vfs/dir/<id>`…).
    let mut names = std::collections::BTreeSet::new();
    let mut stack = vec![(top, 0u32)];
    let mut seen = 0u64;
    while let Some((dir, depth)) = stack.pop() {
        for e in fs.list(&dir).map_err(io)? {
            if e.name == "." || e.name == ".." {
                continue;
            }
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(format!("more than {MAX_ENTRIES} entries: stopped counting"));
            }
            let ino = fs.inode(e.inode).map_err(io)?;
            match ino.kind() {
                Kind::Dir => {
                    if depth == 1 {
                        names.insert(e.name.clone());
                    }
                    stack.push((ino, depth + 1));
                }
                _ => {
                    u.files += 1;
                    u.bytes += ino.size;
                }
            }
        }
    }
    for c in report.containers.iter().filter(|c| c.expected && c.state == "running") {
        match &c.id {
            // The probe may give a short ID; folders carry the full one.
            Some(id) if id.len() >= 12 && names.iter().any(|n| n.starts_with(id.as_str())) => {
                u.containers_found.push(c.name.clone())
            }
            Some(_) => u.containers_missing.push(c.name.clone()),
            None => {}
        }
    }
    Ok(u)
}

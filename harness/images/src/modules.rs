//! Kernel modules: which to keep in a fixture (the kernel package ships
//! ~390 MB of them; a container host under QEMU needs a small part), in
//! which order to load them in the initramfs.

use std::collections::{BTreeMap, BTreeSet};

/// `modules.dep` as a map from module path to its dependencies' paths.
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, Vec<String>> {
    text.lines()
        .filter_map(|l| {
            let (m, deps) = l.split_once(':')?;
            Some((m.trim().to_string(), deps.split_whitespace().map(str::to_string).collect()))
        })
        .collect()
}

/// Module name from its path: `kernel/fs/ext4/ext4.ko` → `ext4`,
/// `crc32c-intel.ko.xz` → `crc32c_intel`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Whether a module belongs in a fixture: filesystems, networking (bridge,
/// veth, netfilter, vsock, …), crypto and libraries, and from the drivers
/// only what a virtio VM has.
pub fn keep(path: &str) -> bool {
    let rel = path.strip_prefix("kernel/").unwrap_or(path);
    let top_keep = ["fs/", "net/", "lib/", "crypto/", "arch/", "block/", "mm/", "virt/", "security/"];
    if top_keep.iter().any(|p| rel.starts_with(p)) {
        return true;
    }
    let Some(drv) = rel.strip_prefix("drivers/") else {
        return false;
    };
    let driver_dirs = ["virtio/", "block/", "char/", "md/", "vhost/", "firmware/", "nvdimm/", "crypto/virtio/"];
    if driver_dirs.iter().any(|p| drv.starts_with(p)) {
        return true;
    }
    // Virtual network devices live directly in drivers/net (veth, tun,
    // macvlan, dummy, …) or in a few subfolders; NIC drivers do not.
    if let Some(net) = drv.strip_prefix("net/") {
        return !net.contains('/') || ["vxlan/", "ipvlan/", "team/", "bonding/"].iter().any(|p| net.starts_with(p));
    }
    false
}

/// The modules to keep: those `keep` accepts plus everything they need.
pub fn keep_set(dep: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
    let roots: Vec<&str> = dep.keys().filter(|m| keep(m)).map(String::as_str).collect();
    let mut out = BTreeSet::new();
    for r in roots {
        add_with_deps(dep, r, &mut out);
    }
    out
}

fn add_with_deps(dep: &BTreeMap<String, Vec<String>>, m: &str, out: &mut BTreeSet<String>) {
    if !out.insert(m.to_string()) {
        return;
    }
    for d in dep.get(m).into_iter().flatten() {
        add_with_deps(dep, d, out);
    }
}

/// Load order for the named modules and their dependencies: each module
/// after everything it needs. Unknown names are returned as errors.
pub fn load_order(dep: &BTreeMap<String, Vec<String>>, names: &[&str]) -> Result<Vec<String>, String> {
    let by_name: BTreeMap<String, &String> = dep.keys().map(|p| (module_name(p), p)).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(dep: &BTreeMap<String, Vec<String>>, p: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(p.to_string()) {
            return;
        }
        // modules.dep lists the full closure; visiting it keeps the order
        // right even for a hand-made file that does not.
        for d in dep.get(p).into_iter().flatten() {
            visit(dep, d, seen, order);
        }
        order.push(p.to_string());
    }
    for n in names {
        let n = n.replace('-', "_");
        let p = by_name
            .get(&n)
            .ok_or_else(|| format!("kernel module {n} is not in this kernel (built in, or missing?)"))?;
        visit(dep, p, &mut seen, &mut order);
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/veth.ko:
kernel/drivers/gpu/drm/drm.ko:
kernel/drivers/media/thing.ko: kernel/drivers/gpu/drm/drm.ko
kernel/sound/core/snd.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
";

    #[test]
    fn names() {
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko"), "ext4");
        assert_eq!(module_name("kernel/arch/x86/crypto/crc32c-intel.ko.xz"), "crc32c_intel");
    }

    #[test]
    fn keeps_what_a_virtio_container_host_needs() {
        let dep = parse_modules_dep(DEP);
        let k = keep_set(&dep);
        for m in [
            "kernel/fs/ext4/ext4.ko",
            "kernel/drivers/block/virtio_blk.ko",
            "kernel/drivers/net/veth.ko",
            "kernel/drivers/virtio/virtio.ko",
        ] {
            assert!(k.contains(m), "{m} dropped");
        }
        for m in [
            "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
            "kernel/drivers/gpu/drm/drm.ko",
            "kernel/sound/core/snd.ko",
        ] {
            assert!(!k.contains(m), "{m} kept");
        }
    }

    #[test]
    fn a_kept_module_brings_its_dependencies() {
        let mut dep = parse_modules_dep(DEP);
        dep.insert("kernel/net/odd.ko".into(), vec!["kernel/drivers/gpu/drm/drm.ko".into()]);
        assert!(keep_set(&dep).contains("kernel/drivers/gpu/drm/drm.ko"));
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let dep = parse_modules_dep(DEP);
        let o = load_order(&dep, &["virtio_blk", "ext4", "crc32c-intel"]).unwrap();
        let pos = |m: &str| o.iter().position(|x| x.ends_with(m)).unwrap();
        assert!(pos("virtio.ko") < pos("virtio_blk.ko"));
        assert!(pos("jbd2.ko") < pos("ext4.ko"));
        assert_eq!(o.len(), 8);
        assert!(load_order(&dep, &["nope"]).unwrap_err().contains("nope"));
    }
}

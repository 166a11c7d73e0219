//! `airboot images list|build|path|clean`.

use airboot_images::{cache_root, catalog, find, lookup, stale_builds};

fn size_of(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub fn list() -> i32 {
    let root = cache_root();
    println!("fixtures (cache: {})", root.display());
    for def in catalog() {
        println!("  {:<30} {}", def.name, def.description);
        match lookup(&root, &def) {
            Some(f) => println!(
                "  {:<30} built {} ({} MiB disk, kernel {}): {}",
                "",
                f.manifest.built_at,
                size_of(&f.disk()) >> 20,
                f.manifest.kernel_version,
                f.dir.display()
            ),
            None => println!("  {:<30} not built: `airboot images build {}`", "", def.name),
        }
        match stale_builds(&root, &def) {
            Ok(old) => {
                for s in old {
                    println!(
                        "  {:<30} older build with other inputs ({} MiB): {} (`airboot images clean` deletes it)",
                        "",
                        disk_usage(&s) >> 20,
                        s.display()
                    );
                }
            }
            Err(e) => println!("  {:<30} cannot tell older builds from the current one: {e}", ""),
        }
    }
    0
}

pub fn build(names: &[String], all: bool, force: bool) -> i32 {
    let names: Vec<String> = if all {
        catalog().into_iter().map(|d| d.name.to_string()).collect()
    } else if names.is_empty() {
        eprintln!("error: name the fixtures to build, or use --all (see `airboot images list`)");
        return 2;
    } else {
        names.to_vec()
    };
    for n in &names {
        if find(n).is_none() {
            let known: Vec<&str> = catalog().iter().map(|f| f.name).collect();
            eprintln!("error: unknown fixture {n:?}; known: {}", known.join(", "));
            return 2;
        }
    }
    let root = cache_root();
    for n in &names {
        let started = std::time::Instant::now();
        if !force
            && let Some(def) = find(n)
            && let Some(f) = airboot_images::lookup(&root, &def)
        {
            eprintln!("{n}: cached");
            println!("{}", f.dir.display());
            continue;
        }
        eprintln!("building {n} (cache: {})", root.display());
        let mut progress = |m: &str| eprintln!("  {m}");
        match airboot_images::build(&root, n, force, &mut progress) {
            Ok(f) => {
                eprintln!("  done in {:.0}s", started.elapsed().as_secs_f64());
                println!("{}", f.dir.display());
            }
            Err(e) => {
                eprintln!("error: building {n}: {e}");
                return 2;
            }
        }
    }
    0
}

pub fn path(name: &str) -> i32 {
    let Some(def) = find(name) else {
        eprintln!("error: unknown fixture {name:?}");
        return 2;
    };
    match lookup(&cache_root(), &def) {
        Some(f) => {
            println!("{}", f.dir.display());
            0
        }
        None => {
            eprintln!("{name} is not built: `airboot images build {name}`");
            1
        }
    }
}

/// Bytes a folder takes on disk (0 when it cannot be read: only shown).
fn disk_usage(path: &std::path::Path) -> u64 {
    airboot_images::builder::du(path).unwrap_or(0)
}

pub fn clean(dry_run: bool) -> i32 {
    let root = cache_root();
    let (mut freed, mut count, mut failed) = (0u64, 0, 0);
    let mut doomed = Vec::new();
    for def in catalog() {
        match stale_builds(&root, &def) {
            Ok(old) => doomed.extend(old),
            Err(e) => {
                eprintln!("error: {}: cannot tell older builds from the current one, nothing deleted: {e}", def.name);
                failed += 1;
            }
        }
    }
    // Unpacked copies of compressed inputs: made again from the input when needed.
    if let Ok(rd) = std::fs::read_dir(root.join("inputs")) {
        doomed.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for dir in doomed {
        let size = disk_usage(&dir);
        if dry_run {
            println!("would delete {} ({} MiB)", dir.display(), size >> 20);
        } else if let Err(e) = std::fs::remove_dir_all(&dir) {
            eprintln!("error: cannot delete {}: {e}", dir.display());
            failed += 1;
            continue;
        } else {
            println!("deleted {} ({} MiB)", dir.display(), size >> 20);
        }
        freed += size;
        count += 1;
    }
    let verb = if dry_run { "would free" } else { "freed" };
    println!(
        "{count} older fixture build(s) and unpacked input(s), {verb} {} MiB (cache: {})",
        freed >> 20,
        root.display()
    );
    if failed > 0 { 1 } else { 0 }
}

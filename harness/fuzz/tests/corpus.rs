//! Replays the fuzz corpus (`harness/fuzz/corpus/<target>/`) through every
//! target on stable: the seeds and whatever cargo-fuzz found and kept.
//! Each input must return without a panic. Runs in CI in seconds; the
//! random half is the proptest suites (core/tests/robust.rs,
//! proto/tests/robust.rs) and the fuzzer itself (libfuzzer/, nightly).

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_seeds_and_every_corpus_input_passes() {
    for target in airboot_fuzz::TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "corpus/{target} is empty: seed it (harness/fuzz/README.md)");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            // A panic names the file, so it can be replayed alone.
            eprintln!("{target}: {}", f.display());
            airboot_fuzz::run(target, &data);
        }
    }
}

/// The corpus folders are exactly the targets (a renamed target leaves
/// no corpus behind unread).
#[test]
fn corpus_folders_match_the_targets() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut found: Vec<String> =
        std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    found.sort();
    let mut want: Vec<String> = airboot_fuzz::TARGETS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}

/// The targets do catch what they guard: an unknown target is refused,
/// and the console target's invariant holds on a line split mid-escape.
#[test]
#[should_panic(expected = "no fuzz target")]
fn an_unknown_target_is_refused() {
    airboot_fuzz::run("nope", b"");
}

/// The seeds reach past the first checks: the disks are read as what
/// they are, so a fuzzer mutating them explores the readers' depths.
#[test]
fn the_disk_seeds_are_read_as_what_they_are() {
    use airboot_core::disk::{ext4::Ext4, fat::Fat, part, qcow2::Qcow2};
    let seed = |t: &str, f: &str| {
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(t).join(f)).unwrap()
    };
    let ext4 = seed("disk", "ext4.raw");
    let fs = Ext4::open(&ext4).unwrap();
    assert!(fs.lookup("/etc/os-release", true).unwrap().is_some());
    let erofs = seed("disk", "erofs.raw");
    let fs = airboot_core::disk::erofs::Erofs::open(&erofs).unwrap();
    let f = fs.lookup("/etc/os-release", true).unwrap().unwrap();
    assert_eq!(fs.read(&f, 64).unwrap(), b"ID=debian\n");
    let esp = seed("disk", "esp.raw");
    assert!(Fat::open(&esp).unwrap().find("/EFI/BOOT/BOOTX64.EFI").unwrap().is_some());
    assert_eq!(part::partitions(&seed("disk", "gpt.raw")).unwrap().len(), 2);
    assert_eq!(part::partitions(&seed("disk", "mbr.raw")).unwrap().len(), 1);
    for q in ["ext4.qcow2", "ext4-compressed.qcow2"] {
        let img = Qcow2::open(seed("qcow2", q)).unwrap();
        let fs = Ext4::open(&img).unwrap();
        assert!(fs.lookup("/sbin/init", true).unwrap().is_some(), "{q}");
    }
}

/// Inputs the fuzzer found that once took hundreds of MiB (a directory
/// whose size field promised 256 MiB of holes: 267 MiB resident) are kept
/// as `oom-*` in the corpus. Read now, in a process of their own (this
/// test binary again, running only `oom_child`), they stay within the
/// readers' caps: under 64 MiB at the peak.
#[test]
fn inputs_that_once_exhausted_memory_stay_bounded() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "oom_child", "--nocapture", "--test-threads", "1"])
        .env("AIRBOOT_FUZZ_OOM_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let ran: u64 = field(&text, "RAN=").expect("the child ran");
    let hwm: u64 = field(&text, "VMHWM=").expect("the child measured");
    assert!(ran >= 2, "the known memory hogs are in the corpus");
    assert!(hwm < 64 << 10, "peak resident memory {hwm} KiB");
}

fn field(text: &str, key: &str) -> Option<u64> {
    // The harness may print "test oom_child ... " before the child's line.
    text.lines().find_map(|l| l.split(key).nth(1)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The child of the test above (does nothing unless it is that child).
#[test]
fn oom_child() {
    if std::env::var_os("AIRBOOT_FUZZ_OOM_CHILD").is_none() {
        return;
    }
    let mut ran = 0;
    for target in airboot_fuzz::TARGETS {
        for f in
            corpus(target).iter().filter(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("oom-")))
        {
            airboot_fuzz::run(target, &std::fs::read(f).unwrap());
            ran += 1;
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()).unwrap();
    println!("RAN={ran}");
    println!("VMHWM={hwm}");
}

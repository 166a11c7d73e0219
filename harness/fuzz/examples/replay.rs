//! Runs one fuzz target over the files given (`cargo run -p airboot-fuzz
//! --example replay -- TARGET FILE...`), printing each file's name before
//! it runs: a crash or an out-of-memory names its input. With
//! `/usr/bin/time -f %M` around it, the peak memory of one input.

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: replay TARGET FILE...");
    for f in args {
        eprintln!("{target}: {f}");
        let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        airboot_fuzz::run(&target, &data);
    }
}

//! airboot-probe: runs inside the guest. It asks the container engine
//! through its API socket what it has (never by scraping CLI output), reads
//! systemd's own timestamps and the network state, and tells the harness.
//!
//! `airboot-probe serve` (what the fixtures' unit runs) answers the host
//! over vsock and over the virtio-serial port `org.airboot.probe`; until a
//! host has said hello it also prints console status blocks, so the same
//! image works with airboot's console-only transport.

mod airgap;
mod collect;
mod engine;
mod exec;
mod init;
mod loadwatch;
mod server;
mod status;
mod systemd;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collect::Collector;
use status::Config;

const USAGE: &str = "\
usage: airboot-probe serve   [--device PATH] [--config PATH]
       airboot-probe console [--device PATH] [--config PATH]
       airboot-probe status  [--config PATH]
       airboot-probe airgap
       airboot-probe --version

serve    answer the host over vsock (port 5253) and the virtio-serial port
         org.airboot.probe; print console status blocks on PATH (default
         /dev/console) until a host has connected, and the engine's
         load progress lines (AIRBOOT-EVENT v1 layer-load ...) on PATH
         always (docker load, podman load, ctr images import)
console  only print console status blocks and load progress lines
status   print one status (JSON) on stdout
airgap   print the network evidence (JSON) on stdout
--config the stack description (default /etc/airboot/status.conf)";

fn console_loop(shared: &server::Shared, device: &PathBuf, stop_when_host_seen: bool) {
    let mut seq = 0;
    loop {
        if stop_when_host_seen && shared.host_seen.load(Ordering::Relaxed) {
            return;
        }
        seq += 1;
        let (text, wait) = {
            let mut c = shared.collector.lock().unwrap_or_else(|e| e.into_inner());
            let s = c.status(false);
            let wait = if s.settled { c.cfg.settled_interval_s } else { c.cfg.interval_s };
            (status::block(seq, &s), wait)
        };
        // One write for the whole block keeps other console output out of
        // it as far as the kernel allows; the checksum catches the rest.
        match std::fs::OpenOptions::new().append(true).open(device) {
            Ok(mut f) => {
                let _ = f.write_all(text.as_bytes());
            }
            Err(e) => eprintln!("airboot-probe: {}: {e}", device.display()),
        }
        std::thread::sleep(Duration::from_secs_f64(wait.max(0.1)));
    }
}

/// Start watching the engine: its load progress, and (containerd, which
/// keeps no event history) its events from now on.
fn watch_engine(shared: &server::Shared, device: &std::path::Path) {
    let cfg = shared.collector.lock().unwrap_or_else(|e| e.into_inner()).cfg.clone();
    if cfg.engine == engine::Kind::Containerd {
        engine::containerd::start_events(std::path::Path::new(&cfg.socket));
    }
    let d = device.to_path_buf();
    std::thread::spawn(move || loadwatch::watch(&d, &cfg));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut device = PathBuf::from("/dev/console");
    let mut config = PathBuf::from("/etc/airboot/status.conf");
    let mut mode = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "serve" | "console" | "status" | "airgap" => mode = Some(a.clone()),
            "--device" => device = it.next().map(PathBuf::from).unwrap_or(device),
            "--config" => config = it.next().map(PathBuf::from).unwrap_or(config),
            "--version" => {
                println!(
                    "airboot-probe {} (protocol {})",
                    env!("CARGO_PKG_VERSION"),
                    airboot_proto::probe::PROBE_PROTOCOL
                );
                return;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => {
                eprintln!("airboot-probe: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let cfg = match std::fs::read_to_string(&config) {
        Ok(t) => status::parse_config(&t),
        Err(e) => {
            eprintln!("airboot-probe: {}: {e}; reporting the engine only", config.display());
            Config::default()
        }
    };
    let shared =
        Arc::new(server::Shared { collector: Mutex::new(Collector::new(cfg)), host_seen: AtomicBool::new(false) });
    match mode.as_deref() {
        Some("status") => {
            let s = shared.collector.lock().unwrap_or_else(|e| e.into_inner()).status(true);
            println!("{}", serde_json::to_string_pretty(&s).expect("json"));
        }
        Some("airgap") => {
            let resp = server::answer(
                &shared,
                airboot_proto::probe::Request { id: 0, op: airboot_proto::probe::Op::Airgap },
                "cli",
            );
            println!("{}", serde_json::to_string_pretty(&resp).expect("json"));
        }
        Some("console") => {
            watch_engine(&shared, &device);
            console_loop(&shared, &device, false)
        }
        Some("serve") => {
            watch_engine(&shared, &device);
            let s = shared.clone();
            std::thread::spawn(move || server::vsock_loop(s));
            let s = shared.clone();
            std::thread::spawn(move || server::serial_loop(s));
            console_loop(&shared, &device, true);
            // A host is connected: the server threads do the work.
            loop {
                std::thread::park();
            }
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

//! airboot-probe: runs inside the guest. It asks the container engine
//! through its API socket what it has, and tells the harness.
//!
//! `airboot-probe console` prints console status blocks (protocol v1) on
//! the serial console until the stack settles, then every SETTLED_INTERVAL
//! seconds; `airboot-probe status` prints one block on stdout.

mod engine;
mod status;
mod systemd;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use status::{Config, EngineView, Snapshot};

const USAGE: &str = "\
usage: airboot-probe console [--device PATH] [--config PATH]
       airboot-probe status [--config PATH]
       airboot-probe --version

console  print airboot console status blocks on PATH (default /dev/console)
         until stopped
status   print one status block on stdout
--config the stack description (default /etc/airboot/status.conf)";

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Cheap answers that do not change once known.
#[derive(Default)]
struct Cache {
    version: Option<String>,
    system_settled: Option<String>,
}

fn snapshot(cfg: &Config, cache: &mut Cache) -> Snapshot {
    let mut names = vec![cfg.engine_unit.clone()];
    names.extend(cfg.stack_units.iter().cloned());
    let mut units = systemd::show(&names);
    let engine_unit = units
        .iter()
        .position(|u| u.id == cfg.engine_unit)
        .map(|i| units.remove(i).active)
        .unwrap_or_else(|| "unknown".into());
    // Ask the engine only once its unit is active: connecting to a
    // socket-activated engine earlier would start it out of order.
    let engine = if engine_unit == "active" {
        let d = engine::Docker {
            socket: PathBuf::from(&cfg.socket),
            timeout: Duration::from_secs(10),
        };
        let version = match cache.version.clone() {
            Some(v) => Ok(v),
            None => d.version(),
        };
        match (version, d.images(), d.containers()) {
            (Ok(version), Ok(images), Ok(containers)) => {
                cache.version = Some(version.clone());
                EngineView::Up {
                    version,
                    images,
                    containers,
                }
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => EngineView::Error(e),
        }
    } else {
        EngineView::NotAsked
    };
    // Once boot has finished, systemd's overall state no longer matters here.
    let system = match &cache.system_settled {
        Some(s) => s.clone(),
        None => {
            let s = systemd::system_state();
            if !matches!(s.as_str(), "initializing" | "starting" | "unknown" | "") {
                cache.system_settled = Some(s.clone());
            }
            s
        }
    };
    Snapshot {
        uptime_s: uptime(),
        system,
        engine_unit,
        engine,
        units,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut device = PathBuf::from("/dev/console");
    let mut config = PathBuf::from("/etc/airboot/status.conf");
    let mut mode = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "console" | "status" => mode = Some(a.clone()),
            "--device" => device = it.next().map(PathBuf::from).unwrap_or(device),
            "--config" => config = it.next().map(PathBuf::from).unwrap_or(config),
            "--version" => {
                println!("airboot-probe {}", env!("CARGO_PKG_VERSION"));
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
            eprintln!(
                "airboot-probe: {}: {e}; reporting the engine only",
                config.display()
            );
            Config::default()
        }
    };
    match mode.as_deref() {
        Some("status") => {
            let (text, _) = status::block(1, &snapshot(&cfg, &mut Cache::default()), &cfg);
            print!("{text}");
        }
        Some("console") => {
            let mut seq = 0;
            let mut cache = Cache::default();
            loop {
                seq += 1;
                let (text, is_final) = status::block(seq, &snapshot(&cfg, &mut cache), &cfg);
                // One write for the whole block keeps other console output
                // out of it as far as the kernel allows; the checksum
                // catches the rest.
                match std::fs::OpenOptions::new().write(true).open(&device) {
                    Ok(mut f) => {
                        let _ = f.write_all(text.as_bytes());
                    }
                    Err(e) => eprintln!("airboot-probe: {}: {e}", device.display()),
                }
                let wait = if is_final {
                    cfg.settled_interval_s
                } else {
                    cfg.interval_s
                };
                std::thread::sleep(Duration::from_secs_f64(wait.max(0.1)));
            }
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

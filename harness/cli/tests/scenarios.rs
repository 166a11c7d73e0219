//! Every scenario in `scenarios/` as a test named `<arch>::<name>`, run
//! through the real `airboot` binary exactly as `airboot run FILE
//! --check-outcomes` would: a scenario passes when it ends as its
//! `[outcome]` declares (negative controls fail as declared).
//!
//!     cargo test --test scenarios                 # all
//!     cargo test --test scenarios -- x86_64::     # a filter
//!     cargo nextest run --profile ci              # with JUnit (.config/nextest.toml)
//!
//! Scenarios with `suite = "full"` run only with AIRBOOT_SUITE=full (CI
//! runs the representative `ci` set; `airboot run scenarios/` runs all).
//! Skips are decided while the list is built, with the reason printed
//! (a skip decided at run time shows as *passed* under nextest): a missing
//! QEMU for the scenario's architecture, a fixture that is not built when
//! building needs root, a forced transport this host cannot provide. VM
//! tests run one at a time unless --test-threads says otherwise.
//!
//! Besides the declared outcome every booted run is checked for what must
//! always hold: no network device, the input image unchanged, no helper
//! process left, a report in the documented schema.

use std::path::{Path, PathBuf};
use std::process::Command;

use airboot_core::platform::qemu_system;
use airboot_core::scenario::{self, ImageSource, Scenario, Suite};
use airboot_model::TransportKind;
use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Why this scenario cannot run on this machine, if it cannot.
fn skip_reason(s: &Scenario) -> Option<String> {
    if s.suite == Suite::Full && std::env::var("AIRBOOT_SUITE").as_deref() != Ok("full") {
        return Some("suite = \"full\" (set AIRBOOT_SUITE=full, or `airboot run scenarios/`)".into());
    }
    let arch = match &s.image.source {
        ImageSource::Fixture(f) => airboot_images::find(f).map(|d| d.arch),
        ImageSource::Path(_) => s.machine.arch,
    }?;
    if airboot_qemu::process::which(qemu_system(arch)).is_none() {
        return Some(format!(
            "{} is not installed (Debian package {})",
            qemu_system(arch),
            airboot_qemu::process::package_for(qemu_system(arch))
        ));
    }
    if let ImageSource::Fixture(f) = &s.image.source
        && let Some(def) = airboot_images::find(f)
        && airboot_images::lookup(&airboot_images::cache_root(), &def).is_none()
        && !is_root()
    {
        return Some(format!("fixture {f} is not built and building it needs root (`sudo airboot images build {f}`)"));
    }
    if let Some(t) = s.machine.transport {
        let caps = airboot_qemu::transport::host_caps(&airboot_images::cache_root());
        let ok = match t {
            TransportKind::Vsock => caps.kernel_vsock.is_ok(),
            TransportKind::VhostUserVsock => caps.vhost_device_vsock.is_some(),
            _ => true,
        };
        if !ok {
            return Some(format!("transport {} is not available on this host", t.as_str()));
        }
    }
    None
}

/// Invariants of every run that booted.
fn check_report(r: &Value, dir: &Path) -> Result<(), String> {
    let mut p = Vec::new();
    if r["schema"] != "airboot.report/v1" {
        p.push(format!("schema {}", r["schema"]));
    }
    if r["qemu"]["argv"].as_array().is_none_or(|a| a.is_empty()) {
        return if p.is_empty() { Ok(()) } else { Err(p.join("; ")) }; // never booted (declared errors)
    }
    if r["network"]["nics"] != 0 || r["network"]["pci_checked"] != true {
        p.push(format!("network {}", r["network"]));
    }
    if r["image"]["unchanged"] != true || r["image"]["sha256_before"] != r["image"]["sha256_after"] {
        p.push(format!("input image changed: {}", r["image"]));
    }
    if r["qemu"]["leftover_processes"].as_array().is_none_or(|a| !a.is_empty()) {
        p.push(format!("leftover processes {}", r["qemu"]["leftover_processes"]));
    }
    // A cause that settles the run ended it within seconds of its evidence.
    let diags: Vec<airboot_model::Diagnosis> = serde_json::from_value(r["diagnoses"].clone()).unwrap_or_default();
    p.extend(diags.iter().filter_map(airboot_core::diagnose::too_slow));
    // A diagnosis explains a failure: a passing run has none.
    if r["verdict"] == "pass" && r["diagnoses"].as_array().is_none_or(|d| !d.is_empty()) {
        p.push(format!("a passing run with diagnoses {}", r["diagnoses"]));
    }
    if !std::fs::read_to_string(dir.join("console.log")).unwrap_or_default().contains("Linux version") {
        p.push("console.log lacks the kernel banner".into());
    }
    if r["accel_reason"].as_str().is_none_or(str::is_empty)
        || r["probe"]["transport_reason"].as_str().is_none_or(str::is_empty)
    {
        p.push("accelerator or transport reason missing".into());
    }
    // With a probe and a running stack: images test-run, air gap checked,
    // time to stack from the guest's records, not later than the host saw it.
    let probe = r["probe"]["transport"].as_str().is_some_and(|t| t != "console");
    if probe && r["probe"]["connected_s"].is_number() && r["time_to_stack_s"].is_number() {
        if r["verdict"] == "pass" {
            for run in r["image_runs"].as_array().into_iter().flatten() {
                if run["ran"] != true {
                    p.push(format!("image run failed in a passing run: {run}"));
                }
            }
            if r["airgap"]["checked"] != true {
                p.push("air gap not checked".into());
            }
        }
        if r["time_to_stack_s"].as_f64() > r["stack_seen_s"].as_f64() {
            p.push("time_to_stack_s after stack_seen_s".into());
        }
        if !r["clock_skew_ms"].is_number() {
            p.push("clock_skew_ms missing".into());
        }
    }
    if p.is_empty() { Ok(()) } else { Err(p.join("; ")) }
}

/// A passing compose stack: each service's containers in the report with
/// their service, a one-shot's exited 0, and a `service:<name>` milestone
/// from the guest's clocks.
fn check_compose(r: &Value, compose: &scenario::ComposeExpect) -> Result<(), String> {
    if r["verdict"] != "pass" {
        return Ok(());
    }
    let mut p = Vec::new();
    for svc in &compose.services {
        let rows: Vec<&Value> = r["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["service"].as_str() == Some(svc.name.as_str()))
            .collect();
        if rows.is_empty() {
            p.push(format!("no container row for service {}", svc.name));
        }
        for c in &rows {
            let ok = if svc.oneshot { c["state"] == "exited" && c["exit_code"] == 0 } else { c["state"] == "running" };
            if !ok {
                p.push(format!("service {}: {c}", svc.name));
            }
        }
        let m = r["milestones"].as_array().into_iter().flatten().find(|m| m["name"] == format!("service:{}", svc.name));
        if m.is_none_or(|m| m["source"] != "guest") {
            p.push(format!("milestone service:{} from the guest's clocks: {m:?}", svc.name));
        }
    }
    if p.is_empty() { Ok(()) } else { Err(p.join("; ")) }
}

fn run_scenario(file: PathBuf, name: String, compose: Option<scenario::ComposeExpect>) -> Result<(), Failed> {
    let dir = repo().join("target/airboot-scenarios").join(name.replace("::", "-"));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_airboot"))
        .current_dir(repo())
        .args(["run", "--check-outcomes", "--no-build", "--report-dir"])
        .arg(&dir)
        .arg(&file)
        .output()
        .map_err(|e| format!("cannot run airboot: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = std::fs::read_to_string(dir.join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| format!("no report.json in {}\n{stdout}\n{stderr}", dir.display()))?;
    if out.status.code() != Some(0) {
        return Err(format!("not as declared (exit {:?}):\n{stdout}", out.status.code()).into());
    }
    check_report(&r, &dir)
        .and_then(|()| compose.as_ref().map_or(Ok(()), |c| check_compose(&r, c)))
        .map_err(|e| Failed::from(format!("{e}\n(report: {}/report.json)", dir.display())))
}

fn main() {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1); // one VM at a time
    }
    let dir = repo().join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut trials = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f).expect("readable scenario");
        let s = match scenario::parse(&src, &f, &|p| p.is_file()) {
            Ok(s) => s,
            Err(e) => {
                let name = format!("invalid::{}", f.file_stem().unwrap().to_string_lossy());
                trials.push(Trial::test(name, move || Err(e.to_string().into())));
                continue;
            }
        };
        let fixture_arch = match &s.image.source {
            ImageSource::Fixture(x) => airboot_images::find(x).map(|d| d.arch),
            ImageSource::Path(_) => None,
        };
        let name = s.test_name(fixture_arch);
        let skip = skip_reason(&s);
        if let Some(why) = &skip {
            eprintln!("skipping {name}: {why}");
        }
        let n = name.clone();
        let compose = s.expect.compose.clone();
        trials.push(Trial::test(name, move || run_scenario(f, n, compose)).with_ignored_flag(skip.is_some()));
    }
    libtest_mimic::run(&args, trials).exit();
}

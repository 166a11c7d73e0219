//! The reference shell reporter (`images/reference/airboot-status`) is what
//! users copy into images that carry no probe, so it is tested for real:
//! the script runs under `sh` with stub `docker` and `systemctl` commands
//! on PATH, and its output must be read back by the harness's parser.

use std::path::{Path, PathBuf};
use std::process::Command;

use airboot_core::status::{Assembled, Assembler, StatusBlock};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images/reference/airboot-status")
}

fn stub(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

/// Run the script once with `docker.service` in `engine_state` and
/// `health` for redis; return the parsed block.
fn run(engine_state: &str, health: &str) -> StatusBlock {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    stub(
        &bin,
        "systemctl",
        &format!(
            r#"case "$1" in
  is-active) echo {engine_state} ;;
  is-system-running) echo running ;;
  show) for u in "$@"; do case "$u" in --*|show) ;; *) printf 'Id=%s\nActiveState=active\nSubState=running\nConditionResult=yes\nConditionTimestampMonotonic=5\n\n' "$u" ;; esac; done ;;
esac"#
        ),
    );
    stub(
        &bin,
        "docker",
        &format!(
            r#"case "$1 $2" in
  "image ls") echo '{{"repository":"fixture/redis","tag":"1","id":"{RID}"}}' ;;
  "ps -aq") echo c1 ;;
  "inspect --format") echo '{{"name":"/redis","image":"fixture/redis:1","image_id":"{RID}","state":"running","health":"{health}","started_at":"2026-01-01T00:00:00Z","exit_code":0}}' ;;
  *) exit 1 ;;
esac"#
        ),
    );
    let conf = dir.path().join("status.conf");
    // DEADLINE above any host uptime: the test machine has been up longer than a guest.
    std::fs::write(&conf, "STACK_UNITS=\"container-redis.service\"\nSTACK_CONTAINERS=\"redis\"\nDEADLINE=999999999\n")
        .unwrap();
    let out = dir.path().join("console");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let status = Command::new("sh")
        .arg(script())
        .env("PATH", path)
        .env("AIRBOOT_CONSOLE", &out)
        .env("AIRBOOT_STATUS_CONF", &conf)
        .env("AIRBOOT_STATUS_ONCE", "1")
        .env("TMPDIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&out).unwrap();
    let mut a = Assembler::new();
    let blocks: Vec<StatusBlock> = text
        .lines()
        .filter_map(|l| match a.push(1.0, l) {
            Assembled::Block(b) => Some(*b),
            Assembled::Nothing => None,
            other => panic!("{other:?} in:\n{text}"),
        })
        .collect();
    assert_eq!(blocks.len(), 1, "{text}");
    blocks.into_iter().next().unwrap()
}

#[test]
fn a_healthy_stack_gives_a_final_block_the_harness_reads() {
    let b = run("active", "healthy");
    assert!(b.is_final);
    assert_eq!(b.engine.as_ref().unwrap().state, airboot_proto::EngineState::Up);
    assert_eq!(b.images[0].id, RID);
    assert_eq!(b.containers[0].health.as_deref(), Some("healthy"));
    assert_eq!(b.units[0].state, "active");
}

#[test]
fn a_starting_container_is_not_final() {
    assert!(!run("active", "starting").is_final);
}

#[test]
fn an_engine_that_is_not_active_is_not_asked() {
    let b = run("activating", "healthy");
    assert!(!b.is_final);
    assert_eq!(b.engine.as_ref().unwrap().state, airboot_proto::EngineState::Starting);
    assert!(b.images.is_empty());
    let b = run("failed", "healthy");
    assert!(b.is_final);
    assert_eq!(b.engine.as_ref().unwrap().state, airboot_proto::EngineState::Down);
}

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

/// A stub `docker` listing redis by `RID`, containers `ids`, and running
/// `inspect` (a shell command) for `docker inspect`.
fn docker_stub(bin: &Path, ids: &str, inspect: &str) {
    let image = format!(r#"{{"repository":"fixture/redis","tag":"1","id":"{RID}"}}"#);
    stub(
        bin,
        "docker",
        &format!(
            "case \"$1 $2\" in\n  \"image ls\") echo '{image}' ;;\n  \"ps -aq\") echo {ids} ;;\n  \"inspect --format\") {inspect} ;;\n  *) exit 1 ;;\nesac"
        ),
    );
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
    let inspect = format!(
        r#"echo '{{"name":"/redis","image":"fixture/redis:1","image_id":"{RID}","state":"running","health":"{health}","started_at":"2026-01-01T00:00:00Z","exit_code":0}}'"#
    );
    docker_stub(&bin, "c1", &inspect);
    // DEADLINE above any host uptime: the test machine has been up longer than a guest.
    once(dir.path(), "STACK_UNITS=\"container-redis.service\"\nSTACK_CONTAINERS=\"redis\"\nDEADLINE=999999999\n")
}

/// Run the script once in `dir` (its stubs in `dir/bin`) with `conf` as
/// its configuration; the one block it printed, parsed by the harness.
fn once(dir: &Path, conf: &str) -> StatusBlock {
    let conf_file = dir.join("status.conf");
    std::fs::write(&conf_file, conf).unwrap();
    let out = dir.join("console");
    let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let status = Command::new("sh")
        .arg(script())
        .env("PATH", path)
        .env("AIRBOOT_CONSOLE", &out)
        .env("AIRBOOT_STATUS_CONF", &conf_file)
        .env("AIRBOOT_STATUS_ONCE", "1")
        .env("TMPDIR", dir)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&out).unwrap();
    let mut a = Assembler::new();
    let mut blocks = text.lines().filter_map(|l| match a.push(1.0, l) {
        Assembled::Block(b) => Some(*b),
        Assembled::Nothing => None,
        other => panic!("{other:?} in:\n{text}"),
    });
    let b = blocks.next().unwrap_or_else(|| panic!("no block in:\n{text}"));
    assert!(blocks.next().is_none(), "{text}");
    b
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

/// Run the script once with `ENGINE=podman` and a stub `podman` that
/// prints what Podman's own CLI prints for the script's templates (the
/// container's whole state as JSON where Docker has a health field);
/// `images` is what `podman image ls` does: `Ok(lines)` or `Err(stderr)`.
fn run_podman(images: Result<&str, &str>, state: &str, booting: bool) -> StatusBlock {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let boot = if booting { "starting" } else { "running" };
    // Podman has no unit to ask: docker.service is inactive on its device.
    stub(
        &bin,
        "systemctl",
        &format!("case \"$1\" in is-active) echo inactive ;; is-system-running) echo {boot} ;; esac"),
    );
    let image_ls = match images {
        Ok(lines) => format!("printf '%s\\n' '{lines}'"),
        Err(e) => format!("echo '{e}' >&2; exit 125"),
    };
    stub(
        &bin,
        "podman",
        &format!(
            r#"case "$1 $2" in
  "image ls") {image_ls} ;;
  "ps -aq") echo c1 ;;
  "inspect --format") printf '%s\n' '{{"name":"/redis","image":"localhost/fixture/redis:1","image_id":"{RID}","state":"running","started_at":"2026-01-01T00:00:00.123456789Z","exit_code":0,"health":{state}}}' ;;
  *) exit 1 ;;
esac"#
        ),
    );
    once(dir.path(), "ENGINE=podman\nSTACK_CONTAINERS=\"redis\"\nDEADLINE=999999999\n")
}

const PODMAN_IMAGE: &str = r#"{"repository":"localhost/fixture/redis","tag":"1","id":"sha256:1111111111111111111111111111111111111111111111111111111111111111"}"#;

/// Podman's state JSON, its health check's status in it (`""`: none).
fn podman_state(health: &str) -> String {
    format!(
        r#"{{"OciVersion":"1.0.2-dev","Status":"running","Running":true,"ExitCode":0,"Health":{{"Status":"{health}","FailingStreak":0,"Log":[{{"ExitCode":0,"Output":"PONG\n"}}]}},"CheckpointedAt":"0001-01-01T00:00:00Z"}}"#
    )
}

#[test]
fn with_podman_the_cli_is_asked_without_a_unit_and_its_health_is_read_from_the_state() {
    let b = run_podman(Ok(PODMAN_IMAGE), &podman_state("healthy"), false);
    assert!(b.is_final);
    let e = b.engine.as_ref().unwrap();
    assert_eq!((e.name.as_str(), e.state), ("podman", airboot_proto::EngineState::Up));
    assert_eq!((b.images[0].repository.as_str(), b.images[0].id.as_str()), ("localhost/fixture/redis", RID));
    let c = &b.containers[0];
    assert_eq!((c.name.as_str(), c.image.as_str()), ("/redis", "localhost/fixture/redis:1"));
    assert_eq!(c.health.as_deref(), Some("healthy"));
    // Still starting: not final. No health check: none, and final.
    let b = run_podman(Ok(PODMAN_IMAGE), &podman_state("starting"), false);
    assert_eq!((b.containers[0].health.as_deref(), b.is_final), (Some("starting"), false));
    let b = run_podman(Ok(PODMAN_IMAGE), &podman_state(""), false);
    assert_eq!((b.containers[0].health.as_deref(), b.is_final), (None, true));
    let b = run_podman(Ok(PODMAN_IMAGE), r#"{"Status":"running","Running":true}"#, false);
    assert_eq!(b.containers[0].health, None);
}

#[test]
fn with_podman_a_failing_cli_is_down_quoting_it_or_starting_while_the_system_boots() {
    let err = r#"Error: "overlay" is not supported over extfs at /var/lib/containers/storage"#;
    let b = run_podman(Err(err), &podman_state(""), false);
    assert!(b.is_final, "the system is up: it will not come");
    let e = b.engine.as_ref().unwrap();
    assert_eq!(e.state, airboot_proto::EngineState::Down);
    let d = e.detail.as_deref().unwrap();
    assert!(d.contains(r#""overlay" is not supported"#) && d.contains("system is running"), "{d}");
    assert!(b.images.is_empty() && b.containers.is_empty());
    let b = run_podman(Err(err), &podman_state(""), true);
    assert_eq!((b.engine.unwrap().state, b.is_final), (airboot_proto::EngineState::Starting, false));
}

#[test]
fn an_engine_the_reporter_does_not_know_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("status.conf");
    std::fs::write(&conf, "ENGINE=rkt\n").unwrap();
    let out = Command::new("sh")
        .arg(script())
        .env("AIRBOOT_CONSOLE", dir.path().join("console"))
        .env("AIRBOOT_STATUS_CONF", &conf)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("ENGINE=rkt") && e.contains("docker, podman and containerd"), "{e}");
    assert!(!dir.path().join("console").exists(), "nothing printed to the console");
}

/// A compose stack: the reporter waits for each service's container,
/// found by compose's labels (as the docker CLI prints them), whatever
/// its name; a one-shot that exited counts as done.
#[test]
fn a_compose_stack_is_waited_for_by_its_services_labels() {
    let block = |seed_state: &str| {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        stub(&bin, "systemctl", "case \"$1\" in is-active) echo active ;; is-system-running) echo running ;; esac");
        let line = |name: &str, service: &str, state: &str, health: &str| {
            format!(
                r#"{{"name":"/{name}","image":"fixture/redis:1","image_id":"{RID}","state":"{state}","health":{health},"started_at":"2026-01-01T00:00:00Z","exit_code":0,"compose":{{"project":"fixture","service":"{service}"}}}}"#
            )
        };
        let lines = [
            line("fixture_redis_1", "redis", "running", r#""healthy""#),
            line("fixture_seed_1", "seed", seed_state, "null"),
            // Another project's service of the same name does not count.
            line("other_web_1", "web", "running", "null").replace(r#""project":"fixture""#, r#""project":"other""#),
        ];
        let inspect = lines.iter().map(|l| format!("'{l}'")).collect::<Vec<_>>().join(" ");
        docker_stub(&bin, "c1 c2 c3", &format!("printf '%s\\n' {inspect}"));
        let conf = "STACK_COMPOSE=\"fixture\"\nSTACK_SERVICES=\"redis seed\"\nDEADLINE=999999999\n";
        (once(dir.path(), conf), once(dir.path(), &conf.replace("redis seed", "redis seed web")))
    };
    let (b, with_web) = block("exited");
    assert!(b.is_final, "redis healthy, seed done");
    let c = b.containers.iter().find(|c| c.name == "/fixture_redis_1").unwrap();
    let labels = c.compose.as_ref().map(|l| (l.project.as_str(), l.service.as_str()));
    assert_eq!(labels, Some(("fixture", "redis")));
    assert!(!with_web.is_final, "web has no container in project fixture");
    let (b, _) = block("created");
    assert!(!b.is_final, "the one-shot has not run yet");
}

/// containerd over `ctr`, as its CLI prints: every namespace's images,
/// each an index whose manifest for this machine names the config (the
/// image's ID, as Docker's); containers with their tasks' status (none:
/// created; STOPPED: exited), no health.
#[test]
fn with_containerd_images_are_their_configs_and_containers_their_tasks() {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let run = |tasks: &str| {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        stub(&bin, "systemctl", "case \"$1\" in is-active) echo active ;; is-system-running) echo running ;; esac");
        let (index, other, manifest) = ("sha256:aaaa", "sha256:bbbb", "sha256:cccc");
        // The other platform's manifest comes first: the reporter must pick this machine's.
        let index_json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"m","digest":"{other}","size":1,"platform":{{"architecture":"s390x","os":"linux"}}}},{{"mediaType":"m","digest":"{manifest}","size":741,"platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#
        );
        let manifest_json = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{RID}","size":967}},"layers":[{{"digest":"sha256:dddd"}}]}}"#
        );
        stub(
            &bin,
            "ctr",
            &format!(
                r#"case "$*" in
  "version") echo ok ;;
  "namespaces ls -q") printf 'airboot\nempty\n' ;;
  "-n airboot images ls") printf 'REF TYPE DIGEST SIZE PLATFORMS LABELS\nfixture/redis:1 application/vnd.oci.image.index.v1+json {index} 39.0 MiB linux/{arch} -\n' ;;
  "-n airboot content get {index}") printf '%s' '{index_json}' ;;
  "-n airboot content get {manifest}") printf '%s' '{manifest_json}' ;;
  "-n airboot containers ls") printf 'CONTAINER IMAGE RUNTIME\nredis fixture/redis:1 io.containerd.runc.v2\nweb fixture/busybox:1 io.containerd.runc.v2\n' ;;
  "-n airboot tasks ls") printf 'TASK PID STATUS\n{tasks}' ;;
  "-n empty "*) [ "$3" = ls ] && echo HEADER ;;
  *) exit 1 ;;
esac"#
            ),
        );
        once(dir.path(), "ENGINE=containerd\nSTACK_CONTAINERS=\"redis web\"\nDEADLINE=999999999\n")
    };
    let b = run("redis 401 RUNNING\nweb 402 STOPPED\n");
    assert!(b.is_final, "redis runs, web ran and exited");
    let e = b.engine.as_ref().unwrap();
    assert_eq!((e.name.as_str(), e.state), ("containerd", airboot_proto::EngineState::Up));
    let images: Vec<(&str, &str, &str)> =
        b.images.iter().map(|i| (i.repository.as_str(), i.tag.as_str(), i.id.as_str())).collect();
    assert_eq!(images, [("fixture/redis", "1", RID)]);
    let got: Vec<(&str, &str, Option<&str>)> =
        b.containers.iter().map(|c| (c.name.as_str(), c.state.as_str(), c.image_id.as_deref())).collect();
    assert_eq!(got, [("/redis", "running", Some(RID)), ("/web", "exited", None)]);
    assert!(b.containers.iter().all(|c| c.health.is_none()));
    // No task for web yet: created, and the round is not settled.
    let b = run("redis 401 RUNNING\n");
    assert_eq!((b.containers[1].state.as_str(), b.is_final), ("created", false));
}

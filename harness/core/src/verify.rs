//! Compares what the guest's engine reports with what the scenario expects.

use std::collections::BTreeMap;

use airboot_model::{FailureCode, Problem};
use airboot_proto::EngineState;
use serde::{Deserialize, Serialize};

use crate::scenario::{Expect, ExtraImages, normalize_ref};
use crate::status::StatusBlock;

/// One image as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRow {
    #[serde(rename = "ref")]
    pub reference: String,
    /// The ID the engine reports (`null` when absent).
    pub id: Option<String>,
    pub present: bool,
    /// Listed by the scenario (false: present on the device but not expected).
    pub expected: bool,
    /// The ID the scenario or the fixture build says it must have.
    pub expected_id: Option<String>,
}

/// One container as the report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContainerRow {
    pub name: String,
    pub image: Option<String>,
    /// Engine state (`running`, `exited`, …) or `absent`.
    pub state: String,
    pub health: Option<String>,
    pub expected: bool,
    /// Its last exit status, when it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Not running: the last lines of its log (probe only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
    /// The last health check's output, when it failed (probe only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_output: Option<String>,
    /// The compose service it belongs to (`expect.compose`); a service
    /// with no container at all is a row named after it, `absent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The engine's ID for it, when the guest told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The comparison of one status block with the expectations.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub engine_up: bool,
    /// Every expected image present with the right ID, and no extra ones
    /// when the scenario forbids them.
    pub images_ok: bool,
    /// Expected containers that are running.
    pub running: Vec<String>,
    /// Expected containers that are healthy (or have no healthcheck and are
    /// running, when health is not required).
    pub ready: Vec<String>,
    /// Compose services whose every container is as expected (running and
    /// healthy, or a one-shot exited 0), with those containers' names.
    pub services: Vec<(String, Vec<String>)>,
    pub problems: Vec<Problem>,
    pub images: Vec<ImageRow>,
    pub containers: Vec<ContainerRow>,
}

impl Evaluation {
    /// Everything the scenario expects holds.
    pub fn satisfied(&self) -> bool {
        self.engine_up && self.problems.is_empty()
    }
}

fn id_matches(expected: &str, actual: &str) -> bool {
    actual.to_ascii_lowercase().starts_with(&expected.to_ascii_lowercase())
}

/// `Some(platform)` when the image's architecture is not the guest's.
fn wrong_platform<'a>(block: &'a StatusBlock, id: &str) -> Option<&'a str> {
    let guest = block.guest_arch.as_deref()?;
    let platform = block.platforms.get(id)?;
    let arch = platform.split('/').nth(1).unwrap_or("");
    (!arch.is_empty() && arch != guest).then_some(platform.as_str())
}

/// The report's row for an expected container the engine lists.
fn row_for(c: &airboot_proto::ContainerRecord, name: String, service: Option<String>) -> ContainerRow {
    ContainerRow {
        name,
        image: Some(normalize_ref(&c.image).unwrap_or_else(|_| c.image.clone())),
        state: c.state.clone(),
        health: c.health.clone(),
        expected: true,
        exit_code: c.exit_code.filter(|_| c.state != "running"),
        log_tail: c.log_tail.clone(),
        health_output: c.health_output.clone(),
        service,
        id: c.id.clone(),
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Compare a block with the expectations. `known_ids` are image IDs from
/// the image's own build record (a fixture's manifest), used for expected
/// images whose scenario entry gives no `id`.
pub fn evaluate(expect: &Expect, known_ids: &BTreeMap<String, String>, block: &StatusBlock) -> Evaluation {
    let mut problems = Vec::new();
    let engine_state = block.engine.as_ref().map(|e| e.state);
    // Another engine than the scenario's answering is not the expected one up.
    let other = block.engine.as_ref().filter(|e| !e.name.is_empty() && e.name != expect.engine.as_str());
    let engine_up = engine_state == Some(EngineState::Up) && other.is_none();
    if let Some(e) = other {
        problems.push(Problem {
            code: FailureCode::EngineDown,
            message: format!(
                "the guest's engine is {}, the scenario expects {} (expect.engine)",
                e.name,
                expect.engine.as_str()
            ),
        });
    } else if !engine_up {
        let msg = match &block.engine {
            None => format!("the guest reported no {} engine state", expect.engine.as_str()),
            Some(e) => format!(
                "{} is {}{}",
                e.name,
                match e.state {
                    EngineState::Up => "up",
                    EngineState::Starting => "still starting",
                    EngineState::Failing => "running but its API fails",
                    EngineState::Down => "not running",
                },
                e.detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
            ),
        };
        let code =
            if engine_state == Some(EngineState::Failing) { FailureCode::EngineError } else { FailureCode::EngineDown };
        problems.push(Problem { code, message: msg });
    }

    if expect.read_only_root
        && engine_up
        && let Some(e) = &block.engine
    {
        problems.extend(crate::readonly::in_guest(e));
    }

    // Images: what the engine lists, keyed by normalised reference.
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    let mut dangling: Vec<String> = Vec::new();
    for i in &block.images {
        if i.repository == "<none>" || i.tag == "<none>" {
            dangling.push(i.id.clone());
            continue;
        }
        let r = normalize_ref(&format!("{}:{}", i.repository, i.tag))
            .unwrap_or_else(|_| format!("{}:{}", i.repository, i.tag));
        listed.insert(r, i.id.clone());
    }
    let mut rows = Vec::new();
    for e in &expect.images {
        let expected_id = e.id.clone().or_else(|| known_ids.get(&e.reference).cloned());
        let actual = listed.get(&e.reference).cloned();
        match (&actual, &expected_id) {
            (None, _) if engine_up => {
                let present: Vec<&str> = listed.keys().map(String::as_str).collect();
                problems.push(Problem {
                    code: FailureCode::ImageMissing,
                    message: format!(
                        "image {} is not in `{} images` (it lists: {})",
                        e.reference,
                        expect.engine.as_str(),
                        if present.is_empty() { "nothing".to_string() } else { present.join(", ") }
                    ),
                });
            }
            (Some(a), _) if wrong_platform(block, a).is_some() => problems.push(Problem {
                code: FailureCode::ImageArchMismatch,
                message: format!(
                    "image {} is {} but the device is {}: it would fail with \"exec format error\"",
                    e.reference,
                    block.platforms.get(a).map(String::as_str).unwrap_or("?"),
                    block.guest_arch.as_deref().unwrap_or("?")
                ),
            }),
            (Some(a), Some(x)) if !id_matches(x, a) => problems.push(Problem {
                code: FailureCode::ImageIdMismatch,
                message: format!(
                    "image {} has ID {} but {} was expected (a different build of it is on the device)",
                    e.reference,
                    short(a),
                    short(x)
                ),
            }),
            _ => {}
        }
        rows.push(ImageRow {
            reference: e.reference.clone(),
            present: actual.is_some(),
            id: actual,
            expected: true,
            expected_id,
        });
    }
    for (r, id) in &listed {
        if expect.images.iter().any(|e| &e.reference == r) {
            continue;
        }
        if expect.extra_images == ExtraImages::Fail {
            problems.push(Problem {
                code: FailureCode::UnexpectedImage,
                message: format!(
                    "image {r} ({}) is on the device but the scenario does not expect it (set expect.extra_images = \"allow\" to permit extras)",
                    short(id)
                ),
            });
        }
        rows.push(ImageRow {
            reference: r.clone(),
            id: Some(id.clone()),
            present: true,
            expected: false,
            expected_id: None,
        });
    }
    for id in &dangling {
        if expect.extra_images == ExtraImages::Fail {
            problems.push(Problem {
                code: FailureCode::UntaggedImage,
                message: format!(
                    "an untagged image <none>:<none> ({}) is on the device: often a load that was cut short or a tag that was lost",
                    short(id)
                ),
            });
        }
        rows.push(ImageRow {
            reference: "<none>:<none>".into(),
            id: Some(id.clone()),
            present: true,
            expected: false,
            expected_id: None,
        });
    }
    let images_ok = engine_up
        && !problems.iter().any(|p| {
            matches!(
                p.code,
                FailureCode::ImageMissing
                    | FailureCode::ImageIdMismatch
                    | FailureCode::UnexpectedImage
                    | FailureCode::UntaggedImage
            )
        });

    // Containers.
    let mut running = Vec::new();
    let mut ready = Vec::new();
    let mut crow = Vec::new();
    for c in &expect.containers {
        let found = block.containers.iter().find(|x| x.name.trim_start_matches('/') == c.name);
        let Some(found) = found else {
            if engine_up {
                problems.push(Problem {
                    code: FailureCode::ContainerMissing,
                    message: format!("container {} does not exist", c.name),
                });
            }
            crow.push(ContainerRow {
                name: c.name.clone(),
                image: c.image.clone(),
                state: "absent".into(),
                health: None,
                expected: true,
                ..Default::default()
            });
            continue;
        };
        let row = row_for(found, c.name.clone(), None);
        let image = row.image.clone().unwrap_or_default();
        crow.push(row);
        if let Some(want) = &c.image
            && want != &image
        {
            problems.push(Problem {
                code: FailureCode::ContainerWrongImage,
                message: format!("container {} runs {} but {} was expected", c.name, image, want),
            });
        }
        if found.state != "running" {
            problems.push(Problem {
                code: FailureCode::ContainerNotRunning,
                message: format!(
                    "container {} is {}{}",
                    c.name,
                    found.state,
                    found.exit_code.map(|e| format!(" (exit code {e})")).unwrap_or_default()
                ),
            });
            continue;
        }
        running.push(c.name.clone());
        let needs_health = c.healthy.unwrap_or(found.health.is_some());
        match (needs_health, found.health.as_deref()) {
            (false, _) | (true, Some("healthy")) => ready.push(c.name.clone()),
            (true, None) => problems.push(Problem {
                code: FailureCode::ContainerNoHealthcheck,
                message: format!("container {} must be healthy but its image has no healthcheck", c.name),
            }),
            (true, Some(h)) => problems.push(Problem {
                code: FailureCode::ContainerUnhealthy,
                message: format!("container {} is {h}", c.name),
            }),
        }
    }
    let services = match &expect.compose {
        Some(compose) if engine_up || !block.containers.is_empty() => {
            check_compose(compose, block, engine_up, &mut running, &mut ready, &mut problems, &mut crow)
        }
        _ => Vec::new(),
    };
    for x in &block.containers {
        let name = x.name.trim_start_matches('/');
        if !expect.containers.iter().any(|c| c.name == name) && !crow.iter().any(|r| r.name == name) {
            crow.push(ContainerRow {
                name: name.to_string(),
                image: Some(x.image.clone()),
                state: x.state.clone(),
                health: x.health.clone(),
                expected: false,
                ..Default::default()
            });
        }
    }

    Evaluation { engine_up, images_ok, running, ready, services, problems, images: rows, containers: crow }
}

/// Each compose service's containers, found by their labels: running and
/// healthy (a healthcheck is needed only with `healthy = true`), or a
/// one-shot's exited 0. Returns the services that hold.
fn check_compose(
    compose: &crate::scenario::ComposeExpect,
    block: &StatusBlock,
    engine_up: bool,
    running: &mut Vec<String>,
    ready: &mut Vec<String>,
    problems: &mut Vec<Problem>,
    rows: &mut Vec<ContainerRow>,
) -> Vec<(String, Vec<String>)> {
    let mut done = Vec::new();
    for svc in &compose.services {
        let what = format!("compose service {} (project {})", svc.name, compose.project);
        let members: Vec<_> = block
            .containers
            .iter()
            .filter(|x| x.compose.as_ref().is_some_and(|l| l.project == compose.project && l.service == svc.name))
            .collect();
        if members.is_empty() {
            if engine_up {
                problems.push(Problem {
                    code: FailureCode::ContainerMissing,
                    message: format!("{what} has no container (none carries its compose labels)"),
                });
            }
            rows.push(ContainerRow {
                name: svc.name.clone(),
                state: "absent".into(),
                expected: true,
                service: Some(svc.name.clone()),
                ..Default::default()
            });
            continue;
        }
        let mut ok = true;
        let mut names = Vec::new();
        for m in members {
            let name = m.name.trim_start_matches('/').to_string();
            rows.push(row_for(m, name.clone(), Some(svc.name.clone())));
            let problem = if svc.oneshot {
                match (m.state.as_str(), m.exit_code) {
                    ("exited" | "stopped", Some(0)) => None,
                    ("exited" | "stopped" | "dead", code) => Some(format!(
                        "{what}: its one-shot container {name} exited {} (it must exit 0)",
                        code.map(|c| c.to_string()).unwrap_or_else(|| "with no status".into())
                    )),
                    (state, _) => Some(format!("{what}: its one-shot container {name} is {state}, not exited 0 yet")),
                }
                .map(|message| Problem { code: FailureCode::ContainerNotRunning, message })
            } else if m.state != "running" {
                Some(Problem {
                    code: FailureCode::ContainerNotRunning,
                    message: format!(
                        "{what}: container {name} is {}{}",
                        m.state,
                        m.exit_code.map(|e| format!(" (exit code {e})")).unwrap_or_default()
                    ),
                })
            } else {
                running.push(name.clone());
                match (svc.healthy.unwrap_or(m.health.is_some()), m.health.as_deref()) {
                    (false, _) | (true, Some("healthy")) => None,
                    (true, None) => Some(Problem {
                        code: FailureCode::ContainerNoHealthcheck,
                        message: format!("{what} must be healthy but its container {name} has no healthcheck"),
                    }),
                    (true, Some(h)) => Some(Problem {
                        code: FailureCode::ContainerUnhealthy,
                        message: format!("{what}: container {name} is {h}"),
                    }),
                }
            };
            match problem {
                Some(p) => {
                    ok = false;
                    problems.push(p);
                }
                None => {
                    ready.push(name.clone());
                    names.push(name);
                }
            }
        }
        if ok {
            done.push((svc.name.clone(), names));
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{ContainerExpect, ImageExpect};
    use airboot_model::Engine;
    use airboot_proto::{ContainerRecord, EngineRecord, ImageRecord};
    use std::time::Duration;

    const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const BID: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn expect() -> Expect {
        Expect {
            engine: Engine::Docker,
            images: vec![
                ImageExpect { reference: "fixture/redis:1".into(), id: None },
                ImageExpect { reference: "fixture/busybox:1".into(), id: Some("sha256:222222222222".into()) },
            ],
            extra_images: ExtraImages::Fail,
            containers: vec![
                ContainerExpect { name: "redis".into(), image: Some("fixture/redis:1".into()), healthy: None },
                ContainerExpect { name: "web".into(), image: None, healthy: None },
            ],
            compose: None,
            time_to_stack: None,
            timeout: Duration::from_secs(60),
            fail_on: vec![],
            default_fail_on: true,
            read_only_root: false,
        }
    }

    fn img(repo: &str, tag: &str, id: &str) -> ImageRecord {
        ImageRecord { repository: repo.into(), tag: tag.into(), id: id.into() }
    }

    fn ctr(name: &str, image: &str, state: &str, health: Option<&str>) -> ContainerRecord {
        ContainerRecord {
            name: format!("/{name}"),
            image: image.into(),
            image_id: None,
            state: state.into(),
            health: health.map(Into::into),
            started_at: None,
            exit_code: None,
            log_tail: Vec::new(),
            health_output: None,
            id: None,
            compose: None,
        }
    }

    fn good() -> StatusBlock {
        StatusBlock {
            engine: Some(EngineRecord { name: "docker".into(), state: EngineState::Up, ..Default::default() }),
            images: vec![img("fixture/redis", "1", RID), img("fixture/busybox", "1", BID)],
            containers: vec![
                ctr("redis", "fixture/redis:1", "running", Some("healthy")),
                ctr("web", "fixture/busybox:1", "running", None),
            ],
            ..Default::default()
        }
    }

    fn codes(e: &Evaluation) -> Vec<FailureCode> {
        e.problems.iter().map(|p| p.code).collect()
    }

    #[test]
    fn a_good_stack_is_satisfied() {
        let known = BTreeMap::from([("fixture/redis:1".to_string(), RID.to_string())]);
        let e = evaluate(&expect(), &known, &good());
        assert!(e.satisfied(), "{:?}", e.problems);
        assert_eq!(e.ready, ["redis", "web"]);
        assert_eq!(e.images[0].expected_id.as_deref(), Some(RID));
    }

    #[test]
    fn a_read_only_root_is_checked_only_when_expected() {
        use airboot_proto::mounts::MountRecord;
        let mut b = good();
        let known = BTreeMap::from([("fixture/redis:1".to_string(), RID.to_string())]);
        let rw_root = MountRecord {
            point: "/".into(),
            fstype: "ext4".into(),
            source: "/dev/vda".into(),
            read_only: false,
            lower: vec![],
            upper: None,
            upper_mount: None,
        };
        b.engine.as_mut().unwrap().root_mount = Some(Box::new(rw_root.clone()));
        b.engine.as_mut().unwrap().store_mount = Some(Box::new(rw_root));
        assert!(evaluate(&expect(), &known, &b).satisfied(), "not asked for: not checked");
        let want = Expect { read_only_root: true, ..expect() };
        let e = evaluate(&want, &known, &b);
        assert_eq!(codes(&e), [FailureCode::ReadOnlyRoot, FailureCode::ReadOnlyRoot]);
        assert!(e.problems[0].message.contains("mounted read-write: /dev/vda on / (ext4)"));
        // An engine that is down is judged as down, not on its mounts.
        b.engine.as_mut().unwrap().state = EngineState::Down;
        assert_eq!(codes(&evaluate(&want, &known, &b)), [FailureCode::EngineDown]);
    }

    #[test]
    fn missing_image_is_named() {
        let mut b = good();
        b.images.remove(0);
        let e = evaluate(&expect(), &BTreeMap::new(), &b);
        assert_eq!(codes(&e), [FailureCode::ImageMissing]);
        assert!(e.problems[0].message.contains("fixture/redis:1"));
        assert!(e.problems[0].message.contains("fixture/busybox:1"), "lists what is there");
        assert!(!e.images[0].present);
    }

    #[test]
    fn wrong_id_from_scenario_or_build_record() {
        let mut b = good();
        b.images[1].id = RID.into();
        assert_eq!(codes(&evaluate(&expect(), &BTreeMap::new(), &b)), [FailureCode::ImageIdMismatch]);
        let known = BTreeMap::from([("fixture/redis:1".to_string(), BID.to_string())]);
        let e = evaluate(&expect(), &known, &good());
        assert_eq!(codes(&e), [FailureCode::ImageIdMismatch]);
        assert!(e.problems[0].message.contains("222222222222"));
    }

    #[test]
    fn wrong_platform_is_named_with_both_architectures() {
        let mut b = good();
        b.guest_arch = Some("arm64".into());
        b.platforms.insert(RID.into(), "linux/amd64".into());
        b.platforms.insert(BID.into(), "linux/arm64/v8".into());
        let e = evaluate(&expect(), &BTreeMap::new(), &b);
        assert_eq!(codes(&e), [FailureCode::ImageArchMismatch]);
        let m = &e.problems[0].message;
        assert!(m.contains("fixture/redis:1") && m.contains("linux/amd64") && m.contains("arm64"), "{m}");
        b.guest_arch = None; // console transport: no platform information
        assert!(evaluate(&expect(), &BTreeMap::new(), &b).satisfied());
    }

    #[test]
    fn extra_and_untagged_images() {
        let mut b = good();
        b.images.push(img("leaked", "latest", RID));
        b.images.push(img("<none>", "<none>", BID));
        let e = evaluate(&expect(), &BTreeMap::new(), &b);
        assert_eq!(codes(&e), [FailureCode::UnexpectedImage, FailureCode::UntaggedImage]);
        let mut allow = expect();
        allow.extra_images = ExtraImages::Allow;
        assert!(evaluate(&allow, &BTreeMap::new(), &b).satisfied());
    }

    #[test]
    fn containers_must_run_and_be_healthy_when_they_can() {
        let mut b = good();
        b.containers[0].health = Some("starting".into());
        assert_eq!(codes(&evaluate(&expect(), &BTreeMap::new(), &b)), [FailureCode::ContainerUnhealthy]);
        b.containers[0].state = "exited".into();
        b.containers[0].exit_code = Some(139);
        let e = evaluate(&expect(), &BTreeMap::new(), &b);
        assert_eq!(codes(&e), [FailureCode::ContainerNotRunning]);
        assert!(e.problems[0].message.contains("139"));
        b.containers.remove(0);
        assert_eq!(codes(&evaluate(&expect(), &BTreeMap::new(), &b)), [FailureCode::ContainerMissing]);

        let mut must = expect();
        must.containers[1].healthy = Some(true);
        assert_eq!(codes(&evaluate(&must, &BTreeMap::new(), &good())), [FailureCode::ContainerNoHealthcheck]);
        must.containers[1].image = Some("fixture/redis:1".into());
        assert!(codes(&evaluate(&must, &BTreeMap::new(), &good())).contains(&FailureCode::ContainerWrongImage));
        let mut ignore = expect();
        ignore.containers[0].healthy = Some(false);
        let mut b = good();
        b.containers[0].health = Some("unhealthy".into());
        assert!(evaluate(&ignore, &BTreeMap::new(), &b).satisfied());
    }

    /// The report's container table: each expected container, found or
    /// absent, then every other container the engine has.
    #[test]
    fn the_container_rows_show_expected_absent_and_unexpected_containers() {
        let mut b = good();
        b.containers.remove(0);
        b.containers.push(ctr("stray", "fixture/busybox:1", "exited", Some("unhealthy")));
        let e = evaluate(&expect(), &BTreeMap::new(), &b);
        type Row<'a> = (&'a str, Option<&'a str>, &'a str, Option<&'a str>, bool);
        let rows: Vec<Row> = e
            .containers
            .iter()
            .map(|r| (r.name.as_str(), r.image.as_deref(), r.state.as_str(), r.health.as_deref(), r.expected))
            .collect();
        assert_eq!(
            rows,
            [
                ("redis", Some("fixture/redis:1"), "absent", None, true),
                ("web", Some("fixture/busybox:1"), "running", None, true),
                ("stray", Some("fixture/busybox:1"), "exited", Some("unhealthy"), false),
            ]
        );
    }

    #[test]
    fn engine_down_hides_absence_noise() {
        let b = StatusBlock {
            engine: Some(EngineRecord {
                name: "docker".into(),
                state: EngineState::Down,
                version: None,
                detail: Some("docker.service failed".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = evaluate(&expect(), &BTreeMap::new(), &b);
        assert_eq!(codes(&e), [FailureCode::EngineDown]);
        assert!(e.problems[0].message.contains("docker.service failed"));
        assert!(!e.satisfied());
    }

    /// A Docker answering where the scenario expects Podman is not Podman up.
    #[test]
    fn another_engine_than_the_expected_one_is_not_up() {
        let mut podman = expect();
        podman.engine = Engine::Podman;
        let e = evaluate(&podman, &BTreeMap::new(), &good());
        assert_eq!(codes(&e), [FailureCode::EngineDown]);
        assert!(e.problems[0].message.contains("the guest's engine is docker, the scenario expects podman"));
        assert!(!e.engine_up && !e.satisfied());
        assert!(evaluate(&expect(), &BTreeMap::new(), &good()).satisfied(), "docker expected, docker answers");
    }

    #[test]
    fn an_engine_whose_api_fails_is_an_engine_error() {
        let detail = "GET /images/sha256:e9/json: HTTP 500 readlink /var/lib/docker/overlay2: invalid argument";
        let b = StatusBlock {
            engine: Some(EngineRecord {
                name: "docker".into(),
                state: EngineState::Failing,
                version: Some("20.10.24".into()),
                detail: Some(detail.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = evaluate(&expect(), &BTreeMap::new(), &b);
        assert_eq!(codes(&e), [FailureCode::EngineError]);
        assert!(e.problems[0].message.starts_with("docker is running but its API fails"), "{}", e.problems[0].message);
        assert!(e.problems[0].message.contains("HTTP 500 readlink"));
        assert!(!e.engine_up && !e.satisfied());
    }

    #[test]
    fn a_compose_stack_is_checked_by_its_labels_with_one_shots_exited_0() {
        use crate::scenario::{ComposeExpect, ServiceExpect};
        let mut e = expect();
        e.containers.clear();
        let svc = |name: &str, oneshot| ServiceExpect { name: name.into(), oneshot, healthy: None };
        e.compose = Some(ComposeExpect {
            project: "fixture".into(),
            services: vec![svc("redis", false), svc("web", false), svc("seed", true)],
        });
        let labelled = |name: &str, service: &str, project: &str, state: &str, health: Option<&str>| ContainerRecord {
            compose: Some(airboot_proto::ComposeLabels { project: project.into(), service: service.into() }),
            ..ctr(name, "fixture/busybox:1", state, health)
        };
        let mut b = good();
        b.containers = vec![
            labelled("fixture_redis_1", "redis", "fixture", "running", Some("healthy")),
            // compose v2's name: found by its labels all the same.
            labelled("fixture-web-1", "web", "fixture", "running", None),
            ContainerRecord { exit_code: Some(0), ..labelled("fixture_seed_1", "seed", "fixture", "exited", None) },
            // Another project's container is not this stack's.
            labelled("other_web_1", "web", "other", "exited", None),
        ];
        let ev = evaluate(&e, &BTreeMap::new(), &b);
        assert!(ev.satisfied(), "{:?}", ev.problems);
        let services: Vec<&str> = ev.services.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(services, ["redis", "web", "seed"]);
        assert_eq!(ev.running, ["fixture_redis_1", "fixture-web-1"]);
        let row = ev.containers.iter().find(|r| r.name == "fixture_seed_1").unwrap();
        assert_eq!((row.service.as_deref(), row.exit_code), (Some("seed"), Some(0)));
        assert!(!ev.containers.iter().find(|r| r.name == "other_web_1").unwrap().expected);

        // A one-shot that failed, one still running, a service never made,
        // an unhealthy one: each named with its service and project.
        b.containers[2].exit_code = Some(2);
        b.containers[0].health = Some("unhealthy".into());
        b.containers.remove(1);
        let ev = evaluate(&e, &BTreeMap::new(), &b);
        let got: Vec<(FailureCode, &str)> = ev.problems.iter().map(|p| (p.code, p.message.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    FailureCode::ContainerUnhealthy,
                    "compose service redis (project fixture): container fixture_redis_1 is unhealthy"
                ),
                (
                    FailureCode::ContainerMissing,
                    "compose service web (project fixture) has no container (none carries its compose labels)"
                ),
                (
                    FailureCode::ContainerNotRunning,
                    "compose service seed (project fixture): its one-shot container fixture_seed_1 exited 2 (it must exit 0)"
                ),
            ]
        );
        assert!(ev.services.is_empty());
        b.containers[1].state = "running".into();
        let ev = evaluate(&e, &BTreeMap::new(), &b);
        assert!(ev.problems.iter().any(|p| p.message.contains("is running, not exited 0 yet")), "{:?}", ev.problems);
    }
}

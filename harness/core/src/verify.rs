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
        let image = normalize_ref(&found.image).unwrap_or_else(|_| found.image.clone());
        crow.push(ContainerRow {
            name: c.name.clone(),
            image: Some(image.clone()),
            state: found.state.clone(),
            health: found.health.clone(),
            expected: true,
            exit_code: found.exit_code.filter(|_| found.state != "running"),
            log_tail: found.log_tail.clone(),
            health_output: found.health_output.clone(),
        });
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
    for x in &block.containers {
        let name = x.name.trim_start_matches('/');
        if !expect.containers.iter().any(|c| c.name == name) {
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

    Evaluation { engine_up, images_ok, running, ready, problems, images: rows, containers: crow }
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
            time_to_stack: None,
            timeout: Duration::from_secs(60),
            fail_on: vec![],
            default_fail_on: true,
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
}

//! `[expect]`: what must be true of the engine once the device is up.

use std::collections::BTreeSet;
use std::time::Duration;

use airboot_model::Engine;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::error::Ctx;
use super::{Dur, Pattern, ScenarioError};

/// Default timeout (KVM time) when the scenario gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct ImageExpect {
    /// Normalised `repository:tag` (docker.io/library/ prefixes dropped,
    /// `:latest` added), the form `docker images` shows.
    pub reference: String,
    /// Full `sha256:<64 hex>` or a hex prefix of at least 12 digits.
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerExpect {
    pub name: String,
    /// Normalised image reference the container must run, if given.
    pub image: Option<String>,
    /// `Some(true)`: must report healthy (and so must have a healthcheck).
    /// `None`: healthy if it has a healthcheck. `Some(false)`: health ignored.
    pub healthy: Option<bool>,
}

/// A compose stack: its containers are found by the labels compose puts
/// on them (`com.docker.compose.project`, `com.docker.compose.service`),
/// not by name (compose v1 and v2 name them differently).
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeExpect {
    pub project: String,
    pub services: Vec<ServiceExpect>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceExpect {
    pub name: String,
    /// A one-shot service: its containers must have exited 0 (not run).
    pub oneshot: bool,
    /// As for a container: `None` is healthy if it has a healthcheck.
    pub healthy: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtraImages {
    /// Any image the scenario does not list is a failure: the device must
    /// carry exactly the expected images.
    Fail,
    Allow,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub engine: Engine,
    pub images: Vec<ImageExpect>,
    pub extra_images: ExtraImages,
    pub containers: Vec<ContainerExpect>,
    pub compose: Option<ComposeExpect>,
    /// Budget from power-on to running stack, written for KVM.
    pub time_to_stack: Option<Duration>,
    /// Give up after this long, written for KVM.
    pub timeout: Duration,
    /// Extra console regexes that end the run at once as failed.
    pub fail_on: Vec<String>,
    /// Whether the built-in fail-fast patterns (kernel panic, emergency
    /// mode, UEFI shell, …) apply.
    pub default_fail_on: bool,
    /// The root filesystem must be mounted read-only and stay unwritten,
    /// and the store's writes must land in its overlay's upper directory
    /// (checked in the guest, then offline on the disk the boot left).
    pub read_only_root: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    engine: Option<Engine>,
    #[serde(default)]
    images: Vec<toml::Spanned<RawImageExpect>>,
    extra_images: Option<ExtraImages>,
    #[serde(default)]
    containers: Vec<toml::Spanned<RawContainerExpect>>,
    compose: Option<toml::Spanned<RawCompose>>,
    time_to_stack: Option<Dur>,
    timeout: Option<Dur>,
    #[serde(default)]
    fail_on: Vec<Pattern>,
    default_fail_on: Option<bool>,
    read_only_root: Option<bool>,
}

struct RawImageExpect {
    reference: String,
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageExpectTable {
    #[serde(rename = "ref")]
    reference: String,
    id: Option<String>,
}

impl<'de> Deserialize<'de> for RawImageExpect {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawImageExpect;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an image reference string or a table { ref = \"…\", id = \"sha256:…\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawImageExpect { reference: v.to_string(), id: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let t = ImageExpectTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawImageExpect { reference: t.reference, id: t.id })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainerExpect {
    name: String,
    image: Option<String>,
    healthy: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompose {
    project: String,
    services: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceTable {
    name: String,
    #[serde(default)]
    oneshot: bool,
    healthy: Option<bool>,
}

struct RawService(ServiceTable);

impl<'de> Deserialize<'de> for RawService {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawService;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service name or a table { name = \"…\", oneshot = true, healthy = true }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawService(ServiceTable { name: v.to_string(), oneshot: false, healthy: None }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(RawService(ServiceTable::deserialize(de::value::MapAccessDeserializer::new(map))?))
            }
        }
        d.deserialize_any(V)
    }
}

/// The engines' rule for a container name (and compose's for a service):
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, with Docker's leading `/` allowed. The
/// names also go into the status reporter's configuration, which a shell
/// reads: nothing else may be in them.
fn valid_container_name(n: &str) -> bool {
    let n = n.strip_prefix('/').unwrap_or(n);
    n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Compose's own rule for a project name (lowercase letters, digits,
/// `-` and `_`, starting with a letter or digit).
fn valid_project(p: &str) -> bool {
    p.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn validate_compose(rc: toml::Spanned<RawCompose>, engine: Engine, cx: &Ctx) -> Result<ComposeExpect, ScenarioError> {
    let span = rc.span();
    let rc = rc.into_inner();
    let err = |key: &str, m: String| cx.err(Some(span.clone()), Some(format!("expect.compose{key}")), m);
    if engine != Engine::Docker {
        return Err(err(
            "",
            format!(
                "compose stacks are checked on Docker only (by the labels docker-compose puts on containers); this scenario's engine is {}: list its containers under expect.containers instead",
                engine.as_str()
            ),
        ));
    }
    if !valid_project(&rc.project) {
        return Err(err(
            ".project",
            format!(
                "{:?} is not a compose project name (lowercase letters, digits, '-' and '_', as `docker-compose -p` takes it)",
                rc.project
            ),
        ));
    }
    if rc.services.is_empty() {
        return Err(err(".services", "list the stack's services (at least one)".into()));
    }
    let mut names = BTreeSet::new();
    let mut services = Vec::new();
    for RawService(t) in rc.services {
        if !valid_container_name(&t.name) {
            return Err(err(
                ".services",
                format!("{:?} is not a service name (letters, digits, '_', '.' and '-', as compose takes it)", t.name),
            ));
        }
        if !names.insert(t.name.clone()) {
            return Err(err(".services", format!("service {:?} is listed twice", t.name)));
        }
        if t.oneshot && t.healthy == Some(true) {
            return Err(err(
                ".services.healthy",
                format!("service {:?} is one-shot: it must exit 0, so it cannot also be healthy", t.name),
            ));
        }
        services.push(ServiceExpect { name: t.name, oneshot: t.oneshot, healthy: t.healthy });
    }
    Ok(ComposeExpect { project: rc.project, services })
}

pub(super) fn validate(re: RawExpect, cx: &Ctx) -> Result<Expect, ScenarioError> {
    let mut images = Vec::new();
    let mut seen = BTreeSet::new();
    for item in re.images {
        let span = item.span();
        let item = item.into_inner();
        let reference =
            normalize_ref(&item.reference).map_err(|m| cx.err(Some(span.clone()), Some("expect.images".into()), m))?;
        if !seen.insert(reference.clone()) {
            return Err(cx.err(Some(span), Some("expect.images".into()), format!("{reference} is listed twice")));
        }
        let id = match item.id {
            Some(id) => Some(normalize_id(&id).map_err(|m| cx.err(Some(span), Some("expect.images.id".into()), m))?),
            None => None,
        };
        images.push(ImageExpect { reference, id });
    }
    let mut containers = Vec::new();
    let mut names = BTreeSet::new();
    for item in re.containers {
        let span = item.span();
        let c = item.into_inner();
        if !valid_container_name(&c.name) {
            return Err(cx.err(
                Some(span),
                Some("expect.containers.name".into()),
                format!(
                    "{:?} is not a container name: letters, digits, '_', '.' and '-' (a leading '/' as Docker shows it is allowed)",
                    c.name
                ),
            ));
        }
        if !names.insert(c.name.clone()) {
            return Err(cx.err(
                Some(span),
                Some("expect.containers".into()),
                format!("container {:?} is listed twice", c.name),
            ));
        }
        let image = match c.image {
            Some(i) => {
                Some(normalize_ref(&i).map_err(|m| cx.err(Some(span), Some("expect.containers.image".into()), m))?)
            }
            None => None,
        };
        containers.push(ContainerExpect { name: c.name, image, healthy: c.healthy });
    }
    let time_to_stack = re.time_to_stack.map(|d| d.0);
    let timeout = re.timeout.map(|d| d.0).unwrap_or(match time_to_stack {
        Some(t) => DEFAULT_TIMEOUT.max(t * 2),
        None => DEFAULT_TIMEOUT,
    });
    if let Some(t) = time_to_stack
        && t > timeout
    {
        return Err(cx.err(
            None,
            Some("expect.timeout".into()),
            format!(
                "timeout ({}s) is shorter than time_to_stack ({}s): the budget could never be judged",
                timeout.as_secs_f64(),
                t.as_secs_f64()
            ),
        ));
    }
    let engine = re.engine.unwrap_or(Engine::Docker);
    let compose = re.compose.map(|c| validate_compose(c, engine, cx)).transpose()?;
    Ok(Expect {
        engine,
        images,
        extra_images: re.extra_images.unwrap_or(ExtraImages::Fail),
        containers,
        compose,
        time_to_stack,
        timeout,
        fail_on: re.fail_on.into_iter().map(|p| p.0).collect(),
        default_fail_on: re.default_fail_on.unwrap_or(true),
        read_only_root: re.read_only_root.unwrap_or(false),
    })
}

/// Normalise an image reference to the `repository:tag` form `docker images`
/// prints: `docker.io/library/redis` → `redis:latest`.
pub fn normalize_ref(r: &str) -> Result<String, String> {
    let bad = |why: &str| format!("invalid image reference {r:?}: {why}");
    if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it is empty or contains whitespace"));
    }
    if r.contains('@') {
        return Err(bad("digest references are not supported here; give `ref = \"name:tag\"` and `id = \"sha256:…\"`"));
    }
    if r != r.to_lowercase() && !r.rsplit('/').next().unwrap_or("").contains(':') {
        return Err(bad("repository names must be lowercase"));
    }
    let (name, tag) = match r.rfind(':') {
        Some(i) if !r[i + 1..].contains('/') => (&r[..i], &r[i + 1..]),
        _ => (r, "latest"),
    };
    if name.is_empty() || tag.is_empty() || name.ends_with('/') || name.starts_with('/') {
        return Err(bad("expected name[:tag]"));
    }
    if name != name.to_lowercase() {
        return Err(bad("repository names must be lowercase"));
    }
    let name = name.strip_prefix("docker.io/").or_else(|| name.strip_prefix("index.docker.io/")).unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    Ok(format!("{name}:{tag}"))
}

/// Normalise an image ID: `sha256:` + lowercase hex, at least 12 digits.
pub fn normalize_id(id: &str) -> Result<String, String> {
    let hex = id.strip_prefix("sha256:").unwrap_or(id).to_ascii_lowercase();
    if hex.len() < 12 || hex.len() > 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid image id {id:?}: give \"sha256:\" and 64 hex digits (or a prefix of at least 12)"
        ));
    }
    Ok(format!("sha256:{hex}"))
}

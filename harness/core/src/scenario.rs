//! The scenario model: what to boot, how, and what must be true.
//!
//! Scenarios are TOML files (reference: `scenarios/README.md`). Parsing is
//! strict: an unknown key, a value of the wrong type, a malformed duration
//! or regex, or two keys that contradict each other are errors that name the
//! file, line, column and dotted key, so a typo never silently changes what
//! a nightly gate checks.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use airboot_model::{Arch, BootMode, DiskFormat, Engine, TransportKind};

use crate::units::{parse_duration, parse_mib};

/// A scenario as validated from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// The file it came from (`<built-in>` for the embedded default).
    pub file: PathBuf,
    pub description: Option<String>,
    pub image: ImageSpec,
    pub machine: Machine,
    pub expect: Expect,
    pub milestones: Vec<MilestoneSpec>,
    pub outcome: Outcome,
    pub suite: Suite,
    /// `airboot cut`: where and how to cut the power.
    pub power_cut: Option<PowerCutSpec>,
}

/// Where a power cut falls, in the write stream of one recorded boot.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerCutSpec {
    /// `kill`, `lose-unflushed`, `torn`, `flush-ignored` (each cut point
    /// is judged under every mode listed).
    pub modes: Vec<airboot_model::CutMode>,
    /// Seed of every random choice (torn, flush-ignored); chosen and
    /// recorded when absent.
    pub seed: Option<u64>,
    /// The console line (or probe event) the cut is placed by.
    pub trigger: CutTrigger,
    /// A sweep: `points` cut points over the flushes between the trigger
    /// and the first line matching `until` (with `until`, even one point
    /// is a sweep: the middle flush that has something to lose).
    pub until: Option<String>,
    pub points: usize,
    /// A second cut, in the boot that powers each crash state on again
    /// (its fsck, engine restore, re-load), placed by this trigger in
    /// that boot's own write stream and cut with the same mode.
    pub recovery: Option<CutTrigger>,
}

/// A console line, and where after it to cut.
#[derive(Debug, Clone, PartialEq)]
pub struct CutTrigger {
    /// The regex over console lines (for `load`: the probe's event line).
    pub at: String,
    /// What `at` stands for, in messages: `console line "…"` or `probe
    /// event: layer 2 of fixture/redis:1 being loaded`.
    pub what: String,
    /// Which match counts (from 1).
    pub matching: usize,
    /// Where after that match: a delay, or a count of requests.
    pub after: CutAfter,
    /// Placed by the guest probe's load event (`load`), not a console regex.
    pub probe_event: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CutAfter {
    Time(Duration),
    Flushes(u64),
    Writes(u64),
    Bytes(u64),
}

/// Which test suite a scenario belongs to. `airboot run DIR` runs every
/// scenario whatever its suite; the test suite (`cargo test --test
/// scenarios`) runs `ci` ones, and `full` ones too with AIRBOOT_SUITE=full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Representative: run on every CI run.
    #[default]
    Ci,
    /// Slower or overlapping coverage: nightly, or `airboot run scenarios/`.
    Full,
}

impl Suite {
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::Ci => "ci",
            Suite::Full => "full",
        }
    }
}

impl Scenario {
    /// The name tests and filters use: `<arch>::<name>`.
    pub fn test_name(&self, fixture_arch: Option<Arch>) -> String {
        let arch = self.machine.arch.or(fixture_arch).map(|a| a.as_str()).unwrap_or("any");
        format!("{arch}::{}", self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    /// A fixture airboot builds itself (`airboot images list`).
    Fixture(String),
    /// A disk image the user's build produced; absolute after validation.
    Path(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when a probe boot shows it works, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

impl AccelChoice {
    pub fn parse(s: &str) -> Option<AccelChoice> {
        match s {
            "auto" => Some(AccelChoice::Auto),
            "kvm" => Some(AccelChoice::Kvm),
            "tcg" => Some(AccelChoice::Tcg),
            _ => None,
        }
    }
}

/// A transport as a scenario or `--transport` gives it: `Ok(None)` for
/// `auto`.
pub fn parse_transport(s: &str) -> Result<Option<TransportKind>, String> {
    if s == "auto" {
        return Ok(None);
    }
    TransportKind::parse(s)
        .map(Some)
        .ok_or_else(|| format!("unknown transport {s:?}: use \"auto\", {}", TransportKind::choices()))
}

/// A transport as written in a scenario (`auto` → `None`).
struct TransportField(Option<TransportKind>);
impl<'de> Deserialize<'de> for TransportField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_transport(&s).map(TransportField).map_err(de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    pub source: ImageSource,
    /// Disk format; detected from the file when absent.
    pub format: Option<DiskFormat>,
    /// `None`: the fixture's own mode, `direct` for a `path` image.
    pub boot: Option<BootMode>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub append: Option<String>,
    /// Kernel arguments added to the fixture's or `append`'s command line.
    pub append_extra: Option<String>,
    /// Whether the image carries airboot-probe (`None`: fixtures do, a
    /// `path` image is assumed not to).
    pub probe: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Checked against the image; taken from the fixture when absent.
    pub arch: Option<Arch>,
    pub memory_mib: u64,
    pub cpus: u32,
    pub accel: AccelChoice,
    /// How much slower TCG is than KVM for this image: budgets and timeouts
    /// (written for KVM) are multiplied by it under TCG.
    pub tcg_slowdown: f64,
    /// `None`: choose automatically.
    pub transport: Option<TransportKind>,
    /// QEMU `-cpu` model; `None`: a fast default for the arch and accelerator.
    pub cpu: Option<String>,
    /// UEFI firmware code (pflash unit 0) and the variables template copied
    /// per run (unit 1); `None`: found in the distribution's firmware
    /// descriptors.
    pub firmware: Option<PathBuf>,
    pub firmware_vars: Option<PathBuf>,
}

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
    /// Budget from power-on to running stack, written for KVM.
    pub time_to_stack: Option<Duration>,
    /// Give up after this long, written for KVM.
    pub timeout: Duration,
    /// Extra console regexes that end the run at once as failed.
    pub fail_on: Vec<String>,
    /// Whether the built-in fail-fast patterns (kernel panic, emergency
    /// mode, UEFI shell, …) apply.
    pub default_fail_on: bool,
}

/// What the run must end as. Positive scenarios leave it out (pass);
/// negative controls declare how they must fail.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub verdict: airboot_model::Verdict,
    /// Failure codes that must be among the run's failures.
    pub failures: Vec<airboot_model::FailureCode>,
    /// Text that must appear in some failure's message or evidence.
    pub contains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MilestoneSpec {
    pub name: String,
    /// Regex matched against each console line (ANSI codes stripped).
    pub console: String,
    /// A required milestone that never shows fails the run.
    pub required: bool,
    /// Must show within this long (written for KVM).
    pub within: Option<Duration>,
}

/// Where in a scenario file something is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {}{message}", file, pos(*.line, *.column), key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
pub struct ScenarioError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

fn pos(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// Default TCG slowdown when the scenario does not give one.
pub const DEFAULT_TCG_SLOWDOWN: f64 = 10.0;
/// Default timeout (KVM time) when the scenario gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- raw form

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<toml::Spanned<String>>,
    description: Option<String>,
    suite: Option<Suite>,
    image: toml::Spanned<RawImage>,
    #[serde(default)]
    machine: RawMachine,
    #[serde(default)]
    expect: RawExpect,
    #[serde(default)]
    milestone: Vec<toml::Spanned<RawMilestone>>,
    #[serde(default)]
    outcome: RawOutcome,
    power_cut: Option<toml::Spanned<RawPowerCut>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPowerCut {
    #[serde(default)]
    modes: Vec<String>,
    seed: Option<u64>,
    at: Option<Pattern>,
    load: Option<String>,
    layer: Option<usize>,
    #[serde(rename = "match")]
    matching: Option<usize>,
    after: Option<Dur>,
    flushes: Option<u64>,
    writes: Option<u64>,
    bytes: Option<String>,
    until: Option<Pattern>,
    points: Option<usize>,
    recovery: Option<RawTrigger>,
}

/// `[power_cut.recovery]`: the trigger keys of `[power_cut]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    at: Option<Pattern>,
    load: Option<String>,
    layer: Option<usize>,
    #[serde(rename = "match")]
    matching: Option<usize>,
    after: Option<Dur>,
    flushes: Option<u64>,
    writes: Option<u64>,
    bytes: Option<String>,
}

/// The regex over the probe's event line "layer `layer` of `image` is
/// being loaded" (`airboot_proto::load`; `state=loading` only). `image`
/// is matched against the event's tag (`image=`), its image ID (`id=`,
/// a `sha256:` prefix will do) and the archive file (`archive=`, by its
/// name without folders).
pub fn layer_loading_regex(image: &str, layer: usize) -> String {
    let file = image.rsplit('/').next().unwrap_or(image);
    let mut who = vec![format!("image={}", regex::escape(image)), format!("archive={}", regex::escape(file))];
    if image.starts_with("sha256:") {
        who.push(format!("id={}[0-9a-f]*", regex::escape(image)));
    }
    format!(
        r"{} v1 layer-load layer={layer}/\d+ state=loading .*\b(?:{})(?:\s|$)",
        airboot_proto::load::EVENT_MARKER,
        who.join("|")
    )
}

/// A trigger from its keys; `bad(key, message)` makes the error.
fn parse_trigger(t: RawTrigger, bad: &dyn Fn(&str, String) -> ScenarioError) -> Result<CutTrigger, ScenarioError> {
    let probe_event = t.load.is_some();
    let (at, what) = match (t.at, t.load) {
        (Some(_), Some(_)) => {
            return Err(bad("load", "give `at` (a console regex) or `load` (a probe event), not both".into()));
        }
        (None, None) => {
            return Err(bad(
                "at",
                "say where to cut: `at = \"<console regex>\"`, or `load = \"<image>\"` with `layer = N` (the probe's event: that layer of that image is being loaded)".into(),
            ));
        }
        (Some(at), None) => {
            if t.layer.is_some() {
                return Err(bad("layer", "`layer` goes with `load = \"<image>\"`, not with `at`".into()));
            }
            let what = format!("console line {:?}", at.0);
            (at.0, what)
        }
        (None, Some(image)) => {
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(bad(
                    "load",
                    format!("load = {image:?}: give an image reference such as \"fixture/redis:1\""),
                ));
            }
            let layer = t.layer.unwrap_or(1);
            if layer == 0 {
                return Err(bad("layer", "layers count from 1 (the image's first layer)".into()));
            }
            (layer_loading_regex(&image, layer), format!("probe event: layer {layer} of {image} being loaded"))
        }
    };
    let afters: Vec<CutAfter> = [
        t.after.map(|d| CutAfter::Time(d.0)),
        t.flushes.map(CutAfter::Flushes),
        t.writes.map(CutAfter::Writes),
        match &t.bytes {
            Some(b) => Some(CutAfter::Bytes(crate::units::parse_bytes(b).map_err(|e| bad("bytes", e))?)),
            None => None,
        },
    ]
    .into_iter()
    .flatten()
    .collect();
    if afters.len() > 1 {
        return Err(bad("after", "give at most one of after, flushes, writes, bytes".into()));
    }
    let matching = t.matching.unwrap_or(1);
    if matching == 0 {
        return Err(bad("match", "match counts from 1 (the first line matching the trigger)".into()));
    }
    let after = afters.first().copied().unwrap_or(CutAfter::Time(Duration::ZERO));
    Ok(CutTrigger { at, what, matching, after, probe_event })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutcome {
    verdict: Option<airboot_model::Verdict>,
    #[serde(default)]
    failures: Vec<airboot_model::FailureCode>,
    #[serde(default)]
    contains: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    fixture: Option<String>,
    path: Option<String>,
    format: Option<DiskFormat>,
    boot: Option<BootMode>,
    kernel: Option<String>,
    initrd: Option<String>,
    append: Option<String>,
    append_extra: Option<String>,
    probe: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    arch: Option<Arch>,
    memory: Option<Mem>,
    cpus: Option<toml::Spanned<u32>>,
    accel: Option<AccelChoice>,
    tcg_slowdown: Option<toml::Spanned<f64>>,
    transport: Option<TransportField>,
    cpu: Option<toml::Spanned<String>>,
    firmware: Option<String>,
    firmware_vars: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    engine: Option<Engine>,
    #[serde(default)]
    images: Vec<toml::Spanned<RawImageExpect>>,
    extra_images: Option<ExtraImages>,
    #[serde(default)]
    containers: Vec<toml::Spanned<RawContainerExpect>>,
    time_to_stack: Option<Dur>,
    timeout: Option<Dur>,
    #[serde(default)]
    fail_on: Vec<Pattern>,
    default_fail_on: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMilestone {
    name: String,
    console: Pattern,
    required: Option<bool>,
    within: Option<Dur>,
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

/// A duration string, validated while parsing so the error points at it.
struct Dur(Duration);
impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

struct Mem(u64);
impl<'de> Deserialize<'de> for Mem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_mib(&s).map(Mem).map_err(de::Error::custom)
    }
}

/// A regex, compiled while parsing so a bad one is reported at its place.
struct Pattern(String);
impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Err(de::Error::custom("empty pattern: it would match every line"));
        }
        regex::Regex::new(&s).map(|_| Pattern(s)).map_err(|e| de::Error::custom(format!("invalid regex: {e}")))
    }
}

// ---------------------------------------------------------------- parsing

/// Parse and validate a scenario. `file` is used in messages and to resolve
/// relative paths (against the file's directory); `check_paths` makes a
/// missing image/kernel/initrd file an error here, before anything boots.
pub fn parse(src: &str, file: &Path, check_paths: bool) -> Result<Scenario, ScenarioError> {
    let file_name = file.display().to_string();
    let err_at = |span: Option<Range<usize>>, key: Option<String>, message: String| {
        let (line, column, found_key) = match span {
            Some(span) => {
                let (l, c) = line_col(src, span.start);
                (Some(l), Some(c), key_path(src, span.start))
            }
            None => (None, None, None),
        };
        ScenarioError { file: file_name.clone(), line, column, key: key.or(found_key), message }
    };

    let raw: RawScenario = toml::from_str(src).map_err(|e| {
        let mut message = e.message().trim().to_string();
        if message.starts_with("unknown field") {
            message.push_str(" (scenarios/README.md lists every key)");
        }
        err_at(e.span(), None, message)
    })?;

    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let resolve = |p: &str| {
        let p = Path::new(p);
        if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
    };

    // name
    let name = match &raw.name {
        Some(n) => {
            let v = n.get_ref();
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(err_at(
                    Some(n.span()),
                    Some("name".into()),
                    format!("invalid name {v:?}: use letters, digits, '.', '_' and '-' (it names report folders)"),
                ));
            }
            v.clone()
        }
        None => file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into()),
    };

    // image
    let image_span = raw.image.span();
    let ri = raw.image.into_inner();
    let source = match (&ri.fixture, &ri.path) {
        (Some(f), None) => {
            for (k, v) in [("kernel", &ri.kernel), ("initrd", &ri.initrd), ("append", &ri.append)] {
                if v.is_some() {
                    return Err(err_at(
                        Some(image_span.clone()),
                        Some(format!("image.{k}")),
                        format!(
                            "a fixture brings its own kernel, initrd and command line: remove `{k}` or use `path` for your own image"
                        ),
                    ));
                }
            }
            ImageSource::Fixture(f.clone())
        }
        (None, Some(p)) => ImageSource::Path(resolve(p)),
        (Some(_), Some(_)) => {
            return Err(err_at(
                Some(image_span),
                Some("image".into()),
                "give either `fixture` or `path`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(err_at(
                Some(image_span),
                Some("image".into()),
                "say what to boot: `fixture = \"debian-preseeded-x86_64\"` or `path = \"out/device.qcow2\"`".into(),
            ));
        }
    };
    let boot = ri.boot;
    let kernel = ri.kernel.as_deref().map(resolve);
    let initrd = ri.initrd.as_deref().map(resolve);
    if let Some(b @ (BootMode::Uefi | BootMode::Board)) = boot {
        let why = if b == BootMode::Uefi {
            "with boot = \"uefi\" the firmware boots the disk's own loader (the kernel command line is the loader entry's)"
        } else {
            "with boot = \"board\" airboot supplies the generic kernel, its initramfs and the command line (add arguments with `append_extra`)"
        };
        for (key, given) in
            [("kernel", kernel.is_some()), ("initrd", initrd.is_some()), ("append", ri.append.is_some())]
        {
            if given {
                return Err(err_at(Some(image_span), Some(format!("image.{key}")), format!("{why}: remove `{key}`")));
            }
        }
    }
    if let ImageSource::Path(_) = source
        && matches!(boot, None | Some(BootMode::Direct))
        && kernel.is_none()
    {
        return Err(err_at(
            Some(image_span),
            Some("image.kernel".into()),
            "boot = \"direct\" (the default) needs `kernel` (and usually `initrd` and `append`) for a `path` image; a whole disk with an EFI system partition takes boot = \"uefi\"".into(),
        ));
    }
    if check_paths {
        let paths = [
            (
                "image.path",
                match &source {
                    ImageSource::Path(p) => Some(p),
                    _ => None,
                },
            ),
            ("image.kernel", kernel.as_ref()),
            ("image.initrd", initrd.as_ref()),
        ];
        for (key, p) in paths {
            if let Some(p) = p
                && !p.is_file()
            {
                return Err(err_at(
                    Some(image_span.clone()),
                    Some(key.into()),
                    format!(
                        "{} does not exist or is not a file (relative paths are taken from the scenario's folder)",
                        p.display()
                    ),
                ));
            }
        }
    }

    // machine
    let rm = raw.machine;
    let cpus = match rm.cpus {
        Some(c) if !(1..=64).contains(c.get_ref()) => {
            return Err(err_at(Some(c.span()), None, format!("cpus = {} is out of range 1..=64", c.get_ref())));
        }
        Some(c) => c.into_inner(),
        None => 2,
    };
    let tcg_slowdown = match rm.tcg_slowdown {
        Some(s) if !(1.0..=100.0).contains(s.get_ref()) => {
            return Err(err_at(
                Some(s.span()),
                None,
                format!("tcg_slowdown = {} is out of range: give a factor between 1 and 100", s.get_ref()),
            ));
        }
        Some(s) => s.into_inner(),
        None => DEFAULT_TCG_SLOWDOWN,
    };
    let cpu = match rm.cpu {
        Some(c) if c.get_ref().is_empty() || c.get_ref().chars().any(|ch| ch.is_whitespace()) => {
            return Err(err_at(
                Some(c.span()),
                None,
                format!(
                    "cpu = {:?} is not a QEMU CPU model (e.g. \"cortex-a72\" or \"max,pauth-impdef=on\")",
                    c.get_ref()
                ),
            ));
        }
        Some(c) => Some(c.into_inner()),
        None => None,
    };
    let firmware = rm.firmware.as_deref().map(resolve);
    let firmware_vars = rm.firmware_vars.as_deref().map(resolve);
    if check_paths {
        for (key, p) in [("machine.firmware", &firmware), ("machine.firmware_vars", &firmware_vars)] {
            if let Some(p) = p
                && !p.is_file()
            {
                return Err(err_at(None, Some(key.into()), format!("{} does not exist or is not a file", p.display())));
            }
        }
    }
    let machine = Machine {
        cpu,
        firmware,
        firmware_vars,
        arch: rm.arch,
        memory_mib: rm.memory.map(|m| m.0).unwrap_or(1024),
        cpus,
        accel: rm.accel.unwrap_or(AccelChoice::Auto),
        tcg_slowdown,
        transport: rm.transport.and_then(|t| t.0),
    };

    // expect
    let re = raw.expect;
    let mut images = Vec::new();
    let mut seen = BTreeSet::new();
    for item in re.images {
        let span = item.span();
        let item = item.into_inner();
        let reference =
            normalize_ref(&item.reference).map_err(|m| err_at(Some(span.clone()), Some("expect.images".into()), m))?;
        if !seen.insert(reference.clone()) {
            return Err(err_at(Some(span), Some("expect.images".into()), format!("{reference} is listed twice")));
        }
        let id = match item.id {
            Some(id) => Some(normalize_id(&id).map_err(|m| err_at(Some(span), Some("expect.images.id".into()), m))?),
            None => None,
        };
        images.push(ImageExpect { reference, id });
    }
    let mut containers = Vec::new();
    let mut names = BTreeSet::new();
    for item in re.containers {
        let span = item.span();
        let c = item.into_inner();
        if !names.insert(c.name.clone()) {
            return Err(err_at(
                Some(span),
                Some("expect.containers".into()),
                format!("container {:?} is listed twice", c.name),
            ));
        }
        let image = match c.image {
            Some(i) => {
                Some(normalize_ref(&i).map_err(|m| err_at(Some(span), Some("expect.containers.image".into()), m))?)
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
        return Err(ScenarioError {
            file: file_name.clone(),
            line: None,
            column: None,
            key: Some("expect.timeout".into()),
            message: format!(
                "timeout ({}s) is shorter than time_to_stack ({}s): the budget could never be judged",
                timeout.as_secs_f64(),
                t.as_secs_f64()
            ),
        });
    }
    let expect = Expect {
        engine: re.engine.unwrap_or(Engine::Docker),
        images,
        extra_images: re.extra_images.unwrap_or(ExtraImages::Fail),
        containers,
        time_to_stack,
        timeout,
        fail_on: re.fail_on.into_iter().map(|p| p.0).collect(),
        default_fail_on: re.default_fail_on.unwrap_or(true),
    };

    // milestones
    let mut milestones = Vec::new();
    let mut mnames = BTreeSet::new();
    for m in raw.milestone {
        let span = m.span();
        let m = m.into_inner();
        if m.name.is_empty() || !mnames.insert(m.name.clone()) {
            return Err(err_at(
                Some(span),
                Some("milestone.name".into()),
                format!("milestone name {:?} is empty or used twice", m.name),
            ));
        }
        milestones.push(MilestoneSpec {
            name: m.name,
            console: m.console.0,
            required: m.required.unwrap_or(true),
            within: m.within.map(|d| d.0),
        });
    }

    let power_cut = match raw.power_cut {
        None => None,
        Some(pc) => {
            let span = pc.span();
            let pc = pc.into_inner();
            let bad =
                |key: &str, message: String| err_at(Some(span.clone()), Some(format!("power_cut.{key}")), message);
            let mut modes = Vec::new();
            for m in &pc.modes {
                modes.push(airboot_model::CutMode::parse(m).ok_or_else(|| {
                    bad("modes", format!("unknown mode {m:?}: use kill, lose-unflushed, torn or flush-ignored"))
                })?);
            }
            if modes.is_empty() {
                modes.push(airboot_model::CutMode::LoseUnflushed);
            }
            let has_after = pc.after.is_some() || pc.flushes.is_some() || pc.writes.is_some() || pc.bytes.is_some();
            let trigger = parse_trigger(
                RawTrigger {
                    at: pc.at,
                    load: pc.load,
                    layer: pc.layer,
                    matching: pc.matching,
                    after: pc.after,
                    flushes: pc.flushes,
                    writes: pc.writes,
                    bytes: pc.bytes,
                },
                &bad,
            )?;
            let recovery = match pc.recovery {
                None => None,
                Some(r) => Some(parse_trigger(r, &|key: &str, message: String| {
                    err_at(Some(span.clone()), Some(format!("power_cut.recovery.{key}")), message)
                })?),
            };
            let points = pc.points.unwrap_or(1);
            if points == 0 || points > 64 {
                return Err(bad("points", format!("points = {points}: give 1 to 64 cut points")));
            }
            if points > 1 && pc.until.is_none() {
                return Err(bad(
                    "until",
                    "a sweep (points > 1) needs `until`, the console line that ends its window".into(),
                ));
            }
            if pc.until.is_some() && has_after {
                return Err(bad(
                    "until",
                    "a sweep (`until`) places its own cut points: drop after/flushes/writes/bytes".into(),
                ));
            }
            Some(PowerCutSpec { modes, seed: pc.seed, trigger, until: pc.until.map(|u| u.0), points, recovery })
        }
    };

    Ok(Scenario {
        name,
        file: file.to_path_buf(),
        description: raw.description,
        image: ImageSpec {
            source,
            format: ri.format,
            boot,
            kernel,
            initrd,
            append: ri.append,
            append_extra: ri.append_extra,
            probe: ri.probe,
        },
        machine,
        expect,
        milestones,
        outcome: Outcome {
            verdict: raw.outcome.verdict.unwrap_or(if raw.outcome.failures.is_empty() {
                airboot_model::Verdict::Pass
            } else {
                airboot_model::Verdict::Fail
            }),
            failures: raw.outcome.failures,
            contains: raw.outcome.contains,
        },
        suite: raw.suite.unwrap_or_default(),
        power_cut,
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

// ------------------------------------------------------ error locations

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key a byte offset of a TOML document belongs to, e.g.
/// `expect.containers.healthy` for a value inside an inline table of an
/// array. Best effort: used only to make error messages precise.
pub fn key_path(src: &str, offset: usize) -> Option<String> {
    let b = src.as_bytes();
    let at = offset.min(b.len());
    let mut header: Vec<String> = Vec::new();
    // Open brackets, each with the key whose value it starts.
    let mut stack: Vec<(Option<Vec<String>>, u8)> = Vec::new();
    let mut expecting_key = true;
    let mut current: Option<Vec<String>> = None;
    let mut i = 0;
    while i < b.len() && i <= at {
        let start = i;
        let c = b[i];
        match c {
            b'\n' => {
                if stack.is_empty() {
                    expecting_key = true;
                    current = None;
                }
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'[' if expecting_key && stack.is_empty() => {
                let line_end = src[i..].find('\n').map(|n| i + n).unwrap_or(b.len());
                let text = src[i..line_end].split('#').next().unwrap_or("");
                let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
                header = split_dotted(inner);
                if line_end > at {
                    return Some(header.join("."));
                }
                i = line_end;
            }
            b'[' | b'{' => {
                stack.push((current.take(), c));
                expecting_key = c == b'{';
                i += 1;
            }
            b']' | b'}' => {
                if let Some((k, _)) = stack.pop() {
                    current = k;
                }
                expecting_key = false;
                i += 1;
            }
            b',' => {
                if let Some((_, b'{')) = stack.last() {
                    expecting_key = true;
                    current = None;
                }
                i += 1;
            }
            b'=' => {
                expecting_key = false;
                i += 1;
            }
            b'"' | b'\'' => {
                i = skip_string(b, i);
                if expecting_key {
                    current = Some(split_dotted(&src[start..i]));
                }
            }
            _ => {
                while i < b.len() && !b" \t\r\n=,]}[{#".contains(&b[i]) {
                    i += 1;
                }
                if i == start {
                    i += 1;
                }
                if expecting_key {
                    current = Some(split_dotted(&src[start..i]));
                }
            }
        }
    }
    let mut path = header;
    for (k, _) in &stack {
        if let Some(k) = k {
            path.extend(k.iter().cloned());
        }
    }
    if let Some(k) = current {
        path.extend(k);
    }
    (!path.is_empty()).then(|| path.join("."))
}

fn split_dotted(s: &str) -> Vec<String> {
    s.split('.').map(|p| p.trim().trim_matches('"').trim_matches('\'').to_string()).filter(|p| !p.is_empty()).collect()
}

fn skip_string(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let triple = b.len() >= start + 3 && b[start + 1] == q && b[start + 2] == q;
    let mut i = start + if triple { 3 } else { 1 };
    while i < b.len() {
        if q == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if !triple {
                return i + 1;
            }
            if b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q {
                return i + 3;
            }
        }
        if !triple && b[i] == b'\n' {
            return i;
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "preseeded-x86_64"
description = "the preseeded fixture"

[image]
fixture = "debian-preseeded-x86_64"

[machine]
arch = "x86_64"
memory = "1G"
accel = "auto"

[expect]
engine = "docker"
images = ["fixture/redis:1", { ref = "docker.io/library/busybox", id = "sha256:0123456789ab" }]
containers = [
  { name = "redis", image = "fixture/redis:1", healthy = true },
  { name = "web" },
]
time_to_stack = "20s"
fail_on = ["Out of memory"]

[[milestone]]
name = "loaded"
console = "airboot-load: done"
within = "15s"
"#;

    fn p(src: &str) -> Result<Scenario, ScenarioError> {
        parse(src, Path::new("scenarios/t.toml"), false)
    }

    #[test]
    fn power_cut_sections() {
        use airboot_model::CutMode;
        let base = "[image]\nfixture = \"debian-load-at-boot-x86_64\"\n";
        assert_eq!(p(base).unwrap().power_cut, None);
        let s = p(&format!(
            "{base}[power_cut]\nat = \"airboot-load: start\"\nuntil = \"airboot-load: done\"\npoints = 8\nmodes = [\"lose-unflushed\", \"kill\"]\nseed = 7\n"
        ))
        .unwrap();
        let pc = s.power_cut.unwrap();
        assert_eq!(pc.modes, vec![CutMode::LoseUnflushed, CutMode::Kill]);
        assert_eq!((pc.points, pc.seed, pc.trigger.matching), (8, Some(7), 1));
        assert_eq!(pc.trigger.at, "airboot-load: start");
        assert_eq!(pc.recovery, None);
        assert_eq!(pc.until.as_deref(), Some("airboot-load: done"));
        let one =
            p(&format!("{base}[power_cut]\nat = \"loading\"\nmatch = 2\nbytes = \"4M\"\n")).unwrap().power_cut.unwrap();
        assert_eq!((one.trigger.after, one.modes), (CutAfter::Bytes(4 << 20), vec![CutMode::LoseUnflushed]));
        assert_eq!(one.trigger.matching, 2);
        let err = |body: &str| p(&format!("{base}[power_cut]\n{body}")).unwrap_err().to_string();
        assert!(err("at = \"x\"\nmodes = [\"zap\"]").contains("unknown mode \"zap\""));
        assert!(err("at = \"x\"\nafter = \"2s\"\nflushes = 3").contains("at most one"));
        assert!(err("at = \"x\"\npoints = 4").contains("needs `until`"));
        assert!(err("at = \"x\"\nmatch = 0").contains("counts from 1"));
        assert!(err("at = \"(\"").contains("power_cut") || err("at = \"(\"").contains("regex"));
        assert!(err("until = \"x\"").contains("at"));
        assert!(err("at = \"x\"\nload = \"a:1\"").contains("not both"));
        assert!(err("at = \"x\"\nlayer = 2").contains("goes with `load"));
        assert!(err("load = \"a:1\"\nlayer = 0").contains("count from 1"));
        assert!(err("load = \"\"").contains("image reference"));
        assert!(err("at = \"x\"\n[power_cut.recovery]\nflushes = 2").contains("power_cut.recovery.at"));
        assert!(err("at = \"x\"\n[power_cut.recovery]\nat = \"y\"\npoints = 2").contains("points"));
    }

    #[test]
    fn power_cuts_by_probe_event_and_in_recovery() {
        let base = "[image]\nfixture = \"debian-load-at-boot-x86_64\"\n";
        let pc = p(&format!(
            "{base}[power_cut]\nload = \"fixture/redis:1\"\nlayer = 2\nflushes = 1\n[power_cut.recovery]\nat = \"Started docker\"\nmatch = 2\nafter = \"3s\"\n"
        ))
        .unwrap()
        .power_cut
        .unwrap();
        assert_eq!(pc.trigger.what, "probe event: layer 2 of fixture/redis:1 being loaded");
        assert_eq!(pc.trigger.after, CutAfter::Flushes(1));
        assert!(pc.trigger.probe_event && !pc.recovery.as_ref().unwrap().probe_event);
        let re = regex::Regex::new(&pc.trigger.at).unwrap();
        let line = |image: &str, layer: usize, loading: bool| {
            airboot_proto::load::LoadEvent::Layer {
                who: airboot_proto::load::Who { image: image.into(), ..Default::default() },
                layer,
                layers: 4,
                loading,
                diff_id: "sha256:ab".into(),
            }
            .line()
        };
        assert!(re.is_match(&format!("[ 80.1] {}", line("fixture/redis:1", 2, true))));
        assert!(!re.is_match(&line("fixture/redis:1", 2, false)), "a layer seen only once loaded does not fire");
        assert!(!re.is_match(&line("fixture/redis:1", 1, true)));
        assert!(!re.is_match(&line("fixture/redis:1", 12, true)));
        assert!(!re.is_match(&line("fixture/redisX1", 2, true)), "the dot is literal");
        assert!(!re.is_match(&line("fixture/redis:10", 2, true)));
        // By the archive's file name (a path is reduced to it), or by image ID (a prefix will do).
        let by = |load: &str, who: airboot_proto::load::Who| {
            let spec = p(&format!("{base}[power_cut]\nload = \"{load}\"\nlayer = 2\n")).unwrap().power_cut.unwrap();
            let ev = airboot_proto::load::LoadEvent::Layer {
                who,
                layer: 2,
                layers: 3,
                loading: true,
                diff_id: "sha256:ab".into(),
            };
            regex::Regex::new(&spec.trigger.at).unwrap().is_match(&ev.line())
        };
        let id = format!("sha256:{}", "e9".repeat(32));
        let who = airboot_proto::load::Who {
            image: id.clone(),
            id: Some(id.clone()),
            archive: Some("fixture-redis-1.tar".into()),
        };
        assert!(by("fixture-redis-1.tar", who.clone()));
        assert!(by("/usr/share/airboot/images/fixture-redis-1.tar", who.clone()));
        assert!(by("sha256:e9e9e9e9e9e9", who.clone()));
        assert!(by(&id, who.clone()));
        assert!(!by("sha256:e9e9e9e9e9e8", who.clone()));
        assert!(!by("fixture-redis-1.ta", who.clone()));
        assert!(!by("redis-1.tar", who));
        let r = pc.recovery.unwrap();
        assert_eq!((r.at.as_str(), r.matching, r.after), ("Started docker", 2, CutAfter::Time(Duration::from_secs(3))));
        // `layer` defaults to the first.
        let first = p(&format!("{base}[power_cut]\nload = \"a:1\"\n")).unwrap().power_cut.unwrap();
        assert!(first.trigger.what.contains("layer 1 of a:1"));
    }

    #[test]
    fn parses_a_full_scenario() {
        let s = p(GOOD).unwrap();
        assert_eq!(s.name, "preseeded-x86_64");
        assert_eq!(s.image.source, ImageSource::Fixture("debian-preseeded-x86_64".into()));
        assert_eq!(s.machine.arch, Some(Arch::X86_64));
        assert_eq!(s.machine.memory_mib, 1024);
        // Two vCPUs unless told: 1.66x faster to a running stack than one
        // under TCG on a 2-core host (scripts/bench-cpus.sh).
        assert_eq!(s.machine.cpus, 2);
        assert_eq!(s.expect.images[0].reference, "fixture/redis:1");
        assert_eq!(s.expect.images[1].reference, "busybox:latest");
        assert_eq!(s.expect.images[1].id.as_deref(), Some("sha256:0123456789ab"));
        assert_eq!(s.expect.containers[0].healthy, Some(true));
        assert_eq!(s.expect.containers[1].image, None);
        assert_eq!(s.expect.time_to_stack, Some(Duration::from_secs(20)));
        // timeout defaults to max(60s, 2 × budget)
        assert_eq!(s.expect.timeout, Duration::from_secs(60));
        assert_eq!(s.milestones[0].within, Some(Duration::from_secs(15)));
        assert!(s.milestones[0].required);
    }

    #[test]
    fn transport_probe_and_extra_kernel_arguments() {
        let s = p("[image]\nfixture = \"f\"\nappend_extra = \"systemd.mask=docker.service\"\n[machine]\ntransport = \"virtio-serial\"\n").unwrap();
        assert_eq!(s.machine.transport, Some(TransportKind::VirtioSerial));
        assert_eq!(s.image.append_extra.as_deref(), Some("systemd.mask=docker.service"));
        assert_eq!(p("[image]\nfixture = \"f\"\n[machine]\ntransport = \"auto\"\n").unwrap().machine.transport, None);
        let e = p("[image]\nfixture = \"f\"\n[machine]\ntransport = \"tcp\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("machine.transport"));
        assert!(e.message.contains("virtio-serial"), "{e}");
        let s = p("[image]\npath = \"d.raw\"\nkernel = \"k\"\nprobe = true\n[machine]\narch = \"x86_64\"\n").unwrap();
        assert_eq!(s.image.probe, Some(true));
    }

    #[test]
    fn declared_outcomes() {
        let s =
            p("[image]\nfixture = \"f\"\n[outcome]\nfailures = [\"image-missing\"]\ncontains = [\"nginx\"]\n").unwrap();
        assert_eq!(s.outcome.verdict, airboot_model::Verdict::Fail, "failures imply a failing verdict");
        assert_eq!(s.outcome.failures, [airboot_model::FailureCode::ImageMissing]);
        assert_eq!(p("[image]\nfixture = \"f\"\n").unwrap().outcome, Outcome::default());
        let e = p("[image]\nfixture = \"f\"\n[outcome]\nverdict = \"flaky\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("outcome.verdict"));
        // A misspelt code could never match: it is refused, with the nearest.
        let e = p("[image]\nfixture = \"f\"\n[outcome]\nfailures = [\"image-mising\"]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("outcome.failures")));
        assert!(e.message.contains("did you mean \"image-missing\"?"), "{e}");
        assert_eq!(s.test_name(Some(Arch::Aarch64)), "aarch64::t");
    }

    #[test]
    fn name_defaults_to_file_stem() {
        let s = p("[image]\nfixture = \"f\"\n").unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.machine.tcg_slowdown, DEFAULT_TCG_SLOWDOWN);
    }

    #[test]
    fn misspelt_key_names_line_column_and_key() {
        let src = "name = \"x\"\n[image]\nfixture = \"f\"\n[expect]\nimagez = []\n";
        let e = p(src).unwrap_err();
        assert_eq!(e.line, Some(5));
        assert_eq!(e.column, Some(1));
        assert_eq!(e.key.as_deref(), Some("expect.imagez"));
        let text = e.to_string();
        assert!(text.starts_with("scenarios/t.toml:5:1: key `expect.imagez`: unknown field `imagez`"), "{text}");
    }

    #[test]
    fn misspelt_key_inside_inline_table() {
        let src = "[image]\nfixture = \"f\"\n[expect]\ncontainers = [\n  { name = \"r\", helthy = true },\n]\n";
        let e = p(src).unwrap_err();
        assert_eq!((e.line, e.column), (Some(5), Some(17)));
        assert_eq!(e.key.as_deref(), Some("expect.containers.helthy"));
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let e = p("[image]\nfixture = \"f\"\n[expect]\ntime_to_stack = \"20 seconds\"\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.key.as_deref(), Some("expect.time_to_stack"));
        assert!(e.message.contains("invalid duration"), "{e}");

        let e = p("[image]\nfixture = \"f\"\n[machine]\nmemory = \"lots\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("machine.memory"));

        let e = p("[image]\nfixture = \"f\"\n[machine]\narch = \"riscv64\"\n").unwrap_err();
        assert!(e.message.contains("unknown architecture"), "{e}");

        let e = p("[image]\nfixture = \"f\"\n[expect]\nfail_on = [\"ok\", \"(unclosed\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("expect.fail_on"));
        assert!(e.message.contains("invalid regex"), "{e}");

        let e = p("[image]\nfixture = \"f\"\n[machine]\naccel = \"hvf\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("machine.accel"));

        let e = p("[image]\nfixture = \"f\"\n[machine]\ncpus = 0\n").unwrap_err();
        assert_eq!(e.line, Some(4));
    }

    #[test]
    fn contradictions_are_errors() {
        let e = p("[image]\nfixture = \"f\"\npath = \"x.qcow2\"\n").unwrap_err();
        assert!(e.message.contains("not both"), "{e}");
        let e = p("[image]\nformat = \"raw\"\n").unwrap_err();
        assert!(e.message.contains("say what to boot"), "{e}");
        let e = p("[image]\npath = \"x.qcow2\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("image.kernel"));
        // The architecture of a path image is detected at run time.
        assert_eq!(p("[image]\npath = \"x.qcow2\"\nkernel = \"k\"\n").unwrap().machine.arch, None);
        let s = p("[image]\npath = \"disk.img\"\nboot = \"uefi\"\n").unwrap();
        assert_eq!(s.image.boot, Some(BootMode::Uefi));
        let e = p("[image]\npath = \"disk.img\"\nboot = \"board\"\nkernel = \"k\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("image.kernel"));
        assert!(e.message.contains("generic kernel"), "{e}");
        assert_eq!(p("[image]\npath = \"pi.img\"\nboot = \"board\"\n").unwrap().image.boot, Some(BootMode::Board));
        let e = p("[image]\npath = \"disk.img\"\nboot = \"uefi\"\nappend = \"quiet\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("image.append"));
        assert!(e.message.contains("loader entry"), "{e}");
        let e = p("[image]\nfixture = \"f\"\n[machine]\ncpu = \"max pauth\"\n").unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("not a QEMU CPU model"), "{e}");
        let s = p("[image]\nfixture = \"f\"\n[machine]\ncpu = \"cortex-a72\"\n").unwrap();
        assert_eq!(s.machine.cpu.as_deref(), Some("cortex-a72"));
        let e = p("[image]\nfixture = \"f\"\nkernel = \"k\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("image.kernel"));
        let e = p("[image]\nfixture = \"f\"\n[expect]\nimages = [\"a:1\", \"docker.io/library/a:1\"]\n").unwrap_err();
        assert!(e.message.contains("listed twice"), "{e}");
        let e = p("[image]\nfixture = \"f\"\n[expect]\ntime_to_stack = \"90s\"\ntimeout = \"60s\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("expect.timeout"));
        let e =
            p("[image]\nfixture = \"f\"\n[expect]\nimages = [{ ref = \"a:1\", id = \"sha256:xyz\" }]\n").unwrap_err();
        assert!(e.message.contains("invalid image id"), "{e}");
        let e = p("name = \"a b\"\n[image]\nfixture = \"f\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("name"));
    }

    #[test]
    fn paths_resolve_against_the_scenario_folder_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("airboot-scn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("disk.raw"), b"x").unwrap();
        std::fs::write(dir.join("vmlinuz"), b"x").unwrap();
        let f = dir.join("s.toml");
        let ok = parse("[image]\npath = \"disk.raw\"\nkernel = \"vmlinuz\"\n[machine]\narch = \"x86_64\"\n", &f, true)
            .unwrap();
        assert_eq!(ok.image.source, ImageSource::Path(dir.join("disk.raw")));
        let e = parse(
            "[image]\npath = \"disk.raw\"\nkernel = \"vmlinuz\"\ninitrd = \"nope.img\"\n[machine]\narch = \"x86_64\"\n",
            &f,
            true,
        )
        .unwrap_err();
        assert_eq!(e.key.as_deref(), Some("image.initrd"));
        assert!(e.message.contains("nope.img"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn references_normalise_like_docker_images() {
        assert_eq!(normalize_ref("redis").unwrap(), "redis:latest");
        assert_eq!(normalize_ref("docker.io/library/redis:7").unwrap(), "redis:7");
        assert_eq!(normalize_ref("docker.io/foo/bar").unwrap(), "foo/bar:latest");
        assert_eq!(normalize_ref("registry:5000/x").unwrap(), "registry:5000/x:latest");
        assert_eq!(normalize_ref("registry:5000/x:2").unwrap(), "registry:5000/x:2");
        assert!(normalize_ref("Redis").is_err());
        assert!(normalize_ref("redis@sha256:00").is_err());
        assert!(normalize_ref("a b").is_err());
        assert!(normalize_ref(":1").is_err());
        assert!(normalize_ref("").is_err());
    }

    #[test]
    fn key_paths() {
        let src = "a = 1\n[t]\nx = [\n 1,\n { y = 2, z = 3 },\n]\n[[m]]\nn = \"v\"\n";
        assert_eq!(key_path(src, 0).as_deref(), Some("a"));
        let z = src.find("z =").unwrap();
        assert_eq!(key_path(src, z).as_deref(), Some("t.x.z"));
        let three = src.find("3 }").unwrap();
        assert_eq!(key_path(src, three).as_deref(), Some("t.x.z"));
        let one = src.find(" 1,").unwrap() + 1;
        assert_eq!(key_path(src, one).as_deref(), Some("t.x"));
        let v = src.find("\"v\"").unwrap();
        assert_eq!(key_path(src, v).as_deref(), Some("m.n"));
        assert_eq!(line_col(src, v), (8, 5));
    }
}

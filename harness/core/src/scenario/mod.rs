//! The scenario model: what to boot, how, and what must be true.
//!
//! Scenarios are TOML files (reference: `scenarios/README.md`). Parsing is
//! strict: an unknown key, a value of the wrong type, a malformed duration
//! or regex, or two keys that contradict each other are errors that name the
//! file, line, column and dotted key, so a typo never silently changes what
//! a nightly gate checks.

//!
//! One file per section, each a raw serde struct and its validation:
//! `image`, `machine`, `expect`, `milestone`, `outcome`, `power_cut`;
//! `error` locates mistakes. Parsing is pure: whether a named file exists
//! is asked of the caller (`files`), so nothing here touches the disk.

mod error;
mod expect;
mod image;
mod machine;
mod milestone;
mod outcome;
mod power_cut;
mod step;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use airboot_model::Arch;
use serde::Deserialize;
use serde::de::{self, Deserializer};

pub use error::{ScenarioError, key_path, line_col};
pub use expect::{
    ComposeExpect, ContainerExpect, DEFAULT_TIMEOUT, Expect, ExtraImages, ImageExpect, ServiceExpect, normalize_id,
    normalize_ref,
};
pub use image::{ImageSource, ImageSpec, LoginSpec, Password};
pub use machine::{AccelChoice, DEFAULT_TCG_SLOWDOWN, Machine, parse_rtc, parse_transport};
pub use milestone::MilestoneSpec;
pub use outcome::Outcome;
pub use power_cut::{CutAfter, CutTrigger, Explore, PowerCutSpec, layer_loading_regex};
pub use step::{DEFAULT_STEP_TIMEOUT, StepAction, StepSpec};

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
    /// What happens after the first verdict (`[[step]]`), in order.
    pub steps: Vec<StepSpec>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<toml::Spanned<String>>,
    description: Option<String>,
    suite: Option<Suite>,
    image: toml::Spanned<image::RawImage>,
    #[serde(default)]
    machine: machine::RawMachine,
    #[serde(default)]
    expect: expect::RawExpect,
    #[serde(default)]
    milestone: Vec<toml::Spanned<milestone::RawMilestone>>,
    #[serde(default)]
    outcome: outcome::RawOutcome,
    power_cut: Option<toml::Spanned<power_cut::RawPowerCut>>,
    #[serde(default)]
    step: Vec<toml::Spanned<step::RawStep>>,
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

/// Parse and validate a scenario. `file` is used in messages and to resolve
/// relative paths (against the file's directory); `files` tells whether a
/// file the scenario names (image, kernel, initrd, firmware) exists, so a
/// missing one is an error here, before anything boots. Pass
/// [`any_file`] to skip that check.
pub fn parse(src: &str, file: &Path, files: &dyn Fn(&Path) -> bool) -> Result<Scenario, ScenarioError> {
    let cx = error::Ctx { src, file, file_name: file.display().to_string(), files };
    let raw: RawScenario = toml::from_str(src).map_err(|e| {
        let mut message = e.message().trim().to_string();
        if message.starts_with("unknown field") {
            message.push_str(" (scenarios/README.md lists every key)");
        }
        cx.err(e.span(), None, message)
    })?;

    // name
    let name = match &raw.name {
        Some(n) => {
            let v = n.get_ref();
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(cx.err(
                    Some(n.span()),
                    Some("name".into()),
                    format!("invalid name {v:?}: use letters, digits, '.', '_' and '-' (it names report folders)"),
                ));
            }
            v.clone()
        }
        None => file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "scenario".into()),
    };

    let image_span = raw.image.span();
    let image = image::validate(raw.image.into_inner(), image_span, &cx)?;
    let machine = machine::validate(raw.machine, &cx)?;
    let expect = expect::validate(raw.expect, &cx)?;
    let milestones = milestone::validate(raw.milestone, &cx)?;
    let power_cut_span = raw.power_cut.as_ref().map(|p| p.span());
    let power_cut = power_cut::validate(raw.power_cut, &cx)?;
    let steps = step::validate(raw.step, &cx)?;
    if power_cut.is_some() && !steps.is_empty() {
        return Err(cx.err(
            power_cut_span,
            Some("power_cut".into()),
            "`[power_cut]` (airboot cut's campaign) and `[[step]]` cannot be in one scenario yet: put the steps in a scenario of their own".into(),
        ));
    }
    Ok(Scenario {
        name,
        file: file.to_path_buf(),
        description: raw.description,
        image,
        machine,
        expect,
        milestones,
        outcome: raw.outcome.into(),
        suite: raw.suite.unwrap_or_default(),
        power_cut,
        steps,
    })
}

/// For [`parse`]: every file counts as present (no check).
pub fn any_file(_: &Path) -> bool {
    true
}

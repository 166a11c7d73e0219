//! `[[step]]`: what happens after the first verdict, in order: a command
//! run in the guest, a reboot, a power cut. A reboot or a power cut boots
//! the same disk again (what the guest wrote is kept), and that boot is
//! judged against the same `[expect]`.

use std::time::Duration;

use serde::Deserialize;

use super::error::Ctx;
use super::{Dur, ScenarioError};

/// How long a `run` step may take, and a reboot to shut the guest down,
/// unless the step says (written for KVM, scaled like every budget).
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// How reports name it: the scenario's `name`, else `step-<n>`.
    pub name: String,
    pub action: StepAction,
    /// Wait this long (guest running) before the action.
    pub wait: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepAction {
    /// `sh -c command` in the guest through the probe; the step fails
    /// unless it exits `exit` within `timeout`.
    Run { command: String, timeout: Duration, exit: i32 },
    /// The guest's own reboot (its init system shuts down), then the same
    /// disk is booted again and judged. `timeout`: how long the shutdown
    /// may take before the power is cut instead. Unless `allow_reload`,
    /// the boot after it must load no image (a first-boot loader that
    /// runs on every boot is the `load-every-boot` diagnosis).
    Reboot { timeout: Duration, allow_reload: bool },
    /// The power goes at once: what the guest had not written is lost;
    /// then the same disk is booted again and judged.
    PowerCut,
}

impl StepAction {
    /// Whether the disk is booted again after it.
    pub fn boots_again(&self) -> bool {
        !matches!(self, StepAction::Run { .. })
    }

    /// Short words for it, for progress and reports.
    pub fn describe(&self) -> String {
        match self {
            StepAction::Run { command, .. } => format!("run `{command}`"),
            StepAction::Reboot { .. } => "reboot".into(),
            StepAction::PowerCut => "power cut".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    name: Option<String>,
    run: Option<String>,
    reboot: Option<bool>,
    power_cut: Option<bool>,
    timeout: Option<Dur>,
    exit: Option<i32>,
    wait: Option<Dur>,
    allow_reload: Option<bool>,
}

pub(super) fn validate(raw: Vec<toml::Spanned<RawStep>>, cx: &Ctx) -> Result<Vec<StepSpec>, ScenarioError> {
    let mut steps: Vec<StepSpec> = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let span = s.span();
        let s = s.into_inner();
        let err = |key: &str, msg: String| cx.err(Some(span.clone()), Some(format!("step.{key}")), msg);
        let n = i + 1;
        let chosen: Vec<&str> =
            [s.run.as_ref().map(|_| "run"), s.reboot.map(|_| "reboot"), s.power_cut.map(|_| "power_cut")]
                .into_iter()
                .flatten()
                .collect();
        if chosen.len() != 1 {
            return Err(err(
                "run",
                format!(
                    "step {n} must say exactly one of `run = \"command\"`, `reboot = true`, `power_cut = true` (it says {})",
                    if chosen.is_empty() { "none".to_string() } else { chosen.join(" and ") }
                ),
            ));
        }
        for (key, v) in [("reboot", s.reboot), ("power_cut", s.power_cut)] {
            if v == Some(false) {
                return Err(err(key, format!("step {n}: `{key} = false` does nothing: remove the step")));
            }
        }
        let timeout = s.timeout.map(|d| d.0);
        if s.allow_reload.is_some() && s.reboot.is_none() {
            return Err(err("allow_reload", format!("step {n}: `allow_reload` belongs to a `reboot` step")));
        }
        let action = if let Some(command) = s.run {
            if command.trim().is_empty() {
                return Err(err("run", format!("step {n}: `run` is empty: give the command to run in the guest")));
            }
            StepAction::Run { command, timeout: timeout.unwrap_or(DEFAULT_STEP_TIMEOUT), exit: s.exit.unwrap_or(0) }
        } else {
            if s.exit.is_some() {
                return Err(err("exit", format!("step {n}: `exit` is the status a `run` step must end with")));
            }
            if s.reboot.is_some() {
                StepAction::Reboot {
                    timeout: timeout.unwrap_or(DEFAULT_STEP_TIMEOUT),
                    allow_reload: s.allow_reload.unwrap_or(false),
                }
            } else {
                if timeout.is_some() {
                    return Err(err("timeout", format!("step {n}: a power cut is immediate: it takes no `timeout`")));
                }
                StepAction::PowerCut
            }
        };
        let name = s.name.unwrap_or_else(|| format!("step-{n}"));
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            || steps.iter().any(|p| p.name == name)
        {
            return Err(err(
                "name",
                format!(
                    "step {n}: name {name:?} is empty, used twice, or not letters, digits, '.', '_' and '-' (it names a report folder)"
                ),
            ));
        }
        steps.push(StepSpec { name, action, wait: s.wait.map(|d| d.0) });
    }
    Ok(steps)
}

//! `[[milestone]]`: console lines that mark the way to a running stack.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::error::Ctx;
use super::{Dur, Pattern, ScenarioError};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMilestone {
    name: String,
    console: Pattern,
    required: Option<bool>,
    within: Option<Dur>,
}

pub(super) fn validate(raw: Vec<toml::Spanned<RawMilestone>>, cx: &Ctx) -> Result<Vec<MilestoneSpec>, ScenarioError> {
    let mut milestones = Vec::new();
    let mut mnames = BTreeSet::new();
    for m in raw {
        let span = m.span();
        let m = m.into_inner();
        if m.name.is_empty() || !mnames.insert(m.name.clone()) {
            return Err(cx.err(
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
    Ok(milestones)
}

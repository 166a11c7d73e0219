//! `[power_cut]`: where `airboot cut` cuts the power, and how.

use std::time::Duration;

use airboot_model::CutMode;
use serde::Deserialize;

use super::error::Ctx;
use super::{Dur, Pattern, ScenarioError};

/// Where a power cut falls, in the write stream of one recorded boot.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerCutSpec {
    /// `kill`, `lose-unflushed`, `torn`, `flush-ignored` (each cut point
    /// is judged under every mode listed).
    pub modes: Vec<CutMode>,
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
    /// `points = "all"`: every flush and FUA write in the sweep's window
    /// is a cut point (an exploration; `points` is then unused).
    pub explore: Option<Explore>,
    /// Files whose presence decides what the next boot does (a loader's
    /// marker): part of each explored state's fingerprint.
    pub markers: Vec<String>,
    /// A second cut, in the boot that powers each crash state on again
    /// (its fsck, engine restore, re-load), placed by this trigger in
    /// that boot's own write stream and cut with the same mode.
    pub recovery: Option<CutTrigger>,
}

/// How an exploration (`points = "all"`) draws and checks its states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explore {
    /// Seeded draws per point for the modes with a random choice (torn,
    /// flush-ignored).
    pub states_per_point: usize,
    /// Members of each fingerprint class powered on besides its
    /// representative, to check that the class predicts their outcome.
    pub sample: usize,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPowerCut {
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
    points: Option<RawPoints>,
    states_per_point: Option<usize>,
    sample: Option<usize>,
    #[serde(default)]
    markers: Vec<String>,
    recovery: Option<RawTrigger>,
}

/// `points = 8` or `points = "all"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPoints {
    Count(usize),
    Word(String),
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

pub(super) fn validate(
    raw: Option<toml::Spanned<RawPowerCut>>,
    cx: &Ctx,
) -> Result<Option<PowerCutSpec>, ScenarioError> {
    Ok(match raw {
        None => None,
        Some(pc) => {
            let span = pc.span();
            let pc = pc.into_inner();
            let bad =
                |key: &str, message: String| cx.err(Some(span.clone()), Some(format!("power_cut.{key}")), message);
            let mut modes = Vec::new();
            for m in &pc.modes {
                modes.push(
                    CutMode::parse(m)
                        .ok_or_else(|| bad("modes", format!("unknown mode {m:?}: use {}", CutMode::choices())))?,
                );
            }
            if modes.is_empty() {
                modes.push(CutMode::LoseUnflushed);
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
                    cx.err(Some(span.clone()), Some(format!("power_cut.recovery.{key}")), message)
                })?),
            };
            let (points, explore) = match pc.points {
                None => (1, None),
                Some(RawPoints::Count(n)) => (n, None),
                Some(RawPoints::Word(w)) if w == "all" => {
                    let states_per_point = pc.states_per_point.unwrap_or(8);
                    if states_per_point == 0 || states_per_point > 256 {
                        return Err(bad(
                            "states_per_point",
                            format!("states_per_point = {states_per_point}: give 1 to 256 seeded states per point"),
                        ));
                    }
                    let sample = pc.sample.unwrap_or(1);
                    if sample > 16 {
                        return Err(bad(
                            "sample",
                            format!(
                                "sample = {sample}: give 0 to 16 members per class to power on besides its representative"
                            ),
                        ));
                    }
                    (0, Some(Explore { states_per_point, sample }))
                }
                Some(RawPoints::Word(w)) => {
                    return Err(bad(
                        "points",
                        format!(
                            "points = {w:?}: give a number of cut points (1 to 64) or \"all\" (every flush and FUA write in the window)"
                        ),
                    ));
                }
            };
            if explore.is_none() {
                if points == 0 || points > 64 {
                    return Err(bad(
                        "points",
                        format!("points = {points}: give 1 to 64 cut points, or \"all\" to explore every one"),
                    ));
                }
                for (key, given) in
                    [("states_per_point", pc.states_per_point.is_some()), ("sample", pc.sample.is_some())]
                {
                    if given {
                        return Err(bad(key, format!("`{key}` belongs to an exploration: set `points = \"all\"`")));
                    }
                }
            }
            if (points > 1 || explore.is_some()) && pc.until.is_none() {
                return Err(bad(
                    "until",
                    "a sweep (points > 1 or \"all\") needs `until`, the console line that ends its window".into(),
                ));
            }
            if pc.until.is_some() && has_after {
                return Err(bad(
                    "until",
                    "a sweep (`until`) places its own cut points: drop after/flushes/writes/bytes".into(),
                ));
            }
            for m in &pc.markers {
                if !m.starts_with('/') || m.split('/').any(|c| c == "..") {
                    return Err(bad(
                        "markers",
                        format!(
                            "marker {m:?}: give an absolute path in the guest, such as \"/var/lib/airboot/images-loaded\""
                        ),
                    ));
                }
            }
            Some(PowerCutSpec {
                modes,
                seed: pc.seed,
                trigger,
                until: pc.until.map(|u| u.0),
                points,
                explore,
                markers: pc.markers,
                recovery,
            })
        }
    })
}

//! `airboot repro`: judge a bundle's crash state again, the same way.
//!
//! The crash state is never booted in place: its disk chain (the input
//! image, the first cut's crash state for a second cut, this crash
//! state) is rebuilt in the repro folder from copies, each pointed at the
//! one below it, so the bundle stays as it was cut and may have moved.

use std::path::{Path, PathBuf};

use airboot_core::cut::PowerCut;
use airboot_core::disk::detect;
use airboot_core::event::EventSink;
use airboot_core::report::Report;
use airboot_core::scenario::ImageSource;
use airboot_model::{DiskFormat, Verdict};
use airboot_qemu::disk::{open_image, rebase, sha256_file};
use airboot_session::{BootOptions, Env, clock, load};

use crate::CampaignError;
use crate::bundle::{BundleError, BundleInfo};
use crate::exec::finish;
use crate::judge::Judge;

pub struct ReproOptions {
    /// Default: `BUNDLE/repro-<stamp>`.
    pub report_dir: Option<PathBuf>,
    /// The input image, when it is no longer where the bundle says (it
    /// must have the sha256 the bundle recorded).
    pub input: Option<PathBuf>,
    pub boot: BootOptions,
}

/// Judge `bundle` again. Returns the exit status: 0 same verdict and the
/// device survived, 1 a different verdict or not a survival, 2 could not
/// judge. An `Err` is a refusal before anything booted.
pub fn repro(bundle: &Path, opts: &ReproOptions, env: &Env, sink: &mut dyn EventSink) -> Result<i32, CampaignError> {
    let info = BundleInfo::read(bundle)?;
    let s = load::load_one(&info.scenario(bundle))?;
    let input = opts.input.clone().unwrap_or_else(|| PathBuf::from(&info.input));
    if !input.exists() {
        return Err(BundleError::InputGone(input).into());
    }
    if let Some(want) = &info.input_sha256 {
        let h = sha256_file(&input).map_err(|e| BundleError::Io { path: input.clone(), why: e.to_string() })?;
        if &h != want {
            return Err(BundleError::InputDiffers(input).into());
        }
    }
    let root = open_image(&input)
        .ok()
        .and_then(|v| detect::root_partition(v.as_ref(), info.arch))
        .ok_or_else(|| CampaignError::Refused(format!("no root filesystem found in {}", input.display())))?;
    // A fixture is booted from the build the bundle was cut from (its
    // kernel and initramfs), not from today's build of that fixture.
    let mut boot = opts.boot.clone();
    if matches!(s.image.source, ImageSource::Fixture(_)) {
        boot.fixture_build = input.parent().filter(|d| d.join("fixture.json").is_file()).map(Path::to_path_buf);
    }
    let base = opts.report_dir.clone().unwrap_or_else(|| bundle.join(format!("repro-{}", clock::stamp())));
    let work = airboot_qemu::scratch::temp_dir("repro").map_err(CampaignError::Workdir)?;
    let state = base.join("state");
    std::fs::create_dir_all(&state).map_err(|source| CampaignError::ReportDir { path: state.clone(), source })?;
    chain(bundle, &info, &input, &state)?;

    let mut c =
        PowerCut::new(info.mode, info.trigger.clone(), info.position.clone(), info.seed, bundle.display().to_string());
    (c.lost_writes, c.lost_bytes, c.torn_writes) = (info.lost_writes, info.lost_bytes, info.torn_writes);
    sink.event(airboot_core::event::RunEvent::CutStarted {
        k: 1,
        n: 1,
        mode: info.mode,
        write: info.position.writes,
        trigger: format!("repro of {}: {}", bundle.display(), info.trigger),
        second_of: None,
    });
    let judge = Judge {
        s: &s,
        root: (root.start, root.len),
        expected: s.expect.images.iter().map(|i| i.reference.clone()).collect(),
        work: work.path(),
        env,
        boot: &boot,
    };
    judge.crash_state(&state, &mut c, true, None, sink);
    c.during_recovery_of = info.first_cut(bundle).map(|p| p.display().to_string());
    for f in ["crash.qcow2", "first.qcow2"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    let mut report = Report::new(&s.name, &s.file.display().to_string(), clock::now_rfc3339());
    report.verdict = Verdict::Pass;
    report.arch = Some(info.arch);
    // Checked against the bundle above; `finish` checks it again at the end.
    report.image.path = Some(input.display().to_string());
    report.image.sha256_before = info.input_sha256.clone();
    let now = c.outcome.map(|o| o.as_str()).unwrap_or("not judged");
    // A bundle cut with --offline has no outcome to compare with.
    let same = info.outcome.is_none_or(|o| Some(o) == c.outcome);
    let headline = match info.outcome {
        Some(o) => format!(
            "reproduction of {}: recorded outcome {}, now {now} ({})",
            bundle.display(),
            o.as_str(),
            if same { "same verdict" } else { "DIFFERENT verdict" }
        ),
        None => format!("reproduction of {}: cut with --offline (no recorded outcome), now {now}", bundle.display()),
    };
    report.notes.push(headline.clone());
    report.power_cuts.push(c);
    let code = finish(&base, &mut report, Some(&input), false, Some(headline), sink);
    Ok(if !same && code != 2 { 1 } else { code })
}

/// Copy the bundle's crash state (and, for a second cut, the first cut's)
/// into `state` as `crash.qcow2`, each copy pointed at the disk below it,
/// the lowest at `input`.
fn chain(bundle: &Path, info: &BundleInfo, input: &Path, state: &Path) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| BundleError::Io { path, why: e.to_string() }
    };
    let input_format = airboot_qemu::disk::detect_format(input)
        .map_err(|e| BundleError::Io { path: input.into(), why: e.to_string() })?;
    let mut below = (input.to_path_buf(), input_format);
    if let Some(first) = info.first_cut(bundle) {
        let copy = state.join("first.qcow2");
        std::fs::copy(first.join("crash.qcow2"), &copy).map_err(io(&first))?;
        rebase(&copy, &below.0, below.1).map_err(|e| BundleError::Io { path: copy.clone(), why: e.to_string() })?;
        below = (copy, DiskFormat::Qcow2);
    }
    let copy = state.join("crash.qcow2");
    std::fs::copy(bundle.join("crash.qcow2"), &copy).map_err(io(bundle))?;
    rebase(&copy, &below.0, below.1).map_err(|e| BundleError::Io { path: copy.clone(), why: e.to_string() })
}

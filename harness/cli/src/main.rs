//! `airboot`: boots device images under QEMU with no network device and
//! checks that their containers start, how fast, and whether their
//! container store survives power cuts.

/// `println!` for the listing and report commands: a closed stdout is
/// ignored (the work goes on; see airboot_report::terminal).
macro_rules! outln {
    ($($arg:tt)*) => {{
        airboot_report::terminal::out(&format!("{}\n", format_args!($($arg)*)));
    }};
}

mod cut;
mod exit;
mod images_cmd;
mod report_cmd;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Boot a device image under QEMU with no network and check its containers start";

const LONG_ABOUT: &str = "\
airboot answers: does the device image we just built start its containers on
first power-on with no network, and how fast?

It boots the image under qemu-system-x86_64 (KVM when it demonstrably works,
TCG otherwise) with no network device at all, through a throwaway overlay
(the input image is never modified), reads the serial console, and compares
what the container engine reports with the scenario's expectations.

Exit status: 0 every scenario passed, 1 a scenario failed (the image is
wrong), 2 airboot could not judge (bad scenario, missing tool, interrupted).

Quick start:
  airboot run                        # the built-in default scenario
  airboot run scenarios/             # every scenario in a folder
  airboot report --gate              # timing regression gate over reports/history.jsonl
  airboot images list                # fixtures airboot can build";

#[derive(Parser)]
#[command(name = "airboot", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot scenarios and judge them; writes report.json and console.log.
    #[command(long_about = "\
Boot each scenario's image with no network and judge it.

Scenario files are TOML (format: scenarios/README.md). A folder runs every
*.toml in it, in name order. With no arguments the built-in default runs: the
preseeded x86_64 fixture (built on first use, which needs root and the
Debian mirror).

Your own image: `[image] path` takes the file the build produced (raw,
qcow2, .vmdk, or gzip/xz/zstd/bzip2-compressed: unpacked once into
~/.cache/airboot/inputs). With no kernel and no `boot`, the disk boots with
its own loader (uefi or bios, told from the disk). An image without the
probe gets it injected into a layer over it (the image is never written):
into an ext4 root, or, for a read-only erofs root whose systemd (>= 255)
merges system extensions, as one on the data partition under
/var/lib/extensions. Other read-only roots are judged through `[image]
login` on the serial console (the engine's own CLI: docker, podman or
containerd's ctr; compose too).

Reports: DIR/report.json and DIR/console.log for one scenario;
DIR/<scenario>/... for several; DIR/run.json indexes them. DIR defaults to
reports/<date>-<time>-<name>, and reports/latest points at the newest.

All scenario files are checked before anything boots: a bad one stops the
run with exit status 2 and names the file, line, column and key.")]
    Run(RunArgs),
    /// Check scenario files without booting anything (exit 0 valid, 2 not).
    Check {
        /// Scenario files or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List or build the fixture images airboot tests itself with.
    #[command(subcommand)]
    Images(ImagesCmd),
    /// Timing history: a table per scenario, and a regression gate.
    #[command(long_about = "\
Read a timing history (JSON lines that `airboot run` appends, by default
reports/history.jsonl) and compare the newest run of each key (scenario ×
image digest × arch × accel) with a baseline: the median of the last
--baseline-runs passing runs of the same key.

A figure (time to stack, or a named milestone) regresses when it is slower
than the baseline by more than all of --max-rel, --max-abs and
--noise-mads × the baseline's spread (median absolute deviation, scaled).
With fewer than --min-samples baseline runs it says it cannot judge.

With --gate the exit status is 1 when a figure regressed or the newest run
never reached a running stack, else 0. Nightly builds change the image
digest: use --ignore-image to compare successive builds.")]
    Report(ReportArgs),
    /// Cut the power while the device loads its images; judge the store.
    #[command(long_about = "\
Boot the scenario's image once with every disk request recorded (QEMU's
blklogwrites), then cut that write stream at the scenario's [power_cut]
points and judge each crash state: the root filesystem after journal replay
(e2fsck on a copy), the container store offline (every tag, config hash and
layer content against its diff_id), then the device powered on again with
the scenario's expectations, and the store once more after that boot.

Modes: lose-unflushed (default: exactly the writes up to the last completed
flush survive), torn (a seeded subset of the unflushed writes survives,
some torn at a sector), flush-ignored (the device ignored flushes: a seeded
subset of its last 8 MiB of writes survives), kill (QEMU killed: every
completed write survives; a crash, reported apart from power cuts).

Triggers: `at` (a console regex) or `load` + `layer` (the guest probe's
event: that layer of that image is being loaded into Docker's store), then
a delay, a count of flushes/writes/bytes, or a sweep to `until`. With
[power_cut.recovery] the boot powering each crash state on is recorded too
and cut again at its own trigger (a second cut during recovery: fsck,
engine restore, re-load), judged like any cut.

Outcomes: INTACT-NEW, INTACT-OLD, SELF-HEALED, CORRUPT-DETECTED,
CORRUPT-SILENT, BRICKED. Each cut leaves a bundle (crash.qcow2 over the
input image, cut.json, logs) that `airboot repro` boots again; a second
cut's bundle is the first's recovery-cut/ folder.

Exploration (`points = \"all\"` under [power_cut]): every flush and FUA
write between `at` and `until` is a cut point, with `states_per_point`
seeded draws per point for torn and flush-ignored. Every state is judged
offline in place (a working copy per worker, in /dev/shm when it has room,
moved forward along the log; e2fsck's changes rolled back with e2undo),
states with the same bytes once. States are grouped by what decides their
fate (filesystem, store per image and layer, `markers`); one representative
per class, plus `sample` other members, is powered on, and the rest inherit
its outcome. report.json `exploration` holds every state; the summary's
headline counts states, classes and survivors. Across machines:
--record-only keeps the recording (REPORT_DIR/record/), --recording DIR
--shard K/N judges slice K of N of its states, and `airboot report --merge
DIR...` joins the shards' reports (scripts/explore-shard.sh,
docs/examples/).

With --offline each crash state is only checked offline (no power-on, no
outcome): the summary shows FS-DAMAGED or STORE-NEW/OLD/BETWEEN/CORRUPT.
First cuts with a [power_cut.recovery] are still powered on (the second
cut falls in that boot).

Exit status: 0 every cut survived (INTACT-* or SELF-HEALED; with --offline:
a clean filesystem and a whole old or new store), 1 some did not, 2 airboot
could not judge.")]
    Cut(CutArgs),
    /// Boot a cut's bundle again and judge it the same way.
    #[command(long_about = "\
Judge the crash state in a bundle that `airboot cut` wrote (a cut-NN-<mode>
folder) again: offline checks, power-on with the scenario's expectations,
the store after that boot. Says whether the verdict is the recorded one.
The bundle's crash.qcow2 is a delta over the exact input image it was cut
from (checked by sha256); it is not modified: repro judges copies in its
own folder, pointed at the input image wherever it now is, so a bundle
can move (give the image with --input when cut.json's path no longer
holds it). A fixture boots with the kernel and initramfs of the build the
bundle was cut from, not today's.

Exit status: 0 same verdict and the device survived, 1 a different verdict
or a verdict that is not a survival, 2 airboot could not judge.")]
    Repro(ReproArgs),
    /// Explain a diagnosis or failure code: what it means, the evidence, the fix.
    #[command(long_about = "\
Print what a diagnosis code (report.json `diagnoses`) or a failure code
(`failures`) means: for a diagnosis, also the evidence airboot needs before
it names it and the fix. With no code, list every one. The same text is in
docs/diagnoses.md.

Exit status: 0 known, 2 no such code (the nearest is suggested).")]
    Explain {
        /// A code, e.g. store-read-only or engine-down.
        code: Option<String>,
    },
}

#[derive(clap::Args)]
struct CutArgs {
    /// A scenario file with a [power_cut] section.
    scenario: PathBuf,
    /// Seed for every random choice (default: the scenario's, else chosen and reported).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Cut mode(s), overriding power_cut.modes (repeat for several).
    #[arg(long, value_name = "MODE", value_parser = cut_modes())]
    mode: Vec<String>,
    /// Where to write the report and bundles (default: reports/<date>-<time>-cut-<name>).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Judge each crash state offline only (filesystem, container store):
    /// no power-on, so minutes faster per cut but no outcome.
    #[arg(long)]
    offline: bool,
    /// Exploration (points = "all"): workers judging the states offline, each
    /// with its own working copy of the root filesystem (default: the host's
    /// cores), and crash states powered on at once, each its own QEMU
    /// (default: as many as the cores fit guests of [machine] cpus and the
    /// available memory fits guests of [machine] memory + 512 MiB).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: Option<u16>,
    /// Exploration: record the boot and keep the recording (REPORT_DIR/record/:
    /// writes.log, recording.json), judge nothing. Shards then judge it.
    #[arg(long, conflicts_with = "recording")]
    record_only: bool,
    /// Exploration: judge the states of this recording (the record/ folder of
    /// an earlier `airboot cut`, copied whole) instead of recording a boot; the
    /// input image must be where recording.json says (or --input), with the
    /// same sha256.
    #[arg(long, value_name = "DIR")]
    recording: Option<PathBuf>,
    /// With --recording: the input image the recording was made from, when it
    /// is not where recording.json says (another machine's path); its sha256
    /// must be the recorded one.
    #[arg(long, value_name = "IMAGE", requires = "recording")]
    input: Option<PathBuf>,
    /// Exploration: judge only slice K of N of the states (contiguous, in
    /// enumeration order; the same on every machine). `airboot report
    /// --merge` joins the shards' reports.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<(usize, usize)>,
    /// Accelerator, overriding machine.accel.
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
}

/// `K/N` with 1 <= K <= N.
fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (k, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: give K/N, such as 1/4"))?;
    let k: usize = k.trim().parse().map_err(|_| format!("{s:?}: K must be a number"))?;
    let n: usize = n.trim().parse().map_err(|_| format!("{s:?}: N must be a number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("{s:?}: give K/N with 1 <= K <= N"));
    }
    Ok((k, n))
}

#[derive(clap::Args)]
struct ReproArgs {
    /// A bundle folder (cut-NN-<mode>) written by `airboot cut`.
    bundle: PathBuf,
    /// Where to write the report (default: BUNDLE/repro-<date>-<time>).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// The image the bundle was cut from, when it is no longer where
    /// cut.json says (a bundle moved to another machine); it must have the
    /// sha256 cut.json recorded.
    #[arg(long, value_name = "IMAGE")]
    input: Option<PathBuf>,
    /// Accelerator, overriding machine.accel.
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
}

/// `--mode` takes every cut mode airboot knows.
fn cut_modes() -> clap::builder::PossibleValuesParser {
    airboot_model::CutMode::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>().into()
}

/// `--transport` takes `auto` and every transport airboot knows.
fn transports() -> clap::builder::PossibleValuesParser {
    std::iter::once("auto")
        .chain(airboot_model::TransportKind::ALL.iter().map(|t| t.as_str()))
        .collect::<Vec<_>>()
        .into()
}

fn accel_choice(a: Option<AccelArg>) -> Option<airboot_core::scenario::AccelChoice> {
    a.map(|a| match a {
        AccelArg::Auto => airboot_core::scenario::AccelChoice::Auto,
        AccelArg::Kvm => airboot_core::scenario::AccelChoice::Kvm,
        AccelArg::Tcg => airboot_core::scenario::AccelChoice::Tcg,
    })
}

fn boot_options(accel: Option<AccelArg>) -> airboot_session::BootOptions {
    airboot_session::BootOptions { accel: accel_choice(accel), build: true, ..Default::default() }
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The history file.
    #[arg(long, value_name = "FILE", default_value = "reports/history.jsonl")]
    history: PathBuf,
    /// Exit 1 on a regression (or a newest run that never reached its stack).
    #[arg(long)]
    gate: bool,
    /// How many passing runs make the baseline.
    #[arg(long, value_name = "N", default_value_t = 10)]
    baseline_runs: usize,
    /// Fewer baseline runs than this: cannot judge.
    #[arg(long, value_name = "K", default_value_t = 5)]
    min_samples: usize,
    /// Relative threshold (0.15 = 15% slower).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.15)]
    max_rel: f64,
    /// Absolute threshold, e.g. "5s".
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    max_abs: String,
    /// Noise threshold in (scaled) median absolute deviations of the baseline.
    #[arg(long, value_name = "N", default_value_t = 3.0)]
    noise_mads: f64,
    /// Compare runs of different image builds (drop the digest from the key).
    #[arg(long)]
    ignore_image: bool,
    /// Also write an HTML page with the history plot and the table.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the table as JSON instead.
    #[arg(long)]
    json: bool,
    /// Instead of the history: join the reports of an exploration's shards
    /// (`airboot cut --recording DIR --shard K/N`, one folder each) into one
    /// report, every state accounted for exactly once, the classes formed
    /// again across shards. Exit 0 every state survived, 1 some did not, 2
    /// the folders are not the shards of one exploration.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    merge: Vec<PathBuf>,
    /// With --merge: where to write the merged report (default:
    /// reports/<date>-<time>-merged-<scenario>).
    #[arg(long, value_name = "DIR", requires = "merge")]
    report_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario files or folders (default: the built-in preseeded-x86_64 scenario).
    paths: Vec<PathBuf>,
    /// Where to write reports (default: reports/<date>-<time>-<name>).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// Accelerator for every scenario, overriding machine.accel.
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
    /// How to talk to the probe in the guest, overriding machine.transport:
    /// auto picks vsock (kernel), else vhost-user-vsock (vhost-device-vsock),
    /// else virtio-serial; console reads status blocks from the serial console.
    #[arg(long, value_name = "KIND", value_parser = transports())]
    transport: Option<String>,
    /// Run only scenarios whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Fail instead of building a fixture that is not built yet.
    #[arg(long)]
    no_build: bool,
    /// Run each scenario N times and report its failure rate with a 95%
    /// confidence interval ("0 of 40 failed, 95% CI 0–8.8%").
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// Append each run's timings to this history file (JSON lines). Default:
    /// reports/history.jsonl when the report folder is the default one.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Judge each scenario by its declared [outcome] (negative controls that
    /// fail as declared count as passing) for the exit status.
    #[arg(long)]
    check_outcomes: bool,
    /// Boot up to N scenarios (or --repeat runs) at once, each its own QEMU
    /// with its own overlay, sockets and vsock CID (default 1). Under TCG
    /// each guest wants a core per vCPU: more at once than the cores fit
    /// slows every guest. Reports keep the scenarios' order; each report
    /// says how many shared the host (machine.jobs), and the timing history
    /// compares such runs only with runs that shared it alike.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: Option<u16>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    /// KVM if a probe boot shows it works, else TCG.
    Auto,
    /// KVM, without probing.
    Kvm,
    /// TCG (software emulation); budgets are scaled by machine.tcg_slowdown.
    Tcg,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SuiteArg {
    Ci,
    Full,
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// List the fixtures that can be built and which are cached.
    List,
    /// Build fixtures (needs root and the Debian mirror; cached by inputs).
    Build {
        /// Fixture names (see `airboot images list`).
        names: Vec<String>,
        /// Build every fixture.
        #[arg(long, conflicts_with_all = ["names", "scenarios"])]
        all: bool,
        /// Build the fixtures these scenario files (or folders) boot.
        #[arg(long = "for", value_name = "SCENARIO", conflicts_with = "names")]
        scenarios: Vec<PathBuf>,
        /// With --for: only scenarios of this suite (`ci` is the
        /// representative set CI boots; `full` is every scenario).
        #[arg(long, value_name = "ci|full", default_value = "full", requires = "scenarios")]
        suite: SuiteArg,
        /// Rebuild even when a build with the same inputs is cached.
        #[arg(long)]
        force: bool,
    },
    /// Print the folder of a built fixture (exit 1 if not built).
    Path { name: String },
    /// Delete fixture builds whose inputs have changed since (a new probe,
    /// recipe or package mirror leaves the old build behind; each is
    /// 0.5-2 GiB), and the unpacked copies of compressed input images
    /// (`inputs/`, made again when an input is next run). The current build
    /// of every fixture is kept. Bundles cut from a deleted build can no
    /// longer be reproduced (`airboot repro` says the input image is missing).
    Clean {
        /// Only list what would be deleted, and its size.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Remove what airboot processes killed outright left in the temporary
/// folders (see `airboot_qemu::scratch`), and say so.
fn sweep_stale_temp() {
    let mut swept = airboot_qemu::scratch::sweep_stale(&airboot_qemu::scratch::scratch_roots());
    let builds = airboot_images::sweep_stale_builds(&airboot_images::cache_root());
    swept.removed.extend(builds.removed);
    swept.mounted.extend(builds.mounted);
    if let Some(first) = swept.removed.first() {
        eprintln!(
            "airboot: removed {} temporary folder(s) left by airboot processes that were killed (e.g. {})",
            swept.removed.len(),
            first.display()
        );
    }
    for m in &swept.mounted {
        eprintln!(
            "airboot: {} was left by an airboot process that was killed, but something is still mounted under it: unmount it, then remove it",
            m.display()
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = airboot_qemu::process::install_interrupt_handler() {
        eprintln!("airboot: cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    if matches!(
        cli.cmd,
        Cmd::Check { .. }
            | Cmd::Explain { .. }
            | Cmd::Images(ImagesCmd::List | ImagesCmd::Path { .. } | ImagesCmd::Clean { dry_run: true })
    ) {
        airboot_qemu::process::default_broken_pipe();
    }
    if matches!(cli.cmd, Cmd::Run(_) | Cmd::Cut(_) | Cmd::Repro { .. } | Cmd::Images(ImagesCmd::Build { .. })) {
        sweep_stale_temp();
    }
    let code = match cli.cmd {
        Cmd::Run(a) => run::run(run::Options {
            paths: a.paths,
            report_dir: a.report_dir,
            accel: accel_choice(a.accel),
            transport: a.transport.map(|t| airboot_core::scenario::parse_transport(&t).expect("clap checked it")),
            filter: a.filter,
            build: !a.no_build,
            repeat: a.repeat,
            history: a.history,
            check_outcomes: a.check_outcomes,
            jobs: a.jobs.map(usize::from),
        }),
        Cmd::Report(r) if !r.merge.is_empty() => cut::merge(&r.merge, r.report_dir),
        Cmd::Report(r) => report_cmd::report(report_cmd::Options {
            history: r.history,
            gate: r.gate,
            baseline_runs: r.baseline_runs,
            min_samples: r.min_samples,
            max_rel: r.max_rel,
            max_abs: r.max_abs,
            noise_mads: r.noise_mads,
            ignore_image: r.ignore_image,
            html: r.html,
            json: r.json,
        }),
        Cmd::Check { paths } => run::check(&paths),
        Cmd::Cut(c) => cut::cut(
            &c.scenario,
            airboot_campaign::CutOptions {
                seed: c.seed,
                modes: c.mode.iter().filter_map(|m| airboot_model::CutMode::parse(m)).collect(),
                report_dir: c.report_dir,
                offline: c.offline,
                jobs: c.jobs.map(usize::from),
                recording: c.recording,
                input: c.input,
                shard: c.shard,
                record_only: c.record_only,
                boot: boot_options(c.accel),
            },
        ),
        Cmd::Repro(r) => cut::repro(&r.bundle, r.report_dir, r.input, boot_options(r.accel)),
        Cmd::Images(ImagesCmd::List) => images_cmd::list(),
        Cmd::Images(ImagesCmd::Build { names, all, force, scenarios, suite }) => {
            let names = if scenarios.is_empty() {
                names
            } else {
                match airboot_session::load::load_all(&scenarios) {
                    Ok(list) => {
                        let mut n: Vec<String> = list
                            .iter()
                            .filter(|s| suite == SuiteArg::Full || s.suite == airboot_core::scenario::Suite::Ci)
                            .filter_map(|s| match &s.image.source {
                                airboot_core::scenario::ImageSource::Fixture(f) => Some(f.clone()),
                                airboot_core::scenario::ImageSource::Path(_) => None,
                            })
                            .collect();
                        n.sort();
                        n.dedup();
                        if n.is_empty() {
                            eprintln!("no fixture to build: those scenarios boot no fixture");
                            return ExitCode::SUCCESS;
                        }
                        n
                    }
                    Err(e) => return ExitCode::from(exit::refused(&e, airboot_model::FailureCode::BadInput) as u8),
                }
            };
            images_cmd::build(&names, all, force)
        }
        Cmd::Images(ImagesCmd::Path { name }) => images_cmd::path(&name),
        Cmd::Images(ImagesCmd::Clean { dry_run }) => images_cmd::clean(dry_run),
        Cmd::Explain { code } => explain(code.as_deref()),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `airboot explain [CODE]`.
fn explain(code: Option<&str>) -> i32 {
    use airboot_model::{DiagnosisCode, FailureCode};
    let Some(code) = code else {
        println!("diagnoses (report.json `diagnoses`: why a run failed)");
        for d in DiagnosisCode::ALL {
            println!("  {:<26} {}", d.as_str(), d.summary());
        }
        println!("failure codes (report.json `failures`: what did not hold)");
        for f in FailureCode::ALL {
            println!("  {:<26} {}", f.as_str(), f.meaning());
        }
        return 0;
    };
    if let Some(d) = DiagnosisCode::parse(code) {
        println!("{d}: {}\n\nevidence: {}\n\nfix: {}", d.summary(), d.rule(), d.fix());
        return 0;
    }
    if let Some(f) = FailureCode::parse(code) {
        println!("{f} (failure code, verdict {}): {}", f.verdict(), f.meaning());
        return 0;
    }
    let near = DiagnosisCode::ALL
        .iter()
        .map(|d| d.as_str())
        .chain(FailureCode::ALL.iter().map(|f| f.as_str()))
        .min_by_key(|c| airboot_model::edit_distance(code, c))
        .unwrap_or("");
    eprintln!(
        "airboot explain: no diagnosis or failure code {code:?} (nearest: {near}); `airboot explain` lists them all"
    );
    2
}

//! The report model (`report.json`, schema `airboot.report/v1`). Fields
//! are only ever added within a schema version; scripts can rely on the
//! ones documented in README.md.

use serde::{Deserialize, Serialize};

use airboot_model::{Accel, Arch, BootMode, DiskFormat, TransportKind};
pub use airboot_model::{Failure, FailureCode, Verdict};

use crate::verify::{ContainerRow, ImageRow};

pub const SCHEMA: &str = "airboot.report/v1";
pub const RUN_SCHEMA: &str = "airboot.run/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Milestone {
    pub name: String,
    /// Seconds since t0 (the QMP `cont` that started the guest's CPUs).
    pub t_s: f64,
    /// `console` (a console line matched) or `status` (a status block).
    pub source: String,
    pub evidence: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MachineInfo {
    pub qemu: Option<String>,
    pub qemu_version: Option<String>,
    pub machine: Option<String>,
    pub cpu: Option<String>,
    pub memory_mib: u64,
    pub cpus: u32,
    /// Guests this airboot run booted at once (`airboot run --jobs`); each
    /// shared the host with the others, so its times are not those of a
    /// guest alone. Absent (0 or 1): alone.
    #[serde(default, skip_serializing_if = "is_one")]
    pub jobs: usize,
}

fn is_one(n: &usize) -> bool {
    *n <= 1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timeouts {
    /// 1 under KVM, the scenario's `tcg_slowdown` under TCG.
    pub scale: f64,
    pub timeout_s: f64,
    pub time_to_stack_budget_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageInfo {
    pub path: Option<String>,
    pub format: Option<DiskFormat>,
    pub fixture: Option<String>,
    pub sha256_before: Option<String>,
    pub sha256_after: Option<String>,
    /// Both hashes were taken and match.
    pub unchanged: Option<bool>,
    /// A packed input (`.zst`, `.xz`, `.gz`, `.bz2`, `.vmdk`): the copy
    /// that was booted. `path` and the hashes above are the input's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<UnpackedInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UnpackedInfo {
    pub packing: String,
    pub path: String,
    /// Of the unpacked disk, when it was written.
    pub sha256: String,
    pub size: u64,
    /// Found in the cache (keyed by the input's sha256).
    pub reused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BootInfo {
    pub mode: Option<BootMode>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    /// UEFI: the firmware code, and where it was found.
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub firmware_source: Option<String>,
    /// The scenario did not say how to boot: what the disk showed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<String>,
}

/// What the image said about its architecture before anything booted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ArchDetection {
    /// The architecture the evidence agrees on, if any.
    pub detected: Option<String>,
    /// Each piece of evidence, e.g. "GPT type of partition 2 is … (Linux root (aarch64))".
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetworkInfo {
    /// Network devices the VM had: always 0 for a run that booted.
    pub nics: u32,
    /// QEMU arguments that would add a network (must be empty).
    pub qemu_network_args: Vec<String>,
    /// Network-class PCI devices QMP `query-pci` listed (must be empty).
    pub pci_network_devices: Vec<String>,
    /// Whether QMP's device list was checked.
    pub pci_checked: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatusInfo {
    /// Complete console status blocks received.
    pub blocks: u64,
    /// Damaged or incomplete blocks (skipped).
    pub damaged: u64,
    pub last_t_s: Option<f64>,
    /// The guest's uptime in the last block.
    pub guest_uptime_s: Option<f64>,
    /// When each error the guest reported (the engine's, a unit's) was
    /// first seen, seconds from t0: the time of that evidence. Keyed by
    /// the error itself ([`error_key`]: what comes before the first `; `,
    /// without the unit state the probe adds after it).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub errors_first_seen_s: std::collections::BTreeMap<String, f64>,
    /// When the run was decided (or QEMU ended), seconds from t0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_s: Option<f64>,
    /// When the evidence that settled the run showed (a read-only or full
    /// store, the engine at its start limit), seconds from t0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_at_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ConsoleInfo {
    /// File name of the full log, next to report.json.
    pub file: String,
    pub lines: u64,
    pub bytes: u64,
    pub truncated_lines: u64,
    /// The log stopped growing at this many bytes (guest printed too much).
    pub log_capped: bool,
    /// The last lines, for a quick look.
    pub tail: Vec<String>,
}

/// How the host talked to the guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProbeInfo {
    /// `vsock`, `vhost-user-vsock`, `virtio-serial` or `console`.
    pub transport: Option<TransportKind>,
    pub transport_reason: Option<String>,
    /// When the probe first answered (seconds since t0).
    pub connected_s: Option<f64>,
    pub version: Option<String>,
    /// The guest's `uname -m`, as the probe reported it.
    pub guest_machine: Option<String>,
    /// The guest's init system (`systemd`, `sysvinit`, …), as the probe
    /// saw it: without systemd, the timeline's sources differ (see notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Where the probe came from: `image` (it carries it), `injected`
    /// (written into the run's overlay), `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// What injection added to the overlay, file by file (the input image
    /// is never written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injected: Vec<crate::inject::Injected>,
    /// What came over the probe's transport that was no answer to a
    /// request: absent when nothing did.
    #[serde(default, skip_serializing_if = "ProtocolErrors::is_empty")]
    pub protocol_errors: ProtocolErrors,
}

/// Lines on the probe's transport that were no answer to a request, counted
/// over the whole run (every session with the probe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProtocolErrors {
    /// Lines that were no probe answer: not JSON, not the protocol, or
    /// over the line limit (`too_long` of them).
    pub malformed: u64,
    /// Of `malformed`, the lines over the limit (skipped, never kept).
    pub too_long: u64,
    /// Well-formed answers to no request of this session (stale output of
    /// an earlier session, or an id never asked): ignored.
    pub unsolicited: u64,
    /// The first malformed line, cut to 120 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<String>,
}

impl ProtocolErrors {
    /// The longest sample kept, in characters.
    pub const SAMPLE_CHARS: usize = 120;

    pub fn is_empty(&self) -> bool {
        self.malformed == 0 && self.unsolicited == 0
    }

    /// Count one malformed line (its first bytes become the sample if it
    /// is the first).
    pub fn malformed_line(&mut self, line: &[u8], too_long: bool) {
        self.malformed += 1;
        self.too_long += u64::from(too_long);
        if self.sample.is_none() {
            let head = &line[..line.len().min(4 * Self::SAMPLE_CHARS)];
            self.sample = Some(String::from_utf8_lossy(head).chars().take(Self::SAMPLE_CHARS).collect());
        }
    }

    /// Both counts together (the sample of `self` first).
    pub fn plus(&self, other: &ProtocolErrors) -> ProtocolErrors {
        ProtocolErrors {
            malformed: self.malformed + other.malformed,
            too_long: self.too_long + other.too_long,
            unsolicited: self.unsolicited + other.unsolicited,
            sample: self.sample.clone().or_else(|| other.sample.clone()),
        }
    }

    /// For a message: how many, and an example.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} line(s) that were no probe answer ({} over the {} MiB limit)",
            self.malformed,
            self.too_long,
            airboot_proto::probe::MAX_LINE >> 20
        );
        if self.unsolicited > 0 {
            s.push_str(&format!(", {} answer(s) to no request", self.unsolicited));
        }
        if let Some(x) = &self.sample {
            s.push_str(&format!(", e.g. {x:?}"));
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct QemuInfo {
    pub argv: Vec<String>,
    pub exit: Option<String>,
    pub stderr_tail: Vec<String>,
    /// Helper processes still alive when the run ended (must be empty).
    pub leftover_processes: Vec<String>,
    /// The last lines of vhost-device-vsock's log, when it was used.
    pub helper_log_tail: Vec<String>,
}

/// One scenario's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub airboot_version: String,
    pub scenario: String,
    pub scenario_file: String,
    pub description: Option<String>,
    pub verdict: Verdict,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub wall_s: f64,
    pub accel: Option<Accel>,
    pub accel_reason: Option<String>,
    pub arch: Option<Arch>,
    #[serde(default)]
    pub arch_detection: ArchDetection,
    pub machine: MachineInfo,
    pub timeouts: Timeouts,
    pub image: ImageInfo,
    pub boot: BootInfo,
    pub network: NetworkInfo,
    pub milestones: Vec<Milestone>,
    /// Seconds from t0 to the first moment every expectation held (from
    /// the guest's own timestamps when a probe is used); `null` when the
    /// stack never ran.
    pub time_to_stack_s: Option<f64>,
    /// When the host saw the stack ready (≥ time_to_stack_s).
    pub stack_seen_s: Option<f64>,
    pub probe: ProbeInfo,
    /// Guest realtime − host realtime (median over the probe's answers), ms.
    pub clock_skew_ms: Option<f64>,
    /// Each expected image run once with no network (probe transports).
    pub image_runs: Vec<airboot_proto::probe::RunImageResult>,
    /// The guest's side of the air gap (probe transports).
    pub airgap: crate::airgap::Airgap,
    pub images: Vec<ImageRow>,
    pub containers: Vec<ContainerRow>,
    pub engine: Option<airboot_proto::EngineRecord>,
    /// Every image the engine loaded during this boot (`docker load`
    /// events), with when, from the guest's clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_loads: Vec<crate::run::ImageLoad>,
    /// The stack's units as the guest last reported them, with a failed
    /// or restarting unit's last error.
    #[serde(default)]
    pub units: Vec<airboot_proto::UnitRecord>,
    pub failures: Vec<Failure>,
    /// Why it failed: named causes with evidence and a fix
    /// (docs/diagnoses.md). Empty for a run that passed.
    #[serde(default)]
    pub diagnoses: Vec<airboot_model::Diagnosis>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
    /// A failed boot whose images or containers did not hold: the store as
    /// read offline from the disk the boot left (journal replayed on a
    /// copy), layer by layer against each diff_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_check: Option<OfflineStore>,
    /// `expect.read_only_root`, checked offline on the disk the boot left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root: Option<crate::readonly::ReadOnlyRootCheck>,
    /// `[[step]]`: what was done after this boot's verdict, in order, each
    /// reboot or power cut with the boot that followed it (whose full
    /// report is in its own folder).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// `airboot cut`: every cut and its verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub power_cuts: Vec<crate::cut::PowerCut>,
    /// `airboot cut` with `points = "all"`: every state of the window,
    /// its fingerprint class and outcome (the powered-on ones are also in
    /// `power_cuts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploration: Option<Box<crate::cut::explore::Exploration>>,
    pub status: StatusInfo,
    pub console: ConsoleInfo,
    pub qemu: QemuInfo,
}

impl Report {
    /// A report with only the identity filled in; the runner fills the rest
    /// as it learns it, so that even an aborted run writes what it knew.
    pub fn new(scenario: &str, scenario_file: &str, started_at: String) -> Report {
        Report {
            schema: SCHEMA.into(),
            airboot_version: env!("CARGO_PKG_VERSION").into(),
            scenario: scenario.into(),
            scenario_file: scenario_file.into(),
            description: None,
            verdict: Verdict::Error,
            started_at,
            wall_s: 0.0,
            accel: None,
            accel_reason: None,
            arch: None,
            arch_detection: ArchDetection::default(),
            machine: MachineInfo::default(),
            timeouts: Timeouts::default(),
            image: ImageInfo::default(),
            boot: BootInfo::default(),
            network: NetworkInfo::default(),
            milestones: Vec::new(),
            time_to_stack_s: None,
            stack_seen_s: None,
            probe: ProbeInfo::default(),
            clock_skew_ms: None,
            image_runs: Vec::new(),
            airgap: crate::airgap::Airgap::default(),
            images: Vec::new(),
            containers: Vec::new(),
            engine: None,
            image_loads: Vec::new(),
            units: Vec::new(),
            failures: Vec::new(),
            diagnoses: Vec::new(),
            steps: Vec::new(),
            store_check: None,
            read_only_root: None,
            notes: Vec::new(),
            power_cuts: Vec::new(),
            exploration: None,
            status: StatusInfo::default(),
            console: ConsoleInfo { file: "console.log".into(), ..Default::default() },
            qemu: QemuInfo::default(),
        }
    }

    /// Record a failure; the verdict becomes the worse of what it was
    /// and the failure's class (`fail` or `error`).
    pub fn fail(&mut self, f: Failure) {
        self.verdict = self.verdict.worst(f.code.verdict());
        self.failures.push(f);
    }

    /// Record a failure that settles the verdict as `error` whatever came
    /// before (a run that could not be judged): a harness error.
    pub fn error(&mut self, code: FailureCode, message: String, evidence: Option<String>) {
        self.verdict = Verdict::Error;
        self.failures.push(Failure { code, message, evidence });
    }
}

impl crate::cut::RebootFindings {
    /// From the report of the boot that powered a crash state on. The
    /// engine came up when it reached the `engine` milestone, or when its
    /// last state was `up` or `failing` (running and answering, its API
    /// failing: a damaged store, not a dead device). An engine the probe
    /// last saw down or still starting never came up: BRICKED.
    pub fn of(r: &Report) -> crate::cut::RebootFindings {
        use airboot_proto::EngineState;
        let last = r.engine.as_ref().map(|e| e.state);
        crate::cut::RebootFindings {
            passed: r.verdict == Verdict::Pass,
            engine_up: r.milestones.iter().any(|m| m.name == "engine")
                || matches!(last, Some(EngineState::Up | EngineState::Failing)),
            failures: r.failures.iter().map(Failure::to_string).collect(),
            diagnosis: r.diagnoses.first().cloned(),
        }
    }
}

/// One line of the run index (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    pub scenario: String,
    /// `<arch>::<name>`.
    pub test_name: String,
    pub verdict: Verdict,
    /// The scenario's declared outcome and whether the run matched it.
    pub declared: String,
    pub as_declared: bool,
    /// Folder of the scenario's report.json, relative to run.json.
    pub dir: String,
    pub time_to_stack_s: Option<f64>,
    pub failures: Vec<String>,
}

/// The run index written next to the reports of one `airboot run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIndex {
    pub schema: String,
    pub started_at: String,
    pub verdict: Verdict,
    pub exit_code: i32,
    /// Boots at once (`--jobs`). Absent (0 or 1): one at a time.
    #[serde(default, skip_serializing_if = "is_one")]
    pub jobs: usize,
    pub scenarios: Vec<RunEntry>,
}

/// Exit code for a set of verdicts: 2 if any error, else 1 if any failure,
/// else 0.
pub fn exit_code<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> i32 {
    verdicts.into_iter().fold(Verdict::Pass, |a, b| a.worst(*b)).exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_add_up_and_keep_the_first_sample() {
        let a = ProtocolErrors { malformed: 2, too_long: 1, unsolicited: 0, sample: None };
        let b = ProtocolErrors { malformed: 3, too_long: 2, unsolicited: 4, sample: Some("{garbage".into()) };
        let c = a.plus(&b);
        assert_eq!((c.malformed, c.too_long, c.unsolicited), (5, 3, 4));
        assert_eq!(c.sample.as_deref(), Some("{garbage"), "the only sample there is");
        let first = ProtocolErrors { sample: Some("first".into()), ..a };
        assert_eq!(first.plus(&b).sample.as_deref(), Some("first"));
    }

    #[test]
    fn the_engine_came_up_only_if_it_ran() {
        use airboot_proto::{EngineRecord, EngineState};
        let boot = |state: Option<EngineState>, milestone: bool| {
            let mut r = Report::new("cut-01-reboot", "s.toml", "now".into());
            r.verdict = Verdict::Fail;
            r.engine = state.map(|state| EngineRecord { name: "docker".into(), state, ..Default::default() });
            if milestone {
                let (source, evidence) = ("status".into(), "probe status at 9.0s".into());
                r.milestones.push(Milestone { name: "engine".into(), t_s: 9.0, source, evidence });
            }
            let (code, message) = (FailureCode::Timeout, "the stack never became ready".into());
            r.failures.push(Failure { code, message, evidence: None });
            r
        };
        let up = |state, milestone| crate::cut::RebootFindings::of(&boot(state, milestone)).engine_up;
        assert!(!up(None, false), "no word from the engine");
        assert!(!up(Some(EngineState::Down), false), "a record saying it is down is not an engine that came up");
        assert!(!up(Some(EngineState::Starting), false));
        assert!(up(Some(EngineState::Failing), false), "it runs and answers");
        assert!(up(Some(EngineState::Up), false));
        assert!(up(Some(EngineState::Down), true), "it came up, then went down");
        let f = crate::cut::RebootFindings::of(&boot(Some(EngineState::Down), false));
        assert!(!f.passed);
        assert_eq!(f.failures, ["timeout: the stack never became ready"]);
        assert_eq!(f.diagnosis, None);
        // The first diagnosis is the one the cut carries.
        let mut r = boot(Some(EngineState::Down), false);
        let d = |code, summary: &str| airboot_model::Diagnosis {
            code,
            summary: summary.into(),
            evidence: vec![],
            fix: String::new(),
            confidence: Default::default(),
            ended_after_s: None,
        };
        r.diagnoses.push(d(airboot_model::DiagnosisCode::StoreReadOnly, "first"));
        r.diagnoses.push(d(airboot_model::DiagnosisCode::EngineNotStarted, "second"));
        let f = crate::cut::RebootFindings::of(&r);
        assert_eq!(
            f.diagnosis.map(|d| (d.code, d.summary)),
            Some((airboot_model::DiagnosisCode::StoreReadOnly, "first".into()))
        );
    }

    #[test]
    fn protocol_errors_count_sample_sum_and_serialize_only_when_present() {
        let mut a = ProtocolErrors::default();
        assert!(a.is_empty());
        let mut huge = vec![b'x'; 10_000];
        huge.extend_from_slice("\u{e9}".as_bytes());
        a.malformed_line(&huge, true);
        a.malformed_line(b"second", false);
        assert_eq!((a.malformed, a.too_long, a.unsolicited), (2, 1, 0));
        assert_eq!(a.sample.as_deref(), Some("x".repeat(120).as_str()), "the first line, cut");
        let b = ProtocolErrors { unsolicited: 3, sample: Some("other".into()), ..Default::default() };
        assert!(!b.is_empty(), "an unsolicited answer alone is worth reporting");
        let sum = a.plus(&b);
        assert_eq!((sum.malformed, sum.too_long, sum.unsolicited), (2, 1, 3));
        assert_eq!(sum.sample, a.sample);
        assert_eq!(ProtocolErrors::default().plus(&b).sample.as_deref(), Some("other"));
        let d = sum.describe();
        assert!(
            d.starts_with(
                "2 line(s) that were no probe answer (1 over the 1 MiB limit), 3 answer(s) to no request, e.g. \"xxx"
            ),
            "{d}"
        );
        assert!(!a.describe().contains("no request"), "{}", a.describe());
        let mut r = Report::new("s", "s.toml", "now".into());
        assert!(serde_json::to_value(&r).unwrap()["probe"].get("protocol_errors").is_none());
        r.probe.protocol_errors = sum;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["probe"]["protocol_errors"]["unsolicited"], 3);
        assert_eq!(serde_json::from_value::<Report>(v).unwrap(), r);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[Verdict::Pass, Verdict::Pass]), 0);
        assert_eq!(exit_code(&[Verdict::Pass, Verdict::Fail]), 1);
        assert_eq!(exit_code(&[Verdict::Error, Verdict::Fail]), 2);
    }

    #[test]
    fn report_round_trips_with_the_documented_names() {
        let mut r = Report::new("s", "s.toml", "2026-01-01T00:00:00Z".into());
        r.error(FailureCode::BadInput, "why".into(), None);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema"], "airboot.report/v1");
        assert_eq!(v["verdict"], "error");
        assert!(v["time_to_stack_s"].is_null());
        assert_eq!(v["network"]["nics"], 0);
        assert!(v["probe"]["transport"].is_null());
        assert_eq!(v["airgap"]["checked"], false);
        assert!(v["airgap"]["egress_attempts"].as_array().unwrap().is_empty());
        assert_eq!(v["failures"][0]["code"], FailureCode::BadInput.as_str());
        for key in ["image", "milestones", "images", "containers", "accel", "accel_reason", "arch"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}

/// One `[[step]]` as it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepRecord {
    pub name: String,
    /// `run `…``, `reboot`, `power cut`.
    pub action: String,
    pub ok: bool,
    /// What happened, in words (why it failed, when it did).
    pub detail: String,
    /// When it began and ended, seconds from the t0 of the boot it ran in.
    pub start_s: f64,
    pub end_s: f64,
    /// A `run` step: the command's exit status and the end of its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<airboot_proto::probe::ExecResult>,
    /// A reboot or a power cut: the boot that followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_boot: Option<NextBoot>,
}

/// The boot after a reboot or power cut step, in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NextBoot {
    /// Its report folder, relative to this report's.
    pub dir: String,
    pub verdict: Verdict,
    pub time_to_stack_s: Option<f64>,
    pub failures: Vec<String>,
    pub diagnoses: Vec<String>,
    /// Images the engine loaded during it.
    pub image_loads: usize,
    /// From its first image load to its last, seconds (guest clock).
    pub load_s: Option<f64>,
    /// Bytes used on the store's filesystem at its end, and the change
    /// since the end of the boot before it.
    pub store_used_bytes: Option<u64>,
    pub store_growth_bytes: Option<i64>,
}

impl NextBoot {
    /// The boot `next` (report folder `dir`) that followed `prev`.
    pub fn of(dir: &str, prev: &Report, next: &Report) -> NextBoot {
        let used = |r: &Report| r.engine.as_ref().and_then(|e| e.store_fs).map(|f| f.used_bytes);
        let (first, last) = next.image_loads.iter().fold((None::<f64>, None::<f64>), |(a, b), l| {
            (Some(a.map_or(l.t_s, |a| a.min(l.t_s))), Some(b.map_or(l.t_s, |b| b.max(l.t_s))))
        });
        NextBoot {
            dir: dir.to_string(),
            verdict: next.verdict,
            time_to_stack_s: next.time_to_stack_s,
            failures: next.failures.iter().map(Failure::to_string).collect(),
            diagnoses: next.diagnoses.iter().map(|d| d.code.to_string()).collect(),
            image_loads: next.image_loads.len(),
            load_s: first.zip(last).map(|(a, b)| b - a),
            store_used_bytes: used(next),
            store_growth_bytes: used(next).zip(used(prev)).map(|(n, p)| n as i64 - p as i64),
        }
    }
}

/// The store read offline from the disk a boot left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfflineStore {
    /// The root filesystem after journal replay (e2fsck on a copy).
    pub fs: crate::cut::FsFindings,
    pub check: crate::cut::store::StoreCheck,
}

/// What identifies an error the guest reports over time: the engine's
/// detail and a unit's error end with states that change
/// (`…; docker.service is activating, system is running`), the error
/// before them does not.
pub fn error_key(s: &str) -> &str {
    s.split("; ").next().unwrap_or(s)
}

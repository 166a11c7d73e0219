//! Failure codes: the stable names scripts and declared outcomes match on.
//!
//! Each code belongs to one class: `fail` (the image is wrong) or `error`
//! (airboot could not judge), and a report's verdict is the worst class
//! among its failures. The table below is the only place a code is spelt.

use crate::Verdict;

/// Declares the codes with their spelling, class and meaning.
macro_rules! codes {
    ($( $(#[$m:meta])* $variant:ident = $text:literal, $class:ident, $meaning:literal; )+) => {
        words! {
            /// Why a run did not pass.
            pub enum FailureCode { $( $(#[$m])* $variant = $text ),+ }
        }

        impl FailureCode {
            /// `Fail` when this code means the image is wrong, `Error`
            /// when it means airboot could not judge.
            pub fn verdict(self) -> Verdict {
                match self { $(FailureCode::$variant => Verdict::$class),+ }
            }

            /// What the code means, in one line.
            pub fn meaning(self) -> &'static str {
                match self { $(FailureCode::$variant => $meaning),+ }
            }
        }
    };
}

codes! {
    // What the engine lists and runs.
    ImageMissing = "image-missing", Fail, "an expected image is not in the engine's image list";
    ImageIdMismatch = "image-id-mismatch", Fail, "an expected image is listed with another image ID than expected";
    ImageArchMismatch = "image-arch-mismatch", Fail, "an expected image is built for another platform than the guest's";
    UnexpectedImage = "unexpected-image", Fail, "the engine lists an image the scenario does not expect";
    UntaggedImage = "untagged-image", Fail, "the engine lists an untagged image (often what an interrupted load leaves)";
    ImageRunFailed = "image-run-failed", Fail, "an expected image is listed but does not run with no network";
    ContainerMissing = "container-missing", Fail, "an expected container does not exist";
    ContainerWrongImage = "container-wrong-image", Fail, "an expected container runs another image than expected";
    ContainerNotRunning = "container-not-running", Fail, "an expected container exists but is not running";
    ContainerNoHealthcheck = "container-no-healthcheck", Fail, "a container that must be healthy has no healthcheck";
    ContainerUnhealthy = "container-unhealthy", Fail, "an expected container is not healthy";
    EngineDown = "engine-down", Fail, "the container engine is not running";
    EngineError = "engine-error", Fail, "the container engine runs, but its API fails (e.g. HTTP 500 from a damaged store)";
    ReadOnlyRoot = "read-only-root", Fail, "the root filesystem `expect.read_only_root` wants read-only was mounted read-write or written to, or the store's writes did not land in its overlay's upper directory";
    StackNotReady = "stack-not-ready", Fail, "the guest's stack settled without meeting the expectations";
    // The air gap.
    EgressAttempt = "egress-attempt", Fail, "something in the guest tried to reach a network";
    AirgapNic = "airgap-nic", Fail, "the guest has a physical network interface";
    AirgapRoute = "airgap-route", Fail, "the guest has a route out";
    NetworkPresent = "network-present", Fail, "the VM had a network device: the run does not prove an offline start";
    // Time.
    OverBudget = "over-budget", Fail, "the stack ran, later than its time-to-stack budget";
    MilestoneLate = "milestone-late", Fail, "a milestone came after its budget, or never";
    Timeout = "timeout", Fail, "the run was not decided before its timeout";
    Undecided = "undecided", Fail, "the run ended before it was decided";
    StepFailed = "step-failed", Fail, "a `[[step]]` failed: its command did not exit as required, the guest did not reboot, or the boot after it failed";
    LoginFailed = "login-failed", Error, "airboot could not log in on the serial console with the scenario's `[image] login`";
    NoReporter = "no-reporter", Error, "nothing in the guest reports its stack (no probe, no status block, no login): airboot cannot judge it";
    // The console.
    KernelPanic = "kernel-panic", Fail, "the guest kernel panicked";
    EmergencyMode = "emergency-mode", Fail, "systemd dropped to emergency mode";
    UefiShell = "uefi-shell", Fail, "the firmware found no bootable loader and dropped to the UEFI shell";
    InitramfsShell = "initramfs-shell", Fail, "the initramfs could not mount the root filesystem";
    Oom = "oom", Fail, "the guest ran out of memory";
    FailPattern = "fail-pattern", Fail, "the console matched one of the scenario's fail_on patterns";
    VmExited = "vm-exited", Fail, "QEMU exited before the run was decided";
    // Before anything boots: the image and the scenario.
    BadInput = "bad-input", Error, "the scenario or an input it names cannot be used as given";
    WrongArch = "wrong-arch", Error, "the image is for another architecture than the scenario asks for";
    UnknownArch = "unknown-arch", Error, "nothing tells the image's architecture and the scenario does not say";
    ConflictingArch = "conflicting-arch", Error, "the image's parts name different architectures";
    UnsupportedArch = "unsupported-arch", Error, "the image is for an architecture airboot cannot emulate";
    NoRootPartition = "no-root-partition", Error, "no root filesystem was found in the image";
    ImageUnreadable = "image-unreadable", Error, "the input image could not be read";
    InputModified = "input-modified", Error, "the input image changed during the run";
    FixtureNotBuilt = "fixture-not-built", Error, "the fixture is not built and building was not allowed";
    FixtureBuild = "fixture-build", Error, "building the fixture failed";
    BoardKernel = "board-kernel", Error, "the generic kernel for board mode could not be prepared";
    // The host.
    QemuMissing = "qemu-missing", Error, "the QEMU system emulator for the architecture is not installed";
    FirmwareMissing = "firmware-missing", Error, "no UEFI firmware for the architecture was found";
    Transport = "transport", Error, "the transport to the probe is not available on this host";
    Workdir = "workdir", Error, "a temporary folder or file could not be made";
    Overlay = "overlay", Error, "the throwaway overlay over the input image could not be made";
    Runtime = "runtime", Error, "the async runtime could not start";
    ReportDir = "report-dir", Error, "the report folder could not be created or written, or another run is writing it";
    Qemu = "qemu", Error, "QEMU or its helper failed to start or to talk";
    LeftoverProcess = "leftover-process", Error, "a QEMU or helper process outlived the run";
    StatusProtocol = "status-protocol", Error, "the guest's status reporter speaks a protocol airboot does not know";
    ProbeProtocol = "probe-protocol", Error, "the probe's transport carried only lines that are no probe answers (malformed, over 1 MiB, or answers to no request)";
    PowerCut = "power-cut", Error, "the power cuts could not be placed or judged";
    Interrupted = "interrupted", Error, "airboot was interrupted (Ctrl-C, SIGTERM)";
}
impl<'de> serde::Deserialize<'de> for FailureCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FailureCode::parse(&s).ok_or_else(|| {
            let hint = match FailureCode::closest(&s) {
                Some(c) => format!(" (did you mean {:?}?)", c.as_str()),
                None => String::new(),
            };
            serde::de::Error::custom(format!(
                "unknown failure code {s:?}{hint}: the codes are listed in README.md (report.json, `failures`)"
            ))
        })
    }
}

impl FailureCode {
    /// The code nearest to a misspelt one (at most 3 edits away).
    pub fn closest(s: &str) -> Option<FailureCode> {
        FailureCode::ALL.iter().map(|c| (edits(s, c.as_str()), *c)).filter(|(d, _)| *d <= 3).min().map(|(_, c)| c)
    }
}

/// Levenshtein distance, for suggestions.
pub fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// One reason a run did not pass, as the report keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
    /// The console line, status block or process output that shows it.
    pub evidence: Option<String>,
}

impl Failure {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into(), evidence: None }
    }

    pub fn with_evidence(mut self, evidence: impl Into<String>) -> Failure {
        self.evidence = Some(evidence.into());
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// One reason the stack is not (yet) what the scenario expects: a
/// failure once the run is decided, a note of what is still missing
/// before.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub code: FailureCode,
    pub message: String,
}

impl Problem {
    pub fn new(code: FailureCode, message: impl Into<String>) -> Problem {
        Problem { code, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kebab_case_unique_and_classed() {
        let mut seen = std::collections::BTreeSet::new();
        for c in FailureCode::ALL {
            let s = c.as_str();
            assert!(s.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-'), "{s}");
            assert!(seen.insert(s), "{s} twice");
            assert_ne!(c.verdict(), Verdict::Pass, "{s}");
            assert!(!c.meaning().is_empty());
            assert_eq!(FailureCode::parse(s), Some(*c));
        }
        assert_eq!(FailureCode::ImageMissing.verdict(), Verdict::Fail);
        assert_eq!(FailureCode::Interrupted.verdict(), Verdict::Error);
        let f: Failure = serde_json::from_str(r#"{"code":"engine-error","message":"m","evidence":null}"#).unwrap();
        assert_eq!(f.code, FailureCode::EngineError);
        assert_eq!(f.to_string(), "engine-error: m");
        let e = serde_json::from_str::<FailureCode>("\"image-mising\"").unwrap_err().to_string();
        assert!(e.starts_with("unknown failure code \"image-mising\" (did you mean \"image-missing\"?)"), "{e}");
        let e = serde_json::from_str::<FailureCode>("\"zzzzzzzzzz\"").unwrap_err().to_string();
        assert!(!e.contains("did you mean"), "{e}");
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    /// README.md's table of failure codes is this enum: each code once,
    /// with its class and meaning, and no code the enum does not have.
    #[test]
    fn the_readme_lists_every_code_as_the_model_has_it() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<&str> = readme
            .lines()
            .skip_while(|l| *l != "### Failure codes")
            .skip_while(|l| !l.starts_with("| `"))
            .take_while(|l| l.starts_with("| `"))
            .collect();
        let want: Vec<String> = FailureCode::ALL
            .iter()
            .map(|c| {
                let class = if c.verdict() == Verdict::Fail { "fail" } else { "error" };
                format!("| `{}` | {class} | {} |", c.as_str(), c.meaning())
            })
            .collect();
        assert_eq!(rows, want, "README.md's failure codes differ from the model's table");
    }
}

//! Diagnoses: *why* a run failed, one named cause each, with the evidence
//! that shows it and the fix a user would apply. A diagnosis explains a
//! failure (the `timeout` or `engine-down` stays); it never replaces one.
//!
//! The table below is the only place a diagnosis is spelt: its code, what
//! it means, the evidence airboot looks for, and the fix. `docs/diagnoses.md`
//! and `airboot explain` are checked against it.

/// Declares the diagnosis codes with their summary, evidence rule and fix.
macro_rules! diagnoses {
    ($( $variant:ident = $text:literal, $summary:literal, $rule:literal, $fix:literal; )+) => {
        words! {
            /// A named cause of a failed first boot.
            pub enum DiagnosisCode { $( $variant = $text ),+ }
        }
        deserialize_words!(DiagnosisCode, "diagnosis");

        impl DiagnosisCode {
            /// What happened, in one line.
            pub fn summary(self) -> &'static str {
                match self { $(DiagnosisCode::$variant => $summary),+ }
            }
            /// The evidence airboot needs before it names this cause.
            pub fn rule(self) -> &'static str {
                match self { $(DiagnosisCode::$variant => $rule),+ }
            }
            /// What a user does about it.
            pub fn fix(self) -> &'static str {
                match self { $(DiagnosisCode::$variant => $fix),+ }
            }
        }
    };
}

diagnoses! {
    StoreReadOnly = "store-read-only",
        "the engine's data root is on a read-only filesystem",
        "the engine's error (its unit's journal, its API) or the console says `read-only file system` about a path under the engine's store (/var/lib/docker, /var/lib/containers, /var/lib/containerd)",
        "mount a writable filesystem on the store's path (a data partition, or an overlay whose upper directory is writable): on Avocado OS, list the store under `var_files`, not in the read-only part";
    StoreNoSpace = "store-no-space",
        "the filesystem holding the store, or a first-boot load, ran out of space",
        "the engine's error or the console says `no space left on device`",
        "grow the partition holding /var (the store needs the images' unpacked size plus what a load writes beside it), or load fewer archives at first boot";
    StorageDriverMismatch = "storage-driver-mismatch",
        "the engine could not use the storage driver the store was seeded with, so it sees none of the seeded images",
        "the engine's error or the console names the storage driver failing (`error initializing graphdriver`, `driver not supported`, `prior storage driver … failed`, overlay unknown to the kernel); or, as a guess, the engine runs and lists no image at all while every expected image is missing",
        "seed the store with a driver the device kernel has (overlay2 needs CONFIG_OVERLAY_FS), and keep `storage-driver` in daemon.json the same at build time and on the device";
    DataRootMismatch = "data-root-mismatch",
        "the engine keeps its store somewhere else than where the image seeded it, so it sees none of the seeded images",
        "the engine runs, lists no image at all while every expected image is missing, and says its data root is not its default (/var/lib/docker, /var/lib/containers/storage)",
        "point `data-root` in daemon.json (Podman: `graphroot` in storage.conf) at the seeded store, or seed the store where the device's configuration says";
    KernelMissingFeatures = "kernel-missing-features",
        "the device kernel lacks something the engine needs (cgroups, overlay, veth, bridge, netfilter)",
        "the engine's error or the console says the kernel lacks a feature (`Your kernel does not support …`, `modprobe: FATAL: Module … not found`, iptables `Table does not exist`, `failed to create NAT chain`, `Error initializing network controller`)",
        "enable what moby's contrib/check-config.sh lists as required in the device kernel's configuration, or ship the modules; run the engine with `--iptables=false` only if nothing needs bridge networking";
    EngineCrashLoop = "engine-crash-loop",
        "the engine's unit kept failing until systemd stopped restarting it",
        "the console or the engine's state says its unit hit the start limit (`start-limit-hit`, `Start request repeated too quickly`); the engine's last error is quoted",
        "fix the error the engine quotes (the store, its configuration, the kernel); `systemctl reset-failed` only hides it";
    EngineNotStarted = "engine-not-started",
        "the engine's unit never started: it is masked, disabled, or nothing pulls it in",
        "the engine is down and its unit is inactive, masked or disabled, with no error of its own",
        "enable the engine's unit (and its socket) in the image, and check that the target the image boots into wants it";
    ImageArchMismatch = "image-arch-mismatch",
        "an expected image is built for another platform than the device",
        "the engine lists the image with another platform than the guest's, or the console says `exec format error`",
        "build or pull the image for the device's platform (`docker buildx build --platform`, or the right manifest entry when saving it)";
    NetworkDependentStart = "network-dependent-start",
        "something in the boot tried to reach a network: it will hang or fail on a device with none",
        "the probe saw a connection attempt or a DNS query (unit, process and destination), or the console quotes a registry or name lookup failing",
        "make the named unit or container start without the network: seed the image instead of pulling it, drop `pull: always` and `--pull`, wait on nothing network-online";
    LoadEveryBoot = "load-every-boot",
        "the first-boot loader loads the image archives again on every boot",
        "a `reboot` step's next boot, on the disk the first boot left, shows the engine loading images again (its `load` events); the report gives that boot's load time and the store's growth",
        "make the loader run once: a marker file it writes last (`ConditionPathExists=!` on the unit), or check the engine for each image before loading it";
    StoreCorrupt = "store-corrupt",
        "a layer in the engine's store does not hold what its digest says: its files were damaged after it was registered",
        "after a failed boot, the store read offline from the disk the boot left (journal replayed on a copy) has a layer whose files, rebuilt into its tar, do not match its diff_id, or a record that does not match its digest",
        "rebuild the store from the image archives (or `docker load` them again on the device) and find what wrote under it: a power cut during a load without a sync, a copy of the store done file by file, a filesystem repair";
    ClockBeforeImage = "clock-before-image",
        "the device's clock at first boot is earlier than what its images or certificates were made for, and a health check fails on it",
        "an expected container's health check fails, and its output speaks of a time (`not yet valid`, `expired`, a clock) or the device's clock is more than a day behind the host's (no battery-backed clock, no network time); made only when a health check breaks",
        "give the device a time source it has offline (a battery-backed RTC, a clock saved at shutdown such as systemd-timesyncd's, or a build-time floor: /usr/lib/clock-epoch), and do not make health checks depend on the wall clock before it is set";
    ContainerCrashLoop = "container-crash-loop",
        "an expected container keeps exiting and being restarted",
        "an expected container is `restarting`, or `exited` with a non-zero code, in the engine's status",
        "read the container's logs (`docker logs NAME` on the device): its entrypoint fails offline, often on a missing file, device or network name";
}

/// How sure a diagnosis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// The evidence names the cause.
    #[default]
    Certain,
    /// The evidence fits the cause, but does not name it.
    Guess,
}

/// One line of evidence: where it came from and, when known, when.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DiagEvidence {
    /// `console`, `engine` (the engine's own error: journal or API),
    /// `status` (what the engine listed), `airgap`, `failure`.
    pub source: String,
    /// Seconds since power-on (t0), when the source is timed.
    #[serde(default)]
    pub t_s: Option<f64>,
    pub line: String,
}

/// A named cause, its evidence and the fix.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Diagnosis {
    pub code: DiagnosisCode,
    /// What happened here (the code's summary, made specific).
    pub summary: String,
    pub evidence: Vec<DiagEvidence>,
    pub fix: String,
    #[serde(default)]
    pub confidence: Confidence,
    /// Seconds from its earliest timed evidence to the end of the run
    /// (wall time, not scaled): how fast a settling cause ended the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_after_s: Option<f64>,
}

impl DiagnosisCode {
    /// A cause that settles the run: once its evidence shows, nothing
    /// that follows can make the stack run, so the run must end within
    /// [`FAIL_FAST_S`] of it, not at the timeout.
    pub fn settles_run(self) -> bool {
        matches!(self, DiagnosisCode::StoreReadOnly | DiagnosisCode::StoreNoSpace | DiagnosisCode::EngineCrashLoop)
    }
}

/// How soon after its evidence a settling cause must have ended the run,
/// seconds of wall time.
pub const FAIL_FAST_S: f64 = 10.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_text_and_round_trips() {
        for c in DiagnosisCode::ALL {
            assert_eq!(DiagnosisCode::parse(c.as_str()), Some(*c));
            for t in [c.summary(), c.rule(), c.fix()] {
                assert!(t.len() > 20, "{c}: {t:?}");
            }
        }
        let e = serde_json::from_str::<DiagnosisCode>("\"store-readonly\"").unwrap_err().to_string();
        assert!(e.contains("store-read-only"), "{e}");
    }
}

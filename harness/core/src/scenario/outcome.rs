//! `[outcome]`: how a negative control must fail.

use airboot_model::{DiagnosisCode, FailureCode, Verdict};
use serde::Deserialize;

/// What the run must end as. Positive scenarios leave it out (pass);
/// negative controls declare how they must fail.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Failure codes that must be among the run's failures.
    pub failures: Vec<FailureCode>,
    /// Text that must appear in some failure's message or evidence.
    pub contains: Vec<String>,
    /// When given, exactly these diagnoses (docs/diagnoses.md), in any order.
    pub diagnoses: Option<Vec<DiagnosisCode>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutcome {
    verdict: Option<Verdict>,
    #[serde(default)]
    failures: Vec<FailureCode>,
    #[serde(default)]
    contains: Vec<String>,
    diagnoses: Option<Vec<DiagnosisCode>>,
}

impl From<RawOutcome> for Outcome {
    fn from(raw: RawOutcome) -> Outcome {
        Outcome {
            verdict: raw.verdict.unwrap_or(if raw.failures.is_empty() { Verdict::Pass } else { Verdict::Fail }),
            failures: raw.failures,
            contains: raw.contains,
            diagnoses: raw.diagnoses,
        }
    }
}

//! A scenario's declared outcome (`[outcome]`): negative controls say how
//! they must fail, so a test runner (or `airboot run --check-outcomes`) can
//! tell "failed as it should" from "broke".

use crate::report::{Report, Verdict};
use crate::scenario::Outcome;

/// `Ok` when the report shows what the scenario declares, else what differs.
pub fn check(o: &Outcome, r: &Report) -> Result<(), String> {
    let mut problems = Vec::new();
    if r.verdict != o.verdict {
        problems.push(format!("verdict {} (declared {})", r.verdict.as_str(), o.verdict.as_str()));
    }
    for code in &o.failures {
        if !r.failures.iter().any(|f| &f.code == code) {
            problems.push(format!("no {code} failure"));
        }
    }
    for text in &o.contains {
        let found = r.failures.iter().any(|f| {
            f.message.contains(text.as_str()) || f.evidence.as_deref().is_some_and(|e| e.contains(text.as_str()))
        });
        if !found {
            problems.push(format!("no failure mentions {text:?}"));
        }
    }
    if let Some(want) = &o.diagnoses {
        let mut got: Vec<_> = r.diagnoses.iter().map(|d| d.code).collect();
        let mut want = want.clone();
        got.sort();
        got.dedup();
        want.sort();
        want.dedup();
        if got != want {
            let names = |v: &[airboot_model::DiagnosisCode]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                }
            };
            problems.push(format!("diagnoses {} (declared {})", names(&got), names(&want)));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let actual: Vec<String> = r.failures.iter().map(|f| format!("{}: {}", f.code, f.message)).collect();
    Err(format!(
        "{} — the run's failures: {}",
        problems.join("; "),
        if actual.is_empty() { "none".to_string() } else { actual.join(" | ") }
    ))
}

impl Outcome {
    /// "pass", or "fail (image-missing)".
    pub fn describe(&self) -> String {
        if self.verdict == Verdict::Pass && self.failures.is_empty() {
            return "pass".into();
        }
        if self.failures.is_empty() {
            self.verdict.as_str().to_string()
        } else {
            format!(
                "{} ({})",
                self.verdict.as_str(),
                self.failures.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_model::{Failure, FailureCode};

    fn report(verdict: Verdict, failures: &[(FailureCode, &str)]) -> Report {
        let mut r = Report::new("s", "s.toml", "now".into());
        r.verdict = verdict;
        r.failures = failures.iter().map(|(c, m)| Failure { code: *c, message: (*m).into(), evidence: None }).collect();
        r
    }

    #[test]
    fn declared_diagnoses_must_be_exactly_the_runs() {
        use airboot_model::{Confidence, Diagnosis, DiagnosisCode};
        let o = Outcome {
            verdict: Verdict::Fail,
            failures: vec![FailureCode::EngineDown],
            contains: vec![],
            diagnoses: Some(vec![DiagnosisCode::StoreReadOnly]),
        };
        let mut r = report(Verdict::Fail, &[(FailureCode::EngineDown, "docker is not running")]);
        let e = check(&o, &r).unwrap_err();
        assert!(e.contains("diagnoses none (declared store-read-only)"), "{e}");
        let d = |code| Diagnosis {
            code,
            summary: "s".into(),
            evidence: vec![],
            fix: "f".into(),
            confidence: Confidence::Certain,
            ended_after_s: None,
        };
        r.diagnoses.push(d(DiagnosisCode::StoreReadOnly));
        assert_eq!(check(&o, &r), Ok(()));
        r.diagnoses.push(d(DiagnosisCode::StoreNoSpace));
        assert!(check(&o, &r).unwrap_err().contains("diagnoses store-read-only, store-no-space"), "exactly, not among");
    }

    #[test]
    fn declared_failures_match_or_say_what_differs() {
        let o = Outcome {
            verdict: Verdict::Fail,
            failures: vec![FailureCode::ImageMissing],
            contains: vec!["fixture/nginx:1".into()],
            diagnoses: None,
        };
        assert!(
            check(
                &o,
                &report(
                    Verdict::Fail,
                    &[(FailureCode::ImageMissing, "image fixture/nginx:1 is not in `docker images`")]
                )
            )
            .is_ok()
        );
        let e = check(&o, &report(Verdict::Pass, &[])).unwrap_err();
        assert!(e.contains("verdict pass (declared fail)") && e.contains("no image-missing failure"), "{e}");
        let e = check(&o, &report(Verdict::Fail, &[(FailureCode::Timeout, "timed out")])).unwrap_err();
        assert!(e.contains("timeout: timed out"), "the actual failures are shown: {e}");
        assert!(check(&Outcome::default(), &report(Verdict::Pass, &[])).is_ok());
        assert!(check(&Outcome::default(), &report(Verdict::Fail, &[(FailureCode::Oom, "y")])).is_err());
        assert_eq!(o.describe(), "fail (image-missing)");
        assert_eq!(Outcome::default().describe(), "pass");
    }
}

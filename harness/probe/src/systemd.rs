//! What systemd says about units, through `systemctl show` (one call for
//! all units of interest).

use std::process::Command;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub id: String,
    pub active: String,
    pub sub: String,
    pub condition_result: String,
    pub condition_timestamp: u64,
}

impl UnitState {
    /// Skipped: its condition was evaluated and failed.
    pub fn skipped(&self) -> bool {
        self.active == "inactive" && self.condition_result == "no" && self.condition_timestamp != 0
    }
}

/// Parse `systemctl show --property=…` output for several units (blocks
/// separated by empty lines).
pub fn parse_show(text: &str) -> Vec<UnitState> {
    let mut out = Vec::new();
    let mut cur = UnitState::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !cur.id.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "Id" => cur.id = v.to_string(),
            "ActiveState" => cur.active = v.to_string(),
            "SubState" => cur.sub = v.to_string(),
            "ConditionResult" => cur.condition_result = v.to_string(),
            "ConditionTimestampMonotonic" => cur.condition_timestamp = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    out
}

pub fn show(units: &[String]) -> Vec<UnitState> {
    if units.is_empty() {
        return Vec::new();
    }
    let out = Command::new("systemctl")
        .arg("show")
        .arg("--property=Id,ActiveState,SubState,ConditionResult,ConditionTimestampMonotonic")
        .args(units)
        .output();
    match out {
        Ok(o) => parse_show(&String::from_utf8_lossy(&o.stdout)),
        Err(_) => Vec::new(),
    }
}

/// `systemctl is-system-running`: initializing, starting, running, degraded, …
pub fn system_state() -> String {
    Command::new("systemctl")
        .arg("is-system-running")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_units() {
        let t = "ActiveState=active\nSubState=running\nConditionResult=yes\nConditionTimestampMonotonic=123\nId=docker.service\n\nId=airboot-load-images.service\nActiveState=inactive\nSubState=dead\nConditionResult=no\nConditionTimestampMonotonic=456\n";
        let u = parse_show(t);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].id, "docker.service");
        assert!(!u[0].skipped());
        assert!(u[1].skipped());
        let pending = parse_show(
            "Id=x.service\nActiveState=inactive\nConditionResult=no\nConditionTimestampMonotonic=0\n",
        );
        assert!(
            !pending[0].skipped(),
            "a condition never evaluated is not a skip"
        );
    }
}

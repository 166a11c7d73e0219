//! What systemd says about units, through `systemctl show` (one call for
//! all units of interest), with systemd's own timestamps.

use std::process::Command;

use airboot_proto::probe::UnitInfo;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    pub id: String,
    pub active: String,
    pub sub: String,
    pub result: String,
    pub condition_result: String,
    pub condition_timestamp: u64,
    /// CLOCK_MONOTONIC µs when the unit became active (0: never).
    pub active_enter_us: u64,
    /// CLOCK_MONOTONIC µs when it started activating (0: never).
    pub inactive_exit_us: u64,
    /// Where the state and times come from when not from systemd.
    pub source: String,
    /// How often systemd restarted it automatically (`NRestarts`).
    pub restarts: u32,
}

impl UnitState {
    /// Skipped: its condition was evaluated and failed.
    pub fn skipped(&self) -> bool {
        self.active == "inactive" && self.condition_result == "no" && self.condition_timestamp != 0
    }

    pub fn info(&self) -> UnitInfo {
        UnitInfo {
            name: self.id.clone(),
            active: self.active.clone(),
            sub: self.sub.clone(),
            result: self.result.clone(),
            skipped: self.skipped(),
            active_enter_us: self.active_enter_us,
            inactive_exit_us: self.inactive_exit_us,
            source: self.source.clone(),
            error: String::new(),
        }
    }
}

const PROPS: &str = "Id,ActiveState,SubState,Result,NRestarts,ConditionResult,ConditionTimestampMonotonic,ActiveEnterTimestampMonotonic,InactiveExitTimestampMonotonic";

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
        let Some((k, v)) = line.split_once('=') else { continue };
        let num = || v.parse().unwrap_or(0);
        match k {
            "Id" => cur.id = v.to_string(),
            "ActiveState" => cur.active = v.to_string(),
            "SubState" => cur.sub = v.to_string(),
            "Result" => cur.result = v.to_string(),
            "NRestarts" => cur.restarts = v.parse().unwrap_or(0),
            "ConditionResult" => cur.condition_result = v.to_string(),
            "ConditionTimestampMonotonic" => cur.condition_timestamp = num(),
            "ActiveEnterTimestampMonotonic" => cur.active_enter_us = num(),
            "InactiveExitTimestampMonotonic" => cur.inactive_exit_us = num(),
            _ => {}
        }
    }
    out
}

pub fn show(units: &[String]) -> Vec<UnitState> {
    if units.is_empty() {
        return Vec::new();
    }
    let out = Command::new("systemctl").arg("show").arg(format!("--property={PROPS}")).args(units).output();
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

/// systemd's own boot timestamps (CLOCK_MONOTONIC µs): when userspace
/// started, and when the boot transaction finished (0 while booting).
pub fn manager_timestamps() -> (u64, u64) {
    let out = Command::new("systemctl")
        .args(["show", "--property=UserspaceTimestampMonotonic,FinishTimestampMonotonic"])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    parse_manager(&text)
}

pub fn parse_manager(text: &str) -> (u64, u64) {
    let mut userspace = 0;
    let mut finish = 0;
    for l in text.lines() {
        match l.split_once('=') {
            Some(("UserspaceTimestampMonotonic", v)) => userspace = v.parse().unwrap_or(0),
            Some(("FinishTimestampMonotonic", v)) => finish = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    (userspace, finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_several_units_with_timestamps() {
        let t = "ActiveState=active\nSubState=running\nResult=success\nNRestarts=3\nConditionResult=yes\nConditionTimestampMonotonic=123\nActiveEnterTimestampMonotonic=40123456\nInactiveExitTimestampMonotonic=30000000\nId=docker.service\n\nId=airboot-load-images.service\nActiveState=inactive\nSubState=dead\nConditionResult=no\nConditionTimestampMonotonic=456\nActiveEnterTimestampMonotonic=0\n";
        let u = parse_show(t);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].id, "docker.service");
        assert_eq!((u[0].active_enter_us, u[0].inactive_exit_us), (40_123_456, 30_000_000));
        assert_eq!((u[0].restarts, u[1].restarts), (3, 0));
        assert!(!u[0].skipped());
        assert!(u[1].skipped());
        assert!(u[1].info().skipped);
        let pending =
            parse_show("Id=x.service\nActiveState=inactive\nConditionResult=no\nConditionTimestampMonotonic=0\n");
        assert!(!pending[0].skipped(), "a condition never evaluated is not a skip");
        assert_eq!(parse_manager("UserspaceTimestampMonotonic=4000000\nFinishTimestampMonotonic=0\n"), (4_000_000, 0));
    }
}

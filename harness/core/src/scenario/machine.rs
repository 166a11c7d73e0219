//! `[machine]`: the VM the image boots in.

use std::path::PathBuf;

use airboot_model::{Arch, TransportKind};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::error::Ctx;
use super::{Mem, ScenarioError};

/// Default TCG slowdown when the scenario does not give one.
pub const DEFAULT_TCG_SLOWDOWN: f64 = 10.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Checked against the image; taken from the fixture when absent.
    pub arch: Option<Arch>,
    pub memory_mib: u64,
    pub cpus: u32,
    pub accel: AccelChoice,
    /// How much slower TCG is than KVM for this image: budgets and timeouts
    /// (written for KVM) are multiplied by it under TCG.
    pub tcg_slowdown: f64,
    /// `None`: choose automatically.
    pub transport: Option<TransportKind>,
    /// QEMU `-cpu` model; `None`: a fast default for the arch and accelerator.
    pub cpu: Option<String>,
    /// UEFI firmware code (pflash unit 0) and the variables template copied
    /// per run (unit 1); `None`: found in the distribution's firmware
    /// descriptors.
    pub firmware: Option<PathBuf>,
    pub firmware_vars: Option<PathBuf>,
    /// The guest's real-time clock at power-on (`YYYY-MM-DDTHH:MM:SS`,
    /// UTC): a device with no battery-backed clock; `None`: the host's
    /// time.
    pub rtc: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when a probe boot shows it works, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

impl AccelChoice {
    pub fn parse(s: &str) -> Option<AccelChoice> {
        match s {
            "auto" => Some(AccelChoice::Auto),
            "kvm" => Some(AccelChoice::Kvm),
            "tcg" => Some(AccelChoice::Tcg),
            _ => None,
        }
    }
}

/// A transport as a scenario or `--transport` gives it: `Ok(None)` for
/// `auto`.
pub fn parse_transport(s: &str) -> Result<Option<TransportKind>, String> {
    if s == "auto" {
        return Ok(None);
    }
    TransportKind::parse(s)
        .map(Some)
        .ok_or_else(|| format!("unknown transport {s:?}: use \"auto\", {}", TransportKind::choices()))
}

/// A transport as written in a scenario (`auto` → `None`).
struct TransportField(Option<TransportKind>);
impl<'de> Deserialize<'de> for TransportField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_transport(&s).map(TransportField).map_err(de::Error::custom)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMachine {
    arch: Option<Arch>,
    memory: Option<Mem>,
    cpus: Option<toml::Spanned<u32>>,
    accel: Option<AccelChoice>,
    tcg_slowdown: Option<toml::Spanned<f64>>,
    transport: Option<TransportField>,
    cpu: Option<toml::Spanned<String>>,
    firmware: Option<String>,
    firmware_vars: Option<String>,
    rtc: Option<toml::Spanned<String>>,
}

/// `2001-01-01` or `2001-01-01T08:30:00` (UTC), as QEMU's `-rtc base=`
/// takes it; `None` when it is neither.
pub fn parse_rtc(s: &str) -> Option<String> {
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    let ok = d.len() == 3
        && digits(d[0], 4)
        && digits(d[1], 2)
        && digits(d[2], 2)
        && (1..=12).contains(&d[1].parse::<u32>().ok()?)
        && (1..=31).contains(&d[2].parse::<u32>().ok()?)
        && d[0].parse::<u32>().ok()? >= 1970
        && t.len() == 3
        && t.iter().all(|x| digits(x, 2))
        && t[0].parse::<u32>().ok()? < 24
        && t[1].parse::<u32>().ok()? < 60
        && t[2].parse::<u32>().ok()? < 60;
    ok.then(|| format!("{date}T{time}"))
}

pub(super) fn validate(rm: RawMachine, cx: &Ctx) -> Result<Machine, ScenarioError> {
    let cpus = match rm.cpus {
        Some(c) if !(1..=64).contains(c.get_ref()) => {
            return Err(cx.err(Some(c.span()), None, format!("cpus = {} is out of range 1..=64", c.get_ref())));
        }
        Some(c) => c.into_inner(),
        None => 2,
    };
    let tcg_slowdown = match rm.tcg_slowdown {
        Some(s) if !(1.0..=100.0).contains(s.get_ref()) => {
            return Err(cx.err(
                Some(s.span()),
                None,
                format!("tcg_slowdown = {} is out of range: give a factor between 1 and 100", s.get_ref()),
            ));
        }
        Some(s) => s.into_inner(),
        None => DEFAULT_TCG_SLOWDOWN,
    };
    let cpu = match rm.cpu {
        Some(c) if c.get_ref().is_empty() || c.get_ref().chars().any(|ch| ch.is_whitespace()) => {
            return Err(cx.err(
                Some(c.span()),
                None,
                format!(
                    "cpu = {:?} is not a QEMU CPU model (e.g. \"cortex-a72\" or \"max,pauth-impdef=on\")",
                    c.get_ref()
                ),
            ));
        }
        Some(c) => Some(c.into_inner()),
        None => None,
    };
    let firmware = rm.firmware.as_deref().map(|p| cx.resolve(p));
    let firmware_vars = rm.firmware_vars.as_deref().map(|p| cx.resolve(p));
    for (key, p) in [("machine.firmware", &firmware), ("machine.firmware_vars", &firmware_vars)] {
        if let Some(p) = p
            && !(cx.files)(p)
        {
            return Err(cx.err(None, Some(key.into()), format!("{} does not exist or is not a file", p.display())));
        }
    }
    let rtc = match rm.rtc {
        Some(r) => Some(parse_rtc(r.get_ref()).ok_or_else(|| {
            cx.err(
                Some(r.span()),
                None,
                format!(
                    "rtc = {:?} is not a UTC date: write \"2001-01-01\" or \"2001-01-01T08:30:00\" (from 1970)",
                    r.get_ref()
                ),
            )
        })?),
        None => None,
    };
    Ok(Machine {
        rtc,
        cpu,
        firmware,
        firmware_vars,
        arch: rm.arch,
        memory_mib: rm.memory.map(|m| m.0).unwrap_or(1024),
        cpus,
        accel: rm.accel.unwrap_or(AccelChoice::Auto),
        tcg_slowdown,
        transport: rm.transport.and_then(|t| t.0),
    })
}

//! Human-written durations ("90s", "2m30s", "500ms") and memory sizes
//! ("1G", "512MiB"), parsed strictly so that a typo is an error, not a
//! surprising value.

use std::time::Duration;

/// Parse a duration such as `90s`, `2m`, `1m30s`, `1.5s`, `500ms`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {text:?}: write a number with a unit, e.g. \"90s\", \"2m\", \"1m30s\" or \"500ms\"")
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 7.0 * 24.0 * 3600.0 {
        return Err(format!("duration {text:?} is out of range (at most a week)"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// `"512M"` → `(512, "M")`: leading digits (at least one, fitting a u64)
/// and the rest, trimmed of surrounding whitespace.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if split == 0 {
        return None;
    }
    Some((s[..split].parse().ok()?, &s[split..]))
}

/// Parse a memory size into MiB: `1G`, `1GiB`, `512M`, `512MiB`, `2048`
/// (a bare number means MiB, as for QEMU's `-m`).
pub fn parse_mib(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid memory size {text:?}: write e.g. \"1G\", \"1536M\" or \"512MiB\"");
    let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
    let mib = match unit {
        "" | "M" | "MB" | "MiB" => n,
        "G" | "GB" | "GiB" => n.checked_mul(1024).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if !(64..=1024 * 1024).contains(&mib) {
        return Err(format!("memory size {text:?} is out of range: give between 64M and 1024G"));
    }
    Ok(mib)
}

/// Parse a byte count: `4096`, `512K`, `4M`, `1G` (binary units, `KiB`
/// etc. also accepted).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid byte count {text:?}: write e.g. \"65536\", \"512K\" or \"4M\"");
    let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|b| *b > 0).ok_or_else(bad)
}

/// Seconds with one decimal, the way reports and summaries print times.
pub fn secs(d: f64) -> String {
    format!("{d:.1}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap().as_secs_f64();
        assert_eq!(ok("90s"), 90.0);
        assert_eq!(ok("2m"), 120.0);
        assert_eq!(ok("1m30s"), 90.0);
        assert_eq!(ok("1.5s"), 1.5);
        assert_eq!(ok("500ms"), 0.5);
        assert_eq!(ok("1h"), 3600.0);
        assert_eq!(ok(" 3min "), 180.0);
        assert_eq!(ok("100h"), 360_000.0, "up to a week");
        for bad in ["", "90", "s", "1x", "1.2.3s", "-3s", "1m 30s", "8d", "9999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("1x").unwrap_err().contains("\"90s\""));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_mib("1G").unwrap(), 1024);
        assert_eq!(parse_mib("1GiB").unwrap(), 1024);
        assert_eq!(parse_mib("512M").unwrap(), 512);
        assert_eq!(parse_mib("2048").unwrap(), 2048);
        for bad in ["", "G", "1T", "1.5G", "10M", "-1G", "99999999999999999999G"] {
            assert!(parse_mib(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("512K").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("4MiB").unwrap(), 4 << 20);
        for bad in ["", "K", "0", "1.5M", "1T", "99999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}

/// A signed byte count for people: `+1.5 MiB`, `-12 KiB`, `+0 B`.
pub fn signed_bytes(b: i64) -> String {
    let sign = if b < 0 { '-' } else { '+' };
    let a = b.unsigned_abs() as f64;
    if a >= 1048576.0 {
        format!("{sign}{:.1} MiB", a / 1048576.0)
    } else if a >= 1024.0 {
        format!("{sign}{:.0} KiB", a / 1024.0)
    } else {
        format!("{sign}{a} B")
    }
}

/// An image ID as people read it: 12 hex digits, no `sha256:`.
pub fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:").unwrap_or(id).chars().take(12).collect()
}

#[cfg(test)]
mod human_tests {
    use super::*;

    #[test]
    fn byte_counts_and_ids_read_short() {
        assert_eq!(signed_bytes(3 << 19), "+1.5 MiB");
        assert_eq!(signed_bytes(-12 * 1024), "-12 KiB");
        assert_eq!(signed_bytes(0), "+0 B");
        assert_eq!(short_id("sha256:e1845bd6deecaf066966"), "e1845bd6deec");
        assert_eq!(short_id("fixture/redis:1"), "fixture/redi");
    }
}

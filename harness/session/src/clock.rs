//! Wall-clock stamps for reports and folder names.

use std::time::SystemTime;

/// Now, as RFC 3339 UTC to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The current time for folder names: `20261123-031316`.
pub fn stamp() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string()
}

/// The id of a run of `names`: `<stamp>-<name>` or `<stamp>-<n>-scenarios`.
pub fn run_id(names: &[String]) -> String {
    let what = match names {
        [one] => one.clone(),
        many => format!("{}-scenarios", many.len()),
    };
    format!("{}-{what}", stamp())
}

//! Exit statuses, decided in one place: 0 every scenario passed (or every
//! cut survived), 1 the image is wrong, 2 airboot could not judge. A
//! refusal's status is its failure code's class.

use airboot_model::FailureCode;

/// The exit status of a run that stopped with `code`.
pub fn of(code: FailureCode) -> i32 {
    code.verdict().exit_code()
}

/// Say why airboot refused, and its exit status.
pub fn refused(e: &dyn std::fmt::Display, code: FailureCode) -> i32 {
    for line in e.to_string().lines() {
        say(&format!("error: {line}"));
    }
    of(code)
}

/// A line on stderr (a closed stderr is no reason to panic).
pub fn say(line: &str) {
    airboot_report::terminal::err(line);
}

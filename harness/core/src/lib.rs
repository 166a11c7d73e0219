//! Pure logic of airboot. Nothing in this crate starts a process, opens a
//! socket or reads the clock: callers feed it bytes, lines and timestamps,
//! and it answers with decisions. That keeps it fast to test exhaustively.

pub mod airgap;
pub mod compose;
pub mod console;
pub mod cut;
pub mod diagnose;
pub mod disk;
pub mod engine;
pub mod event;
pub mod guest;
pub mod history;
pub mod inject;
pub mod login;
pub mod outcome;
pub mod platform;
pub mod readonly;
pub mod report;
pub mod run;
pub mod scenario;
pub mod status;
pub mod sysext;
pub mod units;
pub mod verify;

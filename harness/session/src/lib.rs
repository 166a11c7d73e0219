//! A session: one boot of one scenario, from the scenario file to its
//! report, and a suite of sessions (`airboot run`).
//!
//! The flow of one boot ([`boot::run_boot`]):
//!
//! 1. **resolve** the image ([`fixtures`]): a fixture build (built if
//!    asked and missing), or the user's disk, kernel and command line;
//! 2. tell its **architecture** from the image itself, and prepare board
//!    mode if asked; an image without the probe gets one **injected**
//!    into a layer over it ([`inject`]);
//! 3. ask the [`Machine`] what it offers (emulator, transports,
//!    accelerator, firmware) and **plan** the boot ([`plan`], pure);
//! 4. hash the input, then have the machine **boot** the plan, feeding the
//!    pure run state machine (`airboot_core::run::Run`) until it decides;
//! 5. fill the report and apply the verdict **policy** ([`policy`], pure:
//!    a network device fails the run, a leftover process is an error),
//!    and hash the input again;
//! 6. carry out its **steps** ([`steps`]): a reboot or a power cut boots
//!    the same disk again, judged the same way, in a folder of its own.
//!
//! Everything the session has to say goes out as
//! [`airboot_core::event::RunEvent`]s; it prints nothing and writes no
//! report file itself. [`LocalQemu`] is the machine that runs QEMU on this
//! host; tests drive the session with a fake one.

pub mod boot;
pub mod clock;
pub mod fake;
pub mod fixtures;
pub mod inject;
pub mod load;
pub mod local;
pub mod machine;
pub mod plan;
pub mod policy;
pub mod readonly;
pub mod steps;
pub mod store;
pub mod suite;

pub use boot::{Boot, BootOptions, Env, run_boot};
pub use fixtures::{CachedFixtures, FixtureBuild, Fixtures};
pub use local::LocalQemu;
pub use machine::{HostCaps, Machine, MachineError};

//! Thin I/O around QEMU: everything here starts processes, opens sockets
//! or touches files; the decisions live in `airboot-core`.

pub mod accel;
pub mod argv;
pub mod crash;
pub mod disk;
pub mod firmware;
pub mod inject;
pub mod probe_client;
pub mod probe_session;
pub mod process;
pub mod qmp;
pub mod scratch;
pub mod transport;
pub mod unpack;
pub mod vm;
pub mod workspace;

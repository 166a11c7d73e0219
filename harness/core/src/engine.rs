//! What the harness knows about each container engine, in one place: how
//! its start shows on the console, the service whose activation means it
//! is up, where its store lives on the device's disk, and how to check
//! that store offline. Adding an engine is adding an [`EngineModel`]
//! (and its side in the probe): see harness/ARCHITECTURE.md.

use std::io;

use airboot_model::Engine;

use crate::cut::store::StoreCheck;
use crate::disk::ext4::Ext4;

/// One engine, as the harness sees it from outside the guest.
pub trait EngineModel: Sync {
    fn engine(&self) -> Engine;
    /// The systemd unit whose activation time is "the engine is up" (a
    /// daemonless engine's API socket).
    fn unit(&self) -> &'static str;
    /// A console line that says the engine started (the built-in `engine`
    /// milestone): this engine's, never another's.
    fn started(&self) -> &'static str;
    /// Where the engine keeps its store on the device.
    fn data_root(&self) -> &'static str;
    /// Read the store offline from the root filesystem: every expected
    /// image (by reference) complete, absent or corrupt, with the evidence.
    fn check_store(&self, fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck>;
}

struct Docker;
struct Podman;
struct Containerd;

impl EngineModel for Docker {
    fn engine(&self) -> Engine {
        Engine::Docker
    }
    fn unit(&self) -> &'static str {
        "docker.service"
    }
    fn started(&self) -> &'static str {
        // systemd's line, or Debian's init script's (sysvinit).
        r"Started docker\.service|Started .*Docker Application Container Engine|Starting Docker: docker"
    }
    fn data_root(&self) -> &'static str {
        crate::cut::store::DOCKER_ROOT
    }
    fn check_store(&self, fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck> {
        crate::cut::store::check_docker(fs, expected)
    }
}

impl EngineModel for Podman {
    fn engine(&self) -> Engine {
        Engine::Podman
    }
    fn unit(&self) -> &'static str {
        "podman.socket"
    }
    fn started(&self) -> &'static str {
        r"Listening on podman\.socket|Listening on .*Podman API Socket"
    }
    fn data_root(&self) -> &'static str {
        crate::cut::store::PODMAN_ROOT
    }
    fn check_store(&self, fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck> {
        crate::cut::store::check_podman(fs, expected)
    }
}

impl EngineModel for Containerd {
    fn engine(&self) -> Engine {
        Engine::Containerd
    }
    fn unit(&self) -> &'static str {
        "containerd.service"
    }
    fn started(&self) -> &'static str {
        r"Started containerd\.service|Started .*containerd container runtime"
    }
    fn data_root(&self) -> &'static str {
        crate::cut::store::CONTAINERD_ROOT
    }
    fn check_store(&self, fs: &Ext4, expected: &[String]) -> io::Result<StoreCheck> {
        crate::cut::store::check_containerd(fs, expected)
    }
}

/// The model of `e`.
pub fn model(e: Engine) -> &'static dyn EngineModel {
    match e {
        Engine::Docker => &Docker,
        Engine::Podman => &Podman,
        Engine::Containerd => &Containerd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each engine's start line is its own: containerd starting under
    /// Docker is not Docker starting.
    #[test]
    fn each_engine_knows_its_own_start_and_no_other() {
        let lines = [
            (Engine::Docker, "[  OK  ] Started docker.service - Docker Application Container Engine."),
            (Engine::Podman, "[  OK  ] Listening on podman.socket - Podman API Socket."),
            (Engine::Containerd, "[  OK  ] Started containerd.service - containerd container runtime."),
            (Engine::Docker, "Starting Docker: docker."),
        ];
        for e in Engine::ALL {
            let re = regex::Regex::new(model(*e).started()).unwrap();
            for (owner, line) in lines {
                assert_eq!(re.is_match(line), owner == *e, "{e} vs {line:?}");
            }
            assert_eq!(model(*e).engine(), *e);
        }
        assert_eq!(model(Engine::Podman).unit(), "podman.socket");
    }
}

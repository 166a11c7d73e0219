//! The container engine, asked through its API socket (never by scraping
//! CLI output). One [`Engine`] per kind: Docker and Podman speak the
//! Docker API ([`docker`]), containerd its gRPC API ([`containerd`]); the
//! rest of the probe only sees the trait.

pub mod containerd;
pub mod docker;
mod grpc;
mod hpack;
mod pb;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use airboot_proto::probe::{ContainerInfo, EngineEvent, ImageInfo, RunImageResult};

pub use docker::{Docker, Flavor, is_server_error};

/// What an engine answered about images it will not change (an image ID
/// names immutable content), kept between statuses.
pub type ImageCache = HashMap<String, serde_json::Value>;

/// A container engine in the guest.
pub trait Engine: Send {
    /// `docker`, `podman` or `containerd`: the name the report shows.
    fn name(&self) -> &'static str;
    fn version(&self) -> Result<String, String>;
    /// Every image (one record per tag) with its platform and layers.
    fn image_infos(&self, cache: &mut ImageCache) -> Result<Vec<ImageInfo>, String>;
    /// Every container (but airboot's own test runs) with its state and
    /// health history.
    fn container_infos(&self) -> Result<Vec<ContainerInfo>, String>;
    /// What the engine remembers having done, up to now.
    fn events(&self, until_unix: i64) -> Result<Vec<EngineEvent>, String>;
    /// Run `reference` once with no network and say how it went; leaves
    /// nothing behind.
    fn run_image(&self, reference: &str, timeout: Duration) -> RunImageResult;
    /// The last lines a container wrote.
    fn container_logs(&self, name: &str) -> Result<String, String>;
    /// Where its store is and its storage driver: (data root, driver).
    fn store(&self) -> Option<(String, String)> {
        None
    }
}

/// Which engine the stack runs (`ENGINE` in status.conf).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Docker,
    Podman,
    Containerd,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "docker" => Some(Kind::Docker),
            "podman" => Some(Kind::Podman),
            "containerd" => Some(Kind::Containerd),
            _ => None,
        }
    }
    /// Where its API listens, unless status.conf says.
    pub fn default_socket(self) -> &'static str {
        match self {
            Kind::Docker => "/var/run/docker.sock",
            Kind::Podman => "/run/podman/podman.sock",
            Kind::Containerd => "/run/containerd/containerd.sock",
        }
    }
    /// The unit whose activation means its API is there, unless status.conf says.
    pub fn default_unit(self) -> &'static str {
        match self {
            Kind::Docker => "docker.service",
            Kind::Podman => "podman.socket",
            Kind::Containerd => "containerd.service",
        }
    }
}

/// The engine of `kind` at `socket` (containerd: in `namespace`, else in
/// all), each call bounded by `timeout`.
pub fn open(kind: Kind, socket: &str, namespace: Option<&str>, timeout: Duration) -> Box<dyn Engine> {
    let socket = PathBuf::from(socket);
    match kind {
        Kind::Docker => Box::new(Docker { socket, timeout, flavor: Flavor::Docker }),
        Kind::Podman => Box::new(Docker { socket, timeout, flavor: Flavor::Podman }),
        Kind::Containerd => {
            Box::new(containerd::Containerd { socket, timeout, namespace: namespace.map(str::to_string) })
        }
    }
}

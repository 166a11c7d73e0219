//! containerd's gRPC API on /run/containerd/containerd.sock (services
//! `containerd.services.*.v1`, as containerd 1.6 serves them), through the
//! hand-written client in [`super::grpc`]. Everything is per namespace:
//! the one status.conf names (`ENGINE_NAMESPACE`), else every namespace
//! containerd has.
//!
//! What containerd does not keep, and how the probe makes up for it:
//! - no event history: a thread subscribes to its events from the
//!   probe's start (the probe starts before the engine) and keeps them;
//! - no container start time: a running task's is its process's start
//!   (`/proc/<pid>/stat`), in the guest's realtime;
//! - no health checks and no container logs;
//! - no single "run this image" call: [`Containerd::run_image`] makes the
//!   calls `ctr run --rm` makes (lease, snapshot, container, task), with
//!   a fresh network namespace and nothing in it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use airboot_proto::probe::{ContainerInfo, EngineEvent, ImageInfo, RunImageResult};
use serde_json::{Value, json};

use super::grpc::{self, Status};
use super::pb::{self, Msg};

/// The snapshotter containerd unpacks images with by default.
const SNAPSHOTTER: &str = "overlayfs";
/// Manifests and configs are small; a blob read is bounded.
const MAX_BLOB: usize = 4 << 20;
/// Events kept (the oldest dropped first).
const MAX_EVENTS: usize = 4096;

pub struct Containerd {
    pub socket: PathBuf,
    pub timeout: Duration,
    /// The namespace to look in; `None`: every namespace.
    pub namespace: Option<String>,
}

/// A failed call, said for the report.
fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("containerd {what}: {e}")
}

impl Containerd {
    /// One call: every response message, or why it failed.
    fn rpc(&self, ns: &str, method: &str, req: &Msg, lease: Option<&str>) -> Result<Vec<Vec<u8>>, CallError> {
        if !self.socket.exists() {
            return Err(CallError::Transport(format!("{} absent", self.socket.display())));
        }
        let mut meta = vec![("containerd-namespace", ns)];
        if let Some(l) = lease {
            meta.push(("containerd-lease", l));
        }
        let mut out = Vec::new();
        let path = format!("/containerd.services.{method}");
        let st = grpc::call(&self.socket, &path, &meta, &req.0, Some(self.timeout), MAX_BLOB + 4096, |m| {
            out.push(m.to_vec());
            true
        })
        .map_err(|e| {
            CallError::Transport(if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                format!("engine not responding after {}s", self.timeout.as_secs())
            } else {
                failed(short_method(method), e)
            })
        })?;
        if !st.ok() {
            return Err(CallError::Status(short_method(method).to_string(), st));
        }
        Ok(out)
    }

    fn rpc1(&self, ns: &str, method: &str, req: &Msg) -> Result<Vec<u8>, String> {
        Ok(self.rpc(ns, method, req, None).map_err(|e| e.to_string())?.into_iter().next().unwrap_or_default())
    }

    pub fn version(&self) -> Result<String, String> {
        let m = self.rpc1("", "version.v1.Version/Version", &Msg::new())?;
        Ok(pb::field(&m, 1).map(|v| v.str()).unwrap_or_else(|| "unknown".into()))
    }

    /// The namespaces to look in.
    fn namespaces(&self) -> Result<Vec<String>, String> {
        if let Some(ns) = &self.namespace {
            return Ok(vec![ns.clone()]);
        }
        let m = self.rpc1("", "namespaces.v1.Namespaces/List", &Msg::new())?;
        Ok(pb::repeated(&m, 1).filter_map(|n| pb::field(n.bytes(), 1).map(|v| v.str())).collect())
    }

    /// A blob of the content store, whole (bounded by [`MAX_BLOB`]).
    fn read_blob(&self, ns: &str, digest: &str) -> Result<Vec<u8>, String> {
        let msgs = self
            .rpc(ns, "content.v1.Content/Read", &Msg::new().string(1, digest), None)
            .map_err(|e| format!("blob {digest}: {e}"))?;
        let mut data = Vec::new();
        for m in msgs {
            data.extend_from_slice(pb::field(&m, 2).map(|v| v.bytes()).unwrap_or_default());
            if data.len() > MAX_BLOB {
                return Err(format!("blob {digest} is larger than {} MiB", MAX_BLOB >> 20));
            }
        }
        Ok(data)
    }

    fn read_json(&self, ns: &str, digest: &str) -> Result<Value, String> {
        let b = self.read_blob(ns, digest)?;
        serde_json::from_slice(&b).map_err(|e| format!("blob {digest} is not JSON: {e}"))
    }

    /// An image's target resolved to this machine's manifest, its config
    /// digest, and the config: `{"id", "config"}`.
    fn resolve(&self, ns: &str, target: &str) -> Result<Value, String> {
        let mut manifest = self.read_json(ns, target)?;
        for _ in 0..4 {
            // An index (or Docker manifest list): this machine's platform, else the first.
            let Some(list) = manifest["manifests"].as_array() else { break };
            let pick = list
                .iter()
                .find(|m| m["platform"]["architecture"] == guest_arch() && m["platform"]["os"] == "linux")
                .or_else(|| list.first())
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| format!("index {target} lists no manifest"))?
                .to_string();
            manifest = self.read_json(ns, &pick)?;
        }
        let config =
            manifest["config"]["digest"].as_str().ok_or_else(|| format!("manifest of {target} has no config"))?;
        Ok(json!({ "id": config, "config": self.read_json(ns, config)? }))
    }

    /// Every image of every namespace looked in, with platform and layers
    /// (resolved once per target digest: content is immutable).
    pub fn image_infos(&self, cache: &mut super::ImageCache) -> Result<Vec<ImageInfo>, String> {
        let mut out = Vec::new();
        for ns in self.namespaces()? {
            let m = self.rpc1(&ns, "images.v1.Images/List", &Msg::new())?;
            for img in pb::repeated(&m, 1) {
                let (name, target) = image_name_target(img.bytes());
                let r = match cache.get(&target) {
                    Some(v) => v.clone(),
                    None => match self.resolve(&ns, &target) {
                        Ok(v) => {
                            cache.insert(target.clone(), v.clone());
                            v
                        }
                        // An image whose content is gone is still listed,
                        // by its target, without platform or layers.
                        Err(_) => json!({ "id": target }),
                    },
                };
                let (repository, tag) = super::docker::split_reference(&name);
                out.push(ImageInfo {
                    repository,
                    tag,
                    id: r["id"].as_str().unwrap_or(&target).to_string(),
                    architecture: r["config"]["architecture"].as_str().unwrap_or("").to_string(),
                    variant: r["config"]["variant"].as_str().map(str::to_string),
                    os: r["config"]["os"].as_str().unwrap_or("").to_string(),
                    diff_ids: airboot_proto::json_strings(&r["config"]["rootfs"]["diff_ids"]),
                });
            }
        }
        Ok(out)
    }

    /// Every container (but airboot's own test runs) with its task's state.
    pub fn container_infos(&self) -> Result<Vec<ContainerInfo>, String> {
        let mut out = Vec::new();
        for ns in self.namespaces()? {
            let cs = self.rpc1(&ns, "containers.v1.Containers/List", &Msg::new())?;
            let ts = self.rpc1(&ns, "tasks.v1.Tasks/List", &Msg::new())?;
            let tasks: Vec<Task> = pb::repeated(&ts, 1).map(|p| Task::read(p.bytes())).collect();
            for c in pb::repeated(&cs, 1) {
                let c = c.bytes();
                let id = pb::field(c, 1).map(|v| v.str()).unwrap_or_default();
                let labels: Vec<(String, String)> = pb::repeated(c, 2).map(|e| pb::map_entry(e.bytes())).collect();
                if labels.iter().any(|(k, _)| k == CHECK_LABEL) {
                    continue;
                }
                let task = tasks.iter().find(|t| t.id == id);
                out.push(container_info(&id, &pb::field(c, 3).map(|v| v.str()).unwrap_or_default(), task));
            }
        }
        Ok(out)
    }

    /// The events seen since the probe started (containerd keeps none).
    pub fn events(&self) -> Result<Vec<EngineEvent>, String> {
        let log = event_log(&self.socket);
        Ok(log.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Run `reference` once with no network, as `ctr run --rm` would, and
    /// remove everything made for it whatever happened.
    pub fn run_image(&self, reference: &str, timeout: Duration) -> RunImageResult {
        let started = Instant::now();
        let mut res = RunImageResult { reference: reference.to_string(), ..Default::default() };
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("airboot-check-{}-{n}", std::process::id());
        match self.run_steps(reference, &id, timeout) {
            Ok((ran, detail, code)) => {
                res.ran = ran;
                res.detail = detail;
                res.exit_code = code;
            }
            Err(e) => res.detail = e,
        }
        res.duration_s = started.elapsed().as_secs_f64();
        res
    }

    /// The namespace holding `reference`, and the image's target.
    fn find_image(&self, reference: &str) -> Result<(String, String), String> {
        for ns in self.namespaces()? {
            match self.rpc(&ns, "images.v1.Images/Get", &Msg::new().string(1, reference), None) {
                Ok(m) => {
                    let img = m.first().and_then(|m| pb::field(m, 1)).map(|v| v.bytes()).unwrap_or_default();
                    return Ok((ns, image_name_target(img).1));
                }
                Err(CallError::Status(_, st)) if st.code == 5 => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err(format!("image {reference} not found"))
    }

    fn run_steps(&self, reference: &str, id: &str, timeout: Duration) -> Result<(bool, String, Option<i64>), String> {
        let (ns, target) = self.find_image(reference)?;
        let r = self.resolve(&ns, &target)?;
        let config = &r["config"];
        let diff_ids = airboot_proto::json_strings(&config["rootfs"]["diff_ids"]);
        let parent = airboot_proto::load::chain_ids(&diff_ids).pop().unwrap_or_default();
        let log = PathBuf::from(format!("/run/{id}.log"));
        // A lease keeps what is made from the garbage collector while it
        // is made, and expires by itself should the probe die.
        let expire = airboot_proto::time::rfc3339(crate::collect::clocks().realtime_s as i64 + 600, 0);
        let lease = Msg::new().string(1, id).map_entry(3, "containerd.io/gc.expire", &expire);
        self.rpc(&ns, "leases.v1.Leases/Create", &lease, None).map_err(|e| e.to_string())?;
        let outcome = (|| {
            let mounts = self
                .rpc(
                    &ns,
                    "snapshots.v1.Snapshots/Prepare",
                    &Msg::new().string(1, SNAPSHOTTER).string(2, id).string(3, &parent),
                    Some(id),
                )
                .map_err(|e| match e {
                    CallError::Status(_, st) if st.code == 5 => format!(
                        "its layers are not unpacked for {SNAPSHOTTER} (snapshot {} missing: {})",
                        short(&parent),
                        st.message
                    ),
                    e => e.to_string(),
                })?;
            let spec = oci_spec(config, id);
            let container = Msg::new()
                .string(1, id)
                .map_entry(2, CHECK_LABEL, "1")
                .string(3, reference)
                .msg(4, &Msg::new().string(1, "io.containerd.runc.v2"))
                .msg(
                    5,
                    &Msg::new()
                        .string(1, "types.containerd.io/opencontainers/runtime-spec/1/Spec")
                        .bytes(2, spec.to_string().as_bytes()),
                )
                .string(6, SNAPSHOTTER)
                .string(7, id);
            self.rpc(&ns, "containers.v1.Containers/Create", &Msg::new().msg(1, &container), Some(id))
                .map_err(|e| e.to_string())?;
            let uri = format!("file://{}", log.display());
            let mut create = Msg::new().string(1, id);
            for m in mounts.first().map(|m| pb::repeated(m, 1).collect::<Vec<_>>()).unwrap_or_default() {
                create = create.bytes(3, m.bytes());
            }
            create = create.string(5, &uri).string(6, &uri);
            self.rpc(&ns, "tasks.v1.Tasks/Create", &create, Some(id)).map_err(|e| e.to_string())?;
            self.rpc(&ns, "tasks.v1.Tasks/Start", &Msg::new().string(1, id), None).map_err(|e| e.to_string())?;
            Ok::<_, String>(self.watch_task(&ns, id, timeout, &log))
        })();
        // Clean up whatever was made, in reverse.
        let _ = self.rpc(&ns, "tasks.v1.Tasks/Kill", &Msg::new().string(1, id).varint(3, 9).varint(4, 1), None);
        for _ in 0..25 {
            match self.task(&ns, id) {
                Some(t) if t.status == 2 || t.status == 1 => std::thread::sleep(Duration::from_millis(200)),
                _ => break,
            }
        }
        let _ = self.rpc(&ns, "tasks.v1.Tasks/Delete", &Msg::new().string(1, id), None);
        let _ = self.rpc(&ns, "containers.v1.Containers/Delete", &Msg::new().string(1, id), None);
        let _ = self.rpc(&ns, "snapshots.v1.Snapshots/Remove", &Msg::new().string(1, SNAPSHOTTER).string(2, id), None);
        let _ = self.rpc(&ns, "leases.v1.Leases/Delete", &Msg::new().string(1, id).varint(2, 1), None);
        let _ = std::fs::remove_file(&log);
        outcome
    }

    fn task(&self, ns: &str, id: &str) -> Option<Task> {
        let m = self.rpc(ns, "tasks.v1.Tasks/Get", &Msg::new().string(1, id), None).ok()?;
        let p = pb::field(m.first()?, 1)?;
        let mut t = Task::read(p.bytes());
        t.id = id.to_string();
        Some(t)
    }

    /// Running for a few seconds, or exited: whether it ran, how, the exit code.
    fn watch_task(&self, ns: &str, id: &str, timeout: Duration, log: &Path) -> (bool, String, Option<i64>) {
        let settle = Duration::from_secs(3).min(timeout);
        let t0 = Instant::now();
        loop {
            let t = self.task(ns, id);
            match t.as_ref().map(|t| t.status) {
                Some(3) => {
                    let code = t.map(|t| t.exit_status as i64);
                    let mut detail = format!("exited {}", code.unwrap_or(-1));
                    if code != Some(0)
                        && let Ok(text) = std::fs::read_to_string(log)
                        && let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty())
                    {
                        detail.push_str(&format!(" (last output: {})", last.trim()));
                    }
                    return (code == Some(0), detail, code);
                }
                Some(2) if t0.elapsed() >= settle => {
                    return (true, format!("running after {:.1}s", t0.elapsed().as_secs_f64()), None);
                }
                _ if t0.elapsed() > timeout => {
                    return (false, format!("neither running nor exited after {}s", timeout.as_secs()), None);
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// Why a call failed: the connection, or containerd's answer.
#[derive(Debug)]
enum CallError {
    Transport(String),
    Status(String, Status),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(e) => f.write_str(e),
            CallError::Status(m, st) => write!(f, "containerd {m}: {st}"),
        }
    }
}

/// `Images/List` → `List` for messages.
fn short_method(m: &str) -> &str {
    m.rsplit('.').next().unwrap_or(m)
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// The label on airboot's own test containers (left out of listings).
const CHECK_LABEL: &str = "org.airboot.check";

static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Docker's name for this machine's architecture, as image platforms say it.
fn guest_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// An `Image` message: its name and its target's digest.
fn image_name_target(img: &[u8]) -> (String, String) {
    let name = pb::field(img, 1).map(|v| v.str()).unwrap_or_default();
    let target = pb::field(img, 3).and_then(|t| pb::field(t.bytes(), 2)).map(|v| v.str()).unwrap_or_default();
    (name, target)
}

/// A task (`containerd.v1.types.Process`) as `Tasks/List` and `Tasks/Get`
/// give it. In `List` the container's ID is in `id` (field 2) and
/// `container_id` is empty (measured on 1.6.20).
#[derive(Debug, Clone, Default, PartialEq)]
struct Task {
    id: String,
    pid: u64,
    /// 1 created, 2 running, 3 stopped, 4 paused, 5 pausing.
    status: u64,
    exit_status: u64,
}

impl Task {
    fn read(p: &[u8]) -> Task {
        let s = |n| pb::field(p, n).map(|v| v.str()).unwrap_or_default();
        let id = match s(1) {
            c if c.is_empty() => s(2),
            c => c,
        };
        let u = |n| pb::field(p, n).map(|v| v.u64()).unwrap_or(0);
        Task { id, pid: u(3), status: u(4), exit_status: u(9) }
    }
}

/// A container and its task (none: it has not been started this boot).
fn container_info(id: &str, image: &str, task: Option<&Task>) -> ContainerInfo {
    let state = match task.map(|t| t.status) {
        None | Some(1) => "created",
        Some(2) => "running",
        Some(3) => "exited",
        Some(4 | 5) => "paused",
        Some(_) => "unknown",
    };
    let pid = task.map(|t| t.pid).filter(|p| *p > 0 && state == "running");
    ContainerInfo {
        name: id.to_string(),
        image: image.to_string(),
        image_id: None,
        state: state.to_string(),
        health: None,
        started_at: pid.and_then(process_started_at),
        exit_code: task.filter(|t| t.status == 3).map(|t| t.exit_status as i64),
        pid,
        healthy_at: Vec::new(),
        log_tail: Vec::new(),
        health_output: None,
        ..Default::default()
    }
}

/// When process `pid` started, RFC 3339 in the guest's realtime: its
/// start in clock ticks since boot (`/proc/<pid>/stat` field 22) placed
/// on the realtime clock through CLOCK_BOOTTIME now.
fn process_started_at(pid: u64) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let now = crate::collect::clocks();
    let real = start_realtime(&stat, hz as f64, now.boottime_s, now.realtime_s)?;
    Some(airboot_proto::time::rfc3339(real.floor() as i64, ((real - real.floor()) * 1e9) as u32))
}

/// The realtime a process started, from its `/proc/<pid>/stat` text.
fn start_realtime(stat: &str, hz: f64, boottime_s: f64, realtime_s: f64) -> Option<f64> {
    // The command name is in parentheses and may hold spaces: fields
    // count from the last ')'. starttime is field 22, the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    (hz > 0.0).then(|| realtime_s - (boottime_s - ticks / hz))
}

/// A runtime spec for a throwaway run of an image: its entrypoint and
/// command, environment and working directory, as root, with the
/// namespaces `ctr run` gives (a new, empty network namespace: no network).
fn oci_spec(config: &Value, id: &str) -> Value {
    let c = &config["config"];
    let strings = airboot_proto::json_strings;
    let mut args = strings(&c["Entrypoint"]);
    args.extend(strings(&c["Cmd"]));
    if args.is_empty() {
        args.push("/bin/sh".into());
    }
    let mut env = strings(&c["Env"]);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let cwd = c["WorkingDir"].as_str().filter(|w| w.starts_with('/')).unwrap_or("/");
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs" },
        "hostname": "airboot-check",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }
        ],
        "linux": {
            "cgroupsPath": format!("/airboot/{id}"),
            "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
            "namespaces": [{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }, { "type": "network" }],
            "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// The events of the containerd at `socket`, gathered by a thread that
/// subscribes (again, whenever the connection drops) from the first call on.
fn event_log(socket: &Path) -> &'static Mutex<Vec<EngineEvent>> {
    static LOG: OnceLock<Mutex<Vec<EngineEvent>>> = OnceLock::new();
    let mut first = false;
    let log = LOG.get_or_init(|| {
        first = true;
        Mutex::new(Vec::new())
    });
    if first {
        let socket = socket.to_path_buf();
        std::thread::spawn(move || subscribe_forever(&socket, log));
    }
    log
}

/// Start gathering events now (the probe calls this at its start).
pub fn start_events(socket: &Path) {
    event_log(socket);
}

fn subscribe_forever(socket: &Path, log: &'static Mutex<Vec<EngineEvent>>) {
    loop {
        if socket.exists() {
            let _ =
                grpc::call(socket, "/containerd.services.events.v1.Events/Subscribe", &[], &[], None, 1 << 20, |m| {
                    if let Some(e) = event_of(m) {
                        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                        if l.len() >= MAX_EVENTS {
                            l.remove(0);
                        }
                        l.push(e);
                    }
                    true
                });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An event `Envelope` in Docker's words: an image name now pointing at
/// content is a `tag`, a task starting is its container's `start`.
fn event_of(m: &[u8]) -> Option<EngineEvent> {
    let (secs, nanos) = pb::field(m, 1).map(|t| pb::timestamp(t.bytes())).unwrap_or((0, 0));
    let topic = pb::field(m, 3)?.str();
    let payload = pb::field(m, 4).and_then(|a| pb::field(a.bytes(), 2)).map(|v| v.bytes()).unwrap_or_default();
    let text = |n| pb::field(payload, n).map(|v| v.str()).unwrap_or_default();
    let (kind, action, actor) = match topic.as_str() {
        "/images/create" | "/images/update" => ("image", "tag", text(1)),
        "/images/delete" => ("image", "delete", text(1)),
        "/containers/create" => ("container", "create", text(1)),
        "/containers/delete" => ("container", "destroy", text(1)),
        "/tasks/start" => ("container", "start", text(1)),
        "/tasks/exit" => ("container", "die", text(1)),
        "/tasks/oom" => ("container", "oom", text(1)),
        "/snapshot/commit" => ("snapshot", "commit", text(2)),
        _ => return None,
    };
    if actor.starts_with("airboot-check-") {
        return None;
    }
    Some(EngineEvent {
        time_nano: secs.saturating_mul(1_000_000_000).saturating_add(i64::from(nanos)),
        kind: kind.into(),
        action: action.into(),
        actor,
    })
}

/// Ask containerd whether a snapshot exists and is committed (`Stat`).
pub fn snapshot_committed(c: &Containerd, ns: &str, key: &str) -> bool {
    c.rpc(ns, "snapshots.v1.Snapshots/Stat", &Msg::new().string(1, SNAPSHOTTER).string(2, key), None)
        .ok()
        .and_then(|m| m.first().and_then(|m| pb::field(m, 1)).map(|i| pb::field(i.bytes(), 3).map(|k| k.u64())))
        .flatten()
        == Some(3)
}

/// Active snapshots whose key says an unpack is under way (`extract-…`).
pub fn extracting(c: &Containerd, ns: &str) -> bool {
    c.rpc(ns, "snapshots.v1.Snapshots/List", &Msg::new().string(1, SNAPSHOTTER), None)
        .map(|msgs| {
            msgs.iter().flat_map(|m| pb::repeated(m, 1)).any(|info| {
                let name = pb::field(info.bytes(), 1).map(|v| v.str()).unwrap_or_default();
                name.starts_with("extract-")
            })
        })
        .unwrap_or(false)
}

/// The namespaces to watch for loads (the configured one, else all).
pub fn watch_namespaces(c: &Containerd) -> Vec<String> {
    c.namespaces().unwrap_or_default()
}

impl super::Engine for Containerd {
    fn name(&self) -> &'static str {
        "containerd"
    }
    fn version(&self) -> Result<String, String> {
        Containerd::version(self)
    }
    fn image_infos(&self, cache: &mut super::ImageCache) -> Result<Vec<ImageInfo>, String> {
        Containerd::image_infos(self, cache)
    }
    fn container_infos(&self) -> Result<Vec<ContainerInfo>, String> {
        Containerd::container_infos(self)
    }
    fn events(&self, _until_unix: i64) -> Result<Vec<EngineEvent>, String> {
        Containerd::events(self)
    }
    fn run_image(&self, reference: &str, timeout: Duration) -> RunImageResult {
        Containerd::run_image(self, reference, timeout)
    }
    fn container_logs(&self, _name: &str) -> Result<String, String> {
        Err("containerd keeps no container logs (the task's stdout goes where its creator sent it)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn tasks_by_id(ts: &[u8]) -> HashMap<String, Task> {
        pb::repeated(ts, 1).map(|p| Task::read(p.bytes())).map(|t| (t.id.clone(), t)).collect()
    }
    use crate::engine::grpc::tests::{serve, unary_answer};
    use std::os::unix::net::UnixListener;

    #[test]
    fn tasks_containers_and_their_states() {
        // Tasks/List as containerd 1.6.20 answers: the ID in field 2.
        let ts = Msg::new()
            .msg(1, &Msg::new().string(2, "web").varint(3, 42).varint(4, 2))
            .msg(1, &Msg::new().string(2, "job").varint(3, 43).varint(4, 3).varint(9, 7));
        let tasks = tasks_by_id(&ts.0);
        let web = container_info("web", "fixture/busybox:1", tasks.get("web"));
        assert_eq!((web.state.as_str(), web.pid, web.exit_code), ("running", Some(42), None));
        let job = container_info("job", "x:1", tasks.get("job"));
        assert_eq!((job.state.as_str(), job.pid, job.exit_code), ("exited", None, Some(7)));
        let never = container_info("redis", "fixture/redis:1", None);
        assert_eq!((never.state.as_str(), never.started_at), ("created", None));
        // Tasks/Get fills container_id (field 1) instead.
        assert_eq!(Task::read(&Msg::new().string(1, "a").string(2, "b").0).id, "a");
    }

    #[test]
    fn a_process_start_on_the_realtime_clock() {
        // Started 500 ticks (5 s at 100 Hz) after boot; now is 65 s after
        // boot and realtime 1000: it started at realtime 940.
        let stat = "123 (redis server) S 1 123 123 0 -1 4194560 200 0 0 0 1 2 0 0 20 0 4 0 500 1000 50";
        assert_eq!(start_realtime(stat, 100.0, 65.0, 1000.0), Some(940.0));
        assert_eq!(start_realtime("garbage", 100.0, 1.0, 1.0), None);
        assert_eq!(start_realtime(stat, 0.0, 1.0, 1.0), None);
    }

    #[test]
    fn events_in_dockers_words() {
        let any = |ty: &str, payload: &Msg| Msg::new().string(1, ty).msg(2, payload);
        let env = |topic: &str, payload: Msg| {
            Msg::new()
                .msg(1, &Msg::new().varint(1, 100).varint(2, 5))
                .string(2, "airboot")
                .string(3, topic)
                .msg(4, &any("containerd.events.X", &payload))
        };
        let e = event_of(&env("/images/create", Msg::new().string(1, "fixture/redis:1")).0).unwrap();
        assert_eq!(
            (e.kind.as_str(), e.action.as_str(), e.actor.as_str(), e.time_nano),
            ("image", "tag", "fixture/redis:1", 100_000_000_005)
        );
        let e = event_of(&env("/tasks/start", Msg::new().string(1, "web").varint(2, 9)).0).unwrap();
        assert_eq!((e.kind.as_str(), e.action.as_str(), e.actor.as_str()), ("container", "start", "web"));
        assert!(event_of(&env("/tasks/start", Msg::new().string(1, "airboot-check-1-0")).0).is_none());
        assert!(event_of(&env("/namespaces/create", Msg::new().string(1, "x")).0).is_none());
    }

    #[test]
    fn a_spec_without_network_running_the_images_command() {
        let cfg = json!({ "config": { "Entrypoint": ["docker-entrypoint.sh"], "Cmd": ["redis-server"],
            "Env": ["PATH=/usr/bin", "REDIS_VERSION=7"], "WorkingDir": "/data" } });
        let s = oci_spec(&cfg, "airboot-check-1-0");
        assert_eq!(s["process"]["args"], json!(["docker-entrypoint.sh", "redis-server"]));
        assert_eq!(s["process"]["cwd"], "/data");
        assert_eq!(s["process"]["env"][1], "REDIS_VERSION=7");
        assert!(s["linux"]["namespaces"].as_array().unwrap().contains(&json!({ "type": "network" })));
        let bare = oci_spec(&json!({}), "x");
        assert_eq!(bare["process"]["args"], json!(["/bin/sh"]));
        assert!(bare["process"]["env"][0].as_str().unwrap().starts_with("PATH="));
    }

    /// A fake containerd answering one call per connection, in order.
    fn fake(name: &str, answers: Vec<Vec<(u8, u8, Vec<u8>)>>) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let dir = std::env::temp_dir().join(format!("airboot-ctrd-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("containerd.sock");
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let mut paths = Vec::new();
            for a in answers {
                let (s, _) = l.accept().unwrap();
                let h = serve(s, a);
                let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
                paths.push(format!("{} ns={}", get(":path"), get("containerd-namespace")));
            }
            paths
        });
        (sock, t)
    }

    #[test]
    fn images_resolve_an_index_to_this_machines_manifest_and_config() {
        let cfg =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:d1","sha256:d2"]}}"#;
        let arch = guest_arch();
        let index = format!(
            r#"{{"manifests":[{{"digest":"sha256:other","platform":{{"architecture":"s390x","os":"linux"}}}},{{"digest":"sha256:man","platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#
        );
        let manifest = br#"{"config":{"digest":"sha256:cfg"},"layers":[]}"#;
        let blob = |b: &[u8]| Msg::new().varint(1, 0).bytes(2, b).0;
        let image = Msg::new().msg(
            1,
            &Msg::new().string(1, "fixture/busybox:1").msg(3, &Msg::new().string(1, "index").string(2, "sha256:idx")),
        );
        let answers = vec![
            unary_answer(&[&image.0], 0, ""),
            unary_answer(&[&blob(index.as_bytes())], 0, ""),
            unary_answer(&[&blob(manifest)], 0, ""),
            unary_answer(&[&blob(cfg)], 0, ""),
        ];
        let (sock, t) = fake("images", answers);
        let c = Containerd { socket: sock.clone(), timeout: Duration::from_secs(5), namespace: Some("airboot".into()) };
        let mut cache = HashMap::new();
        let imgs = c.image_infos(&mut cache).unwrap();
        assert_eq!(imgs.len(), 1);
        let i = &imgs[0];
        assert_eq!((i.repository.as_str(), i.tag.as_str(), i.id.as_str()), ("fixture/busybox", "1", "sha256:cfg"));
        assert_eq!((i.architecture.as_str(), i.diff_ids.len()), ("amd64", 2));
        let asked = t.join().unwrap();
        assert_eq!(asked[0], "/containerd.services.images.v1.Images/List ns=airboot");
        assert!(asked[1..].iter().all(|p| p.starts_with("/containerd.services.content.v1.Content/Read")), "{asked:?}");
        assert!(cache.contains_key("sha256:idx"), "resolved once per target");
        std::fs::remove_dir_all(sock.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_missing_socket_and_a_missing_image_are_said_plainly() {
        let c = Containerd {
            socket: "/nonexistent/containerd.sock".into(),
            timeout: Duration::from_secs(1),
            namespace: None,
        };
        assert_eq!(c.version().unwrap_err(), "/nonexistent/containerd.sock absent");
        let (sock, t) = fake("missing", vec![unary_answer(&[], 5, "image \"fixture/x:1\": not found")]);
        let c = Containerd { socket: sock.clone(), timeout: Duration::from_secs(5), namespace: Some("airboot".into()) };
        let r = c.run_image("fixture/x:1", Duration::from_secs(5));
        assert!(!r.ran);
        assert_eq!(r.detail, "image fixture/x:1 not found");
        t.join().unwrap();
        std::fs::remove_dir_all(sock.parent().unwrap()).unwrap();
    }
}

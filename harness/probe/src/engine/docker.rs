//! Docker's Engine API over its unix socket, and Podman's libpod API
//! (`/v4.0.0/libpod/...` on /run/podman/podman.sock): the same routes and
//! much the same JSON, with the few places it differs: IDs come bare (no
//! `sha256:`), a container is created from a spec generator (`netns`), an
//! exited container can be `stopped`, and events are read with
//! `stream=false` (measured against podman 4.3.1).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use airboot_proto::ImageRecord;
use airboot_proto::http;
use airboot_proto::probe::{ContainerInfo, EngineEvent, ImageInfo, RunImageResult};
use serde_json::{Value, json};

/// Which engine answers the Docker API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Docker,
    Podman,
}

pub struct Docker {
    pub socket: PathBuf,
    pub timeout: Duration,
    pub flavor: Flavor,
}

impl super::Engine for Docker {
    fn name(&self) -> &'static str {
        match self.flavor {
            Flavor::Docker => "docker",
            Flavor::Podman => "podman",
        }
    }
    fn version(&self) -> Result<String, String> {
        Docker::version(self)
    }
    fn image_infos(&self, cache: &mut super::ImageCache) -> Result<Vec<ImageInfo>, String> {
        Docker::image_infos(self, cache)
    }
    fn container_infos(&self) -> Result<Vec<ContainerInfo>, String> {
        Docker::container_infos(self)
    }
    fn events(&self, until_unix: i64) -> Result<Vec<EngineEvent>, String> {
        Docker::events(self, until_unix)
    }
    fn run_image(&self, reference: &str, timeout: Duration) -> RunImageResult {
        Docker::run_image(self, reference, timeout)
    }
    fn container_logs(&self, name: &str) -> Result<String, String> {
        Docker::container_logs(self, name)
    }
    fn store(&self) -> Option<(String, String)> {
        store_of(&self.get(&self.route("/info")).ok()?)
    }
}

/// (data root, storage driver) from `/info`: Docker's `DockerRootDir` and
/// `Driver`, or libpod's `store.graphRoot` and `store.graphDriverName`.
fn store_of(info: &Value) -> Option<(String, String)> {
    let s = |v: &Value| v.as_str().filter(|x| !x.is_empty()).map(str::to_string);
    let root = s(&info["DockerRootDir"]).or_else(|| s(&info["store"]["graphRoot"]))?;
    let driver = s(&info["Driver"]).or_else(|| s(&info["store"]["graphDriverName"])).unwrap_or_default();
    Some((root, driver))
}

impl Docker {
    /// The route `path` (Docker's) on this engine: libpod's for Podman
    /// (every query used here is read the same by both).
    fn route(&self, path: &str) -> String {
        match self.flavor {
            Flavor::Docker => path.to_string(),
            Flavor::Podman => format!("/v4.0.0/libpod{path}"),
        }
    }

    /// Send a request and return the raw response. Errors are short
    /// sentences for the report ("docker.sock absent", "engine not
    /// responding after 10s").
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<http::Response, String> {
        if !self.socket.exists() {
            return Err(format!("{} absent", self.socket.display()));
        }
        let s = UnixStream::connect(&self.socket)
            .map_err(|e| format!("cannot connect to {}: {e}", self.socket.display()))?;
        s.set_read_timeout(Some(self.timeout)).ok();
        s.set_write_timeout(Some(self.timeout)).ok();
        let text = body.map(|b| b.to_string());
        let mut bytes = text.as_deref().unwrap_or("").as_bytes();
        let len = bytes.len() as u64;
        let r = match text {
            Some(_) => http::request(s, method, path, Some("application/json"), Some((&mut bytes, len)), 32 << 20),
            None => http::request(s, method, path, None, None, 32 << 20),
        };
        r.map_err(|e| {
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                format!("engine not responding after {}s", self.timeout.as_secs())
            } else {
                format!("{method} {path}: {e}")
            }
        })
    }

    /// GET a path and parse the JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        let r = self.call("GET", path, None)?;
        if r.status != 200 {
            return Err(http_error("GET", path, r.status, &r.text()));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("GET {path}: not JSON: {e}"))
    }

    pub fn version(&self) -> Result<String, String> {
        let v = self.get(&self.route("/version"))?;
        Ok(v["Version"].as_str().unwrap_or("unknown").to_string())
    }

    /// Every image with its platform and layer diff_ids (`inspect` results
    /// are cached by ID: an image ID names immutable content).
    pub fn image_infos(&self, cache: &mut super::ImageCache) -> Result<Vec<ImageInfo>, String> {
        let list = self.get(&self.route("/images/json"))?;
        let mut out = Vec::new();
        for rec in image_records(&list) {
            let inspect = match cache.get(&rec.id) {
                Some(v) => v.clone(),
                None => {
                    let v = self.get(&self.route(&format!("/images/{}/json", rec.id.trim_start_matches("sha256:"))))?;
                    cache.insert(rec.id.clone(), v.clone());
                    v
                }
            };
            out.push(image_info(&rec, &inspect));
        }
        Ok(out)
    }

    /// Every container (but airboot's own test runs) with its state, pid and
    /// health history.
    pub fn container_infos(&self) -> Result<Vec<ContainerInfo>, String> {
        let list = self.get(&self.route("/containers/json?all=1"))?;
        let mut out = Vec::new();
        for c in list.as_array().into_iter().flatten() {
            let Some(id) = c["Id"].as_str() else { continue };
            if c["Labels"]["org.airboot.check"].as_str().is_some() {
                continue;
            }
            // A container removed between the list and the inspect is simply gone.
            if let Ok(i) = self.get(&self.route(&format!("/containers/{id}/json"))) {
                out.push(container_info(&i));
            }
        }
        Ok(out)
    }

    /// Events the engine still remembers (Docker keeps the last 256), up
    /// to now. Podman streams unless told not to, and with its `file`
    /// events backend `until` cuts the read short: `stream=false` instead.
    pub fn events(&self, until_unix: i64) -> Result<Vec<EngineEvent>, String> {
        let path = match self.flavor {
            Flavor::Docker => format!("/events?since=0&until={until_unix}"),
            Flavor::Podman => self.route("/events?since=0&stream=false"),
        };
        let r = self.call("GET", &path, None)?;
        if r.status != 200 {
            return Err(format!("GET /events: HTTP {}", r.status));
        }
        Ok(parse_events(&r.text()))
    }

    /// Create and start a container of `reference` with no network, and
    /// report whether it ran: still running after a few seconds, or exited 0.
    /// A listed image can still have lost its layer files; this is the
    /// proof it has not. The container is removed whatever happened.
    pub fn run_image(&self, reference: &str, timeout: Duration) -> RunImageResult {
        let started = Instant::now();
        let mut res = RunImageResult { reference: reference.to_string(), ..Default::default() };
        let body = match self.flavor {
            Flavor::Docker => json!({
                "Image": reference,
                "Labels": { "org.airboot.check": "1" },
                "HostConfig": { "NetworkMode": "none" },
            }),
            // libpod's spec generator: no network namespace of its own to join.
            Flavor::Podman => json!({
                "image": reference,
                "labels": { "org.airboot.check": "1" },
                "netns": { "nsmode": "none" },
            }),
        };
        let created = match self.call("POST", &self.route("/containers/create"), Some(&body)) {
            Ok(r) if r.status == 201 => {
                serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v["Id"].as_str().map(str::to_string))
            }
            Ok(r) => {
                res.detail = format!("create failed: HTTP {} {}", r.status, message_of(&r.body));
                None
            }
            Err(e) => {
                res.detail = format!("create failed: {e}");
                None
            }
        };
        let Some(id) = created else {
            res.duration_s = started.elapsed().as_secs_f64();
            return res;
        };
        match self.call("POST", &self.route(&format!("/containers/{id}/start")), None) {
            Ok(r) if r.status == 204 || r.status == 304 => {
                let settle = Duration::from_secs(3).min(timeout);
                let t0 = Instant::now();
                loop {
                    let st = self.get(&self.route(&format!("/containers/{id}/json"))).unwrap_or(Value::Null);
                    let running = st["State"]["Running"].as_bool().unwrap_or(false);
                    let status = st["State"]["Status"].as_str().unwrap_or("");
                    // Podman says `stopped` once conmon has cleaned up.
                    if !running && matches!(status, "exited" | "dead" | "stopped") {
                        let code = st["State"]["ExitCode"].as_i64();
                        res.exit_code = code;
                        res.ran = code == Some(0);
                        let err = st["State"]["Error"].as_str().unwrap_or("");
                        res.detail = match err {
                            "" => format!("exited {}", code.unwrap_or(-1)),
                            e => format!("exited {}: {e}", code.unwrap_or(-1)),
                        };
                        if !res.ran
                            && let Ok(logs) = self.container_logs(&id)
                            && let Some(last) = logs.lines().rev().find(|l| !l.trim().is_empty())
                        {
                            res.detail.push_str(&format!(" (last output: {})", last.trim()));
                        }
                        break;
                    }
                    if running && t0.elapsed() >= settle {
                        res.ran = true;
                        res.detail = format!("running after {:.1}s", t0.elapsed().as_secs_f64());
                        break;
                    }
                    if t0.elapsed() > timeout {
                        res.detail =
                            format!("neither running nor exited after {}s (state {status})", timeout.as_secs());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Ok(r) => res.detail = format!("start failed: {}", message_of(&r.body)),
            Err(e) => res.detail = format!("start failed: {e}"),
        }
        let _ = self.call("DELETE", &self.route(&format!("/containers/{id}?force=1&v=1")), None);
        res.duration_s = started.elapsed().as_secs_f64();
        res
    }

    /// The last lines a container wrote (stdout and stderr).
    pub fn container_logs(&self, id: &str) -> Result<String, String> {
        let r = self.call("GET", &self.route(&format!("/containers/{id}/logs?stdout=1&stderr=1&tail=200")), None)?;
        Ok(demux_logs(&r.body))
    }
}

/// The error for an answer other than 200: `GET /path: HTTP 500 {body}`.
fn http_error(method: &str, path: &str, status: u16, body: &str) -> String {
    format!("{method} {path}: HTTP {status} {}", body.trim())
}

/// Whether an error from [`Docker::get`] is the engine answering with a
/// server error (HTTP 5xx): it runs, and its API fails. A timeout, an
/// absent socket or a 4xx is not.
pub fn is_server_error(e: &str) -> bool {
    let Some((_, rest)) = e.split_once(": HTTP ") else { return false };
    rest.get(..3).and_then(|c| c.parse::<u16>().ok()).is_some_and(|c| (500..600).contains(&c))
        && rest.as_bytes().get(3).is_none_or(|b| *b == b' ')
}

fn message_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// `/images/json` → one record per tag (untagged images as `<none>:<none>`).
pub fn image_records(v: &Value) -> Vec<ImageRecord> {
    let mut out = Vec::new();
    for i in v.as_array().into_iter().flatten() {
        let id = with_algorithm(i["Id"].as_str().unwrap_or(""));
        let tags: Vec<&str> = i["RepoTags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if tags.is_empty() {
            out.push(ImageRecord { repository: "<none>".into(), tag: "<none>".into(), id: id.clone() });
        }
        for t in tags {
            let (repository, tag) = split_reference(t);
            out.push(ImageRecord { repository, tag, id: id.clone() });
        }
    }
    out
}

/// An image ID as Docker writes it: libpod's bare hex gets `sha256:`.
fn with_algorithm(id: &str) -> String {
    if id.is_empty() || id.contains(':') { id.to_string() } else { format!("sha256:{id}") }
}

/// `registry:5000/app:2` → (`registry:5000/app`, `2`); no tag → `<none>`.
pub fn split_reference(t: &str) -> (String, String) {
    // A reference by digest (`name@sha256:…`) has no tag.
    let t = t.split_once('@').map_or(t, |(name, _)| name);
    match t.rfind(':') {
        Some(p) if !t[p + 1..].contains('/') => (t[..p].to_string(), t[p + 1..].to_string()),
        _ => (t.to_string(), "<none>".to_string()),
    }
}

/// Platform and layers from `/images/{id}/json`.
pub fn image_info(rec: &ImageRecord, inspect: &Value) -> ImageInfo {
    ImageInfo {
        repository: rec.repository.clone(),
        tag: rec.tag.clone(),
        id: rec.id.clone(),
        architecture: inspect["Architecture"].as_str().unwrap_or("").to_string(),
        variant: inspect["Variant"].as_str().map(str::to_string),
        os: inspect["Os"].as_str().unwrap_or("").to_string(),
        diff_ids: airboot_proto::json_strings(&inspect["RootFS"]["Layers"]),
    }
}

/// `/containers/{id}/json` → state, pid and the ends of passing health checks.
pub fn container_info(i: &Value) -> ContainerInfo {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let healthy_at = i["State"]["Health"]["Log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ExitCode"].as_i64() == Some(0))
        .filter_map(|l| l["End"].as_str().map(str::to_string))
        .collect();
    let label = |k: &str| s(&i["Config"]["Labels"][k]).filter(|v| !v.is_empty());
    ContainerInfo {
        name: s(&i["Name"]).unwrap_or_default(),
        id: s(&i["Id"]).map(|id| id.chars().take(12).collect()),
        compose: label("com.docker.compose.project")
            .zip(label("com.docker.compose.service"))
            .map(|(project, service)| airboot_proto::ComposeLabels { project, service }),
        image: s(&i["Config"]["Image"]).unwrap_or_default(),
        image_id: i["Image"].as_str().filter(|s| !s.is_empty()).map(with_algorithm),
        state: s(&i["State"]["Status"]).unwrap_or_else(|| "unknown".into()),
        // Podman says "" where Docker leaves Health out: no healthcheck.
        health: s(&i["State"]["Health"]["Status"]).filter(|h| !h.is_empty()),
        started_at: s(&i["State"]["StartedAt"]),
        // Docker says 0001-01-01T00:00:00Z for "never".
        finished_at: s(&i["State"]["FinishedAt"]).filter(|f| !f.starts_with("0001-")),
        exit_code: i["State"]["ExitCode"].as_i64(),
        pid: i["State"]["Pid"].as_u64().filter(|p| *p > 0),
        healthy_at,
        log_tail: Vec::new(),
        health_output: last_failed_check(i),
    }
}

/// The output of the last health check, when it failed (cut to 240
/// characters): what the check itself says is wrong.
fn last_failed_check(i: &Value) -> Option<String> {
    let last = i["State"]["Health"]["Log"].as_array()?.last()?;
    (last["ExitCode"].as_i64() != Some(0))
        .then(|| last["Output"].as_str().unwrap_or("").trim().chars().take(240).collect::<String>())
        .filter(|o| !o.is_empty())
}

/// The `/events` stream: one JSON object per line.
pub fn parse_events(text: &str) -> Vec<EngineEvent> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let actor = v["Actor"]["Attributes"]["name"]
                .as_str()
                .or_else(|| v["Actor"]["ID"].as_str())
                .or_else(|| v["id"].as_str())
                .unwrap_or("")
                .to_string();
            EngineEvent {
                time_nano: v["timeNano"].as_i64().unwrap_or_else(|| v["time"].as_i64().unwrap_or(0) * 1_000_000_000),
                kind: v["Type"].as_str().unwrap_or("").to_string(),
                action: v["Action"].as_str().or_else(|| v["status"].as_str()).unwrap_or("").to_string(),
                actor,
            }
        })
        .collect()
}

/// Docker multiplexes stdout/stderr of a non-tty container in frames of
/// an 8-byte header (stream, 0, 0, 0, big-endian length) and the payload.
pub fn demux_logs(b: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= b.len() && b[i] <= 2 && b[i + 1..i + 4] == [0, 0, 0] {
        let len = u32::from_be_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        let end = (i + 8 + len).min(b.len());
        out.extend_from_slice(&b[i + 8..end]);
        i = end;
    }
    if i == 0 {
        return String::from_utf8_lossy(b).into_owned(); // a tty container: plain text
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_read_from_docker_and_podman_info() {
        let d = json!({"Driver": "overlay2", "DockerRootDir": "/srv/docker"});
        assert_eq!(store_of(&d), Some(("/srv/docker".into(), "overlay2".into())));
        let p = json!({"store": {"graphRoot": "/var/lib/containers/storage", "graphDriverName": "overlay"}});
        assert_eq!(store_of(&p), Some(("/var/lib/containers/storage".into(), "overlay".into())));
        assert_eq!(store_of(&json!({"Driver": "vfs"})), None);
    }

    #[test]
    fn images_by_tag_and_untagged() {
        let v = json!([
            { "Id": "sha256:aa", "RepoTags": ["fixture/redis:1", "registry:5000/x:2"] },
            { "Id": "sha256:bb", "RepoTags": null },
            { "Id": "sha256:cc", "RepoTags": ["<none>:<none>"] },
            // libpod's list: bare IDs.
            { "Id": "dd", "RepoTags": ["localhost/fixture/busybox:1"] }
        ]);
        let r = image_records(&v);
        assert_eq!(r.len(), 5);
        assert_eq!((r[4].repository.as_str(), r[4].id.as_str()), ("localhost/fixture/busybox", "sha256:dd"));
        assert_eq!((r[0].repository.as_str(), r[0].tag.as_str()), ("fixture/redis", "1"));
        assert_eq!((r[1].repository.as_str(), r[1].tag.as_str()), ("registry:5000/x", "2"));
        assert_eq!((r[2].repository.as_str(), r[2].id.as_str()), ("<none>", "sha256:bb"));
        assert_eq!(r[3].tag, "<none>");
    }

    #[test]
    fn container_state_health_history_and_pid() {
        let c = container_info(&json!({
            "Name": "/redis", "Image": "sha256:aa", "Config": { "Image": "fixture/redis:1" },
            "State": { "Status": "running", "Pid": 42, "StartedAt": "2026-01-01T00:00:00Z", "ExitCode": 0,
                       "Health": { "Status": "healthy", "Log": [
                           { "End": "2026-01-01T00:00:05Z", "ExitCode": 1 },
                           { "End": "2026-01-01T00:00:10Z", "ExitCode": 0 } ] } }
        }));
        assert_eq!(c.pid, Some(42));
        assert_eq!(c.health.as_deref(), Some("healthy"));
        assert_eq!(c.healthy_at, ["2026-01-01T00:00:10Z"]);
        assert_eq!((c.name.as_str(), c.image_id.as_deref()), ("/redis", Some("sha256:aa")));
        let none = container_info(
            &json!({ "Name": "/web", "Config": { "Image": "b" }, "State": { "Status": "exited", "ExitCode": 127, "Pid": 0 } }),
        );
        assert_eq!((none.health, none.exit_code, none.pid), (None, Some(127), None));
        // Podman's compatible API says Status "" for a container without a healthcheck.
        let podman =
            container_info(&json!({ "Name": "/web", "State": { "Status": "running", "Health": { "Status": "" } } }));
        assert_eq!(podman.health, None);
        let libpod = container_info(&json!({ "Name": "web", "Image": "e184", "State": { "Status": "running" } }));
        assert_eq!((libpod.name.as_str(), libpod.image_id.as_deref()), ("web", Some("sha256:e184")));
    }

    #[test]
    fn image_platform_and_layers() {
        let rec = ImageRecord { repository: "fixture/redis".into(), tag: "1".into(), id: "sha256:aa".into() };
        let i = image_info(
            &rec,
            &json!({ "Architecture": "arm64", "Variant": "v8", "Os": "linux", "RootFS": { "Layers": ["sha256:1", "sha256:2"] } }),
        );
        assert_eq!((i.architecture.as_str(), i.variant.as_deref()), ("arm64", Some("v8")));
        assert_eq!(i.diff_ids, ["sha256:1", "sha256:2"]);
    }

    #[test]
    fn events() {
        let ev = parse_events(concat!(
            r#"{"Type":"image","Action":"tag","Actor":{"ID":"sha256:aa","Attributes":{"name":"fixture/redis:1"}},"time":10,"timeNano":10000000001}"#,
            "\n",
            r#"{"status":"pull","id":"registry.example.com/app:1","Type":"image","Action":"pull","Actor":{"ID":"registry.example.com/app:1","Attributes":{}},"time":11}"#,
            "\n"
        ));
        assert_eq!(ev.len(), 2);
        assert_eq!(
            (ev[0].action.as_str(), ev[0].actor.as_str(), ev[0].time_nano),
            ("tag", "fixture/redis:1", 10000000001)
        );
        assert_eq!(
            (ev[1].action.as_str(), ev[1].actor.as_str(), ev[1].time_nano),
            ("pull", "registry.example.com/app:1", 11000000000)
        );
    }

    #[test]
    fn multiplexed_logs() {
        let mut b = vec![1, 0, 0, 0, 0, 0, 0, 3];
        b.extend_from_slice(b"hi\n");
        b.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        b.extend_from_slice(b"err\n");
        assert_eq!(demux_logs(&b), "hi\nerr\n");
        assert_eq!(demux_logs(b"plain tty text\n"), "plain tty text\n");
    }

    #[test]
    fn an_engine_that_accepts_but_never_answers_times_out() {
        let dir = std::env::temp_dir().join(format!("airboot-probe-hang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("docker.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let (_s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
        });
        let d = Docker { socket: sock, timeout: Duration::from_secs(1), flavor: Flavor::Docker };
        let started = Instant::now();
        assert_eq!(d.version().unwrap_err(), "engine not responding after 1s");
        assert!(started.elapsed() < Duration::from_secs(3));
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_engine_answering_with_a_server_error_is_told_apart() {
        let dir = std::env::temp_dir().join(format!("airboot-probe-500-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("docker.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n{\"Version\":\"20.10.24\"}",
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 65\r\n\r\n{\"message\":\"readlink /var/lib/docker/overlay2: invalid argument\"}",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 27\r\n\r\n{\"message\":\"No such image\"}",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = std::io::Read::read(&mut s, &mut buf).unwrap();
                std::io::Write::write_all(&mut s, answer.as_bytes()).unwrap();
            }
        });
        let d = Docker { socket: sock, timeout: Duration::from_secs(5), flavor: Flavor::Docker };
        assert_eq!(d.version().unwrap(), "20.10.24");
        let e = d.get("/images/json").unwrap_err();
        assert!(e.contains("HTTP 500") && e.contains("readlink"), "{e}");
        assert!(is_server_error(&e), "{e}");
        let e = d.get("/images/sha256:aa/json").unwrap_err();
        assert!(!is_server_error(&e), "a 404 is an answer about the request: {e}");
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!is_server_error("engine not responding after 10s"));
        assert!(!is_server_error("/var/run/docker.sock absent"));
        assert!(!is_server_error("GET /x: HTTP 5000 odd"));
        assert!(is_server_error(&http_error("GET", "/images/json", 503, "")));
    }

    /// A fake engine at a fresh socket answering `answers` in order (one
    /// connection each); what it was asked, as request lines.
    fn fake_engine(name: &str, answers: Vec<String>) -> (PathBuf, std::thread::JoinHandle<Vec<String>>) {
        let dir = std::env::temp_dir().join(format!("airboot-probe-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("engine.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            let mut asked = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 8192];
                let n = std::io::Read::read(&mut s, &mut buf).unwrap();
                asked.push(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string());
                std::io::Write::write_all(&mut s, answer.as_bytes()).unwrap();
            }
            asked
        });
        (sock, t)
    }

    fn http(status: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    }

    /// Podman reports a container that ran to its end as `stopped` once
    /// conmon has cleaned up, and its events are read without streaming.
    #[test]
    fn podman_flavour_knows_stopped_and_reads_events_without_streaming() {
        let answers = vec![
            http("201 Created", r#"{"Id":"c1","Warnings":[]}"#),
            http("204 No Content", ""),
            http("200 OK", r#"{"State":{"Running":false,"Status":"stopped","ExitCode":0,"Error":""}}"#),
            http("200 OK", r#"[{"Id":"c1"}]"#),
            http(
                "200 OK",
                "{\"Type\":\"container\",\"Action\":\"start\",\"Actor\":{\"ID\":\"c1\",\"Attributes\":{\"name\":\"redis\"}},\"timeNano\":5}\n",
            ),
        ];
        let (sock, t) = fake_engine("podman", answers);
        let d = Docker { socket: sock.clone(), timeout: Duration::from_secs(5), flavor: Flavor::Podman };
        let r = d.run_image("localhost/fixture/busybox:1", Duration::from_secs(5));
        assert!(r.ran && r.exit_code == Some(0), "{r:?}");
        assert_eq!(r.detail, "exited 0");
        let e = d.events(123).unwrap();
        assert_eq!((e[0].action.as_str(), e[0].actor.as_str()), ("start", "redis"));
        let asked = t.join().unwrap();
        assert!(asked[0].starts_with("POST /v4.0.0/libpod/containers/create"), "{asked:?}");
        assert!(
            asked[3].starts_with("DELETE /v4.0.0/libpod/containers/c1"),
            "the test container is removed: {asked:?}"
        );
        assert!(asked[4].starts_with("GET /v4.0.0/libpod/events?since=0&stream=false "), "{asked:?}");
        assert_eq!(super::super::Engine::name(&d), "podman");
        std::fs::remove_dir_all(sock.parent().unwrap()).unwrap();
    }

    #[test]
    fn absent_socket_is_a_clear_answer() {
        let d = Docker {
            socket: "/nonexistent/docker.sock".into(),
            timeout: Duration::from_secs(1),
            flavor: Flavor::Docker,
        };
        assert_eq!(d.version().unwrap_err(), "/nonexistent/docker.sock absent");
    }
}

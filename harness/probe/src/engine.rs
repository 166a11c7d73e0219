//! The container engine, asked through its API socket (never by scraping
//! CLI output): Docker's Engine API, or Podman's Docker-compatible socket.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use airboot_proto::http;
use airboot_proto::{ContainerRecord, ImageRecord};
use serde_json::Value;

pub struct Docker {
    pub socket: PathBuf,
    pub timeout: Duration,
}

impl Docker {
    /// GET a path and parse the JSON answer. Errors are short sentences
    /// for the report ("docker.sock absent", "engine not responding …").
    pub fn get(&self, path: &str) -> Result<Value, String> {
        if !self.socket.exists() {
            return Err(format!("{} absent", self.socket.display()));
        }
        let s = UnixStream::connect(&self.socket)
            .map_err(|e| format!("cannot connect to {}: {e}", self.socket.display()))?;
        s.set_read_timeout(Some(self.timeout)).ok();
        s.set_write_timeout(Some(self.timeout)).ok();
        let r = http::request(s, "GET", path, None, None, 32 << 20).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                format!("engine not responding after {}s", self.timeout.as_secs())
            } else {
                format!("GET {path}: {e}")
            }
        })?;
        if r.status != 200 {
            return Err(format!("GET {path}: HTTP {} {}", r.status, r.text().trim()));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("GET {path}: not JSON: {e}"))
    }

    pub fn version(&self) -> Result<String, String> {
        let v = self.get("/version")?;
        Ok(v["Version"].as_str().unwrap_or("unknown").to_string())
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, String> {
        Ok(image_records(&self.get("/images/json")?))
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>, String> {
        let list = self.get("/containers/json?all=1")?;
        let mut out = Vec::new();
        for c in list.as_array().into_iter().flatten() {
            let Some(id) = c["Id"].as_str() else { continue };
            // A container removed between the list and the inspect is simply gone.
            if let Ok(i) = self.get(&format!("/containers/{id}/json")) {
                out.push(container_record(&i));
            }
        }
        Ok(out)
    }
}

/// `/images/json` → one record per tag (untagged images as `<none>:<none>`).
pub fn image_records(v: &Value) -> Vec<ImageRecord> {
    let mut out = Vec::new();
    for i in v.as_array().into_iter().flatten() {
        let id = i["Id"].as_str().unwrap_or("").to_string();
        let tags: Vec<&str> = i["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if tags.is_empty() {
            out.push(ImageRecord {
                repository: "<none>".into(),
                tag: "<none>".into(),
                id: id.clone(),
            });
        }
        for t in tags {
            let (repo, tag) = match t.rfind(':') {
                Some(p) if !t[p + 1..].contains('/') => (&t[..p], &t[p + 1..]),
                _ => (t, "<none>"),
            };
            out.push(ImageRecord {
                repository: repo.into(),
                tag: tag.into(),
                id: id.clone(),
            });
        }
    }
    out
}

/// `/containers/{id}/json` → a record.
pub fn container_record(i: &Value) -> ContainerRecord {
    let s = |v: &Value| v.as_str().map(str::to_string);
    ContainerRecord {
        name: s(&i["Name"]).unwrap_or_default(),
        image: s(&i["Config"]["Image"]).unwrap_or_default(),
        image_id: s(&i["Image"]),
        state: s(&i["State"]["Status"]).unwrap_or_else(|| "unknown".into()),
        health: s(&i["State"]["Health"]["Status"]),
        started_at: s(&i["State"]["StartedAt"]),
        exit_code: i["State"]["ExitCode"].as_i64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_by_tag_and_untagged() {
        let v = json!([
            { "Id": "sha256:aa", "RepoTags": ["fixture/redis:1", "registry:5000/x:2"] },
            { "Id": "sha256:bb", "RepoTags": null },
            { "Id": "sha256:cc", "RepoTags": ["<none>:<none>"] }
        ]);
        let r = image_records(&v);
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[0].repository.as_str(), r[0].tag.as_str()),
            ("fixture/redis", "1")
        );
        assert_eq!(
            (r[1].repository.as_str(), r[1].tag.as_str()),
            ("registry:5000/x", "2")
        );
        assert_eq!(
            (r[2].repository.as_str(), r[2].id.as_str()),
            ("<none>", "sha256:bb")
        );
        assert_eq!(r[3].tag, "<none>");
    }

    #[test]
    fn container_from_inspect() {
        let v = json!({
            "Name": "/redis", "Image": "sha256:aa",
            "Config": { "Image": "fixture/redis:1" },
            "State": { "Status": "running", "StartedAt": "2026-01-01T00:00:00Z", "ExitCode": 0, "Health": { "Status": "healthy" } }
        });
        let c = container_record(&v);
        assert_eq!(c.name, "/redis");
        assert_eq!(c.health.as_deref(), Some("healthy"));
        assert_eq!(c.image_id.as_deref(), Some("sha256:aa"));
        let none = container_record(
            &json!({ "Name": "/web", "Config": { "Image": "b" }, "State": { "Status": "exited", "ExitCode": 127 } }),
        );
        assert_eq!(none.health, None);
        assert_eq!(none.exit_code, Some(127));
    }

    #[test]
    fn absent_socket_is_a_clear_answer() {
        let d = Docker {
            socket: "/nonexistent/docker.sock".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(d.version().unwrap_err(), "/nonexistent/docker.sock absent");
    }
}

//! A small, tolerant QMP client.
//!
//! Commands and their results use the `qapi` crate's generated types, but
//! the wire is read with plain serde_json: `qapi`'s own stream gives up on
//! any event it does not know (it is generated from one QEMU version), and
//! an unknown event must never end a run. Events are kept as raw JSON and
//! converted only where airboot cares.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path} did not accept a connection within {secs}s")]
    Connect { path: String, secs: u64 },
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("QMP connection closed by QEMU")]
    Closed,
    #[error("QMP sent something that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command { command: String, class: String, desc: String },
    #[error("QMP command {command} got no answer within {secs}s")]
    Timeout { command: String, secs: u64 },
}

/// An asynchronous event QEMU sent.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: Vec<QmpEvent>,
    next_id: u64,
    /// "major.minor.micro (package)" from the greeting.
    pub version: Option<String>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").field("version", &self.version).finish()
    }
}

impl Qmp {
    /// Connect (retrying while QEMU creates the socket), read the greeting
    /// and leave capabilities negotiation mode.
    pub async fn connect(path: &Path, within: Duration) -> Result<Qmp, QmpError> {
        let deadline = tokio::time::Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => {
                    return Err(QmpError::Connect { path: path.display().to_string(), secs: within.as_secs() });
                }
            }
        };
        let (r, w) = stream.into_split();
        let mut qmp = Qmp { reader: BufReader::new(r), writer: w, events: Vec::new(), next_id: 1, version: None };
        let greeting = tokio::time::timeout(Duration::from_secs(10), qmp.read_value())
            .await
            .map_err(|_| QmpError::Timeout { command: "greeting".into(), secs: 10 })??;
        qmp.version = greeting_version(&greeting);
        qmp.execute(qapi::qmp::qmp_capabilities { enable: None }).await?;
        Ok(qmp)
    }

    async fn read_value(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).await?;
            if n == 0 {
                return Err(QmpError::Closed);
            }
            if line.trim().is_empty() {
                continue;
            }
            return Ok(serde_json::from_str(&line)?);
        }
    }

    /// Run a command by name with raw JSON arguments and return its raw result.
    pub async fn execute_value(&mut self, name: &str, args: Value) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": name, "id": id });
        if !args.is_null() && args.as_object().is_none_or(|o| !o.is_empty()) {
            msg["arguments"] = args;
        }
        let mut text = serde_json::to_string(&msg)?;
        text.push('\n');
        self.writer.write_all(text.as_bytes()).await?;
        loop {
            let v = self.read_value().await?;
            if let Some(ev) = v.get("event").and_then(Value::as_str) {
                self.events
                    .push(QmpEvent { name: ev.to_string(), data: v.get("data").cloned().unwrap_or(Value::Null) });
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(ret) = v.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = v.get("error") {
                return Err(QmpError::Command {
                    command: name.to_string(),
                    class: err.get("class").and_then(Value::as_str).unwrap_or("?").to_string(),
                    desc: err.get("desc").and_then(Value::as_str).unwrap_or("?").to_string(),
                });
            }
        }
    }

    /// Run a typed command.
    pub async fn execute<C: qapi::Command>(&mut self, cmd: C) -> Result<C::Ok, QmpError> {
        let args = serde_json::to_value(&cmd)?;
        let ret = self.execute_value(C::NAME, args).await?;
        Ok(serde_json::from_value(ret)?)
    }

    /// Like [`execute`](Self::execute) with a time limit.
    pub async fn execute_within<C: qapi::Command>(&mut self, cmd: C, within: Duration) -> Result<C::Ok, QmpError> {
        tokio::time::timeout(within, self.execute(cmd))
            .await
            .map_err(|_| QmpError::Timeout { command: C::NAME.into(), secs: within.as_secs() })?
    }

    /// Ask QEMU to quit. The connection closing (EOF or reset) is the
    /// expected answer and counts as success.
    pub async fn quit(&mut self, within: Duration) -> Result<(), QmpError> {
        match self.execute_within(qapi::qmp::quit {}, within).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(QmpError::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Events received so far (while waiting for command answers).
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.events)
    }

    /// Network-class PCI devices (class 0x02xx) the VM has, as
    /// "bus:slot.fn vendor:device (desc)" strings.
    pub async fn pci_network_devices(&mut self) -> Result<Vec<String>, QmpError> {
        let v = self.execute_value("query-pci", Value::Null).await?;
        Ok(network_devices(&v))
    }
}

fn greeting_version(g: &Value) -> Option<String> {
    let v = g.get("QMP")?.get("version")?;
    let q = v.get("qemu")?;
    let pkg = v.get("package").and_then(Value::as_str).unwrap_or("").trim();
    let s = format!("{}.{}.{}", q.get("major")?.as_i64()?, q.get("minor")?.as_i64()?, q.get("micro")?.as_i64()?);
    Some(if pkg.is_empty() { s } else { format!("{s} {pkg}") })
}

/// Walk a `query-pci` answer (including devices behind bridges) and list
/// the network controllers.
pub fn network_devices(v: &Value) -> Vec<String> {
    fn walk(devs: &Value, bus: i64, out: &mut Vec<String>) {
        for d in devs.as_array().into_iter().flatten() {
            let class = d.pointer("/class_info/class").and_then(Value::as_i64).unwrap_or(0);
            if class >> 8 == 0x02 {
                out.push(format!(
                    "{:02x}:{:02x}.{} {:04x}:{:04x} ({})",
                    d.get("bus").and_then(Value::as_i64).unwrap_or(bus),
                    d.get("slot").and_then(Value::as_i64).unwrap_or(0),
                    d.get("function").and_then(Value::as_i64).unwrap_or(0),
                    d.pointer("/id/vendor").and_then(Value::as_i64).unwrap_or(0),
                    d.pointer("/id/device").and_then(Value::as_i64).unwrap_or(0),
                    d.pointer("/class_info/desc").and_then(Value::as_str).unwrap_or("network controller"),
                ));
            }
            if let Some(inner) = d.pointer("/pci_bridge/devices") {
                walk(inner, bus, out);
            }
        }
    }
    let mut out = Vec::new();
    for b in v.as_array().into_iter().flatten() {
        walk(b.get("devices").unwrap_or(&Value::Null), b.get("bus").and_then(Value::as_i64).unwrap_or(0), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_network_devices_behind_bridges() {
        let v = json!([{ "bus": 0, "devices": [
            { "bus": 0, "slot": 1, "function": 0, "class_info": { "class": 0x0100, "desc": "SCSI" }, "id": { "vendor": 0x1af4, "device": 0x1001 } },
            { "bus": 0, "slot": 2, "function": 0, "class_info": { "class": 0x0604 }, "id": { "vendor": 0x1b36, "device": 0x000c },
              "pci_bridge": { "devices": [
                { "bus": 1, "slot": 0, "function": 0, "class_info": { "class": 0x0200, "desc": "Ethernet controller" }, "id": { "vendor": 0x1af4, "device": 0x1041 } }
              ] } }
        ] }]);
        assert_eq!(network_devices(&v), ["01:00.0 1af4:1041 (Ethernet controller)"]);
        assert!(network_devices(&json!([{ "bus": 0, "devices": [] }])).is_empty());
    }

    #[test]
    fn greeting() {
        let g = json!({"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": []}});
        assert_eq!(greeting_version(&g).as_deref(), Some("7.2.22 Debian 1:7.2"));
    }

    /// A fake QEMU on a socket pair: unknown events are skipped, answers are
    /// matched by id, errors are reported with their class.
    #[tokio::test(flavor = "current_thread")]
    async fn tolerates_unknown_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\n").await.unwrap();
            let mut line = String::new();
            for reply in [
                "{\"return\": {}, \"id\": 1}\n".to_string(),
                "{\"event\": \"SOMETHING_NEW_IN_QEMU_12\", \"data\": {\"x\": 1}}\n{\"return\": {}, \"id\": 2}\n"
                    .to_string(),
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}, \"id\": 3}\n".to_string(),
            ] {
                line.clear();
                r.read_line(&mut line).await.unwrap();
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            line.clear();
            r.read_line(&mut line).await.unwrap();
            assert!(line.contains("quit"));
            // close without answering, as QEMU does
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        assert_eq!(q.version.as_deref(), Some("7.2.0"));
        q.execute(qapi::qmp::cont {}).await.unwrap();
        assert_eq!(q.take_events()[0].name, "SOMETHING_NEW_IN_QEMU_12");
        let e = q.execute(qapi::qmp::stop {}).await.unwrap_err();
        assert!(e.to_string().contains("GenericError: nope"), "{e}");
        q.quit(Duration::from_secs(5)).await.unwrap();
        server.await.unwrap();
    }
}

//! Serving the host: framed JSON lines (`airboot_proto::probe`) over vsock
//! and over a virtio-serial port, whichever the VM has. Each connection is
//! served in its own thread; a status is gathered fresh for every request.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airboot_proto::probe::{
    Body, HelloReply, Op, PROBE_PROTOCOL, PROBE_SERIAL_NAME, PROBE_VSOCK_PORT, Request, Response,
};

use crate::collect::Collector;

pub struct Shared {
    pub collector: Mutex<Collector>,
    /// Set once a host completed a handshake: the console fallback stops.
    pub host_seen: AtomicBool,
}

fn machine() -> String {
    let mut u: libc::utsname = unsafe_zeroed();
    #[allow(unsafe_code)]
    // SAFETY: uname fills the struct we own.
    let rc = unsafe { libc::uname(&mut u) };
    if rc != 0 {
        return std::env::consts::ARCH.into();
    }
    let bytes: Vec<u8> = u.machine.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn unsafe_zeroed() -> libc::utsname {
    #[allow(unsafe_code)]
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    unsafe {
        std::mem::zeroed()
    }
}

/// Answer one request.
pub fn answer(shared: &Shared, req: Request, transport: &str) -> Response {
    let body = match req.op {
        Op::Hello { version, nonce } => {
            if version != PROBE_PROTOCOL {
                Body::Error {
                    message: format!(
                        "protocol {version} asked, this probe speaks {PROBE_PROTOCOL}: use matching airboot and probe versions"
                    ),
                }
            } else {
                shared.host_seen.store(true, Ordering::Relaxed);
                Body::Hello(HelloReply {
                    version: PROBE_PROTOCOL,
                    nonce,
                    probe_version: env!("CARGO_PKG_VERSION").into(),
                    machine: machine(),
                    transport: transport.into(),
                })
            }
        }
        Op::Status => {
            let mut c = shared.collector.lock().unwrap_or_else(|e| e.into_inner());
            Body::Status(Box::new(c.status(true)))
        }
        Op::RunImage { reference, timeout_s } => {
            let timeout = Duration::from_secs(timeout_s.clamp(1, 600));
            // Creating and starting a container can take tens of seconds
            // on a slow (emulated) device: each call gets the whole budget.
            let d = shared.collector.lock().unwrap_or_else(|e| e.into_inner()).engine(timeout);
            Body::RunImage(d.run_image(&reference, timeout))
        }
        Op::Airgap => {
            let (d, containers, events) = {
                let mut c = shared.collector.lock().unwrap_or_else(|e| e.into_inner());
                let s = c.status(true);
                (c.engine(Duration::from_secs(10)), s.containers, s.events)
            };
            let up = d.version().is_ok();
            let who = match d.name() {
                "docker" => "dockerd",
                other => other,
            };
            Body::Airgap(crate::airgap::collect(up.then_some(d.as_ref()), who, &containers, &events))
        }
        Op::Sync => {
            let t = std::time::Instant::now();
            match std::process::Command::new("sync").status() {
                Ok(st) if st.success() => Body::Synced { seconds: t.elapsed().as_secs_f64() },
                Ok(st) => Body::Error { message: format!("sync exited {st}") },
                Err(e) => Body::Error { message: format!("cannot run sync: {e}") },
            }
        }
        Op::Exec { command, timeout_s } => {
            Body::Executed(crate::exec::run(&command, Duration::from_secs(timeout_s.clamp(1, 3600))))
        }
        Op::Reboot => {
            let how = crate::exec::reboot_command();
            let argv = how.clone();
            // Answer first: the reboot ends this connection.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                let _ = std::process::Command::new("sync").status();
                let _ = std::process::Command::new(argv[0]).args(&argv[1..]).status();
            });
            Body::Rebooting { how: how.join(" ") }
        }
    };
    Response { id: req.id, body }
}

/// Serve requests on one connection until it closes.
pub fn serve_conn<S: Read + Write>(shared: &Shared, stream: S, transport: &str) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let resp = match serde_json::from_str::<Request>(text) {
            Ok(req) => answer(shared, req, transport),
            Err(e) => Response { id: 0, body: Body::Error { message: format!("bad request: {e}") } },
        };
        let mut out = serde_json::to_string(&resp).expect("json");
        out.push('\n');
        if reader.get_mut().write_all(out.as_bytes()).and_then(|_| reader.get_mut().flush()).is_err() {
            return;
        }
    }
}

/// Listen on vsock; retry while the transport is missing (the module loads
/// when the device appears).
pub fn vsock_loop(shared: Arc<Shared>) {
    loop {
        match vsock::VsockListener::bind_with_cid_port(libc::VMADDR_CID_ANY, PROBE_VSOCK_PORT) {
            Ok(l) => {
                for s in l.incoming().flatten() {
                    let shared = shared.clone();
                    std::thread::spawn(move || serve_conn(&shared, s, "vsock"));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_secs(2)),
        }
    }
}

/// The virtio-serial port named `org.airboot.probe`, if the VM has one.
pub fn find_serial_port(sys: &Path) -> Option<PathBuf> {
    let rd = std::fs::read_dir(sys).ok()?;
    for e in rd.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim() == PROBE_SERIAL_NAME {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

/// Serve the virtio-serial port. A read of 0 bytes means no host is
/// connected yet: wait and reopen.
pub fn serial_loop(shared: Arc<Shared>) {
    loop {
        if let Some(dev) = find_serial_port(Path::new("/sys/class/virtio-ports"))
            && let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&dev)
        {
            serve_conn(&shared, f, "virtio-serial");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Config;

    fn shared() -> Shared {
        Shared { collector: Mutex::new(Collector::new(Config::default())), host_seen: AtomicBool::new(false) }
    }

    /// A byte stream with canned input, collecting output.
    struct Pipe {
        input: std::io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }
    impl Read for Pipe {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(b)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn handshake_echoes_the_nonce_and_bad_requests_get_errors() {
        let s = shared();
        let mut p = Pipe {
            input: std::io::Cursor::new(
                b"{\"id\":1,\"op\":\"hello\",\"version\":1,\"nonce\":\"abc\"}\nnot json\n{\"id\":2,\"op\":\"hello\",\"version\":9,\"nonce\":\"x\"}\n".to_vec(),
            ),
            output: Vec::new(),
        };
        serve_conn(&s, &mut p, "test");
        let replies: Vec<Response> =
            String::from_utf8(p.output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(replies.len(), 3);
        match &replies[0].body {
            Body::Hello(h) => {
                assert_eq!(h.nonce, "abc");
                assert_eq!(h.transport, "test");
                assert!(!h.machine.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&replies[1].body, Body::Error { message } if message.starts_with("bad request")));
        assert!(matches!(&replies[2].body, Body::Error { message } if message.contains("protocol 9")));
        assert!(s.host_seen.load(Ordering::Relaxed));
    }

    #[test]
    fn finds_the_named_port() {
        let d = std::env::temp_dir().join(format!("airboot-vports-{}", std::process::id()));
        for (port, name) in [("vport0p1", "org.qemu.guest_agent.0"), ("vport1p1", PROBE_SERIAL_NAME)] {
            std::fs::create_dir_all(d.join(port)).unwrap();
            std::fs::write(d.join(port).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(find_serial_port(&d), Some(PathBuf::from("/dev/vport1p1")));
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(find_serial_port(Path::new("/nonexistent")), None);
    }
}

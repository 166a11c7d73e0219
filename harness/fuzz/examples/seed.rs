//! Writes the structured seeds of the fuzz corpus into `corpus/<target>/`
//! (`harness/fuzz/seed.sh` runs it, then adds the disk images): valid
//! inputs of each protocol, so a fuzzer starts past the first checks.

use std::path::Path;

use airboot_core::cut::writelog::{EntryKind, encode_log};
use airboot_proto::probe::{Body, HelloReply, ProbeStatus, Response};

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

const RID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn status_block(seq: u64) -> String {
    [
        format!(r#"AIRBOOT-STATUS v1 begin {{"seq":{seq},"uptime_s":{seq}.5,"final":false}}"#),
        r#"AIRBOOT-STATUS v1 engine {"name":"docker","state":"up","version":"20.10.24"}"#.into(),
        format!(r#"AIRBOOT-STATUS v1 image {{"repository":"fixture/redis","tag":"1","id":"{RID}"}}"#),
        r#"AIRBOOT-STATUS v1 container {"name":"/redis","image":"fixture/redis:1","state":"running","health":"healthy"}"#.into(),
        r#"AIRBOOT-STATUS v1 unit {"name":"docker.service","active":"active"}"#.into(),
        r#"AIRBOOT-STATUS v1 error {"message":"Error response from daemon: layer does not exist"}"#.into(),
        format!(r#"AIRBOOT-STATUS v1 end {{"seq":{seq},"records":5}}"#),
    ]
    .join("\n")
}

fn main() {
    // The console: kernel and systemd lines, colour, OSC and DCS strings,
    // carriage returns, invalid UTF-8, a status block mid-stream. The
    // first byte is the target's split step.
    let mut console = vec![7u8];
    console.extend_from_slice(b"[    0.000000] Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)\r\n");
    console.extend_from_slice(b"\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mdocker.service\x1b[0m - Docker Application Container Engine.\r\n");
    console.extend_from_slice(b"\x1b]0;title\x07\x1bP1$r0m\x1b\\\x1b[?25l\x1b[2J\x1b[H");
    console.extend_from_slice(b"Welcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!\r\n\xff\xfe\xc3(\r\n");
    console.extend_from_slice(b"[   12.345678] EXT4-fs (vda2): mounted filesystem with ordered data mode.\n");
    console.extend_from_slice(status_block(3).as_bytes());
    console.extend_from_slice(b"\ndebian login: ");
    put("console", "boot.txt", &console);
    put("console", "log-lines.txt", b"\x01[   1.250] kernel line\n[  20.000] !partial line cut\n[x] no time\n");

    put("status", "block.txt", status_block(1).as_bytes());
    let mut two = status_block(1);
    two.push('\n');
    two.push_str(&status_block(2).replace("\"records\":5", "\"records\":4"));
    put("status", "damaged.txt", two.as_bytes());

    let hello = Response {
        id: 1,
        body: Body::Hello(HelloReply {
            version: 1,
            nonce: "n".into(),
            probe_version: "0.1.0".into(),
            machine: "x86_64".into(),
            transport: "virtio-serial".into(),
        }),
    };
    let status = Response {
        id: 2,
        body: Body::Status(Box::new(ProbeStatus { system: "running".into(), ..Default::default() })),
    };
    let err = Response { id: 3, body: Body::Error { message: "docker.sock absent".into() } };
    let mut probe = String::new();
    for r in [&hello, &status, &err] {
        probe.push_str(&serde_json::to_string(r).unwrap());
        probe.push('\n');
    }
    probe.push_str("{\"id\":4,\"op\":\"status\"}\n{not json}\n");
    put("probe", "answers.jsonl", probe.as_bytes());

    put("http", "length.txt", b"\x10HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]");
    put("http", "chunked.txt", b"\x40HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");

    put(
        "mounts",
        "mountinfo.txt",
        b"22 1 254:2 / / rw,relatime shared:1 - ext4 /dev/vda2 rw\n\
          30 22 0:25 / /var/lib/docker rw,nosuid shared:9 - overlay overlay rw,lowerdir=/a,upperdir=/b\n\
          31 22 7:0 / /usr ro - erofs /dev/vda3 ro\n",
    );

    put(
        "archive",
        "manifest.txt",
        b"[{\"Config\":\"abc.json\",\"RepoTags\":[\"fixture/redis:1\"],\"Layers\":[\"l1/layer.tar\"]}]\0{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:2222222222222222222222222222222222222222222222222222222222222222\"]}}",
    );

    let log = encode_log(
        &[
            (EntryKind::Write, false, 2048, 8, 0xaa),
            (EntryKind::Flush, false, 0, 0, 0),
            (EntryKind::Write, true, 4096, 2, 0x55),
            (EntryKind::Discard, false, 8192, 16, 0),
            (EntryKind::Flush, false, 0, 0, 0),
        ],
        3,
    );
    let mut wl = (64u64 << 20).to_le_bytes().to_vec();
    wl.extend_from_slice(&log);
    put("writelog", "log.bin", &wl);
}

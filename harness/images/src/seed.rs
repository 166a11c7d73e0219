//! Pre-seeding a fixture's container store at build time, with the real
//! engine on the build host: a private dockerd for Docker (the approach of
//! seeding the writable partition at build time), `podman --root` for
//! Podman.

use std::fs::{self, File, OpenOptions};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airboot_proto::http;
use airboot_qemu::process::{self, GroupGuard, RunError, harden, interrupted, require};

use crate::FixtureImage;
use crate::util::{BuildError, Ctx, io_err, tail};

/// Load the image archives into `data_root` with a private dockerd on the
/// build host (the approach of seeding the writable partition at build
/// time), tag them, and strip what the device's dockerd must create itself.
pub(crate) fn docker(
    ctx: &Ctx,
    data_root: &Path,
    containers_dir: &Path,
    images: &[FixtureImage],
    driver: &str,
) -> Result<(), BuildError> {
    let dockerd = require("dockerd")?;
    // Unix socket paths are limited to 108 bytes: keep the runtime state short.
    let run =
        airboot_qemu::scratch::temp_dir_in("dk", Path::new("/tmp")).map_err(io_err("creating a dockerd run folder"))?;
    let sock = run.path().join("docker.sock");
    fs::create_dir_all(data_root).map_err(io_err("creating var/lib/docker"))?;
    let log = OpenOptions::new().create(true).append(true).open(&ctx.log).map_err(io_err("opening the build log"))?;
    let log2 = log.try_clone().map_err(io_err("opening the build log"))?;
    let mut cmd = Command::new(&dockerd);
    cmd.arg("--data-root")
        .arg(data_root)
        .arg("--exec-root")
        .arg(run.path().join("exec"))
        .arg("--pidfile")
        .arg(run.path().join("docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(["--iptables=false", "--ip6tables=false", "--bridge=none", "--log-level=warn"])
        .arg(format!("--storage-driver={driver}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    harden(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| BuildError::Step {
        step: "starting dockerd".into(),
        message: e.to_string(),
        log: None,
    })?;
    let mut guard = GroupGuard::new(child.id(), "dockerd");
    let fail = |message: String| BuildError::Step {
        step: "pre-seeding /var/lib/docker".into(),
        message,
        log: Some(ctx.log.clone()),
    };

    // Wait for the API.
    let start = Instant::now();
    loop {
        if let Ok(s) = UnixStream::connect(&sock)
            && let Ok(r) = http::request(s, "GET", "/_ping", None, None, 1 << 10)
            && r.status == 200
        {
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(fail(format!("dockerd exited ({st}) before answering:\n{}", tail(&ctx.log, 15))));
        }
        if interrupted() {
            return Err(BuildError::Tool(RunError::Interrupted { program: "dockerd".into() }));
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(fail(format!(
                "dockerd did not answer on {} within 60s:\n{}",
                sock.display(),
                tail(&ctx.log, 15)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let api = |method: &str, path: &str, body: Option<&Path>| -> Result<http::Response, BuildError> {
        let s = UnixStream::connect(&sock).map_err(|e| fail(format!("connecting to dockerd: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(300))).ok();
        let r = match body {
            Some(p) => {
                let mut f = File::open(p).map_err(io_err(format!("opening {}", p.display())))?;
                let len = f.metadata().map_err(io_err("stat"))?.len();
                http::request(s, method, path, Some("application/x-tar"), Some((&mut f, len)), 16 << 20)
            }
            None => http::request(s, method, path, None, None, 16 << 20),
        };
        r.map_err(|e| fail(format!("{method} {path}: {e}")))
    };
    for img in images {
        let r = api("POST", "/images/load?quiet=1", Some(&containers_dir.join(&img.archive)))?;
        let text = r.text();
        if r.status != 200 || text.contains("errorDetail") {
            return Err(fail(format!("loading {}: HTTP {} {}", img.archive, r.status, text.trim())));
        }
        let (repo, tag) = img.reference.rsplit_once(':').unwrap_or((&img.reference, "latest"));
        let r = api("POST", &format!("/images/{}/tag?repo={repo}&tag={tag}", img.id), None)?;
        if r.status != 201 {
            return Err(fail(format!(
                "tagging {} as {}: HTTP {} {}",
                img.id,
                img.reference,
                r.status,
                r.text().trim()
            )));
        }
    }
    let r = api("GET", "/images/json", None)?;
    let listed: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| fail(format!("reading the image list: {e}")))?;
    for img in images {
        let ok = listed.as_array().into_iter().flatten().any(|i| {
            i["Id"] == img.id.as_str()
                && i["RepoTags"].as_array().is_some_and(|t| t.iter().any(|t| t == img.reference.as_str()))
        });
        if !ok {
            return Err(fail(format!("after loading, dockerd does not list {} as {}", img.reference, img.id)));
        }
    }
    // Stop dockerd cleanly so its metadata is flushed.
    process::signal_group(child.id(), libc::SIGTERM);
    let stop = Instant::now();
    while child.try_wait().ok().flatten().is_none() && stop.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    guard.kill();
    let _ = child.wait();
    for d in ["network", "containerd", "tmp", "runtimes", "buildkit", "plugins", "swarm", "trust"] {
        let p = data_root.join(d);
        if p.exists() {
            fs::remove_dir_all(&p).map_err(io_err(format!("removing {}", p.display())))?;
        }
    }
    Ok(())
}

/// The store-corrupt control: zero the first 4 KiB of `bin/busybox` in
/// every seeded overlay2 layer that has it, keeping its size, so the
/// layer no longer matches its diff_id while every record still stands.
/// Returns the first file changed.
pub(crate) fn corrupt_a_layer(data_root: &Path) -> Result<PathBuf, BuildError> {
    use std::os::unix::fs::FileExt;
    let layers = data_root.join("overlay2");
    let mut changed = Vec::new();
    for e in fs::read_dir(&layers).map_err(io_err(format!("reading {}", layers.display())))? {
        let p = e.map_err(io_err("reading overlay2"))?.path().join("diff/bin/busybox");
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        if !meta.is_file() || meta.len() < 4096 {
            continue;
        }
        let f = OpenOptions::new().write(true).open(&p).map_err(io_err(format!("opening {}", p.display())))?;
        f.write_all_at(&[0u8; 4096], 0).map_err(io_err(format!("writing {}", p.display())))?;
        changed.push(p);
    }
    changed.sort();
    changed.into_iter().next().ok_or_else(|| BuildError::Step {
        step: "corrupting a layer".into(),
        message: format!("no layer under {} has a bin/busybox to damage", layers.display()),
        log: None,
    })
}

/// The restorable fixture's store of apps: each archive copied into an
/// OCI layout at `usr/share/apps-reset/oci` by the rootfs's own skopeo
/// (chrooted: the tool the device restores with), named `<repo>-<tag>`
/// there, and `apps.list` saying which reference and image ID each is.
/// skopeo rewrites an image's config for OCI, so the ID dockerd will give
/// it is the layout's config digest: the images are returned with those.
pub(crate) fn oci_layout(
    ctx: &Ctx,
    root: &Path,
    containers_dir: &Path,
    images: &[FixtureImage],
) -> Result<Vec<FixtureImage>, BuildError> {
    let store = root.join("usr/share/apps-reset");
    let layout = store.join("oci");
    fs::create_dir_all(&store).map_err(io_err("creating usr/share/apps-reset"))?;
    let mut list = String::from("# name-in-the-layout  reference  image-id (read by apps-restore)\n");
    let mut out = Vec::new();
    for i in images {
        let tmp = root.join("tmp").join(&i.archive);
        fs::copy(containers_dir.join(&i.archive), &tmp).map_err(io_err(format!("copying {}", i.archive)))?;
        let name = i.reference.rsplit('/').next().unwrap_or(&i.reference).replace(':', "-");
        let mut cmd = Command::new("chroot");
        cmd.arg(root).args([
            "/usr/bin/skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            &format!("docker-archive:/tmp/{}", i.archive),
            &format!("oci:/usr/share/apps-reset/oci:{name}"),
        ]);
        let r =
            ctx.run(&format!("skopeo copy {} into the OCI layout", i.reference), &mut cmd, Duration::from_secs(600));
        let _ = fs::remove_file(&tmp);
        r?;
        let id = oci_config_digest(&layout, &name)?;
        list.push_str(&format!("{name} {} {id}\n", i.reference));
        out.push(FixtureImage { id, ..i.clone() });
    }
    crate::util::write(&store.join("apps.list"), list.as_bytes(), 0o644)?;
    Ok(out)
}

/// The config digest of the manifest named `name` in an OCI layout.
fn oci_config_digest(layout: &Path, name: &str) -> Result<String, BuildError> {
    let bad = |m: String| BuildError::Step { step: "reading the OCI layout".into(), message: m, log: None };
    let json = |p: &Path| -> Result<serde_json::Value, BuildError> {
        let t = fs::read_to_string(p).map_err(|e| bad(format!("{}: {e}", p.display())))?;
        serde_json::from_str(&t).map_err(|e| bad(format!("{}: {e}", p.display())))
    };
    let blob = |d: &str| layout.join("blobs").join(d.replacen(':', "/", 1));
    let index = json(&layout.join("index.json"))?;
    let manifest = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .and_then(|m| m["digest"].as_str())
        .ok_or_else(|| bad(format!("index.json names no manifest {name}")))?;
    let m = json(&blob(manifest))?;
    m["config"]["digest"]
        .as_str()
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_string)
        .ok_or_else(|| bad(format!("manifest {manifest} has no sha256 config digest")))
}

/// The stack a Podman fixture runs: container name and image.
pub(crate) const PODMAN_STACK: &[(&str, &str)] =
    &[("redis", "localhost/fixture/redis:1"), ("web", "localhost/fixture/busybox:1")];

/// Load the archives into `store` with the build host's podman, tag them,
/// and create the stack's containers with `--restart=always`
/// (podman-restart.service starts them at boot).
///
/// Podman's own database records where the store and its runtime state
/// live, and refuses a store whose paths differ from its own: so podman
/// runs in a private mount namespace where `store` is bind-mounted at the
/// device's path (/var/lib/containers/storage) and the runtime folders
/// are fresh tmpfs mounts, exactly as on the device; nothing of it is seen
/// outside.
pub(crate) fn podman(
    ctx: &Ctx,
    store: &Path,
    containers_dir: &Path,
    images: &[FixtureImage],
) -> Result<(), BuildError> {
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let p = "podman --root /var/lib/containers/storage --runroot /run/containers/storage --storage-driver overlay \
             --cgroup-manager systemd --events-backend none --network-backend netavark";
    let mut script = String::from(
        "set -eu\nmount --make-rprivate /\nmkdir -p /var/lib/containers/storage /run/containers /run/libpod\n",
    );
    script.push_str(&format!("mount --bind {} /var/lib/containers/storage\n", quote(store)));
    script.push_str("mount -t tmpfs tmpfs /run/containers\nmount -t tmpfs tmpfs /run/libpod\n");
    for i in images {
        let plain = i.reference.strip_prefix("localhost/").unwrap_or(&i.reference);
        script.push_str(&format!("{p} load --quiet --input {}\n", quote(&containers_dir.join(&i.archive))));
        script.push_str(&format!("{p} tag {} {plain}\n", i.id));
    }
    for (name, image) in PODMAN_STACK {
        script.push_str(&format!("{p} create --name {name} --restart=always --network none --pull never {image}\n"));
    }
    script.push_str(&format!("{p} ps --all --format '{{{{.Names}}}} {{{{.State}}}} {{{{.Image}}}}'\n"));
    fs::create_dir_all(store).map_err(io_err("creating var/lib/containers/storage"))?;
    let mut cmd = Command::new(require("unshare")?);
    cmd.args(["--mount", "sh", "-c", &script]);
    ctx.run("podman --root (pre-seeding the store)", &mut cmd, Duration::from_secs(600))?;
    // What the device's podman will read: every image under its name.
    let fail = |message: String| BuildError::Step {
        step: "pre-seeding /var/lib/containers/storage".into(),
        message,
        log: Some(ctx.log.clone()),
    };
    let listed = fs::read_to_string(store.join("overlay-images/images.json"))
        .map_err(|e| fail(format!("no overlay-images/images.json after loading: {e}")))?;
    let listed: serde_json::Value = serde_json::from_str(&listed).map_err(|e| fail(format!("images.json: {e}")))?;
    for i in images {
        let hex = i.id.trim_start_matches("sha256:");
        let ok = listed.as_array().into_iter().flatten().any(|x| {
            x["id"] == hex && x["names"].as_array().is_some_and(|n| n.iter().any(|n| n == i.reference.as_str()))
        });
        if !ok {
            return Err(fail(format!("after loading, the store does not name {} as {}", i.id, i.reference)));
        }
    }
    Ok(())
}

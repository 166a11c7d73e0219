//! Putting airboot's probe into an image that does not carry it, in the
//! run's throwaway overlay only: what to write for the image's init system
//! (a systemd unit and its enablement link, or an `/etc/inittab` line),
//! the stack description for the probe, and the debugfs script that
//! writes it. Pure: the I/O (extracting the root filesystem, running
//! debugfs, writing the changed blocks back into the overlay) is
//! `airboot_qemu::inject`.

use std::io;

use airboot_model::Engine;
use serde::{Deserialize, Serialize};

use crate::disk::ext4::{Ext4, Kind};

/// Where the probe goes.
pub const PROBE_PATH: &str = "/usr/local/sbin/airboot-probe";
/// Where an image's own probe is found (the fixtures and the README's
/// "Adding the probe to your image" use the first).
pub const PROBE_PATHS: [&str; 3] = [PROBE_PATH, "/usr/sbin/airboot-probe", "/usr/bin/airboot-probe"];
pub const CONFIG_PATH: &str = "/etc/airboot/status.conf";
pub const UNIT_PATH: &str = "/etc/systemd/system/airboot-probe.service";
pub const UNIT_LINK: &str = "/etc/systemd/system/multi-user.target.wants/airboot-probe.service";
pub const INITTAB: &str = "/etc/inittab";

/// The unit the fixtures carry too (`images/overlay/base/…/airboot-probe.service`).
pub const UNIT: &str = "[Unit]
Description=airboot guest probe: reports the container stack to the harness
DefaultDependencies=no
After=local-fs.target
Wants=local-fs.target

[Service]
ExecStart=/usr/local/sbin/airboot-probe serve
Restart=always
RestartSec=2
# The probe only reads: the engine API, systemd state, /proc.
Nice=10

[Install]
WantedBy=multi-user.target
";

/// The image's init system, as its root filesystem shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestInit {
    Systemd,
    Sysvinit,
    Busybox,
}

/// Which init `/sbin/init` is, and why we think so.
pub fn detect_init(fs: &Ext4) -> io::Result<Option<(GuestInit, String)>> {
    let exists = |p: &str| -> io::Result<bool> { Ok(fs.lookup(p, true)?.is_some()) };
    let target = |p: &str| -> io::Result<Option<String>> {
        match fs.lookup(p, false)? {
            Some(i) if i.kind() == Kind::Symlink => Ok(Some(String::from_utf8_lossy(&fs.read(&i, 4096)?).into_owned())),
            _ => Ok(None),
        }
    };
    let init_link = target("/sbin/init")?.unwrap_or_default();
    let has_systemd = exists("/lib/systemd/systemd")? || exists("/usr/lib/systemd/systemd")?;
    if init_link.ends_with("systemd") && has_systemd {
        return Ok(Some((GuestInit::Systemd, format!("/sbin/init -> {init_link}"))));
    }
    if init_link.ends_with("busybox") {
        return Ok(Some((GuestInit::Busybox, format!("/sbin/init -> {init_link}"))));
    }
    if exists(INITTAB)? && exists("/sbin/init")? {
        return Ok(Some((GuestInit::Sysvinit, format!("/sbin/init is not systemd and {INITTAB} exists"))));
    }
    if has_systemd && !exists("/sbin/init")? {
        // No /sbin/init: the kernel's fallback finds none either, but a
        // UKI's command line may say init=/lib/systemd/systemd.
        return Ok(Some((GuestInit::Systemd, "systemd is installed (no /sbin/init)".into())));
    }
    Ok(None)
}

/// What one written file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The static probe binary for the guest's architecture.
    Probe,
    Text(String),
    /// `len` copies of `byte`: a fault a test writes into an image (a
    /// filesystem filled up, a binary wiped). debugfs leaves zero blocks
    /// as holes, so a filler that takes space is not zeros.
    Fill {
        byte: u8,
        len: u64,
    },
    /// The bytes of a file on the host (an archive a fault ships).
    Copy(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: String,
    pub mode: u32,
    pub content: Content,
    /// It replaces a file the image has (its old content is gone from the
    /// overlay, never from the input).
    pub replaces: bool,
}

/// Everything to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub init: GuestInit,
    pub files: Vec<PlannedFile>,
    /// (link, target).
    pub symlinks: Vec<(String, String)>,
}

/// What the injected probe watches: the engine, the containers the
/// scenario expects (by name, or a compose project's), and the image's own
/// units that start them (found by [`stack_units`]): once each of those
/// has failed or ended, a container still missing will not come.
#[derive(Debug, Clone, Copy)]
pub struct Stack<'a> {
    pub engine: Engine,
    pub containers: &'a [String],
    pub compose: Option<&'a str>,
    pub units: &'a [String],
}

/// The stack description the injected probe reads.
pub fn status_conf(stack: &Stack) -> String {
    let names: Vec<&str> = stack.containers.iter().map(|c| c.trim_start_matches('/')).collect();
    format!(
        "# Written by airboot into the run's overlay (the image itself is unchanged).\nENGINE={}\nSTACK_UNITS=\"{}\"\nSTACK_CONTAINERS=\"{}\"\n{}INTERVAL=3\nSETTLED_INTERVAL=10\nDEADLINE=900\n",
        stack.engine,
        stack.units.join(" "),
        names.join(" "),
        stack.compose.map(|p| format!("STACK_COMPOSE=\"{p}\"\n")).unwrap_or_default()
    )
}

/// Programs that start containers, and the verbs they start them with.
const STARTERS: &[&str] = &["docker", "podman", "nerdctl", "ctr", "docker-compose", "podman-compose"];
const START_VERBS: &[&str] = &["run", "start", "up"];

/// Whether a unit file starts containers: an `ExecStart=` that runs one of
/// the engines' CLIs (or compose) with `run`, `start` or `up`, directly or
/// through a shell.
pub fn starts_containers(unit: &str) -> bool {
    unit.lines().filter_map(|l| l.trim().strip_prefix("ExecStart=")).any(|cmd| {
        let words: Vec<&str> = cmd
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        words.iter().enumerate().any(|(i, w)| {
            let prog = w.trim_start_matches(['-', '@', '+', '!', ':']).rsplit('/').next().unwrap_or("");
            STARTERS.contains(&prog) && words[i + 1..].iter().any(|v| START_VERBS.contains(v))
        })
    })
}

/// A root filesystem as [`stack_units`] reads it: ext4 or erofs.
pub trait RootFs {
    /// The names in folder `dir` (links followed), `None` if it is not one.
    fn names(&self, dir: &str) -> io::Result<Option<Vec<String>>>;
    /// Up to `limit` bytes of the regular file at `path` (links
    /// followed), `None` if it is not one.
    fn file(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>>;
}

/// Both readers have the same `lookup`, `list` and `read`.
macro_rules! root_fs {
    ($fs:ty) => {
        impl RootFs for $fs {
            fn names(&self, dir: &str) -> io::Result<Option<Vec<String>>> {
                match self.lookup(dir, true)?.filter(|i| i.kind() == Kind::Dir) {
                    Some(d) => Ok(Some(self.list(&d)?.into_iter().map(|e| e.name).collect())),
                    None => Ok(None),
                }
            }
            fn file(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
                match self.lookup(path, true)?.filter(|i| i.kind() == Kind::File) {
                    Some(i) => Ok(Some(self.read(&i, limit)?)),
                    None => Ok(None),
                }
            }
        }
    };
}
root_fs!(Ext4<'_>);
root_fs!(crate::disk::erofs::Erofs<'_>);

/// The units the image enables (`/etc/systemd/system/*.wants/`) that
/// start containers, sorted. Bounded: 64 KiB read of each unit, 256 units.
pub fn stack_units(fs: &dyn RootFs) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let Some(sys) = fs.names("/etc/systemd/system")? else {
        return Ok(out);
    };
    let mut seen = 0;
    for wants in sys.into_iter().filter(|n| n.ends_with(".wants")) {
        let dir = format!("/etc/systemd/system/{wants}");
        let Some(names) = fs.names(&dir)? else { continue };
        for name in names.into_iter().filter(|n| n.ends_with(".service")) {
            seen += 1;
            if seen > 256 || out.contains(&name) {
                continue;
            }
            // A link to a unit the image does not have, or to /dev/null: not run.
            if let Some(text) = fs.file(&format!("{dir}/{name}"), 64 << 10).unwrap_or(None)
                && starts_containers(&String::from_utf8_lossy(&text))
            {
                out.push(name);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The line that starts the probe from inittab, in each init's syntax.
fn inittab_line(init: GuestInit) -> &'static str {
    match init {
        GuestInit::Busybox => "::respawn:/usr/local/sbin/airboot-probe serve",
        _ => "ab:2345:respawn:/usr/local/sbin/airboot-probe serve",
    }
}

/// What to write for `init`. `inittab`: the image's `/etc/inittab` (an
/// init without systemd needs one to start the probe); `has_config`: the
/// image already describes its stack in `/etc/airboot/status.conf`.
pub fn plan(init: GuestInit, stack: &Stack, inittab: Option<&str>, has_config: bool) -> Result<Plan, String> {
    let mut files =
        vec![PlannedFile { path: PROBE_PATH.into(), mode: 0o755, content: Content::Probe, replaces: false }];
    if !has_config {
        files.push(PlannedFile {
            path: CONFIG_PATH.into(),
            mode: 0o644,
            content: Content::Text(status_conf(stack)),
            replaces: false,
        });
    }
    let mut symlinks = Vec::new();
    match init {
        GuestInit::Systemd => {
            files.push(PlannedFile {
                path: UNIT_PATH.into(),
                mode: 0o644,
                content: Content::Text(UNIT.into()),
                replaces: false,
            });
            symlinks.push((UNIT_LINK.to_string(), UNIT_PATH.to_string()));
        }
        GuestInit::Sysvinit | GuestInit::Busybox => {
            let Some(tab) = inittab else {
                return Err(format!(
                    "the image has no {INITTAB}: airboot cannot start a probe under this init without replacing its built-in defaults"
                ));
            };
            let line = inittab_line(init);
            if tab.lines().any(|l| l.trim() == line) {
                // Already there (a second injection into the same image).
            } else {
                let mut new = tab.to_string();
                if !new.is_empty() && !new.ends_with('\n') {
                    new.push('\n');
                }
                new.push_str("# Added by airboot (the run's overlay only): its guest probe.\n");
                new.push_str(line);
                new.push('\n');
                files.push(PlannedFile {
                    path: INITTAB.into(),
                    mode: 0o644,
                    content: Content::Text(new),
                    replaces: true,
                });
            }
        }
    }
    Ok(Plan { init, files, symlinks })
}

/// The directories to create for `path`, outermost first.
fn parents(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for p in &parts[..parts.len().saturating_sub(1)] {
        cur.push('/');
        cur.push_str(p);
        out.push(cur.clone());
    }
    out
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// The debugfs commands (`debugfs -w -f`) that write `plan`; `host` names
/// the host file holding each planned file's bytes; `exists` says whether
/// the filesystem has a directory already. Only missing directories are
/// made: debugfs 1.47.0's `mkdir` of one that exists fails *after*
/// allocating an inode and a block it does not free, and the filesystem
/// is then not clean (blocks claimed twice, seen on a mkosi-built root).
pub fn debugfs_script(plan: &Plan, host: &dyn Fn(&PlannedFile) -> String, exists: &dyn Fn(&str) -> bool) -> String {
    let mut s = String::new();
    let mut dirs: Vec<String> = Vec::new();
    let paths = plan.files.iter().map(|f| f.path.as_str()).chain(plan.symlinks.iter().map(|(l, _)| l.as_str()));
    for p in paths {
        for d in parents(p) {
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in dirs.iter().filter(|d| !exists(d)) {
        s.push_str(&format!("mkdir {d}\n"));
    }
    for f in &plan.files {
        let (dir, name) = split(&f.path);
        s.push_str(&format!("cd {dir}\n"));
        if f.replaces {
            s.push_str(&format!("rm {name}\n"));
        }
        s.push_str(&format!("write {} {name}\n", host(f)));
        s.push_str(&format!("sif {name} mode 0{:o}\n", 0o100000 | f.mode));
        s.push_str(&format!("sif {name} uid 0\nsif {name} gid 0\n"));
    }
    for (link, target) in &plan.symlinks {
        let (dir, name) = split(link);
        s.push_str(&format!("cd {dir}\nsymlink {name} {target}\n"));
    }
    s
}

/// One file the run added to the overlay, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    pub path: String,
    /// sha256 of its content as read back from the filesystem; for a
    /// symlink, of its target.
    pub sha256: String,
    /// `file 0755`, `symlink -> …`, or `file 0644 (replaces the image's)`.
    pub what: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(engine: Engine, containers: &[String]) -> Stack<'_> {
        Stack { engine, containers, compose: None, units: &[] }
    }

    #[test]
    fn a_systemd_image_gets_the_probe_its_unit_and_the_link() {
        let names = ["app".to_string(), "/db".to_string()];
        let units = ["container-app.service".to_string()];
        let p = plan(
            GuestInit::Systemd,
            &Stack { compose: Some("shop"), units: &units, ..stack(Engine::Docker, &names) },
            None,
            false,
        )
        .unwrap();
        let paths: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, [PROBE_PATH, CONFIG_PATH, UNIT_PATH]);
        assert_eq!(p.symlinks, [(UNIT_LINK.to_string(), UNIT_PATH.to_string())]);
        let Content::Text(conf) = &p.files[1].content else { panic!() };
        assert!(conf.contains("ENGINE=docker\n") && conf.contains("STACK_CONTAINERS=\"app db\""), "{conf}");
        assert!(conf.contains("STACK_COMPOSE=\"shop\"\n"), "{conf}");
        assert!(conf.contains("STACK_UNITS=\"container-app.service\"\n"), "{conf}");
        // The image's own stack description wins.
        let own = plan(GuestInit::Systemd, &stack(Engine::Podman, &[]), None, true).unwrap();
        assert!(!own.files.iter().any(|f| f.path == CONFIG_PATH));
    }

    #[test]
    fn an_inittab_gains_one_line_in_its_inits_syntax() {
        let tab = "id:2:initdefault:\nl2:2:wait:/etc/init.d/rc 2";
        let p = plan(GuestInit::Sysvinit, &stack(Engine::Docker, &[]), Some(tab), false).unwrap();
        let f = p.files.iter().find(|f| f.path == INITTAB).unwrap();
        assert!(f.replaces);
        let Content::Text(t) = &f.content else { panic!() };
        assert!(t.starts_with("id:2:initdefault:\nl2:2:wait:/etc/init.d/rc 2\n"), "{t}");
        assert!(t.ends_with("ab:2345:respawn:/usr/local/sbin/airboot-probe serve\n"), "{t}");
        let b =
            plan(GuestInit::Busybox, &stack(Engine::Docker, &[]), Some("::sysinit:/etc/init.d/rcS\n"), false).unwrap();
        let Content::Text(t) = &b.files.iter().find(|f| f.path == INITTAB).unwrap().content else { panic!() };
        assert!(t.ends_with("::respawn:/usr/local/sbin/airboot-probe serve\n"), "{t}");
        // Twice is once.
        let again = plan(GuestInit::Busybox, &stack(Engine::Docker, &[]), Some(t), false).unwrap();
        assert!(!again.files.iter().any(|f| f.path == INITTAB));
        let e = plan(GuestInit::Busybox, &stack(Engine::Docker, &[]), None, false).unwrap_err();
        assert!(e.contains("/etc/inittab"), "{e}");
    }

    #[test]
    fn the_script_makes_parents_then_files_then_links() {
        let p = plan(GuestInit::Systemd, &stack(Engine::Docker, &["app".into()]), None, false).unwrap();
        let host = |f: &PlannedFile| format!("/tmp/in/{}", f.path.rsplit('/').next().unwrap());
        // Directories the filesystem has are never made again.
        let s = debugfs_script(&p, &host, &|d| matches!(d, "/usr" | "/etc" | "/etc/systemd"));
        for made in ["mkdir /usr\n", "mkdir /etc\n", "mkdir /etc/systemd\n"] {
            assert!(!s.contains(made), "{made} in\n{s}");
        }
        let s = debugfs_script(&p, &host, &|_| false);
        let lines: Vec<&str> = s.lines().collect();
        let pos = |l: &str| lines.iter().position(|x| *x == l).unwrap_or_else(|| panic!("no {l:?} in\n{s}"));
        assert!(pos("mkdir /usr") < pos("mkdir /usr/local") && pos("mkdir /usr/local") < pos("mkdir /usr/local/sbin"));
        assert!(pos("mkdir /usr/local/sbin") < pos("write /tmp/in/airboot-probe airboot-probe"));
        assert!(lines.contains(&"sif airboot-probe mode 0100755"), "{s}");
        assert!(lines.contains(&"sif status.conf mode 0100644"), "{s}");
        assert!(
            pos("mkdir /etc/systemd/system/multi-user.target.wants")
                < pos("symlink airboot-probe.service /etc/systemd/system/airboot-probe.service")
        );
        assert_eq!(split("/etc/inittab"), ("/etc", "inittab"));
        assert_eq!(split("/x"), ("/", "x"));
        assert_eq!(parents("/a/b/c"), ["/a", "/a/b"]);
    }

    #[test]
    fn units_that_start_containers_are_told_from_their_exec_start() {
        for yes in [
            "ExecStart=/usr/bin/docker run --rm --name web --network none fixture/busybox:1",
            "ExecStart=-/usr/bin/podman start --all --filter restart-policy=always",
            "ExecStart=/usr/bin/docker-compose -p fixture -f /etc/c.yml up -d",
            "ExecStart=/usr/bin/docker compose up --detach",
            "ExecStart=/bin/sh -c 'exec docker run --name app app:1'",
            "ExecStart=/usr/bin/ctr -n airboot run -d img:1 app",
            "ExecStart=nerdctl start web",
        ] {
            assert!(starts_containers(&format!("[Service]\n{yes}\n")), "{yes}");
        }
        for no in [
            "ExecStart=/usr/bin/dockerd -H fd://",
            "ExecStart=/usr/bin/containerd",
            "ExecStartPre=/usr/bin/docker run x", // not what the unit runs
            "ExecStart=/usr/bin/docker load -i /a.tar",
            "ExecStop=/usr/bin/docker stop web",
            "ExecStart=/usr/local/bin/run-my-app start",
        ] {
            assert!(!starts_containers(&format!("[Service]\n{no}\n")), "{no}");
        }
    }

    /// In a real ext4 image: the enabled units, through their links
    /// (relative or absolute), not a masked one, not a unit not enabled.
    #[test]
    fn stack_units_are_the_enabled_units_that_start_containers() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let sys = root.join("etc/systemd/system");
        std::fs::create_dir_all(sys.join("multi-user.target.wants")).unwrap();
        std::fs::create_dir_all(sys.join("default.target.wants")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/systemd/system")).unwrap();
        let unit = |cmd: &str| format!("[Service]\nExecStart={cmd}\n[Install]\nWantedBy=multi-user.target\n");
        std::fs::write(sys.join("container-web.service"), unit("/usr/bin/docker run --name web b:1")).unwrap();
        std::fs::write(sys.join("container-off.service"), unit("/usr/bin/docker run --name off b:1")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/system/app.service"), unit("/usr/bin/podman start app")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/system/docker.service"), unit("/usr/bin/dockerd")).unwrap();
        let wants = sys.join("multi-user.target.wants");
        std::os::unix::fs::symlink("/etc/systemd/system/container-web.service", wants.join("container-web.service"))
            .unwrap();
        std::os::unix::fs::symlink(
            "../../../../usr/lib/systemd/system/app.service",
            sys.join("default.target.wants/app.service"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/usr/lib/systemd/system/docker.service", wants.join("docker.service")).unwrap();
        std::os::unix::fs::symlink("/dev/null", wants.join("masked.service")).unwrap();
        std::os::unix::fs::symlink("/etc/systemd/system/gone.service", wants.join("gone.service")).unwrap();
        let img = d.path().join("fs.img");
        std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
        let ok =
            std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&root).arg(&img).status().unwrap();
        assert!(ok.success());
        let f = std::fs::File::open(&img).unwrap();
        let fs = Ext4::open(&f).unwrap();
        assert_eq!(stack_units(&fs).unwrap(), ["app.service", "container-web.service"]);
        // The same tree as a read-only erofs root reads the same.
        let erofs = crate::disk::erofs::tests::mkfs(&[], |t| {
            let o = std::process::Command::new("cp").arg("-a").arg(root.join(".")).arg(t).status().unwrap();
            assert!(o.success());
        });
        let fs = crate::disk::erofs::Erofs::open(&erofs).unwrap();
        assert_eq!(stack_units(&fs).unwrap(), ["app.service", "container-web.service"]);
    }
}

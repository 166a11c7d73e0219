//! Tests across the sections of a scenario file.

use super::*;
use airboot_model::{BootMode, TransportKind};

const GOOD: &str = r#"
name = "preseeded-x86_64"
description = "the preseeded fixture"

[image]
fixture = "debian-preseeded-x86_64"

[machine]
arch = "x86_64"
memory = "1G"
accel = "auto"

[expect]
engine = "docker"
images = ["fixture/redis:1", { ref = "docker.io/library/busybox", id = "sha256:0123456789ab" }]
containers = [
  { name = "redis", image = "fixture/redis:1", healthy = true },
  { name = "web" },
]
time_to_stack = "20s"
fail_on = ["Out of memory"]

[[milestone]]
name = "loaded"
console = "airboot-load: done"
within = "15s"
"#;

fn p(src: &str) -> Result<Scenario, ScenarioError> {
    parse(src, Path::new("scenarios/t.toml"), &any_file)
}

#[test]
fn power_cut_sections() {
    use airboot_model::CutMode;
    let base = "[image]\nfixture = \"debian-load-at-boot-x86_64\"\n";
    assert_eq!(p(base).unwrap().power_cut, None);
    let s = p(&format!(
        "{base}[power_cut]\nat = \"airboot-load: start\"\nuntil = \"airboot-load: done\"\npoints = 8\nmodes = [\"lose-unflushed\", \"kill\"]\nseed = 7\n"
    ))
    .unwrap();
    let pc = s.power_cut.unwrap();
    assert_eq!(pc.modes, vec![CutMode::LoseUnflushed, CutMode::Kill]);
    assert_eq!((pc.points, pc.seed, pc.trigger.matching), (8, Some(7), 1));
    assert_eq!(pc.trigger.at, "airboot-load: start");
    assert_eq!(pc.recovery, None);
    assert_eq!(pc.until.as_deref(), Some("airboot-load: done"));
    let one =
        p(&format!("{base}[power_cut]\nat = \"loading\"\nmatch = 2\nbytes = \"4M\"\n")).unwrap().power_cut.unwrap();
    assert_eq!((one.trigger.after, one.modes), (CutAfter::Bytes(4 << 20), vec![CutMode::LoseUnflushed]));
    assert_eq!(one.trigger.matching, 2);
    let err = |body: &str| p(&format!("{base}[power_cut]\n{body}")).unwrap_err().to_string();
    assert!(err("at = \"x\"\nmodes = [\"zap\"]").contains("unknown mode \"zap\""));
    assert!(err("at = \"x\"\nafter = \"2s\"\nflushes = 3").contains("at most one"));
    assert!(err("at = \"x\"\npoints = 4").contains("needs `until`"));
    // An exploration: every flush and FUA write in the window.
    let all = p(&format!(
        "{base}[power_cut]\nat = \"a\"\nuntil = \"b\"\npoints = \"all\"\nmodes = [\"torn\"]\nmarkers = [\"/var/lib/airboot/images-loaded\"]\n"
    ))
    .unwrap()
    .power_cut
    .unwrap();
    assert_eq!(all.explore, Some(crate::scenario::Explore { states_per_point: 8, sample: 1 }));
    assert_eq!(all.markers, vec!["/var/lib/airboot/images-loaded".to_string()]);
    let e = p(&format!(
        "{base}[power_cut]\nat = \"a\"\nuntil = \"b\"\npoints = \"all\"\nstates_per_point = 3\nsample = 0\n"
    ))
    .unwrap()
    .power_cut
    .unwrap()
    .explore;
    assert_eq!(e, Some(crate::scenario::Explore { states_per_point: 3, sample: 0 }));
    assert!(err("at = \"x\"\npoints = \"all\"").contains("needs `until`"));
    assert!(err("at = \"x\"\nuntil = \"y\"\npoints = \"every\"").contains("or \"all\""));
    assert!(err("at = \"x\"\nuntil = \"y\"\npoints = 4\nstates_per_point = 2").contains("set `points = \"all\"`"));
    assert!(err("at = \"x\"\nuntil = \"y\"\npoints = \"all\"\nstates_per_point = 0").contains("1 to 256"));
    assert!(err("at = \"x\"\nuntil = \"y\"\npoints = \"all\"\nsample = 99").contains("0 to 16"));
    assert!(err("at = \"x\"\nmarkers = [\"var/x\"]").contains("absolute path"));
    // A sweep places its own cuts: any one of the single cut's offsets is refused.
    for offset in ["after = \"1s\"", "flushes = 2", "writes = 10", "bytes = \"4M\""] {
        let e = err(&format!("at = \"x\"\nuntil = \"y\"\npoints = 4\n{offset}"));
        assert!(e.contains("drop after/flushes/writes/bytes"), "{offset}: {e}");
    }
    assert!(err("at = \"x\"\npoints = 0").contains("or \"all\""));
    assert!(err("at = \"x\"\nmatch = 0").contains("counts from 1"));
    assert!(err("at = \"(\"").contains("power_cut") || err("at = \"(\"").contains("regex"));
    assert!(err("until = \"x\"").contains("at"));
    assert!(err("at = \"x\"\nload = \"a:1\"").contains("not both"));
    assert!(err("at = \"x\"\nlayer = 2").contains("goes with `load"));
    assert!(err("load = \"a:1\"\nlayer = 0").contains("count from 1"));
    assert!(err("load = \"\"").contains("image reference"));
    assert!(err("at = \"x\"\n[power_cut.recovery]\nflushes = 2").contains("power_cut.recovery.at"));
    assert!(err("at = \"x\"\n[power_cut.recovery]\nat = \"y\"\npoints = 2").contains("points"));
}

#[test]
fn power_cuts_by_probe_event_and_in_recovery() {
    let base = "[image]\nfixture = \"debian-load-at-boot-x86_64\"\n";
    let pc = p(&format!(
        "{base}[power_cut]\nload = \"fixture/redis:1\"\nlayer = 2\nflushes = 1\n[power_cut.recovery]\nat = \"Started docker\"\nmatch = 2\nafter = \"3s\"\n"
    ))
    .unwrap()
    .power_cut
    .unwrap();
    assert_eq!(pc.trigger.what, "probe event: layer 2 of fixture/redis:1 being loaded");
    assert_eq!(pc.trigger.after, CutAfter::Flushes(1));
    assert!(pc.trigger.probe_event && !pc.recovery.as_ref().unwrap().probe_event);
    let re = regex::Regex::new(&pc.trigger.at).unwrap();
    let line = |image: &str, layer: usize, loading: bool| {
        airboot_proto::load::LoadEvent::Layer {
            who: airboot_proto::load::Who { image: image.into(), ..Default::default() },
            layer,
            layers: 4,
            loading,
            diff_id: "sha256:ab".into(),
        }
        .line()
    };
    assert!(re.is_match(&format!("[ 80.1] {}", line("fixture/redis:1", 2, true))));
    assert!(!re.is_match(&line("fixture/redis:1", 2, false)), "a layer seen only once loaded does not fire");
    assert!(!re.is_match(&line("fixture/redis:1", 1, true)));
    assert!(!re.is_match(&line("fixture/redis:1", 12, true)));
    assert!(!re.is_match(&line("fixture/redisX1", 2, true)), "the dot is literal");
    assert!(!re.is_match(&line("fixture/redis:10", 2, true)));
    // By the archive's file name (a path is reduced to it), or by image ID (a prefix will do).
    let by = |load: &str, who: airboot_proto::load::Who| {
        let spec = p(&format!("{base}[power_cut]\nload = \"{load}\"\nlayer = 2\n")).unwrap().power_cut.unwrap();
        let ev = airboot_proto::load::LoadEvent::Layer {
            who,
            layer: 2,
            layers: 3,
            loading: true,
            diff_id: "sha256:ab".into(),
        };
        regex::Regex::new(&spec.trigger.at).unwrap().is_match(&ev.line())
    };
    let id = format!("sha256:{}", "e9".repeat(32));
    let who = airboot_proto::load::Who {
        image: id.clone(),
        id: Some(id.clone()),
        archive: Some("fixture-redis-1.tar".into()),
    };
    assert!(by("fixture-redis-1.tar", who.clone()));
    assert!(by("/usr/share/airboot/images/fixture-redis-1.tar", who.clone()));
    assert!(by("sha256:e9e9e9e9e9e9", who.clone()));
    assert!(by(&id, who.clone()));
    assert!(!by("sha256:e9e9e9e9e9e8", who.clone()));
    assert!(!by("fixture-redis-1.ta", who.clone()));
    assert!(!by("redis-1.tar", who));
    let r = pc.recovery.unwrap();
    assert_eq!((r.at.as_str(), r.matching, r.after), ("Started docker", 2, CutAfter::Time(Duration::from_secs(3))));
    // `layer` defaults to the first.
    let first = p(&format!("{base}[power_cut]\nload = \"a:1\"\n")).unwrap().power_cut.unwrap();
    assert!(first.trigger.what.contains("layer 1 of a:1"));
}

#[test]
fn parses_a_full_scenario() {
    let s = p(GOOD).unwrap();
    assert_eq!(s.name, "preseeded-x86_64");
    assert_eq!(s.image.source, ImageSource::Fixture("debian-preseeded-x86_64".into()));
    assert_eq!(s.machine.arch, Some(Arch::X86_64));
    assert_eq!(s.machine.memory_mib, 1024);
    // Two vCPUs unless told: 1.66x faster to a running stack than one
    // under TCG on a 2-core host (scripts/bench-cpus.sh).
    assert_eq!(s.machine.cpus, 2);
    assert_eq!(s.expect.images[0].reference, "fixture/redis:1");
    assert_eq!(s.expect.images[1].reference, "busybox:latest");
    assert_eq!(s.expect.images[1].id.as_deref(), Some("sha256:0123456789ab"));
    assert_eq!(s.expect.containers[0].healthy, Some(true));
    assert_eq!(s.expect.containers[1].image, None);
    assert_eq!(s.expect.time_to_stack, Some(Duration::from_secs(20)));
    // timeout defaults to max(60s, 2 × budget)
    assert_eq!(s.expect.timeout, Duration::from_secs(60));
    assert_eq!(s.milestones[0].within, Some(Duration::from_secs(15)));
    assert!(s.milestones[0].required);
}

#[test]
fn transport_probe_and_extra_kernel_arguments() {
    let s = p("[image]\nfixture = \"f\"\nappend_extra = \"systemd.mask=docker.service\"\n[machine]\ntransport = \"virtio-serial\"\n").unwrap();
    assert_eq!(s.machine.transport, Some(TransportKind::VirtioSerial));
    assert_eq!(s.image.append_extra.as_deref(), Some("systemd.mask=docker.service"));
    assert_eq!(p("[image]\nfixture = \"f\"\n[machine]\ntransport = \"auto\"\n").unwrap().machine.transport, None);
    let e = p("[image]\nfixture = \"f\"\n[machine]\ntransport = \"tcp\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("machine.transport"));
    assert!(e.message.contains("virtio-serial"), "{e}");
    let s = p("[image]\npath = \"d.raw\"\nkernel = \"k\"\nprobe = true\n[machine]\narch = \"x86_64\"\n").unwrap();
    assert_eq!(s.image.probe, Some(true));
}

#[test]
fn declared_outcomes() {
    let s = p("[image]\nfixture = \"f\"\n[outcome]\nfailures = [\"image-missing\"]\ncontains = [\"nginx\"]\n").unwrap();
    assert_eq!(s.outcome.verdict, airboot_model::Verdict::Fail, "failures imply a failing verdict");
    assert_eq!(s.outcome.failures, [airboot_model::FailureCode::ImageMissing]);
    assert_eq!(p("[image]\nfixture = \"f\"\n").unwrap().outcome, Outcome::default());
    let e = p("[image]\nfixture = \"f\"\n[outcome]\nverdict = \"flaky\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("outcome.verdict"));
    // A misspelt code could never match: it is refused, with the nearest.
    let e = p("[image]\nfixture = \"f\"\n[outcome]\nfailures = [\"image-mising\"]\n").unwrap_err();
    assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("outcome.failures")));
    assert!(e.message.contains("did you mean \"image-missing\"?"), "{e}");
    assert_eq!(s.test_name(Some(Arch::Aarch64)), "aarch64::t");
}

#[test]
fn name_defaults_to_file_stem() {
    let s = p("[image]\nfixture = \"f\"\n").unwrap();
    assert_eq!(s.name, "t");
    assert_eq!(s.machine.tcg_slowdown, DEFAULT_TCG_SLOWDOWN);
}

#[test]
fn misspelt_key_names_line_column_and_key() {
    let src = "name = \"x\"\n[image]\nfixture = \"f\"\n[expect]\nimagez = []\n";
    let e = p(src).unwrap_err();
    assert_eq!(e.line, Some(5));
    assert_eq!(e.column, Some(1));
    assert_eq!(e.key.as_deref(), Some("expect.imagez"));
    let text = e.to_string();
    assert!(text.starts_with("scenarios/t.toml:5:1: key `expect.imagez`: unknown field `imagez`"), "{text}");
}

#[test]
fn misspelt_key_inside_inline_table() {
    let src = "[image]\nfixture = \"f\"\n[expect]\ncontainers = [\n  { name = \"r\", helthy = true },\n]\n";
    let e = p(src).unwrap_err();
    assert_eq!((e.line, e.column), (Some(5), Some(17)));
    assert_eq!(e.key.as_deref(), Some("expect.containers.helthy"));
}

#[test]
fn bad_values_point_at_the_value() {
    let e = p("[image]\nfixture = \"f\"\n[expect]\ntime_to_stack = \"20 seconds\"\n").unwrap_err();
    assert_eq!(e.line, Some(4));
    assert_eq!(e.key.as_deref(), Some("expect.time_to_stack"));
    assert!(e.message.contains("invalid duration"), "{e}");

    let e = p("[image]\nfixture = \"f\"\n[machine]\nmemory = \"lots\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("machine.memory"));

    let e = p("[image]\nfixture = \"f\"\n[machine]\narch = \"riscv64\"\n").unwrap_err();
    assert!(e.message.contains("unknown architecture"), "{e}");

    let e = p("[image]\nfixture = \"f\"\n[expect]\nfail_on = [\"ok\", \"(unclosed\"]\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("expect.fail_on"));
    assert!(e.message.contains("invalid regex"), "{e}");

    let e = p("[image]\nfixture = \"f\"\n[machine]\naccel = \"hvf\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("machine.accel"));

    let e = p("[image]\nfixture = \"f\"\n[machine]\ncpus = 0\n").unwrap_err();
    assert_eq!(e.line, Some(4));
}

#[test]
fn a_login_takes_a_user_and_one_password_source_and_never_shows_the_password() {
    let s = p("[image]\npath = \"x.img\"\nlogin = { user = \"root\", password = \"hunter2\" }\n").unwrap();
    let l = s.image.login.clone().unwrap();
    assert_eq!(l.user, "root");
    assert!(l.password == crate::scenario::Password::Inline("hunter2".into()));
    assert!(!format!("{s:?}").contains("hunter2"), "Debug must not show the password");
    assert!(
        p("[image]\npath = \"x.img\"\nlogin = { user = \"root\", password = \"\" }\n").is_ok(),
        "an empty password"
    );
    let e = p("[image]\npath = \"x.img\"\nlogin = { user = \"root\" }\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.login"));
    assert!(e.message.contains("password_file"), "{e}");
    let e = p("[image]\npath = \"x.img\"\nlogin = { user = \"root\", password = \"a\", password_file = \"f\" }\n")
        .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.login"));
    let e = p("[image]\npath = \"x.img\"\nlogin = { user = \"two words\", password = \"\" }\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.login.user"));
    let e = p("[image]\npath = \"x.img\"\nlogin = { user = \"root\", pasword = \"\" }\n").unwrap_err();
    assert!(e.message.contains("pasword"), "a misspelt key is named: {e}");
    let s = p("[image]\npath = \"x.img\"\nlogin = { user = \"op\", password_file = \"secret.txt\" }\n").unwrap();
    assert!(matches!(s.image.login.unwrap().password, crate::scenario::Password::File(f) if f.ends_with("secret.txt")));
}

#[test]
fn contradictions_are_errors() {
    let e = p("[image]\nfixture = \"f\"\npath = \"x.qcow2\"\n").unwrap_err();
    assert!(e.message.contains("not both"), "{e}");
    let e = p("[image]\nformat = \"raw\"\n").unwrap_err();
    assert!(e.message.contains("say what to boot"), "{e}");
    // No kernel and no boot: the disk's own loader, told at run time.
    assert_eq!(p("[image]\npath = \"x.qcow2\"\n").unwrap().image.boot, None);
    let e = p("[image]\npath = \"x.qcow2\"\nboot = \"direct\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.kernel"));
    assert!(e.message.contains("remove `boot`"), "{e}");
    let e = p("[image]\npath = \"x.qcow2\"\nappend = \"quiet\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.append"));
    let e = p("[image]\npath = \"x.img\"\nboot = \"bios\"\ninitrd = \"i\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.initrd"));
    assert!(e.message.contains("SeaBIOS"), "{e}");
    assert_eq!(p("[image]\npath = \"x.img\"\nboot = \"bios\"\n").unwrap().image.boot, Some(BootMode::Bios));
    // The architecture of a path image is detected at run time.
    assert_eq!(p("[image]\npath = \"x.qcow2\"\nkernel = \"k\"\n").unwrap().machine.arch, None);
    let s = p("[image]\npath = \"disk.img\"\nboot = \"uefi\"\n").unwrap();
    assert_eq!(s.image.boot, Some(BootMode::Uefi));
    let e = p("[image]\npath = \"disk.img\"\nboot = \"board\"\nkernel = \"k\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.kernel"));
    assert!(e.message.contains("generic kernel"), "{e}");
    assert_eq!(p("[image]\npath = \"pi.img\"\nboot = \"board\"\n").unwrap().image.boot, Some(BootMode::Board));
    let e = p("[image]\npath = \"disk.img\"\nboot = \"uefi\"\nappend = \"quiet\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.append"));
    assert!(e.message.contains("loader entry"), "{e}");
    let e = p("[image]\nfixture = \"f\"\n[machine]\ncpu = \"max pauth\"\n").unwrap_err();
    assert_eq!(e.line, Some(4));
    assert!(e.message.contains("not a QEMU CPU model"), "{e}");
    let s = p("[image]\nfixture = \"f\"\n[machine]\ncpu = \"cortex-a72\"\n").unwrap();
    assert_eq!(s.machine.cpu.as_deref(), Some("cortex-a72"));
    let e = p("[image]\nfixture = \"f\"\nkernel = \"k\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.kernel"));
    let e = p("[image]\nfixture = \"f\"\n[expect]\nimages = [\"a:1\", \"docker.io/library/a:1\"]\n").unwrap_err();
    assert!(e.message.contains("listed twice"), "{e}");
    let e = p("[image]\nfixture = \"f\"\n[expect]\ntime_to_stack = \"90s\"\ntimeout = \"60s\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("expect.timeout"));
    // A budget as long as the timeout can still be judged.
    assert!(p("[image]\nfixture = \"f\"\n[expect]\ntime_to_stack = \"60s\"\ntimeout = \"60s\"\n").is_ok());
    // Container names: the engines' characters, Docker's leading '/' allowed.
    for name in ["red is", "`x`", "a;b", "\\\"", "", "/", "_a"] {
        let e = p(&format!("[image]\nfixture = \"f\"\n[expect]\ncontainers = [{{ name = {name:?} }}]\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("expect.containers.name")), "{name:?}");
        assert!(e.message.contains("not a container name") && e.message.contains("letters, digits"), "{e}");
    }
    let s = p("[image]\nfixture = \"f\"\n[expect]\ncontainers = [{ name = \"/redis\" }, { name = \"web_1.a-b\" }]\n")
        .unwrap();
    assert_eq!(s.expect.containers.len(), 2);
    let e = p("[image]\nfixture = \"f\"\n[expect]\nimages = [{ ref = \"a:1\", id = \"sha256:xyz\" }]\n").unwrap_err();
    assert!(e.message.contains("invalid image id"), "{e}");
    let e = p("name = \"a b\"\n[image]\nfixture = \"f\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("name"));
}

#[test]
fn paths_resolve_against_the_scenario_folder_and_are_checked() {
    // The files that exist, as the caller's check says (no disk here).
    let dir = Path::new("/work/scn");
    let present = |p: &Path| p == dir.join("disk.raw") || p == dir.join("vmlinuz") || p == Path::new("/fw/code.fd");
    let f = dir.join("s.toml");
    let ok = parse("[image]\npath = \"disk.raw\"\nkernel = \"vmlinuz\"\n[machine]\narch = \"x86_64\"\n", &f, &present)
        .unwrap();
    assert_eq!(ok.image.source, ImageSource::Path(dir.join("disk.raw")));
    assert_eq!(ok.image.kernel.as_deref(), Some(dir.join("vmlinuz").as_path()));
    let e = parse(
        "[image]\npath = \"disk.raw\"\nkernel = \"vmlinuz\"\ninitrd = \"nope.img\"\n[machine]\narch = \"x86_64\"\n",
        &f,
        &present,
    )
    .unwrap_err();
    assert_eq!((e.key.as_deref(), e.line), (Some("image.initrd"), Some(1)));
    assert!(e.message.contains("/work/scn/nope.img"), "{e}");
    let e = parse("[image]\npath = \"gone.raw\"\nkernel = \"vmlinuz\"\n", &f, &present).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("image.path"));
    let uefi = "[image]\npath = \"disk.raw\"\nboot = \"uefi\"\n[machine]\nfirmware = \"/fw/code.fd\"\n";
    assert!(parse(uefi, &f, &present).is_ok());
    let e = parse(&uefi.replace("code.fd", "other.fd"), &f, &present).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("machine.firmware"));
    // Unchecked, a missing file is no error.
    assert!(parse("[image]\npath = \"gone.raw\"\nkernel = \"k\"\n", &f, &any_file).is_ok());
}

#[test]
fn references_normalise_like_docker_images() {
    assert_eq!(normalize_ref("redis").unwrap(), "redis:latest");
    assert_eq!(normalize_ref("docker.io/library/redis:7").unwrap(), "redis:7");
    assert_eq!(normalize_ref("docker.io/foo/bar").unwrap(), "foo/bar:latest");
    assert_eq!(normalize_ref("registry:5000/x").unwrap(), "registry:5000/x:latest");
    assert_eq!(normalize_ref("registry:5000/x:2").unwrap(), "registry:5000/x:2");
    assert!(normalize_ref("Redis").is_err());
    assert!(normalize_ref("redis@sha256:00").is_err());
    assert!(normalize_ref("a b").is_err());
    assert!(normalize_ref(":1").is_err());
    assert!(normalize_ref("").is_err());
}

#[test]
fn key_paths() {
    let src = "a = 1\n[t]\nx = [\n 1,\n { y = 2, z = 3 },\n]\n[[m]]\nn = \"v\"\n";
    assert_eq!(key_path(src, 0).as_deref(), Some("a"));
    let z = src.find("z =").unwrap();
    assert_eq!(key_path(src, z).as_deref(), Some("t.x.z"));
    let three = src.find("3 }").unwrap();
    assert_eq!(key_path(src, three).as_deref(), Some("t.x.z"));
    let one = src.find(" 1,").unwrap() + 1;
    assert_eq!(key_path(src, one).as_deref(), Some("t.x"));
    let v = src.find("\"v\"").unwrap();
    assert_eq!(key_path(src, v).as_deref(), Some("m.n"));
    assert_eq!(line_col(src, v), (8, 5));
    // Strings end where TOML says: a multi-line one after its closing
    // quotes (a """ or ] or = inside it is text), an escaped quote does
    // not end a basic one.
    let src = "d = \"\"\"\n[not] = \"\"\" \n[s]\ne = 'x = ]'\nf = \"a\\\" [b\"\ng = 1\n";
    let g = src.find("g =").unwrap();
    assert_eq!(key_path(src, g).as_deref(), Some("s.g"));
    let f = src.find("f =").unwrap();
    assert_eq!(key_path(src, f).as_deref(), Some("s.f"));
    let inside = src.find("[not]").unwrap();
    assert_eq!(key_path(src, inside).as_deref(), Some("d"));
}

#[test]
fn steps_in_order_with_their_defaults() {
    let src = format!(
        "{GOOD}\n[[step]]\nrun = \"systemctl start apps-reset\"\ntimeout = \"300s\"\n\n[[step]]\nname = \"second-boot\"\nreboot = true\n\n[[step]]\npower_cut = true\nwait = \"2s\"\n"
    );
    let s = p(&src).unwrap();
    assert_eq!(s.steps.len(), 3);
    assert_eq!(s.steps[0].name, "step-1");
    assert_eq!(
        s.steps[0].action,
        StepAction::Run { command: "systemctl start apps-reset".into(), timeout: Duration::from_secs(300), exit: 0 }
    );
    assert!(!s.steps[0].action.boots_again());
    assert_eq!(s.steps[1].name, "second-boot");
    assert_eq!(s.steps[1].action, StepAction::Reboot { timeout: DEFAULT_STEP_TIMEOUT, allow_reload: false });
    assert_eq!(s.steps[2].action, StepAction::PowerCut);
    assert_eq!(s.steps[2].wait, Some(Duration::from_secs(2)));
    assert!(s.steps[2].action.boots_again());
    assert!(p(GOOD).unwrap().steps.is_empty());
}

#[test]
fn a_step_that_says_nothing_or_two_things_is_refused_where_it_is() {
    let cases = [
        ("[[step]]\nwait = \"1s\"\n", "exactly one of", "none"),
        ("[[step]]\nrun = \"true\"\nreboot = true\n", "exactly one of", "run and reboot"),
        ("[[step]]\nreboot = false\n", "does nothing", "reboot = false"),
        ("[[step]]\nrun = \" \"\n", "is empty", "run"),
        ("[[step]]\nreboot = true\nexit = 1\n", "status a `run` step", "exit"),
        ("[[step]]\npower_cut = true\ntimeout = \"5s\"\n", "takes no `timeout`", "timeout"),
        ("[[step]]\nreboot = true\n[[step]]\npower_cut = true\nname = \"step-1\"\n", "used twice", "name"),
        ("[[step]]\nreboot = true\nname = \"../up\"\n", "it names a report folder", "a path as a name"),
        ("[[step]]\nreboot = true\nname = \"\"\n", "it names a report folder", "an empty name"),
        ("[[step]]\nreboot = true\nretries = 2\n", "unknown field", "retries"),
        ("[[step]]\npower_cut = true\nallow_reload = true\n", "belongs to a `reboot`", "allow_reload"),
    ];
    for (tail, says, what) in cases {
        let e = p(&format!("{GOOD}\n{tail}")).unwrap_err();
        assert!(e.message.contains(says), "{what}: {e}");
        assert!(e.line.is_some(), "{what}: {e}");
    }
}

#[test]
fn steps_and_a_power_cut_campaign_are_not_mixed() {
    let e = p(&format!("{GOOD}\n[power_cut]\nat = \"x\"\n\n[[step]]\nreboot = true\n")).unwrap_err();
    assert!(e.message.contains("cannot be in one scenario"), "{e}");
}

#[test]
fn the_rtc_is_a_utc_date_or_is_refused_where_it_is() {
    let with = |v: &str| p(&GOOD.replace("accel = \"auto\"", &format!("accel = \"auto\"\nrtc = \"{v}\"")));
    assert_eq!(with("2001-01-01").unwrap().machine.rtc.as_deref(), Some("2001-01-01T00:00:00"));
    assert_eq!(with("2001-01-01T08:30:05").unwrap().machine.rtc.as_deref(), Some("2001-01-01T08:30:05"));
    assert_eq!(p(GOOD).unwrap().machine.rtc, None);
    for bad in ["yesterday", "2001-13-01", "2001-1-1", "1969-12-31", "2001-01-01T25:00:00", "2001-01-01 08:00:00"] {
        let e = with(bad).unwrap_err();
        assert!(e.message.contains("is not a UTC date"), "{bad}: {e}");
        assert!(e.line.is_some(), "{bad}: {e}");
    }
}

#[test]
fn a_compose_stack_is_expected_by_project_and_services() {
    let head = "[image]\nfixture = \"f\"\n[expect]\n";
    let s = p(&format!(
        "{head}compose = {{ project = \"fixture\", services = [\"redis\", {{ name = \"web\", healthy = false }}, {{ name = \"seed\", oneshot = true }}] }}\n"
    ))
    .unwrap();
    let c = s.expect.compose.unwrap();
    assert_eq!(c.project, "fixture");
    let got: Vec<(&str, bool, Option<bool>)> =
        c.services.iter().map(|s| (s.name.as_str(), s.oneshot, s.healthy)).collect();
    assert_eq!(got, [("redis", false, None), ("web", false, Some(false)), ("seed", true, None)]);
    // Each mistake at its key, saying what to do.
    let bad = |body: &str| p(&format!("{head}{body}\n")).unwrap_err();
    let e = bad("compose = { project = \"Fixture\", services = [\"a\"] }");
    assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("expect.compose.project")));
    assert!(e.message.contains("lowercase"), "{e}");
    let e = bad("compose = { project = \"f\", services = [] }");
    assert_eq!(e.key.as_deref(), Some("expect.compose.services"));
    let e = bad("compose = { project = \"f\", services = [\"a\", { name = \"a\" }] }");
    assert!(e.message.contains("\"a\" is listed twice"), "{e}");
    // A service name goes into a shell-read configuration: nothing but
    // compose's own characters.
    for name in ["a b", "a\\\"b", "$(reboot)", "-a", ""] {
        let e = bad(&format!("compose = {{ project = \"f\", services = [{:?}] }}", name));
        assert_eq!(e.key.as_deref(), Some("expect.compose.services"), "{name:?}");
        assert!(e.message.contains("not a service name"), "{e}");
    }
    assert!(p(&format!("{head}compose = {{ project = \"f\", services = [\"db_1.x-y\"] }}\n")).is_ok());
    let e = bad("compose = { project = \"f\", services = [{ name = \"s\", oneshot = true, healthy = true }] }");
    assert_eq!(e.key.as_deref(), Some("expect.compose.services.healthy"));
    let e = bad("compose = { project = \"f\", services = [{ name = \"s\", onshot = true }] }");
    assert!(e.to_string().contains("onshot"), "{e}");
    let e = bad("engine = \"podman\"\ncompose = { project = \"f\", services = [\"a\"] }");
    assert!(e.message.contains("Docker only") && e.message.contains("expect.containers"), "{e}");
    assert_eq!(e.line, Some(5));
}

#[test]
fn read_only_root_is_off_unless_asked_and_must_be_a_bool() {
    assert!(!p(GOOD).unwrap().expect.read_only_root);
    let on = GOOD.replace("time_to_stack = \"20s\"", "time_to_stack = \"20s\"\nread_only_root = true");
    assert!(p(&on).unwrap().expect.read_only_root);
    let bad = GOOD.replace("time_to_stack = \"20s\"", "time_to_stack = \"20s\"\nread_only_root = \"yes\"");
    let e = p(&bad).unwrap_err().to_string();
    assert!(e.contains("read_only_root") || e.contains("expected a boolean"), "{e}");
}

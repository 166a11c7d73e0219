//! The CLI without VMs: the regression gate on history files, argument
//! checking.

use std::path::Path;
use std::process::Command;

fn airboot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airboot"))
}

fn entry(i: usize, tts: Option<f64>, verdict: &str) -> String {
    let m = match tts {
        Some(t) => format!(r#"{{"engine":{:.3},"stack":{t:.3}}}"#, t * 0.62),
        None => "{}".into(),
    };
    format!(
        r#"{{"schema":"airboot.history/v1","run_id":"r{i}","started_at":"2026-11-{:02}T03:00:00Z","scenario":"preseeded-x86_64","image_sha256":"{}","arch":"x86_64","accel":"tcg","verdict":"{verdict}","time_to_stack_s":{},"milestones":{m},"airboot_version":"0.1.0"}}"#,
        i % 28 + 1,
        "ab".repeat(32),
        tts.map(|t| format!("{t:.3}")).unwrap_or_else(|| "null".into())
    )
}

fn history(dir: &Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn gate(h: &Path, extra: &[&str]) -> (i32, String) {
    let out = airboot().args(["report", "--gate", "--history"]).arg(h).args(extra).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_gate_fails_a_clear_regression_and_not_noise() {
    let dir = tempfile::tempdir().unwrap();
    let noise = [0.0, 6.0, -9.0, 4.0, -3.0, 10.0, -7.0, 2.0, 8.0, -5.0, 1.0];
    let noisy: Vec<String> = noise.iter().enumerate().map(|(i, n)| entry(i, Some(130.0 + n), "pass")).collect();
    let (code, out) = gate(&history(dir.path(), "noisy.jsonl", &noisy), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok:") && out.contains("±"), "each figure with its spread: {out}");

    let mut slow = noisy.clone();
    slow.push(entry(99, Some(190.0), "pass"));
    let (code, out) = gate(&history(dir.path(), "slow.jsonl", &slow), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REGRESSED"), "{out}");
    assert!(out.contains("before") && out.contains("after") && out.contains("change"), "{out}");

    // Without --gate the table is printed but the exit status stays 0.
    let out = airboot().args(["report", "--history"]).arg(dir.path().join("slow.jsonl")).output().unwrap();
    assert_eq!(out.status.code(), Some(0));

    let (code, out) = gate(&history(dir.path(), "few.jsonl", &noisy[..3]), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("not enough samples"), "{out}");

    let mut failed = noisy.clone();
    failed.push(entry(100, None, "fail"));
    let (code, out) = gate(&history(dir.path(), "failed.jsonl", &failed), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("MISSING"), "{out}");

    let html = dir.path().join("history.html");
    let (code, _) = gate(&dir.path().join("noisy.jsonl"), &["--html", html.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg class=\"history\""));
}

#[test]
fn bad_report_arguments_are_exit_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = gate(&dir.path().join("nope.jsonl"), &[]);
    assert_eq!(code, 2);
    assert!(out.contains("nope.jsonl"), "{out}");
    let h = history(dir.path(), "h.jsonl", &[entry(1, Some(1.0), "pass")]);
    let (code, out) = gate(&h, &["--max-abs", "soon"]);
    assert_eq!(code, 2);
    assert!(out.contains("--max-abs"), "{out}");
    let (code, _) = gate(&h, &["--min-samples", "20", "--baseline-runs", "10"]);
    assert_eq!(code, 2);
    let out = airboot().args(["run", "--repeat", "0", "scenarios"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = airboot().args(["run", "--transport", "tcp"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("virtio-serial"));
}

#[test]
fn help_explains_the_commands() {
    let out = airboot().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check", "images", "report"] {
        assert!(text.contains(cmd), "{cmd} missing from --help:\n{text}");
    }
    let out = airboot().args(["images", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["list", "build", "path", "clean"] {
        assert!(text.contains(cmd), "{cmd} missing from images --help:\n{text}");
    }
    let out = airboot().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--report-dir", "--accel", "--transport", "--repeat", "--history", "--check-outcomes", "--filter"] {
        assert!(text.contains(flag), "{flag} missing from run --help");
    }
}

#[test]
fn a_cut_by_probe_event_needs_the_probe_in_the_image() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.raw"), vec![0u8; 4096]).unwrap();
    let scenario = dir.path().join("s.toml");
    let body = "name = \"s\"\n[image]\npath = \"disk.raw\"\nboot = \"uefi\"\n[machine]\narch = \"x86_64\"\n[expect]\nimages = [\"a:1\"]\n[power_cut]\nload = \"a:1\"\n";
    std::fs::write(&scenario, body).unwrap();
    let out = airboot().arg("cut").arg(&scenario).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("does not carry the probe") && err.contains("probe = true"), "{err}");
    // Said before anything boots: no report folder was made for it.
    assert!(!err.contains("booting"), "{err}");
    // A trigger key in the wrong place is named.
    std::fs::write(&scenario, format!("{body}points = 2\n")).unwrap();
    let out = airboot().arg("cut").arg(&scenario).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("power_cut.until"), "{err}");
}

#[test]
fn exploration_options_are_refused_with_a_reason_before_anything_boots() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("disk.raw"), vec![0u8; 4096]).unwrap();
    let head = "name = \"s\"\n[image]\npath = \"disk.raw\"\nboot = \"uefi\"\n[machine]\narch = \"x86_64\"\n[expect]\nimages = [\"a:1\"]\n[power_cut]\nat = \"go\"\nuntil = \"done\"\n";
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(&sweep, format!("{head}points = 4\n")).unwrap();
    let all = dir.path().join("all.toml");
    std::fs::write(&all, format!("{head}points = \"all\"\n")).unwrap();
    let run = |args: &[&str], s: &Path| {
        let out = airboot().arg("cut").arg(s).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&["--shard", "1/2"], &sweep);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("belong to an exploration") && err.contains("points = \"all\""), "{err}");
    for bad in ["0/2", "3/2", "x", "1/0"] {
        let (code, err) = run(&["--shard", bad], &all);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("K/N"), "{bad}: {err}");
    }
    let (code, err) = run(&["--record-only", "--recording", "x"], &all);
    assert_eq!(code, Some(2), "{err}");
    // A recording folder that is not one: the report says why, exit 2.
    let rd = dir.path().join("r");
    let (code, _) = run(&["--recording", dir.path().to_str().unwrap(), "--report-dir", rd.to_str().unwrap()], &all);
    assert_eq!(code, Some(2));
    let report = std::fs::read_to_string(rd.join("report.json")).unwrap();
    assert!(report.contains("recording.json") && report.contains("--record-only"), "{report}");
    // Merging what is not an exploration's shards.
    let out = airboot().args(["report", "--merge"]).arg(&rd).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("holds no exploration"), "{err}");
    let out = airboot().args(["report", "--merge"]).arg(dir.path().join("nope")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope/report.json"));
}

#[test]
fn repro_of_a_bundle_whose_input_image_is_gone_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("cut-01-lose-unflushed");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("crash.qcow2"), b"").unwrap();
    let gone = dir.path().join("fixtures/debian-load-at-boot-x86_64-0123456789abcdef/disk.qcow2");
    std::fs::write(
        dir.path().join("s.toml"),
        "name = \"s\"\n[image]\nfixture = \"debian-load-at-boot-x86_64\"\n[expect]\nimages = [\"a:1\"]\n",
    )
    .unwrap();
    let info = serde_json::json!({
        "scenario_file": dir.path().join("s.toml"),
        "input": gone,
        "input_sha256": "00".repeat(32),
        "arch": "x86_64",
        "mode": "lose-unflushed",
        "trigger": "sweep point 1 of 8",
        "position": {"entry": 10, "writes": 8, "flushes": 2, "bytes_written": 4096},
        "seed": 1,
        "record_argv": [],
        "outcome": "CORRUPT-DETECTED",
    });
    std::fs::write(bundle.join("cut.json"), info.to_string()).unwrap();
    let out = airboot().arg("repro").arg(&bundle).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&gone.display().to_string()) && err.contains("no longer exists"), "{err}");
    assert!(err.contains("airboot images clean"), "{err}");
}

/// A pipe whose reading end is closed before airboot writes a byte.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

#[test]
fn a_listing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let out = airboot().args(["images", "list"]).stdout(closed_pipe()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE like any Unix tool: {:?} {err}", out.status);
}

/// The commands that boot, cut or judge go on when stdout closes: the
/// gate still exits with its verdict and still writes its files.
#[test]
fn a_gate_into_a_closed_pipe_still_decides_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..11).map(|i| entry(i, Some(130.0 + (i % 3) as f64), "pass")).collect();
    lines.push(entry(99, Some(190.0), "pass"));
    let h = history(dir.path(), "slow.jsonl", &lines);
    let html = dir.path().join("history.html");
    let out = airboot()
        .args(["report", "--gate", "--history"])
        .arg(&h)
        .arg("--html")
        .arg(&html)
        .stdout(closed_pipe())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(1), "the gate's verdict (a regression), not a crash: {err}");
    assert!(html.is_file(), "the HTML history was not written after stdout closed");
}

/// docs/diagnoses.md lists exactly the codes `airboot explain` knows, each
/// with the same evidence rule and fix; an unknown code is exit 2 with the
/// nearest one.
#[test]
fn the_diagnosis_page_matches_the_code() {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/diagnoses.md")).unwrap();
    let on_page: Vec<&str> =
        page.lines().filter_map(|l| l.strip_prefix("## `").and_then(|l| l.strip_suffix('`'))).collect();
    let list = airboot().arg("explain").output().unwrap();
    assert!(list.status.success());
    let list = String::from_utf8(list.stdout).unwrap();
    let (diags, _) = list.split_once("failure codes").unwrap();
    let in_code: Vec<&str> = diags.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    assert!(in_code.len() >= 9, "{list}");
    assert_eq!(on_page, in_code, "docs/diagnoses.md headings against `airboot explain`");
    for code in in_code {
        let o = airboot().args(["explain", code]).output().unwrap();
        assert!(o.status.success(), "{code}");
        let text = String::from_utf8(o.stdout).unwrap();
        let (_, rest) = text.split_once("\n\nevidence: ").unwrap();
        let (rule, fix) = rest.split_once("\n\nfix: ").unwrap();
        let entry = page.split(&format!("## `{code}`")).nth(1).unwrap().split("\n## ").next().unwrap();
        assert!(entry.contains(&format!("**Evidence:** {rule}")), "{code}: the page's evidence rule differs");
        assert!(entry.contains(&format!("**Fix:** {}", fix.trim())), "{code}: the page's fix differs");
        assert!(entry.contains("**Example:**"), "{code}: no example");
    }
    let o = airboot().args(["explain", "engine-dwn"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nearest: engine-down"));
}

//! index.html rendered by a real browser: headless Chromium takes a
//! screenshot, and the timeline's SVG must be there and drawn (its phase
//! colours appear in the pixels, which nothing but the SVG paints).
//!
//! Needs Debian's `chromium` (scripts/setup.sh installs it).

use std::path::Path;
use std::process::Command;

fn chromium() -> &'static str {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"] {
        if Path::new(c).exists() {
            return c;
        }
    }
    panic!("no Chromium found: install Debian's `chromium` package (scripts/setup.sh does)");
}

fn headless(args: &[&str], profile: &Path) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[test]
fn index_html_renders_with_a_visible_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let run = airboot_report::testdata::run();
    let history: Vec<airboot_core::history::HistoryEntry> = (0..6)
        .map(|i| airboot_core::history::HistoryEntry {
            schema: airboot_core::history::HISTORY_SCHEMA.into(),
            run_id: format!("r{i}"),
            started_at: format!("2026-11-{:02}T03:00:00Z", i + 1),
            scenario: "preseeded-x86_64".into(),
            image_sha256: Some("ab".repeat(32)),
            arch: Some(airboot_model::Arch::X86_64),
            accel: Some(airboot_model::Accel::Tcg),
            verdict: airboot_model::Verdict::Pass,
            time_to_stack_s: Some(130.0 + i as f64),
            milestones: Default::default(),
            airboot_version: "0.1.0".into(),
            jobs: 1,
        })
        .collect();
    airboot_report::write_run_files(dir.path(), &run, Some(&history)).unwrap();
    let page = dir.path().join("index.html");
    let url = format!("file://{}", page.display());
    let profile = dir.path().join("profile");

    // The DOM as the browser built it.
    let dom = headless(&["--dump-dom", &url], &profile);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("class=\"timeline\"").count(), 3, "three timelines in the DOM");
    assert!(dom.matches("<circle").count() >= 10, "milestone markers drawn");
    assert!(dom.contains("class=\"history\""), "the history plot is there");

    // What it looks like.
    let shot = dir.path().join("shot.png");
    let out = headless(&["--window-size=1100,900", &format!("--screenshot={}", shot.display()), &url], &profile);
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1100, 900));
    let bpp = info.line_size / info.width as usize;
    let pixels: Vec<(u8, u8, u8)> = buf[..info.buffer_size()].chunks(bpp).map(|p| (p[0], p[1], p[2])).collect();
    let near = |c: (u8, u8, u8), want: (u8, u8, u8)| {
        (c.0 as i32 - want.0 as i32).abs() <= 6
            && (c.1 as i32 - want.1 as i32).abs() <= 6
            && (c.2 as i32 - want.2 as i32).abs() <= 6
    };
    // The "containers → stack ready" phase (#8fd19e) and "init → engine" (#7fa7d8).
    for (name, rgb) in [("stack phase", (0x8f, 0xd1, 0x9e)), ("engine phase", (0x7f, 0xa7, 0xd8))] {
        let n = pixels.iter().filter(|p| near(**p, rgb)).count();
        assert!(n > 200, "{name} colour painted on only {n} pixels: the timeline is not visible");
    }
    // AIRBOOT_KEEP_RENDER=DIR keeps the page and the screenshot for a look.
    if let Some(keep) = std::env::var_os("AIRBOOT_KEEP_RENDER") {
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&shot, Path::new(&keep).join("shot.png"));
        let _ = std::fs::copy(&page, Path::new(&keep).join("index.html"));
    }
    let white = pixels.iter().filter(|p| **p == (255, 255, 255)).count();
    assert!(white < pixels.len(), "a blank page");
}

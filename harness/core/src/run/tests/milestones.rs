//! Milestones: the scenario's own (required, with budgets), the built-in
//! init and loader lines, and runs that have nothing else to wait for.

use super::*;

#[test]
fn required_milestones_gate_the_pass_and_budgets_fail_fast() {
    let mut c = cfg();
    c.milestones = vec![MilestoneSpec {
        name: "loaded".into(),
        console: "load: done".into(),
        required: true,
        within: Some(Duration::from_secs(5)),
    }];
    let mut run = Run::new(c.clone()).unwrap();
    assert_eq!(run.on_line(&line(2.0, "load: done")), Decision::Continue);
    assert_eq!(feed(&mut run, 8.0, &block(1, false, "healthy")), Decision::Stop);
    assert_eq!(run.finish().verdict, Verdict::Pass);

    // Never seen: the budget (5s × 2) ends the run at 10s, not at 40s.
    let mut run = Run::new(c.clone()).unwrap();
    assert_eq!(run.on_tick(9.0), Decision::Continue);
    assert_eq!(run.on_tick(10.5), Decision::Stop);
    assert_eq!(run.finish().failures[0].code, FailureCode::MilestoneLate);

    // Seen, but after its budget: late, with the line as evidence.
    let mut run = Run::new(c.clone()).unwrap();
    run.on_line(&line(12.0, "load: done"));
    feed(&mut run, 13.0, &block(1, false, "healthy"));
    let r = run.finish();
    let late = r.failures.iter().find(|f| f.code == FailureCode::MilestoneLate).expect("a late milestone fails");
    assert!(late.message.contains("came at 12.0s, after its budget of 10.0s"), "{}", late.message);
    assert_eq!(late.evidence.as_deref(), Some("load: done"));

    // Stack ready but required milestone missing: keep waiting.
    c.milestones[0].within = None;
    let mut run = Run::new(c).unwrap();
    assert_eq!(feed(&mut run, 8.0, &block(1, false, "healthy")), Decision::Continue);
    assert_eq!(run.on_line(&line(9.0, "load: done")), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.time_to_stack_s, Some(8.0));
}

#[test]
fn milestone_only_scenarios() {
    let mut c = cfg();
    c.expect.images.clear();
    c.expect.containers.clear();
    c.milestones = vec![MilestoneSpec { name: "up".into(), console: "login:".into(), required: true, within: None }];
    let mut run = Run::new(c).unwrap();
    assert_eq!(run.on_line(&line(1.0, "Linux version 6")), Decision::Continue);
    assert_eq!(run.on_line(&line(4.0, "debian login:")), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass);
    assert_eq!(r.time_to_stack_s, None);
}

/// The init milestone is the real root's, not an initramfs's.
#[test]
fn init_is_the_real_roots_not_the_initramfss() {
    let mut run = Run::new(cfg()).unwrap();
    for (t, l) in [
        (1.0, "[  OK  ] Welcome to Debian GNU/Linux 12 (bookworm) dracut-059 (Initramfs)!"),
        (1.5, "systemd[1]: systemd 252.39-1~deb12u1 running in system mode (+PAM +AUDIT)"),
        (2.0, "Welcome to Debian GNU/Linux 12 (bookworm)!"),
    ] {
        run.on_line(&line(t, l));
    }
    run.on_abort(3.0, FailureCode::Interrupted, "stop");
    let r = run.finish();
    let init = r.milestones.iter().find(|m| m.name == "init").expect("an init milestone");
    assert_eq!(init.t_s, 2.0, "{init:?}");
    let mut run = Run::new(cfg()).unwrap();
    run.on_line(&line(4.0, "INIT: version 3.06 booting"));
    run.on_abort(5.0, FailureCode::Interrupted, "stop");
    assert_eq!(run.finish().milestones.iter().find(|m| m.name == "init").unwrap().t_s, 4.0, "sysvinit's banner");
}

/// The loader milestone on BIOS boots: syslinux's banner, GRUB's
/// "Booting" line; never a kernel or userspace line that mentions them.
#[test]
fn bios_loaders_give_the_loader_milestone() {
    let loader = |lines: &[&str]| {
        let mut run = Run::new(cfg()).unwrap();
        for (i, l) in lines.iter().enumerate() {
            run.on_line(&line(0.5 + i as f64, l));
        }
        run.on_abort(9.0, FailureCode::Interrupted, "stop");
        run.finish().milestones.iter().find(|m| m.name == "loader").map(|m| m.t_s)
    };
    assert_eq!(loader(&["SYSLINUX 6.04 20210613 Copyright (C) 1994-2015 H. Peter Anvin et al"]), Some(0.5));
    assert_eq!(loader(&["EXTLINUX 6.04 EDD 20210613 Copyright (C) 1994-2015 H. Peter Anvin et al"]), Some(0.5));
    assert_eq!(loader(&["x", "  Booting `Linux'"]), Some(1.5));
    assert_eq!(loader(&["EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID device path"]), Some(0.5));
    assert_eq!(
        loader(&[
            "Linux version 6.1.0 (SYSLINUX 6.04 builder)",
            "[    1.0] systemd[1]: Booting `Linux' is not a unit",
            "Started syslinux-update.service",
        ]),
        None
    );
}

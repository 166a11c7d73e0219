//! How the guest's clocks map onto the run's timeline.

use super::*;

/// Guest times map to the host through the status whose exchange was
/// quickest (the least uncertain): a slow first exchange, whose midpoint
/// is a second off, does not shift the stack's time once a quick one came.
#[test]
fn guest_times_map_through_the_quickest_exchange() {
    let mut run = Run::new(probe_cfg()).unwrap();
    run.on_probe_hello(8.0, "x86_64");
    let (s, mut smp) = pstatus("starting", 12.0);
    smp.sent_s = 12.0 - 3.0;
    smp.received_s = 12.0 + 1.0;
    assert_eq!(run.on_probe_status(&s, smp), Decision::Continue);
    let (s, smp) = pstatus("healthy", 18.0);
    assert_eq!(run.on_probe_status(&s, smp), Decision::Verify);
    assert_eq!(run.on_verification(25.0, vec![ran("fixture/redis:1")], Some(&clean_airgap())), Decision::Stop);
    let r = run.finish();
    assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.failures);
    assert_eq!(r.time_to_stack_s, Some(15.0), "the quick exchange's map, not the slow one's (14.0)");
}

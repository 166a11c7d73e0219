//! Tests of the exploration's pure parts: points, draws, keys,
//! fingerprints, classes, the tally and the merge of shards.

use super::*;
use crate::cut::store::{ImageCheck, StoreVerdict};
use crate::cut::writelog::{EntryKind::Flush as F, EntryKind::Write as W, crash_state, encode_log};

fn log() -> WriteLog {
    let raw = encode_log(
        &[
            (W, false, 0, 2, 1),
            (F, false, 0, 0, 0),
            (W, false, 8, 1, 2),
            (W, true, 16, 1, 3),
            (W, false, 24, 2, 4),
            (F, false, 0, 0, 0),
            (F, false, 0, 0, 0),
            (W, false, 32, 1, 5),
            (F, false, 0, 0, 0),
        ],
        0,
    );
    WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap()
}

#[test]
fn every_flush_and_fua_write_in_the_window_is_a_point() {
    let l = log();
    let p = points(&l, 0, 9);
    assert_eq!(
        p,
        vec![
            Point { entry: 1, kind: PointKind::BeforeFlush { flush: 1 } },
            Point { entry: 4, kind: PointKind::AfterFua { write: 3 } },
            Point { entry: 5, kind: PointKind::BeforeFlush { flush: 2 } },
            Point { entry: 6, kind: PointKind::BeforeFlush { flush: 3 } },
            Point { entry: 8, kind: PointKind::BeforeFlush { flush: 4 } },
        ]
    );
    // The window bounds both ends; numbering still counts from the start.
    let w = points(&l, 2, 6);
    assert_eq!(w.iter().map(|p| p.entry).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(w[1].describe(), "just before flush #2");
    assert_eq!(w[0].describe(), "just after FUA write #3");
    assert!(points(&l, 9, 9).is_empty());
}

#[test]
fn states_draw_per_point_only_for_random_modes_each_with_its_own_seed() {
    let p = points(&log(), 0, 9);
    let s = states(&p, &[CutMode::LoseUnflushed, CutMode::Torn], 3, 7);
    assert_eq!(s.len(), p.len() * 4);
    assert_eq!(s.iter().filter(|x| x.mode == CutMode::Torn).count(), p.len() * 3);
    let mut seeds: Vec<u64> = s.iter().map(|x| x.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), s.len(), "every state has its own seed");
    assert_eq!(s, states(&p, &[CutMode::LoseUnflushed, CutMode::Torn], 3, 7), "reproducible");
    assert_ne!(s[1].seed, states(&p, &[CutMode::LoseUnflushed, CutMode::Torn], 3, 8)[1].seed);
    assert_eq!(draws(CutMode::Kill, 8), 1);
    assert_eq!(draws(CutMode::FlushIgnored, 0), 1, "at least one draw");
}

#[test]
fn equal_keys_mean_the_same_bytes_and_a_flush_with_nothing_before_it_repeats_a_state() {
    let l = log();
    // Before flush 2 (entry 5): flush 1's prefix and the FUA write after it.
    let a = crash_state(&l, 5, CutMode::LoseUnflushed, 0);
    assert_eq!((a.extras_from, a.pieces.len()), (1, 2));
    // Before flush 3 (entry 6): everything up to flush 2.
    let b = crash_state(&l, 6, CutMode::LoseUnflushed, 0);
    assert_ne!(state_key(&a), state_key(&b));
    // Before flush 4 (entry 8): flush 3 came with nothing new since
    // flush 2, and the write after it is lost: the same disk as `b`.
    let c = crash_state(&l, 8, CutMode::LoseUnflushed, 0);
    assert_ne!(b.durable_end, c.durable_end);
    assert_eq!(b.pieces, c.pieces);
    assert_eq!(state_key(&b), state_key(&c), "same pieces, same key");
    // Kept the write after flush 3: another disk.
    let k = crash_state(&l, 8, CutMode::Kill, 0);
    assert_ne!(state_key(&k), state_key(&c));
    let t1 = crash_state(&l, 5, CutMode::Torn, 1);
    let t2 = crash_state(&l, 5, CutMode::Torn, 2);
    assert_eq!(state_key(&t1) == state_key(&t2), t1.pieces == t2.pieces);
}

fn store(verdict: StoreVerdict, images: &[(&str, ImageState)], problems: &[&str]) -> StoreCheck {
    StoreCheck {
        verdict,
        images: images
            .iter()
            .map(|(r, s)| ImageCheck { reference: r.to_string(), id: None, state: s.clone() })
            .collect(),
        layers_registered: 3,
        layers_verified: 2,
        problems: problems.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn fingerprints_keep_what_decides_a_fate_and_drop_the_details() {
    let clean = FsFindings { clean: true, summary: "e2fsck exit 0".into() };
    let a = store(
        StoreVerdict::Corrupt,
        &[("b:1", ImageState::Complete), ("r:1", ImageState::Absent)],
        &["layer 7e3f79a8e6fc: its files do not hash to its diff_id (got 307b); 507 file(s) shorter"],
    );
    let b = store(
        StoreVerdict::Corrupt,
        &[("b:1", ImageState::Complete), ("r:1", ImageState::Absent)],
        &["layer 7e3f79a8e6fc: its files do not hash to its diff_id (got 99aa); 3 file(s) shorter"],
    );
    let m = [("/var/lib/airboot/images-loaded".to_string(), false)];
    let fa = fingerprint(&clean, Some(&a), &m);
    assert_eq!(
        fa,
        "fs=clean store=corrupt b:1=complete r:1=absent damaged=[layer 7e3f79a8e6fc] \
         /var/lib/airboot/images-loaded=absent"
    );
    assert_eq!(fa, fingerprint(&clean, Some(&b), &m), "how much of a layer is short does not split");
    let other_layer = store(StoreVerdict::Corrupt, &[("b:1", ImageState::Complete)], &["layer 346ea0883988: x"]);
    assert_ne!(fingerprint(&clean, Some(&other_layer), &m), fa);
    let damaged = FsFindings { clean: false, ..clean.clone() };
    assert_ne!(fingerprint(&damaged, Some(&a), &m), fa);
    assert_ne!(fingerprint(&clean, Some(&a), &[("/x".into(), true)]), fa);
    assert_eq!(fingerprint(&clean, None, &[]), "fs=clean store=unreadable");
}

fn st(index: usize, entry: usize, fp: &str, outcome: Option<CutOutcome>) -> ExploredState {
    ExploredState {
        index,
        entry,
        point: format!("just before flush #{entry}"),
        mode: CutMode::LoseUnflushed,
        variant: 0,
        seed: 0,
        lost_writes: 0,
        torn_writes: 0,
        key: format!("k{index}"),
        same_as: None,
        fs_clean: Some(true),
        store: Some(if fp == "new" { "new" } else { "corrupt" }.into()),
        fingerprint: fp.into(),
        class: None,
        outcome,
        inherited: false,
        error: None,
    }
}

#[test]
fn classes_group_by_fingerprint_samples_are_seeded_and_the_tally_finds_the_first_bad_point() {
    let mut s = vec![
        st(0, 10, "new", None),
        st(1, 12, "bad", None),
        st(2, 14, "new", None),
        st(3, 16, "bad", None),
        st(4, 18, "bad", None),
        st(5, 20, "", None),
    ];
    s[5].error = Some("unreadable".into());
    let mut classes = classify(&mut s);
    assert_eq!(classes.len(), 2);
    assert_eq!(classes[0].members, vec![0, 2]);
    assert_eq!(classes[1].members, vec![1, 3, 4]);
    assert_eq!(classes[1].representative, 1);
    assert_eq!(s[4].class, Some(1));
    assert_eq!(s[5].class, None, "an unjudged state has no class");
    let picked = sample(&classes, 1, 3);
    assert_eq!(picked.len(), 2);
    assert!(picked.iter().all(|&(k, m)| classes[k].members.contains(&m) && m != classes[k].representative));
    assert_eq!(picked, sample(&classes, 1, 3));
    assert_eq!(sample(&classes, 5, 3).len(), 3, "no more than the class has");
    // The seed chooses: seeds that differ in any bit, high or low, choose
    // differently from a class of 64 (3 picks; a repeat by chance is
    // about 1 in 250,000).
    let big = vec![StateClass {
        fingerprint: "fp".into(),
        members: (0..64).collect(),
        representative: 0,
        bundle: None,
        outcome: None,
        sampled: Vec::new(),
        evidence: Vec::new(),
    }];
    for bit in [0, 17, 40, 63] {
        assert_ne!(sample(&big, 3, 7), sample(&big, 3, 7 ^ (1u64 << bit)), "seed bit {bit}");
    }
    // Offline: "new" survives, "corrupt" does not.
    let t = tally(6, &s, &classes, true);
    assert_eq!((t.enumerated, t.with_outcome, t.survived), (6, 6, 2));
    assert_eq!(t.judged_offline, 6, "each state judged on its own bytes");
    assert_eq!(t.first_bad.as_deref(), Some("just before flush #12"));
    assert_eq!(
        t.headline(true),
        "6 states, 2 classes, 33.3% intact offline, first non-surviving: just before flush #12"
    );
    // Outcomes, and a sampled member that disagreed.
    classes[0].outcome = Some(CutOutcome::IntactNew);
    classes[1].outcome = Some(CutOutcome::SelfHealed);
    classes[1].sampled = vec![(3, Some(CutOutcome::CorruptDetected))];
    for x in &mut s[..5] {
        x.outcome = classes[x.class.unwrap()].outcome;
    }
    s[3].outcome = Some(CutOutcome::CorruptDetected);
    let t = tally(6, &s, &classes, false);
    assert_eq!((t.powered_on, t.sampled, t.sample_mismatches), (3, 1, 1));
    assert_eq!((t.with_outcome, t.survived), (5, 4));
    assert_eq!(t.first_bad.as_deref(), Some("just before flush #16"));
}

fn exploration(states: Vec<ExploredState>, shard: Option<(usize, usize)>, total: usize) -> Exploration {
    let mut states = states;
    let classes = classify(&mut states);
    Exploration {
        recording: "log:abc".into(),
        shard,
        total_states: total,
        offline: false,
        window: (3, 30),
        placed: "between a and b".into(),
        modes: vec![CutMode::LoseUnflushed],
        states_per_point: 8,
        seed: 1,
        tally: tally(6, &states, &classes, false),
        headline: String::new(),
        judge_s: 1.0,
        states_per_s: 6.0,
        jobs: 1,
        scratch: "/dev/shm".into(),
        fsck_runs: 12,
        boot_jobs: 2,
        boot_jobs_why: "2 at once (--jobs)".into(),
        boot_s: 100.0,
        cross_checked: 3,
        cross_check_mismatches: Vec::new(),
        classes,
        states,
    }
}

#[test]
fn shards_slice_the_states_contiguously_and_cover_them_once() {
    for total in [0, 1, 5, 522] {
        for n in 1..6 {
            let mut covered = Vec::new();
            for k in 1..=n {
                covered.extend(shard_range(total, k, n));
            }
            assert_eq!(covered, (0..total).collect::<Vec<_>>(), "{total} states in {n} shards");
        }
    }
    assert_eq!(shard_range(10, 2, 3), 3..6);
}

#[test]
fn merged_shards_account_for_every_state_once_and_reclassify_across_them() {
    // Shard 1: states 0-2, shard 2: states 3-5. State 4 has state 1's
    // bytes; the "bad" class was powered on in both shards.
    let mut a = vec![st(0, 10, "new", None), st(1, 12, "bad", None), st(2, 14, "new", None)];
    let mut b = vec![st(3, 16, "bad", None), st(4, 18, "bad", None), st(5, 20, "new", None)];
    b[1].key = "k1".into();
    a[0].outcome = Some(CutOutcome::IntactNew);
    a[1].outcome = Some(CutOutcome::CorruptDetected);
    a[2].outcome = Some(CutOutcome::IntactNew);
    a[2].inherited = true;
    b[0].outcome = Some(CutOutcome::CorruptDetected);
    b[1].outcome = Some(CutOutcome::CorruptDetected);
    b[1].inherited = true;
    b[2].outcome = Some(CutOutcome::IntactNew);
    let mut p1 = exploration(a, Some((1, 2)), 6);
    p1.classes[1].bundle = Some("s1/class-02".into());
    let p2 = exploration(b, Some((2, 2)), 6);
    let m = merge(vec![p1.clone(), p2.clone()]).unwrap();
    assert_eq!(m.shard, None);
    assert_eq!(m.states.iter().map(|s| s.index).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
    assert_eq!(m.states[4].same_as, Some(1), "the same bytes across shards");
    assert_eq!(m.classes.len(), 2);
    assert_eq!(m.classes[1].members, vec![1, 3, 4]);
    assert_eq!(m.classes[1].representative, 1);
    assert_eq!(m.classes[1].bundle.as_deref(), Some("s1/class-02"));
    assert_eq!(m.classes[1].sampled, vec![(3, Some(CutOutcome::CorruptDetected))], "the other shard's boot");
    assert_eq!(m.classes[0].sampled, vec![(5, Some(CutOutcome::IntactNew))]);
    assert!(m.states[4].inherited && m.states[2].inherited && !m.states[3].inherited);
    assert_eq!((m.tally.enumerated, m.tally.classes, m.tally.sample_mismatches), (6, 2, 0));
    assert_eq!(m.headline, "6 states, 2 classes, 50.0% survive, first non-surviving: just before flush #12");
    assert_eq!((m.fsck_runs, m.cross_checked, m.jobs), (24, 6, 2));
    assert_eq!((m.boot_jobs, m.boot_s, m.boot_jobs_why.as_str()), (4, 200.0, ""), "the machines' boots, summed");
    // Order of the parts does not matter.
    assert_eq!(merge(vec![p2.clone(), p1.clone()]).unwrap().states, m.states);
    // A state missing, a state twice, another exploration.
    let e = merge(vec![p1.clone()]).unwrap_err();
    assert!(e.contains("3 state(s) missing (first Some(3))"), "{e}");
    let e = merge(vec![p1.clone(), p1.clone(), p2.clone()]).unwrap_err();
    assert!(e.contains("3 in more than one (first Some(0))"), "{e}");
    let mut other = p2.clone();
    other.recording = "log:def".into();
    assert!(merge(vec![p1.clone(), other]).unwrap_err().contains("part 2 is not a shard of the same exploration"));
    let mut past = p2;
    past.states[0].index = 9;
    assert!(merge(vec![p1, past]).unwrap_err().contains("state 9 is past"));
    assert!(merge(Vec::new()).is_err());
}

#[test]
fn parallel_boots_are_bounded_by_cores_memory_and_the_work() {
    // Asked: as asked, but never more than there are boots nor zero.
    assert_eq!(boot_jobs(Some(4), 18, 2, 1, 1024, Some(1)).0, 4);
    assert_eq!(boot_jobs(Some(4), 3, 2, 1, 1024, None).0, 3);
    assert_eq!(boot_jobs(Some(0), 3, 2, 1, 1024, None).0, 1);
    assert_eq!(boot_jobs(Some(2), 0, 2, 1, 1024, None).0, 1);
    assert!(boot_jobs(Some(4), 18, 2, 1, 1024, None).1.contains("--jobs"));
    // By cores: one core per vCPU.
    assert_eq!(boot_jobs(None, 18, 2, 1, 1024, Some(1 << 20)).0, 2);
    assert_eq!(boot_jobs(None, 18, 8, 2, 1024, Some(1 << 20)).0, 4);
    assert_eq!(boot_jobs(None, 18, 2, 2, 1024, Some(1 << 20)).0, 1);
    assert_eq!(boot_jobs(None, 18, 1, 4, 1024, Some(1 << 20)).0, 1);
    assert_eq!(boot_jobs(None, 18, 8, 0, 1024, Some(1 << 20)).0, 8, "0 vCPUs counts as 1");
    // By memory: the guest's RAM and QEMU's own.
    let per = 1024 + BOOT_OVERHEAD_MIB;
    assert_eq!(boot_jobs(None, 18, 64, 1, 1024, Some(3 * per)).0, 3);
    assert_eq!(boot_jobs(None, 18, 64, 1, 1024, Some(3 * per - 1)).0, 2);
    assert_eq!(boot_jobs(None, 18, 64, 1, 1024, Some(10)).0, 1, "at least one, even short of memory");
    assert_eq!(boot_jobs(None, 18, 64, 1, u64::MAX, Some(u64::MAX)).0, 1, "no overflow");
    // Unknown memory: cores decide. Never more than the work.
    assert_eq!(boot_jobs(None, 18, 4, 1, 1024, None).0, 4);
    assert_eq!(boot_jobs(None, 2, 16, 1, 1024, None).0, 2);
    let (n, why) = boot_jobs(None, 18, 2, 1, 1024, Some(24_000));
    assert_eq!(n, 2);
    assert_eq!(
        why,
        "2 at once: 2 core(s) fit 2 guest(s) of 1 vCPU(s); 24000 MiB available fits 15 guest(s) of 1024 MiB + 512 MiB for QEMU; 18 boot(s) to do (--jobs to choose)"
    );
}

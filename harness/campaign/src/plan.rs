//! Where to cut: pure decisions from the scenario's trigger, the write
//! log of the recorded boot, and where the recorder saw the console lines
//! in it.

use airboot_core::cut::writelog::{Count, WriteLog, sweep_points};
use airboot_core::cut::{CutPosition, MarkSeen, StopRule};
use airboot_core::scenario::{CutAfter, CutTrigger};
use airboot_qemu::vm::{RecordSpec, Recorded};

/// One place to cut: after `entry` requests of the log, and what placed it.
#[derive(Debug, Clone, PartialEq)]
pub struct CutPoint {
    pub entry: usize,
    pub placed: String,
}

/// Why no cut could be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Where a cut falls, as counts from the start of the log.
pub fn position(log: &WriteLog, entry: usize) -> CutPosition {
    let (writes, flushes, bytes) = log.counts(entry);
    CutPosition { entry, writes, flushes, bytes_written: bytes }
}

/// What a recorded boot watches for: the trigger (and a sweep's end),
/// and when the cut's moment comes. `pause`: freeze the guest then (the
/// recorded boot ends at the cut) rather than note the position and go on.
pub fn record_spec(t: &CutTrigger, until: Option<&str>, pause: bool) -> RecordSpec {
    let re = |p: &str| regex::Regex::new(p).expect("checked when the scenario was read");
    let mut marks = vec![("at".to_string(), re(&t.at))];
    if let Some(u) = until {
        marks.push(("until".to_string(), re(u)));
    }
    // The recording ends at the sweep's end, at the timed cut, or (for
    // counted cuts) when the run ends by itself.
    let stop = if until.is_some() {
        Some(StopRule { mark: 1, nth: 1, delay_s: 0.5 })
    } else if let CutAfter::Time(d) = t.after {
        Some(StopRule { mark: 0, nth: t.matching, delay_s: d.as_secs_f64() })
    } else {
        None
    };
    RecordSpec { marks, stop, pause }
}

/// A sweep's window in the recording: entries `from..to` of the log,
/// from the trigger's match (`at`) to the first `until` line after it.
pub struct Window<'r> {
    pub from: usize,
    pub to: usize,
    pub at: &'r MarkSeen,
    pub until: &'r MarkSeen,
}

impl Window<'_> {
    /// The two lines, for messages.
    pub fn between(&self) -> String {
        let (a, u) = (self.at, self.until);
        format!("between {:?} at {:.1}s and {:?} at {:.1}s", a.line, a.t_s, u.line, u.t_s)
    }
}

pub fn window<'r>(
    t: &CutTrigger,
    until_re: &str,
    log: &WriteLog,
    recorded: &'r Recorded,
) -> Result<Window<'r>, PlanError> {
    let at = trigger_seen(t, recorded)?;
    let until = recorded.seen.iter().find(|m| m.mark == "until" && m.t_s >= at.t_s).ok_or_else(|| {
        PlanError(format!("the console never showed power_cut.until = {until_re:?} after `at`: the sweep has no end"))
    })?;
    Ok(Window { from: log.entries_within(at.log_len), to: log.entries_within(until.log_len), at, until })
}

fn trigger_seen<'r>(t: &CutTrigger, recorded: &'r Recorded) -> Result<&'r MarkSeen, PlanError> {
    recorded.seen.iter().find(|m| m.mark == "at" && m.nth == t.matching).ok_or_else(|| {
        let hint = if t.probe_event {
            " (the probe prints an `AIRBOOT-EVENT v1 layer-load` line for each layer of a Docker load it sees; a layer \
             registered between two of its looks, 50 ms apart, shows as state=present and does not fire: see that \
             boot's console.log for the lines it printed)"
        } else {
            ""
        };
        PlanError(format!("the console never showed match {} of the {}: nothing to cut{hint}", t.matching, t.what))
    })
}

/// Where to cut in the recording: one point for a trigger, or `points`
/// points of a sweep to `until`.
pub fn cut_points(
    t: &CutTrigger,
    until: Option<&str>,
    points: usize,
    log: &WriteLog,
    recorded: &Recorded,
) -> Result<Vec<CutPoint>, PlanError> {
    if let Some(until_re) = until {
        let w = window(t, until_re, log, recorded)?;
        let (from, to, at, until) = (w.from, w.to, w.at, w.until);
        let points = sweep_points(log, from, to, points);
        if points.is_empty() {
            return Err(PlanError(format!(
                "no flush with unflushed writes before it between `at` ({:.1}s) and `until` ({:.1}s): nothing a power cut could lose there",
                at.t_s, until.t_s
            )));
        }
        let n = points.len();
        return Ok(points
            .into_iter()
            .enumerate()
            .map(|(k, e)| CutPoint {
                entry: e,
                placed: format!(
                    "sweep point {} of {n}: just before flush #{} ({})",
                    k + 1,
                    log.counts(e).1 + 1,
                    w.between()
                ),
            })
            .collect());
    }
    let at = trigger_seen(t, recorded)?;
    let from = log.entries_within(at.log_len);
    let counted = |what: Count, n: u64, unit: &str| -> Result<CutPoint, PlanError> {
        let base = log.counts(from);
        let target = match what {
            Count::Flushes => base.1 + n,
            Count::Writes => base.0 + n,
            Count::Bytes => base.2 + n,
        };
        let e = log.position_after(what, target).ok_or_else(|| {
            PlanError(format!(
                "the recorded boot ended before {n} {unit} after {:?}: cut earlier or record longer",
                at.line
            ))
        })?;
        Ok(CutPoint {
            entry: e,
            placed: format!("{n} {unit} after match {} of the {} ({:.1}s)", t.matching, t.what, at.t_s),
        })
    };
    let one = match t.after {
        CutAfter::Flushes(n) => counted(Count::Flushes, n, "flush(es)")?,
        CutAfter::Writes(n) => counted(Count::Writes, n, "write(s)")?,
        CutAfter::Bytes(n) => counted(Count::Bytes, n, "byte(s) written")?,
        CutAfter::Time(d) => {
            let (at_t, len) = recorded
                .stopped
                .ok_or_else(|| PlanError("the recorded boot ended before the cut's time came".into()))?;
            CutPoint {
                entry: log.entries_within(len),
                placed: format!(
                    "{:.1}s after match {} of the {} (line at {:.1}s, cut at {at_t:.1}s)",
                    d.as_secs_f64(),
                    t.matching,
                    t.what,
                    at.t_s
                ),
            }
        }
    };
    Ok(vec![one])
}

#[cfg(test)]
mod tests {
    use super::*;
    use airboot_core::cut::MarkSeen;
    use airboot_core::cut::writelog::{Entry, EntryKind};
    use std::time::Duration;

    /// A log of `kinds` ('w' a 4 KiB write, 'f' a flush), each entry
    /// ending 1000 bytes further into the log file.
    fn log(kinds: &str) -> WriteLog {
        let entries = kinds
            .chars()
            .enumerate()
            .map(|(i, k)| Entry {
                kind: if k == 'f' { EntryKind::Flush } else { EntryKind::Write },
                fua: false,
                offset: 4096 * i as u64,
                len: if k == 'f' { 0 } else { 4096 },
                data_at: 0,
                end_in_log: 1000 * (i as u64 + 1),
            })
            .collect();
        WriteLog { sector_size: 512, superblock_entries: 0, entries }
    }

    fn seen(mark: &str, nth: usize, t_s: f64, log_len: u64) -> MarkSeen {
        MarkSeen { mark: mark.into(), nth, t_s, line: format!("{mark} line"), log_len }
    }

    fn trigger(after: CutAfter) -> CutTrigger {
        CutTrigger { at: "go".into(), what: "console line \"go\"".into(), matching: 1, after, probe_event: false }
    }

    #[test]
    fn counted_cuts_count_from_the_trigger() {
        let l = log("wwfwwfwwf");
        // The trigger was seen when 3 entries were in the log.
        let rec = Recorded { seen: vec![seen("at", 1, 5.0, 3000)], stopped: None };
        let p = cut_points(&trigger(CutAfter::Flushes(1)), None, 1, &l, &rec).unwrap();
        assert_eq!(p[0].entry, 6, "just after the first flush after the trigger");
        assert!(p[0].placed.starts_with("1 flush(es) after match 1"), "{}", p[0].placed);
        let p = cut_points(&trigger(CutAfter::Writes(3)), None, 1, &l, &rec).unwrap();
        assert_eq!(p[0].entry, 7);
        let p = cut_points(&trigger(CutAfter::Bytes(4097)), None, 1, &l, &rec).unwrap();
        assert_eq!(p[0].entry, 5, "the write that crossed the byte count");
        assert_eq!(position(&l, 5), CutPosition { entry: 5, writes: 4, flushes: 1, bytes_written: 4 * 4096 });
        let e = cut_points(&trigger(CutAfter::Flushes(9)), None, 1, &l, &rec).unwrap_err();
        assert!(e.0.contains("ended before 9 flush(es)"), "{e}");
    }

    #[test]
    fn a_trigger_never_seen_or_a_timed_cut_never_reached_is_said() {
        let l = log("wwf");
        let none = Recorded::default();
        let e = cut_points(&trigger(CutAfter::Flushes(1)), None, 1, &l, &none).unwrap_err();
        assert!(e.0.contains("never showed match 1 of the console line \"go\""), "{e}");
        let mut t = trigger(CutAfter::Time(Duration::from_secs(2)));
        let rec = Recorded { seen: vec![seen("at", 1, 5.0, 1000)], stopped: None };
        assert!(cut_points(&t, None, 1, &l, &rec).unwrap_err().0.contains("before the cut's time came"));
        let rec = Recorded { seen: vec![seen("at", 1, 5.0, 1000)], stopped: Some((7.0, 2000)) };
        assert_eq!(cut_points(&t, None, 1, &l, &rec).unwrap()[0].entry, 2, "where the log was when the time came");
        t.probe_event = true;
        assert!(cut_points(&t, None, 1, &l, &none).unwrap_err().0.contains("AIRBOOT-EVENT"));
    }

    #[test]
    fn sweeps_place_points_before_flushes_with_something_to_lose() {
        let l = log("wfwwfwfwwwf");
        let rec = Recorded { seen: vec![seen("at", 1, 1.0, 1000), seen("until", 1, 9.0, 11000)], stopped: None };
        let p = cut_points(&trigger(CutAfter::Time(Duration::ZERO)), Some("done"), 3, &l, &rec).unwrap();
        assert_eq!(p.len(), 3);
        for c in &p {
            assert_eq!(l.entries[c.entry].kind, EntryKind::Flush, "{c:?} is just before a flush");
            assert_eq!(l.entries[c.entry - 1].kind, EntryKind::Write, "with a write to lose");
        }
        assert!(p[0].placed.starts_with("sweep point 1 of 3: just before flush #"), "{}", p[0].placed);
        // An `until` before the trigger ends no sweep.
        let rec = Recorded { seen: vec![seen("until", 1, 0.5, 500), seen("at", 1, 1.0, 1000)], stopped: None };
        let e = cut_points(&trigger(CutAfter::Time(Duration::ZERO)), Some("done"), 3, &l, &rec).unwrap_err();
        assert!(e.0.contains("the sweep has no end"), "{e}");
        // Only flushes with nothing unflushed before them: nothing to lose.
        let l = log("wfff");
        let rec = Recorded { seen: vec![seen("at", 1, 1.0, 2000), seen("until", 1, 9.0, 4000)], stopped: None };
        let e = cut_points(&trigger(CutAfter::Time(Duration::ZERO)), Some("done"), 3, &l, &rec).unwrap_err();
        assert!(e.0.contains("nothing a power cut could lose there"), "{e}");
    }

    #[test]
    fn recordings_stop_at_the_sweeps_end_or_the_timed_cut() {
        let s = record_spec(&trigger(CutAfter::Time(Duration::from_secs(3))), None, true);
        assert_eq!(s.stop, Some(StopRule { mark: 0, nth: 1, delay_s: 3.0 }));
        assert!(s.pause);
        let s = record_spec(&trigger(CutAfter::Flushes(2)), Some("done"), false);
        assert_eq!(s.marks.len(), 2);
        assert_eq!(s.stop, Some(StopRule { mark: 1, nth: 1, delay_s: 0.5 }));
        assert_eq!(record_spec(&trigger(CutAfter::Flushes(2)), None, true).stop, None);
    }
}

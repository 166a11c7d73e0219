//! The guest's write stream, as QEMU's `blklogwrites` driver records it
//! (the dm-log-writes format), and the crash states a power cut leaves.
//!
//! Log layout, all little-endian, in log sectors (`sectorsize`, 512 here):
//! sector 0 holds the superblock `{magic u64, version u64, nr_entries u64,
//! sectorsize u32}`; then every request is one header sector
//! `{sector u64, nr_sectors u64, flags u64, data_len u64}` followed by its
//! `nr_sectors` of data (none for flushes and discards). QEMU rewrites the
//! superblock only on a flush, so after a cut its entry count is stale:
//! the parser walks past it and stops at the first header that is not a
//! plausible entry (a never-written, all-zero sector ends the log).

use airboot_model::CutMode;

use crate::disk::{ReadAt, bad};
use std::io;

pub const MAGIC: u64 = 0x006a_7366_7773_6872;
pub const FLAG_FLUSH: u64 = 1;
pub const FLAG_FUA: u64 = 1 << 1;
pub const FLAG_DISCARD: u64 = 1 << 2;
pub const FLAG_MARK: u64 = 1 << 3;
const FLAG_MASK: u64 = FLAG_FLUSH | FLAG_FUA | FLAG_DISCARD | FLAG_MARK;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Write,
    Flush,
    Discard,
}

/// One request the guest's disk completed, in completion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Force Unit Access: durable when it completed, flush or not.
    pub fua: bool,
    /// Byte offset on the guest disk.
    pub offset: u64,
    pub len: u64,
    /// Byte offset of the data in the log file.
    pub data_at: u64,
    /// Where this entry ends in the log file (header + data).
    pub end_in_log: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteLog {
    pub sector_size: u64,
    /// The superblock's count (stale after a cut: informative only).
    pub superblock_entries: u64,
    pub entries: Vec<Entry>,
}

impl WriteLog {
    /// Parse a log. `disk_size` bounds plausible entries; `log_len` is the
    /// log file's length.
    pub fn parse(log: &dyn ReadAt, log_len: u64, disk_size: u64) -> io::Result<WriteLog> {
        let mut sb = [0u8; 28];
        log.read_at(0, &mut sb)?;
        let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        if u64_at(&sb, 0) != MAGIC {
            return Err(bad("not a blklogwrites log (bad superblock magic)"));
        }
        if u64_at(&sb, 8) != 1 {
            return Err(bad(format!("unsupported blklogwrites log version {}", u64_at(&sb, 8))));
        }
        let sector_size = u64::from(u32::from_le_bytes(sb[24..28].try_into().expect("4 bytes")));
        if !sector_size.is_power_of_two() || !(512..=65536).contains(&sector_size) {
            return Err(bad(format!("implausible log sector size {sector_size}")));
        }
        let mut entries = Vec::new();
        let mut at = sector_size;
        let mut h = [0u8; 32];
        while at + sector_size <= log_len {
            log.read_at(at, &mut h)?;
            let (sector, nr, flags, data_len) = (u64_at(&h, 0), u64_at(&h, 8), u64_at(&h, 16), u64_at(&h, 24));
            if flags & !FLAG_MASK != 0 || data_len != 0 {
                break;
            }
            let kind = if flags & FLAG_FLUSH != 0 {
                EntryKind::Flush
            } else if flags & FLAG_DISCARD != 0 {
                EntryKind::Discard
            } else {
                EntryKind::Write
            };
            let len = nr.saturating_mul(sector_size);
            let plausible = match kind {
                EntryKind::Flush => nr == 0 && sector == 0,
                _ => nr > 0 && sector.saturating_mul(sector_size).saturating_add(len) <= disk_size,
            };
            if !plausible {
                break;
            }
            let data = if kind == EntryKind::Write { len } else { 0 };
            let end = at + sector_size + data;
            if end > log_len {
                // The data of the last request never reached the log.
                break;
            }
            entries.push(Entry {
                kind,
                fua: flags & FLAG_FUA != 0,
                offset: sector * sector_size,
                len,
                data_at: at + sector_size,
                end_in_log: end,
            });
            at = end;
        }
        Ok(WriteLog { sector_size, superblock_entries: u64_at(&sb, 16), entries })
    }

    pub fn flushes(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().enumerate().filter(|(_, e)| e.kind == EntryKind::Flush).map(|(i, _)| i)
    }

    /// How many entries had completed when the log file was `len` bytes
    /// long (log length sampled when a trigger fired).
    pub fn entries_within(&self, len: u64) -> usize {
        self.entries.partition_point(|e| e.end_in_log <= len)
    }

    /// Totals up to (not including) entry `n`: (writes, flushes, bytes written).
    pub fn counts(&self, n: usize) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for e in &self.entries[..n.min(self.entries.len())] {
            match e.kind {
                EntryKind::Write => {
                    c.0 += 1;
                    c.2 += e.len;
                }
                EntryKind::Flush => c.1 += 1,
                EntryKind::Discard => {}
            }
        }
        c
    }

    /// The entry index at which the `n`th flush (1-based) completed, the
    /// `n`th write, or the write that crossed `bytes` bytes written.
    pub fn position_after(&self, what: Count, n: u64) -> Option<usize> {
        let mut seen = 0u64;
        for (i, e) in self.entries.iter().enumerate() {
            let step = match (what, e.kind) {
                (Count::Flushes, EntryKind::Flush) | (Count::Writes, EntryKind::Write) => 1,
                (Count::Bytes, EntryKind::Write) => e.len,
                _ => 0,
            };
            seen += step;
            if step > 0 && seen >= n {
                return Some(i + 1);
            }
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Flushes,
    Writes,
    Bytes,
}

/// The volatile cache a flush-ignoring device (cheap SD/eMMC) loses from.
pub const FLUSH_IGNORED_CACHE: u64 = 8 << 20;

/// A piece of a logged write that survives: `len` bytes of log data at
/// `data_at` go to disk offset `offset`. Discards survive as zeroes
/// (`data_at == None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub len: u64,
    pub data_at: Option<u64>,
}

/// What the disk holds after a cut at entry `at` (entries `..at` had
/// completed), in apply order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashState {
    pub pieces: Vec<Piece>,
    /// Writes that completed before the cut but are lost.
    pub lost_writes: u64,
    pub lost_bytes: u64,
    /// Writes kept only partly (torn).
    pub torn_writes: u64,
    /// Index of the last completed flush before the cut, if any.
    pub last_flush: Option<usize>,
    /// Log entries `..durable_end` survive whole: they are
    /// `pieces[..extras_from]`, in log order. What follows in `pieces` is
    /// what the mode kept of the later entries (whole, torn or none).
    pub durable_end: usize,
    pub extras_from: usize,
}

/// splitmix64: small, seedable, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn piece(e: &Entry) -> Piece {
    Piece { offset: e.offset, len: e.len, data_at: (e.kind == EntryKind::Write).then_some(e.data_at) }
}

/// The crash state of a cut after `at` completed entries.
pub fn crash_state(log: &WriteLog, at: usize, mode: CutMode, seed: u64) -> CrashState {
    let done = &log.entries[..at.min(log.entries.len())];
    let last_flush = done.iter().rposition(|e| e.kind == EntryKind::Flush);
    let durable_end = match mode {
        CutMode::Kill => done.len(),
        CutMode::LoseUnflushed | CutMode::Torn => last_flush.map_or(0, |f| f + 1),
        CutMode::FlushIgnored => {
            // Everything older than the device's cache window is durable.
            let mut cached = 0u64;
            let mut start = done.len();
            while start > 0 && cached < FLUSH_IGNORED_CACHE {
                start -= 1;
                if done[start].kind == EntryKind::Write {
                    cached += done[start].len;
                }
            }
            start
        }
    };
    let data = |e: &&Entry| e.kind != EntryKind::Flush;
    let mut pieces: Vec<Piece> = done[..durable_end].iter().filter(data).map(piece).collect();
    let extras_from = pieces.len();
    let mut state = CrashState {
        pieces: Vec::new(),
        lost_writes: 0,
        lost_bytes: 0,
        torn_writes: 0,
        last_flush,
        durable_end,
        extras_from,
    };
    let mut rng = Rng::new(seed);
    for e in done[durable_end..].iter().filter(data) {
        let keep = match mode {
            CutMode::Kill => Keep::Whole,
            // FUA writes were durable when they completed.
            _ if e.fua => Keep::Whole,
            CutMode::LoseUnflushed => Keep::Nothing,
            CutMode::FlushIgnored => {
                if rng.below(2) == 0 {
                    Keep::Whole
                } else {
                    Keep::Nothing
                }
            }
            CutMode::Torn => match rng.below(3) {
                0 => Keep::Whole,
                1 => Keep::Nothing,
                _ => {
                    let sectors = e.len / log.sector_size;
                    if sectors > 1 { Keep::Sectors(1 + rng.below(sectors - 1)) } else { Keep::Nothing }
                }
            },
        };
        match keep {
            Keep::Whole => pieces.push(piece(e)),
            Keep::Nothing => {
                state.lost_writes += 1;
                state.lost_bytes += e.len;
            }
            Keep::Sectors(n) => {
                let len = n * log.sector_size;
                pieces.push(Piece { len, ..piece(e) });
                state.torn_writes += 1;
                state.lost_bytes += e.len - len;
            }
        }
    }
    state.pieces = pieces;
    state
}

enum Keep {
    Whole,
    Nothing,
    Sectors(u64),
}

/// `n` cut points spread evenly over the flushes in `from..to` (entry
/// indices) that have something to lose: each is the position just before
/// such a flush completes, so the plain writes since the previous flush
/// (there is at least one) are what a power cut there loses. Fewer when
/// there are fewer such flushes.
pub fn sweep_points(log: &WriteLog, from: usize, to: usize, n: usize) -> Vec<usize> {
    let mut flushes = Vec::new();
    let mut unflushed = false;
    for (i, e) in log.entries.iter().enumerate().take(to) {
        match e.kind {
            EntryKind::Flush => {
                if unflushed && i >= from {
                    flushes.push(i);
                }
                unflushed = false;
            }
            EntryKind::Write | EntryKind::Discard => unflushed |= !e.fua,
        }
    }
    if n == 0 || flushes.is_empty() {
        return Vec::new();
    }
    let n = n.min(flushes.len());
    let mut out: Vec<usize> = (0..n)
        .map(|k| {
            // Centre of the k-th of n equal slices.
            let i = (2 * k + 1) * flushes.len() / (2 * n);
            flushes[i.min(flushes.len() - 1)]
        })
        .collect();
    out.dedup();
    out
}

/// A log in the format QEMU's blklogwrites writes (512-byte sectors):
/// one request per `(kind, fua, sector, sectors, fill byte)`, writes
/// carrying `sectors` × 512 bytes of `fill`; the superblock says
/// `stale_count` entries (QEMU updates it lazily). For tests and fake
/// machines: what a recorded boot would have left.
pub fn encode_log(reqs: &[(EntryKind, bool, u64, u64, u8)], stale_count: u64) -> Vec<u8> {
    let ss = 512usize;
    let mut v = vec![0u8; ss];
    v[..8].copy_from_slice(&MAGIC.to_le_bytes());
    v[8..16].copy_from_slice(&1u64.to_le_bytes());
    v[16..24].copy_from_slice(&stale_count.to_le_bytes());
    v[24..28].copy_from_slice(&512u32.to_le_bytes());
    for &(kind, fua, sector, n, fill) in reqs {
        let mut h = vec![0u8; ss];
        let flags = match kind {
            EntryKind::Write => 0,
            EntryKind::Flush => FLAG_FLUSH,
            EntryKind::Discard => FLAG_DISCARD,
        } | if fua { FLAG_FUA } else { 0 };
        h[..8].copy_from_slice(&sector.to_le_bytes());
        h[8..16].copy_from_slice(&n.to_le_bytes());
        h[16..24].copy_from_slice(&flags.to_le_bytes());
        v.extend(h);
        if kind == EntryKind::Write {
            v.extend(std::iter::repeat_n(fill, n as usize * ss));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    use EntryKind::{Flush as F, Write as W};

    fn sample() -> WriteLog {
        let raw = encode_log(
            &[
                (W, false, 0, 2, 1),
                (W, false, 8, 1, 2),
                (F, false, 0, 0, 0),
                (W, false, 16, 4, 3),
                (W, true, 32, 1, 4),
                (W, false, 40, 2, 5),
                (F, false, 0, 0, 0),
                (W, false, 48, 3, 6),
                (W, false, 56, 1, 7),
            ],
            3,
        );
        WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap()
    }

    #[test]
    fn parses_past_the_stale_superblock_count() {
        let l = sample();
        assert_eq!(l.superblock_entries, 3);
        assert_eq!(l.entries.len(), 9);
        assert_eq!(l.entries[3].offset, 16 * 512);
        assert_eq!(l.entries[3].len, 4 * 512);
        assert!(l.entries[4].fua);
        assert_eq!(l.flushes().collect::<Vec<_>>(), vec![2, 6]);
        assert_eq!(l.counts(9), (7, 2, 14 * 512));
        // Data lands right after each header.
        let raw = encode_log(&[(W, false, 5, 1, 9)], 0);
        let l1 = WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap();
        assert_eq!(raw[l1.entries[0].data_at as usize], 9);
    }

    #[test]
    fn stops_at_zeroes_garbage_short_data_and_out_of_disk_writes() {
        let mut raw = encode_log(&[(W, false, 0, 1, 1), (F, false, 0, 0, 0)], 0);
        let good = raw.len();
        raw.extend(vec![0u8; 4096]);
        assert_eq!(WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap().entries.len(), 2);
        raw.truncate(good);
        raw.extend(vec![0xffu8; 512]);
        assert_eq!(WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap().entries.len(), 2);
        // A header whose data never made it.
        let mut cut = encode_log(&[(W, false, 0, 1, 1), (W, false, 8, 4, 2)], 0);
        cut.truncate(cut.len() - 512);
        assert_eq!(WriteLog::parse(&cut, cut.len() as u64, 1 << 20).unwrap().entries.len(), 1);
        // A write beyond the disk.
        let far = encode_log(&[(W, false, 4096, 1, 1)], 0);
        assert_eq!(WriteLog::parse(&far, far.len() as u64, 4096 * 512).unwrap().entries.len(), 0);
        // Not a log at all.
        assert!(WriteLog::parse(&vec![0u8; 1024], 1024, 1 << 20).is_err());
    }

    #[test]
    fn kill_keeps_everything_lose_unflushed_keeps_up_to_the_last_flush_and_fua() {
        let l = sample();
        let k = crash_state(&l, 9, CutMode::Kill, 0);
        assert_eq!(k.pieces.len(), 7);
        assert_eq!(k.lost_writes, 0);
        let u = crash_state(&l, 9, CutMode::LoseUnflushed, 0);
        assert_eq!(u.last_flush, Some(6));
        assert_eq!(u.pieces.iter().map(|p| p.offset / 512).collect::<Vec<_>>(), vec![0, 8, 16, 32, 40]);
        assert_eq!((u.lost_writes, u.lost_bytes), (2, 4 * 512));
        // Cut between the flushes: the FUA write survives, the others not.
        let mid = crash_state(&l, 6, CutMode::LoseUnflushed, 0);
        assert_eq!(mid.pieces.iter().map(|p| p.offset / 512).collect::<Vec<_>>(), vec![0, 8, 32]);
        assert_eq!(mid.lost_writes, 2);
        // Before any flush: nothing survives.
        assert!(crash_state(&l, 2, CutMode::LoseUnflushed, 0).pieces.is_empty());
        // The durable prefix: entries up to the last flush, as the first pieces.
        assert_eq!((mid.durable_end, mid.extras_from), (3, 2));
        assert_eq!((u.durable_end, u.extras_from), (7, 5));
        assert_eq!((k.durable_end, k.extras_from), (9, 7));
    }

    #[test]
    fn torn_and_flush_ignored_are_seeded_and_stay_within_what_was_written() {
        let l = sample();
        for mode in [CutMode::Torn, CutMode::FlushIgnored] {
            let a = crash_state(&l, 9, mode, 42);
            assert_eq!(a, crash_state(&l, 9, mode, 42), "{mode:?} is not reproducible from its seed");
            let kill = crash_state(&l, 9, CutMode::Kill, 0);
            for p in &a.pieces {
                let whole = kill.pieces.iter().find(|k| k.offset == p.offset).expect("a piece that was never written");
                assert!(p.len <= whole.len && p.len % 512 == 0 && p.len > 0);
            }
        }
        // Over many seeds torn keeps, drops and tears.
        let big: Vec<_> = (0..40).map(|i| (W, false, i * 8, 4, 1u8)).collect();
        let raw = encode_log(&big, 0);
        let l = WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap();
        let (mut kept, mut torn, mut lost) = (0, 0, 0);
        for seed in 0..10 {
            let s = crash_state(&l, 40, CutMode::Torn, seed);
            torn += s.torn_writes;
            lost += s.lost_writes;
            kept += s.pieces.iter().filter(|p| p.len == 4 * 512).count();
            // Every written byte is either kept or counted lost.
            let kept_bytes: u64 = s.pieces.iter().map(|p| p.len).sum();
            assert_eq!(kept_bytes + s.lost_bytes, 40 * 4 * 512, "seed {seed}");
        }
        assert!(kept > 0 && torn > 0 && lost > 0, "kept {kept} torn {torn} lost {lost}");
        assert_ne!(crash_state(&l, 40, CutMode::Torn, 1), crash_state(&l, 40, CutMode::Torn, 2));
        // flush-ignored may lose writes that a flush had covered.
        let mut reqs: Vec<_> = (0..10).map(|i| (W, false, i * 8, 1, 1u8)).collect();
        reqs.push((F, false, 0, 0, 0));
        let raw = encode_log(&reqs, 0);
        let l = WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap();
        assert!((0..20).any(|s| crash_state(&l, 11, CutMode::FlushIgnored, s).lost_writes > 0));
        assert_eq!(crash_state(&l, 11, CutMode::LoseUnflushed, 0).lost_writes, 0);
    }

    #[test]
    fn positions_and_sweeps() {
        let l = sample();
        assert_eq!(l.position_after(Count::Flushes, 1), Some(3));
        assert_eq!(l.position_after(Count::Flushes, 2), Some(7));
        assert_eq!(l.position_after(Count::Flushes, 3), None);
        assert_eq!(l.position_after(Count::Writes, 3), Some(4));
        assert_eq!(l.position_after(Count::Bytes, 3 * 512 + 1), Some(4));
        assert_eq!(l.entries_within(l.entries[3].end_in_log), 4);
        assert_eq!(l.entries_within(l.entries[3].end_in_log - 1), 3);
        assert_eq!(sweep_points(&l, 0, 9, 8), vec![2, 6]);
        assert_eq!(sweep_points(&l, 3, 9, 8), vec![6]);
        assert!(sweep_points(&l, 7, 9, 8).is_empty());
        // A flush with only a FUA write (or nothing) before it has nothing to lose.
        let raw = encode_log(
            &[(W, false, 0, 1, 1), (F, false, 0, 0, 0), (W, true, 8, 1, 2), (F, false, 0, 0, 0), (F, false, 0, 0, 0)],
            0,
        );
        let l2 = WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap();
        assert_eq!(sweep_points(&l2, 0, 5, 8), vec![1]);
        for p in sweep_points(&l, 0, 9, 8) {
            assert!(crash_state(&l, p, CutMode::LoseUnflushed, 0).lost_writes > 0);
        }
        let many: Vec<_> = (0..100).flat_map(|i| [(W, false, i, 1, 1u8), (F, false, 0, 0, 0)]).collect();
        let raw = encode_log(&many, 0);
        let l = WriteLog::parse(&raw, raw.len() as u64, 1 << 20).unwrap();
        let p = sweep_points(&l, 0, 200, 8);
        assert_eq!(p.len(), 8);
        assert!(p.windows(2).all(|w| w[0] < w[1]));
        assert!(p.iter().all(|&i| l.entries[i].kind == F));
        assert!(p[0] > 0 && p[7] < 199, "{p:?}");
        assert_eq!(CutMode::parse("torn"), Some(CutMode::Torn));
        assert_eq!(CutMode::parse("tron"), None);
    }
}

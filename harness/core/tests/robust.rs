//! Property tests over every parser of untrusted bytes in core (stable,
//! run in CI): a guest's console, status blocks, scenario files and
//! compose's error lines. The disk readers (MBR/GPT, ext4, FAT, qcow2),
//! ELF/PE kernels and the write log are driven through their fuzz
//! targets in harness/fuzz/tests/properties.rs. Random input, and random input behind a
//! valid magic so the readers get past their first check: no panic, no
//! hang, and where there is an invariant (a line split anywhere reads
//! the same; no escape character survives cleaning), it holds.

use airboot_core::console::{self, LineSplitter, TimedLine};
use airboot_core::status::Assembler;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn console_lines_split_anywhere_read_the_same(data in bytes(4096), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let max = 256;
        let mut whole = Vec::new();
        let mut s = LineSplitter::new(max);
        s.push(&data, &mut whole);
        let last = s.finish();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort();
        let mut pieces = Vec::new();
        let mut s2 = LineSplitter::new(max);
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            s2.push(&data[at..c], &mut pieces);
            prop_assert!(s2.pending() <= max, "the splitter holds {} bytes, over its {max}", s2.pending());
            at = c;
        }
        let last2 = s2.finish();
        prop_assert_eq!(whole.len(), pieces.len());
        for (a, b) in whole.iter().zip(&pieces) {
            prop_assert_eq!(&a.bytes, &b.bytes);
            prop_assert!(a.bytes.len() <= max);
        }
        prop_assert_eq!(last.map(|l| l.bytes), last2.map(|l| l.bytes));
    }

    #[test]
    fn cleaned_lines_carry_no_escape_or_control_characters(data in bytes(512)) {
        let s = console::clean_line(&data);
        prop_assert!(!s.chars().any(|c| c == '\u{1b}' || (c.is_control() && c != '\t')), "{s:?}");
    }

    #[test]
    fn console_log_lines_round_trip(t in 0.0f64..100_000.0, text in "[^\n\r]{0,80}", truncated in any::<bool>()) {
        let text = console::clean_line(text.as_bytes());
        let l = TimedLine { t: (t * 1000.0).round() / 1000.0, text, truncated };
        let back = console::parse_log_line(console::format_log_line(&l).trim_end_matches('\n'));
        prop_assert!(back.is_some());
        let back = back.unwrap();
        prop_assert_eq!(&back.text, &l.text);
        prop_assert!((back.t - l.t).abs() < 0.001, "{} vs {}", back.t, l.t);
    }

    #[test]
    fn status_lines_never_panic(lines in proptest::collection::vec(
        prop_oneof![
            "[ -~]{0,120}",
            "AIRBOOT-STATUS v1 (begin|end|engine|image|container|unit|error) [ -~]{0,100}",
            "AIRBOOT-STATUS v[0-9] begin \\{\"seq\":[0-9]{1,3}[ -~]{0,40}",
        ],
        0..24,
    )) {
        let mut a = Assembler::new();
        for (i, l) in lines.iter().enumerate() {
            let _ = a.push(i as f64, l);
        }
    }

    #[test]
    fn scenario_text_never_panics(src in "(\\[[a-z_.]{1,12}\\]\n|[a-z_]{1,14} = (\"[ -~]{0,20}\"|[0-9]{1,4}|true|\\[\\]|\\{ \\})\n){0,20}") {
        let _ = airboot_core::scenario::parse(&src, std::path::Path::new("scenarios/fuzz.toml"), &|_| true);
    }

    #[test]
    fn compose_lines_never_panic(line in "(ERROR: for |Container |is unhealthy|dependency failed|\"|[ -~]){0,40}") {
        let _ = airboot_core::compose::dependency_failure(&line);
    }
}

//! Property tests (stable, run in CI) that drive the fuzz targets with
//! random input behind a valid magic, so the readers get past their first
//! checks: the disk readers (MBR/GPT, ext4, FAT and the boot evidence
//! read from them; qcow2), ELF/PE headers and the write log. No panic, no
//! hang.

use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// Random bytes of `len`, with `patches` (offset, bytes) written over them.
fn planted(len: usize, patches: Vec<(usize, Vec<u8>)>) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len).prop_map(move |mut v| {
        for (at, p) in &patches {
            v[*at..*at + p.len()].copy_from_slice(p);
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_disks_read_without_panic(data in bytes(1 << 16)) {
        airboot_fuzz::run("disk", &data);
    }

    #[test]
    fn an_ext4_superblock_with_random_fields_reads_without_panic(
        // The magic at 1024+56; everything else random, including the
        // block size, group counts and the inode table's place (one
        // variant keeps 1 KiB blocks, 8192 per group and 256-byte inodes,
        // so the reader goes on to the group descriptors and inodes).
        data in prop_oneof![
            planted(64 << 10, vec![(1024 + 56, vec![0x53, 0xef])]),
            planted(64 << 10, vec![
                (1024 + 56, vec![0x53, 0xef]),
                (1024 + 24, vec![0, 0, 0, 0]),
                (1024 + 32, vec![0, 0x20, 0, 0]),
                (1024 + 40, vec![16, 0, 0, 0]),
                (1024 + 76, vec![1, 0, 0, 0]),
                (1024 + 88, vec![0, 1]),
            ]),
        ],
    ) {
        airboot_fuzz::run("disk", &data);
    }

    #[test]
    fn a_gpt_with_random_entries_reads_without_panic(
        data in planted(64 << 10, vec![(510, vec![0x55, 0xaa]), (450, vec![0xee]), (512, b"EFI PART".to_vec())]),
    ) {
        airboot_fuzz::run("disk", &data);
    }

    #[test]
    fn a_fat_boot_sector_with_random_fields_reads_without_panic(
        data in planted(64 << 10, vec![(510, vec![0x55, 0xaa]), (11, vec![0x00, 0x02]), (82, b"FAT32   ".to_vec())]),
    ) {
        airboot_fuzz::run("disk", &data);
    }

    #[test]
    fn qcow2_headers_with_random_fields_read_without_panic(
        data in planted(64 << 10, vec![(0, b"QFI\xfb".to_vec()), (4, vec![0, 0, 0, 3]), (8, vec![0; 8]), (20, vec![0, 0, 0, 16])]),
        offsets in proptest::collection::vec(any::<u64>(), 0..8),
    ) {
        // The target reads at offsets taken from the input's last bytes.
        let mut input = data;
        for off in offsets {
            input.extend_from_slice(&off.to_le_bytes());
        }
        airboot_fuzz::run("qcow2", &input);
    }

    #[test]
    fn executables_with_random_headers_never_panic(
        elf in planted(4096, vec![(0, b"\x7fELF".to_vec())]),
        pe in planted(4096, vec![(0, b"MZ".to_vec()), (0x3c, vec![0x80, 0, 0, 0]), (0x80, b"PE\0\0".to_vec())]),
        any_bytes in bytes(4096),
    ) {
        for b in [&elf, &pe, &any_bytes] {
            airboot_fuzz::run("exe", b);
        }
    }

    #[test]
    fn write_logs_with_random_entries_parse_without_panic(
        data in planted(64 << 10, vec![(0, airboot_core::cut::writelog::MAGIC.to_le_bytes().to_vec()), (8, vec![1, 0, 0, 0, 0, 0, 0, 0]), (24, vec![0, 2, 0, 0])]),
        disk_size in 0u64..(1 << 40),
    ) {
        let mut input = disk_size.to_le_bytes().to_vec();
        input.extend_from_slice(&data);
        airboot_fuzz::run("writelog", &input);
    }
}

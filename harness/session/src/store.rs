//! The container store read offline from a disk (what a boot or a power
//! cut left): a copy of its root filesystem has its journal replayed and
//! is checked by e2fsck, then the engine's store check reads it.

use std::path::Path;

use airboot_core::cut::FsFindings;
use airboot_core::disk::ext4::Ext4;
use airboot_core::report::OfflineStore;
use airboot_model::Engine;
use airboot_qemu::crash;

/// Check the store on `disk` (any format, with its backing chain), whose
/// root filesystem is bytes `root.0..root.0+root.1`; the copy is made in
/// `work` as `<name>-root.raw` and removed afterwards.
pub fn check_offline(
    disk: &Path,
    root: (u64, u64),
    engine: Engine,
    expected: &[String],
    work: &Path,
    name: &str,
) -> Result<OfflineStore, String> {
    with_fs_copy(disk, root, work, name, "the root filesystem", |ext4, fs| {
        let check = airboot_core::engine::model(engine)
            .check_store(ext4, expected)
            .map_err(|e| format!("reading the store: {e}"))?;
        Ok(OfflineStore { fs, check })
    })
}

/// Copy the ext4 filesystem at bytes `at.0..at.0+at.1` of `disk` to
/// `<work>/<name>-root.raw`, replay its journal and check it there (the
/// disk is never touched), and hand it to `read` with e2fsck's findings;
/// the copy is removed afterwards. `what` names the filesystem in errors.
pub fn with_fs_copy<T>(
    disk: &Path,
    at: (u64, u64),
    work: &Path,
    name: &str,
    what: &str,
    read: impl FnOnce(&Ext4, FsFindings) -> Result<T, String>,
) -> Result<T, String> {
    let copy = crash::root_copy(work, name);
    let result = (|| {
        crash::extract(disk, at.0, at.1, &copy).map_err(|e| e.to_string())?;
        let fs = crash::fsck(&copy).map_err(|e| e.to_string())?;
        let f = std::fs::File::open(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
        let ext4 = Ext4::open(&f).map_err(|e| format!("{what} does not open: {e}"))?;
        read(&ext4, fs)
    })();
    let _ = std::fs::remove_file(&copy);
    result
}

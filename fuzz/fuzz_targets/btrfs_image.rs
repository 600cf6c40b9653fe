//! The btrfs reader on mutated images: `Image::open` and the full walk of
//! every subvolume (listing lines, JSON, xattrs, symlink targets, look-ups
//! by path) must return `Ok` or an error, never panic.
//!
//! The input is a sparse image (see `btrfs/tests/common/sparse_image.rs`,
//! shared with the deterministic mutations of `cargo test -p
//! rootbox-btrfs`): the superblock and tree blocks of a real image with
//! the zeros left out, checksums recomputed after mutation when the first
//! byte says so. Seeds: `fuzz/corpus/btrfs_image/`, made by that test
//! with `ROOTBOX_WRITE_FUZZ_SEEDS`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../btrfs/tests/common/sparse_image.rs"]
mod sparse_image;

/// One scratch file per fuzzing process, rewritten for every input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("rootbox-fuzz-btrfs-{}.img", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    sparse_image::write(data, path).expect("writing the scratch image");
    let _ = sparse_image::exercise(path);
});

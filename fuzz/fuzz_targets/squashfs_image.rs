//! The squashfs reader on mutated images: `squashfs::read_bytes` must
//! return `Ok` or an error, never panic.
//!
//! Seeds: `fuzz/corpus/squashfs_image/`, real mksquashfs images written
//! by `ROOTBOX_WRITE_FUZZ_SEEDS=fuzz/corpus/squashfs_image cargo test -p
//! rootbox-fsimage --test squashfs` (whose deterministic mutation loop
//! CI runs without cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rootbox_fsimage::squashfs;

fuzz_target!(|data: &[u8]| {
    let _ = squashfs::read_bytes(data);
});

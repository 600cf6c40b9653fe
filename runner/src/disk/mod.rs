//! `rootbox disk`: a partitioned disk image (GPT or MBR) from a disk spec:
//! raw blobs at fixed offsets, and partitions holding raw bytes or a
//! filesystem built from a tree (a rootbox build of btrfs, ext4, erofs or
//! squashfs; vfat from a directory).
//!
//! [`make()`] (`make.rs`) reads on a screen; its phases, each in its own
//! file:
//! 1. `inputs.rs`: read the spec's inputs — raw files and blobs opened,
//!    FAT trees checked against FAT's limits, the output checked;
//! 2. `contents.rs`: each partition's content made — builds through the
//!    build pipeline (`build.rs`), vfat with `crate::fs::vfat` — and the
//!    one model of what a content is (raw bytes, or a filesystem of a
//!    kind that knows its reader); then `verity.rs`: the dm-verity hash
//!    trees of read-only filesystems (`veritysetup format`), whose root
//!    hashes give the pair's GUIDs;
//! 3. `place.rs`: partitions and blobs placed by
//!    [`rootbox_images::disk::DiskSpec::plan`];
//! 4. `assemble.rs`: the largest build's own file made the disk where the
//!    output's filesystem can insert room before it (ext4, XFS), else an
//!    unnamed file beside the output; every other content spliced in
//!    (`splice.rs`: data ranges only, so the disk stays sparse), the table
//!    written;
//! 5. [`readback`]: the table and every partition read back, each
//!    filesystem with its own reader;
//! 6. `publish.rs`: the optional `.bmap` and zstd copy, the disk linked
//!    (or moved from the scratch directory) into place — before that,
//!    nothing is at the output path;
//! 7. [`report`]: the JSON report and its text summary.
//!
//! With `--definitions --split`, `split.rs` copies each partition out of
//! the published disk (systemd-repart's split artifacts).
//!
//! `rootbox disk`'s flags are `cli.rs` ([`DiskArgs`]); `--example` is
//! [`example`]; `rootbox inspect DISK` is [`inspect`].

mod assemble;
mod build;
mod cli;
mod contents;
pub mod example;
mod inputs;
pub mod inspect;
mod make;
mod options;
mod place;
mod publish;
pub mod readback;
pub mod report;
mod splice;
mod split;
mod verity;

pub use cli::{main, DiskArgs};
pub use make::make;
pub use options::{Compression, Options, Reproducible};
pub use report::Report;

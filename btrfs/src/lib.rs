//! The btrfs on-disk format, in pure Rust: a verified reader, an in-place
//! inode rewriter and a reproducibility pass.
//!
//! The reader opens an image file the way the kernel would mount it, without
//! root and without mounting: the superblock, the chunk tree (logical →
//! physical mapping for the SINGLE, DUP and RAID1-style profiles of one
//! device), the root tree, and every subvolume's tree. Each tree block is
//! verified (checksum, address, fsid, level, generation, first key, item
//! bounds and key order) before it is used, so a corrupted image gives an
//! error, never a wrong listing or a panic. It reads inodes (owner, mode,
//! times, size, flags), directory entries, xattrs (POSIX ACLs and file
//! capabilities included), symlink targets, subvolumes and the default
//! subvolume. File contents are not read. Metadata is never compressed, so
//! `--compress` images read the same.
//!
//! Listing who owns what in an image, without root; a file that holds no
//! btrfs is refused with a typed error, not a wrong listing (this example
//! runs as a doc-test: it lists nothing, since it has no image to read, and
//! checks the refusal):
//!
//! ```
//! use std::path::Path;
//! use rootbox_btrfs::{Image, ReadError};
//!
//! /// Prints the owner of every path of the default subvolume.
//! fn owners(image: &Path) -> Result<(), ReadError> {
//!     let image = Image::open(image)?;
//!     let tree = image.default_subvolume()?;
//!     image.walk(tree, &mut |e| {
//!         println!("{}:{} /{}", e.uid, e.gid, String::from_utf8_lossy(&e.path));
//!         Ok(())
//!     })
//! }
//!
//! let zeros = tempfile::NamedTempFile::new()?;
//! zeros.as_file().set_len(1 << 20)?;
//! assert!(matches!(owners(zeros.path()), Err(ReadError::NotBtrfs)));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The [`Rewriter`] changes inodes in place (owner, mode, rdev, times),
//! turns the placeholders of a build without a user namespace into what
//! they stand for (a FIFO into a device node, with its directory entries'
//! type: [`InodeChange::file_type`]; an xattr renamed in place:
//! [`InodeChange::rename_xattr`]) and, for reproducible images, derives
//! the random UUIDs mkfs.btrfs picks from a seed and zeroes freed blocks:
//! each changed tree block gets its checksum recomputed and is written to
//! every copy, then read back and compared.
//!
//! Layout of the crate, bottom up:
//! - `layout`: every on-disk structure, once, as a `zerocopy` struct that
//!   both the reader and the rewriter use;
//! - [`format`](mod@format): on-disk constants, keys, a bounds-checked
//!   byte reader that views bytes as `layout` structs;
//! - `superblock`, `chunk`: bootstrap and address mapping;
//! - `tree`: verified tree blocks, a block cache, key-range search;
//! - `items`: item payloads as the reader keeps them;
//! - `image`, `subvol`, `walk`: the reading API;
//! - [`rewrite`]: the in-place rewrite, the [`Rewriter`] in `rewrite/mod.rs`
//!   and what it changes in its child modules (`inodes`, `placeholders`,
//!   `times`, `reproducible`);
//! - [`listing`]: text and JSON presentation for `rootbox inspect`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod chunk;
mod error;
pub mod format;
mod image;
mod items;
mod layout;
pub mod listing;
pub mod rewrite;
mod subvol;
mod superblock;
mod tree;
mod walk;

pub use error::ReadError;
pub use image::{FsInfo, Image, TreeBlock};
pub use items::Timespec;
pub use rewrite::{
    derived_uuid, encode_rdev, InodeChange, InodeTimes, InodeView, ReproducibleStats, RewriteError,
    RewriteStats, Rewriter, ZeroStats,
};
pub use subvol::Subvolume;
pub use superblock::ChecksumType;
pub use tree::TreeRoot;
pub use walk::{Entry, FileKind};

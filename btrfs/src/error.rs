//! The error type of the btrfs reader.

use std::io;
use std::path::PathBuf;

/// Why an image could not be read.
///
/// Every malformed structure is reported as one of these; the reader does
/// not panic on bad input and does not skip what it cannot verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Reading the image file failed (including a file shorter than a
    /// structure it must contain).
    #[error("reading {} at byte {offset}: {source}", path.display())]
    Io {
        /// The image file.
        path: PathBuf,
        /// Byte offset of the failed read in the file.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file has no btrfs superblock at 64 KiB.
    #[error("not a btrfs filesystem (no superblock magic at offset 64 KiB)")]
    NotBtrfs,
    /// The primary superblock's checksum does not match its contents.
    #[error("superblock checksum mismatch")]
    BadSuperblockChecksum,
    /// The filesystem uses a checksum algorithm this reader does not implement.
    #[error("unsupported checksum algorithm {0} (this reader implements crc32c only)")]
    UnsupportedChecksum(String),
    /// A tree block's checksum does not match its contents, on every copy.
    #[error("tree block at logical {logical} (physical {physical}): checksum mismatch")]
    BadBlockChecksum {
        /// Logical address of the block.
        logical: u64,
        /// Physical offset in the image of the (first) copy that was read.
        physical: u64,
    },
    /// A tree block's checksum is right but its header contradicts where it
    /// was found (bytenr, fsid, level, generation) or its contents are
    /// inconsistent (item bounds, key order).
    #[error("tree block at logical {logical}: {reason}")]
    BadBlock {
        /// Logical address of the block.
        logical: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// No chunk maps this logical address.
    #[error("logical address {0} is not mapped by any chunk")]
    UnmappedLogical(u64),
    /// The filesystem uses a feature this reader does not handle (several
    /// devices, striped profiles, compressed inline symlinks, ...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// There is no subvolume (or tree) with this id.
    #[error("no subvolume with id {0}")]
    NoSuchSubvolume(u64),
    /// A path given to the reader does not exist in the subvolume.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// An item's contents are malformed or contradict other items.
    #[error("corrupt filesystem: {0}")]
    Corrupt(String),
}

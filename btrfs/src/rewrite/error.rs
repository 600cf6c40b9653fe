//! [`RewriteError`]: why a rewrite could not be done.

use std::io;
use std::path::PathBuf;

use crate::error::ReadError;

/// Why a rewrite could not be done. Nothing has been written when any of
/// these is returned before [`Rewriter::commit`](super::Rewriter::commit).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// Reading or verifying the image failed (a corrupted block gives
    /// [`ReadError::BadBlockChecksum`] or [`ReadError::BadBlock`]).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The image file could not be opened for writing.
    #[error("opening {} for writing: {source}", path.display())]
    Open {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing (or syncing) the image file failed; the image may be
    /// partly rewritten.
    #[error("writing {} at byte {offset}: {source}", path.display())]
    Write {
        /// The image file.
        path: PathBuf,
        /// Byte offset of the failed write.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Only crc32c checksums are recomputed.
    #[error("cannot rewrite a filesystem with {0} checksums (only crc32c)")]
    UnsupportedChecksum(String),
    /// The image is in a state this rewriter does not handle (log tree
    /// present, leaves shared with a snapshot, ...).
    #[error("cannot rewrite: {0}")]
    Unsupported(String),
    /// Two physical copies of a block differ although one verifies.
    #[error("tree block at logical {logical}: copy at physical {physical} differs from the verified copy")]
    CopiesDiffer {
        /// Logical address of the block.
        logical: u64,
        /// Physical offset of the differing copy.
        physical: u64,
    },
    /// The UUID tree is more than one leaf: re-keying its items for new
    /// subvolume UUIDs would need a B-tree rebuild.
    #[error("the UUID tree has {levels} levels (a single leaf is required to re-key it)")]
    UuidTreeTooLarge {
        /// Levels of the UUID tree (1: a single leaf).
        levels: u8,
    },
    /// The callback asked for a change that is not allowed.
    #[error("inode {ino} of tree {tree}: {reason}")]
    InvalidChange {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// What is wrong.
        reason: String,
    },
    /// A `file_type` change asked of an inode that is not a placeholder
    /// for a device node: only a FIFO or an empty regular file without
    /// extents may become a character or block device.
    #[error(
        "{path} (inode {ino} of tree {tree}, mode {mode:o}{}) cannot become a device node: \
         only a FIFO or an empty regular file without extents can",
        if *has_data { ", with data" } else { "" }
    )]
    NotAPlaceholder {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// A path of the inode in its subvolume (`/` first).
        path: String,
        /// Its full `st_mode`.
        mode: u32,
        /// Whether it has a size, bytes or extents.
        has_data: bool,
    },
    /// An xattr rename to a name of another length.
    #[error(
        "{path} (inode {ino} of tree {tree}): cannot rename xattr {from:?} to {to:?} in place: \
         the names differ in length"
    )]
    XattrNameLength {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// A path of the inode in its subvolume (`/` first).
        path: String,
        /// The name asked to be renamed.
        from: String,
        /// The new name.
        to: String,
    },
    /// An xattr rename of an xattr the inode does not have.
    #[error("{path} (inode {ino} of tree {tree}) has no xattr {name:?} to rename")]
    XattrMissing {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// A path of the inode in its subvolume (`/` first).
        path: String,
        /// The missing name.
        name: String,
    },
    /// The xattr to rename shares its item (its name hash) with another
    /// xattr of the inode; renaming it would split the item.
    #[error(
        "{path} (inode {ino} of tree {tree}): xattr {name:?} shares its name hash with \
         another xattr of the file; renaming it in place is not supported"
    )]
    XattrPacked {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// A path of the inode in its subvolume (`/` first).
        path: String,
        /// The xattr asked to be renamed.
        name: String,
    },
    /// The new xattr name hashes like an xattr the inode already has (or
    /// is that xattr).
    #[error(
        "{path} (inode {ino} of tree {tree}): cannot rename an xattr to {to:?}: \
         its name hash is that of the file's xattr {other:?}"
    )]
    XattrCollision {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// A path of the inode in its subvolume (`/` first).
        path: String,
        /// The new name.
        to: String,
        /// The xattr already holding that hash.
        other: String,
    },
    /// The renamed xattr item would sort into another leaf than the one
    /// holding it (an inode with many xattrs across a leaf boundary).
    #[error(
        "{path} (inode {ino} of tree {tree}): the xattr renamed to {to:?} would move to \
         another tree leaf; that is not supported in place"
    )]
    XattrCrossesLeaf {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// A path of the inode in its subvolume (`/` first).
        path: String,
        /// The new name.
        to: String,
    },
}

impl RewriteError {
    /// Whether this is a checksum mismatch of a tree block.
    pub fn is_checksum_error(&self) -> bool {
        matches!(self, RewriteError::Read(ReadError::BadBlockChecksum { .. }))
    }
}

//! Readers for the filesystem images rootbox makes besides btrfs, and
//! the erofs inode writer.
//!
//! Every reader returns the same [`Entry`] per path, so the runner checks
//! an image against its staged tree the same way whatever made it. Names
//! are bytes, as on Linux: an [`Entry`]'s path holds every byte but NUL,
//! `/` separating the components.
//!
//! - [`erofs`]: rootbox's own reader of the erofs format (superblock,
//!   inodes, directories, xattrs) and the writer that sets owners and
//!   modes in the inodes, turns a staged FIFO into a device node and a
//!   `user.` xattr into a `security.` one, and orders the xattrs
//!   ([`erofs::apply`]).
//! - [`ext4`]: rootbox's own reader of what `mkfs.ext4 -d` writes.
//! - [`squashfs`]: rootbox's own reader of squashfs 4.0 (inodes,
//!   directories, the id and xattr tables).
//!
//! Each on-disk structure is described once, as a `zerocopy` struct
//! whose size is asserted at compile time (`erofs/layout.rs`,
//! `ext4/layout.rs`, `squashfs/layout.rs`).
//!
//! Reading an image needs no privileges and runs no tool; a file that is
//! not an image of that format is a typed error, not a panic:
//!
//! ```
//! use rootbox_fsimage::{erofs, squashfs, Error};
//!
//! let zeros = vec![0u8; 8192];
//! assert!(matches!(erofs::read_bytes(&zeros), Err(Error::NotErofs)));
//! assert!(matches!(squashfs::read_bytes(&zeros), Err(Error::NotSquashfs)));
//! // A real image: `for e in erofs::read(path)? { e.path(), e.uid, e.mode, … }`.
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod entry;
pub mod erofs;
mod error;
pub mod ext4;
mod source;
pub mod squashfs;

pub use entry::{Entry, Xattrs, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
pub use error::{DirFault, Error};

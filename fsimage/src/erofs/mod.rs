//! erofs: rootbox's own reader of the format, and the writer that sets
//! owners and modes in the inodes and turns staged placeholders into
//! device nodes and `security.` xattrs ([`Patch`]).
//!
//! What the reader reads, as erofs-utils writes it (the kernel's
//! `fs/erofs/erofs_fs.h`, described once in `layout.rs`): the superblock
//! at byte 1024, its CRC32C checked when the image carries one; compact
//! (32-byte, 16-bit ids) and extended (64-byte) inodes at
//! `meta_blkaddr * block + nid * 32`; directories and symlinks stored
//! plain or with an inline tail (mkfs.erofs compresses regular files
//! only, `-z` included, so their data is never read: an [`Entry`]'s size
//! is the inode's); the xattr area after an inode (shared ids into the
//! shared xattr area, then inline entries, names by prefix index).
//! Images using long xattr name prefixes, fragments or extra devices
//! (erofs-utils 1.6 and later, with options rootbox does not pass) are
//! refused with [`Error::Features`].
//!
//! The reader sees everything an [`Entry`] holds; the inode number is the
//! nid, which hard links share.

mod filter;
mod image;
mod layout;
mod patch;
mod staged;

use std::fs::File;
use std::path::Path;

use crate::entry::{decode_dev, S_IFBLK, S_IFCHR, S_IFLNK, S_IFMT};
use crate::source::{Source, Window};
use crate::{Entry, Error};
use image::Image;

pub use patch::{apply, At, Patch, XattrOrder};
pub use staged::{Device, DeviceKind};

/// Every path of the erofs image at `image`, the root (`/`) first and
/// parents before children.
pub fn read(image: &Path) -> Result<Vec<Entry>, Error> {
    let (file, len) = crate::source::open(image)?;
    read_at(&file, 0, len)
}

/// [`read`] of an erofs filesystem that lies in `file` from byte `offset`
/// on, `len` bytes long (a partition of a disk image): nothing outside
/// those bytes is read.
pub fn read_at(file: &File, offset: u64, len: u64) -> Result<Vec<Entry>, Error> {
    entries(&Window { file, offset, len })
}

/// [`read`] of an image held in memory.
pub fn read_bytes(image: &[u8]) -> Result<Vec<Entry>, Error> {
    entries(image)
}

fn entries<S: Source + ?Sized>(src: &S) -> Result<Vec<Entry>, Error> {
    let img = Image::open(src)?;
    img.walk()?
        .into_iter()
        .map(|(path, nid)| {
            let ino = img.inode(nid)?;
            let kind = ino.mode & S_IFMT;
            let target = match kind {
                S_IFLNK => Some(img.data(&ino, "symlink")?),
                _ => None,
            };
            Ok(Entry {
                path,
                ino: nid,
                mode: ino.mode,
                uid: ino.uid,
                gid: ino.gid,
                nlink: ino.nlink,
                rdev: matches!(kind, S_IFCHR | S_IFBLK).then(|| decode_dev(ino.i_u)),
                size: ino.size,
                target,
                xattrs: Some(img.xattrs(&ino)?),
            })
        })
        .collect()
}

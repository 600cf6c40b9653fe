//! ext4: rootbox's own reader of what `mkfs.ext4 -d` writes.
//!
//! It reads the superblock (its CRC32C checked with metadata_csum), the
//! group descriptors (32- and 64-byte), inodes, extent trees (for
//! directories and symlinks: regular files' data is never read), linear
//! and htree directories (an htree's index blocks read as the empty
//! records they are to a linear reader), fast and slow symlinks, device
//! numbers in both encodings, and xattrs in the inode and in an xattr
//! block. Not read, each a typed error: inline data, block-mapped
//! (ext2/3) directories, values in xattr inodes, and the incompatible
//! features that move metadata (meta_bg, journal devices, encryption).
//! Inode and block checksums are not verified; the superblock's is.
//! The image's `lost+found` is an entry like any other. [`times`] gives
//! each inode's times, which an [`Entry`] does not hold (rootbox clamps
//! them for a reproducible image).

mod image;
mod layout;
mod time;

use std::fs::File;
use std::path::Path;

use crate::source::{Source, Window};
use crate::{Entry, Error};
use image::Image;
pub use time::{Time, Times};

/// Every path of the ext4 image at `image`, the root (`/`) first and
/// parents before children.
pub fn read(image: &Path) -> Result<Vec<Entry>, Error> {
    let (file, len) = crate::source::open(image)?;
    read_at(&file, 0, len)
}

/// [`read`] of an ext4 filesystem that lies in `file` from byte `offset`
/// on, `len` bytes long (a partition of a disk image): nothing outside
/// those bytes is read.
pub fn read_at(file: &File, offset: u64, len: u64) -> Result<Vec<Entry>, Error> {
    entries(&Window { file, offset, len })
}

/// [`read`] of an image held in memory.
pub fn read_bytes(image: &[u8]) -> Result<Vec<Entry>, Error> {
    entries(image)
}

/// The times of every inode reachable from the root of the ext4 image at
/// `image`, by inode number (hard links: once), in inode order.
pub fn times(image: &Path) -> Result<Vec<(u64, Times)>, Error> {
    let file = File::open(image).map_err(|source| Error::Open {
        path: image.to_path_buf(),
        source,
    })?;
    all_times(&file)
}

fn all_times<S: Source + ?Sized>(src: &S) -> Result<Vec<(u64, Times)>, Error> {
    let img = Image::open(src)?;
    let mut out = img
        .walk()?
        .into_iter()
        .map(|(_, f)| Ok((u64::from(f.ino), img.times(&f)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    out.sort_unstable_by_key(|t| t.0);
    out.dedup_by_key(|t| t.0);
    Ok(out)
}

fn entries<S: Source + ?Sized>(src: &S) -> Result<Vec<Entry>, Error> {
    let img = Image::open(src)?;
    img.walk()?
        .into_iter()
        .map(|(path, f)| img.entry(path, &f))
        .collect()
}

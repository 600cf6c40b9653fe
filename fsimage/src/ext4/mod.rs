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
//! The image's `lost+found` is an entry like any other.

mod image;
mod layout;

use std::fs::File;
use std::path::Path;

use crate::source::Source;
use crate::{Entry, Error};
use image::Image;

/// Every path of the ext4 image at `image`, the root (`/`) first and
/// parents before children.
pub fn read(image: &Path) -> Result<Vec<Entry>, Error> {
    let file = File::open(image).map_err(|source| Error::Open {
        path: image.to_path_buf(),
        source,
    })?;
    entries(&file)
}

/// [`read`] of an image held in memory.
pub fn read_bytes(image: &[u8]) -> Result<Vec<Entry>, Error> {
    entries(image)
}

fn entries<S: Source + ?Sized>(src: &S) -> Result<Vec<Entry>, Error> {
    let img = Image::open(src)?;
    img.walk()?
        .into_iter()
        .map(|(path, f)| img.entry(path, &f))
        .collect()
}

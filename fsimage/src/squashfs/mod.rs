//! squashfs: rootbox's own reader of the format (4.0, as squashfs-tools
//! writes it), described once in `layout.rs`.
//!
//! It reads the superblock, the id table, every inode (basic and
//! extended), directory listings and the xattr tables — the metadata,
//! which mksquashfs compresses in 8 KiB blocks with the image's
//! compressor: gzip (the default), xz, lz4 and zstd are read, through
//! `flate2` (pure Rust), `lzma-rs`, `lz4_flex` and `zstd`; an image whose
//! metadata is compressed with lzo or the old lzma is
//! [`Error::Compressor`] (`-noI` images are read whatever the
//! compressor). Regular files' data is never read: an [`Entry`]'s size
//! is the inode's. The inode number is squashfs's own, which hard links
//! share; a directory's size is squashfs's (its listing plus 3).

mod image;
mod layout;
mod meta;

use std::fs::File;
use std::path::Path;

use crate::source::{Source, Window};
use crate::{Entry, Error, Xattrs};
use image::Image;

/// Every path of the squashfs image at `image`, the root (`/`) first and
/// parents before children.
pub fn read(image: &Path) -> Result<Vec<Entry>, Error> {
    let (file, len) = crate::source::open(image)?;
    read_at(&file, 0, len)
}

/// [`read`] of a squashfs filesystem that lies in `file` from byte `offset`
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
    let mut img = Image::open(src)?;
    let walked = img.walk()?;
    walked
        .into_iter()
        .map(|(path, ino)| {
            let xattrs = match ino.xattr {
                Some(x) => img.xattrs(x)?,
                None => Xattrs::new(),
            };
            Ok(Entry {
                path,
                ino: u64::from(ino.number),
                mode: ino.mode,
                uid: ino.uid,
                gid: ino.gid,
                nlink: ino.nlink,
                rdev: ino.rdev,
                size: ino.size,
                target: ino.target,
                xattrs: Some(xattrs),
            })
        })
        .collect()
}

//! Phase 4 of a disk: the disk file made, every content and blob put in
//! at its offset, then the partition table.
//!
//! Where it can, the largest build's own file becomes the disk, so that
//! the root filesystem is never written twice: `fallocate(2)` with
//! `FALLOC_FL_INSERT_RANGE` shifts its blocks up by the partition's
//! offset (ext4 and XFS do this in their extent maps, without moving
//! data), and the rest is written around it. Elsewhere (tmpfs, btrfs, an
//! offset that is not a multiple of the filesystem's block size) every
//! content is spliced into the unnamed disk file by its data ranges only
//! ([`super::splice`]: shared extents on btrfs and XFS, an in-kernel copy
//! elsewhere; holes stay holes). Both give the same bytes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use rootbox_images::disk::plan::DiskLayout;
use rootbox_images::disk::table::SECTOR;

use super::contents::Made;
use super::inputs::Raw;
use super::readback::proc_path;
use super::splice::splice;

/// The assembled disk.
pub struct Disk {
    /// The disk, open for reading and writing.
    pub file: File,
    /// A path child processes can open it by.
    pub path: PathBuf,
    /// The partition whose content's own file became the disk.
    pub adopted: Option<Adopted>,
    /// Bytes written into the disk file here: the data ranges of the
    /// contents and blobs put in (an adopted content's are not: they were
    /// written once, by its build), and the table.
    pub bytes_written: u64,
}

/// A content's file that became the disk.
pub struct Adopted {
    /// The partition's index in the layout (from 0).
    pub index: usize,
    /// The file's name in the disk's scratch directory: the disk is
    /// published by moving it.
    pub name: PathBuf,
}

/// Writes the disk: into the largest build's own file where its
/// filesystem can insert room before it, else into `unnamed` (the
/// unnamed output file).
pub fn assemble(
    unnamed: &Path,
    layout: &DiskLayout,
    blobs: &[Raw],
    made: &[Option<Made>],
) -> Result<Disk> {
    let adopted = candidate(made).and_then(|i| {
        let e = &layout.table.entries[i];
        let name = made[i].as_ref()?.kept.clone()?;
        match adopt(&name, e.start * SECTOR) {
            Ok(Ok(file)) => Some(Ok((file, Adopted { index: i, name }))),
            Ok(Err(why)) => {
                tracing::debug!(
                    "partition {} ({:?}): {why}; copying it into the disk instead",
                    e.number,
                    layout.names[i]
                );
                None
            }
            Err(err) => Some(Err(err)),
        }
    });
    let (file, adopted) = match adopted.transpose()? {
        Some((file, a)) => (file, Some(a)),
        None => {
            let file = File::options()
                .read(true)
                .write(true)
                .open(unnamed)
                .context("opening the unnamed disk file")?;
            (file, None)
        }
    };
    file.set_len(layout.bytes())
        .with_context(|| format!("making the disk file {} bytes", layout.bytes()))?;
    let mut written = 0;
    for (b, at) in blobs.iter().zip(&layout.blobs) {
        written += splice(&b.file, b.len, &file, at.offset)
            .with_context(|| format!("writing blob {} into the disk", at.name))?;
    }
    for (i, (m, e)) in made.iter().zip(&layout.table.entries).enumerate() {
        let Some(m) = m else { continue };
        if adopted.as_ref().is_some_and(|a| a.index == i) {
            continue;
        }
        written += splice(&m.file, m.len, &file, e.start * SECTOR).with_context(|| {
            format!(
                "partition {} ({:?}): splicing its content into the disk",
                e.number, layout.names[i]
            )
        })?;
    }
    for (off, bytes) in layout.table.to_bytes()? {
        file.write_all_at(&bytes, off)
            .context("writing the partition table")?;
        written += bytes.len() as u64;
    }
    let path = match &adopted {
        Some(_) => proc_path(&file),
        None => unnamed.to_path_buf(),
    };
    Ok(Disk {
        file,
        path,
        adopted,
        bytes_written: written,
    })
}

/// The content whose file may become the disk: the largest build (the
/// first of equals).
fn candidate(made: &[Option<Made>]) -> Option<usize> {
    let mut best: Option<(usize, u64)> = None;
    for (i, m) in made.iter().enumerate() {
        if let Some(m) = m.as_ref().filter(|m| m.kept.is_some() && m.len > 0) {
            if best.is_none_or(|(_, len)| m.len > len) {
                best = Some((i, m.len));
            }
        }
    }
    best.map(|(i, _)| i)
}

/// Opens the file `name` and inserts `at` bytes of hole before its data.
/// `Ok(Err(why))`: the filesystem cannot, and nothing was changed.
fn adopt(name: &Path, at: u64) -> Result<std::result::Result<File, String>> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(name)
        .context("opening the partition's filesystem image")?;
    let block = file.metadata()?.blksize();
    if block == 0 || at % block != 0 {
        return Ok(Err(format!(
            "its offset {at} is not a multiple of the block size {block} of the output's filesystem"
        )));
    }
    let len = i64::try_from(at).context("the partition's offset")?;
    match fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_INSERT_RANGE,
        0,
        len,
    ) {
        Ok(()) => Ok(Ok(file)),
        Err(e @ (Errno::EOPNOTSUPP | Errno::EINVAL | Errno::ENOSYS)) => Ok(Err(format!(
            "the output's filesystem cannot insert room before the image (fallocate \
             FALLOC_FL_INSERT_RANGE: {e})"
        ))),
        Err(e) => Err(e).context("inserting room before the partition's filesystem image"),
    }
}

//! Phase 5 of a disk: the assembled disk read back before it is
//! published. The table through rootbox's own parser against the plan;
//! blobs and raw partitions byte for byte; every filesystem with its own
//! reader: btrfs with rootbox's btrfs reader at its offset, ext4, erofs
//! and squashfs compared byte for byte with the build's image (which the
//! build verified against its staged tree) and then read with
//! rootbox's reader at its offset in the disk, vfat copied out of the disk
//! with mtools and compared with its directory. A content whose own file
//! became the disk (`assemble`) is not compared with itself: the build
//! verified it, and the kernel only moved its blocks.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rootbox_images::disk::plan::DiskLayout;
use rootbox_images::disk::table::{Table, GPT_BACKUP_SECTORS, GPT_FIRST_USABLE, SECTOR};

use super::contents::{Holds, Kind, Made};
use super::inputs::Raw;
use crate::fs::vfat;

/// Reads the first 34 and the last 33 sectors of `disk`.
pub fn read_ends(disk: &File, len: u64) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let head_len = (GPT_FIRST_USABLE * SECTOR).min(len) as usize;
    let tail_len = (GPT_BACKUP_SECTORS * SECTOR).min(len) as usize;
    let mut head = vec![0u8; head_len];
    let mut tail = vec![0u8; tail_len];
    disk.read_exact_at(&mut head, 0)?;
    disk.read_exact_at(&mut tail, len - tail_len as u64)?;
    Ok((head, tail))
}

/// Reads back everything in `file` (`path`: a path child processes can
/// open it by); `adopted`: the index of the partition whose content's own
/// file is the disk; `scratch` is where a vfat filesystem is copied out
/// to.
pub fn read_back(
    file: &File,
    path: &Path,
    adopted: Option<usize>,
    layout: &DiskLayout,
    blobs: &[Raw],
    made: &[Option<Made>],
    scratch: &Path,
) -> Result<()> {
    table(file, layout)?;
    for (b, at) in blobs.iter().zip(&layout.blobs) {
        same_bytes(&b.file, b.len, file, at.offset).with_context(|| format!("blob {}", at.name))?;
    }
    for (i, (m, e)) in made.iter().zip(&layout.table.entries).enumerate() {
        if let Some(m) = m {
            let own = adopted == Some(i);
            partition(file, path, e.start * SECTOR, m, own, scratch).with_context(|| {
                format!(
                    "partition {} ({:?})",
                    e.number,
                    layout.names[e.number as usize - 1]
                )
            })?;
        }
    }
    Ok(())
}

/// The table as read back must be the one planned.
fn table(disk: &File, layout: &DiskLayout) -> Result<()> {
    let len = disk.metadata()?.len();
    let (head, tail) = read_ends(disk, len).context("reading the partition table back")?;
    let read = Table::parse(&head, &tail, len).context("the partition table does not read back")?;
    let diff = layout.differences(&read);
    if !diff.is_empty() {
        bail!(
            "the partition table read back differs from the plan:\n  {}",
            diff.join("\n  ")
        );
    }
    Ok(())
}

/// One partition's content, by what it holds; `adopted`: its file is the
/// disk.
fn partition(
    disk: &File,
    path: &Path,
    at: u64,
    m: &Made,
    adopted: bool,
    scratch: &Path,
) -> Result<()> {
    let Holds::Filesystem(fs) = &m.holds else {
        return same_bytes(&m.file, m.len, disk, at);
    };
    match &fs.kind {
        Kind::Btrfs => btrfs_at(path, at, m.len, fs.uuid.as_deref().unwrap_or("")),
        Kind::Built(f) => {
            if !adopted {
                same_bytes(&m.file, m.len, disk, at)?;
            }
            built_at(*f, disk, at, m.len)
        }
        Kind::Vfat(src) => {
            let held = super::contents::scratch(scratch)?;
            vfat::verify(&format!("{}@@{at}", path.display()), src, held.path())
        }
    }
}

/// A path other processes (the filesystems' tools) can open `f` by.
pub fn proc_path(f: &File) -> std::path::PathBuf {
    format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd()).into()
}

/// The ext4, erofs or squashfs filesystem at `at` opens with rootbox's
/// reader and has a root directory.
fn built_at(f: rootbox_images::fs::Filesystem, disk: &File, at: u64, len: u64) -> Result<()> {
    use rootbox_fsimage::{erofs, ext4, squashfs};
    use rootbox_images::fs::Filesystem;
    let entries = match f {
        Filesystem::Ext4 => ext4::read_at(disk, at, len),
        Filesystem::Erofs => erofs::read_at(disk, at, len),
        Filesystem::Squashfs => squashfs::read_at(disk, at, len),
    }
    .with_context(|| format!("reading the {f} filesystem back from the disk"))?;
    if !entries.iter().any(|e| e.path == b"/") {
        bail!("the {f} filesystem read back has no root directory");
    }
    Ok(())
}

/// `len` bytes of `src` must be in `disk` at `at`.
fn same_bytes(src: &File, len: u64, disk: &File, at: u64) -> Result<()> {
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = ((len - pos) as usize).min(a.len());
        src.read_exact_at(&mut a[..n], pos)?;
        disk.read_exact_at(&mut b[..n], at + pos)?;
        if a[..n] != b[..n] {
            bail!("the disk differs from the content at byte {pos} of it");
        }
        pos += n as u64;
    }
    Ok(())
}

/// The btrfs filesystem at `at` opens with rootbox's reader and is the
/// one the build made and verified (same UUID, size within the partition).
fn btrfs_at(disk: &Path, at: u64, len: u64, uuid: &str) -> Result<()> {
    let image = rootbox_btrfs::Image::open_at(disk, at)
        .context("reading the btrfs filesystem back from the disk")?;
    let info = image.info();
    if info.fsid != uuid || info.total_bytes > len {
        bail!(
            "the disk holds btrfs {} of {} bytes, not the {uuid} of {len} bytes built",
            info.fsid,
            info.total_bytes,
        );
    }
    image
        .subvolumes()
        .context("listing the subvolumes read back")?;
    Ok(())
}

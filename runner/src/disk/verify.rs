//! Reading the assembled disk back before it is published: the table
//! through rootbox's own parser against the plan, raw content byte for
//! byte, btrfs partitions through rootbox's btrfs reader at their offset.
//! (FAT partitions are read back with mtools: [`super::fat::verify`].)

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rootbox_images::disk::table::{Table, GPT_BACKUP_SECTORS, GPT_FIRST_USABLE, SECTOR};
use rootbox_images::disk::DiskLayout;

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

/// The table as read back must be the one planned.
pub fn table(disk: &File, layout: &DiskLayout) -> Result<()> {
    let len = disk.metadata()?.len();
    let (head, tail) = read_ends(disk, len).context("reading the partition table back")?;
    let read = Table::parse(&head, &tail, len)
        .map_err(|e| anyhow!("the partition table does not read back: {e}"))?;
    let diff = layout.differences(&read);
    if !diff.is_empty() {
        bail!(
            "the partition table read back differs from the plan:\n  {}",
            diff.join("\n  ")
        );
    }
    Ok(())
}

/// `len` bytes of `src` must be in `disk` at `at`.
pub fn same_bytes(title: &str, src: &File, len: u64, disk: &File, at: u64) -> Result<()> {
    let mut a = vec![0u8; 1 << 20];
    let mut b = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = ((len - pos) as usize).min(a.len());
        src.read_exact_at(&mut a[..n], pos)?;
        disk.read_exact_at(&mut b[..n], at + pos)?;
        if a[..n] != b[..n] {
            bail!(
                "{title}: the disk differs from the content at byte {} of it",
                pos
            );
        }
        pos += n as u64;
    }
    Ok(())
}

/// The btrfs filesystem at `at` opens with rootbox's reader and is the
/// one the build made and verified (same UUID, size within the partition).
pub fn btrfs_at(title: &str, disk: &Path, at: u64, len: u64, uuid: &str) -> Result<()> {
    let image = rootbox_btrfs::Image::open_at(disk, at)
        .with_context(|| format!("{title}: reading the btrfs filesystem back from the disk"))?;
    let info = image.info();
    if info.fsid != uuid || info.total_bytes > len {
        bail!(
            "{title}: the disk holds btrfs {} of {} bytes, not the {} of {len} bytes built",
            info.fsid,
            info.total_bytes,
            uuid
        );
    }
    image
        .subvolumes()
        .with_context(|| format!("{title}: listing the subvolumes read back"))?;
    Ok(())
}

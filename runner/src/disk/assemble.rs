//! Phase 4 of a disk: every content spliced into the unnamed disk file by
//! its data ranges only ([`super::splice`], so the disk stays sparse), the
//! blobs, then the partition table.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use rootbox_images::disk::plan::DiskLayout;
use rootbox_images::disk::table::SECTOR;

use super::contents::Made;
use super::inputs::Raw;
use super::splice::splice;

/// Writes the disk into `path` (the unnamed output file); returns it open.
pub fn assemble(
    path: &Path,
    layout: &DiskLayout,
    blobs: &[Raw],
    made: &[Option<Made>],
) -> Result<File> {
    let disk = File::options()
        .read(true)
        .write(true)
        .open(path)
        .context("opening the unnamed disk file")?;
    disk.set_len(layout.bytes())
        .with_context(|| format!("making the disk file {} bytes", layout.bytes()))?;
    for (b, at) in blobs.iter().zip(&layout.blobs) {
        splice(&b.file, b.len, &disk, at.offset)
            .with_context(|| format!("writing blob {} into the disk", at.name))?;
    }
    for (m, e) in made.iter().zip(&layout.table.entries) {
        if let Some(m) = m {
            splice(&m.file, m.len, &disk, e.start * SECTOR).with_context(|| {
                format!(
                    "partition {} ({:?}): splicing its content into the disk",
                    e.number,
                    layout.names[e.number as usize - 1]
                )
            })?;
        }
    }
    for (off, bytes) in layout.table.to_bytes()? {
        disk.write_all_at(&bytes, off)
            .context("writing the partition table")?;
    }
    Ok(disk)
}

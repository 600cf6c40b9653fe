//! Phase 3 of a disk: the partitions and blobs placed
//! ([`rootbox_images::disk::DiskSpec::plan`]: alignment, overlaps, the end
//! of the disk), then the vfat filesystem of a `fill` partition made at
//! the size placing gave it.

use std::path::Path;

use anyhow::{Context, Result};
use rootbox_images::disk::plan::DiskLayout;
use rootbox_images::disk::table::SECTOR;
use rootbox_images::disk::{DiskSpec, Part};

use super::contents::{Made, Slot};
use super::inputs::{Entropy, Raw};

/// Places everything; returns the layout and each partition's content.
pub fn place(
    spec: &DiskSpec,
    slots: Vec<Slot>,
    blobs: &[Raw],
    entropy: &Entropy,
    dir: &Path,
) -> Result<(DiskLayout, Vec<Option<Made>>)> {
    let sizes: Vec<u64> = slots
        .iter()
        .map(|s| match s {
            Slot::Made(m) => m.len,
            Slot::Empty | Slot::Later(_) => 0,
        })
        .collect();
    let blob_sizes: Vec<u64> = blobs.iter().map(|b| b.len).collect();
    let layout = spec.plan(&sizes, &blob_sizes, &mut |p| entropy.bytes(p))?;
    let mut made = Vec::new();
    for (i, slot) in slots.into_iter().enumerate() {
        made.push(match slot {
            Slot::Empty => None,
            Slot::Made(m) => Some(m),
            Slot::Later(l) => {
                let size = layout.table.entries[i].sectors * SECTOR;
                let title = Part::of(spec, i);
                tracing::debug!("{title}: making the vfat filesystem ({size} bytes)");
                Some(l.make(Some(size), dir).with_context(|| title.to_string())?)
            }
        });
    }
    Ok((layout, made))
}

//! The disk pipeline on a screen: [`make`] calls its phases in order,
//! each in its own file.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use rootbox_images::disk::DiskSpec;

use super::options::Options;
use super::report::{self, Report, ReproducibleReport, Timings};
use super::{assemble, contents, inputs, place, publish, readback, verity};

/// Makes the disk. Nothing is left at `output` unless it succeeds.
pub fn make(spec: &DiskSpec, output: &Path, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let lap = |t: &mut Instant| {
        let s = t.elapsed().as_secs_f64();
        *t = Instant::now();
        s
    };
    let mut t = t0;

    // 1. Read: raw files opened, FAT trees checked, the output checked.
    let inputs::Inputs {
        target,
        out_dir,
        blobs,
        parts,
        entropy,
        fat_epoch,
    } = inputs::read(spec, output, opts)?;

    // 2. Build each partition's content whose size is known.
    // The scratch directory holds the builds' files until the disk is out.
    let (mut slots, _scratch) =
        contents::make_all(spec, parts, &out_dir, &entropy, fat_epoch, opts)?;
    // The dm-verity hash trees, and the GUIDs their root hashes give.
    let pairs = verity::make_all(spec, &mut slots, &out_dir, &entropy)?;
    let spec = &*verity::with_guids(spec, &pairs);
    let contents_secs = lap(&mut t);

    // 3. Place partitions and blobs; a `fill` vfat is made at its size.
    let (layout, made) = place::place(spec, slots, &blobs, &entropy, &out_dir)?;
    let place_secs = lap(&mut t);

    // 4. Assemble: the largest build's file becomes the disk where the
    // filesystem allows, the rest spliced in; the table written.
    let disk = assemble::assemble(&target.mkfs_path(), &layout, &blobs, &made)?;
    let assemble_secs = lap(&mut t);

    // 5. Read back: the table, and each content with its own reader.
    let adopted = disk.adopted.as_ref().map(|a| a.index);
    readback::read_back(
        &disk.file, &disk.path, adopted, &layout, &blobs, &made, &out_dir,
    )?;
    let verify_secs = lap(&mut t);

    // 6. Publish: the block map, the zstd copy, the disk linked into place.
    let published = publish::publish(target, &disk, layout.bytes(), output, opts)?;
    let output_secs = lap(&mut t);

    // 7. Report.
    let content_bytes = made.iter().flatten().map(|m| m.content_bytes).sum::<u64>()
        + blobs.iter().map(|b| b.len).sum::<u64>();
    Ok(Report {
        image: output.to_path_buf(),
        table: spec.table,
        size_bytes: layout.bytes(),
        mapped_bytes: published.mapped,
        bytes_written: disk.bytes_written,
        adopted_partition: disk.adopted.as_ref().map(|a| a.index as u32 + 1),
        content_bytes,
        disk_guid: layout.table.disk_guid.map(|g| g.to_string()),
        disk_id: layout.table.disk_id.map(|d| format!("0x{d:08x}")),
        partitions: report::with_root_hashes(report::partitions(spec, &layout, made), &pairs),
        blobs: layout.blobs.clone(),
        bmap: opts.bmap.clone(),
        compressed: published.compressed,
        reproducible: entropy.seed.map(|seed| ReproducibleReport {
            epoch: fat_epoch,
            seed,
        }),
        verified: true,
        timings: Timings {
            contents: contents_secs,
            place: place_secs,
            assemble: assemble_secs,
            verify: verify_secs,
            output: output_secs,
            total: t0.elapsed().as_secs_f64(),
        },
    })
}

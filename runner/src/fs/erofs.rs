//! erofs: `mkfs.erofs`, then the owner fixes written into the inodes by
//! `rootbox_fsimage::erofs::apply` (erofs-utils 1.5 has only the
//! all-or-nothing `--force-uid`), then `fsck.erofs`; the image is read
//! back by `super::read` (rootbox's erofs reader: `dump.erofs` 1.5 shows
//! neither set-id bits, device numbers nor xattrs). This file is glue:
//! the format is read and written in `rootbox-fsimage`.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use rootbox_fsimage::erofs::{apply, At, Patch, XattrOrder};
use rootbox_images::fs::erofs as plan;
use rootbox_images::fs::{too_small, Filesystem, Fix};
use rootbox_images::size::Size;

use super::{output, Job};

/// Makes the erofs image of `job`.
pub fn make(job: &Job, fixes: &[Fix]) -> Result<()> {
    let wide = job.manifest.as_ref().is_some_and(|m| {
        m.rules
            .iter()
            .any(|r| plan::is_wide(r.uid) || plan::is_wide(r.gid))
    });
    // Emptied, not removed: in a build the output is an unnamed file
    // (/proc/self/fd/N).
    fs::File::create(&job.image).with_context(|| format!("emptying {}", job.image.display()))?;
    let args = plan::mkfs_args(&job.options, &job.source, &job.image, wide);
    output(Command::new("mkfs.erofs").args(&args), "mkfs.erofs")?;
    // A reproducible build also sorts each inode's inline xattrs by name:
    // mkfs.erofs writes them in the order the source filesystem lists
    // them (ext4 and tmpfs differ).
    let order = match job.options.reproducible {
        Some(_) => XattrOrder::ByName,
        None => XattrOrder::AsMade,
    };
    apply(&job.image, &patches(fixes), order)
        .context("writing the owner fixes into the erofs image")?;
    output(
        Command::new("fsck.erofs").arg(&job.image),
        "fsck.erofs (checking the image)",
    )?;
    fit(Filesystem::Erofs, &job.image, job.options.size)
}

/// A read-only image keeps its natural size; a fixed size pads it, or
/// fails with the size it needs.
pub fn fit(filesystem: Filesystem, image: &Path, size: Size) -> Result<()> {
    let Size::Fixed(want) = size else {
        return Ok(());
    };
    let len = fs::metadata(image)
        .with_context(|| format!("stat {}", image.display()))?
        .len();
    if len > want.bytes() {
        return Err(too_small(filesystem, want.bytes(), len).into());
    }
    fs::OpenOptions::new()
        .write(true)
        .open(image)
        .and_then(|f| f.set_len(want.bytes()))
        .with_context(|| format!("padding {} to {want}", image.display()))
}

/// The owner fixes as the erofs writer takes them, by image path.
fn patches(fixes: &[Fix]) -> Vec<Patch> {
    fixes
        .iter()
        .map(|f| Patch {
            at: At::Path(f.path.as_bytes().to_vec()),
            uid: Some(f.uid),
            gid: Some(f.gid),
            mode: Some(f.mode),
            device: None,
            user_to_security: None,
        })
        .collect()
}

//! erofs: `mkfs.erofs`, then the owner fixes written into the inodes by
//! `rootbox_fsimage::erofs::apply` (erofs-utils 1.5 has only the
//! all-or-nothing `--force-uid`), then `fsck.erofs`; the image is read
//! back by `super::read` (rootbox's erofs reader: `dump.erofs` 1.5 shows
//! neither set-id bits, device numbers nor xattrs). This file is glue:
//! the format is read and written in `rootbox-fsimage`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use rootbox_fsimage::erofs::{apply, At, Device, DeviceKind, Patch, XattrOrder};
use rootbox_images::fs::erofs as plan;
use rootbox_images::fs::{too_small, Filesystem, Fix};
use rootbox_images::size::Size;

use super::specials::{split, Specials, S_IFBLK, S_IFIFO};
use super::{output, Job, S_IFMT};

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
    apply(&job.image, &patches(fixes, &job.specials), order)
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

/// The owner fixes as the erofs writer takes them, by image path, with
/// what a build without a namespace staged in stand-ins
/// (`super::specials`): a FIFO that becomes a device node, a
/// `user.capability` that becomes `security.capability`.
fn patches(fixes: &[Fix], specials: &Specials) -> Vec<Patch> {
    let mut by_path: BTreeMap<&[u8], Patch> = BTreeMap::new();
    let empty = |path: &[u8]| Patch {
        at: At::Path(path.to_vec()),
        uid: None,
        gid: None,
        mode: None,
        device: None,
        user_to_security: None,
    };
    for f in fixes {
        let p = by_path
            .entry(f.path.as_bytes())
            .or_insert_with(|| empty(f.path.as_bytes()));
        p.uid = Some(f.uid);
        p.gid = Some(f.gid);
        p.mode = Some(f.mode);
    }
    for d in &specials.devices {
        let (major, minor) = split(d.rdev);
        let kind = if d.mode & S_IFMT == S_IFBLK {
            DeviceKind::Block
        } else {
            DeviceKind::Char
        };
        let p = by_path.entry(&d.path).or_insert_with(|| empty(&d.path));
        p.device = Some(Device { kind, major, minor });
        // The writer sets permission bits; `device` changes the type.
        p.mode = p.mode.map(|m| S_IFIFO | (m & 0o7777));
    }
    for c in &specials.caps {
        let p = by_path.entry(&c.path).or_insert_with(|| empty(&c.path));
        p.user_to_security = Some(b"capability".to_vec());
    }
    by_path.into_values().collect()
}

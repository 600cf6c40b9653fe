//! Phase 2 of a disk: each partition's content made, and the one model
//! of what a content is. A partition holds raw bytes or a filesystem
//! built from a tree ([`Holds`]); a filesystem knows its kind ([`Kind`]),
//! by which it is read back (`readback`) and listed (`inspect`). Builds
//! (btrfs, ext4, erofs, squashfs) go through the build pipeline into
//! scratch space beside the output; vfat (`fat`, or a `build` whose
//! filesystem is vfat: one input, `Input::Vfat`) is made here from its
//! checked tree, with the same `crate::fs::vfat` steps as the pipeline's
//! vfat backend, except a `fill` partition's, whose size only placing
//! tells.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rootbox_images::disk::{DiskSpec, FatSpec, Part, PartSize};
use rootbox_images::fs::vfat::Mkfs;
use rootbox_images::spec::Spec;

use super::build;
use super::inputs::{Entropy, Input};
use super::options::{Options, Reproducible};
use crate::fs::vfat;
use crate::output::{sweep, Held};
use crate::pipeline::Report;

/// A partition's content once made: bytes in an unnamed file, and what
/// they hold.
pub struct Made {
    /// The bytes.
    pub file: File,
    /// How many.
    pub len: u64,
    /// Bytes of what was put in (the files of a tree, a raw file).
    pub content_bytes: u64,
    /// What the bytes are.
    pub holds: Holds,
    /// A build's file still has this name in the disk's scratch
    /// directory: the disk may take the file itself (`assemble`).
    pub kept: Option<PathBuf>,
}

/// What a content's bytes are.
pub enum Holds {
    /// A raw file, as it is.
    Raw,
    /// A filesystem.
    Filesystem(Filesystem),
}

/// A filesystem made for a partition.
pub struct Filesystem {
    /// Which, and what reading it back needs.
    pub kind: Kind,
    /// Its UUID (vfat: the volume id).
    pub uuid: Option<String>,
    /// Its label.
    pub label: Option<String>,
    /// A build's own report.
    pub build: Option<Box<Report>>,
}

/// A filesystem's kind, with what reading it back needs.
pub enum Kind {
    /// btrfs, read with rootbox's btrfs reader at its offset.
    Btrfs,
    /// ext4, erofs or squashfs, read with `crate::fs::read`.
    Built(rootbox_images::fs::Filesystem),
    /// vfat, read with mtools and compared with its source tree.
    Vfat(vfat::Source),
}

impl Kind {
    /// The filesystem's name, as `build --filesystem` spells it.
    pub fn name(&self) -> String {
        match self {
            Kind::Btrfs => "btrfs".into(),
            Kind::Built(f) => f.to_string(),
            Kind::Vfat(_) => "vfat".into(),
        }
    }
}

/// A partition's content slot after this phase.
pub enum Slot {
    /// No content: the partition stays a hole.
    Empty,
    /// Made.
    Made(Made),
    /// A vfat filesystem of `fill` size, made once placed ([`Later::make`]).
    Later(Later),
}

/// A vfat filesystem waiting for its size.
pub struct Later {
    src: vfat::Source,
    format: vfat::Format,
    label: Option<String>,
}

impl Later {
    /// Makes it in an unnamed file in `dir`: `size` bytes, or (None) the
    /// size its partition's spec asked for.
    pub fn make(self, size: Option<u64>, dir: &Path) -> Result<Made> {
        let format = vfat::Format {
            size: size.or(self.format.size),
            ..self.format
        };
        let m = vfat::make(&self.src, &format, dir)?;
        let id = format.mkfs.volume_id;
        Ok(Made {
            len: m.size,
            content_bytes: self.src.bytes(),
            holds: Holds::Filesystem(Filesystem {
                uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)),
                label: self.label,
                kind: Kind::Vfat(self.src),
                build: None,
            }),
            file: m.file,
            kept: None,
        })
    }
}

/// The scratch directories of disks beside the output: held while in use,
/// swept by the next disk when their own died (SIGKILL).
const SCRATCH_PREFIX: &str = ".rootbox-disk-";

fn is_scratch(name: &str) -> bool {
    name.strip_prefix(SCRATCH_PREFIX)
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A scratch directory of this disk in `dir`, once the ones killed disks
/// left there are swept.
pub fn scratch(dir: &Path) -> Result<Held> {
    sweep(dir, is_scratch);
    Held::dir_in(dir, SCRATCH_PREFIX)
        .with_context(|| format!("creating scratch space in {}", dir.display()))
}

/// Makes every partition's content whose size is known. The scratch
/// directory returned (if any build needed one) holds the builds' files
/// by name: keep it until the disk is published.
pub fn make_all(
    spec: &DiskSpec,
    parts: Vec<Option<Input>>,
    out_dir: &Path,
    entropy: &Entropy,
    fat_epoch: Option<i64>,
    opts: &Options,
) -> Result<(Vec<Slot>, Option<Held>)> {
    // What disks killed while building left here goes first.
    sweep(out_dir, is_scratch);
    // Only builds need a named place (a build links its image there); it
    // goes when the disk is published.
    let scratch = parts
        .iter()
        .any(|p| matches!(p, Some(Input::Build(_))))
        .then(|| scratch(out_dir))
        .transpose()?;
    let mut slots = Vec::new();
    for (i, input) in parts.into_iter().enumerate() {
        let title = Part::of(spec, i);
        let p = &spec.partitions[i];
        let slot = match input {
            None => Slot::Empty,
            Some(Input::Raw(r)) => Slot::Made(Made {
                content_bytes: r.len,
                len: r.len,
                file: r.file,
                holds: Holds::Raw,
                kept: None,
            }),
            Some(Input::Build(s)) => {
                let dir = scratch.as_ref().expect("made for builds").path();
                Slot::Made(build_filesystem(&title, s, dir, entropy, opts)?)
            }
            Some(Input::Vfat(src, f)) => {
                let later = Later {
                    format: vfat::Format {
                        size: match p.size {
                            PartSize::Fixed(b) => Some(b.bytes()),
                            PartSize::Auto | PartSize::Fill => None,
                        },
                        headroom: p.headroom.bytes(),
                        mkfs: mkfs_of(&f, entropy, i, fat_epoch.is_some()),
                        epoch: fat_epoch,
                    },
                    src,
                    label: f.label.clone(),
                };
                if p.size == PartSize::Fill {
                    Slot::Later(later)
                } else {
                    tracing::debug!("{title}: making the vfat filesystem");
                    Slot::Made(
                        later
                            .make(None, out_dir)
                            .with_context(|| title.to_string())?,
                    )
                }
            }
        };
        slots.push(slot);
    }
    Ok((slots, scratch))
}

/// Builds partition `title`'s filesystem from `spec` into `dir`.
fn build_filesystem(
    title: &Part,
    spec: &Spec,
    dir: &Path,
    entropy: &Entropy,
    opts: &Options,
) -> Result<Made> {
    let kind = spec.filesystem.other().map_or(Kind::Btrfs, Kind::Built);
    tracing::debug!("{title}: building the {} filesystem", kind.name());
    let reproducible = opts.reproducible.as_ref().map(|r| Reproducible {
        epoch: r.epoch,
        seed: entropy
            .seed
            .as_ref()
            .map(|s| format!("{s}/partition {}", title.name)),
        explicit: r.explicit,
    });
    let name = format!("p{}", title.number);
    let b = build::build_partition(spec, dir, &name, opts.map, reproducible)
        .with_context(|| format!("{title}: the {} build failed", kind.name()))?;
    let id = &b.identity;
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(Made {
        len: b.size,
        content_bytes: id.content_bytes,
        holds: Holds::Filesystem(Filesystem {
            uuid: some(&id.uuid),
            label: some(&id.label),
            kind,
            build: Some(Box::new(b.report)),
        }),
        file: b.file,
        kept: Some(b.path),
    })
}

/// mkfs.vfat's arguments for partition `i`: the volume id given, or
/// derived from the seed, or random.
fn mkfs_of(f: &FatSpec, entropy: &Entropy, i: usize, invariant: bool) -> Mkfs {
    let volume_id = f.volume_id.map(|v| v.0).unwrap_or_else(|| {
        let b = entropy.bytes(&format!("fat volume id {}", i + 1));
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    });
    Mkfs {
        fat_size: f.fat_size,
        label: f.label.clone(),
        volume_id,
        invariant,
    }
}

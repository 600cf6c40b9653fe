//! Phase 1 of a disk: read the spec's inputs before anything slow. Raw
//! files and blobs are opened (regular files only), FAT trees walked and
//! refused where FAT cannot hold them, the output checked and the unnamed
//! disk file opened beside it; the seed of a reproducible disk and the
//! FAT times decided.

use std::borrow::Cow;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rootbox_images::disk::types::derive_bytes;
use rootbox_images::disk::{DiskSpec, FatSpec, Part, PartSize, Source};
use rootbox_images::spec::Spec;

use super::options::Options;
use crate::fs::vfat;
use crate::output::Target;

/// A raw file, open.
pub struct Raw {
    /// The file.
    pub file: File,
    /// Its bytes.
    pub len: u64,
}

/// A partition's input, read and checked.
pub enum Input<'a> {
    /// A raw file.
    Raw(Raw),
    /// A build spec.
    Build(&'a Spec),
    /// A checked vfat tree (`fat`, or a vfat `build`).
    Vfat(vfat::Source, Cow<'a, FatSpec>),
}

/// Everything read before the contents are made.
pub struct Inputs<'a> {
    /// The output: an unnamed file beside it, linked into place last.
    pub target: Target,
    /// The output's directory (scratch goes there).
    pub out_dir: PathBuf,
    /// The blobs, in spec order.
    pub blobs: Vec<Raw>,
    /// Each partition's input (None: an empty partition).
    pub parts: Vec<Option<Input<'a>>>,
    /// GUIDs, ids and seeds: random, or derived from the seed.
    pub entropy: Entropy,
    /// The FAT times of a reproducible disk.
    pub fat_epoch: Option<i64>,
}

/// Reads and checks every input of `spec`.
pub fn read<'a>(spec: &'a DiskSpec, output: &Path, opts: &Options) -> Result<Inputs<'a>> {
    let mut parts = Vec::new();
    let mut trees: Vec<PathBuf> = Vec::new();
    for (i, p) in spec.partitions.iter().enumerate() {
        let title = Part::of(spec, i);
        parts.push(match p.content.as_ref().map(|c| c.source()) {
            None => None,
            Some(Source::Raw(f)) => Some(Input::Raw(open_raw(&title.to_string(), f)?)),
            Some(Source::Build(s)) => {
                trees.extend(s.rootfs.clone());
                Some(Input::Build(s))
            }
            Some(Source::Vfat(f)) => {
                trees.push(f.dir.clone());
                let src = vfat::check(&f.dir).with_context(|| title.to_string())?;
                Some(Input::Vfat(src, f))
            }
            // Made from its data partition's filesystem (`verity.rs`).
            Some(Source::VerityHash(_)) => None,
        });
    }
    let blobs = spec
        .blobs
        .iter()
        .map(|b| open_raw(&format!("blob {}", b.title()), &b.file))
        .collect::<Result<Vec<_>>>()?;
    let trees: Vec<&Path> = trees.iter().map(PathBuf::as_path).collect();
    let target = Target::check(output, opts.force, &trees)?;
    let out_dir = target.dir().to_path_buf();
    let seed = opts
        .reproducible
        .as_ref()
        .map(|r| r.seed.clone().unwrap_or_else(|| default_seed(spec)));
    // FAT times of a reproducible disk: SOURCE_DATE_EPOCH, else the
    // newest mtime of the FAT sources, never before 1980 (FAT's epoch).
    let fat_epoch = opts.reproducible.as_ref().map(|r| {
        r.epoch.unwrap_or_else(|| {
            parts
                .iter()
                .flatten()
                .filter_map(|p| match p {
                    Input::Vfat(src, _) => src.newest_mtime(),
                    _ => None,
                })
                .max()
                .unwrap_or(FAT_EPOCH)
                .max(FAT_EPOCH)
        })
    });
    Ok(Inputs {
        target,
        out_dir,
        blobs,
        parts,
        entropy: Entropy { seed },
        fat_epoch,
    })
}

/// 1980-01-01, the earliest time FAT can record.
const FAT_EPOCH: i64 = 315_532_800;

/// Where GUIDs, ids and build seeds come from.
pub struct Entropy {
    /// The seed of a reproducible disk; None: random.
    pub seed: Option<String>,
}

impl Entropy {
    /// 16 bytes for `purpose`: derived from the seed, or random.
    pub fn bytes(&self, purpose: &str) -> [u8; 16] {
        match &self.seed {
            Some(s) => derive_bytes(s.as_bytes(), purpose),
            None => random_bytes().unwrap_or_else(|_| derive_bytes(b"", purpose)),
        }
    }
}

/// The seed of a reproducible disk when none is given: the layout's
/// shape, never a path.
fn default_seed(spec: &DiskSpec) -> String {
    let parts: Vec<String> = spec
        .partitions
        .iter()
        .map(|p| {
            let size = match p.size {
                PartSize::Auto => "auto".to_string(),
                PartSize::Fill => "fill".to_string(),
                PartSize::Fixed(b) => b.to_string(),
            };
            format!("{}:{}:{size}", p.name, p.kind)
        })
        .collect();
    format!(
        "rootbox-disk/1 table={} partitions={}",
        spec.table,
        parts.join(",")
    )
}

/// 16 random bytes.
fn random_bytes() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b)
}

/// Opens a raw file (a partition's content or a blob) after checking it
/// is a regular file.
fn open_raw(title: &str, path: &Path) -> Result<Raw> {
    let m = fs::metadata(path)
        .with_context(|| format!("{title}: {} (give an existing file)", path.display()))?;
    if !m.is_file() {
        let what = if m.is_dir() {
            "a directory"
        } else if std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()) {
            "a FIFO"
        } else {
            "not a regular file"
        };
        bail!(
            "{title}: {} is {what}; raw content must be a regular file",
            path.display()
        );
    }
    let file = File::open(path).with_context(|| format!("{title}: opening {}", path.display()))?;
    Ok(Raw { file, len: m.len() })
}

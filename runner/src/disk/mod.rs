//! `rootbox disk`: a partitioned disk image (GPT or MBR) from a disk spec:
//! raw blobs at fixed offsets, and partitions holding a raw file, a FAT
//! filesystem made from a directory, or a rootbox btrfs build.
//!
//! The phases:
//! 1. *read* the spec and check every source (raw files, FAT trees);
//! 2. *contents*: btrfs builds ([`btrfs`], into scratch space beside the
//!    output) and FAT filesystems of `auto` size ([`fat`]), so the sizes
//!    are known;
//! 3. *plan*: [`rootbox_images::disk`] places partitions and blobs,
//!    checking alignment, overlaps and the end of the disk; the FAT
//!    filesystems of fixed size are made now;
//! 4. *assemble*: every content is spliced into an unnamed file beside the
//!    output ([`splice`]: data ranges only, so the disk stays sparse) and
//!    the table written;
//! 5. *verify*: the table read back with rootbox's own parser and compared
//!    with the plan, blobs and raw partitions compared byte for byte, each
//!    FAT read back out of the disk with mtools, each btrfs opened at its
//!    offset with rootbox's reader ([`verify`]);
//! 6. *publish*: the optional `.bmap` and zstd copy are made, and the disk
//!    is linked into place. Before that, nothing is at the output path.

mod btrfs;
pub mod example;
mod fat;
pub mod inspect;
mod splice;
mod verify;

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use rootbox_images::disk::hash::{hex, Digest, Sha256};
use rootbox_images::disk::table::{TableKind, SECTOR};
use rootbox_images::disk::types::{derive_bytes, NAMED_TYPES};
use rootbox_images::disk::{bmap, Content, DiskLayout, DiskSpec, PartSize};
use rootbox_sandbox::MapMode;
use serde::Serialize;

pub use btrfs::Interrupted;

/// Make a partitioned disk image (GPT or MBR) for flashing or booting.
///
/// Partitions hold a raw file, a FAT filesystem made from a directory, or
/// a rootbox btrfs build (the whole build spec); raw blobs (boot loaders)
/// go at fixed offsets outside the table. The disk is sparse, verified,
/// and appears at the output path only when complete.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  rootbox disk --spec disk.json -o sd.img
  rootbox disk --spec disk.json --bmap sd.img.bmap --json -o sd.img
  rootbox disk --spec disk.json --compress-output zstd -o sd.img.zst
  rootbox disk --example -o examples/          (the Raspberry Pi, Rock64 and UEFI layouts)
  rootbox disk --example rock64 -o rock64.img

The spec's fields are listed in the README (\"Disks\").")]
pub struct DiskArgs {
    /// The disk spec (JSON; see README).
    #[arg(long, value_name = "FILE", required_unless_present = "example")]
    spec: Option<PathBuf>,
    /// The disk image to write (with --example and no NAME: a directory).
    #[arg(short, long, value_name = "IMAGE")]
    output: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    /// Also write bmaptool's block map (.bmap 2.0) of the disk to FILE.
    #[arg(long, value_name = "FILE")]
    bmap: Option<PathBuf>,
    /// Write the disk compressed (multithreaded zstd) instead of as a
    /// sparse file.
    #[arg(long, value_name = "zstd")]
    compress_output: Option<Compression>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// A reproducible disk: GUIDs and FAT volume ids derived from --seed,
    /// FAT times fixed to SOURCE_DATE_EPOCH (default: the newest mtime of
    /// the FAT sources), btrfs partitions built with --reproducible. Also
    /// on when SOURCE_DATE_EPOCH is set.
    #[arg(long)]
    reproducible: bool,
    /// The seed of a reproducible disk (default: from the layout: table,
    /// partition names, types and sizes; never a path).
    #[arg(long, value_name = "TEXT")]
    seed: Option<String>,
    /// How ids are mapped for the btrfs builds (see `rootbox build --help`).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    map: MapMode,
    /// Make the built-in examples (rpi, rock64, uefi; all of them into the
    /// output directory when no NAME is given).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "all")]
    example: Option<String>,
}

/// Output compression.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Compression {
    Zstd,
}

/// The JSON result of `rootbox disk`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: PathBuf,
    pub table: TableKind,
    pub size_bytes: u64,
    /// Bytes of the disk that are data, not holes.
    pub mapped_bytes: u64,
    /// Bytes of what was put in: files of FAT and btrfs partitions, raw
    /// files, blobs.
    pub content_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<String>,
    pub partitions: Vec<PartitionReport>,
    pub blobs: Vec<rootbox_images::disk::PlacedBlob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmap: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compressed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reproducible: Option<ReproducibleReport>,
    pub verified: bool,
    pub timings: Timings,
}

#[derive(Debug, Serialize)]
pub struct ReproducibleReport {
    pub epoch: Option<i64>,
    pub seed: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Timings {
    /// btrfs builds and FAT filesystems of `auto` size.
    pub contents: f64,
    /// FAT filesystems of fixed size, made once placed.
    pub fixed_fat: f64,
    /// Splicing every content into the disk, and the table.
    pub assemble: f64,
    /// Reading the disk back.
    pub verify: f64,
    /// The block map and the compressed copy, and publishing.
    pub output: f64,
    pub total: f64,
}

/// One partition of the report.
#[derive(Debug, Serialize)]
pub struct PartitionReport {
    pub number: u32,
    pub name: String,
    pub start_sector: u64,
    pub sectors: u64,
    pub offset_bytes: u64,
    pub size_bytes: u64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbr_type: Option<String>,
    /// What `root=PARTUUID=` names: the GPT partition GUID, or for MBR
    /// the disk id and number (`2178694e-02`).
    pub partuuid: String,
    pub attributes: u64,
    pub bootable: bool,
    /// raw, fat, btrfs or none.
    pub content: &'static str,
    pub content_bytes: u64,
    /// The filesystem's bytes as made (the partition may be larger).
    pub filesystem_bytes: u64,
    /// btrfs: the filesystem UUID; FAT: the volume id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// btrfs: the build's own report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::pipeline::Report>,
}

pub fn main(a: &DiskArgs) -> Result<ExitCode> {
    if let Some(name) = &a.example {
        return example::main(a, name);
    }
    let spec_path = a.spec.as_ref().expect("clap requires --spec");
    let spec = DiskSpec::from_json_file(spec_path)?;
    let output = a
        .output
        .clone()
        .ok_or_else(|| anyhow!("no output given: add -o IMAGE"))?;
    match run_and_report(a, &spec, &output) {
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(&Interrupted(sig)) => {
                eprintln!("rootbox: {e}; nothing was written to {}", output.display());
                Ok(ExitCode::from((128 + sig) as u8))
            }
            None => Err(e),
        },
        ok => ok,
    }
}

fn run_and_report(a: &DiskArgs, spec: &DiskSpec, output: &Path) -> Result<ExitCode> {
    let opts = Options::from_args(a)?;
    let report = make(spec, output, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// How to make a disk, beyond the spec.
pub struct Options {
    pub force: bool,
    pub bmap: Option<PathBuf>,
    pub compress: Option<Compression>,
    pub map: MapMode,
    /// Set for a reproducible disk.
    pub reproducible: Option<Reproducible>,
}

pub use crate::pipeline::request::Reproducible;

impl Options {
    fn from_args(a: &DiskArgs) -> Result<Options> {
        let epoch = crate::pipeline::source_date_epoch()?;
        Ok(Options {
            force: a.force,
            bmap: a.bmap.clone(),
            compress: a.compress_output,
            map: a.map,
            reproducible: (a.reproducible || epoch.is_some()).then(|| Reproducible {
                epoch,
                seed: a.seed.clone(),
                explicit: a.reproducible,
            }),
        })
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

/// A partition's content once made.
enum Made {
    None,
    Raw { file: File, len: u64 },
    Fat { made: fat::Made, src: fat::Source },
    Btrfs(Box<btrfs::Built>),
}

impl Made {
    fn len(&self) -> u64 {
        match self {
            Made::None => 0,
            Made::Raw { len, .. } => *len,
            Made::Fat { made, .. } => made.size,
            Made::Btrfs(b) => b.size,
        }
    }
}

/// Opens a raw file (a partition's content or a blob) after checking it
/// is a regular file.
fn open_raw(title: &str, path: &Path) -> Result<(File, u64)> {
    let m = fs::metadata(path)
        .map_err(|e| anyhow!("{title}: {}: {e} (give an existing file)", path.display()))?;
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
    let f = File::open(path).with_context(|| format!("{title}: opening {}", path.display()))?;
    Ok((f, m.len()))
}

/// Makes the disk. Nothing is left at `output` unless it succeeds.
pub fn make(spec: &DiskSpec, output: &Path, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let seed = opts
        .reproducible
        .as_ref()
        .map(|r| r.seed.clone().unwrap_or_else(|| default_seed(spec)));
    let mut entropy = |purpose: &str| -> [u8; 16] {
        match &seed {
            Some(s) => derive_bytes(s.as_bytes(), purpose),
            None => random_bytes().unwrap_or_else(|_| derive_bytes(b"", purpose)),
        }
    };
    let title = |i: usize| format!("partition {} ({:?})", i + 1, spec.partitions[i].name);

    // --- read: every source checked before anything slow ---------------------
    let mut fat_sources: Vec<Option<fat::Source>> = Vec::new();
    let mut raws: Vec<Option<(File, u64)>> = Vec::new();
    let mut sources: Vec<PathBuf> = Vec::new();
    for (i, p) in spec.partitions.iter().enumerate() {
        fat_sources.push(match &p.content {
            Some(Content::Fat(f)) => {
                sources.push(f.dir.clone());
                Some(fat::scan(&title(i), &f.dir)?)
            }
            _ => None,
        });
        raws.push(match &p.content {
            Some(Content::Raw(f)) => Some(open_raw(&title(i), f)?),
            _ => None,
        });
    }
    let mut blobs = Vec::new();
    for b in &spec.blobs {
        blobs.push(open_raw(&format!("blob {}", b.title()), &b.file)?);
    }
    let source_refs: Vec<&Path> = sources.iter().map(|p| p.as_path()).collect();
    let target = btrfs::Target::check(output, opts.force, &source_refs)?;
    let out_dir = target.dir().to_path_buf();
    // FAT times of a reproducible disk: SOURCE_DATE_EPOCH, else the
    // newest mtime of the FAT sources.
    let fat_epoch = opts.reproducible.as_ref().map(|r| {
        r.epoch
            .unwrap_or_else(|| newest_mtime(fat_sources.iter().flatten()))
    });

    // --- contents: btrfs builds, FAT of auto size ------------------------------
    // Only btrfs builds need a named place (the build links its image
    // there, and it is unlinked at once); it goes when they are done.
    let needs_scratch = spec
        .partitions
        .iter()
        .any(|p| matches!(p.content, Some(Content::Btrfs(_))));
    let scratch = needs_scratch
        .then(|| {
            tempfile::Builder::new()
                .prefix(".rootbox-disk-")
                .tempdir_in(&out_dir)
                .with_context(|| format!("creating scratch space in {}", out_dir.display()))
        })
        .transpose()?;
    let mut made: Vec<Made> = Vec::new();
    for (i, p) in spec.partitions.iter().enumerate() {
        let m = match &p.content {
            None => Made::None,
            Some(Content::Raw(_)) => {
                let (file, len) = raws[i].take().expect("opened above");
                Made::Raw { file, len }
            }
            Some(Content::Btrfs(b)) => {
                tracing::info!("{}: building the btrfs filesystem", title(i));
                let repro = opts.reproducible.as_ref().map(|r| Reproducible {
                    epoch: r.epoch,
                    seed: seed.as_ref().map(|s| format!("{s}/partition {}", p.name)),
                    explicit: r.explicit,
                });
                let built = btrfs::build_partition(
                    b,
                    scratch.as_ref().expect("made for btrfs").path(),
                    &format!("p{}", i + 1),
                    opts.map,
                    repro,
                )
                .with_context(|| format!("{}: the btrfs build failed", title(i)))?;
                Made::Btrfs(Box::new(built))
            }
            Some(Content::Fat(f)) if p.size == PartSize::Auto => {
                let src = fat_sources[i].take().expect("scanned above");
                let vid = f
                    .volume_id
                    .map(|v| v.0)
                    .unwrap_or_else(|| volume_id(&mut entropy, i));
                let how = fat::Format {
                    size: None,
                    headroom: p.headroom.bytes(),
                    volume_id: vid,
                    epoch: fat_epoch,
                };
                let made = fat::make(&title(i), &src, f, &how, &out_dir)?;
                Made::Fat { made, src }
            }
            Some(Content::Fat(_)) => Made::None, // made once placed
        };
        made.push(m);
    }
    drop(scratch);
    let contents_secs = t0.elapsed().as_secs_f64();

    // --- plan ----------------------------------------------------------------------
    let sizes: Vec<u64> = made.iter().map(Made::len).collect();
    let blob_sizes: Vec<u64> = blobs.iter().map(|(_, l)| *l).collect();
    let layout = spec.plan(&sizes, &blob_sizes, &mut entropy)?;
    let tf = Instant::now();
    for (i, p) in spec.partitions.iter().enumerate() {
        if let (Some(Content::Fat(f)), Made::None) = (&p.content, &made[i]) {
            let src = fat_sources[i].take().expect("scanned above");
            let e = &layout.table.entries[i];
            let vid = f
                .volume_id
                .map(|v| v.0)
                .unwrap_or_else(|| volume_id(&mut entropy, i));
            let how = fat::Format {
                size: Some(e.sectors * SECTOR),
                headroom: 0,
                volume_id: vid,
                epoch: fat_epoch,
            };
            let m = fat::make(&title(i), &src, f, &how, &out_dir)?;
            made[i] = Made::Fat { made: m, src };
        }
    }
    let fixed_fat_secs = tf.elapsed().as_secs_f64();
    let ta = Instant::now();

    // --- assemble ------------------------------------------------------------------
    let disk = File::options()
        .read(true)
        .write(true)
        .open(target.mkfs_path())
        .context("opening the unnamed disk file")?;
    disk.set_len(layout.bytes())
        .with_context(|| format!("making the disk file {} bytes", layout.bytes()))?;
    for ((file, len), b) in blobs.iter().zip(&layout.blobs) {
        splice::splice(file, *len, &disk, b.offset)
            .with_context(|| format!("writing blob {} into the disk", b.name))?;
    }
    for (i, m) in made.iter().enumerate() {
        let at = layout.table.entries[i].start * SECTOR;
        let (file, len) = match m {
            Made::None => continue,
            Made::Raw { file, len } => (file, *len),
            Made::Fat { made, .. } => (&made.file, made.size),
            Made::Btrfs(b) => (&b.file, b.size),
        };
        splice::splice(file, len, &disk, at)
            .with_context(|| format!("{}: splicing its content into the disk", title(i)))?;
    }
    for (off, bytes) in layout.table.to_bytes().map_err(|e| anyhow!("{e}"))? {
        disk.write_all_at(&bytes, off)
            .context("writing the partition table")?;
    }
    let assemble_secs = ta.elapsed().as_secs_f64();

    // --- verify --------------------------------------------------------------------
    let tv = Instant::now();
    verify::table(&disk, &layout)?;
    for ((file, len), b) in blobs.iter().zip(&layout.blobs) {
        verify::same_bytes(&format!("blob {}", b.name), file, *len, &disk, b.offset)?;
    }
    for (i, m) in made.iter().enumerate() {
        let at = layout.table.entries[i].start * SECTOR;
        match m {
            Made::None => {}
            Made::Raw { file, len } => verify::same_bytes(&title(i), file, *len, &disk, at)?,
            Made::Fat { src, .. } => {
                fat::verify(&title(i), &target.mkfs_path(), at, src, &out_dir)?
            }
            Made::Btrfs(b) => {
                verify::btrfs_at(&title(i), &target.mkfs_path(), at, b.size, &b.report.uuid)?
            }
        }
    }
    let verify_secs = tv.elapsed().as_secs_f64();

    // --- publish -------------------------------------------------------------------
    let to = Instant::now();
    let mapped = splice::mapped_bytes(&disk, layout.bytes())?;
    let bmap_text = match &opts.bmap {
        Some(_) => Some(make_bmap(&disk, layout.bytes())?),
        None => None,
    };
    let size_bytes = layout.bytes();
    let compressed = match opts.compress {
        None => {
            target.publish()?;
            None
        }
        Some(Compression::Zstd) => {
            // The compressed stream goes to a second unnamed file; the
            // sparse one is dropped unpublished.
            let ztarget = btrfs::Target::check(output, opts.force, &[])?;
            let zfile = File::options()
                .write(true)
                .open(ztarget.mkfs_path())
                .context("opening the unnamed compressed file")?;
            compress_zstd(&disk, size_bytes, zfile)?;
            ztarget.publish()?;
            Some("zstd".to_string())
        }
    };
    if let (Some(p), Some(text)) = (&opts.bmap, bmap_text) {
        write_beside(p, text.as_bytes())
            .with_context(|| format!("writing the block map {}", p.display()))?;
    }
    let output_secs = to.elapsed().as_secs_f64();

    let content_bytes: u64 = made
        .iter()
        .map(|m| match m {
            Made::None => 0,
            Made::Raw { len, .. } => *len,
            Made::Fat { src, .. } => src.bytes(),
            Made::Btrfs(b) => b.report.content_bytes,
        })
        .sum::<u64>()
        + blob_sizes.iter().sum::<u64>();
    Ok(Report {
        image: output.to_path_buf(),
        table: spec.table,
        size_bytes,
        mapped_bytes: mapped,
        content_bytes,
        disk_guid: layout.table.disk_guid.map(|g| g.to_string()),
        disk_id: layout.table.disk_id.map(|d| format!("0x{d:08x}")),
        partitions: partition_reports(spec, &layout, made),
        blobs: layout.blobs.clone(),
        bmap: opts.bmap.clone(),
        compressed,
        reproducible: seed.map(|seed| ReproducibleReport {
            epoch: fat_epoch,
            seed,
        }),
        verified: true,
        timings: Timings {
            contents: contents_secs,
            fixed_fat: fixed_fat_secs,
            assemble: assemble_secs,
            verify: verify_secs,
            output: output_secs,
            total: t0.elapsed().as_secs_f64(),
        },
    })
}

fn volume_id(entropy: &mut dyn FnMut(&str) -> [u8; 16], i: usize) -> u32 {
    let b = entropy(&format!("fat volume id {}", i + 1));
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn newest_mtime<'a>(srcs: impl Iterator<Item = &'a fat::Source>) -> i64 {
    use std::os::unix::fs::MetadataExt;
    srcs.flat_map(|s| s.files.iter().map(move |(f, _)| s.root.join(f)))
        .filter_map(|p| fs::metadata(p).ok().map(|m| m.mtime()))
        .max()
        // The FAT epoch (1980-01-01): the earliest time FAT can record.
        .unwrap_or(315_532_800)
        .max(315_532_800)
}

fn partition_reports(
    spec: &DiskSpec,
    layout: &DiskLayout,
    made: Vec<Made>,
) -> Vec<PartitionReport> {
    spec.partitions
        .iter()
        .zip(&layout.table.entries)
        .zip(made)
        .map(|((p, e), m)| {
            let partuuid = match (e.guid, layout.table.disk_id) {
                (Some(g), _) => g.to_string().to_lowercase(),
                (None, Some(id)) => format!("{id:08x}-{:02x}", e.number),
                (None, None) => String::new(),
            };
            let kind = NAMED_TYPES
                .iter()
                .find(|t| t.name == p.kind)
                .map(|t| t.name.to_string())
                .unwrap_or_else(|| p.kind.clone());
            let (content, content_bytes, filesystem_bytes, fs_uuid, label, build) = match m {
                Made::None => ("none", 0, 0, None, None, None),
                Made::Raw { len, .. } => ("raw", len, len, None, None, None),
                Made::Fat { made, src } => {
                    let label = match &p.content {
                        Some(Content::Fat(f)) => f.label.clone(),
                        _ => None,
                    };
                    let id = format!(
                        "{:04X}-{:04X}",
                        made.volume_id >> 16,
                        made.volume_id & 0xFFFF
                    );
                    ("fat", src.bytes(), made.size, Some(id), label, None)
                }
                Made::Btrfs(b) => {
                    let r = b.report;
                    (
                        "btrfs",
                        r.content_bytes,
                        b.size,
                        Some(r.uuid.clone()),
                        Some(r.label.clone()),
                        Some(r),
                    )
                }
            };
            PartitionReport {
                number: e.number,
                name: p.name.clone(),
                start_sector: e.start,
                sectors: e.sectors,
                offset_bytes: e.start * SECTOR,
                size_bytes: e.sectors * SECTOR,
                kind,
                type_guid: e.type_guid.map(|g| g.to_string()),
                mbr_type: e.mbr_type.map(|t| format!("0x{t:02x}")),
                partuuid,
                attributes: e.attributes,
                bootable: e.bootable,
                content,
                content_bytes,
                filesystem_bytes,
                fs_uuid,
                label,
                build,
            }
        })
        .collect()
}

/// The .bmap of the disk: its data ranges in 4 KiB blocks, each hashed.
fn make_bmap(disk: &File, len: u64) -> Result<String> {
    const BLOCK: u64 = 4096;
    let data = splice::data_ranges(disk, len)?;
    let mut ranges = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (first, last) in bmap::block_ranges(&data, BLOCK) {
        let mut h = Sha256::new();
        let (mut pos, end) = (first * BLOCK, ((last + 1) * BLOCK).min(len));
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            disk.read_exact_at(&mut buf[..n], pos)?;
            h.update(&buf[..n]);
            pos += n as u64;
        }
        ranges.push(bmap::Range {
            first,
            last,
            sha256: hex(&h.finalize()),
        });
    }
    Ok(bmap::render(len, BLOCK, &ranges))
}

/// zstd, one worker per CPU. Holes compress to almost nothing but are
/// read as zeros.
fn compress_zstd(disk: &File, len: u64, out: File) -> Result<()> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u32;
    let mut enc = zstd::stream::Encoder::new(std::io::BufWriter::new(out), 3)?;
    enc.multithread(threads)
        .context("starting zstd's worker threads")?;
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0u64;
    while pos < len {
        let n = ((len - pos) as usize).min(buf.len());
        disk.read_exact_at(&mut buf[..n], pos)?;
        enc.write_all(&buf[..n])?;
        pos += n as u64;
    }
    enc.finish()?.flush()?;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file beside it.
fn write_beside(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut t = tempfile::NamedTempFile::new_in(dir)?;
    t.write_all(bytes)?;
    t.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn print_summary(r: &Report) {
    println!(
        "disk       {} ({} table, {} bytes, {} mapped, {} of content)",
        r.image.display(),
        r.table,
        r.size_bytes,
        r.mapped_bytes,
        r.content_bytes
    );
    if let Some(g) = &r.disk_guid {
        println!("disk guid  {g}");
    }
    if let Some(id) = &r.disk_id {
        println!("disk id    {id}");
    }
    for b in &r.blobs {
        println!(
            "blob       {:<16} at byte {:>10} ({} bytes)",
            b.name, b.offset, b.size
        );
    }
    for p in &r.partitions {
        println!(
            "partition  {} {:<12} sectors {:>9}-{:<9} {:<6} {:<12} PARTUUID={}{}",
            p.number,
            p.name,
            p.start_sector,
            p.start_sector + p.sectors - 1,
            p.content,
            p.kind,
            p.partuuid,
            if p.bootable { " bootable" } else { "" }
        );
    }
    println!(
        "verified   table, blobs, raw partitions, FAT contents and btrfs superblocks read back"
    );
}

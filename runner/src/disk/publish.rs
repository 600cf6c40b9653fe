//! Phase 6 of a disk: the optional block map (`.bmap` 2.0) and zstd copy
//! made, and the disk linked into place (or, where a build's file became
//! the disk, moved there from the scratch directory). Before that,
//! nothing is at the output path.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::RenameFlags;
use rootbox_images::disk::bmap;
use rootbox_images::disk::hash::{hex, Digest, Sha256};

use super::assemble::Disk;
use super::options::{Compression, Options};
use super::splice;
use crate::output::Target;

/// What publishing did.
pub struct Published {
    /// Bytes of the disk that are data, not holes.
    pub mapped: u64,
    /// The compression of the output, if any.
    pub compressed: Option<String>,
}

/// Publishes the disk (`len` bytes of `disk`: the unnamed file of
/// `target`, or an adopted build's) at `output`.
pub fn publish(
    target: Target,
    disk: &Disk,
    len: u64,
    output: &Path,
    opts: &Options,
) -> Result<Published> {
    let file = &disk.file;
    let mapped = splice::mapped_bytes(file, len)?;
    let bmap_text = match &opts.bmap {
        Some(_) => Some(make_bmap(file, len)?),
        None => None,
    };
    let compressed = match opts.compress {
        None => {
            match &disk.adopted {
                None => {
                    target.publish()?;
                }
                Some(a) => move_into_place(file, &a.name, output, opts.force)?,
            }
            None
        }
        Some(Compression::Zstd) => {
            // The compressed stream goes to a second unnamed file; the
            // sparse one is dropped unpublished.
            let ztarget = Target::check(output, opts.force, &[])?;
            let zfile = File::options()
                .write(true)
                .open(ztarget.mkfs_path())
                .context("opening the unnamed compressed file")?;
            compress_zstd(file, len, zfile)?;
            ztarget.publish()?;
            Some("zstd".to_string())
        }
    };
    if let (Some(p), Some(text)) = (&opts.bmap, bmap_text) {
        write_beside(p, text.as_bytes())
            .with_context(|| format!("writing the block map {}", p.display()))?;
    }
    Ok(Published { mapped, compressed })
}

/// Moves the disk `file`, named `name` in the scratch directory beside
/// `output`, to `output`: mode 0644, as a published unnamed file gets.
fn move_into_place(file: &File, name: &Path, output: &Path, force: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .context("setting the disk's mode")?;
    let flags = if force {
        RenameFlags::empty()
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    match nix::fcntl::renameat2(None, name, None, output, flags) {
        Ok(()) => Ok(()),
        Err(nix::Error::EEXIST) => bail!(
            "output {} appeared while the disk was made (another run?): use --force to replace it",
            output.display()
        ),
        Err(e) => Err(e).with_context(|| format!("moving the disk to {}", output.display())),
    }
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

//! `rootbox inspect`: what an image records (subvolumes, owners, modes,
//! xattrs), read without root and without mounting it: a btrfs image, an
//! ext4, erofs or squashfs image (rootbox's readers, `crate::fs::read`), a
//! FAT image (its paths), or, for a partitioned disk, its table and what
//! each partition holds, whatever it is (`crate::disk::inspect`, which
//! lists btrfs partitions through [`list_image`], handed to it).
//!
//! Thin glue: reading is `rootbox_btrfs` (and
//! `rootbox_images::disk::table` for the partition table), formatting is
//! `rootbox_btrfs::listing`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rootbox_btrfs::{listing, Image, ReadError, Subvolume};
use serde_json::{json, Value};

/// List the subvolumes and files of a btrfs image as recorded on disk, or
/// the partitions of a disk image and what each holds.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// The image file: btrfs, ext4, erofs, squashfs or FAT, or a GPT/MBR
    /// disk.
    pub image: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// List only this subvolume: its path from the top level (`@nix`),
    /// its id, or `/` for the top level.
    #[arg(long)]
    pub subvol: Option<String>,
    /// List only this subtree: relative to `--subvol` when given, else a
    /// path from the top level (`@nix/store`), which may lie in any subvolume.
    pub path: Option<String>,
}

/// One subtree to list.
struct Listing<'a> {
    subvol: &'a Subvolume,
    path: Vec<u8>,
}

/// Run `rootbox inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    let written = match crate::disk::inspect::read_table(&args.image)? {
        Some(table) => {
            let list = |out: &mut dyn Write, image: &Image| list_image(out, args, image);
            crate::disk::inspect::write(&mut out, &args.image, args.json, &table, &list)
        }
        None => match other_filesystem(&args.image)? {
            Some(kind) => list_other(&mut out, args, kind),
            None => Image::open(&args.image)
                .with_context(|| {
                    format!(
                        "{}: no partition table, and no ext4, erofs, squashfs or FAT superblock; \
                         reading it as btrfs",
                        args.image.display()
                    )
                })
                .and_then(|image| list_image(&mut out, args, &image)),
        },
    };
    match written.and_then(|()| out.flush().map_err(anyhow::Error::from)) {
        // `rootbox inspect img | head` is not an error.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// A filesystem other than btrfs, told by its superblock.
enum Other {
    /// ext4, erofs or squashfs, with the UUID and label its superblock has.
    Built(
        rootbox_images::fs::Filesystem,
        Option<String>,
        Option<String>,
    ),
    /// A FAT boot sector.
    Vfat,
}

/// Which filesystem other than btrfs the image holds, if any.
fn other_filesystem(path: &std::path::Path) -> Result<Option<Other>> {
    use std::io::Read;
    let mut head = [0u8; 2048];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    if n < head.len() {
        return Ok(None);
    }
    if let Some((fs, uuid, label)) = crate::disk::inspect::built_kind(&head) {
        return Ok(Some(Other::Built(fs, uuid, label)));
    }
    Ok(crate::disk::inspect::fat_boot_sector(&head).then_some(Other::Vfat))
}

/// Lists an ext4, erofs, squashfs or FAT image: every path, with its
/// owner and mode where the filesystem has them.
fn list_other(out: &mut dyn Write, args: &InspectArgs, kind: Other) -> Result<()> {
    if args.subvol.is_some() {
        bail!(
            "--subvol: {} is not a btrfs image, it has no subvolumes",
            args.image.display()
        );
    }
    let image = &args.image;
    let (name, uuid, label, entries) = match kind {
        Other::Built(fs, uuid, label) => {
            let inodes = crate::fs::read(fs, image)
                .with_context(|| format!("reading the {fs} image {}", image.display()))?;
            let entries = inodes.iter().map(|i| json!(i)).collect::<Vec<_>>();
            (fs.to_string(), uuid, label, entries)
        }
        Other::Vfat => {
            let img = image
                .to_str()
                .with_context(|| format!("{}: mtools takes a UTF-8 path", image.display()))?;
            let paths = crate::fs::vfat::list(img)
                .with_context(|| format!("reading the FAT image {}", image.display()))?;
            let entries = paths.iter().map(|p| json!({ "path": p })).collect();
            ("vfat".to_string(), None, None, entries)
        }
    };
    let under = args
        .path
        .as_deref()
        .map(|p| format!("/{}", p.trim_start_matches('/')));
    let entries: Vec<Value> = entries
        .into_iter()
        .filter(|e| match (&under, e["path"].as_str()) {
            (Some(u), Some(p)) => p == u || p.starts_with(&format!("{}/", u.trim_end_matches('/'))),
            _ => true,
        })
        .collect();
    if args.json {
        let doc = json!({ "filesystem": name, "uuid": uuid, "label": label, "entries": entries });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(out, "image      {} ({name})", image.display())?;
    if uuid.is_some() || label.is_some() {
        writeln!(
            out,
            "uuid       {}   label {:?}",
            uuid.as_deref().unwrap_or("-"),
            label.unwrap_or_default()
        )?;
    }
    for e in &entries {
        let path = e["path"].as_str().unwrap_or("?");
        match (e["mode"].as_u64(), e["uid"].as_u64(), e["gid"].as_u64()) {
            (Some(mode), Some(uid), Some(gid)) => {
                let mode = listing::mode_string(mode as u32);
                let target = e["target"]
                    .as_str()
                    .map(|t| format!(" -> {t}"))
                    .unwrap_or_default();
                writeln!(out, "{mode} {uid:>5}:{gid:<5} {path}{target}")?;
            }
            _ => writeln!(out, "{path}")?,
        }
    }
    Ok(())
}

/// Lists one btrfs filesystem (an image, or a partition of a disk) as
/// text or JSON.
pub fn list_image(out: &mut dyn Write, args: &InspectArgs, image: &Image) -> Result<()> {
    let subvols = image.subvolumes().context("listing subvolumes")?;
    let default = image
        .default_subvolume()
        .context("reading the default subvolume")?;
    let listings = select(&subvols, args.subvol.as_deref(), args.path.as_deref())?;
    if args.json {
        write_json(out, image, &subvols, default, &listings)
    } else {
        write_text(out, image, &subvols, default, &listings)
    }
}

fn select<'a>(
    subvols: &'a [Subvolume],
    subvol: Option<&str>,
    path: Option<&str>,
) -> Result<Vec<Listing<'a>>> {
    let path = path.map(|p| p.trim_matches('/').as_bytes().to_vec());
    match (subvol, path) {
        (Some(name), path) => Ok(vec![Listing {
            subvol: find_subvolume(subvols, name)?,
            path: path.unwrap_or_default(),
        }]),
        (None, Some(path)) => {
            // The deepest subvolume whose path is a prefix of `path`.
            let (subvol, rest) = subvols
                .iter()
                .filter_map(|s| strip_dir_prefix(&path, &s.path).map(|rest| (s, rest)))
                .max_by_key(|(s, _)| s.path.len())
                .context("the image has no top-level subvolume")?;
            Ok(vec![Listing {
                subvol,
                path: rest.to_vec(),
            }])
        }
        (None, None) => Ok(subvols
            .iter()
            .map(|subvol| Listing {
                subvol,
                path: Vec::new(),
            })
            .collect()),
    }
}

/// `path` below directory `prefix` (both without leading slash).
fn strip_dir_prefix<'p>(path: &'p [u8], prefix: &[u8]) -> Option<&'p [u8]> {
    if prefix.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    match rest.first() {
        None => Some(rest),
        Some(b'/') => Some(&rest[1..]),
        Some(_) => None,
    }
}

fn find_subvolume<'a>(subvols: &'a [Subvolume], name: &str) -> Result<&'a Subvolume> {
    let wanted = name.trim_matches('/').as_bytes();
    if let Some(s) = subvols.iter().find(|s| s.path == wanted) {
        return Ok(s);
    }
    if let Some(s) = name
        .parse::<u64>()
        .ok()
        .and_then(|id| subvols.iter().find(|s| s.id == id))
    {
        return Ok(s);
    }
    let known: Vec<String> = subvols
        .iter()
        .map(|s| format!("{} ({})", subvol_title(s), s.id))
        .collect();
    bail!(
        "no subvolume {name:?} in the image; it has: {}",
        known.join(", ")
    )
}

fn subvol_title(s: &Subvolume) -> String {
    if s.id == 5 {
        "<top level>".to_string()
    } else {
        listing::escape(&s.path)
    }
}

fn write_text(
    out: &mut dyn Write,
    image: &Image,
    subvols: &[Subvolume],
    default: u64,
    listings: &[Listing<'_>],
) -> Result<()> {
    let info = image.info();
    writeln!(
        out,
        "filesystem {} label {:?} nodesize {} sectorsize {} csum {} generation {} size {} used {}",
        info.fsid,
        info.label,
        info.nodesize,
        info.sectorsize,
        info.csum_type,
        info.generation,
        info.total_bytes,
        info.bytes_used
    )?;
    writeln!(out, "subvolumes:")?;
    for s in subvols {
        writeln!(out, "{}", listing::subvolume_line(s, default))?;
    }
    for l in listings {
        writeln!(out)?;
        writeln!(out, "subvolume {} {}:", l.subvol.id, subvol_title(l.subvol))?;
        walk(image, l, &mut |e| {
            writeln!(out, "{}", listing::entry_line(e)).map_err(stdout_error)
        })?;
    }
    Ok(())
}

fn write_json(
    out: &mut dyn Write,
    image: &Image,
    subvols: &[Subvolume],
    default: u64,
    listings: &[Listing<'_>],
) -> Result<()> {
    let mut trees = Vec::new();
    for l in listings {
        let mut entries = Vec::new();
        walk(image, l, &mut |e| {
            entries.push(listing::entry_json(e));
            Ok(())
        })?;
        trees.push(json!({
            "subvolume": l.subvol.id,
            "subvolume_path": listing::escape(&l.subvol.path),
            "path": listing::escape(&l.path),
            "entries": entries,
        }));
    }
    let doc: Value = json!({
        "filesystem": listing::info_json(image.info()),
        "default_subvolume": default,
        "subvolumes": subvols.iter().map(|s| listing::subvolume_json(s, default)).collect::<Vec<_>>(),
        "listings": trees,
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)?;
    Ok(())
}

fn walk(
    image: &Image,
    l: &Listing<'_>,
    f: &mut dyn FnMut(&rootbox_btrfs::Entry) -> Result<(), ReadError>,
) -> Result<()> {
    image.walk_path(l.subvol.id, &l.path, f).with_context(|| {
        format!(
            "listing {} in subvolume {} ({})",
            if l.path.is_empty() {
                "/".to_string()
            } else {
                listing::escape(&l.path)
            },
            l.subvol.id,
            subvol_title(l.subvol)
        )
    })
}

/// Carry a write error through the reader's callback.
fn stdout_error(e: io::Error) -> ReadError {
    ReadError::Io {
        path: PathBuf::from("<stdout>"),
        offset: 0,
        source: e,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

//! `rootbox disk`: its flags ([`DiskArgs`]) made into [`Options`], the
//! disk made ([`super::make::make`]), the report printed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use rootbox_images::disk::table::TableKind;
use rootbox_images::disk::{BlobSpec, DiskSpec};
use rootbox_images::repart;
use rootbox_sandbox::MapMode;

use super::example;
use super::make::make;
use super::options::{Compression, Options, Reproducible};
use super::report::print_summary;
use super::split;
use crate::interrupted::Interrupted;

/// Make a partitioned disk image (GPT or MBR) for flashing or booting.
///
/// Partitions hold a raw file, a FAT filesystem made from a directory, or
/// a rootbox build of any filesystem (the whole build spec); raw blobs (boot loaders)
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
  rootbox disk --definitions repart.d --copy-source root/ -o disk.img
  rootbox disk --definitions repart.d --table mbr --blob idbloader.img@64 --print-spec

The spec's fields are listed in the README (\"Disks\"); the repart.d keys
in \"From systemd-repart definitions\".")]
pub struct DiskArgs {
    /// The disk spec (JSON; see README).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["example", "definitions"])]
    spec: Option<PathBuf>,
    /// Derive the disk spec from systemd-repart partition definitions:
    /// DIR/*.conf in file-name order, as systemd-repart reads them.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["spec", "example"])]
    definitions: Option<PathBuf>,
    /// With --definitions: where CopyFiles= sources are taken from
    /// (systemd-repart's --copy-source; default /).
    #[arg(long, alias = "root", value_name = "DIR", requires = "definitions")]
    copy_source: Option<PathBuf>,
    /// With --definitions: the partition table, gpt (default) or mbr.
    #[arg(long, value_name = "KIND", requires = "definitions", value_parser = ["gpt", "mbr"])]
    table: Option<String>,
    /// With --definitions: a raw file at a 512-byte sector outside the
    /// table (a boot loader), FILE@SECTOR; repeatable.
    #[arg(long, value_name = "FILE@SECTOR", requires = "definitions")]
    blob: Vec<String>,
    /// With --definitions: where partitions start (default 1M).
    #[arg(long, value_name = "SIZE", requires = "definitions")]
    alignment: Option<rootbox_images::size::ByteSize>,
    /// With --definitions: the architecture of Type=root, usr and their -verity (x86-64,
    /// x86, arm64, arm, riscv64; default this machine's).
    #[arg(long, value_name = "ARCH", requires = "definitions")]
    architecture: Option<String>,
    /// With --definitions: also write each partition's bytes to
    /// IMAGE.NAME.raw beside the disk (IMAGE without .raw; NAME from
    /// SplitName=, default the type's name), as systemd-repart --split.
    #[arg(long, requires = "definitions", conflicts_with = "compress_output")]
    split: bool,
    /// Print the disk spec (JSON) and exit without making the disk.
    #[arg(long)]
    print_spec: bool,
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
    /// the FAT sources), partitions built with --reproducible. Also
    /// on when SOURCE_DATE_EPOCH is set.
    #[arg(long)]
    reproducible: bool,
    /// The seed of a reproducible disk (default: from the layout: table,
    /// partition names, types and sizes; never a path).
    #[arg(long, value_name = "TEXT")]
    seed: Option<String>,
    /// How ids are mapped for the partitions' builds (see `rootbox build --help`).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    map: MapMode,
    /// Make the built-in examples (rpi, rock64, uefi; all of them into the
    /// output directory when no NAME is given).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "all")]
    example: Option<String>,
}

impl DiskArgs {
    /// The options the flags give.
    fn options(&self) -> Result<Options> {
        let epoch = crate::reproducible::source_date_epoch()?;
        Ok(Options {
            force: self.force,
            bmap: self.bmap.clone(),
            compress: self.compress_output,
            map: self.map,
            reproducible: (self.reproducible || epoch.is_some()).then(|| Reproducible {
                epoch,
                seed: self.seed.clone(),
                explicit: self.reproducible,
            }),
        })
    }
}

/// Runs `rootbox disk`.
pub fn main(a: &DiskArgs) -> Result<ExitCode> {
    if let Some(name) = &a.example {
        return example::main(name, a.output.as_deref(), a.json, a.options()?);
    }
    let (spec, split_names) = match &a.definitions {
        Some(dir) => {
            let d = definitions(a, dir)?;
            (d.spec, d.split_names)
        }
        None => (
            DiskSpec::from_json_file(a.spec.as_ref().expect("clap requires --spec"))?,
            Vec::new(),
        ),
    };
    if a.print_spec {
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    let output = a.output.clone().context("no output given: add -o IMAGE")?;
    let mut report = match make(&spec, &output, &a.options()?) {
        Ok(r) => r,
        Err(e) => match e.downcast_ref::<Interrupted>() {
            Some(&Interrupted(sig)) => {
                eprintln!("rootbox: {e}; nothing was written to {}", output.display());
                return Ok(ExitCode::from((128 + sig) as u8));
            }
            None => return Err(e),
        },
    };
    if a.split {
        let paths = split::write(&output, &report.partitions, &split_names)?;
        for (p, path) in report.partitions.iter_mut().zip(paths) {
            p.split_path = path;
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The disk spec systemd-repart definitions in `dir` give, with the
/// disk-level flags.
fn definitions(a: &DiskArgs, dir: &std::path::Path) -> Result<repart::Derived> {
    let blobs = a.blob.iter().map(|b| blob(b)).collect::<Result<Vec<_>>>()?;
    let copy_source = a
        .copy_source
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("--copy-source")?;
    if let Some(arch) = a.architecture.as_deref() {
        if !repart::types::known_arch(arch) {
            anyhow::bail!(
                "--architecture {arch}: rootbox knows {}",
                repart::types::arch_names()
            );
        }
    }
    let opts = repart::Options {
        copy_source,
        table: match a.table.as_deref() {
            Some("mbr") => TableKind::Mbr,
            _ => TableKind::Gpt,
        },
        alignment: a.alignment,
        blobs,
        arch: a.architecture.clone(),
    };
    Ok(repart::from_dir(dir, &opts)?)
}

/// `--blob FILE@SECTOR`.
fn blob(arg: &str) -> Result<BlobSpec> {
    let (file, sector) = arg
        .rsplit_once('@')
        .with_context(|| format!("--blob {arg}: write FILE@SECTOR, e.g. idbloader.img@64"))?;
    let sector = sector
        .parse()
        .with_context(|| format!("--blob {arg}: {sector:?} is not a sector number"))?;
    Ok(BlobSpec {
        file: PathBuf::from(file),
        name: None,
        offset: None,
        sector: Some(sector),
        max_size: None,
    })
}

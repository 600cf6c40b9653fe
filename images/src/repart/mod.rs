//! systemd-repart's partition definitions (`repart.d/*.conf`, repart.d(5)
//! of systemd 262) made into rootbox's disk spec ([`DiskSpec`]), so
//! `rootbox disk --definitions DIR` makes the disk `systemd-repart
//! --offline=yes --empty=create --size=auto` would make — with owners
//! kept, on MBR and with blobs below sector 2048 when asked.
//!
//! [`from_dir`] reads `DIR/*.conf` sorted by file name (repart's order);
//! each file's INI shape is `ini.rs`, its keys `definition.rs`, the
//! partition they give `translate.rs`, and the Verity data/hash pairs are
//! matched here. Every key or value rootbox does not do is an error naming
//! the file, line and key ([`RepartError::At`]); nothing is written. Only
//! the definition files are read.

mod definition;
mod error;
mod ini;
mod translate;
pub mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{Problem, RepartError};

use crate::disk::table::TableKind;
use crate::disk::{BlobSpec, Content, DiskSpec, PartitionSpec, VerityHashSpec};
use crate::size::{ByteSize, Size};
use crate::spec::Filesystem;
use definition::{Definition, Verity};

/// What the command line adds to the definitions.
#[derive(Debug, Clone)]
pub struct Options {
    /// `CopyFiles=` sources are taken below this (repart's
    /// `--copy-source`/`--root`); default `/`, as in repart.
    pub copy_source: Option<PathBuf>,
    /// The table (repart writes GPT only).
    pub table: TableKind,
    /// Where partitions start (default 1 MiB).
    pub alignment: Option<ByteSize>,
    /// Raw files at fixed sectors, outside the table.
    pub blobs: Vec<BlobSpec>,
    /// The architecture of `Type=root` and the like (repart's
    /// `--architecture=`; default the machine's).
    pub arch: Option<String>,
}

/// One definition read, with its file.
struct Read {
    file: PathBuf,
    def: Definition,
    part: PartitionSpec,
    split: Option<String>,
}

/// What the definitions give: the disk spec, and what repart's `--split`
/// names each partition's artifact.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The disk spec.
    pub spec: DiskSpec,
    /// Per partition, in order: its `SplitName=` (`%t` expanded), None for
    /// `SplitName=-`.
    pub split_names: Vec<Option<String>>,
}

/// Reads `dir/*.conf` and derives the disk spec.
pub fn from_dir(dir: &Path, opts: &Options) -> Result<Derived, RepartError> {
    let io = |source| RepartError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|f| f.extension().is_some_and(|e| e == "conf") && !f.is_dir());
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        return Err(RepartError::Empty(dir.to_owned()));
    }
    let arch = opts.arch.as_deref().unwrap_or(types::host_arch());
    let root = PathBuf::from("/");
    let paths = translate::Paths {
        copy_source: opts.copy_source.as_deref().unwrap_or(&root),
        definitions: dir,
    };
    let mut read = Vec::new();
    for file in files {
        let at = |(line, key, problem): translate::Located| RepartError::At {
            file: file.clone(),
            line,
            key,
            problem,
        };
        let text = std::fs::read_to_string(&file).map_err(|source| RepartError::Io {
            path: file.clone(),
            source,
        })?;
        let def = definition::read(&ini::parse(&text).map_err(at)?, arch).map_err(at)?;
        let part = translate::partition(&def, opts.table, &paths).map_err(at)?;
        let split = translate::split_name(&def).map_err(at)?;
        read.push(Read {
            file,
            def,
            part,
            split,
        });
    }
    unique_labels(&read)?;
    pair_verity(&mut read)?;
    let spec = DiskSpec {
        table: opts.table,
        disk_guid: None,
        disk_id: None,
        alignment: opts.alignment.unwrap_or(ByteSize(ByteSize::MIB)),
        size: Size::Auto,
        partitions: read.iter().map(|r| r.part.clone()).collect(),
        blobs: opts.blobs.clone(),
    };
    spec.validate(&dir.display().to_string())
        .map_err(|e| RepartError::Spec {
            dir: dir.to_owned(),
            source: Box::new(e),
        })?;
    let split_names = read.into_iter().map(|r| r.split).collect();
    Ok(Derived { spec, split_names })
}

/// Each partition's name (its label) is unique: rootbox names
/// partitions by it.
fn unique_labels(read: &[Read]) -> Result<(), RepartError> {
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for r in read {
        if let Some(first) = seen.insert(&r.part.name, &r.file) {
            let (line, key) = match &r.def.label {
                Some(l) => (l.line, "Label="),
                None => (r.def.kind.as_ref().map_or(1, |k| k.line), "Type="),
            };
            return Err(RepartError::At {
                file: r.file.clone(),
                line,
                key: key.into(),
                problem: Problem::LabelTaken {
                    label: r.part.name.clone(),
                    other: first.to_owned(),
                },
            });
        }
    }
    Ok(())
}

/// Matches each `Verity=data` partition with the `Verity=hash`
/// partition of its `VerityMatchKey=`, checks the data is a read-only
/// filesystem, and gives the hash partition its content.
fn pair_verity(read: &mut [Read]) -> Result<(), RepartError> {
    let mut groups: BTreeMap<String, [Option<usize>; 2]> = BTreeMap::new();
    for (i, r) in read.iter().enumerate() {
        let Some(v) = &r.def.verity else { continue };
        let err = |problem| RepartError::At {
            file: r.file.clone(),
            line: v.line,
            key: "Verity=".into(),
            problem,
        };
        let key = r.def.verity_key.as_ref().ok_or_else(|| {
            err(Problem::Conflict(
                "Verity= needs VerityMatchKey=, the name its data and hash partitions share",
            ))
        })?;
        let role = if v.value == Verity::Data { 0 } else { 1 };
        let slot = &mut groups.entry(key.value.clone()).or_default()[role];
        if let Some(other) = slot {
            return Err(err(Problem::VerityRoleTaken {
                key: key.value.clone(),
                role: if role == 0 { "data" } else { "hash" },
                other: read[*other].file.clone(),
            }));
        }
        *slot = Some(i);
        if v.value == Verity::Data {
            read_only_data(r)?;
        }
    }
    for (key, pair) in groups {
        match pair {
            [Some(d), Some(h)] => {
                let data = read[d].part.name.clone();
                read[h].part.content = Some(Content::VerityHash(VerityHashSpec { data }));
            }
            [Some(i), None] | [None, Some(i)] => {
                let r = &read[i];
                let (has, lacks) = if pair[0].is_some() {
                    ("data", "hash")
                } else {
                    ("hash", "data")
                };
                return Err(RepartError::At {
                    file: r.file.clone(),
                    line: r.def.verity.as_ref().map_or(1, |v| v.line),
                    key: "Verity=".into(),
                    problem: Problem::VerityUnpaired { has, lacks, key },
                });
            }
            [None, None] => unreachable!("a group has a member"),
        }
    }
    Ok(())
}

/// A Verity data partition's filesystem is read-only (erofs, squashfs).
fn read_only_data(r: &Read) -> Result<(), RepartError> {
    let fs = match &r.part.content {
        Some(Content::Build(s)) => Some(s.filesystem),
        _ => None,
    };
    if matches!(fs, Some(Filesystem::Erofs | Filesystem::Squashfs)) {
        return Ok(());
    }
    let (line, key) = match &r.def.format {
        Some(f) => (f.line, "Format="),
        None => (r.def.verity.as_ref().map_or(1, |v| v.line), "Verity="),
    };
    Err(RepartError::At {
        file: r.file.clone(),
        line,
        key: key.into(),
        problem: Problem::VerityWritable {
            what: fs.map_or("an unformatted partition".to_string(), |f| f.to_string()),
        },
    })
}

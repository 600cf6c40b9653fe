//! The disk model: a partition table (GPT or MBR) with partitions whose
//! content is raw bytes or a filesystem built from a tree — a rootbox
//! build of any filesystem (`build`: btrfs, ext4, erofs, squashfs), or
//! vfat from a directory (`fat`) — plus raw blobs at fixed offsets outside
//! the table (a boot loader at sector 64).
//!
//! ```json
//! {
//!   "table": "gpt",
//!   "blobs": [{"file": "idbloader.img", "sector": 64}],
//!   "partitions": [
//!     {"name": "uboot", "startSector": 16384, "size": "8M", "type": "linux",
//!      "content": {"raw": "u-boot.itb"}},
//!     {"name": "boot", "type": "esp", "content": {"fat": {"dir": "./boot"}}},
//!     {"name": "store", "type": "linux",
//!      "content": {"build": {"filesystem": "erofs", "rootfs": "./store"}}},
//!     {"name": "root", "type": "root-arm64", "attributes": ["legacy-bootable"],
//!      "content": {"btrfs": {"rootfs": "./root"}}}
//!   ]
//! }
//! ```
//!
//! [`DiskSpec`] is read and checked here ([`Content::source`] resolves the
//! `btrfs` and `fat` shorthands; FAT's limits are
//! [`crate::fs::vfat`]'s); [`DiskSpec::plan`] places the partitions once
//! the runner knows how big each content is, checking alignment, overlaps
//! (partitions, blobs, the table itself) and the end of the disk
//! ([`LayoutError`]); [`table::Table`] turns the result into bytes and
//! parses bytes back. Nothing here runs a process or touches a file but
//! the spec.

pub mod bmap;
pub mod hash;
pub mod table;
pub mod types;

use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::fs::vfat::{self, VfatError};
use crate::size::{ByteSize, Size};
use crate::spec::{Spec, SpecError};
use table::{
    Entry, Table, TableKind, GPT_BACKUP_SECTORS, GPT_ENTRIES, GPT_FIRST_USABLE, MBR_ENTRIES, SECTOR,
};
use types::{Attribute, Guid, PartType};

/// A disk: its table, partitions and blobs. Unknown JSON keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DiskSpec {
    /// `gpt` or `mbr`.
    pub table: TableKind,
    /// GPT: the disk GUID (random, or derived from the seed of a
    /// reproducible disk, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_guid: Option<Guid>,
    /// MBR: the disk identifier, e.g. `"0x2178694e"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_id: Option<Hex32>,
    /// Where partitions without an explicit start begin: the next multiple
    /// of this after the previous partition; explicit starts must be
    /// multiples of it. Default 1 MiB; any multiple of 512 bytes.
    #[serde(default = "default_alignment")]
    pub alignment: ByteSize,
    /// `auto` (the end of the last partition or blob, plus the backup GPT)
    /// or a fixed size.
    #[serde(default)]
    pub size: Size,
    #[serde(default)]
    /// The partitions, numbered 1… in this order.
    pub partitions: Vec<PartitionSpec>,
    /// Raw files written at fixed offsets, outside every partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<BlobSpec>,
}

fn default_alignment() -> ByteSize {
    ByteSize(ByteSize::MIB)
}

/// A 32-bit number written in hex (`"0x2178694e"`) or as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex32(pub u32);

impl Serialize for Hex32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("0x{:08x}", self.0))
    }
}

impl<'de> Deserialize<'de> for Hex32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hex32, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Hex32)
                .ok_or_else(|| de::Error::custom(format!("{n} is not a 32-bit number"))),
            serde_json::Value::String(s) => {
                let h = s
                    .strip_prefix("0x")
                    .or_else(|| s.strip_prefix("0X"))
                    .unwrap_or(&s);
                let h: String = h.chars().filter(|&c| c != '-').collect();
                (h.len() <= 8)
                    .then(|| u32::from_str_radix(&h, 16).ok())
                    .flatten()
                    .map(Hex32)
                    .ok_or_else(|| {
                        de::Error::custom(format!(
                            "{s:?} is not a 32-bit hex number such as \"0x2178694e\""
                        ))
                    })
            }
            v => Err(de::Error::custom(format!(
                "expected a hex string such as \"0x2178694e\", found {v}"
            ))),
        }
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PartitionSpec {
    /// The GPT partition name (PARTLABEL); with MBR only a name in
    /// messages and reports.
    pub name: String,
    /// Start as a byte offset (`"8M"`); excludes `startSector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<ByteSize>,
    /// Start as a 512-byte sector number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_sector: Option<u64>,
    /// `auto` (fits the content, plus `headroom`), `fill` (to the end of a
    /// fixed-size disk; last partition only), or a size.
    #[serde(default)]
    pub size: PartSize,
    /// Free space after the content when `size` is `auto` (inside the
    /// filesystem for FAT; after it for btrfs and raw content).
    #[serde(default)]
    pub headroom: ByteSize,
    /// A type name (`esp`, `linux`, `root-x86-64`, …), a GPT type GUID, or
    /// an MBR type byte (`"0x83"`, `"b"`).
    #[serde(rename = "type")]
    pub kind: String,
    /// GPT attribute bits: names (`legacy-bootable`, `read-only`, …) or
    /// numbers 0–63.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Attribute>,
    /// MBR: the boot indicator.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootable: bool,
    /// GPT: the partition's unique GUID (PARTUUID); random or derived when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guid: Option<Guid>,
    /// What the partition holds; none leaves it zero (a hole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// A partition's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartSize {
    #[default]
    /// Fits the content, plus `headroom`.
    Auto,
    /// To the end of the disk's usable sectors.
    Fill,
    /// Exactly this many bytes.
    Fixed(ByteSize),
}

impl Serialize for PartSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PartSize::Auto => s.serialize_str("auto"),
            PartSize::Fill => s.serialize_str("fill"),
            PartSize::Fixed(b) => b.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PartSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<PartSize, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        if v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("fill")) {
            return Ok(PartSize::Fill);
        }
        match Size::deserialize(v).map_err(de::Error::custom)? {
            Size::Auto => Ok(PartSize::Auto),
            Size::Fixed(b) => Ok(PartSize::Fixed(b)),
        }
    }
}

/// What goes into a partition, as the spec writes it: raw bytes, or a
/// filesystem built from a tree. `fat` and `btrfs` are shorthands kept
/// from before `build`; [`Content::source`] resolves them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Content {
    /// A file copied in as it is (`{"raw": "u-boot.itb"}`).
    Raw(PathBuf),
    /// A rootbox build: the whole build spec, whose `filesystem` picks
    /// btrfs (the default), ext4, erofs or squashfs.
    Build(Box<Spec>),
    /// A FAT filesystem made from a directory.
    Fat(FatSpec),
    /// Shorthand for `build` with `"filesystem": "btrfs"` (another
    /// filesystem here is refused).
    Btrfs(Box<Spec>),
}

/// A partition's content with the shorthands resolved: raw bytes, or a
/// filesystem built from a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A file copied in as it is.
    Raw(&'a Path),
    /// A filesystem built by the build pipeline from this spec.
    Build(&'a Spec),
    /// A vfat filesystem made from a directory.
    Vfat(&'a FatSpec),
}

impl Content {
    /// What the content is, shorthands resolved.
    pub fn source(&self) -> Source<'_> {
        match self {
            Content::Raw(p) => Source::Raw(p),
            Content::Build(s) | Content::Btrfs(s) => Source::Build(s),
            Content::Fat(f) => Source::Vfat(f),
        }
    }

    /// The field name the spec used (`raw`, `build`, `fat`, `btrfs`).
    pub fn field(&self) -> &'static str {
        match self {
            Content::Raw(_) => "raw",
            Content::Build(_) => "build",
            Content::Fat(_) => "fat",
            Content::Btrfs(_) => "btrfs",
        }
    }
}

/// A FAT filesystem made from a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FatSpec {
    /// The directory whose content becomes the filesystem's.
    pub dir: PathBuf,
    /// The volume label (at most 11 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The volume id (`mkfs.vfat -i`), e.g. `"0x2178694e"`; random, or
    /// derived from the seed of a reproducible disk, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<Hex32>,
    /// 12, 16 or 32 (`mkfs.vfat -F`); by default mkfs.vfat picks by size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fat_size: Option<u8>,
}

/// A raw file at a fixed place outside the partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlobSpec {
    /// The file to write.
    pub file: PathBuf,
    /// A name for messages (default: the file's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where, as a byte offset; excludes `sector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<ByteSize>,
    /// Where, as a 512-byte sector number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<u64>,
    /// The most the slot holds: a larger file is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
}

impl BlobSpec {
    /// The name messages use.
    pub fn title(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.file.display().to_string())
        })
    }

    /// Byte offset on the disk.
    pub fn offset_bytes(&self) -> u64 {
        self.sector
            .map(|s| s * SECTOR)
            .or(self.offset.map(|o| o.bytes()))
            .unwrap_or(0)
    }
}

/// A disk spec that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot read disk spec {path}: {source}")]
    /// The spec file cannot be read.
    Io {
        /// The spec file.
        path: PathBuf,
        #[source]
        /// Why not.
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {field}{sep}{message}", sep = if field.is_empty() { "" } else { ": " })]
    /// The JSON is malformed or has a wrong field.
    Json {
        /// The spec's name (a file).
        origin: String,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// The field's path, e.g. `partitions[1].type`.
        field: String,
        /// What is wrong.
        message: String,
    },
    #[error("{origin}: {message}")]
    /// A value no single field can catch (names the partition).
    Invalid {
        /// The spec's name.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A layout that does not fit: overlaps, the end of the disk.
    #[error(transparent)]
    Layout(Box<LayoutError>),
    /// A build spec in a partition's content that is wrong.
    #[error(transparent)]
    Spec(SpecError),
    /// `{"btrfs": {"filesystem": …}}` naming another filesystem.
    #[error(
        "{origin}: {partition}: content.btrfs.filesystem is \"{filesystem}\", but the \"btrfs\" \
         shorthand builds btrfs only: use \"build\" instead of \"btrfs\" \
         ({{\"build\": {{\"filesystem\": \"{filesystem}\", …}}}})"
    )]
    Shorthand {
        /// The spec's name.
        origin: String,
        /// The partition.
        partition: Part,
        /// The filesystem the build spec names.
        filesystem: crate::fs::Filesystem,
    },
    /// A FAT field that is wrong.
    #[error("{origin}: {partition}: {source}")]
    Vfat {
        /// The spec's name.
        origin: String,
        /// The partition.
        partition: Part,
        /// What is wrong.
        source: Box<VfatError>,
    },
}

impl From<LayoutError> for DiskError {
    fn from(e: LayoutError) -> DiskError {
        DiskError::Layout(Box::new(e))
    }
}

/// A partition in messages: `partition 2 ("root")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its number, from 1.
    pub number: u32,
    /// Its name.
    pub name: String,
}

impl Part {
    /// Partition `i` (from 0) of `spec`.
    pub fn of(spec: &DiskSpec, i: usize) -> Part {
        Part {
            number: i as u32 + 1,
            name: spec.partitions[i].name.clone(),
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "partition {} ({:?})", self.number, self.name)
    }
}

/// Why partitions and blobs cannot be placed as the spec asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A type that is neither a name, a GUID nor an MBR byte.
    #[error("{partition}: {source}")]
    UnknownType {
        /// The partition.
        partition: Part,
        /// Why the type does not parse.
        source: types::TypeError,
    },
    /// An explicit start off the alignment.
    #[error(
        "{partition} starts at sector {start}, which is not a multiple of the alignment \
         {alignment} ({sectors} sectors): move it, or lower \"alignment\""
    )]
    Misaligned {
        /// The partition.
        partition: Part,
        /// Its start sector.
        start: u64,
        /// The alignment.
        alignment: ByteSize,
        /// The alignment in sectors.
        sectors: u64,
    },
    /// Content larger than a fixed partition size.
    #[error(
        "{partition}: its content is {content} bytes, more than its size {size}: make it \
         larger or \"auto\""
    )]
    ContentTooLarge {
        /// The partition.
        partition: Part,
        /// The content's bytes.
        content: u64,
        /// The partition's size.
        size: ByteSize,
    },
    /// A `fill` partition starting past the usable sectors.
    #[error(
        "{partition} starts at sector {start}, past the end of the disk's usable sectors \
         ({last_usable}): nothing is left to fill"
    )]
    NothingToFill {
        /// The partition.
        partition: Part,
        /// Its start sector.
        start: u64,
        /// The end of the usable sectors (exclusive).
        last_usable: u64,
    },
    /// A `fill` partition too small for its content.
    #[error(
        "{partition}: its content is {content} bytes, more than the {left} bytes left to fill"
    )]
    FillTooSmall {
        /// The partition.
        partition: Part,
        /// The content's bytes.
        content: u64,
        /// The bytes it gets.
        left: u64,
    },
    /// A partition past the end of a fixed-size disk.
    #[error(
        "{partition} (sectors {first}-{last}) ends past the end of the disk: {total} sectors\
         {}; make the disk larger or the partition smaller",
        if *backup > 0 { format!(", of which the last {backup} hold the backup GPT") } else { String::new() }
    )]
    PastEnd {
        /// The partition.
        partition: Part,
        /// Its first sector.
        first: u64,
        /// Its last sector.
        last: u64,
        /// The disk's sectors.
        total: u64,
        /// Sectors of the backup GPT at the end.
        backup: u64,
    },
    /// A blob larger than its `maxSize`.
    #[error("blob {blob} is {len} bytes, larger than its slot of {max} (\"maxSize\")")]
    BlobTooLarge {
        /// The blob's name.
        blob: String,
        /// Its bytes.
        len: u64,
        /// Its slot.
        max: ByteSize,
    },
    /// A blob past the end of the disk.
    #[error("blob {blob} (bytes {first}-{last}) ends past the end of the disk ({total} bytes)")]
    BlobPastEnd {
        /// The blob's name.
        blob: String,
        /// Its first byte.
        first: u64,
        /// Its last byte.
        last: u64,
        /// The disk's bytes.
        total: u64,
    },
    /// A disk too small for its own table.
    #[error("the disk size {total} sectors is too small for {table}")]
    DiskTooSmall {
        /// The disk's sectors.
        total: u64,
        /// The table (`a GPT`, `an MBR`).
        table: &'static str,
    },
    /// Two regions that overlap, each described with its bytes or sectors.
    #[error("{second} overlaps {first}")]
    Overlap {
        /// The region placed first.
        first: String,
        /// The one that overlaps it.
        second: String,
    },
}

impl DiskSpec {
    /// Reads a disk spec; relative paths in it are taken relative to the
    /// directory of the file.
    pub fn from_json_file(path: &Path) -> Result<DiskSpec, DiskError> {
        let text = std::fs::read_to_string(path).map_err(|source| DiskError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut spec = DiskSpec::from_json_str(&text, &path.display().to_string())?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        spec.resolve_relative_paths(base);
        Ok(spec)
    }

    /// Parses and checks a disk spec; `origin` names it in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<DiskSpec, DiskError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let spec: DiskSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            DiskError::Json {
                origin: origin.to_owned(),
                line: inner.line(),
                column: inner.column(),
                field: if field == "." { String::new() } else { field },
                message: inner
                    .to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or("")
                    .to_string(),
            }
        })?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Makes every relative path (raw files, FAT directories, blobs, the
    /// paths in btrfs build specs) relative to `base`.
    pub fn resolve_relative_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in &mut self.partitions {
            match &mut p.content {
                Some(Content::Raw(f)) => fix(f),
                Some(Content::Fat(f)) => fix(&mut f.dir),
                Some(Content::Build(s) | Content::Btrfs(s)) => s.resolve_relative_paths(base),
                None => {}
            }
        }
        for b in &mut self.blobs {
            fix(&mut b.file);
        }
    }

    /// Checks what no single field can; every message names the partition
    /// or blob.
    pub fn validate(&self, origin: &str) -> Result<(), DiskError> {
        let bad = |message: String| {
            Err(DiskError::Invalid {
                origin: origin.to_owned(),
                message,
            })
        };
        let a = self.alignment.bytes();
        if a == 0 || !a.is_multiple_of(SECTOR) {
            return bad(format!(
                "\"alignment\": {} is not a multiple of {SECTOR} bytes (e.g. \"1M\", or \"1K\" as sgdisk --set-alignment=2)",
                self.alignment
            ));
        }
        if let Size::Fixed(b) = self.size {
            if b.bytes() % SECTOR != 0 {
                return bad(format!(
                    "\"size\": {b} is not a whole number of {SECTOR}-byte sectors"
                ));
            }
        }
        let max = match self.table {
            TableKind::Gpt => GPT_ENTRIES as usize,
            TableKind::Mbr => MBR_ENTRIES,
        };
        if self.partitions.len() > max {
            return bad(format!(
                "{} partitions, but a{} {} table holds at most {max}{}",
                self.partitions.len(),
                if self.table == TableKind::Mbr {
                    "n"
                } else {
                    ""
                },
                self.table.to_string().to_uppercase(),
                if self.table == TableKind::Mbr {
                    " (rootbox writes no extended partitions): use \"table\": \"gpt\""
                } else {
                    ""
                }
            ));
        }
        match self.table {
            TableKind::Gpt if self.disk_id.is_some() => {
                return bad("\"diskId\" is an MBR field: a GPT disk has \"diskGuid\"".into())
            }
            TableKind::Mbr if self.disk_guid.is_some() => {
                return bad("\"diskGuid\" is a GPT field: an MBR disk has \"diskId\"".into())
            }
            _ => {}
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.partitions.iter().enumerate() {
            let bad = |m: String| bad(format!("partition {} ({:?}): {m}", i + 1, p.name));
            if p.name.is_empty() {
                return bad("\"name\" is empty: give every partition a name".into());
            }
            if !names.insert(&p.name) {
                return bad("another partition has the same name".into());
            }
            if self.table == TableKind::Gpt && p.name.encode_utf16().count() > 36 {
                return bad("the name is longer than a GPT entry holds (36 UTF-16 units)".into());
            }
            let t: PartType = match p.kind.parse() {
                Ok(t) => t,
                Err(e) => return bad(e.to_string()),
            };
            match self.table {
                TableKind::Gpt if t.gpt.is_none() => {
                    return bad(format!("type {:?} is an MBR type byte; a GPT needs a type name or GUID", p.kind))
                }
                TableKind::Mbr if t.mbr.is_none() => {
                    return bad(format!("type {:?} has no MBR type byte; use a name with one, or a byte such as \"0x83\"", p.kind))
                }
                _ => {}
            }
            if p.start.is_some() && p.start_sector.is_some() {
                return bad("give \"start\" or \"startSector\", not both".into());
            }
            if let Some(s) = p.start {
                if s.bytes() % SECTOR != 0 {
                    return bad(format!(
                        "\"start\": {s} is not a multiple of {SECTOR} bytes"
                    ));
                }
            }
            if let PartSize::Fixed(s) = p.size {
                if s.bytes() % SECTOR != 0 {
                    return bad(format!(
                        "\"size\": {s} is not a whole number of {SECTOR}-byte sectors"
                    ));
                }
            }
            if p.size == PartSize::Fill {
                if i + 1 != self.partitions.len() {
                    return bad("\"size\": \"fill\" is only for the last partition".into());
                }
                if self.size == Size::Auto {
                    return bad("\"size\": \"fill\" needs a fixed disk \"size\" to fill".into());
                }
            }
            if self.table == TableKind::Mbr && !p.attributes.is_empty() {
                return bad(
                    "\"attributes\" are GPT attribute bits; an MBR partition has only \"bootable\""
                        .into(),
                );
            }
            if self.table == TableKind::Gpt && p.bootable {
                return bad("\"bootable\" is the MBR boot flag; on GPT use \"attributes\": [\"legacy-bootable\"]".into());
            }
            if self.table == TableKind::Mbr && p.guid.is_some() {
                return bad("\"guid\" is a GPT field; MBR partitions have none".into());
            }
            if let Some(c) = &p.content {
                self.validate_content(origin, i, c)?;
            }
        }
        for b in &self.blobs {
            match (b.offset, b.sector) {
                (None, None) => {
                    return bad(format!(
                        "blob {}: give its \"sector\" or \"offset\"",
                        b.title()
                    ))
                }
                (Some(_), Some(_)) => {
                    return bad(format!(
                        "blob {}: give \"sector\" or \"offset\", not both",
                        b.title()
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks a partition's content: FAT fields, a build spec, and that
    /// the `btrfs` shorthand builds btrfs.
    fn validate_content(&self, origin: &str, i: usize, c: &Content) -> Result<(), DiskError> {
        let partition = Part::of(self, i);
        match c {
            Content::Fat(f) => f
                .label
                .as_deref()
                .map_or(Ok(()), vfat::check_label)
                .and_then(|()| f.fat_size.map_or(Ok(()), vfat::check_fat_size))
                .map_err(|source| DiskError::Vfat {
                    origin: origin.to_owned(),
                    partition,
                    source: Box::new(source),
                }),
            Content::Btrfs(s) if s.filesystem.other().is_some() => Err(DiskError::Shorthand {
                origin: origin.to_owned(),
                partition,
                filesystem: s.filesystem.other().expect("checked"),
            }),
            Content::Build(s) | Content::Btrfs(s) => s
                .validate(&format!("{origin}: {partition}: content.{}", c.field()))
                .map_err(DiskError::Spec),
            Content::Raw(_) => Ok(()),
        }
    }

    /// Places the partitions. `content` is each partition's content size
    /// in bytes (0 for none), `blobs` each blob's size; `entropy(purpose)`
    /// gives 16 bytes for each GUID not fixed by the spec (random, or
    /// derived from a seed): purposes are `disk` and `partition N`.
    pub fn plan(
        &self,
        content: &[u64],
        blobs: &[u64],
        entropy: &mut dyn FnMut(&str) -> [u8; 16],
    ) -> Result<DiskLayout, DiskError> {
        let (first_usable, backup) = match self.table {
            TableKind::Gpt => (GPT_FIRST_USABLE, GPT_BACKUP_SECTORS),
            TableKind::Mbr => (1, 0),
        };
        let mut entries = self.place_entries(content, first_usable, entropy)?;
        let mut placed_blobs = Vec::new();
        for (b, &len) in self.blobs.iter().zip(blobs) {
            if let Some(max) = b.max_size.filter(|m| len > m.bytes()) {
                return Err(LayoutError::BlobTooLarge {
                    blob: b.title(),
                    len,
                    max,
                }
                .into());
            }
            placed_blobs.push(PlacedBlob {
                name: b.title(),
                offset: b.offset_bytes(),
                size: len,
            });
        }
        let content_end = entries
            .iter()
            .map(|e| e.end() * SECTOR)
            .chain(placed_blobs.iter().map(|b| b.offset + b.size))
            .max()
            .unwrap_or(first_usable * SECTOR);
        let total = match self.size {
            Size::Fixed(b) => b.bytes() / SECTOR,
            Size::Auto => content_end.div_ceil(SECTOR) + backup,
        };
        if total < first_usable + backup + 1 {
            let table = match self.table {
                TableKind::Gpt => "a GPT table",
                TableKind::Mbr => "an MBR table",
            };
            return Err(LayoutError::DiskTooSmall { total, table }.into());
        }
        self.fill_and_check_end(&mut entries, content, total, backup)?;
        self.check_overlaps(&entries, &placed_blobs, total, backup)?;
        let disk_guid = match self.table {
            TableKind::Gpt => Some(
                self.disk_guid
                    .unwrap_or_else(|| Guid::from_random(entropy("disk"))),
            ),
            TableKind::Mbr => None,
        };
        let disk_id = match self.table {
            TableKind::Mbr => Some(self.disk_id.map(|h| h.0).unwrap_or_else(|| {
                let b = entropy("disk id");
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(1)
            })),
            TableKind::Gpt => None,
        };
        Ok(DiskLayout {
            table: Table {
                kind: self.table,
                total_sectors: total,
                disk_guid,
                disk_id,
                entries,
            },
            names: self.partitions.iter().map(|p| p.name.clone()).collect(),
            blobs: placed_blobs,
        })
    }

    /// Each partition's start and size (a `fill` partition's size is 0
    /// until [`DiskSpec::fill_and_check_end`]), type and GUID.
    fn place_entries(
        &self,
        content: &[u64],
        first_usable: u64,
        entropy: &mut dyn FnMut(&str) -> [u8; 16],
    ) -> Result<Vec<Entry>, LayoutError> {
        let align = self.alignment.bytes() / SECTOR;
        let gpt = self.table == TableKind::Gpt;
        let mut entries = Vec::new();
        let mut cursor = first_usable;
        for (i, p) in self.partitions.iter().enumerate() {
            let partition = Part::of(self, i);
            let t: PartType = p.kind.parse().map_err(|source| LayoutError::UnknownType {
                partition: partition.clone(),
                source,
            })?;
            let size = content.get(i).copied().unwrap_or(0);
            let start = match p.start_sector.or(p.start.map(|s| s.bytes() / SECTOR)) {
                Some(start) if start % align != 0 => {
                    return Err(LayoutError::Misaligned {
                        partition,
                        start,
                        alignment: self.alignment,
                        sectors: align,
                    })
                }
                Some(s) => s,
                None => cursor.div_ceil(align) * align,
            };
            let sectors = match p.size {
                PartSize::Fixed(b) if size > b.bytes() => {
                    return Err(LayoutError::ContentTooLarge {
                        partition,
                        content: size,
                        size: b,
                    })
                }
                PartSize::Fixed(b) => b.bytes() / SECTOR,
                PartSize::Auto => (size + p.headroom.bytes()).div_ceil(SECTOR).max(1),
                PartSize::Fill => 0,
            };
            cursor = start + sectors;
            let number = partition.number;
            entries.push(Entry {
                number,
                start,
                sectors,
                name: if gpt { p.name.clone() } else { String::new() },
                type_guid: if gpt { t.gpt } else { None },
                mbr_type: if gpt { None } else { t.mbr },
                guid: gpt.then(|| {
                    p.guid.unwrap_or_else(|| {
                        Guid::from_random(entropy(&format!("partition {number}")))
                    })
                }),
                attributes: p.attributes.iter().fold(0, |a, b| a | 1 << b.bit()),
                bootable: p.bootable,
            });
        }
        Ok(entries)
    }

    /// Sizes a last `fill` partition and checks that every partition ends
    /// before the backup GPT (or the end of an MBR disk).
    fn fill_and_check_end(
        &self,
        entries: &mut [Entry],
        content: &[u64],
        total: u64,
        backup: u64,
    ) -> Result<(), LayoutError> {
        let last_usable = total - backup; // exclusive
        let fills = self
            .partitions
            .last()
            .is_some_and(|p| p.size == PartSize::Fill);
        if let Some(e) = entries.last_mut().filter(|_| fills) {
            let partition = Part::of(self, e.number as usize - 1);
            if e.start >= last_usable {
                return Err(LayoutError::NothingToFill {
                    partition,
                    start: e.start,
                    last_usable,
                });
            }
            e.sectors = last_usable - e.start;
            let need = content.get(e.number as usize - 1).copied().unwrap_or(0);
            if need > e.sectors * SECTOR {
                return Err(LayoutError::FillTooSmall {
                    partition,
                    content: need,
                    left: e.sectors * SECTOR,
                });
            }
        }
        match entries.iter().find(|e| e.end() > last_usable) {
            Some(e) => Err(LayoutError::PastEnd {
                partition: Part::of(self, e.number as usize - 1),
                first: e.start,
                last: e.end() - 1,
                total,
                backup,
            }),
            None => Ok(()),
        }
    }

    /// Everything that occupies bytes — the table, partitions, blobs —
    /// may not overlap; blobs may not pass the end of the disk.
    fn check_overlaps(
        &self,
        entries: &[Entry],
        blobs: &[PlacedBlob],
        total: u64,
        backup: u64,
    ) -> Result<(), LayoutError> {
        let mut regions: Vec<(String, u64, u64)> = Vec::new();
        match self.table {
            TableKind::Gpt => {
                regions.push(("the primary GPT".into(), 0, GPT_FIRST_USABLE * SECTOR));
                regions.push((
                    "the backup GPT".into(),
                    (total - backup) * SECTOR,
                    total * SECTOR,
                ));
            }
            // Bytes 440-511: a blob over 0-439 (boot code) is fine.
            TableKind::Mbr => regions.push(("the MBR partition table".into(), 440, 512)),
        }
        for e in entries {
            let p = Part::of(self, e.number as usize - 1);
            let name = format!(
                "partition {} ({:?}, sectors {}-{})",
                p.number,
                p.name,
                e.start,
                e.end() - 1
            );
            regions.push((name, e.start * SECTOR, e.end() * SECTOR));
        }
        for b in blobs {
            let end = b.offset + b.size;
            if end > total * SECTOR {
                return Err(LayoutError::BlobPastEnd {
                    blob: b.name.clone(),
                    first: b.offset,
                    last: end - 1,
                    total: total * SECTOR,
                });
            }
            let sectors = if b.offset % SECTOR == 0 {
                let last = end.div_ceil(SECTOR).max(1) - 1;
                format!(", sectors {}-{last}", b.offset / SECTOR)
            } else {
                String::new()
            };
            let last = b.offset + b.size.max(1) - 1;
            let name = format!("blob {} (bytes {}-{last}{sectors})", b.name, b.offset);
            regions.push((name, b.offset, end));
        }
        for (i, a) in regions.iter().enumerate() {
            if let Some(b) = regions[i + 1..].iter().find(|b| a.1 < b.2 && b.1 < a.2) {
                return Err(LayoutError::Overlap {
                    first: a.0.clone(),
                    second: b.0.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskLayout {
    /// The partition table to write.
    pub table: Table,
    /// Each partition's name (also for MBR, where the table has none).
    pub names: Vec<String>,
    /// The blobs, as placed.
    pub blobs: Vec<PlacedBlob>,
}

/// A blob and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacedBlob {
    /// The blob's name in messages.
    pub name: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

impl DiskLayout {
    /// Size of the disk in bytes.
    pub fn bytes(&self) -> u64 {
        self.table.total_sectors * SECTOR
    }

    /// Differences between the table read back and the one planned.
    pub fn differences(&self, read: &Table) -> Vec<String> {
        let mut d = Vec::new();
        if read.kind != self.table.kind {
            d.push(format!(
                "the table reads back as {}, not {}",
                read.kind, self.table.kind
            ));
        }
        if read.total_sectors != self.table.total_sectors {
            d.push(format!(
                "the disk is {} sectors, not {}",
                read.total_sectors, self.table.total_sectors
            ));
        }
        if read.disk_guid != self.table.disk_guid || read.disk_id != self.table.disk_id {
            d.push("the disk GUID or id differs".into());
        }
        if read.entries.len() != self.table.entries.len() {
            d.push(format!(
                "{} partitions read back, {} planned",
                read.entries.len(),
                self.table.entries.len()
            ));
        }
        for (r, p) in read.entries.iter().zip(&self.table.entries) {
            if r != p {
                d.push(format!(
                    "partition {} ({:?}) reads back as {r:?}, planned {p:?}",
                    p.number,
                    self.names[p.number as usize - 1]
                ));
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> DiskSpec {
        DiskSpec::from_json_str(json, "t.json").unwrap()
    }

    fn no_entropy(_: &str) -> [u8; 16] {
        [7; 16]
    }

    fn plan_err(json: &str, content: &[u64], blobs: &[u64]) -> String {
        let s = match DiskSpec::from_json_str(json, "t.json") {
            Ok(s) => s,
            Err(e) => return e.to_string(),
        };
        s.plan(content, blobs, &mut no_entropy)
            .unwrap_err()
            .to_string()
    }

    const ROCK64: &str = r#"{"table": "gpt", "alignment": "1K",
        "blobs": [{"file": "idbloader.img", "sector": 64}],
        "partitions": [
          {"name": "uboot", "startSector": 16384, "size": "8M", "type": "linux", "content": {"raw": "u-boot.itb"}},
          {"name": "root", "startSector": 32768, "type": "root-arm64", "attributes": ["legacy-bootable"]}
        ]}"#;

    #[test]
    fn the_rock64_layout_places_what_nixos_sbc_does() {
        let l = spec(ROCK64)
            .plan(&[1 << 20, 10 << 20], &[100_000], &mut no_entropy)
            .unwrap();
        let e = &l.table.entries;
        assert_eq!((e[0].start, e[0].end()), (16384, 32768));
        assert_eq!((e[1].start, e[1].sectors), (32768, 20480));
        assert_eq!(e[1].attributes, 4);
        assert_eq!(l.table.total_sectors, 32768 + 20480 + 33);
    }

    #[test]
    fn overlaps_name_both_sides() {
        let e = plan_err(ROCK64, &[1 << 20, 1 << 20], &[9 << 20]);
        assert!(
            e.contains("blob idbloader.img") && e.contains("partition 1 (\"uboot\""),
            "{e}"
        );
        let e = plan_err(
            r#"{"table":"gpt","blobs":[{"file":"x","sector":30}],"partitions":[{"name":"r","type":"linux"}]}"#,
            &[4096],
            &[1024],
        );
        assert!(e.contains("blob x") && e.contains("the primary GPT"), "{e}");
        let e = plan_err(
            r#"{"table":"mbr","partitions":[{"name":"a","startSector":2048,"size":"2M","type":"linux"},{"name":"b","startSector":4096,"type":"linux"}]}"#,
            &[0, 10],
            &[],
        );
        assert!(
            e.contains("partition 2 (\"b\"") && e.contains("partition 1 (\"a\""),
            "{e}"
        );
    }

    #[test]
    fn layout_errors_say_what_and_where() {
        let cases: &[(&str, &[u64], &str)] = &[
            (
                r#"{"table":"gpt","partitions":[{"name":"r","startSector":100,"type":"linux"}]}"#,
                &[1],
                "not a multiple of the alignment",
            ),
            (
                r#"{"table":"gpt","size":"4M","partitions":[{"name":"r","size":"4M","type":"linux"}]}"#,
                &[1],
                "ends past the end of the disk",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","size":"1M","type":"linux"}]}"#,
                &[2 << 20],
                "more than its size",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","type":"linx"}]}"#,
                &[1],
                "unknown partition type \"linx\"",
            ),
            (
                r#"{"table":"mbr","partitions":[{"name":"r","type":"C12A7328-F81F-11D2-BA4B-00A0C93EC93B"}]}"#,
                &[1],
                "no MBR type byte",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","type":"b"}]}"#,
                &[1],
                "a GPT needs",
            ),
            (
                r#"{"table":"gpt","partitions":[{"name":"r","size":"fill","type":"linux"}]}"#,
                &[1],
                "needs a fixed disk",
            ),
            (
                r#"{"table":"gpt","alignment":"100","partitions":[]}"#,
                &[],
                "multiple of 512",
            ),
        ];
        for (json, content, want) in cases {
            let e = plan_err(json, content, &[]);
            assert!(e.contains(want), "{json}: {e}");
        }
        let many: Vec<String> = (0..129)
            .map(|i| format!(r#"{{"name":"p{i}","type":"linux"}}"#))
            .collect();
        let e = plan_err(
            &format!(r#"{{"table":"gpt","partitions":[{}]}}"#, many.join(",")),
            &[],
            &[],
        );
        assert!(e.contains("at most 128"), "{e}");
    }

    #[test]
    fn fill_takes_what_is_left_before_the_backup_gpt() {
        let s = spec(
            r#"{"table":"gpt","size":"64M","partitions":[{"name":"esp","size":"8M","type":"esp"},{"name":"root","size":"fill","type":"root-x86-64"}]}"#,
        );
        let l = s.plan(&[0, 0], &[], &mut no_entropy).unwrap();
        assert_eq!(l.table.entries[0].start, 2048);
        assert_eq!(l.table.entries[1].start, 2048 + 16384);
        assert_eq!(l.table.entries[1].end(), 131072 - 33);
    }

    #[test]
    fn the_planned_table_survives_its_own_bytes() {
        let l = spec(ROCK64)
            .plan(&[1 << 20, 10 << 20], &[100_000], &mut no_entropy)
            .unwrap();
        let mut d = vec![0u8; l.bytes() as usize];
        for (o, b) in l.table.to_bytes().unwrap() {
            d[o as usize..o as usize + b.len()].copy_from_slice(&b);
        }
        let t = Table::parse(&d[..34 * 512], &d[d.len() - 33 * 512..], d.len() as u64).unwrap();
        assert!(l.differences(&t).is_empty(), "{:?}", l.differences(&t));
    }

    #[test]
    fn a_partition_builds_any_filesystem_and_the_btrfs_shorthand_only_btrfs() {
        let s = spec(
            r#"{"table":"gpt","partitions":[{"name":"root","type":"linux","content":{"build":{"filesystem":"ext4","rootfs":"r"}}}]}"#,
        );
        let c = s.partitions[0].content.as_ref().unwrap();
        assert!(
            matches!(c.source(), Source::Build(b) if b.filesystem == crate::spec::Filesystem::Ext4)
        );
        let e = DiskSpec::from_json_str(
            r#"{"table":"gpt","partitions":[{"name":"root","type":"linux","content":{"btrfs":{"filesystem":"ext4","rootfs":"r"}}}]}"#,
            "d.json",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "d.json",
            "partition 1 (\"root\")",
            "content.btrfs.filesystem",
            "use \"build\"",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
        let s = spec(
            r#"{"table":"gpt","partitions":[{"name":"root","type":"linux","content":{"btrfs":{"rootfs":"r"}}}]}"#,
        );
        let c = s.partitions[0].content.as_ref().unwrap();
        assert!(matches!(c.source(), Source::Build(_)));
        let e = DiskSpec::from_json_str(
            r#"{"table":"gpt","partitions":[{"name":"b","type":"esp","content":{"fat":{"dir":"d","fatSize":13}}}]}"#,
            "d.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("partition 1 (\"b\")") && e.contains("fatSize"),
            "{e}"
        );
    }
}

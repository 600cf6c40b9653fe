//! The disk model: a partition table (GPT or MBR) with partitions whose
//! content is a raw file, a FAT filesystem made from a directory, or a
//! rootbox btrfs build, plus raw blobs at fixed offsets outside the table
//! (a boot loader at sector 64).
//!
//! ```json
//! {
//!   "table": "gpt",
//!   "blobs": [{"file": "idbloader.img", "sector": 64}],
//!   "partitions": [
//!     {"name": "uboot", "startSector": 16384, "size": "8M", "type": "linux",
//!      "content": {"raw": "u-boot.itb"}},
//!     {"name": "root", "startSector": 32768, "type": "root-arm64",
//!      "attributes": ["legacy-bootable"], "content": {"btrfs": {"rootfs": "./root"}}}
//!   ]
//! }
//! ```
//!
//! [`DiskSpec`] is read and checked here; [`DiskSpec::plan`] places the
//! partitions once the runner knows how big each content is, checking
//! alignment, overlaps (partitions, blobs, the table itself) and the end of
//! the disk; [`table::Table`] turns the result into bytes and parses bytes
//! back. Nothing here runs a process or touches a file but the spec.

pub mod bmap;
pub mod fat;
pub mod hash;
pub mod table;
pub mod types;

use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::size::{ByteSize, Size};
use crate::spec::Spec;
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

/// What goes into a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum Content {
    /// A file copied in as it is (`{"raw": "u-boot.itb"}`).
    Raw(PathBuf),
    /// A FAT filesystem made from a directory.
    Fat(FatSpec),
    /// A rootbox btrfs build: the whole build spec (`rootfs`, `closure`,
    /// `subvolumes`, `owners`, …).
    Btrfs(Box<Spec>),
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
    #[error("{0}")]
    Layout(String),
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
                Some(Content::Btrfs(s)) => s.resolve_relative_paths(base),
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
        if a == 0 || a % SECTOR != 0 {
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
            match &p.content {
                Some(Content::Fat(f)) => {
                    if let Some(m) = f.label.as_deref().and_then(fat::label_problem) {
                        return bad(m);
                    }
                    if f.fat_size.is_some_and(|s| ![12, 16, 32].contains(&s)) {
                        return bad("\"fatSize\" is 12, 16 or 32".into());
                    }
                }
                Some(Content::Btrfs(s)) => {
                    if let Err(e) = s.validate(&format!("{origin}: partition {:?}", p.name)) {
                        return Err(DiskError::Invalid {
                            origin: origin.to_owned(),
                            message: e.to_string(),
                        });
                    }
                }
                _ => {}
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
        let fail = |m: String| Err(DiskError::Layout(m));
        let align = self.alignment.bytes() / SECTOR;
        let (first_usable, backup) = match self.table {
            TableKind::Gpt => (GPT_FIRST_USABLE, GPT_BACKUP_SECTORS),
            TableKind::Mbr => (1, 0),
        };
        let mut entries = Vec::new();
        let mut cursor = first_usable;
        for (i, p) in self.partitions.iter().enumerate() {
            let t: PartType = p
                .kind
                .parse()
                .map_err(|e: types::TypeError| DiskError::Layout(e.to_string()))?;
            let title = format!("partition {} ({:?})", i + 1, p.name);
            let size = content.get(i).copied().unwrap_or(0);
            let start = match p.start_sector.or(p.start.map(|s| s.bytes() / SECTOR)) {
                Some(s) => {
                    if s % align != 0 {
                        return fail(format!(
                            "{title} starts at sector {s}, which is not a multiple of the alignment {} ({align} sectors): move it, or lower \"alignment\"",
                            self.alignment
                        ));
                    }
                    s
                }
                None => cursor.div_ceil(align) * align,
            };
            let sectors = match p.size {
                PartSize::Fixed(b) => {
                    if size > b.bytes() {
                        return fail(format!(
                            "{title}: its content is {size} bytes, more than its size {b}: make it larger or \"auto\""
                        ));
                    }
                    b.bytes() / SECTOR
                }
                PartSize::Auto => (size + p.headroom.bytes()).div_ceil(SECTOR).max(1),
                PartSize::Fill => 0,
            };
            cursor = start + sectors;
            let mut attributes = 0u64;
            for a in &p.attributes {
                attributes |= 1 << a.bit();
            }
            let number = i as u32 + 1;
            entries.push(Entry {
                number,
                start,
                sectors,
                name: if self.table == TableKind::Gpt {
                    p.name.clone()
                } else {
                    String::new()
                },
                type_guid: if self.table == TableKind::Gpt {
                    t.gpt
                } else {
                    None
                },
                mbr_type: if self.table == TableKind::Mbr {
                    t.mbr
                } else {
                    None
                },
                guid: match self.table {
                    TableKind::Gpt => Some(p.guid.unwrap_or_else(|| {
                        Guid::from_random(entropy(&format!("partition {number}")))
                    })),
                    TableKind::Mbr => None,
                },
                attributes,
                bootable: p.bootable,
            });
        }
        let mut placed_blobs = Vec::new();
        for (b, &len) in self.blobs.iter().zip(blobs) {
            if let Some(m) = b.max_size.filter(|m| len > m.bytes()) {
                return fail(format!(
                    "blob {} is {len} bytes, larger than its slot of {m} (\"maxSize\")",
                    b.title()
                ));
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
            return fail(format!(
                "the disk size {} sectors is too small for a{} {} table",
                total,
                if self.table == TableKind::Mbr {
                    "n"
                } else {
                    ""
                },
                self.table.to_string().to_uppercase()
            ));
        }
        let last_usable = total - backup; // exclusive
        if let Some(e) = entries.last_mut().filter(|_| {
            self.partitions
                .last()
                .is_some_and(|p| p.size == PartSize::Fill)
        }) {
            if e.start >= last_usable {
                return fail(format!(
                    "partition {} ({:?}) starts at sector {}, past the end of the disk's usable sectors ({}): nothing is left to fill",
                    e.number, self.partitions[e.number as usize - 1].name, e.start, last_usable
                ));
            }
            e.sectors = last_usable - e.start;
            let need = content.get(e.number as usize - 1).copied().unwrap_or(0);
            if need > e.sectors * SECTOR {
                return fail(format!(
                    "partition {} ({:?}): its content is {need} bytes, more than the {} bytes left to fill",
                    e.number, self.partitions[e.number as usize - 1].name, e.sectors * SECTOR
                ));
            }
        }
        for e in &entries {
            if e.end() > last_usable {
                return fail(format!(
                    "partition {} ({:?}) (sectors {}-{}) ends past the end of the disk: {} sectors{}; make the disk larger or the partition smaller",
                    e.number,
                    self.partitions[e.number as usize - 1].name,
                    e.start,
                    e.end() - 1,
                    total,
                    if backup > 0 { format!(", of which the last {backup} hold the backup GPT") } else { String::new() }
                ));
            }
        }
        // Everything that occupies bytes, for the overlap check.
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
        for e in &entries {
            regions.push((
                format!(
                    "partition {} ({:?}, sectors {}-{})",
                    e.number,
                    self.partitions[e.number as usize - 1].name,
                    e.start,
                    e.end() - 1
                ),
                e.start * SECTOR,
                e.end() * SECTOR,
            ));
        }
        for b in &placed_blobs {
            if b.offset + b.size > total * SECTOR {
                return fail(format!(
                    "blob {} (bytes {}-{}) ends past the end of the disk ({} bytes)",
                    b.name,
                    b.offset,
                    b.offset + b.size - 1,
                    total * SECTOR
                ));
            }
            let sectors = if b.offset % SECTOR == 0 {
                format!(
                    ", sectors {}-{}",
                    b.offset / SECTOR,
                    (b.offset + b.size).div_ceil(SECTOR).max(1) - 1
                )
            } else {
                String::new()
            };
            regions.push((
                format!(
                    "blob {} (bytes {}-{}{sectors})",
                    b.name,
                    b.offset,
                    b.offset + b.size.max(1) - 1
                ),
                b.offset,
                b.offset + b.size,
            ));
        }
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                if a.1 < b.2 && b.1 < a.2 {
                    return fail(format!("{} overlaps {}", b.0, a.0));
                }
            }
        }
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
}

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
pub mod error;
pub mod hash;
pub mod plan;
pub mod table;
pub mod types;

pub use error::{DiskError, LayoutError, Part, PartitionProblem, SpecProblem};

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::fs::vfat;
use crate::size::{ByteSize, Size};
use crate::spec::{Filesystem, Spec};
use table::{TableKind, GPT_ENTRIES, MBR_ENTRIES, SECTOR};
pub use types::Hex32;
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
    /// The least an `auto` size may be (systemd-repart's `SizeMinBytes=`):
    /// a smaller content still gets this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<ByteSize>,
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
    /// btrfs (the default), ext4, erofs, squashfs or vfat (the same as
    /// `fat` with `dir` = `rootfs`).
    Build(Box<Spec>),
    /// A FAT filesystem made from a directory.
    Fat(FatSpec),
    /// Shorthand for `build` with `"filesystem": "btrfs"` (another
    /// filesystem here is refused).
    Btrfs(Box<Spec>),
    /// The dm-verity hash tree of another partition's read-only
    /// filesystem (`{"verityHash": {"data": "usr"}}`), made with
    /// `veritysetup format`; the data partition's and this partition's
    /// GUIDs become the root hash's first and last 128 bits.
    #[serde(rename = "verityHash")]
    VerityHash(VerityHashSpec),
}

/// Whose dm-verity hash tree a partition holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VerityHashSpec {
    /// The name of the data partition: one built as erofs or squashfs.
    pub data: String,
}

/// A partition's content with the shorthands resolved: raw bytes, or a
/// filesystem built from a tree. A vfat `build` and `fat` are one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    /// A file copied in as it is.
    Raw(&'a Path),
    /// A filesystem built by the build pipeline from this spec.
    Build(&'a Spec),
    /// A vfat filesystem made from a directory (`fat`, or a `build`
    /// whose filesystem is vfat).
    Vfat(Cow<'a, FatSpec>),
    /// The dm-verity hash tree of the partition named here, made once
    /// that partition's filesystem is.
    VerityHash(&'a str),
}

impl Content {
    /// What the content is, shorthands resolved.
    pub fn source(&self) -> Source<'_> {
        match self {
            Content::Raw(p) => Source::Raw(p),
            Content::Build(s) if s.filesystem == Filesystem::Vfat => {
                Source::Vfat(Cow::Owned(FatSpec::of_build(s)))
            }
            Content::Build(s) | Content::Btrfs(s) => Source::Build(s),
            Content::Fat(f) => Source::Vfat(Cow::Borrowed(f)),
            Content::VerityHash(v) => Source::VerityHash(&v.data),
        }
    }

    /// The field name the spec used (`raw`, `build`, `fat`, `btrfs`).
    pub fn field(&self) -> &'static str {
        match self {
            Content::Raw(_) => "raw",
            Content::Build(_) => "build",
            Content::Fat(_) => "fat",
            Content::Btrfs(_) => "btrfs",
            Content::VerityHash(_) => "verityHash",
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

impl FatSpec {
    /// The `fat` content a vfat build spec is: `rootfs` as `dir`, its
    /// label; the volume id and FAT size left to the defaults (the spec's
    /// other fields are refused by [`Spec::check_vfat`]).
    pub fn of_build(s: &Spec) -> FatSpec {
        FatSpec {
            dir: s.rootfs.clone().unwrap_or_default(),
            label: s.label.clone(),
            volume_id: None,
            fat_size: None,
        }
    }
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

impl Part {
    /// Partition `i` (from 0) of `spec`.
    pub fn of(spec: &DiskSpec, i: usize) -> Part {
        Part {
            number: i as u32 + 1,
            name: spec.partitions[i].name.clone(),
        }
    }
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
                Some(Content::VerityHash(_)) | None => {}
            }
        }
        for b in &mut self.blobs {
            fix(&mut b.file);
        }
    }

    /// Checks what no single field can; every message names the partition
    /// or blob.
    pub fn validate(&self, origin: &str) -> Result<(), DiskError> {
        self.problem().map_err(|problem| DiskError::Invalid {
            origin: origin.to_owned(),
            problem,
        })?;
        for (i, p) in self.partitions.iter().enumerate() {
            if let Some(c) = &p.content {
                self.validate_content(origin, i, c)?;
            }
        }
        Ok(())
    }

    /// The first thing wrong with the spec's own fields (not the
    /// partitions' contents).
    fn problem(&self) -> Result<(), SpecProblem> {
        let a = self.alignment.bytes();
        if a == 0 || a % SECTOR != 0 {
            return Err(SpecProblem::Alignment(self.alignment));
        }
        if let Size::Fixed(b) = self.size {
            if b.bytes() % SECTOR != 0 {
                return Err(SpecProblem::DiskSize(b));
            }
        }
        let max = match self.table {
            TableKind::Gpt => GPT_ENTRIES as usize,
            TableKind::Mbr => MBR_ENTRIES,
        };
        if self.partitions.len() > max {
            return Err(SpecProblem::TooManyPartitions {
                count: self.partitions.len(),
                table: self.table,
                max,
            });
        }
        match self.table {
            TableKind::Gpt if self.disk_id.is_some() => {
                return Err(SpecProblem::OtherTable {
                    field: "diskId",
                    why: "is an MBR field: a GPT disk has \"diskGuid\"",
                })
            }
            TableKind::Mbr if self.disk_guid.is_some() => {
                return Err(SpecProblem::OtherTable {
                    field: "diskGuid",
                    why: "is a GPT field: an MBR disk has \"diskId\"",
                })
            }
            _ => {}
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.partitions.iter().enumerate() {
            let dup = !names.insert(&p.name) && !p.name.is_empty();
            let problem = match dup {
                true => Err(PartitionProblem::SameName),
                false => self.partition_problem(i),
            };
            problem.map_err(|problem| SpecProblem::Partition {
                partition: Part::of(self, i),
                problem,
            })?;
        }
        for b in &self.blobs {
            if b.offset.is_some() == b.sector.is_some() {
                return Err(SpecProblem::BlobPlace {
                    blob: b.title(),
                    twice: b.offset.is_some(),
                });
            }
        }
        Ok(())
    }

    /// The first thing wrong with partition `i`'s own fields: name, type,
    /// start, size, and the fields only one table kind has.
    fn partition_problem(&self, i: usize) -> Result<(), PartitionProblem> {
        use PartitionProblem as P;
        let p = &self.partitions[i];
        let (gpt, mbr) = (self.table == TableKind::Gpt, self.table == TableKind::Mbr);
        if p.name.is_empty() {
            return Err(P::EmptyName);
        }
        if gpt && p.name.encode_utf16().count() > 36 {
            return Err(P::NameTooLong);
        }
        let t: PartType = p.kind.parse()?;
        if (gpt && t.gpt.is_none()) || (mbr && t.mbr.is_none()) {
            return Err(P::TypeForTable {
                given: p.kind.clone(),
                table: self.table,
            });
        }
        if p.start.is_some() && p.start_sector.is_some() {
            return Err(P::StartTwice);
        }
        if let Some(s) = p.start.filter(|s| s.bytes() % SECTOR != 0) {
            return Err(P::Start(s));
        }
        if let PartSize::Fixed(s) = p.size {
            if s.bytes() % SECTOR != 0 {
                return Err(P::Size(s));
            }
        }
        if p.size == PartSize::Fill && i + 1 != self.partitions.len() {
            return Err(P::FillNotLast);
        }
        if p.size == PartSize::Fill && self.size == Size::Auto {
            return Err(P::FillNeedsSize);
        }
        let other = |field, why| Err(P::OtherTable { field, why });
        if mbr && !p.attributes.is_empty() {
            return other(
                "attributes",
                "are GPT attribute bits; an MBR partition has only \"bootable\"",
            );
        }
        if gpt && p.bootable {
            return other(
                "bootable",
                "is the MBR boot flag; on GPT use \"attributes\": [\"legacy-bootable\"]",
            );
        }
        if mbr && p.guid.is_some() {
            return other("guid", "is a GPT field; MBR partitions have none");
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
            Content::Btrfs(s) if s.filesystem != Filesystem::Btrfs => Err(DiskError::Shorthand {
                origin: origin.to_owned(),
                partition,
                filesystem: s.filesystem,
            }),
            Content::Build(s) if s.filesystem == Filesystem::Vfat => {
                s.check_vfat().map_err(|source| DiskError::Vfat {
                    origin: origin.to_owned(),
                    partition,
                    source: Box::new(source),
                })
            }
            Content::Build(s) | Content::Btrfs(s) => s
                .validate(&format!("{origin}: {partition}: content.{}", c.field()))
                .map_err(DiskError::Spec),
            Content::Raw(_) => Ok(()),
            Content::VerityHash(v) => {
                self.verity_problem(i, &v.data)
                    .map_err(|problem| DiskError::Invalid {
                        origin: origin.to_owned(),
                        problem: SpecProblem::Partition { partition, problem },
                    })
            }
        }
    }

    /// What is wrong with partition `i` holding the hash tree of the
    /// partition named `data`: it must name another partition, built as
    /// a read-only filesystem, whose tree no other partition holds.
    fn verity_problem(&self, i: usize, data: &str) -> Result<(), PartitionProblem> {
        use PartitionProblem as P;
        let unknown = || P::VerityData {
            data: data.to_owned(),
            why: "names no other partition of the disk",
        };
        let j = self
            .partitions
            .iter()
            .position(|p| p.name == data)
            .filter(|&j| j != i)
            .ok_or_else(unknown)?;
        let read_only = match self.partitions[j].content.as_ref().map(Content::source) {
            Some(Source::Build(s)) => {
                matches!(s.filesystem, Filesystem::Erofs | Filesystem::Squashfs)
            }
            _ => false,
        };
        if !read_only {
            return Err(P::VerityData {
                data: data.to_owned(),
                why: "is not built as erofs or squashfs: dm-verity serves a read-only \
                      device, so the data partition must hold a read-only filesystem",
            });
        }
        let twice = self.partitions.iter().enumerate().any(|(k, p)| {
            k != i && matches!(&p.content, Some(Content::VerityHash(v)) if v.data == data)
        });
        if twice {
            return Err(P::VerityData {
                data: data.to_owned(),
                why: "already has its hash tree in another partition",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> DiskSpec {
        DiskSpec::from_json_str(json, "t.json").unwrap()
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

    #[test]
    fn a_verity_hash_needs_one_read_only_data_partition() {
        let disk = |data_fs: &str, hashes: &str| {
            format!(
                r#"{{"table":"gpt","partitions":[{{"name":"usr","type":"linux","content":{{"build":{{"filesystem":"{data_fs}","rootfs":"u"}}}}}}{hashes}]}}"#
            )
        };
        let hash = |n: &str, data: &str| {
            format!(
                r#",{{"name":"{n}","type":"linux","content":{{"verityHash":{{"data":"{data}"}}}}}}"#
            )
        };
        let s = spec(&disk("erofs", &hash("v", "usr")));
        assert_eq!(
            s.partitions[1].content.as_ref().unwrap().source(),
            Source::VerityHash("usr")
        );
        spec(&disk("squashfs", &hash("v", "usr")));
        let rows = [
            (
                disk("ext4", &hash("v", "usr")),
                "is not built as erofs or squashfs",
            ),
            (
                disk("erofs", &hash("v", "nope")),
                "names no other partition",
            ),
            (disk("erofs", &hash("v", "v")), "names no other partition"),
            (
                disk("erofs", &(hash("v", "usr") + &hash("w", "usr"))),
                "already has its hash tree",
            ),
        ];
        let mut bad = Vec::new();
        for (json, needle) in rows {
            match DiskSpec::from_json_str(&json, "d.json") {
                Err(e)
                    if e.to_string().contains(needle) && e.to_string().contains("partition 2") => {}
                other => bad.push(format!("{json}: {other:?}")),
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }
}

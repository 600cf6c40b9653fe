//! Why a disk spec cannot be read or placed: [`DiskError`] for the spec,
//! [`LayoutError`] for placing it, each naming the partition ([`Part`])
//! or blob.

use std::path::PathBuf;

use super::table::TableKind;
use super::types;
use crate::fs::vfat::VfatError;
use crate::size::ByteSize;
use crate::spec::SpecError;

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
    #[error("{origin}: {problem}")]
    /// A value no single field can catch (names the partition or blob).
    Invalid {
        /// The spec's name.
        origin: String,
        /// What is wrong.
        problem: SpecProblem,
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
        filesystem: crate::spec::Filesystem,
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

/// What is wrong with a disk spec beyond a single field's syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    /// An alignment that is not whole sectors.
    #[error(
        "\"alignment\": {0} is not a multiple of 512 bytes (e.g. \"1M\", or \"1K\" as sgdisk \
         --set-alignment=2)"
    )]
    Alignment(ByteSize),
    /// A disk size that is not whole sectors.
    #[error("\"size\": {0} is not a whole number of 512-byte sectors")]
    DiskSize(ByteSize),
    /// More partitions than the table holds.
    #[error("{count} partitions, but {} holds at most {max}{}", match table {
        TableKind::Gpt => "a GPT table",
        TableKind::Mbr => "an MBR table",
    }, if *table == TableKind::Mbr {
        " (rootbox writes no extended partitions): use \"table\": \"gpt\""
    } else { "" })]
    TooManyPartitions {
        /// Partitions in the spec.
        count: usize,
        /// The table.
        table: TableKind,
        /// What it holds.
        max: usize,
    },
    /// A field of the other table kind (`diskId` on GPT, `guid` on MBR …).
    #[error("\"{field}\" {why}")]
    OtherTable {
        /// The field.
        field: &'static str,
        /// Whose field it is, and what to use instead.
        why: &'static str,
    },
    /// A partition's field that is wrong.
    #[error("{partition}: {problem}")]
    Partition {
        /// The partition.
        partition: Part,
        /// What is wrong.
        problem: PartitionProblem,
    },
    /// A blob without a place, or with two.
    #[error("blob {blob}: {}", if *twice {
        "give \"sector\" or \"offset\", not both"
    } else {
        "give its \"sector\" or \"offset\""
    })]
    BlobPlace {
        /// The blob's name.
        blob: String,
        /// Both `sector` and `offset` given (else neither).
        twice: bool,
    },
}

/// What is wrong with one partition's fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionProblem {
    /// No name.
    #[error("\"name\" is empty: give every partition a name")]
    EmptyName,
    /// A name another partition has.
    #[error("another partition has the same name")]
    SameName,
    /// A name over 36 UTF-16 units on GPT.
    #[error("the name is longer than a GPT entry holds (36 UTF-16 units)")]
    NameTooLong,
    /// A type that does not parse.
    #[error(transparent)]
    Type(#[from] types::TypeError),
    /// A type the table cannot write.
    #[error("type {given:?} {}", match table {
        TableKind::Gpt => "is an MBR type byte; a GPT needs a type name or GUID",
        TableKind::Mbr => "has no MBR type byte; use a name with one, or a byte such as \"0x83\"",
    })]
    TypeForTable {
        /// The type as given.
        given: String,
        /// The table.
        table: TableKind,
    },
    /// Both `start` and `startSector`.
    #[error("give \"start\" or \"startSector\", not both")]
    StartTwice,
    /// A start that is not whole sectors.
    #[error("\"start\": {0} is not a multiple of 512 bytes")]
    Start(ByteSize),
    /// A size that is not whole sectors.
    #[error("\"size\": {0} is not a whole number of 512-byte sectors")]
    Size(ByteSize),
    /// `fill` on a partition that is not the last.
    #[error("\"size\": \"fill\" is only for the last partition")]
    FillNotLast,
    /// `fill` on a disk of `auto` size.
    #[error("\"size\": \"fill\" needs a fixed disk \"size\" to fill")]
    FillNeedsSize,
    /// A `verityHash` content whose data partition cannot have one.
    #[error("content.verityHash.data {data:?} {why}")]
    VerityData {
        /// The data partition's name as given.
        data: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A field of the other table kind.
    #[error("\"{field}\" {why}")]
    OtherTable {
        /// The field.
        field: &'static str,
        /// Whose field it is, and what to use instead.
        why: &'static str,
    },
}

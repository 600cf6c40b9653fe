//! Why repart.d definitions cannot become a disk: [`RepartError`], each
//! naming the file, line and key, and [`Problem`], which says what is
//! wrong and what to write instead.

use std::path::PathBuf;

use crate::disk::DiskError;

/// Definitions rootbox cannot make into a disk.
#[derive(Debug, thiserror::Error)]
pub enum RepartError {
    /// The directory or a file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path as given.
        path: PathBuf,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
    /// No `*.conf` in the directory.
    #[error("{0}: no *.conf partition definitions in it")]
    Empty(PathBuf),
    /// A line of a definition file.
    #[error("{file}:{line}: {key}: {problem}")]
    At {
        /// The definition file.
        file: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// The key (`Format=`), or the text of the line.
        key: String,
        /// What is wrong and the fix.
        problem: Problem,
    },
    /// The disk spec the definitions give is refused by the disk model.
    #[error("the disk spec derived from the definitions in {dir}: {source}")]
    Spec {
        /// The definitions directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<DiskError>,
    },
}

/// What is wrong with a line, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `[Partition` without its `]`.
    #[error("a section header needs its closing ']'")]
    BadSection,
    /// A section other than `[Partition]`.
    #[error("repart.d files have one section, [Partition]; rootbox reads nothing else")]
    OtherSection,
    /// A line that is not `Key=Value`.
    #[error("not a Key=Value line")]
    NotAssignment,
    /// An assignment before `[Partition]`.
    #[error("every key belongs to a [Partition] section: put [Partition] above it")]
    OutsideSection,
    /// A `\` on the last line.
    #[error("the line ends in '\\' but the file ends there")]
    Unterminated,
    /// A key repart has that rootbox does not do.
    #[error("rootbox does not support this repart.d key: {why}")]
    Unsupported {
        /// Why, and the fix.
        why: &'static str,
    },
    /// A key neither repart nor rootbox knows.
    #[error("unknown key; rootbox reads the repart.d keys listed in its README (\"From systemd-repart definitions\") and X-Rootbox-StartSector=, X-Rootbox-Owners=, X-Rootbox-Closure=, X-Rootbox-Registration=")]
    UnknownKey,
    /// A value rootbox does not accept for a key it supports.
    #[error("{value:?}: {why}")]
    Value {
        /// The value as written.
        value: String,
        /// Why, and the fix.
        why: &'static str,
    },
    /// A `Type=` rootbox does not know.
    #[error("{0:?}: not a partition type rootbox knows: use esp, xbootldr, swap, home, srv, var, tmp, linux-generic, root, usr, root-verity, usr-verity (with -ARCH for {arches}) or a type GUID", arches = super::types::arch_names())]
    UnknownType(String),
    /// `SizeMaxBytes=` below `SizeMinBytes=`.
    #[error("{max} is below SizeMinBytes={min}")]
    SizeBelowMin {
        /// `SizeMaxBytes=`.
        max: u64,
        /// `SizeMinBytes=`.
        min: u64,
    },
    /// A vfat partition's label or tree FAT cannot take.
    #[error(transparent)]
    Vfat(Box<crate::fs::vfat::VfatError>),
    /// A `%` specifier.
    #[error("{value:?}: rootbox expands no specifiers (%{spec}); write the value out (a literal '%' is '%%')")]
    Specifier {
        /// The value as written.
        value: String,
        /// The specifier's letter.
        spec: char,
    },
    /// Keys of one partition that do not go together.
    #[error("{0}")]
    Conflict(&'static str),
    /// A tree copied into two subvolumes without `ExcludeFiles=`.
    #[error("{path} is copied into two subvolumes here: rootbox leaves it empty in the outer one, as repart does with ExcludeFiles={path}/: add that line")]
    NotExcluded {
        /// The inner source.
        path: String,
    },
    /// Two partitions with one label.
    #[error("the partition label {label:?} is also {}'s: rootbox names partitions by label, so give each a unique Label=", other.display())]
    LabelTaken {
        /// The label.
        label: String,
        /// The other definition file.
        other: PathBuf,
    },
    /// A Verity data or hash partition without its other half.
    #[error("Verity={has} without a Verity={lacks} partition: add a definition with Verity={lacks} and VerityMatchKey={key}")]
    VerityUnpaired {
        /// The role present.
        has: &'static str,
        /// The role missing.
        lacks: &'static str,
        /// The `VerityMatchKey=`.
        key: String,
    },
    /// A second partition of one role under one key.
    #[error("VerityMatchKey={key} already has a Verity={role} partition ({}): one key pairs one data partition with one hash partition", other.display())]
    VerityRoleTaken {
        /// The `VerityMatchKey=`.
        key: String,
        /// `data` or `hash`.
        role: &'static str,
        /// The definition file that has it.
        other: PathBuf,
    },
    /// A Verity data partition whose filesystem writes.
    #[error("a Verity=data partition needs a read-only filesystem: dm-verity refuses every write, so {what} cannot serve it; use Format=erofs or Format=squashfs")]
    VerityWritable {
        /// The filesystem it has (or `an unformatted partition`).
        what: String,
    },
}

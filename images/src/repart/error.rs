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
    #[error("unknown key; rootbox reads the repart.d keys listed in its README (\"From systemd-repart definitions\") and X-Rootbox-StartSector=, X-Rootbox-Owners=")]
    UnknownKey,
    /// A value rootbox does not accept for a key it supports.
    #[error("{value:?}: {why}")]
    Value {
        /// The value as written.
        value: String,
        /// Why, and the fix.
        why: String,
    },
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
    Conflict(String),
}

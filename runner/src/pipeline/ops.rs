//! The records of a staging plan: decided by the planner ([`super::plan`]),
//! made by the staging step ([`super::stage`]), both inside the namespace.

use std::path::PathBuf;

/// Ownership, mode, times and xattrs to give a staged entry, in the
/// namespace's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// One step of building the staging tree; `dst` is relative to its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A directory recreated with `meta`.
    Dir { dst: PathBuf, meta: Meta },
    /// A bind mount of a clean source (file, directory or special file).
    Bind {
        src: PathBuf,
        dst: PathBuf,
        dir: bool,
    },
    /// A symlink recreated with `meta`'s owner and times.
    Symlink {
        target: PathBuf,
        dst: PathBuf,
        meta: Meta,
    },
    /// A FIFO or socket recreated with `meta`.
    Node { dst: PathBuf, meta: Meta },
    /// `src` copied into scratch space (as `scratch`), then bound at `dst`.
    /// Owners that do not map become 0; ACL entries that do not map are dropped.
    Copy {
        src: PathBuf,
        scratch: PathBuf,
        dst: PathBuf,
        dir: bool,
    },
    /// A regular file written on the tmpfs with `src`'s content.
    File {
        src: PathBuf,
        dst: PathBuf,
        meta: Meta,
    },
}

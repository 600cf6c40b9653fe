//! A spec's subvolumes: [`SubvolumeSpec`] with its [`SubvolKind`] and
//! [`InodeFlag`]s, as JSON gives them and as the CLI's `--subvol
//! NAME:MOUNTPOINT[:TYPE][:FLAGS]` does ([`SubvolumeSpec::parse_cli`]).
//! Re-exported from [`crate::spec`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One subvolume: its name at the top level of the filesystem and where it
/// is mounted in the booted system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubvolumeSpec {
    /// Name of the subvolume, e.g. `@nix` (a single path component).
    pub name: String,
    /// Absolute mount point in the booted system, e.g. `/nix`.
    pub mountpoint: String,
    /// How mkfs creates it (JSON key `type`, default `rw`).
    #[serde(rename = "type", default)]
    pub kind: SubvolKind,
    /// Inode flags mkfs gives the subvolume's root directory, which its
    /// files inherit (JSON key `inodeFlags`, e.g. `["nodatacow"]` for a
    /// swap file or VM images; `mkfs.btrfs --inode-flags`, btrfs-progs
    /// 6.15).
    #[serde(rename = "inodeFlags", default, skip_serializing_if = "Vec::is_empty")]
    pub inode_flags: Vec<InodeFlag>,
}

/// A btrfs inode flag `mkfs.btrfs --inode-flags FLAGS:PATH` can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InodeFlag {
    /// No copy-on-write for data (`nodatacow`, `chattr +C`); implies
    /// `nodatasum` for regular files. What a swap file needs.
    Nodatacow,
    /// No data checksums (`nodatasum`). Set on the subvolume's root
    /// directory only: mkfs.btrfs (7.3), like the kernel, passes only
    /// `nodatacow` on to the files below, so for files without checksums
    /// use `nodatacow`.
    Nodatasum,
}

impl InodeFlag {
    /// The spelling mkfs.btrfs and the spec use.
    pub fn as_str(self) -> &'static str {
        match self {
            InodeFlag::Nodatacow => "nodatacow",
            InodeFlag::Nodatasum => "nodatasum",
        }
    }
}

impl fmt::Display for InodeFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InodeFlag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [InodeFlag::Nodatacow, InodeFlag::Nodatasum]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown inode flag {s:?}; expected nodatacow or nodatasum"))
    }
}

/// How `mkfs.btrfs --subvol TYPE:DIR` creates a subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubvolKind {
    /// Writable (`rw`).
    #[default]
    Rw,
    /// Read-only (`ro`).
    Ro,
    /// Writable and the filesystem's default subvolume (`default`).
    Default,
    /// Read-only and the default subvolume (`default-ro`).
    DefaultRo,
}

impl SubvolKind {
    /// The spelling mkfs.btrfs and the spec use.
    pub fn as_str(self) -> &'static str {
        match self {
            SubvolKind::Rw => "rw",
            SubvolKind::Ro => "ro",
            SubvolKind::Default => "default",
            SubvolKind::DefaultRo => "default-ro",
        }
    }

    /// Whether this subvolume becomes the filesystem's default subvolume.
    pub fn is_default(self) -> bool {
        matches!(self, SubvolKind::Default | SubvolKind::DefaultRo)
    }
}

impl fmt::Display for SubvolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubvolKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            SubvolKind::Rw,
            SubvolKind::Ro,
            SubvolKind::Default,
            SubvolKind::DefaultRo,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| {
            format!("unknown subvolume type {s:?}; expected rw, ro, default or default-ro")
        })
    }
}

/// A `--subvol` argument that is not `NAME:MOUNTPOINT[:TYPE]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --subvol {input:?}: {reason}; expected NAME:MOUNTPOINT[:TYPE][:FLAGS], e.g. \"@nix:/nix\", \"@:/:default\" or \"@swap:/swap:nodatacow\"")]
pub struct SubvolArgError {
    /// The argument as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SubvolumeSpec {
    /// Parses the CLI form `NAME:MOUNTPOINT[:TYPE][:FLAGS]`, e.g. `@nix:/nix`,
    /// `@:/:default`, `@swap:/swap:nodatacow` or
    /// `@vm:/var/lib/vm:rw:nodatacow,nodatasum`: FLAGS are inode flags
    /// separated by `,` (a third part is a TYPE if it is one, else FLAGS).
    /// Names and mount points are checked later, by
    /// [`Layout::new`](crate::layout::Layout::new).
    pub fn parse_cli(arg: &str) -> Result<SubvolumeSpec, SubvolArgError> {
        let err = |reason: String| SubvolArgError {
            input: arg.to_owned(),
            reason,
        };
        let flags = |list: &str| -> Result<Vec<InodeFlag>, SubvolArgError> {
            list.split(',').map(|f| f.parse().map_err(err)).collect()
        };
        let parts: Vec<&str> = arg.split(':').collect();
        let (name, mountpoint, kind, inode_flags) = match parts[..] {
            [name, mp] => (name, mp, SubvolKind::Rw, Vec::new()),
            [name, mp, third] => match third.parse::<SubvolKind>() {
                Ok(kind) => (name, mp, kind, Vec::new()),
                Err(_) if third.parse::<InodeFlag>().is_ok() || third.contains(',') => {
                    (name, mp, SubvolKind::Rw, flags(third)?)
                }
                Err(e) => return Err(err(e)),
            },
            [name, mp, kind, list] => (name, mp, kind.parse().map_err(err)?, flags(list)?),
            _ => return Err(err(format!("it has {} ':'-separated parts", parts.len()))),
        };
        if name.is_empty() || mountpoint.is_empty() {
            return Err(err("the name and the mount point must not be empty".into()));
        }
        Ok(SubvolumeSpec {
            name: name.to_owned(),
            mountpoint: mountpoint.to_owned(),
            kind,
            inode_flags,
        })
    }
}

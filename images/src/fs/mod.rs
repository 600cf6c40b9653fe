//! Planning per filesystem, one module each: [`btrfs`] (mkfs.btrfs, its
//! versions, `--reflink`; the subvolume layout is [`crate::layout`]'s),
//! [`vfat`] (FAT's limits, mkfs.vfat's arguments, the boot sector; no
//! owners, so none of the rules below), and [`ext4`], [`erofs`] and
//! [`squashfs`], planned together below.
//!
//! These three ([`Filesystem`]) are made from the layout's one root. Each
//! gets the same staged tree (owners as the build's user namespace
//! sees them) and the same ownership rules; what differs is how a
//! filesystem's tools are told about the owners a namespace cannot
//! express:
//!
//! | filesystem | made by | owners that differ from the staged tree |
//! |---|---|---|
//! | ext4 | `mkfs.ext4 -d` | `debugfs -w -f FILE` after mkfs ([`ext4::debugfs_script`]) |
//! | erofs | `mkfs.erofs` | written into the inodes after mkfs ([`erofs`]) |
//! | squashfs | `mksquashfs` | pseudo definitions at mkfs time ([`squashfs::pseudo_file`]) |
//!
//! The owner fixes themselves are decided once ([`plan_fixes`], in `fixes.rs`): an
//! unmapped owner (the overflow id) becomes root and loses its set-id bit,
//! then the ownership manifest applies, last matching line winning.
//! This module builds arguments and command files; it runs nothing.

pub mod btrfs;
pub mod erofs;
pub mod ext4;
mod fixes;
pub mod name;
pub mod squashfs;
pub mod vfat;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use fixes::{plan_fixes, plan_fixes_as, strip_setid, ArchiveOwner, Fix, Replaced, Seen};
pub use name::Name;

use crate::size::{ByteSize, Size};

/// A filesystem rootbox can make besides btrfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// Read-write, made by `mkfs.ext4 -d`, fixed up with `debugfs`.
    Ext4,
    /// Read-only, made by `mkfs.erofs`.
    Erofs,
    /// Read-only, made by `mksquashfs`.
    Squashfs,
}

impl Filesystem {
    /// Every filesystem of this module.
    pub const ALL: [Filesystem; 3] = [Filesystem::Ext4, Filesystem::Erofs, Filesystem::Squashfs];

    /// The name used in specs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Erofs => "erofs",
            Filesystem::Squashfs => "squashfs",
        }
    }

    /// Whether the image can be written to after it is made.
    pub fn is_read_only(self) -> bool {
        self != Filesystem::Ext4
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Filesystem {
    type Err = FsError;

    fn from_str(s: &str) -> Result<Self, FsError> {
        Filesystem::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| FsError::UnknownFilesystem(s.to_string()))
    }
}

/// Why a build for one of these filesystems cannot go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// Not ext4, erofs or squashfs.
    #[error("unknown filesystem {0:?}: use \"ext4\", \"erofs\" or \"squashfs\" (or \"btrfs\")")]
    UnknownFilesystem(String),
    /// A spec field the filesystem has no place for.
    #[error("\"{field}\" cannot be used with {filesystem}: {why}")]
    Unsupported {
        /// The spec field (also the flag's name).
        field: &'static str,
        /// The filesystem asked for.
        filesystem: Filesystem,
        /// Why, and what to do instead.
        why: String,
    },
    /// A compression the filesystem's tool does not offer.
    #[error("\"compress\": {given:?} is not available for {filesystem}: use {choices}")]
    Compression {
        /// The filesystem asked for.
        filesystem: Filesystem,
        /// The value as given.
        given: String,
        /// What is available.
        choices: &'static str,
    },
    /// A fixed size below what the content needs.
    #[error(
        "\"size\" {given} is too small for this {filesystem} image: it needs at least {needed} \
         ({needed_bytes} bytes); set \"size\" to {needed} or more, or to \"auto\""
    )]
    TooSmall {
        /// The filesystem.
        filesystem: Filesystem,
        /// The size asked for.
        given: ByteSize,
        /// The smallest size that holds the content, rounded up to a MiB.
        needed: ByteSize,
        /// The same in bytes, unrounded.
        needed_bytes: u64,
    },
    /// Manifest lines that match no path of the tree.
    #[error(
        "the ownership manifest names paths the image does not have (a typo?):\n  {}",
        .0.join("\n  ")
    )]
    ManifestUnmatched(Vec<String>),
    /// A path the tool's command-file syntax cannot carry.
    #[error("{path:?} cannot be written in {tool}'s command file: {why}; rename it")]
    PathSyntax {
        /// The image path.
        path: Name,
        /// The tool (debugfs, mksquashfs).
        tool: &'static str,
        /// The character at fault.
        why: &'static str,
    },
    /// A tool older than what rootbox was checked with.
    #[error(
        "{filesystem} images need {package} ≥ {need} ({why}); found {found}: install a newer \
         {package} (Debian bookworm's is enough: apt-get install {package})"
    )]
    OldTool {
        /// The filesystem.
        filesystem: Filesystem,
        /// The Debian package.
        package: &'static str,
        /// The version found.
        found: String,
        /// The version needed.
        need: String,
        /// What the older ones lack.
        why: &'static str,
    },
    /// File capabilities that mksquashfs before 4.6 cannot be given
    /// without a user namespace (it has no pseudo xattr definitions).
    #[error(
        "without a user namespace, file capabilities reach a squashfs image only through \
         mksquashfs's pseudo xattr definitions, which squashfs-tools {found} lacks (they came in \
         4.6); files with capabilities: {}: build where a user namespace can be had, or install \
         squashfs-tools 4.6 or newer (Debian trixie's or sid's)",
        .paths.join(", ")
    )]
    SquashfsCaps {
        /// The mksquashfs version found.
        found: String,
        /// The files, as the user gave them (a few).
        paths: Vec<String>,
    },
    /// A name the filesystem holds but this version of its tool cannot
    /// write.
    #[error(
        "{path}: a name of {len} bytes, which mkfs.{filesystem} {version} cannot write (it fails \
         with \"Could not format the device\"; names of up to {limit} bytes work): shorten \
         the name, or install a newer {package} (Debian sid's lifts this limit)"
    )]
    ToolNameLimit {
        /// The filesystem.
        filesystem: Filesystem,
        /// The path, as the user gave it.
        path: String,
        /// The name's length in bytes.
        len: usize,
        /// The longest name this version writes.
        limit: usize,
        /// The tool's version.
        version: String,
        /// The Debian package.
        package: &'static str,
    },
    /// An owner that the on-disk inode cannot hold.
    #[error("{filesystem}: {path} would be owned by {id}, which its inode cannot hold ({why})")]
    IdTooLarge {
        /// The filesystem.
        filesystem: Filesystem,
        /// The image path.
        path: String,
        /// The id.
        id: u32,
        /// Why not.
        why: &'static str,
    },
}

/// The tool whose version decides what a filesystem can do, and how to ask it.
pub struct Tool {
    /// The Debian package.
    pub package: &'static str,
    /// The program and its version flag.
    pub command: [&'static str; 2],
    /// The oldest version rootbox was checked with.
    pub need: (u32, u32, u32),
    /// What rootbox uses of it.
    pub why: &'static str,
}

impl Filesystem {
    /// The tool whose version [`check_version`] checks.
    pub fn tool(self) -> Tool {
        match self {
            Filesystem::Ext4 => Tool {
                package: "e2fsprogs",
                command: ["mke2fs", "-V"],
                need: (1, 47, 0),
                why: "mkfs.ext4 -d with xattrs and device numbers, -E hash_seed=, \
                      E2FSPROGS_FAKE_TIME, debugfs ea_set -f",
            },
            Filesystem::Erofs => Tool {
                package: "erofs-utils",
                command: ["dump.erofs", "-V"],
                need: (1, 5, 0),
                why: "mkfs.erofs -T, -U and -E force-inode-extended",
            },
            Filesystem::Squashfs => Tool {
                package: "squashfs-tools",
                command: ["mksquashfs", "-version"],
                need: (4, 5, 0),
                why: "-reproducible, -mkfs-time, -all-time, -pf and -root-uid",
            },
        }
    }
}

/// The first `X.Y[.Z]` in a tool's version output.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find_map(|w| {
            let mut parts = w.split('.');
            let a = parts.next()?.parse().ok()?;
            let b = parts.next()?.parse().ok()?;
            let c = parts.next().map_or(Some(0), |c| c.parse().ok())?;
            Some((a, b, c))
        })
}

/// Checks the version output of [`Filesystem::tool`]; the version found.
pub fn check_version(filesystem: Filesystem, output: &str) -> Result<(u32, u32, u32), FsError> {
    let t = filesystem.tool();
    let show = |(a, b, c): (u32, u32, u32)| format!("{a}.{b}.{c}");
    let old = |found: String| FsError::OldTool {
        filesystem,
        package: t.package,
        found,
        need: show(t.need),
        why: t.why,
    };
    match parse_version(output) {
        Some(v) if v >= t.need => Ok(v),
        Some(v) => Err(old(show(v))),
        None => Err(old(format!("no version in {:?}", output.trim()))),
    }
}

/// What a build asks of the filesystem, from the spec (fields named as there).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `label`.
    pub label: Option<String>,
    /// `uuid` (canonical text).
    pub uuid: Option<String>,
    /// `compress` as written (`zstd:3`, `lz4hc`, …).
    pub compress: Option<String>,
    /// `size`.
    pub size: Size,
    /// `headroom`: free space added to an `auto` size (ext4 only).
    pub headroom: ByteSize,
    /// Whether the spec lays out subvolumes (only btrfs has them).
    pub subvolumes: bool,
    /// Same inputs, same bytes.
    pub reproducible: Option<Reproducible>,
}

/// The fixed values of a reproducible build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reproducible {
    /// `SOURCE_DATE_EPOCH`: every time in the image, at most this.
    pub epoch: u64,
    /// The filesystem UUID (also ext4's directory hash seed), when the
    /// spec names none.
    pub uuid: String,
}

impl Options {
    /// The UUID the image gets: the spec's, else the reproducible one.
    pub fn effective_uuid(&self) -> Option<&str> {
        self.uuid
            .as_deref()
            .or(self.reproducible.as_ref().map(|r| r.uuid.as_str()))
    }
}

/// Refuses what `filesystem` cannot express, naming the field; the
/// filesystem-specific checks (compression, label length) follow.
pub fn check(filesystem: Filesystem, o: &Options) -> Result<(), FsError> {
    let unsupported = |field, why: &str| FsError::Unsupported {
        field,
        filesystem,
        why: why.to_string(),
    };
    if o.subvolumes {
        return Err(unsupported(
            "subvolumes",
            "only btrfs has subvolumes; remove \"subvolumes\" (and --subvol, --file-systems) \
             or use \"filesystem\": \"btrfs\"",
        ));
    }
    if filesystem.is_read_only() && o.headroom.bytes() > 0 {
        return Err(unsupported(
            "headroom",
            "a read-only image has no use for free space; remove \"headroom\"",
        ));
    }
    match filesystem {
        Filesystem::Ext4 => ext4::check(o),
        Filesystem::Erofs => erofs::check(o),
        Filesystem::Squashfs => squashfs::check(o),
    }
}

/// A fixed size that is too small, as the error to report.
pub fn too_small(filesystem: Filesystem, given: u64, needed: u64) -> FsError {
    FsError::TooSmall {
        filesystem,
        given: ByteSize(given),
        needed: ByteSize(needed.div_ceil(ByteSize::MIB) * ByteSize::MIB),
        needed_bytes: needed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subvolumes_and_headroom_are_refused_by_name() {
        let o = Options {
            subvolumes: true,
            ..Options::default()
        };
        for f in Filesystem::ALL {
            let e = check(f, &o).unwrap_err().to_string();
            assert!(e.contains("\"subvolumes\" cannot be used with"), "{e}");
        }
        let o = Options {
            headroom: ByteSize(1 << 20),
            ..Options::default()
        };
        assert!(check(Filesystem::Ext4, &o).is_ok());
        let e = check(Filesystem::Squashfs, &o).unwrap_err().to_string();
        assert!(e.contains("\"headroom\""), "{e}");
    }

    #[test]
    fn tool_versions_of_bookworm_pass_and_older_ones_are_named() {
        assert!(check_version(Filesystem::Ext4, "mke2fs 1.47.0 (5-Feb-2023)").is_ok());
        assert!(check_version(Filesystem::Erofs, "dump.erofs 1.5").is_ok());
        assert!(check_version(
            Filesystem::Squashfs,
            "mksquashfs version 4.5.1 (2022/03/17)"
        )
        .is_ok());
        let e = check_version(
            Filesystem::Squashfs,
            "mksquashfs version 4.3-git (2014/06/09)",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("squashfs-tools ≥ 4.5.0"), "{e}");
        assert!(
            e.contains("found no version") || e.contains("found 4.3"),
            "{e}"
        );
        let e = check_version(Filesystem::Ext4, "mke2fs 1.46.2 (28-Feb-2021)").unwrap_err();
        assert!(e.to_string().contains("found 1.46.2"), "{e}");
    }

    #[test]
    fn too_small_names_the_size_needed() {
        let e = too_small(Filesystem::Erofs, 1 << 20, 3 * (1 << 20) + 5).to_string();
        assert!(e.contains("it needs at least 4M (3145733 bytes)"), "{e}");
    }
}

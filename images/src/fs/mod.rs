//! Planning per filesystem, one module each: [`btrfs`] (mkfs.btrfs, its
//! versions, `--reflink`; the subvolume layout is [`crate::layout`]'s),
//! and [`ext4`], [`erofs`] and [`squashfs`], planned together below.
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
//! The owner fixes themselves are decided once, here ([`plan_fixes`]): an
//! unmapped owner (the overflow id) becomes root and loses its set-id bit,
//! then the ownership manifest applies, last matching line winning.
//! This module builds arguments and command files; it runs nothing.

pub mod btrfs;
pub mod erofs;
pub mod ext4;
pub mod name;
pub mod squashfs;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use name::Name;

use crate::owners::Manifest;
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
                      E2FSPROGS_FAKE_TIME, debugfs ea_get -x",
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

/// An inode as the staged tree or a fresh image shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The image path (`/` for the root).
    pub path: Name,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The whole `st_mode` (type and permission bits).
    pub mode: u32,
}

/// New owner and permission bits for one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// The image path.
    pub path: Name,
    /// New owner.
    pub uid: u32,
    /// New group.
    pub gid: u32,
    /// The whole new `st_mode` (the type bits unchanged).
    pub mode: u32,
    /// Whether an unmapped owner or group was given to root.
    pub unmapped: bool,
    /// The manifest line that applied, if any.
    pub manifest_line: Option<usize>,
}

/// `mode` without S_ISUID when the owner was replaced, and without S_ISGID
/// (on non-directories, where it means "set group id") when the group was.
pub fn strip_setid(mode: u32, uid_replaced: bool, gid_replaced: bool) -> u32 {
    let mut mode = mode;
    if uid_replaced {
        mode &= !0o4000;
    }
    if gid_replaced && mode & 0o170000 != 0o040000 {
        mode &= !0o2000;
    }
    mode
}

/// Owner, group and permission bits a tar rootfs's header gives a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveOwner {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits with set-id and sticky bits (`0o7777`).
    pub mode: u32,
}

/// The changes to make to `seen` (hard links appear once per path; each
/// gets the same change), in this order: owners equal to `overflow` (uid,
/// gid) — ids the namespace does not map — become root's, without their
/// set-id bits; a path of a tar rootfs takes its header's owner, group and
/// bits (`archive`; a symlink keeps 0777); then the manifest's last
/// matching rule sets owner, group and, when it names one, the permission
/// bits. Every manifest line must match a path.
pub fn plan_fixes(
    seen: &[Seen],
    overflow: (u32, u32),
    archive: Option<&std::collections::BTreeMap<String, ArchiveOwner>>,
    manifest: Option<&Manifest>,
) -> Result<Vec<Fix>, FsError> {
    let mut matched = vec![false; manifest.map_or(0, |m| m.rules.len())];
    let mut fixes = Vec::new();
    for s in seen {
        let (u, g) = (s.uid == overflow.0, s.gid == overflow.1);
        let mut fix = Fix {
            path: s.path.clone(),
            uid: if u { 0 } else { s.uid },
            gid: if g { 0 } else { s.gid },
            mode: strip_setid(s.mode, u, g),
            unmapped: u || g,
            manifest_line: None,
        };
        // Tar paths and manifest patterns are text: a name that is not
        // UTF-8 meets them escaped (see [`name`]).
        let text = s.path.escaped();
        let from_archive = archive.and_then(|a| a.get(&text));
        if let Some(a) = from_archive {
            fix.uid = a.uid;
            fix.gid = a.gid;
            if s.mode & 0o170000 != 0o120000 {
                fix.mode = (s.mode & !0o7777) | (a.mode & 0o7777);
            }
        }
        if let Some((i, rule)) = manifest.and_then(|m| m.lookup(&text)) {
            matched[i] = true;
            fix.uid = rule.uid;
            fix.gid = rule.gid;
            if let Some(m) = rule.mode {
                fix.mode = (fix.mode & !0o7777) | m;
            }
            fix.manifest_line = Some(rule.line);
        }
        if fix.unmapped || fix.manifest_line.is_some() || from_archive.is_some() {
            fixes.push(fix);
        }
    }
    if let Some(m) = manifest {
        let missing: Vec<String> = m
            .rules
            .iter()
            .zip(&matched)
            .filter(|(_, hit)| !**hit)
            .map(|(r, _)| format!("line {}: {} matches nothing", r.line, r.pattern))
            .collect();
        if !missing.is_empty() {
            return Err(FsError::ManifestUnmatched(missing));
        }
    }
    Ok(fixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(path: &str, uid: u32, gid: u32, mode: u32) -> Seen {
        Seen {
            path: path.into(),
            uid,
            gid,
            mode,
        }
    }

    #[test]
    fn unmapped_owners_go_to_root_without_their_setid_bits() {
        let s = [
            seen("/", 0, 0, 0o40755),
            seen("/nix/store/x/bin/su", 65534, 65534, 0o106755),
            seen("/run/wall", 0, 65534, 0o102755),
            seen("/shared", 0, 65534, 0o42775),
        ];
        let fixes = plan_fixes(&s, (65534, 65534), None, None).unwrap();
        let got: Vec<(String, u32, u32, u32)> = fixes
            .iter()
            .map(|f| (f.path.escaped(), f.uid, f.gid, f.mode))
            .collect();
        let got: Vec<(&str, u32, u32, u32)> = got
            .iter()
            .map(|(p, u, g, m)| (p.as_str(), *u, *g, *m))
            .collect();
        assert_eq!(
            got,
            [
                ("/nix/store/x/bin/su", 0, 0, 0o100755),
                ("/run/wall", 0, 0, 0o100755),
                // A directory's set-gid bit is inheritance, not privilege.
                ("/shared", 0, 0, 0o42775),
            ]
        );
    }

    #[test]
    fn the_manifest_wins_and_every_line_must_match() {
        let m = Manifest::parse(
            "/home/alice/** 1000 100\n/home/alice/.ssh 1000 100 0700\n",
            "owners",
        )
        .unwrap();
        let s = [
            seen("/home", 0, 0, 0o40755),
            seen("/home/alice", 0, 0, 0o40755),
            seen("/home/alice/.ssh", 65534, 65534, 0o40755),
        ];
        let fixes = plan_fixes(&s, (65534, 65534), None, Some(&m)).unwrap();
        assert_eq!(fixes.len(), 2);
        assert_eq!(
            (fixes[1].uid, fixes[1].gid, fixes[1].mode),
            (1000, 100, 0o40700)
        );
        assert_eq!(fixes[1].manifest_line, Some(2));
        let typo = Manifest::parse("/home/alcie 1000 100\n", "owners").unwrap();
        let e = plan_fixes(&s, (65534, 65534), None, Some(&typo)).unwrap_err();
        assert!(
            e.to_string()
                .contains("line 1: /home/alcie matches nothing"),
            "{e}"
        );
    }

    #[test]
    fn a_tar_rootfs_gives_its_owners_and_the_manifest_still_wins() {
        let archive: std::collections::BTreeMap<String, ArchiveOwner> = [
            ("/etc/shadow", 0, 42, 0o640),
            ("/home/bob", 1001, 100, 0o700),
            ("/bin/sh", 0, 0, 0o644),
        ]
        .into_iter()
        .map(|(p, uid, gid, mode)| (p.to_string(), ArchiveOwner { uid, gid, mode }))
        .collect();
        let m = Manifest::parse("/home/bob 1002 100\n", "owners").unwrap();
        let s = [
            seen("/etc/shadow", 0, 0, 0o100600),
            seen("/home/bob", 0, 0, 0o40755),
            seen("/bin/sh", 0, 0, 0o120777),
            seen("/usr", 0, 0, 0o40755),
        ];
        let fixes = plan_fixes(&s, (65534, 65534), Some(&archive), Some(&m)).unwrap();
        let got: Vec<(String, u32, u32, u32)> = fixes
            .iter()
            .map(|f| (f.path.escaped(), f.uid, f.gid, f.mode))
            .collect();
        let got: Vec<(&str, u32, u32, u32)> = got
            .iter()
            .map(|(p, u, g, m)| (p.as_str(), *u, *g, *m))
            .collect();
        assert_eq!(
            got,
            [
                ("/etc/shadow", 0, 42, 0o100640),
                ("/home/bob", 1002, 100, 0o40700),
                ("/bin/sh", 0, 0, 0o120777),
            ]
        );
    }

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

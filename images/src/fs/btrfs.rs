// Over 600 lines: 235 of them are the tests of the version and argument
// rules below.

//! Planning for btrfs: the `mkfs.btrfs` command line, the btrfs-progs
//! version it needs, and whether it may clone the data (`--reflink`).
//! (Subvolume layouts are [`crate::layout`]'s.)
//!
//! Flag spellings are those of btrfs-progs 6.14 (`mkfs.btrfs --help`):
//! `--label`, `--uuid`, `--rootdir`, `--subvol TYPE:DIR`,
//! `--compress ALGO[:LEVEL]`, `--shrink`, `--byte-count`, `--force`;
//! `--inode-flags FLAGS:PATH` arrived in 6.15 and `--reflink` in 6.16.1
//! (spellings of the 7.3 manual). When rootbox passes `--reflink` is
//! decided by [`decide_reflink`].

use std::cmp::Ordering;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::spec::{Compress, ReflinkMode, Uuid};

/// A btrfs-progs version, as printed by `mkfs.btrfs --version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BtrfsProgsVersion {
    /// Major version (6 in 6.14).
    pub major: u32,
    /// Minor version (14 in 6.14).
    pub minor: u32,
    /// Patch level (0 when not printed).
    pub patch: u32,
}

impl BtrfsProgsVersion {
    /// Makes a version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        BtrfsProgsVersion {
            major,
            minor,
            patch,
        }
    }

    /// Finds the version in `mkfs.btrfs --version` output such as
    /// `mkfs.btrfs, part of btrfs-progs v6.14` or `btrfs-progs v6.6.3`:
    /// the first word of the form `vX.Y[.Z]` (a suffix like `-rc1` is
    /// ignored). `None` if there is none.
    pub fn parse(output: &str) -> Option<Self> {
        output.split_whitespace().find_map(|word| {
            let digits = word.strip_prefix('v')?;
            let end = digits
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(digits.len());
            let nums: Vec<u32> = digits[..end]
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            match nums[..] {
                [major, minor] => Some(Self::new(major, minor, 0)),
                [major, minor, patch] => Some(Self::new(major, minor, patch)),
                _ => None,
            }
        })
    }
}

impl Ord for BtrfsProgsVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

impl PartialOrd for BtrfsProgsVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BtrfsProgsVersion {
    /// `6.14` or `6.16.1`, as btrfs-progs names its releases.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.patch != 0 {
            write!(f, ".{}", self.patch)?;
        }
        Ok(())
    }
}

/// A mkfs.btrfs capability that only newer btrfs-progs have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// `--subvol TYPE:DIR` (6.12; 6.11 development builds used another
    /// syntax).
    SubvolTypeDir,
    /// `--compress` together with `--rootdir` (6.13).
    CompressRootdir,
    /// `--inode-flags` (6.15).
    InodeFlags,
    /// `--reflink` (6.16.1).
    Reflink,
    /// `--shrink` (4.15).
    Shrink,
}

impl Feature {
    /// The first btrfs-progs release with this feature.
    pub fn min_version(self) -> BtrfsProgsVersion {
        match self {
            Feature::SubvolTypeDir => BtrfsProgsVersion::new(6, 12, 0),
            Feature::CompressRootdir => BtrfsProgsVersion::new(6, 13, 0),
            Feature::InodeFlags => BtrfsProgsVersion::new(6, 15, 0),
            Feature::Reflink => BtrfsProgsVersion::new(6, 16, 1),
            Feature::Shrink => BtrfsProgsVersion::new(4, 15, 0),
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::SubvolTypeDir => "subvolumes (--subvol TYPE:DIR)",
            Feature::CompressRootdir => "compression (--compress with --rootdir)",
            Feature::InodeFlags => {
                "inode flags (a subvolume's \"inodeFlags\", mkfs.btrfs --inode-flags)"
            }
            Feature::Reflink => "reflinked copies (\"reflink\": \"always\", mkfs.btrfs --reflink)",
            Feature::Shrink => "shrinking to the content (--shrink)",
        })
    }
}

/// The btrfs-progs debian bookworm-backports ships.
const BACKPORTS: BtrfsProgsVersion = BtrfsProgsVersion::new(6, 14, 0);

/// The installed mkfs.btrfs cannot do what the plan needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{feature} needs btrfs-progs {needed} or newer, but mkfs.btrfs is {found}; {}", remedy(*needed))]
pub struct MkfsError {
    /// The missing feature.
    pub feature: Feature,
    /// The version found.
    pub found: BtrfsProgsVersion,
    /// The version needed.
    pub needed: BtrfsProgsVersion,
}

fn remedy(needed: BtrfsProgsVersion) -> String {
    if needed <= BACKPORTS {
        format!("on Debian bookworm, add the bookworm-backports suite and run `apt-get install -t bookworm-backports btrfs-progs` ({BACKPORTS}); elsewhere install btrfs-progs {needed} or newer")
    } else {
        format!("install btrfs-progs {needed} or newer (Debian bookworm-backports has only {BACKPORTS}), or leave out the option")
    }
}

/// How big to make the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MkfsSize {
    /// `--shrink`: as small as the content allows.
    Shrink,
    /// `--byte-count N`.
    Bytes(u64),
}

/// Everything one `mkfs.btrfs` run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsPlan {
    /// Filesystem label.
    pub label: Option<String>,
    /// Filesystem UUID (`--uuid`); random when absent.
    pub uuid: Option<Uuid>,
    /// Device UUID (`--device-uuid`); random when absent. Reproducible
    /// images fix it.
    pub device_uuid: Option<Uuid>,
    /// Compression; `None` and [`Compress::No`] pass no flag.
    pub compress: Option<Compress>,
    /// `TYPE:DIR` values for `--subvol`, from
    /// [`Layout::mkfs_subvol_args`](crate::layout::Layout::mkfs_subvol_args).
    pub subvol_args: Vec<String>,
    /// `FLAGS:DIR` values for `--inode-flags`, from
    /// [`Layout::mkfs_inode_flag_args`](crate::layout::Layout::mkfs_inode_flag_args).
    pub inode_flag_args: Vec<String>,
    /// The filesystem size.
    pub size: MkfsSize,
    /// The staging tree to copy in (`--rootdir`).
    pub rootdir: PathBuf,
    /// The image file or device to write.
    pub output: PathBuf,
    /// Clone file extents from the staging tree instead of copying
    /// (`--reflink`).
    pub reflink: bool,
}

impl MkfsPlan {
    /// The features the plan uses that need a recent btrfs-progs.
    pub fn features(&self) -> Vec<Feature> {
        let mut f = Vec::new();
        if !self.subvol_args.is_empty() {
            f.push(Feature::SubvolTypeDir);
        }
        if self.compress.is_some_and(|c| c.is_enabled()) {
            f.push(Feature::CompressRootdir);
        }
        if !self.inode_flag_args.is_empty() {
            f.push(Feature::InodeFlags);
        }
        if self.reflink {
            f.push(Feature::Reflink);
        }
        if self.size == MkfsSize::Shrink {
            f.push(Feature::Shrink);
        }
        f
    }

    /// Checks that btrfs-progs `found` has every feature the plan uses;
    /// the error names the one needing the newest version.
    pub fn check_version(&self, found: &BtrfsProgsVersion) -> Result<(), MkfsError> {
        match self
            .features()
            .into_iter()
            .filter(|f| f.min_version() > *found)
            .max_by_key(|f| f.min_version())
        {
            None => Ok(()),
            Some(feature) => Err(MkfsError {
                feature,
                found: *found,
                needed: feature.min_version(),
            }),
        }
    }

    /// The arguments after `mkfs.btrfs`, ending with the output path.
    ///
    /// mkfs.btrfs 6.14 creates the output file if it is missing and, with
    /// `--rootdir`, grows `--byte-count` (and the file) when the content
    /// needs more room; it never shrinks a larger existing file.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--force".into()];
        if let Some(l) = &self.label {
            a.extend(["--label".into(), l.into()]);
        }
        if let Some(u) = &self.uuid {
            a.extend(["--uuid".into(), u.as_str().into()]);
        }
        if let Some(u) = &self.device_uuid {
            a.extend(["--device-uuid".into(), u.as_str().into()]);
        }
        a.extend(["--rootdir".into(), self.rootdir.clone().into()]);
        for s in &self.subvol_args {
            a.extend(["--subvol".into(), s.into()]);
        }
        for f in &self.inode_flag_args {
            a.extend(["--inode-flags".into(), f.into()]);
        }
        if let Some(c) = self.compress.filter(Compress::is_enabled) {
            a.extend(["--compress".into(), c.mkfs_arg().into()]);
        }
        if self.reflink {
            a.push("--reflink".into());
        }
        match self.size {
            MkfsSize::Shrink => a.push("--shrink".into()),
            MkfsSize::Bytes(n) => a.extend(["--byte-count".into(), n.to_string().into()]),
        }
        a.push(self.output.clone().into());
        a
    }
}

/// Whether a build passes `--reflink`, and why not; the report's
/// `reflink` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReflinkDecision {
    /// What the spec asked for.
    pub mode: ReflinkMode,
    /// Whether mkfs.btrfs clones the file data (`--reflink`).
    pub used: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
}

/// `"reflink": "always"` that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReflinkError {
    /// mkfs.btrfs is older than 6.16.1.
    #[error(transparent)]
    Version(#[from] MkfsError),
    /// The sources, the scratch space or the image are where clones
    /// cannot reach, or the plan writes data that cannot be cloned.
    #[error("\"reflink\": \"always\" (--reflink always) cannot work: {0}; use \"auto\" to copy what cannot be cloned, or put the sources, --scratch and the output on one btrfs or XFS filesystem")]
    Impossible(String),
}

/// Decides whether `plan` (with `reflink` still false) passes
/// `--reflink`, for btrfs-progs `found`. `obstacle` is what the caller
/// found in the way of cloning (a source on another filesystem, one that
/// cannot clone, a tree staged in memory), if anything; compression is
/// one more, found here: mkfs.btrfs writes cloned data uncompressed, and
/// `auto` keeps the compression asked for.
///
/// `never` never passes it; `auto` passes it when nothing is in the way;
/// `always` passes it or fails naming what is in the way.
pub fn decide_reflink(
    mode: ReflinkMode,
    plan: &MkfsPlan,
    found: &BtrfsProgsVersion,
    obstacle: Option<String>,
) -> Result<ReflinkDecision, ReflinkError> {
    let needed = Feature::Reflink.min_version();
    let compress = plan.compress.filter(Compress::is_enabled).map(|c| {
        format!("compression ({c}) is on, and mkfs.btrfs writes cloned data uncompressed")
    });
    let old = (*found < needed)
        .then(|| format!("mkfs.btrfs {found} has no --reflink (btrfs-progs {needed} or newer)"));
    let skip = |reason: String| ReflinkDecision {
        mode,
        used: false,
        reason: Some(reason),
    };
    match mode {
        ReflinkMode::Never => Ok(skip("\"reflink\" is \"never\"".into())),
        ReflinkMode::Auto => Ok(match old.or(compress).or(obstacle) {
            Some(reason) => skip(reason),
            None => ReflinkDecision {
                mode,
                used: true,
                reason: None,
            },
        }),
        ReflinkMode::Always => {
            if old.is_some() {
                return Err(ReflinkError::Version(MkfsError {
                    feature: Feature::Reflink,
                    found: *found,
                    needed,
                }));
            }
            match compress.or(obstacle) {
                Some(reason) => Err(ReflinkError::Impossible(reason)),
                None => Ok(ReflinkDecision {
                    mode,
                    used: true,
                    reason: None,
                }),
            }
        }
    }
}

/// A generous guess at the smallest `--byte-count` that holds
/// `total_file_bytes` of file data in `inodes` files, directories and
/// symlinks, with the default profiles (DUP metadata, single data),
/// rounded up to a MiB:
///
/// `128 MiB + 1.25 × data + 2 KiB × inodes`.
///
/// Measured with btrfs-progs 6.14 (`mkfs.btrfs --rootdir --shrink` on a
/// small file; the image size it left):
///
/// | tree | image |
/// |---|---|
/// | empty | 101 MiB (`-b` below 109 MiB is raised to 109 MiB) |
/// | one 10 MiB file | 117 MiB |
/// | one 100 MiB file | 205 MiB |
/// | one 1000 MiB file | 1293 MiB |
/// | 5000 files of 8 KiB (39 MiB) | 157 MiB |
/// | 20000 files of ≤ 6 bytes (inline) | 119 MiB |
/// | 50000 empty files | 201 MiB |
///
/// The formula is above every row. Compression is ignored (it only
/// helps). With `--shrink` on a large existing file, mkfs sizes its
/// metadata chunks to the file and shrinks less (549 MiB for the empty
/// tree on a 4 GiB file), so a shrunk image should start from a small or
/// missing output file.
pub fn estimate_min_size(total_file_bytes: u64, inodes: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let bytes =
        128 * MIB as u128 + u128::from(total_file_bytes) * 5 / 4 + u128::from(inodes) * 2048;
    let mib = bytes.div_ceil(MIB as u128);
    u64::try_from(mib * MIB as u128).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> BtrfsProgsVersion {
        BtrfsProgsVersion::parse(s).unwrap()
    }

    fn plan() -> MkfsPlan {
        MkfsPlan {
            label: None,
            uuid: None,
            device_uuid: None,
            compress: None,
            subvol_args: vec![],
            inode_flag_args: vec![],
            size: MkfsSize::Bytes(1 << 30),
            rootdir: "/stage".into(),
            output: "/out/img".into(),
            reflink: false,
        }
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            v("mkfs.btrfs, part of btrfs-progs v6.14\n-EXPERIMENTAL -INJECT -STATIC +LZO +ZSTD"),
            BtrfsProgsVersion::new(6, 14, 0)
        );
        assert_eq!(v("btrfs-progs v6.6.3"), BtrfsProgsVersion::new(6, 6, 3));
        assert_eq!(v("v6.16.1"), BtrfsProgsVersion::new(6, 16, 1));
        assert_eq!(v("btrfs-progs v6.17-rc1"), BtrfsProgsVersion::new(6, 17, 0));
        assert_eq!(
            BtrfsProgsVersion::parse("mkfs.btrfs: command not found"),
            None
        );
        assert_eq!(BtrfsProgsVersion::parse("version vx.y"), None);
        assert!(v("v6.16.1") > v("v6.16"));
        assert!(v("v6.9") < v("v6.12"));
        assert!(v("v10.0") > v("v6.16.1"));
        assert_eq!(v("v6.16.1").to_string(), "6.16.1");
        assert_eq!(v("v6.14").to_string(), "6.14");
    }

    #[test]
    fn minimal_args() {
        let a = plan().args();
        assert_eq!(
            a,
            [
                "--force",
                "--rootdir",
                "/stage",
                "--byte-count",
                "1073741824",
                "/out/img"
            ]
            .map(OsString::from)
        );
        assert!(plan().features().is_empty());
        assert!(plan().check_version(&v("v4.0")).is_ok());
    }

    #[test]
    fn full_args_and_features() {
        let p = MkfsPlan {
            label: Some("nixos".into()),
            uuid: Some("44444444-4444-4444-8888-888888888888".parse().unwrap()),
            device_uuid: None,
            compress: Some(Compress::Zstd(Some(3))),
            subvol_args: vec!["default:@".into(), "rw:@nix".into()],
            inode_flag_args: vec!["nodatacow:@swap".into()],
            size: MkfsSize::Shrink,
            reflink: true,
            ..plan()
        };
        let a: Vec<String> = p
            .args()
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            a.join(" "),
            "--force --label nixos --uuid 44444444-4444-4444-8888-888888888888 --rootdir /stage \
             --subvol default:@ --subvol rw:@nix --inode-flags nodatacow:@swap --compress zstd:3 \
             --reflink --shrink /out/img"
        );
        assert_eq!(
            p.features(),
            vec![
                Feature::SubvolTypeDir,
                Feature::CompressRootdir,
                Feature::InodeFlags,
                Feature::Reflink,
                Feature::Shrink
            ]
        );
        let no = MkfsPlan {
            compress: Some(Compress::No),
            ..plan()
        };
        assert!(!no.args().contains(&OsString::from("--compress")));
        assert!(no.features().is_empty());
    }

    #[test]
    fn version_errors_explain() {
        let p = MkfsPlan {
            subvol_args: vec!["rw:@".into()],
            compress: Some(Compress::Lzo),
            ..plan()
        };
        assert!(p.check_version(&v("v6.14")).is_ok());
        let e = p.check_version(&v("v6.2")).unwrap_err();
        assert_eq!(e.feature, Feature::CompressRootdir);
        let msg = e.to_string();
        for needle in [
            "--compress",
            "6.13",
            "6.2",
            "apt-get install -t bookworm-backports btrfs-progs",
        ] {
            assert!(msg.contains(needle), "{msg}");
        }
        let e = p.check_version(&v("v6.12.1")).unwrap_err();
        assert_eq!(
            (e.feature, e.needed),
            (Feature::CompressRootdir, BtrfsProgsVersion::new(6, 13, 0))
        );
        let r = MkfsPlan {
            reflink: true,
            ..plan()
        };
        let msg = r.check_version(&v("v6.14")).unwrap_err().to_string();
        assert!(
            msg.contains("6.16.1") && msg.contains("has only 6.14"),
            "{msg}"
        );
        assert!(r.check_version(&v("v6.16.1")).is_ok());
        let s = MkfsPlan {
            size: MkfsSize::Shrink,
            ..plan()
        };
        assert_eq!(
            s.check_version(&v("v4.14")).unwrap_err().feature,
            Feature::Shrink
        );
    }

    #[test]
    fn inode_flags_need_6_15_and_name_the_field() {
        let p = MkfsPlan {
            inode_flag_args: vec!["nodatacow:@swap".into()],
            ..plan()
        };
        assert!(p.check_version(&v("v6.15")).is_ok());
        let msg = p.check_version(&v("v6.14")).unwrap_err().to_string();
        for needle in ["\"inodeFlags\"", "--inode-flags", "6.15", "is 6.14"] {
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn reflink_decisions() {
        use ReflinkMode::*;
        let (old, new, first) = (v("v6.14"), v("v7.3"), v("v6.16.1"));
        let d = |mode, p: &MkfsPlan, found, obstacle: Option<&str>| {
            decide_reflink(mode, p, found, obstacle.map(String::from))
        };
        let used = |r: Result<ReflinkDecision, ReflinkError>| r.unwrap().used;
        let reason = |r: Result<ReflinkDecision, ReflinkError>| r.unwrap().reason.unwrap();
        let p = plan();
        assert!(used(d(Auto, &p, &new, None)));
        assert!(used(d(Always, &p, &new, None)));
        assert!(used(d(Auto, &p, &first, None)));
        assert!(reason(d(Never, &p, &new, None)).contains("never"));
        assert!(reason(d(Auto, &p, &old, None)).contains("6.16.1 or newer"));
        assert_eq!(
            reason(d(Auto, &p, &new, Some("x is on tmpfs"))),
            "x is on tmpfs"
        );
        let zstd = MkfsPlan {
            compress: Some(Compress::Zstd(None)),
            ..plan()
        };
        assert!(reason(d(Auto, &zstd, &new, None)).contains("compression (zstd)"));
        let no = MkfsPlan {
            compress: Some(Compress::No),
            ..plan()
        };
        assert!(used(d(Auto, &no, &new, None)));
        // always: refused, naming the version or the obstacle.
        let e = d(Always, &p, &old, None).unwrap_err().to_string();
        assert!(e.contains("6.16.1") && e.contains("is 6.14"), "{e}");
        let e = d(Always, &p, &new, Some("/src is on tmpfs"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/src is on tmpfs") && e.contains("\"auto\""),
            "{e}"
        );
        let e = d(Always, &zstd, &new, None).unwrap_err().to_string();
        assert!(e.contains("uncompressed"), "{e}");
        assert!(!used(d(Never, &p, &new, None)));
    }

    #[test]
    fn estimate_covers_measurements() {
        const MIB: u64 = 1 << 20;
        // (data bytes, inodes, measured MiB) from the table in the docs.
        for (data, inodes, measured) in [
            (0, 1, 101),
            (10 * MIB, 2, 117),
            (100 * MIB, 2, 205),
            (1000 * MIB, 2, 1293),
            (5000 * 8192, 5001, 157),
            (20000 * 6, 20001, 119),
            (0, 50001, 201),
        ] {
            let est = estimate_min_size(data, inodes);
            assert!(
                est >= measured * MIB,
                "{data} {inodes}: {} < {measured}",
                est / MIB
            );
            assert!(
                est <= measured * MIB * 3 / 2,
                "{data} {inodes}: {} too generous",
                est / MIB
            );
            assert_eq!(est % MIB, 0);
        }
        assert_eq!(estimate_min_size(u64::MAX, u64::MAX), u64::MAX);
    }
}

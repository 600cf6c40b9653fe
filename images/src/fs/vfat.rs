//! Planning for vfat (FAT12/16/32) filesystems made from a directory:
//! what FAT can hold — names (long file names are UTF-16, VFAT forbids
//! some characters), file sizes, path lengths, entries per directory,
//! labels — checked before anything is made, each refusal naming the
//! source path and the limit; how big a filesystem a set of files needs;
//! and the arguments of `mkfs.vfat`. FAT records no owners: the runner
//! makes it as the calling user, without a namespace.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// FAT32 stores a file's size in 32 bits: files must be smaller than this.
pub const MAX_FILE_BYTES: u64 = 1 << 32;

/// The longest path, in UTF-16 units below the root (`\a\b.txt`), that
/// every FAT reader handles: Windows' `MAX_PATH` of 260 less the drive
/// (`C:`) and the terminating NUL.
pub const MAX_PATH_UNITS: usize = 257;

/// A FAT directory holds at most 65536 32-byte entries (a long name takes
/// one entry per 13 UTF-16 units, plus its short entry).
pub const MAX_DIR_ENTRIES: usize = 65536;

/// Characters VFAT refuses in a long file name.
const FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

/// Why a name cannot be a FAT long file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// Empty, `.` or `..`.
    NotAName,
    /// The name's bytes are not UTF-8, so they have no UTF-16 form.
    NotUtf16,
    /// A character VFAT forbids (`" * / : < > ? \ |`).
    Forbidden(char),
    /// A control character (below U+0020).
    Control(char),
    /// A trailing dot or space, which FAT drops.
    TrailingDotOrSpace,
    /// More than 255 UTF-16 units.
    TooLong(usize),
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameProblem::NotAName => write!(f, "is not a file name"),
            NameProblem::NotUtf16 => write!(
                f,
                "is not valid UTF-8, so it is not representable in FAT's long names, which are UTF-16"
            ),
            NameProblem::Forbidden(c) => write!(f, "contains {c:?}, which FAT cannot hold"),
            NameProblem::Control(c) => {
                write!(f, "contains the control character {c:?}, which FAT cannot hold")
            }
            NameProblem::TrailingDotOrSpace => {
                write!(f, "ends with a dot or a space, which FAT drops")
            }
            NameProblem::TooLong(n) => write!(
                f,
                "is {n} UTF-16 units long, longer than FAT's 255"
            ),
        }
    }
}

/// Why a label cannot be a FAT volume label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelProblem {
    /// Empty or over 11 bytes.
    Length,
    /// A character outside printable ASCII, or one VFAT forbids.
    Character(char),
}

/// What a FAT filesystem cannot hold, or a FAT field that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VfatError {
    /// A name FAT cannot store.
    #[error("the name of {path:?} {problem}: rename it")]
    Name {
        /// The source path.
        path: PathBuf,
        /// What is wrong with its last component.
        problem: NameProblem,
    },
    /// Two names one FAT directory cannot tell apart.
    #[error(
        "{a:?} and {b:?} in {} differ only in case, which FAT does not distinguish: rename one",
        dir.display()
    )]
    CaseClash {
        /// The source directory.
        dir: PathBuf,
        /// The first name.
        a: String,
        /// The second name.
        b: String,
    },
    /// A file of 4 GiB or more.
    #[error(
        "{} is {size} bytes; FAT32 holds files below 4 GiB ({MAX_FILE_BYTES} bytes): \
         split it, or put it in a filesystem without that limit",
        path.display()
    )]
    FileTooLarge {
        /// The source path.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A path too long for FAT readers.
    #[error(
        "{} is {units} UTF-16 units from the partition's root, more than the {MAX_PATH_UNITS} \
         FAT readers handle (Windows' MAX_PATH): shorten its names or nest it less deeply",
        path.display()
    )]
    PathTooLong {
        /// The source path.
        path: PathBuf,
        /// Its length in UTF-16 units below the root.
        units: usize,
    },
    /// A directory with more entries than FAT allows.
    #[error(
        "{} needs {entries} directory entries (long names take several), more than the \
         {MAX_DIR_ENTRIES} of a FAT directory: split it into subdirectories",
        dir.display()
    )]
    DirectoryFull {
        /// The source directory.
        dir: PathBuf,
        /// The entries its names need.
        entries: usize,
    },
    /// A symlink, device, FIFO or socket.
    #[error("{} is {what}, which FAT cannot hold: replace it with the file itself", path.display())]
    NotAFile {
        /// The source path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The files do not fit in a fixed size.
    #[error(
        "the FAT partition ({size} bytes) is too small for its files ({bytes} bytes in {files} \
         files and {dirs} directories from {}; at least {needed} bytes with FAT's own \
         structures): make \"size\" larger, or \"auto\"",
        root.display()
    )]
    TooSmall {
        /// The filesystem's size.
        size: u64,
        /// The least it needs.
        needed: u64,
        /// Bytes of the files.
        bytes: u64,
        /// Number of files.
        files: usize,
        /// Number of directories.
        dirs: usize,
        /// The source directory.
        root: PathBuf,
    },
    /// A volume label FAT cannot store.
    #[error("the FAT label {label:?} {}", match problem {
        LabelProblem::Length => "must be 1 to 11 characters".to_string(),
        LabelProblem::Character(c) => format!("contains {c:?}: use A-Z, 0-9, space, - or _"),
    })]
    Label {
        /// The label as given.
        label: String,
        /// What is wrong.
        problem: LabelProblem,
    },
    /// A build spec field FAT has no place for.
    #[error("\"{field}\" cannot be used with vfat: {why}")]
    Unsupported {
        /// The spec field (also the flag's name).
        field: &'static str,
        /// Why, and what to do instead.
        why: &'static str,
    },
    /// A FAT size other than 12, 16 or 32.
    #[error("\"fatSize\" is 12, 16 or 32, not {0}")]
    FatSize(u8),
}

/// Checks one name of the source tree at `path` (its last component).
pub fn check_name(path: &Path, name: &OsStr) -> Result<(), VfatError> {
    let problem = |problem| {
        Err(VfatError::Name {
            path: path.to_path_buf(),
            problem,
        })
    };
    let Some(name) = name.to_str() else {
        return problem(NameProblem::NotUtf16);
    };
    if name.is_empty() || name == "." || name == ".." {
        return problem(NameProblem::NotAName);
    }
    if let Some(c) = name.chars().find(|c| (*c as u32) < 0x20) {
        return problem(NameProblem::Control(c));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return problem(NameProblem::Forbidden(c));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return problem(NameProblem::TrailingDotOrSpace);
    }
    let units = name.encode_utf16().count();
    if units > 255 {
        return problem(NameProblem::TooLong(units));
    }
    Ok(())
}

/// Checks a regular file: its size, and the length of its path `rel`
/// below the root (`path` is the source path, for the message).
pub fn check_file(path: &Path, rel: &Path, size: u64) -> Result<(), VfatError> {
    if size >= MAX_FILE_BYTES {
        return Err(VfatError::FileTooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    check_path(path, rel)
}

/// Checks the length of a path `rel` below the root (already checked to
/// be UTF-8 name by name).
pub fn check_path(path: &Path, rel: &Path) -> Result<(), VfatError> {
    let units: usize = rel
        .iter()
        .map(|c| c.to_string_lossy().encode_utf16().count() + 1)
        .sum();
    if units > MAX_PATH_UNITS {
        return Err(VfatError::PathTooLong {
            path: path.to_path_buf(),
            units,
        });
    }
    Ok(())
}

/// The directory entries FAT needs for these names (each: a short entry,
/// and one long entry per 13 UTF-16 units), plus `.` and `..`; an error
/// past [`MAX_DIR_ENTRIES`].
pub fn check_entries<'a>(
    dir: &Path,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), VfatError> {
    let entries = 2 + names
        .map(|n| 1 + n.encode_utf16().count().div_ceil(13))
        .sum::<usize>();
    if entries > MAX_DIR_ENTRIES {
        return Err(VfatError::DirectoryFull {
            dir: dir.to_path_buf(),
            entries,
        });
    }
    Ok(())
}

/// The FAT volume label rules: 1 to 11 bytes of printable ASCII without
/// the characters VFAT forbids; stored upper-case.
pub fn check_label(label: &str) -> Result<(), VfatError> {
    let bad = |problem| {
        Err(VfatError::Label {
            label: label.to_string(),
            problem,
        })
    };
    if label.is_empty() || label.len() > 11 {
        return bad(LabelProblem::Length);
    }
    if let Some(c) = label
        .chars()
        .find(|c| !c.is_ascii_graphic() && *c != ' ' || FORBIDDEN.contains(c) || *c == '.')
    {
        return bad(LabelProblem::Character(c));
    }
    Ok(())
}

/// Checks `fatSize`.
pub fn check_fat_size(bits: u8) -> Result<(), VfatError> {
    match bits {
        12 | 16 | 32 => Ok(()),
        b => Err(VfatError::FatSize(b)),
    }
}

/// The least a FAT filesystem holding these files and `dirs` directories
/// needs: every file and directory in 512-byte clusters (the smallest
/// FAT has), two FATs of 12 bits per cluster and the boot sector. A
/// fixed size below it cannot work; above it, mkfs.vfat's own cluster
/// size may still not fit, which filling the filesystem finds.
pub fn least_size(file_sizes: &[u64], dirs: u64) -> u64 {
    let clusters: u64 = file_sizes.iter().map(|s| s.div_ceil(512)).sum::<u64>() + dirs;
    clusters * 512 + 2 * (clusters * 3 / 2).div_ceil(512) * 512 + 512
}

/// Refuses files that cannot fit in a filesystem of `size` bytes.
pub fn check_fits(
    size: u64,
    file_sizes: &[u64],
    dirs: usize,
    root: &Path,
) -> Result<(), VfatError> {
    let needed = least_size(file_sizes, dirs as u64);
    if needed > size {
        return Err(VfatError::TooSmall {
            size,
            needed,
            bytes: file_sizes.iter().sum(),
            files: file_sizes.len(),
            dirs,
            root: root.to_path_buf(),
        });
    }
    Ok(())
}

/// A generous size for a FAT filesystem holding `files` of these sizes
/// and `dirs` directories: every file and directory rounded up to a 4 KiB
/// cluster (directories of many entries grow by more), two FATs, reserved
/// sectors, and 1/16 slack; at least 1 MiB. The runner grows it and tries
/// again if mcopy still finds the filesystem full.
pub fn estimate_size(file_sizes: &[u64], dirs: u64) -> u64 {
    const CLUSTER: u64 = 4096;
    let clusters: u64 = file_sizes
        .iter()
        .map(|s| s.div_ceil(CLUSTER).max(1))
        .sum::<u64>()
        + dirs * 2
        + (file_sizes.len() as u64 * 64).div_ceil(CLUSTER);
    let data = clusters * CLUSTER;
    // FAT32 entries are 4 bytes per cluster, two copies; 64 KiB reserved.
    let fats = 2 * clusters * 4 + 2 * 64 * 1024;
    let total = data + fats + data / 16 + 512 * 1024;
    total.max(1 << 20).div_ceil(1 << 20) * (1 << 20)
}

/// 1980-01-01, the earliest time FAT can record: a reproducible FAT's
/// times are never before it.
pub const FAT_EPOCH: i64 = 315_532_800;

/// What a FAT boot sector says of its filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSector {
    /// 12, 16 or 32.
    pub fat_bits: u8,
    /// The volume id.
    pub volume_id: u32,
    /// The volume label, trailing spaces dropped ("NO NAME" for none).
    pub label: String,
}

impl BootSector {
    /// Reads the first 512 bytes of a filesystem; `None` unless it is a
    /// FAT boot sector (a jump, and a FAT type string, as mkfs.vfat
    /// writes: FAT32 keeps id, label and type at 67, 71 and 82, FAT12/16
    /// at 39, 43 and 54).
    pub fn parse(s: &[u8]) -> Option<BootSector> {
        if s.len() < 512 || !(s[0] == 0xEB || s[0] == 0xE9) {
            return None;
        }
        let (o, fat_bits) = if &s[82..87] == b"FAT32" {
            (67, 32)
        } else if &s[54..59] == b"FAT12" {
            (39, 12)
        } else if &s[54..59] == b"FAT16" {
            (39, 16)
        } else {
            return None;
        };
        Some(BootSector {
            fat_bits,
            volume_id: u32::from_le_bytes(s[o..o + 4].try_into().ok()?),
            label: String::from_utf8_lossy(&s[o + 4..o + 15])
                .trim_end()
                .to_string(),
        })
    }

    /// The volume id as Linux shows it (`/dev/disk/by-uuid/2178-694E`).
    pub fn id_text(volume_id: u32) -> String {
        format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xFFFF)
    }
}

/// How to make one FAT filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mkfs {
    /// 12, 16 or 32; by default mkfs.vfat picks by size.
    pub fat_size: Option<u8>,
    /// The volume label (stored upper-case).
    pub label: Option<String>,
    /// The volume id.
    pub volume_id: u32,
    /// No time-based or random fields (a reproducible filesystem).
    pub invariant: bool,
}

impl Mkfs {
    /// The arguments of `mkfs.vfat`, before the image path.
    /// `--invariant` comes first: it also sets the volume id 1234abcd,
    /// which a later `-i` overrides (dosfstools 4.2).
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.invariant {
            a.push("--invariant".to_string());
        }
        if let Some(f) = self.fat_size {
            a.extend(["-F".to_string(), f.to_string()]);
        }
        if let Some(l) = &self.label {
            a.extend(["-n".to_string(), l.to_uppercase()]);
        }
        a.extend(["-i".to_string(), format!("{:08x}", self.volume_id)]);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn name(n: &[u8]) -> Result<(), VfatError> {
        check_name(Path::new("src/x"), OsStr::from_bytes(n))
    }

    #[test]
    fn fat_names_refuse_what_vfat_cannot_store() {
        assert_eq!(name(b"config.txt"), Ok(()));
        assert_eq!(name("Image ünï long name.dtb".as_bytes()), Ok(()));
        for bad in ["a:b", "what?", "x\\y", "tab\tname", "trailing.", "", ".."] {
            assert!(name(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
        assert!(name("a".repeat(256).as_bytes()).is_err());
    }

    #[test]
    fn a_non_utf8_name_is_said_to_have_no_utf16_form() {
        let e = name(b"caf\xe9-latin1").unwrap_err().to_string();
        assert!(e.contains("UTF-16") && e.contains("not valid UTF-8"), "{e}");
        assert!(!e.contains("'\\\\'"), "{e}");
    }

    #[test]
    fn limits_name_the_path_and_the_limit() {
        let e = check_file(Path::new("fw/big"), Path::new("big"), 1 << 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fw/big") && e.contains("below 4 GiB"), "{e}");
        assert!(check_file(Path::new("f"), Path::new("f"), (1 << 32) - 1).is_ok());
        let deep: PathBuf = (0..30).map(|_| "directory").collect();
        let e = check_path(Path::new("fw/deep"), &deep)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fw/deep") && e.contains("257"), "{e}");
        let e = check_fits(2 << 20, &[3 << 20], 0, Path::new("big"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("too small for its files") && e.contains("big"),
            "{e}"
        );
    }

    #[test]
    fn labels_are_short_ascii() {
        assert_eq!(check_label("FIRMWARE"), Ok(()));
        assert!(check_label("FIRMWARE_LONG").is_err());
        assert!(check_label("fé").is_err());
    }

    #[test]
    fn the_estimate_covers_the_clusters() {
        let s = estimate_size(&[1; 1000], 10);
        assert!(s >= 1000 * 4096, "{s}");
        assert_eq!(estimate_size(&[], 0), 1 << 20);
        assert!(least_size(&[1; 1000], 10) <= s);
    }

    #[test]
    fn mkfs_arguments() {
        let m = Mkfs {
            fat_size: Some(32),
            label: Some("boot".into()),
            volume_id: 0x2178694e,
            invariant: true,
        };
        assert_eq!(
            m.args(),
            ["--invariant", "-F", "32", "-n", "BOOT", "-i", "2178694e"]
        );
    }

    #[test]
    fn the_boot_sector_says_fat_size_id_and_label() {
        let mut s = [0u8; 512];
        s[0] = 0xEB;
        s[39..43].copy_from_slice(&0x2178_694e_u32.to_le_bytes());
        s[43..54].copy_from_slice(b"FIRMWARE   ");
        s[54..62].copy_from_slice(b"FAT16   ");
        let b = BootSector::parse(&s).unwrap();
        assert_eq!(
            (b.fat_bits, b.volume_id, b.label.as_str()),
            (16, 0x2178_694e, "FIRMWARE")
        );
        assert_eq!(BootSector::id_text(b.volume_id), "2178-694E");
        s[54..62].copy_from_slice(b"EXT4    ");
        assert_eq!(BootSector::parse(&s), None);
        s[82..90].copy_from_slice(b"FAT32   ");
        s[67..71].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            BootSector::parse(&s).map(|b| (b.fat_bits, b.volume_id)),
            Some((32, 7))
        );
    }
}

//! ext4: `mkfs.ext4 -d` arguments, the `debugfs` command file that fixes
//! owners after mkfs, and the size rules.
//!
//! `mke2fs -d DIR` (e2fsprogs ≥ 1.43) copies each file's uid, gid, mode,
//! times and xattrs from `lstat` and records device numbers, so in the
//! build's namespace it writes what the namespace sees. What it cannot see
//! (owners the namespace does not map, the ownership manifest) is set
//! afterwards with `debugfs -w -f FILE IMAGE`, which needs no root: one
//! `set_inode_field <INO> FIELD VALUE` line per change, inodes named by
//! number so that no path needs quoting.
//!
//! Reproducible builds (checked with e2fsprogs 1.47.0, Debian bookworm):
//! `-U` and `-E hash_seed=` fix the random UUID and directory hash seed,
//! `E2FSPROGS_FAKE_TIME` fixes the times mkfs, resize2fs and debugfs take
//! from the clock; `mke2fs -d` sorts directory entries itself, but copies
//! ctime and atime from the source, which are set afterwards with debugfs
//! (clamped; the atime to the mtime, [`time_fields`]), and writes xattrs in the order the source
//! filesystem lists them (ext4 and tmpfs differ), so they are removed and
//! set again in name order ([`xattr_script`]), after which libext2fs lays
//! them out the same way. A reproducible build writes every inode's owner,
//! mode and times whether they change or not ([`owner_fields`]): what
//! debugfs writes is counted in the superblock (`s_kbytes_written`), and a
//! build without a namespace, whose mkfs records the caller's ids on every
//! inode, must end with the bytes a namespace build ends with.
//!
//! Size: `auto` makes a generous image ([`estimate`]), then shrinks it with
//! `resize2fs -M` and grows it again by the headroom ([`with_headroom`]).

use std::ffi::OsString;
use std::path::Path;

use super::{FsError, Options, Reproducible};

/// The block size rootbox makes ext4 with: mke2fs would pick 1 KiB for
/// small images, whatever they grow to later (nixpkgs' make-ext4-fs.nix
/// passes `-b 4096` too).
pub const BLOCK: u64 = 4096;
/// The inode size (mke2fs's default for filesystems above 512 MiB; small
/// ones would get 128 bytes, too small for in-inode xattrs and nanoseconds).
pub const INODE_SIZE: u64 = 256;
/// The longest label ext4 stores.
pub const LABEL_MAX: usize = 16;

/// Refuses compression (ext4 has none) and over-long labels.
pub fn check(o: &Options) -> Result<(), FsError> {
    if o.compress.as_deref().is_some_and(|c| c != "no") {
        return Err(FsError::Unsupported {
            field: "compress",
            filesystem: super::Filesystem::Ext4,
            why: "ext4 does not compress; remove \"compress\" (erofs and squashfs compress)".into(),
        });
    }
    if let Some(l) = &o.label {
        if l.len() > LABEL_MAX {
            return Err(FsError::Unsupported {
                field: "label",
                filesystem: super::Filesystem::Ext4,
                why: format!(
                    "{l:?} is {} bytes; an ext4 label holds at most {LABEL_MAX}",
                    l.len()
                ),
            });
        }
    }
    Ok(())
}

/// What a tree holds, for sizing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Content {
    /// Inodes (files, directories, links, devices; hard links once).
    pub inodes: u64,
    /// Data blocks of [`BLOCK`] bytes: file contents rounded up per file,
    /// one per directory, one per long symlink.
    pub blocks: u64,
}

/// The inode count to give mke2fs: the content's, with room for
/// lost+found, the reserved inodes and a little more (mke2fs's default of
/// one inode per 16 KiB runs out on trees of many small files).
pub fn inode_count(c: Content) -> u64 {
    (c.inodes + c.inodes / 8 + 64).max(128)
}

/// A first size for `auto`: safely more than the content needs (it is
/// shrunk to the minimum afterwards), in bytes, a multiple of [`BLOCK`].
pub fn estimate(c: Content) -> u64 {
    let data = c.blocks * BLOCK;
    let inodes = inode_count(c) * INODE_SIZE;
    // Metadata (bitmaps, group descriptors, extent blocks) and the journal
    // (mke2fs gives 4–64 MiB to images of this size) on top.
    let raw = data + data / 8 + inodes + 96 * (1 << 20);
    raw.div_ceil(BLOCK) * BLOCK
}

/// The size of an `auto` image after `resize2fs -M` left `min_blocks`: the
/// headroom added on top, in blocks.
pub fn with_headroom(min_blocks: u64, headroom: u64) -> u64 {
    min_blocks + headroom.div_ceil(BLOCK)
}

/// The `mkfs.ext4` arguments that make `image` (`bytes` long) from `source`.
pub fn mkfs_args(
    o: &Options,
    source: &Path,
    image: &Path,
    bytes: u64,
    inodes: u64,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = ["-F", "-q", "-t", "ext4", "-b"]
        .into_iter()
        .map(OsString::from)
        .collect();
    a.push(BLOCK.to_string().into());
    a.push("-I".into());
    a.push(INODE_SIZE.to_string().into());
    a.push("-N".into());
    a.push(inodes.to_string().into());
    if let Some(l) = &o.label {
        a.push("-L".into());
        a.push(l.into());
    }
    if let Some(u) = o.effective_uuid() {
        a.push("-U".into());
        a.push(u.into());
        if o.reproducible.is_some() {
            // The directory hash seed is random otherwise.
            a.push("-E".into());
            a.push(format!("hash_seed={u}").into());
        }
    }
    a.push("-d".into());
    a.push(source.into());
    a.push(image.into());
    a.push(format!("{}k", bytes / 1024).into());
    a
}

/// The environment of every e2fsprogs tool of a reproducible build: the
/// clock they read is the epoch.
pub fn env(r: Option<&Reproducible>) -> Vec<(&'static str, String)> {
    match r {
        Some(r) => vec![
            ("E2FSPROGS_FAKE_TIME", r.epoch.to_string()),
            ("SOURCE_DATE_EPOCH", r.epoch.to_string()),
        ],
        None => Vec::new(),
    }
}

/// One inode field `debugfs`'s `set_inode_field` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Owner.
    Uid(u32),
    /// Group.
    Gid(u32),
    /// The whole `st_mode`.
    Mode(u32),
    /// A time, in seconds (the nanoseconds become 0).
    Time(TimeField, u64),
}

/// The four times of an ext4 inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    /// Last access.
    Atime,
    /// Last change of the content.
    Mtime,
    /// Last change of the inode.
    Ctime,
    /// Creation.
    Crtime,
}

impl TimeField {
    /// All four, in debugfs's order.
    pub const ALL: [TimeField; 4] = [
        TimeField::Atime,
        TimeField::Mtime,
        TimeField::Ctime,
        TimeField::Crtime,
    ];

    fn name(self) -> &'static str {
        match self {
            TimeField::Atime => "atime",
            TimeField::Mtime => "mtime",
            TimeField::Ctime => "ctime",
            TimeField::Crtime => "crtime",
        }
    }
}

/// The fields that change an inode from (`uid`, `gid`, `mode`) to `fix`.
pub fn fix_fields(uid: u32, gid: u32, mode: u32, fix: &super::Fix) -> Vec<Field> {
    let mut f = Vec::new();
    if fix.uid != uid {
        f.push(Field::Uid(fix.uid));
    }
    if fix.gid != gid {
        f.push(Field::Gid(fix.gid));
    }
    if fix.mode != mode {
        f.push(Field::Mode(fix.mode));
    }
    f
}

/// The owner fields of one inode of a reproducible image: `uid`, `gid`
/// and `mode` (the whole `st_mode`), written whether they change or not
/// (see [`time_fields`]).
pub fn owner_fields(uid: u32, gid: u32, mode: u32) -> [Field; 3] {
    [Field::Uid(uid), Field::Gid(gid), Field::Mode(mode)]
}

/// The time fields of one inode of a reproducible image, from the
/// `mtime`, `ctime` and `crtime` mkfs recorded (seconds, nanoseconds):
/// a time later than `epoch`, or one with nanoseconds, becomes a whole
/// second no later than the epoch; the atime becomes that mtime, always
/// written. The atime mkfs recorded is not used: staging gives every
/// entry its mtime as atime, but any read of the staged tree before mkfs
/// `lstat`s it (rootbox's own walk, a readlink or readdir of a copy on a
/// writable, `relatime` mount, as a build without a namespace stages it)
/// moves it. Written for every inode, so that the command file, and with
/// it what debugfs writes (`s_kbytes_written` counts it), does not depend
/// on it either.
pub fn time_fields(
    mtime: (i64, u32),
    ctime: (i64, u32),
    crtime: (i64, u32),
    epoch: u64,
) -> Vec<Field> {
    let clamp = |(sec, nsec): (i64, u32)| {
        let clamped = sec.clamp(0, epoch as i64) as u64;
        (clamped, clamped as i64 != sec || nsec != 0)
    };
    let (mtime_set, _) = clamp(mtime);
    let mut fields = vec![Field::Time(TimeField::Atime, mtime_set)];
    for (which, time) in [
        (TimeField::Mtime, mtime),
        (TimeField::Ctime, ctime),
        (TimeField::Crtime, crtime),
    ] {
        let (clamped, changes) = clamp(time);
        if changes {
            fields.push(Field::Time(which, clamped));
        }
    }
    fields
}

/// The `debugfs -w -f` command file that applies `edits` (inode number,
/// field). Times are written as seconds, which debugfs stores with zero
/// nanoseconds.
pub fn debugfs_script(edits: &[(u64, Field)]) -> String {
    let mut s = String::new();
    for (ino, f) in edits {
        let (name, value) = match f {
            Field::Uid(v) => ("uid", v.to_string()),
            Field::Gid(v) => ("gid", v.to_string()),
            Field::Mode(v) => ("mode", format!("0{v:o}")),
            // `@`: seconds. Without it debugfs first tries the digits as
            // a date (YYYYMMDDHHMM[SS]): 1712121212 (April 2024) is set as
            // a time in 2257.
            Field::Time(t, v) => (t.name(), format!("@{v}")),
        };
        s += &format!("set_inode_field <{ino}> {name} {value}\n");
        if let Field::Time(t, _) = f {
            // The seconds' high bits and the nanoseconds live in _extra.
            s += &format!("set_inode_field <{ino}> {}_extra 0\n", t.name());
        }
    }
    s
}

/// The debugfs commands that remove the xattrs of inode `ino` and set them
/// again in name order, each value read from its file (`name`, file).
/// A name debugfs's command parser would split is refused.
pub fn xattr_script(
    ino: u64,
    path: &super::Name,
    xattrs: &[(String, std::path::PathBuf)],
) -> Result<String, FsError> {
    let mut sorted: Vec<&(String, std::path::PathBuf)> = xattrs.iter().collect();
    sorted.sort();
    for (name, file) in &sorted {
        let bad = |s: &str| s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\');
        if bad(name) || file.to_str().is_none_or(bad) {
            return Err(FsError::PathSyntax {
                path: path.clone(),
                tool: "debugfs",
                why: "white space, a quote, a backslash or a byte that is not UTF-8 in an xattr \
                      name",
            });
        }
    }
    let names: Vec<&str> = sorted.iter().map(|(n, _)| n.as_str()).collect();
    let mut s = format!("ea_rm <{ino}> {}\n", names.join(" "));
    for (name, file) in sorted {
        s += &format!("ea_set -f {} <{ino}> {name}\n", file.display());
    }
    Ok(s)
}

/// A device number as `mke2fs -d` stores it in the inode's block map:
/// `(block[0], block[1])`, the old encoding (`major * 256 + minor` in
/// block 0) when both fit in a byte, the new one in block 1 otherwise.
pub fn device_blocks(major: u32, minor: u32) -> (u32, u32) {
    if major < 256 && minor < 256 {
        (major * 256 + minor, 0)
    } else {
        (0, (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
    }
}

/// The debugfs commands that make inode `ino`, at `path`, the device node
/// `mode` (its type and permission bits) with number `major`:`minor`, as
/// `mke2fs -d` would have made it: the mode, the number
/// ([`device_blocks`]), and its directory entry's file type (`unlink`,
/// then `link`, which takes the type from the inode). A build without a
/// user namespace stages device nodes as FIFOs; a reproducible build runs
/// these on every device node, so that what debugfs writes does not depend
/// on how the tree was staged. A path debugfs's parser would split is
/// refused.
pub fn device_script(
    ino: u64,
    path: &super::Name,
    mode: u32,
    (major, minor): (u32, u32),
) -> Result<String, FsError> {
    let shown = std::str::from_utf8(path.as_bytes()).ok().filter(|p| {
        !p.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
    });
    let Some(shown) = shown else {
        return Err(FsError::PathSyntax {
            path: path.clone(),
            tool: "debugfs",
            why: "white space, a quote, a backslash or a byte that is not UTF-8 in the path of a \
                  device node",
        });
    };
    let (b0, b1) = device_blocks(major, minor);
    Ok(format!(
        "set_inode_field <{ino}> mode 0{mode:o}\n\
         set_inode_field <{ino}> block[0] {b0}\n\
         set_inode_field <{ino}> block[1] {b1}\n\
         unlink {shown}\n\
         link <{ino}> {shown}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{Filesystem, Fix};
    use super::*;

    #[test]
    fn device_numbers_as_mke2fs_stores_them() {
        assert_eq!(device_blocks(1, 3), (259, 0));
        assert_eq!(device_blocks(7, 0), (1792, 0));
        assert_eq!(device_blocks(259, 1), (0, 0x10301));
        assert_eq!(device_blocks(8, 256), (0, 0x10_0800));
        let s = device_script(12, &"/dev/null".into(), 0o20666, (1, 3)).unwrap();
        assert_eq!(
            s,
            "set_inode_field <12> mode 020666\nset_inode_field <12> block[0] 259\n\
             set_inode_field <12> block[1] 0\nunlink /dev/null\nlink <12> /dev/null\n"
        );
        assert!(device_script(12, &"/dev/a b".into(), 0o20666, (1, 3)).is_err());
    }

    #[test]
    fn reproducible_builds_fix_uuid_and_hash_seed() {
        let o = Options {
            label: Some("nixos".into()),
            reproducible: Some(Reproducible {
                epoch: 1000,
                uuid: "11111111-2222-4333-8444-555555555555".into(),
            }),
            ..Options::default()
        };
        let a: Vec<String> = mkfs_args(&o, Path::new("/s"), Path::new("/i"), 8 << 20, 200)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            a.join(" "),
            "-F -q -t ext4 -b 4096 -I 256 -N 200 -L nixos -U 11111111-2222-4333-8444-555555555555 \
             -E hash_seed=11111111-2222-4333-8444-555555555555 -d /s /i 8192k"
        );
        assert_eq!(
            env(o.reproducible.as_ref())[0],
            ("E2FSPROGS_FAKE_TIME", "1000".into())
        );
    }

    #[test]
    fn a_script_sets_only_what_changes() {
        let fix = Fix {
            path: "/bin/su".into(),
            uid: 0,
            gid: 0,
            mode: 0o100755,
            unmapped: true,
            manifest_line: None,
        };
        let mut edits: Vec<(u64, Field)> = fix_fields(65534, 0, 0o104755, &fix)
            .into_iter()
            .map(|f| (12, f))
            .collect();
        edits.extend(
            time_fields((2000, 0), (999, 7), (1000, 0), 1000)
                .into_iter()
                .map(|f| (12, f)),
        );
        assert_eq!(
            debugfs_script(&edits),
            "set_inode_field <12> uid 0\n\
             set_inode_field <12> mode 0100755\n\
             set_inode_field <12> atime @1000\nset_inode_field <12> atime_extra 0\n\
             set_inode_field <12> mtime @1000\nset_inode_field <12> mtime_extra 0\n\
             set_inode_field <12> ctime @999\nset_inode_field <12> ctime_extra 0\n"
        );
    }

    #[test]
    fn the_atime_is_the_clamped_mtime_whatever_mkfs_read() {
        let t = |which, v| Field::Time(which, v);
        assert_eq!(
            time_fields((5, 0), (2000, 0), (6, 0), 1000),
            [t(TimeField::Atime, 5), t(TimeField::Ctime, 1000)]
        );
        assert_eq!(
            time_fields((7, 3), (8, 0), (9, 0), 1000),
            [t(TimeField::Atime, 7), t(TimeField::Mtime, 7)]
        );
    }

    #[test]
    fn xattrs_are_set_again_in_name_order() {
        let x = [
            ("user.b".to_string(), "/s/2".into()),
            ("security.capability".to_string(), "/s/1".into()),
        ];
        assert_eq!(
            xattr_script(31, &"/bin/ping".into(), &x).unwrap(),
            "ea_rm <31> security.capability user.b\n\
             ea_set -f /s/1 <31> security.capability\n\
             ea_set -f /s/2 <31> user.b\n"
        );
        let odd = [("user.a b".to_string(), "/s/1".into())];
        assert!(xattr_script(1, &"/x".into(), &odd).is_err());
    }

    #[test]
    fn compression_and_long_labels_are_refused() {
        let o = Options {
            compress: Some("zstd".into()),
            ..Options::default()
        };
        let e = super::super::check(Filesystem::Ext4, &o)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"compress\" cannot be used with ext4"), "{e}");
        let o = Options {
            label: Some("a-label-of-17-ch.".into()),
            ..Options::default()
        };
        assert!(check(&o).is_err());
    }

    #[test]
    fn the_estimate_covers_content_and_headroom_rounds_up() {
        let c = Content {
            inodes: 1000,
            blocks: 25_000,
        };
        assert!(estimate(c) > c.blocks * BLOCK + 1000 * INODE_SIZE);
        assert_eq!(estimate(c) % BLOCK, 0);
        assert_eq!(with_headroom(100, 1), 101);
        assert_eq!(with_headroom(100, 0), 100);
    }
}

//! The one entry type every reader returns.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Extended attributes by full name (prefix included, e.g.
/// `security.capability`), both as bytes.
pub type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

/// One path of an image and the inode it names. Hard links are several
/// entries with the same [`ino`](Entry::ino).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path in the image: `/` for the root, else `/` followed by the
    /// names joined by `/`. Bytes, as Linux names are.
    pub path: Vec<u8>,
    /// The inode number (erofs: the nid).
    pub ino: u64,
    /// The whole `st_mode` (file type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Hard links to the inode (a directory: 2 plus its subdirectories).
    pub nlink: u64,
    /// Device number (major, minor) of a character or block device.
    pub rdev: Option<(u32, u32)>,
    /// Size in bytes (`st_size`).
    pub size: u64,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
    /// Extended attributes, every one the image holds (`system.*` ACLs
    /// included); `None` where the reader cannot see them.
    pub xattrs: Option<Xattrs>,
}

impl Entry {
    /// The path as a [`Path`] (no conversion: Linux paths are bytes).
    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }

    /// The file type bits of [`mode`](Entry::mode) (`S_IFMT`).
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }
}

/// The file type bits of a mode.
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;

/// `parent` joined with `name` (the root is `/`).
pub(crate) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if p != b"/" {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The kernel's `new_decode_dev`: (major, minor) of a 32-bit device
/// number as erofs, ext4 and squashfs store it.
pub(crate) fn decode_dev(d: u32) -> (u32, u32) {
    ((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00))
}

/// The kernel's `new_encode_dev`, the inverse of [`decode_dev`].
#[cfg(test)]
pub(crate) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip() {
        for (ma, mi) in [(1, 3), (8, 1), (259, 70000), (4095, 0xfffff)] {
            assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
        }
    }

    #[test]
    fn names_join_under_the_root_and_below() {
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"/a", b"b\xff"), b"/a/b\xff");
    }
}

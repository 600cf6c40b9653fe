//! The erofs writer: owners and modes set in chosen inodes, inline
//! xattrs put in name order, the superblock checksum computed again.
//!
//! No checksum covers the inodes, so a patch is a rewrite of the inode's
//! own struct; but mkfs.erofs puts the first inodes in the superblock's
//! block, which the superblock checksum covers, so that is computed again
//! after the writes when the image carries one. Every patch is checked
//! before the first byte is written: an image is either patched whole or
//! left as it was (but for an I/O error during the writes).

use std::collections::btree_map::{BTreeMap, Entry};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use zerocopy::FromBytes;

use super::image::{inline_entries, inline_start, sb_checksum, sb_checksum_len, Image, Inode};
use super::layout::{
    InodeCompact, InodeExtended, XattrEntry, FEATURE_COMPAT_SB_CHKSUM, SUPER_OFFSET,
};
use crate::entry::S_IFMT;
use crate::source::bytes;
use crate::Error;

/// Which inode a [`Patch`] changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The inode at this path (`/` for the root; bytes, as names are).
    Path(Vec<u8>),
    /// The inode with this nid.
    Nid(u64),
}

/// New owner and mode of one inode; `None` keeps the current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The inode.
    pub at: At,
    /// The new owner.
    pub uid: Option<u32>,
    /// The new group.
    pub gid: Option<u32>,
    /// The new whole `st_mode`: its file type must be the inode's (a
    /// FIFO's, with [`Patch::device`] set: the device's).
    pub mode: Option<u32>,
    /// A device node in place of the FIFO staged for it: the inode's type
    /// bits become `S_IFCHR`/`S_IFBLK`, its `i_u` the device number, and the
    /// directory entry naming it the matching erofs file type. The inode
    /// must be a FIFO ([`Error::NotFifo`]).
    pub device: Option<Device>,
    /// An xattr suffix (e.g. `b"capability"`) whose `user.` entry becomes the
    /// `security.` entry of the same suffix ([`Error::XattrAbsent`] when the
    /// inode has no such `user.` entry).
    pub user_to_security: Option<Vec<u8>>,
}

/// A device node's type and number, as a [`Patch`] writes it.
///
/// erofs keeps a device number in the inode's 32-bit `i_u`, which the
/// kernel reads with `new_decode_dev`: the writer stores
/// `(minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)`, so a major
/// of at most 12 bits and a minor of at most 20 bits
/// ([`Error::DeviceTooWide`] otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    /// Character or block device.
    pub kind: DeviceKind,
    /// The major number (at most 4095).
    pub major: u32,
    /// The minor number (at most 1048575).
    pub minor: u32,
}

/// Which kind of device node a [`Device`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `S_IFCHR`, erofs file type `EROFS_FT_CHRDEV` (3).
    Char,
    /// `S_IFBLK`, erofs file type `EROFS_FT_BLKDEV` (4).
    Block,
}

/// Whether [`apply`] rewrites each inode's inline xattrs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrOrder {
    /// Leave them in the order mkfs.erofs wrote them: the order the
    /// source filesystem listed them (ext4 and tmpfs differ).
    AsMade,
    /// Sort every inode's inline entries by (name index, name), so that
    /// the same tree gives the same image from any source filesystem.
    /// Shared xattrs stay where they are.
    ByName,
}

/// Applies `patches` to the erofs image at `image`, in place, and with
/// [`XattrOrder::ByName`] orders every inode's inline xattrs; then
/// computes the superblock checksum again.
///
/// An owner above 65535 on a compact inode is [`Error::IdTooWide`]: a
/// compact inode cannot grow into an extended one in place, so such an
/// image must be made with extended inodes (`mkfs.erofs
/// -Eforce-inode-extended`, which rootbox passes when an owner rule needs
/// it). A mode that changes the file type is [`Error::ModeType`].
pub fn apply(image: &Path, patches: &[Patch], order: XattrOrder) -> Result<(), Error> {
    if patches.is_empty() && order == XattrOrder::AsMade {
        return Ok(());
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|source| Error::Open {
            path: image.to_path_buf(),
            source,
        })?;
    let writes = plan(&file, patches, order)?;
    for (offset, b) in &writes {
        write(&file, *offset, b, "erofs inode")?;
    }
    let img = Image::open_unchecked(&file)?;
    if img.sb.feature_compat.get() & FEATURE_COMPAT_SB_CHKSUM != 0 {
        let b = bytes(
            &file,
            SUPER_OFFSET,
            sb_checksum_len(img.block),
            "erofs superblock block",
        )?;
        write(
            &file,
            SUPER_OFFSET + 4,
            &sb_checksum(&b).to_le_bytes(),
            "erofs superblock checksum",
        )?;
    }
    file.sync_all().map_err(|source| Error::Io {
        what: "erofs image (sync)",
        offset: 0,
        source,
    })
}

fn write(file: &File, offset: u64, b: &[u8], what: &'static str) -> Result<(), Error> {
    file.write_all_at(b, offset).map_err(|source| Error::Io {
        what,
        offset,
        source,
    })
}

/// Every write the patches and the xattr order need, checked.
fn plan(file: &File, patches: &[Patch], order: XattrOrder) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let img = Image::open(file)?;
    let paths: BTreeMap<Vec<u8>, u64> =
        if order == XattrOrder::ByName || patches.iter().any(|p| matches!(p.at, At::Path(_))) {
            img.walk()?.into_iter().collect()
        } else {
            BTreeMap::new()
        };
    // The new bytes of each patched inode, by nid (hard links: one inode).
    let mut inodes: BTreeMap<u64, (Inode, Vec<u8>)> = BTreeMap::new();
    for p in patches {
        let nid = match &p.at {
            At::Nid(n) => *n,
            At::Path(path) => *paths
                .get(path)
                .ok_or_else(|| Error::NotFound { path: path.clone() })?,
        };
        let (ino, raw) = match inodes.entry(nid) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let ino = img.inode(nid)?;
                let raw = bytes(file, ino.offset, ino.head() as usize, "erofs inode")?;
                v.insert((ino, raw))
            }
        };
        let path = match &p.at {
            At::Path(path) => Some(path),
            At::Nid(_) => None,
        };
        set(ino, raw, p).map_err(|e| e.named(path))?;
    }
    let mut writes: Vec<(u64, Vec<u8>)> = inodes
        .into_values()
        .map(|(ino, raw)| (ino.offset, raw))
        .collect();
    if order == XattrOrder::ByName {
        let mut nids: Vec<u64> = paths.into_values().collect();
        nids.sort_unstable();
        nids.dedup();
        for nid in nids {
            writes.extend(sorted_xattrs(&img, &img.inode(nid)?)?);
        }
    }
    Ok(writes)
}

/// Sets `p`'s values in the inode bytes `raw`.
fn set(ino: &Inode, raw: &mut [u8], p: &Patch) -> Result<(), Error> {
    let nid = ino.nid;
    let mode = match p.mode {
        Some(m) if m & S_IFMT != ino.mode & S_IFMT || m > 0xFFFF => {
            return Err(Error::ModeType {
                path: None,
                nid,
                was: ino.mode,
                mode: m,
            })
        }
        Some(m) => Some(m as u16),
        None => None,
    };
    if ino.extended {
        let i = InodeExtended::mut_from_bytes(raw).expect("64 bytes read");
        if let Some(m) = mode {
            i.i_mode.set(m);
        }
        if let Some(u) = p.uid {
            i.i_uid.set(u);
        }
        if let Some(g) = p.gid {
            i.i_gid.set(g);
        }
    } else {
        let narrow = |id: u32| {
            u16::try_from(id).map_err(|_| Error::IdTooWide {
                path: None,
                nid,
                id,
            })
        };
        let (uid, gid) = (
            p.uid.map(narrow).transpose()?,
            p.gid.map(narrow).transpose()?,
        );
        let i = InodeCompact::mut_from_bytes(raw).expect("32 bytes read");
        if let Some(m) = mode {
            i.i_mode.set(m);
        }
        if let Some(u) = uid {
            i.i_uid.set(u);
        }
        if let Some(g) = gid {
            i.i_gid.set(g);
        }
    }
    Ok(())
}

/// The write that puts `ino`'s inline xattrs in (name index, name)
/// order, if they are not in it.
fn sorted_xattrs(img: &Image<'_, File>, ino: &Inode) -> Result<Option<(u64, Vec<u8>)>, Error> {
    if ino.xattr_len == 0 {
        return Ok(None);
    }
    let area = img.xattr_area(ino)?;
    let start = inline_start(&area);
    // Each entry as its padded bytes in the area.
    let mut at = start;
    // (sort key: name index and name, padded bytes)
    type Sorted<'a> = ((u8, &'a [u8]), &'a [u8]);
    let mut entries: Vec<Sorted> = Vec::new();
    for (h, body) in inline_entries(ino, &area)? {
        let len = (size_of::<XattrEntry>() + body.len()).div_ceil(4) * 4;
        let name = &body[..usize::from(h.e_name_len)];
        entries.push((
            (h.e_name_index, name),
            &area[at..(at + len).min(area.len())],
        ));
        at += len;
    }
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if sorted == entries {
        return Ok(None);
    }
    let b: Vec<u8> = sorted.iter().flat_map(|e| e.1.iter().copied()).collect();
    Ok(Some((ino.offset + ino.head() + start as u64, b)))
}

impl Error {
    /// The error with the patch's path put in, where it names an inode.
    fn named(self, at: Option<&Vec<u8>>) -> Error {
        match self {
            Error::IdTooWide { nid, id, .. } => Error::IdTooWide {
                path: at.cloned(),
                nid,
                id,
            },
            Error::ModeType { nid, was, mode, .. } => Error::ModeType {
                path: at.cloned(),
                nid,
                was,
                mode,
            },
            e => e,
        }
    }
}

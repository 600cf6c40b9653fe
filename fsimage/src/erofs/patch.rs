//! The erofs writer: owners and modes set in chosen inodes, staged
//! placeholders made real (a FIFO into a device node, `user.` into
//! `security.`: `staged.rs`), inline xattrs put in name order, the
//! superblock checksum computed again.
//!
//! No checksum covers the inodes, directories or xattrs, so a patch is a
//! rewrite of the bytes it changes; but mkfs.erofs puts the first inodes in the superblock's
//! block, which the superblock checksum covers, so that is computed again
//! after the writes when the image carries one. Every patch is checked
//! before the first byte is written: an image is either patched whole or
//! left as it was (but for an I/O error during the writes).

use std::collections::btree_map::{BTreeMap, Entry};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use zerocopy::FromBytes;

use super::image::{inline_entries, inline_start, sb_checksum, sb_checksum_len, Image, Inode};
use super::layout::{
    InodeCompact, InodeExtended, XattrEntry, FEATURE_COMPAT_SB_CHKSUM, SUPER_OFFSET,
};
use super::staged::{check_fifo, dirent_types, encode_dev, Device, DeviceKind, Renames, S_IFIFO};
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
///
/// [`Patch::device`]: the inode must be a FIFO ([`Error::NotFifo`]); every
/// directory entry naming it gets the device's file type. The result is
/// what mkfs.erofs writes for the device node itself (byte for byte, with
/// erofs-utils 1.5 and 1.9.4).
///
/// [`Patch::user_to_security`]: the `user.` entry's name index becomes
/// `security.`'s, its suffix, value and place staying; with
/// [`XattrOrder::ByName`] the inode's inline entries are then sorted by the
/// new name. With the name filter (erofs-utils 1.7 and later) the inode's
/// filter is computed again. An entry in the shared xattr area is renamed
/// there, which every inode listing it must ask for
/// ([`Error::SharedXattr`]); in an image with the name filter, whose
/// shared area mkfs.erofs sorts by full name, a rename that would move the
/// entry is [`Error::SharedXattrOrder`].
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
    let devices = patches.iter().any(|p| p.device.is_some());
    let renames = patches.iter().any(|p| p.user_to_security.is_some());
    let walked: Vec<(Vec<u8>, u64)> = if order == XattrOrder::ByName
        || devices
        || renames
        || patches.iter().any(|p| matches!(p.at, At::Path(_)))
    {
        img.walk()?
    } else {
        Vec::new()
    };
    let paths: BTreeMap<&[u8], u64> = walked.iter().map(|(p, n)| (p.as_slice(), *n)).collect();
    // The new bytes of each patched inode, by nid (hard links: one inode).
    let mut inodes: BTreeMap<u64, (Inode, Vec<u8>)> = BTreeMap::new();
    let mut kinds: BTreeMap<u64, (DeviceKind, Option<Vec<u8>>)> = BTreeMap::new();
    let mut moved = Renames::default();
    for p in patches {
        let (nid, path) = match &p.at {
            At::Nid(n) => (*n, None),
            At::Path(path) => (
                *paths
                    .get(path.as_slice())
                    .ok_or_else(|| Error::NotFound { path: path.clone() })?,
                Some(path),
            ),
        };
        let (ino, raw) = match inodes.entry(nid) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let ino = img.inode(nid)?;
                let raw = bytes(file, ino.offset, ino.head() as usize, "erofs inode")?;
                v.insert((ino, raw))
            }
        };
        set(ino, raw, p).map_err(|e| e.named(path))?;
        if let Some(d) = &p.device {
            kinds.insert(nid, (d.kind, path.cloned()));
        }
        if let Some(suffix) = &p.user_to_security {
            moved.rename(&img, img.inode(nid)?, suffix, path)?;
        }
    }
    let mut writes: Vec<(u64, Vec<u8>)> = inodes
        .into_values()
        .map(|(ino, raw)| (ino.offset, raw))
        .collect();
    if !kinds.is_empty() {
        writes.extend(dirent_types(&img, &walked, &kinds)?);
    }
    let sort = |ino: &Inode, area: &mut [u8]| match order {
        XattrOrder::ByName => sort_xattrs(ino, area).map(|_| ()),
        XattrOrder::AsMade => Ok(()),
    };
    let renamed: BTreeSet<u64> = moved.areas.keys().copied().collect();
    writes.extend(moved.writes(&img, &walked, sort)?);
    if order == XattrOrder::ByName {
        let mut nids: Vec<u64> = paths.into_values().collect();
        nids.sort_unstable();
        nids.dedup();
        for nid in nids.into_iter().filter(|n| !renamed.contains(n)) {
            let ino = img.inode(nid)?;
            if ino.xattr_len == 0 {
                continue;
            }
            let mut area = img.xattr_area(&ino)?;
            if sort_xattrs(&ino, &mut area)? {
                writes.push((ino.offset + ino.head(), area));
            }
        }
    }
    Ok(writes)
}

/// Sets `p`'s values in the inode bytes `raw`.
fn set(ino: &Inode, raw: &mut [u8], p: &Patch) -> Result<(), Error> {
    let nid = ino.nid;
    // The type the inode has, and the one it gets.
    let (was, to) = match &p.device {
        Some(d) => {
            check_fifo(ino)?;
            (S_IFIFO, d.kind.mode_type())
        }
        None => (ino.mode & S_IFMT, ino.mode & S_IFMT),
    };
    let mode = match p.mode {
        Some(m) if (m & S_IFMT != was && m & S_IFMT != to) || m > 0xFFFF => {
            return Err(Error::ModeType {
                path: None,
                nid,
                was: ino.mode,
                mode: m,
            })
        }
        Some(m) => Some((m & !S_IFMT | to) as u16),
        None if p.device.is_some() => Some((ino.mode & !S_IFMT | to) as u16),
        None => None,
    };
    let rdev = p.device.as_ref().map(|d| encode_dev(ino, d)).transpose()?;
    if ino.extended {
        let i = InodeExtended::mut_from_bytes(raw).expect("64 bytes read");
        if let Some(m) = mode {
            i.i_mode.set(m);
        }
        if let Some(r) = rdev {
            i.i_u.set(r);
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
        if let Some(r) = rdev {
            i.i_u.set(r);
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

/// Puts the inline entries of `ino`'s xattr `area` in (name index,
/// name) order; whether that changed it.
fn sort_xattrs(ino: &Inode, area: &mut [u8]) -> Result<bool, Error> {
    let start = inline_start(area);
    // Each entry as its sort key (name index, name) and padded bytes.
    let mut at = start;
    type Keyed = ((u8, Vec<u8>), Vec<u8>);
    let mut entries: Vec<Keyed> = Vec::new();
    for (h, body) in inline_entries(ino, area)? {
        let len = (size_of::<XattrEntry>() + body.len()).div_ceil(4) * 4;
        let name = body[..usize::from(h.e_name_len)].to_vec();
        entries.push((
            (h.e_name_index, name),
            area[at..(at + len).min(area.len())].to_vec(),
        ));
        at += len;
    }
    let mut sorted = entries.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if sorted == entries {
        return Ok(false);
    }
    let b: Vec<u8> = sorted.into_iter().flat_map(|e| e.1).collect();
    area[start..start + b.len()].copy_from_slice(&b);
    Ok(true)
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
            Error::NotFifo { nid, mode, .. } => Error::NotFifo {
                path: at.cloned(),
                nid,
                mode,
            },
            Error::DeviceTooWide {
                nid, major, minor, ..
            } => Error::DeviceTooWide {
                path: at.cloned(),
                nid,
                major,
                minor,
            },
            e => e,
        }
    }
}

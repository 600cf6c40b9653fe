//! Placeholders made real: the FIFO staged for a device node and the
//! `user.` xattr staged for a `security.` one (a copy made without
//! privileges can hold neither), turned in the image into what they
//! stand for, byte for byte what mkfs.erofs writes for the real thing.
//!
//! A device: the inode's type bits and `i_u` (the device number), and the
//! `file_type` of every directory entry naming it. An xattr: the name
//! index of its entry, 1 (`user.`) to 6 (`security.`), the suffix and
//! the value staying as they are; inline, or in the shared xattr area
//! when every inode sharing the entry is renamed too; then, with the name
//! filter feature, the filter of each inode whose names changed.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

use super::filter::name_filter;
use super::image::{inline_entries, inline_start, shared_ids, Image, Inode};
use super::layout::{
    xattr_prefix, XattrEntry, DIRENT_FILE_TYPE, FEATURE_COMPAT_XATTR_FILTER, FT_BLKDEV, FT_CHRDEV,
    XATTR_INDEX_SECURITY, XATTR_INDEX_USER,
};
use crate::entry::{S_IFBLK, S_IFCHR, S_IFMT};
use crate::source::{bytes, get};
use crate::{Error, S_IFDIR};

/// A device node's type and number, as a [`Patch`](super::Patch) writes it.
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

/// `S_IFIFO`: the type of the inode staged for a device node.
pub(super) const S_IFIFO: u32 = 0o010000;

impl DeviceKind {
    /// The `st_mode` type bits.
    pub(super) fn mode_type(self) -> u32 {
        match self {
            DeviceKind::Char => S_IFCHR,
            DeviceKind::Block => S_IFBLK,
        }
    }

    /// The `erofs_dirent.file_type`.
    fn file_type(self) -> u8 {
        match self {
            DeviceKind::Char => FT_CHRDEV,
            DeviceKind::Block => FT_BLKDEV,
        }
    }
}

/// The device number as `i_u` holds it (`new_encode_dev`), checked.
pub(super) fn encode_dev(ino: &Inode, d: &Device) -> Result<u32, Error> {
    if d.major > 0xfff || d.minor > 0xf_ffff {
        return Err(Error::DeviceTooWide {
            path: None,
            nid: ino.nid,
            major: d.major,
            minor: d.minor,
        });
    }
    Ok((d.minor & 0xff) | (d.major << 8) | ((d.minor & !0xff) << 12))
}

/// Checks that `ino` is the FIFO a device node is staged as.
pub(super) fn check_fifo(ino: &Inode) -> Result<(), Error> {
    match ino.mode & S_IFMT {
        S_IFIFO => Ok(()),
        _ => Err(Error::NotFifo {
            path: None,
            nid: ino.nid,
            mode: ino.mode,
        }),
    }
}

/// The writes that give every directory entry naming one of `devices`
/// (nid → kind, with the patch's path for errors) its device file type.
pub(super) fn dirent_types(
    img: &Image<'_, File>,
    walked: &[(Vec<u8>, u64)],
    devices: &BTreeMap<u64, (DeviceKind, Option<Vec<u8>>)>,
) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let mut writes = Vec::new();
    let mut named = BTreeSet::new();
    let mut dirs = BTreeSet::new();
    for (_, nid) in walked {
        let ino = img.inode(*nid)?;
        if ino.mode & S_IFMT != S_IFDIR || !dirs.insert(*nid) {
            continue;
        }
        let data = img.data(&ino, "directory")?;
        for (name, child, pos) in img.dirents(*nid, &data)? {
            let Some((kind, _)) = devices.get(&child) else {
                continue;
            };
            if name == b"." || name == b".." {
                continue;
            }
            let at = img.data_offset(&ino, pos as u64) + DIRENT_FILE_TYPE;
            writes.push((at, vec![kind.file_type()]));
            named.insert(child);
        }
    }
    match devices.iter().find(|(nid, _)| !named.contains(nid)) {
        Some((nid, (_, path))) => Err(Error::DirentMissing {
            path: path.clone(),
            nid: *nid,
        }),
        None => Ok(writes),
    }
}

/// A renamed shared entry: its suffix, the first inode renamed for it and
/// that patch's path.
struct SharedRename {
    suffix: Vec<u8>,
    nid: u64,
    path: Option<Vec<u8>>,
}

/// The xattr renames the patches ask for, gathered before any is written.
#[derive(Default)]
pub(super) struct Renames {
    /// Each renamed inode's xattr area as it will be, by nid.
    pub areas: BTreeMap<u64, (Inode, Vec<u8>)>,
    /// Renamed shared entries, by id.
    shared: BTreeMap<u32, SharedRename>,
    /// (nid, suffix) renamed, a hard link's second patch finding it done.
    done: BTreeSet<(u64, Vec<u8>)>,
}

impl Renames {
    /// Renames `user.SUFFIX` of `ino` to `security.SUFFIX`, inline or shared.
    pub fn rename(
        &mut self,
        img: &Image<'_, File>,
        ino: Inode,
        suffix: &[u8],
        path: Option<&Vec<u8>>,
    ) -> Result<(), Error> {
        let nid = ino.nid;
        let absent = || Error::XattrAbsent {
            path: path.cloned(),
            nid,
            suffix: suffix.to_vec(),
        };
        if ino.xattr_len == 0 {
            return Err(absent());
        }
        if !self.done.insert((nid, suffix.to_vec())) {
            return Ok(());
        }
        let (ino, area) = match self.areas.entry(nid) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let area = img.xattr_area(&ino)?;
                v.insert((ino, area))
            }
        };
        let mut at = inline_start(area);
        let mut found = None;
        for (h, body) in inline_entries(ino, area)? {
            if h.e_name_index == XATTR_INDEX_USER && &body[..usize::from(h.e_name_len)] == suffix {
                found = Some(at);
            }
            at += (size_of::<XattrEntry>() + body.len()).div_ceil(4) * 4;
        }
        if let Some(at) = found {
            area[at + 1] = XATTR_INDEX_SECURITY;
            return Ok(());
        }
        for id in shared_ids(ino, area)? {
            let (h, name, _) = shared_entry(img, id)?;
            if h.e_name_index == XATTR_INDEX_USER && name == suffix {
                self.shared.entry(id).or_insert_with(|| SharedRename {
                    suffix: suffix.to_vec(),
                    nid,
                    path: path.cloned(),
                });
                return Ok(());
            }
        }
        Err(absent())
    }

    /// Every write the renames need: the areas (`sort` puts each in its
    /// final order), the shared entries and the name filters. A shared
    /// entry that an inode outside the renames also uses is refused.
    pub fn writes(
        mut self,
        img: &Image<'_, File>,
        walked: &[(Vec<u8>, u64)],
        sort: impl Fn(&Inode, &mut [u8]) -> Result<(), Error>,
    ) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let mut writes = Vec::new();
        if !self.shared.is_empty() {
            self.check_shared(img, walked)?;
        }
        for &id in self.shared.keys() {
            writes.push((shared_offset(img, id) + 1, vec![XATTR_INDEX_SECURITY]));
        }
        let filter = img.sb.feature_compat.get() & FEATURE_COMPAT_XATTR_FILTER != 0;
        for (ino, area) in self.areas.values_mut() {
            if filter {
                self::set_filter(img, ino, area, &self.shared)?;
            }
            sort(ino, area)?;
            writes.push((ino.offset + ino.head(), std::mem::take(area)));
        }
        Ok(writes)
    }

    /// Refuses a renamed shared entry that an inode not renamed for it
    /// also lists.
    fn check_shared(&self, img: &Image<'_, File>, walked: &[(Vec<u8>, u64)]) -> Result<(), Error> {
        let nids: BTreeSet<u64> = walked.iter().map(|(_, nid)| *nid).collect();
        // Every shared entry (each is listed by some inode), in area order.
        let mut every = BTreeSet::new();
        for other in nids {
            let ino = img.inode(other)?;
            if ino.xattr_len == 0 {
                continue;
            }
            let area = img.xattr_area(&ino)?;
            for id in shared_ids(&ino, &area)? {
                every.insert(id);
                let Some(r) = self.shared.get(&id) else {
                    continue;
                };
                if !self.done.contains(&(other, r.suffix.clone())) {
                    return Err(Error::SharedXattr {
                        path: r.path.clone(),
                        nid: r.nid,
                        suffix: r.suffix.clone(),
                        other,
                    });
                }
            }
        }
        if img.sb.feature_compat.get() & FEATURE_COMPAT_XATTR_FILTER != 0 {
            self.check_order(img, &every)?;
        }
        Ok(())
    }

    /// Refuses renames that would move an entry of a shared area that
    /// erofs-utils 1.7 or later wrote: it sorts the entries by full name,
    /// a NUL and the value (shorter first on a tie), so the renamed area
    /// must still be in that order. (1.5 sorts by suffix and value, which
    /// a rename leaves as they were.)
    fn check_order(&self, img: &Image<'_, File>, every: &BTreeSet<u32>) -> Result<(), Error> {
        let mut last: Option<Vec<u8>> = None;
        for &id in every {
            let (h, name, at) = shared_entry(img, id)?;
            let index = match self.shared.contains_key(&id) {
                true => XATTR_INDEX_SECURITY,
                false => h.e_name_index,
            };
            let value = bytes(
                img.src,
                at + 4 + u64::from(h.e_name_len),
                usize::from(h.e_value_size.get()),
                "erofs shared xattr",
            )?;
            let key = [xattr_prefix(index).unwrap_or_default(), &name, &[0], &value].concat();
            if last.as_ref().is_some_and(|l| *l > key) {
                let r = self
                    .shared
                    .values()
                    .next()
                    .expect("called with renamed shared entries");
                return Err(Error::SharedXattrOrder {
                    path: r.path.clone(),
                    nid: r.nid,
                    suffix: r.suffix.clone(),
                });
            }
            last = Some(key);
        }
        Ok(())
    }
}

/// Sets the name filter of `ino`'s xattr `area` for its names after the
/// renames, after checking that the stored filter is the one its names
/// before them give (else the image computes it some other way).
fn set_filter(
    img: &Image<'_, File>,
    ino: &Inode,
    area: &mut [u8],
    shared: &BTreeMap<u32, SharedRename>,
) -> Result<(), Error> {
    // (index before, index after, suffix)
    let mut names: Vec<(u8, u8, Vec<u8>)> = Vec::new();
    for id in shared_ids(ino, area)? {
        let (h, name, _) = shared_entry(img, id)?;
        let after = match shared.contains_key(&id) {
            true => XATTR_INDEX_SECURITY,
            false => h.e_name_index,
        };
        names.push((h.e_name_index, after, name));
    }
    let original = img.xattr_area(ino)?;
    let before = inline_entries(ino, &original)?;
    for ((h0, _), (h, body)) in before.iter().zip(inline_entries(ino, area)?) {
        let name = body[..usize::from(h.e_name_len)].to_vec();
        names.push((h0.e_name_index, h.e_name_index, name));
    }
    let stored = u32::from_le_bytes([area[0], area[1], area[2], area[3]]);
    let computed = name_filter(names.iter().map(|(i, _, n)| (*i, n.as_slice())));
    if stored != computed {
        return Err(Error::XattrFilter {
            nid: ino.nid,
            stored,
            computed,
        });
    }
    let new = name_filter(names.iter().map(|(_, i, n)| (*i, n.as_slice())));
    area[..4].copy_from_slice(&new.to_le_bytes());
    Ok(())
}

/// Byte offset of shared xattr `id`.
fn shared_offset(img: &Image<'_, File>, id: u32) -> u64 {
    u64::from(img.sb.xattr_blkaddr.get()) * img.block + u64::from(id) * 4
}

/// Shared xattr `id`: its header, name suffix and byte offset.
fn shared_entry(img: &Image<'_, File>, id: u32) -> Result<(XattrEntry, Vec<u8>, u64), Error> {
    let at = shared_offset(img, id);
    let h: XattrEntry = get(img.src, at, "erofs shared xattr")?;
    let name = bytes(
        img.src,
        at + 4,
        usize::from(h.e_name_len),
        "erofs shared xattr",
    )?;
    Ok((h, name, at))
}

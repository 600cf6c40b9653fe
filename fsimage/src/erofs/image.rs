//! Reading an erofs image: the superblock (its checksum verified), inodes
//! by nid, directory entries, symlink targets and xattrs.

use std::collections::HashSet;

use zerocopy::FromBytes;

use super::layout::{
    xattr_ibody_size, xattr_prefix, Dirent, InodeCompact, InodeExtended, SuperBlock, XattrEntry,
    XattrIbodyHeader, FEATURE_COMPAT_SB_CHKSUM, FEATURE_INCOMPAT_UNREAD, FLAT_INLINE, FLAT_PLAIN,
    ISLOT, I_DATALAYOUT_BIT, I_DATALAYOUT_MASK, I_VERSION_EXTENDED, MAGIC, SUPER_OFFSET,
};
use crate::entry::{join, Xattrs, S_IFMT};
use crate::source::{bytes, get, Source};
use crate::{DirFault, Error};

/// The most bytes of a directory or symlink read into memory (a
/// directory of about a million entries).
const METADATA_LIMIT: u64 = 64 << 20;

/// An erofs image whose superblock has been read and checked.
pub(crate) struct Image<'s, S: Source + ?Sized> {
    pub src: &'s S,
    pub sb: SuperBlock,
    /// Block size in bytes.
    pub block: u64,
}

/// One inode, compact or extended, decoded.
pub(crate) struct Inode {
    pub nid: u64,
    /// Byte offset of the inode.
    pub offset: u64,
    pub extended: bool,
    pub layout: u16,
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
    pub i_u: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of the xattr area after the inode.
    pub xattr_len: usize,
}

impl Inode {
    /// Bytes of the inode itself (32 or 64).
    pub fn head(&self) -> u64 {
        if self.extended {
            size_of::<InodeExtended>() as u64
        } else {
            size_of::<InodeCompact>() as u64
        }
    }
}

/// The superblock's checksum over `block` (its block from byte 1024, the
/// checksum field taken as zero): CRC32C seeded with !0 and, as
/// erofs-utils and the kernel compute it, not inverted at the end.
pub(crate) fn sb_checksum(block: &[u8]) -> u32 {
    let mut b = block.to_vec();
    b[4..8].fill(0);
    !crc32c::crc32c(&b)
}

/// Bytes the superblock checksum covers: from byte 1024 to the end of
/// the superblock's block (at least the superblock itself).
pub(crate) fn sb_checksum_len(block: u64) -> usize {
    block
        .saturating_sub(SUPER_OFFSET)
        .max(size_of::<SuperBlock>() as u64) as usize
}

impl<'s, S: Source + ?Sized> Image<'s, S> {
    /// Reads and checks the superblock.
    pub fn open(src: &'s S) -> Result<Self, Error> {
        let img = Self::open_unchecked(src)?;
        let (sb, block) = (&img.sb, img.block);
        if sb.feature_compat.get() & FEATURE_COMPAT_SB_CHKSUM != 0 {
            let b = bytes(
                src,
                SUPER_OFFSET,
                sb_checksum_len(block),
                "erofs superblock block",
            )?;
            let computed = sb_checksum(&b);
            if computed != sb.checksum.get() {
                return Err(Error::SuperblockChecksum {
                    stored: sb.checksum.get(),
                    computed,
                });
            }
        }
        // The image holds every block the superblock counts, file data
        // included, which the reader does not otherwise touch.
        let blocks = u64::from(sb.blocks.get());
        if blocks > 0 {
            bytes(src, blocks * block - 1, 1, "last block of the erofs image")?;
        }
        Ok(img)
    }

    /// Reads the superblock without verifying its checksum (the writer,
    /// after changing the bytes the checksum covers).
    pub fn open_unchecked(src: &'s S) -> Result<Self, Error> {
        let sb: SuperBlock = get(src, SUPER_OFFSET, "erofs superblock")?;
        if sb.magic.get() != MAGIC {
            return Err(Error::NotErofs);
        }
        let bits = sb.blkszbits;
        if !(9..=16).contains(&bits) || sb.dirblkbits != 0 {
            return Err(Error::BlockSize { bits });
        }
        let unread = sb.feature_incompat.get() & FEATURE_INCOMPAT_UNREAD;
        if unread != 0 {
            return Err(Error::Features { bits: unread });
        }
        Ok(Image {
            src,
            sb,
            block: 1u64 << bits,
        })
    }

    /// Byte offset of inode `nid`.
    pub fn inode_offset(&self, nid: u64) -> Result<u64, Error> {
        u64::from(self.sb.meta_blkaddr.get())
            .checked_mul(self.block)
            .and_then(|m| m.checked_add(nid.checked_mul(ISLOT)?))
            .ok_or(Error::Truncated {
                what: "erofs inode",
                offset: u64::MAX,
                len: size_of::<InodeCompact>(),
            })
    }

    /// Reads inode `nid`.
    pub fn inode(&self, nid: u64) -> Result<Inode, Error> {
        let offset = self.inode_offset(nid)?;
        let c: InodeCompact = get(self.src, offset, "erofs inode")?;
        let format = c.i_format.get();
        let layout = (format >> I_DATALAYOUT_BIT) & I_DATALAYOUT_MASK;
        let xattr_len = xattr_ibody_size(c.i_xattr_icount.get());
        let ino = if format & I_VERSION_EXTENDED != 0 {
            let e: InodeExtended = get(self.src, offset, "erofs extended inode")?;
            Inode {
                nid,
                offset,
                extended: true,
                layout,
                mode: u32::from(e.i_mode.get()),
                nlink: u64::from(e.i_nlink.get()),
                size: e.i_size.get(),
                i_u: e.i_u.get(),
                uid: e.i_uid.get(),
                gid: e.i_gid.get(),
                xattr_len,
            }
        } else {
            Inode {
                nid,
                offset,
                extended: false,
                layout,
                mode: u32::from(c.i_mode.get()),
                nlink: u64::from(c.i_nlink.get()),
                size: u64::from(c.i_size.get()),
                i_u: c.i_u.get(),
                uid: u32::from(c.i_uid.get()),
                gid: u32::from(c.i_gid.get()),
                xattr_len,
            }
        };
        let kind = ino.mode & S_IFMT;
        if !matches!(kind >> 12, 0o1 | 0o2 | 0o4 | 0o6 | 0o10 | 0o12 | 0o14) {
            return Err(Error::BadMode {
                nid,
                mode: ino.mode,
            });
        }
        Ok(ino)
    }

    /// The data of a directory or symlink (`kind`), which mkfs.erofs
    /// stores uncompressed: plain blocks, or blocks and an inline tail.
    pub fn data(&self, ino: &Inode, kind: &'static str) -> Result<Vec<u8>, Error> {
        let nid = ino.nid;
        if ino.size > METADATA_LIMIT {
            return Err(Error::TooLarge {
                nid,
                size: ino.size,
                limit: METADATA_LIMIT,
            });
        }
        let start = u64::from(ino.i_u) * self.block;
        match ino.layout {
            FLAT_PLAIN => bytes(self.src, start, ino.size as usize, "erofs data"),
            FLAT_INLINE => {
                let full = ino.size / self.block * self.block;
                // With no whole block, `i_u` holds no block address.
                let mut d = match full {
                    0 => Vec::new(),
                    _ => bytes(self.src, start, full as usize, "erofs data blocks")?,
                };
                let tail = ino.offset + ino.head() + ino.xattr_len as u64;
                d.extend(bytes(
                    self.src,
                    tail,
                    (ino.size - full) as usize,
                    "erofs inline data",
                )?);
                Ok(d)
            }
            layout => Err(Error::Layout { nid, layout, kind }),
        }
    }

    /// Byte offset in the image of byte `pos` of a directory or
    /// symlink's data (as [`Image::data`] reads it).
    pub fn data_offset(&self, ino: &Inode, pos: u64) -> u64 {
        let full = match ino.layout {
            FLAT_INLINE => ino.size / self.block * self.block,
            _ => ino.size,
        };
        match pos < full {
            true => u64::from(ino.i_u) * self.block + pos,
            false => ino.offset + ino.head() + ino.xattr_len as u64 + (pos - full),
        }
    }

    /// The entries of directory data (`.` and `..` included), by block:
    /// each name, its nid and the byte position of its `erofs_dirent` in
    /// the data.
    pub fn dirents(&self, nid: u64, data: &[u8]) -> Result<Vec<(Vec<u8>, u64, usize)>, Error> {
        let mut out = Vec::new();
        for (i, blk) in data.chunks(self.block as usize).enumerate() {
            let fault = |fault| Error::BadDirectory {
                nid,
                block: i as u64,
                fault,
            };
            let (first, _) =
                Dirent::read_from_prefix(blk).map_err(|_| fault(DirFault::FirstNameOffset(0)))?;
            let nameoff0 = first.nameoff.get();
            let count = usize::from(nameoff0) / size_of::<Dirent>();
            if count == 0
                || usize::from(nameoff0) % size_of::<Dirent>() != 0
                || usize::from(nameoff0) > blk.len()
            {
                return Err(fault(DirFault::FirstNameOffset(nameoff0)));
            }
            let dirents = <[Dirent]>::ref_from_bytes(&blk[..usize::from(nameoff0)])
                .expect("a whole number of dirents");
            for (k, d) in dirents.iter().enumerate() {
                let start = usize::from(d.nameoff.get());
                let end = dirents
                    .get(k + 1)
                    .map_or(blk.len(), |n| usize::from(n.nameoff.get()));
                let raw = blk
                    .get(start..end)
                    .filter(|_| start >= usize::from(nameoff0))
                    .ok_or(fault(DirFault::NameOffset(k)))?;
                // Only the block's last name is padded with NULs.
                let name = match dirents.get(k + 1) {
                    Some(_) => raw,
                    None => &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())],
                };
                if name.is_empty() || name.len() > 255 || name.iter().any(|&c| c == b'/' || c == 0)
                {
                    return Err(fault(DirFault::BadName(k)));
                }
                let pos = i * self.block as usize + k * size_of::<Dirent>();
                out.push((name.to_vec(), d.nid.get(), pos));
            }
        }
        Ok(out)
    }

    /// Every path with its nid, the root first, parents before children.
    pub fn walk(&self) -> Result<Vec<(Vec<u8>, u64)>, Error> {
        let root = u64::from(self.sb.root_nid.get());
        let mut out = vec![(b"/".to_vec(), root)];
        let mut dirs = HashSet::new();
        let mut i = 0;
        while i < out.len() {
            let nid = out[i].1;
            i += 1;
            let ino = self.inode(nid)?;
            if ino.mode & S_IFMT != crate::S_IFDIR {
                continue;
            }
            if !dirs.insert(nid) {
                return Err(Error::DirectoryLoop { nid });
            }
            let data = self.data(&ino, "directory")?;
            for (name, child, _) in self.dirents(nid, &data)? {
                if name != b"." && name != b".." {
                    out.push((join(&out[i - 1].0, &name), child));
                }
            }
        }
        Ok(out)
    }

    /// The inode's xattr area: its header, shared ids and inline entries.
    pub fn xattr_area(&self, ino: &Inode) -> Result<Vec<u8>, Error> {
        bytes(
            self.src,
            ino.offset + ino.head(),
            ino.xattr_len,
            "erofs inline xattrs",
        )
    }

    /// The inode's extended attributes, shared and inline, by full name.
    pub fn xattrs(&self, ino: &Inode) -> Result<Xattrs, Error> {
        let mut out = Xattrs::new();
        if ino.xattr_len == 0 {
            return Ok(out);
        }
        let area = self.xattr_area(ino)?;
        let shared = shared_ids(ino, &area)?;
        let base = u64::from(self.sb.xattr_blkaddr.get()) * self.block;
        for id in shared {
            let at = base + u64::from(id) * 4;
            let h: XattrEntry = get(self.src, at, "erofs shared xattr")?;
            let len = usize::from(h.e_name_len) + usize::from(h.e_value_size.get());
            let body = bytes(self.src, at + 4, len, "erofs shared xattr")?;
            let (name, value) = split_entry(ino.nid, &h, &body)?;
            out.insert(name, value);
        }
        for (h, body) in inline_entries(ino, &area)? {
            let (name, value) = split_entry(ino.nid, &h, body)?;
            out.insert(name, value);
        }
        Ok(out)
    }
}

/// The shared xattr ids listed after the area's header.
pub(crate) fn shared_ids(ino: &Inode, area: &[u8]) -> Result<Vec<u32>, Error> {
    let overrun = Error::XattrOverrun {
        nid: ino.nid,
        len: area.len(),
    };
    let (h, rest) = XattrIbodyHeader::read_from_prefix(area).map_err(|_| overrun)?;
    let n = usize::from(h.h_shared_count) * 4;
    let ids = rest.get(..n).ok_or(Error::XattrOverrun {
        nid: ino.nid,
        len: area.len(),
    })?;
    Ok(ids
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Byte offset in the area where the inline entries begin.
pub(crate) fn inline_start(area: &[u8]) -> usize {
    size_of::<XattrIbodyHeader>() + 4 * usize::from(area.get(4).copied().unwrap_or(0))
}

/// The inline entries: each header with its name and value bytes, and
/// (through the slice's length) its padded extent in the area.
pub(crate) fn inline_entries<'a>(
    ino: &Inode,
    area: &'a [u8],
) -> Result<Vec<(XattrEntry, &'a [u8])>, Error> {
    let overrun = || Error::XattrOverrun {
        nid: ino.nid,
        len: area.len(),
    };
    shared_ids(ino, area)?;
    let mut at = inline_start(area);
    let mut out = Vec::new();
    while at + size_of::<XattrEntry>() <= area.len() {
        let (h, rest) = XattrEntry::read_from_prefix(&area[at..]).map_err(|_| overrun())?;
        let len = usize::from(h.e_name_len) + usize::from(h.e_value_size.get());
        let body = rest.get(..len).ok_or_else(overrun)?;
        out.push((h, body));
        at += (size_of::<XattrEntry>() + len).div_ceil(4) * 4;
    }
    Ok(out)
}

/// The full name (prefix and suffix) and value of one entry.
fn split_entry(nid: u64, h: &XattrEntry, body: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let prefix = xattr_prefix(h.e_name_index).ok_or(Error::XattrIndex {
        nid,
        index: h.e_name_index,
    })?;
    let (suffix, value) = body.split_at(usize::from(h.e_name_len));
    Ok(([prefix, suffix].concat(), value.to_vec()))
}

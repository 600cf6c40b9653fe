//! Reading an ext4 image: superblock (its checksum verified), group
//! descriptors, inodes, extent trees, linear directory blocks (htree
//! nodes read as the empty records they are), and xattrs in the inode
//! and in an xattr block.

use std::collections::HashSet;

use zerocopy::FromBytes;

use super::layout::{
    xattr_prefix, DirEntry, Extent, ExtentHeader, ExtentIdx, GroupDesc, GroupDescHi, Inode,
    SuperBlock, XattrEntry, XattrHeader, EXTENTS_FL, EXTENT_MAGIC, EXT_INIT_MAX_LEN,
    INCOMPAT_64BIT, INCOMPAT_READ, INLINE_DATA_FL, MAGIC, ROOT_INO, RO_COMPAT_METADATA_CSUM,
    SUPER_OFFSET, XATTR_MAGIC,
};
use super::time::{Time, Times};
use crate::entry::{decode_dev, join, Xattrs, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT};
use crate::source::{bytes, get, Source};
use crate::{Entry, Error};

/// The most bytes of a directory or symlink read into memory.
const METADATA_LIMIT: u64 = 64 << 20;
/// The deepest extent tree ext4 makes (5 levels).
const EXTENT_DEPTH_MAX: u16 = 5;

/// An ext4 image whose superblock has been read and checked.
pub(crate) struct Image<'s, S: Source + ?Sized> {
    src: &'s S,
    sb: SuperBlock,
    block: u64,
}

/// An inode with where it lies.
pub(crate) struct Found {
    pub ino: u32,
    pub offset: u64,
    pub raw: Inode,
    /// Bytes of the inode record (`s_inode_size`).
    pub size: usize,
}

impl Found {
    fn flags(&self) -> u32 {
        self.raw.i_flags.get()
    }
    fn mode(&self) -> u32 {
        u32::from(self.raw.i_mode.get())
    }
    fn len(&self) -> u64 {
        u64::from(self.raw.i_size_lo.get()) | (u64::from(self.raw.i_size_high.get()) << 32)
    }
}

impl<'s, S: Source + ?Sized> Image<'s, S> {
    pub fn open(src: &'s S) -> Result<Self, Error> {
        let sb: SuperBlock = get(src, SUPER_OFFSET, "ext4 superblock")?;
        if sb.s_magic.get() != MAGIC {
            return Err(Error::NotExt4);
        }
        if sb.s_feature_ro_compat.get() & RO_COMPAT_METADATA_CSUM != 0 {
            let computed = !crc32c::crc32c(&zerocopy::IntoBytes::as_bytes(&sb)[..0x3FC]);
            if computed != sb.s_checksum.get() {
                return Err(Error::Ext4SuperblockChecksum {
                    stored: sb.s_checksum.get(),
                    computed,
                });
            }
        }
        let unread = sb.s_feature_incompat.get() & !INCOMPAT_READ;
        if unread != 0 {
            return Err(Error::Features { bits: unread });
        }
        let log = sb.s_log_block_size.get();
        if log > 6 || sb.s_inodes_per_group.get() == 0 || sb.s_inode_size.get() < 128 {
            return Err(Error::Ext4Geometry);
        }
        let block = 1024u64 << log;
        let blocks = u64::from(sb.s_blocks_count_lo.get());
        if blocks > 0 {
            bytes(src, blocks * block - 1, 1, "last block of the ext4 image")?;
        }
        Ok(Image { src, sb, block })
    }

    /// The byte offset of inode `ino`'s record.
    fn inode_offset(&self, ino: u32) -> Result<u64, Error> {
        if ino == 0 || ino > self.sb.s_inodes_count.get() {
            return Err(Error::Ext4Inode { ino });
        }
        let ipg = self.sb.s_inodes_per_group.get();
        let (group, index) = (u64::from((ino - 1) / ipg), u64::from((ino - 1) % ipg));
        let wide = self.sb.s_feature_incompat.get() & INCOMPAT_64BIT != 0;
        let desc = if wide {
            u64::from(self.sb.s_desc_size.get()).max(64)
        } else {
            32
        };
        let gdt = (u64::from(self.sb.s_first_data_block.get()) + 1) * self.block;
        let at = gdt + group * desc;
        let d: GroupDesc = get(self.src, at, "ext4 group descriptor")?;
        let mut table = u64::from(d.bg_inode_table_lo.get());
        if wide {
            let hi: GroupDescHi = get(self.src, at + 32, "ext4 group descriptor")?;
            table |= u64::from(hi.bg_inode_table_hi.get()) << 32;
        }
        table
            .checked_mul(self.block)
            .and_then(|t| t.checked_add(index * u64::from(self.sb.s_inode_size.get())))
            .ok_or(Error::Ext4Inode { ino })
    }

    pub fn inode(&self, ino: u32) -> Result<Found, Error> {
        let offset = self.inode_offset(ino)?;
        let raw: Inode = get(self.src, offset, "ext4 inode")?;
        Ok(Found {
            ino,
            offset,
            raw,
            size: usize::from(self.sb.s_inode_size.get()),
        })
    }

    /// The bytes of a directory or symlink, through its extent tree.
    fn data(&self, f: &Found) -> Result<Vec<u8>, Error> {
        let size = f.len();
        if size > METADATA_LIMIT {
            return Err(Error::TooLarge {
                nid: u64::from(f.ino),
                size,
                limit: METADATA_LIMIT,
            });
        }
        if f.flags() & INLINE_DATA_FL != 0 || f.flags() & EXTENTS_FL == 0 {
            return Err(Error::Ext4Layout { ino: f.ino });
        }
        let mut out = vec![0u8; size as usize];
        self.extents(f.ino, &f.raw.i_block, 0, &mut out)?;
        Ok(out)
    }

    /// Copies the blocks the extent node `node` maps into `out` (logical
    /// block `n` at `n * block`); holes and unwritten extents stay zero.
    fn extents(&self, ino: u32, node: &[u8], level: u16, out: &mut [u8]) -> Result<(), Error> {
        let bad = Error::Ext4Extents { ino };
        let (h, rest) =
            ExtentHeader::read_from_prefix(node).map_err(|_| Error::Ext4Extents { ino })?;
        let n = usize::from(h.eh_entries.get());
        if h.eh_magic.get() != EXTENT_MAGIC || level > EXTENT_DEPTH_MAX || rest.len() < n * 12 {
            return Err(bad);
        }
        for e in rest[..n * 12].chunks_exact(12) {
            if h.eh_depth.get() > 0 {
                let i = ExtentIdx::read_from_bytes(e).expect("12 bytes");
                let leaf = u64::from(i.ei_leaf_lo.get()) | (u64::from(i.ei_leaf_hi.get()) << 32);
                let at = leaf
                    .checked_mul(self.block)
                    .ok_or(Error::Ext4Extents { ino })?;
                let child = bytes(self.src, at, self.block as usize, "ext4 extent block")?;
                self.extents(ino, &child, level + 1, out)?;
                continue;
            }
            let x = Extent::read_from_bytes(e).expect("12 bytes");
            if x.ee_len.get() > EXT_INIT_MAX_LEN {
                continue;
            }
            let start = u64::from(x.ee_start_lo.get()) | (u64::from(x.ee_start_hi.get()) << 32);
            let first = u64::from(x.ee_block.get()) * self.block;
            for k in 0..u64::from(x.ee_len.get()) {
                let Some(dst) = first
                    .checked_add(k * self.block)
                    .and_then(|d| usize::try_from(d).ok())
                    .filter(|&d| d < out.len())
                else {
                    break;
                };
                let len = (out.len() - dst).min(self.block as usize);
                let at = (start + k)
                    .checked_mul(self.block)
                    .ok_or(Error::Ext4Extents { ino })?;
                out[dst..dst + len].copy_from_slice(&bytes(self.src, at, len, "ext4 data")?);
            }
        }
        Ok(())
    }

    /// A directory's entries (`.` and `..` left out) with their inodes.
    fn dirents(&self, f: &Found) -> Result<Vec<(Vec<u8>, u32)>, Error> {
        let data = self.data(f)?;
        let mut out = Vec::new();
        let bad = |at| Error::Ext4Directory { ino: f.ino, at };
        for (b, blk) in data.chunks(self.block as usize).enumerate() {
            let mut at = 0;
            while at + size_of::<DirEntry>() <= blk.len() {
                let (d, rest) = DirEntry::read_from_prefix(&blk[at..]).expect("8 bytes");
                let rec = match d.rec_len.get() {
                    // A record of 65536 bytes (64 KiB blocks).
                    0 | 65535 => blk.len() - at,
                    r => usize::from(r),
                };
                let name_len = usize::from(d.name_len);
                let pos = b * self.block as usize + at;
                if rec < size_of::<DirEntry>() || at + rec > blk.len() || rest.len() < name_len {
                    return Err(bad(pos));
                }
                let name = &rest[..name_len];
                if d.inode.get() != 0 && name != b"." && name != b".." {
                    if name.is_empty() || name.iter().any(|&c| c == b'/' || c == 0) {
                        return Err(bad(pos));
                    }
                    out.push((name.to_vec(), d.inode.get()));
                }
                at += rec;
            }
        }
        Ok(out)
    }

    /// Every path with its inode, the root first, parents before children.
    pub fn walk(&self) -> Result<Vec<(Vec<u8>, Found)>, Error> {
        let mut out = vec![(b"/".to_vec(), self.inode(ROOT_INO)?)];
        let mut dirs = HashSet::new();
        let mut i = 0;
        while i < out.len() {
            i += 1;
            let f = &out[i - 1].1;
            if f.mode() & S_IFMT != S_IFDIR {
                continue;
            }
            if !dirs.insert(f.ino) {
                return Err(Error::DirectoryLoop {
                    nid: u64::from(f.ino),
                });
            }
            for (name, ino) in self.dirents(f)? {
                let child = self.inode(ino)?;
                out.push((join(&out[i - 1].0, &name), child));
            }
        }
        Ok(out)
    }

    /// The entry of `f` at `path`.
    pub fn entry(&self, path: Vec<u8>, f: &Found) -> Result<Entry, Error> {
        let r = &f.raw;
        let kind = f.mode() & S_IFMT;
        let rdev = matches!(kind, S_IFCHR | S_IFBLK).then(|| {
            let old = u32::from_le_bytes(r.i_block[0..4].try_into().expect("4"));
            let new = u32::from_le_bytes(r.i_block[4..8].try_into().expect("4"));
            match old {
                0 => decode_dev(new),
                d => ((d >> 8) & 0xff, d & 0xff),
            }
        });
        let target = match kind {
            // A fast symlink keeps its target in `i_block`.
            S_IFLNK if f.len() < 60 && f.flags() & (EXTENTS_FL | INLINE_DATA_FL) == 0 => {
                Some(r.i_block[..f.len() as usize].to_vec())
            }
            S_IFLNK => Some(self.data(f)?),
            _ => None,
        };
        Ok(Entry {
            path,
            ino: u64::from(f.ino),
            mode: f.mode(),
            uid: u32::from(r.i_uid.get()) | (u32::from(r.l_i_uid_high.get()) << 16),
            gid: u32::from(r.i_gid.get()) | (u32::from(r.l_i_gid_high.get()) << 16),
            nlink: u64::from(r.i_links_count.get()),
            rdev,
            size: f.len(),
            target,
            xattrs: Some(self.xattrs(f)?),
        })
    }

    /// The four times of `f`: the seconds in the 128-byte inode, the
    /// epoch bits and nanoseconds in the `_extra` fields (and `crtime`)
    /// where `i_extra_isize` covers them, decoded as the kernel does.
    pub fn times(&self, f: &Found) -> Result<Times, Error> {
        let body = if f.size > 128 {
            bytes(self.src, f.offset, f.size, "ext4 inode")?
        } else {
            Vec::new()
        };
        let extra = match body.get(128..130) {
            Some(b) => 128 + usize::from(u16::from_le_bytes([b[0], b[1]])),
            None => 128,
        };
        let field = |at: usize| -> Option<u32> {
            let b = body.get(at..at + 4).filter(|_| at + 4 <= extra)?;
            Some(u32::from_le_bytes(b.try_into().expect("4 bytes")))
        };
        let time = |lo: u32, hi: Option<u32>| {
            let hi = hi.unwrap_or(0);
            Time {
                seconds: i64::from(lo as i32) + (i64::from(hi & 3) << 32),
                nanoseconds: hi >> 2,
            }
        };
        let r = &f.raw;
        Ok(Times {
            atime: time(r.i_atime.get(), field(0x8C)),
            mtime: time(r.i_mtime.get(), field(0x88)),
            ctime: time(r.i_ctime.get(), field(0x84)),
            crtime: field(0x90).map(|lo| time(lo, field(0x94))),
        })
    }

    /// The xattrs in the inode (after `i_extra_isize`) and in its xattr
    /// block.
    fn xattrs(&self, f: &Found) -> Result<Xattrs, Error> {
        let mut out = Xattrs::new();
        let ino = f.ino;
        if f.size > 128 {
            let body = bytes(self.src, f.offset, f.size, "ext4 inode")?;
            let extra = usize::from(u16::from_le_bytes([body[128], body[129]]));
            let at = 128 + extra;
            if at + 4 <= body.len() && body[at..at + 4] == XATTR_MAGIC.to_le_bytes() {
                let area = &body[at + 4..];
                entries(ino, area, area, &mut out)?;
            }
        }
        let acl =
            u64::from(f.raw.i_file_acl_lo.get()) | (u64::from(f.raw.l_i_file_acl_high.get()) << 32);
        if acl != 0 {
            let at = acl
                .checked_mul(self.block)
                .ok_or(Error::Ext4Xattr { ino })?;
            let blk = bytes(self.src, at, self.block as usize, "ext4 xattr block")?;
            let (h, _) = XattrHeader::read_from_prefix(&blk).expect("a block");
            if h.h_magic.get() != XATTR_MAGIC {
                return Err(Error::Ext4Xattr { ino });
            }
            entries(ino, &blk[size_of::<XattrHeader>()..], &blk, &mut out)?;
        }
        Ok(out)
    }
}

/// The entries listed in `list` (ended by a zero `u32`), their values at
/// offsets into `values`.
fn entries(ino: u32, list: &[u8], values: &[u8], out: &mut Xattrs) -> Result<(), Error> {
    let bad = || Error::Ext4Xattr { ino };
    let mut at = 0;
    while at + 4 <= list.len() && list[at..at + 4] != [0; 4] {
        let (e, rest) = XattrEntry::read_from_prefix(&list[at..]).map_err(|_| bad())?;
        let n = usize::from(e.e_name_len);
        let name = rest.get(..n).ok_or_else(bad)?;
        if e.e_value_inum.get() != 0 {
            return Err(Error::Ext4Layout { ino });
        }
        let off = usize::from(e.e_value_offs.get());
        let len = e.e_value_size.get() as usize;
        let value = values
            .get(off..off.checked_add(len).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        let prefix = xattr_prefix(e.e_name_index).ok_or_else(bad)?;
        out.insert([prefix, name].concat(), value.to_vec());
        at += (size_of::<XattrEntry>() + n).div_ceil(4) * 4;
    }
    Ok(())
}

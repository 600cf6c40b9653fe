//! Reading a squashfs image: the superblock, the id table, inodes by
//! reference, directory listings and xattrs.

use std::collections::HashSet;

use zerocopy::little_endian::{U32, U64};
use zerocopy::FromBytes;

use super::layout::{
    split_ref, BaseInode, DevInode, DirEntry, DirHeader, DirInode, InodeType, IpcInode, LdirInode,
    LregInode, RegInode, SuperBlock, SymlinkInode, XattrEntry, XattrId, XattrIdTable, XattrVal,
    DIR_SIZE_EXTRA, INVALID_BLK, INVALID_XATTR, MAGIC, METADATA_SIZE, XATTR_VALUE_OOL,
};
use super::meta::{Compressor, Cursor, Meta};
use crate::entry::{decode_dev, join, Xattrs};
use crate::source::{get, Source};
use crate::Error;

/// The longest symlink target Linux makes (`PATH_MAX`).
const TARGET_MAX: u32 = 4096;

/// A squashfs image with its superblock and id table read.
pub(crate) struct Image<'s, S: Source + ?Sized> {
    pub sb: SuperBlock,
    pub meta: Meta<'s, S>,
    ids: Vec<u32>,
}

/// One inode, decoded.
pub(crate) struct Inode {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub number: u32,
    pub nlink: u64,
    pub size: u64,
    pub rdev: Option<(u32, u32)>,
    pub target: Option<Vec<u8>>,
    /// Index into the xattr id table, if any.
    pub xattr: Option<u32>,
    /// A directory's listing: where it starts and its bytes.
    pub listing: Option<(Cursor, u32)>,
}

impl<'s, S: Source + ?Sized> Image<'s, S> {
    /// Reads the superblock and the id table.
    pub fn open(src: &'s S) -> Result<Self, Error> {
        let sb: SuperBlock = get(src, 0, "squashfs superblock")?;
        if sb.s_magic.get() != MAGIC {
            return Err(Error::NotSquashfs);
        }
        let (major, minor) = (sb.s_major.get(), sb.s_minor.get());
        if (major, minor) != (4, 0) {
            return Err(Error::SquashfsVersion { major, minor });
        }
        // The whole image as the superblock counts it is there.
        let used = sb.bytes_used.get();
        if used > 0 {
            crate::source::bytes(src, used - 1, 1, "end of the squashfs image")?;
        }
        let mut meta = Meta::new(src, Compressor(sb.compression.get()));
        let ids = read_ids(&mut meta, &sb)?;
        Ok(Image { sb, meta, ids })
    }

    fn id(&self, index: u16) -> Result<u32, Error> {
        self.ids
            .get(usize::from(index))
            .copied()
            .ok_or(Error::IdIndex {
                index,
                count: self.ids.len(),
            })
    }

    /// The inode at reference `r` (relative to the inode table).
    pub fn inode(&mut self, r: u64) -> Result<Inode, Error> {
        let (block, offset) = split_ref(r);
        let start = self.sb.inode_table_start.get();
        let mut cur = Cursor {
            block: start
                .checked_add(block)
                .ok_or(Error::MetadataRef { block, offset })?,
            offset,
        };
        let base: BaseInode = self.meta.get(&mut cur)?;
        let t = base.inode_type.get();
        let (kind, _) = InodeType::of(t).ok_or(Error::InodeType { kind: t })?;
        let mut ino = Inode {
            mode: kind.mode_bits() | u32::from(base.mode.get() & 0o7777),
            uid: self.id(base.uid.get())?,
            gid: self.id(base.guid.get())?,
            number: base.inode_number.get(),
            nlink: 1,
            size: 0,
            rdev: None,
            target: None,
            xattr: None,
            listing: None,
        };
        self.rest(t, &mut ino, &mut cur)?;
        Ok(ino)
    }

    /// The part of inode type `t` after its base.
    fn rest(&mut self, t: u16, ino: &mut Inode, cur: &mut Cursor) -> Result<(), Error> {
        let dir_table = self.sb.directory_table_start.get();
        let listing = |block: u32, offset: u16, size: u32| {
            let at = Cursor {
                block: dir_table + u64::from(block),
                offset: usize::from(offset),
            };
            (at, size.saturating_sub(DIR_SIZE_EXTRA))
        };
        let xattr = |m: &mut Meta<'s, S>, cur: &mut Cursor| -> Result<Option<u32>, Error> {
            let x: U32 = m.get(cur)?;
            Ok(Some(x.get()).filter(|&x| x != INVALID_XATTR))
        };
        match t {
            1 => {
                let d: DirInode = self.meta.get(cur)?;
                ino.nlink = u64::from(d.nlink.get());
                ino.size = u64::from(d.file_size.get());
                ino.listing = Some(listing(
                    d.start_block.get(),
                    d.offset.get(),
                    u32::from(d.file_size.get()),
                ));
            }
            8 => {
                let d: LdirInode = self.meta.get(cur)?;
                ino.nlink = u64::from(d.nlink.get());
                ino.size = u64::from(d.file_size.get());
                ino.listing = Some(listing(
                    d.start_block.get(),
                    d.offset.get(),
                    d.file_size.get(),
                ));
                ino.xattr = Some(d.xattr.get()).filter(|&x| x != INVALID_XATTR);
            }
            2 => {
                let f: RegInode = self.meta.get(cur)?;
                ino.size = u64::from(f.file_size.get());
            }
            9 => {
                let f: LregInode = self.meta.get(cur)?;
                ino.size = f.file_size.get();
                ino.nlink = u64::from(f.nlink.get());
                ino.xattr = Some(f.xattr.get()).filter(|&x| x != INVALID_XATTR);
            }
            3 | 10 => {
                let s: SymlinkInode = self.meta.get(cur)?;
                let len = s.symlink_size.get();
                if len > TARGET_MAX {
                    return Err(Error::TargetTooLong { len });
                }
                ino.nlink = u64::from(s.nlink.get());
                ino.size = u64::from(len);
                ino.target = Some(self.meta.read(cur, len as usize)?);
                if t == 10 {
                    ino.xattr = xattr(&mut self.meta, cur)?;
                }
            }
            4 | 5 | 11 | 12 => {
                let d: DevInode = self.meta.get(cur)?;
                ino.nlink = u64::from(d.nlink.get());
                ino.rdev = Some(decode_dev(d.rdev.get()));
                if t > 7 {
                    ino.xattr = xattr(&mut self.meta, cur)?;
                }
            }
            _ => {
                let i: IpcInode = self.meta.get(cur)?;
                ino.nlink = u64::from(i.nlink.get());
                if t > 7 {
                    ino.xattr = xattr(&mut self.meta, cur)?;
                }
            }
        }
        Ok(())
    }

    /// A directory's entries: each name with its inode reference.
    pub fn listing(&mut self, at: Cursor, len: u32) -> Result<Vec<(Vec<u8>, u64)>, Error> {
        let mut cur = at;
        let mut left = len as usize;
        let mut out = Vec::new();
        let bad = |fault| Error::BadListing { fault };
        while left > 0 {
            let h: DirHeader = self.meta.get(&mut cur)?;
            left = left
                .checked_sub(size_of::<DirHeader>())
                .ok_or(bad("a header runs past the listing"))?;
            let count = h.count.get() as usize + 1;
            if count > 256 {
                return Err(bad("a header counts more than 256 entries"));
            }
            for _ in 0..count {
                let e: DirEntry = self.meta.get(&mut cur)?;
                let n = usize::from(e.size.get()) + 1;
                if n > 256 {
                    return Err(bad("a name longer than 256 bytes"));
                }
                let name = self.meta.read(&mut cur, n)?;
                left = left
                    .checked_sub(size_of::<DirEntry>() + n)
                    .ok_or(bad("an entry runs past the listing"))?;
                if name.len() > 255
                    || name.iter().any(|&c| c == b'/' || c == 0)
                    || name == b"."
                    || name == b".."
                {
                    return Err(bad("a name that is no Linux file name"));
                }
                let r = (u64::from(h.start_block.get()) << 16) | u64::from(e.offset.get());
                out.push((name, r));
            }
        }
        Ok(out)
    }

    /// Every path with its inode, the root first, parents before children.
    pub fn walk(&mut self) -> Result<Vec<(Vec<u8>, Inode)>, Error> {
        let root = self.inode(self.sb.root_inode.get())?;
        let mut out = vec![(b"/".to_vec(), root)];
        let mut dirs = HashSet::new();
        let mut i = 0;
        while i < out.len() {
            i += 1;
            let Some((at, len)) = out[i - 1].1.listing else {
                continue;
            };
            if !dirs.insert(out[i - 1].1.number) {
                return Err(Error::DirectoryLoop {
                    nid: u64::from(out[i - 1].1.number),
                });
            }
            for (name, r) in self.listing(at, len)? {
                let ino = self.inode(r)?;
                out.push((join(&out[i - 1].0, &name), ino));
            }
        }
        Ok(out)
    }

    /// The xattrs of xattr id `index`.
    pub fn xattrs(&mut self, index: u32) -> Result<Xattrs, Error> {
        let at = self.sb.xattr_id_table_start.get();
        if at == INVALID_BLK {
            return Err(Error::XattrIdIndex { index, count: 0 });
        }
        let table: XattrIdTable = get(self.meta.src, at, "squashfs xattr id table")?;
        let count = table.xattr_ids.get();
        if index >= count {
            return Err(Error::XattrIdIndex { index, count });
        }
        let per_block = (METADATA_SIZE / size_of::<XattrId>()) as u32;
        let slot = at
            + size_of::<XattrIdTable>() as u64
            + u64::from(index / per_block) * size_of::<U64>() as u64;
        let block: U64 = get(self.meta.src, slot, "squashfs xattr id index")?;
        let mut cur = Cursor {
            block: block.get(),
            offset: (index % per_block) as usize * size_of::<XattrId>(),
        };
        let id: XattrId = self.meta.get(&mut cur)?;
        let kv_start = table.xattr_table_start.get();
        let (b, o) = split_ref(id.xattr.get());
        let mut cur = Cursor {
            block: kv_start + b,
            offset: o,
        };
        let mut out = Xattrs::new();
        for _ in 0..id.count.get().min(65536) {
            let e: XattrEntry = self.meta.get(&mut cur)?;
            let t = e.xattr_type.get();
            let prefix: &[u8] = match t & !XATTR_VALUE_OOL {
                0 => b"user.",
                1 => b"trusted.",
                2 => b"security.",
                kind => return Err(Error::XattrType { kind }),
            };
            let name = self.meta.read(&mut cur, usize::from(e.size.get()))?;
            let value = self.value(&mut cur, t & XATTR_VALUE_OOL != 0, kv_start)?;
            out.insert([prefix, &name].concat(), value);
        }
        Ok(out)
    }

    /// A value at `cur`, or (out of line) at the reference stored there.
    fn value(&mut self, cur: &mut Cursor, ool: bool, kv_start: u64) -> Result<Vec<u8>, Error> {
        let v: XattrVal = self.meta.get(cur)?;
        let len = v.vsize.get();
        if len > 65536 {
            return Err(Error::XattrValueSize { len });
        }
        let value = self.meta.read(cur, len as usize)?;
        if !ool {
            return Ok(value);
        }
        let r = U64::read_from_bytes(&value).map_err(|_| Error::XattrValueSize { len })?;
        let (b, o) = split_ref(r.get());
        let mut at = Cursor {
            block: kv_start + b,
            offset: o,
        };
        self.value(&mut at, false, kv_start)
    }
}

/// The id table: `no_ids` uids and gids, in blocks whose byte offsets
/// the index at `id_table_start` lists.
fn read_ids<S: Source + ?Sized>(
    meta: &mut Meta<'_, S>,
    sb: &SuperBlock,
) -> Result<Vec<u32>, Error> {
    let n = usize::from(sb.no_ids.get());
    let per_block = METADATA_SIZE / 4;
    let mut ids = Vec::with_capacity(n);
    for k in 0..n.div_ceil(per_block) {
        let slot = sb.id_table_start.get() + (k * 8) as u64;
        let block: U64 = get(meta.src, slot, "squashfs id table index")?;
        let mut cur = Cursor {
            block: block.get(),
            offset: 0,
        };
        let here = (n - k * per_block).min(per_block);
        let raw = meta.read(&mut cur, here * 4)?;
        ids.extend(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok(ids)
}

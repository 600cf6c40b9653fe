//! Constants and primitive structures of the btrfs on-disk format.
//!
//! Names follow the kernel's `include/uapi/linux/btrfs_tree.h` so that a
//! reader can grep for them. Everything on disk is little-endian.

use std::mem::size_of;

use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use super::error::ReadError;
use super::layout;

/// Offset of the primary superblock on the device.
pub const BTRFS_SUPER_INFO_OFFSET: u64 = 0x1_0000;
/// Size of the superblock.
pub const BTRFS_SUPER_INFO_SIZE: usize = size_of::<layout::SuperBlock>();
/// `_BHRfS_M`, at offset 0x40 of the superblock.
pub const BTRFS_MAGIC: [u8; 8] = *b"_BHRfS_M";
/// Size of the checksum field at the start of the superblock and every tree block.
pub const BTRFS_CSUM_SIZE: usize = layout::BTRFS_CSUM_SIZE;
/// Size of the fsid and every other UUID.
pub const BTRFS_UUID_SIZE: usize = layout::BTRFS_UUID_SIZE;
/// Size of the label field of the superblock.
pub const BTRFS_LABEL_SIZE: usize = layout::BTRFS_LABEL_SIZE;
/// Capacity of the superblock's system chunk array.
pub const BTRFS_SYSTEM_CHUNK_ARRAY_SIZE: usize = layout::BTRFS_SYSTEM_CHUNK_ARRAY_SIZE;
/// Tree levels run from 0 (leaf) to `BTRFS_MAX_LEVEL - 1`.
pub const BTRFS_MAX_LEVEL: u8 = 8;

// Checksum algorithms (`btrfs_super_block::csum_type`).

/// CRC-32C.
pub const BTRFS_CSUM_TYPE_CRC32: u16 = 0;
/// xxHash64.
pub const BTRFS_CSUM_TYPE_XXHASH: u16 = 1;
/// SHA-256.
pub const BTRFS_CSUM_TYPE_SHA256: u16 = 2;
/// BLAKE2b-256.
pub const BTRFS_CSUM_TYPE_BLAKE2: u16 = 3;

// Incompatible feature flags this reader must know about.

/// Tree blocks carry `metadata_uuid` instead of the fsid.
pub const BTRFS_FEATURE_INCOMPAT_METADATA_UUID: u64 = 1 << 10;
/// Extent tree v2: a different layout, not read here.
pub const BTRFS_FEATURE_INCOMPAT_EXTENT_TREE_V2: u64 = 1 << 13;

/// Names of the `BTRFS_FEATURE_INCOMPAT_*` bits, as `mkfs.btrfs -O` and
/// `btrfs inspect-internal dump-super` spell them (bit, name).
pub const INCOMPAT_FEATURES: &[(u32, &str)] = &[
    (0, "mixed-backref"),
    (1, "default-subvol"),
    (2, "mixed-bg"),
    (3, "compress-lzo"),
    (4, "compress-zstd"),
    (5, "big-metadata"),
    (6, "extref"),
    (7, "raid56"),
    (8, "skinny-metadata"),
    (9, "no-holes"),
    (10, "metadata-uuid"),
    (11, "raid1c34"),
    (12, "zoned"),
    (13, "extent-tree-v2"),
    (14, "raid-stripe-tree"),
    (16, "squota"),
    (17, "remap-tree"),
];

/// Names of the `BTRFS_FEATURE_COMPAT_RO_*` bits (bit, name). Kernels
/// before 6.1 refuse to mount a filesystem with `block-group-tree`
/// read-write, kernels before 4.5 one with `free-space-tree`.
pub const COMPAT_RO_FEATURES: &[(u32, &str)] = &[
    (0, "free-space-tree"),
    (1, "free-space-tree-valid"),
    (2, "verity"),
    (3, "block-group-tree"),
];

/// The names of the feature bits set in a superblock's `incompat_flags`
/// and `compat_ro_flags`, incompat first; unknown bits as
/// `incompat-bit-N` / `compat-ro-bit-N`.
pub fn feature_names(incompat: u64, compat_ro: u64) -> Vec<String> {
    let mut out = flag_names(incompat, INCOMPAT_FEATURES, "incompat-bit-");
    out.extend(flag_names(compat_ro, COMPAT_RO_FEATURES, "compat-ro-bit-"));
    out
}

fn flag_names(flags: u64, table: &[(u32, &str)], unknown: &str) -> Vec<String> {
    (0..64)
        .filter(|bit| flags & (1u64 << bit) != 0)
        .map(|bit| match table.iter().find(|(b, _)| *b == bit) {
            Some((_, name)) => (*name).to_string(),
            None => format!("{unknown}{bit}"),
        })
        .collect()
}

/// Names of the `BTRFS_INODE_*` flag bits (bit, name), as `lsattr`
/// relates to them: `nodatacow` is `C`, `compress` is `c`, `immutable`
/// is `i`, `append` is `a`, `nodump` is `d`, `noatime` is `A`.
pub const INODE_FLAGS: &[(u32, &str)] = &[
    (0, "nodatasum"),
    (1, "nodatacow"),
    (2, "readonly"),
    (3, "nocompress"),
    (4, "prealloc"),
    (5, "sync"),
    (6, "immutable"),
    (7, "append"),
    (8, "nodump"),
    (9, "noatime"),
    (10, "dirsync"),
    (11, "compress"),
];

/// The names of the bits set in an inode item's `flags`; unknown bits as
/// `bit-N`.
pub fn inode_flag_names(flags: u64) -> Vec<String> {
    flag_names(flags, INODE_FLAGS, "bit-")
}

// Well-known tree object ids.

/// The tree of tree roots.
pub const BTRFS_ROOT_TREE_OBJECTID: u64 = 1;
/// The chunk tree.
pub const BTRFS_CHUNK_TREE_OBJECTID: u64 = 3;
/// The top-level subvolume.
pub const BTRFS_FS_TREE_OBJECTID: u64 = 5;
/// The directory in the root tree holding the `default` entry.
pub const BTRFS_ROOT_TREE_DIR_OBJECTID: u64 = 6;
/// Inode number of the empty directory the kernel shows where a snapshot
/// names a subvolume that is not linked there.
pub const BTRFS_EMPTY_SUBVOL_DIR_OBJECTID: u64 = 2;
/// First inode number and first id of a created subvolume.
pub const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
/// Last id of a created subvolume.
pub const BTRFS_LAST_FREE_OBJECTID: u64 = -256i64 as u64;
/// Object id of every chunk item.
pub const BTRFS_FIRST_CHUNK_TREE_OBJECTID: u64 = 256;

// Item types (the middle field of a key).

/// `(ino, INODE_ITEM, 0)`: `btrfs_inode_item`.
pub const BTRFS_INODE_ITEM_KEY: u8 = 1;
/// `(ino, INODE_REF, parent dir)`: names of an inode.
pub const BTRFS_INODE_REF_KEY: u8 = 12;
/// `(ino, INODE_EXTREF, hash)`: names that overflow `INODE_REF`.
pub const BTRFS_INODE_EXTREF_KEY: u8 = 13;
/// `(ino, XATTR_ITEM, name hash)`: extended attributes.
pub const BTRFS_XATTR_ITEM_KEY: u8 = 24;
/// `(dir, DIR_ITEM, name hash)`: directory entries by name.
pub const BTRFS_DIR_ITEM_KEY: u8 = 84;
/// `(dir, DIR_INDEX, index)`: directory entries in creation order.
pub const BTRFS_DIR_INDEX_KEY: u8 = 96;
/// `(ino, EXTENT_DATA, file offset)`: file extents.
pub const BTRFS_EXTENT_DATA_KEY: u8 = 108;
/// `(tree id, ROOT_ITEM, transid)`: where a tree starts.
pub const BTRFS_ROOT_ITEM_KEY: u8 = 132;
/// `(subvol, ROOT_BACKREF, parent)`: name of a subvolume in its parent.
pub const BTRFS_ROOT_BACKREF_KEY: u8 = 144;
/// `(parent, ROOT_REF, subvol)`: the same, from the parent.
pub const BTRFS_ROOT_REF_KEY: u8 = 156;
/// `(FIRST_CHUNK_TREE, CHUNK_ITEM, logical)`: a chunk.
pub const BTRFS_CHUNK_ITEM_KEY: u8 = 228;

// Block group / chunk type and profile bits.

/// Striped over devices.
pub const BTRFS_BLOCK_GROUP_RAID0: u64 = 1 << 3;
/// Two copies on different devices.
pub const BTRFS_BLOCK_GROUP_RAID1: u64 = 1 << 4;
/// Two copies on one device.
pub const BTRFS_BLOCK_GROUP_DUP: u64 = 1 << 5;
/// Striped mirrors.
pub const BTRFS_BLOCK_GROUP_RAID10: u64 = 1 << 6;
/// Striped with one parity.
pub const BTRFS_BLOCK_GROUP_RAID5: u64 = 1 << 7;
/// Striped with two parities.
pub const BTRFS_BLOCK_GROUP_RAID6: u64 = 1 << 8;
/// Three copies.
pub const BTRFS_BLOCK_GROUP_RAID1C3: u64 = 1 << 9;
/// Four copies.
pub const BTRFS_BLOCK_GROUP_RAID1C4: u64 = 1 << 10;
/// Profiles in which every stripe holds a full copy of the chunk.
pub const BTRFS_BLOCK_GROUP_MIRRORED: u64 = BTRFS_BLOCK_GROUP_RAID1
    | BTRFS_BLOCK_GROUP_DUP
    | BTRFS_BLOCK_GROUP_RAID1C3
    | BTRFS_BLOCK_GROUP_RAID1C4;
/// Profiles that stripe data across devices.
pub const BTRFS_BLOCK_GROUP_STRIPED: u64 = BTRFS_BLOCK_GROUP_RAID0
    | BTRFS_BLOCK_GROUP_RAID10
    | BTRFS_BLOCK_GROUP_RAID5
    | BTRFS_BLOCK_GROUP_RAID6;

/// `btrfs_root_item::flags`: the subvolume is read-only.
pub const BTRFS_ROOT_SUBVOL_RDONLY: u64 = 1 << 0;

/// `btrfs_file_extent_item::type`: data inline in the item.
pub const BTRFS_FILE_EXTENT_INLINE: u8 = 0;
/// `btrfs_file_extent_item::compression`: not compressed.
pub const BTRFS_COMPRESS_NONE: u8 = 0;

/// `btrfs_dir_item::type` of a character device.
pub const BTRFS_FT_CHRDEV: u8 = 3;
/// `btrfs_dir_item::type` of a block device.
pub const BTRFS_FT_BLKDEV: u8 = 4;

/// Size of a `btrfs_disk_key`.
pub const BTRFS_DISK_KEY_SIZE: usize = size_of::<layout::DiskKey>();
/// Size of a `btrfs_header` (the start of every tree block).
pub const BTRFS_HEADER_SIZE: usize = size_of::<layout::Header>();
/// Size of a `btrfs_item` (leaf item header).
pub const BTRFS_ITEM_SIZE: usize = size_of::<layout::Item>();
/// Size of a `btrfs_key_ptr` (internal node pointer).
pub const BTRFS_KEY_PTR_SIZE: usize = size_of::<layout::KeyPtr>();

/// A btrfs key: `(objectid, type, offset)`, ordered field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Usually an inode number or tree id.
    pub objectid: u64,
    /// One of the `BTRFS_*_KEY` constants.
    pub item_type: u8,
    /// Meaning depends on the item type.
    pub offset: u64,
}

impl Key {
    /// A key from its three fields.
    pub const fn new(objectid: u64, item_type: u8, offset: u64) -> Key {
        Key {
            objectid,
            item_type,
            offset,
        }
    }

    /// Parse a `btrfs_disk_key` from `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<Key, ReadError> {
        Ok(Key::from_disk(r.read::<layout::DiskKey>()?))
    }

    /// The key a `btrfs_disk_key` holds.
    pub(crate) fn from_disk(k: &layout::DiskKey) -> Key {
        Key::new(k.objectid.get(), k.item_type, k.offset.get())
    }

    /// This key as a `btrfs_disk_key`.
    pub(crate) fn to_disk(self) -> layout::DiskKey {
        layout::DiskKey {
            objectid: self.objectid.into(),
            item_type: self.item_type,
            offset: self.offset.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({} {} {})", self.objectid, self.item_type, self.offset)
    }
}

/// A bounds-checked little-endian reader over a byte slice.
///
/// Every read that would run past the end yields
/// [`ReadError::Corrupt`] naming `what` was being parsed, so parsers
/// built on it cannot panic on malformed input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`; `what` names the structure for errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    /// A reader at `pos` in `buf`.
    pub fn at(buf: &'a [u8], pos: usize, what: &'static str) -> Reader<'a> {
        Reader { buf, pos, what }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated())?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated())?;
        self.pos = end;
        Ok(out)
    }

    /// Skip `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), ReadError> {
        self.bytes(n).map(|_| ())
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// The next `size_of::<T>()` bytes, viewed as the on-disk structure
    /// `T` (one of [`crate::layout`]'s).
    pub(crate) fn read<T: FromBytes + KnownLayout + Immutable + Unaligned>(
        &mut self,
    ) -> Result<&'a T, ReadError> {
        let b = self.bytes(size_of::<T>())?;
        T::ref_from_bytes(b).map_err(|_| self.truncated())
    }

    /// The next byte.
    pub fn u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.array::<1>()?[0])
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, ReadError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn truncated(&self) -> ReadError {
        ReadError::Corrupt(format!(
            "truncated {} ({} bytes, needed more at offset {})",
            self.what,
            self.buf.len(),
            self.pos
        ))
    }
}

/// The hash btrfs uses for `DIR_ITEM` and `XATTR_ITEM` key offsets:
/// CRC-32C of the name seeded with `~1`, without the final inversion.
pub fn name_hash(name: &[u8]) -> u64 {
    // `crc32c_append(c, ..)` runs the raw CRC from state `!c` and returns the
    // inverted state, so seeding the raw CRC with `!1` means passing `1`.
    u64::from(!crc32c::crc32c_append(1, name))
}

/// Format a UUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(u: &[u8; BTRFS_UUID_SIZE]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_hash_matches_mkfs() {
        // From `btrfs inspect-internal dump-tree`: (ROOT_TREE_DIR DIR_ITEM 2378154706) "default".
        assert_eq!(name_hash(b"default"), 2378154706);
        // (256 DIR_ITEM 411982631) "f".
        assert_eq!(name_hash(b"f"), 411982631);
    }

    #[test]
    fn reader_never_panics() {
        let mut r = Reader::new(&[1, 2, 3], "test");
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert!(r.u16().is_err());
        assert!(r.bytes(usize::MAX).is_err());
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.u8().is_err());
    }

    #[test]
    fn uuid_format() {
        let u = [0x12u8; 16];
        assert_eq!(format_uuid(&u), "12121212-1212-1212-1212-121212121212");
    }
}

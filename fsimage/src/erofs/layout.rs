//! The erofs on-disk structures, each described once.
//!
//! Little-endian `#[repr(C)]` structs with the field names and order of
//! the kernel's `fs/erofs/erofs_fs.h` (as the btrfs crate's `layout.rs`
//! does for btrfs); `zerocopy` checks that each has no padding and that
//! any bytes are a value, and the assertions below pin each size to the
//! format's. The reader views image bytes as these structs and the
//! writer edits their fields, so no offset is written down elsewhere.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Byte offset of the superblock.
pub(crate) const SUPER_OFFSET: u64 = 1024;
/// `EROFS_SUPER_MAGIC_V1`.
pub(crate) const MAGIC: u32 = 0xE0F5_E1E2;
/// `feature_compat`: the superblock carries a CRC32C (`checksum`).
pub(crate) const FEATURE_COMPAT_SB_CHKSUM: u32 = 0x1;
/// `feature_compat`: each inode's xattr header carries a bloom filter of
/// its xattr names (`h_name_filter`; erofs-utils 1.7 and later).
pub(crate) const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x4;
/// `feature_incompat` bits that change where the metadata this reader
/// reads lies or how it is encoded, and that it does not implement:
/// multiple devices (`0x8`), fragments (`0x20`), long xattr prefixes
/// (`0x80`). Compression, chunked files, big pclusters, ztailpacking
/// and dedupe change regular files' data only, which is never read.
pub(crate) const FEATURE_INCOMPAT_UNREAD: u32 = 0x8 | 0x20 | 0x80;
/// The slot size inodes are addressed in: an inode is at
/// `meta_blkaddr * block + nid * 32`.
pub(crate) const ISLOT: u64 = 32;

/// `erofs_super_block`, at byte 1024.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SuperBlock {
    pub magic: U32,
    /// CRC32C of the superblock's block from byte 1024, this field zero.
    pub checksum: U32,
    pub feature_compat: U32,
    /// log2 of the block size.
    pub blkszbits: u8,
    pub sb_extslots: u8,
    pub root_nid: U16,
    pub inos: U64,
    pub build_time: U64,
    pub build_time_nsec: U32,
    pub blocks: U32,
    /// First block of the inode area.
    pub meta_blkaddr: U32,
    /// First block of the shared xattr area.
    pub xattr_blkaddr: U32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: U32,
    /// `available_compr_algs` or `lz4_max_distance`.
    pub u1: U16,
    pub extra_devices: U16,
    pub devt_slotoff: U16,
    pub dirblkbits: u8,
    pub xattr_prefix_count: u8,
    pub xattr_prefix_start: U32,
    pub packed_nid: U64,
    pub xattr_filter_reserved: u8,
    pub reserved2: [u8; 23],
}

/// `i_format` bit 0: an extended (64-byte) inode.
pub(crate) const I_VERSION_EXTENDED: u16 = 1;
/// `i_format` bits 1–3: the data layout.
pub(crate) const I_DATALAYOUT_BIT: u16 = 1;
/// Mask of the data layout after the shift.
pub(crate) const I_DATALAYOUT_MASK: u16 = 0x7;
/// Data in whole blocks from `i_u`.
pub(crate) const FLAT_PLAIN: u16 = 0;
/// Whole blocks from `i_u`, the tail inline after the inode's xattrs.
pub(crate) const FLAT_INLINE: u16 = 2;

/// `erofs_inode_compact`: 32 bytes, 16-bit ids and link count.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct InodeCompact {
    pub i_format: U16,
    /// Size of the inline xattr area in 4-byte units beyond its header
    /// ([`xattr_ibody_size`]).
    pub i_xattr_icount: U16,
    pub i_mode: U16,
    pub i_nlink: U16,
    pub i_size: U32,
    pub i_reserved: U32,
    /// First block, device number, or compressed blocks (by layout).
    pub i_u: U32,
    pub i_ino: U32,
    pub i_uid: U16,
    pub i_gid: U16,
    pub i_reserved2: U32,
}

/// `erofs_inode_extended`: 64 bytes, 32-bit ids, its own mtime.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct InodeExtended {
    pub i_format: U16,
    pub i_xattr_icount: U16,
    pub i_mode: U16,
    pub i_reserved: U16,
    pub i_size: U64,
    pub i_u: U32,
    pub i_ino: U32,
    pub i_uid: U32,
    pub i_gid: U32,
    pub i_mtime: U64,
    pub i_mtime_nsec: U32,
    pub i_nlink: U32,
    pub i_reserved2: [u8; 16],
}

/// `erofs_xattr_ibody_header`: the start of an inode's xattr area,
/// followed by `h_shared_count` 4-byte ids into the shared xattr area,
/// then the inline entries.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrIbodyHeader {
    /// `h_name_filter` (with [`FEATURE_COMPAT_XATTR_FILTER`]: bit
    /// `xxh32(suffix, FILTER_SEED + index) % 32` is clear for each name the
    /// inode has); zero from erofs-utils 1.5.
    pub h_reserved: U32,
    pub h_shared_count: u8,
    pub h_reserved2: [u8; 7],
}

/// `erofs_xattr_entry`: followed by the name (without its prefix) and
/// the value, the whole padded to 4 bytes.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrEntry {
    pub e_name_len: u8,
    /// Which prefix the name has ([`xattr_prefix`]).
    pub e_name_index: u8,
    pub e_value_size: U16,
}

/// `erofs_dirent`: a directory block starts with these, then the names;
/// the first `nameoff` / 12 is their count.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Dirent {
    pub nid: U64,
    /// Byte offset of the name in the block.
    pub nameoff: U16,
    pub file_type: u8,
    pub reserved: u8,
}

/// `erofs_dirent.file_type` of a character device (`EROFS_FT_CHRDEV`).
pub(crate) const FT_CHRDEV: u8 = 3;
/// `erofs_dirent.file_type` of a block device (`EROFS_FT_BLKDEV`).
pub(crate) const FT_BLKDEV: u8 = 4;
/// Offset of `file_type` in an [`Dirent`].
pub(crate) const DIRENT_FILE_TYPE: u64 = 10;
/// The xattr name index of `user.`.
pub(crate) const XATTR_INDEX_USER: u8 = 1;
/// The xattr name index of `security.`.
pub(crate) const XATTR_INDEX_SECURITY: u8 = 6;
/// `EROFS_XATTR_FILTER_SEED`: the name filter's hash seed, to which the
/// name index is added.
pub(crate) const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;

const _: () = assert!(size_of::<SuperBlock>() == 128);
const _: () = assert!(size_of::<InodeCompact>() == 32);
const _: () = assert!(size_of::<InodeExtended>() == 64);
const _: () = assert!(size_of::<XattrIbodyHeader>() == 12);
const _: () = assert!(size_of::<XattrEntry>() == 4);
const _: () = assert!(size_of::<Dirent>() == 12);

/// Bytes of an inode's xattr area for its `i_xattr_icount`: the header
/// plus 4 bytes per count beyond the first (none when zero).
pub(crate) fn xattr_ibody_size(icount: u16) -> usize {
    match icount {
        0 => 0,
        n => size_of::<XattrIbodyHeader>() + 4 * (usize::from(n) - 1),
    }
}

/// The name prefix of an xattr name index (`erofs_xattr_handler`s).
/// The ACL indexes are a whole name: their entries hold an empty one.
pub(crate) fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        5 => b"lustre.",
        6 => b"security.",
        _ => return None,
    })
}

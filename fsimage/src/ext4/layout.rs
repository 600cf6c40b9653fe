//! The ext4 on-disk structures this reader uses, each described once.
//!
//! Little-endian `#[repr(C)]` structs with the field names and order of
//! the kernel's `fs/ext4/ext4.h`, `ext4_extents.h` and `xattr.h`; the
//! parts the reader does not use are named byte ranges, so every offset
//! still comes from the struct and the assertions below pin each size.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Byte offset of the superblock.
pub(crate) const SUPER_OFFSET: u64 = 1024;
/// `EXT4_SUPER_MAGIC`.
pub(crate) const MAGIC: u16 = 0xEF53;
/// The root directory's inode.
pub(crate) const ROOT_INO: u32 = 2;
/// `s_feature_ro_compat`: metadata checksums (the superblock's CRC32C).
pub(crate) const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// `s_feature_incompat`: 64-bit block numbers (64-byte descriptors).
pub(crate) const INCOMPAT_64BIT: u32 = 0x80;
/// `s_feature_incompat` bits this reader reads: filetype, extents,
/// 64bit, mmp, flex_bg, ea_inode (refused per value), csum_seed,
/// largedir, casefold.
pub(crate) const INCOMPAT_READ: u32 =
    0x2 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x20000;
/// `i_flags`: the inode's `i_block` holds an extent tree.
pub(crate) const EXTENTS_FL: u32 = 0x80000;
/// `i_flags`: the inode's data is inline (inline_data).
pub(crate) const INLINE_DATA_FL: u32 = 0x1000_0000;
/// `eh_magic`.
pub(crate) const EXTENT_MAGIC: u16 = 0xF30A;
/// `h_magic` of an xattr block and the in-inode xattr area.
pub(crate) const XATTR_MAGIC: u32 = 0xEA02_0000;
/// `ee_len` above this marks an unwritten extent of `ee_len - 32768`.
pub(crate) const EXT_INIT_MAX_LEN: u16 = 32768;

/// `ext4_super_block` (1024 bytes at byte 1024).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SuperBlock {
    pub s_inodes_count: U32,
    pub s_blocks_count_lo: U32,
    pub s_r_blocks_count_lo: U32,
    pub s_free_blocks_count_lo: U32,
    pub s_free_inodes_count: U32,
    pub s_first_data_block: U32,
    /// Block size is `1024 << s_log_block_size`.
    pub s_log_block_size: U32,
    pub s_log_cluster_size: U32,
    pub s_blocks_per_group: U32,
    pub s_clusters_per_group: U32,
    pub s_inodes_per_group: U32,
    pub s_mtime: U32,
    pub s_wtime: U32,
    pub s_mnt_count: U16,
    pub s_max_mnt_count: U16,
    pub s_magic: U16,
    pub s_state: U16,
    pub s_errors: U16,
    pub s_minor_rev_level: U16,
    pub s_lastcheck: U32,
    pub s_checkinterval: U32,
    pub s_creator_os: U32,
    pub s_rev_level: U32,
    pub s_def_resuid: U16,
    pub s_def_resgid: U16,
    pub s_first_ino: U32,
    pub s_inode_size: U16,
    pub s_block_group_nr: U16,
    pub s_feature_compat: U32,
    pub s_feature_incompat: U32,
    pub s_feature_ro_compat: U32,
    pub s_uuid: [u8; 16],
    pub s_volume_name: [u8; 16],
    pub s_last_mounted: [u8; 64],
    pub s_algorithm_usage_bitmap: U32,
    pub s_prealloc_blocks: u8,
    pub s_prealloc_dir_blocks: u8,
    pub s_reserved_gdt_blocks: U16,
    pub s_journal_uuid: [u8; 16],
    pub s_journal_inum: U32,
    pub s_journal_dev: U32,
    pub s_last_orphan: U32,
    pub s_hash_seed: [U32; 4],
    pub s_def_hash_version: u8,
    pub s_jnl_backup_type: u8,
    /// Bytes of a group descriptor with the 64bit feature.
    pub s_desc_size: U16,
    /// `s_default_mount_opts` to `s_reserved`: not read.
    pub unread: [u8; 0x3FC - 0x100],
    /// CRC32C of the bytes before it (metadata_csum).
    pub s_checksum: U32,
}

/// `ext4_group_desc`: 32 bytes, or 64 with the 64bit feature (the high
/// halves after these).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct GroupDesc {
    pub bg_block_bitmap_lo: U32,
    pub bg_inode_bitmap_lo: U32,
    pub bg_inode_table_lo: U32,
    pub bg_free_blocks_count_lo: U16,
    pub bg_free_inodes_count_lo: U16,
    pub bg_used_dirs_count_lo: U16,
    pub bg_flags: U16,
    pub bg_exclude_bitmap_lo: U32,
    pub bg_block_bitmap_csum_lo: U16,
    pub bg_inode_bitmap_csum_lo: U16,
    pub bg_itable_unused_lo: U16,
    pub bg_checksum: U16,
}

/// The high halves of a 64-byte group descriptor.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct GroupDescHi {
    pub bg_block_bitmap_hi: U32,
    pub bg_inode_bitmap_hi: U32,
    pub bg_inode_table_hi: U32,
    pub rest: [u8; 20],
}

/// `ext4_inode`'s first 128 bytes (the `EXT2_GOOD_OLD_INODE_SIZE` part);
/// `i_extra_isize` follows, then the in-inode xattrs.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Inode {
    pub i_mode: U16,
    pub i_uid: U16,
    pub i_size_lo: U32,
    pub i_atime: U32,
    pub i_ctime: U32,
    pub i_mtime: U32,
    pub i_dtime: U32,
    pub i_gid: U16,
    pub i_links_count: U16,
    pub i_blocks_lo: U32,
    pub i_flags: U32,
    pub osd1: U32,
    /// Extent tree, block map, fast symlink target or device number.
    pub i_block: [u8; 60],
    pub i_generation: U32,
    pub i_file_acl_lo: U32,
    pub i_size_high: U32,
    pub i_obso_faddr: U32,
    pub l_i_blocks_high: U16,
    pub l_i_file_acl_high: U16,
    pub l_i_uid_high: U16,
    pub l_i_gid_high: U16,
    pub l_i_checksum_lo: U16,
    pub l_i_reserved: U16,
}

/// `ext4_extent_header`, at the start of `i_block` and of every tree
/// block.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ExtentHeader {
    pub eh_magic: U16,
    pub eh_entries: U16,
    pub eh_max: U16,
    /// 0: the entries are [`Extent`]s, else [`ExtentIdx`]s.
    pub eh_depth: U16,
    pub eh_generation: U32,
}

/// `ext4_extent`: a run of blocks of a leaf.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Extent {
    pub ee_block: U32,
    pub ee_len: U16,
    pub ee_start_hi: U16,
    pub ee_start_lo: U32,
}

/// `ext4_extent_idx`: a pointer to a lower tree block.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ExtentIdx {
    pub ei_block: U32,
    pub ei_leaf_lo: U32,
    pub ei_leaf_hi: U16,
    pub ei_unused: U16,
}

/// `ext4_dir_entry_2`: the name follows; `rec_len` leads to the next.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DirEntry {
    /// 0 in an unused record (and htree nodes, checksum tails).
    pub inode: U32,
    pub rec_len: U16,
    pub name_len: u8,
    pub file_type: u8,
}

/// `ext4_xattr_header`: the start of an xattr block (entries follow).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrHeader {
    pub h_magic: U32,
    pub h_refcount: U32,
    pub h_blocks: U32,
    pub h_hash: U32,
    pub h_checksum: U32,
    pub h_reserved: [U32; 3],
}

/// `ext4_xattr_entry`: the name follows, padded to 4 bytes; a zero
/// `u32` ends the list.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrEntry {
    pub e_name_len: u8,
    pub e_name_index: u8,
    /// Offset of the value: from the first entry (in the inode) or the
    /// block's start.
    pub e_value_offs: U16,
    /// An inode holding the value (ea_inode), or 0.
    pub e_value_inum: U32,
    pub e_value_size: U32,
    pub e_hash: U32,
}

const _: () = assert!(size_of::<SuperBlock>() == 1024);
const _: () = assert!(size_of::<GroupDesc>() == 32);
const _: () = assert!(size_of::<GroupDescHi>() == 32);
const _: () = assert!(size_of::<Inode>() == 128);
const _: () = assert!(size_of::<ExtentHeader>() == 12);
const _: () = assert!(size_of::<Extent>() == 12);
const _: () = assert!(size_of::<ExtentIdx>() == 12);
const _: () = assert!(size_of::<DirEntry>() == 8);
const _: () = assert!(size_of::<XattrHeader>() == 32);
const _: () = assert!(size_of::<XattrEntry>() == 16);

/// The name prefix of an xattr name index (`ext4_xattr_handler_map`).
pub(crate) fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        _ => return None,
    })
}

//! The on-disk structures, each described once.
//!
//! Every structure the crate reads or patches is a `#[repr(C)]` struct of
//! little-endian fields and byte arrays, with the kernel's field names and
//! order (`include/uapi/linux/btrfs_tree.h`; the kernel declares them
//! `__attribute__((packed))`, which the alignment-1 field types give
//! here). The reader views item and block bytes as these structs through
//! [`Reader::read`](crate::format::Reader) and the rewriter edits fields
//! in place through the same structs, so no offset is written down
//! anywhere else. `zerocopy` checks at compile time that each struct has
//! no padding and any bytes are a valid value; the size assertions below
//! pin each struct to the kernel's `sizeof`. This module depends on
//! nothing else in the crate; [`crate::format`] builds the parsed
//! [`Key`](crate::format::Key) and the size constants on it.

use zerocopy::little_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the checksum field at the start of the superblock and of every
/// tree block.
pub(crate) const BTRFS_CSUM_SIZE: usize = 32;
/// Size of the fsid and every other UUID.
pub(crate) const BTRFS_UUID_SIZE: usize = 16;
/// Size of the label field of the superblock.
pub(crate) const BTRFS_LABEL_SIZE: usize = 256;
/// Capacity of the superblock's system chunk array.
pub(crate) const BTRFS_SYSTEM_CHUNK_ARRAY_SIZE: usize = 2048;
/// Size of one `btrfs_root_backup`.
const ROOT_BACKUP_SIZE: usize = 168;

/// `btrfs_disk_key`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DiskKey {
    pub objectid: U64,
    pub item_type: u8,
    pub offset: U64,
}

/// `btrfs_timespec`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Timespec {
    pub sec: I64,
    pub nsec: U32,
}

/// `btrfs_header`: the start of every tree block.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Header {
    pub csum: [u8; BTRFS_CSUM_SIZE],
    pub fsid: [u8; BTRFS_UUID_SIZE],
    /// Logical address of the block.
    pub bytenr: U64,
    pub flags: U64,
    pub chunk_tree_uuid: [u8; BTRFS_UUID_SIZE],
    pub generation: U64,
    pub owner: U64,
    pub nritems: U32,
    pub level: u8,
}

/// `btrfs_item`: a leaf's item header (offset relative to the end of the
/// block header).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Item {
    pub key: DiskKey,
    pub offset: U32,
    pub size: U32,
}

/// `btrfs_key_ptr`: an internal node's pointer to a child.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct KeyPtr {
    pub key: DiskKey,
    pub blockptr: U64,
    pub generation: U64,
}

/// `btrfs_dev_item`, as embedded in the superblock.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DevItem {
    pub devid: U64,
    pub total_bytes: U64,
    pub bytes_used: U64,
    pub io_align: U32,
    pub io_width: U32,
    pub sector_size: U32,
    pub dev_type: U64,
    pub generation: U64,
    pub start_offset: U64,
    pub dev_group: U32,
    pub seek_speed: u8,
    pub bandwidth: u8,
    pub uuid: [u8; BTRFS_UUID_SIZE],
    pub fsid: [u8; BTRFS_UUID_SIZE],
}

/// `btrfs_super_block`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SuperBlock {
    pub csum: [u8; BTRFS_CSUM_SIZE],
    pub fsid: [u8; BTRFS_UUID_SIZE],
    /// Physical address of this copy.
    pub bytenr: U64,
    pub flags: U64,
    pub magic: [u8; 8],
    pub generation: U64,
    pub root: U64,
    pub chunk_root: U64,
    pub log_root: U64,
    pub log_root_transid: U64,
    pub total_bytes: U64,
    pub bytes_used: U64,
    pub root_dir_objectid: U64,
    pub num_devices: U64,
    pub sectorsize: U32,
    pub nodesize: U32,
    pub leafsize: U32,
    pub stripesize: U32,
    pub sys_chunk_array_size: U32,
    pub chunk_root_generation: U64,
    pub compat_flags: U64,
    pub compat_ro_flags: U64,
    pub incompat_flags: U64,
    pub csum_type: U16,
    pub root_level: u8,
    pub chunk_root_level: u8,
    pub log_root_level: u8,
    /// The device this copy is on.
    pub dev_item: DevItem,
    pub label: [u8; BTRFS_LABEL_SIZE],
    pub cache_generation: U64,
    pub uuid_tree_generation: U64,
    pub metadata_uuid: [u8; BTRFS_UUID_SIZE],
    pub nr_global_roots: U64,
    pub reserved: [U64; 27],
    pub sys_chunk_array: [u8; BTRFS_SYSTEM_CHUNK_ARRAY_SIZE],
    pub super_roots: [[u8; ROOT_BACKUP_SIZE]; 4],
    pub padding: [u8; 565],
}

/// `btrfs_inode_item`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct InodeItem {
    pub generation: U64,
    pub transid: U64,
    pub size: U64,
    pub nbytes: U64,
    pub block_group: U64,
    pub nlink: U32,
    pub uid: U32,
    pub gid: U32,
    pub mode: U32,
    pub rdev: U64,
    pub flags: U64,
    pub sequence: U64,
    pub reserved: [U64; 4],
    pub atime: Timespec,
    pub ctime: Timespec,
    pub mtime: Timespec,
    pub otime: Timespec,
}

impl InodeItem {
    /// The four times, in on-disk order.
    pub fn times_mut(&mut self) -> [&mut Timespec; 4] {
        [
            &mut self.atime,
            &mut self.ctime,
            &mut self.mtime,
            &mut self.otime,
        ]
    }
}

/// `btrfs_root_item` as older kernels wrote it (the "legacy" size): where
/// a tree is and, for subvolumes, its root directory and flags.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RootItem {
    pub inode: InodeItem,
    pub generation: U64,
    pub root_dirid: U64,
    pub bytenr: U64,
    pub byte_limit: U64,
    pub bytes_used: U64,
    pub last_snapshot: U64,
    pub flags: U64,
    pub refs: U32,
    pub drop_progress: DiskKey,
    pub drop_level: u8,
    pub level: u8,
}

/// The fields of `btrfs_root_item` that follow [`RootItem`] in the
/// extended format, up to `rtime` (64 reserved bytes follow on disk).
/// They are valid only when `generation_v2` equals the generation.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RootItemExtended {
    pub generation_v2: U64,
    pub uuid: [u8; BTRFS_UUID_SIZE],
    pub parent_uuid: [u8; BTRFS_UUID_SIZE],
    pub received_uuid: [u8; BTRFS_UUID_SIZE],
    pub ctransid: U64,
    pub otransid: U64,
    pub stransid: U64,
    pub rtransid: U64,
    pub ctime: Timespec,
    pub otime: Timespec,
    pub stime: Timespec,
    pub rtime: Timespec,
}

/// `btrfs_root_item` in the extended format.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RootItemV2 {
    pub base: RootItem,
    pub ext: RootItemExtended,
}

impl RootItemV2 {
    /// Whether the extended fields are valid: the kernel trusts them only
    /// when both generations agree.
    pub fn extended_valid(&self) -> bool {
        self.ext.generation_v2.get() == self.base.generation.get()
    }

    /// The root item in `data` with its extended fields, when it has them
    /// and they are valid.
    pub fn extended(data: &[u8]) -> Option<&RootItemV2> {
        let (item, _) = RootItemV2::ref_from_prefix(data).ok()?;
        item.extended_valid().then_some(item)
    }

    /// [`RootItemV2::extended`], for editing.
    pub fn extended_mut(data: &mut [u8]) -> Option<&mut RootItemV2> {
        let (item, _) = RootItemV2::mut_from_prefix(data).ok()?;
        item.extended_valid().then_some(item)
    }
}

/// `btrfs_dir_item`, followed by `name_len` bytes of name and `data_len`
/// bytes of data (the value, for xattrs).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DirItem {
    pub location: DiskKey,
    pub transid: U64,
    pub data_len: U16,
    pub name_len: U16,
    pub file_type: u8,
}

/// `btrfs_inode_ref`, followed by `name_len` bytes of name.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct InodeRef {
    pub index: U64,
    pub name_len: U16,
}

/// `btrfs_inode_extref`, followed by `name_len` bytes of name.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct InodeExtref {
    pub parent_objectid: U64,
    pub index: U64,
    pub name_len: U16,
}

/// `btrfs_root_ref`, followed by `name_len` bytes of name.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RootRef {
    pub dirid: U64,
    pub sequence: U64,
    pub name_len: U16,
}

/// The start of `btrfs_file_extent_item`: for an inline extent the data
/// follows; other extents go on with where their data is.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct FileExtentItem {
    pub generation: U64,
    pub ram_bytes: U64,
    pub compression: u8,
    pub encryption: u8,
    pub other_encoding: U16,
    pub extent_type: u8,
}

/// `btrfs_chunk` without its stripes: `num_stripes` [`Stripe`]s follow.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Chunk {
    pub length: U64,
    pub owner: U64,
    pub stripe_len: U64,
    pub chunk_type: U64,
    pub io_align: U32,
    pub io_width: U32,
    pub sector_size: U32,
    pub num_stripes: U16,
    pub sub_stripes: U16,
}

/// `btrfs_stripe`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct Stripe {
    pub devid: U64,
    pub offset: U64,
    pub dev_uuid: [u8; BTRFS_UUID_SIZE],
}

/// `btrfs_dev_extent`: which chunk a range of the device holds.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DevExtent {
    pub chunk_tree: U64,
    pub chunk_objectid: U64,
    pub chunk_offset: U64,
    pub length: U64,
    pub chunk_tree_uuid: [u8; BTRFS_UUID_SIZE],
}

/// `btrfs_extent_item` (references follow).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ExtentItem {
    pub refs: U64,
    pub generation: U64,
    pub flags: U64,
}

// The kernel's sizes (`sizeof` of the packed structs).
const _: () = {
    use std::mem::size_of;
    assert!(size_of::<DiskKey>() == 17);
    assert!(size_of::<Timespec>() == 12);
    assert!(size_of::<Header>() == 101);
    assert!(size_of::<Item>() == 25);
    assert!(size_of::<KeyPtr>() == 33);
    assert!(size_of::<DevItem>() == 98);
    assert!(size_of::<SuperBlock>() == 4096);
    assert!(size_of::<InodeItem>() == 160);
    assert!(size_of::<RootItem>() == 239);
    assert!(size_of::<RootItemV2>() + 64 == 439);
    assert!(size_of::<DirItem>() == 30);
    assert!(size_of::<InodeRef>() == 10);
    assert!(size_of::<InodeExtref>() == 18);
    assert!(size_of::<RootRef>() == 18);
    assert!(size_of::<FileExtentItem>() == 21);
    assert!(size_of::<Chunk>() == 48);
    assert!(size_of::<Stripe>() == 32);
    assert!(size_of::<DevExtent>() == 48);
    assert!(size_of::<ExtentItem>() == 24);
};

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    /// Offsets that `btrfs inspect-internal dump-super` and the kernel's
    /// headers agree on; a field out of order moves one of them.
    #[test]
    fn offsets_match_the_kernel() {
        assert_eq!(offset_of!(SuperBlock, magic), 0x40);
        assert_eq!(offset_of!(SuperBlock, log_root), 0x60);
        assert_eq!(offset_of!(SuperBlock, csum_type), 0xc4);
        assert_eq!(offset_of!(SuperBlock, dev_item), 0xc9);
        assert_eq!(offset_of!(SuperBlock, label), 0x12b);
        assert_eq!(offset_of!(SuperBlock, metadata_uuid), 0x23b);
        assert_eq!(offset_of!(SuperBlock, sys_chunk_array), 0x32b);
        assert_eq!(offset_of!(SuperBlock, super_roots), 0xb2b);
        assert_eq!(offset_of!(Header, chunk_tree_uuid), 0x40);
        assert_eq!(offset_of!(Header, owner), 0x58);
        assert_eq!(offset_of!(Header, level), 0x64);
        assert_eq!(offset_of!(InodeItem, uid), 44);
        assert_eq!(offset_of!(InodeItem, atime), 112);
        assert_eq!(
            offset_of!(RootItemV2, ext) + offset_of!(RootItemExtended, uuid),
            247
        );
        assert_eq!(
            offset_of!(RootItemV2, ext) + offset_of!(RootItemExtended, ctime),
            327
        );
    }
}

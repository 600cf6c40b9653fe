//! The squashfs 4.0 on-disk structures, each described once.
//!
//! Little-endian `#[repr(C)]` structs with the field names and order of
//! the kernel's `fs/squashfs/squashfs_fs.h`; `zerocopy` checks that each
//! has no padding and any bytes are a value, and the assertions below pin
//! each size to the format's.

use zerocopy::little_endian::{I16, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `SQUASHFS_MAGIC` ("hsqs").
pub(crate) const MAGIC: u32 = 0x7371_7368;
/// Bytes a metadata block holds uncompressed, at most.
pub(crate) const METADATA_SIZE: usize = 8192;
/// The bit of a metadata block's 2-byte header that says it is stored
/// uncompressed; the other 15 bits are its length on disk.
pub(crate) const METADATA_UNCOMPRESSED: u16 = 0x8000;
/// A table start that says the table is absent.
pub(crate) const INVALID_BLK: u64 = u64::MAX;
/// An inode's `xattr` index that says it has none.
pub(crate) const INVALID_XATTR: u32 = u32::MAX;
/// An xattr type bit: the value is stored elsewhere, this one a reference.
pub(crate) const XATTR_VALUE_OOL: u16 = 0x100;
/// The three bytes a directory's size counts beyond its listing (for
/// `.` and `..`, which the listing does not hold).
pub(crate) const DIR_SIZE_EXTRA: u32 = 3;

/// `squashfs_super_block`, at byte 0.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SuperBlock {
    pub s_magic: U32,
    pub inodes: U32,
    pub mkfs_time: U32,
    pub block_size: U32,
    pub fragments: U32,
    /// 1 gzip, 2 lzma, 3 lzo, 4 xz, 5 lz4, 6 zstd.
    pub compression: U16,
    pub block_log: U16,
    pub flags: U16,
    pub no_ids: U16,
    pub s_major: U16,
    pub s_minor: U16,
    /// Reference ([`split_ref`]) of the root directory's inode.
    pub root_inode: U64,
    pub bytes_used: U64,
    pub id_table_start: U64,
    pub xattr_id_table_start: U64,
    pub inode_table_start: U64,
    pub directory_table_start: U64,
    pub fragment_table_start: U64,
    pub lookup_table_start: U64,
}

/// `squashfs_base_inode`: the start of every inode.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct BaseInode {
    /// [`InodeType`].
    pub inode_type: U16,
    /// Permission bits (the type is `inode_type`'s).
    pub mode: U16,
    /// Index into the id table.
    pub uid: U16,
    /// Index into the id table.
    pub guid: U16,
    pub mtime: U32,
    pub inode_number: U32,
}

/// `squashfs_dir_inode` after the base.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DirInode {
    pub start_block: U32,
    pub nlink: U32,
    pub file_size: U16,
    pub offset: U16,
    pub parent_inode: U32,
}

/// `squashfs_ldir_inode` after the base (its index entries follow).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct LdirInode {
    pub nlink: U32,
    pub file_size: U32,
    pub start_block: U32,
    pub parent_inode: U32,
    pub i_count: U16,
    pub offset: U16,
    pub xattr: U32,
}

/// `squashfs_reg_inode` after the base (its block list follows).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RegInode {
    pub start_block: U32,
    pub fragment: U32,
    pub offset: U32,
    pub file_size: U32,
}

/// `squashfs_lreg_inode` after the base (its block list follows).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct LregInode {
    pub start_block: U64,
    pub file_size: U64,
    pub sparse: U64,
    pub nlink: U32,
    pub fragment: U32,
    pub offset: U32,
    pub xattr: U32,
}

/// `squashfs_symlink_inode` after the base: the target follows, then
/// (extended symlinks) a `U32` xattr index.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct SymlinkInode {
    pub nlink: U32,
    pub symlink_size: U32,
}

/// `squashfs_dev_inode` after the base (extended: a `U32` xattr follows).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DevInode {
    pub nlink: U32,
    /// The kernel's `new_encode_dev` form.
    pub rdev: U32,
}

/// `squashfs_ipc_inode` after the base (extended: a `U32` xattr follows).
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct IpcInode {
    pub nlink: U32,
}

/// `squashfs_dir_header`: a run of entries whose inodes share a block.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DirHeader {
    /// Entries in the run, minus one.
    pub count: U32,
    /// The inode table block of the run's inodes.
    pub start_block: U32,
    pub inode_number: U32,
}

/// `squashfs_dir_entry`: the name (`size + 1` bytes) follows.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct DirEntry {
    /// Offset of the inode in its uncompressed block.
    pub offset: U16,
    pub inode_number: I16,
    pub entry_type: U16,
    /// Name length minus one.
    pub size: U16,
}

/// `squashfs_xattr_id_table`, at `xattr_id_table_start`: the index of
/// the blocks of [`XattrId`]s follows.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrIdTable {
    pub xattr_table_start: U64,
    pub xattr_ids: U32,
    pub unused: U32,
}

/// `squashfs_xattr_id`: where an inode's name/value pairs are.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrId {
    /// Reference into the xattr table ([`split_ref`]).
    pub xattr: U64,
    pub count: U32,
    pub size: U32,
}

/// `squashfs_xattr_entry`: the name (without prefix) follows.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrEntry {
    /// Prefix (0 user, 1 trusted, 2 security), and [`XATTR_VALUE_OOL`].
    pub xattr_type: U16,
    pub size: U16,
}

/// `squashfs_xattr_val`: the value follows.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct XattrVal {
    pub vsize: U32,
}

const _: () = assert!(size_of::<SuperBlock>() == 96);
const _: () = assert!(size_of::<BaseInode>() == 16);
const _: () = assert!(size_of::<DirInode>() == 16);
const _: () = assert!(size_of::<LdirInode>() == 24);
const _: () = assert!(size_of::<RegInode>() == 16);
const _: () = assert!(size_of::<LregInode>() == 40);
const _: () = assert!(size_of::<SymlinkInode>() == 8);
const _: () = assert!(size_of::<DevInode>() == 8);
const _: () = assert!(size_of::<IpcInode>() == 4);
const _: () = assert!(size_of::<DirHeader>() == 12);
const _: () = assert!(size_of::<DirEntry>() == 8);
const _: () = assert!(size_of::<XattrIdTable>() == 16);
const _: () = assert!(size_of::<XattrId>() == 16);
const _: () = assert!(size_of::<XattrEntry>() == 4);
const _: () = assert!(size_of::<XattrVal>() == 4);

/// A metadata reference: the block's byte offset from its table's start
/// (bits 16–47) and the offset in the uncompressed block (bits 0–15).
pub(crate) fn split_ref(r: u64) -> (u64, usize) {
    (r >> 16, (r & 0xFFFF) as usize)
}

/// The inode types (`SQUASHFS_*_TYPE`), basic and extended (`L*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InodeType {
    Dir,
    File,
    Symlink,
    Blk,
    Chr,
    Fifo,
    Socket,
}

impl InodeType {
    /// The type and whether it is the extended form.
    pub fn of(t: u16) -> Option<(InodeType, bool)> {
        if !(1..=14).contains(&t) {
            return None;
        }
        let kind = match (t - 1) % 7 {
            0 => InodeType::Dir,
            1 => InodeType::File,
            2 => InodeType::Symlink,
            3 => InodeType::Blk,
            4 => InodeType::Chr,
            5 => InodeType::Fifo,
            _ => InodeType::Socket,
        };
        Some((kind, t > 7))
    }

    /// The `S_IF*` bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            InodeType::Dir => 0o040000,
            InodeType::File => 0o100000,
            InodeType::Symlink => 0o120000,
            InodeType::Blk => 0o060000,
            InodeType::Chr => 0o020000,
            InodeType::Fifo => 0o010000,
            InodeType::Socket => 0o140000,
        }
    }
}

//! The error type of the readers and the writer.

use std::io;
use std::path::PathBuf;

/// Why an image could not be read or patched. Readers never panic on a
/// malformed image: every fault they find is one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image file could not be opened.
    #[error("opening {}: {source}", path.display())]
    Open {
        /// The image as the caller named it.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the image failed.
    #[error("{what} at byte {offset}: {source}")]
    Io {
        /// The structure being read or written.
        what: &'static str,
        /// Its byte offset in the image.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The image ends inside a structure it must hold.
    #[error("the image is truncated: the {what} at byte {offset} ({len} bytes) lies past its end")]
    Truncated {
        /// The structure.
        what: &'static str,
        /// Its byte offset.
        offset: u64,
        /// Its length.
        len: usize,
    },
    /// No erofs magic at byte 1024.
    #[error("not an erofs image (no magic 0xE0F5E1E2 at byte 1024)")]
    NotErofs,
    /// The superblock's CRC32C does not match its block.
    #[error("erofs superblock checksum mismatch: it says {stored:#010x}, the block gives {computed:#010x}")]
    SuperblockChecksum {
        /// The checksum in the superblock.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A block size this reader does not take.
    #[error("erofs block size 2^{bits} is not supported (2^9 to 2^16 are)")]
    BlockSize {
        /// `blkszbits`.
        bits: u8,
    },
    /// Incompatible features this reader does not implement.
    #[error("incompatible features {bits:#x} are not supported by this reader")]
    Features {
        /// The unknown `feature_incompat` bits.
        bits: u32,
    },
    /// An inode whose mode is not a file type.
    #[error("erofs inode {nid} has mode {mode:#o}, which is no file type")]
    BadMode {
        /// The inode.
        nid: u64,
        /// Its mode.
        mode: u32,
    },
    /// An inode whose data layout this reader cannot read where it must
    /// (a directory's entries or a symlink's target).
    #[error("erofs inode {nid}: data layout {layout} is not supported for a {kind}")]
    Layout {
        /// The inode.
        nid: u64,
        /// `i_format` bits 1–3.
        layout: u16,
        /// Directory or symlink.
        kind: &'static str,
    },
    /// A directory or symlink larger than a reader reads into memory.
    #[error("erofs inode {nid} holds {size} bytes of metadata, more than the {limit} read")]
    TooLarge {
        /// The inode.
        nid: u64,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A directory block whose entries are malformed.
    #[error("erofs directory inode {nid}, block {block}: {fault}")]
    BadDirectory {
        /// The directory.
        nid: u64,
        /// The block of its data.
        block: u64,
        /// What is wrong.
        fault: DirFault,
    },
    /// A directory reachable from itself.
    #[error("directory inode {nid} is reached twice (a directory loop)")]
    DirectoryLoop {
        /// The directory.
        nid: u64,
    },
    /// Inline xattrs that do not fit their inode's xattr area.
    #[error("erofs inode {nid}: its xattrs run past the {len} bytes the inode gives them")]
    XattrOverrun {
        /// The inode.
        nid: u64,
        /// The size of the xattr area.
        len: usize,
    },
    /// An xattr name index with no known prefix.
    #[error("erofs inode {nid}: xattr name index {index} is not known")]
    XattrIndex {
        /// The inode.
        nid: u64,
        /// The index.
        index: u8,
    },
    /// A patch names a path the image does not hold.
    #[error("{} is not in the erofs image", String::from_utf8_lossy(path))]
    NotFound {
        /// The path.
        path: Vec<u8>,
    },
    /// A patch would change an inode's file type, or sets bits outside a
    /// 16-bit mode.
    #[error("{}: mode {mode:#o} would change its type {was:#o} (set permission bits only)", named(path, *nid))]
    ModeType {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
        /// Its current mode.
        was: u32,
        /// The mode of the patch.
        mode: u32,
    },
    /// An owner a compact (32-byte) inode cannot hold: it has 16-bit
    /// ids, and an inode cannot grow in place.
    #[error("{} would be owned by {id}, which its compact erofs inode cannot hold (16-bit ids): make the image with extended inodes (mkfs.erofs -Eforce-inode-extended)", named(path, *nid))]
    IdTooWide {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
        /// The uid or gid.
        id: u32,
    },
    /// A patch would make a device node of an inode that is not the FIFO
    /// staged for it.
    #[error("{}: mode {mode:#o} is not a FIFO, so it is not the placeholder of a device node (stage the device as a FIFO)", named(path, *nid))]
    NotFifo {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
        /// Its mode.
        mode: u32,
    },
    /// A device number erofs cannot hold (`new_encode_dev`: a 12-bit
    /// major, a 20-bit minor).
    #[error("{}: device {major}:{minor} does not fit erofs's 32-bit device number (major at most 4095, minor at most 1048575)", named(path, *nid))]
    DeviceTooWide {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
        /// The major number.
        major: u32,
        /// The minor number.
        minor: u32,
    },
    /// No directory entry names an inode a patch turns into a device node
    /// (an image where the inode is not reached from the root).
    #[error("{}: no directory entry names it, so its file type cannot be set", named(path, *nid))]
    DirentMissing {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
    },
    /// A patch renames a `user.` xattr the inode does not have.
    #[error("{}: it has no xattr user.{} to turn into security.{1} (stage it as user.{1})", named(path, *nid), String::from_utf8_lossy(suffix))]
    XattrAbsent {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
        /// The name's suffix.
        suffix: Vec<u8>,
    },
    /// A renamed xattr lies in the shared xattr area, and an inode the
    /// patches do not rename it for shares it.
    #[error("{}: its xattr user.{} is shared with erofs inode {other}, which no patch renames it for: patch every inode that carries it, or none", named(path, *nid), String::from_utf8_lossy(suffix))]
    SharedXattr {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
        /// The name's suffix.
        suffix: Vec<u8>,
        /// An inode sharing the entry that no patch renames it for.
        other: u64,
    },
    /// A renamed xattr lies in the shared xattr area of an image made by
    /// erofs-utils 1.7 or later (it has the name filter), which orders
    /// that area by full name: `security.` sorts elsewhere than `user.`,
    /// so the area, and every inode's ids into it, would have to move.
    #[error("{}: its xattr user.{} is in the shared xattr area, where security.{1} would sort elsewhere (erofs-utils 1.7 and later order it by full name); the writer does not move shared entries", named(path, *nid), String::from_utf8_lossy(suffix))]
    SharedXattrOrder {
        /// The patch's path, if it named one.
        path: Option<Vec<u8>>,
        /// The inode.
        nid: u64,
        /// The name's suffix.
        suffix: Vec<u8>,
    },
    /// An inode's xattr name filter is not the one its names give, so the
    /// writer cannot compute it again after renaming one.
    #[error("erofs inode {nid}: its xattr name filter is {stored:#010x}, but its names give {computed:#010x}")]
    XattrFilter {
        /// The inode.
        nid: u64,
        /// The filter in the image.
        stored: u32,
        /// The filter of its names.
        computed: u32,
    },
    /// No squashfs magic at byte 0.
    #[error("not a squashfs image (no magic \"hsqs\" at byte 0)")]
    NotSquashfs,
    /// A squashfs version other than 4.0.
    #[error("squashfs {major}.{minor} is not read (4.0 is)")]
    SquashfsVersion {
        /// `s_major`.
        major: u16,
        /// `s_minor`.
        minor: u16,
    },
    /// Metadata compressed with a compressor this reader lacks.
    #[error("the squashfs metadata is compressed with {name} (id {id}), which this reader does not decompress (gzip, xz, lz4 and zstd)")]
    Compressor {
        /// mksquashfs's name.
        name: &'static str,
        /// The superblock's id.
        id: u16,
    },
    /// A block that does not decompress.
    #[error("the {compressor} block at byte {offset} does not decompress: {source}")]
    Decompress {
        /// The compressor.
        compressor: &'static str,
        /// The block's byte offset.
        offset: u64,
        /// What the decompressor said.
        #[source]
        source: io::Error,
    },
    /// A metadata block header with no length or more than 8 KiB.
    #[error("the squashfs metadata block at byte {offset} claims {len} bytes")]
    MetadataBlock {
        /// Its byte offset.
        offset: u64,
        /// Its length.
        len: u16,
    },
    /// A metadata reference past its block.
    #[error(
        "a squashfs metadata reference points past its block (block {block}, offset {offset})"
    )]
    MetadataRef {
        /// The block.
        block: u64,
        /// The offset in it.
        offset: usize,
    },
    /// An inode type that is none of the 14.
    #[error("squashfs inode type {kind} is not one of 1-14")]
    InodeType {
        /// The type.
        kind: u16,
    },
    /// An owner index past the id table.
    #[error("squashfs id index {index} is past the {count} ids of the table")]
    IdIndex {
        /// The index.
        index: u16,
        /// Ids in the table.
        count: usize,
    },
    /// A symlink target longer than Linux makes.
    #[error("a squashfs symlink target of {len} bytes (longer than 4096)")]
    TargetTooLong {
        /// Its length.
        len: u32,
    },
    /// A malformed directory listing.
    #[error("a squashfs directory listing is malformed: {fault}")]
    BadListing {
        /// What is wrong.
        fault: &'static str,
    },
    /// An xattr id past the xattr id table.
    #[error("squashfs xattr id {index} is past the table's {count}")]
    XattrIdIndex {
        /// The index.
        index: u32,
        /// Ids in the table.
        count: u32,
    },
    /// An xattr prefix type other than user, trusted, security.
    #[error("squashfs xattr type {kind} is not user (0), trusted (1) or security (2)")]
    XattrType {
        /// The type.
        kind: u16,
    },
    /// An xattr value larger than Linux allows, or a bad reference.
    #[error("a squashfs xattr value of {len} bytes")]
    XattrValueSize {
        /// Its length.
        len: u32,
    },
    /// No ext4 magic in the superblock at byte 1024.
    #[error("not an ext2/3/4 image (no magic 0xEF53 in the superblock at byte 1024)")]
    NotExt4,
    /// The ext4 superblock's CRC32C does not match it.
    #[error("ext4 superblock checksum mismatch: it says {stored:#010x}, its bytes give {computed:#010x}")]
    Ext4SuperblockChecksum {
        /// The checksum in the superblock.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A block size, inode size or group size that is not ext4's.
    #[error(
        "the ext4 superblock's block size, inode size or inodes per group is not one ext4 makes"
    )]
    Ext4Geometry,
    /// An inode number outside the filesystem.
    #[error("ext4 inode {ino} is outside the filesystem")]
    Ext4Inode {
        /// The inode.
        ino: u32,
    },
    /// Data stored in a way this reader does not read.
    #[error("ext4 inode {ino}: its data is inline, block-mapped or in an xattr inode, which this reader does not read")]
    Ext4Layout {
        /// The inode.
        ino: u32,
    },
    /// A malformed extent tree.
    #[error("ext4 inode {ino}: its extent tree is malformed")]
    Ext4Extents {
        /// The inode.
        ino: u32,
    },
    /// A malformed directory record.
    #[error("ext4 directory inode {ino}: the record at byte {at} is malformed")]
    Ext4Directory {
        /// The directory.
        ino: u32,
        /// Byte offset of the record in the directory's data.
        at: usize,
    },
    /// Malformed xattrs.
    #[error("ext4 inode {ino}: its xattrs are malformed")]
    Ext4Xattr {
        /// The inode.
        ino: u32,
    },
}

/// What is wrong with a directory block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirFault {
    /// The first name offset does not leave room for whole entries.
    #[error("the first name offset {0} is not a multiple of 12 within the block")]
    FirstNameOffset(u16),
    /// A name starts after the next one or past the block.
    #[error("entry {0}: its name lies outside the block")]
    NameOffset(usize),
    /// An empty name, one longer than 255 bytes, or one holding `/` or NUL.
    #[error("entry {0}: the name is empty, longer than 255 bytes or holds '/'")]
    BadName(usize),
}

/// A patched inode in words: its path, or its nid.
fn named(path: &Option<Vec<u8>>, nid: u64) -> String {
    match path {
        Some(p) => String::from_utf8_lossy(p).into_owned(),
        None => format!("erofs inode {nid}"),
    }
}

//! An opened image: superblock, chunk map and the roots of its trees.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::chunk::{Chunk, ChunkMap};
use super::error::ReadError;
use super::format::*;
use super::items::RootItem;
use super::superblock::{ChecksumType, Superblock};
use super::tree::{BlockReader, TreeRoot};

/// Facts about the filesystem, from its superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    /// The label (`mkfs.btrfs -L`), empty when unset.
    pub label: String,
    /// The filesystem UUID (`mkfs.btrfs -U`), as `xxxxxxxx-xxxx-…`.
    pub fsid: String,
    /// The UUID in tree block headers, when it differs from `fsid`
    /// (the metadata_uuid feature).
    pub metadata_uuid: Option<String>,
    /// Size of a tree block.
    pub nodesize: u32,
    /// Size of a data block.
    pub sectorsize: u32,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Bytes allocated to data and metadata.
    pub bytes_used: u64,
    /// Generation (transaction id) of the last commit.
    pub generation: u64,
    /// Checksum algorithm.
    pub csum_type: ChecksumType,
    /// Number of devices of the filesystem (this reader handles 1).
    pub num_devices: u64,
    /// Device id of the device in the image.
    pub devid: u64,
    /// `BTRFS_FEATURE_INCOMPAT_*` bits.
    pub incompat_flags: u64,
    /// `BTRFS_FEATURE_COMPAT_RO_*` bits.
    pub compat_ro_flags: u64,
}

/// One tree block, as listed by [`Image::tree_blocks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeBlock {
    /// Logical address.
    pub logical: u64,
    /// Level (0: leaf).
    pub level: u8,
    /// Key of its first item (leaf) or pointer (node); `None` when empty.
    pub first_key: Option<Key>,
}

/// A btrfs image file opened for reading.
///
/// Opening reads and verifies the superblock, the system chunk array and
/// the chunk tree. Later calls read tree blocks on demand, verifying each
/// the first time it is read, and keep recently used blocks in memory.
/// Nothing is ever written.
///
/// ```no_run
/// use rootbox_btrfs::Image;
/// let image = Image::open("disk.img".as_ref())?;
/// for sv in image.subvolumes()? {
///     image.walk(sv.id, &mut |e| {
///         println!("{} {:o} {}:{}", String::from_utf8_lossy(&e.path), e.mode, e.uid, e.gid);
///         Ok(())
///     })?;
/// }
/// # Ok::<(), rootbox_btrfs::ReadError>(())
/// ```
pub struct Image {
    pub(crate) sb: Superblock,
    info: FsInfo,
    pub(crate) blocks: BlockReader,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Image {
    /// Open the image at `path` (a file holding one btrfs device).
    ///
    /// Fails with [`ReadError::NotBtrfs`] when there is no superblock,
    /// [`ReadError::BadSuperblockChecksum`],
    /// [`ReadError::UnsupportedChecksum`], or any error reading the chunk tree.
    pub fn open(path: &Path) -> Result<Image, ReadError> {
        Image::open_at(path, 0)
    }

    /// Open the filesystem that starts `base` bytes into the file at
    /// `path` (a partition of a disk image); offsets in errors are
    /// relative to `base`.
    pub fn open_at(path: &Path, base: u64) -> Result<Image, ReadError> {
        let io_err = |offset: u64, source: io::Error| ReadError::Io {
            path: path.to_path_buf(),
            offset,
            source,
        };
        let file = File::open(path).map_err(|e| io_err(0, e))?;
        let mut buf = vec![0u8; BTRFS_SUPER_INFO_SIZE];
        match file.read_exact_at(&mut buf, base + BTRFS_SUPER_INFO_OFFSET) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ReadError::NotBtrfs),
            Err(e) => return Err(io_err(BTRFS_SUPER_INFO_OFFSET, e)),
        }
        let sb = Superblock::parse(&buf)?;
        if sb.num_devices != 1 {
            return Err(ReadError::Unsupported(format!(
                "filesystem spans {} devices; only single-device images can be read",
                sb.num_devices
            )));
        }

        let sys_chunks = ChunkMap::from_sys_chunk_array(&sb.sys_chunk_array)?;
        let mut blocks = BlockReader::new(
            file,
            base,
            PathBuf::from(path),
            sb.nodesize,
            sb.devid,
            sb.metadata_fsid,
            sb.csum_type,
            sys_chunks.clone(),
        );
        let chunk_root = TreeRoot {
            bytenr: sb.chunk_root,
            level: sb.chunk_root_level,
            generation: sb.chunk_root_generation,
        };
        let mut chunks = sys_chunks;
        let first = Key::new(BTRFS_FIRST_CHUNK_TREE_OBJECTID, BTRFS_CHUNK_ITEM_KEY, 0);
        let last = Key::new(
            BTRFS_FIRST_CHUNK_TREE_OBJECTID,
            BTRFS_CHUNK_ITEM_KEY,
            u64::MAX,
        );
        blocks.range(&chunk_root, first, last, &mut |key, data| {
            chunks.insert(Chunk::read(
                key.offset,
                &mut Reader::new(data, "chunk item"),
            )?)?;
            Ok(ControlFlow::Continue(()))
        })?;
        blocks.set_chunks(chunks);

        let info = FsInfo {
            label: sb.label.clone(),
            fsid: format_uuid(&sb.fsid),
            metadata_uuid: (sb.metadata_fsid != sb.fsid).then(|| format_uuid(&sb.metadata_fsid)),
            nodesize: sb.nodesize,
            sectorsize: sb.sectorsize,
            total_bytes: sb.total_bytes,
            bytes_used: sb.bytes_used,
            generation: sb.generation,
            csum_type: sb.csum_type,
            num_devices: sb.num_devices,
            devid: sb.devid,
            incompat_flags: sb.incompat_flags,
            compat_ro_flags: sb.compat_ro_flags,
        };
        Ok(Image { sb, info, blocks })
    }

    /// Facts from the superblock.
    pub fn info(&self) -> &FsInfo {
        &self.info
    }

    /// The root tree (tree of tree roots).
    pub(crate) fn root_tree(&self) -> TreeRoot {
        TreeRoot {
            bytenr: self.sb.root,
            level: self.sb.root_level,
            generation: self.sb.generation,
        }
    }

    /// The root item of tree `tree_id`, if the root tree has one.
    pub(crate) fn root_item(&self, tree_id: u64) -> Result<Option<RootItem>, ReadError> {
        // Snapshots carry their creation transid in the key offset; take
        // the newest item of the id.
        let mut found = None;
        self.blocks.range(
            &self.root_tree(),
            Key::new(tree_id, BTRFS_ROOT_ITEM_KEY, 0),
            Key::new(tree_id, BTRFS_ROOT_ITEM_KEY, u64::MAX),
            &mut |_, data| {
                found = Some(data.to_vec());
                Ok(ControlFlow::Continue(()))
            },
        )?;
        found.map(|d| RootItem::parse(&d)).transpose()
    }

    /// Where tree `tree_id` starts (1: root tree, 3: chunk tree, 5: the
    /// top-level subvolume, 256 and up: other subvolumes, ...).
    pub fn tree_root(&self, tree_id: u64) -> Result<TreeRoot, ReadError> {
        match tree_id {
            BTRFS_ROOT_TREE_OBJECTID => Ok(self.root_tree()),
            BTRFS_CHUNK_TREE_OBJECTID => Ok(TreeRoot {
                bytenr: self.sb.chunk_root,
                level: self.sb.chunk_root_level,
                generation: self.sb.chunk_root_generation,
            }),
            _ => {
                let item = self
                    .root_item(tree_id)?
                    .ok_or(ReadError::NoSuchSubvolume(tree_id))?;
                Ok(TreeRoot {
                    bytenr: item.bytenr,
                    level: item.level,
                    generation: item.generation,
                })
            }
        }
    }

    /// Every block of tree `tree_id`, parents first, each verified.
    pub fn tree_blocks(&self, tree_id: u64) -> Result<Vec<TreeBlock>, ReadError> {
        let root = self.tree_root(tree_id)?;
        let mut out = Vec::new();
        self.blocks.visit_blocks(&root, &mut |node| {
            out.push(TreeBlock {
                logical: node.logical(),
                level: node.level(),
                first_key: node.first_key(),
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Byte offsets in the image file of every copy of the tree block at
    /// `logical` (two for DUP metadata).
    pub fn physical_copies(&self, logical: u64) -> Result<Vec<u64>, ReadError> {
        self.blocks.physical_copies(logical)
    }
}

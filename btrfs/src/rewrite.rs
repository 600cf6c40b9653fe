//! In-place rewrite of inode metadata in a btrfs image.
//!
//! [`Rewriter`] changes owner, group, permission bits, device numbers and
//! times of inodes, and clamps times to a `SOURCE_DATE_EPOCH`, by editing
//! fixed-offset fields of `btrfs_inode_item` and `btrfs_root_item` payloads
//! inside leaves. No key moves, no item changes size and no block is
//! relocated, so parent pointers, the extent tree and the superblock stay
//! valid; only the checksum of each edited leaf is recomputed.
//!
//! Safety rules:
//! - every leaf is read through the reader's verified path (checksum,
//!   address, fsid, level, generation, first key, item bounds), and before
//!   a leaf is first edited every physical copy of it is read and must be
//!   byte-identical to the verified one, so a corrupted copy is reported
//!   ([`ReadError::BadBlockChecksum`] or [`RewriteError::CopiesDiffer`])
//!   and never overwritten;
//! - the edit starts from the leaf's bytes as read from disk (not a
//!   re-serialization) and is written to every physical copy (two for DUP);
//! - leaves that a snapshot may share with another tree (by the kernel's
//!   rule: another owner, or a generation not above the tree's
//!   `last_snapshot`) are refused, as is a filesystem with a log tree or a
//!   checksum other than crc32c;
//! - nothing is written before [`Rewriter::commit`]; an error before it
//!   leaves the file untouched.
//!
//! ```no_run
//! use rootbox_btrfs::{InodeChange, Rewriter};
//! let mut rw = Rewriter::open("disk.img".as_ref())?;
//! for tree in rw.fs_tree_ids()? {
//!     rw.update_inodes(tree, &mut |inode| {
//!         (inode.uid == 65534).then(|| InodeChange { uid: Some(0), gid: Some(0), ..Default::default() })
//!     })?;
//! }
//! rw.clamp_times(1_700_000_000)?;
//! rw.commit()?;
//! # Ok::<(), rootbox_btrfs::RewriteError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::ReadError;
use super::format::*;
use super::image::Image;
use super::items::{InodeItem, InodeRef, RootItem, Timespec};
use super::reproducible::HeaderPatch;
use super::subvol::tree_root_of;
use super::superblock::ChecksumType;
use super::tree::TreeRoot;

/// Why a rewrite could not be done. Nothing has been written when any of
/// these is returned before [`Rewriter::commit`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// Reading or verifying the image failed (a corrupted block gives
    /// [`ReadError::BadBlockChecksum`] or [`ReadError::BadBlock`]).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The image file could not be opened for writing.
    #[error("opening {} for writing: {source}", path.display())]
    Open {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing (or syncing) the image file failed; the image may be
    /// partly rewritten.
    #[error("writing {} at byte {offset}: {source}", path.display())]
    Write {
        /// The image file.
        path: PathBuf,
        /// Byte offset of the failed write.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Only crc32c checksums are recomputed.
    #[error("cannot rewrite a filesystem with {0} checksums (only crc32c)")]
    UnsupportedChecksum(String),
    /// The image is in a state this rewriter does not handle (log tree
    /// present, leaves shared with a snapshot, ...).
    #[error("cannot rewrite: {0}")]
    Unsupported(String),
    /// Two physical copies of a block differ although one verifies.
    #[error("tree block at logical {logical}: copy at physical {physical} differs from the verified copy")]
    CopiesDiffer {
        /// Logical address of the block.
        logical: u64,
        /// Physical offset of the differing copy.
        physical: u64,
    },
    /// The UUID tree is more than one leaf: re-keying its items for new
    /// subvolume UUIDs would need a B-tree rebuild.
    #[error("the UUID tree has {levels} levels (a single leaf is required to re-key it)")]
    UuidTreeTooLarge {
        /// Levels of the UUID tree (1: a single leaf).
        levels: u8,
    },
    /// The callback asked for a change that is not allowed.
    #[error("inode {ino} of tree {tree}: {reason}")]
    InvalidChange {
        /// Tree (subvolume) id.
        tree: u64,
        /// Inode number.
        ino: u64,
        /// What is wrong.
        reason: String,
    },
}

impl RewriteError {
    /// Whether this is a checksum mismatch of a tree block.
    pub fn is_checksum_error(&self) -> bool {
        matches!(self, RewriteError::Read(ReadError::BadBlockChecksum { .. }))
    }
}

/// The times of an inode that a change sets (`None`: keep).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeTimes {
    /// Last access.
    pub atime: Option<Timespec>,
    /// Last content change.
    pub mtime: Option<Timespec>,
    /// Last inode change.
    pub ctime: Option<Timespec>,
    /// Creation (statx `btime`).
    pub otime: Option<Timespec>,
}

/// What to change in one inode; `None` fields are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InodeChange {
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New permission bits (`0o7777`: set-id and sticky bits included).
    /// Any bit outside `0o7777` is an [`RewriteError::InvalidChange`]:
    /// the file type never changes.
    pub mode: Option<u32>,
    /// New device number of a character or block device, in the stored
    /// (kernel) encoding; see [`encode_rdev`]. An error on other inodes.
    pub rdev: Option<u64>,
    /// New times.
    pub times: Option<InodeTimes>,
}

/// The stored device number of `major:minor` (the kernel's `MKDEV`:
/// `major << 20 | minor`), `None` when out of range (major < 4096,
/// minor < 2^20).
pub fn encode_rdev(major: u32, minor: u32) -> Option<u64> {
    (major < (1 << 12) && minor < (1 << 20)).then(|| (u64::from(major) << 20) | u64::from(minor))
}

/// One inode as [`Rewriter::update_inodes`] shows it to its callback
/// (values include changes made earlier through the same [`Rewriter`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeView<'a> {
    /// Inode number in its tree.
    pub ino: u64,
    /// One path of the inode relative to the subvolume root (`""` for the
    /// root directory): the name in its first inode reference, under the
    /// first name of each parent directory. `None` for an inode no
    /// directory names (an orphan awaiting deletion).
    pub path: Option<&'a [u8]>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Full `st_mode`, type bits included.
    pub mode: u32,
    /// Stored device number (`major << 20 | minor`).
    pub rdev: u64,
    /// Hard link count.
    pub nlink: u32,
    /// Last access.
    pub atime: Timespec,
    /// Last content change.
    pub mtime: Timespec,
    /// Last inode change.
    pub ctime: Timespec,
    /// Creation.
    pub otime: Timespec,
}

/// What one call changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// Inode items looked at.
    pub inodes: u64,
    /// Inode items whose bytes changed.
    pub inodes_changed: u64,
    /// Root items whose bytes changed.
    pub root_items_changed: u64,
    /// Distinct tree blocks edited by this call.
    pub blocks_changed: u64,
}

// Offsets inside `btrfs_inode_item`.
const INODE_ITEM_SIZE: usize = 160;
const INODE_UID: usize = 44;
const INODE_GID: usize = 48;
const INODE_MODE: usize = 52;
const INODE_RDEV: usize = 56;
const INODE_ATIME: usize = 112;
const INODE_CTIME: usize = 124;
const INODE_MTIME: usize = 136;
const INODE_OTIME: usize = 148;
/// The four inode times, in on-disk order.
const INODE_TIMES: [usize; 4] = [INODE_ATIME, INODE_CTIME, INODE_MTIME, INODE_OTIME];

// Offsets inside `btrfs_root_item` (which starts with a `btrfs_inode_item`).
const ROOT_GENERATION: usize = 160;
const ROOT_GENERATION_V2: usize = 239;
const ROOT_CTIME: usize = 327;
const ROOT_OTIME: usize = 339;
const ROOT_STIME: usize = 351;
const ROOT_RTIME: usize = 363;
const ROOT_EXTENDED_END: usize = ROOT_RTIME + 12;

// Offsets inside `btrfs_header`.
const HEADER_FLAGS: usize = 0x38;
const HEADER_OWNER: usize = 0x58;
/// `BTRFS_HEADER_FLAG_RELOC`: the block belongs to a relocation tree.
const BTRFS_HEADER_FLAG_RELOC: u64 = 1 << 1;
/// The tree holding relocated data (an inode 256 with mkfs's times).
const BTRFS_DATA_RELOC_TREE_OBJECTID: u64 = -9i64 as u64;
/// `btrfs_super_block::log_root`.
const SB_LOG_ROOT: usize = 0x60;

const S_IFMT: u32 = 0o170000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

/// Where a leaf is and what its parent promises about it.
#[derive(Clone, Copy, Debug)]
struct LeafLoc {
    logical: u64,
    generation: u64,
    first_key: Option<Key>,
}

/// An inode item found by a scan.
struct FoundInode {
    ino: u64,
    leaf: usize,
    start: usize,
    end: usize,
    item: InodeItem,
}

/// An item found by a scan of any tree.
struct FoundItem {
    key: Key,
    leaf: usize,
    start: usize,
    end: usize,
}

/// An image opened for an in-place rewrite of inode metadata.
///
/// Changes accumulate in memory (one copy of each edited leaf) and reach
/// the file only in [`Rewriter::commit`].
pub struct Rewriter {
    pub(super) image: Image,
    pub(super) file: File,
    pub(super) path: PathBuf,
    /// Edited tree blocks (leaves, and nodes edited by
    /// [`Rewriter::derive_uuids`]) by logical address.
    pub(super) dirty: BTreeMap<u64, Vec<u8>>,
    /// A chunk tree UUID to put into the header of every listed block at
    /// commit (set by [`Rewriter::derive_uuids`]; kept apart from `dirty`
    /// so that a header-only change does not hold every block in memory).
    pub(super) header_patch: Option<HeaderPatch>,
    /// Physical ranges (start, length) to fill with zeros at commit (set
    /// by [`Rewriter::zero_unused_space`]).
    pub(super) zero_ranges: BTreeMap<u64, u64>,
    /// Why an earlier call failed: its edits may be half done, so
    /// [`Rewriter::commit`] refuses.
    pub(super) failed: Option<String>,
}

impl std::fmt::Debug for Rewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rewriter")
            .field("path", &self.path)
            .field("dirty_blocks", &self.dirty.len())
            .finish_non_exhaustive()
    }
}

impl Rewriter {
    /// Open the image at `path` read-write and verify what the reader
    /// verifies on open (superblock, chunk tree).
    pub fn open(path: &Path) -> Result<Rewriter, RewriteError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| RewriteError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let image = match Image::open(path) {
            Err(ReadError::UnsupportedChecksum(name)) => {
                return Err(RewriteError::UnsupportedChecksum(name))
            }
            other => other?,
        };
        let csum = image.blocks.csum_type();
        if csum != ChecksumType::Crc32c {
            return Err(RewriteError::UnsupportedChecksum(csum.name().to_string()));
        }
        let mut sb = vec![0u8; BTRFS_SUPER_INFO_SIZE];
        image
            .blocks
            .read_physical(BTRFS_SUPER_INFO_OFFSET, &mut sb)?;
        let log_root = Reader::at(&sb, SB_LOG_ROOT, "superblock").u64()?;
        if log_root != 0 {
            return Err(RewriteError::Unsupported(format!(
                "the filesystem has a log tree (at {log_root}) to replay; mount it once first"
            )));
        }
        Ok(Rewriter {
            image,
            file,
            path: path.to_path_buf(),
            dirty: BTreeMap::new(),
            header_patch: None,
            zero_ranges: BTreeMap::new(),
            failed: None,
        })
    }

    /// The image as read (blocks edited but not committed are not seen
    /// through it).
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Ids of every subvolume tree with a live root item: 5 and those
    /// from 256 up, ascending.
    pub fn fs_tree_ids(&self) -> Result<Vec<u64>, RewriteError> {
        let mut ids = BTreeSet::new();
        let mut err = None;
        self.image.blocks.range(
            &self.image.root_tree(),
            Key::new(BTRFS_FS_TREE_OBJECTID, BTRFS_ROOT_ITEM_KEY, 0),
            Key::new(BTRFS_LAST_FREE_OBJECTID, BTRFS_ROOT_ITEM_KEY, u64::MAX),
            &mut |key, data| {
                let subvol = key.objectid == BTRFS_FS_TREE_OBJECTID
                    || key.objectid >= BTRFS_FIRST_FREE_OBJECTID;
                if subvol && key.item_type == BTRFS_ROOT_ITEM_KEY {
                    match RootItem::parse(data) {
                        Ok(item) if item.refs > 0 => {
                            ids.insert(key.objectid);
                        }
                        Ok(_) => {}
                        Err(e) => {
                            err = Some(e);
                            return Ok(ControlFlow::Break(()));
                        }
                    }
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if let Some(e) = err {
            return Err(e.into());
        }
        Ok(ids.into_iter().collect())
    }

    /// Change inodes of subvolume tree `tree_id`: `f` sees every inode
    /// item (in inode number order) and returns the change to make, or
    /// `None`. A change that would leave the bytes as they are is not a
    /// change. Nothing is written until [`Rewriter::commit`].
    ///
    /// Every requested change is checked before any is made; after an
    /// error, [`Rewriter::commit`] refuses to write.
    pub fn update_inodes(
        &mut self,
        tree_id: u64,
        f: &mut dyn FnMut(&InodeView<'_>) -> Option<InodeChange>,
    ) -> Result<RewriteStats, RewriteError> {
        let result = self.update_inodes_inner(tree_id, f);
        self.note_failure(result)
    }

    fn update_inodes_inner(
        &mut self,
        tree_id: u64,
        f: &mut dyn FnMut(&InodeView<'_>) -> Option<InodeChange>,
    ) -> Result<RewriteStats, RewriteError> {
        let (root, root_item) = self.fs_tree(tree_id)?;
        let (leaves, inodes, names) = self.scan_fs_tree(&root)?;
        let paths = inode_paths(root_item.root_dirid, &inodes, &names)?;

        let mut stats = RewriteStats {
            inodes: inodes.len() as u64,
            ..RewriteStats::default()
        };
        let mut edits = Vec::new();
        for (n, found) in inodes.iter().enumerate() {
            let it = &found.item;
            let view = InodeView {
                ino: found.ino,
                path: paths[n].as_deref(),
                uid: it.uid,
                gid: it.gid,
                mode: it.mode,
                rdev: it.rdev,
                nlink: it.nlink,
                atime: it.atime,
                mtime: it.mtime,
                ctime: it.ctime,
                otime: it.otime,
            };
            if let Some(change) = f(&view) {
                check_change(tree_id, found.ino, it.mode, &change)?;
                edits.push((n, change));
            }
        }
        let mut touched = BTreeSet::new();
        for (n, change) in edits {
            let found = &inodes[n];
            let loc = leaves[found.leaf];
            let mut item = self.current_bytes(&loc, found.start, found.end)?;
            apply_change(&mut item, &change);
            if self.edit_item(&loc, found.start, &item, Some((tree_id, &root_item)))? {
                stats.inodes_changed += 1;
                touched.insert(loc.logical);
            }
        }
        stats.blocks_changed = touched.len() as u64;
        Ok(stats)
    }

    /// Clamp every time later than `epoch` (seconds; `SOURCE_DATE_EPOCH`)
    /// down to `epoch`: atime, mtime, ctime and otime of every inode of
    /// every subvolume tree and of the root tree, and ctime, otime, stime,
    /// rtime (and the embedded inode's times) of every root item.
    ///
    /// The data relocation tree's inode is clamped too. After an error,
    /// [`Rewriter::commit`] refuses to write.
    pub fn clamp_times(&mut self, epoch: i64) -> Result<RewriteStats, RewriteError> {
        let result = self.clamp_times_inner(epoch);
        self.note_failure(result)
    }

    pub(super) fn note_failure<T>(
        &mut self,
        result: Result<T, RewriteError>,
    ) -> Result<T, RewriteError> {
        if let Err(e) = &result {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        result
    }

    fn clamp_times_inner(&mut self, epoch: i64) -> Result<RewriteStats, RewriteError> {
        let limit = Timespec {
            sec: epoch,
            nsec: 0,
        };
        let clamp = |buf: &mut [u8], offsets: &[usize]| {
            for &off in offsets {
                let t = read_time(buf, off);
                if t > limit {
                    write_time(buf, off, limit);
                }
            }
        };
        let mut stats = RewriteStats::default();
        let mut touched = BTreeSet::new();
        let mut trees = self.fs_tree_ids()?;
        if self
            .image
            .root_item(BTRFS_DATA_RELOC_TREE_OBJECTID)?
            .is_some()
        {
            trees.push(BTRFS_DATA_RELOC_TREE_OBJECTID);
        }
        for tree_id in trees {
            let (root, root_item) = self.any_tree(tree_id)?;
            let (leaves, inodes, _) = self.scan_fs_tree(&root)?;
            stats.inodes += inodes.len() as u64;
            for found in &inodes {
                let it = &found.item;
                if [it.atime, it.ctime, it.mtime, it.otime]
                    .iter()
                    .all(|t| *t <= limit)
                {
                    continue;
                }
                let loc = leaves[found.leaf];
                let mut item = self.current_bytes(&loc, found.start, found.end)?;
                clamp(&mut item, &INODE_TIMES);
                if self.edit_item(&loc, found.start, &item, Some((tree_id, &root_item)))? {
                    stats.inodes_changed += 1;
                    touched.insert(loc.logical);
                }
            }
        }

        // The root tree: its own inodes (the ROOT_TREE_DIR) and root items.
        let root = self.image.root_tree();
        let (leaves, items) = self.scan_items(&root, &mut |k| {
            k.item_type == BTRFS_INODE_ITEM_KEY || k.item_type == BTRFS_ROOT_ITEM_KEY
        })?;
        for found in &items {
            let loc = leaves[found.leaf];
            let mut item = self.current_bytes(&loc, found.start, found.end)?;
            if item.len() < INODE_ITEM_SIZE {
                return Err(ReadError::Corrupt(format!(
                    "item {} in the root tree is {} bytes",
                    found.key,
                    item.len()
                ))
                .into());
            }
            clamp(&mut item, &INODE_TIMES);
            let is_root_item = found.key.item_type == BTRFS_ROOT_ITEM_KEY;
            if is_root_item && item.len() >= ROOT_EXTENDED_END {
                let generation = le_u64(&item, ROOT_GENERATION);
                let generation_v2 = le_u64(&item, ROOT_GENERATION_V2);
                if generation == generation_v2 {
                    clamp(&mut item, &[ROOT_CTIME, ROOT_OTIME, ROOT_STIME, ROOT_RTIME]);
                }
            }
            if self.edit_item(&loc, found.start, &item, None)? {
                if is_root_item {
                    stats.root_items_changed += 1;
                } else {
                    stats.inodes_changed += 1;
                }
                touched.insert(loc.logical);
            }
            stats.inodes += u64::from(!is_root_item);
        }
        stats.blocks_changed = touched.len() as u64;
        Ok(stats)
    }

    /// Number of tree blocks edited and not yet committed.
    pub fn pending_blocks(&self) -> usize {
        self.dirty.len()
    }

    /// Write every edited block, with its checksum recomputed, to every
    /// physical copy, read each copy back to check it, zero the unused
    /// ranges [`Rewriter::zero_unused_space`] found, and fsync.
    pub fn commit(self) -> Result<(), RewriteError> {
        if let Some(why) = &self.failed {
            return Err(RewriteError::Unsupported(format!(
                "an earlier call failed ({why}); nothing written"
            )));
        }
        let write_err = |offset: u64, source: io::Error| RewriteError::Write {
            path: self.path.clone(),
            offset,
            source,
        };
        let nodesize = self.image.blocks.nodesize() as usize;
        let mut back = vec![0u8; nodesize];
        // Unused space first: it never overlaps a live tree block.
        let zeros = vec![0u8; 1 << 20];
        for (&start, &len) in &self.zero_ranges {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(zeros.len() as u64);
                let at = start + done;
                self.file
                    .write_all_at(&zeros[..n as usize], at)
                    .map_err(|e| write_err(at, e))?;
                done += n;
            }
        }
        // Live blocks that only [`HeaderPatch`] changes.
        if let Some(patch) = &self.header_patch {
            for &logical in patch.blocks.iter().filter(|l| !self.dirty.contains_key(l)) {
                let mut block = self.verified_raw_block(logical)?;
                let before = block.clone();
                patch.apply(&mut block);
                if block == before {
                    continue;
                }
                self.write_block(logical, &mut block, &mut back)?;
            }
        }
        for (&logical, block) in &self.dirty {
            let mut block = block.clone();
            if let Some(patch) = &self.header_patch {
                if patch.blocks.contains(&logical) {
                    patch.apply(&mut block);
                }
            }
            self.write_block(logical, &mut block, &mut back)?;
        }
        self.file.sync_all().map_err(|e| write_err(0, e))?;
        Ok(())
    }

    /// Seals `block` with a fresh crc32c and writes it to every physical
    /// copy of `logical`, reading each back (into `back`) to check it.
    fn write_block(
        &self,
        logical: u64,
        block: &mut [u8],
        back: &mut [u8],
    ) -> Result<(), RewriteError> {
        let write_err = |offset: u64, source: io::Error| RewriteError::Write {
            path: self.path.clone(),
            offset,
            source,
        };
        let crc = crc32c::crc32c(&block[BTRFS_CSUM_SIZE..]);
        block[..4].copy_from_slice(&crc.to_le_bytes());
        for physical in self.image.physical_copies(logical)? {
            self.file
                .write_all_at(block, physical)
                .map_err(|e| write_err(physical, e))?;
            self.file
                .read_exact_at(back, physical)
                .map_err(|e| write_err(physical, e))?;
            if back != &*block {
                return Err(write_err(
                    physical,
                    io::Error::other("block reads back different from what was written"),
                ));
            }
        }
        Ok(())
    }

    // -- internals ---------------------------------------------------------

    /// Root and root item of subvolume tree `tree_id`.
    fn fs_tree(&self, tree_id: u64) -> Result<(TreeRoot, RootItem), RewriteError> {
        let subvol = tree_id == BTRFS_FS_TREE_OBJECTID
            || (BTRFS_FIRST_FREE_OBJECTID..=BTRFS_LAST_FREE_OBJECTID).contains(&tree_id);
        if !subvol {
            return Err(ReadError::NoSuchSubvolume(tree_id).into());
        }
        self.any_tree(tree_id)
    }

    /// Root and root item of any tree with a root item in the root tree.
    fn any_tree(&self, tree_id: u64) -> Result<(TreeRoot, RootItem), RewriteError> {
        let item = self
            .image
            .root_item(tree_id)?
            .ok_or(ReadError::NoSuchSubvolume(tree_id))?;
        Ok((tree_root_of(&item), item))
    }

    /// Every item of `root` whose key `want` accepts, with where it lies.
    /// Leaves are listed in key order.
    fn scan_items(
        &self,
        root: &TreeRoot,
        want: &mut dyn FnMut(&Key) -> bool,
    ) -> Result<(Vec<LeafLoc>, Vec<FoundItem>), RewriteError> {
        let mut leaves = Vec::new();
        let mut items = Vec::new();
        self.image.blocks.visit_blocks(root, &mut |node| {
            let Some((_, leaf_items)) = node.leaf() else {
                return Ok(());
            };
            let leaf = leaves.len();
            leaves.push(LeafLoc {
                logical: node.logical(),
                generation: node.generation(),
                first_key: node.first_key(),
            });
            for it in leaf_items.iter().filter(|it| want(&it.key)) {
                items.push(FoundItem {
                    key: it.key,
                    leaf,
                    start: it.start,
                    end: it.end,
                });
            }
            Ok(())
        })?;
        Ok((leaves, items))
    }

    /// Inode items (with their current values, edits included) and the
    /// first name of every inode of a subvolume tree.
    #[allow(clippy::type_complexity)]
    fn scan_fs_tree(
        &self,
        root: &TreeRoot,
    ) -> Result<(Vec<LeafLoc>, Vec<FoundInode>, HashMap<u64, InodeRef>), RewriteError> {
        let mut leaves = Vec::new();
        let mut inodes = Vec::new();
        let mut names: HashMap<u64, InodeRef> = HashMap::new();
        let dirty = &self.dirty;
        self.image.blocks.visit_blocks(root, &mut |node| {
            let Some((raw, leaf_items)) = node.leaf() else {
                return Ok(());
            };
            let bytes = dirty.get(&node.logical()).map_or(raw, |d| d.as_slice());
            let leaf = leaves.len();
            leaves.push(LeafLoc {
                logical: node.logical(),
                generation: node.generation(),
                first_key: node.first_key(),
            });
            for it in leaf_items {
                let data = bytes.get(it.start..it.end).unwrap_or_default();
                let ino = it.key.objectid;
                match it.key.item_type {
                    BTRFS_INODE_ITEM_KEY => inodes.push(FoundInode {
                        ino,
                        leaf,
                        start: it.start,
                        end: it.end,
                        item: InodeItem::parse(data)?,
                    }),
                    BTRFS_INODE_REF_KEY if !names.contains_key(&ino) => {
                        if let Some(r) = InodeRef::parse_refs(it.key.offset, data)?
                            .into_iter()
                            .next()
                        {
                            names.insert(ino, r);
                        }
                    }
                    BTRFS_INODE_EXTREF_KEY if !names.contains_key(&ino) => {
                        if let Some(r) = InodeRef::parse_extrefs(data)?.into_iter().next() {
                            names.insert(ino, r);
                        }
                    }
                    _ => {}
                }
            }
            Ok(())
        })?;
        Ok((leaves, inodes, names))
    }

    /// The current bytes (edits included) of `start..end` in the leaf.
    fn current_bytes(
        &self,
        loc: &LeafLoc,
        start: usize,
        end: usize,
    ) -> Result<Vec<u8>, RewriteError> {
        let bad = |reason: &str| ReadError::BadBlock {
            logical: loc.logical,
            reason: reason.to_string(),
        };
        if let Some(block) = self.dirty.get(&loc.logical) {
            return Ok(block
                .get(start..end)
                .ok_or_else(|| bad("item outside the block"))?
                .to_vec());
        }
        let node = self
            .image
            .blocks
            .read_block(loc.logical, 0, loc.generation, loc.first_key)?;
        let (raw, _) = node.leaf().ok_or_else(|| bad("expected a leaf"))?;
        Ok(raw
            .get(start..end)
            .ok_or_else(|| bad("item outside the block"))?
            .to_vec())
    }

    /// Put `item` at `start` in the leaf at `loc`; `false` when that
    /// changes nothing. `shared`: for a subvolume tree, its id and root
    /// item, to refuse leaves a snapshot may share; `None` for the root
    /// tree, which is never shared.
    fn edit_item(
        &mut self,
        loc: &LeafLoc,
        start: usize,
        item: &[u8],
        shared: Option<(u64, &RootItem)>,
    ) -> Result<bool, RewriteError> {
        let end = start + item.len();
        if let Some(block) = self.dirty.get_mut(&loc.logical) {
            if block[start..end] == *item {
                return Ok(false);
            }
            block[start..end].copy_from_slice(item);
            return Ok(true);
        }
        let node = self
            .image
            .blocks
            .read_block(loc.logical, 0, loc.generation, loc.first_key)?;
        let (raw, _) = node.leaf().ok_or_else(|| ReadError::BadBlock {
            logical: loc.logical,
            reason: "expected a leaf".to_string(),
        })?;
        if raw.get(start..end) == Some(item) {
            return Ok(false);
        }
        let owner = le_u64(raw, HEADER_OWNER);
        let flags = le_u64(raw, HEADER_FLAGS);
        match shared {
            // The kernel's btrfs_block_can_be_shared(), for a subvolume tree.
            Some((tree_id, root_item))
                if owner != tree_id
                    || flags & BTRFS_HEADER_FLAG_RELOC != 0
                    || loc.generation <= root_item.last_snapshot =>
            {
                return Err(RewriteError::Unsupported(format!(
                    "leaf {} of tree {tree_id} (owner {owner}, generation {}) may be shared \
                     with a snapshot (last snapshot at transid {}); editing it in place \
                     would change both",
                    loc.logical, loc.generation, root_item.last_snapshot
                )));
            }
            Some(_) => {}
            None if owner != BTRFS_ROOT_TREE_OBJECTID => {
                return Err(ReadError::BadBlock {
                    logical: loc.logical,
                    reason: format!("root tree leaf owned by {owner}"),
                }
                .into());
            }
            None => {}
        }
        // Every physical copy must be the verified block, byte for byte.
        let mut copy = vec![0u8; raw.len()];
        for physical in self.image.physical_copies(loc.logical)? {
            self.image.blocks.read_physical(physical, &mut copy)?;
            if copy != raw {
                let csum_ok = crc32c::crc32c(&copy[BTRFS_CSUM_SIZE..]).to_le_bytes() == copy[..4];
                return Err(if csum_ok {
                    RewriteError::CopiesDiffer {
                        logical: loc.logical,
                        physical,
                    }
                } else {
                    ReadError::BadBlockChecksum {
                        logical: loc.logical,
                        physical,
                    }
                    .into()
                });
            }
        }
        let mut block = raw.to_vec();
        block
            .get_mut(start..end)
            .ok_or_else(|| ReadError::BadBlock {
                logical: loc.logical,
                reason: "item outside the block".to_string(),
            })?
            .copy_from_slice(item);
        self.dirty.insert(loc.logical, block);
        Ok(true)
    }
}

/// Refuse changes that would make an inode inconsistent.
fn check_change(tree: u64, ino: u64, mode: u32, change: &InodeChange) -> Result<(), RewriteError> {
    let invalid = |reason: String| Err(RewriteError::InvalidChange { tree, ino, reason });
    if let Some(m) = change.mode {
        if m & !0o7777 != 0 {
            return invalid(format!(
                "mode {m:o} has bits outside 7777 (the file type cannot change)"
            ));
        }
    }
    if let Some(rdev) = change.rdev {
        if !matches!(mode & S_IFMT, S_IFCHR | S_IFBLK) {
            return invalid(format!(
                "rdev {rdev:#x} on an inode of mode {mode:o}, not a device"
            ));
        }
        if rdev >> 32 != 0 {
            return invalid(format!(
                "rdev {rdev:#x} does not fit the kernel's 32-bit dev_t"
            ));
        }
    }
    if let Some(times) = change.times {
        for t in [times.atime, times.mtime, times.ctime, times.otime]
            .into_iter()
            .flatten()
        {
            if t.nsec >= 1_000_000_000 {
                return invalid(format!("time with {} nanoseconds", t.nsec));
            }
        }
    }
    Ok(())
}

/// Apply `change` to the bytes of an inode item (at least 160 bytes).
fn apply_change(item: &mut [u8], change: &InodeChange) {
    let put32 =
        |item: &mut [u8], off: usize, v: u32| item[off..off + 4].copy_from_slice(&v.to_le_bytes());
    if let Some(uid) = change.uid {
        put32(item, INODE_UID, uid);
    }
    if let Some(gid) = change.gid {
        put32(item, INODE_GID, gid);
    }
    if let Some(perm) = change.mode {
        let old = le_u32(item, INODE_MODE);
        put32(item, INODE_MODE, (old & !0o7777) | perm);
    }
    if let Some(rdev) = change.rdev {
        item[INODE_RDEV..INODE_RDEV + 8].copy_from_slice(&rdev.to_le_bytes());
    }
    if let Some(t) = change.times {
        for (off, v) in [
            (INODE_ATIME, t.atime),
            (INODE_CTIME, t.ctime),
            (INODE_MTIME, t.mtime),
            (INODE_OTIME, t.otime),
        ] {
            if let Some(v) = v {
                write_time(item, off, v);
            }
        }
    }
}

/// One path per inode (in the order of `inodes`), from first names.
fn inode_paths(
    root_dirid: u64,
    inodes: &[FoundInode],
    names: &HashMap<u64, InodeRef>,
) -> Result<Vec<Option<Vec<u8>>>, RewriteError> {
    // Paths of directories met on the way up, memoised.
    let mut dirs: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    dirs.insert(root_dirid, Some(Vec::new()));
    let mut out = Vec::with_capacity(inodes.len());
    for found in inodes {
        if found.ino == root_dirid {
            out.push(Some(Vec::new()));
            continue;
        }
        let Some(name) = names.get(&found.ino) else {
            out.push(None);
            continue;
        };
        // Climb until a parent with a known path (or none).
        let mut chain = vec![name.parent];
        let mut base = loop {
            let top = *chain.last().expect("not empty");
            if let Some(p) = dirs.get(&top) {
                chain.pop();
                break p.clone();
            }
            let Some(r) = names.get(&top) else {
                break None;
            };
            if chain.len() > names.len() || chain.contains(&r.parent) {
                return Err(
                    ReadError::Corrupt(format!("directory {top} is its own ancestor")).into(),
                );
            }
            chain.push(r.parent);
        };
        // Come back down, remembering each directory's path.
        while let Some(dir) = chain.pop() {
            base = match (base, names.get(&dir)) {
                (Some(mut p), Some(r)) => {
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&r.name);
                    Some(p)
                }
                _ => None,
            };
            dirs.insert(dir, base.clone());
        }
        out.push(base.map(|mut p| {
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&name.name);
            p
        }));
    }
    Ok(out)
}

fn le_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}

fn le_u64(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(buf[off..off + 8].try_into().expect("8 bytes"))
}

fn read_time(buf: &[u8], off: usize) -> Timespec {
    Timespec {
        sec: le_u64(buf, off) as i64,
        nsec: le_u32(buf, off + 8),
    }
}

fn write_time(buf: &mut [u8], off: usize, t: Timespec) {
    buf[off..off + 8].copy_from_slice(&(t.sec as u64).to_le_bytes());
    buf[off + 8..off + 12].copy_from_slice(&t.nsec.to_le_bytes());
}

//! In-place rewrite of inode metadata in a btrfs image.
//!
//! [`Rewriter`] changes owner, group, permission bits, device numbers and
//! times of inodes, and clamps times to a `SOURCE_DATE_EPOCH`, by editing
//! fixed-offset fields of `btrfs_inode_item` and `btrfs_root_item` payloads
//! inside leaves, and it turns the placeholders of a build without a user
//! namespace into what they stand for (a FIFO into a device node, with its
//! directory entries' type; an xattr renamed in place). No item changes
//! size and no block is relocated, so the extent tree and the superblock
//! stay valid; keys move only for a renamed xattr, inside its leaf, and
//! when that changes the leaf's first key the parents' key pointers
//! follow. Only the checksum of each edited block is recomputed.
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
//! This module holds the [`Rewriter`] itself: opening, the edit of one
//! item in a leaf, the `HeaderPatch` pending for every block, and [`Rewriter::commit`].
//! What it is asked to change lives in the child modules, each adding
//! methods to the [`Rewriter`]:
//! - `inodes`: [`Rewriter::update_inodes`] (owner, mode, rdev, times);
//! - `placeholders`: the parts of [`Rewriter::update_inodes`] that reach
//!   beyond the inode item: a FIFO placeholder's new device type in its
//!   directory entries, an xattr renamed in place (the one change that
//!   moves items inside a leaf and may change a parent's key pointer);
//! - `times`: [`Rewriter::clamp_times`] to a `SOURCE_DATE_EPOCH`
//!   ([`Rewriter::clamp_root_tree_times`]: the root tree alone);
//! - `reproducible`: [`Rewriter::derive_uuids`],
//!   [`Rewriter::zero_unused_space`], [`Rewriter::make_reproducible`],
//!   [`Rewriter::make_reproducible_after_deterministic_mkfs`];
//! - `sparse`: which parts of the image file hold data (the holes of a
//!   sparse file are not read when looking for leftovers);
//! - `error`: [`RewriteError`].
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
//!
//! Why one file of about 620 lines: opening, the leaf scan, patching and
//! the verified commit share the block cache and the dirty set; the
//! features that use them (inodes, placeholders, times, reproducible) are
//! the children.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use zerocopy::FromBytes;

use super::error::ReadError;
use super::format::*;
use super::image::Image;
use super::items::{InodeItem, InodeRef, RootItem};
use super::layout;
use super::subvol::tree_root_of;
use super::superblock::ChecksumType;
use super::tree::{leaf_items_of, parse_leaf_items, TreeRoot};

mod error;
mod inodes;
mod placeholders;
mod reproducible;
mod sparse;
mod times;

pub use error::RewriteError;
pub use inodes::{encode_rdev, InodeChange, InodeTimes, InodeView};
pub use reproducible::{derived_uuid, ReproducibleStats, ZeroStats};

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
    /// Directory entries (`DIR_ITEM`, `DIR_INDEX`) given a device's type
    /// ([`InodeChange::file_type`]).
    pub dir_entries_changed: u64,
    /// Xattrs renamed ([`InodeChange::rename_xattr`]).
    pub xattrs_renamed: u64,
}

/// `BTRFS_HEADER_FLAG_RELOC`: the block belongs to a relocation tree.
const BTRFS_HEADER_FLAG_RELOC: u64 = 1 << 1;

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

/// An image opened for an in-place rewrite of inode metadata.
///
/// Changes accumulate in memory (one copy of each edited leaf) and reach
/// the file only in [`Rewriter::commit`].
pub struct Rewriter {
    image: Image,
    file: File,
    path: PathBuf,
    /// Edited tree blocks (leaves, and nodes edited by
    /// [`Rewriter::derive_uuids`]) by logical address.
    dirty: BTreeMap<u64, Vec<u8>>,
    /// A chunk tree UUID to put into the header of every listed block at
    /// commit (set by [`Rewriter::derive_uuids`]; kept apart from `dirty`
    /// so that a header-only change does not hold every block in memory).
    header_patch: Option<HeaderPatch>,
    /// Physical ranges (start, length) to fill with zeros at commit (set
    /// by [`Rewriter::zero_unused_space`]).
    zero_ranges: BTreeMap<u64, u64>,
    /// Why an earlier call failed: its edits may be half done, so
    /// [`Rewriter::commit`] refuses.
    failed: Option<String>,
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
        let log_root = Reader::new(&sb, "superblock")
            .read::<layout::SuperBlock>()?
            .log_root
            .get();
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

    /// Number of tree blocks edited and not yet committed.
    pub fn pending_blocks(&self) -> usize {
        self.dirty.len()
    }

    /// Remember that a call failed, so that [`Rewriter::commit`] refuses.
    fn note_failure<T>(&mut self, result: Result<T, RewriteError>) -> Result<T, RewriteError> {
        if let Err(e) = &result {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        result
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
            // An edited leaf may have moved items (an xattr renamed).
            let edited = match dirty.get(&node.logical()) {
                Some(d) => Some((d.as_slice(), leaf_items_of(d, node.logical())?)),
                None => None,
            };
            let (bytes, leaf_items) = match &edited {
                Some((d, items)) => (*d, &items[..]),
                None => (raw, leaf_items),
            };
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
        match shared {
            Some(shared) => refuse_shared(raw, loc.logical, shared)?,
            None => {
                let owner = header(raw)?.owner.get();
                if owner != BTRFS_ROOT_TREE_OBJECTID {
                    return Err(ReadError::BadBlock {
                        logical: loc.logical,
                        reason: format!("root tree leaf owned by {owner}"),
                    }
                    .into());
                }
            }
        }
        // Every physical copy must be the verified block, byte for byte.
        let mut copy = vec![0u8; raw.len()];
        for physical in self.image.physical_copies(loc.logical)? {
            self.image.blocks.read_physical(physical, &mut copy)?;
            if copy != raw {
                return Err(if crc_matches(&copy) {
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

    /// The block at `logical` as stored: every physical copy is read and
    /// must carry a valid checksum, name `logical` and this filesystem,
    /// and be byte-identical to the others.
    fn verified_raw_block(&self, logical: u64) -> Result<Vec<u8>, RewriteError> {
        let nodesize = self.image.blocks.nodesize() as usize;
        let mut first: Option<Vec<u8>> = None;
        for physical in self.image.physical_copies(logical)? {
            let mut buf = vec![0u8; nodesize];
            self.image.blocks.read_physical(physical, &mut buf)?;
            if !crc_matches(&buf) {
                return Err(ReadError::BadBlockChecksum { logical, physical }.into());
            }
            let h = header(&buf)?;
            if h.bytenr.get() != logical || h.fsid != self.image.sb.metadata_fsid {
                return Err(ReadError::BadBlock {
                    logical,
                    reason: format!("copy at {physical} names another block or filesystem"),
                }
                .into());
            }
            match &first {
                None => first = Some(buf),
                Some(f) if *f != buf => {
                    return Err(RewriteError::CopiesDiffer { logical, physical })
                }
                Some(_) => {}
            }
        }
        first.ok_or_else(|| ReadError::UnmappedLogical(logical).into())
    }
}

/// Changes applied at commit to every listed tree block (kept apart from
/// the edited blocks so that they do not hold every block in memory).
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderPatch {
    /// A new chunk tree UUID for the header.
    pub chunk_tree_uuid: Option<[u8; BTRFS_UUID_SIZE]>,
    /// Zero the bytes no item or pointer uses (leftovers of earlier
    /// contents of the block).
    pub zero_slack: bool,
    /// Logical addresses of every live tree block.
    pub blocks: BTreeSet<u64>,
}

impl HeaderPatch {
    /// Apply the changes to a block (its checksum is left to the caller).
    pub(crate) fn apply(&self, block: &mut [u8]) {
        if let (Some(uuid), Ok((h, _))) = (
            &self.chunk_tree_uuid,
            layout::Header::mut_from_prefix(&mut *block),
        ) {
            h.chunk_tree_uuid = *uuid;
        }
        if self.zero_slack {
            if let Some((start, end)) = slack(block) {
                block[start..end].fill(0);
            }
        }
    }
}

/// The byte range of a tree block that holds nothing: between the item
/// headers and the item data of a leaf, after the last pointer of a node.
/// `None` when the block does not parse (it was verified when read, so
/// that does not happen) or has no slack.
fn slack(block: &[u8]) -> Option<(usize, usize)> {
    let h = header(block).ok()?;
    let (nritems, level) = (h.nritems.get() as usize, h.level);
    let (start, end) = if level == 0 {
        let items = parse_leaf_items(block, nritems).ok()?;
        let start = BTRFS_HEADER_SIZE + nritems * BTRFS_ITEM_SIZE;
        let end = items.iter().map(|it| it.start).min().unwrap_or(block.len());
        (start, end)
    } else {
        (
            BTRFS_HEADER_SIZE + nritems.checked_mul(BTRFS_KEY_PTR_SIZE)?,
            block.len(),
        )
    };
    (start < end && end <= block.len()).then_some((start, end))
}

/// Refuse to edit the block `raw` at `logical` of subvolume tree
/// `tree_id` when a snapshot may share it (the kernel's
/// `btrfs_block_can_be_shared()`: another owner, a relocation block, or a
/// generation not above the tree's last snapshot).
fn refuse_shared(
    raw: &[u8],
    logical: u64,
    (tree_id, root_item): (u64, &RootItem),
) -> Result<(), RewriteError> {
    let h = header(raw)?;
    let (owner, flags, generation) = (h.owner.get(), h.flags.get(), h.generation.get());
    if owner != tree_id
        || flags & BTRFS_HEADER_FLAG_RELOC != 0
        || generation <= root_item.last_snapshot
    {
        return Err(RewriteError::Unsupported(format!(
            "block {logical} of tree {tree_id} (owner {owner}, generation {generation}) may be \
             shared with a snapshot (last snapshot at transid {}); editing it in place would \
             change both",
            root_item.last_snapshot
        )));
    }
    Ok(())
}

/// The header of a tree block.
fn header(block: &[u8]) -> Result<&layout::Header, ReadError> {
    Reader::new(block, "tree block header").read::<layout::Header>()
}

/// Whether a block's checksum field holds the crc32c of the rest.
fn crc_matches(block: &[u8]) -> bool {
    block
        .split_at_checked(BTRFS_CSUM_SIZE)
        .is_some_and(|(csum, data)| ChecksumType::Crc32c.verify(csum, data).unwrap_or(false))
}

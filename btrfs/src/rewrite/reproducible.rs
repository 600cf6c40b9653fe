//! Reproducible images: replace what `mkfs.btrfs` chooses at random.
//!
//! Two `mkfs.btrfs --rootdir` runs over the same tree, with the same
//! `-U` (fsid) and `--device-uuid`, still differ in:
//!
//! - the chunk tree UUID, in the header of every tree block and in every
//!   `DEV_EXTENT` item of the device tree;
//! - the UUID of every subvolume, in its root item (and so the keys of the
//!   UUID tree, which are that UUID split in two);
//! - times (`time(NULL)` in root items, inode times): [`Rewriter::clamp_times`];
//! - freed tree blocks that mkfs leaves behind (its first, temporary
//!   layout at 1 MiB, and older copies of blocks it rewrote), which carry
//!   the random chunk tree UUID and the times of the run, in unallocated
//!   device space and in free slots of metadata chunks.
//!
//! [`Rewriter::derive_uuids`] replaces the UUIDs with values derived from a
//! seed, [`Rewriter::zero_unused_space`] zeroes the leftovers, and
//! [`Rewriter::make_reproducible`] does both after `clamp_times`.
//! btrfs-progs ≥ 7.3 (`SOURCE_DATE_EPOCH`, `DETERMINISTIC_SEED=1`, `-U`)
//! leaves only the `--subvol` root items (UUID, times), the UUID tree and
//! freed blocks that held them:
//! [`Rewriter::make_reproducible_after_deterministic_mkfs`] does that much.
//! The superblock holds none of these (its backup roots only name block
//! addresses and generations, which are the same run to run).
//!
//! Why one file of about 750 lines: its two passes (derive the UUIDs, zero
//! the unused space) are one concern, what makes two mkfs runs byte-equal,
//! and share the walk over the live tree blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sha2::{Digest, Sha256};
use zerocopy::{FromBytes, IntoBytes};

use super::{header, HeaderPatch, RewriteError, RewriteStats, Rewriter};
use crate::chunk::Chunk;
use crate::error::ReadError;
use crate::format::*;
use crate::items::RootItem;
use crate::layout;
use crate::subvol::tree_root_of;
use crate::tree::{parse_leaf_items, LeafItem, TreeRoot};

/// Subvolume UUIDs, old → new.
type UuidMap = BTreeMap<[u8; BTRFS_UUID_SIZE], [u8; BTRFS_UUID_SIZE]>;

const BTRFS_EXTENT_TREE_OBJECTID: u64 = 2;
const BTRFS_DEV_TREE_OBJECTID: u64 = 4;
const BTRFS_UUID_TREE_OBJECTID: u64 = 9;
const BTRFS_EXTENT_ITEM_KEY: u8 = 168;
const BTRFS_METADATA_ITEM_KEY: u8 = 169;
const BTRFS_DEV_EXTENT_KEY: u8 = 204;
const BTRFS_UUID_KEY_SUBVOL: u8 = 251;
const BTRFS_UUID_KEY_RECEIVED_SUBVOL: u8 = 252;
const BTRFS_EXTENT_FLAG_TREE_BLOCK: u64 = 2;
const BTRFS_BLOCK_GROUP_DATA: u64 = 1;

/// Device bytes btrfs never allocates (boot loaders, the superblock).
const DEVICE_RESERVED: u64 = 1 << 20;
/// Where superblock copies live (those past the device end do not exist).
const SUPERBLOCK_COPIES: [u64; 3] = [0x1_0000, 0x400_0000, 0x40_0000_0000];
/// Granularity of the scan for leftovers.
const PAGE: usize = 4096;

/// What [`Rewriter::zero_unused_space`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeroStats {
    /// Live tree blocks (every copy of them is kept).
    pub live_blocks: u64,
    /// Bytes looked at (unallocated device space, free metadata space).
    pub bytes_scanned: u64,
    /// Bytes that were not zero and will be zeroed at commit.
    pub bytes_zeroed: u64,
}

/// What [`Rewriter::make_reproducible`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReproducibleStats {
    /// From [`Rewriter::clamp_times`].
    pub times: RewriteStats,
    /// From [`Rewriter::derive_uuids`].
    pub uuids: RewriteStats,
    /// From [`Rewriter::zero_unused_space`].
    pub zeroed: ZeroStats,
}

/// A UUID derived from `seed` for `purpose` (and `ids`): the first 16
/// bytes of SHA-256 over a domain tag, the seed, the purpose and the ids,
/// marked as an RFC 9562 version 8 (custom) UUID.
///
/// [`Rewriter::derive_uuids`] uses the purposes `"chunk-tree"` and
/// `"subvolume"` (ids: tree id, root item key offset). A caller without a
/// user-given fsid can pass `derived_uuid(seed, "fsid", &[])` to
/// `mkfs.btrfs -U` and `derived_uuid(seed, "device", &[])` to
/// `--device-uuid`.
pub fn derived_uuid(seed: &[u8], purpose: &str, ids: &[u64]) -> [u8; BTRFS_UUID_SIZE] {
    let mut msg = Vec::with_capacity(64 + seed.len() + purpose.len() + 8 * ids.len());
    msg.extend_from_slice(b"rootbox btrfs uuid v1\0");
    msg.extend_from_slice(&(seed.len() as u64).to_le_bytes());
    msg.extend_from_slice(seed);
    msg.extend_from_slice(&(purpose.len() as u64).to_le_bytes());
    msg.extend_from_slice(purpose.as_bytes());
    for id in ids {
        msg.extend_from_slice(&id.to_le_bytes());
    }
    let digest = sha256(&msg);
    let mut u = [0u8; BTRFS_UUID_SIZE];
    u.copy_from_slice(&digest[..BTRFS_UUID_SIZE]);
    u[6] = (u[6] & 0x0f) | 0x80;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

impl Rewriter {
    /// Replace every UUID mkfs chose at random with one derived from
    /// `seed` (see [`derived_uuid`]):
    ///
    /// - the chunk tree UUID, in the header of every live tree block (all
    ///   trees, internal nodes included; applied at commit, every copy)
    ///   and in every `DEV_EXTENT` item;
    /// - the `uuid` of every root item that has one (each subvolume), and
    ///   a `parent_uuid` naming one of them (snapshots);
    /// - the keys of the UUID tree (which are those UUIDs), re-sorted in
    ///   its leaf. A UUID tree of more than one leaf is refused with
    ///   [`RewriteError::UuidTreeTooLarge`].
    ///
    /// The fsid and the device UUID are left alone: pass them to mkfs
    /// (`-U`, `--device-uuid`). Received UUIDs (from `btrfs receive`) are
    /// not random and are kept.
    ///
    /// `root_items_changed` counts root items given a new UUID,
    /// `blocks_changed` the tree blocks that will be written. After an
    /// error, [`Rewriter::commit`] refuses to write.
    pub fn derive_uuids(&mut self, seed: &[u8]) -> Result<RewriteStats, RewriteError> {
        let result = self.derive_uuids_inner(seed);
        self.note_failure(result)
    }

    /// Find every byte outside live structures that is not zero, to be
    /// zeroed at commit: unallocated device space past the first MiB
    /// (superblock copies excepted) and the free space of metadata and
    /// system chunks (everything but the copies of live tree blocks).
    /// Data chunks are kept whole: mkfs writes only what files hold.
    ///
    /// The live blocks (reachable from the superblock) must be exactly
    /// the tree blocks the extent tree records as allocated; anything else
    /// is refused with [`RewriteError::Unsupported`]. Superblock backup
    /// roots that name freed blocks are kept (as the kernel keeps them).
    /// After an error, [`Rewriter::commit`] refuses to write.
    pub fn zero_unused_space(&mut self) -> Result<ZeroStats, RewriteError> {
        let result = self.zero_unused_space_inner();
        self.note_failure(result)
    }

    /// Everything a reproducible image needs after mkfs:
    /// [`Rewriter::clamp_times`]`(epoch)`, [`Rewriter::derive_uuids`]`(seed)`
    /// and [`Rewriter::zero_unused_space`]. Two images that mkfs made from
    /// the same input with the same `-U` and `--device-uuid` are then
    /// byte-identical after [`Rewriter::commit`].
    pub fn make_reproducible(
        &mut self,
        epoch: i64,
        seed: &[u8],
    ) -> Result<ReproducibleStats, RewriteError> {
        Ok(ReproducibleStats {
            times: self.clamp_times(epoch)?,
            uuids: self.derive_uuids(seed)?,
            zeroed: self.zero_unused_space()?,
        })
    }

    /// What a reproducible image still needs after a deterministic mkfs
    /// (btrfs-progs ≥ 7.3 given `SOURCE_DATE_EPOCH`, `DETERMINISTIC_SEED=1`
    /// and `-U`; the output a fresh file): [`Rewriter::clamp_root_tree_times`]
    /// (its `--subvol` root items carry the wall clock),
    /// [`Rewriter::derive_uuids`] (their UUIDs are random, and so the UUID
    /// tree's keys; the chunk tree UUID is derived too, so the image is
    /// the one [`Rewriter::make_reproducible`] gives) and
    /// [`Rewriter::zero_unused_space`] (freed tree blocks that held those
    /// random UUIDs are left in free metadata space). Only the inodes'
    /// times are not read: mkfs set them to the epoch or older. Two such
    /// mkfs images of the same input are byte-identical after
    /// [`Rewriter::commit`].
    pub fn make_reproducible_after_deterministic_mkfs(
        &mut self,
        epoch: i64,
        seed: &[u8],
    ) -> Result<ReproducibleStats, RewriteError> {
        Ok(ReproducibleStats {
            times: self.clamp_root_tree_times(epoch)?,
            uuids: self.derive_uuids(seed)?,
            zeroed: self.zero_unused_space()?,
        })
    }

    /// [`Rewriter::derive_uuids`]'s steps: the chunk tree UUID, the
    /// subvolume UUIDs, then which blocks get the new header.
    fn derive_uuids_inner(&mut self, seed: &[u8]) -> Result<RewriteStats, RewriteError> {
        let mut stats = RewriteStats::default();
        let live = self.live_blocks()?;

        let old_chunk_uuid = self.chunk_tree_uuid()?;
        let new_chunk_uuid = derived_uuid(seed, "chunk-tree", &[]);
        self.rename_chunk_tree_in_dev_extents(old_chunk_uuid, new_chunk_uuid)?;

        // Subvolume UUIDs: first the map old → new, then the edits.
        let root_tree = self.image.root_tree();
        let root_leaves = self.leaves_of(&root_tree)?;
        let map = self.subvolume_uuid_map(seed, &root_leaves)?;
        stats.root_items_changed = self.rename_subvolumes(&root_leaves, &map)?;
        self.rekey_uuid_tree(&map)?;

        stats.blocks_changed = if old_chunk_uuid != new_chunk_uuid {
            live.len() as u64
        } else {
            self.dirty.len() as u64
        };
        let patch = self.header_patch.get_or_insert_with(HeaderPatch::default);
        patch.chunk_tree_uuid = Some(new_chunk_uuid);
        patch.blocks.extend(live);
        Ok(stats)
    }

    /// The chunk tree UUID in effect: the chunk root's (the kernel reads it
    /// from there), or an earlier call's.
    fn chunk_tree_uuid(&mut self) -> Result<[u8; BTRFS_UUID_SIZE], RewriteError> {
        Ok(match &self.header_patch {
            Some(HeaderPatch {
                chunk_tree_uuid: Some(uuid),
                ..
            }) => *uuid,
            _ => {
                let chunk_root = self.image.tree_root(BTRFS_CHUNK_TREE_OBJECTID)?;
                let block = self.current_block(chunk_root.bytenr)?;
                header(&block)?.chunk_tree_uuid
            }
        })
    }

    /// Device extents name the chunk tree by its UUID: `old` becomes `new`.
    fn rename_chunk_tree_in_dev_extents(
        &mut self,
        old_chunk_uuid: [u8; BTRFS_UUID_SIZE],
        new_chunk_uuid: [u8; BTRFS_UUID_SIZE],
    ) -> Result<(), RewriteError> {
        let dev_root = self.image.tree_root(BTRFS_DEV_TREE_OBJECTID)?;
        for logical in self.leaves_of(&dev_root)? {
            self.modify_leaf(logical, &mut |block, items| {
                for it in items
                    .iter()
                    .filter(|it| it.key.item_type == BTRFS_DEV_EXTENT_KEY)
                {
                    let Ok((extent, _)) =
                        layout::DevExtent::mut_from_prefix(&mut block[it.start..it.end])
                    else {
                        continue;
                    };
                    if extent.chunk_tree_uuid == old_chunk_uuid {
                        extent.chunk_tree_uuid = new_chunk_uuid;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Each subvolume's UUID (from the root items in `root_leaves`) mapped
    /// to the one derived from `seed` and the root item's key.
    fn subvolume_uuid_map(
        &mut self,
        seed: &[u8],
        root_leaves: &[u64],
    ) -> Result<UuidMap, RewriteError> {
        let mut map = UuidMap::new();
        for &logical in root_leaves {
            let block = self.current_block(logical)?;
            for it in leaf_items(&block, logical)? {
                let Some(item) = extended_root_item(&block, &it) else {
                    continue;
                };
                let uuid = item.ext.uuid;
                if uuid == [0; BTRFS_UUID_SIZE] {
                    continue;
                }
                let new = derived_uuid(seed, "subvolume", &[it.key.objectid, it.key.offset]);
                if map.insert(uuid, new).is_some() {
                    return Err(RewriteError::Unsupported(format!(
                        "two root items carry UUID {}",
                        format_uuid(&uuid)
                    )));
                }
            }
        }
        Ok(map)
    }

    /// Gives the root items their new UUIDs (and parent UUIDs) from `map`;
    /// returns how many root items changed.
    fn rename_subvolumes(
        &mut self,
        root_leaves: &[u64],
        map: &UuidMap,
    ) -> Result<u64, RewriteError> {
        let mut changed_items = 0;
        for &logical in root_leaves {
            let changed = self.modify_leaf(logical, &mut |block, items| {
                let mut n = 0;
                for it in items {
                    let Some(item) = extended_root_item_mut(block, it) else {
                        continue;
                    };
                    let mut item_changed = false;
                    for uuid in [&mut item.ext.uuid, &mut item.ext.parent_uuid] {
                        if let Some(new) = map.get(uuid) {
                            if uuid != new {
                                *uuid = *new;
                                item_changed = true;
                            }
                        }
                    }
                    n += u64::from(item_changed);
                }
                Ok(n)
            })?;
            changed_items += changed;
        }
        Ok(changed_items)
    }

    /// The UUID tree: its keys are the UUIDs, so the leaf is re-keyed by
    /// `map` and re-sorted.
    fn rekey_uuid_tree(&mut self, map: &UuidMap) -> Result<(), RewriteError> {
        if let Some(item) = self.image.root_item(BTRFS_UUID_TREE_OBJECTID)? {
            if item.level > 0 {
                return Err(RewriteError::UuidTreeTooLarge {
                    levels: item.level + 1,
                });
            }
            let root = tree_root_of(&item);
            // Read through the reader once so the block is verified.
            self.leaves_of(&root)?;
            self.modify_leaf(root.bytenr, &mut |block, items| {
                rekey_uuid_leaf(block, items, map)
            })?;
        }
        Ok(())
    }

    fn zero_unused_space_inner(&mut self) -> Result<ZeroStats, RewriteError> {
        let live = self.live_blocks()?;
        let allocated = self.allocated_tree_blocks()?;
        if let Some(l) = allocated.difference(&live).next() {
            return Err(RewriteError::Unsupported(format!(
                "the extent tree records a tree block at {l} that no tree reaches"
            )));
        }
        if let Some(l) = live.difference(&allocated).next() {
            return Err(RewriteError::Unsupported(format!(
                "tree block {l} is reachable but the extent tree does not record it"
            )));
        }
        let nodesize = u64::from(self.image.blocks.nodesize());

        let mut sb = vec![0u8; BTRFS_SUPER_INFO_SIZE];
        self.image
            .blocks
            .read_physical(BTRFS_SUPER_INFO_OFFSET, &mut sb)?;
        let dev_bytes = Reader::new(&sb, "superblock")
            .read::<layout::SuperBlock>()?
            .dev_item
            .total_bytes
            .get();
        let file_len = self
            .file
            .metadata()
            .map_err(|source| ReadError::Io {
                path: self.path.clone(),
                offset: 0,
                source,
            })?
            .len();
        let end = dev_bytes.min(file_len);

        // Physical ranges to keep.
        let mut keep: Vec<(u64, u64)> = vec![(0, DEVICE_RESERVED)];
        keep.extend(
            SUPERBLOCK_COPIES
                .iter()
                .map(|&o| (o, o + BTRFS_SUPER_INFO_SIZE as u64)),
        );
        for chunk in self.chunks()? {
            let striped = chunk.chunk_type & BTRFS_BLOCK_GROUP_STRIPED != 0;
            if striped && chunk.stripes.len() > 1 {
                return Err(RewriteError::Unsupported(format!(
                    "striped chunk at logical {}",
                    chunk.logical
                )));
            }
            if chunk.chunk_type & BTRFS_BLOCK_GROUP_DATA != 0 {
                for s in &chunk.stripes {
                    keep.push((s.offset, s.offset.saturating_add(chunk.length)));
                }
            }
        }
        for &logical in &live {
            for p in self.image.physical_copies(logical)? {
                keep.push((p, p + nodesize));
            }
        }
        keep.sort_unstable();

        let mut stats = ZeroStats {
            live_blocks: live.len() as u64,
            ..ZeroStats::default()
        };
        let mut found: Vec<(u64, u64)> = Vec::new();
        let mut pos = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for (start, stop) in keep.into_iter().chain([(end, end)]) {
            let gap_end = start.min(end);
            if gap_end > pos {
                stats.bytes_scanned += gap_end - pos;
                self.scan_nonzero(pos, gap_end, &mut buf, &mut found)?;
            }
            pos = pos.max(stop);
        }
        let patch = self.header_patch.get_or_insert_with(HeaderPatch::default);
        patch.zero_slack = true;
        patch.blocks.extend(live);
        for (start, len) in found {
            stats.bytes_zeroed += len;
            // A second call finds the same ranges (nothing is written before commit).
            let known = self.zero_ranges.entry(start).or_insert(0);
            *known = (*known).max(len);
        }
        Ok(stats)
    }

    // -- helpers -----------------------------------------------------------

    /// Append to `out` the page runs in `start..end` that are not all zero
    /// (pages counted from `start`). Only what the image file may hold
    /// data for is read: the holes of a sparse file (mkfs writes a fresh
    /// file, so most of its free space is holes) are zero.
    fn scan_nonzero(
        &self,
        start: u64,
        end: u64,
        buf: &mut [u8],
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), RewriteError> {
        let page = PAGE as u64;
        let mut done = start;
        let (file, base) = self.image.blocks.file();
        for (data, hole) in super::sparse::data_runs(file, base, start, end) {
            // Whole pages, as a read of the whole range would see them.
            let from = (start + (data - start) / page * page).max(done);
            let to = (start + (hole - start).div_ceil(page) * page).min(end);
            if from < to {
                self.scan_pages(from, to, buf, out)?;
                done = to;
            }
        }
        Ok(())
    }

    /// [`Rewriter::scan_nonzero`]'s reads: every page of `start..end`.
    fn scan_pages(
        &self,
        start: u64,
        end: u64,
        buf: &mut [u8],
        out: &mut Vec<(u64, u64)>,
    ) -> Result<(), RewriteError> {
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            let piece = &mut buf[..n];
            self.image.blocks.read_physical(pos, piece)?;
            for (i, page) in piece.chunks(PAGE).enumerate() {
                if page.iter().all(|&b| b == 0) {
                    continue;
                }
                let at = pos + (i * PAGE) as u64;
                let len = page.len() as u64;
                match out.last_mut() {
                    Some((s, l)) if *s + *l == at => *l += len,
                    _ => out.push((at, len)),
                }
            }
            pos += n as u64;
        }
        Ok(())
    }

    /// Logical addresses of every tree block reachable from the
    /// superblock: the chunk tree, the root tree and every tree a root
    /// item names. Each is verified by the reader on the way.
    fn live_blocks(&self) -> Result<BTreeSet<u64>, RewriteError> {
        let mut roots = vec![
            self.image.tree_root(BTRFS_CHUNK_TREE_OBJECTID)?,
            self.image.root_tree(),
        ];
        let mut err = None;
        self.image.blocks.range(
            &self.image.root_tree(),
            Key::new(0, 0, 0),
            Key::new(u64::MAX, u8::MAX, u64::MAX),
            &mut |key, data| {
                if key.item_type == BTRFS_ROOT_ITEM_KEY {
                    match RootItem::parse(data) {
                        Ok(item) => roots.push(tree_root_of(&item)),
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
        let mut live = BTreeSet::new();
        let mut seen_roots = BTreeSet::new();
        for root in roots {
            if !seen_roots.insert(root.bytenr) {
                continue;
            }
            self.image.blocks.visit_blocks(&root, &mut |node| {
                live.insert(node.logical());
                Ok(())
            })?;
        }
        Ok(live)
    }

    /// Tree blocks the extent tree records.
    fn allocated_tree_blocks(&self) -> Result<BTreeSet<u64>, RewriteError> {
        let root = self.image.tree_root(BTRFS_EXTENT_TREE_OBJECTID)?;
        let mut out = BTreeSet::new();
        self.image.blocks.range(
            &root,
            Key::new(0, 0, 0),
            Key::new(u64::MAX, u8::MAX, u64::MAX),
            &mut |key, data| {
                match key.item_type {
                    BTRFS_METADATA_ITEM_KEY => {
                        out.insert(key.objectid);
                    }
                    BTRFS_EXTENT_ITEM_KEY => {
                        let flags = Reader::new(data, "extent item")
                            .read::<layout::ExtentItem>()?
                            .flags
                            .get();
                        if flags & BTRFS_EXTENT_FLAG_TREE_BLOCK != 0 {
                            out.insert(key.objectid);
                        }
                    }
                    _ => {}
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(out)
    }

    /// Every chunk, from the chunk tree.
    fn chunks(&self) -> Result<Vec<Chunk>, RewriteError> {
        let root = self.image.tree_root(BTRFS_CHUNK_TREE_OBJECTID)?;
        let mut out = Vec::new();
        self.image.blocks.range(
            &root,
            Key::new(BTRFS_FIRST_CHUNK_TREE_OBJECTID, BTRFS_CHUNK_ITEM_KEY, 0),
            Key::new(
                BTRFS_FIRST_CHUNK_TREE_OBJECTID,
                BTRFS_CHUNK_ITEM_KEY,
                u64::MAX,
            ),
            &mut |key, data| {
                out.push(Chunk::read(
                    key.offset,
                    &mut Reader::new(data, "chunk item"),
                )?);
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(out)
    }

    /// Logical addresses of the leaves of a tree (verified by the reader).
    fn leaves_of(&self, root: &TreeRoot) -> Result<Vec<u64>, RewriteError> {
        let mut out = Vec::new();
        self.image.blocks.visit_blocks(root, &mut |node| {
            if node.level() == 0 {
                out.push(node.logical());
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The current bytes of a block: edited, or as on disk (every copy
    /// checked).
    fn current_block(&self, logical: u64) -> Result<Vec<u8>, RewriteError> {
        match self.dirty.get(&logical) {
            Some(b) => Ok(b.clone()),
            None => self.verified_raw_block(logical),
        }
    }

    /// Let `f` edit the current bytes of the leaf at `logical` (with its
    /// items parsed from those bytes); keep the result when it differs.
    fn modify_leaf<T>(&mut self, logical: u64, f: &mut LeafEdit<'_, T>) -> Result<T, RewriteError> {
        let mut block = self.current_block(logical)?;
        let items = leaf_items(&block, logical)?;
        let before = block.clone();
        let out = f(&mut block, &items)?;
        if block != before {
            self.dirty.insert(logical, block);
        }
        Ok(out)
    }
}

/// An edit of a leaf's bytes, given its items.
type LeafEdit<'a, T> = dyn FnMut(&mut Vec<u8>, &[LeafItem]) -> Result<T, RewriteError> + 'a;

/// The items of a leaf, parsed from its current bytes.
fn leaf_items(block: &[u8], logical: u64) -> Result<Vec<LeafItem>, RewriteError> {
    let bad = |reason: String| ReadError::BadBlock { logical, reason };
    let h = header(block)?;
    if h.level != 0 {
        return Err(bad("expected a leaf".to_string()).into());
    }
    Ok(parse_leaf_items(block, h.nritems.get() as usize).map_err(bad)?)
}

/// A root item whose extended fields (UUIDs) are valid.
fn extended_root_item<'a>(block: &'a [u8], it: &LeafItem) -> Option<&'a layout::RootItemV2> {
    (it.key.item_type == BTRFS_ROOT_ITEM_KEY)
        .then(|| layout::RootItemV2::extended(&block[it.start..it.end]))
        .flatten()
}

/// [`extended_root_item`], for editing.
fn extended_root_item_mut<'a>(
    block: &'a mut [u8],
    it: &LeafItem,
) -> Option<&'a mut layout::RootItemV2> {
    (it.key.item_type == BTRFS_ROOT_ITEM_KEY)
        .then(|| layout::RootItemV2::extended_mut(&mut block[it.start..it.end]))
        .flatten()
}

/// Re-key the UUID tree leaf `block` through `map` and lay it out again
/// in key order (item data packed from the end of the block, as the
/// kernel's leaf checker requires). Returns how many keys changed.
fn rekey_uuid_leaf(
    block: &mut [u8],
    items: &[LeafItem],
    map: &BTreeMap<[u8; BTRFS_UUID_SIZE], [u8; BTRFS_UUID_SIZE]>,
) -> Result<u64, RewriteError> {
    let mut changed = 0;
    let mut entries: Vec<(Key, Vec<u8>)> = Vec::with_capacity(items.len());
    for it in items {
        let mut key = it.key;
        if matches!(
            key.item_type,
            BTRFS_UUID_KEY_SUBVOL | BTRFS_UUID_KEY_RECEIVED_SUBVOL
        ) {
            let mut uuid = [0u8; BTRFS_UUID_SIZE];
            uuid[..8].copy_from_slice(&key.objectid.to_le_bytes());
            uuid[8..].copy_from_slice(&key.offset.to_le_bytes());
            if let Some(new) = map.get(&uuid) {
                key.objectid = u64::from_le_bytes(new[..8].try_into().expect("8 bytes"));
                key.offset = u64::from_le_bytes(new[8..].try_into().expect("8 bytes"));
                changed += u64::from(key != it.key);
            }
        }
        entries.push((key, block[it.start..it.end].to_vec()));
    }
    if changed == 0 {
        return Ok(0);
    }
    entries.sort_by_key(|e| e.0);
    if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(RewriteError::Unsupported(format!(
            "two UUID tree items would share key {}",
            w[0].0
        )));
    }
    let data_size = block.len() - BTRFS_HEADER_SIZE;
    block[BTRFS_HEADER_SIZE..].fill(0);
    let mut data_end = data_size;
    for (i, (key, data)) in entries.iter().enumerate() {
        data_end -= data.len();
        let h = BTRFS_HEADER_SIZE + i * BTRFS_ITEM_SIZE;
        let item = layout::Item {
            key: key.to_disk(),
            offset: (data_end as u32).into(),
            size: (data.len() as u32).into(),
        };
        block[h..h + BTRFS_ITEM_SIZE].copy_from_slice(item.as_bytes());
        let d = BTRFS_HEADER_SIZE + data_end;
        block[d..d + data.len()].copy_from_slice(data);
    }
    Ok(changed)
}

/// SHA-256 of `msg`.
fn sha256(msg: &[u8]) -> [u8; 32] {
    Sha256::digest(msg).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(&sha256(&[b'a'; 1000])),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
    }

    /// Values of rootbox releases before the switch to the `sha2` crate:
    /// images built from the same seed must keep their UUIDs.
    #[test]
    fn derived_uuids_known_answers() {
        let uuid =
            |seed: &[u8], purpose, ids: &[u64]| format_uuid(&derived_uuid(seed, purpose, ids));
        assert_eq!(
            uuid(b"seed", "subvolume", &[5, 0]),
            "6e55c581-ed2d-8564-a004-3b18b5e63f80"
        );
        assert_eq!(
            uuid(b"rootbox", "chunk-tree", &[]),
            "42307467-cf48-8a47-8c80-bc770c50a8c6"
        );
        assert_eq!(
            uuid(&[b'x'; 100], "fsid", &[]),
            "8728f290-112f-82b0-8b7e-104efaf208d4"
        );
    }

    #[test]
    fn derived_uuids_differ_by_seed_purpose_and_id() {
        let a = derived_uuid(b"seed", "subvolume", &[5, 0]);
        assert_eq!(a, derived_uuid(b"seed", "subvolume", &[5, 0]));
        assert_ne!(a, derived_uuid(b"seed2", "subvolume", &[5, 0]));
        assert_ne!(a, derived_uuid(b"seed", "subvolume", &[256, 0]));
        assert_ne!(a, derived_uuid(b"seed", "chunk-tree", &[5, 0]));
        // No ambiguity between seed and purpose boundaries.
        assert_ne!(derived_uuid(b"ab", "c", &[]), derived_uuid(b"a", "bc", &[]));
        assert_eq!(a[6] >> 4, 8, "version 8");
        assert_eq!(a[8] >> 6, 0b10, "RFC variant");
    }
}

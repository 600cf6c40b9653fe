//! [`Rewriter::clamp_times`]: no time later than a `SOURCE_DATE_EPOCH`;
//! [`Rewriter::clamp_root_tree_times`]: the same in the root tree alone.

use std::collections::BTreeSet;

use zerocopy::FromBytes;

use super::{LeafLoc, RewriteError, RewriteStats, Rewriter};
use crate::error::ReadError;
use crate::format::*;
use crate::items::Timespec;
use crate::layout;
use crate::tree::TreeRoot;

/// The tree holding relocated data (an inode 256 with mkfs's times).
const BTRFS_DATA_RELOC_TREE_OBJECTID: u64 = -9i64 as u64;

/// An item found by a scan of any tree.
struct FoundItem {
    key: Key,
    leaf: usize,
    start: usize,
    end: usize,
}

impl Rewriter {
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

    fn clamp_times_inner(&mut self, epoch: i64) -> Result<RewriteStats, RewriteError> {
        let limit = Timespec {
            sec: epoch,
            nsec: 0,
        };
        let clamp = |t: &mut layout::Timespec| {
            if Timespec::from_disk(t) > limit {
                *t = limit.to_disk();
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
                let (inode, _) = layout::InodeItem::mut_from_prefix(&mut item).map_err(|_| {
                    ReadError::Corrupt(format!(
                        "inode {} of tree {tree_id} is too short",
                        found.ino
                    ))
                })?;
                inode.times_mut().into_iter().for_each(clamp);
                if self.edit_item(&loc, found.start, &item, Some((tree_id, &root_item)))? {
                    stats.inodes_changed += 1;
                    touched.insert(loc.logical);
                }
            }
        }
        self.clamp_root_tree(limit, &mut stats, &mut touched)?;
        stats.blocks_changed = touched.len() as u64;
        Ok(stats)
    }

    /// Clamp the times of the root tree alone, as [`Rewriter::clamp_times`]
    /// does there: its inodes (the `ROOT_TREE_DIR`) and every root item
    /// (ctime, otime, stime, rtime and the embedded inode's times). The
    /// inodes of the subvolume trees are not read.
    ///
    /// Enough after a mkfs that takes every inode time from
    /// `SOURCE_DATE_EPOCH` (btrfs-progs ≥ 7.3 with `--rootdir`: ctime and
    /// atime set to it, mtime clamped), whose `--subvol` root items still
    /// carry the wall clock. After an error, [`Rewriter::commit`] refuses
    /// to write.
    pub fn clamp_root_tree_times(&mut self, epoch: i64) -> Result<RewriteStats, RewriteError> {
        let limit = Timespec {
            sec: epoch,
            nsec: 0,
        };
        let (mut stats, mut touched) = (RewriteStats::default(), BTreeSet::new());
        let result = self
            .clamp_root_tree(limit, &mut stats, &mut touched)
            .map(|()| RewriteStats {
                blocks_changed: touched.len() as u64,
                ..stats
            });
        self.note_failure(result)
    }

    /// The root tree's part of [`Rewriter::clamp_times`]: its own inodes
    /// (the ROOT_TREE_DIR) and root items, counted into `stats`, the
    /// blocks changed into `touched`.
    fn clamp_root_tree(
        &mut self,
        limit: Timespec,
        stats: &mut RewriteStats,
        touched: &mut BTreeSet<u64>,
    ) -> Result<(), RewriteError> {
        let clamp = |t: &mut layout::Timespec| {
            if Timespec::from_disk(t) > limit {
                *t = limit.to_disk();
            }
        };
        let too_short = |key: &Key, len: usize| {
            RewriteError::from(ReadError::Corrupt(format!(
                "item {key} in the root tree is {len} bytes"
            )))
        };
        let root = self.image.root_tree();
        let (leaves, items) = self.scan_items(&root, &mut |k| {
            k.item_type == BTRFS_INODE_ITEM_KEY || k.item_type == BTRFS_ROOT_ITEM_KEY
        })?;
        for found in &items {
            let loc = leaves[found.leaf];
            let mut item = self.current_bytes(&loc, found.start, found.end)?;
            let len = item.len();
            // A root item starts with an inode item.
            let (inode, _) = layout::InodeItem::mut_from_prefix(&mut item)
                .map_err(|_| too_short(&found.key, len))?;
            inode.times_mut().into_iter().for_each(clamp);
            let is_root_item = found.key.item_type == BTRFS_ROOT_ITEM_KEY;
            if is_root_item {
                if let Some(v2) = layout::RootItemV2::extended_mut(&mut item) {
                    let ext = &mut v2.ext;
                    for t in [
                        &mut ext.ctime,
                        &mut ext.otime,
                        &mut ext.stime,
                        &mut ext.rtime,
                    ] {
                        clamp(t);
                    }
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
        Ok(())
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
}

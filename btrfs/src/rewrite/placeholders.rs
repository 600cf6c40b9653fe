//! Why one file of about 640 lines: the check and the making of the two
//! changes share one scan, one plan and the leaf layout rules.
//!
//! The two changes of [`InodeChange`] that reach beyond the inode item,
//! for placeholders a build without a user namespace stages in place of
//! what an unprivileged copy cannot hold:
//! - `file_type`: a FIFO (or an empty regular file) becomes a character or
//!   block device; every directory entry naming it (`DIR_ITEM` and
//!   `DIR_INDEX`, found through its `INODE_REF`/`INODE_EXTREF` items) takes
//!   the new type byte;
//! - `rename_xattr`: an xattr item takes a new name of the same length and
//!   the key of that name's hash; the leaf is laid out again in key order
//!   (item data packed from the end of the block, as the kernel's leaf
//!   checker requires) and, when the leaf's first key changes, the parent
//!   nodes' key pointers follow.
//!
//! [`Rewriter::update_inodes`] checks every asked change first
//! ([`Rewriter::plan_placeholders`]) and makes them after the inode items
//! ([`Rewriter::apply_placeholders`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use zerocopy::{FromBytes, IntoBytes};

use super::{RewriteError, Rewriter};
use crate::error::ReadError;
use crate::format::*;
use crate::items::{DirItem, InodeRef, RootItem};
use crate::layout;
use crate::tree::{leaf_items_of as leaf_items, LeafItem, Node, TreeRoot};
use crate::walk::{S_IFCHR, S_IFIFO, S_IFMT, S_IFREG};

/// One inode's asked `file_type` or `rename_xattr`, as
/// [`Rewriter::update_inodes`] found the inode.
pub(super) struct Ask {
    pub ino: u64,
    /// A path of the inode, for errors (`/` first).
    pub path: String,
    pub mode: u32,
    pub size: u64,
    pub nbytes: u64,
    pub file_type: Option<u32>,
    pub rename: Option<(&'static [u8], &'static [u8])>,
}

/// The changes checked by [`Rewriter::plan_placeholders`], to make.
pub(super) struct Plan {
    tree_id: u64,
    root_item: RootItem,
    /// Directory entries to retype.
    entries: Vec<DirEntry>,
    /// Xattr renames: the leaf, the item's key, the new name.
    renames: Vec<Rename>,
    /// Every tree block's parent and slot in it.
    parents: HashMap<u64, (u64, usize)>,
}

/// A directory entry to give a device's type.
struct DirEntry {
    /// The leaf holding it (found after the refs).
    leaf: u64,
    key: Key,
    /// The inode it names.
    ino: u64,
    /// Its name; `None` for a `DIR_INDEX` (one entry).
    name: Option<Vec<u8>>,
    /// The new `BTRFS_FT_*`.
    ft: u8,
}

/// An xattr item of an asked inode.
struct XattrItem {
    /// Index of its leaf in [`Found::leaves`].
    leaf: usize,
    key: Key,
    /// Names packed in the item (one, unless names share a hash).
    names: Vec<Vec<u8>>,
}

struct Rename {
    ask: usize,
    leaf: u64,
    key: Key,
    to: &'static [u8],
    /// Last key of the leaf before, first key of the leaf after.
    bounds: (Option<Key>, Option<Key>),
}

/// What a scan of a subvolume tree found for the asked inodes.
#[derive(Default)]
struct Found {
    refs: HashMap<u64, Vec<InodeRef>>,
    extents: BTreeSet<u64>,
    xattrs: HashMap<u64, Vec<XattrItem>>,
    /// Every leaf in key order: logical, first and last key.
    leaves: Vec<(u64, Key, Key)>,
    parents: HashMap<u64, (u64, usize)>,
}

/// What [`Rewriter::apply_placeholders`] changed.
#[derive(Default)]
pub(super) struct Applied {
    pub dir_entries: u64,
    pub xattrs: u64,
    pub blocks: BTreeSet<u64>,
}

/// `BTRFS_FT_*` of a device file type (`S_IFCHR`/`S_IFBLK`).
fn ft_of(file_type: u32) -> u8 {
    if file_type == S_IFCHR {
        BTRFS_FT_CHRDEV
    } else {
        BTRFS_FT_BLKDEV
    }
}

impl Rewriter {
    /// Check every `file_type` and `rename_xattr` of `asks` against tree
    /// `tree_id` (each inode at most once) and find what to edit; nothing
    /// is changed.
    pub(super) fn plan_placeholders(
        &self,
        tree_id: u64,
        root: &TreeRoot,
        root_item: &RootItem,
        asks: &[Ask],
    ) -> Result<Plan, RewriteError> {
        let typed: BTreeSet<u64> = asks
            .iter()
            .filter(|a| a.file_type.is_some())
            .map(|a| a.ino)
            .collect();
        let renamed: BTreeSet<u64> = asks
            .iter()
            .filter(|a| a.rename.is_some())
            .map(|a| a.ino)
            .collect();
        let found = self.scan_asked(root, &typed, &renamed)?;
        let mut plan = Plan {
            tree_id,
            root_item: root_item.clone(),
            entries: Vec::new(),
            renames: Vec::new(),
            parents: HashMap::new(),
        };
        let mut wanted: HashMap<Key, Option<u64>> = HashMap::new();
        for (n, ask) in asks.iter().enumerate() {
            if let Some(ft) = ask.file_type {
                check_placeholder(tree_id, ask, found.extents.contains(&ask.ino))?;
                for r in found.refs.get(&ask.ino).into_iter().flatten() {
                    let by_name = Key::new(r.parent, BTRFS_DIR_ITEM_KEY, name_hash(&r.name));
                    let by_index = Key::new(r.parent, BTRFS_DIR_INDEX_KEY, r.index);
                    for (key, name) in [(by_name, Some(r.name.clone())), (by_index, None)] {
                        plan.entries.push(DirEntry {
                            leaf: 0,
                            key,
                            ino: ask.ino,
                            name,
                            ft: ft_of(ft),
                        });
                    }
                    wanted.insert(by_name, None);
                    wanted.insert(by_index, None);
                }
            }
            if let Some((from, to)) = ask.rename {
                if let Some(r) = check_rename(tree_id, ask, from, to, &found)? {
                    plan.renames.push(Rename { ask: n, ..r });
                }
            }
        }
        if !wanted.is_empty() {
            self.locate(root, &mut wanted)?;
            for e in &mut plan.entries {
                e.leaf = wanted[&e.key].ok_or_else(|| {
                    ReadError::Corrupt(format!(
                        "tree {tree_id}: inode {} has a name without directory entry {}",
                        e.ino, e.key
                    ))
                })?;
            }
        }
        for r in &plan.renames {
            // Where the item lands must be in its own leaf.
            let ask = &asks[r.ask];
            let block = self.current_leaf(r.leaf)?;
            relaid_leaf(&block, r.leaf, r.key, r.to, r.bounds)
                .map_err(|e| e.into_error(tree_id, ask))?;
        }
        plan.parents = found.parents;
        Ok(plan)
    }

    /// Make the changes of `plan` (after the inode items are changed).
    pub(super) fn apply_placeholders(
        &mut self,
        plan: &Plan,
        asks: &[Ask],
    ) -> Result<Applied, RewriteError> {
        let mut done = Applied::default();
        let shared = (plan.tree_id, &plan.root_item);
        for e in &plan.entries {
            let changed = self.modify_block(e.leaf, shared, &mut |block| retype_entry(block, e))?;
            if changed {
                done.dir_entries += 1;
                done.blocks.insert(e.leaf);
            }
        }
        for r in &plan.renames {
            let (ask, to) = (&asks[r.ask], r.to);
            let (first_before, first_after) = self.modify_block(r.leaf, shared, &mut |block| {
                let before = first_key(block, r.leaf)?;
                let new = relaid_leaf(block, r.leaf, r.key, to, r.bounds)
                    .map_err(|e| e.into_error(plan.tree_id, ask))?;
                block.copy_from_slice(&new);
                Ok((before, first_key(block, r.leaf)?))
            })?;
            done.xattrs += 1;
            done.blocks.insert(r.leaf);
            if let Some(first) = first_after.filter(|&k| Some(k) != first_before) {
                self.follow_first_key(plan, r.leaf, first, &mut done.blocks)?;
            }
        }
        Ok(done)
    }

    /// Give the key pointers above `block` its new first key: the parent's
    /// pointer to it and, while that pointer is the parent's first, the
    /// grandparent's, up to the root.
    fn follow_first_key(
        &mut self,
        plan: &Plan,
        mut block: u64,
        key: Key,
        touched: &mut BTreeSet<u64>,
    ) -> Result<(), RewriteError> {
        let shared = (plan.tree_id, &plan.root_item);
        while let Some(&(parent, slot)) = plan.parents.get(&block) {
            self.modify_block(parent, shared, &mut |node| {
                let at = BTRFS_HEADER_SIZE + slot * BTRFS_KEY_PTR_SIZE;
                let (ptr, _) = node
                    .get_mut(at..)
                    .and_then(|b| layout::KeyPtr::mut_from_prefix(b).ok())
                    .ok_or_else(|| ReadError::BadBlock {
                        logical: parent,
                        reason: format!("no key pointer at slot {slot}"),
                    })?;
                if ptr.blockptr.get() != block {
                    return Err(ReadError::BadBlock {
                        logical: parent,
                        reason: format!("slot {slot} does not point at {block}"),
                    }
                    .into());
                }
                ptr.key = key.to_disk();
                Ok(())
            })?;
            touched.insert(parent);
            if slot != 0 {
                break;
            }
            block = parent;
        }
        Ok(())
    }

    /// The current bytes of a leaf (edits included).
    fn current_leaf(&self, logical: u64) -> Result<Vec<u8>, RewriteError> {
        match self.dirty.get(&logical) {
            Some(b) => Ok(b.clone()),
            None => self.verified_raw_block(logical),
        }
    }

    /// Refs, extents and xattr items of the asked inodes, the leaves in
    /// key order and every block's parent.
    fn scan_asked(
        &self,
        root: &TreeRoot,
        typed: &BTreeSet<u64>,
        renamed: &BTreeSet<u64>,
    ) -> Result<Found, RewriteError> {
        let mut found = Found::default();
        let dirty = &self.dirty;
        self.image.blocks.visit_blocks(root, &mut |node| {
            if let Some(children) = node.children() {
                for (slot, child) in children.enumerate() {
                    found.parents.insert(child, (node.logical(), slot));
                }
                return Ok(());
            }
            let (bytes, items) = current_items(node, dirty)?;
            let (Some(first), Some(last)) = (items.first(), items.last()) else {
                return Ok(());
            };
            let leaf = found.leaves.len();
            found.leaves.push((node.logical(), first.key, last.key));
            for it in &items {
                let (ino, data) = (it.key.objectid, &bytes[it.start..it.end]);
                if typed.contains(&ino) {
                    match it.key.item_type {
                        BTRFS_INODE_REF_KEY => found
                            .refs
                            .entry(ino)
                            .or_default()
                            .extend(InodeRef::parse_refs(it.key.offset, data)?),
                        BTRFS_INODE_EXTREF_KEY => found
                            .refs
                            .entry(ino)
                            .or_default()
                            .extend(InodeRef::parse_extrefs(data)?),
                        BTRFS_EXTENT_DATA_KEY => {
                            found.extents.insert(ino);
                        }
                        _ => {}
                    }
                }
                if renamed.contains(&ino) && it.key.item_type == BTRFS_XATTR_ITEM_KEY {
                    let names = DirItem::parse_all(data)?.into_iter().map(|d| d.name);
                    found.xattrs.entry(ino).or_default().push(XattrItem {
                        leaf,
                        key: it.key,
                        names: names.collect(),
                    });
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Fill in the leaf holding each key of `wanted`.
    fn locate(
        &self,
        root: &TreeRoot,
        wanted: &mut HashMap<Key, Option<u64>>,
    ) -> Result<(), RewriteError> {
        let dirty = &self.dirty;
        self.image.blocks.visit_blocks(root, &mut |node| {
            if node.level() > 0 {
                return Ok(());
            }
            let (_, items) = current_items(node, dirty)?;
            for it in &items {
                if let Some(slot) = wanted.get_mut(&it.key) {
                    *slot = Some(node.logical());
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Let `f` edit the current bytes of tree block `logical` of the
    /// subvolume `shared` names (refused when a snapshot may share it);
    /// keep the result when it differs. Returns whether it did.
    fn modify_block<T>(
        &mut self,
        logical: u64,
        shared: (u64, &RootItem),
        f: &mut dyn FnMut(&mut [u8]) -> Result<T, RewriteError>,
    ) -> Result<T, RewriteError> {
        let mut block = match self.dirty.get(&logical) {
            Some(b) => b.clone(),
            None => {
                let raw = self.verified_raw_block(logical)?;
                super::refuse_shared(&raw, logical, shared)?;
                raw
            }
        };
        let before = block.clone();
        let out = f(&mut block)?;
        if block != before {
            self.dirty.insert(logical, block);
        }
        Ok(out)
    }
}

/// The bytes and items of a leaf as they are now (edits included).
fn current_items<'a>(
    node: &'a Node,
    dirty: &'a BTreeMap<u64, Vec<u8>>,
) -> Result<(&'a [u8], Vec<LeafItem>), ReadError> {
    let (raw, items) = node.leaf().ok_or(ReadError::BadBlock {
        logical: node.logical(),
        reason: "expected a leaf".to_string(),
    })?;
    match dirty.get(&node.logical()) {
        None => Ok((raw, items.to_vec())),
        Some(block) => Ok((block, leaf_items(block, node.logical())?)),
    }
}

/// The first key of a leaf's bytes.
fn first_key(block: &[u8], logical: u64) -> Result<Option<Key>, RewriteError> {
    Ok(leaf_items(block, logical)?.first().map(|it| it.key))
}

/// Whether an inode may take a device's file type.
fn check_placeholder(tree: u64, ask: &Ask, extents: bool) -> Result<(), RewriteError> {
    let kind = ask.mode & S_IFMT;
    let has_data = ask.size != 0 || ask.nbytes != 0 || extents;
    if kind == S_IFIFO || (kind == S_IFREG && !has_data) {
        return Ok(());
    }
    Err(RewriteError::NotAPlaceholder {
        tree,
        ino: ask.ino,
        path: ask.path.clone(),
        mode: ask.mode,
        has_data,
    })
}

/// Check a rename of xattr `from` to `to` of the asked inode; `None`
/// when it changes nothing (`from == to`).
fn check_rename(
    tree: u64,
    ask: &Ask,
    from: &[u8],
    to: &'static [u8],
    found: &Found,
) -> Result<Option<Rename>, RewriteError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (ino, path) = (ask.ino, ask.path.clone());
    if from.len() != to.len() {
        return Err(RewriteError::XattrNameLength {
            tree,
            ino,
            path,
            from: text(from),
            to: text(to),
        });
    }
    let xattrs = found.xattrs.get(&ino).map_or(&[][..], |v| v.as_slice());
    let Some(item) = xattrs.iter().find(|x| x.names.iter().any(|n| n == from)) else {
        return Err(RewriteError::XattrMissing {
            tree,
            ino,
            path,
            name: text(from),
        });
    };
    if item.names.len() > 1 {
        return Err(RewriteError::XattrPacked {
            tree,
            ino,
            path,
            name: text(from),
        });
    }
    if from == to {
        return Ok(None);
    }
    let hash = name_hash(to);
    if let Some(other) = xattrs
        .iter()
        .find(|x| x.key.offset == hash && x.key != item.key)
    {
        let other: Vec<String> = other.names.iter().map(|n| text(n)).collect();
        return Err(RewriteError::XattrCollision {
            tree,
            ino,
            path,
            to: text(to),
            other: other.join(", "),
        });
    }
    let before = item.leaf.checked_sub(1).map(|i| found.leaves[i].2);
    let after = found.leaves.get(item.leaf + 1).map(|l| l.1);
    Ok(Some(Rename {
        ask: 0,
        leaf: found.leaves[item.leaf].0,
        key: item.key,
        to,
        bounds: (before, after),
    }))
}

/// Why a leaf could not be laid out again.
enum RelayError {
    /// The renamed item sorts outside its leaf.
    CrossesLeaf,
    Other(RewriteError),
}

impl From<ReadError> for RelayError {
    fn from(e: ReadError) -> RelayError {
        RelayError::Other(e.into())
    }
}

impl RelayError {
    fn into_error(self, tree: u64, ask: &Ask) -> RewriteError {
        match self {
            RelayError::CrossesLeaf => RewriteError::XattrCrossesLeaf {
                tree,
                ino: ask.ino,
                path: ask.path.clone(),
                to: String::from_utf8_lossy(ask.rename.map_or(&[][..], |r| r.1)).into_owned(),
            },
            RelayError::Other(e) => e,
        }
    }
}

/// `block` with the single-entry xattr item `key` renamed to `to` (same
/// length), re-keyed to `to`'s hash and the leaf laid out again in key
/// order, item data packed from the end of the block in slot order (the
/// bytes of every other item are unchanged; a packed leaf's free space
/// stays where it was). `bounds`: the last key of the leaf before and
/// the first of the leaf after, which the new key must lie between.
fn relaid_leaf(
    block: &[u8],
    logical: u64,
    key: Key,
    to: &[u8],
    bounds: (Option<Key>, Option<Key>),
) -> Result<Vec<u8>, RelayError> {
    let bad = |reason: String| RelayError::Other(ReadError::BadBlock { logical, reason }.into());
    let items = leaf_items(block, logical)?;
    let Some(slot) = items.iter().position(|it| it.key == key) else {
        return Err(bad(format!("xattr item {key} is gone")));
    };
    // The kernel's leaf checker: item i's data ends where item i-1's starts.
    let mut end = block.len();
    for it in &items {
        if it.end != end {
            return Err(bad("item data not packed in slot order".to_string()));
        }
        end = it.start;
    }
    let mut entries: Vec<(Key, Vec<u8>)> = items
        .iter()
        .map(|it| (it.key, block[it.start..it.end].to_vec()))
        .collect();
    let new_key = Key::new(key.objectid, key.item_type, name_hash(to));
    let (old, data) = &mut entries[slot];
    *old = new_key;
    rename_entry(data, to).map_err(|reason| bad(format!("xattr item {key}: {reason}")))?;
    // mkfs.btrfs (6.14) never sets an xattr entry's transid: it holds what
    // the leaf held there before, which depends on the order the xattrs
    // were inserted (seen: the tail of the placeholder's name and value in
    // the other xattr of the file). Zero for the inode's xattrs, as a
    // build with the real names most often leaves them.
    for (k, data) in &mut entries {
        if (k.objectid, k.item_type) == (key.objectid, key.item_type) {
            clear_transids(data);
        }
    }
    entries.sort_by_key(|e| e.0);
    if entries.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(bad(format!("two items would share key {new_key}")));
    }
    let (lo, hi) = bounds;
    if lo.is_some_and(|lo| entries[0].0 <= lo)
        || hi.is_some_and(|hi| entries[entries.len() - 1].0 >= hi)
    {
        return Err(RelayError::CrossesLeaf);
    }
    let mut out = block.to_vec();
    let mut data_end = block.len();
    for (i, (key, data)) in entries.iter().enumerate() {
        data_end -= data.len();
        let h = BTRFS_HEADER_SIZE + i * BTRFS_ITEM_SIZE;
        let item = layout::Item {
            key: key.to_disk(),
            offset: ((data_end - BTRFS_HEADER_SIZE) as u32).into(),
            size: (data.len() as u32).into(),
        };
        out[h..h + BTRFS_ITEM_SIZE].copy_from_slice(item.as_bytes());
        out[data_end..data_end + data.len()].copy_from_slice(data);
    }
    Ok(out)
}

/// Zero the transid of every entry of an xattr item (a malformed item is
/// left to the checks that read it).
fn clear_transids(mut data: &mut [u8]) {
    while let Ok((head, rest)) = layout::DirItem::mut_from_prefix(data) {
        head.transid.set(0);
        let len = usize::from(head.name_len.get()) + usize::from(head.data_len.get());
        let Some((_, tail)) = rest.split_at_mut_checked(len) else {
            return;
        };
        data = tail;
    }
}

/// Give the one entry of an xattr item the name `to` (same length).
fn rename_entry(data: &mut [u8], to: &[u8]) -> Result<(), String> {
    let (head, rest) =
        layout::DirItem::ref_from_prefix(data).map_err(|_| "too short".to_string())?;
    let name_len = usize::from(head.name_len.get());
    if name_len != to.len() || rest.len() != name_len + usize::from(head.data_len.get()) {
        return Err("not one entry with a name of that length".to_string());
    }
    let at = size_of::<layout::DirItem>();
    data[at..at + name_len].copy_from_slice(to);
    Ok(())
}

/// Set the file type of the entry `e` (the one naming its inode by its
/// name, or the one entry of a `DIR_INDEX`) in the leaf `block`; whether
/// a byte changed.
fn retype_entry(block: &mut [u8], e: &DirEntry) -> Result<bool, RewriteError> {
    let (logical, key, ino, name, ft) = (e.leaf, e.key, e.ino, e.name.as_deref(), e.ft);
    let items = leaf_items(block, logical)?;
    let it = items
        .iter()
        .find(|it| it.key == key)
        .ok_or_else(|| ReadError::BadBlock {
            logical,
            reason: format!("directory entry {key} is gone"),
        })?;
    let mut at = it.start;
    while at < it.end {
        let (head, rest) = layout::DirItem::mut_from_prefix(&mut block[at..it.end])
            .map_err(|_| ReadError::Corrupt(format!("truncated directory entry {key}")))?;
        let name_len = usize::from(head.name_len.get());
        let len = name_len + usize::from(head.data_len.get());
        let this = rest
            .get(..name_len)
            .ok_or_else(|| ReadError::Corrupt(format!("truncated directory entry {key}")))?;
        let names_ino = Key::from_disk(&head.location).objectid == ino;
        if names_ino && name.is_none_or(|n| n == this) {
            let changed = head.file_type != ft;
            head.file_type = ft;
            return Ok(changed);
        }
        at += size_of::<layout::DirItem>() + len;
    }
    Err(ReadError::Corrupt(format!(
        "directory entry {key} does not name inode {ino}{}",
        name.map_or(String::new(), |n| format!(
            " as {:?}",
            String::from_utf8_lossy(n)
        ))
    ))
    .into())
}

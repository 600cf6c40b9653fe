//! [`Rewriter::update_inodes`]: owner, group, mode, device number and
//! times of the inodes of a subvolume, chosen by a callback that sees
//! each inode with one of its paths.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use zerocopy::FromBytes;

use super::placeholders::Ask;
use super::{FoundInode, RewriteError, RewriteStats, Rewriter};
use crate::error::ReadError;
use crate::format::*;
use crate::items::{InodeRef, RootItem, Timespec};
use crate::layout;
use crate::walk::{FileKind, S_IFBLK, S_IFCHR, S_IFMT};

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
    /// the file type changes only through `file_type`.
    pub mode: Option<u32>,
    /// New device number of a character or block device, in the stored
    /// (kernel) encoding; see [`encode_rdev`]. An error on other inodes.
    pub rdev: Option<u64>,
    /// New times.
    pub times: Option<InodeTimes>,
    /// New file type, `S_IFCHR` or `S_IFBLK` (the `S_IFMT` bits), for an inode
    /// staged as a FIFO or an empty regular file in place of a device node: the
    /// inode's mode and every directory entry naming it (DIR_ITEM and DIR_INDEX
    /// in its parent directories, found through its INODE_REF/INODE_EXTREF
    /// items) take the new type. Give the device number in `rdev`.
    ///
    /// Any other inode (a directory, a file with data or extents, a
    /// symlink) is a [`RewriteError::NotAPlaceholder`]; any other value an
    /// [`RewriteError::InvalidChange`].
    pub file_type: Option<u32>,
    /// An xattr of the inode renamed in place to a name of the same length
    /// (`(from, to)`); see [`Rewriter::update_inodes`]. The value is kept.
    /// The item's key takes the hash of `to`, and the item moves among the
    /// inode's other xattrs in its leaf so that the leaf stays sorted.
    ///
    /// Refused with a typed error when the lengths differ
    /// ([`RewriteError::XattrNameLength`]), the inode has no xattr `from`
    /// ([`RewriteError::XattrMissing`]), `from` shares its item with another
    /// xattr of the same hash ([`RewriteError::XattrPacked`]), `to`'s hash
    /// is that of another xattr of the inode
    /// ([`RewriteError::XattrCollision`]) or the renamed item would sort
    /// into another leaf ([`RewriteError::XattrCrossesLeaf`]).
    pub rename_xattr: Option<(&'static [u8], &'static [u8])>,
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

impl Rewriter {
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
    ///
    /// A [`InodeChange::file_type`] or [`InodeChange::rename_xattr`] costs
    /// one more scan of the tree (two with a `file_type`), whatever the
    /// number of inodes asked: ask for every placeholder of a subvolume
    /// in one call. An xattr rename lays its leaf out again (the item
    /// moves among the inode's other xattrs to stay in key order, and the
    /// parents' key pointers follow a changed first key); a leaf laid out
    /// again has the inode's xattr entries' `transid` zeroed (mkfs.btrfs
    /// leaves them unset). The callback sees no xattrs: ask the rename of
    /// the inodes known to carry the placeholder (asking it of one without
    /// is [`RewriteError::XattrMissing`]).
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
        let (mut edits, mut asks) = (Vec::new(), Vec::new());
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
                if change.file_type.is_some() || change.rename_xattr.is_some() {
                    asks.push(Ask {
                        ino: found.ino,
                        path: shown_path(view.path),
                        mode: it.mode,
                        size: it.size,
                        nbytes: it.nbytes,
                        file_type: change.file_type,
                        rename: change.rename_xattr,
                    });
                }
                edits.push((n, change));
            }
        }
        // Every placeholder change is checked before anything is changed.
        let plan = match asks.is_empty() {
            true => None,
            false => Some(self.plan_placeholders(tree_id, &root, &root_item, &asks)?),
        };
        let mut touched = BTreeSet::new();
        for (n, change) in edits {
            let found = &inodes[n];
            let loc = leaves[found.leaf];
            let mut item = self.current_bytes(&loc, found.start, found.end)?;
            let (inode, _) = layout::InodeItem::mut_from_prefix(&mut item).map_err(|_| {
                ReadError::Corrupt(format!(
                    "inode {} of tree {tree_id} is too short",
                    found.ino
                ))
            })?;
            apply_change(inode, &change);
            if self.edit_item(&loc, found.start, &item, Some((tree_id, &root_item)))? {
                stats.inodes_changed += 1;
                touched.insert(loc.logical);
            }
        }
        if let Some(plan) = plan {
            let done = self.apply_placeholders(&plan, &asks)?;
            stats.dir_entries_changed = done.dir_entries;
            stats.xattrs_renamed = done.xattrs;
            touched.extend(done.blocks);
        }
        stats.blocks_changed = touched.len() as u64;
        Ok(stats)
    }
}

/// A path of an inode for an error: `/` and the path in its subvolume.
fn shown_path(path: Option<&[u8]>) -> String {
    match path {
        Some(p) => format!("/{}", String::from_utf8_lossy(p)),
        None => "(an inode no directory names)".to_string(),
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
    let mode = match change.file_type {
        Some(t @ (S_IFCHR | S_IFBLK)) => (mode & !S_IFMT) | t,
        Some(t) => {
            return invalid(format!(
                "file type {t:o} asked: only a character ({S_IFCHR:o}) or block ({S_IFBLK:o}) \
                 device"
            ))
        }
        None => mode,
    };
    if let Some(rdev) = change.rdev {
        if !matches!(
            FileKind::from_mode(mode),
            Some(FileKind::CharDev | FileKind::BlockDev)
        ) {
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

/// Apply `change` to an inode item.
fn apply_change(item: &mut layout::InodeItem, change: &InodeChange) {
    if let Some(uid) = change.uid {
        item.uid.set(uid);
    }
    if let Some(gid) = change.gid {
        item.gid.set(gid);
    }
    if let Some(t) = change.file_type {
        item.mode.set((item.mode.get() & !S_IFMT) | t);
    }
    if let Some(perm) = change.mode {
        item.mode.set((item.mode.get() & !0o7777) | perm);
    }
    if let Some(rdev) = change.rdev {
        item.rdev.set(rdev);
    }
    if let Some(t) = change.times {
        for (field, v) in [
            (&mut item.atime, t.atime),
            (&mut item.ctime, t.ctime),
            (&mut item.mtime, t.mtime),
            (&mut item.otime, t.otime),
        ] {
            if let Some(v) = v {
                *field = v.to_disk();
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

//! Listing a subvolume: directory entries, inodes, xattrs, symlink targets.

use std::collections::HashSet;
use std::ops::ControlFlow;

use super::error::ReadError;
use super::format::*;
use super::image::Image;
use super::items::{DirItem, FileExtent, InodeItem, RootRef, Timespec, BTRFS_NAME_LEN};
use super::subvol::tree_root_of;
use super::tree::TreeRoot;

/// What an entry is, from the type bits of its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// The root directory of another subvolume, seen from its parent.
    Subvolume,
}

pub(crate) const S_IFMT: u32 = 0o170000;
pub(crate) const S_IFSOCK: u32 = 0o140000;
pub(crate) const S_IFLNK: u32 = 0o120000;
pub(crate) const S_IFREG: u32 = 0o100000;
pub(crate) const S_IFBLK: u32 = 0o060000;
pub(crate) const S_IFDIR: u32 = 0o040000;
pub(crate) const S_IFCHR: u32 = 0o020000;
pub(crate) const S_IFIFO: u32 = 0o010000;

impl FileKind {
    /// The kind a mode's type bits name (never `Subvolume`).
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & S_IFMT {
            S_IFREG => FileKind::File,
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            S_IFCHR => FileKind::CharDev,
            S_IFBLK => FileKind::BlockDev,
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }

    /// Whether entries of this kind are directories (a subvolume is one).
    pub fn is_dir(self) -> bool {
        matches!(self, FileKind::Dir | FileKind::Subvolume)
    }
}

/// One path in a subvolume and the inode it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the subvolume root, `/`-separated, no leading
    /// slash; empty for the root directory.
    pub path: Vec<u8>,
    /// Inode number within its subvolume (256 for a subvolume's root; 2,
    /// `BTRFS_EMPTY_SUBVOL_DIR_OBJECTID`, for the empty directory that
    /// stands in a snapshot where its source had a nested subvolume, with
    /// mode 0755, owner 0, times zero).
    pub ino: u64,
    /// What it is.
    pub kind: FileKind,
    /// Full `st_mode`, type bits included.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (for directories, what btrfs reports: twice the
    /// length of all names).
    pub size: u64,
    /// Number of hard links (1 for directories on btrfs).
    pub nlink: u32,
    /// Device number as stored (the kernel's encoding, `major << 20 |
    /// minor`); see [`Entry::device_numbers`]. mkfs.btrfs 6.14 stores 0.
    pub rdev: u64,
    /// Last access.
    pub atime: Timespec,
    /// Last content change.
    pub mtime: Timespec,
    /// Last inode change.
    pub ctime: Timespec,
    /// Creation.
    pub otime: Timespec,
    /// `BTRFS_INODE_*` flags (nodatacow, compress, immutable, ...).
    pub flags: u64,
    /// For symlinks, the target.
    pub symlink_target: Option<Vec<u8>>,
    /// Extended attributes (including POSIX ACLs and
    /// `security.capability`), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// For `FileKind::Subvolume`, the subvolume id; the inode fields are
    /// those of that subvolume's root directory.
    pub subvolume: Option<u64>,
}

impl Entry {
    /// `(major, minor)` of a device node.
    pub fn device_numbers(&self) -> (u32, u32) {
        ((self.rdev >> 20) as u32, (self.rdev & 0xf_ffff) as u32)
    }

    /// The value of xattr `name`, if set.
    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// What a directory entry or path resolves to.
enum Target {
    Inode(u64),
    Subvolume(u64),
    /// An entry naming a subvolume that is not linked here: what a
    /// snapshot keeps of a subvolume nested in its source.
    EmptySubvolDir,
}

/// A directory being listed during a walk.
struct Frame {
    /// Inode number of the directory.
    dir: u64,
    /// Length of this directory's path in the shared path buffer.
    path_len: usize,
    children: std::vec::IntoIter<DirItem>,
}

/// A subvolume tree and the inode number of its root directory.
struct FsTree {
    id: u64,
    root: TreeRoot,
    root_dirid: u64,
}

impl Image {
    fn fs_tree(&self, tree_id: u64) -> Result<FsTree, ReadError> {
        let is_subvol = tree_id == BTRFS_FS_TREE_OBJECTID
            || (BTRFS_FIRST_FREE_OBJECTID..=BTRFS_LAST_FREE_OBJECTID).contains(&tree_id);
        if !is_subvol {
            return Err(ReadError::NoSuchSubvolume(tree_id));
        }
        let item = self
            .root_item(tree_id)?
            .ok_or(ReadError::NoSuchSubvolume(tree_id))?;
        Ok(FsTree {
            id: tree_id,
            root: tree_root_of(&item),
            root_dirid: item.root_dirid,
        })
    }

    /// Visit every path of subvolume `tree_id`, depth first, the root
    /// directory first (with path `""`), each directory's entries in
    /// `DIR_INDEX` (creation) order.
    ///
    /// A hard-linked inode is visited once per path. An entry that is
    /// another subvolume is visited with kind [`FileKind::Subvolume`] and
    /// not descended into; walk that subvolume by its id. The walk keeps
    /// its own stack, so directory depth is bounded by memory only.
    /// An error from `f` stops the walk and is returned.
    pub fn walk(
        &self,
        tree_id: u64,
        f: &mut dyn FnMut(&Entry) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        self.walk_path(tree_id, b"", f)
    }

    /// Like [`Image::walk`], for the subtree at `path` (relative to the
    /// subvolume root; paths in the entries still are).
    pub fn walk_path(
        &self,
        tree_id: u64,
        path: &[u8],
        f: &mut dyn FnMut(&Entry) -> Result<(), ReadError>,
    ) -> Result<(), ReadError> {
        let tree = self.fs_tree(tree_id)?;
        let (target, path) = self.resolve(&tree, path)?;
        let top = self.target_entry(&tree.root, target, path)?;
        f(&top)?;
        if top.kind != FileKind::Dir {
            return Ok(());
        }

        let mut seen_dirs = HashSet::from([top.ino]);
        let mut path = top.path;
        let mut stack = vec![Frame {
            dir: top.ino,
            path_len: path.len(),
            children: self.read_dir(&tree.root, top.ino)?.into_iter(),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.next() else {
                stack.pop();
                continue;
            };
            path.truncate(frame.path_len);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&child.name);
            let target = self.entry_target(&tree, frame.dir, &child)?;
            let entry = self.target_entry(&tree.root, target, path.clone())?;
            f(&entry)?;
            if entry.kind == FileKind::Dir {
                if !seen_dirs.insert(entry.ino) {
                    return Err(ReadError::Corrupt(format!(
                        "directory inode {} reached twice (at {})",
                        entry.ino,
                        String::from_utf8_lossy(&path)
                    )));
                }
                stack.push(Frame {
                    dir: entry.ino,
                    path_len: path.len(),
                    children: self.read_dir(&tree.root, entry.ino)?.into_iter(),
                });
            }
        }
        Ok(())
    }

    /// The entry at `path` in subvolume `tree_id` (`""` is its root).
    /// Symlinks are not followed; a subvolume inside is returned as such.
    pub fn lookup(&self, tree_id: u64, path: &[u8]) -> Result<Entry, ReadError> {
        let tree = self.fs_tree(tree_id)?;
        let (target, path) = self.resolve(&tree, path)?;
        self.target_entry(&tree.root, target, path)
    }

    /// Follow `path` from the root of `tree` through `DIR_ITEM` look-ups.
    /// Returns the target and the normalised path.
    fn resolve(&self, tree: &FsTree, path: &[u8]) -> Result<(Target, Vec<u8>), ReadError> {
        let mut target = Target::Inode(tree.root_dirid);
        let mut normal = Vec::with_capacity(path.len());
        for name in path
            .split(|&b| b == b'/')
            .filter(|n| !n.is_empty() && *n != b".")
        {
            let not_found = || ReadError::NotFound(String::from_utf8_lossy(path).into_owned());
            let Target::Inode(dir) = target else {
                return Err(not_found()); // below a subvolume boundary
            };
            check_name(dir, name).map_err(|_| not_found())?;
            let key = Key::new(dir, BTRFS_DIR_ITEM_KEY, name_hash(name));
            let data = self.blocks.get(&tree.root, key)?.ok_or_else(not_found)?;
            let item = DirItem::parse_all(&data)?
                .into_iter()
                .find(|d| d.name == name)
                .ok_or_else(not_found)?;
            target = self.entry_target(tree, dir, &item)?;
            if !normal.is_empty() {
                normal.push(b'/');
            }
            normal.extend_from_slice(name);
        }
        Ok((target, normal))
    }

    /// What entry `item` of directory `dir` in `tree` names. A subvolume
    /// counts only when the root tree links it there (a `ROOT_REF` from
    /// this tree with the same directory and name), as in the kernel's
    /// lookup; otherwise it is an empty placeholder directory.
    fn entry_target(&self, tree: &FsTree, dir: u64, item: &DirItem) -> Result<Target, ReadError> {
        let id = item.location.objectid;
        match item.location.item_type {
            BTRFS_INODE_ITEM_KEY => Ok(Target::Inode(id)),
            BTRFS_ROOT_ITEM_KEY => {
                let key = Key::new(tree.id, BTRFS_ROOT_REF_KEY, id);
                let linked = match self.blocks.get(&self.root_tree(), key)? {
                    Some(data) => {
                        let r = RootRef::parse(&data)?;
                        r.dirid == dir && r.name == item.name
                    }
                    None => false,
                };
                Ok(if linked {
                    Target::Subvolume(id)
                } else {
                    Target::EmptySubvolDir
                })
            }
            _ => Err(ReadError::Corrupt(format!(
                "entry {:?} of directory {dir} points at {}",
                String::from_utf8_lossy(&item.name),
                item.location
            ))),
        }
    }

    /// The entries of directory `dir`, in index order, names checked.
    fn read_dir(&self, root: &TreeRoot, dir: u64) -> Result<Vec<DirItem>, ReadError> {
        let mut out = Vec::new();
        self.blocks.range(
            root,
            Key::new(dir, BTRFS_DIR_INDEX_KEY, 0),
            Key::new(dir, BTRFS_DIR_INDEX_KEY, u64::MAX),
            &mut |_, data| {
                for item in DirItem::parse_all(data)? {
                    check_name(dir, &item.name)?;
                    out.push(item);
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(out)
    }

    fn target_entry(
        &self,
        root: &TreeRoot,
        target: Target,
        path: Vec<u8>,
    ) -> Result<Entry, ReadError> {
        match target {
            Target::Inode(ino) => self.inode_entry(root, ino, path),
            Target::EmptySubvolDir => Ok(Entry {
                path,
                ino: BTRFS_EMPTY_SUBVOL_DIR_OBJECTID,
                kind: FileKind::Dir,
                mode: 0o040755,
                uid: 0,
                gid: 0,
                size: 0,
                nlink: 1,
                rdev: 0,
                atime: Timespec::default(),
                mtime: Timespec::default(),
                ctime: Timespec::default(),
                otime: Timespec::default(),
                flags: 0,
                symlink_target: None,
                xattrs: Vec::new(),
                subvolume: None,
            }),
            Target::Subvolume(id) => {
                let tree = self.fs_tree(id).map_err(|e| match e {
                    ReadError::NoSuchSubvolume(_) => ReadError::Corrupt(format!(
                        "{} points at missing subvolume {id}",
                        String::from_utf8_lossy(&path)
                    )),
                    e => e,
                })?;
                let mut entry = self.inode_entry(&tree.root, tree.root_dirid, path)?;
                entry.kind = FileKind::Subvolume;
                entry.subvolume = Some(id);
                Ok(entry)
            }
        }
    }

    /// Inode item, xattrs and symlink target of `ino`.
    fn inode_entry(&self, root: &TreeRoot, ino: u64, path: Vec<u8>) -> Result<Entry, ReadError> {
        let mut inode = None;
        let mut xattrs = Vec::new();
        // INODE_ITEM, INODE_REF, INODE_EXTREF, XATTR_ITEM sort together.
        self.blocks.range(
            root,
            Key::new(ino, BTRFS_INODE_ITEM_KEY, 0),
            Key::new(ino, BTRFS_XATTR_ITEM_KEY, u64::MAX),
            &mut |key, data| {
                match key.item_type {
                    BTRFS_INODE_ITEM_KEY => inode = Some(InodeItem::parse(data)?),
                    BTRFS_XATTR_ITEM_KEY => {
                        for x in DirItem::parse_all(data)? {
                            xattrs.push((x.name, x.data));
                        }
                    }
                    _ => {}
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;
        let what = || String::from_utf8_lossy(&path).into_owned();
        let inode = inode.ok_or_else(|| {
            ReadError::Corrupt(format!(
                "{} names inode {ino}, which has no inode item",
                what()
            ))
        })?;
        let kind = FileKind::from_mode(inode.mode).ok_or_else(|| {
            ReadError::Corrupt(format!(
                "inode {ino} ({}) has mode {:o}",
                what(),
                inode.mode
            ))
        })?;
        xattrs.sort();
        let symlink_target = match kind {
            FileKind::Symlink => Some(self.symlink_target(root, ino, inode.size, &what)?),
            _ => None,
        };
        Ok(Entry {
            path,
            ino,
            kind,
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            nlink: inode.nlink,
            rdev: inode.rdev,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            otime: inode.otime,
            flags: inode.flags,
            symlink_target,
            xattrs,
            subvolume: None,
        })
    }

    /// A symlink's target: the inline extent at offset 0, cut to the
    /// inode's size.
    fn symlink_target(
        &self,
        root: &TreeRoot,
        ino: u64,
        size: u64,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>, ReadError> {
        let key = Key::new(ino, BTRFS_EXTENT_DATA_KEY, 0);
        let Some(data) = self.blocks.get(root, key)? else {
            if size == 0 {
                return Ok(Vec::new());
            }
            return Err(ReadError::Corrupt(format!(
                "symlink {} has no extent",
                what()
            )));
        };
        match FileExtent::parse(&data)? {
            FileExtent::Inline {
                compression: BTRFS_COMPRESS_NONE,
                mut data,
                ..
            } => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if data.len() < size {
                    return Err(ReadError::Corrupt(format!(
                        "symlink {}: inode size {size}, inline data {} bytes",
                        what(),
                        data.len()
                    )));
                }
                data.truncate(size);
                Ok(data)
            }
            FileExtent::Inline { compression, .. } => Err(ReadError::Unsupported(format!(
                "symlink {} has a compressed (type {compression}) inline extent",
                what()
            ))),
            FileExtent::External { extent_type } => Err(ReadError::Unsupported(format!(
                "symlink {} has its target in a type {extent_type} extent, not inline",
                what()
            ))),
        }
    }
}

/// A directory entry name must be a single, non-empty path component.
fn check_name(dir: u64, name: &[u8]) -> Result<(), ReadError> {
    let ok = !name.is_empty()
        && name.len() <= BTRFS_NAME_LEN
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0);
    if ok {
        Ok(())
    } else {
        Err(ReadError::Corrupt(format!(
            "directory {dir} has an entry named {:?}",
            String::from_utf8_lossy(name)
        )))
    }
}

//! Subvolumes: root items, root back-references and the default subvolume.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;

use super::error::ReadError;
use super::format::*;
use super::image::Image;
use super::items::{DirItem, InodeRef, RootItem, RootRef, Timespec};
use super::tree::TreeRoot;

/// A subvolume, including the top-level one (id 5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subvolume {
    /// Tree id: 5 for the top level, 256 and up for the others.
    pub id: u64,
    /// Name in its parent directory (empty for the top level).
    pub name: Vec<u8>,
    /// Path from the top level, `/`-separated, no leading slash (e.g.
    /// `@nix` or `@/var/lib/machines`); empty for the top level. This is
    /// what `mount -o subvol=` takes.
    pub path: Vec<u8>,
    /// The subvolume holding it (`None` for the top level).
    pub parent_id: Option<u64>,
    /// Inode number, in the parent subvolume, of the directory holding it.
    pub dirid: u64,
    /// UUID of the subvolume (nil for a top level made by old tools).
    pub uuid: String,
    /// UUID of the subvolume this one is a snapshot of.
    pub parent_uuid: Option<String>,
    /// UUID of the subvolume this one was received from.
    pub received_uuid: Option<String>,
    /// Whether it is read-only.
    pub readonly: bool,
    /// Generation (transaction id) of its last change.
    pub generation: u64,
    /// When it was created.
    pub otime: Timespec,
}

fn uuid_if_set(u: &[u8; BTRFS_UUID_SIZE]) -> Option<String> {
    (u != &[0; BTRFS_UUID_SIZE]).then(|| format_uuid(u))
}

fn is_subvolume_id(id: u64) -> bool {
    id == BTRFS_FS_TREE_OBJECTID
        || (BTRFS_FIRST_FREE_OBJECTID..=BTRFS_LAST_FREE_OBJECTID).contains(&id)
}

impl Image {
    /// Every subvolume, ordered by id, the top level (5) first.
    ///
    /// Subvolumes without a back-reference (deleted, not yet cleaned) are
    /// left out.
    pub fn subvolumes(&self) -> Result<Vec<Subvolume>, ReadError> {
        let mut roots: BTreeMap<u64, RootItem> = BTreeMap::new();
        let mut backrefs: BTreeMap<u64, (u64, RootRef)> = BTreeMap::new();
        self.blocks.range(
            &self.root_tree(),
            Key::new(BTRFS_FS_TREE_OBJECTID, 0, 0),
            Key::new(BTRFS_LAST_FREE_OBJECTID, u8::MAX, u64::MAX),
            &mut |key, data| {
                if is_subvolume_id(key.objectid) {
                    match key.item_type {
                        // Keys ascend: a later (snapshot) item of an id wins.
                        BTRFS_ROOT_ITEM_KEY => {
                            roots.insert(key.objectid, RootItem::parse(data)?);
                        }
                        BTRFS_ROOT_BACKREF_KEY => {
                            let r = RootRef::parse(data)?;
                            backrefs.entry(key.objectid).or_insert((key.offset, r));
                        }
                        _ => {}
                    }
                }
                Ok(ControlFlow::Continue(()))
            },
        )?;

        let mut out: BTreeMap<u64, Subvolume> = BTreeMap::new();
        for (&id, item) in &roots {
            let (parent_id, dirid, name) = match backrefs.get(&id) {
                _ if id == BTRFS_FS_TREE_OBJECTID => (None, 0, Vec::new()),
                Some((parent, r)) => (Some(*parent), r.dirid, r.name.clone()),
                None => continue,
            };
            out.insert(
                id,
                Subvolume {
                    id,
                    name,
                    path: Vec::new(),
                    parent_id,
                    dirid,
                    uuid: format_uuid(&item.uuid),
                    parent_uuid: uuid_if_set(&item.parent_uuid),
                    received_uuid: uuid_if_set(&item.received_uuid),
                    readonly: item.readonly(),
                    generation: item.generation,
                    otime: item.otime,
                },
            );
        }

        // Paths: parent's path, the directory inside the parent, the name.
        let ids: Vec<u64> = out.keys().copied().collect();
        let mut paths: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        paths.insert(BTRFS_FS_TREE_OBJECTID, Vec::new());
        for id in ids {
            // Climb to a subvolume whose path is known, then come back down.
            let mut chain = vec![id];
            while let Some(&top) = chain.last() {
                if paths.contains_key(&top) {
                    chain.pop();
                    break;
                }
                let parent = out
                    .get(&top)
                    .ok_or(ReadError::NoSuchSubvolume(top))?
                    .parent_id
                    .ok_or_else(|| ReadError::Corrupt(format!("subvolume {top} has no parent")))?;
                if chain.contains(&parent) || chain.len() > out.len() {
                    return Err(ReadError::Corrupt(format!(
                        "subvolume {id} is its own ancestor"
                    )));
                }
                chain.push(parent);
            }
            while let Some(child) = chain.pop() {
                let sv = out.get(&child).ok_or(ReadError::NoSuchSubvolume(child))?;
                let parent = sv.parent_id.unwrap_or(BTRFS_FS_TREE_OBJECTID);
                let parent_item = roots
                    .get(&parent)
                    .ok_or(ReadError::NoSuchSubvolume(parent))?;
                let mut path = paths.get(&parent).cloned().unwrap_or_default();
                let dir =
                    self.dir_path(&tree_root_of(parent_item), parent_item.root_dirid, sv.dirid)?;
                for part in dir.iter().chain(std::iter::once(&sv.name)) {
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(part);
                }
                paths.insert(child, path);
            }
        }
        for (id, sv) in out.iter_mut() {
            sv.path = paths.remove(id).unwrap_or_default();
        }
        Ok(out.into_values().collect())
    }

    /// The subvolume mounted when no `subvol=` option is given: the target
    /// of the root tree's `default` directory entry, 5 when there is none.
    pub fn default_subvolume(&self) -> Result<u64, ReadError> {
        let key = Key::new(
            self.sb.root_dir_objectid,
            BTRFS_DIR_ITEM_KEY,
            name_hash(b"default"),
        );
        let Some(data) = self.blocks.get(&self.root_tree(), key)? else {
            return Ok(BTRFS_FS_TREE_OBJECTID);
        };
        for item in DirItem::parse_all(&data)? {
            if item.name == b"default" {
                if item.location.item_type != BTRFS_ROOT_ITEM_KEY {
                    return Err(ReadError::Corrupt(format!(
                        "default subvolume entry points at {}",
                        item.location
                    )));
                }
                return Ok(item.location.objectid);
            }
        }
        Ok(BTRFS_FS_TREE_OBJECTID)
    }

    /// Names of the directories from `root_dirid` down to `dirid` in a
    /// subvolume tree, following each directory's inode reference up.
    pub(crate) fn dir_path(
        &self,
        root: &TreeRoot,
        root_dirid: u64,
        dirid: u64,
    ) -> Result<Vec<Vec<u8>>, ReadError> {
        let mut parts = Vec::new();
        let mut seen = HashSet::new();
        let mut ino = dirid;
        while ino != root_dirid {
            if !seen.insert(ino) {
                return Err(ReadError::Corrupt(format!(
                    "directory {dirid} is its own ancestor"
                )));
            }
            let r = self.first_inode_ref(root, ino)?.ok_or_else(|| {
                ReadError::Corrupt(format!("directory {ino} has no inode reference"))
            })?;
            parts.push(r.name);
            ino = r.parent;
        }
        parts.reverse();
        Ok(parts)
    }

    /// The first name of inode `ino`: an `INODE_REF`, else an `INODE_EXTREF`.
    pub(crate) fn first_inode_ref(
        &self,
        root: &TreeRoot,
        ino: u64,
    ) -> Result<Option<InodeRef>, ReadError> {
        let mut found = None;
        self.blocks.range(
            root,
            Key::new(ino, BTRFS_INODE_REF_KEY, 0),
            Key::new(ino, BTRFS_INODE_EXTREF_KEY, u64::MAX),
            &mut |key, data| {
                let refs = if key.item_type == BTRFS_INODE_REF_KEY {
                    InodeRef::parse_refs(key.offset, data)?
                } else {
                    InodeRef::parse_extrefs(data)?
                };
                found = refs.into_iter().next();
                Ok(if found.is_some() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )?;
        Ok(found)
    }
}

/// Where the tree described by a root item starts.
pub(crate) fn tree_root_of(item: &RootItem) -> TreeRoot {
    TreeRoot {
        bytenr: item.bytenr,
        level: item.level,
        generation: item.generation,
    }
}

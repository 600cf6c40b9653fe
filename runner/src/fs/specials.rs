//! What a build without a user namespace cannot stage as it is, and how
//! the image gets it anyway: device nodes (mknod needs root) are staged as
//! FIFOs with the node's permission bits and times, or, for squashfs, not
//! at all; file capabilities (setting `security.capability` needs
//! CAP_SETFCAP) are staged under a placeholder name where the filesystem's
//! fix-up renames one ([`placeholder`]), or not at all. The staging step
//! records both ([`Specials`]); each filesystem's fix-up writes them into
//! the image (btrfs: the rewriter; ext4: debugfs; erofs: rootbox's inode
//! writer; squashfs: pseudo definitions), and the read-back compares the
//! image with the tree as it should have been staged ([`expect`]).

use std::collections::{BTreeMap, HashMap};

use rootbox_images::fs::{Filesystem, Name};
use serde::{Deserialize, Serialize};

use super::{Inode, S_IFMT};

/// `S_IFCHR`.
pub const S_IFCHR: u32 = 0o020000;
/// `S_IFBLK`.
pub const S_IFBLK: u32 = 0o060000;
/// `S_IFIFO`.
pub const S_IFIFO: u32 = 0o010000;

/// What the staging step could not stage as it is, by staged path
/// (relative to the staging directory, as bytes: names need not be UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Specials {
    /// Device nodes.
    pub devices: Vec<Device>,
    /// Files whose `security.capability` could not be set.
    pub caps: Vec<Cap>,
}

/// A device node staged as a FIFO (or, for squashfs, not staged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The staged path (or, in [`Specials::in_image`], the image path).
    pub path: Vec<u8>,
    /// [`S_IFCHR`] or [`S_IFBLK`] with the permission bits.
    pub mode: u32,
    /// The device number (`st_rdev`).
    pub rdev: u64,
}

/// A file capability that could not be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cap {
    /// The staged path (or, in [`Specials::in_image`], the image path).
    pub path: Vec<u8>,
    /// The `security.capability` value.
    pub value: Vec<u8>,
}

/// The xattr a staged file carries its capabilities in when the
/// filesystem's fix-up renames it to `security.capability`: btrfs's
/// rewriter renames `user.rootbox.fscaps`, rootbox's erofs writer
/// `user.capability`; ext4 (debugfs sets the value) and squashfs (a pseudo
/// definition does) need none.
pub fn placeholder(filesystem: Option<Filesystem>) -> Option<&'static str> {
    match filesystem {
        None => Some("user.rootbox.fscaps"),
        Some(Filesystem::Erofs) => Some("user.capability"),
        Some(Filesystem::Ext4 | Filesystem::Squashfs) => None,
    }
}

/// Whether device nodes are staged as FIFOs: squashfs gets them as pseudo
/// definitions instead (mksquashfs ignores a pseudo definition whose path
/// exists in the source).
pub fn fifo_for_devices(filesystem: Option<Filesystem>) -> bool {
    filesystem != Some(Filesystem::Squashfs)
}

/// `(major, minor)` of a device number, as glibc splits it.
pub fn split(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

impl Specials {
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.caps.is_empty()
    }

    /// The records below `root` (the staged directory of the image's `/`),
    /// by image path (`/dev/null`).
    pub fn in_image(&self, root: &[u8]) -> Specials {
        let image = |p: &[u8]| -> Option<Vec<u8>> {
            let rest = p.strip_prefix(root)?;
            match rest {
                [] => Some(b"/".to_vec()),
                [b'/', ..] => Some(rest.to_vec()),
                _ => None,
            }
        };
        Specials {
            devices: self
                .devices
                .iter()
                .filter_map(|d| {
                    Some(Device {
                        path: image(&d.path)?,
                        ..d.clone()
                    })
                })
                .collect(),
            caps: self
                .caps
                .iter()
                .filter_map(|c| {
                    Some(Cap {
                        path: image(&c.path)?,
                        ..c.clone()
                    })
                })
                .collect(),
        }
    }
}

/// The walked tree (`tree`, of the staged tree of `filesystem`, caller's
/// ids `owner`) as the build meant it: FIFOs standing for device nodes
/// become them (squashfs: the nodes are added), placeholders become
/// `security.capability`, on every path of the inode. `specials` by image
/// path ([`Specials::in_image`]).
pub fn expect(
    tree: &mut Vec<Inode>,
    specials: &Specials,
    filesystem: Filesystem,
    owner: (u32, u32),
) {
    let placeholder = placeholder(Some(filesystem)).map(Name::from);
    let cap_name = Name::from("security.capability");
    let ino_of: HashMap<&[u8], Option<u64>> =
        tree.iter().map(|i| (i.path.as_bytes(), i.ino)).collect();
    let mut caps: HashMap<Vec<u8>, &[u8]> = HashMap::new();
    let mut cap_inos: HashMap<u64, &[u8]> = HashMap::new();
    for c in &specials.caps {
        caps.insert(c.path.clone(), &c.value);
        if let Some(Some(ino)) = ino_of.get(&c.path[..]) {
            cap_inos.insert(*ino, &c.value);
        }
    }
    let devices: BTreeMap<&[u8], &Device> =
        specials.devices.iter().map(|d| (&d.path[..], d)).collect();
    for i in tree.iter_mut() {
        if let Some(d) = devices.get(i.path.as_bytes()) {
            if i.mode & S_IFMT == S_IFIFO {
                i.mode = d.mode;
                i.rdev = Some(split(d.rdev));
            }
        }
        let value = caps
            .get(i.path.as_bytes())
            .copied()
            .or_else(|| i.ino.and_then(|n| cap_inos.get(&n).copied()));
        if let Some(v) = value {
            let x = i.xattrs.get_or_insert_with(BTreeMap::new);
            if let Some(p) = &placeholder {
                x.remove(p);
            }
            x.insert(cap_name.clone(), v.to_vec());
        }
    }
    if !fifo_for_devices(Some(filesystem)) {
        let have: std::collections::HashSet<Vec<u8>> =
            tree.iter().map(|i| i.path.as_bytes().to_vec()).collect();
        for d in specials.devices.iter().filter(|d| !have.contains(&d.path)) {
            tree.push(Inode {
                path: Name::from_bytes(d.path.clone()),
                ino: None,
                mode: d.mode,
                uid: owner.0,
                gid: owner.1,
                rdev: Some(split(d.rdev)),
                target: None,
                xattrs: Some(BTreeMap::new()),
            });
        }
        tree.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(path: &str, ino: u64, mode: u32) -> Inode {
        Inode {
            path: path.into(),
            ino: Some(ino),
            mode,
            uid: 1001,
            gid: 1001,
            rdev: None,
            target: None,
            xattrs: Some(BTreeMap::new()),
        }
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        assert_eq!(split(0x0103), (1, 3));
        assert_eq!(split(0x0700), (7, 0));
        assert_eq!(split(libc::makedev(259, 65536)), (259, 65536));
    }

    #[test]
    fn the_expected_tree_has_the_nodes_and_caps_not_their_stand_ins() {
        let mut placeholder = inode("/bin/ping", 3, 0o100755);
        placeholder.xattrs = Some(BTreeMap::from([(
            Name::from("user.capability"),
            vec![1, 2],
        )]));
        let mut tree = vec![
            inode("/", 1, 0o40755),
            inode("/dev/null", 2, 0o10666),
            placeholder,
            inode("/bin/ping2", 3, 0o100755),
        ];
        let s = Specials {
            devices: vec![Device {
                path: b"/dev/null".to_vec(),
                mode: S_IFCHR | 0o666,
                rdev: 0x0103,
            }],
            caps: vec![Cap {
                path: b"/bin/ping".to_vec(),
                value: vec![1, 2],
            }],
        };
        expect(&mut tree, &s, Filesystem::Erofs, (1001, 1001));
        assert_eq!((tree[1].mode, tree[1].rdev), (0o20666, Some((1, 3))));
        let want = Some(BTreeMap::from([(
            Name::from("security.capability"),
            vec![1, 2],
        )]));
        assert_eq!(tree[2].xattrs, want);
        assert_eq!(tree[3].xattrs, want, "a hard link carries them too");

        let mut tree = vec![inode("/", 1, 0o40755), inode("/dev", 2, 0o40755)];
        expect(&mut tree, &s, Filesystem::Squashfs, (1001, 1001));
        assert_eq!(tree.len(), 3);
        assert_eq!(tree[2].path, "/dev/null");
        assert_eq!(tree[2].mode, 0o20666);
    }

    #[test]
    fn records_are_named_by_image_path() {
        let s = Specials {
            devices: vec![Device {
                path: b"root/dev/null".to_vec(),
                mode: S_IFCHR | 0o666,
                rdev: 0x0103,
            }],
            caps: vec![Cap {
                path: b"rootless/x".to_vec(),
                value: vec![],
            }],
        };
        let i = s.in_image(b"root");
        assert_eq!(i.devices[0].path, b"/dev/null");
        assert!(i.caps.is_empty());
    }
}

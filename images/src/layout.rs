//! The validated subvolume layout of an image.
//!
//! In the image every subvolume sits at the top level of the filesystem,
//! named after the subvolume (`@`, `@nix`, …), as NixOS layouts expect
//! (`subvol=@nix`). The booted system mounts each at its mount point.
//! To build that, the runner stages one top-level directory per subvolume,
//! named after it, and passes `--subvol TYPE:NAME` for each
//! ([`Layout::mkfs_subvol_args`]). A subvolume receives the part of the
//! rootfs under its mount point, minus deeper mount points, which stay as
//! empty directories ([`PlannedSubvol::masked`]).

use std::collections::HashMap;
use std::io;
use std::path::Path;

pub use crate::image_path::{check_image_path, normalize_image_path, ImagePathError};
use crate::spec::{InodeFlag, SubvolKind, SubvolumeSpec};

/// Whether `path` is strictly below `dir` (both normalized, absolute).
fn is_below(dir: &str, path: &str) -> bool {
    if dir == "/" {
        path != "/"
    } else {
        path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
    }
}

/// `path` relative to `dir` (no leading `/`; empty when equal), if `path`
/// is `dir` or below it.
fn relative_to(dir: &str, path: &str) -> Option<String> {
    if dir == path {
        Some(String::new())
    } else if is_below(dir, path) {
        Some(path[dir.len()..].trim_start_matches('/').to_owned())
    } else {
        None
    }
}

fn depth(mountpoint: &str) -> usize {
    mountpoint.split('/').filter(|c| !c.is_empty()).count()
}

/// A subvolume layout that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// No subvolumes were given.
    #[error("the layout has no subvolumes; without subvolumes the rootfs goes to the top level of the filesystem and no layout is needed")]
    Empty,
    /// A subvolume name is not a valid single path component.
    #[error("subvolume name {name:?} {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two subvolumes share a name.
    #[error("two subvolumes are named {0:?}; names must be unique")]
    DuplicateName(String),
    /// A mount point is not an absolute, normalized path.
    #[error("subvolume {name:?}: mount point {source}")]
    BadMountpoint {
        /// The subvolume.
        name: String,
        /// What is wrong with its mount point.
        source: ImagePathError,
    },
    /// Two subvolumes share a mount point.
    #[error("subvolumes {first:?} and {second:?} are both mounted at {mountpoint}")]
    DuplicateMountpoint {
        /// The shared mount point.
        mountpoint: String,
        /// One subvolume.
        first: String,
        /// The other.
        second: String,
    },
    /// More than one subvolume is of kind `default`/`default-ro`.
    #[error("subvolumes {first:?} and {second:?} are both marked default; a filesystem has one default subvolume")]
    TwoDefaults {
        /// One subvolume.
        first: String,
        /// The other.
        second: String,
    },
}

/// One subvolume of a validated [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSubvol {
    /// Its name: the top-level directory of the filesystem it becomes.
    pub name: String,
    /// Where the booted system mounts it (absolute, normalized).
    pub mountpoint: String,
    /// How mkfs creates it.
    pub kind: SubvolKind,
    /// Inode flags of its root directory, inherited by its files.
    pub inode_flags: Vec<InodeFlag>,
    /// Paths relative to the mount point (no leading `/`) where this
    /// subvolume holds an empty directory because the nearest deeper
    /// subvolume is mounted there. For `/`, `/nix` and `/nix/store`, `/`
    /// masks `nix` and `/nix` masks `store`.
    pub masked: Vec<String>,
}

/// A validated set of subvolumes; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    subvols: Vec<PlannedSubvol>,
}

impl Layout {
    /// Validates the subvolumes: names are single path components (not
    /// `.`/`..`, no `/` or NUL, at most 255 bytes) and unique; mount points
    /// are absolute, normalized and unique; at most one subvolume is a
    /// default. Nested mount points (`/`, `/nix`, `/nix/store`) are fine.
    pub fn new(specs: &[SubvolumeSpec]) -> Result<Layout, LayoutError> {
        if specs.is_empty() {
            return Err(LayoutError::Empty);
        }
        let mut by_name = HashMap::new();
        let mut by_mountpoint: HashMap<&str, &str> = HashMap::new();
        let mut default: Option<&str> = None;
        for s in specs {
            let bad = |reason| {
                Err(LayoutError::BadName {
                    name: s.name.clone(),
                    reason,
                })
            };
            match s.name.as_str() {
                "" => return bad("is empty"),
                "." | ".." => return bad("is not a directory name"),
                n if n.contains('/') => return bad("contains '/'; subvolumes sit at the top level, so a name is one path component (e.g. \"@home\")"),
                n if n.contains('\0') => return bad("contains a NUL byte"),
                n if n.len() > 255 => return bad("is longer than 255 bytes"),
                _ => {}
            }
            if by_name.insert(s.name.as_str(), ()).is_some() {
                return Err(LayoutError::DuplicateName(s.name.clone()));
            }
            check_image_path(&s.mountpoint).map_err(|source| LayoutError::BadMountpoint {
                name: s.name.clone(),
                source,
            })?;
            if let Some(first) = by_mountpoint.insert(&s.mountpoint, &s.name) {
                return Err(LayoutError::DuplicateMountpoint {
                    mountpoint: s.mountpoint.clone(),
                    first: first.into(),
                    second: s.name.clone(),
                });
            }
            if s.kind.is_default() {
                if let Some(first) = default.replace(&s.name) {
                    return Err(LayoutError::TwoDefaults {
                        first: first.into(),
                        second: s.name.clone(),
                    });
                }
            }
        }
        let mut subvols: Vec<PlannedSubvol> = specs
            .iter()
            .map(|s| PlannedSubvol {
                name: s.name.clone(),
                mountpoint: s.mountpoint.clone(),
                kind: s.kind,
                inode_flags: s.inode_flags.clone(),
                masked: Vec::new(),
            })
            .collect();
        subvols
            .sort_by(|a, b| (depth(&a.mountpoint), &a.name).cmp(&(depth(&b.mountpoint), &b.name)));
        let mountpoints: Vec<String> = subvols.iter().map(|s| s.mountpoint.clone()).collect();
        for sv in &mut subvols {
            let below: Vec<&String> = mountpoints
                .iter()
                .filter(|m| is_below(&sv.mountpoint, m))
                .collect();
            sv.masked = below
                .iter()
                .filter(|m| !below.iter().any(|mid| is_below(mid, m)))
                .map(|m| relative_to(&sv.mountpoint, m).unwrap_or_default())
                .collect();
            sv.masked.sort();
        }
        Ok(Layout { subvols })
    }

    /// The subvolumes, by mount point depth, then name.
    pub fn subvolumes(&self) -> &[PlannedSubvol] {
        &self.subvols
    }

    /// Whether a subvolume is mounted at `/`.
    pub fn has_root(&self) -> bool {
        self.subvols.iter().any(|s| s.mountpoint == "/")
    }

    /// The subvolume holding an image path — the one with the deepest mount
    /// point containing it — and the path relative to that mount point (no
    /// leading `/`, empty for the mount point itself). `None` when no
    /// subvolume covers the path (e.g. `/etc` when `/` is a tmpfs) or the
    /// path is not absolute.
    pub fn locate(&self, image_path: &str) -> Option<(&PlannedSubvol, String)> {
        let path = normalize_image_path(image_path).ok()?;
        self.subvols
            .iter()
            .rev()
            .find_map(|s| relative_to(&s.mountpoint, &path).map(|rel| (s, rel)))
    }

    /// The rootfs paths that no subvolume covers, as image paths (`/etc`,
    /// `/var/cache`), sorted: what would be left out of the image. Empty
    /// when a subvolume is mounted at `/`.
    ///
    /// `list_dir` lists the names in a rootfs directory given by its path
    /// relative to the rootfs (`""` is the rootfs itself, then `"var"`,
    /// `"var/lib"`). It is only called for directories that are ancestors
    /// of a mount point; it should fail (or return nothing) for a
    /// non-directory. [`list_fs_dir`] lists a real directory tree.
    pub fn uncovered(
        &self,
        mut list_dir: impl FnMut(&str) -> io::Result<Vec<String>>,
    ) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        if self.has_root() {
            return Ok(out);
        }
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            for name in list_dir(&rel)? {
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let child = format!("/{child_rel}");
                let covered = self
                    .subvols
                    .iter()
                    .any(|s| relative_to(&s.mountpoint, &child).is_some());
                if covered {
                    continue;
                }
                if self.subvols.iter().any(|s| is_below(&child, &s.mountpoint)) {
                    pending.push(child_rel);
                } else {
                    out.push(child);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The `--subvol` arguments for mkfs.btrfs, e.g. `["default:@",
    /// "rw:@nix"]`: one `TYPE:NAME` per subvolume, where `NAME` is a
    /// top-level directory of the staging root.
    pub fn mkfs_subvol_args(&self) -> Vec<String> {
        self.subvols
            .iter()
            .map(|s| format!("{}:{}", s.kind, s.name))
            .collect()
    }

    /// The `--inode-flags` arguments for mkfs.btrfs, e.g.
    /// `["nodatacow:@swap"]`: one `FLAGS:NAME` per subvolume with inode
    /// flags, `NAME` being its top-level directory of the staging root.
    /// mkfs sets them on the subvolume's root directory, whose files
    /// inherit them.
    pub fn mkfs_inode_flag_args(&self) -> Vec<String> {
        self.subvols
            .iter()
            .filter(|s| !s.inode_flags.is_empty())
            .map(|s| {
                let flags: Vec<&str> = s.inode_flags.iter().map(|f| f.as_str()).collect();
                format!("{}:{}", flags.join(","), s.name)
            })
            .collect()
    }
}

/// A `list_dir` callback for [`Layout::uncovered`] that reads the tree at
/// `root` with `std::fs`. Names that are not UTF-8 are converted lossily.
/// A path that is not a directory (a symlink included: it is not
/// followed) is an error, since a mount point lies below it.
pub fn list_fs_dir(root: &Path) -> impl FnMut(&str) -> io::Result<Vec<String>> + '_ {
    move |rel| {
        let dir = root.join(rel);
        if !dir.symlink_metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a directory, but a subvolume is mounted below /{rel}",
                    dir.display()
                ),
            ));
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(name: &str, mp: &str, kind: SubvolKind) -> SubvolumeSpec {
        SubvolumeSpec {
            name: name.into(),
            mountpoint: mp.into(),
            kind,
            inode_flags: Vec::new(),
        }
    }

    fn layout(list: &[(&str, &str)]) -> Result<Layout, LayoutError> {
        let specs: Vec<_> = list.iter().map(|(n, m)| sv(n, m, SubvolKind::Rw)).collect();
        Layout::new(&specs)
    }

    #[test]
    fn nested_layout_masks_nearest() {
        let l = layout(&[
            ("@store", "/nix/store"),
            ("@", "/"),
            ("@nix", "/nix"),
            ("@home", "/home"),
        ])
        .unwrap();
        let got: Vec<(&str, &str, Vec<&str>)> = l
            .subvolumes()
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.mountpoint.as_str(),
                    s.masked.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("@", "/", vec!["home", "nix"]),
                ("@home", "/home", vec![]),
                ("@nix", "/nix", vec!["store"]),
                ("@store", "/nix/store", vec![]),
            ]
        );
        assert!(l.has_root());
        // Without the intermediate /nix, / masks nix/store directly.
        let l = layout(&[("@", "/"), ("@s", "/nix/store"), ("@l", "/var/lib/x")]).unwrap();
        assert_eq!(l.subvolumes()[0].masked, vec!["nix/store", "var/lib/x"]);
    }

    #[test]
    fn locate_picks_deepest() {
        let l = layout(&[("@", "/"), ("@nix", "/nix"), ("@store", "/nix/store")]).unwrap();
        let at = |p: &str| l.locate(p).map(|(s, r)| (s.name.clone(), r));
        assert_eq!(
            at("/nix/store/abc-x/bin"),
            Some(("@store".into(), "abc-x/bin".into()))
        );
        assert_eq!(
            at("/nix/nix-path-registration"),
            Some(("@nix".into(), "nix-path-registration".into()))
        );
        assert_eq!(at("/nix"), Some(("@nix".into(), "".into())));
        assert_eq!(at("/nixos"), Some(("@".into(), "nixos".into())));
        assert_eq!(at("/"), Some(("@".into(), "".into())));
        assert_eq!(at("relative"), None);
        let l = layout(&[("@nix", "/nix"), ("@persist", "/persist")]).unwrap();
        assert!(!l.has_root());
        assert_eq!(l.locate("/etc/passwd"), None);
        assert_eq!(l.locate("/persistent"), None);
    }

    #[test]
    fn validation_errors() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "no subvolumes"),
            (vec![("", "/")], "is empty"),
            (vec![("..", "/")], "not a directory name"),
            (vec![("@/home", "/home")], "one path component"),
            (vec![("a\0", "/")], "NUL"),
            (
                vec![("@", "/"), ("@", "/x")],
                "two subvolumes are named \"@\"",
            ),
            (vec![("@", "")], "empty path"),
            (vec![("@", "home")], "not absolute"),
            (vec![("@", "/home/")], "write \"/home\""),
            (vec![("@", "/a/./b")], "write \"/a/b\""),
            (
                vec![("@a", "/home"), ("@b", "/home")],
                "both mounted at /home",
            ),
            (vec![("@a", "/home"), ("@b", "/home/")], "write \"/home\""),
        ];
        for (list, needle) in cases {
            let e = layout(&list).unwrap_err().to_string();
            assert!(e.contains(needle), "{list:?}: {e}");
        }
        let long = "x".repeat(256);
        assert!(layout(&[(&long, "/")])
            .unwrap_err()
            .to_string()
            .contains("255"));
        let e = Layout::new(&[
            sv("@", "/", SubvolKind::Default),
            sv("@b", "/b", SubvolKind::DefaultRo),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            LayoutError::TwoDefaults {
                first: "@".into(),
                second: "@b".into()
            }
        );
    }

    #[test]
    fn mkfs_args() {
        let l = Layout::new(&[
            sv("@nix", "/nix", SubvolKind::Rw),
            sv("@", "/", SubvolKind::Default),
            sv("@ro", "/ro", SubvolKind::Ro),
        ])
        .unwrap();
        assert_eq!(l.mkfs_subvol_args(), vec!["default:@", "rw:@nix", "ro:@ro"]);
        assert!(l.mkfs_inode_flag_args().is_empty());
        let flagged = |name: &str, mp: &str, flags: Vec<InodeFlag>| SubvolumeSpec {
            inode_flags: flags,
            ..sv(name, mp, SubvolKind::Rw)
        };
        let l = Layout::new(&[
            sv("@", "/", SubvolKind::Default),
            flagged("@swap", "/swap", vec![InodeFlag::Nodatacow]),
            flagged(
                "@vm",
                "/var/lib/vm",
                vec![InodeFlag::Nodatacow, InodeFlag::Nodatasum],
            ),
        ])
        .unwrap();
        assert_eq!(
            l.mkfs_inode_flag_args(),
            vec!["nodatacow:@swap", "nodatacow,nodatasum:@vm"]
        );
    }

    #[test]
    fn uncovered_descends_only_into_ancestors() {
        let tree: HashMap<&str, Vec<&str>> = HashMap::from([
            ("", vec!["etc", "nix", "var", "persist", "home"]),
            ("var", vec!["cache", "lib"]),
            ("var/lib", vec!["nixos", "machines"]),
        ]);
        let mut calls = Vec::new();
        let l = layout(&[
            ("@nix", "/nix"),
            ("@p", "/persist"),
            ("@n", "/var/lib/nixos"),
        ])
        .unwrap();
        let out = l
            .uncovered(|rel| {
                calls.push(rel.to_owned());
                tree.get(rel)
                    .map(|v| v.iter().map(|s| s.to_string()).collect())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, rel.to_owned()))
            })
            .unwrap();
        assert_eq!(
            out,
            vec!["/etc", "/home", "/var/cache", "/var/lib/machines"]
        );
        calls.sort();
        assert_eq!(calls, vec!["", "var", "var/lib"]);
        let rooted = layout(&[("@", "/"), ("@nix", "/nix")]).unwrap();
        assert!(rooted
            .uncovered(|_| panic!("not called"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn uncovered_on_real_tree() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["etc", "nix/store", "var/log"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("README"), "x").unwrap();
        let l = layout(&[("@nix", "/nix"), ("@log", "/var/log")]).unwrap();
        let out = l.uncovered(list_fs_dir(dir.path())).unwrap();
        assert_eq!(out, vec!["/README", "/etc"]);
        std::fs::remove_dir_all(dir.path().join("var")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("var")).unwrap();
        let e = l.uncovered(list_fs_dir(dir.path())).unwrap_err();
        assert!(e.to_string().contains("mounted below /var"), "{e}");
    }
}

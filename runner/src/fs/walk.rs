//! The staged tree as the build's namespace shows it: every inode, names
//! as bytes ([`walk`]); and where it came from, so that messages name a
//! path as the user gave it ([`Origin`]).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use rootbox_images::fs::{ext4::Content, Name};
use serde::Serialize;

use super::Inode;

/// Every inode of the tree at `root` as this process sees it (lstat, not
/// following symlinks), sorted by path, and its size for ext4. Names are
/// taken as bytes; errors name a path as `origin` says the user gave it.
pub fn walk(root: &Path, origin: &Origin) -> Result<(Vec<Inode>, Content)> {
    let mut w = Walk {
        origin,
        out: Vec::new(),
        content: Content::default(),
        seen: std::collections::HashSet::new(),
    };
    w.walk_into(root, Name::root())?;
    let (mut out, content) = (w.out, w.content);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((out, content))
}

struct Walk<'a> {
    origin: &'a Origin,
    out: Vec<Inode>,
    content: Content,
    seen: std::collections::HashSet<(u64, u64)>,
}

impl Walk<'_> {
    fn walk_into(&mut self, at: &Path, path: Name) -> Result<()> {
        let origin = self.origin;
        let shown = || origin.describe(&path);
        let m = fs::symlink_metadata(at).with_context(|| format!("lstat {}", shown()))?;
        let ft = m.file_type();
        if self.seen.insert((m.dev(), m.ino())) {
            self.content.inodes += 1;
            self.content.blocks += if ft.is_dir() {
                1
            } else {
                m.len().div_ceil(rootbox_images::fs::ext4::BLOCK)
            };
        }
        let rdev = (ft.is_block_device() || ft.is_char_device())
            .then(|| (libc::major(m.rdev()), libc::minor(m.rdev())));
        let target = if ft.is_symlink() {
            let t = fs::read_link(at).with_context(|| format!("readlink {}", shown()))?;
            Some(Name::from_bytes(t.into_os_string().into_vec()))
        } else {
            None
        };
        let mut xattrs = BTreeMap::new();
        if !ft.is_symlink() {
            let names =
                xattr::list(at).with_context(|| format!("listing the xattrs of {}", shown()))?;
            for name in names {
                let n = Name::from_bytes(name.as_bytes());
                if n.as_bytes().starts_with(b"system.") {
                    continue;
                }
                if let Some(v) = xattr::get(at, &name)
                    .with_context(|| format!("reading xattr {n} of {}", shown()))?
                {
                    xattrs.insert(n, v);
                }
            }
        }
        self.out.push(Inode {
            path: path.clone(),
            ino: Some(m.ino()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            rdev,
            target,
            xattrs: Some(xattrs),
        });
        if ft.is_dir() {
            let mut names: Vec<_> = fs::read_dir(at)
                .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect())
                .with_context(|| format!("listing {}", shown()))?;
            names.sort();
            for n in names {
                self.walk_into(&at.join(&n), path.join(n.as_bytes()))?;
            }
        }
        Ok(())
    }
}

/// Where the staged tree came from, to name a path as the user gave it
/// (never as the staging tree has it).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Origin {
    /// The rootfs as the user gave it (the spec's `rootfs`, a directory or
    /// an archive).
    pub rootfs: Option<String>,
    /// The store directory (`/nix/store`): paths below it come from the
    /// closure and are named as they are.
    pub store_dir: Option<String>,
}

impl Origin {
    /// The path `path` of the image as the user knows it: below the
    /// rootfs (`rootfs/srv/data`), or an image path of its own (a store
    /// path, the registration).
    pub fn describe(&self, path: &Name) -> String {
        let in_store = self
            .store_dir
            .as_ref()
            .is_some_and(|s| path.as_bytes().starts_with(s.as_bytes()));
        match &self.rootfs {
            Some(r) if !in_store && path != "/" => {
                format!("{}{path}", r.trim_end_matches('/'))
            }
            Some(r) if !in_store => r.clone(),
            _ => path.to_string(),
        }
    }
}

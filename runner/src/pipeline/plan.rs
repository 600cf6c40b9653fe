//! The staging plan: what the staging tree will hold, decided by the
//! staging step inside the namespace (where sources look as mkfs will see
//! them), before anything is mounted.
//!
//! The staging tree is a tmpfs with one top-level directory per subvolume.
//! Sources reach it in the cheapest form that keeps what mkfs will record
//! right:
//!
//! - a *clean* subtree — every owner and every ACL id maps into the
//!   namespace — is bind-mounted whole (zero copy);
//! - a directory that must differ from its source (a subvolume's top, the
//!   path down to a deeper mount point, a directory whose owner or ACL does
//!   not map) is recreated on the tmpfs with the source's metadata, and its
//!   children are staged one by one;
//! - a file, or a mostly-unclean subtree, whose owner does not map is
//!   copied into scratch space (reflinked where the filesystem can) inside
//!   the namespace, where the copy becomes root's, and the copy is bound;
//! - symlinks under a recreated directory are recreated (a symlink cannot
//!   be bind-mounted).
//!
//! The walk also counts files and bytes, for the report and the size
//! estimate. Its output is a list of [`Op`]s, which [`super::stage`] makes.
//! A source's xattrs and ACLs are read and translated by [`xattrs`].

mod xattrs;

use std::collections::{HashMap, HashSet};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::ids::{overflow_ids, strip_setid};
use super::job::{Counts, Root};
use super::ops::{Meta, Op};
use super::request::StoreStaging;

/// The planner: walks sources, emits [`Op`]s.
pub struct Planner {
    overflow: (u32, u32),
    pub scratch: PathBuf,
    pub ops: Vec<Op>,
    pub counts: Counts,
    pub warnings: Vec<String>,
    /// Outside owners seen that the namespace does not map (for messages).
    pub unmapped: Vec<PathBuf>,
    /// Inside ids the staged tree will hold: what verification allows.
    pub uids: HashSet<u32>,
    pub gids: HashSet<u32>,
    pub staging: StoreStaging,
    /// Device nodes (staging path, rdev) whose numbers the image needs.
    pub devices: Vec<(PathBuf, u64)>,
    /// Staging without a user namespace: copy everything.
    direct: bool,
    /// Copy everything into the staging tmpfs, in sorted order (reproducible
    /// images: mkfs numbers inodes in the order the staging tree lists).
    pub copy_all: bool,
    /// The newest mtime among the staged sources.
    pub max_mtime: i64,
    copies: u64,
    /// Files whose xattrs are listed but cannot be read (Nix 2.34's sandbox
    /// answers getxattr with ENOTSUP): (path, xattr name, error).
    unreadable_xattrs: Vec<(PathBuf, String, String)>,
    /// Entries and file bytes below each copy's source, by its scratch
    /// path, as the walk found them (the counts need no second walk).
    copy_sizes: HashMap<PathBuf, (u64, u64)>,
}

/// Deepest directory nesting the planner walks; deeper trees are refused
/// (mkfs.btrfs would need as many open directories).
pub const MAX_DEPTH: usize = 1024;

/// Sparse files at least this big are reported (mkfs.btrfs fills holes).
const SPARSE_WARN_BYTES: u64 = 1 << 20;

/// The verdict on one subtree.
struct Subtree {
    clean: bool,
    entries: u64,
    unclean: u64,
    bytes: u64,
    /// Ops that build it when it is not bound whole.
    ops: Vec<Op>,
}

fn times(m: &Metadata) -> ((i64, i64), (i64, i64)) {
    ((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

impl Planner {
    /// A planner for staging in a user namespace, or, `direct`, without one
    /// (`--no-userns`): then nothing can be bound, everything is copied as
    /// the caller, and the caller's ids are given to root in the image.
    pub fn new(scratch: PathBuf, staging: StoreStaging, direct: bool) -> Self {
        Planner {
            // Without a namespace no owner is "unmapped": u32::MAX is no id.
            overflow: if direct {
                (u32::MAX, u32::MAX)
            } else {
                overflow_ids()
            },
            direct,
            copy_all: direct,
            max_mtime: 0,
            scratch,
            ops: Vec::new(),
            counts: Counts::default(),
            warnings: Vec::new(),
            unmapped: Vec::new(),
            uids: HashSet::new(),
            gids: HashSet::new(),
            staging,
            devices: Vec::new(),
            copies: 0,
            unreadable_xattrs: Vec::new(),
            copy_sizes: HashMap::new(),
        }
    }

    /// The overflow ids of this kernel (what unmapped owners show up as).
    pub fn overflow(&self) -> (u32, u32) {
        self.overflow
    }

    /// The metadata `src` gets when recreated: owners mapped (or 0), ACLs
    /// translated. Returns whether it was clean as it is.
    fn meta_of(&mut self, src: &Path, m: &Metadata) -> (Meta, bool) {
        // Inside the namespace an owner that does not map reads as the
        // overflow id, which the sandbox keeps out of every map.
        let uid = (m.uid() != self.overflow.0).then_some(m.uid());
        let gid = (m.gid() != self.overflow.1).then_some(m.gid());
        let owner_maps = uid.is_some() && gid.is_some();
        // In auto mode an unmapped owner is fixed in the image after mkfs.
        let mut clean = owner_maps || self.staging == StoreStaging::Auto;
        if !owner_maps && clean {
            self.counts.rewrite_entries += 1;
        }
        let kept = xattrs::read(src, &mut self.warnings, &mut self.unreadable_xattrs);
        clean &= kept.clean;
        let xattrs = kept.xattrs;
        let (atime, mtime) = times(m);
        self.max_mtime = self.max_mtime.max(mtime.0);
        let mut meta = Meta {
            mode: m.mode(),
            uid: uid.unwrap_or(0),
            gid: gid.unwrap_or(0),
            atime,
            mtime,
            xattrs,
        };
        if self.direct {
            // Recreated as the caller, whose ids become root's in the image;
            // set-id bits of anyone else must not become root's.
            let (me, my_group) = (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
            meta.mode = strip_setid(m.mode(), m.uid() != me, m.gid() != my_group);
            meta.uid = me;
            meta.gid = my_group;
        }
        (meta, clean)
    }

    fn note_ids(&mut self, meta: &Meta) {
        self.uids.insert(meta.uid);
        self.gids.insert(meta.gid);
    }

    /// A copy of `src` (`entries` entries, `bytes` file bytes) into the next
    /// scratch path, bound at `dst`.
    fn copy_op(&mut self, src: &Path, dst: &Path, dir: bool, entries: u64, bytes: u64) -> Op {
        let scratch = self.next_scratch();
        self.copy_sizes.insert(scratch.clone(), (entries, bytes));
        Op::Copy {
            src: src.into(),
            scratch,
            dst: dst.into(),
            dir,
        }
    }

    fn next_scratch(&mut self) -> PathBuf {
        self.copies += 1;
        self.scratch.join(self.copies.to_string())
    }

    /// Walks `src` (lstat'ed as `m`) and decides how it reaches `dst`.
    fn walk(&mut self, src: &Path, dst: &Path, m: &Metadata, depth: usize) -> Result<Subtree> {
        if depth > MAX_DEPTH {
            bail!(
                "{} is nested more than {MAX_DEPTH} directories deep; rootbox refuses trees this deep",
                src.display()
            );
        }
        let (meta, own_clean) = self.meta_of(src, m);
        if !own_clean && self.unmapped.len() < 5 {
            self.unmapped.push(src.to_path_buf());
        }
        self.note_ids(&meta);
        let ft = m.file_type();
        if !ft.is_dir() {
            let bytes = if ft.is_file() { m.size() } else { 0 };
            // Root here has no CAP_DAC_OVERRIDE over an owner the namespace
            // does not map: mkfs.btrfs could not read the file either, and
            // would fail naming only the staging path.
            let unmapped = m.uid() == self.overflow.0 || m.gid() == self.overflow.1;
            if ft.is_file() && unmapped {
                if let Err(e) = fs::File::open(src) {
                    bail!(
                        "cannot read {}: {e} (its owner is not you and does not map into the \
                         namespace, and its mode is {:o}): make it readable to you (e.g. chmod \
                         o+r), or leave it out of the rootfs",
                        src.display(),
                        m.mode() & 0o7777
                    );
                }
            }
            // mkfs.btrfs (6.14) writes holes as zeros: say why the image grows.
            if ft.is_file() && m.size() >= SPARSE_WARN_BYTES && m.blocks() * 512 < m.size() / 2 {
                self.warnings.push(format!(
                    "{}: a sparse file ({} bytes, {} allocated); mkfs.btrfs writes its holes as \
                     data, so the image grows by its full size (--compress zstd keeps zeros small)",
                    src.display(),
                    m.size(),
                    m.blocks() * 512
                ));
            }
            if own_clean && (ft.is_char_device() || ft.is_block_device()) {
                // mkfs.btrfs (6.14) records device nodes with rdev 0; the
                // rewrite after mkfs puts the real numbers back.
                self.devices.push((dst.to_path_buf(), m.rdev()));
            }
            let ops = if own_clean {
                Vec::new()
            } else {
                self.unclean_leaf(src, dst, m, meta)
            };
            return Ok(Subtree {
                clean: own_clean,
                entries: 1,
                unclean: u64::from(!own_clean),
                bytes,
                ops,
            });
        }
        let mut children = Vec::new();
        let mut total = Subtree {
            clean: own_clean,
            entries: 1,
            unclean: u64::from(!own_clean),
            bytes: 0,
            ops: Vec::new(),
        };
        for entry in read_dir_sorted(src)? {
            let child_src = src.join(&entry);
            let child_m = fs::symlink_metadata(&child_src)
                .with_context(|| format!("cannot stat {}", &child_src.display()))?;
            let sub = self.walk(&child_src, &dst.join(&entry), &child_m, depth + 1)?;
            total.clean &= sub.clean;
            total.entries += sub.entries;
            total.unclean += sub.unclean;
            total.bytes += sub.bytes;
            children.push((entry, child_m, sub));
        }
        if total.clean {
            return Ok(total);
        }
        // Mostly unclean (a store path seen from inside a Nix build): copy
        // it whole rather than recreate thousands of entries one by one.
        if total.unclean * 2 > total.entries {
            total.ops = vec![self.copy_op(src, dst, true, total.entries, total.bytes)];
            return Ok(total);
        }
        total.ops.push(Op::Dir {
            dst: dst.into(),
            meta,
        });
        for (entry, child_m, sub) in children {
            if sub.clean {
                let op = self.clean_op(&src.join(&entry), &dst.join(&entry), &child_m)?;
                total.ops.push(op);
            } else {
                total.ops.extend(sub.ops);
            }
        }
        Ok(total)
    }

    fn unclean_leaf(&mut self, src: &Path, dst: &Path, m: &Metadata, meta: Meta) -> Vec<Op> {
        let ft = m.file_type();
        if ft.is_symlink() {
            match fs::read_link(src) {
                Ok(target) => vec![Op::Symlink {
                    target,
                    dst: dst.into(),
                    meta,
                }],
                Err(e) => {
                    self.warnings.push(format!(
                        "{}: unreadable symlink left out: {e}",
                        src.display()
                    ));
                    Vec::new()
                }
            }
        } else if ft.is_fifo() || ft.is_socket() {
            vec![Op::Node {
                dst: dst.into(),
                meta,
            }]
        } else if ft.is_file() {
            vec![self.copy_op(src, dst, false, 1, m.size())]
        } else {
            // A device node owned by an id that does not map cannot be
            // recreated in a user namespace (mknod needs real privilege).
            self.warnings.push(format!(
                "{}: device node owned by an unmapped id left out (user namespaces cannot create device nodes)",
                src.display()
            ));
            Vec::new()
        }
    }

    /// How a clean entry below a recreated directory is staged: bound, or
    /// recreated when it is a symlink.
    fn clean_op(&mut self, src: &Path, dst: &Path, m: &Metadata) -> Result<Op> {
        if m.file_type().is_symlink() {
            let (meta, _) = self.meta_of(src, m);
            let target = fs::read_link(src)
                .with_context(|| format!("cannot read symlink {}", src.display()))?;
            Ok(Op::Symlink {
                target,
                dst: dst.into(),
                meta,
            })
        } else {
            Ok(Op::Bind {
                src: src.into(),
                dst: dst.into(),
                dir: m.is_dir(),
            })
        }
    }

    /// Plans one staging root: a subvolume's part of the rootfs, with its
    /// masked mount points and, when it holds the store, the store paths.
    pub fn stage_root(&mut self, root: &Root, store_paths: &[PathBuf]) -> Result<()> {
        let mut forced: HashSet<PathBuf> = HashSet::new();
        forced.insert(PathBuf::new());
        let masked: HashSet<PathBuf> = root.masked.iter().map(PathBuf::from).collect();
        for p in root
            .masked
            .iter()
            .map(PathBuf::from)
            .chain(root.store.clone())
        {
            for a in p.ancestors() {
                forced.insert(a.to_path_buf());
            }
        }
        self.forced_dir(root, Path::new(""), &forced, &masked, store_paths, 0)
    }

    fn forced_dir(
        &mut self,
        root: &Root,
        rel: &Path,
        forced: &HashSet<PathBuf>,
        masked: &HashSet<PathBuf>,
        store_paths: &[PathBuf],
        depth: usize,
    ) -> Result<()> {
        let src = root.src.as_ref().map(|s| s.join(rel));
        let dst = root.dst.join(rel);
        let src_meta = match &src {
            Some(s) => match fs::symlink_metadata(s) {
                Ok(m) if m.is_dir() => Some(m),
                Ok(m) => bail!(
                    "{} is a {}, but the layout needs a directory there ({}): replace it with a \
                     directory, or change the subvolume layout",
                    s.display(),
                    if m.file_type().is_symlink() {
                        "symlink"
                    } else {
                        "file"
                    },
                    if masked.contains(rel) {
                        "a subvolume is mounted there"
                    } else {
                        "it leads to a subvolume mount point or the store"
                    },
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("cannot stat {}", s.display())),
            },
            None => None,
        };
        let meta = match (&src, &src_meta) {
            (Some(s), Some(m)) => {
                let (meta, _) = self.meta_of(s, m);
                meta
            }
            _ => default_dir_meta(if root.store.as_deref() == Some(rel) {
                0o41775
            } else {
                0o40755
            }),
        };
        self.note_ids(&meta);
        self.ops.push(Op::Dir {
            dst: dst.clone(),
            meta,
        });
        self.counts.entries += 1;
        if masked.contains(rel) {
            return Ok(());
        }
        if let (Some(s), Some(_)) = (&src, &src_meta) {
            for entry in read_dir_sorted(s)? {
                let child_rel = rel.join(&entry);
                if forced.contains(&child_rel) {
                    continue;
                }
                let child_src = s.join(&entry);
                let m = fs::symlink_metadata(&child_src)
                    .with_context(|| format!("cannot stat {}", &child_src.display()))?;
                self.stage_entry(&child_src, &dst.join(&entry), &m, depth + 1, false)?;
            }
        }
        let mut children: Vec<&PathBuf> = forced
            .iter()
            .filter(|p| p.parent() == Some(rel) && p != &rel)
            .collect();
        children.sort();
        for child in children {
            self.forced_dir(root, child, forced, masked, store_paths, depth + 1)?;
        }
        if root.store.as_deref() == Some(rel) {
            for sp in store_paths {
                let name = sp.file_name().expect("store paths have names");
                let m = fs::symlink_metadata(sp)
                    .with_context(|| format!("cannot stat store path {}", sp.display()))?;
                self.stage_entry(sp, &dst.join(name), &m, depth + 1, true)?;
            }
        }
        Ok(())
    }

    /// Stages one entry below a recreated directory: whole, recreated or copied.
    fn stage_entry(
        &mut self,
        src: &Path,
        dst: &Path,
        m: &Metadata,
        depth: usize,
        store: bool,
    ) -> Result<()> {
        let sub = self.walk(src, dst, m, depth)?;
        self.counts.entries += sub.entries;
        self.counts.bytes += sub.bytes;
        let force_copy = (self.copy_all || store && self.staging == StoreStaging::Copy)
            && !m.file_type().is_symlink();
        if sub.clean && !force_copy {
            let op = self.clean_op(src, dst, m)?;
            self.ops.push(op);
            return Ok(());
        }
        if self.staging == StoreStaging::Bind && !sub.clean {
            bail!(
                "{} holds files whose owner the namespace does not map (they would reach the image \
                 as uid {}), and --store-staging bind forbids copying them: use --store-staging auto",
                src.display(),
                self.overflow.0
            );
        }
        if sub.clean || self.copy_all {
            let op = self.copy_op(src, dst, m.is_dir(), sub.entries, sub.bytes);
            self.ops.push(op);
        } else {
            self.ops.extend(sub.ops);
        }
        Ok(())
    }

    /// Fills in the counts that follow from the ops (copies, binds).
    pub fn finish_counts(&mut self) {
        let (mut copied_entries, mut copied_bytes, mut file_bytes, mut binds) = (0, 0, 0, 0);
        for op in &self.ops {
            match op {
                Op::Copy { src, scratch, .. } => {
                    let walked = self.copy_sizes.get(scratch).copied();
                    let (e, b) = walked.unwrap_or_else(|| tree_size(src));
                    copied_entries += e;
                    copied_bytes += b;
                }
                Op::File { src, .. } => {
                    file_bytes += fs::metadata(src).map(|m| m.len()).unwrap_or(0)
                }
                Op::Bind { .. } => binds += 1,
                _ => {}
            }
        }
        self.counts.copied_entries = copied_entries;
        self.counts.copied_bytes = copied_bytes;
        self.counts.binds = binds;
        self.counts.bound_bytes = self.counts.bytes.saturating_sub(copied_bytes + file_bytes);
        if let Some(w) = xattrs::unreadable_warning(&self.unreadable_xattrs) {
            self.warnings.push(w);
        }
    }

    /// Adds a regular file made from `src` (the registration) at `dst`.
    pub fn add_file(&mut self, src: &Path, dst: PathBuf) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let meta = Meta {
            mode: 0o100644,
            uid: 0,
            gid: 0,
            atime: (now, 0),
            mtime: (now, 0),
            xattrs: Vec::new(),
        };
        self.note_ids(&meta);
        self.counts.entries += 1;
        self.counts.bytes += fs::metadata(src).map(|m| m.len()).unwrap_or(0);
        self.ops.push(Op::File {
            src: src.into(),
            dst,
            meta,
        });
    }
}

fn default_dir_meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        atime: (0, 0),
        mtime: (0, 0),
        xattrs: Vec::new(),
    }
}

/// Directory entries, sorted by name (a stable plan for the same tree).
pub fn read_dir_sorted(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let rd = fs::read_dir(dir).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::PermissionDenied {
            " (rootbox runs as you: make it readable to you, e.g. chmod u+rx)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot read directory {}: {e}{hint}", dir.display())
    })?;
    let mut names = rd
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    names.sort();
    Ok(names)
}

/// Number of entries and bytes of regular files below `p`.
fn tree_size(p: &Path) -> (u64, u64) {
    let Ok(m) = fs::symlink_metadata(p) else {
        return (0, 0);
    };
    if !m.is_dir() {
        return (1, if m.is_file() { m.size() } else { 0 });
    }
    let mut acc = (1, 0);
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let (n, b) = tree_size(&e.path());
            acc.0 += n;
            acc.1 += b;
        }
    }
    acc
}

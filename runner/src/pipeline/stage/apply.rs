//! The staging step's *stage* phase ([`stage`]): a tmpfs on the staging
//! directory (in a namespace), then each planned [`Op`] made on it —
//! directories, symlinks, device nodes, bind mounts, and copies into
//! scratch space with the owners, modes and xattrs the namespace allows —
//! then the times, deepest first. A copy that cannot make a device node or
//! set `security.capability` stages a stand-in and records it for the
//! fix-up after mkfs (`crate::fs::specials`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::fs::specials::{self, Cap, Device, Specials};
use crate::pipeline::ids::{keep_mapped, strip_setid, translate_acl};
use crate::pipeline::job::{MakeJob, StageJob};
use crate::pipeline::ops::{Meta, Op};
use crate::pipeline::plan::{read_dir_sorted, Planner};
use crate::pipeline::progress::Bar;
use rootbox_images::fs::Filesystem;

/// Makes the planned tree: a tmpfs on the staging directory (in a
/// namespace), then every op, then directory times.
pub(super) fn stage<'a>(job: &'a StageJob, planner: &Planner) -> Result<Stager<'a>> {
    if !job.direct {
        mount(
            Some("tmpfs"),
            &job.stage_dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .context("mounting the staging tmpfs (the tree mkfs reads)")?;
    }
    let mut stager = Stager {
        job,
        overflow: planner.overflow(),
        timed: Vec::new(),
        copy_secs: 0.0,
        copied: 0,
        links: HashMap::new(),
        warnings: Vec::new(),
        progress: Bar::bytes("copying", planner.counts.copied_bytes),
        lost_caps: Vec::new(),
        lost_devices: Vec::new(),
        specials: Specials::default(),
    };
    for op in &planner.ops {
        stager.apply(op)?;
    }
    stager.say_what_was_lost();
    // Directory times last, deepest first: creating entries (and mount
    // points) inside a directory changes its mtime.
    for (path, meta) in stager.timed.iter().rev() {
        set_times(path, meta, job.reproducible)
            .with_context(|| format!("setting the times of {}", shown(job, path)))?;
    }
    Ok(stager)
}

/// The stage phase's state while it makes the ops; what it measured and
/// warned of is read by the staging step afterwards.
pub(super) struct Stager<'a> {
    job: &'a StageJob,
    /// What unmapped owners read as; copies of them become root's.
    overflow: (u32, u32),
    /// Entries whose times are set once everything exists.
    timed: Vec<(PathBuf, Meta)>,
    /// Seconds spent copying into scratch space.
    pub(super) copy_secs: f64,
    /// Bytes copied.
    pub(super) copied: u64,
    /// (dev, ino) of copied files with several links → the first copy.
    links: HashMap<(u64, u64), PathBuf>,
    pub(super) warnings: Vec<String>,
    /// Bytes copied of the planned total, on a terminal.
    progress: Bar,
    /// Without a namespace, for vfat (which holds neither): sources with
    /// file capabilities, device nodes.
    lost_caps: Vec<String>,
    lost_devices: Vec<String>,
    /// Without a namespace: the device nodes and file capabilities the
    /// image gets after mkfs (`crate::fs::specials`).
    pub(super) specials: Specials,
}

impl Stager<'_> {
    /// [`set_meta`], saying which xattrs could not be set.
    fn set_meta(&mut self, p: &Path, shown: &str, meta: &Meta, symlink: bool) -> Result<()> {
        let filesystem = self.special_fs();
        if let (true, Some(Some(name))) = (self.job.direct, filesystem.map(specials::placeholder)) {
            if meta.xattrs.iter().any(|(k, _)| k == name.as_bytes()) {
                bail!(
                    "{shown} carries the xattr {name}, which rootbox uses without a user \
                     namespace to stand for security.capability: remove it (setfattr -x {name} \
                     PATH), or build where a user namespace can be had"
                );
            }
        }
        for (name, e) in set_meta(p, shown, meta, symlink, !self.job.direct)? {
            if self.job.direct && name == "security.capability" {
                match filesystem {
                    Some(f) => self.keep_cap(p, shown, meta, f)?,
                    None => self.lost_caps.push(shown.to_string()),
                }
            } else {
                // Nix's sandbox answers xattr calls with ENOTSUP; trusted.*
                // and security.selinux may be refused: the image lacks them.
                tracing::warn!("{shown}: xattr {name} not copied: {e}");
            }
        }
        Ok(())
    }

    /// The filesystem whose fix-up writes what a copy without a namespace
    /// cannot carry (`Some(None)`: btrfs); None for vfat, which holds
    /// neither device nodes nor xattrs.
    fn special_fs(&self) -> Option<Option<Filesystem>> {
        match &self.job.make {
            MakeJob::Btrfs(_) => Some(None),
            MakeJob::Tree(t) => Some(Some(t.filesystem)),
            MakeJob::Vfat(_) => None,
        }
    }

    /// The staged path of `p`, as bytes, for the records.
    fn staged(&self, p: &Path, shown: &str) -> Result<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let rel = p
            .strip_prefix(&self.job.stage_dir)
            .with_context(|| format!("{shown} was not staged in the staging tree"))?;
        Ok(rel.as_os_str().as_bytes().to_vec())
    }

    /// A file capability a copy without a namespace cannot carry: recorded
    /// for the fix-up, and set under the filesystem's placeholder name.
    fn keep_cap(
        &mut self,
        p: &Path,
        shown: &str,
        meta: &Meta,
        filesystem: Option<Filesystem>,
    ) -> Result<()> {
        let Some((_, value)) = meta
            .xattrs
            .iter()
            .find(|(k, _)| k == b"security.capability")
        else {
            return Ok(());
        };
        self.specials.caps.push(Cap {
            path: self.staged(p, shown)?,
            value: value.clone(),
        });
        let Some(name) = specials::placeholder(filesystem) else {
            return Ok(());
        };
        // A user.* xattr needs write permission on the file.
        let mode = meta.mode & 0o7777;
        let chmod = |m| fs::set_permissions(p, fs::Permissions::from_mode(m));
        if mode & 0o200 == 0 {
            chmod(mode | 0o200).with_context(|| format!("chmod {shown}"))?;
        }
        xattr::set(p, name, value)
            .with_context(|| format!("{shown}: setting xattr {name} (for security.capability)"))?;
        chmod(mode).with_context(|| format!("chmod {shown}"))
    }

    /// A device node to copy (any copy without a namespace; a sorted copy
    /// in one): recorded for the fix-up and staged as a FIFO with its
    /// permission bits (squashfs: not staged); whether it was staged.
    fn keep_device(
        &mut self,
        dst: &Path,
        shown: &str,
        m: &fs::Metadata,
        meta: &Meta,
    ) -> Result<bool> {
        // A namespace's unsorted copy is made in scratch space and bound.
        let in_tree = dst.starts_with(&self.job.stage_dir);
        let Some(filesystem) = self.special_fs().filter(|_| in_tree) else {
            if self.job.direct {
                self.lost_devices.push(shown.to_string());
            } else {
                self.warnings.push(format!(
                    "{shown}: device node left out (user namespaces cannot create device nodes)"
                ));
            }
            return Ok(false);
        };
        let kind = m.mode() & crate::fs::S_IFMT;
        self.specials.devices.push(Device {
            path: self.staged(dst, shown)?,
            mode: kind | (meta.mode & 0o7777),
            rdev: m.rdev(),
        });
        if !specials::fifo_for_devices(filesystem) {
            return Ok(false);
        }
        nix::unistd::mkfifo(dst, Mode::from_bits_truncate(meta.mode & 0o777))
            .with_context(|| format!("staging {shown} (a device node) as a FIFO"))?;
        self.set_meta(dst, shown, meta, false)?;
        Ok(true)
    }

    /// Without a namespace: one warning each for what the copy lost.
    fn say_what_was_lost(&mut self) {
        let lost = [
            (
                &self.lost_caps,
                "a copy cannot carry file capabilities (setting security.capability needs \
                 CAP_SETFCAP)",
                "lose them in",
            ),
            (
                &self.lost_devices,
                "device nodes can be neither bound nor made (mknod needs root)",
                "left out of",
            ),
        ];
        for (v, why, what) in lost.into_iter().filter(|(v, ..)| !v.is_empty()) {
            let more = v.len().saturating_sub(5);
            let mut names = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if more > 0 {
                names.push_str(&format!(" and {more} more"));
            }
            self.warnings.push(format!(
                "without a user namespace {why}: {names} {what} the image; build where a user \
                 namespace can be had to keep them"
            ));
        }
    }

    fn at(&self, rel: &Path) -> PathBuf {
        self.job.stage_dir.join(rel)
    }

    /// A path of the staging tree or of scratch space as the user knows
    /// it, for messages: its place in the image, never rootbox's own
    /// directories.
    fn shown(&self, p: &Path) -> String {
        shown(self.job, p)
    }

    fn apply(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::Dir { dst, meta } => {
                let p = self.at(dst);
                fs::create_dir(&p).with_context(|| format!("creating {}", self.shown(&p)))?;
                let shown = self.shown(&p);
                self.set_meta(&p, &shown, meta, false)?;
                self.timed.push((p, meta.clone()));
            }
            Op::Bind { src, dst, dir } => {
                bind(src, &self.at(dst), &self.shown(&self.at(dst)), *dir)?
            }
            Op::Symlink { target, dst, meta } => {
                let p = self.at(dst);
                std::os::unix::fs::symlink(target, &p)
                    .with_context(|| format!("creating symlink {}", self.shown(&p)))?;
                let shown = self.shown(&p);
                self.set_meta(&p, &shown, meta, true)?;
                self.timed.push((p, meta.clone()));
            }
            Op::Node { dst, meta } => {
                let p = self.at(dst);
                let kind = SFlag::from_bits_truncate(meta.mode) & SFlag::S_IFMT;
                nix::sys::stat::mknod(&p, kind, Mode::from_bits_truncate(meta.mode & 0o7777), 0)
                    .with_context(|| format!("creating {}", self.shown(&p)))?;
                let shown = self.shown(&p);
                self.set_meta(&p, &shown, meta, false)?;
                self.timed.push((p, meta.clone()));
            }
            Op::File { src, dst, meta } => {
                // mkfs --reflink cannot clone from the tmpfs: write the
                // file in scratch space, on the image's filesystem.
                let in_scratch = self.job.make.clones() && !self.job.direct;
                let p = if in_scratch {
                    let name = dst.to_string_lossy().replace('/', "%");
                    self.job.scratch.join(format!("file-{name}"))
                } else {
                    self.at(dst)
                };
                let shown = self.shown(&self.at(dst));
                fs::copy(src, &p)
                    .with_context(|| format!("copying {} to {shown}", src.display()))?;
                self.set_meta(&p, &shown, meta, false)?;
                if in_scratch {
                    set_times(&p, meta, self.job.reproducible)
                        .with_context(|| format!("setting the times of {shown}"))?;
                    bind(&p, &self.at(dst), &shown, false)?;
                } else {
                    self.timed.push((p, meta.clone()));
                }
            }
            Op::Copy {
                src,
                scratch,
                dst,
                dir,
            } => {
                let start = Instant::now();
                let mut timed = Vec::new();
                // Without a namespace nothing can be bound, and a sorted
                // copy must list in a fixed order: copy in place.
                let in_place = self.job.direct || self.job.sorted_copy;
                let target = if in_place {
                    self.at(dst)
                } else {
                    scratch.clone()
                };
                let scratch = &target;
                self.copy_tree(src, scratch, &mut timed).map_err(|e| {
                    let full = format!("{e:#}").contains("os error 28");
                    e.context(format!(
                        "copying {} into scratch space{}",
                        src.display(),
                        if full {
                            " (it is full: free space there or choose another place with --scratch DIR)"
                        } else {
                            ""
                        }
                    ))
                })?;
                for (p, m) in timed.iter().rev() {
                    set_times(p, m, self.job.reproducible)
                        .with_context(|| format!("setting the times of {}", self.shown(p)))?;
                }
                self.copy_secs += start.elapsed().as_secs_f64();
                if !in_place {
                    bind(scratch, &self.at(dst), &self.shown(&self.at(dst)), *dir)?;
                }
            }
        }
        Ok(())
    }

    /// The owner a copy gets: the source's, as the namespace sees it, or 0
    /// where the source's owner does not map.
    fn owner(&self, m: &fs::Metadata) -> (u32, u32) {
        if self.job.direct {
            return (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
        }
        let (ou, og) = self.overflow;
        let uid = if m.uid() == ou { 0 } else { m.uid() };
        let gid = if m.gid() == og { 0 } else { m.gid() };
        (uid, gid)
    }

    /// The mode a copy gets: set-id bits of an owner that did not map are
    /// dropped, so a setuid file of some unmapped user never becomes
    /// setuid root.
    fn mode(&self, m: &fs::Metadata) -> u32 {
        if self.job.direct {
            let (me, my_group) = self.owner(m);
            return strip_setid(m.mode(), m.uid() != me, m.gid() != my_group);
        }
        strip_setid(
            m.mode(),
            m.uid() == self.overflow.0,
            m.gid() == self.overflow.1,
        )
    }

    fn copy_tree(
        &mut self,
        src: &Path,
        dst: &Path,
        timed: &mut Vec<(PathBuf, Meta)>,
    ) -> Result<()> {
        let m = fs::symlink_metadata(src).with_context(|| format!("stat {}", src.display()))?;
        let shown_src = src.display().to_string();
        let (uid, gid) = self.owner(&m);
        let meta = Meta {
            mode: self.mode(&m),
            uid,
            gid,
            atime: (m.atime(), m.atime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
            xattrs: self.xattrs(src),
        };
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(dst)
                .with_context(|| format!("creating the copy of {}", src.display()))?;
            // Writable while filling, final mode below.
            fs::set_permissions(dst, fs::Permissions::from_mode(0o700))?;
            for name in read_dir_sorted(src)? {
                self.copy_tree(&src.join(&name), &dst.join(&name), timed)?;
            }
            self.set_meta(dst, &shown_src, &meta, false)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)
                .with_context(|| format!("copying symlink {shown_src}"))?;
            self.set_meta(dst, &shown_src, &meta, true)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, dst)
                        .with_context(|| format!("linking the copy of {shown_src}"))?;
                    return Ok(());
                }
                self.links.insert((m.dev(), m.ino()), dst.to_path_buf());
            }
            // copy_file_range: a reflink where source and scratch share a
            // btrfs or XFS filesystem, an in-kernel copy elsewhere.
            fs::copy(src, dst).map_err(|e| {
                let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                    " (its owner does not map into the namespace, so rootbox can read it only if it is readable to you)"
                } else {
                    ""
                };
                anyhow!("cannot copy {}: {e}{hint}", src.display())
            })?;
            self.copied += m.size();
            self.progress.set(self.copied);
            self.set_meta(dst, &shown_src, &meta, false)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            // Neither a copy as the caller nor one in a user namespace can
            // make a device node (mknod needs real privilege).
            if !self.keep_device(dst, &shown_src, &m, &meta)? {
                return Ok(());
            }
        } else {
            let kind = SFlag::from_bits_truncate(m.mode()) & SFlag::S_IFMT;
            nix::sys::stat::mknod(dst, kind, Mode::from_bits_truncate(m.mode() & 0o7777), 0)
                .with_context(|| format!("copying {shown_src}"))?;
            self.set_meta(dst, &shown_src, &meta, false)?;
        }
        timed.push((dst.to_path_buf(), meta));
        Ok(())
    }

    /// The xattrs of `src` as the namespace reads them, with ACL entries
    /// naming unmapped ids (read as 0xffffffff) dropped.
    fn xattrs(&mut self, src: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        use std::os::unix::ffi::OsStrExt;
        let Ok(names) = xattr::list(src) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in names {
            // One that cannot be read was named by the planner, which read
            // every source's xattrs before staging (plan.rs, meta_of).
            let Ok(Some(value)) = xattr::get(src, &name) else {
                continue;
            };
            let key = name.as_bytes().to_vec();
            if key.starts_with(b"system.posix_acl_") {
                match translate_acl(&value, keep_mapped, keep_mapped) {
                    Some((v, n)) => {
                        if n > 0 {
                            self.warnings.push(format!(
                                "{}: dropped {n} ACL entries naming unmapped ids",
                                src.display()
                            ));
                        }
                        out.push((key, v));
                    }
                    None => self
                        .warnings
                        .push(format!("{}: malformed ACL dropped", src.display())),
                }
            } else {
                out.push((key, value));
            }
        }
        out
    }
}

/// A path of the staging tree (or scratch space) as the user knows it:
/// `/etc/passwd` for the one-root filesystems, `@home/alice` (subvolume
/// first) for btrfs; scratch space and anything else is not named.
fn shown(job: &StageJob, p: &Path) -> String {
    let Ok(rel) = p.strip_prefix(&job.stage_dir) else {
        return "a copy in scratch space".to_string();
    };
    let one_root = job.roots.len() == 1 && job.roots[0].dst == Path::new(crate::fs::STAGED_ROOT);
    match rel.strip_prefix(crate::fs::STAGED_ROOT) {
        Ok(inner) if one_root => format!("/{} in the image", inner.display()),
        _ => format!("{} in the image", rel.display()),
    }
}

/// Binds `src` on `target`, a new mount point in the staging tree, which
/// messages call `shown`.
fn bind(src: &Path, target: &Path, shown: &str, dir: bool) -> Result<()> {
    if dir {
        fs::create_dir(target)
    } else {
        fs::File::create(target).map(drop)
    }
    .with_context(|| format!("creating the mount point of {shown}"))?;
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {} on {shown}", src.display()))
}

/// Owner, then mode (chown clears set-id bits), then xattrs (chown clears
/// security.capability).
/// Without a namespace (`chown` false) entries stay the caller's.
/// Messages call `p` `shown`. Returns the xattrs that could not be set.
fn set_meta(
    p: &Path,
    shown: &str,
    meta: &Meta,
    symlink: bool,
    chown: bool,
) -> Result<Vec<(String, io::Error)>> {
    if chown {
        std::os::unix::fs::lchown(p, Some(meta.uid), Some(meta.gid))
            .with_context(|| format!("chown {}:{} {shown}", meta.uid, meta.gid))?;
    }
    if !symlink {
        fs::set_permissions(p, fs::Permissions::from_mode(meta.mode & 0o7777))
            .with_context(|| format!("chmod {shown}"))?;
    }
    let mut refused = Vec::new();
    for (k, v) in &meta.xattrs {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(k);
        if let Err(e) = xattr::set(p, name, v) {
            refused.push((name.to_string_lossy().into_owned(), e));
        }
    }
    Ok(refused)
}

/// `atime_is_mtime`: for reproducible images, whose sources' atimes move
/// whenever something reads them.
fn set_times(p: &Path, meta: &Meta, atime_is_mtime: bool) -> Result<()> {
    let ts = |(s, ns): (i64, i64)| TimeSpec::new(s, ns);
    let atime = if atime_is_mtime {
        meta.mtime
    } else {
        meta.atime
    };
    utimensat(
        None,
        p,
        &ts(atime),
        &ts(meta.mtime),
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

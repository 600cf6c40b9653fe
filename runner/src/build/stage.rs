//! The staging step, run inside the sandbox as `rootbox __stage JOB`.
//!
//! It executes the plan blindly: mounts a tmpfs on the staging directory,
//! makes each [`Op`], seals the tree read-only, runs mkfs.btrfs on it and
//! writes a [`StageResult`]. Every decision was made by the parent.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use rootbox_images::mkfs::{estimate_min_size, MkfsPlan, MkfsSize};
use rootbox_images::size::{ByteSize, Size};
use rootbox_images::spec::{Compress, Uuid};

use super::plan::{translate_acl, Counts, Meta, Op, Planner, Root, StoreStaging};

/// What the parent hands to the staging step. Planning happens here,
/// inside the namespace, because only here do sources look as mkfs will
/// see them: owners mapped (or the overflow id), ACL ids translated, and
/// directories of subordinate ids readable.
#[derive(Debug, Serialize, Deserialize)]
pub struct StageJob {
    /// The (empty) directory the staging tmpfs is mounted on.
    #[serde(with = "super::plan::path_bytes")]
    pub stage_dir: PathBuf,
    /// One per subvolume.
    pub roots: Vec<Root>,
    pub store_paths: Vec<PathBuf>,
    /// The registration file (already rewritten for the image) and where
    /// it goes in the staging tree.
    pub registration: Option<(PathBuf, PathBuf)>,
    pub staging: StoreStaging,
    pub mkfs: MkfsJob,
    /// Where to write the [`StageResult`].
    #[serde(with = "super::plan::path_bytes")]
    pub result: PathBuf,
    /// Scratch space for copies; emptied when the job ends (its files may
    /// belong to subordinate ids the caller cannot delete outside).
    #[serde(with = "super::plan::path_bytes")]
    pub scratch: PathBuf,
    /// No user namespace (`--no-userns`): no mounts; everything is copied
    /// into `stage_dir` (on disk) as the caller.
    pub direct: bool,
    /// Reproducible image: everything is copied into the staging tmpfs in
    /// sorted order, atimes set to mtimes.
    pub reproducible: bool,
}

/// The mkfs.btrfs run, but for the size, which follows from the content.
#[derive(Debug, Serialize, Deserialize)]
pub struct MkfsJob {
    pub program: PathBuf,
    pub label: Option<String>,
    pub uuid: Option<Uuid>,
    pub device_uuid: Option<Uuid>,
    pub compress: Option<Compress>,
    pub subvol_args: Vec<String>,
    pub size: Size,
    pub headroom: ByteSize,
    pub output: PathBuf,
}

impl MkfsJob {
    /// The mkfs plan for content of `counts`.
    pub fn plan(&self, rootdir: &Path, counts: &Counts) -> MkfsPlan {
        let size = match self.size {
            Size::Fixed(b) => MkfsSize::Bytes(b.bytes()),
            Size::Auto if self.headroom.bytes() == 0 => MkfsSize::Shrink,
            Size::Auto => MkfsSize::Bytes(
                estimate_min_size(counts.bytes, counts.entries)
                    .saturating_add(self.headroom.bytes()),
            ),
        };
        MkfsPlan {
            label: self.label.clone(),
            uuid: self.uuid.clone(),
            device_uuid: self.device_uuid.clone(),
            compress: self.compress,
            subvol_args: self.subvol_args.clone(),
            size,
            rootdir: rootdir.to_path_buf(),
            output: self.output.clone(),
            reflink: false,
        }
    }
}

/// What the staging step reports back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StageResult {
    pub plan_secs: f64,
    pub stage_secs: f64,
    pub copy_secs: f64,
    pub mkfs_secs: f64,
    /// Removing the copies from scratch space.
    pub cleanup_secs: f64,
    pub counts: Counts,
    pub copied_bytes: u64,
    /// The owners the staged tree holds: what verification allows.
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// Sources whose owner does not map (a few, for messages).
    pub unmapped: Vec<PathBuf>,
    /// Device nodes (staging path: subvolume/…, rdev) to fix in the image.
    pub devices: Vec<(PathBuf, u64)>,
    /// The newest mtime among the sources (a reproducible build's default epoch).
    pub max_mtime: i64,
    pub mkfs_status: Option<i32>,
    pub mkfs_output: String,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

pub fn main(job_path: &Path) -> Result<std::process::ExitCode> {
    let text =
        fs::read_to_string(job_path).with_context(|| format!("reading {}", job_path.display()))?;
    let job: StageJob = serde_json::from_str(&text).context("parsing the staging job")?;
    execute(&job)
}

/// Runs a job and writes its result; the exit code says whether mkfs made
/// an image. Also called directly (no sandbox) for `--no-userns`.
pub fn execute(job: &StageJob) -> Result<std::process::ExitCode> {
    let mut result = StageResult::default();
    let outcome = run(job, &mut result);
    let start = Instant::now();
    empty_dir(&job.scratch);
    result.cleanup_secs = start.elapsed().as_secs_f64();
    if let Err(e) = &outcome {
        result.error = Some(format!("{e:#}"));
    }
    fs::write(&job.result, serde_json::to_vec(&result)?)
        .with_context(|| format!("writing {}", job.result.display()))?;
    Ok(match (outcome, result.mkfs_status) {
        (Ok(()), Some(0)) => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::from(1),
    })
}

fn run(job: &StageJob, result: &mut StageResult) -> Result<()> {
    let start = Instant::now();
    let mut planner = Planner::new(job.scratch.clone(), job.staging, job.direct);
    planner.copy_all |= job.reproducible;
    for root in &job.roots {
        planner.stage_root(root, &job.store_paths)?;
    }
    if let Some((file, dst)) = &job.registration {
        planner.add_file(file, dst.clone());
    }
    planner.finish_counts();
    result.plan_secs = start.elapsed().as_secs_f64();
    result.counts = planner.counts.clone();
    result.warnings = std::mem::take(&mut planner.warnings);
    result.uids = planner.uids.iter().copied().collect();
    result.gids = planner.gids.iter().copied().collect();
    result.uids.sort();
    result.gids.sort();
    result.unmapped = planner.unmapped.clone();
    result.max_mtime = planner.max_mtime;
    result.devices = planner.devices.clone();
    tracing::info!(
        "plan: {} entries, {} bytes; {} bind mounts, {} bytes to copy",
        result.counts.entries,
        result.counts.bytes,
        result.counts.binds,
        result.counts.copied_bytes
    );

    let start = Instant::now();
    if !job.direct {
        mount(
            Some("tmpfs"),
            &job.stage_dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .with_context(|| format!("mounting the staging tmpfs on {}", job.stage_dir.display()))?;
    }
    let mut stager = Stager {
        job,
        overflow: planner.overflow(),
        timed: Vec::new(),
        copy_secs: 0.0,
        copied: 0,
        links: HashMap::new(),
        warnings: Vec::new(),
    };
    for op in &planner.ops {
        stager.apply(op)?;
    }
    // Directory times last, deepest first: creating entries (and mount
    // points) inside a directory changes its mtime.
    for (path, meta) in stager.timed.iter().rev() {
        set_times(path, meta, job.reproducible)
            .with_context(|| format!("setting the times of {}", path.display()))?;
    }
    // Sources are read-only to everything after this point, mkfs included.
    if !job.direct {
        rootbox_sandbox::seal_readonly(&job.stage_dir)
            .with_context(|| format!("making {} read-only", job.stage_dir.display()))?;
    }
    result.copy_secs = stager.copy_secs;
    result.copied_bytes = stager.copied;
    result.warnings.extend(stager.warnings);
    result.stage_secs = start.elapsed().as_secs_f64() - result.copy_secs;

    let start = Instant::now();
    let args = job.mkfs.plan(&job.stage_dir, &result.counts).args();
    let (status, output) = run_mkfs(job, args)?;
    result.mkfs_secs = start.elapsed().as_secs_f64();
    result.mkfs_status = Some(status);
    result.mkfs_output = output;
    Ok(())
}

/// Runs mkfs.btrfs on the staged tree; its exit code (128+N for a signal)
/// and its output.
///
/// In a namespace, mkfs runs in a nested sandbox: the staging mounts then
/// belong to a more privileged namespace than mkfs, so the kernel locks
/// them read-only — mkfs (or anything posing as it on PATH) cannot
/// remount the bound sources writable. Without a namespace there are no
/// mounts, and mkfs runs as a plain child.
fn run_mkfs(job: &StageJob, args: Vec<std::ffi::OsString>) -> Result<(i32, String)> {
    use std::io::{Read, Seek};
    let mut log = tempfile::tempfile().context("creating a file for mkfs.btrfs's output")?;
    let code = if job.direct {
        let out = Command::new(&job.mkfs.program)
            .args(&args)
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()
            .with_context(|| format!("running {}", job.mkfs.program.display()))?;
        out.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&out).unwrap_or(0)
        })
    } else {
        let argv = std::iter::once(job.mkfs.program.clone().into_os_string()).chain(args);
        let status = rootbox_sandbox::Sandbox::new()
            .command(argv)
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .run()
            .map_err(|e| {
                anyhow!(
                    "running {} in a nested sandbox: {e}",
                    job.mkfs.program.display()
                )
            })?;
        // Interrupted (the signal was forwarded to mkfs): stop the same
        // way, so the build reports the interruption, not a failed mkfs.
        if let rootbox_sandbox::ExitStatus::Signaled(sig) = status {
            if [libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&sig) {
                if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
                    let _ = nix::sys::signal::raise(sig);
                }
            }
        }
        status.code()
    };
    let mut output = String::new();
    log.rewind()?;
    log.read_to_string(&mut output).ok();
    Ok((code, output))
}

struct Stager<'a> {
    job: &'a StageJob,
    /// What unmapped owners read as; copies of them become root's.
    overflow: (u32, u32),
    /// Entries whose times are set once everything exists.
    timed: Vec<(PathBuf, Meta)>,
    copy_secs: f64,
    copied: u64,
    /// (dev, ino) of copied files with several links → the first copy.
    links: HashMap<(u64, u64), PathBuf>,
    warnings: Vec<String>,
}

impl Stager<'_> {
    fn at(&self, rel: &Path) -> PathBuf {
        self.job.stage_dir.join(rel)
    }

    fn apply(&mut self, op: &Op) -> Result<()> {
        match op {
            Op::Dir { dst, meta } => {
                let p = self.at(dst);
                fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
                set_meta(&p, meta, false, !self.job.direct)?;
                self.timed.push((p, meta.clone()));
            }
            Op::Bind { src, dst, dir } => bind(src, &self.at(dst), *dir)?,
            Op::Symlink { target, dst, meta } => {
                let p = self.at(dst);
                std::os::unix::fs::symlink(target, &p)
                    .with_context(|| format!("creating symlink {}", p.display()))?;
                set_meta(&p, meta, true, !self.job.direct)?;
                self.timed.push((p, meta.clone()));
            }
            Op::Node { dst, meta } => {
                let p = self.at(dst);
                let kind = SFlag::from_bits_truncate(meta.mode) & SFlag::S_IFMT;
                nix::sys::stat::mknod(&p, kind, Mode::from_bits_truncate(meta.mode & 0o7777), 0)
                    .with_context(|| format!("creating {}", p.display()))?;
                set_meta(&p, meta, false, !self.job.direct)?;
                self.timed.push((p, meta.clone()));
            }
            Op::File { src, dst, meta } => {
                let p = self.at(dst);
                fs::copy(src, &p)
                    .with_context(|| format!("copying {} to {}", src.display(), p.display()))?;
                set_meta(&p, meta, false, !self.job.direct)?;
                self.timed.push((p, meta.clone()));
            }
            Op::Copy {
                src,
                scratch,
                dst,
                dir,
            } => {
                let start = Instant::now();
                let mut timed = Vec::new();
                // Without a namespace nothing can be bound, and a
                // reproducible tree must list in a fixed order: copy in place.
                let in_place = self.job.direct || self.job.reproducible;
                let target = if in_place {
                    self.at(dst)
                } else {
                    scratch.clone()
                };
                let scratch = &target;
                self.copy_tree(src, scratch, &mut timed).map_err(|e| {
                    let dir = scratch.parent().unwrap_or(scratch);
                    let full = format!("{e:#}").contains("os error 28");
                    e.context(format!(
                        "copying {} into scratch space {}{}",
                        src.display(),
                        dir.display(),
                        if full {
                            " (it is full: free space there or choose another place with --scratch DIR)"
                        } else {
                            ""
                        }
                    ))
                })?;
                for (p, m) in timed.iter().rev() {
                    set_times(p, m, self.job.reproducible)
                        .with_context(|| format!("setting the times of {}", p.display()))?;
                }
                self.copy_secs += start.elapsed().as_secs_f64();
                if !in_place {
                    bind(scratch, &self.at(dst), *dir)?;
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
            fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
            // Writable while filling, final mode below.
            fs::set_permissions(dst, fs::Permissions::from_mode(0o700))?;
            for name in super::plan::read_dir_sorted(src)? {
                self.copy_tree(&src.join(&name), &dst.join(&name), timed)?;
            }
            set_meta(dst, &meta, false, !self.job.direct)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(src)?, dst)?;
            set_meta(dst, &meta, true, !self.job.direct)?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                    fs::hard_link(first, dst)
                        .with_context(|| format!("linking {}", dst.display()))?;
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
            set_meta(dst, &meta, false, !self.job.direct)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            self.warnings.push(format!(
                "{}: device node left out (user namespaces cannot create device nodes)",
                src.display()
            ));
            return Ok(());
        } else {
            let kind = SFlag::from_bits_truncate(m.mode()) & SFlag::S_IFMT;
            nix::sys::stat::mknod(dst, kind, Mode::from_bits_truncate(m.mode() & 0o7777), 0)
                .with_context(|| format!("creating {}", dst.display()))?;
            set_meta(dst, &meta, false, !self.job.direct)?;
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
            let Ok(Some(value)) = xattr::get(src, &name) else {
                continue;
            };
            let key = name.as_bytes().to_vec();
            if key.starts_with(b"system.posix_acl_") {
                let keep = |id: u32| (id != u32::MAX).then_some(id);
                match translate_acl(&value, keep, keep) {
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

fn bind(src: &Path, target: &Path, dir: bool) -> Result<()> {
    if dir {
        fs::create_dir(target)
    } else {
        fs::File::create(target).map(drop)
    }
    .with_context(|| format!("creating mount point {}", target.display()))?;
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {} on {}", src.display(), target.display()))
}

/// Owner, then mode (chown clears set-id bits), then xattrs (chown clears
/// security.capability).
/// Without a namespace (`chown` false) entries stay the caller's.
fn set_meta(p: &Path, meta: &Meta, symlink: bool, chown: bool) -> Result<()> {
    if chown {
        std::os::unix::fs::lchown(p, Some(meta.uid), Some(meta.gid))
            .with_context(|| format!("chown {}:{} {}", meta.uid, meta.gid, p.display()))?;
    }
    if !symlink {
        fs::set_permissions(p, fs::Permissions::from_mode(meta.mode & 0o7777))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    for (k, v) in &meta.xattrs {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(k);
        if let Err(e) = xattr::set(p, name, v) {
            // Nix's sandbox answers xattr calls with ENOTSUP; trusted.* and
            // security.selinux may be refused: the image then lacks them.
            tracing::warn!(
                "{}: xattr {} not copied: {e}",
                p.display(),
                name.to_string_lossy()
            );
        }
    }
    Ok(())
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

/// Removes everything below `dir`, keeping `dir`. Best effort: what
/// remains is reported by the parent when it removes `dir` itself.
fn empty_dir(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => {
                    let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
                    empty_dir(&p);
                    fs::remove_dir(&p)
                }
                _ => fs::remove_file(&p),
            };
        }
    }
}

/// `mode` without S_ISUID when the owner was replaced, and without S_ISGID
/// (on non-directories) when the group was.
pub fn strip_setid(mode: u32, uid_replaced: bool, gid_replaced: bool) -> u32 {
    let mut mode = mode;
    if uid_replaced {
        mode &= !0o4000;
    }
    if gid_replaced && mode & 0o170000 != 0o040000 {
        mode &= !0o2000;
    }
    mode
}

//! vfat filesystems from a directory, with dosfstools and mtools, on a
//! file, as the calling user and without a namespace (FAT records no
//! owners). The steps, in the order a backend takes them:
//! [`check`] walks the directory and refuses what FAT cannot hold before
//! anything is made (the limits are `rootbox_images::fs::vfat`'s);
//! [`make`] runs `mkfs.vfat` on an unnamed file, fills it with `mmd` and
//! `mcopy` in sorted order (names decide short-name numbering, so order
//! matters for reproducible bytes) and checks it with `fsck.vfat -n`;
//! [`read`] copies a filesystem's tree out with `mcopy -s`; [`verify`]
//! compares that with the source, byte for byte; [`list`] lists its paths.
//! An image is named as mtools takes it: a path, or `PATH@@OFFSET` for a
//! filesystem inside a disk.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use rootbox_images::fs::vfat::{self as plan, VfatError};

/// The tree a vfat filesystem is made from, in the order it is copied.
pub struct Source {
    /// The directory, as the user gave it.
    pub root: PathBuf,
    /// Directories, relative, parents first, sorted.
    pub dirs: Vec<PathBuf>,
    /// Regular files, relative, with their sizes, sorted.
    pub files: Vec<(PathBuf, u64)>,
}

impl Source {
    /// Bytes of the files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, s)| s).sum()
    }

    fn sizes(&self) -> Vec<u64> {
        self.files.iter().map(|(_, s)| *s).collect()
    }

    /// The newest mtime of the files (for reproducible times), or None.
    pub fn newest_mtime(&self) -> Option<i64> {
        use std::os::unix::fs::MetadataExt;
        self.files
            .iter()
            .filter_map(|(f, _)| fs::metadata(self.root.join(f)).ok().map(|m| m.mtime()))
            .max()
    }
}

/// Reads the directory `dir`, refusing what FAT cannot hold: names VFAT
/// forbids or that have no UTF-16 form, names equal but for case in one
/// directory, files of 4 GiB or more, paths too long, directories too
/// full, symlinks, devices, FIFOs, sockets. Every refusal names the path
/// under `dir`.
pub fn check(dir: &Path) -> Result<Source> {
    let m = fs::metadata(dir).with_context(|| format!("the FAT directory {}", dir.display()))?;
    if !m.is_dir() {
        bail!(
            "{} is not a directory (a FAT partition's \"dir\" is the directory to copy in)",
            dir.display()
        );
    }
    let mut src = Source {
        root: dir.to_path_buf(),
        dirs: Vec::new(),
        files: Vec::new(),
    };
    walk(dir, Path::new(""), &mut src)?;
    Ok(src)
}

fn walk(root: &Path, rel: &Path, src: &mut Source) -> Result<()> {
    let here = root.join(rel);
    let mut entries: Vec<(OsString, fs::FileType, u64)> = Vec::new();
    for e in fs::read_dir(&here).with_context(|| format!("reading {}", here.display()))? {
        let e = e.with_context(|| format!("reading {}", here.display()))?;
        let m = e
            .metadata()
            .with_context(|| format!("{}", e.path().display()))?;
        entries.push((e.file_name(), m.file_type(), m.len()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, _, _) in &entries {
        plan::check_name(&here.join(name), name)?;
    }
    let names: Vec<&str> = entries
        .iter()
        .map(|(n, _, _)| n.to_str().expect("checked"))
        .collect();
    plan::check_entries(&here, names.iter().copied())?;
    let mut folded: BTreeMap<String, &str> = BTreeMap::new();
    for n in &names {
        if let Some(other) = folded.insert(n.to_lowercase(), n) {
            return Err(VfatError::CaseClash {
                dir: here.clone(),
                a: other.to_string(),
                b: n.to_string(),
            }
            .into());
        }
    }
    for (name, ft, len) in entries {
        let path = rel.join(&name);
        let source = here.join(&name);
        if ft.is_dir() {
            plan::check_path(&source, &path)?;
            src.dirs.push(path.clone());
            walk(root, &path, src)?;
        } else if ft.is_file() {
            plan::check_file(&source, &path, len)?;
            src.files.push((path, len));
        } else {
            let what = if ft.is_symlink() {
                "a symlink"
            } else {
                "not a regular file or directory"
            };
            return Err(VfatError::NotAFile { path: source, what }.into());
        }
    }
    Ok(())
}

/// The environment every mtools call gets: no user configuration, UTF-8
/// names, and (reproducible) fixed times.
fn mtools(program: &str, epoch: Option<i64>) -> Command {
    let mut c = Command::new(program);
    c.env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null());
    match epoch {
        // mtools (4.0.32 here) stamps new files and directories with
        // SOURCE_DATE_EPOCH when it is set.
        Some(e) => c.env("SOURCE_DATE_EPOCH", e.to_string()),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    c
}

fn run(mut c: Command, what: &str) -> Result<std::process::Output> {
    c.output()
        .with_context(|| format!("running {what} (install dosfstools and mtools)"))
}

/// A vfat filesystem made: an unnamed file.
pub struct Made {
    /// The filesystem.
    pub file: File,
    /// Its bytes.
    pub size: u64,
}

/// How to make one vfat filesystem.
#[derive(Clone)]
pub struct Format {
    /// A fixed size, or None to fit the files (plus `headroom`), growing
    /// until mcopy finds room.
    pub size: Option<u64>,
    /// Free space added to a size that fits the files.
    pub headroom: u64,
    /// The arguments of `mkfs.vfat`.
    pub mkfs: plan::Mkfs,
    /// Reproducible: the time of every entry.
    pub epoch: Option<i64>,
}

/// Makes the filesystem of `src` in an unnamed file in `dir`. A fixed
/// size too small for the files is refused before mkfs.vfat runs.
pub fn make(src: &Source, how: &Format, dir: &Path) -> Result<Made> {
    let file = crate::output::unnamed_scratch(dir)?;
    let size = make_in(src, how, &file)?;
    Ok(Made { file, size })
}

/// Makes the filesystem of `src` in `file` (emptied first, then sized);
/// returns its bytes. A fixed size too small for the files is refused
/// before mkfs.vfat runs.
pub fn make_in(src: &Source, how: &Format, file: &File) -> Result<u64> {
    if let Some(size) = how.size {
        plan::check_fits(size, &src.sizes(), src.dirs.len(), &src.root)?;
    }
    let mut attempt = match how.size {
        Some(s) => s,
        None => {
            plan::estimate_size(&src.sizes(), src.dirs.len() as u64 + 1)
                + how.headroom.div_ceil(512) * 512
        }
    };
    let img = for_tools(file)?;
    for _ in 0..8 {
        file.set_len(0)?;
        file.set_len(attempt)?;
        let mut mkfs = Command::new("mkfs.vfat");
        mkfs.stdin(Stdio::null()).args(how.mkfs.args()).arg(&img);
        let out = run(mkfs, "mkfs.vfat")?;
        if !out.status.success() {
            bail!(
                "mkfs.vfat failed on {attempt} bytes: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        match fill(src, &img, how.epoch)? {
            Fill::Done => {
                fsck(&img)?;
                return Ok(attempt);
            }
            Fill::Full if how.size.is_none() => {
                tracing::debug!("{attempt} bytes of FAT were too few; trying more");
                attempt = (attempt + attempt / 2).div_ceil(1 << 20) * (1 << 20);
            }
            Fill::Full => bail!(
                "the FAT partition ({attempt} bytes) is too small for its files ({} bytes in {} \
                 files and {} directories from {}) with mkfs.vfat's clusters: make \"size\" \
                 larger, or \"auto\"",
                src.bytes(),
                src.files.len(),
                src.dirs.len(),
                src.root.display()
            ),
        }
    }
    bail!(
        "could not find a FAT size that holds the files ({} bytes)",
        src.bytes()
    )
}

/// The name mkfs.vfat and mtools reach `file` by: `/proc/self/fd/N` of
/// their own, so the descriptor is made inheritable.
pub fn for_tools(file: &File) -> Result<String> {
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
        .context("making the FAT image descriptor inheritable")?;
    Ok(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

enum Fill {
    Done,
    Full,
}

/// mmd the directories, then mcopy each directory's files, in order.
fn fill(src: &Source, img: &str, epoch: Option<i64>) -> Result<Fill> {
    let full = |stderr: &[u8]| {
        let s = String::from_utf8_lossy(stderr);
        s.contains("Disk full") || s.contains("No free cluster") || s.contains("directory full")
    };
    let mut calls: Vec<Command> = Vec::new();
    for chunk in src.dirs.chunks(256) {
        let mut c = mtools("mmd", epoch);
        c.arg("-i").arg(img);
        for d in chunk {
            c.arg(format!("::/{}", d.display()));
        }
        calls.push(c);
    }
    // Files grouped by directory, each group in sorted order.
    let mut by_dir: BTreeMap<PathBuf, Vec<&Path>> = BTreeMap::new();
    for (f, _) in &src.files {
        by_dir
            .entry(f.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(f);
    }
    for d in std::iter::once(&PathBuf::new()).chain(&src.dirs) {
        for chunk in by_dir.get(d).into_iter().flat_map(|f| f.chunks(256)) {
            let mut c = mtools("mcopy", epoch);
            c.arg("-i").arg(img);
            if epoch.is_none() {
                c.arg("-m");
            }
            c.args(chunk.iter().map(|f| src.root.join(f)));
            c.arg(format!("::/{}/", d.display()).replace("//", "/"));
            calls.push(c);
        }
    }
    for c in calls {
        let what = c.get_program().to_string_lossy().into_owned();
        let out = run(c, &what)?;
        if !out.status.success() {
            if full(&out.stderr) {
                return Ok(Fill::Full);
            }
            bail!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(Fill::Done)
}

/// `fsck.vfat -n`: read-only check.
fn fsck(img: &str) -> Result<()> {
    let mut c = Command::new("fsck.vfat");
    c.arg("-n").arg(img).stdin(Stdio::null());
    let out = run(c, "fsck.vfat")?;
    if !out.status.success() {
        bail!(
            "fsck.vfat -n finds the new FAT filesystem damaged:\n{}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Copies the tree of the filesystem `img` (`PATH` or `PATH@@OFFSET`)
/// into the empty directory `into` and reads it as a [`Source`].
pub fn read(img: &str, into: &Path) -> Result<Source> {
    if !list(img)?.is_empty() {
        let mut c = mtools("mcopy", None);
        c.args(["-s", "-n", "-i", img, "::/*"]).arg(into);
        let out = run(c, "mcopy")?;
        if !out.status.success() {
            bail!(
                "reading the FAT filesystem back failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    check(into)
}

/// Reads the filesystem `img` back into a directory in `scratch` (removed
/// at once) and compares it with `src`: the same directories and files,
/// byte for byte.
pub fn verify(img: &str, src: &Source, scratch: &Path) -> Result<()> {
    let out_dir = tempfile::Builder::new()
        .prefix(".rootbox-fat-readback-")
        .tempdir_in(scratch)
        .context("creating a directory to read the FAT filesystem back into")?;
    let back = read(img, out_dir.path())?;
    let mut problems = Vec::new();
    if back.dirs != src.dirs {
        problems.push(format!(
            "directories read back {:?}, expected {:?}",
            back.dirs, src.dirs
        ));
    }
    let names = |s: &Source| s.files.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    if names(&back) != names(src) {
        problems.push(format!(
            "files read back {:?}, expected {:?}",
            names(&back),
            names(src)
        ));
    } else {
        for (f, _) in &src.files {
            let a = fs::read(src.root.join(f))?;
            let b = fs::read(out_dir.path().join(f))?;
            if a != b {
                problems.push(format!(
                    "{} differs from {}",
                    f.display(),
                    src.root.join(f).display()
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the FAT filesystem does not hold what was asked:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Every path of the filesystem `img`, from its root (`/config.txt`).
pub fn list(img: &str) -> Result<Vec<String>> {
    let mut c = mtools("mdir", None);
    c.args(["-/", "-b", "-i", img, "::/"]);
    let out = run(c, "mdir")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // An empty root: mdir -b says so on stderr and fails.
        if err.contains("File \"::/\" not found") || err.trim().is_empty() {
            return Ok(Vec::new());
        }
        bail!("mdir: {}", err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("::"))
        .map(str::to_string)
        .collect())
}

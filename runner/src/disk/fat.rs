//! FAT partitions: made from a directory with dosfstools and mtools, on a
//! file, as an unprivileged user and without a namespace (FAT records no
//! owners). `mkfs.vfat` makes the filesystem; `mmd` and `mcopy` fill it in
//! sorted order (names decide short-name numbering, so order matters for
//! reproducible bytes); `fsck.vfat -n` checks it; reading it back is an
//! `mcopy -s` out of the finished disk at the partition's offset.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use rootbox_images::disk::fat::{estimate_size, name_problem};
use rootbox_images::disk::FatSpec;

/// The tree a FAT partition is made from, in the order it is copied.
pub struct Source {
    pub root: PathBuf,
    /// Directories, relative, parents first, sorted.
    pub dirs: Vec<PathBuf>,
    /// Regular files, relative, with their sizes, sorted.
    pub files: Vec<(PathBuf, u64)>,
}

impl Source {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, s)| s).sum()
    }
}

/// Reads the directory of a FAT partition, refusing what FAT cannot hold:
/// names VFAT forbids, names equal but for case in one directory
/// (FAT compares them without case), symlinks, devices, FIFOs, sockets.
pub fn scan(title: &str, dir: &Path) -> Result<Source> {
    let m = fs::metadata(dir)
        .with_context(|| format!("{title}: the FAT directory {}", dir.display()))?;
    if !m.is_dir() {
        bail!("{title}: {} is not a directory (a FAT partition's \"dir\" is the directory to copy in)", dir.display());
    }
    let mut src = Source {
        root: dir.to_path_buf(),
        dirs: Vec::new(),
        files: Vec::new(),
    };
    walk(title, dir, Path::new(""), &mut src)?;
    Ok(src)
}

fn walk(title: &str, root: &Path, rel: &Path, src: &mut Source) -> Result<()> {
    let here = root.join(rel);
    let mut entries: Vec<(OsString, fs::FileType, u64)> = Vec::new();
    for e in fs::read_dir(&here).with_context(|| format!("{title}: reading {}", here.display()))? {
        let e = e.with_context(|| format!("{title}: reading {}", here.display()))?;
        let m = e
            .metadata()
            .with_context(|| format!("{title}: {}", e.path().display()))?;
        entries.push((e.file_name(), m.file_type(), m.len()));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut folded: BTreeMap<String, String> = BTreeMap::new();
    for (name, ft, len) in entries {
        let path = rel.join(&name);
        let Some(text) = name.to_str() else {
            bail!(
                "{title}: {} is not valid UTF-8, which FAT long names cannot hold: rename it",
                here.join(&name).display()
            );
        };
        if let Some(p) = name_problem(text) {
            bail!(
                "{title}: the name of {} {p}: rename it",
                here.join(&name).display()
            );
        }
        if let Some(other) = folded.insert(text.to_lowercase(), text.to_string()) {
            bail!("{title}: {:?} and {:?} in {} differ only in case, which FAT does not distinguish: rename one", other, text, here.display());
        }
        if ft.is_dir() {
            src.dirs.push(path.clone());
            walk(title, root, &path, src)?;
        } else if ft.is_file() {
            src.files.push((path, len));
        } else {
            let what = if ft.is_symlink() {
                "a symlink"
            } else {
                "not a regular file or directory"
            };
            bail!(
                "{title}: {} is {what}, which FAT cannot hold: replace it with the file itself",
                here.join(&name).display()
            );
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

fn run(title: &str, mut c: Command, what: &str) -> Result<std::process::Output> {
    let out = c
        .output()
        .with_context(|| format!("{title}: running {what} (install dosfstools and mtools)"))?;
    Ok(out)
}

/// A FAT filesystem made: an unnamed file.
pub struct Made {
    pub file: File,
    pub size: u64,
    pub volume_id: u32,
}

/// How to make one FAT filesystem.
#[derive(Clone, Copy)]
pub struct Format {
    /// The partition's fixed size, or None to fit the files (plus
    /// `headroom`), growing until mcopy finds room.
    pub size: Option<u64>,
    pub headroom: u64,
    pub volume_id: u32,
    /// Reproducible: the time of every entry.
    pub epoch: Option<i64>,
}

/// Makes the FAT filesystem of a partition in an unnamed file in `dir`.
pub fn make(title: &str, src: &Source, spec: &FatSpec, how: &Format, dir: &Path) -> Result<Made> {
    let Format {
        size,
        headroom,
        volume_id,
        epoch,
    } = *how;
    let sizes: Vec<u64> = src.files.iter().map(|(_, s)| *s).collect();
    let mut attempt = match size {
        Some(s) => s,
        None => estimate_size(&sizes, src.dirs.len() as u64 + 1) + headroom.div_ceil(512) * 512,
    };
    for _ in 0..8 {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
            .with_context(|| format!("{title}: creating an unnamed file in {}", dir.display()))?;
        // mkfs.vfat and mtools reach it through /proc/self/fd of their own.
        fcntl(file.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
            .context("making the FAT image descriptor inheritable")?;
        file.set_len(attempt)?;
        let img = format!("/proc/self/fd/{}", file.as_raw_fd());
        let mut mkfs = Command::new("mkfs.vfat");
        mkfs.stdin(Stdio::null());
        if let Some(f) = spec.fat_size {
            mkfs.arg("-F").arg(f.to_string());
        }
        if let Some(l) = &spec.label {
            mkfs.arg("-n").arg(l.to_uppercase());
        }
        mkfs.arg("-i").arg(format!("{volume_id:08x}"));
        if epoch.is_some() {
            // No time-based or random fields (boot sector, label entry).
            mkfs.arg("--invariant");
        }
        mkfs.arg(&img);
        let out = run(title, mkfs, "mkfs.vfat")?;
        if !out.status.success() {
            bail!(
                "{title}: mkfs.vfat failed on {attempt} bytes: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        match fill(title, src, &img, epoch)? {
            Fill::Done => {
                check(title, &img)?;
                return Ok(Made { file, size: attempt, volume_id });
            }
            Fill::Full if size.is_none() => {
                tracing::debug!("{title}: {attempt} bytes of FAT were too few; trying more");
                attempt = (attempt + attempt / 2).div_ceil(1 << 20) * (1 << 20);
            }
            Fill::Full => bail!(
                "{title}: the FAT partition ({attempt} bytes) is too small for its files ({} bytes in {} files and {} directories from {}): make \"size\" larger, or \"auto\"",
                src.bytes(),
                src.files.len(),
                src.dirs.len(),
                src.root.display()
            ),
        }
    }
    bail!(
        "{title}: could not find a FAT size that holds the files ({} bytes)",
        src.bytes()
    )
}

enum Fill {
    Done,
    Full,
}

/// mmd the directories, then mcopy each directory's files, in order.
fn fill(title: &str, src: &Source, img: &str, epoch: Option<i64>) -> Result<Fill> {
    let full = |stderr: &[u8]| {
        let s = String::from_utf8_lossy(stderr);
        s.contains("Disk full") || s.contains("No free cluster") || s.contains("directory full")
    };
    for chunk in src.dirs.chunks(256) {
        let mut c = mtools("mmd", epoch);
        c.arg("-i").arg(img);
        for d in chunk {
            c.arg(format!("::/{}", d.display()));
        }
        let out = run(title, c, "mmd")?;
        if !out.status.success() {
            if full(&out.stderr) {
                return Ok(Fill::Full);
            }
            bail!(
                "{title}: mmd failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    // Files grouped by directory, each group in sorted order.
    let mut by_dir: BTreeMap<PathBuf, Vec<&Path>> = BTreeMap::new();
    for (f, _) in &src.files {
        by_dir
            .entry(f.parent().map(Path::to_path_buf).unwrap_or_default())
            .or_default()
            .push(f);
    }
    let mut order: Vec<PathBuf> = vec![PathBuf::new()];
    order.extend(src.dirs.iter().cloned());
    for d in order {
        let Some(files) = by_dir.get(&d) else {
            continue;
        };
        for chunk in files.chunks(256) {
            let mut c = mtools("mcopy", epoch);
            c.arg("-i").arg(img);
            if epoch.is_none() {
                c.arg("-m");
            }
            for f in chunk {
                c.arg(src.root.join(f));
            }
            c.arg(format!("::/{}/", d.display()).replace("//", "/"));
            let out = run(title, c, "mcopy")?;
            if !out.status.success() {
                if full(&out.stderr) {
                    return Ok(Fill::Full);
                }
                bail!(
                    "{title}: mcopy failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
    }
    Ok(Fill::Done)
}

/// `fsck.vfat -n`: read-only check.
fn check(title: &str, img: &str) -> Result<()> {
    let mut c = Command::new("fsck.vfat");
    c.arg("-n").arg(img).stdin(Stdio::null());
    let out = run(title, c, "fsck.vfat")?;
    if !out.status.success() {
        bail!(
            "{title}: fsck.vfat -n finds the new FAT filesystem damaged:\n{}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Reads the FAT partition back out of the disk (at byte `offset`)
/// into `scratch` and compares it with the source: the same directories
/// and files, byte for byte. `disk` is a path child processes can open
/// (the unnamed disk's inherited `/proc/self/fd/N`); the copy goes to a
/// directory in `dir`, removed at once.
pub fn verify(title: &str, disk: &Path, offset: u64, src: &Source, dir: &Path) -> Result<()> {
    let img = format!("{}@@{offset}", disk.display());
    let out_dir = tempfile::Builder::new()
        .prefix(".rootbox-fat-readback-")
        .tempdir_in(dir)
        .context("creating a directory to read the FAT partition back into")?;
    let mut problems = Vec::new();
    if !src.dirs.is_empty() || !src.files.is_empty() {
        let mut c = mtools("mcopy", None);
        c.args(["-s", "-n", "-i"])
            .arg(&img)
            .arg("::/*")
            .arg(out_dir.path());
        let out = run(title, c, "mcopy")?;
        if !out.status.success() {
            bail!(
                "{title}: reading the FAT partition back failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let back = scan(title, out_dir.path())?;
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
            "{title}: the FAT partition does not hold what was asked:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

//! The output image: written to an unnamed temporary file in the output's
//! directory, linked into place only when the build succeeded. A failed,
//! interrupted or killed build leaves nothing at the output path.
//!
//! Nothing is left beside it either, even by a build killed with SIGKILL
//! (which no process can catch): every temporary file and directory a
//! build makes — scratch space, `$TMPDIR/rootbox-build-*`, a named
//! temporary image — carries an exclusive `flock` held for as long as the
//! build runs ([`Held`]), and every build first removes those of its kind,
//! in the places it writes to, whose lock is free ([`sweep`]): the kernel
//! released it when their build died.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, Flock, FlockArg, RenameFlags};

/// Where the image is written before it is published.
enum Temp {
    /// O_TMPFILE: no name until linked.
    Unnamed(File),
    /// A named temporary file, for filesystems without O_TMPFILE.
    Named(tempfile::NamedTempFile),
}

/// The output image while it is being built.
pub struct Target {
    path: PathBuf,
    dir: PathBuf,
    force: bool,
    temp: Temp,
    /// Held on the temporary image until it is published: its name (a
    /// named temporary file, or the link made while publishing) is then
    /// not swept by another build.
    _lock: Flock<File>,
}

impl Target {
    /// Checks the output path and opens the temporary file beside it.
    /// `sources` are the trees staged into the image (the rootfs and each
    /// store path): the image must not be written inside one of them.
    pub fn check(path: &Path, force: bool, sources: &[&Path]) -> Result<Target> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "output {}: {} is not a directory",
                path.display(),
                dir.display()
            ),
            Err(e) => bail!(
                "output {}: directory {}: {e} (create it first)",
                path.display(),
                dir.display()
            ),
        }
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => bail!(
                "output {} is a directory: give the path of the image file to write",
                path.display()
            ),
            Ok(_) if !force => bail!(
                "output {} exists: use --force to replace it",
                path.display()
            ),
            _ => {}
        }
        // Inside a Nix build the output is in the store, next to (not in)
        // the store paths staged: compare with each source, not the store.
        let parent =
            fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
        for src in sources {
            if fs::canonicalize(src).is_ok_and(|s| parent.starts_with(s)) {
                bail!(
                    "output {} is inside {}, which is staged into the image: the image would contain itself; write it elsewhere",
                    path.display(),
                    src.display()
                );
            }
        }
        sweep(&dir, is_output_temp);
        let unnamed = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        let temp = match unnamed {
            Ok(f) => Temp::Unnamed(f),
            Err(e) => {
                tracing::debug!(
                    "O_TMPFILE in {}: {e}; using a named temporary file",
                    dir.display()
                );
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Temp::Named(
                    tempfile::Builder::new()
                        .prefix(&format!(".{name}."))
                        .suffix(".rootbox-tmp")
                        .tempfile_in(&dir)
                        .with_context(|| {
                            format!("creating a temporary file in {}", dir.display())
                        })?,
                )
            }
        };
        // mkfs.btrfs, two processes down, writes through this descriptor.
        let fd = match &temp {
            Temp::Unnamed(f) => f.as_raw_fd(),
            Temp::Named(t) => t.as_file().as_raw_fd(),
        };
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))
            .context("making the image descriptor inheritable")?;
        // A lock of its own (another open file description of the same
        // inode), not inherited by mkfs.
        let lock =
            File::open(format!("/proc/self/fd/{fd}")).context("reopening the temporary image")?;
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("locking the temporary image")?;
        Ok(Target {
            path: path.to_path_buf(),
            dir,
            force,
            temp,
            _lock: lock,
        })
    }

    /// The path mkfs.btrfs writes to.
    pub fn mkfs_path(&self) -> PathBuf {
        match &self.temp {
            Temp::Unnamed(f) => PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
            Temp::Named(t) => t.path().to_path_buf(),
        }
    }

    /// Lets a namespace that does not map the caller write the image
    /// (`--map subrange`): mode 0666 while it has no name. A named
    /// temporary file is refused: others could write it too.
    pub fn share_with_namespace(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        match &self.temp {
            Temp::Unnamed(f) => f
                .set_permissions(fs::Permissions::from_mode(0o666))
                .context("making the unnamed image file writable to the namespace"),
            Temp::Named(_) => bail!(
                "--map subrange needs a filesystem with O_TMPFILE for the image (the \
                 output's directory {} has none): write the image elsewhere",
                self.dir.display()
            ),
        }
    }

    /// A path the parent can read the image through.
    pub fn read_path(&self) -> PathBuf {
        self.mkfs_path()
    }

    /// The directory the image goes to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Links the image into place; returns its size.
    pub fn publish(self) -> Result<u64> {
        let Target {
            path,
            dir,
            force,
            temp,
            _lock,
        } = self;
        let size = match &temp {
            Temp::Unnamed(f) => f.metadata()?.len(),
            Temp::Named(t) => t.as_file().metadata()?.len(),
        };
        let tmp_name = dir.join(format!(
            ".{}.rootbox-{}.tmp",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let named = match temp {
            Temp::Unnamed(f) => {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(fs::Permissions::from_mode(0o644))
                    .context("setting the image's mode")?;
                let proc_path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
                nix::unistd::linkat(
                    None,
                    &proc_path,
                    None,
                    &tmp_name,
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                )
                .with_context(|| format!("linking the image into {}", dir.display()))?;
                tmp_name
            }
            Temp::Named(t) => {
                let (_, p) = t.keep().context("keeping the temporary image")?;
                p
            }
        };
        let flags = if force {
            RenameFlags::empty()
        } else {
            RenameFlags::RENAME_NOREPLACE
        };
        if let Err(e) = nix::fcntl::renameat2(None, &named, None, &path, flags) {
            let _ = fs::remove_file(&named);
            if e == nix::Error::EEXIST {
                bail!(
                    "output {} appeared while building (another build?): use --force to replace it",
                    path.display()
                );
            }
            bail!("moving the image to {}: {e}", path.display());
        }
        Ok(size)
    }
}

/// A scratch directory for copies: `base` if given, else the output's
/// directory (same filesystem as the image: copies can be reflinks there).
pub fn scratch_dir(base: Option<&Path>, out: &Target) -> Result<Held> {
    let base = base.unwrap_or(out.dir());
    sweep(base, |n| is_temp_name(n, SCRATCH_PREFIX, ""));
    Held::dir_in(base, SCRATCH_PREFIX).with_context(|| {
        format!(
            "creating scratch space in {} (choose another with --scratch)",
            base.display()
        )
    })
}

/// A private directory in `$TMPDIR` (`rootbox-build-*`, `rootbox-example-*`),
/// once the stale ones there are swept.
pub fn temp_dir(prefix: &str) -> Result<Held> {
    let tmp = std::env::temp_dir();
    sweep(&tmp, |n| {
        TMPDIR_PREFIXES.iter().any(|p| is_temp_name(n, p, ""))
    });
    Held::dir_in(&tmp, prefix)
        .with_context(|| format!("creating a temporary directory in {}", tmp.display()))
}

// ---- temporary files and directories: held while in use, swept after --------

const SCRATCH_PREFIX: &str = ".rootbox-scratch-";
/// The prefixes of rootbox's directories in `$TMPDIR`.
pub const TMPDIR_PREFIXES: [&str; 2] = ["rootbox-build-", "rootbox-example-"];

/// A temporary directory that this build holds: removed when dropped, and
/// locked (an exclusive `flock`) until then, so that no other build's
/// [`sweep`] removes it. SIGKILL skips the removal but not the unlock.
pub struct Held {
    // Fields drop in order: removed while still locked.
    dir: tempfile::TempDir,
    _lock: Flock<File>,
}

impl Held {
    /// Makes `base/PREFIXxxxxxx` and locks it. A sweep running at the same
    /// moment may take the still-free lock and remove the directory before
    /// it is locked: then it is made again.
    pub fn dir_in(base: &Path, prefix: &str) -> std::io::Result<Held> {
        loop {
            let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(base)?;
            let lock = match File::open(dir.path()) {
                Ok(f) => Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| e)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let _ = dir.keep();
                    continue;
                }
                Err(e) => return Err(e),
            };
            if same_inode(&lock, dir.path()) {
                return Ok(Held { dir, _lock: lock });
            }
            // Swept before it was locked; the name may be another's now.
            let _ = dir.keep();
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether `path` still names the file `f` is open on.
fn same_inode(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `name` is `prefix`, six characters of tempfile's, `suffix`.
fn is_temp_name(name: &str, prefix: &str, suffix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix))
        .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The temporary files a build makes beside its output: scratch space,
/// a named temporary image (`.NAME.xxxxxx.rootbox-tmp`) and the image's
/// link while it is published (`.NAME.rootbox-PID.tmp`).
fn is_output_temp(name: &str) -> bool {
    let published = || {
        name.strip_suffix(".tmp")
            .and_then(|r| r.rsplit_once(".rootbox-"))
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    };
    is_temp_name(name, SCRATCH_PREFIX, "")
        || (name.starts_with('.') && (name.ends_with(".rootbox-tmp") || published()))
}

/// Removes what a killed build left in `dir`: entries named as `ours`
/// says, owned by the caller, whose lock is free. One a live build holds
/// is never touched (its lock is not free). Best effort: a failure is
/// logged, not fatal.
pub fn sweep(dir: &Path, ours: impl Fn(&str) -> bool) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        if !e.file_name().to_str().is_some_and(&ours) {
            continue;
        }
        let path = e.path();
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let Ok(meta) = f.metadata() else { continue };
        if meta.uid() != me {
            continue;
        }
        let Ok(lock) = Flock::lock(f, FlockArg::LockExclusiveNonblock) else {
            continue; // a live build's
        };
        if !same_inode(&lock, &path) {
            continue;
        }
        let removed = if meta.is_dir() {
            remove_tree(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => tracing::debug!(
                "removed {}, left by a build that was killed",
                path.display()
            ),
            Err(e) => tracing::warn!(
                "cannot remove {}, left by a killed build: {e}",
                path.display()
            ),
        }
    }
}

/// `rm -rf`, making directories writable first (copies keep their modes).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            remove_tree(&e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// An unnamed (`O_TMPFILE`), owner-only scratch file in `dir`: it vanishes
/// with its last descriptor, so a killed run leaves nothing of it.
pub fn unnamed_scratch(dir: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .with_context(|| format!("creating an unnamed file in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_free_temporaries_and_keeps_held_ones() {
        let base = tempfile::tempdir().unwrap();
        let held = Held::dir_in(base.path(), SCRATCH_PREFIX).unwrap();
        let stale = Held::dir_in(base.path(), SCRATCH_PREFIX).unwrap();
        let stale_path = stale.path().to_path_buf();
        // A killed build: its directory stays, its lock goes.
        let Held { dir, _lock } = stale;
        let _ = dir.keep();
        drop(_lock);
        fs::create_dir(stale_path.join("ro")).unwrap();
        fs::write(stale_path.join("ro/f"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(stale_path.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        let tmp_image = base.path().join(".out.img.rootbox-77.tmp");
        fs::write(&tmp_image, b"").unwrap();
        let other = base.path().join(".rootbox-scratch-notmine");
        fs::create_dir(&other).unwrap();
        sweep(base.path(), is_output_temp);
        assert!(held.path().is_dir(), "a held directory was swept");
        assert!(!stale_path.exists(), "a stale directory was kept");
        assert!(!tmp_image.exists(), "a stale temporary image was kept");
        assert!(other.exists(), "a name rootbox does not make was swept");
    }

    #[test]
    fn temporary_names_are_recognised_exactly() {
        assert!(is_temp_name("rootbox-build-a1B2c3", "rootbox-build-", ""));
        assert!(!is_temp_name("rootbox-build-a1B2c", "rootbox-build-", ""));
        assert!(!is_temp_name("rootbox-test-a1B2c3", "rootbox-build-", ""));
        assert!(is_output_temp(".image.img.rootbox-123.tmp"));
        assert!(is_output_temp(".image.img.Ab12Cd.rootbox-tmp"));
        assert!(!is_output_temp("image.img"));
        assert!(!is_output_temp(".image.img.rootbox-12a.tmp"));
    }
}

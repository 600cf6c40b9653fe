//! The output image: written to an unnamed temporary file in the output's
//! directory, linked into place only when the build succeeded. A failed,
//! interrupted or killed build leaves nothing at the output path.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, RenameFlags};

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
        Ok(Target {
            path: path.to_path_buf(),
            dir,
            force,
            temp,
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
pub fn scratch_dir(base: Option<&Path>, out: &Target) -> Result<tempfile::TempDir> {
    let base = base.unwrap_or(out.dir());
    tempfile::Builder::new()
        .prefix(".rootbox-scratch-")
        .tempdir_in(base)
        .with_context(|| {
            format!(
                "creating scratch space in {} (choose another with --scratch)",
                base.display()
            )
        })
}

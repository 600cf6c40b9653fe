//! Mounts: decided in the parent as [`MountOp`] records, made in the child.
//!
//! Every destination is resolved below the sandbox's root with
//! `RESOLVE_IN_ROOT`, so a symlink in the tree can never send a mount
//! outside it, and the final component must not be a symlink at all: a
//! symlink planted where a mount point should be is an error, not a
//! redirection. Missing destinations are created (directories, or empty
//! files for file binds) the same way.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys;

/// One mount of the sandbox, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum MountOp {
    /// Bind `src` (a host path; symlinks in it are followed) onto `dst`,
    /// with every mount below `src`. Read-only binds are read-only all the
    /// way down.
    Bind {
        /// Source on the host.
        src: PathBuf,
        /// Destination inside the sandbox.
        dst: PathBuf,
        /// Make the bind (recursively) read-only.
        readonly: bool,
    },
    /// A fresh tmpfs at `dst` (mode 0755, nosuid, nodev).
    Tmpfs {
        /// Destination inside the sandbox.
        dst: PathBuf,
    },
    /// procfs at `dst`: a new instance when the sandbox has its own PID
    /// namespace, else a bind of the host's /proc.
    Proc {
        /// Destination inside the sandbox.
        dst: PathBuf,
    },
    /// A minimal /dev at `dst`: a tmpfs with null, zero, full, random,
    /// urandom and tty bound from the host, and the usual symlinks.
    Dev {
        /// Destination inside the sandbox.
        dst: PathBuf,
    },
}

impl MountOp {
    /// The destination of the mount inside the sandbox.
    pub fn dst(&self) -> &Path {
        match self {
            MountOp::Bind { dst, .. }
            | MountOp::Tmpfs { dst }
            | MountOp::Proc { dst }
            | MountOp::Dev { dst } => dst,
        }
    }

    /// Checks what can be checked before anything is started.
    pub(crate) fn validate(&self) -> Result<()> {
        let dst = self.dst();
        if !dst.is_absolute() {
            return Err(Error::Invalid(format!(
                "mount destination {} must be an absolute path",
                dst.display()
            )));
        }
        if dst.components().any(|c| c == Component::ParentDir) {
            return Err(Error::Invalid(format!(
                "mount destination {} must not contain `..`",
                dst.display()
            )));
        }
        if let MountOp::Bind { src, .. } = self {
            std::fs::metadata(src)
                .map_err(|e| Error::Invalid(format!("bind source {}: {e}", src.display())))?;
        }
        Ok(())
    }
}

const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

fn setup_err(step: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Setup { step, source }
}

fn cstr(p: &OsStr) -> CString {
    // Paths come from PathBuf/OsStr, which cannot hold NUL on Unix
    // except through from_vec; the builder rejects those.
    CString::new(p.as_bytes()).unwrap_or_default()
}

/// The magic link through which a mount call reaches exactly `fd`.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// What a mount destination must be when it has to be created.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// The directory below which all destinations resolve (the new root, or
/// the host's `/`).
pub(crate) struct Tree {
    root: OwnedFd,
    /// The root as a path, for messages.
    root_path: PathBuf,
}

impl Tree {
    pub(crate) fn open(root_path: &Path) -> Result<Tree> {
        let root = sys::openat2(
            sys::cwd(),
            &cstr(root_path.as_os_str()),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(setup_err(format!(
            "opening the sandbox root {}",
            root_path.display()
        )))?;
        Ok(Tree {
            root,
            root_path: root_path.to_path_buf(),
        })
    }

    fn shown(&self, dst: &Path) -> String {
        if self.root_path == Path::new("/") {
            dst.display().to_string()
        } else {
            format!("{} (in {})", dst.display(), self.root_path.display())
        }
    }

    /// Opens (O_PATH) the destination `dst`, creating it as `kind` when it
    /// is missing. Intermediate symlinks resolve inside the tree; a symlink
    /// as the last component is refused.
    fn target(&self, dst: &Path, kind: Kind) -> Result<OwnedFd> {
        let rel = dst.strip_prefix("/").unwrap_or(dst);
        if rel.as_os_str().is_empty() {
            return sys::openat2(self.root.as_fd(), c".", libc::O_PATH, 0)
                .map_err(setup_err(format!("opening {}", self.shown(dst))));
        }
        let parent = self.dir(rel.parent().unwrap_or(Path::new("")), dst)?;
        let name = rel.file_name().unwrap_or_default();
        let open = || {
            sys::openat2(
                parent.as_fd(),
                &cstr(name),
                libc::O_PATH | libc::O_NOFOLLOW,
                libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
            )
        };
        let fd = match open() {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                create(&parent, name, kind).map_err(setup_err(format!(
                    "creating mount point {}",
                    self.shown(dst)
                )))?;
                open().map_err(setup_err(format!("opening {}", self.shown(dst))))?
            }
            Err(e) => return Err(setup_err(format!("opening {}", self.shown(dst)))(e)),
        };
        let st = fstat(fd.as_raw_fd())
            .map_err(|e| setup_err(format!("stat {}", self.shown(dst)))(e.into()))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(Error::Setup {
                step: format!(
                    "refusing to mount on {}: it is a symlink, and a mount must not be redirected",
                    self.shown(dst)
                ),
                source: io::Error::from_raw_os_error(libc::ELOOP),
            });
        }
        Ok(fd)
    }

    /// Opens directory `rel` below the root, creating missing components.
    /// Each prefix is resolved from the tree's root with RESOLVE_IN_ROOT,
    /// so a symlink anywhere on the way is clamped to the tree.
    fn dir(&self, rel: &Path, dst: &Path) -> Result<OwnedFd> {
        let open = |prefix: &Path| {
            let p = if prefix.as_os_str().is_empty() {
                Path::new(".")
            } else {
                prefix
            };
            sys::openat2(
                self.root.as_fd(),
                &cstr(p.as_os_str()),
                libc::O_PATH | libc::O_DIRECTORY,
                libc::RESOLVE_IN_ROOT,
            )
        };
        // The common case, every directory there: one openat2.
        if let Ok(fd) = open(rel) {
            return Ok(fd);
        }
        let mut fd = open(Path::new(""))
            .map_err(setup_err(format!("opening {}", self.root_path.display())))?;
        let mut prefix = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                continue;
            };
            prefix.push(name);
            fd = match open(&prefix) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    create(&fd, name, Kind::Dir).map_err(setup_err(format!(
                        "creating the parent directories of mount point {}",
                        self.shown(dst)
                    )))?;
                    open(&prefix).map_err(setup_err(format!("opening {}", self.shown(dst))))?
                }
                Err(e) => {
                    return Err(setup_err(format!(
                        "resolving {} below the sandbox root",
                        self.shown(dst)
                    ))(e))
                }
            };
        }
        Ok(fd)
    }
}

fn create(parent: &OwnedFd, name: &OsStr, kind: Kind) -> io::Result<()> {
    match kind {
        Kind::Dir => mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o755),
        ),
        Kind::File => nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name,
            nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_EXCL
                | nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .and_then(nix::unistd::close),
    }
    .or_else(|e| {
        if e == nix::Error::EEXIST {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(io::Error::from)
}

fn do_mount(
    src: Option<&Path>,
    target: &OwnedFd,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    mount(src, &fd_path(target), fstype, flags, data).map_err(io::Error::from)
}

/// Makes the mount now at `dst` read-only, recursively, keeping the flags
/// the kernel locked (nosuid, nodev, noexec, atime) in a user namespace.
fn make_readonly(tree: &Tree, dst: &Path, kind: Kind) -> Result<()> {
    // Re-open: the fd used for mounting points below the new mount.
    let fd = tree.target(dst, kind)?;
    match sys::mount_setattr_readonly(fd.as_fd(), true) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            // Kernels before 5.12: remount the top mount only, with the
            // locked flags repeated (else EPERM).
            let vfs = nix::sys::statvfs::fstatvfs(&fd)
                .map_err(|e| setup_err(format!("statvfs {}", tree.shown(dst)))(e.into()))?;
            let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
            use nix::sys::statvfs::FsFlags;
            for (v, m) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if vfs.flags().contains(v) {
                    flags |= m;
                }
            }
            do_mount(None, &fd, None, flags, None).map_err(setup_err(format!(
                "remounting {} read-only",
                tree.shown(dst)
            )))
        }
        Err(e) => Err(setup_err(format!("making {} read-only", tree.shown(dst)))(
            e,
        )),
    }
}

/// Makes one mount. Runs in the child, inside the new namespaces.
pub(crate) fn apply(op: &MountOp, tree: &Tree, new_pid_ns: bool) -> Result<()> {
    match op {
        MountOp::Bind { src, dst, readonly } => {
            let kind = if std::fs::metadata(src).map(|m| m.is_dir()).unwrap_or(true) {
                Kind::Dir
            } else {
                Kind::File
            };
            let target = tree.target(dst, kind)?;
            do_mount(
                Some(src),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
            .map_err(setup_err(format!(
                "cannot bind {} on {}",
                src.display(),
                tree.shown(dst)
            )))?;
            if *readonly {
                make_readonly(tree, dst, kind)?;
            }
            Ok(())
        }
        MountOp::Tmpfs { dst } => {
            let target = tree.target(dst, Kind::Dir)?;
            do_mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755"),
            )
            .map_err(setup_err(format!(
                "cannot mount tmpfs on {}",
                tree.shown(dst)
            )))
        }
        MountOp::Proc { dst } => {
            let target = tree.target(dst, Kind::Dir)?;
            let res = if new_pid_ns {
                do_mount(
                    Some(Path::new("proc")),
                    &target,
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None,
                )
            } else {
                do_mount(
                    Some(Path::new("/proc")),
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
            };
            res.map_err(setup_err(format!(
                "cannot mount proc on {}",
                tree.shown(dst)
            )))
        }
        MountOp::Dev { dst } => {
            apply(&MountOp::Tmpfs { dst: dst.clone() }, tree, new_pid_ns)?;
            for node in DEV_NODES {
                let host = Path::new("/dev").join(node);
                let target = tree.target(&dst.join(node), Kind::File)?;
                do_mount(Some(&host), &target, None, MsFlags::MS_BIND, None).map_err(setup_err(
                    format!(
                        "cannot bind {} on {}",
                        host.display(),
                        tree.shown(&dst.join(node))
                    ),
                ))?;
            }
            let dev = tree.target(dst, Kind::Dir)?;
            for (name, to) in DEV_LINKS {
                nix::unistd::symlinkat(to, Some(dev.as_raw_fd()), name).map_err(|e| {
                    setup_err(format!("creating {}/{name}", tree.shown(dst)))(e.into())
                })?;
            }
            for (dir, mode) in [("shm", 0o1777), ("pts", 0o755)] {
                mkdirat(Some(dev.as_raw_fd()), dir, Mode::from_bits_truncate(mode)).map_err(
                    |e| setup_err(format!("creating {}/{dir}", tree.shown(dst)))(e.into()),
                )?;
                nix::sys::stat::fchmodat(
                    Some(dev.as_raw_fd()),
                    dir,
                    Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| setup_err(format!("chmod {}/{dir}", tree.shown(dst)))(e.into()))?;
            }
            Ok(())
        }
    }
}

/// Makes `root` the root of the mount namespace (pivot_root), and detaches
/// the old root so nothing of the host stays reachable.
pub(crate) fn pivot_into(root: &Path) -> Result<()> {
    let step = |what: &str| format!("{what} (new root {})", root.display());
    nix::unistd::chdir(root).map_err(|e| setup_err(step("chdir"))(e.into()))?;
    // pivot_root(".", ".") stacks the old root on top of the new one, so
    // no directory inside the new root is needed to hold it; the detach
    // below then uncovers the new root.
    nix::unistd::pivot_root(".", ".").map_err(|e| setup_err(step("pivot_root"))(e.into()))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| setup_err(step("detaching the old root"))(e.into()))?;
    nix::unistd::chdir("/").map_err(|e| setup_err(step("chdir /"))(e.into()))
}

/// Binds `root` onto itself so that it is a mount point pivot_root accepts.
pub(crate) fn bind_root(root: &Path) -> Result<()> {
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        setup_err(format!(
            "cannot bind the new root {} onto itself",
            root.display()
        ))(e.into())
    })
}

/// Stops mount events from propagating out of the sandbox: every mount
/// inherited from the host becomes a slave (host changes still arrive,
/// none go back).
pub(crate) fn make_slave() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| setup_err("making / a recursive slave mount".into())(e.into()))
}

/// Makes the mount at `path` and every mount below it read-only, in the
/// caller's mount namespace. For callers that build a tree of mounts
/// inside a sandbox (rootbox's staging) and want it sealed before use.
pub fn seal_readonly(path: &Path) -> io::Result<()> {
    let fd = sys::openat2(
        sys::cwd(),
        &cstr(path.as_os_str()),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )?;
    sys::mount_setattr_readonly(fd.as_fd(), true)
}

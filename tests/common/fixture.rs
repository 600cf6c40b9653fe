//! Where the tests put their inputs: directories under /tmp owned by the
//! test user ([`tempdir_for`]), files, directories and symlinks owned by it
//! ([`write_as`], [`create_dirs_as`], [`symlink_as`]), a root filesystem
//! that borrows the host's tools ([`host_tools_rootfs`]), and [`Fx`], the
//! directories of one build.

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::lchown;
use std::path::{Path, PathBuf};

use super::cmd::pids_with_args;
use super::mounts::{mount_table, mount_tmpfs_for};
use super::user::{is_root, User};

/// `chown user: path` (not following a symlink at `path`); a no-op when not root.
pub fn give_to(user: &User, path: &Path) {
    if is_root() {
        lchown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// `chown -R user: path`, not following symlinks.
pub fn give_tree_to(user: &User, path: &Path) {
    give_to(user, path);
    let meta = fs::symlink_metadata(path).expect("lstat");
    if meta.is_dir() {
        for e in fs::read_dir(path).expect("read_dir").flatten() {
            give_tree_to(user, &e.path());
        }
    }
}

/// A temporary directory under /tmp owned by `user`, removed on drop.
pub fn tempdir_for(user: &User) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("rootbox-test-")
        .tempdir_in("/tmp")
        .expect("creating a temporary directory");
    give_to(user, dir.path());
    dir
}

/// Writes `contents` to `path` (creating parents) and gives all of it to `user`.
pub fn write_as(user: &User, path: &Path, contents: impl AsRef<[u8]>) {
    if let Some(parent) = path.parent() {
        create_dirs_as(user, parent);
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    give_to(user, path);
}

/// `mkdir -p path`, every directory it creates owned by `user`.
pub fn create_dirs_as(user: &User, path: &Path) {
    if path.is_dir() {
        return;
    }
    if let Some(parent) = path.parent() {
        create_dirs_as(user, parent);
    }
    fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    give_to(user, path);
}

/// `ln -s target link`, owned by `user`.
pub fn symlink_as(user: &User, target: impl AsRef<Path>, link: &Path) {
    std::os::unix::fs::symlink(target.as_ref(), link).unwrap_or_else(|e| {
        panic!(
            "ln -s {} {}: {e}",
            target.as_ref().display(),
            link.display()
        )
    });
    give_to(user, link);
}

/// Makes `dir` a root filesystem that borrows the host's tools: the host's
/// top-level usr-merge symlinks (bin -> usr/bin, ...) are copied, so the
/// sandbox needs only [`HOST_USR`]'s read-only bind of /usr.
pub fn host_tools_rootfs(user: &User, dir: &Path) {
    create_dirs_as(user, dir);
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match fs::read_link(&host) {
            Ok(target) => symlink_as(user, target, &dir.join(top)),
            Err(_) if host.is_dir() => panic!(
                "/{top} is a directory, not a usr-merge symlink: host_tools_rootfs needs a merged /usr"
            ),
            Err(_) => {}
        }
    }
}

/// The rootbox arguments that complete a [`host_tools_rootfs`].
pub const HOST_USR: [&str; 3] = ["--ro-bind", "/usr", "/usr"];

// ---- one build's directories -------------------------------------------------

/// The directories of one build: `src/` (everything rootbox reads: the
/// rootfs at `src/root`, a store at `src/store`, closure files and specs),
/// `bin/` (for fake tools put first on PATH), `out/` (the output
/// directory) and `tmp/` (rootbox's TMPDIR).
///
/// Processes and mounts whose arguments or paths contain the fixture's
/// directory are the build's ([`Fx::procs`], [`Fx::mounts`]). When the
/// fixture is dropped, also after a failed test, its processes are killed,
/// the cleanups run (last first), its own mounts are unmounted and the
/// directories removed.
pub struct Fx {
    pub user: User,
    pub dir: tempfile::TempDir,
    /// The output path of the build (default `out/image.img`).
    pub output: RefCell<PathBuf>,
    /// Run when the fixture is dropped (deep-tree removal, ...).
    pub cleanup: RefCell<Vec<Box<dyn FnOnce()>>>,
    /// Mounts the test made itself (not the build's).
    pub own_mounts: RefCell<Vec<PathBuf>>,
}

impl Drop for Fx {
    fn drop(&mut self) {
        // A failed test must not leave processes behind.
        for pid in self.procs() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for f in self.cleanup.take().into_iter().rev() {
            f();
        }
        for m in self.own_mounts.take().iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The hash part of the fixture's store paths (Nix base32).
pub const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

impl Fx {
    pub fn new(user: &User) -> Fx {
        let dir = tempdir_for(user);
        for d in ["src/root", "bin", "out", "tmp"] {
            create_dirs_as(user, &dir.path().join(d));
        }
        let output = dir.path().join("out/image.img");
        Fx {
            user: user.clone(),
            dir,
            output: RefCell::new(output),
            cleanup: RefCell::new(Vec::new()),
            own_mounts: RefCell::new(Vec::new()),
        }
    }
    /// Mounts a tmpfs of `size` owned by the test user on `rel` (created),
    /// unmounted when the fixture is dropped. Root only: returns false
    /// (and mounts nothing) otherwise, a skip of that part (under CI, which
    /// runs as root, a failure).
    #[track_caller]
    pub fn tmpfs(&self, rel: &str, size: &str) -> bool {
        if !is_root() {
            super::skip::skipped(format_args!(
                "a tmpfs of {size} on {rel} needs root: the test runs on the disk instead"
            ));
            return false;
        }
        let at = self.path(rel);
        mount_tmpfs_for(&self.user, &at, size);
        self.own_mounts.borrow_mut().push(at);
        true
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn src(&self) -> PathBuf {
        self.path("src")
    }
    pub fn root(&self) -> PathBuf {
        self.path("src/root")
    }
    pub fn store(&self) -> PathBuf {
        self.path("src/store")
    }
    /// A file in the rootfs.
    pub fn file(&self, rel: &str, content: impl AsRef<[u8]>) {
        write_as(&self.user, &self.root().join(rel), content);
    }
    pub fn mkdir(&self, rel: &str) {
        create_dirs_as(&self.user, &self.root().join(rel));
    }
    pub fn symlink(&self, rel: &str, target: &str) {
        let p = self.root().join(rel);
        create_dirs_as(&self.user, p.parent().unwrap());
        symlink_as(&self.user, target, &p);
    }
    /// A store path `src/store/<hash>-NAME` with a file `bin/NAME`.
    pub fn store_path(&self, name: &str) -> PathBuf {
        let p = self.store().join(format!("{HASH}-{name}"));
        write_as(&self.user, &p.join("bin").join(name), format!("#!{name}\n"));
        p
    }
    pub fn image(&self) -> PathBuf {
        self.output.borrow().clone()
    }
    /// The output's directory (`out/` when there is no output).
    pub fn out_dir(&self) -> PathBuf {
        match self.image().parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => self.path("out"),
        }
    }
    /// The fixture's directory as a string: what marks its processes and
    /// mounts.
    pub fn marker(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }
    /// Live processes of the build.
    pub fn procs(&self) -> Vec<u32> {
        let m = self.marker();
        pids_with_args(|a| a.iter().any(|x| x.contains(&m)))
    }
    /// Mounts of the build visible here (the fixture's own left out).
    pub fn mounts(&self) -> Vec<String> {
        let m = self.marker();
        let own = self.own_mounts.borrow();
        mount_table()
            .into_iter()
            .filter(|e| e.mount_point.starts_with(&m) || e.source.starts_with(&m))
            .filter(|e| !own.iter().any(|o| Path::new(&e.mount_point) == o))
            .map(|e| e.line)
            .collect()
    }
}

//! The public description of a sandbox: a builder that collects what the
//! command needs, checked and turned into prepared records
//! ([`Sandbox::prepare`]) before anything starts.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::idmap::{IdMap, MapMode};
use crate::mounts::MountOp;
use crate::process::{self, Child, ExitStatus, Prepared};

/// Where one of the command's standard streams goes.
///
/// ```no_run
/// use rootbox_sandbox::Sandbox;
/// let log = std::fs::File::create("/tmp/log")?;
/// Sandbox::new().command(["ls"]).stdout(log.try_clone()?).stderr(log).run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub enum Stdio {
    /// The caller's own stream (the default).
    #[default]
    Inherit,
    /// This descriptor (a file, a pipe), owned: it stays open while the
    /// [`Sandbox`] (or a clone of it) lives, and the command gets a copy.
    Fd(Arc<OwnedFd>),
}

impl Stdio {
    fn fd(&self) -> Option<Arc<OwnedFd>> {
        match self {
            Stdio::Inherit => None,
            Stdio::Fd(fd) => Some(fd.clone()),
        }
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Stdio {
        Stdio::Fd(Arc::new(fd))
    }
}

impl From<File> for Stdio {
    fn from(f: File) -> Stdio {
        Stdio::from(OwnedFd::from(f))
    }
}

/// Two `Stdio`s are equal when they inherit, or hold the same descriptor.
impl PartialEq for Stdio {
    fn eq(&self, other: &Stdio) -> bool {
        match (self, other) {
            (Stdio::Inherit, Stdio::Inherit) => true,
            (Stdio::Fd(a), Stdio::Fd(b)) => a.as_raw_fd() == b.as_raw_fd(),
            _ => false,
        }
    }
}

impl Eq for Stdio {}

/// Namespaces beyond the user and mount namespaces, which every sandbox has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    /// A new PID namespace; rootbox runs a small init that forwards
    /// signals and reaps orphans, and every process of the sandbox dies
    /// with it.
    pub pid: bool,
    /// A new network namespace (only a down loopback inside).
    pub net: bool,
    /// A new IPC namespace.
    pub ipc: bool,
    /// A new UTS namespace (hostname).
    pub uts: bool,
}

impl Namespaces {
    /// The `CLONE_NEW*` flags of these namespaces, user and mount included.
    pub(crate) fn clone_flags(&self) -> libc::c_int {
        let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS;
        for (on, flag) in [
            (self.pid, libc::CLONE_NEWPID),
            (self.net, libc::CLONE_NEWNET),
            (self.ipc, libc::CLONE_NEWIPC),
            (self.uts, libc::CLONE_NEWUTS),
        ] {
            if on {
                flags |= flag;
            }
        }
        flags
    }
}

/// A rootless sandbox: new user and mount namespaces in which the caller is
/// uid 0 and gid 0, with the mounts the command needs.
///
/// ```no_run
/// use rootbox_sandbox::Sandbox;
/// let status = Sandbox::new()
///     .ro_bind("/usr", "/usr")
///     .tmpfs("/tmp")
///     .command(["id", "-u"])
///     .run()?;
/// assert!(status.success());
/// # Ok::<(), rootbox_sandbox::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub(crate) map: MapMode,
    pub(crate) namespaces: Namespaces,
    pub(crate) mounts: Vec<MountOp>,
    pub(crate) root: Option<PathBuf>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) clear_env: bool,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) argv: Vec<OsString>,
    pub(crate) drop_caps: bool,
    pub(crate) keep_parent_alive: bool,
    /// The command's stdout and stderr.
    #[serde(skip)]
    pub(crate) stdout: Stdio,
    #[serde(skip)]
    pub(crate) stderr: Stdio,
}

impl Sandbox {
    /// A sandbox with the `auto` id map, the host's mount tree (made
    /// private to the sandbox), the caller's environment and no command.
    pub fn new() -> Sandbox {
        Sandbox::default()
    }

    /// How ids are mapped; see [`MapMode`].
    pub fn map(mut self, mode: MapMode) -> Self {
        self.map = mode;
        self
    }

    /// Shorthand for `map(MapMode::Single)`: only the caller, as root.
    pub fn map_root(self) -> Self {
        self.map(MapMode::Single)
    }

    /// Which extra namespaces to create.
    pub fn namespaces(mut self, ns: Namespaces) -> Self {
        self.namespaces = ns;
        self
    }

    /// A new PID namespace.
    pub fn unshare_pid(mut self) -> Self {
        self.namespaces.pid = true;
        self
    }

    /// Adds a mount, after those already added.
    pub fn mount(mut self, op: MountOp) -> Self {
        self.mounts.push(op);
        self
    }

    /// Binds host path `src` onto `dst`, writable.
    pub fn bind(self, src: impl Into<PathBuf>, dst: impl Into<PathBuf>) -> Self {
        self.mount(MountOp::Bind {
            src: src.into(),
            dst: dst.into(),
            readonly: false,
        })
    }

    /// Binds host path `src` onto `dst`, read-only (recursively).
    pub fn ro_bind(self, src: impl Into<PathBuf>, dst: impl Into<PathBuf>) -> Self {
        self.mount(MountOp::Bind {
            src: src.into(),
            dst: dst.into(),
            readonly: true,
        })
    }

    /// A fresh tmpfs at `dst`.
    pub fn tmpfs(self, dst: impl Into<PathBuf>) -> Self {
        self.mount(MountOp::Tmpfs { dst: dst.into() })
    }

    /// procfs at `dst`.
    pub fn proc(self, dst: impl Into<PathBuf>) -> Self {
        self.mount(MountOp::Proc { dst: dst.into() })
    }

    /// A minimal /dev at `dst`.
    pub fn dev(self, dst: impl Into<PathBuf>) -> Self {
        self.mount(MountOp::Dev { dst: dst.into() })
    }

    /// Makes host directory `dir` the sandbox's `/` (pivot_root). Mount
    /// destinations are then paths inside `dir`.
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    /// The working directory of the command (inside the sandbox).
    pub fn chdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets an environment variable of the command.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable of the command.
    pub fn unsetenv(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Starts the command's environment empty instead of from the caller's.
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Drops every capability before the command starts: it runs as uid 0
    /// but cannot mount, chown or override permissions.
    pub fn drop_caps(mut self, drop: bool) -> Self {
        self.drop_caps = drop;
        self
    }

    /// By default the command is killed when the process that started it
    /// dies; `true` lets it outlive its parent.
    pub fn keep_running_without_parent(mut self, keep: bool) -> Self {
        self.keep_parent_alive = keep;
        self
    }

    /// Where the command's standard output goes (e.g. a file, to capture
    /// it); see [`Stdio`].
    pub fn stdout(mut self, out: impl Into<Stdio>) -> Self {
        self.stdout = out.into();
        self
    }

    /// Where the command's standard error goes; see [`Stdio`].
    pub fn stderr(mut self, err: impl Into<Stdio>) -> Self {
        self.stderr = err.into();
        self
    }

    /// The command and its arguments. `argv[0]` is looked up in the
    /// command's `PATH` unless it contains a slash.
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.argv = argv.into_iter().map(Into::into).collect();
        self
    }

    /// The mounts, in order.
    pub fn mounts(&self) -> &[MountOp] {
        &self.mounts
    }

    /// The id map mode.
    pub fn map_mode(&self) -> MapMode {
        self.map
    }

    /// The command line.
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }

    /// Starts the command in the sandbox.
    ///
    /// The calling process must be single-threaded (`Threads: 1` in
    /// /proc/self/status), else this fails with [`Error::MultiThreaded`]
    /// before anything starts: the namespaces are made by a raw clone,
    /// which copies only the calling thread and skips glibc's atfork
    /// handlers, and the kernel refuses a new user namespace to a
    /// multi-threaded process anyway. Start sandboxes before any thread.
    pub fn spawn(&self) -> Result<Child> {
        process::spawn(self.prepare()?)
    }

    /// Starts the command and waits for it, forwarding SIGINT, SIGTERM,
    /// SIGHUP and SIGQUIT to it. Single-threaded callers only, as for
    /// [`Sandbox::spawn`].
    pub fn run(&self) -> Result<ExitStatus> {
        self.spawn()?.wait()
    }

    /// Makes every decision the child would otherwise make: checks the
    /// description, resolves the id map, the command's path candidates,
    /// argv and environment. The child then only runs these records.
    pub(crate) fn prepare(&self) -> Result<Prepared> {
        self.validate()?;
        let idmap = IdMap::resolve(self.map)?;
        tracing::debug!(?idmap, "id map");
        let env = self.environment();
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str());
        Ok(Prepared {
            fallback: (self.map == MapMode::Auto)
                .then(|| idmap.fallback())
                .flatten(),
            idmap,
            clone_flags: self.namespaces.clone_flags(),
            mounts: self.mounts.clone(),
            root: self.root.clone(),
            cwd: self.cwd.clone(),
            new_pid_ns: self.namespaces.pid,
            program: self.argv[0].to_string_lossy().into_owned(),
            candidates: exec_candidates(&self.argv[0], path),
            argv: self
                .argv
                .iter()
                .map(|a| CString::new(a.as_bytes()))
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| Error::Invalid("a command argument contains a NUL byte".into()))?,
            env: env.iter().filter_map(|(k, v)| env_cstring(k, v)).collect(),
            drop_caps: self.drop_caps,
            die_with_parent: !self.keep_parent_alive,
            monitor: self.namespaces.pid
                || (!self.drop_caps && (!self.mounts.is_empty() || self.root.is_some())),
            stdout: self.stdout.fd(),
            stderr: self.stderr.fd(),
        })
    }

    /// Checks the description; done by `spawn` before anything starts.
    pub fn validate(&self) -> Result<()> {
        if self.argv.is_empty() {
            return Err(Error::Invalid("no command given".into()));
        }
        let nul = |s: &OsStr| s.as_bytes().contains(&0);
        if self.argv.iter().any(|a| nul(a)) {
            return Err(Error::Invalid(
                "a command argument contains a NUL byte".into(),
            ));
        }
        if let Some(root) = &self.root {
            if !root.is_dir() {
                return Err(Error::Invalid(format!(
                    "new root {} is not a directory",
                    root.display()
                )));
            }
        }
        for op in &self.mounts {
            op.validate()?;
        }
        Ok(())
    }

    /// The command's final environment.
    pub(crate) fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = if self.clear_env {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (k, v) in &self.env {
            env.retain(|(ek, _)| ek != k);
            if let Some(v) = v {
                env.push((k.clone(), v.clone()));
            }
        }
        env
    }
}

/// `KEY=VALUE` as a C string.
fn env_cstring(k: &OsStr, v: &OsStr) -> Option<CString> {
    let mut b = k.as_bytes().to_vec();
    b.push(b'=');
    b.extend_from_slice(v.as_bytes());
    CString::new(b).ok()
}

/// Where `argv0` may be: itself when it has a slash, else each directory of
/// `path` (the command's PATH, or the usual default).
fn exec_candidates(argv0: &OsStr, path: Option<&OsStr>) -> Vec<CString> {
    if argv0.as_bytes().contains(&b'/') {
        return CString::new(argv0.as_bytes()).into_iter().collect();
    }
    let default = OsStr::new("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::split_paths(path.unwrap_or(default))
        .filter(|d| !d.as_os_str().is_empty())
        .filter_map(|d| CString::new(Path::new(&d).join(argv0).as_os_str().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_reads_like_the_mounts() {
        let sb = Sandbox::new()
            .map_root()
            .ro_bind("/usr", "/usr")
            .tmpfs("/tmp")
            .proc("/proc")
            .dev("/dev")
            .command(["true"]);
        assert_eq!(sb.mounts().len(), 4);
        assert_eq!(sb.map_mode(), MapMode::Single);
        assert!(sb.validate().is_ok());
    }

    #[test]
    fn invalid_descriptions_are_refused_before_starting() {
        assert!(Sandbox::new().validate().is_err());
        let rel = Sandbox::new().tmpfs("tmp").command(["true"]);
        assert!(rel.validate().unwrap_err().to_string().contains("absolute"));
        let dots = Sandbox::new().tmpfs("/a/../b").command(["true"]);
        assert!(dots.validate().unwrap_err().to_string().contains(".."));
        let missing = Sandbox::new()
            .bind("/nonexistent/x", "/x")
            .command(["true"]);
        assert!(missing
            .validate()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/x"));
    }

    #[test]
    fn environment_set_unset_clear() {
        let sb = Sandbox::new()
            .clear_env()
            .env("A", "1")
            .env("B", "2")
            .unsetenv("A")
            .env("B", "3");
        assert_eq!(
            sb.environment(),
            vec![(OsString::from("B"), OsString::from("3"))]
        );
    }

    #[test]
    fn candidates_follow_path() {
        let c = exec_candidates(OsStr::new("sh"), Some(OsStr::new("/a:/b")));
        assert_eq!(
            c,
            vec![
                CString::new("/a/sh").unwrap(),
                CString::new("/b/sh").unwrap()
            ]
        );
        let c = exec_candidates(OsStr::new("./x"), Some(OsStr::new("/a")));
        assert_eq!(c, vec![CString::new("./x").unwrap()]);
    }
}

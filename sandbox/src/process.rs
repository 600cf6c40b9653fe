//! The namespace dance, read top to bottom.
//!
//! Parent                                   Child (new user + mount ns)
//! ------                                   ---------------------------
//! resolve id map, build argv/env/paths
//! block INT TERM HUP QUIT CHLD (signalfd)
//! clone3(CLONE_NEWUSER|CLONE_NEWNS|...) ─► set PDEATHSIG; wait for "go"
//! write uid_map / gid_map                    (EOF = parent died: exit)
//! send "go"                            ─► become 0:0, mounts slave,
//!                                           mounts, pivot_root, chdir
//!                                           [new PID ns: fork; pid 1 stays
//!                                            as init, the command goes on]
//!                                           drop caps, NO_NEW_PRIVS, exec
//! read error pipe (EOF = exec done)    ◄─ or: write the failed step, exit
//! forward signals, wait
//!
//! Everything that can fail late is decided in the parent; the child runs
//! prepared records and reports the first failure through a CLOEXEC pipe.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use crate::diagnose::{diagnose_clone, HostFacts};
use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::mounts::{self, MountOp, Tree};
use crate::sandbox::{env_cstring, exec_candidates, Sandbox};
use crate::sys::{self, Fork};

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    /// The code a shell reports: the exit code, or 128 + the signal.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled(s) => 128 + s,
        }
    }

    fn from_raw(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled(s) => match Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// Signals the parent forwards to the command.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// A running sandbox.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    signals: SignalFd,
    old_mask: SigSet,
    /// With a PID namespace: init reports the command's raw wait status here.
    status: Option<File>,
    done: bool,
}

impl Child {
    /// The pid of the sandbox's first process (init, with a PID namespace).
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Waits for the command, forwarding SIGINT, SIGTERM, SIGHUP and
    /// SIGQUIT sent to this process to it.
    pub fn wait(mut self) -> Result<ExitStatus> {
        let status = loop {
            let info = self
                .signals
                .read_signal()
                .map_err(Error::sys("reading signals"))?;
            let Some(info) = info else { continue };
            let sig = Signal::try_from(info.ssi_signo as i32).ok();
            if sig != Some(Signal::SIGCHLD) {
                if let Some(sig) = sig {
                    tracing::debug!("forwarding {sig} to the sandbox");
                    let _ = kill(self.pid, sig);
                }
                continue;
            }
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => break ExitStatus::Exited(c),
                Ok(WaitStatus::Signaled(_, s, _)) => break ExitStatus::Signaled(s as i32),
                Ok(_) => continue,
                Err(e) => return Err(Error::sys("waiting for the sandbox")(e)),
            }
        };
        self.done = true;
        // With a PID namespace the direct child is init; the command's own
        // status is what init reported.
        let status = match self.status.take() {
            Some(mut pipe) => {
                let mut raw = [0u8; 4];
                match pipe.read_exact(&mut raw) {
                    Ok(()) => ExitStatus::from_raw(i32::from_le_bytes(raw)),
                    Err(_) => status,
                }
            }
            None => status,
        };
        Ok(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.done {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
        // Take the signals we consumed back to their normal delivery.
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old_mask), None);
    }
}

/// Everything the child needs, prepared by the parent so the child makes
/// no decisions.
struct Prepared {
    idmap: IdMap,
    mounts: Vec<MountOp>,
    root: Option<PathBuf>,
    cwd: Option<PathBuf>,
    new_pid_ns: bool,
    program: String,
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    drop_caps: bool,
    die_with_parent: bool,
    old_mask: SigSet,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
}

fn pipe() -> Result<(File, File)> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("creating a pipe"))?;
    Ok((File::from(r), File::from(w)))
}

pub(crate) fn spawn(sb: &Sandbox) -> Result<Child> {
    sb.validate()?;
    let idmap = IdMap::resolve(sb.map)?;
    tracing::debug!(?idmap, "id map");
    let env = sb.environment();
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let prepared = Prepared {
        idmap: idmap.clone(),
        mounts: sb.mounts.clone(),
        root: sb.root.clone(),
        cwd: sb.cwd.clone(),
        new_pid_ns: sb.namespaces.pid,
        program: sb.argv[0].to_string_lossy().into_owned(),
        candidates: exec_candidates(&sb.argv[0], path),
        argv: sb
            .argv
            .iter()
            .map(|a| CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::Invalid("a command argument contains a NUL byte".into()))?,
        env: env.iter().filter_map(|(k, v)| env_cstring(k, v)).collect(),
        drop_caps: sb.drop_caps,
        die_with_parent: !sb.keep_parent_alive,
        stdout: sb.stdout,
        stderr: sb.stderr,
        old_mask: SigSet::thread_get_mask().map_err(Error::sys("reading the signal mask"))?,
    };

    let (go_r, mut go_w) = pipe()?;
    let (mut hello_r, hello_w) = pipe()?;
    let (mut err_r, err_w) = pipe()?;
    // The monitor reports the command's raw wait status here.
    let status_pipe = Some(pipe()?);

    // Block the signals we forward before the child exists, so none is
    // lost between clone and the wait loop; the child unblocks them just
    // before exec.
    let mask = handled_signals();
    mask.thread_block()
        .map_err(Error::sys("blocking signals"))?;
    let restore = |e: Error| {
        let _ = prepared.old_mask.thread_set_mask();
        e
    };
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| restore(Error::sys("creating a signalfd")(e)))?;

    let child = match sys::clone_into_namespaces(sb.namespaces.clone_flags()) {
        Err(source) => {
            return Err(restore(Error::CreateNamespace {
                // The facts are read only when they are needed, on failure.
                diagnosis: diagnose_clone(&source, &HostFacts::read()),
                source,
            }));
        }
        Ok(Fork::Child) => {
            drop(go_w);
            drop(err_r);
            drop(signals);
            let status_w = status_pipe.map(|(r, w)| {
                drop(r);
                w
            });
            drop(hello_r);
            child_main(&prepared, go_r, err_w, status_w, hello_w)
        }
        Ok(Fork::Parent(pid)) => pid,
    };
    drop(go_r);
    drop(hello_w);
    drop(err_w);
    let status = status_pipe.map(|(r, w)| {
        drop(w);
        r
    });
    let child = Child {
        pid: child,
        signals,
        old_mask: prepared.old_mask,
        status,
        done: false,
    };

    // The child waits in its new user namespace until its ids are mapped:
    // nothing in it can be done as root before that.
    // The child's pid as /proc knows it: the clone's return value is the
    // pid in our PID namespace, and /proc may belong to another one (inside
    // a sandbox with its own PID namespace and the host's /proc).
    let mut hello = String::new();
    let _ = hello_r.read_to_string(&mut hello);
    let proc_pid = hello.trim().parse().map(Pid::from_raw).unwrap_or(child.pid);
    idmap.write(proc_pid)?;
    go_w.write_all(b"g").map_err(|source| Error::Sys {
        what: "starting the sandbox",
        source,
    })?;
    drop(go_w);

    // The error pipe closes on exec (CLOEXEC) or carries the failed step.
    let mut report = Vec::new();
    let _ = err_r.read_to_end(&mut report);
    if !report.is_empty() {
        return Err(decode_error(&report, &prepared.program));
    }
    Ok(child)
}

// ---- child side --------------------------------------------------------

/// The child: waits for its id map, sets up, and execs. Never returns.
fn child_main(p: &Prepared, go: File, mut err: File, status: Option<File>, mut hello: File) -> ! {
    // Tell the parent which /proc entry is ours (see `spawn`).
    let me = std::fs::read_link("/proc/self").unwrap_or_default();
    let _ = hello.write_all(me.as_os_str().as_encoded_bytes());
    drop(hello);
    let failure = child_setup(p, go, &err, status).unwrap_err();
    let _ = err.write_all(&encode_error(&failure));
    sys::exit_now(127)
}

fn child_setup(p: &Prepared, mut go: File, err: &File, status: Option<File>) -> Result<Infallible> {
    // Die with the parent; if it already died, the go pipe reads EOF below.
    if p.die_with_parent {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::sys("PR_SET_PDEATHSIG"))?;
    }
    let mut byte = [0u8; 1];
    if go.read(&mut byte).map_err(|source| Error::Sys {
        what: "waiting for the id map",
        source,
    })? == 0
    {
        sys::exit_now(1);
    }
    drop(go);

    // Become 0:0. The map is written, so these ids exist; supplementary
    // groups can only be dropped where setgroups is allowed.
    let root_gid = Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(Error::sys("setresgid(0)"))?;
    if p.idmap.setgroups_allowed() {
        nix::unistd::setgroups(&[]).map_err(Error::sys("setgroups([])"))?;
    }
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(Error::sys("setresuid(0)"))?;
    // Changing to another kernel uid (where the caller itself is not
    // mapped, --map subrange) makes the process non-dumpable, and its /proc
    // files then belong to the host's root: the monitor below could not
    // write the command's inner id map. Nothing secret is in this process.
    nix::sys::prctl::set_dumpable(true).map_err(Error::sys("PR_SET_DUMPABLE"))?;

    // The monitor below writes the command's inner id map through this
    // procfs; keep it before any mount can cover or replace /proc.
    let proc_dir = sys::openat2(sys::cwd(), c"/proc", libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|source| Error::Sys {
            what: "opening /proc",
            source,
        })?;

    // Nothing mounted from here on may reach the host.
    mounts::make_slave()?;
    let tree_root = match &p.root {
        Some(root) => {
            mounts::bind_root(root)?;
            root.clone()
        }
        None => PathBuf::from("/"),
    };
    let tree = Tree::open(&tree_root)?;
    for op in &p.mounts {
        mounts::apply(op, &tree, p.new_pid_ns)?;
    }
    drop(tree);
    if let Some(root) = &p.root {
        mounts::pivot_into(root)?;
    }
    if let Some(cwd) = &p.cwd {
        nix::unistd::chdir(cwd).map_err(|e| Error::Setup {
            step: format!("cannot change to working directory {}", cwd.display()),
            source: e.into(),
        })?;
    }

    // The command runs one user namespace further in. The mounts made
    // above then belong to a more privileged namespace, and the kernel
    // locks their flags: a read-only bind cannot be remounted writable, by
    // the command or by anything it starts. This process stays outside as
    // the command's monitor: only a process of the enclosing namespace may
    // write the inner id map; then it forwards signals, reaps, and reports
    // the command's status. In a new PID namespace it is also pid 1.
    let (mut unshared_r, mut unshared_w) = pipe()?;
    let (mut mapped_r, mut mapped_w) = pipe()?;
    match sys::fork().map_err(|source| Error::Sys {
        what: "fork",
        source,
    })? {
        Fork::Parent(cmd) => {
            drop(unshared_w);
            drop(mapped_r);
            // The command's pid as /proc knows it (the outer one, also in a
            // new PID namespace). EOF: the command failed before it
            // unshared, and said why on the error pipe.
            let mut outer_pid = String::new();
            if unshared_r.read_to_string(&mut outer_pid).is_ok() && !outer_pid.is_empty() {
                if let Err(e) = write_inner_map(&proc_dir, outer_pid.trim(), p) {
                    let _ = kill(cmd, Signal::SIGKILL);
                    return Err(e);
                }
                let _ = mapped_w.write_all(b"g");
            }
            drop(mapped_w);
            run_init(cmd, err, status)
        }
        Fork::Child => {
            drop(unshared_r);
            drop(mapped_w);
            if p.die_with_parent {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                    .map_err(Error::sys("PR_SET_PDEATHSIG"))?;
            }
            nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(
                |e| Error::Setup {
                    step: "entering the inner user namespace that locks the mounts".into(),
                    source: e.into(),
                },
            )?;
            let me = nix::fcntl::readlinkat(Some(proc_dir.as_raw_fd()), "self")
                .map_err(Error::sys("reading /proc/self"))?;
            unshared_w
                .write_all(me.as_encoded_bytes())
                .map_err(|source| Error::Sys {
                    what: "signalling the monitor",
                    source,
                })?;
            drop(unshared_w);
            let mut byte = [0u8; 1];
            if mapped_r.read(&mut byte).unwrap_or(0) == 0 {
                sys::exit_now(1);
            }
        }
    }
    drop(status);
    exec(p)
}

/// Maps every id of the sandbox onto itself in the command's inner
/// namespace: the command sees the same ids, one namespace further in.
fn write_inner_map(proc_dir: &OwnedFd, pid: &str, p: &Prepared) -> Result<()> {
    for (what, ranges) in [("uid_map", &p.idmap.uids), ("gid_map", &p.idmap.gids)] {
        let identity: String = ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.inside, r.count))
            .collect();
        let path = std::ffi::CString::new(format!("{pid}/{what}")).unwrap_or_default();
        sys::openat2(proc_dir.as_fd(), &path, libc::O_WRONLY, 0)
            .map(File::from)
            .and_then(|mut f| f.write_all(identity.as_bytes()))
            .map_err(|source| Error::IdMap {
                what: if what == "uid_map" {
                    "uid_map"
                } else {
                    "gid_map"
                },
                source,
                diagnosis: None,
            })?;
    }
    Ok(())
}

fn exec(p: &Prepared) -> Result<Infallible> {
    for (fd, target) in [(p.stdout, 1), (p.stderr, 2)] {
        if let Some(fd) = fd {
            nix::unistd::dup2(fd, target)
                .map_err(Error::sys("redirecting the command's output"))?;
        }
    }
    if p.drop_caps {
        drop_all_caps()?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(Error::sys("PR_SET_NO_NEW_PRIVS"))?;
    sys::reset_signal(Signal::SIGPIPE).map_err(|source| Error::Sys {
        what: "resetting SIGPIPE",
        source,
    })?;
    p.old_mask
        .thread_set_mask()
        .map_err(Error::sys("restoring the signal mask"))?;
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for path in &p.candidates {
        let e = nix::unistd::execve(path, &p.argv, &p.env).unwrap_err();
        match e {
            nix::Error::ENOENT | nix::Error::ENOTDIR => {}
            nix::Error::EACCES => last = e.into(),
            e => {
                last = e.into();
                break;
            }
        }
    }
    Err(Error::Exec {
        program: p.program.clone(),
        source: last,
    })
}

fn drop_all_caps() -> Result<()> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| Error::Setup {
        step: format!("dropping capabilities: {e}"),
        source: io::Error::from_raw_os_error(libc::EPERM),
    };
    for cap in caps::all() {
        caps::drop(None, CapSet::Bounding, cap).map_err(err)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    Ok(())
}

/// pid 1 of the sandbox's PID namespace: forwards signals to the command,
/// reaps every orphan, and exits when the command does, reporting its raw
/// wait status to the parent. Its death takes the whole namespace with it.
fn run_init(cmd: Pid, err: &File, status: Option<File>) -> ! {
    // The command holds the error pipe until its exec; init must not keep
    // it open, or the parent would wait for init instead.
    let _ = nix::unistd::close(err.as_raw_fd());
    let mask = handled_signals();
    let raw = loop {
        let Ok(sig) = mask.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(cmd, sig);
            continue;
        }
        let mut done = None;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, c)) if pid == cmd => done = Some((c & 0xff) << 8),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == cmd => done = Some(s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if let Some(raw) = done {
            break raw;
        }
    };
    if let Some(mut status) = status {
        let _ = status.write_all(&raw.to_le_bytes());
    }
    let code = ExitStatus::from_raw(raw).code();
    sys::exit_now(code)
}

// ---- error transport ---------------------------------------------------

fn encode_error(e: &Error) -> Vec<u8> {
    let (kind, errno, text) = match e {
        Error::Exec { source, .. } => ('x', source.raw_os_error().unwrap_or(0), String::new()),
        Error::Setup { step, source } => ('s', source.raw_os_error().unwrap_or(0), step.clone()),
        other => ('s', 0, other.to_string()),
    };
    format!("{kind}{errno}\n{text}").into_bytes()
}

fn decode_error(report: &[u8], program: &str) -> Error {
    let text = String::from_utf8_lossy(report);
    let (head, step) = text.split_once('\n').unwrap_or((&text, ""));
    let errno: i32 = head.get(1..).and_then(|n| n.parse().ok()).unwrap_or(0);
    let source = if errno == 0 {
        io::Error::other("failed")
    } else {
        io::Error::from_raw_os_error(errno)
    };
    if head.starts_with('x') {
        Error::Exec {
            program: program.to_string(),
            source,
        }
    } else {
        Error::Setup {
            step: step.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_codes() {
        assert_eq!(ExitStatus::Exited(7).code(), 7);
        assert_eq!(ExitStatus::Signaled(9).code(), 137);
        assert!(ExitStatus::Exited(0).success());
        assert_eq!(ExitStatus::from_raw(7 << 8), ExitStatus::Exited(7));
        assert_eq!(ExitStatus::from_raw(9), ExitStatus::Signaled(9));
        assert_eq!(ExitStatus::Signaled(9).to_string(), "killed by SIGKILL");
    }

    #[test]
    fn errors_cross_the_pipe() {
        let e = Error::Setup {
            step: "cannot bind /a on /b".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        match decode_error(&encode_error(&e), "x") {
            Error::Setup { step, source } => {
                assert_eq!(step, "cannot bind /a on /b");
                assert_eq!(source.raw_os_error(), Some(libc::EPERM));
            }
            other => panic!("{other:?}"),
        }
        let e = Error::Exec {
            program: "nope".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert!(matches!(
            decode_error(&encode_error(&e), "nope"),
            Error::Exec { .. }
        ));
    }
}

//! The namespace dance, read top to bottom: up to three processes, and
//! the [`Message`]s they exchange over [`Channel`]s.
//!
//! ```text
//! caller (parent)                 sandbox child                    command
//! ---------------                 -------------                    -------
//! Sandbox::prepare: map, argv,
//!   env, mounts (all decisions)
//! check: one thread only
//! block INT TERM HUP QUIT CHLD
//! clone3(NEWUSER|NEWNS|...) ───► PDEATHSIG
//!                                 ┌ a single own id (--map single): the
//!                                 │ child writes /proc/self/{setgroups,
//!                                 │ uid_map,gid_map} itself (parent gone
//!                                 │ already: exit)
//!                         ◄────── └ Mapped, and on without waiting
//!                         ◄────── Ready{pid}       (control; any other map,
//! write uid_map, gid_map           or the child's own write refused)
//!   (newuidmap ∥ newgidmap, or
//!    /proc/PID/* directly; auto:
//!    a helper fails → kill, start
//!    again with the single map)
//! Go ───────────────────────────► (EOF instead: parent died, exit)
//!                                 setresgid/setresuid(0), dumpable
//!                                 ┌ no monitor needed (no PID ns, and no
//!                                 │ mount of ours, or caps dropped):
//!                                 │ / a slave, the mounts (none: nothing
//!                                 │ to do), exec below
//!                                 └ as the command itself
//!                                 open /proc (for the inner map)
//!                                 / a recursive slave; bind the new
//!                                 root; the mounts; pivot_root; chdir
//!                                 fork ─────────────────────────► PDEATHSIG
//!                                                                 unshare(NEWUSER|NEWNS):
//!                                                                 the mounts now belong to
//!                                                                 a more privileged user
//!                                                                 namespace, so the kernel
//!                                                                 locks them (a read-only
//!                                                                 bind stays read-only)
//!                                 ◄────────────────────────────── Ready{pid}       (inner)
//!                                 write the inner map (every id
//!                                 onto itself), Go ─────────────► stdout/stderr, drop caps,
//!                                 close its report end            NO_NEW_PRIVS, SIGPIPE
//!                                                                 default, unmask, execve
//! report: EOF = exec done ◄─────────────────────────────────────── or Failed{step}, exit 127
//!   (or Failed{step} from either)
//! return Child                    monitor (pid 1 of a new PID
//!                                 namespace): forwards signals,
//! Child::wait: forward signals,   reaps, Exited{raw} ─► (control),
//!   waitpid, read Exited{raw}     exits with the command's code
//! ```
//!
//! The monitor and the inner user namespace exist only where they are
//! needed ([`Prepared::monitor`]): with a PID namespace (the monitor is its
//! init), or when the sandbox makes mounts and the command keeps its
//! capabilities (it could unmount or remount them otherwise). Without
//! them, the command sees only mounts inherited from the host, which the
//! kernel locked already when the sandbox's user namespace was made.
//!
//! Everything that can fail late is decided in the parent
//! ([`Sandbox::prepare`](crate::Sandbox) makes a [`Prepared`]); the child
//! and the command run those records, and report the first failure on the
//! report channel, whose command end closes on exec (close-on-exec).
//!
//! This file is longer than the others (about 680 lines before its tests)
//! on purpose: each process's side of the dance is kept in one place, so
//! the order of clone, maps, mounts, pivot and exec reads top to bottom.

use std::convert::Infallible;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};

use crate::channel::{Channel, Message};
use crate::diagnose::{diagnose_clone, status_field, HostFacts};
use crate::error::{Error, Result};
use crate::idmap::IdMap;
use crate::mounts::{self, MountOp, Tree};
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

/// Everything the child and the command need, decided by the parent
/// ([`Sandbox::prepare`](crate::Sandbox)) so that they make no decisions.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The sandbox's id map, written by the parent.
    pub(crate) idmap: IdMap,
    /// With `--map auto`: the single map to start again with when the
    /// setuid helpers fail to write `idmap`.
    pub(crate) fallback: Option<IdMap>,
    /// The `CLONE_NEW*` flags of the sandbox's namespaces.
    pub(crate) clone_flags: libc::c_int,
    /// The mounts, in order.
    pub(crate) mounts: Vec<MountOp>,
    /// The new root (pivot_root), if any.
    pub(crate) root: Option<PathBuf>,
    /// The command's working directory, inside the sandbox.
    pub(crate) cwd: Option<PathBuf>,
    /// The sandbox has its own PID namespace.
    pub(crate) new_pid_ns: bool,
    /// argv\[0\] as given, for messages.
    pub(crate) program: String,
    /// The paths execve tries, in order.
    pub(crate) candidates: Vec<CString>,
    /// The command line.
    pub(crate) argv: Vec<CString>,
    /// The command's environment, `KEY=VALUE`.
    pub(crate) env: Vec<CString>,
    /// Drop every capability before exec.
    pub(crate) drop_caps: bool,
    /// Kill the sandbox when the parent dies.
    pub(crate) die_with_parent: bool,
    /// Run the command under a monitor, one user namespace further in:
    /// needed for a PID namespace (the monitor is its init), and to lock
    /// the mounts the sandbox makes when the command keeps its
    /// capabilities (it could unmount or remount them otherwise).
    pub(crate) monitor: bool,
    /// Descriptors for the command's stdout and stderr.
    pub(crate) stdout: Option<Arc<OwnedFd>>,
    /// See `stdout`.
    pub(crate) stderr: Option<Arc<OwnedFd>>,
}

/// A running sandbox.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    signals: SignalFd,
    old_mask: SigSet,
    /// The monitor reports the command's raw wait status here.
    control: Option<Channel>,
    done: bool,
}

impl Child {
    /// The pid of the sandbox's first process: the monitor (init, with a
    /// PID namespace), or the command itself where no monitor is needed.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Waits for the command, forwarding SIGINT, SIGTERM, SIGHUP and
    /// SIGQUIT sent to this process to it.
    pub fn wait(self) -> Result<ExitStatus> {
        self.wait_inner(None)
    }

    /// [`Child::wait`], for a command that must end when it is told to (a
    /// build step, not an interactive program): once a signal has been
    /// forwarded, the sandbox gets `grace` to end, then it is killed
    /// (SIGKILL to its first process, which takes a PID namespace with it).
    /// A command that catches the signal and carries on, or that a shell
    /// started just after the signal (so it never saw it), cannot keep the
    /// caller waiting. The status is then that of the forwarded signal.
    pub fn wait_stopping_after(self, grace: std::time::Duration) -> Result<ExitStatus> {
        self.wait_inner(Some(grace))
    }

    fn wait_inner(mut self, grace: Option<std::time::Duration>) -> Result<ExitStatus> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        // Set once a signal is forwarded (with a grace period): the
        // deadline, and the signal the status will report.
        let mut stopping: Option<(std::time::Instant, Signal)> = None;
        let mut killed = None;
        let status = loop {
            if let Some((deadline, sig)) = stopping {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, ms) {
                    Ok(0) => {
                        tracing::debug!("the sandbox did not end after {sig}: killing it");
                        let _ = kill(self.pid, Signal::SIGKILL);
                        (stopping, killed) = (None, Some(sig));
                        continue;
                    }
                    Err(nix::errno::Errno::EINTR) | Ok(_) => {}
                    Err(e) => return Err(Error::sys("waiting for signals")(e)),
                }
            }
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
                    if let (Some(grace), None, None) = (grace, stopping, killed) {
                        stopping = Some((std::time::Instant::now() + grace, sig));
                    }
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
        if let Some(sig) = killed {
            self.done = true;
            return Ok(ExitStatus::Signaled(sig as i32));
        }
        self.done = true;
        // The direct child is the monitor; the command's own status is what
        // the monitor reported.
        let status = match self.control.take().map(|mut c| c.recv()) {
            Some(Ok(Some(Message::Exited { raw }))) => ExitStatus::from_raw(raw),
            _ => status,
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

/// Refuses to clone from a multi-threaded process: the raw clone copies
/// only the calling thread and skips glibc's atfork handlers, so a lock
/// another thread held (malloc's, stdio's) would stay locked in the child;
/// and the kernel refuses CLONE_NEWUSER to a multi-threaded process anyway.
fn require_single_thread() -> Result<()> {
    // One read of a page (read_to_string's growing reads would take seven
    // for the usual 1.4 KB); the whole file when it is longer (a long
    // Groups: line).
    let mut buf = [0u8; 4096];
    let n = std::fs::File::open("/proc/self/status")
        .and_then(|mut f| io::Read::read(&mut f, &mut buf))
        .unwrap_or(0);
    let status = match n {
        4096 => std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
        n => String::from_utf8_lossy(&buf[..n]).into_owned(),
    };
    match status_field(&status, "Threads").and_then(|t| t.parse::<u64>().ok()) {
        Some(threads) if threads > 1 => Err(Error::MultiThreaded { threads }),
        _ => Ok(()),
    }
}

fn channel() -> Result<(Channel, Channel)> {
    Channel::pair().map_err(|source| Error::Sys {
        what: "creating a channel",
        source,
    })
}

/// Starts the prepared sandbox. Runs in the parent.
pub(crate) fn spawn(mut p: Prepared) -> Result<Child> {
    require_single_thread()?;
    match start(&p) {
        // `--map auto`: newuidmap/newgidmap failed for a reason that was not
        // seen beforehand. The half-mapped child is gone (Child's drop);
        // start again with the caller's own ids.
        Err(e @ Error::IdMapHelper { .. }) if p.fallback.is_some() => {
            crate::idmap::warn_single_fallback(&e.to_string());
            p.idmap = p.fallback.take().unwrap_or(p.idmap);
            start(&p)
        }
        started => started,
    }
}

/// One attempt of [`spawn`].
fn start(p: &Prepared) -> Result<Child> {
    let old_mask = SigSet::thread_get_mask().map_err(Error::sys("reading the signal mask"))?;
    // control: the child's Ready and the parent's Go; the monitor's Exited.
    let (mut control, control_child) = channel()?;
    // report: a failed step, from the child or the command; EOF once the
    // command has exec'd and the monitor has closed its copy.
    let (mut report, report_child) = channel()?;

    // Block the signals we forward before the child exists, so none is
    // lost between clone and the wait loop; the command unblocks them just
    // before exec.
    let mask = handled_signals();
    mask.thread_block()
        .map_err(Error::sys("blocking signals"))?;
    let restore = |e: Error| {
        let _ = old_mask.thread_set_mask();
        e
    };
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| restore(Error::sys("creating a signalfd")(e)))?;

    // Decided here: in the child, before its map is written, its own ids
    // read as the overflow id.
    let self_map = p.idmap.self_writable();
    let pid = match sys::clone_into_namespaces(p.clone_flags) {
        Err(source) => {
            return Err(restore(Error::CreateNamespace {
                // The facts are read only when they are needed, on failure.
                diagnosis: diagnose_clone(&source, &HostFacts::read()),
                source,
            }));
        }
        Ok(Fork::Child) => {
            drop((control, report, signals));
            child_main(p, self_map, old_mask, control_child, report_child)
        }
        Ok(Fork::Parent(pid)) => pid,
    };
    drop((control_child, report_child));
    let mut child = Child {
        pid,
        signals,
        old_mask,
        control: None,
        done: false,
    };

    // The child waits in its new user namespace until its ids are mapped:
    // nothing in it can be done as root before that. (No Ready: the child
    // ended before it was ready, and the report says why.)
    // (Mapped: the child wrote its own single-id map and goes on alone.)
    if let Ok(Some(Message::Ready { proc_pid })) = control.recv() {
        let proc_pid = if proc_pid > 0 {
            Pid::from_raw(proc_pid)
        } else {
            pid
        };
        p.idmap.write(proc_pid)?;
        control.send(&Message::Go).map_err(|source| Error::Sys {
            what: "starting the sandbox",
            source,
        })?;
    }
    child.control = Some(control);

    match report.recv() {
        Ok(None) => Ok(child),
        Ok(Some(msg)) => Err(failure_error(msg, &p.program)),
        Err(source) => Err(Error::Sys {
            what: "reading the sandbox's report",
            source,
        }),
    }
}

// ---- the sandbox child ---------------------------------------------------

/// The child: waits for its id map, sets up, and execs. Never returns.
fn child_main(
    p: &Prepared,
    self_map: bool,
    old_mask: SigSet,
    control: Channel,
    report: Channel,
) -> ! {
    let mut report = Some(report);
    let failure = child_setup(p, self_map, old_mask, control, &mut report).unwrap_err();
    if let Some(report) = report.as_mut() {
        let _ = report.send(&failure_message(&failure));
    }
    sys::exit_now(127)
}

/// This process's pid as the mounted /proc knows it, 0 when unknown.
fn proc_pid(proc_dir: Option<&OwnedFd>) -> i32 {
    let link = match proc_dir {
        Some(dir) => nix::fcntl::readlinkat(Some(dir.as_raw_fd()), "self"),
        None => nix::fcntl::readlink("/proc/self"),
    };
    link.ok()
        .and_then(|l| l.to_str()?.parse().ok())
        .unwrap_or(0)
}

fn child_setup(
    p: &Prepared,
    self_map: bool,
    old_mask: SigSet,
    mut control: Channel,
    report: &mut Option<Channel>,
) -> Result<Infallible> {
    // Die with the parent; if it already died, `control` reads EOF below.
    if p.die_with_parent {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::sys("PR_SET_PDEATHSIG"))?;
    }
    // A single own id the child maps itself, as bwrap does: no round trip
    // to the parent. The parent sends nothing before it hears from the
    // child, so anything readable here is its end closing: it died.
    if self_map {
        if control.readable_now() {
            sys::exit_now(1);
        }
        if p.idmap.write_own().is_ok() {
            if control.send(&Message::Mapped).is_err() {
                sys::exit_now(1);
            }
            become_root(p)?;
            return set_up_and_exec(p, old_mask, control, report);
        }
        // Refused (a /proc of another PID namespace, say): the parent
        // writes it, and explains a refusal.
    }
    let ready = Message::Ready {
        proc_pid: proc_pid(None),
    };
    if control.send(&ready).is_err() || control.recv().ok().flatten() != Some(Message::Go) {
        sys::exit_now(1);
    }
    become_root(p)?;
    set_up_and_exec(p, old_mask, control, report)
}

/// The child's work once it is root in its namespace: the mounts, and
/// the command (under a monitor, where one is needed).
fn set_up_and_exec(
    p: &Prepared,
    old_mask: SigSet,
    control: Channel,
    report: &mut Option<Channel>,
) -> Result<Infallible> {
    if !p.monitor {
        // No mount of ours to lock and no PID namespace: the command is
        // this process. The mounts it sees came from the host and are
        // locked already (the kernel locks every mount a less privileged
        // user namespace inherits).
        make_mounts(p)?;
        return exec(p, old_mask);
    }

    // The monitor writes the command's inner id map through this procfs;
    // keep it before any mount can cover or replace /proc.
    let proc_dir = sys::openat2(sys::cwd(), c"/proc", libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|source| Error::Sys {
            what: "opening /proc",
            source,
        })?;

    make_mounts(p)?;

    // The command runs one user namespace further in. The mounts made
    // above then belong to a more privileged namespace, and the kernel
    // locks their flags: a read-only bind cannot be remounted writable, by
    // the command or by anything it starts. This process stays outside as
    // the command's monitor: only a process of the enclosing namespace may
    // write the inner id map; then it forwards signals, reaps, and reports
    // the command's status. In a new PID namespace it is also pid 1.
    let (to_command, mut to_monitor) = channel()?;
    match sys::fork().map_err(|source| Error::Sys {
        what: "fork",
        source,
    })? {
        Fork::Parent(cmd) => {
            drop(to_monitor);
            monitor(p, cmd, &proc_dir, to_command, control, report.take())
        }
        Fork::Child => {
            drop((to_command, control));
            enter_inner_namespace(p, &proc_dir, &mut to_monitor)?;
        }
    }
    exec(p, old_mask)
}

/// Becomes 0:0 in the new namespace. The map is written, so these ids exist.
fn become_root(p: &Prepared) -> Result<()> {
    let root_gid = Gid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(Error::sys("setresgid(0)"))?;
    // Supplementary groups can only be dropped where setgroups is allowed.
    if p.idmap.setgroups_allowed() {
        nix::unistd::setgroups(&[]).map_err(Error::sys("setgroups([])"))?;
    }
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(Error::sys("setresuid(0)"))?;
    // Changing to another kernel uid (where the caller itself is not
    // mapped, --map subrange) makes the process non-dumpable, and its /proc
    // files then belong to the host's root: the monitor could not write
    // the command's inner id map. Nothing secret is in this process.
    nix::sys::prctl::set_dumpable(true).map_err(Error::sys("PR_SET_DUMPABLE"))
}

/// Makes the prepared mounts, the new root and the working directory.
fn make_mounts(p: &Prepared) -> Result<()> {
    // No mount of ours: nothing to do. Every mount the sandbox inherited
    // is a slave already (the kernel makes it so for a mount namespace
    // created with a new, less privileged user namespace:
    // mount_namespaces(7)), so nothing the command mounts reaches the host.
    if p.mounts.is_empty() && p.root.is_none() {
        return change_dir(p);
    }
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
    change_dir(p)
}

/// Changes to the command's working directory, if one is given.
fn change_dir(p: &Prepared) -> Result<()> {
    if let Some(cwd) = &p.cwd {
        nix::unistd::chdir(cwd).map_err(|e| Error::Setup {
            step: format!("cannot change to working directory {}", cwd.display()),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// The command's side of the inner namespace: unshare it, and wait for the
/// monitor to map it.
fn enter_inner_namespace(p: &Prepared, proc_dir: &OwnedFd, monitor: &mut Channel) -> Result<()> {
    if p.die_with_parent {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(Error::sys("PR_SET_PDEATHSIG"))?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| {
        Error::Setup {
            step: "entering the inner user namespace that locks the mounts".into(),
            source: e.into(),
        }
    })?;
    // The pid as /proc knows it: the outer one, also in a new PID namespace.
    let ready = Message::Ready {
        proc_pid: proc_pid(Some(proc_dir)),
    };
    monitor.send(&ready).map_err(|source| Error::Sys {
        what: "signalling the monitor",
        source,
    })?;
    if monitor.recv().ok().flatten() != Some(Message::Go) {
        sys::exit_now(1);
    }
    Ok(())
}

/// The monitor: maps the command's inner namespace, then waits for it.
fn monitor(
    p: &Prepared,
    cmd: Pid,
    proc_dir: &OwnedFd,
    mut command: Channel,
    control: Channel,
    mut report: Option<Channel>,
) -> ! {
    // EOF instead of Ready: the command failed before it unshared, and
    // said why on the report channel.
    if let Ok(Some(Message::Ready { proc_pid })) = command.recv() {
        match write_inner_map(proc_dir, proc_pid, p) {
            Ok(()) => {
                let _ = command.send(&Message::Go);
            }
            Err(e) => {
                let _ = kill(cmd, Signal::SIGKILL);
                if let Some(report) = report.as_mut() {
                    let _ = report.send(&failure_message(&e));
                }
            }
        }
    }
    // The command holds the report channel until its exec; the monitor
    // must not keep it open, or the parent would wait for the monitor.
    drop((command, report));
    run_init(cmd, control)
}

/// Maps every id of the sandbox onto itself in the command's inner
/// namespace: the command sees the same ids, one namespace further in.
fn write_inner_map(proc_dir: &OwnedFd, pid: i32, p: &Prepared) -> Result<()> {
    for (what, ranges) in [("uid_map", &p.idmap.uids), ("gid_map", &p.idmap.gids)] {
        let identity: String = ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.inside, r.inside, r.count))
            .collect();
        let path = CString::new(format!("{pid}/{what}")).unwrap_or_default();
        sys::openat2(proc_dir.as_fd(), &path, libc::O_WRONLY, 0)
            .map(std::fs::File::from)
            .and_then(|mut f| io::Write::write_all(&mut f, identity.as_bytes()))
            .map_err(|source| Error::IdMap {
                what,
                source,
                diagnosis: None,
            })?;
    }
    Ok(())
}

fn exec(p: &Prepared, old_mask: SigSet) -> Result<Infallible> {
    for (fd, target) in [(&p.stdout, 1), (&p.stderr, 2)] {
        if let Some(fd) = fd {
            nix::unistd::dup2(fd.as_raw_fd(), target)
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
    old_mask
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

/// The monitor's wait (pid 1 of the sandbox's PID namespace, where there
/// is one): forwards signals to the command, reaps every orphan, and exits
/// when the command does, reporting its raw wait status to the parent. Its
/// death takes a PID namespace with it.
fn run_init(cmd: Pid, mut control: Channel) -> ! {
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
    let _ = control.send(&Message::Exited { raw });
    sys::exit_now(ExitStatus::from_raw(raw).code())
}

// ---- failures across the report channel ----------------------------------

fn failure_message(e: &Error) -> Message {
    match e {
        Error::Exec { source, .. } => Message::Failed {
            exec: true,
            errno: source.raw_os_error().unwrap_or(0),
            step: String::new(),
        },
        Error::Setup { step, source } => Message::Failed {
            exec: false,
            errno: source.raw_os_error().unwrap_or(0),
            step: step.clone(),
        },
        other => Message::Failed {
            exec: false,
            errno: 0,
            step: other.to_string(),
        },
    }
}

fn failure_error(msg: Message, program: &str) -> Error {
    let Message::Failed { exec, errno, step } = msg else {
        return Error::Setup {
            step: format!("the sandbox sent {msg:?} where a report was expected"),
            source: io::Error::from(io::ErrorKind::InvalidData),
        };
    };
    let source = if errno == 0 {
        io::Error::other("failed")
    } else {
        io::Error::from_raw_os_error(errno)
    };
    if exec {
        Error::Exec {
            program: program.to_string(),
            source,
        }
    } else {
        Error::Setup { step, source }
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
    fn failures_cross_the_report_channel() {
        let e = Error::Setup {
            step: "cannot bind /a on /b".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        match failure_error(failure_message(&e), "x") {
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
        match failure_error(failure_message(&e), "nope") {
            Error::Exec { program, source } => {
                assert_eq!(program, "nope");
                assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
            }
            other => panic!("{other:?}"),
        }
    }
}

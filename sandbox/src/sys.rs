//! The raw system calls of the sandbox.
//!
//! Every `unsafe` block of rootbox lives in this module. Each wraps one
//! system call that neither `std` nor `nix` offers safely (clone3,
//! mount_setattr, openat2, fork, a signal disposition) and says why it is
//! sound where it is called.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::Pid;

/// Which side of a fork the caller is on.
pub(crate) enum Fork {
    /// In the parent; the value is the child's pid (as seen by the parent).
    Parent(Pid),
    /// In the child.
    Child,
}

/// `struct clone_args` of clone3(2), as the kernel defines it (version 0,
/// 64 bytes: enough for flags and exit_signal, which is all we use).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Creates a child process in new namespaces (`flags` are `CLONE_NEW*`),
/// like fork(2): the child runs on a copy of the caller's memory.
///
/// Uses clone3(2) and falls back to clone(2) where the kernel (or a
/// seccomp filter, as some container runtimes install) answers ENOSYS.
///
/// The caller must be single-threaded, or the child must restrict itself
/// to async-signal-safe work: only the calling thread is copied.
pub(crate) fn clone_into_namespaces(flags: libc::c_int) -> io::Result<Fork> {
    let args = CloneArgs {
        flags: flags as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: like fork(2) (no CLONE_VM, null stack), the child resumes here
    // on a private copy of memory; `args` outlives the call, its size passed.
    let mut ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: as above; on x86_64 and aarch64 the argument order is
        // (flags, stack, parent_tid, child_tid, tls), all null but flags.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
    }
    match ret {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(Pid::from_raw(pid as libc::pid_t))),
    }
}

/// fork(2), for the init process of a new PID namespace.
///
/// Same restriction as [`clone_into_namespaces`]: single-threaded callers only.
pub(crate) fn fork() -> io::Result<Fork> {
    // SAFETY: the sandbox's child processes are single-threaded (they are
    // forks of a single thread), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Fork::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Fork::Child),
    }
}

/// Makes the mount at `fd` (and, with `recursive`, every mount below it)
/// read-only with mount_setattr(2), keeping every other flag, in particular
/// the nosuid/nodev/noexec flags that the kernel locks in a user namespace.
pub(crate) fn mount_setattr_readonly(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: the path is a static empty C string (AT_EMPTY_PATH: operate
    // on `fd` itself) and `attr` is a live, correctly sized mount_attr.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2): opens `path` below `dirfd` with `resolve` restrictions
/// (`RESOLVE_IN_ROOT`, `RESOLVE_NO_SYMLINKS`, ...).
pub(crate) fn openat2(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: `path` is a valid C string and `how` a correctly sized
    // open_how; both outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Restores the default disposition of `sig`. Rust's runtime ignores
/// SIGPIPE, and an ignored signal stays ignored across execve(2): the
/// sandboxed command must start with the defaults a shell would give it.
pub(crate) fn reset_signal(sig: Signal) -> io::Result<()> {
    // SAFETY: installing SIG_DFL runs no handler code, so no Rust
    // invariant can be broken by the signal arriving later.
    unsafe { signal::signal(sig, SigHandler::SigDfl) }
        .map(drop)
        .map_err(io::Error::from)
}

/// The current directory as a directory fd (`AT_FDCWD`), for *at calls
/// given absolute paths or paths relative to the working directory.
pub(crate) fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is not a descriptor that can be closed; the kernel
    // reads it as "the working directory" for as long as the process lives.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// _exit(2): ends a forked child at once, without running the parent's
/// atexit handlers or flushing buffers that belong to the parent.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

//! The errors of the sandbox crate.

use std::io;
use std::path::PathBuf;

use crate::diagnose::Diagnosis;

/// Why a sandbox could not be set up or run.
///
/// Failures the kernel reports with a bare errno carry a [`Diagnosis`]
/// where one is known: what is wrong on this machine, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sandbox was described inconsistently (empty command, relative
    /// mount destination, ...). Nothing was started.
    #[error("invalid sandbox: {0}")]
    Invalid(String),

    /// The calling process has more than one thread: a sandbox is started
    /// by a raw clone, which copies only the calling thread (and the
    /// kernel refuses a new user namespace to a multi-threaded process).
    #[error(
        "cannot start a sandbox from a process with {threads} threads: start it before any \
         thread, or from a single-threaded child process"
    )]
    MultiThreaded {
        /// `Threads:` of /proc/self/status.
        threads: u64,
    },

    /// The kernel refused to create the namespaces.
    #[error("cannot create a user namespace: {source}{}", Diagnosis::suffix(.diagnosis))]
    CreateNamespace {
        /// The errno of clone3/clone.
        source: io::Error,
        /// What it most likely means here.
        diagnosis: Option<Diagnosis>,
    },

    /// Writing the uid/gid map of the new namespace failed.
    #[error("cannot write {what} of the sandbox: {source}{}", Diagnosis::suffix(.diagnosis))]
    IdMap {
        /// `uid_map`, `gid_map` or `setgroups`.
        what: &'static str,
        /// The errno of the write.
        source: io::Error,
        /// What it most likely means here.
        diagnosis: Option<Diagnosis>,
    },

    /// newuidmap or newgidmap ran and failed; its own words are kept.
    #[error("{} failed ({status}): {stderr}", .helper.display())]
    IdMapHelper {
        /// The helper that was run.
        helper: PathBuf,
        /// Its exit status, as text.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },

    /// `--map subid` was asked for, but this machine or this process cannot
    /// have a subordinate id range.
    #[error("a subordinate id range cannot be mapped: {reason}\n  hint: {remedy}")]
    SubidUnavailable {
        /// Why not.
        reason: String,
        /// What would make it possible.
        remedy: String,
    },

    /// A step inside the new namespaces failed (a mount, pivot_root, ...).
    /// The child process names the step and the path.
    #[error("{step}: {source}")]
    Setup {
        /// The step, with the paths it involved.
        step: String,
        /// The errno the step failed with.
        source: io::Error,
    },

    /// The command could not be executed.
    #[error("cannot execute {program:?}: {source}")]
    Exec {
        /// argv\[0\] as given.
        program: String,
        /// The errno of the last execve tried.
        source: io::Error,
    },

    /// A system call of the parent process failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The errno.
        source: io::Error,
    },

    /// An OCI runtime configuration could not be converted.
    #[error("OCI configuration: {0}")]
    Oci(String),
}

impl Error {
    pub(crate) fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
        move |e| Error::Sys {
            what,
            source: e.into(),
        }
    }

    /// Why no user namespace can be had here, in one line, when that is
    /// what this error means: the process (several threads, as under
    /// qemu-user emulation), the machine (a sysctl, no kernel support) or
    /// a policy (seccomp, an LSM, a chroot) refuses one. `None` for errors
    /// of the request or of a later step, which a build without a
    /// namespace would not avoid.
    pub fn no_namespace_reason(&self) -> Option<String> {
        let refused = |source: &io::Error, d: &Option<Diagnosis>| match d {
            Some(d) => d.cause.clone(),
            None => format!("the kernel refused it ({source})"),
        };
        match self {
            Error::MultiThreaded { threads } => Some(match crate::diagnose::emulator() {
                Some(qemu) => format!(
                    "this process runs under emulation ({}, {threads} threads), and the kernel \
                     refuses a user namespace to a multi-threaded process",
                    qemu.display()
                ),
                None => format!(
                    "this process has {threads} threads, and the kernel refuses a user \
                     namespace to a multi-threaded process"
                ),
            }),
            Error::CreateNamespace { source, diagnosis } => Some(refused(source, diagnosis)),
            Error::IdMap {
                source, diagnosis, ..
            } => Some(refused(source, diagnosis)),
            _ => None,
        }
    }

    /// The diagnosis attached to this error, if any.
    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        match self {
            Error::CreateNamespace { diagnosis, .. } | Error::IdMap { diagnosis, .. } => {
                diagnosis.as_ref()
            }
            _ => None,
        }
    }
}

/// The result type of the sandbox crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

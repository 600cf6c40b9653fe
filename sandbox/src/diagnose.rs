//! Why user namespaces fail on a given machine, and what to do about it.
//!
//! The kernel answers a refused namespace with a bare errno (EPERM, EINVAL,
//! ENOSPC, EACCES). The same errno has different causes on different
//! distributions; [`HostFacts`] reads the knobs that decide it, and
//! [`diagnose_clone`] / [`diagnose_map`] turn an errno into a sentence and
//! a remedy. `rootbox doctor` prints the same facts as a checklist.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What is wrong, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The cause, in one sentence.
    pub cause: String,
    /// The remedy: a command or a setting.
    pub remedy: String,
}

impl Diagnosis {
    fn new(cause: impl Into<String>, remedy: impl Into<String>) -> Self {
        Diagnosis {
            cause: cause.into(),
            remedy: remedy.into(),
        }
    }

    pub(crate) fn suffix(d: &Option<Diagnosis>) -> String {
        match d {
            Some(d) => format!("\n  cause: {}\n  hint: {}", d.cause, d.remedy),
            None => String::new(),
        }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.cause, self.remedy)
    }
}

/// The facts about this host and process that decide whether an
/// unprivileged user namespace can be made.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// `kernel.unprivileged_userns_clone` (Debian and older Ubuntu kernels only).
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+).
    pub apparmor_restrict: Option<u64>,
    /// Number of threads of this process.
    pub threads: Option<u64>,
    /// `NoNewPrivs` of this process: setuid helpers (newuidmap) cannot work.
    pub no_new_privs: bool,
    /// Effective uid of this process.
    pub euid: u32,
    /// qemu-user binfmt handlers registered on this host.
    pub qemu_binfmt: Vec<String>,
    /// The user namespace nesting depth of this process (0 = initial).
    pub userns_depth: Option<u32>,
    /// `CapBnd` of this process, the capability bounding set: without
    /// CAP_SETUID and CAP_SETGID in it the setuid newuidmap/newgidmap gain
    /// nothing.
    pub cap_bounding: Option<u64>,
    /// This process is chrooted (its root is not its mount namespace's
    /// root): the kernel refuses it a new user namespace. None: unknown.
    pub chrooted: Option<bool>,
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a /proc/PID/status text.
pub(crate) fn status_field(status: &str, key: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

impl HostFacts {
    /// Reads the facts from /proc of this process and host.
    pub fn read() -> HostFacts {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let qemu_binfmt = fs::read_dir("/proc/sys/fs/binfmt_misc")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("qemu-"))
                    .collect()
            })
            .unwrap_or_default();
        HostFacts {
            unprivileged_userns_clone: read_u64("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read_u64("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: read_u64("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
            threads: status_field(&status, "Threads").and_then(|v| v.parse().ok()),
            no_new_privs: status_field(&status, "NoNewPrivs").as_deref() == Some("1"),
            euid: nix::unistd::geteuid().as_raw(),
            qemu_binfmt,
            userns_depth: userns_depth(),
            cap_bounding: status_field(&status, "CapBnd")
                .and_then(|v| u64::from_str_radix(&v, 16).ok()),
            chrooted: chrooted(),
        }
    }
}

/// Whether this process runs in a chroot, i.e. its root directory is not
/// the root of its mount namespace (the kernel's `current_chrooted()`).
///
/// Where /proc/1 can be read and pid 1 shares our mount namespace, the
/// roots are compared by device and inode. Otherwise (an unprivileged
/// caller may not look at pid 1's root) /proc/self/mountinfo decides: it
/// lists only the mounts at or below this process's root, so without a
/// chroot the namespace's root mount is there with mount point `/`, and in
/// a chroot into a directory that is not itself a mount point it is not.
fn chrooted() -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let same_ns = match (
        fs::read_link("/proc/1/ns/mnt"),
        fs::read_link("/proc/self/ns/mnt"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_ns {
        if let (Ok(init), Ok(me)) = (fs::metadata("/proc/1/root/"), fs::metadata("/")) {
            return Some((init.dev(), init.ino()) != (me.dev(), me.ino()));
        }
    }
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(mountinfo_lacks_root(&info))
}

/// No mount of a mountinfo text has mount point `/` (field 5).
fn mountinfo_lacks_root(info: &str) -> bool {
    !info.lines().any(|l| l.split(' ').nth(4) == Some("/"))
}

/// Counts how deep this process's user namespace is nested, from the
/// uid_map: the initial namespace maps the whole range `0 0 4294967295`.
fn userns_depth() -> Option<u32> {
    let map = fs::read_to_string("/proc/self/uid_map").ok()?;
    let initial = map.lines().count() == 1
        && map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    Some(if initial { 0 } else { 1 })
}

/// The qemu-user emulator this process runs under, if any (its path).
///
/// qemu-user answers `/proc/self/exe` with the guest program, but not
/// `/proc/thread-self/exe`, which the kernel resolves to the executable
/// it really runs: `qemu-aarch64-static` under binfmt_misc, or
/// `qemu-x86_64-static` when run through it directly.
pub fn emulator() -> Option<PathBuf> {
    let exe = fs::read_link("/proc/thread-self/exe").ok()?;
    emulator_name(&exe).then_some(exe)
}

fn emulator_name(exe: &Path) -> bool {
    exe.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("qemu-"))
}

/// Explains why clone(CLONE_NEWUSER | ...) failed with `err`.
pub fn diagnose_clone(err: &io::Error, facts: &HostFacts) -> Option<Diagnosis> {
    let errno = err.raw_os_error()?;
    if facts.unprivileged_userns_clone == Some(0) && facts.euid != 0 {
        return Some(Diagnosis::new(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)",
            "as root: sysctl -w kernel.unprivileged_userns_clone=1 (persist it in /etc/sysctl.d/)",
        ));
    }
    if facts.max_user_namespaces == Some(0) {
        return Some(Diagnosis::new(
            "user namespaces are disabled (user.max_user_namespaces = 0)",
            "as root: sysctl -w user.max_user_namespaces=15000; inside a container, ask its \
             runtime to allow nested user namespaces; or build with --no-userns",
        ));
    }
    match errno {
        libc::ENOSPC => Some(Diagnosis::new(
            "the limit on user namespaces is reached (user.max_user_namespaces of this or an \
             enclosing namespace, or the nesting depth of 32)",
            "raise user.max_user_namespaces (sysctl), or run rootbox outside the namespace that \
             imposes the limit (bwrap --disable-userns and some containers set it to the current count)",
        )),
        libc::EINVAL if facts.threads.unwrap_or(1) > 1 || !facts.qemu_binfmt.is_empty() => {
            Some(Diagnosis::new(
                format!(
                    "the kernel refuses a new user namespace to a multi-threaded process \
                     ({} threads here){}",
                    facts.threads.unwrap_or(0),
                    if facts.qemu_binfmt.is_empty() {
                        String::new()
                    } else {
                        "; under qemu-user emulation (binfmt_misc handlers are registered) the \
                         emulator's own threads cause this"
                            .to_string()
                    }
                ),
                "a build falls back to one without a namespace under the default `--map auto` \
                 (drop the explicit --map, or pass --no-userns); `rootbox run` needs a \
                 namespace: run a binary for the build machine's architecture, not through \
                 qemu-user",
            ))
        }
        libc::EPERM if facts.chrooted == Some(true) => Some(Diagnosis::new(
            "this process runs in a chroot, and the kernel refuses a new user namespace to a \
             chrooted process",
            "enter the other root with a mount namespace and pivot_root instead of chroot \
             (`rootbox run --root DIR`, or `unshare -m` + `pivot_root`), or run rootbox outside \
             the chroot; `rootbox build --no-userns` builds without a user namespace",
        )),
        libc::EPERM | libc::EACCES if facts.apparmor_restrict == Some(1) => Some(Diagnosis::new(
            "AppArmor restricts unprivileged user namespaces \
             (kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10 and later)",
            "install an AppArmor profile that grants `userns,` to rootbox (see README), or as \
             root: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
        )),
        libc::EPERM | libc::EACCES => Some(Diagnosis::new(
            "the kernel or a security module (seccomp filter of a container, SELinux, \
             AppArmor) refuses user namespaces to this process",
            "run `rootbox doctor`; inside a container allow unshare/clone of user namespaces \
             (e.g. docker --security-opt seccomp=unconfined), or build with --no-userns",
        )),
        libc::ENOSYS => Some(Diagnosis::new(
            "this kernel has no user namespace support (CONFIG_USER_NS is off)",
            "use a kernel with CONFIG_USER_NS=y, or build with --no-userns",
        )),
        _ => None,
    }
}

/// Explains why writing an id map failed with `err`.
pub fn diagnose_map(err: &io::Error, facts: &HostFacts) -> Option<Diagnosis> {
    match err.raw_os_error()? {
        libc::EPERM if facts.apparmor_restrict == Some(1) => Some(Diagnosis::new(
            "AppArmor let the namespace be created but denies it any capability \
             (kernel.apparmor_restrict_unprivileged_userns = 1)",
            "install an AppArmor profile that grants `userns,` to rootbox, or as root: \
             sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
        )),
        libc::EPERM => Some(Diagnosis::new(
            "the kernel refused the id map (an unprivileged process may map only its own \
             uid and gid, and only after denying setgroups)",
            "use --map single, or configure /etc/subuid and /etc/subgid and install uidmap \
             for --map subid",
        )),
        _ => None,
    }
}

/// Finds an executable by name in `$PATH`, then in the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> HostFacts {
        HostFacts {
            euid: 1000,
            threads: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn disabled_sysctl_is_named() {
        let f = HostFacts {
            unprivileged_userns_clone: Some(0),
            ..facts()
        };
        let d = diagnose_clone(&io::Error::from_raw_os_error(libc::EPERM), &f).unwrap();
        assert!(d.cause.contains("unprivileged_userns_clone = 0"), "{d}");
    }

    #[test]
    fn threads_explain_einval() {
        let f = HostFacts {
            threads: Some(4),
            ..facts()
        };
        let d = diagnose_clone(&io::Error::from_raw_os_error(libc::EINVAL), &f).unwrap();
        assert!(d.cause.contains("multi-threaded"), "{d}");
        assert!(d.cause.contains("4 threads"), "{d}");
        // A single-threaded process with no qemu around: EINVAL is not explained by threads.
        assert!(diagnose_clone(&io::Error::from_raw_os_error(libc::EINVAL), &facts()).is_none());
    }

    #[test]
    fn enospc_is_the_limit_and_apparmor_is_named() {
        let d = diagnose_clone(&io::Error::from_raw_os_error(libc::ENOSPC), &facts()).unwrap();
        assert!(d.cause.contains("limit"), "{d}");
        let f = HostFacts {
            apparmor_restrict: Some(1),
            ..facts()
        };
        let d = diagnose_map(&io::Error::from_raw_os_error(libc::EPERM), &f).unwrap();
        assert!(d.cause.contains("AppArmor"), "{d}");
    }

    #[test]
    fn a_chroot_is_named_before_security_modules() {
        let f = HostFacts {
            chrooted: Some(true),
            ..facts()
        };
        let d = diagnose_clone(&io::Error::from_raw_os_error(libc::EPERM), &f).unwrap();
        assert!(d.cause.contains("chroot"), "{d}");
        assert!(d.remedy.contains("pivot_root"), "{d}");
        let d = diagnose_clone(&io::Error::from_raw_os_error(libc::EPERM), &facts()).unwrap();
        assert!(d.cause.contains("security module"), "{d}");
    }

    #[test]
    fn mountinfo_without_a_root_mount_means_chroot() {
        let host = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    23 22 0:5 / /proc rw shared:2 - proc proc rw\n";
        assert!(!mountinfo_lacks_root(host));
        let jail = "23 22 0:5 / /proc rw shared:2 - proc proc rw\n";
        assert!(mountinfo_lacks_root(jail));
    }

    #[test]
    fn an_emulator_is_known_by_its_name() {
        assert!(emulator_name(Path::new("/usr/bin/qemu-aarch64-static")));
        assert!(emulator_name(Path::new(
            "/nix/store/x-qemu/bin/qemu-x86_64"
        )));
        assert!(!emulator_name(Path::new("/usr/bin/rootbox")));
        // This test runs natively.
        assert_eq!(emulator(), None);
    }

    #[test]
    fn status_fields_parse() {
        let s = "Name:\tx\nThreads:\t3\nNoNewPrivs:\t1\n";
        assert_eq!(status_field(s, "Threads").as_deref(), Some("3"));
        assert_eq!(status_field(s, "NoNewPrivs").as_deref(), Some("1"));
        assert_eq!(status_field(s, "Missing"), None);
    }
}

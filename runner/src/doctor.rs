//! `rootbox doctor`: what this machine allows, each with its remedy.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, ExitCode};

use anyhow::Result;
use clap::Args;
use rootbox_images::fs::btrfs::{BtrfsProgsVersion, Feature};
use rootbox_sandbox::{find_program, HostFacts, IdMap, MapMode, Sandbox};

/// Check whether rootbox can work here, and say what to change if not.
///
/// Checks user namespaces (sysctls, AppArmor, threads, qemu-user, a
/// chroot), mounts inside one, newuidmap/newgidmap, the capability bounding
/// set and no_new_privs they depend on, your subordinate id ranges, and the
/// mkfs.btrfs version. Exits 1 when a check that builds need fails.
#[derive(Args, Debug)]
pub struct DoctorArgs {}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Level {
    Ok,
    Info,
    Warn,
    Fail,
}

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, level: Level, what: &str, detail: impl AsRef<str>, remedy: Option<&str>) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        println!("[{tag}] {what}: {}", detail.as_ref());
        if let Some(r) = remedy {
            println!("       fix: {r}");
        }
        if level == Level::Fail {
            self.failed = true;
        }
    }
}

/// The version of mkfs.btrfs on PATH, read as builds read it
/// ([`BtrfsProgsVersion::parse`]), with the first line it printed.
pub fn mkfs_btrfs_version() -> Option<(String, BtrfsProgsVersion)> {
    let out = Command::new("mkfs.btrfs").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ver = BtrfsProgsVersion::parse(&text)?;
    Some((text.lines().next().unwrap_or("").to_string(), ver))
}

fn try_sandbox(sb: Sandbox) -> std::result::Result<(), String> {
    match sb.command(["true"]).run() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`true` ended with {s}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the checks in order, one line each; exit 1 when a check builds need
/// failed.
pub fn main(_: &DoctorArgs) -> Result<ExitCode> {
    let f = HostFacts::read();
    let mut r = Report { failed: false };
    println!("rootbox doctor (uid {})", f.euid);
    kernel_settings(&f, &mut r);
    namespaces(&mut r);
    id_helpers(&f, &mut r);
    subordinate_ids(&mut r);
    mkfs_btrfs(&mut r);
    println!(
        "{}",
        if r.failed {
            "Some checks failed; see the fixes above."
        } else {
            "All checks needed for builds passed."
        }
    );
    Ok(if r.failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The kernel's settings for user namespaces, and what keeps this process from
/// creating one (threads, qemu-user, a chroot).
fn kernel_settings(f: &HostFacts, r: &mut Report) {
    match f.unprivileged_userns_clone {
        Some(0) if f.euid != 0 => r.line(
            Level::Fail,
            "kernel.unprivileged_userns_clone",
            "0",
            Some("sysctl -w kernel.unprivileged_userns_clone=1"),
        ),
        Some(v) => r.line(
            Level::Ok,
            "kernel.unprivileged_userns_clone",
            v.to_string(),
            None,
        ),
        None => r.line(
            Level::Ok,
            "kernel.unprivileged_userns_clone",
            "not present (upstream kernel: allowed)",
            None,
        ),
    }
    match f.max_user_namespaces {
        Some(0) => r.line(
            Level::Fail,
            "user.max_user_namespaces",
            "0",
            Some("sysctl -w user.max_user_namespaces=15000"),
        ),
        Some(v) => r.line(Level::Ok, "user.max_user_namespaces", v.to_string(), None),
        None => r.line(Level::Warn, "user.max_user_namespaces", "unknown", None),
    }
    match f.apparmor_restrict {
        Some(1) => r.line(Level::Warn, "kernel.apparmor_restrict_unprivileged_userns", "1 (Ubuntu restriction on)",
            Some("an AppArmor profile granting `userns,` to rootbox, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")),
        Some(v) => r.line(Level::Ok, "kernel.apparmor_restrict_unprivileged_userns", v.to_string(), None),
        None => r.line(Level::Ok, "kernel.apparmor_restrict_unprivileged_userns", "not present", None),
    }
    match f.threads {
        Some(n) if n > 1 => r.line(
            Level::Warn,
            "threads",
            format!("{n} (user namespaces need a single thread)"),
            None,
        ),
        Some(n) => r.line(Level::Ok, "threads", n.to_string(), None),
        None => {}
    }
    if f.qemu_binfmt.is_empty() {
        r.line(Level::Ok, "qemu-user binfmt handlers", "none", None);
    } else {
        r.line(
            Level::Info,
            "qemu-user binfmt handlers",
            f.qemu_binfmt.join(", "),
            Some(
                "under qemu-user emulation user namespaces fail with EINVAL: builds fall back to \
                  one without a namespace (--map auto); `rootbox run` needs a native binary",
            ),
        );
    }
    match f.chrooted {
        Some(true) => r.line(
            Level::Fail,
            "chroot",
            "this process runs in a chroot: the kernel refuses it a new user namespace",
            Some(
                "enter the other root with a mount namespace and pivot_root (`rootbox run --root \
                 DIR`, `unshare -m` + `pivot_root`) instead of chroot; or build with --no-userns",
            ),
        ),
        Some(false) => r.line(Level::Ok, "chroot", "not in a chroot", None),
        None => r.line(Level::Info, "chroot", "unknown (/proc not readable)", None),
    }
}

/// Creates a user namespace with a single id map, then mounts a tmpfs in one.
fn namespaces(r: &mut Report) {
    match try_sandbox(Sandbox::new().map(MapMode::Single)) {
        Ok(()) => r.line(
            Level::Ok,
            "user namespace (single id map)",
            "created; you are uid 0 inside",
            None,
        ),
        Err(e) => r.line(
            Level::Fail,
            "user namespace (single id map)",
            e,
            Some("see the cause above, or build with --no-userns"),
        ),
    }
    let scratch = std::env::temp_dir();
    match try_sandbox(Sandbox::new().map(MapMode::Single).tmpfs(&scratch)) {
        Ok(()) => r.line(
            Level::Ok,
            "mounts in the namespace",
            format!("tmpfs on {} works", scratch.display()),
            None,
        ),
        Err(e) => r.line(
            Level::Fail,
            "mounts in the namespace",
            e,
            Some("a security module forbids mounts in user namespaces"),
        ),
    }
}

/// newuidmap/newgidmap, and what they need from this process (no
/// no_new_privs, CAP_SETUID and CAP_SETGID in the bounding set).
fn id_helpers(f: &HostFacts, r: &mut Report) {
    for helper in ["newuidmap", "newgidmap"] {
        match find_program(helper) {
            Some(p) => {
                let meta = std::fs::metadata(&p).ok();
                let setuid = meta
                    .as_ref()
                    .is_some_and(|m| m.permissions().mode() & 0o4000 != 0);
                let caps = xattr_present(&p, "security.capability");
                r.line(
                    if setuid || caps {
                        Level::Ok
                    } else {
                        Level::Warn
                    },
                    helper,
                    format!(
                        "{} ({})",
                        p.display(),
                        if setuid {
                            "setuid"
                        } else if caps {
                            "file capabilities"
                        } else {
                            "neither setuid nor file capabilities"
                        }
                    ),
                    None,
                );
            }
            None => r.line(
                Level::Info,
                helper,
                "not installed",
                Some("apt-get install uidmap (for --map subid)"),
            ),
        }
    }
    // What the setuid helpers need from this process.
    r.line(
        if f.no_new_privs {
            Level::Info
        } else {
            Level::Ok
        },
        "no_new_privs",
        if f.no_new_privs {
            "set (as in a Nix build): setuid newuidmap cannot work; --map auto maps a single id"
        } else {
            "not set"
        },
        None,
    );
    const SETID: u64 = (1 << 6) | (1 << 7);
    match f.cap_bounding {
        Some(b) if b & SETID == SETID => r.line(
            Level::Ok,
            "capability bounding set",
            format!("{b:016x}: has CAP_SETUID and CAP_SETGID for newuidmap/newgidmap"),
            None,
        ),
        Some(b) => r.line(
            Level::Info,
            "capability bounding set",
            format!(
                "{b:016x}: lacks CAP_SETUID/CAP_SETGID, so setuid newuidmap gains nothing; \
                 --map auto maps a single id"
            ),
            Some("run rootbox where the bounding set keeps CAP_SETUID and CAP_SETGID (for --map subid)"),
        ),
        None => r.line(Level::Info, "capability bounding set", "unknown", None),
    }
}

/// The caller's subordinate id ranges, and a user namespace mapping them.
fn subordinate_ids(r: &mut Report) {
    match IdMap::resolve(MapMode::Subid) {
        Ok(m) => {
            let (u, g) = (&m.uids, &m.gids);
            let desc = match (u.get(1), g.get(1)) {
                (Some(u), Some(g)) => format!(
                    "uids {}+{}, gids {}+{} mapped to 1..",
                    u.outside, u.count, g.outside, g.count
                ),
                _ => "identity (running as root)".to_string(),
            };
            r.line(Level::Ok, "subordinate id range", desc, None);
            match try_sandbox(Sandbox::new().map(MapMode::Subid)) {
                Ok(()) => r.line(Level::Ok, "user namespace (subid map)", "created", None),
                Err(e) => r.line(
                    Level::Warn,
                    "user namespace (subid map)",
                    e,
                    Some("check /etc/subuid, /etc/subgid and the uidmap package"),
                ),
            }
        }
        Err(e) => r.line(
            Level::Info,
            "subordinate id range",
            e.to_string().replace('\n', " "),
            None,
        ),
    }
}

/// The version of mkfs.btrfs on PATH: 6.12 or newer.
fn mkfs_btrfs(r: &mut Report) {
    match mkfs_btrfs_version() {
        Some((line, v)) if v >= Feature::SubvolTypeDir.min_version() => {
            r.line(Level::Ok, "mkfs.btrfs", line, None)
        }
        Some((line, _)) => r.line(
            Level::Fail,
            "mkfs.btrfs",
            format!("{line}: 6.12 or newer is needed for --subvol TYPE:DIR"),
            Some("Debian bookworm: apt-get install -t bookworm-backports btrfs-progs"),
        ),
        None => r.line(
            Level::Fail,
            "mkfs.btrfs",
            "not found on PATH",
            Some("apt-get install btrfs-progs (6.12 or newer)"),
        ),
    }
}

fn xattr_present(path: &std::path::Path, name: &str) -> bool {
    Command::new("getfattr")
        .args(["--absolute-names", "-n", name])
        .arg(path)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

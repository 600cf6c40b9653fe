//! User and group id maps of the sandbox's user namespace.
//!
//! The caller always becomes uid 0 / gid 0 inside. Beyond that, a
//! subordinate id range granted in /etc/subuid and /etc/subgid can be mapped
//! to ids 1..=N, so that files inside can belong to other users; writing
//! such a map needs the setuid helpers newuidmap/newgidmap (package uidmap).
//! A process that is real root maps every id onto itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::diagnose::{diagnose_map, find_program, status_field, HostFacts};
use crate::error::{Error, Result};

/// How ids are mapped into the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MapMode {
    /// The best map that works here: a subordinate range when the caller
    /// has one and the setuid helpers can gain their privilege, else a
    /// single id. Falling back although a range is granted (no_new_privs,
    /// a capability bounding set without CAP_SETUID/CAP_SETGID, or the
    /// helper's own failure) logs one warning that says so and why.
    #[default]
    Auto,
    /// The caller's uid and gid only, mapped to 0. Always possible.
    Single,
    /// The caller to 0 and the caller's subordinate range to 1..=N. Fails
    /// when the range or the helpers are missing.
    Subid,
    /// The caller's subordinate range alone, its first id as 0: how
    /// `mmdebstrap --mode=unshare`, podman and buildah number a rootless
    /// tree (root is the range's first id). The caller itself is not
    /// mapped. Fails when the range or the helpers are missing.
    Subrange,
}

impl std::str::FromStr for MapMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(MapMode::Auto),
            "single" => Ok(MapMode::Single),
            "subid" => Ok(MapMode::Subid),
            "subrange" => Ok(MapMode::Subrange),
            _ => Err(format!(
                "unknown map mode {s:?}: use auto, single, subid or subrange"
            )),
        }
    }
}

/// One line of an id map: `count` ids from `inside` map to `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the caller's namespace).
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// A resolved id map for uids and gids, and how it gets written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// The uid map.
    pub uids: Vec<IdRange>,
    /// The gid map.
    pub gids: Vec<IdRange>,
    /// The map needs newuidmap/newgidmap (it names ids the caller does not own).
    pub helpers: Option<(PathBuf, PathBuf)>,
    /// setgroups(2) stays allowed inside. An unprivileged process writing
    /// its own map must deny it (else dropping a group could grant access);
    /// a namespace inherits a parent's denial.
    pub setgroups: bool,
}

impl IdMap {
    /// The caller's uid and gid mapped to 0, nothing else.
    pub fn single(uid: u32, gid: u32) -> IdMap {
        IdMap {
            uids: vec![IdRange {
                inside: 0,
                outside: uid,
                count: 1,
            }],
            gids: vec![IdRange {
                inside: 0,
                outside: gid,
                count: 1,
            }],
            helpers: None,
            setgroups: false,
        }
    }

    /// Every id mapped onto itself: what real root gets.
    pub fn identity() -> IdMap {
        let all = IdRange {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        };
        IdMap {
            uids: vec![all],
            gids: vec![all],
            helpers: None,
            setgroups: true,
        }
    }

    /// Every id of the caller's own user namespace mapped onto itself: what
    /// a process that is root with CAP_SETUID may write. That is the whole
    /// id space in the initial namespace, and the ranges of the enclosing
    /// map inside another sandbox (rootbox in rootbox). None without the
    /// capability (e.g. `--drop-caps`).
    fn own_ids() -> Option<IdMap> {
        const CAP_SETUID: u64 = 1 << 7;
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
        if u64::from_str_radix(eff.trim(), 16).ok()? & CAP_SETUID == 0 {
            return None;
        }
        let ranges = |file: &str| -> Option<Vec<IdRange>> {
            let text = fs::read_to_string(file).ok()?;
            text.lines()
                .map(|l| {
                    let mut f = l.split_whitespace().map(|n| n.parse::<u32>().ok());
                    let (inside, _outside, count) = (f.next()??, f.next()??, f.next()??);
                    Some(IdRange {
                        inside,
                        outside: inside,
                        count,
                    })
                })
                .collect()
        };
        Some(IdMap {
            uids: ranges("/proc/self/uid_map")?,
            gids: ranges("/proc/self/gid_map")?,
            helpers: None,
            setgroups: fs::read_to_string("/proc/self/setgroups")
                .is_ok_and(|s| s.trim() == "allow"),
        })
    }

    /// Decides the map for `mode` on this host, for the calling process.
    pub fn resolve(mode: MapMode) -> Result<IdMap> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        if uid == 0 && mode != MapMode::Single {
            if let Some(map) = IdMap::own_ids() {
                return Ok(map);
            }
        }
        match mode {
            MapMode::Single => Ok(IdMap::single(uid, gid)),
            MapMode::Subid => subordinate(uid, gid).map_err(NoSubid::into_error),
            MapMode::Subrange => subordinate(uid, gid)
                .map(IdMap::without_caller)
                .map_err(NoSubid::into_error),
            MapMode::Auto => match subordinate(uid, gid) {
                Ok(map) => Ok(map),
                Err(NoSubid::Absent(e)) => {
                    tracing::debug!("no subordinate id range, mapping a single id: {e}");
                    Ok(IdMap::single(uid, gid))
                }
                Err(NoSubid::Blocked { reason, .. }) => {
                    warn_single_fallback(&reason);
                    Ok(IdMap::single(uid, gid))
                }
            },
        }
    }

    /// The map `--map auto` falls back to when this one, which needs the
    /// setuid helpers, cannot be written: the caller's own ids.
    pub(crate) fn fallback(&self) -> Option<IdMap> {
        self.helpers.as_ref()?;
        let own = |r: &[IdRange]| r.iter().find(|r| r.inside == 0).map(|r| r.outside);
        Some(IdMap::single(own(&self.uids)?, own(&self.gids)?))
    }

    /// The subordinate range of a `subid` map alone, from 0: inside k is
    /// the range's start + k, with the overflow id left out as always.
    fn without_caller(self) -> IdMap {
        let renumber = |ranges: &[IdRange], overflow: u32| {
            // In the subid map the range follows the caller (inside 0) and
            // skips one inside id (the overflow id): undo both.
            let sub = &ranges[1.min(ranges.len())..];
            let start = sub.first().map_or(0, |r| r.outside);
            let count = sub.iter().map(|r| r.count).sum::<u32>() + 1;
            let mut out = vec![IdRange {
                inside: 0,
                outside: start,
                count: count.min(overflow),
            }];
            if count > overflow + 1 {
                out.push(IdRange {
                    inside: overflow + 1,
                    outside: start + overflow + 1,
                    count: count - overflow - 1,
                });
            }
            out
        };
        let read = |file: &str| {
            fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(65534)
        };
        IdMap {
            uids: renumber(&self.uids, read("/proc/sys/kernel/overflowuid")),
            gids: renumber(&self.gids, read("/proc/sys/kernel/overflowgid")),
            ..self
        }
    }

    /// The id inside the namespace that outside uid `outside` appears as.
    pub fn uid_inside(&self, outside: u32) -> Option<u32> {
        lookup_inside(&self.uids, outside)
    }

    /// The id inside the namespace that outside gid `outside` appears as.
    pub fn gid_inside(&self, outside: u32) -> Option<u32> {
        lookup_inside(&self.gids, outside)
    }

    /// The outside uid of inside uid `inside`.
    pub fn uid_outside(&self, inside: u32) -> Option<u32> {
        lookup_outside(&self.uids, inside)
    }

    /// The outside gid of inside gid `inside`.
    pub fn gid_outside(&self, inside: u32) -> Option<u32> {
        lookup_outside(&self.gids, inside)
    }

    /// Whether the map allows setgroups(2) inside: an unprivileged process
    /// writing its own map must deny it first (else it could drop a group
    /// that denies it access to a file).
    pub(crate) fn setgroups_allowed(&self) -> bool {
        self.setgroups
    }

    /// Whether the sandbox's first process may write this map itself, in
    /// its new namespace: the caller's own effective uid and gid, one each
    /// and nothing else, with setgroups denied (user_namespaces(7): what an
    /// unprivileged process may map for itself). It then need not wait
    /// for the parent to write it (`--map single`, as bwrap does).
    pub(crate) fn self_writable(&self) -> bool {
        let own = |r: &[IdRange], id: u32| matches!(r, [r] if r.count == 1 && r.outside == id);
        self.helpers.is_none()
            && !self.setgroups
            && own(&self.uids, nix::unistd::geteuid().as_raw())
            && own(&self.gids, nix::unistd::getegid().as_raw())
    }

    /// Writes this map for the calling process (`/proc/self`), which has
    /// just entered its new user namespace; see [`IdMap::self_writable`].
    /// Runs in the sandbox's child; on failure the parent writes it (and
    /// explains a refusal).
    pub(crate) fn write_own(&self) -> std::io::Result<()> {
        let write = |file: &str, text: &str| {
            fs::OpenOptions::new()
                .write(true)
                .open(file)
                .and_then(|mut f| f.write_all(text.as_bytes()))
        };
        write("/proc/self/setgroups", "deny")?;
        write("/proc/self/uid_map", &map_text(&self.uids))?;
        write("/proc/self/gid_map", &map_text(&self.gids))
    }

    /// Writes the map of the process `pid`, which waits in its new user
    /// namespace. Runs in the parent.
    pub(crate) fn write(&self, pid: Pid) -> Result<()> {
        if let Some((newuidmap, newgidmap)) = &self.helpers {
            // The two helpers are independent: run them side by side.
            let uids = start_helper(newuidmap, pid, &self.uids)?;
            let gids = start_helper(newgidmap, pid, &self.gids);
            let uids = finish_helper(newuidmap, uids);
            return uids.and(finish_helper(newgidmap, gids?));
        }
        let proc = PathBuf::from(format!("/proc/{pid}"));
        if !self.setgroups_allowed() {
            write_proc(&proc.join("setgroups"), "setgroups", "deny")?;
        }
        write_proc(&proc.join("uid_map"), "uid_map", &map_text(&self.uids))?;
        write_proc(&proc.join("gid_map"), "gid_map", &map_text(&self.gids))
    }
}

fn lookup_inside(ranges: &[IdRange], outside: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = outside.checked_sub(r.outside)?;
        (off < r.count).then(|| r.inside + off)
    })
}

fn lookup_outside(ranges: &[IdRange], inside: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = inside.checked_sub(r.inside)?;
        (off < r.count).then(|| r.outside + off)
    })
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

fn write_proc(path: &std::path::Path, what: &'static str, text: &str) -> Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| Error::IdMap {
            what,
            diagnosis: diagnose_map(&source, &HostFacts::read()),
            source,
        })
}

fn start_helper(helper: &PathBuf, pid: Pid, ranges: &[IdRange]) -> Result<std::process::Child> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Sys {
            what: "running newuidmap/newgidmap",
            source,
        })
}

fn finish_helper(helper: &Path, child: std::process::Child) -> Result<()> {
    let out = child.wait_with_output().map_err(|source| Error::Sys {
        what: "waiting for newuidmap/newgidmap",
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::IdMapHelper {
        helper: helper.to_path_buf(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// A subordinate range from /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    /// First subordinate id.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

/// Finds the first range of `/etc/subuid`-format `text` that belongs to the
/// user named `name` or with numeric id `id`.
pub fn parse_subid(text: &str, name: Option<&str>, id: u32) -> Option<SubRange> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (owner, start, count) = (f.next()?, f.next()?, f.next()?);
        let mine = Some(owner) == name || owner.parse::<u32>().ok() == Some(id);
        let range = SubRange {
            start: start.parse().ok()?,
            count: count.parse().ok()?,
        };
        (mine && range.count > 0).then_some(range)
    })
}

/// The one warning of `--map auto` when it maps a single id although the
/// caller has a subordinate range: what is lost, and `reason`, why.
pub(crate) fn warn_single_fallback(reason: &str) {
    tracing::warn!(
        "--map auto: mapping only your own uid and gid (as --map single): {reason}. Lost: the \
         subordinate owners of /etc/subuid and /etc/subgid (in the sandbox their files show up \
         as 65534, and chown to ids other than 0 fails)"
    );
}

/// Why setuid newuidmap/newgidmap cannot gain the privilege they need in
/// this process, judged from its /proc/self/status text; None when they can.
pub(crate) fn helpers_blocked(status: &str) -> Option<String> {
    const CAP_SETGID: u64 = 1 << 6;
    const CAP_SETUID: u64 = 1 << 7;
    if status_field(status, "NoNewPrivs").as_deref() == Some("1") {
        return Some(
            "this process runs with no_new_privs (NoNewPrivs: 1, as in a Nix build sandbox or \
             under systemd NoNewPrivileges=), so the setuid helpers newuidmap/newgidmap gain no \
             privilege"
                .into(),
        );
    }
    let bnd = status_field(status, "CapBnd")?;
    let bits = u64::from_str_radix(&bnd, 16).ok()?;
    let missing: Vec<&str> = [(CAP_SETUID, "CAP_SETUID"), (CAP_SETGID, "CAP_SETGID")]
        .into_iter()
        .filter(|(bit, _)| bits & bit == 0)
        .map(|(_, name)| name)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the capability bounding set lacks {} (CapBnd: {bnd}; containers with dropped \
             capabilities, systemd CapabilityBoundingSet=, setpriv --bounding-set), so the setuid \
             helpers newuidmap/newgidmap cannot gain {}",
            missing.join(" and "),
            if missing.len() == 1 { "it" } else { "them" }
        )
    })
}

/// Why there is no subordinate map.
enum NoSubid {
    /// None is granted, or the helpers are not installed: nothing is lost.
    Absent(Error),
    /// A range is granted and the helpers are there, but cannot work here.
    Blocked {
        /// Why not.
        reason: String,
        /// What would make it work.
        remedy: String,
    },
}

impl NoSubid {
    fn into_error(self) -> Error {
        match self {
            NoSubid::Absent(e) => e,
            NoSubid::Blocked { reason, remedy } => Error::SubidUnavailable { reason, remedy },
        }
    }
}

/// The caller's subordinate ranges and the helpers that can map them.
fn subordinate(uid: u32, gid: u32) -> Result<IdMap, NoSubid> {
    let unavailable = |reason: String, remedy: &str| {
        NoSubid::Absent(Error::SubidUnavailable {
            reason,
            remedy: remedy.to_string(),
        })
    };
    let name = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name);
    let range = |file: &str, id: u32| {
        let text = fs::read_to_string(file).unwrap_or_default();
        parse_subid(&text, name.as_deref(), id).ok_or_else(|| {
            unavailable(
                format!(
                    "{file} grants no range to {} (uid {uid})",
                    name.as_deref().unwrap_or("this user")
                ),
                "as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER",
            )
        })
    };
    let (su, sg) = (range("/etc/subuid", uid)?, range("/etc/subgid", gid)?);
    let helper = |n: &str| {
        find_program(n).ok_or_else(|| {
            unavailable(
                format!("{n} is not installed"),
                "install the uidmap package (apt-get install uidmap)",
            )
        })
    };
    let helpers = (helper("newuidmap")?, helper("newgidmap")?);
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(reason) = helpers_blocked(&status) {
        return Err(NoSubid::Blocked {
            reason,
            remedy: "use --map single (everything the caller owns becomes root's), or an \
                     ownership manifest; or run rootbox where the capability bounding set keeps \
                     CAP_SETUID and CAP_SETGID and no_new_privs is not set"
                .into(),
        });
    }
    // Id 0 is the caller; the subordinate ids follow from 1. The overflow
    // id (65534) is left out of the map, so that inside the namespace it
    // always means "owner not mapped": a planner inside can tell such
    // files from those of a mapped user. A file of subordinate id
    // start+65533 is then treated as unmapped (it becomes root's).
    let ranges = |own: u32, r: SubRange, overflow: u32| {
        let count = r.count.min(u32::MAX - 2);
        let mut v = vec![IdRange {
            inside: 0,
            outside: own,
            count: 1,
        }];
        let below = count.min(overflow.saturating_sub(1));
        if below > 0 {
            v.push(IdRange {
                inside: 1,
                outside: r.start,
                count: below,
            });
        }
        if count > overflow {
            v.push(IdRange {
                inside: overflow + 1,
                outside: r.start + overflow,
                count: count - overflow,
            });
        }
        v
    };
    let overflow = |file: &str| {
        fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65534)
    };
    let sub = |own: u32, r: SubRange| ranges(own, r, overflow("/proc/sys/kernel/overflowuid"));
    let subg = |own: u32, r: SubRange| ranges(own, r, overflow("/proc/sys/kernel/overflowgid"));
    Ok(IdMap {
        uids: sub(uid, su),
        gids: subg(gid, sg),
        helpers: Some(helpers),
        setgroups: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines_match_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            parse_subid(text, Some("alice"), 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(text, None, 1001),
            Some(SubRange {
                start: 200000,
                count: 1000
            })
        );
        // A zero-sized range is no range.
        assert_eq!(parse_subid(text, Some("bob"), 1002), None);
        assert_eq!(parse_subid("garbage\n::\n", Some("x"), 1), None);
    }

    #[test]
    fn lookups_follow_ranges() {
        let m = IdMap {
            uids: vec![
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1,
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536,
                },
            ],
            gids: vec![IdRange {
                inside: 0,
                outside: 100,
                count: 1,
            }],
            helpers: None,
            setgroups: false,
        };
        assert_eq!(m.uid_inside(1000), Some(0));
        assert_eq!(m.uid_inside(100000), Some(1));
        assert_eq!(m.uid_inside(100999), Some(1000));
        assert_eq!(m.uid_inside(0), None);
        assert_eq!(m.uid_outside(1000), Some(100999));
        assert_eq!(m.gid_inside(100), Some(0));
        assert_eq!(m.gid_inside(101), None);
        assert_eq!(map_text(&m.uids), "0 1000 1\n1 100000 65536\n");
    }

    #[test]
    fn blocked_helpers_are_explained() {
        let full = "CapBnd:\t000001ffffffffff\nNoNewPrivs:\t0\n";
        assert_eq!(helpers_blocked(full), None);
        let empty = "CapBnd:\t0000000000000000\nNoNewPrivs:\t0\n";
        let why = helpers_blocked(empty).unwrap();
        assert!(why.contains("CAP_SETUID and CAP_SETGID"), "{why}");
        assert!(why.contains("CapBnd: 0000000000000000"), "{why}");
        let no_setgid = "CapBnd:\t000001ffffffffbf\nNoNewPrivs:\t0\n";
        let why = helpers_blocked(no_setgid).unwrap();
        assert!(
            why.contains("lacks CAP_SETGID (") && !why.contains("SETUID"),
            "{why}"
        );
        let nnp = "CapBnd:\t000001ffffffffff\nNoNewPrivs:\t1\n";
        assert!(helpers_blocked(nnp).unwrap().contains("no_new_privs"));
    }

    #[test]
    fn the_fallback_is_the_callers_own_ids() {
        let mut m = IdMap::single(1000, 100);
        assert_eq!(m.fallback(), None, "no helpers, nothing to fall back from");
        m.helpers = Some(("/u".into(), "/g".into()));
        m.uids.push(IdRange {
            inside: 1,
            outside: 100000,
            count: 65533,
        });
        assert_eq!(m.fallback(), Some(IdMap::single(1000, 100)));
    }

    #[test]
    fn only_a_single_own_id_is_self_writable() {
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        assert!(IdMap::single(uid, gid).self_writable());
        assert!(!IdMap::single(uid.wrapping_add(1), gid).self_writable());
        assert!(!IdMap::single(uid, gid.wrapping_add(1)).self_writable());
        assert!(!IdMap::identity().self_writable());
        let mut helped = IdMap::single(uid, gid);
        helped.helpers = Some(("/u".into(), "/g".into()));
        assert!(!helped.self_writable());
        let mut two = IdMap::single(uid, gid);
        two.uids.push(IdRange {
            inside: 1,
            outside: 100000,
            count: 10,
        });
        assert!(!two.self_writable());
    }

    #[test]
    fn identity_maps_everything() {
        let m = IdMap::identity();
        assert_eq!(m.uid_inside(0), Some(0));
        assert_eq!(m.uid_inside(65534), Some(65534));
        assert!(m.setgroups_allowed());
        assert!(!IdMap::single(1000, 100).setgroups_allowed());
    }
}

//! The owner fixes, decided once for every filesystem made from the one
//! root ([`plan_fixes`]): what the staged tree shows, and what the image
//! must hold instead.

use super::{FsError, Name};
use crate::owners::Manifest;

/// An inode as the staged tree or a fresh image shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The image path (`/` for the root).
    pub path: Name,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The whole `st_mode` (type and permission bits).
    pub mode: u32,
}

/// New owner and permission bits for one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// The image path.
    pub path: Name,
    /// New owner.
    pub uid: u32,
    /// New group.
    pub gid: u32,
    /// The whole new `st_mode` (the type bits unchanged).
    pub mode: u32,
    /// Whether an unmapped owner or group was given to root.
    pub unmapped: bool,
    /// The manifest line that applied, if any.
    pub manifest_line: Option<usize>,
}

/// `mode` without S_ISUID when the owner was replaced, and without S_ISGID
/// (on non-directories, where it means "set group id") when the group was.
pub fn strip_setid(mode: u32, uid_replaced: bool, gid_replaced: bool) -> u32 {
    let mut mode = mode;
    if uid_replaced {
        mode &= !0o4000;
    }
    if gid_replaced && mode & 0o170000 != 0o040000 {
        mode &= !0o2000;
    }
    mode
}

/// Owner, group and permission bits a tar rootfs's header gives a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveOwner {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits with set-id and sticky bits (`0o7777`).
    pub mode: u32,
}

/// The changes to make to `seen` (hard links appear once per path; each
/// gets the same change), in this order: owners equal to `overflow` (uid,
/// gid) — ids the namespace does not map — become root's, without their
/// set-id bits; a path of a tar rootfs takes its header's owner, group and
/// bits (`archive`; a symlink keeps 0777); then the manifest's last
/// matching rule sets owner, group and, when it names one, the permission
/// bits. Every manifest line must match a path.
pub fn plan_fixes(
    seen: &[Seen],
    overflow: (u32, u32),
    archive: Option<&std::collections::BTreeMap<String, ArchiveOwner>>,
    manifest: Option<&Manifest>,
) -> Result<Vec<Fix>, FsError> {
    plan_fixes_as(seen, Replaced::Unmapped(overflow), archive, manifest)
}

/// Whose ids the image must not keep (they become root's), and what that
/// means for set-id bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The overflow ids of a user namespace: owners it does not map. Their
    /// set-id bits go (a setuid file of an unknown user never becomes
    /// setuid root).
    Unmapped((u32, u32)),
    /// The caller's ids, in a tree staged without a user namespace: the
    /// ids a single-id map would have made root. Their set-id bits stay
    /// (the staging copy already dropped those of every other owner).
    Caller((u32, u32)),
}

/// [`plan_fixes`], with the ids to replace and their rule given
/// ([`Replaced`]); `unmapped` marks the inodes they changed.
pub fn plan_fixes_as(
    seen: &[Seen],
    replaced: Replaced,
    archive: Option<&std::collections::BTreeMap<String, ArchiveOwner>>,
    manifest: Option<&Manifest>,
) -> Result<Vec<Fix>, FsError> {
    let (overflow, strip) = match replaced {
        Replaced::Unmapped(ids) => (ids, true),
        Replaced::Caller(ids) => (ids, false),
    };
    let mut matched = vec![false; manifest.map_or(0, |m| m.rules.len())];
    let mut fixes = Vec::new();
    for s in seen {
        let (u, g) = (s.uid == overflow.0, s.gid == overflow.1);
        let mut fix = Fix {
            path: s.path.clone(),
            uid: if u { 0 } else { s.uid },
            gid: if g { 0 } else { s.gid },
            mode: if strip {
                strip_setid(s.mode, u, g)
            } else {
                s.mode
            },
            unmapped: u || g,
            manifest_line: None,
        };
        // Tar paths and manifest patterns are text: a name that is not
        // UTF-8 meets them escaped (see [`name`]).
        let text = s.path.escaped();
        let from_archive = archive.and_then(|a| a.get(&text));
        if let Some(a) = from_archive {
            fix.uid = a.uid;
            fix.gid = a.gid;
            if s.mode & 0o170000 != 0o120000 {
                fix.mode = (s.mode & !0o7777) | (a.mode & 0o7777);
            }
        }
        if let Some((i, rule)) = manifest.and_then(|m| m.lookup(&text)) {
            matched[i] = true;
            fix.uid = rule.uid;
            fix.gid = rule.gid;
            if let Some(m) = rule.mode {
                fix.mode = (fix.mode & !0o7777) | m;
            }
            fix.manifest_line = Some(rule.line);
        }
        if fix.unmapped || fix.manifest_line.is_some() || from_archive.is_some() {
            fixes.push(fix);
        }
    }
    if let Some(m) = manifest {
        let missing: Vec<String> = m
            .rules
            .iter()
            .zip(&matched)
            .filter(|(_, hit)| !**hit)
            .map(|(r, _)| format!("line {}: {} matches nothing", r.line, r.pattern))
            .collect();
        if !missing.is_empty() {
            return Err(FsError::ManifestUnmatched(missing));
        }
    }
    Ok(fixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts the fixes are `want`, as (path, uid, gid, mode) rows.
    #[track_caller]
    fn assert_rows(fixes: &[Fix], want: &[(&str, u32, u32, u32)]) {
        let got: Vec<(String, u32, u32, u32)> = fixes
            .iter()
            .map(|f| (f.path.escaped(), f.uid, f.gid, f.mode))
            .collect();
        let want: Vec<(String, u32, u32, u32)> = want
            .iter()
            .map(|&(p, u, g, m)| (p.to_string(), u, g, m))
            .collect();
        assert_eq!(got, want);
    }

    fn seen(path: &str, uid: u32, gid: u32, mode: u32) -> Seen {
        Seen {
            path: path.into(),
            uid,
            gid,
            mode,
        }
    }

    #[test]
    fn unmapped_owners_go_to_root_without_their_setid_bits() {
        let s = [
            seen("/", 0, 0, 0o40755),
            seen("/nix/store/x/bin/su", 65534, 65534, 0o106755),
            seen("/run/wall", 0, 65534, 0o102755),
            seen("/shared", 0, 65534, 0o42775),
        ];
        let fixes = plan_fixes(&s, (65534, 65534), None, None).unwrap();
        assert_rows(
            &fixes,
            &[
                ("/nix/store/x/bin/su", 0, 0, 0o100755),
                ("/run/wall", 0, 0, 0o100755),
                // A directory's set-gid bit is inheritance, not privilege.
                ("/shared", 0, 0, 0o42775),
            ],
        );
    }

    #[test]
    fn without_a_namespace_the_callers_ids_become_root_and_keep_their_setid_bits() {
        let s = [
            seen("/", 1000, 100, 0o40755),
            seen("/bin/su", 1000, 100, 0o104755),
            seen("/etc/shadow", 1000, 42, 0o100640),
        ];
        let fixes = plan_fixes_as(&s, Replaced::Caller((1000, 100)), None, None).unwrap();
        let got: Vec<(u32, u32, u32)> = fixes.iter().map(|f| (f.uid, f.gid, f.mode)).collect();
        assert_eq!(got, [(0, 0, 0o40755), (0, 0, 0o104755), (0, 42, 0o100640)]);
    }

    #[test]
    fn the_manifest_wins_and_every_line_must_match() {
        let m = Manifest::parse(
            "/home/alice/** 1000 100\n/home/alice/.ssh 1000 100 0700\n",
            "owners",
        )
        .unwrap();
        let s = [
            seen("/home", 0, 0, 0o40755),
            seen("/home/alice", 0, 0, 0o40755),
            seen("/home/alice/.ssh", 65534, 65534, 0o40755),
        ];
        let fixes = plan_fixes(&s, (65534, 65534), None, Some(&m)).unwrap();
        assert_eq!(fixes.len(), 2);
        assert_eq!(
            (fixes[1].uid, fixes[1].gid, fixes[1].mode),
            (1000, 100, 0o40700)
        );
        assert_eq!(fixes[1].manifest_line, Some(2));
        let typo = Manifest::parse("/home/alcie 1000 100\n", "owners").unwrap();
        let e = plan_fixes(&s, (65534, 65534), None, Some(&typo)).unwrap_err();
        assert!(
            e.to_string()
                .contains("line 1: /home/alcie matches nothing"),
            "{e}"
        );
    }

    #[test]
    fn a_tar_rootfs_gives_its_owners_and_the_manifest_still_wins() {
        let archive: std::collections::BTreeMap<String, ArchiveOwner> = [
            ("/etc/shadow", 0, 42, 0o640),
            ("/home/bob", 1001, 100, 0o700),
            ("/bin/sh", 0, 0, 0o644),
        ]
        .into_iter()
        .map(|(p, uid, gid, mode)| (p.to_string(), ArchiveOwner { uid, gid, mode }))
        .collect();
        let m = Manifest::parse("/home/bob 1002 100\n", "owners").unwrap();
        let s = [
            seen("/etc/shadow", 0, 0, 0o100600),
            seen("/home/bob", 0, 0, 0o40755),
            seen("/bin/sh", 0, 0, 0o120777),
            seen("/usr", 0, 0, 0o40755),
        ];
        let fixes = plan_fixes(&s, (65534, 65534), Some(&archive), Some(&m)).unwrap();
        assert_rows(
            &fixes,
            &[
                ("/etc/shadow", 0, 42, 0o100640),
                ("/home/bob", 1002, 100, 0o40700),
                ("/bin/sh", 0, 0, 0o120777),
            ],
        );
    }
}

//! Verification: read the finished image back (rootbox's own btrfs reader,
//! no root, no mount) and check what the booted system will rely on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::LazyLock;

use anyhow::{bail, Context, Result};
use rootbox_btrfs::{FileKind, Image};
use rootbox_images::layout::Layout;
use rootbox_images::owners::Pattern;
use serde::Serialize;

use super::inputs::Inputs;
use super::launch::Staged;
use super::progress::Bar;
use super::tarball::TarOwners;
use crate::fs::specials::{placeholder, split, Device, Specials};

/// Image paths whose owner and mode sshd (StrictModes) and
/// systemd-tmpfiles check, as ownership-manifest patterns
/// ([`rootbox_images::owners::Pattern`]): `*` is one path component here.
/// Compiled once ([`SENSITIVE_PATTERNS`]): they are matched against every
/// inode of the image.
const SENSITIVE: [&str; 12] = [
    "/",
    "/etc",
    "/etc/ssh",
    "/root",
    "/root/.ssh",
    "/root/.ssh/authorized_keys",
    "/home/*",
    "/home/*/.ssh",
    "/home/*/.ssh/authorized_keys",
    "/var",
    "/var/empty",
    "/etc/ssh/authorized_keys",
];

static SENSITIVE_PATTERNS: LazyLock<Vec<Pattern>> =
    LazyLock::new(|| SENSITIVE.iter().map(|p| Pattern::new(p)).collect());

/// What verification saw, for the report.
#[derive(Debug, Default, Serialize)]
pub struct Verified {
    pub subvolumes: Vec<SubvolReport>,
    pub entries: u64,
    /// Owners seen (uid → number of inodes).
    pub uids: BTreeMap<u32, u64>,
    pub gids: BTreeMap<u32, u64>,
    pub problems: Vec<String>,
    pub secs: f64,
}

#[derive(Debug, Serialize)]
pub struct SubvolReport {
    pub name: String,
    pub id: u64,
    pub mountpoint: String,
    pub entries: u64,
    pub bytes: u64,
    pub default: bool,
}

/// Reads the finished image back and checks it against the plan, unless
/// `enabled` is false (`--no-verify`: None). The image may hold the owners
/// the staged tree had (only root when staged without a namespace: the
/// fix-ups gave the caller's ids to root), the ownership manifest's and a
/// tar rootfs's.
pub fn run(
    enabled: bool,
    image: &Path,
    inputs: &Inputs,
    tar: Option<&TarOwners>,
    staged: &Staged,
) -> Result<Option<Verified>> {
    let (direct, staged) = (staged.direct, &staged.result);
    if !enabled {
        tracing::warn!("--no-verify: the image was not read back; owners and modes are unchecked");
        return Ok(None);
    }
    let (mut uids, mut gids): (HashSet<u32>, HashSet<u32>) = if direct {
        (HashSet::from([0]), HashSet::from([0]))
    } else {
        (
            staged.uids.iter().copied().collect(),
            staged.gids.iter().copied().collect(),
        )
    };
    if let Some(m) = &inputs.manifest {
        uids.extend(m.rules.iter().map(|r| r.uid));
        gids.extend(m.rules.iter().map(|r| r.gid));
    }
    if let Some(o) = tar {
        uids.extend(o.uids());
        gids.extend(o.gids());
    }
    let progress = Bar::count("verifying", staged.counts.entries);
    let mut v = verify(image, &inputs.layout, &uids, &gids, &progress)?;
    v.problems
        .extend(special_problems(image, &inputs.layout, &staged.specials)?);
    drop(progress);
    if !v.problems.is_empty() {
        bail!(
            "verification failed; the image was not written:\n  {}",
            v.problems.join("\n  ")
        );
    }
    tracing::debug!("verified {} entries in {:.2}s", v.entries, v.secs);
    Ok(Some(v))
}

/// Checks the image at `image` (a path the reader can open) against the plan.
fn verify(
    image: &Path,
    layout: &Layout,
    allowed_uids: &HashSet<u32>,
    allowed_gids: &HashSet<u32>,
    progress: &Bar,
) -> Result<Verified> {
    let start = std::time::Instant::now();
    let img = Image::open(image).context("reading the image back")?;
    let subvols = img.subvolumes().context("listing subvolumes")?;
    let default = img
        .default_subvolume()
        .context("reading the default subvolume")?;
    let mut v = Verified::default();

    // The top level (tree 5) is not a subvolume of the layout.
    let found: HashSet<Vec<u8>> = subvols
        .iter()
        .filter(|s| s.id != 5)
        .map(|s| s.path.clone())
        .collect();
    let planned: HashSet<Vec<u8>> = layout
        .subvolumes()
        .iter()
        .map(|s| s.name.as_bytes().to_vec())
        .collect();
    if found != planned {
        let show = |s: &HashSet<Vec<u8>>| {
            let mut v: Vec<String> = s
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            v.sort();
            v.join(", ")
        };
        v.problems.push(format!(
            "subvolumes differ from the plan: image has [{}], plan has [{}]",
            show(&found),
            show(&planned)
        ));
    }

    for planned in layout.subvolumes() {
        let Some(sv) = subvols.iter().find(|s| s.path == planned.name.as_bytes()) else {
            continue;
        };
        let mut report = SubvolReport {
            name: planned.name.clone(),
            id: sv.id,
            mountpoint: planned.mountpoint.clone(),
            entries: 0,
            bytes: 0,
            default: sv.id == default,
        };
        if planned.kind.is_default() && sv.id != default {
            v.problems.push(format!(
                "subvolume {} should be the default, but {default} is",
                planned.name
            ));
        }
        let mut problems = Vec::new();
        img.walk(sv.id, &mut |e| {
            if e.kind == FileKind::Subvolume {
                return Ok(());
            }
            report.entries += 1;
            progress.inc(1);
            if e.kind == FileKind::File {
                report.bytes += e.size;
            }
            *v.uids.entry(e.uid).or_default() += 1;
            *v.gids.entry(e.gid).or_default() += 1;
            let path = image_path(&planned.mountpoint, &e.path);
            let allowed = allowed_uids.contains(&e.uid) && allowed_gids.contains(&e.gid);
            if !allowed && problems.len() < 20 {
                problems.push(format!(
                    "{path}: owner {}:{} is not one the staged tree had",
                    e.uid, e.gid
                ));
            }
            if let Some(p) = check_sensitive(&path, e.uid, e.mode, e.kind) {
                problems.push(p);
            }
            Ok(())
        })
        .with_context(|| format!("walking subvolume {}", planned.name))?;
        v.entries += report.entries;
        v.problems.extend(problems);
        v.subvolumes.push(report);
    }
    v.secs = start.elapsed().as_secs_f64();
    Ok(v)
}

/// Without a namespace: every device node staged as a FIFO must be the
/// device node in the image, with its number, and every file capability
/// staged under the placeholder `security.capability`, the placeholder
/// gone (`crate::fs::specials`); a fix-up that did not happen fails here.
fn special_problems(image: &Path, layout: &Layout, specials: &Specials) -> Result<Vec<String>> {
    if specials.is_empty() {
        return Ok(Vec::new());
    }
    let img = Image::open(image).context("reading the image back")?;
    let subvols = img.subvolumes().context("listing subvolumes")?;
    let devices_by_subvol = by_subvol(specials.devices.iter().map(|d| (&d.path[..], d)));
    let caps_by_subvol = by_subvol(specials.caps.iter().map(|c| (&c.path[..], &c.value[..])));
    let (no_devices, no_caps) = (HashMap::new(), HashMap::new());
    let mut problems = Vec::new();
    for planned in layout.subvolumes() {
        let Some(sv) = subvols.iter().find(|s| s.path == planned.name.as_bytes()) else {
            continue;
        };
        let name = planned.name.as_bytes();
        let devices: &HashMap<Vec<u8>, &Device> =
            devices_by_subvol.get(name).unwrap_or(&no_devices);
        let caps: &HashMap<Vec<u8>, &[u8]> = caps_by_subvol.get(name).unwrap_or(&no_caps);
        let mut seen = 0;
        img.walk(sv.id, &mut |e| {
            let path = image_path(&planned.mountpoint, &e.path);
            if let Some(d) = devices.get(&e.path) {
                seen += 1;
                let (major, minor) = split(d.rdev);
                if e.mode != d.mode || e.device_numbers() != (major, minor) {
                    problems.push(format!(
                        "{path}: want device node {:o} {major}:{minor}, image has {:o} {:?}",
                        d.mode,
                        e.mode,
                        e.device_numbers()
                    ));
                }
            }
            if let Some(value) = caps.get(&e.path) {
                seen += 1;
                let placeholder = placeholder(None).unwrap_or_default().as_bytes();
                if e.xattr(b"security.capability") != Some(value) || e.xattr(placeholder).is_some()
                {
                    problems.push(format!(
                        "{path}: security.capability was not set from its placeholder"
                    ));
                }
            }
            Ok(())
        })
        .with_context(|| format!("walking subvolume {}", planned.name))?;
        if seen < devices.len() + caps.len() {
            problems.push(format!(
                "subvolume {}: a device node or a file with capabilities is missing",
                planned.name
            ));
        }
    }
    Ok(problems)
}

/// Records of staged paths (device numbers, device nodes, capabilities)
/// by subvolume name, then path inside it (the staged path's first
/// component is the subvolume).
pub(super) fn by_subvol<'a, T>(
    items: impl Iterator<Item = (&'a [u8], T)>,
) -> HashMap<Vec<u8>, HashMap<Vec<u8>, T>> {
    let mut by_subvol: HashMap<Vec<u8>, HashMap<Vec<u8>, T>> = HashMap::new();
    for (staged, value) in items {
        let mut parts = Path::new(OsStr::from_bytes(staged)).components();
        let Some(first) = parts.next() else { continue };
        let rel = parts.as_path().as_os_str().as_bytes().to_vec();
        by_subvol
            .entry(first.as_os_str().as_bytes().to_vec())
            .or_default()
            .insert(rel, value);
    }
    by_subvol
}

/// The image path of `rel` in the subvolume mounted at `mountpoint`.
pub fn image_path(mountpoint: &str, rel: &[u8]) -> String {
    let rel = String::from_utf8_lossy(rel);
    match (mountpoint, rel.is_empty()) {
        (m, true) => m.to_string(),
        ("/", false) => format!("/{rel}"),
        (m, false) => format!("{m}/{rel}"),
    }
}

/// Verification of an ext4, erofs or squashfs image: the staging step has
/// compared it inode by inode with the staged tree (`crate::fs::verify`);
/// here it is read back once more (`crate::fs::read`) for the paths sshd
/// and systemd-tmpfiles check and the owners the report lists.
pub fn run_other(
    enabled: bool,
    filesystem: rootbox_images::fs::Filesystem,
    image: &Path,
) -> Result<Option<Verified>> {
    if !enabled {
        tracing::warn!("--no-verify: the image's owners were not checked");
        return Ok(None);
    }
    let start = std::time::Instant::now();
    let inodes = crate::fs::read(filesystem, image)?;
    let mut v = Verified {
        entries: inodes.len() as u64,
        ..Verified::default()
    };
    for i in &inodes {
        *v.uids.entry(i.uid).or_default() += 1;
        *v.gids.entry(i.gid).or_default() += 1;
        let kind = if crate::fs::is_symlink(i.mode) {
            FileKind::Symlink
        } else {
            FileKind::File
        };
        v.problems
            .extend(check_sensitive(&i.path.escaped(), i.uid, i.mode, kind));
    }
    v.secs = start.elapsed().as_secs_f64();
    if !v.problems.is_empty() {
        bail!(
            "the {filesystem} image would not boot safely:\n  {}",
            v.problems.join("\n  ")
        );
    }
    Ok(Some(v))
}

/// What sshd's StrictModes and systemd-tmpfiles would refuse on `path`:
/// write access for group or others (symlinks aside), or an owner other
/// than root (or, under /home/NAME, the home's owner — checked loosely as
/// any owner, since the home's owner is that user).
fn check_sensitive(path: &str, uid: u32, mode: u32, kind: FileKind) -> Option<String> {
    if kind == FileKind::Symlink || !SENSITIVE_PATTERNS.iter().any(|p| p.matches(path)) {
        return None;
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Some(format!("{path}: mode {:o} is writable by group or others (sshd and systemd-tmpfiles refuse it)", mode & 0o7777));
    }
    if uid != 0 && !path.starts_with("/home/") {
        return Some(format!(
            "{path}: owned by uid {uid}, not root (sshd and systemd-tmpfiles refuse it)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_paths() {
        assert!(check_sensitive("/root/.ssh", 1000, 0o40700, FileKind::Dir).is_some());
        assert!(check_sensitive("/root/.ssh", 0, 0o40700, FileKind::Dir).is_none());
        assert!(check_sensitive("/etc", 0, 0o40775, FileKind::Dir).is_some());
        assert!(check_sensitive("/home/alice", 1000, 0o40755, FileKind::Dir).is_none());
        assert!(check_sensitive("/home/alice/.ssh", 1000, 0o40777, FileKind::Dir).is_some());
        assert!(check_sensitive("/usr/bin", 1000, 0o40777, FileKind::Dir).is_none());
        assert_eq!(image_path("/", b"etc"), "/etc");
        assert_eq!(image_path("/nix", b""), "/nix");
        assert_eq!(image_path("/nix", b"store"), "/nix/store");
    }
}

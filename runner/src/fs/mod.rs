//! ext4, erofs and squashfs images from a staged tree: running each
//! filesystem's tools, fixing owners the namespace cannot express, and
//! reading the image back.
//!
//! [`make`] runs where the staged tree is visible with the owners the
//! build's namespace gives it: in the staging step of `rootbox build`
//! ([`run_staged`], for a [`StagedJob`] the pipeline sends), or in
//! `rootbox __fs-make` inside `rootbox run` ([`cli`]); or, in a build without
//! a user namespace, in the rootbox process on the caller's copy
//! ([`Job::direct`]: the caller's ids become root's). It walks the tree ([`walk`]), runs mkfs, decides the owner
//! fixes with [`rootbox_images::fs::plan_fixes`] (unmapped owners, the
//! overflow id, become root without their set-id bits; the manifest
//! applies), writes them — ext4 with debugfs after mkfs, erofs into the
//! inodes after mkfs, squashfs as pseudo definitions given to mksquashfs;
//! with them the device nodes and file capabilities a copy could not make
//! ([`specials`]) — sizes the image, and compares every inode of the image, read back with
//! [`read`], against the tree with the fixes applied ([`verify`]).
//! Planning (arguments, command files, size rules) lives in
//! `rootbox_images::fs`.
//!
//! Names are bytes ([`Name`]): any name Linux allows reaches the image
//! byte for byte and reads back equal; `__fs-read` prints them losslessly
//! escaped. Every image is read back with rootbox's own reader of its
//! format, from the `rootbox_fsimage` crate ([`read`]); no tool's text
//! output is parsed. A name a tool cannot write is refused before mkfs, by
//! the path the user gave ([`Origin`]): mkfs.erofs 1.5 and a 255-byte name,
//! a newline in a path mksquashfs must be given an owner for.

pub mod cli;
pub mod erofs;
pub mod ext4;
pub mod specials;
pub mod squashfs;
pub mod vfat;
mod walk;

pub use walk::{walk, Origin};

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use rootbox_images::fs::{
    plan_fixes_as, ArchiveOwner, Filesystem, Fix, Name, Options, Replaced, Seen,
};
use rootbox_images::owners::Manifest;
use serde::Serialize;

/// One inode of a tree or an image, by path (hard links: one per path,
/// sharing `ino`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inode {
    /// The image path (`/` for the root), as bytes (JSON: escaped, see
    /// [`Name`]).
    pub path: Name,
    /// Inode number (erofs: the nid; squashfs: its own numbering).
    pub ino: Option<u64>,
    /// The whole `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (major, minor) of a device node.
    pub rdev: Option<(u32, u32)>,
    /// A symlink's target.
    pub target: Option<Name>,
    /// Extended attributes by name, `system.*` (ACLs) left out on both
    /// sides of the comparison.
    pub xattrs: Option<BTreeMap<Name, Vec<u8>>>,
}

/// The file type bits of a mode.
pub const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

impl Inode {
    fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// The overflow ids of this kernel: what an unmapped owner looks like in
/// a user namespace.
pub fn overflow_ids() -> (u32, u32) {
    let read = |f: &str| {
        fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(65534)
    };
    (
        read("/proc/sys/kernel/overflowuid"),
        read("/proc/sys/kernel/overflowgid"),
    )
}

fn seen_of(inodes: &[Inode]) -> Vec<Seen> {
    inodes
        .iter()
        .map(|i| Seen {
            path: i.path.clone(),
            uid: i.uid,
            gid: i.gid,
            mode: i.mode,
        })
        .collect()
}

/// What [`make`] is asked to do.
#[derive(Debug, Clone)]
pub struct Job {
    /// The filesystem.
    pub filesystem: Filesystem,
    /// The staged tree.
    pub source: PathBuf,
    /// Where the image goes (written in place; the caller publishes it).
    pub image: PathBuf,
    /// Spec fields.
    pub options: Options,
    /// The ownership manifest.
    pub manifest: Option<Manifest>,
    /// The owners a tar rootfs's headers give, by image path.
    pub archive: Option<BTreeMap<String, ArchiveOwner>>,
    /// The ids that mean "not mapped" ([`overflow_ids`]).
    pub overflow: (u32, u32),
    /// Scratch space for command files and trial images.
    pub scratch: PathBuf,
    /// Where the tree came from, for messages.
    pub origin: Origin,
    /// Staged without a user namespace: the tree is the caller's, and the
    /// caller's ids become root's (as a single-id map makes them).
    pub direct: bool,
    /// Device nodes and file capabilities the staging could not make, by
    /// image path ([`specials`]).
    pub specials: specials::Specials,
}

/// The directory of the staging tree that holds the image's `/` when the
/// filesystem has no subvolumes (the layout's one root, see
/// `pipeline::inputs`).
pub const STAGED_ROOT: &str = "root";

/// The filesystem step of a `rootbox build`, sent to the staging step in
/// the sandbox (instead of mkfs.btrfs) and run there by [`run_staged`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StagedJob {
    /// The filesystem.
    pub filesystem: Filesystem,
    /// Where the image goes (`/proc/self/fd/N`, inherited from the
    /// parent; the parent publishes it).
    pub image: PathBuf,
    /// `label`.
    pub label: Option<String>,
    /// `uuid`.
    pub uuid: Option<String>,
    /// `compress`, as mkfs.btrfs's argument would be (`zstd:3`, `no`).
    pub compress: Option<String>,
    /// `size`.
    pub size: rootbox_images::size::Size,
    /// `headroom`.
    pub headroom: rootbox_images::size::ByteSize,
    /// A reproducible build: the epoch (None: the newest source mtime)
    /// and the UUID derived from its seed.
    pub reproducible: Option<(Option<u64>, String)>,
    /// The ownership manifest's text and its name.
    pub manifest: Option<(String, String)>,
    /// A tar rootfs's owners by image path: uid, gid, mode.
    pub archive: Option<BTreeMap<String, (u32, u32, u32)>>,
    /// Where the tree came from, for messages.
    pub origin: Origin,
    /// Staged without a user namespace (see [`Job::direct`]).
    #[serde(default)]
    pub direct: bool,
    /// What staging without a namespace could not stage as it is, by
    /// image path ([`specials`]).
    #[serde(default)]
    pub specials: specials::Specials,
}

/// Runs [`make`] for a build in its staging step: `source` is the staged
/// tree, `image` the output, `max_mtime` the newest source mtime.
pub fn run_staged(j: &StagedJob, source: &Path, scratch: &Path, max_mtime: i64) -> Result<Made> {
    let manifest = match &j.manifest {
        Some((text, origin)) => Some(Manifest::parse(text, origin)?),
        None => None,
    };
    let scratch = tempfile::Builder::new()
        .prefix("fs-")
        .tempdir_in(scratch)
        .with_context(|| format!("creating scratch space in {}", scratch.display()))?;
    let job = Job {
        filesystem: j.filesystem,
        source: source.to_path_buf(),
        image: j.image.clone(),
        options: Options {
            label: j.label.clone(),
            uuid: j.uuid.clone(),
            compress: j.compress.clone(),
            size: j.size,
            headroom: j.headroom,
            subvolumes: false,
            reproducible: j.reproducible.as_ref().map(|(epoch, uuid)| {
                rootbox_images::fs::Reproducible {
                    epoch: epoch.unwrap_or(max_mtime.max(0) as u64),
                    uuid: uuid.clone(),
                }
            }),
        },
        manifest,
        archive: j.archive.as_ref().map(|a| {
            a.iter()
                .map(|(p, &(uid, gid, mode))| (p.clone(), ArchiveOwner { uid, gid, mode }))
                .collect()
        }),
        overflow: overflow_ids(),
        scratch: scratch.path().to_path_buf(),
        origin: j.origin.clone(),
        direct: j.direct,
        specials: j.specials.clone(),
    };
    make(&job)
}

/// What [`make`] did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Made {
    /// The filesystem.
    pub filesystem: String,
    /// Size of the image file.
    pub bytes: u64,
    /// Inodes whose unmapped owner or group was given to root.
    pub unmapped_given_to_root: usize,
    /// Paths the ownership manifest changed.
    pub manifest_paths: usize,
    /// Paths compared against the tree after the fixes.
    pub verified_paths: usize,
    /// A reproducible image: the epoch its times were clamped to.
    pub reproducible_epoch: Option<u64>,
}

/// Makes the image, fixes its owners and verifies it (see the module doc).
pub fn make(job: &Job) -> Result<Made> {
    rootbox_images::fs::check(job.filesystem, &job.options)?;
    let version = check_tool(job.filesystem)?;
    let (mut tree, content) = walk(&job.source, &job.origin)?;
    names_fit(job, &tree, version)?;
    let caller = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    // What staging without a namespace stood in for: device nodes and
    // file capabilities, as the image must hold them.
    specials::expect(&mut tree, &job.specials, job.filesystem, caller);
    let replaced = if job.direct {
        Replaced::Caller(caller)
    } else {
        Replaced::Unmapped(job.overflow)
    };
    let fixes = plan_fixes_as(
        &seen_of(&tree),
        replaced,
        job.archive.as_ref(),
        job.manifest.as_ref(),
    )?;
    let expected = apply(&tree, &fixes);
    match job.filesystem {
        Filesystem::Ext4 => ext4::make(job, content, &fixes)?,
        Filesystem::Erofs => erofs::make(job, &fixes)?,
        Filesystem::Squashfs => squashfs::make(job, &fixes, &expected)?,
    }
    let got = read(job.filesystem, &job.image)?;
    let verified = verify(job.filesystem, &expected, &got, job.overflow)?;
    let bytes = fs::metadata(&job.image)
        .with_context(|| format!("stat {}", job.image.display()))?
        .len();
    Ok(Made {
        filesystem: job.filesystem.to_string(),
        bytes,
        unmapped_given_to_root: fixes.iter().filter(|f| f.unmapped).count(),
        manifest_paths: fixes.iter().filter(|f| f.manifest_line.is_some()).count(),
        verified_paths: verified,
        reproducible_epoch: job.options.reproducible.as_ref().map(|r| r.epoch),
    })
}

/// Checks the version of the filesystem's tools (see
/// [`rootbox_images::fs::Filesystem::tool`]); the version found.
pub fn check_tool(filesystem: Filesystem) -> Result<(u32, u32, u32)> {
    let t = filesystem.tool();
    let out = Command::new(t.command[0])
        .arg(t.command[1])
        .output()
        .with_context(|| {
            format!(
                "running {} for a {filesystem} image: install {} (apt-get install {})",
                t.command[0], t.package, t.package
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    Ok(rootbox_images::fs::check_version(filesystem, &text)?)
}

/// Refuses, before mkfs, a name the filesystem holds but the tool found
/// cannot write (mkfs.erofs 1.5 and a 255-byte name), naming the path as
/// the user gave it.
fn names_fit(job: &Job, tree: &[Inode], version: (u32, u32, u32)) -> Result<()> {
    if job.filesystem != Filesystem::Erofs {
        return Ok(());
    }
    for i in tree {
        let name = i.path.file_name();
        if name.len() > rootbox_images::fs::erofs::name_limit(version) {
            let shown = job.origin.describe(&i.path);
            rootbox_images::fs::erofs::check_name(version, &shown, name)?;
        }
    }
    Ok(())
}

/// The tree with `fixes` applied: what the image must hold.
pub fn apply(tree: &[Inode], fixes: &[Fix]) -> Vec<Inode> {
    let by_path: HashMap<&Name, &Fix> = fixes.iter().map(|f| (&f.path, f)).collect();
    tree.iter()
        .map(|i| match by_path.get(&i.path) {
            Some(f) => Inode {
                uid: f.uid,
                gid: f.gid,
                mode: f.mode,
                ..i.clone()
            },
            None => i.clone(),
        })
        .collect()
}

/// Reads every inode of an image with rootbox's reader for `filesystem`
/// (`rootbox_fsimage`), sorted by path.
pub fn read(filesystem: Filesystem, image: &Path) -> Result<Vec<Inode>> {
    let entries = match filesystem {
        Filesystem::Ext4 => rootbox_fsimage::ext4::read(image),
        Filesystem::Erofs => rootbox_fsimage::erofs::read(image),
        Filesystem::Squashfs => rootbox_fsimage::squashfs::read(image),
    }
    .with_context(|| format!("reading back the {filesystem} image {}", image.display()))?;
    let mut v: Vec<Inode> = entries.into_iter().map(Inode::from).collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(v)
}

impl From<rootbox_fsimage::Entry> for Inode {
    /// An image's entry as the tree's inodes are compared: `system.*`
    /// xattrs (ACLs) left out, as [`walk`] leaves them out of the tree
    /// (ext4 stores ACLs in its own encoding, not the bytes the xattr
    /// calls give).
    fn from(e: rootbox_fsimage::Entry) -> Inode {
        Inode {
            path: Name::from_bytes(e.path),
            ino: Some(e.ino),
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            rdev: e.rdev,
            target: e.target.map(Name::from_bytes),
            xattrs: e.xattrs.map(|x| {
                x.into_iter()
                    .filter(|(n, _)| !n.starts_with(b"system."))
                    .map(|(n, v)| (Name::from_bytes(n), v))
                    .collect()
            }),
        }
    }
}

/// The filesystem UUID an image carries, as its own tool reads it
/// (`dumpe2fs -h`, `dump.erofs -s`); squashfs has none.
pub fn uuid(filesystem: Filesystem, image: &Path) -> Result<Option<String>> {
    let (program, flag) = match filesystem {
        Filesystem::Ext4 => ("dumpe2fs", "-h"),
        Filesystem::Erofs => ("dump.erofs", "-s"),
        Filesystem::Squashfs => return Ok(None),
    };
    let text = output(Command::new(program).arg(flag).arg(image), program)?;
    let uuid = text
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem UUID:"))
        .map(|u| u.trim().to_string())
        .with_context(|| format!("{program} {flag} printed no UUID"))?;
    Ok(Some(uuid))
}

/// Compares the image with the tree, path by path: type, permission bits,
/// owner, group, device number, symlink target, xattrs (`system.*` left
/// out of both, see [`Inode`]) and which paths share an inode. Paths mkfs adds (ext4's
/// `/lost+found`) are allowed; an overflow id anywhere is an error.
/// Returns the number of paths compared.
pub fn verify(
    filesystem: Filesystem,
    expected: &[Inode],
    got: &[Inode],
    overflow: (u32, u32),
) -> Result<usize> {
    let got_by: HashMap<&Name, &Inode> = got.iter().map(|i| (&i.path, i)).collect();
    let want_by: HashMap<&Name, &Inode> = expected.iter().map(|i| (&i.path, i)).collect();
    let mut problems = Vec::new();
    for w in expected {
        let Some(g) = got_by.get(&w.path) else {
            problems.push(format!("{}: missing from the image", w.path));
            continue;
        };
        let show = |i: &Inode| format!("{:o} {}:{}", i.mode, i.uid, i.gid);
        if (w.mode, w.uid, w.gid) != (g.mode, g.uid, g.gid) {
            problems.push(format!(
                "{}: want {}, image has {}",
                w.path,
                show(w),
                show(g)
            ));
        }
        if w.rdev.is_some() && w.rdev != g.rdev {
            problems.push(format!(
                "{}: device {:?}, image has {:?}",
                w.path, w.rdev, g.rdev
            ));
        }
        if let (Some(a), Some(b)) = (&w.target, &g.target) {
            if a != b {
                problems.push(format!("{}: symlink to {a:?}, image has {b:?}", w.path));
            }
        }
        // Every reader sees xattrs: an image without them where the tree
        // has some is a difference too.
        if let Some(a) = &w.xattrs {
            if g.xattrs.as_ref() != Some(a) {
                let keys = |x: &BTreeMap<Name, Vec<u8>>| x.keys().cloned().collect::<Vec<_>>();
                problems.push(format!(
                    "{}: xattrs {:?}, image has {:?}",
                    w.path,
                    keys(a),
                    g.xattrs.as_ref().map(keys).unwrap_or_default()
                ));
            }
        }
    }
    for g in got {
        let made_by_mkfs = filesystem == Filesystem::Ext4 && g.path == "/lost+found";
        if !made_by_mkfs && !want_by.contains_key(&g.path) {
            problems.push(format!("{}: in the image but not in the tree", g.path));
        }
        if g.uid == overflow.0 || g.gid == overflow.1 {
            problems.push(format!(
                "{}: owned by {}:{}, the overflow id (an owner the namespace does not map)",
                g.path, g.uid, g.gid
            ));
        }
    }
    problems.extend(hard_link_problems(expected, &got_by));
    if !problems.is_empty() {
        problems.sort();
        problems.dedup();
        let n = problems.len();
        problems.truncate(20);
        bail!(
            "the {filesystem} image does not hold what was staged ({n} problems):\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(expected.len())
}

/// Paths that share an inode in the tree must share one in the image, and
/// only those (every reader reports inode numbers).
fn hard_link_problems(expected: &[Inode], got_by: &HashMap<&Name, &Inode>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut group: HashMap<u64, &Name> = HashMap::new();
    let mut image_group: HashMap<u64, &Name> = HashMap::new();
    for w in expected.iter().filter(|w| !w.is_dir()) {
        let (Some(wi), Some(gi)) = (w.ino, got_by.get(&w.path).and_then(|g| g.ino)) else {
            continue;
        };
        let first = *group.entry(wi).or_insert(&w.path);
        let first_in_image = *image_group.entry(gi).or_insert(&w.path);
        if first != first_in_image {
            problems.push(format!(
                "{}: hard links differ (tree: same inode as {first}, image: same inode as \
                 {first_in_image})",
                w.path
            ));
        }
    }
    problems
}

/// Runs `cmd`, failing with its stderr when it fails; its stdout.
pub fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a mode is a symlink's.
pub fn is_symlink(mode: u32) -> bool {
    mode & S_IFMT == S_IFLNK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(path: &str, ino: u64, mode: u32, uid: u32) -> Inode {
        Inode {
            path: path.into(),
            ino: Some(ino),
            mode,
            uid,
            gid: 0,
            rdev: None,
            target: None,
            xattrs: Some(BTreeMap::new()),
        }
    }

    #[test]
    fn verification_reports_every_difference() {
        let want = [
            inode("/", 1, 0o40755, 0),
            inode("/a", 2, 0o100644, 0),
            inode("/b", 2, 0o100644, 0),
            inode("/c", 3, 0o104755, 0),
        ];
        assert_eq!(
            verify(Filesystem::Erofs, &want, &want, (65534, 65534)).unwrap(),
            4
        );
        let mut got = want.to_vec();
        got[2].ino = Some(9); // the hard link was split
        got[3].mode = 0o100755; // the setuid bit was lost
        got[3].uid = 65534;
        got.push(inode("/lost+found", 11, 0o40700, 0));
        let e = verify(Filesystem::Erofs, &want, &got, (65534, 65534))
            .unwrap_err()
            .to_string();
        for needle in [
            "/b: hard links differ",
            "/c: want 104755 0:0, image has 100755 65534:0",
            "/c: owned by 65534:0, the overflow id",
            "/lost+found: in the image but not in the tree",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
        }
        // ext4's mkfs makes lost+found itself.
        let mut ext4 = want.to_vec();
        ext4.push(inode("/lost+found", 11, 0o40700, 0));
        assert!(verify(Filesystem::Ext4, &want, &ext4, (65534, 65534)).is_ok());
    }

    #[test]
    fn a_lost_xattr_is_a_problem_in_every_filesystem() {
        let mut f = inode("/f", 2, 0o100644, 0);
        f.xattrs = Some(BTreeMap::from([(
            Name::from("security.capability"),
            vec![1, 0, 0, 2],
        )]));
        let want = [inode("/", 1, 0o40755, 0), f];
        let mut got = want.to_vec();
        got[1].xattrs = Some(BTreeMap::new());
        for filesystem in [Filesystem::Ext4, Filesystem::Erofs, Filesystem::Squashfs] {
            assert_eq!(verify(filesystem, &want, &want, (65534, 65534)).unwrap(), 2);
            let e = verify(filesystem, &want, &got, (65534, 65534))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("/f: xattrs [\"security.capability\"], image has []"),
                "{filesystem}: {e}"
            );
        }
        // An image side that saw no xattrs at all does not pass either.
        got[1].xattrs = None;
        let e = verify(Filesystem::Squashfs, &want, &got, (65534, 65534)).unwrap_err();
        assert!(e.to_string().contains("/f: xattrs"), "{e}");
    }

    #[test]
    fn system_xattrs_are_left_out_of_what_a_reader_gives() {
        let e = rootbox_fsimage::Entry {
            path: b"/d\xff".to_vec(),
            ino: 12,
            mode: 0o40755,
            uid: 1,
            gid: 2,
            nlink: 2,
            rdev: None,
            size: 4096,
            target: None,
            xattrs: Some(BTreeMap::from([
                (b"system.posix_acl_default".to_vec(), vec![2, 0, 0, 0]),
                (b"user.k".to_vec(), b"v".to_vec()),
            ])),
        };
        let i = Inode::from(e);
        assert_eq!(i.path.as_bytes(), b"/d\xff");
        assert_eq!((i.ino, i.mode, i.uid, i.gid), (Some(12), 0o40755, 1, 2));
        assert_eq!(
            i.xattrs,
            Some(BTreeMap::from([(Name::from("user.k"), b"v".to_vec())]))
        );
    }
}

//! `--rootfs FILE.tar[.zst|.gz]`: a rootfs as a tar archive (what
//! `mmdebstrap --mode=unshare` and container exports produce).
//!
//! The archive is unpacked by the parent, as the caller, into scratch space
//! ([`unpack`]): every file becomes the caller's (so it stages as root, with
//! any map), and the owners and permission bits the tar headers give are
//! kept aside in a [`TarOwners`]. After mkfs, the fix-ups
//! ([`super::fixup::tar_owners`]) write them into the image's inodes with
//! the in-place rewriter, so the tar's exact ownership reaches the image
//! without any subordinate id range.
//!
//! Unpacking never writes outside its directory: entry names that are
//! absolute or hold a `..` component are refused, as is any entry (or hard
//! link target) whose path goes through a symlink or a non-directory an
//! earlier entry made; files are created with `O_NOFOLLOW | O_EXCL` after
//! whatever an earlier entry left at that name (but a directory) is removed.
//! Refusals are errors naming the entry: an archive is either unpacked
//! whole and safely, or the build stops.
//!
//! What is not carried over (each is a warning): device nodes (an
//! unprivileged process cannot create them: left out and listed), xattrs
//! other than `user.*` (file capabilities, SELinux labels), and POSIX ACLs
//! (kept raw in [`TarEntry`] but not applied: the rewriter edits inode items
//! only, and an ACL set on the unpacked files would be translated through
//! the namespace's map as if it named host ids).
//!
//! Why one file of some 630 lines before its tests: it holds one concern,
//! unpacking an archive safely (the `Unpacker`'s steps and the checks they
//! make on names, parents and links), and its tests of those private checks
//! belong beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

/// Owner and permissions of one archive entry, as its header gives them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TarEntry {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits, set-id and sticky bits included (`0o7777`).
    pub mode: u32,
    /// `SCHILY.acl.access` (text) or `SCHILY.xattr.system.posix_acl_access`
    /// (binary xattr), raw; not applied.
    pub acl_access: Option<Vec<u8>>,
    /// The same for the default ACL of a directory; not applied.
    pub acl_default: Option<Vec<u8>>,
}

/// A device node the archive holds but that could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedDevice {
    /// Image path.
    pub path: String,
    /// `'c'` or `'b'`.
    pub kind: char,
    pub major: u32,
    pub minor: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What the archive's headers say, by image path (`/`, `/etc/shadow`, …).
#[derive(Debug, Default)]
pub struct TarOwners {
    pub entries: BTreeMap<String, TarEntry>,
    pub devices: Vec<SkippedDevice>,
    pub warnings: Vec<String>,
}

impl TarOwners {
    /// Every uid the archive gives an entry that was unpacked.
    pub fn uids(&self) -> BTreeSet<u32> {
        self.entries.values().map(|e| e.uid).collect()
    }

    /// Every gid the archive gives an entry that was unpacked.
    pub fn gids(&self) -> BTreeSet<u32> {
        self.entries.values().map(|e| e.gid).collect()
    }
}

/// Whether `p` names a tar archive by its extension: `.tar`, `.tar.zst`,
/// `.tar.zstd`, `.tzst`, `.tar.gz`, `.tgz`.
pub fn is_tar_name(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    [".tar", ".tar.zst", ".tar.zstd", ".tzst", ".tar.gz", ".tgz"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The archive's bytes, decompressed by its magic number (zstd, gzip, or
/// none), whatever its name says.
fn open_decompressed(archive: &Path) -> Result<Box<dyn Read>> {
    let f = fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let head = r
        .fill_buf()
        .with_context(|| format!("reading {}", archive.display()))?;
    Ok(if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(r)
                .with_context(|| format!("reading {} as zstd", archive.display()))?,
        )
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    })
}

/// An entry name split into its normal components: `./a//b/` → [a, b].
/// Absolute names and `..` components are refused.
fn components(name: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    if name.first() == Some(&b'/') {
        return Err("an absolute path");
    }
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("a `..` component"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn show(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}

/// Unpacks `archive` into `into` (created here; must not exist) as the
/// caller, and returns what the headers say about owners and modes.
///
/// On disk, files get the header's mode plus `u+rw` (directories `u+rwx`)
/// so the caller can read, copy and remove everything; the fix-ups after
/// mkfs put the exact modes in the image.
pub fn unpack(archive: &Path, into: &Path) -> Result<TarOwners> {
    fs::create_dir(into).with_context(|| format!("creating {}", into.display()))?;
    // The rootfs root, unless the archive has a `./` entry.
    fs::set_permissions(into, fs::Permissions::from_mode(0o755))?;
    let reader = open_decompressed(archive)?;
    let mut ar = tar::Archive::new(reader);
    let mut u = Unpacker {
        archive,
        into,
        owners: TarOwners::default(),
        dirs: Vec::new(),
        acls_kept: 0,
        xattrs_skipped: BTreeMap::new(),
    };
    let entries = ar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        u.entry(entry)?;
    }
    u.set_directories()?;
    Ok(u.finish())
}

/// The state of one [`unpack`]: where it writes, and what it has learnt.
struct Unpacker<'a> {
    archive: &'a Path,
    into: &'a Path,
    owners: TarOwners,
    /// Directories' modes and mtimes, set last (children change both).
    dirs: Vec<(PathBuf, u32, Option<TimeSpec>)>,
    /// How many entries carry POSIX ACLs (kept, not applied).
    acls_kept: u64,
    /// Xattrs other than `user.*`, by name: not applied.
    xattrs_skipped: BTreeMap<String, u64>,
}

/// What an entry's header and PAX records say about it.
struct Meta {
    rec: TarEntry,
    mtime: Option<TimeSpec>,
    user_xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The error context of one entry: `ARCHIVE: entry NAME: what`.
type At<'a> = dyn Fn(&str) -> String + 'a;

impl Unpacker<'_> {
    /// Unpacks one archive entry under `into` and records its owner.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(());
        }
        let name = entry.path_bytes().into_owned();
        let archive = self.archive;
        let at = |what: &str| format!("{}: entry {}: {what}", archive.display(), show(&name));
        let parts = components(&name)
            .map_err(|why| anyhow!(at(&format!("{why}; refusing to unpack outside the rootfs"))))?;
        let mut meta = read_header(entry.header(), &at)?;
        self.read_pax(&mut entry, &mut meta, &at)?;
        let link = entry.link_name_bytes().map(|l| l.into_owned());

        let image = format!("/{}", join(&parts));
        let dst = under(self.into, &parts);
        if parts.is_empty() {
            // The archive's root directory (`./`): the rootfs itself.
            if !kind.is_dir() {
                bail!(at("the root of the archive is not a directory"));
            }
            self.dirs.push((dst, meta.rec.mode | 0o700, meta.mtime));
            self.owners.entries.insert(image, meta.rec);
            return Ok(());
        }
        make_parents(self.into, &parts, &at)?;

        let mode = meta.rec.mode;
        match kind {
            EntryType::Directory => {
                make_directory(&dst, &at)?;
                self.dirs.push((dst.clone(), mode | 0o700, meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                write_file(&mut entry, &dst, mode, &at)?
            }
            EntryType::Symlink => {
                let target = link.ok_or_else(|| anyhow!(at("a symlink without a target")))?;
                clear(&dst, &at)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &dst)
                    .with_context(|| at(&format!("creating symlink {}", dst.display())))?;
            }
            EntryType::Link => {
                let target = link.ok_or_else(|| anyhow!(at("a hard link without a target")))?;
                return self.hard_link(&target, &dst, image, meta.rec, &at);
            }
            EntryType::Fifo => {
                clear(&dst, &at)?;
                nix::unistd::mkfifo(&dst, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .with_context(|| at(&format!("creating fifo {}", dst.display())))?;
                chmod(&dst, mode | 0o600, &at)?;
            }
            EntryType::Char | EntryType::Block => {
                let (major, minor) = device_numbers(entry.header());
                self.owners.devices.push(SkippedDevice {
                    path: image,
                    kind: if kind == EntryType::Char { 'c' } else { 'b' },
                    major,
                    minor,
                    mode,
                    uid: meta.rec.uid,
                    gid: meta.rec.gid,
                });
                return Ok(());
            }
            other => {
                self.owners.warnings.push(format!(
                    "{}: entry {}: type {other:?} left out",
                    archive.display(),
                    show(&name)
                ));
                return Ok(());
            }
        }
        self.set_xattrs(&dst, &image, &meta.user_xattrs);
        if !kind.is_dir() {
            if let Some(t) = meta.mtime {
                set_mtime(&dst, t, &at)?;
            }
        }
        self.owners.entries.insert(image, meta.rec);
        Ok(())
    }

    /// Reads an entry's PAX records: a precise mtime, ACLs (kept raw) and
    /// xattrs (`user.*` kept for the file, the others counted as skipped).
    fn read_pax<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        meta: &mut Meta,
        at: &At,
    ) -> Result<()> {
        if let Some(pax) = entry.pax_extensions().with_context(|| at("PAX records"))? {
            for ext in pax {
                let ext = ext.with_context(|| at("PAX record"))?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                match key {
                    b"mtime" => {
                        if let Some(t) = pax_time(value) {
                            meta.mtime = Some(t);
                        }
                    }
                    b"SCHILY.acl.access" | b"SCHILY.xattr.system.posix_acl_access" => {
                        meta.rec.acl_access = Some(value.to_vec())
                    }
                    b"SCHILY.acl.default" | b"SCHILY.xattr.system.posix_acl_default" => {
                        meta.rec.acl_default = Some(value.to_vec())
                    }
                    k => {
                        let x = k
                            .strip_prefix(b"SCHILY.xattr.")
                            .or_else(|| k.strip_prefix(b"LIBARCHIVE.xattr."));
                        match x {
                            Some(x) if x.starts_with(b"user.") => {
                                meta.user_xattrs.push((x.to_vec(), value.to_vec()))
                            }
                            Some(x) => {
                                *self
                                    .xattrs_skipped
                                    .entry(String::from_utf8_lossy(x).into_owned())
                                    .or_default() += 1
                            }
                            None => {}
                        }
                    }
                }
            }
        }
        if meta.rec.acl_access.is_some() || meta.rec.acl_default.is_some() {
            self.acls_kept += 1;
        }
        Ok(())
    }

    /// Links `dst` to the earlier entry `target` names, and gives both
    /// names the target's owner and mode.
    fn hard_link(
        &mut self,
        target: &[u8],
        dst: &Path,
        image: String,
        rec: TarEntry,
        at: &At,
    ) -> Result<()> {
        let tparts = components(target).map_err(|why| {
            anyhow!(at(&format!(
                "hard link target {} is {why}; refusing to link outside the rootfs",
                show(target)
            )))
        })?;
        if tparts.is_empty() {
            bail!(at("a hard link to the archive's root"));
        }
        // The target's parents must be real directories inside `into`.
        check_parents(self.into, &tparts).map_err(|p| {
            anyhow!(at(&format!(
                "hard link target {} goes through {}, which is not a directory \
                 (a symlink made by an earlier entry?); refusing to follow it",
                show(target),
                show(p.as_bytes())
            )))
        })?;
        let src = under(self.into, &tparts);
        match fs::symlink_metadata(&src) {
            Ok(m) if !m.is_dir() => {}
            Ok(_) => bail!(at(&format!(
                "hard link target {} is a directory",
                show(target)
            ))),
            Err(_) => bail!(at(&format!(
                "hard link target {} is not in the archive before it",
                show(target)
            ))),
        }
        if src != dst {
            clear(dst, at)?;
            // linkat(2) without AT_SYMLINK_FOLLOW: a symlink is linked, not followed.
            fs::hard_link(&src, dst).with_context(|| at(&format!("linking {}", dst.display())))?;
        }
        // One inode: the image shows whichever name comes first, so
        // both names carry the target's owner and mode.
        let trec = self
            .owners
            .entries
            .get(&format!("/{}", join(&tparts)))
            .cloned()
            .unwrap_or(rec);
        self.owners.entries.insert(image, trec);
        Ok(())
    }

    /// Sets an entry's `user.*` xattrs; one that cannot be set is a warning.
    fn set_xattrs(&mut self, dst: &Path, image: &str, xattrs: &[(Vec<u8>, Vec<u8>)]) {
        for (k, v) in xattrs {
            if let Err(e) = xattr::set(dst, std::ffi::OsStr::from_bytes(k), v) {
                self.owners.warnings.push(format!(
                    "{image}: xattr {} not set: {e}",
                    String::from_utf8_lossy(k)
                ));
            }
        }
    }

    /// Gives the directories their modes and mtimes, deepest first: setting
    /// a directory's mtime must follow every change inside it.
    fn set_directories(&mut self) -> Result<()> {
        self.dirs
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (p, mode, mtime) in &self.dirs {
            let at = |what: &str| format!("{}: {}: {what}", self.archive.display(), p.display());
            chmod(p, *mode, &at)?;
            if let Some(t) = mtime {
                set_mtime(p, *t, &at)?;
            }
        }
        Ok(())
    }

    /// The owners, with one warning for each kind of thing left out:
    /// device nodes, ACLs, xattrs other than `user.*`.
    fn finish(mut self) -> TarOwners {
        let owners = &mut self.owners;
        if !owners.devices.is_empty() {
            let list: Vec<String> = owners
                .devices
                .iter()
                .take(8)
                .map(|d| format!("{} ({} {}:{})", d.path, d.kind, d.major, d.minor))
                .collect();
            owners.warnings.push(format!(
                "{} device node(s) of the archive left out (an unprivileged process cannot \
                 create them; devtmpfs provides them at boot): {}{}",
                owners.devices.len(),
                list.join(", "),
                if owners.devices.len() > 8 {
                    ", …"
                } else {
                    ""
                }
            ));
        }
        if self.acls_kept > 0 {
            owners.warnings.push(format!(
                "{} entr(y/ies) of the archive carry POSIX ACLs, which are not applied to \
                 the image (owners and modes are)",
                self.acls_kept
            ));
        }
        if !self.xattrs_skipped.is_empty() {
            let list: Vec<String> = self
                .xattrs_skipped
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            owners.warnings.push(format!(
                "xattrs of the archive not applied (only user.* are): {}",
                list.join(", ")
            ));
        }
        self.owners
    }
}

/// An entry's owner, permission bits and mtime, as its header gives them.
fn read_header(h: &tar::Header, at: &At) -> Result<Meta> {
    let uid = u32::try_from(h.uid().with_context(|| at("uid"))?)
        .map_err(|_| anyhow!(at("uid out of range")))?;
    let gid = u32::try_from(h.gid().with_context(|| at("gid"))?)
        .map_err(|_| anyhow!(at("gid out of range")))?;
    let mode = h.mode().with_context(|| at("mode"))? & 0o7777;
    Ok(Meta {
        rec: TarEntry {
            uid,
            gid,
            mode,
            ..TarEntry::default()
        },
        mtime: h.mtime().ok().map(|s| TimeSpec::new(s as i64, 0)),
        user_xattrs: Vec::new(),
    })
}

/// A device entry's major and minor numbers (0 where the header has none).
fn device_numbers(h: &tar::Header) -> (u32, u32) {
    (
        h.device_major().ok().flatten().unwrap_or(0),
        h.device_minor().ok().flatten().unwrap_or(0),
    )
}

/// `into` joined with an entry's components.
fn under(into: &Path, parts: &[&[u8]]) -> PathBuf {
    parts.iter().fold(into.to_path_buf(), |p, c| {
        p.join(std::ffi::OsStr::from_bytes(c))
    })
}

/// A directory at `dst`: kept if one is there, else made (after removing
/// whatever an earlier entry left at that name).
fn make_directory(dst: &Path, at: &At) -> Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            remove(dst, at)?;
            mkdir(dst, at)
        }
        Err(_) => mkdir(dst, at),
    }
}

/// Writes a regular file's contents to `dst` (`O_NOFOLLOW | O_EXCL`, after
/// clearing the name) and gives it the entry's mode plus `u+rw`.
fn write_file(entry: &mut impl Read, dst: &Path, mode: u32, at: &At) -> Result<()> {
    clear(dst, at)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .with_context(|| at(&format!("creating {}", dst.display())))?;
    io::copy(entry, &mut f).with_context(|| at(&format!("writing {}", dst.display())))?;
    drop(f);
    chmod(dst, mode | 0o600, at)
}

fn join(parts: &[&[u8]]) -> String {
    parts
        .iter()
        .map(|c| String::from_utf8_lossy(c))
        .collect::<Vec<_>>()
        .join("/")
}

/// A PAX time: seconds with an optional fraction (`1700000000.123456789`).
fn pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
    };
    // A negative time with a fraction counts the fraction downwards.
    Some(if secs < 0 && nanos > 0 {
        TimeSpec::new(secs - 1, 1_000_000_000 - nanos)
    } else {
        TimeSpec::new(secs, nanos)
    })
}

/// The first prefix of `parts` (without the last component) that exists
/// and is not a directory, as text.
fn check_parents(into: &Path, parts: &[&[u8]]) -> std::result::Result<(), String> {
    let mut p = into.to_path_buf();
    for (i, c) in parts[..parts.len() - 1].iter().enumerate() {
        p.push(std::ffi::OsStr::from_bytes(c));
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(join(&parts[..=i])),
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Creates the missing parents of `parts` (never following a symlink: a
/// parent that exists and is not a directory is an error).
fn make_parents(into: &Path, parts: &[&[u8]], at: &dyn Fn(&str) -> String) -> Result<()> {
    let mut p = into.to_path_buf();
    for (i, c) in parts[..parts.len() - 1].iter().enumerate() {
        p.push(std::ffi::OsStr::from_bytes(c));
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => bail!(at(&format!(
                "its parent {} is {}, made by an earlier entry; refusing to write through it",
                show(join(&parts[..=i]).as_bytes()),
                if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                }
            ))),
            // Not in the archive (yet): 0755 as tar makes it; a later
            // entry for it sets its own mode.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                mkdir(&p, at)?;
                chmod(&p, 0o755, at)?;
            }
            Err(e) => bail!(at(&format!("{}: {e}", p.display()))),
        }
    }
    Ok(())
}

fn mkdir(p: &Path, at: &dyn Fn(&str) -> String) -> Result<()> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .with_context(|| at(&format!("creating {}", p.display())))
}

/// Removes what an earlier entry left at `p` (tar semantics: the later
/// entry wins), but never a directory.
fn clear(p: &Path, at: &dyn Fn(&str) -> String) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => bail!(at("replaces a directory of an earlier entry")),
        Ok(_) => remove(p, at),
        Err(_) => Ok(()),
    }
}

fn remove(p: &Path, at: &dyn Fn(&str) -> String) -> Result<()> {
    let r = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        _ => fs::remove_file(p),
    };
    r.with_context(|| at(&format!("removing {}", p.display())))
}

fn chmod(p: &Path, mode: u32, at: &dyn Fn(&str) -> String) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| at(&format!("chmod {mode:o} {}", p.display())))
}

fn set_mtime(p: &Path, t: TimeSpec, at: &dyn Fn(&str) -> String) -> Result<()> {
    utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink)
        .with_context(|| at(&format!("setting the mtime of {}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_split_and_escapes_refused() {
        assert_eq!(components(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"..").is_err());
    }

    #[test]
    fn tar_names() {
        for n in ["r.tar", "r.tar.zst", "R.TAR.GZ", "x.tgz", "x.tzst"] {
            assert!(is_tar_name(Path::new(n)), "{n}");
        }
        for n in ["root", "r.zst", "tar"] {
            assert!(!is_tar_name(Path::new(n)), "{n}");
        }
    }

    #[test]
    fn pax_times() {
        assert_eq!(pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(pax_time(b"12.5"), Some(TimeSpec::new(12, 500_000_000)));
        assert_eq!(pax_time(b"-1.25"), Some(TimeSpec::new(-2, 750_000_000)));
        assert_eq!(pax_time(b"x"), None);
    }

    fn header(kind: EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        h
    }

    #[test]
    fn unpacks_and_records_owners() {
        let tmp = tempfile::tempdir().unwrap();
        let tar_path = tmp.path().join("a.tar");
        let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        let mut h = header(EntryType::Directory, 0o755, 0, 0);
        b.append_data(&mut h, "./", io::empty()).unwrap();
        let mut h = header(EntryType::Directory, 0o555, 0, 0);
        b.append_data(&mut h, "etc", io::empty()).unwrap();
        let mut h = header(EntryType::Regular, 0o640, 0, 42);
        h.set_size(3);
        b.append_data(&mut h, "etc/shadow", &b"x:\n"[..]).unwrap();
        let mut h = header(EntryType::Link, 0o640, 0, 42);
        b.append_link(&mut h, "etc/shadow-", "etc/shadow").unwrap();
        let mut h = header(EntryType::Symlink, 0o777, 0, 0);
        b.append_link(&mut h, "etc/abs", "/etc/shadow").unwrap();
        let mut h = header(EntryType::Char, 0o666, 0, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", io::empty()).unwrap();
        b.into_inner().unwrap();

        let into = tmp.path().join("root");
        let o = unpack(&tar_path, &into).unwrap();
        assert_eq!(fs::read(into.join("etc/shadow")).unwrap(), b"x:\n");
        assert_eq!(o.entries["/etc/shadow"].gid, 42);
        assert_eq!(o.entries["/etc/shadow-"].mode, 0o640);
        assert_eq!(o.entries["/etc"].mode, 0o555);
        assert_eq!(o.entries["/"].mode, 0o755);
        assert_eq!(
            fs::metadata(into.join("etc")).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(o.devices.len(), 1);
        assert_eq!(o.devices[0].path, "/dev/null");
        assert_eq!(
            fs::read_link(into.join("etc/abs")).unwrap(),
            Path::new("/etc/shadow")
        );
    }

    #[test]
    fn writes_through_symlinks_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let tar_path = tmp.path().join("evil.tar");
        let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        let mut h = header(EntryType::Symlink, 0o777, 0, 0);
        b.append_link(&mut h, "link", &outside).unwrap();
        let mut h = header(EntryType::Regular, 0o644, 0, 0);
        h.set_size(1);
        // Written raw: the builder itself refuses such names.
        h.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"link/pwned");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.into_inner().unwrap();
        let e = unpack(&tar_path, &tmp.path().join("root")).unwrap_err();
        assert!(e.to_string().contains("\"link/pwned\""), "{e:#}");
        assert!(!outside.join("pwned").exists());
    }
}

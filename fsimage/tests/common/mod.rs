//! What the format tests share: a hostile tree made as root, the check of
//! every image entry against `lstat` of that tree, and the run of a tool.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rootbox_fsimage::{Entry, S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};

/// Whether the tests can run their checks: as root (owners, device
/// nodes) with `tool` installed. Under CI a test that cannot must fail.
pub fn can_run(tool: &str) -> bool {
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let has = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if root && has {
        return true;
    }
    let why = format!("needs root and {tool} (root: {root}, {tool}: {has})");
    assert!(
        std::env::var_os("CI").is_none(),
        "cannot run under CI: {why}"
    );
    eprintln!("SKIPPED: {why}");
    false
}

/// Runs `cmd`, panicking with its output when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

/// A `security.capability` value the kernel accepts (VFS_CAP_REVISION_2:
/// cap_net_bind_service permitted, effective).
pub const CAPABILITY: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Makes the tree every format test reads back: owners of several ids
/// (one above 65535), a character and a block device, set-id and sticky
/// modes, hard links, symlinks (one with a 1000-byte target), xattrs
/// (`security.capability`, `user.*`), a directory of 300 entries, and
/// names with a non-UTF-8 byte, a newline, a backslash and a colon, and
/// a name of `long_name` bytes (255, Linux's longest, where the tool
/// takes it).
pub fn make_tree(root: &Path, long_name: usize) {
    let d = |rel: &[u8]| fs::create_dir_all(p(root, rel)).unwrap();
    let f = |rel: &[u8], body: &[u8]| fs::write(p(root, rel), body).unwrap();
    let own = |rel: &[u8], uid: u32, gid: u32| {
        std::os::unix::fs::lchown(p(root, rel), Some(uid), Some(gid)).unwrap()
    };
    let mode = |rel: &[u8], m: u32| {
        fs::set_permissions(p(root, rel), fs::Permissions::from_mode(m)).unwrap()
    };
    d(b"etc");
    d(b"usr/bin");
    d(b"tmp");
    d(b"dev");
    d(b"big");
    f(b"etc/hostname", b"rootbox\n");
    own(b"etc/hostname", 0, 0);
    f(b"usr/bin/su", &[0x7f; 3000]);
    mode(b"usr/bin/su", 0o4755);
    f(b"usr/bin/wall", b"#!/bin/sh\n");
    own(b"usr/bin/wall", 0, 5);
    mode(b"usr/bin/wall", 0o2755);
    mode(b"tmp", 0o1777);
    f(b"etc/owned", b"x");
    own(b"etc/owned", 1000, 100);
    f(b"etc/wide", b"y");
    own(b"etc/wide", 70000, 70001);
    fs::hard_link(p(root, b"etc/hostname"), p(root, b"etc/hostname.link")).unwrap();
    fs::hard_link(p(root, b"etc/hostname"), p(root, b"usr/hostname.2")).unwrap();
    symlink("../etc/hostname", p(root, b"usr/link")).unwrap();
    symlink("t".repeat(1000), p(root, b"usr/longlink")).unwrap();
    std::os::unix::fs::lchown(p(root, b"usr/link"), Some(7), Some(8)).unwrap();
    run(Command::new("mknod")
        .arg(p(root, b"dev/null"))
        .args(["c", "1", "3"]));
    run(Command::new("mknod")
        .arg(p(root, b"dev/sda1"))
        .args(["b", "8", "1"]));
    run(Command::new("mknod")
        .arg(p(root, b"dev/big"))
        .args(["c", "259", "70000"]));
    run(Command::new("mkfifo").arg(p(root, b"dev/fifo")));
    xattr::set(p(root, b"usr/bin/su"), "security.capability", &CAPABILITY).unwrap();
    xattr::set(p(root, b"etc/hostname"), "user.rootbox", b"value").unwrap();
    xattr::set(p(root, b"etc/hostname"), "user.a", b"").unwrap();
    xattr::set(p(root, b"etc"), "user.dir", &[0, 1, 2, 0xff]).unwrap();
    xattr::set(p(root, b"etc/owned"), "trusted.t", b"tv").unwrap();
    // One name and value on several files: erofs shares it (`-x1`).
    for f in [&b"etc/owned"[..], b"etc/wide", b"usr/bin/wall", b"big"] {
        xattr::set(p(root, f), "user.shared", b"the same value").unwrap();
    }
    for i in 0..300 {
        f(
            format!("big/entry-with-a-longish-name-{i:04}").as_bytes(),
            b"",
        );
    }
    for name in [
        &b"caf\xe9-latin1"[..],
        b"new\nline",
        b"back\\slash",
        b"co:lon",
    ] {
        f(&[b"etc/", name].concat(), name);
    }
    f(&[&b"etc/"[..], &vec![b'n'; long_name]].concat(), b"long");
}

/// Every path of the tree (`/` its root), with its lstat.
pub fn tree_entries(root: &Path) -> BTreeMap<Vec<u8>, fs::Metadata> {
    let mut out = BTreeMap::new();
    out.insert(b"/".to_vec(), fs::symlink_metadata(root).unwrap());
    let mut stack = vec![(root.to_path_buf(), b"".to_vec())];
    while let Some((dir, rel)) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let path = [&rel[..], b"/", e.file_name().as_bytes()].concat();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push((e.path(), path.clone()));
            }
            out.insert(path, m);
        }
    }
    out
}

/// What a reader cannot see.
#[derive(Clone, Copy)]
pub struct Blind {
    /// The reader gives no xattrs.
    pub xattrs: bool,
    /// The reader's directory link counts are not the tree's (sizes of
    /// directories are never compared: each format has its own).
    pub nlink_dirs: bool,
}

/// Nothing the comparison checks is hidden from the reader: xattrs and
/// directory link counts are compared too.
pub const SEEN: Blind = Blind {
    xattrs: false,
    nlink_dirs: false,
};

/// A scratch directory holding a fresh test tree (names up to `name_max`
/// bytes) and the path of the image to make from it, `image.EXT`:
/// `(dir, tree, image)`.
pub fn fresh(ext: &str, name_max: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tree = dir.path().join("tree");
    let img = dir.path().join(format!("image.{ext}"));
    make_tree(&tree, name_max);
    (dir, tree, img)
}

/// Compares every image entry with lstat of the tree, reporting every
/// difference at once; hard links must share an inode number exactly
/// where the tree's do.
pub fn compare(root: &Path, entries: &[Entry], blind: Blind) {
    spot_check(entries);
    let tree = tree_entries(root);
    let mut bad = Vec::new();
    let got: BTreeMap<&[u8], &Entry> = entries.iter().map(|e| (&e.path[..], e)).collect();
    let show = |p: &[u8]| format!("{:?}", String::from_utf8_lossy(p));
    for path in tree.keys().filter(|p| !got.contains_key(&p[..])) {
        bad.push(format!("{} is missing from the image", show(path)));
    }
    for path in got.keys().filter(|p| !tree.contains_key(**p)) {
        bad.push(format!("{} is in the image, not the tree", show(path)));
    }
    let mut inos: HashMap<u64, u64> = HashMap::new();
    for (path, m) in &tree {
        let Some(e) = got.get(&path[..]) else {
            continue;
        };
        let at = root.join(OsStr::from_bytes(&path[1..]));
        let mut diff = |what: &str, want: String, have: String| {
            if want != have {
                bad.push(format!(
                    "{}: {what} is {have}, the tree has {want}",
                    show(path)
                ));
            }
        };
        diff("mode", format!("{:o}", m.mode()), format!("{:o}", e.mode));
        diff("uid", m.uid().to_string(), e.uid.to_string());
        diff("gid", m.gid().to_string(), e.gid.to_string());
        let kind = m.mode() & S_IFMT;
        if kind != S_IFDIR || !blind.nlink_dirs {
            diff("nlink", m.nlink().to_string(), e.nlink.to_string());
        }
        if kind == S_IFREG || kind == S_IFLNK {
            diff("size", m.size().to_string(), e.size.to_string());
        }
        let rdev =
            matches!(kind, S_IFCHR | S_IFBLK).then(|| (libc_major(m.rdev()), libc_minor(m.rdev())));
        diff("rdev", format!("{rdev:?}"), format!("{:?}", e.rdev));
        let target =
            (kind == S_IFLNK).then(|| fs::read_link(&at).unwrap().as_os_str().as_bytes().to_vec());
        diff("target", format!("{target:?}"), format!("{:?}", e.target));
        if !blind.xattrs {
            let want: BTreeMap<Vec<u8>, Vec<u8>> = xattr::list(&at)
                .unwrap()
                .map(|n| {
                    let v = xattr::get(&at, &n).unwrap().unwrap_or_default();
                    (n.as_bytes().to_vec(), v)
                })
                .collect();
            diff(
                "xattrs",
                format!("{:?}", Some(want)),
                format!("{:?}", e.xattrs),
            );
        }
        // Same tree inode ⇔ same image inode.
        match inos.insert(m.ino(), e.ino) {
            Some(prev) if prev != e.ino => {
                bad.push(format!("{}: a hard link with another inode", show(path)))
            }
            _ => {}
        }
    }
    let distinct_tree = tree
        .values()
        .map(|m| m.ino())
        .collect::<std::collections::HashSet<_>>();
    let distinct_img = entries
        .iter()
        .map(|e| e.ino)
        .collect::<std::collections::HashSet<_>>();
    if distinct_tree.len() != distinct_img.len() {
        bad.push(format!(
            "{} inodes in the tree, {} in the image",
            distinct_tree.len(),
            distinct_img.len()
        ));
    }
    assert!(
        bad.is_empty(),
        "{} differences:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// A few values of [`make_tree`] checked by hand, so that a comparison
/// that compared nothing cannot pass.
pub fn spot_check(entries: &[Entry]) {
    let get = |p: &[u8]| {
        entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{:?} not read", String::from_utf8_lossy(p)))
    };
    let wide = get(b"/etc/wide");
    assert_eq!((wide.uid, wide.gid), (70000, 70001));
    assert_eq!(get(b"/dev/big").rdev, Some((259, 70000)));
    assert_eq!(get(b"/usr/hostname.2").nlink, 3);
    assert_eq!(get(b"/usr/hostname.2").ino, get(b"/etc/hostname").ino);
    assert_eq!(get(b"/usr/bin/su").mode, 0o104755);
    assert_eq!(get(b"/tmp").mode, 0o41777);
    assert_eq!(
        get(b"/usr/longlink").target.as_deref(),
        Some(&[b't'; 1000][..])
    );
    let caps = get(b"/usr/bin/su").xattrs.as_ref().unwrap();
    if !caps.is_empty() {
        assert_eq!(caps[&b"security.capability"[..]], CAPABILITY);
    }
    get(b"/etc/new\nline");
    get(b"/etc/caf\xe9-latin1");
    assert!(
        entries
            .iter()
            .filter(|e| e.path.starts_with(b"/big/"))
            .count()
            == 300
    );
}

/// glibc's `major()`.
pub fn libc_major(dev: u64) -> u32 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32
}

/// glibc's `minor()`.
pub fn libc_minor(dev: u64) -> u32 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32
}

/// A copy of `img` between 1 MiB of junk on either side, as a partition
/// lies in a disk image: the file, the image's offset and length.
pub fn inside_a_disk(dir: &Path, img: &Path) -> (fs::File, u64, u64) {
    let image = fs::read(img).unwrap();
    let mut disk = vec![0xAA; 1 << 20];
    disk.extend_from_slice(&image);
    disk.extend(std::iter::repeat_n(0x55, 1 << 20));
    let path = dir.join("disk");
    fs::write(&path, disk).unwrap();
    (fs::File::open(path).unwrap(), 1 << 20, image.len() as u64)
}

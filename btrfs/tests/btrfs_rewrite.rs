//! The in-place metadata rewriter against real `mkfs.btrfs --rootdir` images.
//!
//! Each test makes an image, rewrites it, and checks that `btrfs check`
//! passes, that the copies of every tree block are byte-identical, that the
//! reader shows exactly what was asked, and (as root only: CI runs as root;
//! elsewhere those parts are skipped with a message) that a read-only loop
//! mount shows it too.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, symlink, FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

mod common;
use common::assert_check_clean;
use common::*;
use rootbox_btrfs::{
    encode_rdev, Image, InodeChange, InodeTimes, ReadError, RewriteError, Rewriter, Timespec,
};

/// A tree with files, directories, symlinks, hard links, a fifo, a
/// socket, odd modes and (as root) odd owners and device nodes.
/// `sub1`, `@` (the default) and `@/var/lib/machines` become subvolumes.
fn build_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| fs::write(root.join(p), data).unwrap();
    let mkdir = |p: &str| fs::create_dir_all(root.join(p)).unwrap();
    for d in [
        "dir/nested",
        "sub1/a",
        "@/etc",
        "@/home/user/.ssh",
        "@/var/lib/machines/m1",
        "@/tmp",
        "@/dev",
        "@/bin",
    ] {
        mkdir(d);
    }
    w("file", b"hello\n");
    w("dir/nested/deep", b"deep\n");
    w("big", &vec![7u8; 300_000]);
    symlink("../file", root.join("dir/sym")).unwrap();
    symlink("x".repeat(3000), root.join("sym_long")).unwrap();
    w("hard_a", b"linked\n");
    fs::hard_link(root.join("hard_a"), root.join("dir/hard_b")).unwrap();
    run(std::process::Command::new("mkfifo").arg(root.join("fifo")));
    drop(std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap());
    w("sub1/a/f", b"sub1\n");
    w("@/etc/shadow", b"root:*:1::::::\n");
    w("@/etc/hostname", b"rootbox\n");
    w("@/home/user/.ssh/authorized_keys", b"ssh-ed25519 AAAA\n");
    w("@/bin/su", b"#!/bin/sh\n");
    w("@/var/lib/machines/m1/os-release", b"ID=test\n");
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"@/bad\xffname")),
        b"",
    )
    .unwrap();
    if is_root() {
        for p in ["@/etc/shadow", "@/etc/hostname", "@/bin/su", "file", "dir"] {
            chown(root.join(p), Some(65534), Some(65534)).unwrap();
        }
        std::os::unix::fs::lchown(root.join("dir/sym"), Some(65534), Some(65534)).unwrap();
        chown(root.join("@/home/user"), Some(0), Some(0)).unwrap();
        run(std::process::Command::new("mknod")
            .arg(root.join("@/dev/null"))
            .args(["c", "1", "3"]));
        run(std::process::Command::new("mknod")
            .arg(root.join("@/dev/loop0"))
            .args(["b", "7", "0"]));
    }
    let old = SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 5);
    File::options()
        .write(true)
        .open(root.join("file"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

const SUBVOLS: &[&str] = &[
    "--subvol",
    "rw:sub1",
    "--subvol",
    "default:@",
    "--subvol",
    "rw:@/var/lib/machines",
];

/// What one path looks like, as compared.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    tree: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: (u32, u32),
    atime: (i64, u32),
    mtime: (i64, u32),
    ctime: (i64, u32),
}

/// The whole filesystem through the reader, keyed by path from the top
/// level, subvolumes spliced in (as a mount of subvolid=5 shows it).
fn reader_listing(img: &Path) -> BTreeMap<Vec<u8>, Rec> {
    let image = Image::open(img).unwrap();
    let mut out = BTreeMap::new();
    let mut pending = vec![(5u64, Vec::new())];
    while let Some((tree, prefix)) = pending.pop() {
        image
            .walk(tree, &mut |e| {
                if e.path.is_empty() && !prefix.is_empty() {
                    return Ok(()); // listed as its parent's Subvolume entry
                }
                let path = join(&prefix, &e.path);
                let owner_tree = if let Some(sub) = e.subvolume {
                    pending.push((sub, path.clone()));
                    sub
                } else {
                    tree
                };
                let t = |t: Timespec| (t.sec, t.nsec);
                out.insert(
                    path,
                    Rec {
                        tree: owner_tree,
                        ino: e.ino,
                        mode: e.mode,
                        uid: e.uid,
                        gid: e.gid,
                        rdev: e.device_numbers(),
                        atime: t(e.atime),
                        mtime: t(e.mtime),
                        ctime: t(e.ctime),
                    },
                );
                Ok(())
            })
            .unwrap();
    }
    out
}

/// The same through a read-only loop mount of subvolid=5 (lstat).
fn mount_listing(img: &Path) -> BTreeMap<Vec<u8>, Rec> {
    let mount = Mount::new(img, "subvolid=5");
    let root = mount.dir.path();
    let mut out = BTreeMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel))
        };
        let m = fs::symlink_metadata(&path).unwrap();
        if m.is_dir() {
            for child in fs::read_dir(&path).unwrap() {
                stack.push(join(&rel, child.unwrap().file_name().as_bytes()));
            }
        }
        let rdev = m.rdev();
        let major = (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32;
        let minor = (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32;
        out.insert(
            rel,
            Rec {
                tree: 0,
                ino: m.ino(),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                rdev: (major, minor),
                atime: (m.atime(), m.atime_nsec() as u32),
                mtime: (m.mtime(), m.mtime_nsec() as u32),
                ctime: (m.ctime(), m.ctime_nsec() as u32),
            },
        );
    }
    out
}

/// Every path of the mount shows what the reader shows (tree ids aside).
fn assert_mount_matches(img: &Path, listing: &BTreeMap<Vec<u8>, Rec>) {
    let kernel = mount_listing(img);
    let strip = |m: &BTreeMap<Vec<u8>, Rec>| -> BTreeMap<Vec<u8>, Rec> {
        m.iter()
            .map(|(p, r)| {
                (
                    p.clone(),
                    Rec {
                        tree: 0,
                        ..r.clone()
                    },
                )
            })
            .collect()
    };
    let (a, b) = (strip(listing), kernel);
    if a != b {
        let diffs: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|p| a.get(*p) != b.get(*p))
            .take(5)
            .map(|p| {
                format!(
                    "{}:\n reader {:?}\n kernel {:?}",
                    show(p),
                    a.get(p),
                    b.get(p)
                )
            })
            .collect();
        panic!("mount differs from reader:\n{}", diffs.join("\n"));
    }
    eprintln!("{} paths: the mount shows what the reader shows", a.len());
}

/// Every block of every tree has byte-identical copies; returns how many
/// blocks had more than one copy.
fn assert_copies_identical(img: &Path) -> usize {
    let image = Image::open(img).unwrap();
    let f = File::open(img).unwrap();
    let nodesize = image.info().nodesize as usize;
    let mut trees: Vec<u64> = vec![1, 2, 3, 4, 7, 9, 10, -9i64 as u64];
    trees.extend(image.subvolumes().unwrap().iter().map(|s| s.id));
    let mut multi = 0;
    for tree in trees {
        let Ok(blocks) = image.tree_blocks(tree) else {
            continue; // a tree this image does not have
        };
        for b in blocks {
            let copies = image.physical_copies(b.logical).unwrap();
            let mut first = vec![0u8; nodesize];
            f.read_exact_at(&mut first, copies[0]).unwrap();
            for &p in &copies[1..] {
                let mut other = vec![0u8; nodesize];
                f.read_exact_at(&mut other, p).unwrap();
                assert!(
                    first == other,
                    "block {} of tree {tree}: copies differ",
                    b.logical
                );
            }
            multi += usize::from(copies.len() > 1);
        }
    }
    multi
}

fn file_hash(img: &Path) -> u32 {
    crc32c::crc32c(&fs::read(img).unwrap())
}

/// Owners and modes: 65534 becomes root, `@/home/user` becomes 1000:100,
/// a few modes change; on DUP, SINGLE and zstd-compressed images.
#[test]
fn owners_and_modes_are_rewritten() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    build_tree(&src);
    for (name, args) in [
        ("dup", &[][..]),
        ("single", &["-m", "single"][..]),
        ("zstd", &["--compress", "zstd"][..]),
    ] {
        let img = dir.path().join(format!("{name}.img"));
        mkfs(&src, &img, &[SUBVOLS, args].concat());
        let before = reader_listing(&img);

        let mut rw = Rewriter::open(&img).unwrap();
        let trees = rw.fs_tree_ids().unwrap();
        let image = Image::open(&img).unwrap();
        let subvols: HashMap<u64, Vec<u8>> = image
            .subvolumes()
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.path))
            .collect();
        assert_eq!(
            trees,
            subvols
                .keys()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(trees.len(), 4, "{trees:?}");
        // What was asked, by (tree, ino).
        let mut asked: HashMap<(u64, u64), InodeChange> = HashMap::new();
        let mut total_changed = 0;
        for &tree in &trees {
            let prefix = subvols[&tree].clone();
            let stats = rw
                .update_inodes(tree, &mut |v| {
                    let path = join(&prefix, v.path.expect("every inode has a name"));
                    let mut c = InodeChange::default();
                    if v.uid == 65534 {
                        c.uid = Some(0);
                    }
                    if v.gid == 65534 {
                        c.gid = Some(0);
                    }
                    if path.starts_with(b"@/home/user") {
                        (c.uid, c.gid) = (Some(1000), Some(100));
                    }
                    match &path[..] {
                        b"@/etc/shadow" => c.mode = Some(0o600),
                        b"@/bin/su" => c.mode = Some(0o4755),
                        b"@/tmp" => c.mode = Some(0o1777),
                        b"@/home/user/.ssh" => c.mode = Some(0o700),
                        b"sub1" => c.mode = Some(0o2750),
                        _ => {}
                    }
                    if c == InodeChange::default() {
                        return None;
                    }
                    asked.insert((tree, v.ino), c);
                    Some(c)
                })
                .unwrap();
            eprintln!("{name}: tree {tree}: {stats:?}");
            total_changed += stats.inodes_changed;
        }
        assert!(total_changed >= 8, "{total_changed}");
        rw.commit().unwrap();

        // The reader shows the change and nothing else.
        let mut expected = before.clone();
        for r in expected.values_mut() {
            if let Some(c) = asked.get(&(r.tree, r.ino)) {
                r.uid = c.uid.unwrap_or(r.uid);
                r.gid = c.gid.unwrap_or(r.gid);
                if let Some(m) = c.mode {
                    r.mode = (r.mode & 0o170000) | m;
                }
            }
        }
        let after = reader_listing(&img);
        assert_eq!(after, expected, "{name}");
        assert_ne!(after, before);
        let rec = |p: &str| after[p.as_bytes()].clone();
        assert_eq!(
            (rec("@/home/user/.ssh").uid, rec("@/home/user/.ssh").mode),
            (1000, 0o40700)
        );
        assert_eq!(rec("@/home/user/.ssh/authorized_keys").gid, 100);
        assert_eq!(
            (rec("@/etc/shadow").uid, rec("@/etc/shadow").mode),
            (0, 0o100600)
        );
        assert_eq!(rec("@/bin/su").mode, 0o104755);
        assert_eq!(rec("@/tmp").mode, 0o41777);
        assert_eq!(rec("sub1").mode, 0o42750);

        assert_check_clean(&img);
        let multi = assert_copies_identical(&img);
        if name == "single" {
            assert!(
                multi < 10,
                "SINGLE metadata has one copy ({multi} blocks with more)"
            );
        } else {
            assert!(
                multi > 5,
                "DUP metadata has two copies ({multi} blocks with more)"
            );
        }
        if is_root() {
            assert_mount_matches(&img, &after);
        } else {
            skip_note("mount comparison");
        }
        // A second rewrite asking for what is already there changes nothing.
        let hash = file_hash(&img);
        let mut rw = Rewriter::open(&img).unwrap();
        let stats = rw
            .update_inodes(trees[0], &mut |v| {
                Some(InodeChange {
                    uid: Some(v.uid),
                    ..Default::default()
                })
            })
            .unwrap();
        assert_eq!((stats.inodes_changed, stats.blocks_changed), (0, 0));
        assert_eq!(rw.pending_blocks(), 0);
        rw.commit().unwrap();
        assert_eq!(file_hash(&img), hash);
    }
}

/// SOURCE_DATE_EPOCH: no time after the epoch remains, older times stay.
#[test]
fn times_are_clamped() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    build_tree(&src);
    let img = dir.path().join("img");
    mkfs(&src, &img, SUBVOLS);
    let epoch = 1_600_000_000i64;
    let limit = (epoch, 0u32);

    let mut rw = Rewriter::open(&img).unwrap();
    // Changes before the clamp are kept (and clamped where they are late).
    let stats = rw
        .update_inodes(5, &mut |v| {
            (v.path == Some(b"dir/nested/deep")).then(|| InodeChange {
                times: Some(InodeTimes {
                    mtime: Some(Timespec {
                        sec: 1_234_567_890,
                        nsec: 42,
                    }),
                    otime: Some(Timespec {
                        sec: 1_900_000_000,
                        nsec: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(stats.inodes_changed, 1);
    let stats = rw.clamp_times(epoch).unwrap();
    eprintln!("clamp: {stats:?}");
    // mkfs 6.14 sets the times of the top level's root item only.
    assert!(
        stats.inodes_changed > 20 && stats.root_items_changed >= 1,
        "{stats:?}"
    );
    rw.commit().unwrap();

    let listing = reader_listing(&img);
    for (p, r) in &listing {
        for t in [r.atime, r.mtime, r.ctime] {
            assert!(t <= limit, "{}: {r:?}", show(p));
        }
    }
    assert_eq!(
        listing[&b"file"[..]].mtime,
        (1_000_000_000, 0),
        "older times stay (mkfs drops ns)"
    );
    assert_eq!(listing[&b"dir/nested/deep"[..]].mtime, (1_234_567_890, 42));
    let image = Image::open(&img).unwrap();
    for sv in image.subvolumes().unwrap() {
        assert!(sv.otime.sec <= epoch, "{sv:?}");
    }
    // Every time in every tree, as btrfs-progs prints them.
    let mut late = Vec::new();
    for tree in ["1", "5", "256", "257", "258", "18446744073709551607"] {
        let dump = run(std::process::Command::new("btrfs")
            .args(["inspect-internal", "dump-tree", "-t", tree])
            .arg(&img));
        for line in dump.lines() {
            let l = line.trim();
            if let Some(rest) = ["atime ", "ctime ", "mtime ", "otime ", "stime ", "rtime "]
                .iter()
                .find_map(|k| l.strip_prefix(k))
            {
                let secs: i64 = rest.split('.').next().unwrap().parse().unwrap();
                if secs > epoch {
                    late.push(format!("tree {tree}: {l}"));
                }
            }
        }
    }
    assert!(late.is_empty(), "{late:?}");
    assert_check_clean(&img);
    assert_copies_identical(&img);
    if is_root() {
        assert_mount_matches(&img, &listing);
        let mount = Mount::new(&img, "subvolid=5");
        let btime = fs::metadata(mount.dir.path().join("dir/nested/deep"))
            .unwrap()
            .created()
            .unwrap();
        assert_eq!(
            btime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(epoch as u64)
        );
    } else {
        skip_note("mount comparison");
    }
}

/// A corrupted leaf (in both copies, or in one) is refused with a
/// checksum error and the file is left as it was.
#[test]
fn corrupted_blocks_are_refused() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("a/b")).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("a/b/file-{i:04}")), b"x").unwrap();
    }
    let all_to_1000 = &mut |_: &rootbox_btrfs::InodeView<'_>| {
        Some(InodeChange {
            uid: Some(1000),
            ..Default::default()
        })
    };
    for both in [true, false] {
        let img = dir.path().join(format!("img-{both}"));
        mkfs(&src, &img, &[]);
        let image = Image::open(&img).unwrap();
        let leaves: Vec<u64> = image
            .tree_blocks(5)
            .unwrap()
            .into_iter()
            .filter(|b| b.level == 0)
            .map(|b| b.logical)
            .collect();
        assert!(leaves.len() > 2);
        let victim = leaves[leaves.len() / 2];
        let copies = image.physical_copies(victim).unwrap();
        assert_eq!(copies.len(), 2);
        drop(image);
        let f = File::options().read(true).write(true).open(&img).unwrap();
        for &p in if both { &copies[..] } else { &copies[1..] } {
            let mut b = [0u8];
            f.read_exact_at(&mut b, p + 3000).unwrap();
            f.write_all_at(&[b[0] ^ 0x40], p + 3000).unwrap();
        }
        f.sync_all().unwrap();
        let hash = file_hash(&img);

        let mut rw = Rewriter::open(&img).unwrap();
        let err = rw.update_inodes(5, all_to_1000).unwrap_err();
        assert!(err.is_checksum_error(), "both={both}: {err}");
        match &err {
            RewriteError::Read(ReadError::BadBlockChecksum { logical, physical }) => {
                assert_eq!(*logical, victim);
                assert_eq!(*physical, if both { copies[0] } else { copies[1] });
            }
            other => panic!("{other:?}"),
        }
        // After a failed call nothing can be committed.
        assert!(matches!(rw.commit(), Err(RewriteError::Unsupported(_))));
        assert_eq!(file_hash(&img), hash, "both={both}: the file changed");
    }
}

/// Device numbers (mkfs writes 0), and changes that are refused.
#[test]
fn device_numbers_and_invalid_changes() {
    require_mkfs!();
    if !is_root() {
        skip_note("device nodes need root to create (mknod)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    build_tree(&src);
    let img = dir.path().join("img");
    mkfs(&src, &img, SUBVOLS);
    let at = reader_listing(&img);
    assert_eq!(
        at[&b"@/dev/null"[..]].rdev,
        (0, 0),
        "mkfs 6.14 writes rdev 0"
    );

    // Refused: type bits in a mode, rdev on a regular file.
    let hash = file_hash(&img);
    let mut rw = Rewriter::open(&img).unwrap();
    let tree_at = at[&b"@"[..]].tree;
    let err = rw
        .update_inodes(tree_at, &mut |v| {
            (v.path == Some(b"etc/hostname")).then(|| InodeChange {
                mode: Some(0o40755),
                ..Default::default()
            })
        })
        .unwrap_err();
    assert!(matches!(err, RewriteError::InvalidChange { .. }), "{err}");
    let mut rw = Rewriter::open(&img).unwrap();
    let err = rw
        .update_inodes(tree_at, &mut |v| {
            (v.path == Some(b"etc/hostname")).then(|| InodeChange {
                rdev: encode_rdev(1, 3),
                ..Default::default()
            })
        })
        .unwrap_err();
    assert!(matches!(err, RewriteError::InvalidChange { .. }), "{err}");
    assert!(rw.commit().is_err());
    assert_eq!(file_hash(&img), hash);
    assert_eq!(encode_rdev(4096, 0), None);

    let mut rw = Rewriter::open(&img).unwrap();
    let stats = rw
        .update_inodes(tree_at, &mut |v| {
            let rdev = match v.path? {
                b"dev/null" => encode_rdev(1, 3),
                b"dev/loop0" => encode_rdev(7, 0),
                _ => return None,
            };
            Some(InodeChange {
                rdev,
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(stats.inodes_changed, 2);
    rw.commit().unwrap();
    let after = reader_listing(&img);
    assert_eq!(after[&b"@/dev/null"[..]].rdev, (1, 3));
    assert_eq!(after[&b"@/dev/loop0"[..]].rdev, (7, 0));
    assert_check_clean(&img);
    assert_copies_identical(&img);
    assert_mount_matches(&img, &after);
    let mount = Mount::new(&img, "subvol=@");
    let m = fs::symlink_metadata(mount.dir.path().join("dev/null")).unwrap();
    assert_eq!((m.rdev() >> 8 & 0xfff, m.rdev() & 0xff), (1, 3));
    let data = fs::read(mount.dir.path().join("dev/null")).unwrap();
    assert!(data.is_empty(), "the node is /dev/null");
}

/// A tree the kernel snapshotted shares leaves: editing them is refused.
#[test]
fn leaves_shared_with_a_snapshot_are_refused() {
    require_mkfs!();
    if !is_root() {
        skip_note("snapshots need a read-write mount");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("s/d")).unwrap();
    fs::write(src.join("s/d/f"), b"f").unwrap();
    let img = dir.path().join("img");
    mkfs(&src, &img, &["--subvol", "rw:s"]);
    {
        let mnt = tempfile::tempdir().unwrap();
        run(std::process::Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&img)
            .arg(mnt.path()));
        let snap = std::process::Command::new("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(mnt.path().join("s"))
            .arg(mnt.path().join("snap"))
            .output()
            .unwrap();
        run(std::process::Command::new("umount").arg(mnt.path()));
        assert!(snap.status.success());
    }
    let hash = file_hash(&img);
    let mut rw = Rewriter::open(&img).unwrap();
    let trees = rw.fs_tree_ids().unwrap();
    assert_eq!(trees.len(), 3, "{trees:?}");
    for tree in [256, trees[2]] {
        let err = rw
            .update_inodes(tree, &mut |_| {
                Some(InodeChange {
                    uid: Some(4242),
                    ..Default::default()
                })
            })
            .unwrap_err();
        assert!(
            matches!(err, RewriteError::Unsupported(_)),
            "tree {tree}: {err}"
        );
        eprintln!("tree {tree}: {err}");
    }
    assert!(rw.commit().is_err());
    assert_eq!(file_hash(&img), hash);
}

fn many_files(files: usize, per_dir: usize) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    for i in 0..files {
        let sub = src.join(format!("d{:03}", i / per_dir));
        if i % per_dir == 0 {
            fs::create_dir_all(&sub).unwrap();
        }
        fs::write(
            sub.join(format!("file-with-a-longish-name-{i:06}")),
            b"0123456789",
        )
        .unwrap();
    }
    let img = dir.path().join("img");
    mkfs(&src, &img, &[]);
    let image = Image::open(&img).unwrap();
    let root = image.tree_root(5).unwrap();
    let leaves = image
        .tree_blocks(5)
        .unwrap()
        .iter()
        .filter(|b| b.level == 0)
        .count();
    assert!(root.level >= 1, "the fs tree has internal nodes");
    drop(image);

    let start = Instant::now();
    let mut rw = Rewriter::open(&img).unwrap();
    let stats = rw
        .update_inodes(5, &mut |v| {
            let path = v.path.unwrap();
            Some(if path.starts_with(b"d000/") {
                InodeChange {
                    uid: Some(0),
                    gid: Some(0),
                    mode: Some(0o640),
                    ..Default::default()
                }
            } else {
                InodeChange {
                    uid: Some(1000),
                    gid: Some(100),
                    ..Default::default()
                }
            })
        })
        .unwrap();
    let scanned = start.elapsed();
    rw.commit().unwrap();
    let total = start.elapsed();
    eprintln!(
        "MEASURE {files} files, {leaves} leaves, fs tree level {}: update_inodes {scanned:?}, \
         update_inodes+commit {total:?}; {stats:?}",
        root.level
    );
    assert_eq!(stats.inodes as usize, files + files.div_ceil(per_dir) + 1);
    assert_eq!(stats.inodes_changed, stats.inodes);
    let start = Instant::now();
    let mut rw = Rewriter::open(&img).unwrap();
    let clamp = rw.clamp_times(1_500_000_000).unwrap();
    rw.commit().unwrap();
    eprintln!(
        "MEASURE {files} files: clamp_times+commit {:?}; {clamp:?}",
        start.elapsed()
    );

    let listing = reader_listing(&img);
    for (p, r) in &listing {
        let want = if p.starts_with(b"d000/") {
            (0, 0, 0o100640)
        } else if p.is_empty() || p.len() == 4 {
            (1000, 100, r.mode) // the root and the directories
        } else {
            (1000, 100, 0o100644)
        };
        assert_eq!((r.uid, r.gid, r.mode), want, "{}", show(p));
        assert!(r.mtime.0 <= 1_500_000_000);
    }
    let start = Instant::now();
    assert_check_clean(&img);
    eprintln!("btrfs check: {:?}", start.elapsed());
    assert_copies_identical(&img);
    if is_root() {
        assert_mount_matches(&img, &listing);
    } else {
        skip_note("mount comparison");
    }
}

/// 20,000 files: hundreds of leaves under internal nodes.
#[test]
fn twenty_thousand_files() {
    require_mkfs!();
    many_files(20_000, 1000);
}

/// 100,000 files: the timing the runner will see on a large closure.
#[test]
fn hundred_thousand_files() {
    require_mkfs!();
    many_files(100_000, 500);
}

// ---------------------------------------------------------------------------
// Helpers.

fn join(prefix: &[u8], path: &[u8]) -> Vec<u8> {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_vec(),
        (false, true) => prefix.to_vec(),
        (false, false) => [prefix, b"/", path].concat(),
    }
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// `mkfs.btrfs --rootdir root` into a 512 MiB sparse file.
fn mkfs(root: &Path, img: &Path, args: &[&str]) {
    File::create(img).unwrap().set_len(512 << 20).unwrap();
    run(std::process::Command::new("mkfs.btrfs")
        .args(["-q", "-f", "--rootdir"])
        .arg(root)
        .args(args)
        .arg(img));
}

//! Placeholders of a build without a user namespace, turned into what they
//! stand for by the rewriter, against real `mkfs.btrfs --rootdir` images:
//! a FIFO (or an empty file) staged for a device node becomes that node
//! ([`InodeChange::file_type`]), and the xattr `user.rootbox.fscaps` staged
//! for `security.capability` is renamed to it
//! ([`InodeChange::rename_xattr`]).
//!
//! Each rewritten image passes `btrfs check` (which checks directory
//! entries' types against inodes and the key order of every leaf and
//! node) and reads back, through the crate's reader, the same as its
//! twin: the same tree made by root with real device nodes and real
//! `security.capability` values. Making the twin needs root (mknod,
//! CAP_SETFCAP); without root these tests are skipped with a message (a
//! failure under CI, which runs as root).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

mod common;
use common::assert_check_clean;
use common::*;
use rootbox_btrfs::format::{name_hash, Key, BTRFS_XATTR_ITEM_KEY};
use rootbox_btrfs::{encode_rdev, Image, InodeChange, RewriteError, Rewriter};

const FSCAPS: &[u8] = b"user.rootbox.fscaps";
const SECCAP: &[u8] = b"security.capability";
const S_IFCHR: u32 = 0o020000;
/// mkfs's random UUIDs, fixed (as rootbox's reproducible mode does).
const UUIDS: [&str; 4] = [
    "-U",
    "11111111-2222-4333-8444-555555555555",
    "--device-uuid",
    "66666666-7777-4888-8999-aaaaaaaaaaaa",
];
const EPOCH: i64 = 1_700_000_000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;

/// A `security.capability` value (VFS_CAP_REVISION_2, effective):
/// cap_net_raw+ep.
fn cap_value() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted: CAP_NET_RAW
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// A `user.` xattr name whose hash lies between those of the two names
/// (`between`) or above both (`!between`), so that the rename moves the
/// item past it, or not.
fn neighbour_name(between: bool) -> Vec<u8> {
    let (a, b) = (name_hash(FSCAPS), name_hash(SECCAP));
    let (lo, hi) = (a.min(b), a.max(b));
    (0..100_000)
        .map(|i| format!("user.n{i}").into_bytes())
        .find(|n| {
            let h = name_hash(n);
            if between {
                lo < h && h < hi
            } else {
                h > hi
            }
        })
        .expect("a name with such a hash")
}

/// Two `user.` names of the same length with the same name hash (a
/// birthday search: CRC-32C has 32 bits).
fn colliding_names() -> (Vec<u8>, Vec<u8>) {
    let mut seen: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0u64.. {
        let n = format!("user.c{i:07}").into_bytes();
        if let Some(other) = seen.insert(name_hash(&n), n.clone()) {
            return (other, n);
        }
    }
    unreachable!()
}

fn set_xattr(p: &Path, name: &[u8], value: &[u8]) {
    xattr::set(
        p,
        std::ffi::OsStr::new(std::str::from_utf8(name).unwrap()),
        value,
    )
    .unwrap_or_else(|e| {
        panic!(
            "setting {} on {}: {e}",
            String::from_utf8_lossy(name),
            p.display()
        )
    });
}

/// The tree: device nodes (or, `placeholders`, FIFOs and an empty file
/// standing in for them) and capabilities (or the placeholder xattr).
fn build_tree(root: &Path, placeholders: bool) {
    for d in ["dev", "bin", "etc"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let node = |p: &str, kind: &str, major: u32, minor: u32, perm: u32| {
        let path = root.join(p);
        if placeholders {
            match kind {
                "f" => drop(File::create(&path).unwrap()),
                _ => {
                    run(Command::new("mkfifo").arg(&path));
                }
            }
        } else {
            let kind = if kind == "b" { "b" } else { "c" };
            run(Command::new("mknod").arg(&path).args([
                kind,
                &major.to_string(),
                &minor.to_string(),
            ]));
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(perm)).unwrap();
    };
    node("dev/null", "c", 1, 3, 0o620);
    node("dev/loop0", "b", 7, 0, 0o660);
    // An empty regular file staged for a device (the other placeholder).
    node("etc/console", "f", 5, 1, 0o600);
    fs::hard_link(root.join("dev/null"), root.join("etc/null-link")).unwrap();
    run(Command::new("mkfifo").arg(root.join("dev/initctl")));
    let cap = if placeholders { FSCAPS } else { SECCAP };
    for (p, other) in [
        ("bin/ping", None),
        ("bin/moves", Some(neighbour_name(true))),
        ("bin/stays", Some(neighbour_name(false))),
    ] {
        let path = root.join(p);
        fs::write(&path, format!("#!/bin/sh\n# {p}\n")).unwrap();
        set_xattr(&path, cap, &cap_value());
        if let Some(other) = other {
            set_xattr(&path, &other, b"kept");
        }
    }
    fs::write(root.join("bin/plain"), b"plain\n").unwrap();
    set_xattr(&root.join("bin/plain"), b"user.note", b"not a capability");
}

/// The change that turns the placeholder at `path` into what it stands for.
fn placeholder_change(path: &[u8]) -> Option<InodeChange> {
    let device = |file_type, major, minor| InodeChange {
        file_type: Some(file_type),
        rdev: encode_rdev(major, minor),
        ..InodeChange::default()
    };
    match path {
        b"dev/null" | b"etc/null-link" => Some(device(S_IFCHR, 1, 3)),
        b"dev/loop0" => Some(device(S_IFBLK, 7, 0)),
        b"etc/console" => Some(device(S_IFCHR, 5, 1)),
        b"bin/ping" | b"bin/moves" | b"bin/stays" => Some(InodeChange {
            rename_xattr: Some((FSCAPS, SECCAP)),
            ..InodeChange::default()
        }),
        _ => None,
    }
}

/// The device numbers a namespace build writes (mkfs.btrfs records 0).
fn twin_change(path: &[u8]) -> Option<InodeChange> {
    let rdev = match path {
        b"dev/null" | b"etc/null-link" => encode_rdev(1, 3),
        b"dev/loop0" => encode_rdev(7, 0),
        b"etc/console" => encode_rdev(5, 1),
        _ => return None,
    };
    Some(InodeChange {
        rdev,
        ..InodeChange::default()
    })
}

/// What one path is, as compared between an image and its twin.
#[derive(Debug, PartialEq, Eq)]
struct Rec {
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    nlink: u32,
    size: u64,
    flags: u64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Every path of the top-level subvolume through the crate's reader.
fn listing(img: &Path) -> BTreeMap<Vec<u8>, Rec> {
    let image = Image::open(img).unwrap();
    let mut out = BTreeMap::new();
    image
        .walk(5, &mut |e| {
            out.insert(
                e.path.clone(),
                Rec {
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    rdev: e.rdev,
                    nlink: e.nlink,
                    size: e.size,
                    flags: e.flags,
                    xattrs: e.xattrs.clone(),
                },
            );
            Ok(())
        })
        .unwrap();
    out
}

/// A FIFO, an empty file and capabilities made without privileges become
/// device nodes and `security.capability`: `btrfs check` passes and the
/// image lists the same as its twin made by root.
#[test]
fn placeholders_become_what_they_stand_for() {
    require_mkfs!();
    if !is_root() {
        skip_note("making the twin with device nodes and capabilities");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (staged, real) = (dir.path().join("staged"), dir.path().join("real"));
    build_tree(&staged, true);
    build_tree(&real, false);
    for root in [&staged, &real] {
        run(Command::new("find").arg(root).args([
            "-exec",
            "touch",
            "-h",
            "-d",
            "@1000000000",
            "{}",
            "+",
        ]));
    }
    let (img, twin) = (dir.path().join("staged.img"), dir.path().join("real.img"));
    mkfs(&staged, &img, &UUIDS);
    mkfs(&real, &twin, &UUIDS);
    assert_check_clean(&img);

    // The placeholders turned, then the reproducible pass, in one Rewriter.
    let mut rw = Rewriter::open(&img).unwrap();
    let stats = rw
        .update_inodes(5, &mut |v| placeholder_change(v.path?))
        .unwrap();
    // Two names for dev/null, one each for loop0 and console: DIR_ITEM
    // and DIR_INDEX each.
    assert_eq!(stats.dir_entries_changed, 8, "{stats:?}");
    assert_eq!(stats.xattrs_renamed, 3, "{stats:?}");
    rw.make_reproducible(EPOCH, b"seed").unwrap();
    rw.commit().unwrap();
    assert_check_clean(&img);
    assert_copies_identical(&img);

    let mut rw = Rewriter::open(&twin).unwrap();
    rw.update_inodes(5, &mut |v| twin_change(v.path?)).unwrap();
    rw.make_reproducible(EPOCH, b"seed").unwrap();
    rw.commit().unwrap();
    assert_check_clean(&twin);
    // After the reproducible pass, with the same -U and --device-uuid, the
    // two images are byte-identical (seen with mkfs.btrfs 6.14).
    let differing = fs::read(&img)
        .unwrap()
        .iter()
        .zip(fs::read(&twin).unwrap())
        .filter(|(a, b)| **a != *b)
        .count();
    assert_eq!(
        differing,
        0,
        "the rewritten image differs from its twin in {differing} bytes ({})",
        mkfs_version()
    );

    let (got, want) = (listing(&img), listing(&twin));
    let null = &got[&b"dev/null"[..]];
    assert_eq!(null.mode, S_IFCHR | 0o620);
    assert_eq!(null.rdev, encode_rdev(1, 3).unwrap());
    assert_eq!(null.nlink, 2);
    let image = Image::open(&img).unwrap();
    let console = image.lookup(5, b"etc/console").unwrap();
    assert_eq!(console.device_numbers(), (5, 1));
    let lp = image.lookup(5, b"dev/loop0").unwrap();
    assert_eq!((lp.mode, lp.device_numbers()), (S_IFBLK | 0o660, (7, 0)));
    for p in ["bin/ping", "bin/moves", "bin/stays"] {
        let e = image.lookup(5, p.as_bytes()).unwrap();
        assert_eq!(e.xattr(SECCAP), Some(&cap_value()[..]), "{p}");
        assert_eq!(e.xattr(FSCAPS), None, "{p}");
    }
    let moves = image.lookup(5, b"bin/moves").unwrap();
    assert_eq!(moves.xattr(&neighbour_name(true)), Some(&b"kept"[..]));
    assert_eq!(got, want, "the rewritten image lists unlike its twin");
    eprintln!("{} paths list the same as the twin made by root", got.len());
}

/// Many files with the placeholder xattr, on small nodes: some leaves
/// start with the renamed item, whose new key must reach the parent
/// nodes (checked by reading the tree, by the reader's own first-key
/// check, and by `btrfs check`).
#[test]
fn renamed_first_items_of_leaves() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..3000 {
        let p = src.join(format!("d/f{i:05}"));
        fs::write(&p, format!("{i}\n")).unwrap();
        set_xattr(&p, FSCAPS, &cap_value());
    }
    let img = dir.path().join("many.img");
    mkfs(&src, &img, &["--nodesize", "4096"]);

    let image = Image::open(&img).unwrap();
    let old_key = |ino| Key::new(ino, BTRFS_XATTR_ITEM_KEY, name_hash(FSCAPS));
    // Blocks (leaves, and nodes whose first child is such a leaf) whose
    // first key is a placeholder xattr.
    let first_items: Vec<(u64, Key)> = image
        .tree_blocks(5)
        .unwrap()
        .into_iter()
        .filter_map(|b| b.first_key.map(|k| (b.logical, k)))
        .filter(|(_, k)| *k == old_key(k.objectid))
        .collect();
    let levels = image.tree_root(5).unwrap().level;
    let leaves = image
        .tree_blocks(5)
        .unwrap()
        .iter()
        .filter(|b| b.level == 0 && first_items.iter().any(|f| f.0 == b.logical))
        .count();
    drop(image);
    assert!(
        leaves > 0,
        "no leaf starts with a placeholder xattr: the test does not test what it should"
    );
    eprintln!(
        "{} blocks start with the placeholder xattr, {} of them nodes (tree of {} levels)",
        first_items.len(),
        first_items.len() - leaves,
        levels + 1
    );

    let mut rw = Rewriter::open(&img).unwrap();
    let stats = rw
        .update_inodes(5, &mut |v| {
            v.path?.starts_with(b"d/f").then_some(InodeChange {
                rename_xattr: Some((FSCAPS, SECCAP)),
                ..InodeChange::default()
            })
        })
        .unwrap();
    assert_eq!(stats.xattrs_renamed, 3000);
    rw.commit().unwrap();
    assert_check_clean(&img);
    assert_copies_identical(&img);

    let image = Image::open(&img).unwrap();
    let firsts: HashMap<u64, Option<Key>> = image
        .tree_blocks(5)
        .unwrap()
        .into_iter()
        .map(|b| (b.logical, b.first_key))
        .collect();
    for (leaf, key) in &first_items {
        let want = Key::new(key.objectid, BTRFS_XATTR_ITEM_KEY, name_hash(SECCAP));
        assert_eq!(firsts[leaf], Some(want), "block {leaf}");
    }
    let mut n = 0;
    image
        .walk(5, &mut |e| {
            if e.path.starts_with(b"d/f") {
                assert_eq!(e.xattrs, vec![(SECCAP.to_vec(), cap_value())]);
                n += 1;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(n, 3000);
}

/// What the rewriter refuses, each with its typed error, and then writes
/// nothing.
#[test]
fn placeholder_changes_it_refuses() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("data"), b"data\n").unwrap();
    run(Command::new("mkfifo").arg(src.join("fifo")));
    fs::write(src.join("capped"), b"x\n").unwrap();
    set_xattr(&src.join("capped"), FSCAPS, &cap_value());
    // Both the placeholder and the real name: the rename would collide.
    fs::write(src.join("both"), b"x\n").unwrap();
    set_xattr(&src.join("both"), FSCAPS, &cap_value());
    set_xattr(&src.join("both"), b"user.already.there1", b"x");
    let (a, b) = colliding_names();
    fs::write(src.join("packed"), b"x\n").unwrap();
    set_xattr(&src.join("packed"), &a, b"1");
    set_xattr(&src.join("packed"), &b, b"2");
    let img = dir.path().join("refuse.img");
    mkfs(&src, &img, &[]);
    let before = fs::read(&img).unwrap();

    let refused = |path: &'static [u8], change: InodeChange| -> RewriteError {
        let mut rw = Rewriter::open(&img).unwrap();
        let err = rw
            .update_inodes(5, &mut |v| (v.path == Some(path)).then_some(change))
            .expect_err("refused");
        assert!(rw.commit().is_err(), "commit after a refusal");
        assert!(fs::read(&img).unwrap() == before, "nothing written");
        err
    };
    let rename = |from, to| InodeChange {
        rename_xattr: Some((from, to)),
        ..InodeChange::default()
    };
    let device = |file_type| InodeChange {
        file_type: Some(file_type),
        rdev: encode_rdev(1, 3),
        ..InodeChange::default()
    };

    let e = refused(b"capped", rename(FSCAPS, b"security.capabilit"));
    assert!(matches!(e, RewriteError::XattrNameLength { .. }), "{e}");
    assert!(e.to_string().contains("/capped"), "{e}");
    let e = refused(b"data", rename(FSCAPS, SECCAP));
    assert!(matches!(e, RewriteError::XattrMissing { .. }), "{e}");
    let e = refused(b"both", rename(FSCAPS, b"user.already.there1"));
    assert!(matches!(e, RewriteError::XattrCollision { .. }), "{e}");
    let (a, b): (&'static [u8], &'static [u8]) = (a.leak(), b.leak());
    let to: &'static [u8] = &b"user.zzzzzzzzzzzzzzz"[..a.len()];
    for from in [a, b] {
        let e = refused(b"packed", rename(from, to));
        assert!(matches!(e, RewriteError::XattrPacked { .. }), "{e}");
    }
    let e = refused(b"dir", device(S_IFCHR));
    assert!(
        matches!(e, RewriteError::NotAPlaceholder { mode, .. } if mode & 0o170000 == S_IFDIR),
        "{e}"
    );
    let e = refused(b"data", device(S_IFBLK));
    assert!(
        matches!(e, RewriteError::NotAPlaceholder { has_data: true, .. }),
        "{e}"
    );
    let e = refused(b"fifo", device(S_IFDIR));
    assert!(matches!(e, RewriteError::InvalidChange { .. }), "{e}");
    // rdev without a device type on a FIFO stays refused.
    let e = refused(
        b"fifo",
        InodeChange {
            rdev: encode_rdev(1, 3),
            ..InodeChange::default()
        },
    );
    assert!(matches!(e, RewriteError::InvalidChange { .. }), "{e}");
}

// ---------------------------------------------------------------------------
// Helpers.

fn mkfs_version() -> String {
    run(Command::new("mkfs.btrfs").arg("--version"))
        .trim()
        .to_string()
}

/// `mkfs.btrfs --rootdir root` into a 256 MiB sparse file.
fn mkfs(root: &Path, img: &Path, args: &[&str]) {
    File::create(img).unwrap().set_len(256 << 20).unwrap();
    run(Command::new("mkfs.btrfs")
        .args(["-q", "-f", "--rootdir"])
        .arg(root)
        .args(args)
        .arg(img));
}

/// Every block of the subvolume and root trees has byte-identical copies.
fn assert_copies_identical(img: &Path) {
    let image = Image::open(img).unwrap();
    let f = File::open(img).unwrap();
    let nodesize = image.info().nodesize as usize;
    let mut copies_seen = 0;
    for tree in [1, 5] {
        for b in image.tree_blocks(tree).unwrap() {
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
                copies_seen += 1;
            }
        }
    }
    assert!(copies_seen > 0, "expected DUP metadata");
}

//! The btrfs reader against real images made by `mkfs.btrfs --rootdir`.
//!
//! Each test builds a source tree, makes an image of it, and compares what
//! [`Image`] lists with the source tree (always) and with what the kernel
//! shows through a read-only loop mount (as root only: CI runs as root;
//! elsewhere those comparisons are skipped with a message). Parts that need
//! root to set up (chown, mknod, setcap) are likewise skipped.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

mod common;
use common::*;
use rootbox_btrfs::{ChecksumType, Entry, FileKind, Image, ReadError};

/// A tree with one of everything. `sub1`, `ro1`, `@` and
/// `@/var/lib/machines` become subvolumes.
fn build_rich_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| fs::write(root.join(p), data).unwrap();
    let mkdir = |p: &str| fs::create_dir_all(root.join(p)).unwrap();
    for d in [
        "dir/nested/deeper",
        "modes",
        "owners",
        "dev",
        "sub1/a",
        "ro1",
        "@/etc",
    ] {
        mkdir(d);
    }
    mkdir("@/var/lib/machines/m1");
    mkdir("@/home");

    w("file", b"hello\n");
    w("empty", b"");
    w("dir/nested/deeper/file", b"deep\n");
    w("large.bin", &pseudo_random(5 << 20, 1));
    let sparse = File::create(root.join("sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    sparse.write_all_at(b"middle", 32 << 20).unwrap();
    drop(sparse);

    symlink("/etc/passwd", root.join("sym_abs")).unwrap();
    symlink("../file", root.join("dir/sym_rel")).unwrap();
    symlink("nowhere/at/all", root.join("sym_dangling")).unwrap();
    // mkfs.btrfs 6.14 fails on a 4095-byte target (it must fit inline in a
    // sector); 4000 is past the kernel's default max_inline of 2048.
    symlink("x".repeat(4000), root.join("sym_long")).unwrap();

    w("hardlink_a", b"linked\n");
    fs::hard_link(root.join("hardlink_a"), root.join("dir/hardlink_b")).unwrap();
    fs::hard_link(root.join("hardlink_a"), root.join("dir/hardlink_c")).unwrap();

    run(std::process::Command::new("mkfifo").arg(root.join("fifo")));
    drop(std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap());

    w("name with spaces", b"");
    w("ünïcödé", b"");
    fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xffutf8")), b"").unwrap();

    w("sub1/a/in_sub1", b"sub1\n");
    w("ro1/readonly_file", b"ro\n");
    w("@/etc/hostname", b"rootbox\n");
    w("@/var/lib/machines/m1/os-release", b"ID=test\n");

    // Modes, then owners (chown clears set-id bits, so it goes first).
    w("modes/m600", b"");
    mkdir("modes/d700");
    mkdir("modes/tmp1777");
    w("modes/suid4755", b"#!/bin/sh\n");
    mkdir("modes/sgid2755");
    if is_root() {
        chown(root.join("owners"), Some(1000), Some(100)).unwrap();
        for (name, uid, gid) in [
            ("u1000", 1000, 100),
            ("nobody", 65534, 65534),
            ("odd", 12345, 54321),
        ] {
            w(&format!("owners/{name}"), name.as_bytes());
            chown(root.join("owners").join(name), Some(uid), Some(gid)).unwrap();
        }
        chown(root.join("modes/suid4755"), Some(0), Some(0)).unwrap();
        std::os::unix::fs::lchown(root.join("sym_abs"), Some(1000), Some(100)).unwrap();
        run(std::process::Command::new("mknod")
            .arg(root.join("dev/null"))
            .args(["c", "1", "3"]));
        run(std::process::Command::new("mknod")
            .arg(root.join("dev/loop0"))
            .args(["b", "7", "0"]));
    }
    for (p, mode) in [
        ("modes/m600", 0o600),
        ("modes/d700", 0o700),
        ("modes/tmp1777", 0o1777),
        ("modes/suid4755", 0o4755),
        ("modes/sgid2755", 0o2755),
    ] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }

    let when = SystemTime::UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    File::options()
        .write(true)
        .open(root.join("file"))
        .unwrap()
        .set_modified(when)
        .unwrap();
}

const RICH_SUBVOLS: &[&str] = &[
    "--subvol",
    "rw:sub1",
    "--subvol",
    "ro:ro1",
    "--subvol",
    "default:@",
    "--subvol",
    "rw:@/var/lib/machines",
];

#[test]
fn non_btrfs_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    fs::write(&junk, pseudo_random(1 << 20, 7)).unwrap();
    assert!(matches!(Image::open(&junk), Err(ReadError::NotBtrfs)));
    let empty = dir.path().join("empty");
    fs::write(&empty, b"").unwrap();
    assert!(matches!(Image::open(&empty), Err(ReadError::NotBtrfs)));
    let missing = dir.path().join("missing");
    assert!(matches!(Image::open(&missing), Err(ReadError::Io { .. })));
}

#[test]
fn every_kind_of_file_lists_like_the_source_and_the_mount() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    let img = dir.path().join("img");
    let uuid = "44444444-4444-4444-8888-888888888888";
    let mut args = vec!["-L", "rootbox-test", "-U", uuid];
    args.extend_from_slice(RICH_SUBVOLS);
    mkfs(&src, &img, &args);

    let image = Image::open(&img).unwrap();
    let info = image.info();
    assert_eq!(info.label, "rootbox-test");
    assert_eq!(info.fsid, uuid);
    assert_eq!((info.nodesize, info.sectorsize), (16384, 4096));
    assert_eq!(info.csum_type, ChecksumType::Crc32c);
    assert_eq!(info.num_devices, 1);

    // Subvolumes: paths from the top level, parents, flags, default.
    let subvols = image.subvolumes().unwrap();
    let by_path: BTreeMap<Vec<u8>, _> = subvols.iter().map(|s| (s.path.clone(), s)).collect();
    let paths: Vec<&[u8]> = by_path.keys().map(|p| p.as_slice()).collect();
    assert_eq!(
        paths,
        [&b""[..], b"@", b"@/var/lib/machines", b"ro1", b"sub1"],
        "{subvols:#?}"
    );
    let top = by_path[&b""[..]];
    assert_eq!((top.id, top.parent_id), (5, None));
    let at = by_path[&b"@"[..]];
    assert_eq!(at.parent_id, Some(5));
    assert_eq!(image.default_subvolume().unwrap(), at.id);
    let machines = by_path[&b"@/var/lib/machines"[..]];
    assert_eq!(machines.parent_id, Some(at.id));
    assert_eq!(machines.name, b"machines");
    assert!(by_path[&b"ro1"[..]].readonly);
    assert!(!by_path[&b"sub1"[..]].readonly);
    assert!(subvols.iter().all(|s| s.uuid.len() == 36));

    let listing = reader_listing(&image);
    let source = fs_listing(&src);
    compare_with_source(&listing, &source);

    // Spot checks of what the comparison cannot see.
    let e = image.lookup(5, b"dir/hardlink_b").unwrap();
    let a = image.lookup(5, b"hardlink_a").unwrap();
    assert_eq!((e.ino, e.nlink, e.kind), (a.ino, 3, FileKind::File));
    let long = image.lookup(5, b"sym_long").unwrap();
    assert_eq!(
        long.symlink_target.as_deref(),
        Some("x".repeat(4000).as_bytes())
    );
    assert_eq!(long.size, 4000);
    assert_eq!(image.lookup(5, b"large.bin").unwrap().size, 5 << 20);
    assert_eq!(image.lookup(5, b"sparse").unwrap().size, 64 << 20);
    let f = image.lookup(5, b"./file").unwrap();
    assert_eq!(
        (f.path.as_slice(), f.mtime.sec, f.mtime.nsec),
        (&b"file"[..], 1_000_000_000, 0)
    );
    let s = image.lookup(5, b"sub1").unwrap();
    assert_eq!(
        (s.kind, s.subvolume, s.ino),
        (FileKind::Subvolume, Some(by_path[&b"sub1"[..]].id), 256)
    );
    assert!(matches!(
        image.lookup(5, b"no/such"),
        Err(ReadError::NotFound(_))
    ));
    assert!(matches!(
        image.walk(12345, &mut |_| Ok(())),
        Err(ReadError::NoSuchSubvolume(12345))
    ));
    let mut sub: Vec<Vec<u8>> = Vec::new();
    image
        .walk_path(5, b"dir/nested", &mut |e| {
            sub.push(e.path.clone());
            Ok(())
        })
        .unwrap();
    assert_eq!(
        sub,
        [
            &b"dir/nested"[..],
            b"dir/nested/deeper",
            b"dir/nested/deeper/file"
        ]
    );
    // DIR_INDEX order is creation order: the root lists "file" before "empty".
    let mut top_names = Vec::new();
    image
        .walk(5, &mut |e| {
            if !e.path.is_empty() && !e.path.contains(&b'/') {
                top_names.push(String::from_utf8_lossy(&e.path).into_owned());
            }
            Ok(())
        })
        .unwrap();
    let pos = |n: &str| top_names.iter().position(|x| x == n).unwrap();
    assert!(pos("file") < pos("empty"), "{top_names:?}");

    if is_root() {
        let dev = image.lookup(5, b"dev/null").unwrap();
        assert_eq!(dev.kind, FileKind::CharDev);
        assert_eq!(image.lookup(5, b"owners/odd").unwrap().uid, 12345);
        assert_eq!(image.lookup(5, b"modes/suid4755").unwrap().mode, 0o104755);
        assert_eq!(image.lookup(5, b"modes/tmp1777").unwrap().mode, 0o041777);
        compare_with_mount(&img, &listing);
    } else {
        skip_note("mount comparison, device nodes and owners");
    }
}

#[test]
fn compressed_image_lists_like_the_mount() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    fs::write(
        src.join("compressible.txt"),
        "all work and no play\n".repeat(300_000),
    )
    .unwrap();
    for i in 0..50 {
        fs::write(
            src.join(format!("dir/small{i}")),
            format!("{i}\n").repeat(i * 20),
        )
        .unwrap();
    }
    let img = dir.path().join("img");
    let mut args = vec!["--compress", "zstd"];
    args.extend_from_slice(RICH_SUBVOLS);
    mkfs(&src, &img, &args);

    let image = Image::open(&img).unwrap();
    let listing = reader_listing(&image);
    compare_with_source(&listing, &fs_listing(&src));
    assert_eq!(
        image.lookup(5, b"compressible.txt").unwrap().size,
        21 * 300_000
    );
    if is_root() {
        compare_with_mount(&img, &listing);
    } else {
        skip_note("mount comparison");
    }
}

#[test]
fn xattrs_capabilities_and_acls() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("acl_dir/sub")).unwrap();
    let f = src.join("with_xattrs");
    fs::write(&f, b"x").unwrap();
    xattr::set(&f, "user.text", b"plain value").unwrap();
    xattr::set(&f, "user.binary", &[0, 1, 2, 255, 0]).unwrap();
    xattr::set(&f, "user.empty", b"").unwrap();
    xattr::set(&f, "user.big", &pseudo_random(3000, 3)).unwrap();
    let many = src.join("many_xattrs");
    fs::write(&many, b"").unwrap();
    for i in 0..40 {
        xattr::set(
            &many,
            format!("user.attr{i:02}"),
            format!("value {i}").as_bytes(),
        )
        .unwrap();
    }
    xattr::set(src.join("acl_dir"), "user.on_dir", b"d").unwrap();
    run(std::process::Command::new("setfacl")
        .args(["-m", "u:1234:rwx,g:4321:r-x,m::rwx"])
        .arg(src.join("acl_dir")));
    run(std::process::Command::new("setfacl")
        .args(["-d", "-m", "u:1234:rx"])
        .arg(src.join("acl_dir")));
    let cap = src.join("ping");
    fs::write(&cap, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&cap, fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        run(std::process::Command::new("setcap")
            .arg("cap_net_raw,cap_net_admin+ep")
            .arg(&cap));
    }

    let img = dir.path().join("img");
    mkfs(&src, &img, &[]);
    let image = Image::open(&img).unwrap();
    let listing = reader_listing(&image);
    compare_with_source(&listing, &fs_listing(&src));

    let e = image.lookup(5, b"with_xattrs").unwrap();
    assert_eq!(e.xattr(b"user.text"), Some(&b"plain value"[..]));
    assert_eq!(e.xattr(b"user.binary"), Some(&[0u8, 1, 2, 255, 0][..]));
    assert_eq!(e.xattr(b"user.empty"), Some(&b""[..]));
    assert_eq!(e.xattr(b"user.big").map(<[u8]>::len), Some(3000));
    assert_eq!(image.lookup(5, b"many_xattrs").unwrap().xattrs.len(), 40);
    let d = image.lookup(5, b"acl_dir").unwrap();
    // POSIX ACL xattrs start with version 2 (little-endian u32).
    for name in [&b"system.posix_acl_access"[..], b"system.posix_acl_default"] {
        let v = d.xattr(name).unwrap_or_else(|| panic!("{d:?}"));
        assert_eq!(v[..4], [2, 0, 0, 0]);
    }
    if is_root() {
        let v = image.lookup(5, b"ping").unwrap();
        let capability = v
            .xattr(b"security.capability")
            .expect("security.capability");
        // VFS_CAP_REVISION_2 (0x02000000) or 3, with the effective flag (1).
        assert!(
            matches!(capability[3], 2 | 3) && capability[0] == 1,
            "{capability:?}"
        );
        compare_with_mount(&img, &listing);
    } else {
        skip_note("file capabilities and mount comparison");
    }
}

#[test]
fn hundred_thousand_files_multi_level_tree() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    let (dirs, per_dir) = (200, 500);
    for d in 0..dirs {
        let sub = src.join(format!("d{d:03}"));
        fs::create_dir_all(&sub).unwrap();
        for i in 0..per_dir {
            fs::write(
                sub.join(format!("file-with-a-longish-name-{i:05}")),
                [b'x'; 10],
            )
            .unwrap();
        }
    }
    let img = dir.path().join("img");
    mkfs(&src, &img, &[]);

    let image = Image::open(&img).unwrap();
    let root = image.tree_root(5).unwrap();
    assert!(root.level >= 2, "fs tree root level {}", root.level);
    // Cross-check with btrfs-progs.
    let dump = run(std::process::Command::new("btrfs")
        .args(["inspect-internal", "dump-tree", "-t", "5"])
        .arg(&img));
    let first_node = dump
        .lines()
        .find(|l| l.starts_with("node ") || l.starts_with("leaf "))
        .unwrap();
    assert!(
        first_node.contains(&format!("level {}", root.level)),
        "{first_node}"
    );
    let blocks = image.tree_blocks(5).unwrap();
    assert!(blocks.iter().filter(|b| b.level == 0).count() > 500);

    let start = std::time::Instant::now();
    let mut count = 0usize;
    let mut files = 0usize;
    image
        .walk(5, &mut |e| {
            count += 1;
            if e.kind == FileKind::File {
                assert_eq!(e.size, 10);
                files += 1;
            }
            Ok(())
        })
        .unwrap();
    eprintln!("walked {count} entries in {:?}", start.elapsed());
    assert_eq!(files, dirs * per_dir);
    assert_eq!(count, dirs * per_dir + dirs + 1);
    if is_root() {
        compare_with_mount(&img, &reader_listing(&image));
    } else {
        skip_note("mount comparison");
    }
}

#[test]
fn deep_tree_walks_without_recursion() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("r");
    let depth = 2000;
    let deepest = src.join(["d"; 2000].join("/"));
    fs::create_dir_all(&deepest).unwrap();
    fs::write(deepest.join("f"), b"bottom").unwrap();
    let img = dir.path().join("img");
    mkfs(&src, &img, &[]);

    let image = Image::open(&img).unwrap();
    // A small stack: the walk must not recurse per directory level.
    let (count, longest) = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let mut count = 0;
            let mut longest = Vec::new();
            image
                .walk(5, &mut |e| {
                    count += 1;
                    if e.path.len() > longest.len() {
                        longest = e.path.clone();
                    }
                    Ok(())
                })
                .unwrap();
            (count, longest)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(count, depth + 2);
    assert_eq!(longest, format!("{}/f", ["d"; 2000].join("/")).into_bytes());
    if is_root() {
        compare_with_mount(&img, &reader_listing(&Image::open(&img).unwrap()));
    } else {
        skip_note("mount comparison");
    }
}

/// An image the kernel has written to: device numbers in its encoding, a
/// snapshot sharing blocks with its source, a subvolume it created.
#[test]
fn image_modified_by_the_kernel() {
    require_mkfs!();
    if !is_root() {
        skip_note("the kernel-written image test (needs a read-write mount)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("@/etc")).unwrap();
    for i in 0..2000 {
        fs::write(src.join(format!("@/etc/f{i}")), b"x").unwrap();
    }
    let img = dir.path().join("img");
    mkfs(&src, &img, &["--subvol", "default:@"]);
    {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path();
        run(std::process::Command::new("mount")
            .args(["-o", "loop,subvolid=5"])
            .arg(&img)
            .arg(m));
        let result = std::panic::catch_unwind(|| {
            let sh = |script: &str| {
                run(std::process::Command::new("sh")
                    .args(["-ec", script, "sh"])
                    .arg(m))
            };
            sh(r#"mknod "$1/@/nul" c 1 3; mknod "$1/@/big" b 300 70000; rm "$1/@/etc/f7""#);
            sh(r#"btrfs -q subvolume create "$1/@/etc/newsub"; echo hi > "$1/@/etc/newsub/file""#);
            sh(r#"btrfs -q subvolume snapshot -r "$1/@" "$1/snap""#);
        });
        run(std::process::Command::new("umount").arg(m));
        result.unwrap();
    }

    let image = Image::open(&img).unwrap();
    let subvols = image.subvolumes().unwrap();
    let find = |p: &[u8]| {
        subvols
            .iter()
            .find(|s| s.path == p)
            .unwrap_or_else(|| panic!("{subvols:#?}"))
    };
    let (at, snap, newsub) = (find(b"@"), find(b"snap"), find(b"@/etc/newsub"));
    assert!(snap.readonly && !at.readonly);
    assert_eq!(snap.parent_uuid.as_deref(), Some(at.uuid.as_str()));
    assert_eq!(newsub.parent_id, Some(at.id));
    let nul = image.lookup(at.id, b"nul").unwrap();
    assert_eq!(
        (nul.kind, nul.device_numbers()),
        (FileKind::CharDev, (1, 3))
    );
    let big = image.lookup(snap.id, b"big").unwrap();
    assert_eq!(
        (big.kind, big.device_numbers()),
        (FileKind::BlockDev, (300, 70000))
    );
    assert!(matches!(
        image.lookup(snap.id, b"etc/f7"),
        Err(ReadError::NotFound(_))
    ));
    // The snapshot names newsub but does not hold it: an empty directory.
    let placeholder = image.lookup(snap.id, b"etc/newsub").unwrap();
    assert_eq!(
        (placeholder.kind, placeholder.ino, placeholder.subvolume),
        (FileKind::Dir, 2, None)
    );
    let inside = image.lookup(at.id, b"etc/newsub").unwrap();
    assert_eq!(
        (inside.kind, inside.subvolume),
        (FileKind::Subvolume, Some(newsub.id))
    );
    compare_with_mount(&img, &reader_listing(&image));
}

/// Flip one byte of a tree block at every copy the chunk map gives.
fn corrupt(img: &Path, physical: &[u64], at: u64) {
    let f = File::options().read(true).write(true).open(img).unwrap();
    for &p in physical {
        let mut b = [0u8];
        f.read_exact_at(&mut b, p + at).unwrap();
        f.write_all_at(&[b[0] ^ 0x5a], p + at).unwrap();
    }
}

#[test]
fn corrupted_blocks_are_detected() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/c"), b"c").unwrap();

    // DUP metadata (the default): one bad copy is read past, two are not.
    let img = dir.path().join("dup.img");
    mkfs(&src, &img, &[]);
    let root = Image::open(&img).unwrap().tree_root(5).unwrap();
    let copies = Image::open(&img)
        .unwrap()
        .physical_copies(root.bytenr)
        .unwrap();
    assert_eq!(copies.len(), 2, "DUP metadata has two copies");
    corrupt(&img, &copies[..1], 200);
    let image = Image::open(&img).unwrap();
    image.walk(5, &mut |_| Ok(())).expect("second copy is good");
    corrupt(&img, &copies[1..], 200);
    let image = Image::open(&img).unwrap();
    match image.walk(5, &mut |_| Ok(())) {
        Err(ReadError::BadBlockChecksum { logical, physical }) => {
            assert_eq!((logical, physical), (root.bytenr, copies[0]));
        }
        other => panic!("expected BadBlockChecksum, got {other:?}"),
    }

    // SINGLE metadata, the last byte of the fs tree's root block.
    let img = dir.path().join("single.img");
    mkfs(&src, &img, &["-m", "single"]);
    let image = Image::open(&img).unwrap();
    let root = image.tree_root(5).unwrap();
    let copies = image.physical_copies(root.bytenr).unwrap();
    assert_eq!(copies.len(), 1);
    drop(image);
    corrupt(&img, &copies, 16383);
    let err = Image::open(&img).unwrap().walk(5, &mut |_| Ok(()));
    assert!(
        matches!(err, Err(ReadError::BadBlockChecksum { logical, .. }) if logical == root.bytenr),
        "{err:?}"
    );

    // A block with a good checksum at the wrong address.
    let img = dir.path().join("moved.img");
    mkfs(&src, &img, &["-m", "single"]);
    let image = Image::open(&img).unwrap();
    let root = image.tree_root(5).unwrap();
    let copies = image.physical_copies(root.bytenr).unwrap();
    drop(image);
    rewrite_block(&img, &copies, |block| {
        block[0x30..0x38].copy_from_slice(&(root.bytenr + 16384).to_le_bytes());
    });
    let err = Image::open(&img).unwrap().walk(5, &mut |_| Ok(()));
    assert!(
        matches!(&err, Err(ReadError::BadBlock { reason, .. }) if reason.contains("bytenr")),
        "{err:?}"
    );

    // The superblock.
    let img = dir.path().join("sb.img");
    mkfs(&src, &img, &[]);
    corrupt(&img, &[65536], 0x100);
    assert!(matches!(
        Image::open(&img),
        Err(ReadError::BadSuperblockChecksum)
    ));
}

#[test]
fn other_checksum_algorithms_are_a_typed_error() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir(&src).unwrap();
    let img = dir.path().join("img");
    for (csum, name) in [
        ("xxhash", "xxhash64"),
        ("sha256", "sha256"),
        ("blake2", "blake2b"),
    ] {
        mkfs(&src, &img, &["--csum", csum]);
        match Image::open(&img) {
            Err(ReadError::UnsupportedChecksum(n)) => assert_eq!(n, name),
            other => panic!("--csum {csum}: {other:?}"),
        }
    }
}

/// Mutated tree blocks with valid checksums must give errors or listings,
/// never panics or hangs: the parser is fuzzed with what mkfs produced.
#[test]
fn mutated_blocks_never_panic() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::create_dir_all(src.join("sub/x")).unwrap();
    fs::write(src.join("a/b/c"), b"c").unwrap();
    symlink("target", src.join("a/link")).unwrap();
    xattr::set(src.join("a/b/c"), "user.k", b"v").unwrap();
    let img = dir.path().join("img");
    mkfs(&src, &img, &["--subvol", "rw:sub", "-m", "single"]);

    let image = Image::open(&img).unwrap();
    let mut blocks = Vec::new();
    for tree in [1, 3, 5, 256] {
        for b in image.tree_blocks(tree).unwrap() {
            blocks.push(image.physical_copies(b.logical).unwrap());
        }
    }
    drop(image);
    // More with ROOTBOX_FUZZ_ROUNDS=n (per block).
    let rounds: usize = std::env::var("ROOTBOX_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let f = File::options().read(true).write(true).open(&img).unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut outcomes = BTreeMap::<&str, usize>::new();
    for copies in &blocks {
        let mut original = vec![0u8; 16384];
        f.read_exact_at(&mut original, copies[0]).unwrap();
        for _ in 0..rounds {
            let mut block = original.clone();
            // Mutate mostly the header and item headers, where structure is.
            let span = if next(&mut rng) & 1 == 0 {
                1024
            } else {
                16384 - 32
            };
            let at = 32 + (next(&mut rng) % span) as usize;
            block[at] ^= (next(&mut rng) % 255 + 1) as u8;
            let crc = crc32c::crc32c(&block[32..]);
            block[..4].copy_from_slice(&crc.to_le_bytes());
            for &p in copies {
                f.write_all_at(&block, p).unwrap();
            }
            *outcomes.entry(exercise(&img)).or_default() += 1;
        }
        for &p in copies {
            f.write_all_at(&original, p).unwrap();
        }
    }
    // The superblock, up to and into the system chunk array.
    let mut original = vec![0u8; 4096];
    f.read_exact_at(&mut original, 65536).unwrap();
    for _ in 0..rounds * 2 {
        let mut sb = original.clone();
        let at = 32 + (next(&mut rng) % (0x32b + 200 - 32)) as usize;
        sb[at] ^= (next(&mut rng) % 255 + 1) as u8;
        let crc = crc32c::crc32c(&sb[32..]);
        sb[..4].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&sb, 65536).unwrap();
        *outcomes.entry(exercise(&img)).or_default() += 1;
    }
    f.write_all_at(&original, 65536).unwrap();
    eprintln!("outcomes of mutations: {outcomes:?}");
    assert_eq!(exercise(&img), "ok");
}

/// Everything a caller can ask, errors tolerated; returns the error kind.
fn exercise(img: &Path) -> &'static str {
    let run = || -> Result<(), ReadError> {
        let image = Image::open(img)?;
        image.default_subvolume()?;
        let subvols = image.subvolumes()?;
        for sv in subvols {
            image.walk(sv.id, &mut |e| {
                let _ = rootbox_btrfs::listing::entry_line(e);
                Ok(())
            })?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => "ok",
        Err(ReadError::BadBlock { .. }) => "bad block",
        Err(ReadError::Corrupt(_)) => "corrupt",
        Err(ReadError::UnmappedLogical(_)) => "unmapped",
        Err(ReadError::NotFound(_)) => "not found",
        Err(ReadError::NoSuchSubvolume(_)) => "no such subvolume",
        Err(ReadError::Unsupported(_)) => "unsupported",
        Err(ReadError::Io { .. }) => "io",
        Err(ReadError::NotBtrfs) => "not btrfs",
        Err(ReadError::BadBlockChecksum { .. }) => "bad checksum",
        Err(ReadError::UnsupportedChecksum(_)) => "unsupported checksum",
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Read a block, change it, fix its checksum, write it back to every copy.
fn rewrite_block(img: &Path, copies: &[u64], change: impl Fn(&mut [u8])) {
    let f = File::options().read(true).write(true).open(img).unwrap();
    let mut block = vec![0u8; 16384];
    f.read_exact_at(&mut block, copies[0]).unwrap();
    change(&mut block);
    let crc = crc32c::crc32c(&block[32..]);
    block[..4].copy_from_slice(&crc.to_le_bytes());
    for &p in copies {
        f.write_all_at(&block, p).unwrap();
    }
}

#[test]
fn listing_lines_for_a_real_image() {
    require_mkfs!();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("root");
    fs::create_dir_all(src.join("d")).unwrap();
    symlink("d", src.join("l")).unwrap();
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o1777)).unwrap();
    let img = dir.path().join("img");
    mkfs(&src, &img, &[]);
    let image = Image::open(&img).unwrap();
    let mut lines = Vec::new();
    image
        .walk(5, &mut |e| {
            lines.push(rootbox_btrfs::listing::entry_line(e));
            Ok(())
        })
        .unwrap();
    // The root first; then mkfs's readdir order, which is the source's.
    let uid = fs::metadata(&src).unwrap().uid();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("drwx") && lines[0].ends_with(" ."),
        "{lines:?}"
    );
    let d = lines
        .iter()
        .find(|l| l.ends_with(" d") && !l.contains("->"))
        .unwrap();
    assert!(d.starts_with(&format!("drwxrwxrwt {uid:>5}")), "{lines:?}");
    let l = lines.iter().find(|l| l.ends_with(" l -> d")).unwrap();
    assert!(l.starts_with("lrwxrwxrwx"), "{lines:?}");
}

// ---------------------------------------------------------------------------
// Helpers: running tools, listing trees, comparing listings.

/// `mkfs.btrfs --rootdir root` into a 1 GiB sparse file.
fn mkfs(root: &Path, img: &Path, args: &[&str]) {
    File::create(img).unwrap().set_len(1 << 30).unwrap();
    run(std::process::Command::new("mkfs.btrfs")
        .args(["-q", "-f", "--rootdir"])
        .arg(root)
        .args(args)
        .arg(img));
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len).map(|_| (next(&mut state) >> 24) as u8).collect()
}

/// What is compared for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    kind: char,
    ino: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    rdev: u64,
    atime: (i64, i64),
    mtime: (i64, i64),
    ctime: (i64, i64),
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn kind_char(mode: u32) -> char {
    match mode & 0o170000 {
        0o100000 => 'f',
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '?',
    }
}

/// glibc's `makedev`, from btrfs's stored (kernel) encoding.
fn user_rdev(stored: u64) -> u64 {
    let (major, minor) = (stored >> 20, stored & 0xf_ffff);
    ((major & 0xfffff000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffffff00) << 12)
        | (minor & 0xff)
}

fn entry_rec(e: &Entry) -> Rec {
    Rec {
        kind: kind_char(e.mode),
        ino: e.ino,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        size: e.size,
        nlink: e.nlink.into(),
        rdev: user_rdev(e.rdev),
        atime: (e.atime.sec, e.atime.nsec.into()),
        mtime: (e.mtime.sec, e.mtime.nsec.into()),
        ctime: (e.ctime.sec, e.ctime.nsec.into()),
        target: e.symlink_target.clone(),
        xattrs: e.xattrs.clone(),
    }
}

fn join(prefix: &[u8], path: &[u8]) -> Vec<u8> {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_vec(),
        (false, true) => prefix.to_vec(),
        (false, false) => [prefix, b"/", path].concat(),
    }
}

/// The whole filesystem as the reader sees it, subvolumes spliced in where
/// their parents name them (as a mount of the top level shows them).
fn reader_listing(image: &Image) -> BTreeMap<Vec<u8>, Rec> {
    let mut out = BTreeMap::new();
    let mut pending = vec![(5u64, Vec::new())];
    while let Some((id, prefix)) = pending.pop() {
        image
            .walk(id, &mut |e| {
                if e.path.is_empty() && !prefix.is_empty() {
                    // Already listed by the parent, as a Subvolume entry.
                    let parent_view = &out[&prefix];
                    assert_eq!(parent_view, &entry_rec(e), "subvolume root {prefix:?}");
                    return Ok(());
                }
                let path = join(&prefix, &e.path);
                if let Some(sub) = e.subvolume {
                    assert_eq!(e.kind, FileKind::Subvolume);
                    pending.push((sub, path.clone()));
                }
                assert!(out.insert(path, entry_rec(e)).is_none());
                Ok(())
            })
            .unwrap();
    }
    out
}

/// A directory tree as the kernel shows it (lstat, readlink, llistxattr).
fn fs_listing(root: &Path) -> BTreeMap<Vec<u8>, Rec> {
    let mut out = BTreeMap::new();
    let mut stack = vec![Vec::<u8>::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&rel))
        };
        let m = fs::symlink_metadata(&path).unwrap();
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&path)
            .unwrap()
            .map(|n| {
                let v = xattr::get(&path, &n).unwrap().unwrap_or_default();
                (n.as_bytes().to_vec(), v)
            })
            .collect();
        xattrs.sort();
        let target = m.file_type().is_symlink().then(|| {
            fs::read_link(&path)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec()
        });
        if m.is_dir() {
            for child in fs::read_dir(&path).unwrap() {
                stack.push(join(&rel, child.unwrap().file_name().as_bytes()));
            }
        }
        out.insert(
            rel,
            Rec {
                kind: kind_char(m.mode()),
                ino: m.ino(),
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: m.size(),
                nlink: m.nlink(),
                rdev: m.rdev(),
                atime: (m.atime(), m.atime_nsec()),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
                target,
                xattrs,
            },
        );
    }
    out
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// Same paths; for each, what mkfs copies from lstat: type, mode, owner,
/// mtime seconds, symlink target, xattrs, and size and link count of
/// non-directories.
fn compare_with_source(image: &BTreeMap<Vec<u8>, Rec>, source: &BTreeMap<Vec<u8>, Rec>) {
    let image_paths: Vec<String> = image.keys().map(|p| show(p)).collect();
    let source_paths: Vec<String> = source.keys().map(|p| show(p)).collect();
    assert_eq!(image_paths, source_paths);
    for (path, src) in source {
        let img = &image[path];
        let what = format!("{}: image {img:?}\nsource {src:?}", show(path));
        assert_eq!(img.kind, src.kind, "{what}");
        assert_eq!(
            (img.mode, img.uid, img.gid),
            (src.mode, src.uid, src.gid),
            "{what}"
        );
        assert_eq!(img.mtime.0, src.mtime.0, "{what}");
        assert_eq!(img.target, src.target, "{what}");
        assert_eq!(img.xattrs, src.xattrs, "{what}");
        if img.kind != 'd' {
            assert_eq!((img.size, img.nlink), (src.size, src.nlink), "{what}");
        }
    }
}

/// Every field of every path equals what the kernel shows.
fn compare_with_mount(img: &Path, listing: &BTreeMap<Vec<u8>, Rec>) {
    let mount = Mount::new(img, "subvolid=5");
    let kernel = fs_listing(mount.dir.path());
    drop(mount);
    let mut differences = Vec::new();
    let paths: std::collections::BTreeSet<_> = listing.keys().chain(kernel.keys()).collect();
    for path in paths {
        let (a, mut b) = (listing.get(path), kernel.get(path).cloned());
        // The kernel makes up the times of the placeholder for a subvolume
        // not linked in a snapshot (inode 2); the reader says zero.
        if let (Some(a), Some(b)) = (a, b.as_mut()) {
            if a.ino == 2 && b.ino == 2 {
                (b.atime, b.mtime, b.ctime) = (a.atime, a.mtime, a.ctime);
            }
        }
        let b = b.as_ref();
        if a != b {
            differences.push(format!("{}:\n reader {a:?}\n kernel {b:?}", show(path)));
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences, first ones:\n{}",
        differences.len(),
        differences[..differences.len().min(5)].join("\n")
    );
    eprintln!("{} paths match the kernel's view", listing.len());
}

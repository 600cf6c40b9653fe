//! Special files (FIFOs, sockets, device nodes), sparse files, hard links
//! across subvolumes, long and non-UTF-8 names, deep and big trees.

use super::*;

use std::os::fd::AsRawFd;

// ---- special files, big and odd trees ------------------------------------------------

fn special_file_cases() -> Vec<Case> {
    vec![
        // FIFOs and sockets of the caller are bound into the staging tree
        // and recorded as such. mkfs.btrfs 6.14 records device nodes with
        // rdev 0; rootbox rewrites the real numbers into the image after
        // mkfs. A node owned by an id the namespace does not map either
        // reaches the image the same way or is left out with a warning
        // naming it.
        builds(
            "FIFOs, sockets and device nodes",
            |fx| {
                fx.mkdir("dev");
                let fifo = fx.root().join("dev/fifo");
                nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o620))
                    .unwrap();
                fs::set_permissions(&fifo, fs::Permissions::from_mode(0o620)).unwrap();
                give_to(&fx.user, &fifo);
                let sock = fx.root().join("dev/sock");
                let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
                drop(l);
                give_to(&fx.user, &sock);
                if is_root() {
                    for (name, owner) in [("null", Some(&fx.user)), ("rootnull", None)] {
                        let p = fx.root().join("dev").join(name);
                        nix::sys::stat::mknod(
                            &p,
                            nix::sys::stat::SFlag::S_IFCHR,
                            nix::sys::stat::Mode::from_bits_truncate(0o666),
                            nix::sys::stat::makedev(1, 3),
                        )
                        .unwrap();
                        if let Some(u) = owner {
                            give_to(u, &p);
                        }
                    }
                }
                std_args(fx)
            },
            |_, b| {
                assert_eq!(b.expect("@", "dev/fifo")["type"], "fifo");
                assert_eq!(
                    b.expect("@", "dev/fifo")["mode"].as_u64().unwrap() & 0o7777,
                    0o620
                );
                assert_eq!(b.expect("@", "dev/sock")["type"], "socket");
                if is_root() {
                    // makedev(1, 3) as btrfs stores it (major << 20 | minor).
                    let want = (1u64 << 20) | 3;
                    let null = b.expect("@", "dev/null");
                    assert_eq!(null["type"], "chardev", "{null}");
                    assert_eq!(null["rdev"], want, "{null}");
                    match b.entry("@", "dev/rootnull") {
                        Some(n) => {
                            assert_eq!(n["type"], "chardev", "{n}");
                            assert_eq!(n["rdev"], want, "{n}");
                        }
                        None => {
                            let w = b.warnings();
                            assert!(w.contains("dev/rootnull") && w.contains("left out"), "{w}");
                        }
                    }
                }
            },
        ),
        // mkfs.btrfs 6.14 writes holes as data (hole detection came to
        // btrfs-progs' devel branch in 2026, kdave/btrfs-progs#1097):
        // rootbox warns, and with compression the image stays small.
        builds(
            "a 1 GiB sparse file",
            |fx| {
                let p = fx.root().join("var/lib/sparse.img");
                create_dirs_as(&fx.user, p.parent().unwrap());
                let f = fs::File::create(&p).unwrap();
                f.set_len(1 << 30).unwrap();
                use std::os::unix::fs::FileExt;
                f.write_all_at(b"tail", (1 << 30) - 4).unwrap();
                give_to(&fx.user, &p);
                let mut a = std_args(fx);
                a.extend(args(&["--compress", "zstd:1"]));
                a
            },
            |_, b| {
                let e = b.expect("@", "var/lib/sparse.img");
                assert_eq!(e["size"], 1u64 << 30, "{e}");
                let size = b.report["size_bytes"].as_u64().unwrap();
                assert!(
                    size < 400 << 20,
                    "a sparse 1 GiB file made a {size}-byte image"
                );
                assert!(
                    b.warnings().contains("sparse.img") && b.warnings().contains("sparse"),
                    "no warning about the sparse file: {}",
                    b.warnings()
                );
            },
        ),
        // Two subvolumes are two filesystem trees: a hard link cannot span
        // them. Each side gets its own file with the content.
        builds(
            "hard links spanning two subvolumes",
            |fx| {
                fx.file("etc/linked", "shared content\n");
                fx.mkdir("nix");
                fs::hard_link(fx.root().join("etc/linked"), fx.root().join("nix/linked")).unwrap();
                fs::hard_link(fx.root().join("etc/linked"), fx.root().join("etc/linked2")).unwrap();
                std_args(fx)
            },
            |fx, b| {
                b.expect("@", "etc/linked");
                b.expect("@nix", "linked");
                let r = restore(fx);
                for p in ["@/etc/linked", "@/etc/linked2", "@nix/linked"] {
                    assert_eq!(fs::read(r.join(p)).unwrap(), b"shared content\n", "{p}");
                }
            },
        ),
        builds(
            "255-byte names",
            |fx| {
                fx.file(&format!("etc/{}", "n".repeat(255)), "long");
                fx.mkdir(&"d".repeat(255));
                fx.symlink(&format!("{}/l", "d".repeat(255)), &"t".repeat(255));
                std_args(fx)
            },
            |_, b| {
                assert_eq!(
                    b.expect("@", &format!("etc/{}", "n".repeat(255)))["size"],
                    4
                );
                let l = b.expect("@", &format!("{}/l", "d".repeat(255)));
                assert_eq!(l["symlink_target"], "t".repeat(255));
            },
        ),
        builds(
            "non-UTF-8 names",
            |fx| {
                let etc = fx.root().join("etc");
                create_dirs_as(&fx.user, &etc);
                let bad = etc.join(OsStr::from_bytes(b"caf\xe9"));
                write_as(&fx.user, &bad, "latin1");
                let d = fx.root().join(OsStr::from_bytes(b"\xff\xfe dir"));
                create_dirs_as(&fx.user, &d);
                write_as(&fx.user, &d.join("f"), "x");
                std_args(fx)
            },
            |_, b| {
                assert_eq!(b.expect("@", "etc/caf\\xe9")["size"], 6);
                b.expect("@", "\\xff\\xfe dir/f");
            },
        ),
        builds(
            "a tree 1,000 directories deep",
            |fx| {
                fx.tmpfs("src/root", "64m");
                deep_tree(fx, 1000);
                rootfs_args(fx, &["@:/"])
            },
            |_, b| {
                let leaf = format!("{}leaf", "d/".repeat(1000));
                assert_eq!(b.expect("@", &leaf)["size"], 4);
            },
        ),
        fails(
            "a tree 2,000 directories deep",
            &["nested more than 1024 directories deep", "refuses"],
            |fx| {
                fx.tmpfs("src/root", "64m");
                deep_tree(fx, 2000);
                rootfs_args(fx, &["@:/"])
            },
        ),
        fails(
            "a tree 10,000 directories deep",
            &["nested more than 1024 directories deep", "refuses"],
            |fx| {
                assert!(
                    nofile_limit() > 10_100,
                    "needs RLIMIT_NOFILE > 10100 to walk the tree"
                );
                fx.tmpfs("src/root", "128m");
                deep_tree(fx, 10_000);
                rootfs_args(fx, &["@:/"])
            },
        ),
        builds(
            "100,000 tiny files",
            |fx| {
                // On a tmpfs: 100k creates on the test machines' ext4 take 25 s.
                fx.tmpfs("src/root", "512m");
                many_files(fx, 100_000);
                rootfs_args(fx, &["@:/"])
            },
            |_, b| {
                assert_eq!(b.report["subvolumes"][0]["entries"], 100_000 + 100 + 1);
                b.expect("@", "d99/f99999");
            },
        ),
    ]
}

/// `root/d/d/…/d/leaf` (`depth` directories), made through descriptors:
/// deeper than PATH_MAX allows. Split into short chains before the
/// fixture is removed (remove_dir_all recurses with one descriptor per
/// level).
fn deep_tree(fx: &Fx, depth: usize) {
    use std::io::Write;
    use std::os::unix::fs::{fchown, DirBuilderExt, OpenOptionsExt};
    raise_nofile_limit();
    let (uid, gid) = (fx.user.uid, fx.user.gid);
    let mut cur = fs::File::open(fx.root()).unwrap();
    for _ in 0..depth {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(in_dir(&cur, "d"))
            .expect("mkdirat");
        let next = fs::File::open(in_dir(&cur, "d")).expect("openat");
        fchown(&next, Some(uid), Some(gid)).ok();
        cur = next;
    }
    let mut leaf = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(in_dir(&cur, "leaf"))
        .expect("creating the leaf");
    fchown(&leaf, Some(uid), Some(gid)).ok();
    leaf.write_all(b"leaf").expect("write");
    // Cleanup: move every 400th level up to the fixture's top directory.
    let top = fx.path("deep-chunks");
    let root = fx.root();
    fx.cleanup.borrow_mut().push(Box::new(move || {
        let _ = fs::create_dir(&top);
        let topdir = fs::File::open(&top).unwrap();
        let mut n = 0;
        loop {
            let mut cur = match fs::File::open(if n == 0 {
                root.clone()
            } else {
                top.join(n.to_string())
            }) {
                Ok(f) => f,
                Err(_) => break,
            };
            let mut moved = false;
            for level in 0..400 {
                let Ok(next) = fs::File::open(in_dir(&cur, "d")) else {
                    break;
                };
                if level == 399 {
                    n += 1;
                    let _ = fs::rename(in_dir(&cur, "d"), in_dir(&topdir, &n.to_string()));
                    moved = true;
                    break;
                }
                cur = next;
            }
            if !moved {
                break;
            }
        }
    }));
}

/// `NAME` in the open directory `dir`, however deep it is: a path through
/// `/proc/self/fd` stays short where the full path would exceed PATH_MAX.
fn in_dir(dir: &fs::File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// `n` empty files in 100 directories `d0..d99` (file `fI` in `d{I/1000}`).
fn many_files(fx: &Fx, n: usize) {
    let per = n.div_ceil(100);
    for d in 0..100 {
        let dir = fx.root().join(format!("d{d}"));
        create_dirs_as(&fx.user, &dir);
        for i in d * per..((d + 1) * per).min(n) {
            let p = dir.join(format!("f{i}"));
            fs::File::create(&p).unwrap();
            if is_root() {
                std::os::unix::fs::lchown(&p, Some(fx.user.uid), Some(fx.user.gid)).unwrap();
            }
        }
    }
}

#[test]
fn special_files_and_big_trees() {
    run_table(special_file_cases());
}

/// One million files: minutes and a 4 GiB tmpfs, so not in every CI run:
/// the weekly lane (`scripts/test --weekly`) runs it. Prints the time;
/// measure rootbox's peak memory by hand with /usr/bin/time -v.
#[test]
#[ignore = "a million files (minutes, a 4 GiB tmpfs): run by the weekly lane, scripts/test --weekly"]
fn a_million_files() {
    let user = test_user();
    let fx = Fx::new(&user);
    fx.tmpfs("src/root", "4g");
    let t = Instant::now();
    many_files(&fx, 1_000_000);
    eprintln!("made 1M files in {:.1}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let out = run(rootbox(&user)
        .env("TMPDIR", fx.path("tmp"))
        .args(["build", "--json", "--subvol", "@:/", "--rootfs"])
        .arg(fx.root())
        .arg("-o")
        .arg(fx.image()));
    out.assert_success();
    eprintln!("built in {:.1}s", t.elapsed().as_secs_f64());
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["subvolumes"][0]["entries"], 1_000_000 + 100 + 1);
    eprintln!("timings: {}", r["timings"]);
}

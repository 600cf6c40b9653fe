//! ext4, erofs and squashfs images from a staged tree: the
//! real binary and the real tools, run as an unprivileged user.
//!
//! The tree is made by the root harness with the owners a build meets:
//! the test user's files, files of its subordinate range (start+999 is
//! alice, 1000 in the namespace of `--map subid`), a root-owned store path
//! (not mapped: given to root, its setuid bit dropped), device nodes,
//! set-id bits, a sticky directory, hard links, symlinks and xattrs
//! including security.capability. The test user builds the image inside
//! `rootbox run --map subid|single`, so mkfs sees the owners a namespace
//! sees, with `rootbox __fs-make` (the per-filesystem step of a build).
//!
//! Each image is read back three ways: with rootbox's reader
//! (`rootbox __fs-read`), with the filesystem's own checker and lister
//! (`e2fsck -fn`, `fsck.erofs` and `dump.erofs`, `unsquashfs -lln`), and,
//! when the tests run as root (CI), by loop-mounting it read-only and
//! looking with lstat and getxattr.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const FILESYSTEMS: [&str; 3] = ["ext4", "erofs", "squashfs"];
/// security.capability v2 for cap_net_raw=ep, as setcap writes it.
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const STORE_SU: &str = "/nix/store/0c7qhwl4bgpjvhkclwsnxxzyq7cldm7x-shadow/bin/su";

/// The unprivileged user; the tree needs other owners and device nodes,
/// which only the root harness makes (CI runs the tests as root).
fn setup_as_root() -> User {
    assert!(
        is_root(),
        "tests/filesystems.rs makes its trees as root (CI runs it as root)"
    );
    setup()
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
}

fn own(p: &Path, uid: u32, gid: u32) {
    lchown(p, Some(uid), Some(gid)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

fn dir(p: &Path, uid: u32, gid: u32, mode: u32) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    own(p, uid, gid);
    chmod(p, mode);
}

/// A file; the mode is set after the chown, which clears set-id bits.
fn file(p: &Path, contents: impl AsRef<[u8]>, uid: u32, gid: u32, mode: u32) {
    fs::write(p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    own(p, uid, gid);
    chmod(p, mode);
}

fn mknod(p: &Path, kind: &str, major: u32, minor: u32, uid: u32, gid: u32) {
    run(Command::new("mknod").args([
        "-m",
        "0600",
        s(p),
        kind,
        &major.to_string(),
        &minor.to_string(),
    ]))
    .assert_success();
    own(p, uid, gid);
}

/// Bytes that do not compress, so that sizes are predictable.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The tree every test builds (see the module doc), at `root`.
fn make_tree(user: &User, root: &Path) {
    let (u, g) = (user.uid, user.gid);
    let (sub_u, sub_g) = subid_ranges(user)
        .map(|(a, b)| (a.0, b.0))
        .expect("the test user has subordinate ids");
    dir(root, u, g, 0o755);
    dir(&root.join("etc"), u, g, 0o2755);
    file(&root.join("etc/shadow"), "root:*:1::::::\n", u, g, 0o600);
    file(
        &root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\n",
        u,
        g,
        0o644,
    );
    dir(&root.join("root"), u, g, 0o700);
    dir(&root.join("tmp"), u, g, 0o1777);
    dir(&root.join("usr/bin"), u, g, 0o755);
    own(&root.join("usr"), u, g);
    chmod(&root.join("usr"), 0o755);
    file(&root.join("usr/bin/sudo"), "#!/bin/sh\n", u, g, 0o4755);
    fs::hard_link(root.join("usr/bin/sudo"), root.join("usr/bin/sudoedit")).expect("ln");
    file(&root.join("usr/bin/wall"), "#!/bin/sh\n", u, g, 0o2755);
    file(&root.join("usr/bin/ping"), "#!/bin/sh\n", u, g, 0o755);
    // After the chown, which would drop it.
    xattr::set(
        root.join("usr/bin/ping"),
        "security.capability",
        &CAP_NET_RAW,
    )
    .expect("setcap");
    xattr::set(root.join("usr/bin/ping"), "user.note", b"pings").expect("user xattr");
    xattr::set(root.join("usr/bin/ping"), "user.long", &[b'x'; 70]).expect("long xattr");
    fs::write(root.join("usr/bin/data"), noise(300 * 1024)).expect("data");
    own(&root.join("usr/bin/data"), u, g);
    std::os::unix::fs::symlink("sudo", root.join("usr/bin/su")).expect("symlink");
    own(&root.join("usr/bin/su"), u, g);
    dir(&root.join("dev"), u, g, 0o755);
    mknod(&root.join("dev/console"), "c", 5, 1, u, g);
    mknod(&root.join("dev/sda"), "b", 8, 0, u, g);
    // alice: start+999:start+99 is 1000:100 with --map subid.
    dir(&root.join("home"), u, g, 0o755);
    dir(&root.join("home/alice"), sub_u + 999, sub_g + 99, 0o755);
    file(
        &root.join("home/alice/.profile"),
        "PS1=$\n",
        sub_u + 999,
        sub_g + 99,
        0o644,
    );
    // A root-owned closure, as in /nix/store: not mapped in the namespace.
    let su = root.join(STORE_SU.trim_start_matches('/'));
    dir(&root.join("nix"), u, g, 0o755);
    for d in [
        "nix/store",
        "nix/store/0c7qhwl4bgpjvhkclwsnxxzyq7cldm7x-shadow",
    ] {
        dir(&root.join(d), 0, 0, 0o755);
    }
    dir(su.parent().unwrap(), 0, 0, 0o755);
    file(&su, "#!/bin/sh\n", 0, 0, 0o4755);
    let sg = su.with_file_name("sg");
    std::os::unix::fs::symlink("su", &sg).expect("symlink");
    own(&sg, 0, 0);
}

/// A directory for one test, owned by the test user, with the tree in `tree`.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(user: &User) -> Case {
        let dir = tempdir_for(user);
        make_tree(user, &dir.path().join("tree"));
        Case { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `rootbox __fs-make` inside `rootbox run --map MAP`, as the test user.
fn make_image(user: &User, case: &Path, map: &str, fs_args: &[&str], env: &[(&str, &str)]) -> Out {
    let bin = rootbox_bin();
    let mut cmd = rootbox(user);
    cmd.args(["run", "--map", map, "--bind", s(case), s(case), "--"])
        .arg(&bin)
        .arg("__fs-make");
    cmd.args(fs_args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// Every inode as rootbox's reader gives it, by path.
fn read_back(user: &User, fs_name: &str, image: &Path) -> BTreeMap<String, Value> {
    let out = run(rootbox(user).args(["__fs-read", "--filesystem", fs_name, s(image)]));
    out.assert_success();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    v.as_array()
        .expect("an array")
        .iter()
        .map(|i| (i["path"].as_str().expect("path").to_string(), i.clone()))
        .collect()
}

#[track_caller]
fn assert_inode(got: &BTreeMap<String, Value>, path: &str, mode: u32, uid: u32, gid: u32) {
    let i = got
        .get(path)
        .unwrap_or_else(|| panic!("{path} is not in the image: {:?}", got.keys()));
    let have = (
        i["mode"].as_u64().unwrap() as u32,
        i["uid"].as_u64().unwrap() as u32,
        i["gid"].as_u64().unwrap() as u32,
    );
    assert_eq!(
        have,
        (mode, uid, gid),
        "{path}: (mode, uid, gid) as octal {:o}",
        have.0
    );
}

fn xattr_of(i: &Value, name: &str) -> Option<Vec<u8>> {
    i["xattrs"][name]
        .as_array()
        .map(|a| a.iter().map(|b| b.as_u64().unwrap() as u8).collect())
}

/// What every image of [`make_tree`] built with `--map subid` must hold.
fn check_subid_image(got: &BTreeMap<String, Value>) {
    assert_inode(got, "/", 0o40755, 0, 0);
    assert_inode(got, "/etc", 0o42755, 0, 0);
    assert_inode(got, "/etc/shadow", 0o100600, 0, 0);
    assert_inode(got, "/root", 0o40700, 0, 0);
    assert_inode(got, "/tmp", 0o41777, 0, 0);
    assert_inode(got, "/usr/bin/sudo", 0o104755, 0, 0);
    assert_inode(got, "/usr/bin/wall", 0o102755, 0, 0);
    assert_inode(got, "/usr/bin/su", 0o120777, 0, 0);
    assert_eq!(got["/usr/bin/su"]["target"], "sudo");
    assert_inode(got, "/home/alice", 0o40755, 1000, 100);
    assert_inode(got, "/home/alice/.profile", 0o100644, 1000, 100);
    // Not mapped: root's, and not setuid root.
    assert_inode(got, STORE_SU, 0o100755, 0, 0);
    assert_inode(got, "/nix/store", 0o40755, 0, 0);
    let sg = STORE_SU.replace("/su", "/sg");
    assert_inode(got, &sg, 0o120777, 0, 0);
    assert_eq!(got[&sg]["target"], "su");
    assert_inode(got, "/dev/console", 0o20600, 0, 0);
    assert_eq!(got["/dev/console"]["rdev"], serde_json::json!([5, 1]));
    assert_inode(got, "/dev/sda", 0o60600, 0, 0);
    assert_eq!(got["/dev/sda"]["rdev"], serde_json::json!([8, 0]));
    // Every reader sees xattrs and inode numbers (squashfs's too, since
    // rootbox reads the format itself rather than `unsquashfs -lln`).
    let ping = &got["/usr/bin/ping"];
    assert_eq!(
        xattr_of(ping, "security.capability").as_deref(),
        Some(&CAP_NET_RAW[..])
    );
    assert_eq!(xattr_of(ping, "user.note").as_deref(), Some(&b"pings"[..]));
    assert_eq!(
        xattr_of(ping, "user.long").as_deref(),
        Some(&[b'x'; 70][..])
    );
    assert_eq!(
        got["/usr/bin/sudo"]["ino"], got["/usr/bin/sudoedit"]["ino"],
        "hard link"
    );
    assert_ne!(got["/usr/bin/sudo"]["ino"], got["/usr/bin/wall"]["ino"]);
}

/// The filesystem's own tools on the image, as the test user.
fn check_with_own_tools(user: &User, fs_name: &str, image: &Path) {
    match fs_name {
        "ext4" => {
            run(cmd_as(user, "e2fsck").args(["-fn", s(image)])).assert_success();
        }
        "erofs" => {
            run(cmd_as(user, "fsck.erofs").arg(image)).assert_success();
            let out = run(cmd_as(user, "dump.erofs").args(["--path=/home/alice", s(image)]));
            out.assert_success();
            assert!(out.stdout.contains("Uid: 1000   Gid: 100"), "{out}");
            let out = run(cmd_as(user, "dump.erofs")
                .arg(format!("--path={STORE_SU}"))
                .arg(image));
            assert!(out.stdout.contains("Uid: 0   Gid: 0"), "{out}");
        }
        "squashfs" => {
            let out = run(cmd_as(user, "unsquashfs").args(["-lln", s(image)]));
            out.assert_success();
            for want in ["-rwsr-xr-x 0/0", " 1000/100 "] {
                assert!(
                    out.stdout.contains(want),
                    "unsquashfs -lln lacks {want:?}:\n{out}"
                );
            }
            run(cmd_as(user, "unsquashfs").args(["-stat", s(image)])).assert_success();
        }
        other => panic!("{other}"),
    }
}

/// A read-only loop mount of an ext4, erofs or squashfs image, undone on
/// drop (common's [`Mounted`] mounts btrfs subvolumes).
struct FsMount(tempfile::TempDir);

impl FsMount {
    fn new(fs_name: &str, image: &Path) -> FsMount {
        let dir = tempfile::Builder::new()
            .prefix("rootbox-test-mnt-")
            .tempdir_in("/tmp")
            .expect("a mount point");
        run(Command::new("mount").args(["-t", fs_name, "-o", "loop,ro", s(image), s(dir.path())]))
            .assert_success();
        FsMount(dir)
    }
}

impl Drop for FsMount {
    fn drop(&mut self) {
        if !Command::new("umount")
            .arg(self.0.path())
            .status()
            .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }
}

/// What the kernel shows of a mounted image: the same as the reader.
fn check_mounted(fs_name: &str, image: &Path) {
    let m = FsMount::new(fs_name, image);
    let at = |p: &str| m.0.path().join(p.trim_start_matches('/'));
    let meta = |p: &str| fs::symlink_metadata(at(p)).unwrap_or_else(|e| panic!("lstat {p}: {e}"));
    for (p, mode, uid, gid) in [
        ("/etc/shadow", 0o100600, 0, 0),
        ("/usr/bin/sudo", 0o104755, 0, 0),
        ("/home/alice", 0o40755, 1000, 100),
        (STORE_SU, 0o100755, 0, 0),
        ("/tmp", 0o41777, 0, 0),
    ] {
        let md = meta(p);
        assert_eq!(
            (md.mode(), md.uid(), md.gid()),
            (mode, uid, gid),
            "{fs_name}: {p} mounted"
        );
    }
    assert_eq!(
        meta("/usr/bin/sudo").ino(),
        meta("/usr/bin/sudoedit").ino(),
        "{fs_name}: hard link"
    );
    assert_eq!(
        meta("/dev/sda").rdev(),
        libc::makedev(8, 0),
        "{fs_name}: /dev/sda"
    );
    assert_eq!(
        xattr::get(at("/usr/bin/ping"), "security.capability")
            .expect("getxattr")
            .as_deref(),
        Some(&CAP_NET_RAW[..]),
        "{fs_name}: security.capability"
    );
}

#[test]
fn every_filesystem_holds_the_owners_modes_and_nodes_of_the_staged_tree() {
    let user = setup_as_root();
    let case = Case::new(&user);
    for fs_name in FILESYSTEMS {
        let image = case.path(&format!("image.{fs_name}"));
        let out = make_image(
            &user,
            case.dir.path(),
            "subid",
            &[
                "--filesystem",
                fs_name,
                "--source",
                s(&case.path("tree")),
                "-o",
                s(&image),
            ],
            &[],
        );
        out.assert_success();
        let report: Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
        // The store path's five inodes were not mapped.
        assert_eq!(report["unmapped_given_to_root"], 5, "{out}");
        assert_eq!(owner(&image), (user.uid, user.gid));
        let got = read_back(&user, fs_name, &image);
        check_subid_image(&got);
        check_with_own_tools(&user, fs_name, &image);
        check_mounted(fs_name, &image);
    }
}

#[test]
fn a_single_id_map_gives_alice_to_root_and_the_manifest_gives_her_back() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let manifest = case.path("owners");
    write_as(
        &user,
        &manifest,
        "/home/alice/** 1000 100\n/home/alice 1000 100 0700\n/var/log 0 4 2750\n",
    );
    // /var/log is not in the tree: a typo in the manifest fails the build.
    for fs_name in FILESYSTEMS {
        let image = case.path(&format!("typo.{fs_name}"));
        let out = make_image(
            &user,
            case.dir.path(),
            "single",
            &[
                "--filesystem",
                fs_name,
                "--source",
                s(&case.path("tree")),
                "--owners",
                s(&manifest),
                "-o",
                s(&image),
            ],
            &[],
        );
        out.assert_code(1)
            .assert_stderr_contains("line 3: /var/log matches nothing");
        assert!(!image.exists(), "a failed build left {}", image.display());
    }
    write_as(
        &user,
        &manifest,
        "/home/alice/** 1000 100\n/home/alice 1000 100 0700\n",
    );
    let tree = case.path("tree");
    for fs_name in FILESYSTEMS {
        let plain = case.path(&format!("single.{fs_name}"));
        let args = ["--filesystem", fs_name, "--source", s(&tree)];
        let out = make_image(
            &user,
            case.dir.path(),
            "single",
            &[&args[..], &["-o", s(&plain)]].concat(),
            &[],
        );
        out.assert_success();
        let got = read_back(&user, fs_name, &plain);
        // Outside a single-id map: root's.
        assert_inode(&got, "/home/alice", 0o40755, 0, 0);
        assert_inode(&got, "/usr/bin/sudo", 0o104755, 0, 0);
        let managed = case.path(&format!("manifest.{fs_name}"));
        let out = make_image(
            &user,
            case.dir.path(),
            "single",
            &[&args[..], &["--owners", s(&manifest), "-o", s(&managed)]].concat(),
            &[],
        );
        out.assert_success();
        let got = read_back(&user, fs_name, &managed);
        assert_inode(&got, "/home/alice", 0o40700, 1000, 100);
        assert_inode(&got, "/home/alice/.profile", 0o100644, 1000, 100);
        assert_inode(&got, "/etc/shadow", 0o100600, 0, 0);
        check_with_own_tools(&user, fs_name, &managed);
    }
}

/// `cp -a`, as root (owners, xattrs and device nodes kept).
fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp").args(["-a", s(from), s(to)])).assert_success();
}

#[test]
fn two_copies_of_a_tree_give_the_same_bytes() {
    let user = setup_as_root();
    let case = Case::new(&user);
    // One copy on the disk, one on a tmpfs, made a second apart: ctimes,
    // inode numbers, directory order and the order in which each lists a
    // file's xattrs differ. rootbox sorts what ext4 and erofs images hold;
    // mksquashfs 4.5 writes xattrs in listing order and a squashfs image
    // cannot be edited, so squashfs is compared between two tmpfs copies
    // (same listing order; a reproducible build's staging copy gives it).
    let on_disk = case.path("copy-a");
    copy_tree(&case.path("tree"), &on_disk);
    let tmpfs = case.path("mnt");
    mount_tmpfs_for(&user, &tmpfs, "64M");
    let _unmount = Unmount(tmpfs.clone());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let in_memory = tmpfs.join("copy-b");
    copy_tree(&case.path("tree"), &in_memory);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let in_memory_again = tmpfs.join("copy-c");
    copy_tree(&case.path("tree"), &in_memory_again);
    for fs_name in FILESYSTEMS {
        let first = if fs_name == "squashfs" {
            &in_memory_again
        } else {
            &on_disk
        };
        let images: Vec<PathBuf> = [first, &in_memory]
            .iter()
            .enumerate()
            .map(|(n, src)| {
                let image = case.path(&format!("repro{n}.{fs_name}"));
                let out = make_image(
                    &user,
                    case.dir.path(),
                    "subid",
                    &["--filesystem", fs_name, "--source", s(src), "-o", s(&image)],
                    &[("SOURCE_DATE_EPOCH", "1700000000")],
                );
                out.assert_success();
                std::thread::sleep(std::time::Duration::from_millis(1100));
                image
            })
            .collect();
        let (a, b) = (fs::read(&images[0]).unwrap(), fs::read(&images[1]).unwrap());
        let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
        assert!(
            a == b,
            "{fs_name}: two builds differ ({} vs {} bytes, first at {first_diff:?})",
            a.len(),
            b.len()
        );
        check_subid_image(&read_back(&user, fs_name, &images[0]));
    }
}

#[test]
fn a_fixed_size_that_is_too_small_says_what_it_needs() {
    let user = setup_as_root();
    let case = Case::new(&user);
    for fs_name in FILESYSTEMS {
        let image = case.path(&format!("small.{fs_name}"));
        let out = make_image(
            &user,
            case.dir.path(),
            "subid",
            &[
                "--filesystem",
                fs_name,
                "--source",
                s(&case.path("tree")),
                "--size",
                "64K",
                "-o",
                s(&image),
            ],
            &[],
        );
        out.assert_code(1)
            .assert_stderr_contains("\"size\" 64K is too small for this");
        out.assert_stderr_contains("it needs at least");
        assert!(!image.exists(), "a failed build left {}", image.display());
        // The size it names is enough.
        let needed = out
            .stderr
            .split("it needs at least ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .expect("a size")
            .to_string();
        let out = make_image(
            &user,
            case.dir.path(),
            "subid",
            &[
                "--filesystem",
                fs_name,
                "--source",
                s(&case.path("tree")),
                "--size",
                &needed,
                "-o",
                s(&image),
            ],
            &[],
        );
        out.assert_success();
        let want: u64 = needed.trim_end_matches('M').parse::<u64>().expect("MiB") << 20;
        assert_eq!(
            fs::metadata(&image).unwrap().len(),
            want,
            "{fs_name}: --size {needed}"
        );
    }
}

#[test]
fn auto_size_is_small_and_headroom_adds_free_space_to_ext4() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let tree = case.path("tree");
    let mut sizes = BTreeMap::new();
    for (name, extra) in [("auto", &[][..]), ("headroom", &["--headroom", "8M"][..])] {
        let image = case.path(&format!("{name}.ext4"));
        let args = [
            &[
                "--filesystem",
                "ext4",
                "--source",
                s(&tree),
                "-o",
                s(&image),
            ][..],
            extra,
        ]
        .concat();
        make_image(&user, case.dir.path(), "subid", &args, &[]).assert_success();
        sizes.insert(name, fs::metadata(&image).unwrap().len());
    }
    // 300 KiB of data plus metadata and the journal: a few MiB, not the estimate.
    assert!(sizes["auto"] < 8 << 20, "{sizes:?}");
    assert!(sizes["headroom"] >= sizes["auto"] + (8 << 20), "{sizes:?}");
}

#[test]
fn what_a_filesystem_cannot_express_is_refused_by_name() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let tree = case.path("tree");
    let cases: [(&str, &[&str], &str); 7] = [
        (
            "ext4",
            &["--compress", "zstd:3"],
            "\"compress\" cannot be used with ext4",
        ),
        (
            "ext4",
            &["--subvolumes"],
            "\"subvolumes\" cannot be used with ext4",
        ),
        (
            "erofs",
            &["--compress", "zstd"],
            "\"compress\": \"zstd\" is not available for erofs",
        ),
        (
            "erofs",
            &["--label", "nixos"],
            "\"label\" cannot be used with erofs",
        ),
        (
            "squashfs",
            &["--label", "nixos"],
            "\"label\" cannot be used with squashfs",
        ),
        (
            "squashfs",
            &["--headroom", "1M"],
            "\"headroom\" cannot be used with squashfs",
        ),
        (
            "squashfs",
            &["--compress", "brotli"],
            "is not available for squashfs",
        ),
    ];
    let mut failures = Vec::new();
    for (fs_name, extra, want) in cases {
        let image = case.path(&format!("refused.{fs_name}"));
        let args = [
            &[
                "--filesystem",
                fs_name,
                "--source",
                s(&tree),
                "-o",
                s(&image),
            ][..],
            extra,
        ]
        .concat();
        let out = make_image(&user, case.dir.path(), "subid", &args, &[]);
        if out.code() != Some(1) || !out.stderr.contains(want) || image.exists() {
            failures.push(format!(
                "{fs_name} {extra:?}: want exit 1 and {want:?}, nothing written:\n{out}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // What each does offer works.
    for (fs_name, compress) in [("erofs", "lz4hc:9"), ("squashfs", "zstd:19")] {
        let image = case.path(&format!("compressed.{fs_name}"));
        make_image(
            &user,
            case.dir.path(),
            "subid",
            &[
                "--filesystem",
                fs_name,
                "--source",
                s(&tree),
                "--compress",
                compress,
                "-o",
                s(&image),
            ],
            &[],
        )
        .assert_success();
        check_subid_image(&read_back(&user, fs_name, &image));
    }
}

// ---- through `rootbox build` ------------------------------------------------

/// A store path owned by root (as in /nix/store) and a file listing it.
fn make_closure(case: &Case) -> (PathBuf, PathBuf, String) {
    let store = case.path("store");
    dir(&store, 0, 0, 0o755);
    let name = "1m5zsvr3bq0a7cpd0ad4n9xz3hq2w8yk-hello";
    dir(&store.join(name), 0, 0, 0o555);
    dir(&store.join(name).join("bin"), 0, 0, 0o555);
    file(
        &store.join(name).join("bin/hello"),
        "#!/bin/sh\n",
        0,
        0,
        0o4555,
    );
    let list = case.path("store-paths");
    fs::write(&list, format!("{}\n", store.join(name).display())).expect("store-paths");
    (store, list, format!("/nix/store/{name}/bin/hello"))
}

/// `--json` says which filesystem it made, and holds that filesystem's
/// own details under its name, and no other's.
fn assert_report_names_its_filesystem(r: &Value, fs_name: &str) {
    assert_eq!(r["filesystem"], fs_name, "{r:#}");
    let package = match fs_name {
        "ext4" => "e2fsprogs",
        "erofs" => "erofs-utils",
        _ => "squashfs-tools",
    };
    let d = &r[fs_name];
    assert_eq!(d["tool"], package, "{r:#}");
    let version = d["tool_version"].as_str().expect("tool_version");
    assert_eq!(version.split('.').count(), 3, "{r:#}");
    assert!(d["verified_paths"].as_u64().unwrap_or(0) > 5, "{r:#}");
    // The UUID is read back from the image; squashfs has none.
    match fs_name {
        "squashfs" => assert!(r.get("uuid").is_none(), "{r:#}"),
        _ => assert_eq!(r["uuid"].as_str().map(str::len), Some(36), "{r:#}"),
    }
    for absent in [
        "btrfs",
        "mkfs_version",
        "mkfs_features",
        "reflink",
        "reproducible",
    ] {
        assert!(
            r.get(absent).is_none(),
            "{absent} in a {fs_name} report: {r:#}"
        );
    }
}

fn build(user: &User, args: &[&str]) -> Out {
    run(rootbox(user).arg("build").args(args))
}

#[test]
fn rootbox_build_makes_each_filesystem_from_a_rootfs_a_closure_and_a_manifest() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let (store, list, hello) = make_closure(&case);
    let manifest = case.path("owners");
    write_as(&user, &manifest, "/home/alice 1000 100 0700\n");
    for fs_name in FILESYSTEMS {
        let image = case.path(&format!("built.{fs_name}"));
        let out = build(
            &user,
            &[
                "--filesystem",
                fs_name,
                "--rootfs",
                s(&case.path("tree")),
                "--closure",
                s(&list),
                "--store-dir",
                s(&store),
                "--map",
                "subid",
                "--owners",
                s(&manifest),
                "--json",
                "-o",
                s(&image),
            ],
        );
        out.assert_success();
        let report: Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(report["verified"], true, "{out}");
        assert_report_names_its_filesystem(&report, fs_name);
        assert!(
            report[fs_name]["manifest_paths"].as_u64().unwrap_or(0) >= 1,
            "{report:#}"
        );
        let got = read_back(&user, fs_name, &image);
        // The store path: not mapped, given to root, not setuid root.
        assert_inode(&got, &hello, 0o100555, 0, 0);
        assert_inode(&got, "/home/alice", 0o40700, 1000, 100);
        assert_inode(&got, "/home/alice/.profile", 0o100644, 1000, 100);
        assert_inode(&got, "/etc/shadow", 0o100600, 0, 0);
        assert_inode(&got, "/usr/bin/sudo", 0o104755, 0, 0);
        assert_eq!(got["/dev/sda"]["rdev"], serde_json::json!([8, 0]));
        check_with_own_tools(&user, fs_name, &image);
    }
}

#[test]
fn rootbox_build_gives_a_tar_rootfs_its_header_owners() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let tar = case.path("rootfs.tar");
    // Python's tarfile writes the headers rootbox reads (uid, gid, mode).
    let script = format!(
        "import tarfile, io\n\
         t = tarfile.open({:?}, 'w')\n\
         for name, kind, uid, gid, mode in [('etc', tarfile.DIRTYPE, 0, 0, 0o755), \
         ('etc/shadow', tarfile.REGTYPE, 0, 42, 0o640), ('home', tarfile.DIRTYPE, 0, 0, 0o755), \
         ('home/bob', tarfile.DIRTYPE, 1001, 100, 0o700), ('usr', tarfile.DIRTYPE, 0, 0, 0o755), \
         ('usr/bin', tarfile.DIRTYPE, 0, 0, 0o755), ('usr/bin/passwd', tarfile.REGTYPE, 0, 0, 0o4755)]:\n\
         \x20   i = tarfile.TarInfo(name); i.type = kind; i.uid = uid; i.gid = gid; i.mode = mode\n\
         \x20   data = b'x\\n' if kind == tarfile.REGTYPE else b''\n\
         \x20   i.size = len(data); t.addfile(i, io.BytesIO(data))\n\
         t.close()\n",
        s(&tar)
    );
    run(Command::new("python3").args(["-c", &script])).assert_success();
    give_to(&user, &tar);
    for fs_name in FILESYSTEMS {
        let image = case.path(&format!("tar.{fs_name}"));
        build(
            &user,
            &[
                "--filesystem",
                fs_name,
                "--rootfs",
                s(&tar),
                "--map",
                "subid",
                "-o",
                s(&image),
            ],
        )
        .assert_success();
        let got = read_back(&user, fs_name, &image);
        assert_inode(&got, "/etc/shadow", 0o100640, 0, 42);
        assert_inode(&got, "/home/bob", 0o40700, 1001, 100);
        assert_inode(&got, "/usr/bin/passwd", 0o104755, 0, 0);
    }
}

#[test]
fn rootbox_build_refuses_what_a_filesystem_cannot_express() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let tree = case.path("tree");
    let spec = case.path("spec.json");
    write_as(
        &user,
        &spec,
        format!(
            "{{\"filesystem\": \"squashfs\", \"label\": \"nixos\", \"rootfs\": {:?}}}",
            s(&tree)
        ),
    );
    let image = case.path("refused.img");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec![
                "--filesystem",
                "ext4",
                "--rootfs",
                s(&tree),
                "--subvol",
                "@:/:default",
            ],
            "\"subvolumes\" cannot be used with ext4",
        ),
        (
            vec![
                "--filesystem",
                "erofs",
                "--rootfs",
                s(&tree),
                "--compress",
                "zstd:3",
            ],
            "\"compress\": \"zstd:3\" is not available for erofs",
        ),
        (
            vec!["--spec", s(&spec)],
            "\"label\" cannot be used with squashfs",
        ),
        (
            vec!["--filesystem", "xfs", "--rootfs", s(&tree)],
            "unknown filesystem \"xfs\"",
        ),
    ];
    let mut failures = Vec::new();
    for (args, want) in cases {
        let out = build(&user, &[&args[..], &["-o", s(&image)]].concat());
        if out.code() != Some(1) || !out.stderr.contains(want) || image.exists() {
            failures.push(format!(
                "{args:?}: want exit 1 and {want:?}, nothing written:\n{out}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // A tree sshd and systemd-tmpfiles would refuse: /etc writable by all.
    let bad = case.path("bad");
    dir(&bad, user.uid, user.gid, 0o755);
    dir(&bad.join("etc"), user.uid, user.gid, 0o777);
    for fs_name in FILESYSTEMS {
        let out = build(
            &user,
            &[
                "--filesystem",
                fs_name,
                "--rootfs",
                s(&bad),
                "-o",
                s(&image),
            ],
        );
        out.assert_code(1)
            .assert_stderr_contains("/etc: mode 777 is writable by group or others");
        assert!(
            !image.exists(),
            "{fs_name}: a failed build left {}",
            image.display()
        );
    }
}

#[test]
fn rootbox_build_is_reproducible_from_copies_on_two_filesystems() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let on_disk = case.path("copy-a");
    copy_tree(&case.path("tree"), &on_disk);
    let tmpfs = case.path("mnt");
    mount_tmpfs_for(&user, &tmpfs, "64M");
    let _unmount = Unmount(tmpfs.clone());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let in_memory = tmpfs.join("copy-b");
    copy_tree(&case.path("tree"), &in_memory);
    for fs_name in FILESYSTEMS {
        let mut bytes = Vec::new();
        for (n, src) in [&on_disk, &in_memory].into_iter().enumerate() {
            let image = case.path(&format!("built{n}.{fs_name}"));
            let out = run(rootbox(&user)
                .args([
                    "build",
                    "-q",
                    "--filesystem",
                    fs_name,
                    "--rootfs",
                    s(src),
                    "--map",
                    "subid",
                    // Explicit: SOURCE_DATE_EPOCH alone (every nixpkgs
                    // build) never makes the build copy its sources.
                    "--reproducible",
                ])
                .args(["-o", s(&image)])
                .env("SOURCE_DATE_EPOCH", "1700000000"));
            out.assert_success();
            bytes.push(fs::read(&image).expect("the image"));
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        // --reproducible stages a sorted copy: squashfs too gives the same
        // bytes (its xattrs keep the order the sources list them in).
        assert!(
            bytes[0] == bytes[1],
            "{fs_name}: two builds of two copies differ"
        );
    }
}

#[test]
fn rootbox_build_with_map_subrange_keeps_an_mmdebstrap_trees_owners() {
    let user = setup_as_root();
    let (start_u, start_g) = subid_ranges(&user)
        .map(|(a, b)| (a.0, b.0))
        .expect("subordinate ids");
    let case = Case::new(&user);
    // As `mmdebstrap --mode=unshare` leaves it: root is the range's first id.
    let tree = case.path("debian");
    dir(&tree, start_u, start_g, 0o755);
    dir(&tree.join("etc"), start_u, start_g, 0o755);
    file(
        &tree.join("etc/shadow"),
        "root:*:1::::::\n",
        start_u,
        start_g + 42,
        0o640,
    );
    dir(&tree.join("home"), start_u, start_g, 0o755);
    dir(
        &tree.join("home/alice"),
        start_u + 1000,
        start_g + 100,
        0o700,
    );
    dir(&tree.join("usr/bin"), start_u, start_g, 0o755);
    own(&tree.join("usr"), start_u, start_g);
    file(
        &tree.join("usr/bin/passwd"),
        "x\n",
        start_u,
        start_g,
        0o4755,
    );
    for fs_name in FILESYSTEMS {
        let image = case.path(&format!("debian.{fs_name}"));
        build(
            &user,
            &[
                "--filesystem",
                fs_name,
                "--rootfs",
                s(&tree),
                "--map",
                "subrange",
                "-o",
                s(&image),
            ],
        )
        .assert_success();
        let got = read_back(&user, fs_name, &image);
        assert_inode(&got, "/etc/shadow", 0o100640, 0, 42);
        assert_inode(&got, "/home/alice", 0o40700, 1000, 100);
        assert_inode(&got, "/usr/bin/passwd", 0o104755, 0, 0);
        assert_inode(&got, "/", 0o40755, 0, 0);
    }
}

// ---- names are bytes ------------------------------------------------------------

/// Names Linux allows that are not plain text: bytes that are not UTF-8,
/// a newline, a backslash, a colon, and the longest name (255 bytes).
fn odd_names() -> Vec<Vec<u8>> {
    vec![
        b"caf\xe9-latin1".to_vec(),
        b"new\nline".to_vec(),
        b"back\\slash".to_vec(),
        b"co:lon".to_vec(),
        vec![b'n'; 255],
    ]
}

/// A name as rootbox writes it in JSON (`__fs-read`, `inspect --json`):
/// UTF-8 as it is but `\` as `\\`, control characters and bytes that are
/// not UTF-8 as `\xnn`. Written out here so that the test does not take
/// the product's word for it.
fn escaped(name: &[u8]) -> String {
    let mut s = String::new();
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                c if c.is_control() => s.push_str(&format!("\\x{:02x}", c as u32)),
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// mkfs.erofs's version.
fn erofs_version() -> (u32, u32) {
    let out = run(Command::new("mkfs.erofs").arg("-V"));
    let text = out.stdout.clone() + &out.stderr;
    let v = text
        .split_whitespace()
        .find_map(|w| {
            let mut p = w.split(['.', '-']);
            Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no version in {text:?}"));
    v
}

/// A rootfs whose `srv/data` holds `names` (files, owned by the user) and
/// a symlink whose target is not text either.
fn odd_rootfs(user: &User, root: &Path, names: &[Vec<u8>]) {
    use std::os::unix::ffi::OsStrExt;
    let data = root.join("srv/data");
    fs::create_dir_all(&data).unwrap();
    for n in names {
        let p = data.join(std::ffi::OsStr::from_bytes(n));
        file(&p, "hi", user.uid, user.gid, 0o644);
    }
    let link = data.join("link");
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"tar\xe9get\nx"), &link).unwrap();
    lchown(&link, Some(user.uid), Some(user.gid)).unwrap();
    for d in [root, &root.join("srv"), &data] {
        dir(d, user.uid, user.gid, 0o755);
    }
}

/// The names in `dir`, as bytes.
fn names_in(dir: &Path) -> std::collections::BTreeSet<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect()
}

/// The image's `srv/data` extracted by the filesystem's own tool, as the
/// user: `btrfs restore` (with symlinks), `debugfs rdump`, `unsquashfs`, `fsck.erofs
/// --extract`.
fn extracted_by_own_tool(user: &User, fs_name: &str, image: &Path, to: &Path) -> PathBuf {
    let mut cmd = match fs_name {
        "btrfs" => {
            let mut c = cmd_as(user, "btrfs");
            c.args(["restore", "-s", "-S", s(image), s(to)]);
            c
        }
        "ext4" => {
            let mut c = cmd_as(user, "debugfs");
            // rdump cannot give the files their owners as the user: it says
            // so, and goes on.
            c.args(["-R", &format!("rdump /srv/data {}", s(to)), s(image)]);
            c
        }
        "squashfs" => {
            let mut c = cmd_as(user, "unsquashfs");
            c.args(["-d", &format!("{}/x", s(to)), s(image)]);
            c
        }
        _ => {
            let mut c = cmd_as(user, "fsck.erofs");
            c.arg(format!("--extract={}/x", s(to))).arg(image);
            c
        }
    };
    let out = run(&mut cmd);
    if fs_name != "ext4" {
        out.assert_success();
    }
    match fs_name {
        "btrfs" => to.join("@/srv/data"),
        "ext4" => to.join("data"),
        _ => to.join("x/srv/data"),
    }
}

/// Checks that `image` holds the odd names and the odd target byte for
/// byte: with rootbox's reader and with the filesystem's own tool.
fn check_odd_names(user: &User, case: &Case, fs_name: &str, image: &Path, names: &[Vec<u8>]) {
    let mut want: Vec<String> = names.iter().map(|n| escaped(n)).collect();
    want.push("link".into());
    let (prefix, paths): (&str, Vec<String>) = if fs_name == "btrfs" {
        let ins = Inspected::of(user, image);
        assert_eq!(
            ins.get("@/srv/data/link")["symlink_target"],
            escaped(b"tar\xe9get\nx")
        );
        ("@/srv/data/", ins.entries.keys().cloned().collect())
    } else {
        let got = read_back(user, fs_name, image);
        assert_eq!(got["/srv/data/link"]["target"], escaped(b"tar\xe9get\nx"));
        ("/srv/data/", got.keys().cloned().collect())
    };
    let mut have: Vec<String> = paths
        .iter()
        .filter_map(|p| p.strip_prefix(prefix))
        .map(str::to_string)
        .collect();
    have.sort();
    want.sort();
    assert_eq!(have, want, "{fs_name}: rootbox's reader");
    let to = case.path(&format!("extracted-{fs_name}"));
    fs::create_dir_all(&to).unwrap();
    own(&to, user.uid, user.gid);
    let mut own_names: Vec<Vec<u8>> = names.to_vec();
    own_names.push(b"link".to_vec());
    let own_names: std::collections::BTreeSet<Vec<u8>> = own_names.into_iter().collect();
    let dir = extracted_by_own_tool(user, fs_name, image, &to);
    assert_eq!(names_in(&dir), own_names, "{fs_name}: its own tool");
    let target = fs::read_link(dir.join("link")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    assert_eq!(target.as_os_str().as_bytes(), b"tar\xe9get\nx", "{fs_name}");
}

#[test]
fn any_name_linux_allows_reaches_every_filesystem_byte_for_byte() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let rootfs = case.path("names");
    let names = odd_names();
    odd_rootfs(&user, &rootfs, &names);
    let erofs_1_5 = erofs_version() <= (1, 5);
    for fs_name in ["btrfs", "ext4", "squashfs", "erofs"] {
        let image = case.path(&format!("names.{fs_name}"));
        let mut args = vec!["--filesystem", fs_name, "--rootfs", s(&rootfs), "--json"];
        if fs_name == "btrfs" {
            args.extend(["--subvol", "@:/:default"]);
        }
        args.extend(["-o", s(&image)]);
        let out = build(&user, &args);
        if fs_name == "erofs" && erofs_1_5 {
            // mkfs.erofs 1.5 fails on a 255-byte name: said plainly, by
            // the path as given, before mkfs runs; nothing is written.
            assert!(!out.status.success(), "{out}");
            let long = format!("{}/srv/data/{}", s(&rootfs), "n".repeat(255));
            for needle in [
                long.as_str(),
                "a name of 255 bytes",
                "mkfs.erofs 1.5 cannot write",
                "up to 254 bytes",
                "newer erofs-utils",
            ] {
                out.assert_stderr_contains(needle);
            }
            for internal in ["/stage/", "rootbox-build-"] {
                assert!(!out.stderr.contains(internal), "{internal} in:\n{out}");
            }
            assert!(!image.exists(), "{out}");
            // Every other name reaches an erofs image of this version.
            fs::remove_file(rootfs.join("srv/data").join("n".repeat(255))).unwrap();
            let out = build(&user, &args);
            out.assert_success();
            let fewer: Vec<Vec<u8>> = names.iter().filter(|n| n.len() < 255).cloned().collect();
            check_odd_names(&user, &case, fs_name, &image, &fewer);
            continue;
        }
        out.assert_success();
        let r: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(r["filesystem"], fs_name, "{r:#}");
        check_odd_names(&user, &case, fs_name, &image, &names);
    }
}

#[test]
fn errors_about_the_tree_name_the_users_path_never_the_staging_tree() {
    let user = setup_as_root();
    let case = Case::new(&user);
    let rootfs = case.path("names");
    odd_rootfs(&user, &rootfs, &odd_names());
    // Owned by a group the namespace does not map: mksquashfs must be told
    // its owner, in a pseudo file that cannot hold a newline.
    let odd = rootfs.join("srv/data/new\nline");
    own(&odd, user.uid, 0);
    let image = case.path("bad.squashfs");
    let out = build(
        &user,
        &[
            "--filesystem",
            "squashfs",
            "--rootfs",
            s(&rootfs),
            "-o",
            s(&image),
        ],
    );
    assert!(!out.status.success(), "{out}");
    out.assert_stderr_contains(&format!("{}/srv/data/new\\x0aline", s(&rootfs)));
    out.assert_stderr_contains("newline");
    for internal in ["/stage/", "rootbox-build-"] {
        assert!(!out.stderr.contains(internal), "{internal} in:\n{out}");
    }
    assert!(!image.exists(), "{out}");
}

// ---- vfat: a directory made into FAT through the same pipeline ----------
//
// FAT has no owners, so the build needs no user namespace; the tree is the
// test user's own. Each image is read back by fsck.vfat -n, by mtools
// (mdir, mcopy: byte for byte), and by rootbox's own FAT reader (`rootbox
// inspect` of a disk holding the image, and the build's own verification).

/// An EFI system partition's tree, the test user's: nested directories, a
/// long UTF-8 name, an empty file, a file of many clusters, an empty
/// directory.
fn esp_tree(user: &User, root: &Path) {
    write_as(user, &root.join("EFI/BOOT/BOOTX64.EFI"), noise(300_000));
    write_as(
        user,
        &root.join("loader/entries/nixos génération 42.conf"),
        "title NixOS\n",
    );
    write_as(user, &root.join("loader/loader.conf"), "timeout 3\n");
    write_as(user, &root.join("empty"), "");
    create_dirs_as(user, &root.join("EFI/Linux"));
}

/// mtools with no user configuration, as root.
fn mtools(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("MTOOLSRC", "/dev/null")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8");
    c
}

/// Every regular file and directory below `root`, relative, with the
/// file's bytes (None for a directory).
fn tree_of(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, rel: &Path, into: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let rel = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                into.insert(rel.clone(), None);
                walk(root, &rel, into);
            } else {
                into.insert(rel, Some(fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut t = BTreeMap::new();
    walk(root, Path::new(""), &mut t);
    t
}

/// `fsck.vfat -n` finds the image clean, and `mcopy -s` copies out the
/// same tree as `src`, byte for byte.
#[track_caller]
fn assert_fat_holds(image: &Path, src: &Path, scratch: &Path) {
    let out = run(Command::new("fsck.vfat").arg("-n").arg(image));
    out.assert_success();
    let back = scratch.join("mcopy-out");
    let _ = fs::remove_dir_all(&back);
    fs::create_dir_all(&back).unwrap();
    run(mtools("mcopy")
        .args(["-s", "-n", "-i", s(image), "::/*"])
        .arg(&back))
    .assert_success();
    let (want, got) = (tree_of(src), tree_of(&back));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "mcopy read back other paths"
    );
    for (p, bytes) in &want {
        assert!(got[p] == *bytes, "{} differs after mcopy", p.display());
    }
}

/// The image as a raw partition of a disk, listed by `rootbox inspect`
/// with rootbox's FAT reader: the files of `want`, the label and id.
#[track_caller]
fn assert_rootbox_reads_fat(user: &User, dir: &Path, image: &Path, report: &Value) {
    let spec = format!(
        r#"{{"table": "gpt", "partitions": [{{"name": "esp", "type": "esp", "content": {{"raw": "{}"}}}}]}}"#,
        s(image)
    );
    write_as(user, &dir.join("holder.json"), spec);
    let disk = dir.join("holder.img");
    let out = run(rootbox(user).args([
        "disk",
        "-q",
        "--spec",
        s(&dir.join("holder.json")),
        "-o",
        s(&disk),
    ]));
    out.assert_success();
    let out = run(rootbox(user).args(["inspect", "--json", s(&disk)]));
    out.assert_success();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let p = &v["partitions"][0];
    assert_eq!(p["kind"], "vfat", "{v:#}");
    let fat = &p["content"]["fat"];
    assert_eq!(fat["label"], report["label"], "{v:#}");
    assert_eq!(fat["volume_id"], report["vfat"]["volume_id"], "{v:#}");
    let files: Vec<&str> = fat["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in [
        "/EFI/BOOT/BOOTX64.EFI",
        "/loader/entries/nixos génération 42.conf",
        "/empty",
        "/EFI/Linux/",
    ] {
        assert!(files.contains(&f), "{f} not in {files:?}");
    }
    let _ = fs::remove_file(&disk);
}

#[test]
fn a_vfat_image_of_a_directory_reads_back_with_fsck_mtools_and_rootbox() {
    let user = setup_as_root();
    let dir = tempdir_for(&user);
    let esp = dir.path().join("esp");
    esp_tree(&user, &esp);
    // --map subid too: FAT keeps no owners, so the map changes nothing.
    for map in ["auto", "subid"] {
        let image = dir.path().join(format!("esp-{map}.img"));
        let out = build(
            &user,
            &[
                "--json",
                "--filesystem",
                "vfat",
                "--rootfs",
                s(&esp),
                "--label",
                "ESP",
                "--map",
                map,
                "-o",
                s(&image),
            ],
        );
        out.assert_success();
        let r: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["filesystem"], "vfat", "{r:#}");
        assert_eq!(r["verified"], true, "{r:#}");
        assert_eq!(r["label"], "ESP", "{r:#}");
        let v = &r["vfat"];
        assert_eq!(v["tool"], "dosfstools", "{r:#}");
        assert!(
            [12, 16, 32].contains(&v["fat_size"].as_u64().unwrap()),
            "{r:#}"
        );
        assert_eq!(r["uuid"], v["volume_id"], "{r:#}");
        assert_eq!(v["verified_files"], 4, "{r:#}");
        // The test user made it, and it is theirs.
        assert_eq!(fs::metadata(&image).unwrap().uid(), user.uid);
        let mdir = run(mtools("mdir").args(["-/", "-b", "-i", s(&image), "::/"]));
        mdir.assert_success();
        for f in [
            "::/EFI/BOOT/BOOTX64.EFI",
            "::/loader/entries/nixos génération 42.conf",
        ] {
            assert!(mdir.stdout.contains(f), "{f}:\n{mdir}");
        }
        assert_fat_holds(&image, &esp, dir.path());
        assert_rootbox_reads_fat(&user, dir.path(), &image, &r);
    }
}

#[test]
fn a_vfat_build_is_reproducible_from_copies_on_two_filesystems() {
    let user = setup_as_root();
    let dir = tempdir_for(&user);
    let on_disk = dir.path().join("copy-a");
    esp_tree(&user, &on_disk);
    let tmpfs = dir.path().join("mnt");
    mount_tmpfs_for(&user, &tmpfs, "64M");
    let _unmount = Unmount(tmpfs.clone());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let in_memory = tmpfs.join("copy-b");
    esp_tree(&user, &in_memory);
    let mut bytes = Vec::new();
    for (n, src) in [&on_disk, &in_memory].into_iter().enumerate() {
        let image = dir.path().join(format!("built{n}.vfat"));
        let out = run(rootbox(&user)
            .args([
                "build",
                "--json",
                "--filesystem",
                "vfat",
                "--rootfs",
                s(src),
            ])
            .args(["-o", s(&image)])
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        out.assert_success();
        let r: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["vfat"]["reproducible_epoch"], 1_700_000_000, "{r:#}");
        // Every time is the epoch (2023-11-14 22:13:20 UTC).
        let mdir = run(mtools("mdir").args(["-i", s(&image), "::/EFI/BOOT"]));
        mdir.assert_success();
        assert!(mdir.stdout.contains("2023-11-14"), "{mdir}");
        assert_fat_holds(&image, src, dir.path());
        bytes.push(fs::read(&image).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(bytes[0] == bytes[1], "two vfat builds of two copies differ");
    // Without the epoch, the volume id is random: another image.
    let image = dir.path().join("random.vfat");
    build(
        &user,
        &[
            "-q",
            "--filesystem",
            "vfat",
            "--rootfs",
            s(&on_disk),
            "-o",
            s(&image),
        ],
    )
    .assert_success();
    assert!(fs::read(&image).unwrap() != bytes[0]);
}

#[test]
fn what_fat_cannot_hold_is_refused_before_anything_is_made_naming_it() {
    let user = setup_as_root();
    let dir = tempdir_for(&user);
    let d = dir.path();
    // One rootfs per refusal: a sparse 4 GiB file, a non-UTF-8 name, a
    // name with a colon; and one good tree for the refused fields.
    let big = d.join("big");
    create_dirs_as(&user, &big.join("fw"));
    let f = fs::File::create(big.join("fw/huge.bin")).unwrap();
    f.set_len(1 << 32).unwrap();
    give_tree_to(&user, &big);
    let latin1 = d.join("latin1");
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9-latin1");
        write_as(&user, &latin1.join("srv/data").join(name), "hi");
    }
    let colon = d.join("colon");
    write_as(&user, &colon.join("a:b.txt"), "x");
    let large = d.join("large");
    write_as(&user, &large.join("kernel"), noise(3 << 20));
    let good = d.join("good");
    esp_tree(&user, &good);
    write_as(&user, &d.join("owners.txt"), "/empty 0 0 0644\n");
    let spec = |field: &str| {
        let p = d.join(format!("{}.json", field.split(':').next().unwrap()));
        write_as(
            &user,
            &p,
            format!(
                r#"{{"filesystem": "vfat", "rootfs": "{}", {field}}}"#,
                s(&good)
            ),
        );
        p
    };
    let uuid_spec = spec(r#""uuid": "2d1bd9b4-aaaa-4bbb-8ccc-0123456789ab""#);
    let owners_spec = spec(&format!(r#""owners": "{}""#, s(&d.join("owners.txt"))));
    let closure_spec = spec(&format!(r#""closure": "{}""#, s(&good)));
    let subvol_spec = spec(r#""subvolumes": [{"name": "@", "mountpoint": "/"}]"#);
    let vfat = |rootfs: &Path| {
        vec!["--filesystem", "vfat", "--rootfs", s(rootfs)]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let with_spec = |p: &Path| vec!["--spec".to_string(), s(p).to_string()];
    let rows: Vec<(&str, Vec<String>, Vec<String>)> = vec![
        (
            "a file of 4 GiB",
            vfat(&big),
            vec![format!("{}/fw/huge.bin", s(&big)), "below 4 GiB".into()],
        ),
        (
            "a non-UTF-8 name",
            vfat(&latin1),
            vec!["caf\\xE9-latin1".into(), "UTF-16".into()],
        ),
        (
            "a name with a colon",
            vfat(&colon),
            vec![format!("{}/a:b.txt", s(&colon)), "':'".into()],
        ),
        (
            "too many bytes for a fixed size",
            [vfat(&large), vec!["--size".into(), "1M".into()]].concat(),
            vec!["too small for its files".into(), s(&large).to_string()],
        ),
        (
            "a label of 12 characters",
            [vfat(&good), vec!["--label".into(), "ABCDEFGHIJKL".into()]].concat(),
            vec!["1 to 11 characters".into()],
        ),
        (
            "subvolumes (flag)",
            [vfat(&good), vec!["--subvol".into(), "@:/".into()]].concat(),
            vec!["\"subvolumes\" cannot be used with vfat".into()],
        ),
        (
            "subvolumes (spec)",
            with_spec(&subvol_spec),
            vec!["\"subvolumes\" cannot be used with vfat".into()],
        ),
        (
            "a closure",
            with_spec(&closure_spec),
            vec![
                "\"closure\" cannot be used with vfat".into(),
                "symlinks".into(),
            ],
        ),
        (
            "an owners manifest",
            with_spec(&owners_spec),
            vec![
                "\"owners\" cannot be used with vfat".into(),
                "no owners".into(),
            ],
        ),
        (
            "a uuid",
            with_spec(&uuid_spec),
            vec![
                "\"uuid\" cannot be used with vfat".into(),
                "volume id".into(),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (what, args, needles) in &rows {
        let image = d.join("out.img");
        let out = run(rootbox(&user)
            .arg("build")
            .args(args)
            .args(["-o", s(&image)]));
        let mut wrong = Vec::new();
        if out.status.success() {
            wrong.push("it succeeded".to_string());
        }
        for n in needles {
            if !out.stderr.contains(n.as_str()) {
                wrong.push(format!("no {n:?}"));
            }
        }
        for internal in ["/stage/", "rootbox-build-"] {
            if out.stderr.contains(internal) {
                wrong.push(format!("{internal} named"));
            }
        }
        if image.exists() {
            wrong.push("an image at the output".into());
        }
        let left: Vec<_> = fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".rootbox"))
            .map(|e| e.file_name())
            .collect();
        if !left.is_empty() {
            wrong.push(format!("left {left:?}"));
        }
        if !wrong.is_empty() {
            failures.push(format!("{what}: {}\n{out}", wrong.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_vfat_build_stopped_by_sigterm_leaves_no_image_and_the_next_build_sweeps_its_scratch() {
    let user = setup_as_root();
    let dir = tempdir_for(&user);
    let marker = unique_marker("vfat-sigterm-");
    let src = dir.path().join("big");
    create_dirs_as(&user, &src);
    // Sparse files: quick to make, but mcopy writes every byte.
    for i in 0..48 {
        let p = src.join(format!("{marker}-{i}.bin"));
        fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
    }
    give_tree_to(&user, &src);
    let image = dir.path().join("esp.img");
    let running = start(rootbox(&user).args([
        "build",
        "-q",
        "--filesystem",
        "vfat",
        "--rootfs",
        s(&src),
        "-o",
        s(&image),
    ]));
    let mcopy = |a: &[String]| a[0].ends_with("mcopy") && a.iter().any(|x| x.contains(&marker));
    assert!(
        wait_until(std::time::Duration::from_secs(30), || !pids_with_args(
            mcopy
        )
        .is_empty()),
        "mcopy never started"
    );
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let out = running.finish_within(std::time::Duration::from_secs(20));
    assert!(
        signal_of(&out.status) == Some(15) || out.code() == Some(143),
        "want death by SIGTERM or exit 143:\n{out}"
    );
    assert!(!image.exists(), "an image at the output:\n{out}");
    // mcopy ends with its batch; its unnamed image goes with it.
    assert!(
        wait_until(std::time::Duration::from_secs(30), || pids_with_args(mcopy)
            .is_empty()),
        "mcopy still runs"
    );
    // Without a namespace nothing forwards the signal: rootbox dies of it
    // and its scratch stays beside the output (locked while it lived), for
    // the next build there to sweep.
    let left = || -> Vec<_> {
        fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with(".rootbox"))
            .collect()
    };
    let small = dir.path().join("small");
    write_as(&user, &small.join("f"), "x");
    let again = dir.path().join("again.img");
    build(
        &user,
        &[
            "-q",
            "--filesystem",
            "vfat",
            "--rootfs",
            s(&small),
            "-o",
            s(&again),
        ],
    )
    .assert_success();
    assert!(left().is_empty(), "not swept: {:?}", left());
}

/// `rootbox inspect` of a standalone image of each filesystem: what the
/// build put there, read back by rootbox's readers (no mount, no tool).
#[test]
fn rootbox_inspect_lists_a_standalone_image_of_every_filesystem() {
    let user = setup_as_root();
    assert_unprivileged(&user);
    let dir = tempdir_for(&user);
    let tree = dir.path().join("tree");
    esp_tree(&user, &tree);
    for fs_name in ["ext4", "erofs", "squashfs", "vfat"] {
        let image = dir.path().join(format!("{fs_name}.img"));
        build(
            &user,
            &[
                "--filesystem",
                fs_name,
                "--rootfs",
                s(&tree),
                "-o",
                s(&image),
            ],
        )
        .assert_success();
        let out = run(rootbox(&user).arg("inspect").arg("--json").arg(&image));
        out.assert_success();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{fs_name}: not JSON ({e}):\n{out}"));
        assert_eq!(v["filesystem"], fs_name, "{out}");
        let entries = v["entries"].as_array().expect("entries");
        let conf = "/loader/entries/nixos génération 42.conf";
        let e = entries
            .iter()
            .find(|e| e["path"] == conf)
            .unwrap_or_else(|| panic!("{fs_name}: {conf} not listed:\n{out}"));
        if fs_name != "vfat" {
            // Owners: the test user's files are root's in the image.
            assert_eq!(
                (e["uid"].as_u64(), e["gid"].as_u64()),
                (Some(0), Some(0)),
                "{e}"
            );
            assert_eq!(
                e["mode"].as_u64().map(|m| m & 0o170000),
                Some(0o100000),
                "{e}"
            );
        }
        // The text listing and a subtree.
        let out = run(rootbox(&user).args(["inspect", s(&image), "EFI/BOOT"]));
        out.assert_success();
        assert!(out.stdout.contains(&format!("({fs_name})")), "{out}");
        assert!(out.stdout.contains("/EFI/BOOT/BOOTX64.EFI"), "{out}");
        assert!(
            !out.stdout.contains("loader.conf"),
            "not under EFI/BOOT:\n{out}"
        );
        // No subvolumes to choose from.
        run(rootbox(&user).args(["inspect", s(&image), "--subvol", "@"]))
            .assert_code(1)
            .assert_stderr_contains("has no subvolumes");
    }
    // Not an image of anything: the error says what was tried.
    let junk = dir.path().join("junk.img");
    write_as(&user, &junk, vec![0u8; 1 << 20]);
    run(rootbox(&user).args(["inspect", s(&junk)]))
        .assert_code(1)
        .assert_stderr_contains("no ext4, erofs, squashfs or FAT superblock");
}

//! Builds without a user namespace make the image a namespace build makes.
//!
//! For btrfs, ext4, erofs and squashfs the same tree is built three ways,
//! reproducibly (`SOURCE_DATE_EPOCH` + `--reproducible`), as the test user:
//! (a) normally with `--map single`; (b) where no namespace can be had,
//! with the default `--map auto` — under `qemu-x86_64-static` (the real
//! emulation case: qemu-user runs rootbox in a multi-threaded process,
//! and the kernel refuses it a user namespace) and in an enclosing
//! namespace whose `user.max_user_namespaces` is used up, and (ext4) in a
//! real chroot with the tools copied in; (c) with
//! `--no-userns`. The images are read back with rootbox's readers
//! (`inspect --json` for btrfs, `__fs-read` for the others) and must be
//! equal entry for entry (owner, mode, type, rdev, xattrs, symlink targets,
//! names); ext4, erofs and squashfs images must be byte-identical. btrfs
//! images are not: mkfs.btrfs before 7.3 numbers inodes in the order it
//! lists the staging directories, which differs between the namespace's
//! tmpfs and the on-disk copy. The fallback says why in one WARN line and
//! in `--json`'s `namespace`.
//!
//! The tree holds the user's files (one setuid), a setuid file of another
//! owner (root's without the set-id bit in the image, as the single map
//! gives it), a hard link, a symlink, a fifo, a user xattr, and a symlink
//! and a directory whose times are older than the epoch (a read of the
//! staged copy once moved their atimes, so the images differed); the
//! first test adds 300 small files (enough that the owner fixes a build
//! without a namespace needs once made debugfs write more: the ext4
//! superblock's `s_kbytes_written` differed). Device nodes and
//! `security.capability`, which a copy without a namespace stages as FIFOs
//! and placeholders for the fix-ups to turn into the real thing (see the
//! README), are in a test of their own, built with and without a
//! namespace and compared the same way.
//!
//! The other way round, a native rootbox drives emulated tools: every mkfs
//! and reader run under `qemu-x86_64-static`, the namespace build as
//! usual, the image byte-identical to the native tools' one.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

const FILESYSTEMS: [&str; 4] = ["btrfs", "ext4", "erofs", "squashfs"];
const EPOCH: &str = "1700000000";
/// A time before the epoch, for entries whose times the image keeps.
const OLD: &str = "2021-01-03 00:00:00 UTC";
/// How many small files the first test's tree holds besides.
const MANY: usize = 300;
/// The owner of the file that is neither the user's nor root's.
const OTHER: u32 = 4242;

/// Whether a check that cannot run here must fail (CI) or may be skipped.
fn must_run() -> bool {
    std::env::var_os("CI").is_some()
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("chown");
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The tree of the module doc, under `dir/root`; made as root.
fn tree(user: &User, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    write_as(user, &root.join("etc/hostname"), "box\n");
    write_as(user, &root.join("etc/shadow"), "root:*:1::::::\n");
    chmod(&root.join("etc/shadow"), 0o640);
    write_as(user, &root.join("bin/su"), "su");
    chmod(&root.join("bin/su"), 0o4755);
    write_as(user, &root.join("bin/other-su"), "other");
    chown(&root.join("bin/other-su"), OTHER, OTHER);
    chmod(&root.join("bin/other-su"), 0o6755);
    fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.link")).unwrap();
    symlink_as(user, "../etc/hostname", &root.join("bin/link"));
    create_dirs_as(user, &root.join("run"));
    let out = run(cmd_as(user, "mkfifo").arg(root.join("run/fifo")));
    out.assert_success();
    write_as(user, &root.join("data/tagged"), "x");
    let out = run(Command::new("setfattr").args([
        "-n",
        "user.comment",
        "-v",
        "kept",
        s(&root.join("data/tagged")),
    ]));
    out.assert_success();
    // Times older than the epoch, which a reproducible build keeps: a
    // symlink and a directory, whose atimes any readlink or readdir of a
    // writable copy moves (the namespace reads a sealed, read-only tree).
    symlink_as(user, "hostname", &root.join("etc/old-link"));
    write_as(user, &root.join("srv/old/file"), "old");
    let out = run(Command::new("touch")
        .args(["-h", "-d", OLD])
        .args([root.join("etc/old-link"), root.join("srv/old")]));
    out.assert_success();
    root
}

/// How a build is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// In a user namespace, `--map single`.
    Single,
    /// `--no-userns`.
    NoUserns,
    /// Under `qemu-x86_64-static`, `--map auto`.
    Emulated,
    /// In a namespace with `user.max_user_namespaces` used up, `--map auto`.
    Exhausted,
}

fn build_args(fs_name: &str, root: &Path, image: &Path, how: How) -> Vec<String> {
    let mut a: Vec<String> = ["build", "--json", "--reproducible", "--filesystem", fs_name]
        .map(String::from)
        .to_vec();
    a.extend([
        "--rootfs".into(),
        s(root).into(),
        "-o".into(),
        s(image).into(),
    ]);
    if fs_name == "btrfs" {
        a.extend(["--subvol".into(), "@:/:default".into()]);
    }
    match how {
        How::Single => a.extend(["--map".into(), "single".into()]),
        How::NoUserns => a.push("--no-userns".into()),
        How::Emulated | How::Exhausted => {}
    }
    a
}

/// `qemu-x86_64-static`, or None where it is missing (a failure under CI).
fn qemu() -> Option<PathBuf> {
    let q = find_tool("qemu-x86_64-static");
    assert!(
        q.is_some() || !must_run(),
        "qemu-x86_64-static is missing: apt-get install qemu-user-static"
    );
    q
}

/// Builds `image`; None where `how` cannot be arranged here.
fn build(user: &User, fs_name: &str, root: &Path, image: &Path, how: How) -> Option<Out> {
    let args = build_args(fs_name, root, image, how);
    let mut cmd = match how {
        How::Single | How::NoUserns => rootbox(user),
        How::Emulated => {
            let mut c = cmd_as(user, qemu()?);
            c.arg(rootbox_bin());
            c
        }
        How::Exhausted => {
            let script = format!(
                "echo 1 > /proc/sys/user/max_user_namespaces || exit 99; \
                 exec unshare --user --map-user={} --map-group={} \"$@\"",
                user.uid, user.gid
            );
            let mut c = cmd_as(user, "unshare");
            c.args(["--user", "--map-root-user", "sh", "-c", &script, "sh"])
                .arg(rootbox_bin());
            c
        }
    };
    cmd.env("SOURCE_DATE_EPOCH", EPOCH).args(&args);
    let out = run(&mut cmd);
    if how == How::Exhausted && out.code() == Some(99) {
        assert!(
            !must_run(),
            "cannot lower user.max_user_namespaces here:\n{out}"
        );
        return None;
    }
    Some(out)
}

/// The key of an image path in a listing.
fn key(fs_name: &str, path: &str) -> String {
    if fs_name == "btrfs" {
        format!("@{path}")
    } else {
        path.to_string()
    }
}

/// What the single map gives the tree: checked on the namespace build, so
/// that equal images are also right ones.
fn assert_single_map_owners(fs_name: &str, l: &BTreeMap<String, Value>) {
    let get = |p: &str| {
        let e = l
            .get(&key(fs_name, p))
            .unwrap_or_else(|| panic!("{fs_name}: {p} missing: {:?}", l.keys()));
        (
            e["uid"].as_u64().unwrap(),
            e["gid"].as_u64().unwrap(),
            e["mode"].as_u64().unwrap() as u32,
        )
    };
    assert_eq!(get("/bin/su"), (0, 0, 0o104755), "{fs_name}");
    assert_eq!(get("/bin/other-su"), (0, 0, 0o100755), "{fs_name}");
    assert_eq!(get("/etc/shadow"), (0, 0, 0o100640), "{fs_name}");
    assert_eq!(get("/run/fifo").2 & 0o170000, 0o010000, "{fs_name}");
}

/// The report says the build ran without a namespace, and why; the WARN
/// line says it once.
#[track_caller]
fn assert_fell_back(out: &Out, why: &str) {
    out.assert_success();
    let r: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(r["namespace"]["used"], false, "{out}");
    let reason = r["namespace"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "the reason must say {why:?}:\n{out}");
    let warns: Vec<&str> = out.stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warns.len(), 1, "want exactly one WARN line:\n{out}");
    assert!(
        warns[0].contains("no user namespace")
            && warns[0].contains(why)
            && warns[0].contains("continues without one"),
        "{out}"
    );
}

fn setup() -> Option<(User, tempfile::TempDir, PathBuf)> {
    let user = test_user();
    assert_unprivileged(&user);
    if !is_root() {
        assert!(
            !must_run(),
            "the tree needs root to give a file to another owner"
        );
        eprintln!("SKIPPED: the tree needs root to give a file to another owner");
        return None;
    }
    let dir = tempdir_for(&user);
    let root = tree(&user, dir.path());
    Some((user, dir, root))
}

#[test]
fn every_filesystem_built_without_a_namespace_equals_the_namespace_build() {
    let Some((user, dir, root)) = setup() else {
        return;
    };
    // Enough inodes that the owner fixes of a build without a namespace
    // (every inode is the caller's) once made debugfs write more than the
    // namespace build's did: the ext4 superblock's s_kbytes_written
    // differed (seen from 200 files on; not with 100).
    for i in 0..MANY {
        write_as(&user, &root.join(format!("usr/share/many/{i}")), "m");
    }
    for fs_name in FILESYSTEMS {
        let image = |n: &str| dir.path().join(format!("{n}.{fs_name}"));
        let out = build(&user, fs_name, &root, &image("single"), How::Single).unwrap();
        out.assert_success();
        let r: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["namespace"], serde_json::json!({"used": true}), "{out}");
        let single = listing(&user, fs_name, &image("single"));
        assert_single_map_owners(fs_name, &single);
        // rootbox's squashfs reader does not see xattrs (`null`).
        let tagged = &single[&key(fs_name, "/data/tagged")];
        assert!(
            fs_name == "squashfs" || tagged["xattrs"].to_string().contains("user.comment"),
            "{fs_name}: {tagged}"
        );

        let mut others = vec![("--no-userns", image("no-userns"))];
        let out = build(&user, fs_name, &root, &image("no-userns"), How::NoUserns).unwrap();
        out.assert_success();
        let r: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["namespace"]["used"], false, "{out}");
        assert!(
            r["namespace"]["reason"]
                .as_str()
                .unwrap()
                .contains("--no-userns"),
            "{out}"
        );
        if let Some(out) = build(&user, fs_name, &root, &image("emulated"), How::Emulated) {
            assert_fell_back(&out, "emulation");
            others.push(("emulated", image("emulated")));
        }
        if let Some(out) = build(&user, fs_name, &root, &image("exhausted"), How::Exhausted) {
            assert_fell_back(&out, "limit on user namespaces");
            others.push(("user.max_user_namespaces used up", image("exhausted")));
        }
        for (what, other) in &others {
            let what = format!("{fs_name}, {what}");
            assert_same_listing(&single, &listing(&user, fs_name, other), &what);
            if fs_name != "btrfs" {
                assert!(
                    fs::read(image("single")).unwrap() == fs::read(other).unwrap(),
                    "{what}: the image is not byte-identical to the namespace build"
                );
            }
        }
    }
}

/// An explicit map is no invitation to fall back: under emulation
/// `--map single` fails with the cause.
#[test]
fn an_explicit_map_under_emulation_fails_with_the_cause() {
    let Some((user, dir, root)) = setup() else {
        return;
    };
    let Some(q) = qemu() else {
        eprintln!("SKIPPED: no qemu-x86_64-static");
        return;
    };
    let image = dir.path().join("img");
    let mut cmd = cmd_as(&user, q);
    cmd.arg(rootbox_bin())
        .args(build_args("ext4", &root, &image, How::Single));
    let out = run(&mut cmd);
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("cannot start a sandbox from a process with");
    out.assert_stderr_contains("runs under emulation");
    out.assert_stderr_contains("--no-userns builds without one");
    assert!(!image.exists(), "{out}");
}

/// A directory the user cannot read is refused by its path, as the
/// single-map namespace build refuses it.
#[test]
fn an_unreadable_directory_is_refused_by_its_path() {
    let Some((user, dir, root)) = setup() else {
        return;
    };
    let secret = root.join("home/bob");
    fs::create_dir_all(&secret).unwrap();
    fs::write(secret.join("notes"), "x").unwrap();
    chown(&secret, OTHER, OTHER);
    chmod(&secret, 0o700);
    for fs_name in ["btrfs", "ext4"] {
        let image = dir.path().join(format!("img.{fs_name}"));
        for how in [How::NoUserns, How::Single] {
            let out = build(&user, fs_name, &root, &image, how).unwrap();
            assert_ne!(out.code(), Some(0), "{fs_name} {how:?}: {out}");
            out.assert_stderr_contains(s(&secret));
            assert!(!image.exists(), "{fs_name} {how:?}: {out}");
        }
    }
}

/// Device nodes and file capabilities, which a copy without a namespace
/// can neither make nor set, reach the image anyway: staged as FIFOs and
/// placeholders, written by each filesystem's fix-up (see the README).
/// For each filesystem the tree (with a `c 1 3` node, a `b 7 0` node of
/// mode 0660 and a file with `cap_net_raw+ep`, all the user's) is built
/// with `--no-userns` and in a namespace (`--map single`), both
/// `--reproducible`: the listings are equal (mode with type, device
/// number, owners, `security.capability`'s value), the images (but
/// btrfs's, see the module doc) byte-identical, and the filesystem's own
/// checker passes. squashfs needs mksquashfs ≥ 4.6 for capabilities:
/// with an older one the build is refused, naming the file, and the
/// squashfs twins are compared without the capability.
#[test]
fn device_nodes_and_capabilities_reach_the_image_without_a_namespace() {
    let Some((user, dir, root)) = setup() else {
        return;
    };
    let (ping, cap) = special_tree(&user, &root);
    let setcap = find_tool("setcap").expect("setcap (libcap2-bin)");
    for fs_name in ["ext4", "erofs", "btrfs", "squashfs"] {
        let image = |n: &str| dir.path().join(format!("dev-{n}.{fs_name}"));
        let mut cap = Some(&cap[..]);
        if fs_name == "squashfs" && !squashfs_has_xattr_pseudo() {
            let out = build(&user, fs_name, &root, &image("no-userns"), How::NoUserns).unwrap();
            assert_ne!(out.code(), Some(0), "{out}");
            out.assert_stderr_contains("squashfs-tools 4.6");
            out.assert_stderr_contains(s(&ping));
            assert!(!image("no-userns").exists(), "{out}");
            // mksquashfs 4.6's way: squashfs_capabilities_with_mksquashfs_4_6.
            run(Command::new(&setcap).args(["-r", s(&ping)])).assert_success();
            cap = None;
        }
        special_twins(&user, fs_name, &root, &image, cap, None);
    }
}

/// squashfs with the capability too, through mksquashfs 4.7.5 of the sid
/// tree (`ROOTBOX_SID_TREE`, scripts/setup-sid), run on the host through
/// its own loader from a wrapper first on PATH: the same twins as above.
#[test]
#[ignore = "needs the sid tree (ROOTBOX_SID_TREE): scripts/test's sid-squashfs-caps suite runs it"]
fn squashfs_capabilities_with_mksquashfs_4_6() {
    let sid = std::env::var("ROOTBOX_SID_TREE").expect("ROOTBOX_SID_TREE names the sid tree");
    let Some((user, dir, root)) = setup() else {
        return;
    };
    let (_, cap) = special_tree(&user, &root);
    let bin = dir.path().join("sid-bin");
    fs::create_dir(&bin).unwrap();
    let wrapper = bin.join("mksquashfs");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nd='{sid}'\nexec \"$d/lib64/ld-linux-x86-64.so.2\" --library-path \
             \"$d/lib/x86_64-linux-gnu:$d/usr/lib/x86_64-linux-gnu\" \"$d/usr/bin/mksquashfs\" \"$@\"\n"
        ),
    )
    .unwrap();
    chmod(&bin, 0o755);
    chmod(&wrapper, 0o755);
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());
    let out = run(Command::new("sh")
        .args(["-c", "mksquashfs -version"])
        .env("PATH", &path));
    assert!(out.stdout.contains("version 4.7"), "{out}");
    let image = |n: &str| dir.path().join(format!("sid-{n}.squashfs"));
    special_twins(&user, "squashfs", &root, &image, Some(&cap), Some(&path));
}

/// Adds to the tree, as root: `dev/null2` (`c 1 3`, 0666) and `dev/loop9`
/// (`b 7 0`, 0660), the user's, and `bin/ping` with `cap_net_raw+ep`;
/// returns ping's path and its `security.capability`.
fn special_tree(user: &User, root: &Path) -> (PathBuf, Vec<u8>) {
    create_dirs_as(user, &root.join("dev"));
    for (path, kind, major, minor, mode) in NODES {
        let node = root.join(path);
        run(Command::new("mknod").arg(&node).args([kind, major, minor])).assert_success();
        chown(&node, user.uid, user.gid);
        chmod(&node, mode);
    }
    let ping = root.join("bin/ping");
    write_as(user, &ping, "ping");
    chmod(&ping, 0o555);
    let setcap = find_tool("setcap").expect("setcap (libcap2-bin)");
    run(Command::new(&setcap).args(["cap_net_raw+ep", s(&ping)])).assert_success();
    let cap = xattr_of(&ping, "security.capability").expect("setcap set security.capability");
    (ping, cap)
}

/// The device nodes [`special_tree`] makes: path, type, major, minor, mode.
const NODES: [(&str, &str, &str, &str, u32); 2] = [
    ("dev/null2", "c", "1", "3", 0o666),
    ("dev/loop9", "b", "7", "0", 0o660),
];

/// Builds the tree at `root` with `--no-userns` and `--map single` (both
/// reproducible; `path`: the PATH they run with) and compares: the nodes
/// and (`cap`) ping's capability in the image, the same listing, the same
/// bytes (but btrfs), the filesystem's own checker.
fn special_twins(
    user: &User,
    fs_name: &str,
    root: &Path,
    image: &dyn Fn(&str) -> PathBuf,
    cap: Option<&[u8]>,
    path: Option<&str>,
) {
    for (how, name) in [(How::Single, "single"), (How::NoUserns, "no-userns")] {
        let mut cmd = rootbox(user);
        cmd.env("SOURCE_DATE_EPOCH", EPOCH)
            .args(build_args(fs_name, root, &image(name), how));
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let out = run(&mut cmd);
        out.assert_success();
        assert!(
            !out.stderr.contains("left out") && !out.stderr.contains("lose them"),
            "{fs_name} {name}: {out}"
        );
    }
    let single = listing(user, fs_name, &image("single"));
    let direct = listing(user, fs_name, &image("no-userns"));
    for (path, kind, major, minor, mode) in NODES {
        let e = &direct[&key(fs_name, &format!("/{path}"))];
        let kind = if kind == "b" { 0o060000 } else { 0o020000 };
        let want = Some(u64::from(kind | mode));
        assert_eq!(e["mode"].as_u64(), want, "{fs_name} {path}: {e}");
        // `__fs-read`: [major, minor]; `inspect`: as btrfs stores it
        // (major << 20 | minor).
        let rdev = e["rdev"].to_string().replace(' ', "");
        let (major_n, minor_n): (u64, u64) = (major.parse().unwrap(), minor.parse().unwrap());
        assert!(
            rdev == format!("[{major},{minor}]") || rdev == ((major_n << 20) | minor_n).to_string(),
            "{fs_name} {path}: {e}"
        );
        let owner = (e["uid"].as_u64(), e["gid"].as_u64());
        assert_eq!(owner, (Some(0), Some(0)), "{e}");
    }
    if let Some(cap) = cap {
        let ping = &direct[&key(fs_name, "/bin/ping")];
        let hex: String = cap.iter().map(|b| format!("{b:02x}")).collect();
        let listed = ping["xattrs"].to_string();
        assert!(
            listed.contains("security.capability") && !listed.contains("user."),
            "{fs_name}: {ping}"
        );
        assert!(
            listed.contains(&hex) || listed.contains(&format!("{cap:?}").replace(' ', "")),
            "{fs_name}: want {hex}: {ping}"
        );
    }
    assert_same_listing(&single, &direct, &format!("{fs_name}, devices and caps"));
    if fs_name != "btrfs" {
        assert!(
            fs::read(image("single")).unwrap() == fs::read(image("no-userns")).unwrap(),
            "{fs_name}: the image is not byte-identical to the namespace build"
        );
    }
    own_check(fs_name, &image("no-userns"));
}

/// A source that already carries the xattr a build without a namespace
/// stages capabilities under (btrfs `user.rootbox.fscaps`, erofs
/// `user.capability`) is refused by its path, with the way out, and
/// nothing is left at the output path.
#[test]
fn a_source_carrying_a_capability_placeholder_is_refused() {
    let Some((user, dir, root)) = setup() else {
        return;
    };
    let file = root.join("data/tagged");
    for (fs_name, name) in [
        ("btrfs", "user.rootbox.fscaps"),
        ("erofs", "user.capability"),
    ] {
        let out = run(Command::new("setfattr").args(["-n", name, "-v", "x", s(&file)]));
        out.assert_success();
        let image = dir.path().join(format!("placeholder.{fs_name}"));
        let out = build(&user, fs_name, &root, &image, How::NoUserns).unwrap();
        assert_ne!(out.code(), Some(0), "{fs_name}: {out}");
        out.assert_stderr_contains(s(&file));
        out.assert_stderr_contains(&format!("carries the xattr {name}"));
        out.assert_stderr_contains("setfattr -x");
        assert!(!image.exists(), "{fs_name}: {out}");
        let out = run(Command::new("setfattr").args(["-x", name, s(&file)]));
        out.assert_success();
    }
}

/// The value of xattr `name` of `p`, read with getfattr.
fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    let out =
        run(Command::new("getfattr").args(["--absolute-names", "-e", "hex", "-n", name, s(p)]));
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=0x")))?;
    let hex = line.trim();
    Some(
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect(),
    )
}

/// Whether the host's mksquashfs has pseudo xattr definitions (≥ 4.6).
fn squashfs_has_xattr_pseudo() -> bool {
    let out = run(Command::new("mksquashfs").arg("-version"));
    let v = out
        .stdout
        .split_whitespace()
        .nth(2)
        .unwrap_or("0")
        .to_string();
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (4, 6)
}

/// The filesystem's own checker passes on `image`, and sees the nodes.
fn own_check(fs_name: &str, image: &Path) {
    match fs_name {
        "btrfs" => assert_btrfs_check(image),
        "ext4" => {
            run(Command::new("e2fsck").args(["-fn", s(image)])).assert_success();
        }
        "erofs" => {
            run(Command::new("fsck.erofs").arg(image)).assert_success();
        }
        _ => {
            let out = run(Command::new("unsquashfs").args(["-lln", s(image)]));
            out.assert_success();
            for (kind, name) in [('c', "dev/null2"), ('b', "dev/loop9")] {
                assert!(
                    out.stdout
                        .lines()
                        .any(|l| l.starts_with(kind) && l.ends_with(name)),
                    "unsquashfs -lln shows no {kind} {name}:\n{out}"
                );
            }
        }
    }
}

/// The tools the builds run, by filesystem.
const TOOLS: [(&str, &[&str]); 4] = [
    ("btrfs", &["mkfs.btrfs", "btrfs"]),
    (
        "ext4",
        &["mkfs.ext4", "mke2fs", "debugfs", "dumpe2fs", "e2fsck"],
    ),
    ("erofs", &["mkfs.erofs", "dump.erofs", "fsck.erofs"]),
    ("squashfs", &["mksquashfs", "unsquashfs"]),
];

/// A native rootbox may drive emulated tools (as a cross build's aarch64
/// mkfs under binfmt would run): every tool of the build runs under
/// `qemu-x86_64-static` (a wrapper first on PATH logs each run), the
/// namespace build works as it does natively, and its image is
/// byte-identical to the one the native tools make.
#[test]
fn a_native_rootbox_drives_emulated_tools() {
    let Some((user, dir, root)) = setup() else {
        return;
    };
    let Some(q) = qemu() else {
        eprintln!("SKIPPED: no qemu-x86_64-static");
        return;
    };
    let (bin, log) = (dir.path().join("emulated"), dir.path().join("log"));
    create_dirs_as(&user, &log);
    let log = log.join("ran");
    fs::create_dir_all(&bin).unwrap();
    chmod(&bin, 0o755);
    for (_, tools) in TOOLS {
        for t in tools {
            let real = find_tool(t).unwrap_or_else(|| panic!("{t} is not installed"));
            let wrapper = bin.join(t);
            fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\necho {t} >> {}\nexec {} {} \"$@\"\n",
                    s(&log),
                    s(&q),
                    s(&real)
                ),
            )
            .unwrap();
            chmod(&wrapper, 0o755);
        }
    }
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());
    for (fs_name, tools) in TOOLS {
        let image = |n: &str| dir.path().join(format!("{n}.{fs_name}"));
        let _ = fs::remove_file(&log);
        let mut cmd = rootbox(&user);
        cmd.env("SOURCE_DATE_EPOCH", EPOCH)
            .env("PATH", &path)
            .args(build_args(fs_name, &root, &image("emulated"), How::Single));
        let out = run(&mut cmd);
        out.assert_success();
        let r: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["namespace"], serde_json::json!({"used": true}), "{out}");
        let ran = fs::read_to_string(&log).unwrap_or_default();
        assert!(
            ran.lines().any(|l| l == tools[0]),
            "{fs_name}: {} did not run emulated (ran: {ran:?}):\n{out}",
            tools[0]
        );
        let out = build(&user, fs_name, &root, &image("native"), How::Single).unwrap();
        out.assert_success();
        assert!(
            fs::read(image("emulated")).unwrap() == fs::read(image("native")).unwrap(),
            "{fs_name}: emulated tools made another image than native ones"
        );
    }
}

/// Copies `program` and the libraries `ldd` names into `jail`, at their
/// paths.
fn into_jail(program: &Path, jail: &Path) {
    let out = run(Command::new("ldd").arg(program));
    out.assert_success();
    let mut files = vec![program.to_path_buf()];
    files.extend(
        out.stdout
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(PathBuf::from),
    );
    for f in files {
        let to = jail.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&f, &to).unwrap_or_else(|e| panic!("copying {} into the jail: {e}", f.display()));
    }
}

/// In a chroot the kernel refuses a user namespace: the build falls back,
/// says the chroot is why, and makes the image the namespace build makes
/// outside (ext4: byte-identical).
#[test]
fn a_chrooted_build_falls_back_and_makes_the_same_image() {
    let Some((user, jail, _)) = setup() else {
        return;
    };
    let jail = jail.path();
    into_jail(&rootbox_bin(), jail);
    for t in TOOLS[1].1.iter().chain(&["resize2fs"]) {
        into_jail(&find_tool(t).unwrap_or_else(|| panic!("{t}")), jail);
    }
    fs::create_dir_all(jail.join("etc")).unwrap();
    fs::copy("/etc/mke2fs.conf", jail.join("etc/mke2fs.conf")).unwrap();
    fs::create_dir_all(jail.join("dev")).unwrap();
    fs::create_dir_all(jail.join("proc")).unwrap();
    fs::create_dir_all(jail.join("tmp")).unwrap();
    chmod(&jail.join("tmp"), 0o1777);
    // std opens /dev/null for a tool's stdin.
    run(Command::new("mknod")
        .args(["-m", "666"])
        .arg(jail.join("dev/null"))
        .args(["c", "1", "3"]))
    .assert_success();
    let out_dir = jail.join("out");
    create_dirs_as(&user, &out_dir);
    let inside = Path::new("/").join(rootbox_bin().strip_prefix("/").unwrap());
    let script = format!(
        "mount -t proc proc {jail}/proc && exec chroot --userspec={u}:{g} --groups={g} {jail} \"$@\"",
        jail = s(jail),
        u = user.uid,
        g = user.gid
    );
    let out = run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(&inside)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(build_args(
            "ext4",
            Path::new("/root"),
            Path::new("/out/img"),
            How::Emulated,
        )));
    assert_fell_back(&out, "runs in a chroot");
    let single = jail.join("single.ext4");
    let out = build(&user, "ext4", &jail.join("root"), &single, How::Single).unwrap();
    out.assert_success();
    let outside = listing(&user, "ext4", &single);
    assert_single_map_owners("ext4", &outside);
    assert_same_listing(
        &outside,
        &listing(&user, "ext4", &out_dir.join("img")),
        "chroot",
    );
    assert!(
        fs::read(&single).unwrap() == fs::read(out_dir.join("img")).unwrap(),
        "chroot: the image is not byte-identical to the namespace build"
    );
}

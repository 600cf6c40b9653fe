//! Integration tests of `rootbox build --rootfs FILE.tar[.zst|.gz]`:
//! the archive's owners and modes reach the image, as the
//! unprivileged test user, without any subordinate id range; archives that
//! would write outside the rootfs are refused.
//!
//! Archives are made with the tar crate (any owner, no root needed) and,
//! when the tests run as root, with GNU tar from a chowned tree (what
//! mmdebstrap and container exports produce). When root, every image also
//! goes through `btrfs check`.

#![forbid(unsafe_code)]

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

// ---- archives -----------------------------------------------------------------

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

/// The rootfs of the tests, as tar bytes: a root-owned system with
/// `/etc/shadow` root:shadow(42) 0640, alice's home (1000:1000), a setuid
/// root binary with a symlink and a hard link to it, a device node.
fn system_tar() -> Vec<u8> {
    use tar::EntryType::*;
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode, uid, gid| {
        let mut h = header(Directory, mode, uid, gid, 0);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    };
    dir(&mut b, "./", 0o755, 0, 0);
    dir(&mut b, "./etc/", 0o755, 0, 0);
    dir(&mut b, "./home/", 0o755, 0, 0);
    dir(&mut b, "./home/alice/", 0o700, 1000, 1000);
    dir(&mut b, "./usr/", 0o755, 0, 0);
    dir(&mut b, "./usr/bin/", 0o755, 0, 0);
    dir(&mut b, "./var/", 0o755, 0, 0);
    dir(&mut b, "./var/empty/", 0o555, 0, 0);
    dir(&mut b, "./dev/", 0o755, 0, 0);
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode, uid, gid, data: &[u8]| {
        let mut h = header(Regular, mode, uid, gid, data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    file(
        &mut b,
        "./etc/shadow",
        0o640,
        0,
        42,
        b"root:*:19000:0:99999:7:::\n",
    );
    file(&mut b, "./etc/hostname", 0o644, 0, 0, b"tarball\n");
    file(
        &mut b,
        "./home/alice/notes",
        0o600,
        1000,
        1000,
        b"alice's\n",
    );
    file(&mut b, "./usr/bin/su", 0o4755, 0, 0, b"#!/bin/sh\n");
    let mut h = header(Symlink, 0o777, 0, 0, 0);
    b.append_link(&mut h, "./usr/bin/su-link", "su").unwrap();
    let mut h = header(Link, 0o4755, 0, 0, 0);
    b.append_link(&mut h, "./usr/bin/su-hard", "./usr/bin/su")
        .unwrap();
    let mut h = header(Char, 0o666, 0, 0, 0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "./dev/null", std::io::empty())
        .unwrap();
    b.into_inner().unwrap()
}

fn write_file_as(user: &User, path: &Path, bytes: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    drop(f);
    give_to(user, path);
}

fn zstd_bytes(b: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(b, 3).unwrap()
}

fn gzip_bytes(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Builds `archive` as `user` into `img` with / in @ and /home in @home.
fn build_from(user: &User, archive: &Path, img: &Path) -> Out {
    run(rootbox(user).args([
        "build",
        "--rootfs",
        s(archive),
        "--subvol",
        "@:/:default",
        "--subvol",
        "@home:/home",
        "--map",
        "single",
        "--json",
        "-o",
        s(img),
    ]))
}

#[track_caller]
fn assert_system_image(user: &User, img: &Path) {
    let ins = Inspected::of(user, img);
    for (key, want) in [
        ("@", (0, 0, 0o40755)),
        ("@/etc", (0, 0, 0o40755)),
        ("@/etc/shadow", (0, 42, 0o100640)),
        ("@/etc/hostname", (0, 0, 0o100644)),
        ("@home", (0, 0, 0o40755)),
        ("@home/alice", (1000, 1000, 0o40700)),
        ("@home/alice/notes", (1000, 1000, 0o100600)),
        ("@/usr/bin/su", (0, 0, 0o104755)),
        ("@/usr/bin/su-hard", (0, 0, 0o104755)),
        ("@/var/empty", (0, 0, 0o40555)),
    ] {
        assert_eq!(
            ins.owner_mode(key),
            want,
            "owner and mode of {key}: {:#}",
            ins.get(key)
        );
    }
    assert_eq!(ins.get("@/usr/bin/su-link")["symlink_target"], "su");
    let (a, b) = (ins.get("@/usr/bin/su"), ins.get("@/usr/bin/su-hard"));
    assert_eq!(a["ino"], b["ino"], "hard link lost: {a:#} {b:#}");
    assert_eq!(a["nlink"], 2, "{a:#}");
    assert!(
        !ins.entries.contains_key("@/dev/null"),
        "a device node cannot be created unprivileged: it must be left out"
    );
    if is_root() {
        assert_btrfs_check(img);
    }
}

#[test]
fn tar_owners_and_modes_reach_the_image() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let bytes = system_tar();
    for (name, data) in [
        ("root.tar", bytes.clone()),
        ("root.tar.zst", zstd_bytes(&bytes)),
        ("root.tar.gz", gzip_bytes(&bytes)),
    ] {
        let archive = tmp.path().join(name);
        write_file_as(&user, &archive, &data);
        let img = tmp.path().join(format!("{name}.img"));
        let out = build_from(&user, &archive, &img);
        out.assert_success();
        let r: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("--json does not parse: {e}\n{out}"));
        assert_eq!(r["verified"], true, "{r:#}");
        let warnings = r["warnings"].to_string();
        assert!(
            warnings.contains("/dev/null"),
            "the left-out device node must be reported: {r:#}"
        );
        assert_system_image(&user, &img);
        // Nothing of the unpacked tree is left beside the output.
        let left: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".rootbox-scratch-"))
            .collect();
        assert!(left.is_empty(), "scratch space left behind: {left:?}");
    }
}

/// What GNU tar makes of a chowned tree (root only: the tree needs real
/// owners), as mmdebstrap --mode=unshare and container exports do.
#[test]
fn gnu_tar_archive_of_a_chowned_tree() {
    let user = setup();
    if !is_root() {
        skip!("making a tree with real owners needs root");
    }
    let tmp = tempdir_for(&user);
    let tree = tmp.path().join("tree");
    for d in ["etc", "home/alice", "usr/bin", "var/empty"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    let put = |p: &str, data: &str, mode: u32, uid: u32, gid: u32| {
        let path = tree.join(p);
        if !data.is_empty() || !path.is_dir() {
            fs::write(&path, data).unwrap();
        }
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    put("etc/shadow", "root:*:1:0:99999:7:::\n", 0o640, 0, 42);
    put("etc/hostname", "tarball\n", 0o644, 0, 0);
    put("home/alice/notes", "alice's\n", 0o600, 1000, 1000);
    put("usr/bin/su", "#!/bin/sh\n", 0o4755, 0, 0);
    put("home/alice", "", 0o700, 1000, 1000);
    put("var/empty", "", 0o555, 0, 0);
    std::os::unix::fs::symlink("su", tree.join("usr/bin/su-link")).unwrap();
    fs::hard_link(tree.join("usr/bin/su"), tree.join("usr/bin/su-hard")).unwrap();
    let st = Command::new("mknod")
        .args([s(&tree.join("null-dev")), "c", "1", "3"])
        .status()
        .unwrap();
    assert!(st.success());
    // The device node at /dev/null, as in a real rootfs.
    fs::create_dir(tree.join("dev")).unwrap();
    fs::rename(tree.join("null-dev"), tree.join("dev/null")).unwrap();
    for (name, flag) in [
        ("gnu.tar", None),
        ("gnu.tar.zst", Some("--zstd")),
        ("gnu.tar.gz", Some("--gzip")),
    ] {
        let archive = tmp.path().join(name);
        let mut cmd = Command::new("tar");
        cmd.args(["--numeric-owner", "--format=posix", "-C", s(&tree)]);
        cmd.args(flag);
        cmd.args(["-cf", s(&archive), "."]);
        let out = run(&mut cmd);
        out.assert_success();
        give_to(&user, &archive);
        let img = tmp.path().join(format!("{name}.img"));
        build_from(&user, &archive, &img).assert_success();
        assert_system_image(&user, &img);
    }
}

/// A tar whose entries would land outside the rootfs is refused, naming
/// the entry, and nothing is written at the output.
#[test]
fn escaping_archives_are_refused() {
    use tar::EntryType::*;
    let user = setup();
    let tmp = tempdir_for(&user);
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    give_to(&user, &outside);

    // A raw name the builder would refuse to write.
    let raw = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = header(Regular, 0o644, 0, 0, data.len() as u64);
        let n = &mut h.as_gnu_mut().unwrap().name;
        n[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    let mut dotdot = tar::Builder::new(Vec::new());
    raw(&mut dotdot, "../escape", b"x");
    let mut absolute = tar::Builder::new(Vec::new());
    raw(&mut absolute, "/tmp/rootbox-absolute-escape", b"x");
    let mut through = tar::Builder::new(Vec::new());
    let mut h = header(Symlink, 0o777, 0, 0, 0);
    through.append_link(&mut h, "etc", &outside).unwrap();
    raw(&mut through, "etc/pwned", b"x");
    let mut hardlink = tar::Builder::new(Vec::new());
    let mut h = header(Symlink, 0o777, 0, 0, 0);
    hardlink.append_link(&mut h, "etc", &outside).unwrap();
    let mut h = header(Link, 0o644, 0, 0, 0);
    let n = &mut h.as_gnu_mut().unwrap();
    n.name[..4].copy_from_slice(b"hard");
    n.linkname[..11].copy_from_slice(b"etc/present");
    h.set_cksum();
    hardlink.append(&h, std::io::empty()).unwrap();
    fs::write(outside.join("present"), "x").unwrap();

    for (name, b, needle) in [
        ("dotdot.tar", dotdot, "\"../escape\""),
        ("absolute.tar", absolute, "\"/tmp/rootbox-absolute-escape\""),
        ("through.tar.zst", through, "\"etc/pwned\""),
        ("hardlink.tar", hardlink, "\"hard\""),
    ] {
        let bytes = b.into_inner().unwrap();
        let bytes = if name.ends_with(".zst") {
            zstd_bytes(&bytes)
        } else {
            bytes
        };
        let archive = tmp.path().join(name);
        write_file_as(&user, &archive, &bytes);
        let img = tmp.path().join(format!("{name}.img"));
        let out = build_from(&user, &archive, &img);
        assert!(!out.status.success(), "{name} must be refused:\n{out}");
        out.assert_stderr_contains(needle);
        assert!(!img.exists(), "{name}: something was written at the output");
    }
    assert!(!tmp.path().join("escape").exists());
    assert!(!Path::new("/tmp/rootbox-absolute-escape").exists());
    assert!(!outside.join("pwned").exists());
    let names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["present"], "something was written outside");
}

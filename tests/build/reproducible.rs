//! Two `--reproducible` builds of two copies of a tree are byte-identical.

use super::*;

#[test]
fn reproducible_builds_of_two_copies_are_byte_identical() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let disk = tmp.path().join("disk/root");
    for i in 0..40 {
        file_as(
            &user,
            &disk.join(format!("usr/share/doc/f{i:02}")),
            format!("file {i}\n"),
            0o644,
        );
    }
    file_as(
        &user,
        &disk.join("etc/ssh/sshd_config"),
        "StrictModes yes\n",
        0o644,
    );
    file_as(&user, &disk.join("home/alice/notes"), "hi\n", 0o640);
    symlink_as(&user, "../usr/share/doc/f01", &disk.join("etc/doc-link"));
    // The second copy on another filesystem where possible (a tmpfs lists
    // directories in another order than ext4), else beside the first.
    let second = tmp.path().join("second");
    dir_as(&user, &second);
    let _mount = if is_root() {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs", s(&second)])
            .status()
            .unwrap();
        assert!(st.success());
        give_to(&user, &second);
        Some(Unmount(second.clone()))
    } else {
        None
    };
    let st = Command::new("cp")
        .args(["-a", s(&disk), s(&second)])
        .status()
        .unwrap();
    assert!(st.success());
    give_tree_to(&user, &second);
    let layout = ["--subvol", "@:/:default", "--subvol", "@home:/home"];
    let a = tmp.path().join("a.img");
    let b = tmp.path().join("b.img");
    let ra = build_json(
        &user,
        &[
            &["--reproducible", "--rootfs", s(&disk), "-o", s(&a)][..],
            &layout[..],
        ]
        .concat(),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let rb = build_json(
        &user,
        &[
            &[
                "--reproducible",
                "--rootfs",
                s(&second.join("root")),
                "-o",
                s(&b),
            ][..],
            &layout[..],
        ]
        .concat(),
    );
    assert_eq!(
        ra["btrfs"]["reproducible"]["seed"], rb["btrfs"]["reproducible"]["seed"],
        "the seed must not depend on paths"
    );
    assert_eq!(ra["uuid"], rb["uuid"]);
    let (x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    assert!(
        x == y,
        "two reproducible builds differ ({} vs {} bytes)",
        x.len(),
        y.len()
    );
    assert_eq!(ra["verified"], true);
    if can_mount() {
        assert_btrfs_check(&a);
    }
    // Without --reproducible the same inputs give different images.
    let c = tmp.path().join("c.img");
    build_json(
        &user,
        &[&["--rootfs", s(&disk), "-o", s(&c)][..], &layout[..]].concat(),
    );
    assert!(
        fs::read(&c).unwrap() != x,
        "a plain build is not expected to be reproducible"
    );
}

/// A build with `SOURCE_DATE_EPOCH` (as nixpkgs' stdenv sets it) is the
/// image rootbox's full reproducible pass gives: the pass run once more on
/// it (every inode's times clamped, the UUIDs derived, every free byte of
/// metadata and unallocated space zeroed) changes nothing. After
/// mkfs.btrfs ≥ 7.3 the build's own pass does not read the inodes' times
/// (`pass` "root items"): this is what shows the trim loses nothing (the
/// sid lane runs it with 7.3); before 7.3 it is the full pass.
#[test]
fn a_reproducible_build_is_what_the_full_pass_gives() {
    let user = setup();
    let tmp = tempdir_for(&user);
    let root = tmp.path().join("root");
    small_rootfs(&user, &root);
    file_as(&user, &root.join("home/alice/notes"), "hi\n", 0o640);
    let img = tmp.path().join("a.img");
    let layout = [
        "--subvol",
        "@:/:default",
        "--subvol",
        "@home:/home",
        "--subvol",
        "@var:/var",
    ];
    let out = run(rootbox(&user)
        .env("SOURCE_DATE_EPOCH", "315532800")
        .arg("build")
        .args(
            [
                &["--json", "--rootfs", s(&root), "-o", s(&img)][..],
                &layout[..],
            ]
            .concat(),
        ));
    out.assert_success();
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    let rep = &r["btrfs"]["reproducible"];
    let version = r["btrfs"]["mkfs_version"].as_str().unwrap_or_default();
    let mut parts = version
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let (pass, order) = if v >= (7, 3) {
        ("root items", "mkfs.btrfs")
    } else {
        ("full", "sources")
    };
    assert_eq!(rep["pass"], pass, "mkfs.btrfs {version}: {r:#}");
    assert_eq!(rep["inode_order"], order, "mkfs.btrfs {version}: {r:#}");
    assert_eq!(rep["epoch"], 315532800, "{r:#}");

    let again = tmp.path().join("again.img");
    fs::copy(&img, &again).unwrap();
    let seed = rep["seed"].as_str().unwrap();
    let mut rw = rootbox_btrfs::Rewriter::open(&again).unwrap();
    let stats = rw.make_reproducible(315532800, seed.as_bytes()).unwrap();
    rw.commit().unwrap();
    assert_eq!(
        (
            stats.times.inodes_changed,
            stats.times.root_items_changed,
            stats.uuids.root_items_changed,
            stats.zeroed.bytes_zeroed
        ),
        (0, 0, 0, 0),
        "the full pass still had work after the build's {pass} pass (mkfs.btrfs {version}): {stats:?}"
    );
    assert!(
        stats.times.inodes > 0 && stats.zeroed.bytes_scanned > 0,
        "the full pass looked at nothing: {stats:?}"
    );
    let (x, y) = (fs::read(&img).unwrap(), fs::read(&again).unwrap());
    let differ = x.iter().zip(&y).filter(|(a, b)| a != b).count();
    assert!(
        x == y,
        "the full pass changed {differ} bytes of the build's image (mkfs.btrfs {version}, {pass} pass)"
    );
    assert_eq!(r["verified"], true);
}

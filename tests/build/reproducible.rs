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

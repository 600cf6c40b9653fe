//! Bad input is refused with an error naming it and the fix, and leaves
//! nothing at the output path; `--force` replaces an existing output.

use super::*;

// ---- errors ------------------------------------------------------------------------

#[test]
fn size_too_small_is_refused_with_the_size_needed() {
    let user = setup();
    let c = ErrCase::new(&user);
    // ~200 MB in four fully written files.
    for i in 0u8..4 {
        file_as(
            &user,
            &c.root.join(format!("data/blob{i}")),
            vec![0xa5u8 ^ i; 50 << 20],
            0o644,
        );
    }
    let img = c.out_dir.join("small.img");
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--size",
            "120M",
            "-o",
            s(&img),
        ],
    );
    let size = fs::metadata(&img).map(|m| m.len()).ok();
    assert_ne!(
        out.code(),
        Some(0),
        "--size 120M cannot hold 200 MB, yet the build succeeded (image of {size:?} bytes):\n{out}"
    );
    out.assert_stderr_contains("too small");
    assert!(
        out.stderr.contains("needs") || out.stderr.contains("at least"),
        "the message should say how much is needed:\n{out}"
    );
    assert_nothing_written(&img, &[], &out);
}

#[test]
fn missing_or_non_directory_rootfs_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("x.img");
    let missing = c.tmp.path().join("no-such-root");
    let out = build(
        &user,
        &["--rootfs", s(&missing), "--subvol", "@:/", "-o", s(&img)],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&missing));
    assert_nothing_written(&img, &[], &out);

    let file = c.tmp.path().join("rootfs-file");
    write_as(&user, &file, "not a directory");
    let out = build(
        &user,
        &["--rootfs", s(&file), "--subvol", "@:/", "-o", s(&img)],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&file));
    out.assert_stderr_contains("not a directory");
    assert_nothing_written(&img, &[], &out);
}

#[test]
fn store_path_outside_the_store_dir_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let closure = user_closure(&user, c.tmp.path());
    let list = c.tmp.path().join("paths.txt");
    write_as(&user, &list, format!("{}\n/etc\n", s(&closure.path(0))));
    let img = c.out_dir.join("x.img");
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--closure",
            s(&list),
            "--store-dir",
            s(&closure.store),
            "--subvol",
            "@:/",
            "-o",
            s(&img),
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("/etc");
    out.assert_stderr_contains(s(&list));
    out.assert_stderr_contains(s(&closure.store));
    assert_nothing_written(&img, &[], &out);
}

/// A directory holding an executable `mkfs.btrfs` shell script.
fn fake_mkfs(user: &User, dir: &Path, script: &str) -> PathBuf {
    let bin = dir.join("fake-bin");
    dir_as(user, &bin);
    file_as(
        user,
        &bin.join("mkfs.btrfs"),
        format!("#!/bin/sh\n{script}"),
        0o755,
    );
    bin
}

fn path_with(bin: &Path) -> String {
    format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", s(bin))
}

#[test]
fn mkfs_btrfs_too_old_is_refused_with_the_remedy() {
    let user = setup();
    let c = ErrCase::new(&user);
    let bin = fake_mkfs(
        &user,
        c.tmp.path(),
        "echo 'mkfs.btrfs, part of btrfs-progs v6.2'\necho ran >> \"$0.ran\"\nexit 0\n",
    );
    let img = c.out_dir.join("x.img");
    let out = run(rootbox(&user).env("PATH", path_with(&bin)).args([
        "build",
        "--rootfs",
        s(&c.root),
        "--subvol",
        "@:/:default",
        "-o",
        s(&img),
    ]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("6.12");
    out.assert_stderr_contains("6.2");
    out.assert_stderr_contains("bookworm-backports");
    assert_nothing_written(&img, &[], &out);
    assert_eq!(
        fs::read_to_string(bin.join("mkfs.btrfs.ran")).unwrap_or_default(),
        "ran\n",
        "only `mkfs.btrfs --version` may run"
    );
}

#[test]
fn mkfs_btrfs_failure_is_reported_with_its_output() {
    let user = setup();
    let c = ErrCase::new(&user);
    let bin = fake_mkfs(
        &user,
        c.tmp.path(),
        "case \"$1\" in --version) echo 'mkfs.btrfs, part of btrfs-progs v6.14'; exit 0;; esac\n\
         echo 'ERROR: simulated mkfs failure' >&2\nexit 1\n",
    );
    let img = c.out_dir.join("x.img");
    let out = run(rootbox(&user).env("PATH", path_with(&bin)).args([
        "build",
        "--rootfs",
        s(&c.root),
        "--subvol",
        "@:/:default",
        "-o",
        s(&img),
    ]));
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains("mkfs.btrfs failed");
    out.assert_stderr_contains("simulated mkfs failure");
    assert_nothing_written(&img, &[], &out);
}

#[test]
fn existing_output_is_left_untouched_without_force() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("x.img");
    write_as(&user, &img, "precious old content");
    let before = fs::metadata(&img).expect("stat").ino();
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&img));
    out.assert_stderr_contains("--force");
    assert_eq!(
        fs::read_to_string(&img).expect("read"),
        "precious old content"
    );
    assert_eq!(fs::metadata(&img).expect("stat").ino(), before);
    assert_eq!(names_in(&c.out_dir), ["x.img".to_string()].into(), "{out}");
}

#[test]
fn output_that_is_a_directory_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("a-dir");
    dir_as(&user, &img);
    file_as(&user, &img.join("keep"), "keep", 0o644);
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
            "--force",
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&img));
    out.assert_stderr_contains("directory");
    assert_eq!(names_in(&img), ["keep".to_string()].into());
    assert_eq!(names_in(&c.out_dir), ["a-dir".to_string()].into(), "{out}");
}

#[test]
fn output_inside_the_rootfs_is_refused() {
    let user = setup();
    let c = ErrCase::new(&user);
    let before = names_in(&c.root.join("etc"));
    let img = c.root.join("etc/self.img");
    let out = build(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "-o",
            s(&img),
        ],
    );
    assert_ne!(out.code(), Some(0), "{out}");
    out.assert_stderr_contains(s(&img));
    out.assert_stderr_contains("inside");
    assert!(fs::symlink_metadata(&img).is_err(), "{out}");
    assert_eq!(names_in(&c.root.join("etc")), before, "{out}");
}

// ---- --force -------------------------------------------------------------------------

#[test]
fn force_replaces_an_existing_output_with_a_new_file() {
    let user = setup();
    let c = ErrCase::new(&user);
    let img = c.out_dir.join("x.img");
    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--label",
            "first",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["label"], "first");
    let old = fs::metadata(&img).expect("stat").ino();
    // Keep the old file reachable: an in-place rewrite would show through it.
    let old_link = c.tmp.path().join("old.img");
    fs::hard_link(&img, &old_link).expect("ln");

    let r = build_json(
        &user,
        &[
            "--rootfs",
            s(&c.root),
            "--subvol",
            "@:/:default",
            "--label",
            "second",
            "--force",
            "-o",
            s(&img),
        ],
    );
    assert_eq!(r["label"], "second", "{r:#}");
    let new = fs::metadata(&img).expect("stat");
    assert_ne!(
        new.ino(),
        old,
        "--force must replace the file, not rewrite it"
    );
    assert_eq!(new.len(), r["size_bytes"].as_u64().unwrap());
    assert_eq!(
        names_in(&c.out_dir),
        ["x.img".to_string()].into(),
        "no stray files"
    );
    let ins = Inspected::of(&user, &img);
    assert_eq!(ins.doc["filesystem"]["label"], "second");
    ins.get("@/etc/hostname");
    assert_eq!(
        Inspected::of(&user, &old_link).doc["filesystem"]["label"],
        "first"
    );
    assert_btrfs_check(&img);
}
